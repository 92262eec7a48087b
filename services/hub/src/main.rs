use clap::Parser;

#[tokio::main]
async fn main() {
    runtime::init_tracing("info");
    let cli = hub::cli::Cli::parse();
    if let Err(e) = hub::cli::run(cli).await {
        eprintln!("error: {e:#}");
        // Bad configuration or input: 2, like clap's usage errors.
        let usage = e.downcast_ref::<hub::config::ConfigError>().is_some()
            || e.downcast_ref::<store::UrlError>().is_some()
            || e.downcast_ref::<store::KeywordError>().is_some();
        std::process::exit(if usage { 2 } else { 1 });
    }
}
