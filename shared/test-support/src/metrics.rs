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
//!
//! docs/metrics.md against a real `/metrics`: [`read_doc`] reads the
//! document's tables, [`Metrics::families`] what a page serves, and
//! [`doc_differences`] says where they disagree. [`touch`] makes a labelled
//! family show before anything used it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, Context};
use prometheus_parse::{Sample, Value};

/// How long [`scrape`] waits for the whole answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// One reading of a `/metrics` page.
#[derive(Debug)]
pub struct Metrics {
    samples: Vec<Sample>,
    /// Family name -> type, from the `# TYPE` lines.
    types: BTreeMap<String, String>,
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
        let types = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
            .collect();
        Metrics { samples, types }
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

    /// Every family that has a `# TYPE` line, by name, with the labels its
    /// series carry (a histogram's `_bucket`, `_sum` and `_count` count as
    /// its own; `le` and `quantile` are left out).
    pub fn families(&self) -> BTreeMap<String, Family> {
        let mut families: BTreeMap<String, Family> = self
            .types
            .iter()
            .map(|(name, kind)| {
                let family = Family {
                    kind: kind.clone(),
                    labels: BTreeMap::new(),
                };
                (name.clone(), family)
            })
            .collect();
        for s in &self.samples {
            let name = self.family_of(&s.metric);
            let Some(family) = name.and_then(|n| families.get_mut(n)) else {
                continue;
            };
            for (label, value) in s.labels.iter() {
                if label != "le" && label != "quantile" {
                    let values = family.labels.entry(label.clone()).or_default();
                    values.insert(value.clone());
                }
            }
        }
        families
    }

    /// The family a sample named `metric` belongs to.
    fn family_of<'a>(&'a self, metric: &'a str) -> Option<&'a str> {
        if self.types.contains_key(metric) {
            return Some(metric);
        }
        ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| metric.strip_suffix(suffix))
            .find(|base| {
                self.types
                    .get(*base)
                    .is_some_and(|k| k == "histogram" || k == "summary")
            })
    }
}

/// One metric family as a `/metrics` page serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// `counter`, `gauge`, `histogram`, ...
    pub kind: String,
    /// Label name -> the values seen on the page.
    pub labels: BTreeMap<String, BTreeSet<String>>,
}

/// A metric as docs/metrics.md documents it: one row of a table whose
/// header starts `| metric | type | labels |`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocMetric {
    pub name: String,
    pub kind: String,
    pub labels: Vec<DocLabel>,
    /// Line in the document (from 1), for messages.
    pub line: usize,
}

/// One label of a [`DocMetric`]: its cell says `` `name`: `a`, `b` `` (the
/// complete set of values) or `` `name`: text `` (the text says what
/// bounds it); several are separated by `<br>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocLabel {
    pub name: String,
    /// The complete set of values, when the cell lists nothing but them.
    pub values: Option<Vec<String>>,
}

/// The label value [`touch`] gives; never compared with the document.
pub const TOUCHED: &str = "touched_by_test";

/// The workspace's docs/metrics.md, read and parsed.
pub fn read_doc() -> anyhow::Result<Vec<DocMetric>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_doc(&text).with_context(|| format!("parsing {path}"))
}

/// The metrics documented in `markdown`: every row of every table whose
/// header's first cells are `metric`, `type`, `labels`. Fails on a row it
/// cannot read or a name documented twice.
pub fn parse_doc(markdown: &str) -> anyhow::Result<Vec<DocMetric>> {
    let mut metrics: Vec<DocMetric> = Vec::new();
    let mut in_table = false;
    for (i, line) in markdown.lines().enumerate() {
        let line_no = i + 1;
        let Some(row) = line.trim().strip_prefix('|') else {
            in_table = false;
            continue;
        };
        let cells: Vec<&str> = row
            .trim_end_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.len() >= 3 && cells[..3] == ["metric", "type", "labels"] {
            in_table = true;
            continue;
        }
        if !in_table
            || cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            continue;
        }
        let (Some(name), Some(kind), Some(labels)) = (
            cells.first().and_then(|c| code(c)),
            cells.get(1),
            cells.get(2),
        ) else {
            bail!("line {line_no}: expected | `name` | type | labels | ...");
        };
        if !["counter", "gauge", "histogram", "summary"].contains(kind) {
            bail!("line {line_no}: `{name}`: unknown type {kind:?}");
        }
        if let Some(first) = metrics.iter().find(|m| m.name == name) {
            bail!(
                "line {line_no}: `{name}` is documented already on line {}",
                first.line
            );
        }
        let labels = parse_labels(labels).with_context(|| format!("line {line_no}: `{name}`"))?;
        metrics.push(DocMetric {
            name: name.to_owned(),
            kind: (*kind).to_owned(),
            labels,
            line: line_no,
        });
    }
    Ok(metrics)
}

