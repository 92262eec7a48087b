//! A real Prometheus server (Debian's `prometheus`) scrapes a running local stack (two hubs in
//! a cluster, the api, validators checking a demo site) the way the chart's ServiceMonitor
//! does (a job per Service, a `namespace` label), with the chart's alert rules loaded. Every
//! query of the Grafana dashboard (helm/uptime/files/dashboard.json) must return data, every
//! alert rule must evaluate without error, and the HPA's custom metric must give one value
//! per hub. The server is found through `UPTIME_TEST_PROMETHEUS` or on PATH
//! (scripts/test.sh installs the package when missing).

use crate::common::*;

use std::time::Duration;

use serde_json::Value;
use test_support::{TestDb, TestRedis};
use tokio_util::sync::CancellationToken;

fn prometheus() -> String {
    std::env::var("UPTIME_TEST_PROMETHEUS").unwrap_or_else(|_| "prometheus".into())
}

/// The answer to an instant query (`Null` while the server is not up yet).
async fn query(client: &reqwest::Client, base: &str, q: &str) -> Value {
    let Ok(r) = client
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
    else {
        return Value::Null;
    };
    r.json().await.unwrap_or(Value::Null)
}

/// The dashboard's queries, with Grafana's `$__rate_interval` as Grafana would fill it for a
/// 1 s scrape interval and the `namespace` variable set to the scrape's.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("helm/uptime/files/dashboard.json")).unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_string();
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| {
                    (
                        title.clone(),
                        t["expr"]
                            .as_str()
                            .unwrap()
                            .replace("$__rate_interval", "30s")
                            .replace("$namespace", "uptime"),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_gets_data_for_every_dashboard_query_and_evaluates_every_rule() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let (base, sites_stop) = demo_sites(Default::default()).await;
    add_site(&db, &format!("{base}/up"), 1, 1_000, None).await;
    add_site(&db, &format!("{base}/down"), 1, 1_000, None).await;
    let hub_config = |id: &str| {
        let mut s = settings(&db);
        s.hub_id = id.into();
        s.redis_url = redis.url.clone().into();
        s.redis_prefix = redis.prefix.clone();
        s.announce_interval_ms = 200;
        s
    };
    let a = TestHub::start(hub_config("uptime-hub-a")).await;
    let b = TestHub::start(hub_config("uptime-hub-b")).await;
    let stop = CancellationToken::new();
    for (seed, region, hub) in [
        (80, "eu-west", &a),
        (81, "us-east", &b),
        (82, "ap-south", &a),
    ] {
        spawn_validator(&[hub.ws_url()], seed, region, &stop);
    }
    // The api, in process, on the same database.
    let (api_url, api_stop) = api_for(&db).await;
    let api_addr = api_url.trim_start_matches("http://").to_string();

    // Prometheus, scraping as the chart's ServiceMonitor does, with the chart's rules.
    let dir = std::env::temp_dir().join(format!("prom-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let rules = root().join("helm/uptime/files/alerts.rules.yaml");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ['{rules}']
scrape_configs:
  - job_name: uptime-hub
    static_configs: [{{targets: ['{a}', '{b}'], labels: {{namespace: uptime}}}}]
  - job_name: uptime-api
    static_configs: [{{targets: ['{api}'], labels: {{namespace: uptime}}}}]
",
            rules = rules.display(),
            a = a.addr,
            b = b.addr,
            api = api_addr,
        ),
    )
    .unwrap();
    let mut server = tokio::process::Command::new(prometheus())
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "starting {} failed ({e}): install Debian's prometheus package \
                 (scripts/test.sh does), or set UPTIME_TEST_PROMETHEUS",
                prometheus()
            )
        });
    let prom = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    // Every target up, then enough samples for 30 s rates.
    eventually(30, "three targets up", || async {
        let r = query(&client, &prom, "count(up == 1)").await;
        (r["data"]["result"][0]["value"][1] == "3").then_some(())
    })
    .await;
    let mut missing = Vec::new();
    for (title, q) in dashboard_queries() {
        let mut last = Value::Null;
        for _ in 0..40 {
            last = query(&client, &prom, &q).await;
            assert_eq!(last["status"], "success", "{title}: {q}: {last}");
            let has_data = last["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty());
            if has_data {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let empty = last["data"]["result"]
            .as_array()
            .is_none_or(|r| r.is_empty());
        if empty {
            missing.push(format!("{title}: {q}"));
        }
    }
    assert!(missing.is_empty(), "queries without data: {missing:#?}");

    // The HPA's custom metric: one value per hub pod.
    let per_hub = query(&client, &prom, "uptime_hub_validators_connected").await;
    assert_eq!(
        per_hub["data"]["result"].as_array().unwrap().len(),
        2,
        "{per_hub}"
    );

    // Every alert rule loaded and evaluated without error.
    let rules: Value = client
        .get(format!("{prom}/api/v1/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let all: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(all.len() >= 20, "{rules}");
    for r in &all {
        assert_eq!(r["health"], "ok", "{}: {r}", r["name"]);
        assert!(
            !r["lastEvaluation"]
                .as_str()
                .unwrap_or("")
                .starts_with("0001"),
            "{} was never evaluated",
            r["name"]
        );
    }

    let _ = server.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    api_stop.cancel();
    stop.cancel();
    a.stop().await;
    b.stop().await;
    sites_stop.cancel();
}
