//! One run, phase by phase:
//!
//! 1. **setup**: connect to PostgreSQL, write (or disable) the simulated
//!    websites, read every process's memory before any validator connects;
//! 2. **ramp-up**: start validator `i` at `ramp * i / N`, each with a fresh
//!    key; then **settle**: wait (at most `--settle-secs`) for the last
//!    handshakes;
//! 3. **hold**: scrape the hubs' `/metrics`, read `/proc` and the tool's
//!    counters at both edges; sample hub RSS every `--sample-secs`;
//! 4. **ramp-down**: validators close politely, spread over
//!    `--ramp-down-secs`;
//! 5. **report**: count the window's ticks in PostgreSQL, disable the
//!    simulated websites, assemble the [`Report`].
//!
//! `burst` times this around its due second ([`crate::burst`]): the
//! websites are written so that they are all due `OWN_MARGIN + ramp + LEAD`
//! after the write; the ramp waits so that it ends `LEAD` before that
//! second, the settle ends before it, and the hold ends `--hold-secs` after
//! it.
//!
//! Bounded: `--max-secs` ends the run at whatever phase it is in (the
//! ramp-down then closes everything at once and the report is still made);
//! a watchdog exits the process if even that hangs. SIGINT or SIGTERM does
//! the same as the time limit; a second one exits at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use protocol::now_ms;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;

use crate::burst;
use crate::cli::{MetricsTarget, Plan, Scenario};
use crate::procs::{self, Group, GroupSample, Selector};
use crate::prom::{self, counter_delta, Scrape};
use crate::report::{
    Acks, BurstReport, Connections, FirstLastMax, HistogramSummary, HubReport, ProcessReport, Rate,
    Report, RssSample, SitesReport, ToolLatency, Window,
};
use crate::sites::{self, Seeded};
use crate::stats::{by_name, diff_codes, Percentiles, Stats};
use crate::validator::{self, Control, SimConfig};

const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
const DB_TIMEOUT: Duration = Duration::from_secs(60);
/// Past `--max-secs`, how long the ramp-down and report may still take
/// before the watchdog exits the process.
const WATCHDOG_GRACE: Duration = Duration::from_secs(90);

const DISPATCH_TO_COMMIT: &str = "uptime_hub_dispatch_to_commit_seconds";
const REJECTED: &str = "uptime_hub_results_rejected_total";
/// Hub counters reported as differences over the hold.
const HUB_COUNTERS: &[&str] = &[
    "uptime_hub_tasks_sent_total",
    "uptime_hub_tasks_replaced_total",
    "uptime_hub_results_accepted_total",
    "uptime_hub_ticks_written_total",
    "uptime_hub_ticks_duplicate_total",
    "uptime_hub_write_errors_total",
    "uptime_hub_rounds_opened_total",
    "uptime_hub_rounds_skipped_total",
    "uptime_hub_rounds_unstaffed_total",
    "uptime_hub_slots_missed_total",
    "uptime_hub_sessions_replaced_total",
    "uptime_hub_cross_hub_messages_total",
    "uptime_hub_cross_hub_dropped_total",
    "uptime_hub_pubsub_lagged_total",
    "uptime_hub_redis_errors_total",
];
/// Hub gauges reported at the end of the hold, per hub.
const HUB_GAUGES: &[&str] = &[
    "uptime_hub_validators_connected",
    "uptime_hub_ingest_queue_depth",
    "uptime_hub_websites_owned",
    "uptime_hub_ring_members",
];

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Completed,
    Interrupted,
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Setup,
    RampUp,
    Settle,
    Hold,
    RampDown,
    Report,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Setup,
        Phase::RampUp,
        Phase::Settle,
        Phase::Hold,
        Phase::RampDown,
        Phase::Report,
    ];
    fn name(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::RampUp => "ramp-up",
            Phase::Settle => "settle",
            Phase::Hold => "hold",
            Phase::RampDown => "ramp-down",
            Phase::Report => "report",
        }
    }
}

/// Why the run is stopping early, set once.
#[derive(Default)]
struct StopReason(Mutex<Option<(Exit, String)>>);

impl StopReason {
    fn set(&self, exit: Exit, why: String) {
        let mut g = self.0.lock().expect("stop reason lock poisoned");
        if g.is_none() {
            *g = Some((exit, why));
        }
    }
    fn get(&self) -> Option<(Exit, String)> {
        self.0.lock().expect("stop reason lock poisoned").clone()
    }
}

pub fn log(msg: impl AsRef<str>) {
    eprintln!("[loadtest] {}", msg.as_ref());
}

