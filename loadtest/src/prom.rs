//! The hubs' Prometheus text exposition: summing series across hubs,
//! histogram differences and quantile estimates. The text itself is read by
//! the `prometheus-parse` crate.
//!
//! The hub renders its metrics with the `prometheus` crate: `# TYPE` lines,
//! then one sample per line. Every series carries a `hub` label, so the
//! scrapes of several hubs are simply put together and summed over that
//! label. A histogram arrives as one sample per series holding its buckets
//! (the `# TYPE ... histogram` line says which lines are buckets), plus
//! plain `_sum` and `_count` samples.

use std::collections::BTreeMap;

use prometheus_parse::{Sample, Value};

/// A body that holds no sample at all: not a hub's `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSamples;

impl std::fmt::Display for NoSamples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no Prometheus samples in the answer")
    }
}

impl std::error::Error for NoSamples {}

/// Everything scraped at one moment, from one or more hubs.
#[derive(Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

/// Reads a whole exposition. Lines that are not samples are skipped (as
/// Prometheus's own parser would refuse them, a hub never sends them); a
/// body without a single sample is an error: it means we are not talking
/// to a hub.
pub fn parse(text: &str) -> Result<Scrape, NoSamples> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    // Reading from memory: the only error the crate reports is the reader's.
    let parsed = prometheus_parse::Scrape::parse(lines).map_err(|_| NoSamples)?;
    if parsed.samples.is_empty() {
        return Err(NoSamples);
    }
    Ok(Scrape {
        samples: parsed.samples,
    })
}

/// A counter, gauge or untyped sample's value (`None` for a histogram or
/// summary, whose `_sum` and `_count` are samples of their own).
fn scalar(s: &Sample) -> Option<f64> {
    match s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
        Value::Histogram(_) | Value::Summary(_) => None,
    }
}

impl Scrape {
    /// The samples of several scrapes together (one per hub).
    pub fn merge(scrapes: impl IntoIterator<Item = Scrape>) -> Scrape {
        Scrape {
            samples: scrapes.into_iter().flat_map(|s| s.samples).collect(),
        }
    }

    /// `(sample, value)` of every scalar series named `name`.
    fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a Sample, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.metric == name)
            .filter_map(|s| Some((s, scalar(s)?)))
    }

    /// Sum of every series named `name`; `None` if there is none.
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.series(name).map(|(_, v)| v).reduce(|a, b| a + b)
    }

    /// Series named `name` summed per value of `label` (other labels, such
    /// as `hub`, summed over).
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (s, v) in self.series(name) {
            if let Some(l) = s.labels.get(label) {
                *out.entry(l.to_string()).or_insert(0.0) += v;
            }
        }
        out
    }

    /// The histogram `base` (its buckets, `base_sum`, `base_count`),
    /// summed over every series; `None` if the hub does not export it.
    pub fn histogram(&self, base: &str) -> Option<Histogram> {
        let mut buckets: BTreeMap<OrdF64, f64> = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.metric == base) {
            if let Value::Histogram(counts) = &s.value {
                for c in counts {
                    *buckets.entry(OrdF64(c.less_than)).or_insert(0.0) += c.count;
                }
            }
        }
        if buckets.is_empty() {
            return None;
        }
        Some(Histogram {
            buckets: buckets.into_iter().map(|(k, v)| (k.0, v)).collect(),
            sum: self.sum(&format!("{base}_sum")).unwrap_or(0.0),
            count: self.sum(&format!("{base}_count")).unwrap_or(0.0),
        })
    }
}