/// A labels cell: `—` (none), or label specs separated by `<br>`.
fn parse_labels(cell: &str) -> anyhow::Result<Vec<DocLabel>> {
    if ["", "-", "—"].contains(&cell) {
        return Ok(Vec::new());
    }
    cell.split("<br>")
        .map(|spec| {
            let spec = spec.trim();
            let (name, rest) = spec.split_once(':').unwrap_or((spec, ""));
            let Some(name) = code(name.trim()) else {
                bail!("a label spec starts with the label in backticks: {spec:?}");
            };
            let values: Option<Vec<String>> = rest
                .split(',')
                .map(|v| code(v.trim()).map(str::to_owned))
                .collect();
            Ok(DocLabel {
                name: name.to_owned(),
                values: values.filter(|v| !v.is_empty()),
            })
        })
        .collect()
}

/// `x` from `` `x` `` (one code span and nothing else).
fn code(s: &str) -> Option<&str> {
    let inner = s.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.is_empty() && !inner.contains('`')).then_some(inner)
}

/// Where the documented metrics whose names start with `prefix` and the
/// families `served` under that prefix disagree, one line each (empty: they
/// agree): a family served and not documented, documented and not served,
/// of another type, with other label names (less `ignore`, e.g. constant
/// labels), or serving a value the document's complete list lacks
/// ([`TOUCHED`] aside); and a counter not named `_total`, or another type
/// that is.
pub fn doc_differences(
    doc: &[DocMetric],
    served: &Metrics,
    prefix: &str,
    ignore: &[&str],
) -> Vec<String> {
    let served: BTreeMap<String, Family> = served
        .families()
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .collect();
    let doc: BTreeMap<&str, &DocMetric> = doc
        .iter()
        .filter(|m| m.name.starts_with(prefix))
        .map(|m| (m.name.as_str(), m))
        .collect();
    let mut out = Vec::new();
    for (name, family) in &served {
        let labels: BTreeSet<&str> = family
            .labels
            .keys()
            .map(String::as_str)
            .filter(|l| !ignore.contains(l))
            .collect();
        if (family.kind == "counter") != name.ends_with("_total") {
            out.push(format!(
                "{name}: a {} (Prometheus names counters, and only them, `_total`)",
                family.kind
            ));
        }
        let Some(d) = doc.get(name.as_str()) else {
            out.push(format!(
                "{name}: served ({}, labels {labels:?}) but not documented",
                family.kind
            ));
            continue;
        };
        if d.kind != family.kind {
            out.push(format!(
                "{name}: documented as a {} (line {}), served as a {}",
                d.kind, d.line, family.kind
            ));
        }
        let documented: BTreeSet<&str> = d.labels.iter().map(|l| l.name.as_str()).collect();
        if documented != labels {
            out.push(format!(
                "{name}: documented with labels {documented:?} (line {}), served with {labels:?}",
                d.line
            ));
        }
        for l in &d.labels {
            let (Some(values), Some(seen)) = (&l.values, family.labels.get(&l.name)) else {
                continue;
            };
            for v in seen.iter().filter(|v| *v != TOUCHED && !values.contains(v)) {
                out.push(format!(
                    "{name}: serves {}={v:?}, not among the values documented on line {}",
                    l.name, d.line
                ));
            }
        }
    }
    for (name, d) in &doc {
        if !served.contains_key(*name) {
            out.push(format!(
                "{name}: documented (line {}) but not served",
                d.line
            ));
        }
    }
    out
}

/// Most labels [`touch`] tries.
const MAX_LABELS: usize = 8;

