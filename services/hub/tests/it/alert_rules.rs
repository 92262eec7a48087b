//! The alert rules (helm/uptime/files/alerts.rules.yaml), checked without a Prometheus:
//! `promtool check rules` and `promtool test rules` on the file and its unit tests
//! (alerts.test.yaml); every `uptime_*` metric the rules read is defined in
//! services/hub/src/metrics.rs or services/api/src/metrics.rs, so a renamed metric fails here;
//! and the chart's PrometheusRule carries exactly the file's groups.
//!
//! promtool is `UPTIME_TEST_PROMTOOL`, else `promtool` on PATH (Debian's `prometheus`
//! package; scripts/test.sh installs it). YAML is read with the test virtualenv's python
//! (`UPTIME_TEST_PYTHON`, PyYAML), as services/hub/tests/it/chart.rs does.

use crate::common::root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const RULES: &str = "alerts.rules.yaml";
const TESTS: &str = "alerts.test.yaml";

fn files() -> PathBuf {
    root().join("helm/uptime/files")
}

fn python() -> String {
    std::env::var("UPTIME_TEST_PYTHON").expect(
        "UPTIME_TEST_PYTHON is not set: run the tests with scripts/test.sh, which makes the \
         virtualenv with PyYAML and the Helm SDK",
    )
}

fn promtool(args: &[&str]) -> Output {
    let bin = std::env::var("UPTIME_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    Command::new(&bin)
        .args(args)
        .current_dir(files())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {bin}: {e}. Install Debian's `prometheus` package (scripts/test.sh \
                 does, as root) or point UPTIME_TEST_PROMTOOL at a promtool"
            )
        })
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A YAML file as JSON.
fn yaml(path: &Path) -> Value {
    let out = Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}", said(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rules() -> Vec<Value> {
    yaml(&files().join(RULES))["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

#[test]
fn promtool_passes_the_rules_and_their_unit_tests() {
    let n = rules().len();
    let check = promtool(&["check", "rules", "--lint=all", "--lint-fatal", RULES]);
    let out = said(&check);
    assert!(check.status.success(), "promtool check rules:\n{out}");
    assert!(
        out.contains(&format!("SUCCESS: {n} rules found")),
        "promtool check rules:\n{out}"
    );
    let test = promtool(&["test", "rules", TESTS]);
    let out = said(&test);
    assert!(test.status.success(), "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS") && !out.contains("FAILED"), "{out}");
}

#[test]
fn every_alert_has_a_for_a_severity_a_runbook_and_a_test_each_way() {
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for r in rules() {
        let name = str_of(&r["alert"], "alert (only alerting rules here)").to_string();
        assert!(r["for"].is_string(), "{name}: no `for:`");
        let severity = str_of(&r["labels"]["severity"], &format!("{name}: severity"));
        assert!(
            ["warning", "critical"].contains(&severity),
            "{name}: severity {severity}"
        );
        assert!(
            r["annotations"]["summary"].is_string(),
            "{name}: no summary"
        );
        let description = str_of(
            &r["annotations"]["description"],
            &format!("{name}: description"),
        );
        assert!(
            description.contains("Runbook: "),
            "{name}: the description has no runbook sentence"
        );
        assert!(
            cases.insert(name.clone(), (false, false)).is_none(),
            "{name} twice"
        );
    }
    let tests = yaml(&files().join(TESTS));
    for t in tests["tests"].as_array().unwrap() {
        for case in t["alert_rule_test"].as_array().unwrap() {
            let name = str_of(&case["alertname"], "alertname");
            let seen = cases
                .get_mut(name)
                .unwrap_or_else(|| panic!("{TESTS} tests {name}, which is not a rule"));
            let fires = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            if fires {
                seen.0 = true;
            } else {
                seen.1 = true;
            }
        }
    }
    let missing: Vec<String> = cases
        .iter()
        .filter(|(_, (fires, quiet))| !(*fires && *quiet))
        .map(|(n, (fires, quiet))| format!("{n} (firing case: {fires}, quiet case: {quiet})"))
        .collect();
    assert!(
        missing.is_empty(),
        "alerts without a case each way in {TESTS}: {missing:?}"
    );
}