/// The processes measured, in report order; the hubs come first.
fn process_groups(plan: &Plan) -> Vec<Group> {
    let by = |pid: Option<u32>, comm: &str| match pid {
        Some(p) => Selector::Pids(vec![p]),
        None => Selector::Comm(comm.into()),
    };
    vec![
        Group {
            role: "hub".into(),
            selector: if plan.hub_pids.is_empty() {
                Selector::Comm("hub".into())
            } else {
                Selector::Pids(plan.hub_pids.clone())
            },
            per_process: true,
        },
        Group {
            role: "haproxy".into(),
            selector: by(plan.haproxy_pid, "haproxy"),
            per_process: false,
        },
        Group {
            role: "redis".into(),
            selector: by(plan.redis_pid, "redis-server"),
            per_process: false,
        },
        Group {
            role: "postgres".into(),
            selector: match plan.pg_pid {
                Some(p) => Selector::Tree(p),
                None => Selector::Comm("postgres".into()),
            },
            per_process: false,
        },
        Group {
            role: "loadtest".into(),
            selector: Selector::Pids(vec![std::process::id()]),
            per_process: false,
        },
    ]
}

/// Scrapes every hub; `Ok(None)` when no URL was given. Any failure makes
/// the whole scrape unusable (sums over hubs would be wrong).
async fn scrape_all(targets: &[MetricsTarget]) -> Result<Option<Scrape>, Vec<String>> {
    if targets.is_empty() {
        return Ok(None);
    }
    let results = join_all(targets.iter().map(|t| async move {
        let body = crate::net::http_get(&t.parsed, SCRAPE_TIMEOUT)
            .await
            .map_err(|e| format!("{}: {e:#}", t.url))?;
        prom::parse(&body).map_err(|e| format!("{}: not Prometheus text: {e}", t.url))
    }))
    .await;
    let mut scrapes = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(s) => scrapes.push(s),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(Some(Scrape::merge(scrapes)))
    } else {
        Err(errors)
    }
}

fn summarize(h: &prom::Histogram, scale: f64) -> Option<HistogramSummary> {
    let count = h.total().round() as u64;
    (count > 0).then(|| HistogramSummary {
        count,
        p50: h.quantile(0.50).map(|v| v * scale),
        p90: h.quantile(0.90).map(|v| v * scale),
        p99: h.quantile(0.99).map(|v| v * scale),
        mean: h.mean().map(|v| v * scale),
    })
}

/// Waits (until `deadline`) until the hubs together schedule `want`
/// websites (`uptime_hub_websites_owned` summed), so the load starts from a
/// loaded schedule and the memory read before connecting includes it.
/// Returns how long that took, or `None` if it did not happen.
async fn wait_until_owned(
    targets: &[MetricsTarget],
    want: u64,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Option<f64> {
    let t0 = Instant::now();
    let mut owned = 0.0;
    while Instant::now() < deadline && !cancel.is_cancelled() {
        if let Ok(Some(s)) = scrape_all(targets).await {
            owned = s.sum("uptime_hub_websites_owned").unwrap_or(0.0);
            if owned >= want as f64 {
                let secs = t0.elapsed().as_secs_f64();
                log(format!(
                    "the hubs schedule all {want} websites ({secs:.1} s after the write)"
                ));
                return Some(secs);
            }
        }
        sleep(Duration::from_millis(250)).await;
    }
    log(format!(
        "warning: after {:.0} s the hubs schedule {owned} of {want} enabled websites; going on",
        t0.elapsed().as_secs_f64()
    ));
    None
}

/// Hub figures over the hold: histogram and counter differences.
pub fn hub_report(before: &Scrape, after: &Scrape) -> HubReport {
    let hist = |name: &str, scale: f64| {
        let a = after.histogram(name)?;
        let d = match before.histogram(name) {
            Some(b) => a.since(&b),
            None => a,
        };
        summarize(&d, scale)
    };
    let old_rej = before.by_label(REJECTED, "reason");
    let rejected_by_reason = after
        .by_label(REJECTED, "reason")
        .into_iter()
        .map(|(k, v)| {
            let d = counter_delta(old_rej.get(&k).copied().unwrap_or(0.0), v);
            (k, d.round() as u64)
        })
        .filter(|(_, v)| *v > 0)
        .collect();
    let mut counters = BTreeMap::new();
    for name in HUB_COUNTERS {
        if let Some(a) = after.sum(name) {
            let short = name.trim_start_matches("uptime_hub_").to_string();
            counters.insert(short, counter_delta(before.sum(name).unwrap_or(0.0), a));
        }
    }
    let old_closed = before.by_label("uptime_hub_rounds_closed_total", "status");
    for (status, v) in after.by_label("uptime_hub_rounds_closed_total", "status") {
        let d = counter_delta(old_closed.get(&status).copied().unwrap_or(0.0), v);
        counters.insert(format!("rounds_closed_{status}"), d);
    }
    // Per hub: a sum means nothing for some (ring_members).
    let gauges = HUB_GAUGES
        .iter()
        .map(|name| {
            (
                name.trim_start_matches("uptime_hub_").to_string(),
                after.by_label(name, "hub"),
            )
        })
        .filter(|(_, per_hub)| !per_hub.is_empty())
        .collect();
    HubReport {
        dispatch_to_commit_ms: hist(DISPATCH_TO_COMMIT, 1000.0),
        write_latency_ms: hist("uptime_hub_write_latency_seconds", 1000.0),
        write_batch_size: hist("uptime_hub_write_batch_size", 1.0),
        rejected_by_reason,
        counters,
        gauges,
    }
}

/// Prints a progress line every `every` until `done`.
async fn progress(
    stats: Arc<Stats>,
    phase: Arc<AtomicU8>,
    every: Duration,
    target: usize,
    t0: Instant,
    done: CancellationToken,
) {
    let mut last = stats.counters();
    let mut last_t = Instant::now();
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = sleep(every) => {}
        }
        let now = stats.counters();
        let dt = last_t.elapsed().as_secs_f64().max(1e-3);
        let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / dt;
        let ph = Phase::ALL[usize::from(phase.load(Relaxed)).min(Phase::ALL.len() - 1)];
        log(format!(
            "{:>7.1}s {:<9} connected {}/{}  tasks/s {:.0}  acks/s {:.0} (dup {:.0})  rejected {} (+{})  conn-fail {}  lost {}",
            t0.elapsed().as_secs_f64(),
            ph.name(),
            now.connected,
            target,
            per(now.tasks, last.tasks),
            per(now.stored + now.duplicate, last.stored + last.duplicate),
            per(now.duplicate, last.duplicate),
            now.rejected,
            now.rejected - last.rejected,
            now.connect_failures,
            now.sessions_lost,
        ));
        last = now;
        last_t = Instant::now();
    }
}