/// Makes one series of a labelled family, so that `/metrics` serves it: the
/// prometheus crate leaves a labelled family out until one of its series
/// exists. `make` makes the series for the label values it is given (`|v|
/// vec.get_metric_with_label_values(v).is_ok()`); it is called with 1, 2,
/// ... values, each [`TOUCHED`], until the count is the vec's.
pub fn touch(mut make: impl FnMut(&[&str]) -> bool) {
    for n in 1..=MAX_LABELS {
        if make(&vec![TOUCHED; n]) {
            return;
        }
    }
    panic!("no label count up to {MAX_LABELS} fits this metric vec");
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

    const DOC: &str = "# Metrics

| metric | type | labels | unit | meaning |
|---|---|---|---|---|
| `uptime_hub_results_rejected_total` | counter | `reason`: `bad_token`, `deadline_passed` | results | Rejected. |
| `uptime_hub_is_leader` | gauge | — | 0 or 1 | Leader. |
| `uptime_hub_write_batch_size` | histogram | — | rows | Rows. |

Prose between tables; a table of something else is not read:

| variable | type | labels |
|---|---|---|
| `HUB_X` | gauge | — |

| metric | type | labels | unit | meaning |
|---|---|---|---|---|
| `uptime_api_requests_total` | counter | `route`: a route template, e.g. `/v1/x`<br>`status`: `200`, `404` | requests | Requests. |
";

    fn differences(doc: &str, served: &str) -> Vec<String> {
        let doc = parse_doc(doc).unwrap();
        doc_differences(&doc, &Metrics::parse(served), "uptime_hub_", &["hub"])
    }

    #[test]
    fn reads_the_documents_tables() {
        let doc = parse_doc(DOC).unwrap();
        let names: Vec<&str> = doc.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "uptime_hub_results_rejected_total",
                "uptime_hub_is_leader",
                "uptime_hub_write_batch_size",
                "uptime_api_requests_total"
            ]
        );
        assert_eq!(doc[0].kind, "counter");
        assert_eq!(doc[0].line, 5);
        let closed = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            doc[0].labels,
            [DocLabel {
                name: "reason".into(),
                values: closed(&["bad_token", "deadline_passed"])
            }]
        );
        assert!(doc[1].labels.is_empty());
        assert_eq!(
            doc[3].labels,
            [
                DocLabel {
                    name: "route".into(),
                    values: None
                },
                DocLabel {
                    name: "status".into(),
                    values: closed(&["200", "404"])
                }
            ]
        );
        let twice = format!("{DOC}| `uptime_hub_is_leader` | gauge | — | | |\n");
        assert!(parse_doc(&twice).is_err(), "a name documented twice");
        let typo = DOC.replace("| gauge |", "| gauge_ |");
        assert!(parse_doc(&typo).is_err(), "an unknown type");
        let bare = DOC.replace("`reason`:", "reason:");
        assert!(parse_doc(&bare).is_err(), "a label not in backticks");
    }

    #[test]
    fn served_families_carry_their_labels() {
        let f = Metrics::parse(TEXT).families();
        assert_eq!(f["uptime_hub_write_batch_size"].kind, "histogram");
        let labels: Vec<&String> = f["uptime_hub_write_batch_size"].labels.keys().collect();
        assert_eq!(labels, ["hub"], "le is left out, _sum and _count belong");
        let reasons = &f["uptime_hub_results_rejected_total"].labels["reason"];
        assert_eq!(reasons.len(), 2);
        assert!(!f.contains_key("plain"), "no TYPE line");
    }

    #[test]
    fn the_document_and_the_page_agree_or_differences_are_named() {
        let ok = differences(DOC, TEXT);
        assert!(ok.is_empty(), "{ok:#?}");
        let one = |doc: &str, served: &str| {
            let d = differences(doc, served);
            assert_eq!(d.len(), 1, "{d:#?}");
            d.into_iter().next().unwrap()
        };
        // A family added in code and not documented.
        let added = format!("{TEXT}# TYPE uptime_hub_new_total counter\nuptime_hub_new_total 0\n");
        assert!(one(DOC, &added).contains("uptime_hub_new_total: served (counter"));
        // Documented and gone.
        let gone = TEXT.replace("# TYPE uptime_hub_is_leader gauge\n", "");
        let gone = gone.replace("uptime_hub_is_leader{hub=\"hub-1\"} 1\n", "");
        assert!(
            one(DOC, &gone).contains("uptime_hub_is_leader: documented (line 6) but not served")
        );
        // Documented with the wrong type.
        let retyped = DOC.replace(
            "`uptime_hub_is_leader` | gauge",
            "`uptime_hub_is_leader` | counter",
        );
        assert!(one(&retyped, TEXT).contains("documented as a counter (line 6), served as a gauge"));
        // A label the document does not name, or names and is not served.
        let relabelled = DOC.replace("`reason`:", "`cause`:");
        assert!(one(&relabelled, TEXT).contains("documented with labels {\"cause\"}"));
        // A value outside the complete list; the touched placeholder is not one.
        let narrow = DOC.replace(", `deadline_passed`", "");
        assert!(one(&narrow, TEXT).contains("serves reason=\"deadline_passed\""));
        let touched = TEXT.replace("deadline_passed", TOUCHED);
        assert!(differences(&narrow, &touched).is_empty());
        // `_total` on counters and only on them.
        let renamed = format!(
            "{DOC}| `uptime_hub_ticks` | counter | — | | |\n| `uptime_hub_up_total` | gauge | — | | |\n"
        );
        let served = format!(
            "{TEXT}# TYPE uptime_hub_ticks counter\nuptime_hub_ticks 1\n# TYPE uptime_hub_up_total gauge\nuptime_hub_up_total 1\n"
        );
        let d = differences(&renamed, &served);
        assert_eq!(d.len(), 2, "{d:#?}");
        assert!(d[0].starts_with("uptime_hub_ticks: a counter (Prometheus names"));
        assert!(d[1].starts_with("uptime_hub_up_total: a gauge (Prometheus names"));
        // Each prefix is compared on its own: the api's rows are not the hub's.
        assert!(!differences(DOC, TEXT)
            .iter()
            .any(|d| d.contains("uptime_api_")));
    }

    #[test]
    fn touch_finds_the_label_count() {
        let mut seen = Vec::new();
        touch(|v| {
            seen.push(v.len());
            v.len() == 3
        });
        assert_eq!(seen, [1, 2, 3]);
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