/// The metric families `metrics.rs` defines, as served: every string literal that opens a
/// call (`gauge("validators_connected", ..)`, `Opts::new("requests_total", ..)`), with the
/// registry's prefix. Histograms also serve `_bucket`, `_sum` and `_count`.
fn defined_metrics(file: &str, prefix: &str) -> BTreeSet<String> {
    let src = std::fs::read_to_string(root().join(file)).unwrap();
    let namespace = prefix.trim_end_matches('_');
    assert!(
        src.contains(&format!("Some(\"{namespace}\".into())")),
        "{file} no longer registers its metrics under {namespace}: update this test"
    );
    let mut names = BTreeSet::new();
    let mut rest = src.as_str();
    while let Some(open) = rest.find('"') {
        let before = rest[..open].trim_end();
        let after = &rest[open + 1..];
        // The closing quote: the first one not escaped.
        let mut escaped = false;
        let Some(close) = after.find(|c| {
            let end = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            end
        }) else {
            break;
        };
        let literal = &after[..close];
        rest = &after[close + 1..];
        let is_name = !literal.is_empty()
            && literal
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if is_name && before.ends_with('(') {
            names.insert(format!("{prefix}{literal}"));
            if before.ends_with("HistogramOpts::new(") {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{prefix}{literal}{suffix}"));
                }
            }
        }
    }
    names
}

/// `uptime_hub_*` and `uptime_api_*` names in a PromQL expression.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut found = Vec::new();
    for prefix in ["uptime_hub_", "uptime_api_"] {
        for (at, _) in expr.match_indices(prefix) {
            let starts_a_word = expr[..at]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
            if !starts_a_word {
                continue;
            }
            let name: String = expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            found.push(name);
        }
    }
    found
}

#[test]
fn the_rules_read_only_metrics_the_services_define() {
    let mut defined = defined_metrics("services/hub/src/metrics.rs", "uptime_hub_");
    defined.extend(defined_metrics(
        "services/api/src/metrics.rs",
        "uptime_api_",
    ));
    // The scan finds the families (a sample from each registry and a histogram).
    for known in [
        "uptime_hub_validators_connected",
        "uptime_hub_dispatch_to_commit_seconds_bucket",
        "uptime_api_alert_outbox",
    ] {
        assert!(defined.contains(known), "{known} not found: {defined:?}");
    }
    let mut unknown = Vec::new();
    let mut used = 0;
    for r in rules() {
        let expr = str_of(&r["expr"], "expr");
        for name in metrics_in(expr) {
            used += 1;
            if !defined.contains(&name) {
                unknown.push(format!("{}: {name}", str_of(&r["alert"], "alert")));
            }
        }
    }
    assert!(used > 0);
    assert!(
        unknown.is_empty(),
        "alert rules read metrics no metrics.rs defines: {unknown:?}"
    );
}

fn render(values: &str) -> Vec<Value> {
    let out = Command::new(python())
        .arg(root().join("scripts/chart.py"))
        .arg("render")
        .arg(root().join("helm/uptime/ci").join(values))
        .output()
        .expect("run scripts/chart.py");
    assert!(out.status.success(), "{}", said(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap()
        .into_iter()
        .map(|e| e["object"].clone())
        .collect()
}

#[test]
fn the_chart_renders_the_rules_file_as_its_prometheus_rule() {
    let objects = render("production-values.yaml");
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "PrometheusRule")
        .collect();
    assert_eq!(found.len(), 1, "one PrometheusRule");
    let pr = found[0];
    assert_eq!(pr["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pr["metadata"]["labels"]["release"], "prometheus");
    let file = yaml(&files().join(RULES));
    assert_eq!(
        pr["spec"]["groups"], file["groups"],
        "the PrometheusRule's groups differ from {RULES}"
    );
    // Off by default.
    assert!(!render("default-values.yaml")
        .iter()
        .any(|o| o["kind"] == "PrometheusRule"));
}