/// When the wall clock reads `unix_ms` (now, if it is past).
fn instant_at(unix_ms: i64) -> Instant {
    Instant::now() + Duration::from_millis(u64::try_from(unix_ms - now_ms()).unwrap_or(0))
}

/// Tracks the fewest and most connections seen.
struct MinMax {
    min: i64,
    max: i64,
}

impl MinMax {
    fn new() -> Self {
        Self {
            min: i64::MAX,
            max: 0,
        }
    }
    fn see(&mut self, v: i64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

pub async fn run(plan: Plan) -> anyhow::Result<(Report, Exit)> {
    let t0 = Instant::now();
    let started_at_ms = now_ms();
    let stats = Arc::new(Stats::new());
    let phase = Arc::new(AtomicU8::new(Phase::Setup as u8));
    let set_phase = |p: Phase| phase.store(p as u8, Relaxed);
    let groups = process_groups(&plan);
    let tck = procs::clock_ticks_per_sec();

    // Stopping early: signals, the hard limit, and a watchdog past it.
    let cancel = CancellationToken::new();
    let reason = Arc::new(StopReason::default());
    {
        let (cancel, reason) = (cancel.clone(), reason.clone());
        tokio::spawn(async move {
            // Without signal handlers the run still ends by its time limits.
            let Ok(mut signals) = runtime::Signals::listen() else {
                return;
            };
            let sig = signals.recv().await;
            log(format!("{sig}: stopping (again to exit at once)"));
            reason.set(Exit::Interrupted, format!("interrupted by {sig}"));
            cancel.cancel();
            let sig = signals.recv().await;
            log(format!("{sig} again: exiting without a report"));
            std::process::exit(130);
        });
    }
    {
        let (cancel, reason) = (cancel.clone(), reason.clone());
        let limit = Duration::from_secs_f64(plan.max_secs);
        tokio::spawn(async move {
            sleep(limit).await;
            log(format!(
                "--max-secs {} reached: stopping",
                limit.as_secs_f64()
            ));
            reason.set(
                Exit::TimedOut,
                format!(
                    "hard time limit (--max-secs {}) reached",
                    limit.as_secs_f64()
                ),
            );
            cancel.cancel();
            sleep(WATCHDOG_GRACE).await;
            log("the run did not finish after its time limit; exiting without a report");
            std::process::exit(124);
        });
    }

    // ---- setup ----
    let pool = match &plan.database_url {
        Some(url) => Some(sites::connect(url).await?),
        None => None,
    };
    let mut sites_report = None;
    let ramp_ms = (plan.ramp_secs * 1000.0) as i64;
    // Burst: the second every website is due in.
    let mut burst_due_ms = None;
    if let Some(pool) = &pool {
        let seeded = if plan.scenario == Scenario::Burst {
            let due = burst::due_ms(now_ms(), burst::OWN_MARGIN_MS + ramp_ms + burst::LEAD_MS);
            let ids = burst::website_ids(due, plan.interval_secs, plan.sites);
            log(format!(
                "writing {} simulated websites at {} s, all due at {} ({:.1} s from now)",
                plan.sites,
                plan.interval_secs,
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_millis(due as u64)
                ),
                (due - now_ms()) as f64 / 1000.0
            ));
            let seeded =
                sites::seed_burst(pool, &ids, plan.interval_secs, plan.site_timeout_ms).await?;
            if seeded.enabled != ids.len() as u64 {
                log(format!(
                    "warning: {} of the burst's {} websites are enabled (ids taken by other websites?)",
                    seeded.enabled,
                    ids.len()
                ));
            }
            burst_due_ms = Some(due);
            seeded
        } else if plan.sites > 0 {
            log(format!(
                "writing {} simulated websites at {} s",
                plan.sites, plan.interval_secs
            ));
            sites::seed(pool, plan.sites, plan.interval_secs, plan.site_timeout_ms).await?
        } else {
            let off = sites::disable(pool).await?;
            Seeded {
                inserted: 0,
                updated: off,
                enabled: 0,
            }
        };
        let other_enabled = sites::other_enabled(pool).await?;
        if other_enabled > 0 {
            log(format!(
                "note: {other_enabled} other enabled websites; their tasks are answered and counted too"
            ));
        }
        // A burst's ramp starts on time, owned or not.
        let deadline = match burst_due_ms {
            Some(due) => instant_at(due - burst::LEAD_MS - ramp_ms),
            None => Instant::now() + Duration::from_secs(60),
        };
        let hubs_own_all_after_secs = if plan.sites > 0 && !plan.metrics.is_empty() {
            wait_until_owned(
                &plan.metrics,
                seeded.enabled + other_enabled,
                deadline,
                &cancel,
            )
            .await
        } else {
            None
        };
        sites_report = Some(SitesReport {
            seeded,
            other_enabled,
            hubs_own_all_after_secs,
        });
    }
    if let Err(errors) = scrape_all(&plan.metrics).await {
        log(format!(
            "warning: hub metrics unreachable now: {}",
            errors.join("; ")
        ));
    }
    let before_connect = procs::sample(&groups);
    if before_connect[0].procs.is_empty() {
        log("warning: no hub process found (give --hub-pid); hub CPU and memory will be n/a");
    }

    let done = CancellationToken::new();
    tokio::spawn(progress(
        stats.clone(),
        phase.clone(),
        Duration::from_secs_f64(plan.progress_secs),
        plan.validators,
        t0,
        done.clone(),
    ));

    if let Some(due) = burst_due_ms {
        let start = due - burst::LEAD_MS - ramp_ms;
        let wait = (start - now_ms()) as f64 / 1000.0;
        if wait > 0.0 {
            log(format!(
                "waiting {wait:.1} s to start the ramp, so that it ends {} s before the burst",
                burst::LEAD_MS / 1000
            ));
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = sleep_until(instant_at(start)) => {}
            }
        }
    }

