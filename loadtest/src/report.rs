//! The report: one serializable structure, printed for people on stdout
//! and written as JSON with `--json`. Every figure that could not be
//! measured is `null` rather than zero.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::calibrate::VerifyTiming;
use crate::cli::Plan;
use crate::sites::Seeded;
use crate::stats::Percentiles;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    /// Unix ms when the tool started.
    pub started_at_ms: i64,
    pub plan: Plan,
    /// `null` when the run completed; otherwise why it stopped early.
    pub stopped_early: Option<String>,
    pub sites: Option<SitesReport>,
    pub window: Window,
    pub connections: Connections,
    /// Tasks received by the tool in the hold window.
    pub tasks: Rate,
    pub results_sent: Rate,
    pub acks: Acks,
    /// `error` frames the hubs sent, by code, over the whole run.
    pub error_frames_by_code: BTreeMap<String, u64>,
    /// Tasks for another validator's key (a hub bug), whole run.
    pub tasks_foreign: u64,
    /// Tasks that arrived while their validator was closing (not checked;
    /// the hub replaces them at their deadline), whole run.
    pub tasks_dropped_while_closing: u64,
    pub heartbeats_sent: u64,
    /// Rows of `ticks` with `received_at` in the hold window.
    pub ticks_stored_db: Option<Rate>,
    pub hub: Option<HubReport>,
    /// Hub metric scrapes that failed (the hub figures are then null).
    pub hub_scrape_errors: Vec<String>,
    pub tool_latency: ToolLatency,
    pub processes: Vec<ProcessReport>,
    /// Sum of hub RSS after the ramp minus before connecting, per connection
    /// held at the start of the hold.
    pub rss_per_connection_bytes: Option<f64>,
    /// Hub CPU time in the hold window per tick stored in it (PostgreSQL
    /// count, or the hubs' ticks_written_total without a database).
    pub hub_cpu_us_per_tick: Option<f64>,
    /// One `verify_result` on this machine, µs, timed before the load and
    /// after every connection closed (null with --no-calibrate).
    pub verify_result_us_before: Option<VerifyTiming>,
    pub verify_result_us_after: Option<VerifyTiming>,
    /// `hub_cpu_us_per_tick` / the lower of the two medians.
    pub hub_cpu_per_tick_in_verify_results: Option<f64>,
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: Option<String>,
    /// Sum of hub RSS sampled during the hold (every --sample-secs).
    pub hub_rss_samples: Vec<RssSample>,
    pub hub_rss_kib: Option<FirstLastMax>,
    /// The burst scenario's figures (null in the others).
    pub burst: Option<BurstReport>,
}

/// What one burst did: every simulated website due in one second.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BurstReport {
    /// Unix ms of the burst's second: every simulated website's slot
    /// starts in `[due_ms, due_ms + 1000)`.
    pub due_ms: i64,
    /// That second's place in the interval (`due_ms mod interval`), ms.
    pub phase_ms: i64,
    /// Simulated websites enabled (the burst's).
    pub websites: u64,
    /// Validators connected when the burst was due.
    pub connected_at_due: Option<i64>,
    /// Tasks received in the hold: the burst's (the sites' next slot is an
    /// interval later, past the hold). Of which before the due second
    /// (expected: none).
    pub tasks: u64,
    pub tasks_before_due: u64,
    pub results_sent: u64,
    pub acks_stored: u64,
    pub acks_duplicate: u64,
    pub acks_rejected: u64,
    pub rejected_by_code: BTreeMap<String, u64>,
    /// Results checked or sent and never acknowledged (whole run): lost.
    /// Any fails the verdict.
    pub lost: u64,
    pub tasks_dropped_while_closing: u64,
    /// Ticks in PostgreSQL of the burst's websites with `scheduled_at` in
    /// the burst's second.
    pub ticks_stored_db: Option<u64>,
    /// Hub counters over the hold (all hubs summed): rounds opened,
    /// closed by status, opened with fewer than K tasks, slots already
    /// taken, slots skipped for lack of validators, tasks replaced after a
    /// missed deadline.
    pub rounds_opened: Option<u64>,
    pub rounds_closed: BTreeMap<String, u64>,
    pub rounds_unstaffed: Option<u64>,
    pub rounds_skipped: Option<u64>,
    pub slots_missed: Option<u64>,
    pub tasks_replaced: Option<u64>,
    /// The hold's last ack (Unix ms) and how long after `due_ms` it came.
    pub last_ack_ms: Option<i64>,
    pub drain_secs: Option<f64>,
    /// Per second with anything in it, from the due second (`t` = 0).
    pub per_second: Vec<BurstSecond>,
    /// Hub RSS (all hubs): the last sample before the due second, and the
    /// largest from it on (sampled every --sample-secs).
    pub hub_rss_kib_before: Option<u64>,
    pub hub_rss_kib_peak: Option<u64>,
    /// `pass` or `fail`; why it failed.
    pub verdict: &'static str,
    pub failures: Vec<String>,
}

