//! `demo-sites`: serve the demo pages until Ctrl-C or SIGTERM.
//!
//! Prints exactly one line to stdout once bound, `demo-sites listening on http://ADDR`, which
//! scripts parse to learn the port when started with `--listen 127.0.0.1:0`. Logs go to stderr.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Local demo websites (up, down, slow, flapping) for uptime checks"
)]
struct Args {
    /// Address to listen on. Loopback by default; port 0 picks a free port.
    #[arg(long, env = "DEMO_SITES_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// How long GET /slow waits before answering (milliseconds); `?ms=` overrides per request.
    #[arg(long, env = "DEMO_SITES_SLOW_MS", default_value_t = 5_000)]
    slow_ms: u64,
    /// Length of each up and each down phase of GET /flap (seconds).
    #[arg(long, env = "DEMO_SITES_FLAP_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    flap_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Colour codes only for a terminal, not for `.dev/logs/*.log`.
    runtime::init_tracing("info");
    let args = Args::parse();

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    // Rust's stdout is line-buffered, so a script reading a pipe sees this line at once.
    println!("demo-sites listening on http://{addr}");

    let config = demo_sites::Config {
        slow_ms: args.slow_ms,
        flap_period: Duration::from_secs(args.flap_secs),
    };
    demo_sites::serve(listener, config, shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (what `kill`, systemd and Kubernetes send).
async fn shutdown_signal() {
    let sig = runtime::shutdown_signal().await;
    tracing::info!("{sig} received, shutting down");
}