    // ---- ramp-up ----
    set_phase(Phase::RampUp);
    log(format!(
        "ramping up {} validators over {} s via {}",
        plan.validators,
        plan.ramp_secs,
        plan.hub_urls.join(" ")
    ));
    let cfg = Arc::new(SimConfig {
        hubs: plan.hubs.clone(),
        source_addrs: plan.source_addrs,
        regions: plan.regions.clone(),
        capacity: plan.capacity,
        check_latency: Duration::from_millis(plan.check_latency_ms),
        check_jitter: Duration::from_millis(plan.check_jitter_ms),
        failure_rate: plan.failure_rate,
        count: plan.validators,
    });
    let (control_tx, control_rx) = watch::channel(Control::default());
    let mut validators = JoinSet::new();
    let ramp_start = Instant::now();
    let ramp = Duration::from_secs_f64(plan.ramp_secs);
    let mut seen = MinMax::new();
    for i in 0..plan.validators {
        let at = ramp_start + ramp.mul_f64(i as f64 / plan.validators as f64);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = sleep_until(at) => {}
        }
        let key = protocol::keypair::generate();
        validators.spawn(validator::run(
            i,
            key,
            cfg.clone(),
            stats.clone(),
            control_rx.clone(),
        ));
        if i % 256 == 0 {
            seen.see(stats.connected.load(Relaxed));
        }
    }

    // ---- settle ----
    set_phase(Phase::Settle);
    let mut settle_until = Instant::now() + Duration::from_secs_f64(plan.settle_secs);
    if let Some(due) = burst_due_ms {
        // The hold must see the burst from before it starts.
        settle_until = settle_until.min(instant_at(due - 1_000));
    }
    while !cancel.is_cancelled() && Instant::now() < settle_until {
        let c = stats.connected.load(Relaxed);
        seen.see(c);
        if c as usize >= plan.validators {
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = sleep(Duration::from_millis(100)) => {}
        }
    }
    let ramp_up_secs = ramp_start.elapsed().as_secs_f64();

    // ---- hold ----
    set_phase(Phase::Hold);
    // The same order at both edges (counters, /proc, hub metrics), so the
    // hub's window has the tool's length, shifted by the /proc read.
    let c0 = stats.counters();
    let rej0 = stats.rejected_by_code_snapshot();
    let start_ms = now_ms();
    stats.set_measuring(true, start_ms);
    let hold_t0 = Instant::now();
    let at_hold_start = procs::sample(&groups);
    let scrape_start = scrape_all(&plan.metrics).await;
    if !cancel.is_cancelled() {
        log(format!(
            "holding {} s{} with {} connections",
            plan.hold_secs,
            if burst_due_ms.is_some() {
                " past the burst's second"
            } else {
                ""
            },
            c0.connected
        ));
    }
    let hold_until = match burst_due_ms {
        Some(due) => instant_at(due + (plan.hold_secs * 1000.0) as i64),
        None => hold_t0 + Duration::from_secs_f64(plan.hold_secs),
    };
    let mut connected_at_due = None;
    let mut during = MinMax::new();
    during.see(c0.connected);
    let mut rss_samples = vec![RssSample {
        t_secs: 0.0,
        rss_kib: at_hold_start[0].rss_kib(),
    }];
    let sample_every = Duration::from_secs_f64(plan.sample_secs);
    let mut next_sample = hold_t0 + sample_every;
    while !cancel.is_cancelled() && Instant::now() < hold_until {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = sleep_until(hold_until.min(Instant::now() + Duration::from_millis(200))) => {}
        }
        let c = stats.connected.load(Relaxed);
        during.see(c);
        seen.see(c);
        if connected_at_due.is_none() && burst_due_ms.is_some_and(|due| now_ms() >= due) {
            connected_at_due = Some(c);
        }
        if Instant::now() >= next_sample && Instant::now() < hold_until {
            let s = procs::sample(&groups[..1]);
            rss_samples.push(RssSample {
                t_secs: hold_t0.elapsed().as_secs_f64(),
                rss_kib: s[0].rss_kib(),
            });
            next_sample += sample_every;
        }
    }
    let end_ms = now_ms();
    let window_secs = hold_t0.elapsed().as_secs_f64();
    stats.set_measuring(false, end_ms);
    let c1 = stats.counters();
    let rej1 = stats.rejected_by_code_snapshot();
    let at_hold_end = procs::sample(&groups);
    let scrape_end = scrape_all(&plan.metrics).await;
    rss_samples.push(RssSample {
        t_secs: window_secs,
        rss_kib: at_hold_end[0].rss_kib(),
    });
    during.see(c1.connected);

    // ---- ramp-down ----
    set_phase(Phase::RampDown);
    let spread = if cancel.is_cancelled() {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(plan.ramp_down_secs)
    };
    log(format!(
        "ramping down {} connections over {:.1} s",
        stats.connected.load(Relaxed),
        spread.as_secs_f64()
    ));
    control_tx.send_replace(Control {
        stop: Some((Instant::now(), spread)),
    });
    let drain = async {
        let mut hurried = spread.is_zero();
        loop {
            tokio::select! {
                r = validators.join_next() => if r.is_none() { break },
                _ = cancel.cancelled(), if !hurried => {
                    hurried = true;
                    control_tx.send_replace(Control { stop: Some((Instant::now(), Duration::ZERO)) });
                }
            }
        }
    };
    if timeout(spread + Duration::from_secs(15), drain)
        .await
        .is_err()
    {
        log("some validators did not close in time; aborting them");
        validators.abort_all();
    }

    // ---- report ----
    set_phase(Phase::Report);
    done.cancel();
    let mut ticks_stored_db = None;
    let mut burst_ticks = None;
    if let Some(pool) = &pool {
        match timeout(DB_TIMEOUT, sites::ticks_between(pool, start_ms, end_ms)).await {
            Ok(Ok(n)) => ticks_stored_db = Some(Rate::over(n, window_secs)),
            Ok(Err(e)) => log(format!("warning: {e:#}")),
            Err(_) => log("warning: counting ticks took too long; ticks_stored_db is null"),
        }
        if let Some(due) = burst_due_ms {
            let count = sites::burst_ticks(pool, due, due + burst::WINDOW_MS);
            match timeout(DB_TIMEOUT, count).await {
                Ok(Ok(n)) => burst_ticks = Some(n),
                Ok(Err(e)) => log(format!("warning: {e:#}")),
                Err(_) => log("warning: counting the burst's ticks took too long"),
            }
        }
        if plan.sites > 0 && !plan.keep_sites {
            match timeout(DB_TIMEOUT, sites::disable(pool)).await {
                Ok(Ok(n)) => log(format!("disabled {n} simulated websites")),
                Ok(Err(e)) => log(format!("warning: {e:#}")),
                Err(_) => log("warning: disabling the simulated websites took too long"),
            }
        }
    }

    let (hub, hub_scrape_errors) = match (scrape_start, scrape_end) {
        (Ok(Some(a)), Ok(Some(b))) => (Some(hub_report(&a, &b)), Vec::new()),
        (Ok(None), Ok(None)) => (None, Vec::new()),
        (a, b) => {
            let mut errs = Vec::new();
            for (edge, r) in [("hold start", a), ("hold end", b)] {
                if let Err(e) = r {
                    errs.extend(e.into_iter().map(|e| format!("{edge}: {e}")));
                }
            }
            (None, errs)
        }
    };

    let processes = process_reports(
        &groups,
        &before_connect,
        &at_hold_start,
        &at_hold_end,
        window_secs,
        tck,
    );
    let hub_rss_before = before_connect[0].rss_kib();
    let hub_rss_after = at_hold_start[0].rss_kib();
    let rss_per_connection_bytes = (c0.connected > 0 && !at_hold_start[0].procs.is_empty())
        .then(|| (hub_rss_after as f64 - hub_rss_before as f64) * 1024.0 / c0.connected as f64);
    let hub_cpu_ticks = at_hold_end[0].cpu_ticks_since(&at_hold_start[0]);
    let ticks_in_window = ticks_stored_db.map(|r| r.count).or_else(|| {
        hub.as_ref()
            .and_then(|h| h.counters.get("ticks_written_total"))
            .map(|v| *v as u64)
    });
    let hub_cpu_us_per_tick = match ticks_in_window {
        Some(n) if n > 0 && !at_hold_end[0].procs.is_empty() => {
            Some(hub_cpu_ticks as f64 / tck as f64 * 1e6 / n as f64)
        }
        _ => None,
    };

    let tool_latency = ToolLatency {
        schedule_jitter_ms: Percentiles::of(&stats.jitter_ms.lock().expect("poisoned"), 1.0),
        dispatch_to_ack_ms: Percentiles::of(
            &stats.dispatch_to_ack_ms.lock().expect("poisoned"),
            1.0,
        ),
        result_to_ack_ms: Percentiles::of(&stats.ack_rtt_us.lock().expect("poisoned"), 0.001),
    };
    let burst = burst_due_ms.map(|due| {
        let counter = |name: &str| {
            hub.as_ref()
                .and_then(|h| h.counters.get(name))
                .map(|v| v.round() as u64)
        };
        let per_second = burst::per_second(&stats.per_second.seconds(), due);
        let samples: Vec<(i64, u64)> = rss_samples
            .iter()
            .map(|s| (start_ms + (s.t_secs * 1000.0) as i64, s.rss_kib))
            .collect();
        let (hub_rss_kib_before, hub_rss_kib_peak) = if at_hold_start[0].procs.is_empty() {
            (None, None)
        } else {
            burst::rss_before_and_peak(&samples, due)
        };
        let last_ack_ms = stats.last_ack_ms();
        let mut b = BurstReport {
            due_ms: due,
            phase_ms: due.rem_euclid(i64::from(plan.interval_secs) * 1000),
            websites: sites_report.as_ref().map_or(0, |s| s.seeded.enabled),
            connected_at_due,
            tasks: c1.tasks - c0.tasks,
            tasks_before_due: per_second.iter().filter(|s| s.t < 0).map(|s| s.tasks).sum(),
            results_sent: c1.results_sent - c0.results_sent,
            acks_stored: c1.stored - c0.stored,
            acks_duplicate: c1.duplicate - c0.duplicate,
            acks_rejected: c1.rejected - c0.rejected,
            rejected_by_code: by_name(diff_codes(rej0, rej1)),
            lost: stats.unacked_at_close.load(Relaxed),
            tasks_dropped_while_closing: stats.tasks_dropped.load(Relaxed),
            ticks_stored_db: burst_ticks,
            rounds_opened: counter("rounds_opened_total"),
            rounds_closed: hub
                .as_ref()
                .map(|h| {
                    h.counters
                        .iter()
                        .filter_map(|(k, v)| {
                            let status = k.strip_prefix("rounds_closed_")?;
                            Some((status.to_string(), v.round() as u64))
                        })
                        .filter(|(_, v)| *v > 0)
                        .collect()
                })
                .unwrap_or_default(),
            rounds_unstaffed: counter("rounds_unstaffed_total"),
            rounds_skipped: counter("rounds_skipped_total"),
            slots_missed: counter("slots_missed_total"),
            tasks_replaced: counter("tasks_replaced_total"),
            last_ack_ms,
            drain_secs: last_ack_ms.map(|t| (t - due) as f64 / 1000.0),
            per_second,
            hub_rss_kib_before,
            hub_rss_kib_peak,
            verdict: "pass",
            failures: Vec::new(),
        };
        let other = sites_report.as_ref().map_or(0, |s| s.other_enabled);
        b.failures = burst::failures(&b, other);
        if !b.failures.is_empty() {
            b.verdict = "fail";
        }
        b
    });
    let stopped = reason.get();
    let report = Report {
        scenario: plan.scenario.name(),
        started_at_ms,
        stopped_early: stopped.as_ref().map(|(_, why)| why.clone()),
        sites: sites_report,
        window: Window {
            start_ms,
            end_ms,
            secs: window_secs,
        },
        connections: Connections {
            target: plan.validators,
            held_at_hold_start: c0.connected,
            held_at_hold_end: c1.connected,
            min_during_hold: during.min,
            max_seen: seen.max.max(during.max),
            ramp_up_secs,
            sessions: c1.sessions,
            connect_failures: stats.connect_failures(),
            sessions_lost: c1.sessions_lost,
            reconnect_hints: stats.reconnect_hints.load(Relaxed),
        },
        tasks: Rate::over(c1.tasks - c0.tasks, window_secs),
        results_sent: Rate::over(c1.results_sent - c0.results_sent, window_secs),
        acks: Acks {
            stored: Rate::over(c1.stored - c0.stored, window_secs),
            duplicate: Rate::over(c1.duplicate - c0.duplicate, window_secs),
            rejected: Rate::over(c1.rejected - c0.rejected, window_secs),
            rejected_by_code: by_name(diff_codes(rej0, rej1)),
            unacked_at_close: stats.unacked_at_close.load(Relaxed),
        },
        error_frames_by_code: stats.error_frames_by_code(),
        tasks_foreign: stats.foreign_tasks.load(Relaxed),
        tasks_dropped_while_closing: stats.tasks_dropped.load(Relaxed),
        heartbeats_sent: stats.heartbeats.load(Relaxed),
        ticks_stored_db,
        hub,
        hub_scrape_errors,
        tool_latency,
        processes,
        rss_per_connection_bytes,
        hub_cpu_us_per_tick,
        // Filled in by the caller, which times verify_result outside the
        // runtime (see main).
        verify_result_us_before: None,
        verify_result_us_after: None,
        hub_cpu_per_tick_in_verify_results: None,
        cpu_model: None,
        hub_rss_kib: FirstLastMax::of(rss_samples.iter().map(|s| s.rss_kib))
            .filter(|_| !at_hold_start[0].procs.is_empty()),
        hub_rss_samples: rss_samples,
        burst,
        plan,
    };
    let exit = stopped.map_or(Exit::Completed, |(e, _)| e);
    Ok((report, exit))
}