/// An `f64` bucket bound usable as a map key (bounds are never NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF64(f64);
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A cumulative Prometheus histogram: `(upper bound, observations <= it)`,
/// sorted by bound, the last one `+Inf`.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// What was observed between `before` and `self`. A bucket that went
    /// down (the hub restarted) counts from zero.
    pub fn since(&self, before: &Histogram) -> Histogram {
        let old = |le: f64| {
            before
                .buckets
                .iter()
                .find(|(b, _)| b.total_cmp(&le).is_eq())
                .map_or(0.0, |(_, c)| *c)
        };
        let reset = self.count < before.count;
        let diff = |now: f64, then: f64| if reset { now } else { (now - then).max(0.0) };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| (le, diff(c, old(le))))
                .collect(),
            sum: diff(self.sum, before.sum),
            count: diff(self.count, before.count),
        }
    }

    /// Observations in the histogram (the `+Inf` bucket, or `_count`).
    pub fn total(&self) -> f64 {
        self.buckets
            .last()
            .map(|&(_, c)| c)
            .unwrap_or(self.count)
            .max(self.count)
    }

    /// The `q` quantile (0..=1) estimated as Prometheus's
    /// `histogram_quantile` does: linear interpolation inside the bucket
    /// that holds the rank, starting from 0 for the first bucket; a rank in
    /// the `+Inf` bucket gives the largest finite bound. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last().map(|&(_, c)| c)?;
        if total <= 0.0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total;
        let mut prev_le = 0.0;
        let mut prev_count = 0.0;
        for &(le, count) in &self.buckets {
            if count >= rank && count > prev_count {
                if le.is_infinite() {
                    return Some(prev_le);
                }
                let frac = (rank - prev_count) / (count - prev_count);
                return Some(prev_le + (le - prev_le) * frac);
            }
            if le.is_finite() {
                prev_le = le;
            }
            prev_count = count;
        }
        Some(prev_le)
    }

    /// Mean of the observations, from `_sum` / `_count`.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}

