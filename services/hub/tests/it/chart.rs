//! The Helm chart (helm/uptime), checked without a cluster: `scripts/chart.py` lints and
//! renders every value set with the Helm v4 SDK and validates each object against the
//! Kubernetes schemas; then the hub and api containers are run as the chart runs them (the
//! rendered command, arguments and environment, secrets filled from the rendered Secret) and
//! probed where the chart probes them. A setting renamed in code but not in the chart fails
//! here. Needs `UPTIME_TEST_PYTHON` (the test virtualenv's python; scripts/test.sh sets it).

use crate::common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use test_support::{TestDb, TestRedis};

fn python() -> String {
    std::env::var("UPTIME_TEST_PYTHON").expect(
        "UPTIME_TEST_PYTHON is not set: run the tests with scripts/test.sh, which makes the \
         virtualenv with the Helm SDK",
    )
}

fn chart_py(args: &[&str]) -> std::process::Output {
    std::process::Command::new(python())
        .arg(root().join("scripts/chart.py"))
        .args(args)
        .output()
        .expect("run scripts/chart.py")
}

/// The objects `values` (a file under helm/uptime/ci) renders to, with `over` merged in.
fn render(values: &str, over: Value) -> Vec<Value> {
    let tmp = std::env::temp_dir().join(format!("chart-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, over.to_string()).unwrap();
    let out = chart_py(&[
        "render",
        root().join("helm/uptime/ci").join(values).to_str().unwrap(),
        tmp.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&tmp);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap()
        .into_iter()
        .map(|e| e["object"].clone())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The container's environment as the kubelet would give it: `valueFrom` resolved from the
/// rendered Secret (`secret`) and the pod's fields (`pod`), `$(VAR)` expanded from earlier
/// variables.
fn environment(
    container: &Value,
    secret: &Value,
    pod: &BTreeMap<&str, String>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            let mut v = v.to_string();
            for (k, val) in &env {
                v = v.replace(&format!("$({k})"), val);
            }
            v
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            match secret["stringData"][r["key"].as_str().unwrap()].as_str() {
                Some(v) => v.to_string(),
                None if r.get("optional") == Some(&json!(true)) => continue,
                None => panic!("{name}: the Secret has no key {}", r["key"]),
            }
        } else if let Some(f) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            pod.get(f)
                .unwrap_or_else(|| panic!("{name}: field {f}"))
                .clone()
        } else {
            panic!("{name}: {e}")
        };
        env.push((name, value));
    }
    env
}

/// The named port's number, and each probe's (path, port name).
fn probes(container: &Value) -> (u64, Vec<(String, String)>) {
    let port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .expect("a port named http")["containerPort"]
        .as_u64()
        .unwrap();
    let probes = ["startupProbe", "livenessProbe", "readinessProbe"]
        .iter()
        .map(|p| {
            let g = &container[*p]["httpGet"];
            (
                g["path"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{p}"))
                    .to_string(),
                g["port"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (port, probes)
}

async fn status(url: &str) -> Option<u16> {
    reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Runs `binary` with the container's args and exactly `env` (plus the listen address moved
/// to a free loopback port), and waits for each probe path to answer 200. Returns the running
/// process and its port.
async fn run_as_the_chart_does(
    binary: PathBuf,
    container: &Value,
    mut env: Vec<(String, String)>,
    listen_var: &str,
) -> (tokio::process::Child, u16) {
    let (port, probes) = probes(container);
    let listen = env
        .iter_mut()
        .find(|(k, _)| k == listen_var)
        .unwrap_or_else(|| panic!("the chart sets {listen_var}"));
    assert_eq!(
        listen.1,
        format!("0.0.0.0:{port}"),
        "{listen_var} listens on the port the probes use"
    );
    let local = free_port();
    listen.1 = format!("127.0.0.1:{local}");
    for (_, port_name) in &probes {
        assert_eq!(port_name, "http");
    }
    let mut child = start(&binary, container, &env);
    for (path, _) in &probes {
        let url = format!("http://127.0.0.1:{local}{path}");
        let mut last = None;
        for _ in 0..150 {
            if let Ok(Some(code)) = child.try_wait() {
                panic!(
                    "{} exited ({code}) before {path} answered",
                    binary.display()
                );
            }
            last = status(&url).await;
            if last == Some(200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(last, Some(200), "{} {path}", binary.display());
    }
    (child, local)
}

/// Starts `binary` with the container's args and exactly `env`.
fn start(binary: &Path, container: &Value, env: &[(String, String)]) -> tokio::process::Child {
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    tokio::process::Command::new(binary)
        .args(&args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// SIGTERM, as the kubelet sends after preStop: a clean exit within the grace period.
async fn stop_as_the_kubelet_does(mut child: tokio::process::Child, what: &str) {
    let pid = child.id().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let code = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(code.success(), "{what} exited {code}");
}

#[test]
fn the_chart_lints_renders_and_validates_for_every_value_set() {
    let out = chart_py(&["check"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("default-values.yaml: lint clean"), "{said}");
    assert!(
        said.contains("production-values.yaml: lint clean"),
        "{said}"
    );
}

#[test]
fn the_production_values_render_what_an_operator_expects() {
    let o = render("production-values.yaml", json!({}));
    let hub = find(&o, "Deployment", "uptime-hub");
    let spec = &hub["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    // Autoscaled: the HPA owns the replica count, on CPU and on sockets per pod.
    assert!(hub["spec"]["replicas"].is_null());
    let hpa = find(&o, "HorizontalPodAutoscaler", "uptime-hub");
    let metrics: Vec<&str> = hpa["spec"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(metrics, ["Resource", "Pods"]);
    assert_eq!(
        hpa["spec"]["metrics"][1]["pods"]["metric"]["name"],
        "uptime_hub_validators_connected"
    );
    // Shutdown: the pause, then the drain, within the grace period.
    let pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let drain_ms: u64 = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "HUB_DRAIN_TIMEOUT_MS")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // The operator's validators count from the start; with trusted proxies
    // set, the hubs see validators' own networks.
    let env_value = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .map(str::to_string)
    };
    assert_eq!(
        env_value("HUB_TRUSTED_VALIDATORS").as_deref(),
        Some("GmaDrppBC7P5ARKV8g3djiwP89vz1jLK23V2GBjuAEGB,J2xccRtuG43drESLYznHhLhQkLTdfepcKYbiQ9BsJVaf")
    );
    assert_eq!(env_value("HUB_PREFIX_DIVERSITY").as_deref(), Some("true"));
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        pause > 0 && grace > pause + drain_ms / 1000,
        "{pause} {drain_ms} {grace}"
    );
    // Locked down.
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    let keys: Vec<&str> = spec["topologySpreadConstraints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topologyKey"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    );
    // A changed Secret restarts the pods.
    assert!(hub["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"].is_string());
    // The treasury only on the payout hubs, mounted read-only, group-readable only.
    let payer = find(&o, "Deployment", "uptime-payer");
    let treasury_env = |d: &Value| {
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "HUB_PAYOUT_TREASURY_KEYPAIR")
    };
    assert!(treasury_env(payer) && !treasury_env(hub));
    let vol = &payer["spec"]["template"]["spec"]["volumes"][0]["secret"];
    assert_eq!(
        (vol["secretName"].as_str(), vol["defaultMode"].as_u64()),
        (Some("uptime-treasury"), Some(0o440))
    );
    // The Ingress keeps sockets open and unbuffered; TLS for both hosts.
    let ing = find(&o, "Ingress", "uptime");
    let ann = &ing["metadata"]["annotations"];
    assert_eq!(ann["nginx.ingress.kubernetes.io/proxy-buffering"], "off");
    assert_eq!(
        ann["nginx.ingress.kubernetes.io/proxy-read-timeout"],
        "3600"
    );
    assert_eq!(
        ing["spec"]["tls"][0]["hosts"],
        json!(["hubs.uptime.example.com", "api.uptime.example.com"])
    );
    // The api's host serves the dashboard, its live updates (Server-Sent
    // Events under /v1: unbuffered, long timeouts as above), the status
    // pages and the badges, and not /metrics.
    let api_paths: Vec<&str> = ing["spec"]["rules"][1]["http"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    for p in ["/", "/app", "/status", "/badge", "/v1"] {
        assert!(api_paths.contains(&p), "{p} in {api_paths:?}");
    }
    assert!(!api_paths.contains(&"/metrics"));
    assert_eq!(
        ann["nginx.ingress.kubernetes.io/proxy-send-timeout"],
        "3600"
    );
    // No Secret is made when an existing one is named.
    assert!(!o.iter().any(|x| x["kind"] == "Secret"));
    // The api may reach public addresses only (webhooks, SMTP).
    let np = find(&o, "NetworkPolicy", "uptime-api");
    let except = &np["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0")
        .unwrap()["to"][0]["ipBlock"]["except"];
    assert!(except.as_array().unwrap().contains(&json!("10.0.0.0/8")));
    let sm = find(&o, "ServiceMonitor", "uptime");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    // The databases' CA is mounted wherever the databases are reached, and Redis is told.
    for d in ["uptime-hub", "uptime-payer", "uptime-api"] {
        let spec = &find(&o, "Deployment", d)["spec"]["template"]["spec"];
        assert!(
            spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["secret"]["secretName"] == "uptime-db-ca"),
            "{d}"
        );
        assert!(
            spec["containers"][0]["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == "/var/run/uptime/ca" && m["readOnly"] == true),
            "{d}"
        );
    }
    assert!(c["env"].as_array().unwrap().iter().any(
        |e| e["name"] == "HUB_REDIS_TLS_CA" && e["value"] == "/var/run/uptime/ca/redis-ca.crt"
    ));
}

#[test]
fn the_quick_start_points_the_services_at_its_own_databases() {
    let o = render("quickstart-values.yaml", json!({}));
    let secret = find(&o, "Secret", "uptime-secrets");
    assert_eq!(
        secret["stringData"]["database-url"],
        "postgres://uptime:uptime-quickstart@uptime-postgres:5432/uptime"
    );
    assert_eq!(
        secret["stringData"]["redis-url"],
        "redis://uptime-redis:6379"
    );
    let pg = find(&o, "StatefulSet", "uptime-postgres");
    assert_eq!(pg["spec"]["replicas"], 1);
    assert_eq!(
        pg["spec"]["template"]["spec"]["containers"][0]["securityContext"]
            ["readOnlyRootFilesystem"],
        true
    );
    find(&o, "Service", "uptime-postgres");
    find(&o, "Deployment", "uptime-redis");
    find(&o, "Service", "uptime-redis");
    // Off by default.
    let d = render("default-values.yaml", json!({}));
    assert!(!d.iter().any(|x| x["kind"] == "StatefulSet"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_the_api_and_a_validator_run_as_the_chart_runs_them() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    // The rendered Secret carries the test's databases; everything else is the chart's.
    let o = render(
        "default-values.yaml",
        json!({"secrets": {
            "databaseUrl": db.url.as_str(),
            "redisUrl": redis.url.as_str(),
        }}),
    );
    let secret = find(&o, "Secret", "uptime-secrets");
    let pod = BTreeMap::from([
        ("metadata.name", "uptime-hub-7d9f8-abcde".to_string()),
        ("status.podIP", "127.0.0.1".to_string()),
    ]);
    let hub = &find(&o, "Deployment", "uptime-hub")["spec"]["template"]["spec"]["containers"][0];
    let mut env = environment(hub, secret, &pod);
    // One key prefix per test on the shared Redis.
    env.push(("HUB_REDIS_PREFIX".into(), redis.prefix.clone()));
    assert!(env
        .iter()
        .any(|(k, v)| k == "HUB_ID" && v == "uptime-hub-7d9f8-abcde"));
    let (hub_proc, hub_port) = run_as_the_chart_does(
        PathBuf::from(env!("CARGO_BIN_EXE_hub")),
        hub,
        env,
        "HUB_LISTEN",
    )
    .await;
    let api = &find(&o, "Deployment", "uptime-api")["spec"]["template"]["spec"]["containers"][0];
    let env = environment(api, secret, &pod);
    let (api_proc, _) = run_as_the_chart_does(sibling_binary("api"), api, env, "API_LISTEN").await;
    stop_as_the_kubelet_does(api_proc, "api").await;

    // A validator of the production values' StatefulSet, with its key where the Secret's
    // mount puts it (the pod's name, mode 0440), pointed at the running hub.
    let prod = render("production-values.yaml", json!({}));
    let sts = find(&prod, "StatefulSet", "uptime-validator");
    let spec = &sts["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert_eq!(spec["volumes"][0]["secret"]["defaultMode"], 0o440);
    let vpod = BTreeMap::from([("metadata.name", "uptime-validator-0".to_string())]);
    let mut env = environment(container, &json!({}), &vpod);
    let keys = std::env::temp_dir().join(format!("keys-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&keys).unwrap();
    for (k, v) in env.iter_mut() {
        match k.as_str() {
            "VALIDATOR_KEYPAIR" => {
                assert_eq!(
                    v,
                    &format!("{mount}/uptime-validator-0.json"),
                    "the key is named after the pod"
                );
                *v = v.replace(mount, keys.to_str().unwrap());
            }
            "VALIDATOR_HUB_URLS" => {
                assert_eq!(v, "ws://uptime-hub:80/ws", "the hubs' Service by default");
                *v = format!("ws://127.0.0.1:{hub_port}/ws");
            }
            _ => {}
        }
    }
    let key = keys.join("uptime-validator-0.json");
    let made = std::process::Command::new(sibling_binary("validator"))
        .args(["keygen", "--out", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o440)).unwrap();
    }
    let validator = start(&sibling_binary("validator"), container, &env);
    let metrics_url = format!("http://127.0.0.1:{hub_port}/metrics");
    eventually(20, "the chart's validator connected to the hub", || async {
        let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
        (test_support::metrics::Metrics::parse(&text).value("uptime_hub_validators_connected", &[])
            == Some(1.0))
        .then_some(())
    })
    .await;
    stop_as_the_kubelet_does(validator, "validator").await;
    stop_as_the_kubelet_does(hub_proc, "hub").await;
    let _ = std::fs::remove_dir_all(&keys);
}