fn process_reports(
    groups: &[Group],
    before: &[GroupSample],
    start: &[GroupSample],
    end: &[GroupSample],
    window_secs: f64,
    tck: u64,
) -> Vec<ProcessReport> {
    let rss = |s: &GroupSample| (!s.procs.is_empty()).then(|| s.rss_kib());
    let pss = |s: &GroupSample| (!s.procs.is_empty()).then(|| s.pss_kib()).flatten();
    let mut out = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let pids: Vec<u32> = end[i]
            .procs
            .keys()
            .chain(start[i].procs.keys())
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let found = !end[i].procs.is_empty();
        out.push(ProcessReport {
            role: g.role.clone(),
            pids: pids.clone(),
            cpu_percent: found
                .then(|| procs::cpu_percent(end[i].cpu_ticks_since(&start[i]), window_secs, tck))
                .flatten(),
            rss_kib_before_connect: rss(&before[i]),
            rss_kib_after_ramp: rss(&start[i]),
            rss_kib_end: rss(&end[i]),
            pss_kib_end: pss(&end[i]),
        });
        if g.per_process && pids.len() > 1 {
            for pid in pids {
                let one = |s: &GroupSample| s.procs.get(&pid).map(|r| r.rss_kib);
                out.push(ProcessReport {
                    role: format!("{}:{pid}", g.role),
                    pids: vec![pid],
                    cpu_percent: end[i]
                        .procs
                        .contains_key(&pid)
                        .then(|| {
                            procs::cpu_percent(
                                end[i].cpu_ticks_since_for(&start[i], pid),
                                window_secs,
                                tck,
                            )
                        })
                        .flatten(),
                    rss_kib_before_connect: one(&before[i]),
                    rss_kib_after_ramp: one(&start[i]),
                    rss_kib_end: one(&end[i]),
                    pss_kib_end: end[i].procs.get(&pid).and_then(|r| r.pss_kib),
                });
            }
        }
    }
    out
}

