//! Command line: one subcommand per scenario, one set of flags shared by
//! all, and per-scenario defaults resolved into a checked [`Plan`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::burst;
use crate::net::{self, HubTarget};

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load tester for the hubs: simulated validators over real WebSockets (loopback only), simulated websites, and measurements of every process involved.",
    long_about = None,
    args_override_self = true,
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: ScenarioCmd,
}

#[derive(Debug, Subcommand)]
pub enum ScenarioCmd {
    /// Idle validators: connect N, hello, heartbeats only (no websites, so
    /// no tasks); hold; report hub memory per connection.
    Connections(RunArgs),
    /// N validators answering every task after --check-latency-ms, a
    /// --failure-rate of rounds down; M websites at --interval-secs.
    Ingest(RunArgs),
    /// M websites (up to 100k) at 60 s: dispatch jitter (task receipt minus
    /// task.scheduled_at_ms) measured by the tool.
    Schedule(RunArgs),
    /// Ingest held for --duration, hub RSS sampled every --sample-secs:
    /// first, last and max show whether memory stays flat.
    Soak(RunArgs),
    /// Every simulated website due in the same second (ids chosen so that
    /// their schedule phases fall in one second of the interval), a few
    /// seconds after the ramp; held --hold-secs past that second: how the
    /// hubs take the spike and drain it, and whether any result is lost.
    Burst(RunArgs),
}

/// Flags every scenario takes. Unset numbers take the scenario's default
/// (shown as connections / ingest / schedule / soak / burst).
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Defaults written [a / b / c / d / e] are those of connections / ingest / schedule / soak / burst.\nEvery URL must be loopback. Report fields: loadtest/README.md."
)]
pub struct RunArgs {
    /// Hub WebSocket URL (repeatable; validator i uses URL i mod count).
    /// Loopback only.
    #[arg(
        long = "hub-url",
        value_name = "URL",
        default_value = "ws://127.0.0.1:18070/ws"
    )]
    pub hub_urls: Vec<String>,
    /// PostgreSQL URL: websites are written and ticks counted there.
    /// Required when the scenario has websites.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A hub's Prometheus endpoint, http://127.0.0.1:PORT/metrics
    /// (repeatable: one per hub). Without it, hub-side figures are null.
    #[arg(long = "metrics-url", value_name = "URL")]
    pub metrics_urls: Vec<String>,
    /// Simulated validators [2000 / 200 / 300 / 200 / 1100].
    #[arg(long, value_name = "N")]
    pub validators: Option<usize>,
    /// Tasks each validator takes at once (hello.capacity, 1..=1000)
    /// [1 / 16 / 100 / 16 / 100].
    #[arg(long, value_name = "C")]
    pub capacity: Option<u32>,
    /// Regions, comma-separated; validator i is in region i mod count, so
    /// hubs can staff K distinct regions per round.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "eu-west,us-east,ap-south"
    )]
    pub regions: Vec<String>,
    /// Simulated websites [0 / 1000 / 10000 / 1000 / 33334]. Burst: more
    /// than 1000 (fewer new websites at once are run at once by a hub,
    /// not at their next slot).
    #[arg(long, value_name = "M")]
    pub sites: Option<u32>,
    /// Websites' check interval, seconds [- / 1 / 60 / 1 / 60]. The hubs
    /// floor it at HUB_MIN_INTERVAL_SECS (a floor above it would scatter a
    /// burst: the phase depends on the interval).
    #[arg(long, value_name = "SECS")]
    pub interval_secs: Option<u32>,
    /// Websites' check timeout (task.check.timeout_ms; nothing is fetched).
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub site_timeout_ms: u32,
    /// Simulated check time before a result is sent [- / 50 / 20 / 50 / 50].
    #[arg(long, value_name = "MS")]
    pub check_latency_ms: Option<u64>,
    /// Extra random check time, uniform in 0..=MS [0 / 0 / 0 / 0 / 2000].
    #[arg(long, value_name = "MS")]
    pub check_jitter_ms: Option<u64>,
    /// Fraction of rounds reported down (decided per website and slot, so
    /// the validators of a round agree) [- / 0.05 / 0 / 0.05 / 0].
    #[arg(long, value_name = "FRACTION")]
    pub failure_rate: Option<f64>,
    /// Connections are opened evenly over this long [20 / 10 / 10 / 10 /
    /// 10]. Burst: the ramp ends 5 s before the burst is due.
    #[arg(long, value_name = "SECS")]
    pub ramp_secs: Option<f64>,
    /// The measured window [30 / 30 / 70 / --duration / 50]. Burst: the
    /// hold starts after the ramp and ends this long after the burst's due
    /// second (less than the interval, so the next slot stays out).
    #[arg(long, value_name = "SECS")]
    pub hold_secs: Option<f64>,
    /// Soak only: how long to hold, e.g. 600, 600s, 10m, 2h [600].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Connections are closed evenly over this long at the end.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub ramp_down_secs: f64,
    /// After the ramp, wait at most this long for the last connections.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub settle_secs: f64,
    /// Hub RSS is sampled this often during the hold [10 / 10 / 10 / 10 /
    /// 1].
    #[arg(long, value_name = "SECS")]
    pub sample_secs: Option<f64>,
    /// A progress line on stderr this often.
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    pub progress_secs: f64,
    /// Client sockets are bound to 127.0.0.1 ..= 127.0.0.K (about 28k
    /// connections per source address and destination; the hubs' per-IP
    /// limits count each address apart) [4 / 4 / 4 / 4 / 64].
    #[arg(long, value_name = "K")]
    pub source_addrs: Option<usize>,
    /// Hard limit on the whole run; default ramp + settle + hold + ramp-down
    /// + 120 s (burst: + 15 s more, the wait for the burst).
    #[arg(long, value_name = "SECS")]
    pub max_secs: Option<f64>,
    /// A hub process to measure (repeatable); default: every process named
    /// `hub`.
    #[arg(long = "hub-pid", value_name = "PID")]
    pub hub_pids: Vec<u32>,
    /// The load balancer's pid; default: every process named `haproxy`.
    #[arg(long, value_name = "PID")]
    pub haproxy_pid: Option<u32>,
    /// Redis's pid; default: every process named `redis-server`.
    #[arg(long, value_name = "PID")]
    pub redis_pid: Option<u32>,
    /// The postmaster's pid (it and its children are summed); default:
    /// every process named `postgres`.
    #[arg(long, value_name = "PID")]
    pub pg_pid: Option<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Leave the simulated websites enabled at the end.
    #[arg(long)]
    pub keep_sites: bool,
    /// Skip timing `verify_result` before and after the run (the yardstick
    /// for hub CPU per tick; about 2.5 s each).
    #[arg(long)]
    pub no_calibrate: bool,
    /// Tokio worker threads for the tool [number of CPUs].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `600` (seconds), or with units as `humantime` reads them: `90s`, `10m`,
