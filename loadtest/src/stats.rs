//! What the simulated validators count, shared by all of them: lock-free
//! counters for totals (read by the progress line and snapshotted at the
//! edges of the hold window) and HDR histograms for the tool-side latencies,
//! recorded only while the hold window is open.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use protocol::ErrorCode;
use serde::Serialize;

/// Index of a code in [`ErrorCode::ALL`], for per-code counter arrays.
fn code_index(c: ErrorCode) -> usize {
    ErrorCode::ALL
        .iter()
        .position(|x| *x == c)
        .unwrap_or(ErrorCode::ALL.len() - 1)
}

fn new_histogram(max: u64) -> Histogram<u64> {
    Histogram::new_with_bounds(1, max, 3).expect("static histogram bounds are valid")
}

/// One counter per [`ErrorCode`].
pub struct PerCode([AtomicU64; ErrorCode::ALL.len()]);

impl PerCode {
    fn new() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
    pub fn inc(&self, c: ErrorCode) {
        self.0[code_index(c)].fetch_add(1, Relaxed);
    }
    fn read(&self) -> [u64; ErrorCode::ALL.len()] {
        std::array::from_fn(|i| self.0[i].load(Relaxed))
    }
}

pub struct Stats {
    /// Sessions past `welcome` right now.
    pub connected: AtomicI64,
    /// Welcomes received (first connections and reconnections).
    pub sessions: AtomicU64,
    /// Connection attempts that did not reach `welcome`, by reason.
    connect_failures: Mutex<BTreeMap<String, u64>>,
    /// Welcomed sessions the hub or the network ended while we wanted them.
    pub sessions_lost: AtomicU64,
    pub reconnect_hints: AtomicU64,
    pub tasks: AtomicU64,
    /// Tasks addressed to another key (a hub bug if it ever happens).
    pub foreign_tasks: AtomicU64,
    /// Tasks that arrived while their validator was closing (not checked).
    pub tasks_dropped: AtomicU64,
    pub results_sent: AtomicU64,
    pub stored: AtomicU64,
    pub duplicate: AtomicU64,
    pub rejected: AtomicU64,
    pub rejected_by: PerCode,
    /// `error` frames received, by code.
    pub errors_by: PerCode,
    pub heartbeats: AtomicU64,
    /// Results sent or being "checked" when their session ended, never acked.
    pub unacked_at_close: AtomicU64,
    /// Histograms record only while this is set (the hold window).
    pub measuring: AtomicBool,
    /// Jitter is recorded only for slots that start at or after this (Unix
    /// ms): a site's first slot after it was loaded may have begun long
    /// before, which is catch-up, not jitter.
    jitter_from_ms: AtomicI64,
    /// Task receipt minus `task.scheduled_at_ms`, ms.
    pub jitter_ms: Mutex<Histogram<u64>>,
    /// Ack receipt minus the task id's UUIDv7 time minus our check time, ms.
    pub dispatch_to_ack_ms: Mutex<Histogram<u64>>,
    /// Result written to the socket until its ack arrived, µs.
    pub ack_rtt_us: Mutex<Histogram<u64>>,
}

/// Counter values at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub connected: i64,
    pub sessions: u64,
    pub connect_failures: u64,
    pub sessions_lost: u64,
    pub tasks: u64,
    pub results_sent: u64,
    pub stored: u64,
    pub duplicate: u64,
    pub rejected: u64,
}

