//! What the simulated validators count, shared by all of them: lock-free
//! counters for totals (read by the progress line and snapshotted at the
//! edges of the hold window), per-second counts through the hold, and HDR
//! histograms for the tool-side latencies, recorded only while the hold
//! window is open.

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
    /// Tasks, results and acks per second, while the hold window is open.
    pub per_second: PerSecond,
    /// When the last ack of the hold arrived (Unix ms; 0: none yet).
    last_ack_ms: AtomicI64,
}

/// Seconds of the hold [`PerSecond`] keeps; later ones are not counted.
pub const PER_SECOND_SPAN: usize = 3_600;

/// Counts per whole Unix second from the hold's first, lock-free.
pub struct PerSecond {
    /// The hold's first second (Unix s); `i64::MAX` while closed.
    origin_sec: AtomicI64,
    tasks: Box<[AtomicU64]>,
    results: Box<[AtomicU64]>,
    acks: Box<[AtomicU64]>,
}

/// One second of [`PerSecond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SecondCounts {
    /// Unix second.
    pub sec: i64,
    pub tasks: u64,
    pub results: u64,
    pub acks: u64,
}

impl PerSecond {
    fn new() -> Self {
        let zeros = || (0..PER_SECOND_SPAN).map(|_| AtomicU64::new(0)).collect();
        Self {
            origin_sec: AtomicI64::new(i64::MAX),
            tasks: zeros(),
            results: zeros(),
            acks: zeros(),
        }
    }

    fn slot(&self, now_ms: i64) -> Option<usize> {
        let i = now_ms.div_euclid(1000) - self.origin_sec.load(Relaxed);
        usize::try_from(i).ok().filter(|i| *i < PER_SECOND_SPAN)
    }

    fn add(&self, measuring: &AtomicBool, counts: &[AtomicU64], now_ms: i64) {
        if !measuring.load(Relaxed) {
            return;
        }
        if let Some(i) = self.slot(now_ms) {
            counts[i].fetch_add(1, Relaxed);
        }
    }

    /// Every second with something counted, in order.
    pub fn seconds(&self) -> Vec<SecondCounts> {
        let origin = self.origin_sec.load(Relaxed);
        if origin == i64::MAX {
            return Vec::new();
        }
        (0..PER_SECOND_SPAN)
            .map(|i| SecondCounts {
                sec: origin + i as i64,
                tasks: self.tasks[i].load(Relaxed),
                results: self.results[i].load(Relaxed),
                acks: self.acks[i].load(Relaxed),
            })
            .filter(|c| c.tasks + c.results + c.acks > 0)
            .collect()
    }
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
            per_second: PerSecond::new(),
            last_ack_ms: AtomicI64::new(0),
        }
    }

    /// A task received at `now_ms` for a slot starting at `scheduled_at_ms`.
    pub fn task_received(&self, scheduled_at_ms: i64, now_ms: i64) {
        self.tasks.fetch_add(1, Relaxed);
        self.record_jitter(scheduled_at_ms, now_ms);
        self.per_second
            .add(&self.measuring, &self.per_second.tasks, now_ms);
    }

    /// A result written to its socket at `now_ms`.
    pub fn result_sent(&self, now_ms: i64) {
        self.results_sent.fetch_add(1, Relaxed);
        self.per_second
            .add(&self.measuring, &self.per_second.results, now_ms);
    }

    /// An ack (any outcome) read at `now_ms`; the outcome is counted apart.
    pub fn ack_received(&self, now_ms: i64) {
        self.per_second
            .add(&self.measuring, &self.per_second.acks, now_ms);
        if self.measuring.load(Relaxed) {
            self.last_ack_ms.fetch_max(now_ms, Relaxed);
        }
    }

    /// When the hold's last ack arrived (Unix ms), if any did.
    pub fn last_ack_ms(&self) -> Option<i64> {
        Some(self.last_ack_ms.load(Relaxed)).filter(|t| *t > 0)
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

    /// Opens or closes the window in which histograms record and seconds
    /// are counted; opening it clears them, counts jitter only for slots
    /// from `now_ms` on, and seconds from `now_ms`'s.
    pub fn set_measuring(&self, on: bool, now_ms: i64) {
        let p = &self.per_second;
        if on {
            self.jitter_from_ms.store(now_ms, Relaxed);
            for h in [&self.jitter_ms, &self.dispatch_to_ack_ms, &self.ack_rtt_us] {
                h.lock().expect("stats lock poisoned").reset();
            }
            for c in p.tasks.iter().chain(p.results.iter()).chain(p.acks.iter()) {
                c.store(0, Relaxed);
            }
            self.last_ack_ms.store(0, Relaxed);
            p.origin_sec.store(now_ms.div_euclid(1000), Relaxed);
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
    fn seconds_are_counted_only_inside_the_window() {
        let s = Stats::new();
        s.task_received(0, 9_000_500);
        assert!(s.per_second.seconds().is_empty(), "closed: nothing");
        s.set_measuring(true, 10_000_400);
        s.task_received(10_000_000, 10_000_401);
        s.task_received(10_000_000, 10_000_999);
        s.result_sent(10_001_000);
        s.ack_received(10_003_500);
        s.task_received(10_000_000, 9_999_999); // before the window's second
        assert_eq!(s.last_ack_ms(), Some(10_003_500));
        s.set_measuring(false, 10_004_000);
        s.ack_received(10_004_100);
        let got: Vec<(i64, u64, u64, u64)> = s
            .per_second
            .seconds()
            .iter()
            .map(|c| (c.sec, c.tasks, c.results, c.acks))
            .collect();
        assert_eq!(
            got,
            [(10_000, 2, 0, 0), (10_001, 0, 1, 0), (10_003, 0, 0, 1)]
        );
        assert_eq!(
            s.last_ack_ms(),
            Some(10_003_500),
            "after the window: not it"
        );
        assert_eq!(s.counters().tasks, 4, "the totals count everything");
        s.set_measuring(true, 20_000_000);
        assert!(s.per_second.seconds().is_empty(), "reopening clears");
        assert_eq!(s.last_ack_ms(), None);
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