/// `2h`, `1h30m`. Must be positive.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<f64>() {
        Ok(secs) => {
            Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} must be positive"))?
        }
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("{s:?} is not a duration like 600, 90s, 10m or 2h: {e}"))?,
    };
    if d.is_zero() {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(d)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    Connections,
    Ingest,
    Schedule,
    Soak,
    Burst,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Ingest => "ingest",
            Self::Schedule => "schedule",
            Self::Soak => "soak",
            Self::Burst => "burst",
        }
    }
}

/// A hub `/metrics` endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsTarget {
    /// As given.
    pub url: String,
    /// Checked: http://, loopback.
    #[serde(skip)]
    pub parsed: url::Url,
}

/// Everything a run needs, checked. Serialized into the report.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub scenario: Scenario,
    pub hub_urls: Vec<String>,
    #[serde(skip)]
    pub hubs: Vec<HubTarget>,
    pub metrics: Vec<MetricsTarget>,
    /// Never in the report (it may carry credentials).
    #[serde(skip)]
    pub database_url: Option<String>,
    pub database: bool,
    pub validators: usize,
    pub capacity: u32,
    pub regions: Vec<String>,
    pub sites: u32,
    pub interval_secs: u32,
    pub site_timeout_ms: u32,
    pub check_latency_ms: u64,
    pub check_jitter_ms: u64,
    pub failure_rate: f64,
    pub ramp_secs: f64,
    /// Burst: counted from the burst's due second.
    pub hold_secs: f64,
    pub ramp_down_secs: f64,
    pub settle_secs: f64,
    pub sample_secs: f64,
    pub progress_secs: f64,
    pub source_addrs: usize,
    pub max_secs: f64,
    pub hub_pids: Vec<u32>,
    pub haproxy_pid: Option<u32>,
    pub redis_pid: Option<u32>,
    pub pg_pid: Option<u32>,
    #[serde(skip)]
    pub json: Option<PathBuf>,
    pub keep_sites: bool,
    /// Time `verify_result` before and after the run.
    pub calibrate: bool,
    #[serde(skip)]
    pub threads: Option<usize>,
}

