use clap::Parser;

#[tokio::main]
async fn main() {
    runtime::init_tracing("info");
    let cli = api::cli::Cli::parse();
    if let Err(e) = api::cli::run(cli).await {
        eprintln!("error: {e:#}");
        // Bad configuration or input: 2, like clap's usage errors.
        let usage = e.downcast_ref::<api::config::ConfigError>().is_some()
            || e.downcast_ref::<api::cli::UsageError>().is_some();
        std::process::exit(if usage { 2 } else { 1 });
    }
}
