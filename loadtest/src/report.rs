//! The report: one serializable structure, printed for people on stdout
//! and written as JSON with `--json`. Every figure that could not be
//! measured is `null` rather than zero.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

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
    /// Sum of hub RSS sampled during the hold (every --sample-secs).
    pub hub_rss_samples: Vec<RssSample>,
    pub hub_rss_kib: Option<FirstLastMax>,
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
        let _ = writeln!(
            o,
            "hub CPU per stored tick: {}",
            self.hub_cpu_us_per_tick
                .map_or("n/a".into(), |u| format!("{u:.1} µs"))
        );
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
        o
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