/// Per-scenario defaults.
struct Defaults {
    validators: usize,
    capacity: u32,
    sites: u32,
    interval_secs: u32,
    check_latency_ms: u64,
    check_jitter_ms: u64,
    failure_rate: f64,
    ramp_secs: f64,
    hold_secs: f64,
    sample_secs: f64,
    source_addrs: usize,
}

fn defaults(s: Scenario) -> Defaults {
    match s {
        Scenario::Connections => Defaults {
            validators: 2000,
            capacity: 1,
            sites: 0,
            interval_secs: 60,
            check_latency_ms: 0,
            check_jitter_ms: 0,
            failure_rate: 0.0,
            ramp_secs: 20.0,
            hold_secs: 30.0,
            sample_secs: 10.0,
            source_addrs: 4,
        },
        Scenario::Ingest | Scenario::Soak => Defaults {
            validators: 200,
            capacity: 16,
            sites: 1000,
            interval_secs: 1,
            check_latency_ms: 50,
            check_jitter_ms: 0,
            failure_rate: 0.05,
            ramp_secs: 10.0,
            hold_secs: if s == Scenario::Soak { 600.0 } else { 30.0 },
            sample_secs: 10.0,
            source_addrs: 4,
        },
        Scenario::Schedule => Defaults {
            validators: 300,
            capacity: 100,
            sites: 10_000,
            interval_secs: 60,
            check_latency_ms: 20,
            check_jitter_ms: 0,
            failure_rate: 0.0,
            ramp_secs: 10.0,
            hold_secs: 70.0,
            sample_secs: 10.0,
            source_addrs: 4,
        },
        // 33,334 sites x K = 3 is 100,002 tasks in one second, for 1,100
        // validators x 100 = 110k places. 64 source addresses: about 17
        // validators each, under the hubs' default per-IP limits (16
        // sockets before hello at once, 5 hellos/s with a burst of 20)
        // with the ramp spreading them over 10 s.
        Scenario::Burst => Defaults {
            validators: 1_100,
            capacity: 100,
            sites: 33_334,
            interval_secs: 60,
            check_latency_ms: 50,
            check_jitter_ms: 2_000,
            failure_rate: 0.0,
            ramp_secs: 10.0,
            hold_secs: 50.0,
            sample_secs: 1.0,
            source_addrs: 64,
        },
    }
}

fn secs(name: &str, v: f64, min: f64) -> anyhow::Result<f64> {
    if !(v.is_finite() && v >= min) {
        bail!("{name} must be at least {min}, got {v}");
    }
    Ok(v)
}

impl Cli {
    /// The scenario and its flags, checked, with defaults filled in.
    pub fn plan(self) -> anyhow::Result<Plan> {
        let (scenario, a) = match self.scenario {
            ScenarioCmd::Connections(a) => (Scenario::Connections, a),
            ScenarioCmd::Ingest(a) => (Scenario::Ingest, a),
            ScenarioCmd::Schedule(a) => (Scenario::Schedule, a),
            ScenarioCmd::Soak(a) => (Scenario::Soak, a),
            ScenarioCmd::Burst(a) => (Scenario::Burst, a),
        };
        plan(scenario, a)
    }
}

