//! A hub's `/metrics` in tests: fetch it ([`scrape`]) or take the text a
//! test rendered itself ([`Metrics::parse`]), then read one figure with
//! [`Metrics::value`]. The Prometheus text is read by `prometheus-parse`.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let m = test_support::metrics::scrape("http://127.0.0.1:18080/metrics").await?;
//! let rejected = m.value("uptime_hub_results_rejected_total", &[("reason", "bad_token")]);
//! let written = m.value("uptime_hub_ticks_written_total", &[]).unwrap_or(0.0);
//! # Ok(()) }
//! ```

use std::time::Duration;

use anyhow::{bail, Context};
use prometheus_parse::{Sample, Value};

/// How long [`scrape`] waits for the whole answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// One reading of a `/metrics` page.
#[derive(Debug)]
pub struct Metrics {
    samples: Vec<Sample>,
}

/// `GET url` (within [`SCRAPE_TIMEOUT`], no proxy) and parse the body. Fails
/// unless the answer is a 2xx.
pub async fn scrape(url: &str) -> anyhow::Result<Metrics> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(SCRAPE_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("GET {url}: HTTP {status}");
    }
    let body = resp
        .text()
        .await
        .with_context(|| format!("GET {url}: reading the body"))?;
    Ok(Metrics::parse(&body))
}

impl Metrics {
    /// Reads Prometheus text (lines that are not samples are skipped).
    pub fn parse(text: &str) -> Metrics {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let samples = prometheus_parse::Scrape::parse(lines)
            .map(|s| s.samples)
            // Reading from memory cannot fail.
            .unwrap_or_default();
        Metrics { samples }
    }

    /// The sum of the series named `name` whose labels include every
    /// `(label, value)` of `labels` (none: every series of that name);
    /// `None` if no series matches. Histograms count through their own
    /// series: `NAME_count`, `NAME_sum`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .filter_map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
                Value::Histogram(_) | Value::Summary(_) => None,
            })
            .reduce(|a, b| a + b)
    }

    /// Every sample, as `prometheus-parse` read it (histogram buckets are
    /// one sample per series, named without `_bucket`).
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP uptime_hub_results_rejected_total Results rejected, by reason.
# TYPE uptime_hub_results_rejected_total counter
uptime_hub_results_rejected_total{hub="hub-1",reason="bad_token"} 2
uptime_hub_results_rejected_total{hub="hub-1",reason="deadline_passed"} 5
# TYPE uptime_hub_is_leader gauge
uptime_hub_is_leader{hub="hub-1"} 1
# TYPE uptime_hub_write_batch_size histogram
uptime_hub_write_batch_size_bucket{hub="hub-1",le="1"} 3
uptime_hub_write_batch_size_bucket{hub="hub-1",le="+Inf"} 4
uptime_hub_write_batch_size_sum{hub="hub-1"} 9
uptime_hub_write_batch_size_count{hub="hub-1"} 4
plain 7
"#;

    #[test]
    fn values_by_name_and_labels() {
        let m = Metrics::parse(TEXT);
        let rejected = "uptime_hub_results_rejected_total";
        assert_eq!(m.value(rejected, &[]), Some(7.0));
        assert_eq!(m.value(rejected, &[("reason", "bad_token")]), Some(2.0));
        assert_eq!(
            m.value(rejected, &[("hub", "hub-1"), ("reason", "deadline_passed")]),
            Some(5.0)
        );
        assert_eq!(m.value(rejected, &[("reason", "nope")]), None);
        assert_eq!(m.value("uptime_hub_is_leader", &[]), Some(1.0));
        assert_eq!(m.value("uptime_hub_write_batch_size_count", &[]), Some(4.0));
        assert_eq!(m.value("uptime_hub_write_batch_size", &[]), None, "buckets");
        assert_eq!(m.value("plain", &[]), Some(7.0));
        assert_eq!(m.value("uptime_hub_absent", &[]), None);
        // A name is whole: no prefix matches.
        assert_eq!(m.value("uptime_hub_results_rejected", &[]), None);
    }

    #[tokio::test]
    async fn scrapes_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = "uptime_hub_ring_members{hub=\"hub-1\"} 3\n";
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
            }
        });
        let m = scrape(&url).await.unwrap();
        assert_eq!(m.value("uptime_hub_ring_members", &[]), Some(3.0));
        assert!(scrape("http://127.0.0.1:9/metrics").await.is_err());
    }
}
