use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