pub fn plan(scenario: Scenario, a: RunArgs) -> anyhow::Result<Plan> {
    let d = defaults(scenario);
    let hubs = a
        .hub_urls
        .iter()
        .map(|u| net::hub_target(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if hubs.is_empty() {
        bail!("--hub-url: at least one is needed");
    }
    let metrics = a
        .metrics_urls
        .iter()
        .map(|u| {
            net::metrics_target(u).map(|parsed| MetricsTarget {
                url: u.clone(),
                parsed,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(db) = &a.database_url {
        net::check_database_url(db)?;
    }
    let validators = a.validators.unwrap_or(d.validators);
    if !(1..=1_000_000).contains(&validators) {
        bail!("--validators must be 1..=1000000, got {validators}");
    }
    let capacity = a.capacity.unwrap_or(d.capacity);
    // The hub refuses a hello that breaks these.
    protocol::limits::check_capacity(capacity).map_err(|e| anyhow::anyhow!("--capacity: {e}"))?;
    if a.regions.is_empty() {
        bail!("--regions: at least one is needed");
    }
    for r in &a.regions {
        protocol::limits::check_region(r).map_err(|e| anyhow::anyhow!("--regions: {e}"))?;
    }
    if scenario == Scenario::Connections && a.sites.is_some_and(|s| s > 0) {
        bail!("--sites: the connections scenario has no websites (use ingest)");
    }
    let sites = a.sites.unwrap_or(d.sites);
    if sites > 10_000_000 {
        bail!("--sites must be at most 10000000");
    }
    let interval_secs = a.interval_secs.unwrap_or(d.interval_secs);
    if !(1..=86_400).contains(&interval_secs) {
        bail!("--interval-secs must be 1..=86400, got {interval_secs}");
    }
    if !(100..=120_000).contains(&a.site_timeout_ms) {
        bail!("--site-timeout-ms must be 100..=120000");
    }
    let failure_rate = a.failure_rate.unwrap_or(d.failure_rate);
    if !(0.0..=1.0).contains(&failure_rate) {
        bail!("--failure-rate must be 0..=1, got {failure_rate}");
    }
    let check_latency_ms = a.check_latency_ms.unwrap_or(d.check_latency_ms);
    let check_jitter_ms = a.check_jitter_ms.unwrap_or(d.check_jitter_ms);
    if check_latency_ms > 600_000 || check_jitter_ms > 600_000 {
        bail!("--check-latency-ms and --check-jitter-ms must be at most 600000");
    }
    if scenario != Scenario::Soak && a.duration.is_some() {
        bail!("--duration is for soak; use --hold-secs");
    }
    let hold_default = a.duration.map_or(d.hold_secs, |d| d.as_secs_f64());
    let hold_secs = secs("--hold-secs", a.hold_secs.unwrap_or(hold_default), 1.0)?;
    let ramp_secs = secs("--ramp-secs", a.ramp_secs.unwrap_or(d.ramp_secs), 0.0)?;
    let ramp_down_secs = secs("--ramp-down-secs", a.ramp_down_secs, 0.0)?;
    let settle_secs = secs("--settle-secs", a.settle_secs, 0.0)?;
    let sample_secs = secs("--sample-secs", a.sample_secs.unwrap_or(d.sample_secs), 1.0)?;
    let progress_secs = secs("--progress-secs", a.progress_secs, 1.0)?;
    let source_addrs = a.source_addrs.unwrap_or(d.source_addrs);
    if !(1..=254).contains(&source_addrs) {
        bail!("--source-addrs must be 1..=254");
    }
    let mut max_secs = ramp_secs + settle_secs + hold_secs + ramp_down_secs + 120.0;
    if scenario == Scenario::Burst {
        check_burst(sites, interval_secs, ramp_secs, hold_secs)?;
        max_secs += (burst::OWN_MARGIN_MS + burst::LEAD_MS) as f64 / 1000.0;
    }
    if let Some(m) = a.max_secs {
        max_secs = secs("--max-secs", m, 1.0)?;
    }
    if sites > 0 && a.database_url.is_none() {
        bail!("--database-url (or DATABASE_URL) is needed to write the {sites} simulated websites");
    }
    if a.threads == Some(0) {
        bail!("--threads must be positive");
    }
    if let Some(p) = &a.json {
        if p.as_os_str().is_empty() {
            bail!("--json needs a file name");
        }
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::metadata(dir)
                .with_context(|| format!("--json {}: folder missing", p.display()))?;
        }
    }
    Ok(Plan {
        scenario,
        hub_urls: a.hub_urls.clone(),
        hubs,
        metrics,
        database: a.database_url.is_some(),
        database_url: a.database_url,
        validators,
        capacity,
        regions: a.regions,
        sites,
        interval_secs,
        site_timeout_ms: a.site_timeout_ms,
        check_latency_ms,
        check_jitter_ms,
        failure_rate,
        ramp_secs,
        hold_secs,
        ramp_down_secs,
        settle_secs,
        sample_secs,
        progress_secs,
        source_addrs,
        max_secs,
        hub_pids: a.hub_pids,
        haproxy_pid: a.haproxy_pid,
        redis_pid: a.redis_pid,
        pg_pid: a.pg_pid,
        json: a.json,
        keep_sites: a.keep_sites,
        calibrate: !a.no_calibrate,
        threads: a.threads,
    })
}

/// A burst must land where the tool can see it: after the ramp, in the
/// websites' next slot after they are written, with the hold ending before
/// the slot after it.
fn check_burst(
    sites: u32,
    interval_secs: u32,
    ramp_secs: f64,
    hold_secs: f64,
) -> anyhow::Result<()> {
    if sites <= burst::HUB_CATCH_UP_BULK {
        bail!(
            "--sites must be more than {} for burst: a hub runs fewer new websites at once, not at their next slot",
            burst::HUB_CATCH_UP_BULK
        );
    }
    let interval = f64::from(interval_secs);
    let lead = (burst::OWN_MARGIN_MS + burst::LEAD_MS + burst::WINDOW_MS) as f64 / 1000.0;
    if ramp_secs + lead >= interval {
        bail!(
            "--ramp-secs must be under {} for burst at --interval-secs {interval_secs}: the burst is due {lead} s after the ramp could end, within one interval of the write",
            interval - lead
        );
    }
    if hold_secs + 1.0 >= interval {
        bail!(
            "--hold-secs must be under {} for burst at --interval-secs {interval_secs} (the next slot would fall in the hold)",
            interval - 1.0
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Plan> {
        let mut v = vec!["loadtest"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)?.plan()
    }

    #[test]
    fn scenario_defaults_fill_unset_flags() {
        let p = parse(&["connections"]).unwrap();
        assert_eq!((p.validators, p.capacity, p.sites), (2000, 1, 0));
        assert_eq!(p.hubs[0].addr.port(), 18070);
        let p = parse(&["ingest", "--database-url", "postgres://u@127.0.0.1/db"]).unwrap();
        assert_eq!((p.validators, p.sites, p.interval_secs), (200, 1000, 1));
        assert!(!serde_json::to_string(&p).unwrap().contains("postgres://"));
        let p = parse(&[
            "soak",
            "--database-url",
            "postgres://u@127.0.0.1/db",
            "--duration",
            "10m",
        ])
        .unwrap();
        assert_eq!(p.hold_secs, 600.0);
        let p = parse(&[
            "schedule",
            "--database-url",
            "postgres://u@127.0.0.1/db",
            "--sites",
            "100000",
            "--validators",
            "50",
        ])
        .unwrap();
        assert_eq!((p.sites, p.interval_secs, p.validators), (100_000, 60, 50));
        // The last of a repeated single-valued flag wins (scripts add theirs first).
        let p = parse(&["connections", "--validators", "5", "--validators", "7"]).unwrap();
        assert_eq!(p.validators, 7);
        assert!(p.calibrate);
        assert_eq!(
            (p.source_addrs, p.sample_secs, p.check_jitter_ms),
            (4, 10.0, 0)
        );
        let p = parse(&["burst", "--database-url", "postgres://u@127.0.0.1/db"]).unwrap();
        assert_eq!(
            (p.validators, p.capacity, p.sites, p.interval_secs),
            (1_100, 100, 33_334, 60)
        );
        assert_eq!(
            (p.source_addrs, p.sample_secs, p.check_jitter_ms),
            (64, 1.0, 2_000)
        );
        assert_eq!(
            (p.failure_rate, p.ramp_secs, p.hold_secs),
            (0.0, 10.0, 50.0)
        );
        // The wait for the burst counts in the time limit.
        assert_eq!(p.max_secs, 10.0 + 10.0 + 50.0 + 5.0 + 120.0 + 15.0);
        let p = parse(&[
            "burst",
            "--database-url",
            "postgres://u@127.0.0.1/db",
            "--no-calibrate",
            "--check-jitter-ms",
            "0",
            "--max-secs",
            "30",
        ])
        .unwrap();
        assert!(!p.calibrate);
        assert_eq!((p.check_jitter_ms, p.max_secs), (0, 30.0));
    }

    #[test]
    fn bad_flags_are_refused_with_their_name() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["connections", "--hub-url", "ws://10.1.2.3:1/ws"],
                "loopback",
            ),
            (&["connections", "--capacity", "0"], "--capacity"),
            (&["connections", "--sites", "5"], "--sites"),
            (&["connections", "--regions", "EU"], "--regions"),
            (&["ingest"], "--database-url"),
            (
                &["ingest", "--sites", "0", "--failure-rate", "2"],
                "--failure-rate",
            ),
            (&["connections", "--hold-secs", "0"], "--hold-secs"),
            (&["connections", "--source-addrs", "0"], "--source-addrs"),
            (&["ingest", "--sites", "0", "--duration", "5"], "--duration"),
            (
                &["connections", "--metrics-url", "http://8.8.8.8/metrics"],
                "loopback",
            ),
            (&["burst", "--sites", "1000"], "--sites"),
            (&["burst", "--ramp-secs", "45"], "--ramp-secs"),
            (&["burst", "--hold-secs", "59"], "--hold-secs"),
            (
                &["burst", "--interval-secs", "30", "--ramp-secs", "15"],
                "--ramp-secs",
            ),
        ];
        for (args, want) in cases {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-5").is_err());
    }
}