/// The scenario's own one-line verdict material, for the log.
pub fn headline(r: &Report) -> String {
    match r.plan.scenario {
        Scenario::Connections => format!(
            "{} connections held; hub RSS/connection {}",
            r.connections.held_at_hold_start,
            r.rss_per_connection_bytes
                .map_or("n/a".into(), |b| format!("{b:.0} B"))
        ),
        Scenario::Ingest | Scenario::Soak => format!(
            "{} acks stored/s; {} ticks/s in PostgreSQL",
            r.acks
                .stored
                .per_sec
                .map_or("n/a".into(), |v| format!("{v:.0}")),
            r.ticks_stored_db
                .and_then(|t| t.per_sec)
                .map_or("n/a".into(), |v| format!("{v:.0}"))
        ),
        Scenario::Burst => match &r.burst {
            Some(b) => format!(
                "burst {}: {} tasks, {} acks stored, {} lost, {} ticks for the slot in PostgreSQL, drained {}",
                b.verdict.to_uppercase(),
                b.tasks,
                b.acks_stored,
                b.lost,
                b.ticks_stored_db.map_or("n/a".into(), |t| t.to_string()),
                b.drain_secs
                    .map_or("n/a".into(), |d| format!("{d:.1} s after it was due"))
            ),
            None => "burst: n/a (no database)".into(),
        },
        Scenario::Schedule => format!(
            "dispatch jitter p50 {} ms, p99 {} ms",
            r.tool_latency
                .schedule_jitter_ms
                .as_ref()
                .map_or("n/a".into(), |p| format!("{:.0}", p.p50)),
            r.tool_latency
                .schedule_jitter_ms
                .as_ref()
                .map_or("n/a".into(), |p| format!("{:.0}", p.p99))
        ),
    }
}