/// Percentiles of a tool-side histogram.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// `None` when nothing was recorded. `scale` converts the recorded unit
    /// into the reported one (e.g. 0.001 for µs -> ms).
    pub fn of(h: &Histogram<u64>, scale: f64) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            count: h.len(),
            p50: h.value_at_quantile(0.50) as f64 * scale,
            p90: h.value_at_quantile(0.90) as f64 * scale,
            p99: h.value_at_quantile(0.99) as f64 * scale,
            max: h.max() as f64 * scale,
            mean: h.mean() * scale,
        })
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        Self {
            connected: AtomicI64::new(0),
            sessions: AtomicU64::new(0),
            connect_failures: Mutex::new(BTreeMap::new()),
            sessions_lost: AtomicU64::new(0),
            reconnect_hints: AtomicU64::new(0),
            tasks: AtomicU64::new(0),
            foreign_tasks: AtomicU64::new(0),
            tasks_dropped: AtomicU64::new(0),
            results_sent: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            duplicate: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            rejected_by: PerCode::new(),
            errors_by: PerCode::new(),
            heartbeats: AtomicU64::new(0),
            unacked_at_close: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
            jitter_from_ms: AtomicI64::new(i64::MAX),
            jitter_ms: Mutex::new(new_histogram(24 * 3_600_000)),
            dispatch_to_ack_ms: Mutex::new(new_histogram(24 * 3_600_000)),
            ack_rtt_us: Mutex::new(new_histogram(3_600_000_000)),
        }
    }

    pub fn connect_failed(&self, reason: String) {
        let mut m = self.connect_failures.lock().expect("stats lock poisoned");
        *m.entry(reason).or_insert(0) += 1;
    }

    pub fn connect_failures(&self) -> BTreeMap<String, u64> {
        self.connect_failures
            .lock()
            .expect("stats lock poisoned")
            .clone()
    }

    fn record(&self, h: &Mutex<Histogram<u64>>, v: u64) {
        if self.measuring.load(Relaxed) {
            h.lock().expect("stats lock poisoned").saturating_record(v);
        }
    }

    /// A task received at `now_ms` for a slot starting at `scheduled_at_ms`.
    pub fn record_jitter(&self, scheduled_at_ms: i64, now_ms: i64) {
        if scheduled_at_ms >= self.jitter_from_ms.load(Relaxed) {
            self.record(&self.jitter_ms, (now_ms - scheduled_at_ms).max(0) as u64);
        }
    }

    pub fn record_dispatch_to_ack_ms(&self, ms: i64) {
        self.record(&self.dispatch_to_ack_ms, ms.max(0) as u64);
    }

    pub fn record_ack_rtt_us(&self, us: u64) {
        self.record(&self.ack_rtt_us, us);
    }

    /// Opens or closes the window in which histograms record; opening it
    /// clears them and counts jitter only for slots from `now_ms` on.
    pub fn set_measuring(&self, on: bool, now_ms: i64) {
        if on {
            self.jitter_from_ms.store(now_ms, Relaxed);
            for h in [&self.jitter_ms, &self.dispatch_to_ack_ms, &self.ack_rtt_us] {
                h.lock().expect("stats lock poisoned").reset();
            }
        }
        self.measuring.store(on, Relaxed);
    }

    pub fn counters(&self) -> Counters {
        Counters {
            connected: self.connected.load(Relaxed),
            sessions: self.sessions.load(Relaxed),
            connect_failures: self
                .connect_failures
                .lock()
                .expect("stats lock poisoned")
                .values()
                .sum(),
            sessions_lost: self.sessions_lost.load(Relaxed),
            tasks: self.tasks.load(Relaxed),
            results_sent: self.results_sent.load(Relaxed),
            stored: self.stored.load(Relaxed),
            duplicate: self.duplicate.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
        }
    }

    pub fn rejected_by_code_snapshot(&self) -> [u64; ErrorCode::ALL.len()] {
        self.rejected_by.read()
    }

    pub fn error_frames_by_code(&self) -> BTreeMap<String, u64> {
        by_name(self.errors_by.read())
    }
}

/// Non-zero per-code counts (or their differences) by wire name.
pub fn by_name(counts: [u64; ErrorCode::ALL.len()]) -> BTreeMap<String, u64> {
    ErrorCode::ALL
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| (c.as_str().to_string(), n))
        .collect()
}

/// `after - before`, element-wise.
pub fn diff_codes(
    before: [u64; ErrorCode::ALL.len()],
    after: [u64; ErrorCode::ALL.len()],
) -> [u64; ErrorCode::ALL.len()] {
    std::array::from_fn(|i| after[i].saturating_sub(before[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_record_only_inside_the_window() {
        let s = Stats::new();
        s.record_jitter(0, 5);
        assert_eq!(s.jitter_ms.lock().unwrap().len(), 0);
        s.set_measuring(true, 1_000);
        for v in 1..=100 {
            s.record_jitter(1_000, 1_000 + v);
        }
        s.record_jitter(2_000, 1_997); // clamped to 0
        s.record_jitter(999, 5_000); // slot began before the window: skipped
        s.set_measuring(false, 0);
        s.record_jitter(1_000, 2_000);
        let p = Percentiles::of(&s.jitter_ms.lock().unwrap(), 1.0).unwrap();
        assert_eq!(p.count, 101);
        assert_eq!(p.max, 100.0);
        assert!((49.0..=51.0).contains(&p.p50), "{p:?}");
        assert!(Percentiles::of(&s.ack_rtt_us.lock().unwrap(), 0.001).is_none());
        s.set_measuring(true, 0);
        assert_eq!(s.jitter_ms.lock().unwrap().len(), 0, "reopening clears");
    }

    #[test]
    fn per_code_counts_by_wire_name() {
        let s = Stats::new();
        let before = s.rejected_by_code_snapshot();
        s.rejected_by.inc(ErrorCode::DeadlinePassed);
        s.rejected_by.inc(ErrorCode::DeadlinePassed);
        s.rejected_by.inc(ErrorCode::BadToken);
        let m = by_name(s.rejected_by_code_snapshot());
        assert_eq!(m.len(), 2);
        assert_eq!(m["deadline_passed"], 2);
        let d = by_name(diff_codes(before, s.rejected_by_code_snapshot()));
        assert_eq!(d["bad_token"], 1);
        s.connect_failed("http_503".into());
        s.connect_failed("http_503".into());
        assert_eq!(s.counters().connect_failures, 2);
    }
}