/// The difference of two counter readings; a counter that went down (the
/// hub restarted) counts from zero.
pub fn counter_delta(before: f64, after: f64) -> f64 {
    if after < before {
        after
    } else {
        after - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // As the hub's `prometheus` encoder writes them: `le` last, TYPE lines.
    const HUB1: &str = r#"# HELP uptime_hub_results_rejected_total Results rejected, by reason.
# TYPE uptime_hub_results_rejected_total counter
uptime_hub_results_rejected_total{hub="hub-1",reason="bad_token"} 2
uptime_hub_results_rejected_total{hub="hub-1",reason="deadline_passed"} 5
# TYPE uptime_hub_ticks_written_total counter
uptime_hub_ticks_written_total{hub="hub-1"} 100
# TYPE uptime_hub_dispatch_to_commit_seconds histogram
uptime_hub_dispatch_to_commit_seconds_bucket{hub="hub-1",le="0.001"} 0
uptime_hub_dispatch_to_commit_seconds_bucket{hub="hub-1",le="0.002"} 10
uptime_hub_dispatch_to_commit_seconds_bucket{hub="hub-1",le="0.004"} 60
uptime_hub_dispatch_to_commit_seconds_bucket{hub="hub-1",le="+Inf"} 100
uptime_hub_dispatch_to_commit_seconds_sum{hub="hub-1"} 0.5
uptime_hub_dispatch_to_commit_seconds_count{hub="hub-1"} 100
"#;

    const HUB2: &str = r#"# TYPE uptime_hub_results_rejected_total counter
uptime_hub_results_rejected_total{hub="hub-2",reason="deadline_passed"} 1
# TYPE uptime_hub_ticks_written_total counter
uptime_hub_ticks_written_total{hub="hub-2"} 50 1700000000000
# TYPE uptime_hub_dispatch_to_commit_seconds histogram
uptime_hub_dispatch_to_commit_seconds_bucket{hub="hub-2",le="0.001"} 0
uptime_hub_dispatch_to_commit_seconds_bucket{hub="hub-2",le="0.002"} 0
uptime_hub_dispatch_to_commit_seconds_bucket{hub="hub-2",le="0.004"} 0
uptime_hub_dispatch_to_commit_seconds_bucket{hub="hub-2",le="+Inf"} 0
uptime_hub_dispatch_to_commit_seconds_sum{hub="hub-2"} 0
uptime_hub_dispatch_to_commit_seconds_count{hub="hub-2"} 0
uptime_hub_ring_members{hub="hub-2"} 2
"#;

    #[test]
    fn reads_labels_values_timestamps_and_histograms() {
        let s = parse(HUB2).unwrap();
        // Two counters, sum and count, the untyped gauge, one histogram.
        assert_eq!(s.samples.len(), 6);
        assert_eq!(s.sum("uptime_hub_ticks_written_total"), Some(50.0));
        assert_eq!(s.sum("uptime_hub_ring_members"), Some(2.0));
        assert_eq!(
            s.by_label("uptime_hub_ticks_written_total", "hub")
                .get("hub-2"),
            Some(&50.0)
        );
        let h = s
            .histogram("uptime_hub_dispatch_to_commit_seconds")
            .unwrap();
        assert_eq!(h.buckets.len(), 4);
        assert_eq!(h.buckets[3].0, f64::INFINITY);
        assert_eq!(parse("plain 1.5e3\n").unwrap().sum("plain"), Some(1500.0));
    }

    #[test]
    fn a_body_without_samples_is_not_a_hub() {
        assert_eq!(parse("").unwrap_err(), NoSamples);
        assert!(parse("<html><body>Not found</body></html>\n").is_err());
        assert!(parse("# TYPE x counter\nname notanumber\n").is_err());
    }

    #[test]
    fn sums_over_hubs_and_groups_by_label() {
        let s = Scrape::merge([parse(HUB1).unwrap(), parse(HUB2).unwrap()]);
        assert_eq!(s.sum("uptime_hub_ticks_written_total"), Some(150.0));
        assert_eq!(s.sum("absent"), None);
        let r = s.by_label("uptime_hub_results_rejected_total", "reason");
        assert_eq!(r.get("deadline_passed"), Some(&6.0));
        assert_eq!(r.get("bad_token"), Some(&2.0));
        let h = s
            .histogram("uptime_hub_dispatch_to_commit_seconds")
            .unwrap();
        assert_eq!(h.buckets.len(), 4);
        assert_eq!(h.total(), 100.0);
        assert_eq!((h.sum, h.count), (0.5, 100.0));
        assert!(s.histogram("uptime_hub_absent_seconds").is_none());
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let h = parse(HUB1)
            .unwrap()
            .histogram("uptime_hub_dispatch_to_commit_seconds")
            .unwrap();
        // 10 in (0.001, 0.002], 50 in (0.002, 0.004], 40 above 0.004.
        let p10 = h.quantile(0.10).unwrap();
        assert!((p10 - 0.002).abs() < 1e-12, "{p10}");
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 0.0036).abs() < 1e-12, "{p50}");
        // In the +Inf bucket: the largest finite bound.
        assert_eq!(h.quantile(0.99), Some(0.004));
        let p5 = h.quantile(0.05).unwrap();
        assert!((p5 - 0.0015).abs() < 1e-12, "{p5}");
        assert_eq!(h.mean(), Some(0.005));
    }

    #[test]
    fn differences_isolate_the_window() {
        let before = parse(HUB1)
            .unwrap()
            .histogram("uptime_hub_dispatch_to_commit_seconds")
            .unwrap();
        let later = HUB1
            .replace("le=\"0.002\"} 10", "le=\"0.002\"} 30")
            .replace("le=\"0.004\"} 60", "le=\"0.004\"} 80")
            .replace("le=\"+Inf\"} 100", "le=\"+Inf\"} 120")
            .replace("_sum{hub=\"hub-1\"} 0.5", "_sum{hub=\"hub-1\"} 0.54")
            .replace("_count{hub=\"hub-1\"} 100", "_count{hub=\"hub-1\"} 120");
        let after = parse(&later)
            .unwrap()
            .histogram("uptime_hub_dispatch_to_commit_seconds")
            .unwrap();
        let d = after.since(&before);
        assert_eq!(d.total(), 20.0);
        assert_eq!(d.count, 20.0);
        // All 20 new observations fell in (0.001, 0.002].
        assert_eq!(d.quantile(1.0), Some(0.002));
        let p50 = d.quantile(0.5).unwrap();
        assert!((p50 - 0.0015).abs() < 1e-12, "{p50}");
        assert!((d.mean().unwrap() - 0.002).abs() < 1e-12);
        // Nothing new: no quantile.
        assert_eq!(before.since(&before).quantile(0.5), None);
        // A restarted hub counts from zero.
        let reset = before.since(&after);
        assert_eq!(reset.total(), 100.0);
    }

    #[test]
    fn counter_delta_survives_a_restart() {
        assert_eq!(counter_delta(10.0, 15.0), 5.0);
        assert_eq!(counter_delta(10.0, 3.0), 3.0);
    }
}
