//! `api-reads`: read load on the owners' API while the hubs ingest
//! (`scripts/loadtest.sh ingest --api-reads`). Gives the first 100
//! simulated websites to an account, waits, then reads for `--duration`
//! each: one site's status, then the 100-site list, with `--concurrency`
//! requests in flight. Prints requests per second and latency percentiles
//! (and the same as JSON with `--json`). Loopback only; bounded in time.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "api-reads",
    about = "Read load on the owners' API (loopback only)"
)]
struct Args {
    /// The api's base URL, http://127.0.0.1:PORT.
    #[arg(long)]
    api_url: String,
    /// A read-scoped API key of `--email`'s account.
    #[arg(long, env = "LOADTEST_API_KEY", hide_env_values = true)]
    key: String,
    /// PostgreSQL, to give simulated websites to the account.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[arg(long)]
    email: String,
    /// Websites given to the account (the list reads them all).
    #[arg(long, default_value_t = 100)]
    sites: i64,
    /// Wait this long first (the ingest ramp), e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    delay: Duration,
    /// Each read phase lasts this long.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Write the figures here as JSON too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Phase {
    path: String,
    requests: u64,
    errors: u64,
    per_sec: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let base = url::Url::parse(&a.api_url).context("--api-url")?;
    let loopback = match base.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        _ => false,
    };
    if !loopback {
        bail!("--api-url must be a loopback address (127.0.0.0/8 or ::1)");
    }
    let store = store::Store::connect(&a.database_url, 2).await?;
    let account = store
        .account_by_email(&a.email)
        .await?
        .with_context(|| format!("no account {}", a.email))?;
    // The load tool seeds the simulated websites as it starts.
    let until = Instant::now() + Duration::from_secs(60);
    let ids = loop {
        let ids = store.adopt_simulated_websites(account.id, a.sites).await?;
        if ids.len() as i64 >= a.sites {
            break ids;
        }
        if Instant::now() > until {
            bail!("only {} simulated websites after 60 s", ids.len());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "api-reads: {} websites given to {}; reading in {:?}",
        ids.len(),
        a.email,
        a.delay
    );
    tokio::time::sleep(a.delay).await;
    let http = reqwest::Client::new();
    let mut phases = Vec::new();
    for path in [
        format!("/v1/websites/{}/status", ids[0]),
        format!("/v1/websites?limit={}", a.sites.min(100)),
    ] {
        let p = phase(&http, &a, &path).await?;
        eprintln!(
            "api-reads: GET {path}: {} requests, {:.0}/s, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} errors",
            p.requests, p.per_sec, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.errors
        );
        phases.push(p);
    }
    println!("{}", serde_json::to_string_pretty(&phases)?);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&phases)?)?;
    }
    Ok(())
}

async fn phase(http: &reqwest::Client, a: &Args, path: &str) -> anyhow::Result<Phase> {
    let url = format!("{}{path}", a.api_url.trim_end_matches('/'));
    let started = Instant::now();
    let end = started + a.duration;
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let http = http.clone();
        let url = url.clone();
        let key = a.key.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut errors = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                let ok = match http.get(&url).bearer_auth(&key).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                if ok {
                    let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                } else {
                    errors += 1;
                }
            }
            (h, errors)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await?;
        all.add(&h)?;
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    Ok(Phase {
        path: path.to_string(),
        requests: all.len(),
        errors,
        per_sec: all.len() as f64 / secs,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: all.max() as f64 / 1000.0,
    })
}