/// One second of a burst.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct BurstSecond {
    /// Seconds from the due second.
    pub t: i64,
    pub tasks: u64,
    pub results: u64,
    pub acks: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SitesReport {
    #[serde(flatten)]
    pub seeded: Seeded,
    /// Enabled websites that are not the tool's (their tasks count too).
    pub other_enabled: u64,
    /// From the write until the hubs' `websites_owned` added up to every
    /// enabled website (null without --metrics-url, or if it never did).
    pub hubs_own_all_after_secs: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
    pub secs: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Connections {
    pub target: usize,
    pub held_at_hold_start: i64,
    pub held_at_hold_end: i64,
    pub min_during_hold: i64,
    pub max_seen: i64,
    /// Seconds from the first connection attempt until the hold started.
    pub ramp_up_secs: f64,
    /// Welcomes received (first connections and reconnections).
    pub sessions: u64,
    /// Attempts that did not reach `welcome`, by reason.
    pub connect_failures: BTreeMap<String, u64>,
    /// Welcomed sessions that ended while we wanted them.
    pub sessions_lost: u64,
    pub reconnect_hints: u64,
}

/// A count over the hold window and its rate.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct Rate {
    pub count: u64,
    pub per_sec: Option<f64>,
}

impl Rate {
    pub fn over(count: u64, secs: f64) -> Self {
        Self {
            count,
            per_sec: (secs >= 0.5).then(|| count as f64 / secs),
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Acks {
    pub stored: Rate,
    pub duplicate: Rate,
    pub rejected: Rate,
    /// Rejections in the hold window, by code.
    pub rejected_by_code: BTreeMap<String, u64>,
    /// Results checked or sent but never acknowledged when their session
    /// ended (whole run; ramp-down closes sessions with work in flight).
    pub unacked_at_close: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct HubReport {
    /// `uptime_hub_dispatch_to_commit_seconds` diffed over the hold, in ms
    /// (null if the hubs do not export it or saw nothing).
    pub dispatch_to_commit_ms: Option<HistogramSummary>,
    /// `uptime_hub_write_latency_seconds` diffed (one tick batch commit), ms.
    pub write_latency_ms: Option<HistogramSummary>,
    /// `uptime_hub_write_batch_size` diffed (rows per tick batch).
    pub write_batch_size: Option<HistogramSummary>,
    /// `uptime_hub_results_rejected_total` diffed, by reason.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Other counters diffed over the hold (all hubs summed).
    pub counters: BTreeMap<String, f64>,
    /// Gauges at the end of the hold, per hub (by its `hub` label).
    pub gauges: BTreeMap<String, BTreeMap<String, f64>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistogramSummary {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ToolLatency {
    /// Task receipt minus task.scheduled_at_ms, for slots that started in
    /// the hold window.
    pub schedule_jitter_ms: Option<Percentiles>,
    /// Ack receipt minus the task id's UUIDv7 time minus the simulated check.
    pub dispatch_to_ack_ms: Option<Percentiles>,
    /// Result written until its ack arrived.
    pub result_to_ack_ms: Option<Percentiles>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    pub role: String,
    pub pids: Vec<u32>,
    /// CPU over the hold window as % of one core.
    pub cpu_percent: Option<f64>,
    pub rss_kib_before_connect: Option<u64>,
    pub rss_kib_after_ramp: Option<u64>,
    pub rss_kib_end: Option<u64>,
    /// Proportional set size at the end (shared pages split among the
    /// processes mapping them): the honest sum for PostgreSQL.
    pub pss_kib_end: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssSample {
    /// Seconds since the hold started.
    pub t_secs: f64,
    pub rss_kib: u64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct FirstLastMax {
    pub first: u64,
    pub last: u64,
    pub max: u64,
}

impl FirstLastMax {
    pub fn of(v: impl IntoIterator<Item = u64>) -> Option<Self> {
        let mut it = v.into_iter();
        let first = it.next()?;
        let (last, max) = it.fold((first, first), |(_, m), x| (x, m.max(x)));
        Some(Self { first, last, max })
    }
}

impl Report {
    /// Writes the JSON next to `path` and renames it into place.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self).context("serializing the report")?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n").with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    }

    /// The human summary.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let p = &self.plan;
        let _ = writeln!(o, "== loadtest {} ==", self.scenario);
        let _ = writeln!(
            o,
            "validators {} (capacity {}, regions {}), sites {} at {} s, check {} ms (+0..{}), failure rate {}",
            p.validators,
            p.capacity,
            p.regions.join(","),
            p.sites,
            p.interval_secs,
            p.check_latency_ms,
            p.check_jitter_ms,
            p.failure_rate
        );
        let _ = writeln!(o, "hubs via {}", p.hub_urls.join(" "));
        if let Some(why) = &self.stopped_early {
            let _ = writeln!(o, "STOPPED EARLY: {why}");
        }
        if let Some(s) = &self.sites {
            if p.sites > 0 {
                let _ = writeln!(
                    o,
                    "sites: {} enabled ({} inserted, {} updated); other enabled sites: {}; hubs scheduled them all after {}",
                    s.seeded.enabled,
                    s.seeded.inserted,
                    s.seeded.updated,
                    s.other_enabled,
                    s.hubs_own_all_after_secs
                        .map_or("n/a".into(), |t| format!("{t:.1} s"))
                );
            } else {
                let _ = writeln!(
                    o,
                    "sites: none ({} simulated websites disabled); other enabled sites: {}",
                    s.seeded.updated, s.other_enabled
                );
            }
        }
        let w = &self.window;
        let _ = writeln!(o, "hold window: {:.1} s", w.secs);
        let c = &self.connections;
        let _ = writeln!(
            o,
            "connections: held {} at start, {} at end, min {} (target {}); ramp-up {:.1} s; sessions {}, lost {}, reconnect hints {}",
            c.held_at_hold_start,
            c.held_at_hold_end,
            c.min_during_hold,
            c.target,
            c.ramp_up_secs,
            c.sessions,
            c.sessions_lost,
            c.reconnect_hints
        );
        if !c.connect_failures.is_empty() {
            let _ = writeln!(o, "  connect failures: {}", kv(&c.connect_failures));
        }
        let _ = writeln!(o, "tasks received:   {}", rate(&self.tasks));
        let _ = writeln!(o, "results sent:     {}", rate(&self.results_sent));
        let a = &self.acks;
        let _ = writeln!(o, "acks stored:      {}", rate(&a.stored));
        let _ = writeln!(o, "acks duplicate:   {}", rate(&a.duplicate));
        let _ = writeln!(o, "acks rejected:    {}", rate(&a.rejected));
        if !a.rejected_by_code.is_empty() {
            let _ = writeln!(o, "  by code: {}", kv(&a.rejected_by_code));
        }
        let _ = writeln!(
            o,
            "unacked at close: {}; tasks dropped while closing: {}; foreign tasks: {}; heartbeats: {}",
            a.unacked_at_close,
            self.tasks_dropped_while_closing,
            self.tasks_foreign,
            self.heartbeats_sent
        );
        if !self.error_frames_by_code.is_empty() {
            let _ = writeln!(o, "error frames:     {}", kv(&self.error_frames_by_code));
        }
        match &self.ticks_stored_db {
            Some(t) => {
                let _ = writeln!(o, "ticks stored (PostgreSQL): {}", rate(t));
            }
            None => {
                let _ = writeln!(o, "ticks stored (PostgreSQL): n/a (no --database-url)");
            }
        }
        match &self.hub {
            Some(h) => {
                match &h.dispatch_to_commit_ms {
                    Some(d) => {
                        let _ = writeln!(
                            o,
                            "hub dispatch->commit ms: n={} p50 {} p90 {} p99 {} mean {}",
                            d.count,
                            opt(d.p50),
                            opt(d.p90),
                            opt(d.p99),
                            opt(d.mean)
                        );
                    }
                    None => {
                        let _ = writeln!(o, "hub dispatch->commit ms: n/a (not exported or empty)");
                    }
                }
                for (name, v) in [
                    ("hub write latency ms", &h.write_latency_ms),
                    ("hub write batch rows", &h.write_batch_size),
                ] {
                    if let Some(d) = v {
                        let _ = writeln!(
                            o,
                            "{name}: n={} p50 {} p90 {} p99 {} mean {}",
                            d.count,
                            opt(d.p50),
                            opt(d.p90),
                            opt(d.p99),
                            opt(d.mean)
                        );
                    }
                }
                if !h.rejected_by_reason.is_empty() {
                    let _ = writeln!(o, "hub rejected by reason: {}", kv(&h.rejected_by_reason));
                }
                let counters: Vec<String> =
                    h.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(o, "hub counters (window): {}", counters.join(" "));
                let gauges: Vec<String> = h
                    .gauges
                    .iter()
                    .map(|(k, per_hub)| {
                        let v: Vec<String> = per_hub.values().map(f64::to_string).collect();
                        format!("{k}={}", v.join("+"))
                    })
                    .collect();
                let _ = writeln!(o, "hub gauges (end, per hub): {}", gauges.join(" "));
            }
            None => {
                let _ = writeln!(
                    o,
                    "hub metrics: n/a{}",
                    if self.hub_scrape_errors.is_empty() {
                        " (no --metrics-url)".to_string()
                    } else {
                        format!(" ({})", self.hub_scrape_errors.join("; "))
                    }
                );
            }
        }
        let t = &self.tool_latency;
        for (name, v) in [
            ("schedule jitter ms", &t.schedule_jitter_ms),
            ("dispatch->ack ms (tool)", &t.dispatch_to_ack_ms),
            ("result->ack ms (tool)", &t.result_to_ack_ms),
        ] {
            match v {
                Some(p) => {
                    let _ = writeln!(
                        o,
                        "{name}: n={} p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
                        p.count, p.p50, p.p90, p.p99, p.max
                    );
                }
                None => {
                    let _ = writeln!(o, "{name}: n/a");
                }
            }
        }
        let _ = writeln!(
            o,
            "{:<12} {:>8} {:>14} {:>14} {:>14} {:>14}  pids",
            "process", "cpu %", "rss before", "rss after ramp", "rss end", "pss end"
        );
        for pr in &self.processes {
            let kib =
                |v: Option<u64>| v.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
            let pids: Vec<String> = pr.pids.iter().map(u32::to_string).collect();
            let _ = writeln!(
                o,
                "{:<12} {:>8} {:>14} {:>14} {:>14} {:>14}  {}",
                pr.role,
                pr.cpu_percent.map_or("-".into(), |c| format!("{c:.1}")),
                kib(pr.rss_kib_before_connect),
                kib(pr.rss_kib_after_ramp),
                kib(pr.rss_kib_end),
                kib(pr.pss_kib_end),
                if pids.is_empty() {
                    "(none found)".into()
                } else {
                    pids.join(",")
                }
            );
        }
        let _ = writeln!(
            o,
            "hub RSS per connection: {}",
            self.rss_per_connection_bytes
                .map_or("n/a".into(), |b| format!(
                    "{:.0} bytes ({:.2} KiB)",
                    b,
                    b / 1024.0
                ))
        );
        let unit = [&self.verify_result_us_before, &self.verify_result_us_after]
            .into_iter()
            .flatten()
            .map(|t| t.median)
            .reduce(f64::min);
        let cpu = self.cpu_model.as_deref().unwrap_or("CPU model unknown");
        let _ = writeln!(
            o,
            "hub CPU per stored tick: {}",
            match (self.hub_cpu_us_per_tick, self.hub_cpu_per_tick_in_verify_results, unit) {
                (None, _, _) => "n/a".into(),
                (Some(u), Some(r), Some(v)) => format!(
                    "{u:.1} µs = {r:.2} verify_result (verify_result {v:.1} µs on this machine, {cpu})"
                ),
                (Some(u), _, _) => format!("{u:.1} µs (verify_result not timed: --no-calibrate)"),
            }
        );
        if unit.is_some() {
            let t = |v: &Option<VerifyTiming>| {
                v.map_or("n/a".into(), |t| {
                    format!("{:.1} µs (min {:.1}, max {:.1})", t.median, t.min, t.max)
                })
            };
            let _ = writeln!(
                o,
                "verify_result on one core, median of {} batches: before the load {}, after {}; the ratio uses the lower",
                crate::calibrate::BATCHES,
                t(&self.verify_result_us_before),
                t(&self.verify_result_us_after)
            );
        }
        if let Some(r) = &self.hub_rss_kib {
            let _ = writeln!(
                o,
                "hub RSS during hold ({} samples): first {:.1} MiB, last {:.1} MiB, max {:.1} MiB",
                self.hub_rss_samples.len(),
                r.first as f64 / 1024.0,
                r.last as f64 / 1024.0,
                r.max as f64 / 1024.0
            );
        }
        if let Some(b) = &self.burst {
            b.render(&mut o);
        }
        o
    }
}

impl BurstReport {
    fn render(&self, o: &mut String) {
        let mib =
            |k: Option<u64>| k.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        let n = |v: Option<u64>| v.map_or("n/a".into(), |v| v.to_string());
        let _ = writeln!(
            o,
            "burst: {} websites due at {} ({} ms into the interval); connected then: {}",
            self.websites,
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.due_ms.max(0) as u64)
            ),
            self.phase_ms,
            self.connected_at_due
                .map_or("n/a".into(), |c| c.to_string())
        );
        let _ = writeln!(
            o,
            "  tasks received {} ({} before the due second), results sent {}, acks stored {} / duplicate {} / rejected {}{}",
            self.tasks,
            self.tasks_before_due,
            self.results_sent,
            self.acks_stored,
            self.acks_duplicate,
            self.acks_rejected,
            if self.rejected_by_code.is_empty() {
                String::new()
            } else {
                format!(" ({})", kv(&self.rejected_by_code))
            }
        );
        let _ = writeln!(
            o,
            "  lost (never acked): {}; tasks dropped while closing: {}; ticks stored for the slot (PostgreSQL): {}",
            self.lost,
            self.tasks_dropped_while_closing,
            n(self.ticks_stored_db)
        );
        let _ = writeln!(
            o,
            "  rounds (hubs): opened {}, closed {}{}, unstaffed {}, skipped {}, slots missed {}, tasks replaced {}",
            n(self.rounds_opened),
            self.rounds_closed.values().sum::<u64>(),
            if self.rounds_closed.is_empty() {
                String::new()
            } else {
                format!(" ({})", kv(&self.rounds_closed))
            },
            n(self.rounds_unstaffed),
            n(self.rounds_skipped),
            n(self.slots_missed),
            n(self.tasks_replaced)
        );
        let _ = writeln!(
            o,
            "  drained: last ack {} after the due second; hub RSS {} before, {} peak",
            self.drain_secs
                .map_or("n/a".into(), |d| format!("{d:.1} s")),
            mib(self.hub_rss_kib_before),
            mib(self.hub_rss_kib_peak)
        );
        let _ = writeln!(
            o,
            "  {:>5} {:>8} {:>8} {:>8}",
            "t s", "tasks", "results", "acks"
        );
        for s in &self.per_second {
            let _ = writeln!(
                o,
                "  {:>+5} {:>8} {:>8} {:>8}",
                s.t, s.tasks, s.results, s.acks
            );
        }
        let _ = if self.failures.is_empty() {
            writeln!(o, "burst verdict: {}", self.verdict.to_uppercase())
        } else {
            writeln!(
                o,
                "burst verdict: {}: {}",
                self.verdict.to_uppercase(),
                self.failures.join("; ")
            )
        };
    }
}

fn rate(r: &Rate) -> String {
    match r.per_sec {
        Some(s) => format!("{:>10} in window, {:>10.1}/s", r.count, s),
        None => format!("{:>10} in window, n/a /s", r.count),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn kv<V: std::fmt::Display>(m: &BTreeMap<String, V>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(hub_cpu_us_per_tick: Option<f64>) -> Report {
        use clap::Parser;
        let plan = crate::cli::Cli::try_parse_from(["loadtest", "connections"])
            .unwrap()
            .plan()
            .unwrap();
        Report {
            scenario: "connections",
            started_at_ms: 0,
            plan,
            stopped_early: None,
            sites: None,
            window: Window::default(),
            connections: Connections::default(),
            tasks: Rate::default(),
            results_sent: Rate::default(),
            acks: Acks::default(),
            error_frames_by_code: BTreeMap::new(),
            tasks_foreign: 0,
            tasks_dropped_while_closing: 0,
            heartbeats_sent: 0,
            ticks_stored_db: None,
            hub: None,
            hub_scrape_errors: Vec::new(),
            tool_latency: ToolLatency::default(),
            processes: Vec::new(),
            rss_per_connection_bytes: None,
            hub_cpu_us_per_tick,
            verify_result_us_before: None,
            verify_result_us_after: None,
            hub_cpu_per_tick_in_verify_results: None,
            cpu_model: None,
            hub_rss_samples: Vec::new(),
            hub_rss_kib: None,
            burst: None,
        }
    }

    fn timing(median: f64) -> VerifyTiming {
        VerifyTiming {
            median,
            min: median - 1.0,
            max: median + 2.0,
            batches: 15,
            calls_per_batch: 3_000,
        }
    }

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in\n{text}"))
    }

    #[test]
    fn hub_cpu_per_tick_is_also_given_in_verify_results() {
        let mut r = report(Some(73.5));
        r.verify_result_us_before = Some(timing(47.0));
        r.verify_result_us_after = Some(timing(45.4));
        r.hub_cpu_per_tick_in_verify_results = Some(73.5 / 45.4);
        r.cpu_model = Some("Intel(R) Xeon(R) Processor".into());
        let text = r.render();
        assert_eq!(
            line(&text, "hub CPU per stored tick:"),
            "hub CPU per stored tick: 73.5 µs = 1.62 verify_result (verify_result 45.4 µs on this machine, Intel(R) Xeon(R) Processor)"
        );
        assert!(line(&text, "verify_result on one core").contains(
            "before the load 47.0 µs (min 46.0, max 49.0), after 45.4 µs (min 44.4, max 47.4)"
        ));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["verify_result_us_after"]["median"], 45.4);
        assert_eq!(json["cpu_model"], "Intel(R) Xeon(R) Processor");

        // Not timed: the µs alone, and no timing line.
        let text = report(Some(73.5)).render();
        assert!(line(&text, "hub CPU per stored tick:")
            .ends_with("73.5 µs (verify_result not timed: --no-calibrate)"));
        assert!(!text.contains("verify_result on one core"));
        let text = report(None).render();
        assert_eq!(
            line(&text, "hub CPU per stored tick:"),
            "hub CPU per stored tick: n/a"
        );
    }

    #[test]
    fn a_burst_prints_its_seconds_and_verdict() {
        let mut r = report(None);
        r.burst = Some(BurstReport {
            due_ms: 1_796_140_453_000,
            tasks: 9,
            lost: 2,
            rounds_closed: [("up".to_string(), 3)].into(),
            per_second: vec![
                BurstSecond {
                    t: 0,
                    tasks: 9,
                    results: 4,
                    acks: 3,
                },
                BurstSecond {
                    t: 31,
                    tasks: 0,
                    results: 3,
                    acks: 4,
                },
            ],
            verdict: "fail",
            failures: vec!["2 results never acknowledged (lost)".into()],
            ..Default::default()
        });
        let text = r.render();
        assert!(line(&text, "burst: ").contains("due at 2026-12-01T15:54:13Z"));
        assert!(line(&text, "  rounds (hubs):").contains("closed 3 (up=3)"));
        assert!(
            text.contains("\n     +0        9        4        3\n"),
            "{text}"
        );
        assert!(
            text.contains("\n    +31        0        3        4\n"),
            "{text}"
        );
        assert_eq!(
            line(&text, "burst verdict"),
            "burst verdict: FAIL: 2 results never acknowledged (lost)"
        );
    }

    #[test]
    fn rates_need_a_window() {
        assert_eq!(Rate::over(100, 10.0).per_sec, Some(10.0));
        assert_eq!(Rate::over(100, 0.0).per_sec, None);
    }

    #[test]
    fn first_last_max() {
        assert_eq!(FirstLastMax::of([]), None);
        assert_eq!(
            FirstLastMax::of([5, 9, 7]),
            Some(FirstLastMax {
                first: 5,
                last: 7,
                max: 9
            })
        );
        assert_eq!(
            FirstLastMax::of([3]),
            Some(FirstLastMax {
                first: 3,
                last: 3,
                max: 3
            })
        );
    }
}