/// How the run ended, in words.
pub fn describe_exit(e: Exit) -> &'static str {
    match e {
        Exit::Completed => "completed",
        Exit::Interrupted => "interrupted",
        Exit::TimedOut => "stopped by --max-secs",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(text: &str) -> Scrape {
        prom::parse(text).unwrap()
    }

    #[test]
    fn hub_report_diffs_counters_histograms_and_keeps_gauges_per_hub() {
        let before = scrape(
            r#"uptime_hub_ticks_written_total{hub="hub-1"} 100
uptime_hub_ticks_written_total{hub="hub-2"} 50
uptime_hub_results_rejected_total{hub="hub-1",reason="deadline_passed"} 3
uptime_hub_rounds_closed_total{hub="hub-1",status="up"} 10
# TYPE uptime_hub_dispatch_to_commit_seconds histogram
uptime_hub_dispatch_to_commit_seconds_bucket{hub="hub-1",le="0.01"} 100
uptime_hub_dispatch_to_commit_seconds_bucket{hub="hub-1",le="+Inf"} 100
uptime_hub_dispatch_to_commit_seconds_sum{hub="hub-1"} 0.5
uptime_hub_dispatch_to_commit_seconds_count{hub="hub-1"} 100
uptime_hub_ring_members{hub="hub-1"} 2
uptime_hub_ring_members{hub="hub-2"} 2
"#,
        );
        let after = scrape(
            r#"uptime_hub_ticks_written_total{hub="hub-1"} 160
uptime_hub_ticks_written_total{hub="hub-2"} 90
uptime_hub_results_rejected_total{hub="hub-1",reason="deadline_passed"} 5
uptime_hub_results_rejected_total{hub="hub-2",reason="bad_token"} 1
uptime_hub_rounds_closed_total{hub="hub-1",status="up"} 15
uptime_hub_rounds_closed_total{hub="hub-1",status="down"} 2
# TYPE uptime_hub_dispatch_to_commit_seconds histogram
uptime_hub_dispatch_to_commit_seconds_bucket{hub="hub-1",le="0.01"} 100
uptime_hub_dispatch_to_commit_seconds_bucket{hub="hub-1",le="+Inf"} 110
uptime_hub_dispatch_to_commit_seconds_sum{hub="hub-1"} 0.7
uptime_hub_dispatch_to_commit_seconds_count{hub="hub-1"} 110
uptime_hub_ring_members{hub="hub-1"} 2
uptime_hub_ring_members{hub="hub-2"} 2
"#,
        );
        let r = hub_report(&before, &after);
        assert_eq!(r.counters["ticks_written_total"], 100.0);
        assert_eq!(r.counters["rounds_closed_up"], 5.0);
        assert_eq!(r.counters["rounds_closed_down"], 2.0);
        assert!(
            !r.counters.contains_key("tasks_sent_total"),
            "absent stays absent"
        );
        assert_eq!(r.rejected_by_reason["deadline_passed"], 2);
        assert_eq!(r.rejected_by_reason["bad_token"], 1);
        assert_eq!(r.gauges["ring_members"]["hub-2"], 2.0);
        // 10 new observations, all above 10 ms: the largest finite bound.
        let d = r.dispatch_to_commit_ms.unwrap();
        assert_eq!(d.count, 10);
        assert_eq!(d.p50, Some(10.0));
        assert!((d.mean.unwrap() - 20.0).abs() < 1e-9);
        assert!(r.write_latency_ms.is_none(), "not exported: null");
    }
}
