//! End to end on one hub: real validators check real demo sites on
//! loopback, and rounds close with the right status.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use sqlx::Row;
use test_support::TestDb;
use tokio_util::sync::CancellationToken;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_site_gets_three_regions_per_round_with_the_right_status() {
    let db = TestDb::new().await.unwrap();
    let (base, sites_stop) = demo_sites(demo_sites::Config {
        slow_ms: 3_000,
        ..Default::default()
    })
    .await;
    let up = add_site(&db, &format!("{base}/up"), 2, 2_000, None).await;
    let down = add_site(&db, &format!("{base}/down"), 2, 2_000, None).await;
    let slow = add_site(&db, &format!("{base}/slow"), 2, 1_000, None).await;
    let keyword = add_site(
        &db,
        &format!("{base}/keyword"),
        2,
        2_000,
        Some("uptime-demo-keyword"),
    )
    .await;
    let missing = add_site(&db, &format!("{base}/up"), 2, 2_000, Some("not-there")).await;

    let hub = TestHub::start(settings(&db)).await;
    let stop = CancellationToken::new();
    let validators: Vec<_> = REGIONS
        .iter()
        .enumerate()
        .map(|(i, r)| spawn_validator(&[hub.ws_url()], 10 + i as u8, r, &stop))
        .collect();

    // Two full rounds (three results each) for every site.
    let sites = [up, down, slow, keyword, missing];
    eventually(30, "two full rounds per site", || async {
        let full: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT website_id) FROM (
               SELECT website_id FROM rounds
                WHERE status <> 'open' AND results_up + results_down = 3
                GROUP BY website_id HAVING count(*) >= 2) s",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        (full == sites.len() as i64).then_some(())
    })
    .await;

    let expect = [
        (up, "up"),
        (down, "down"),
        (slow, "down"),
        (keyword, "up"),
        (missing, "down"),
    ];
    for (site, want) in expect {
        let rounds = sqlx::query(
            "SELECT id, status FROM rounds
              WHERE website_id = $1 AND status <> 'open' AND results_up + results_down = 3",
        )
        .bind(site)
        .fetch_all(db.pool())
        .await
        .unwrap();
        assert!(rounds.len() >= 2);
        for r in rounds {
            let round_id: i64 = r.get("id");
            assert_eq!(r.get::<String, _>("status"), want, "site {site}");
            let ticks = sqlx::query(
                "SELECT v.region, t.status, t.http_status, t.error, t.latency_ms
                   FROM ticks t JOIN validators v ON v.id = t.validator_id
                  WHERE t.round_id = $1",
            )
            .bind(round_id)
            .fetch_all(db.pool())
            .await
            .unwrap();
            let regions: HashSet<String> = ticks.iter().map(|t| t.get("region")).collect();
            assert_eq!(regions.len(), 3, "three regions in round {round_id}");
            for t in &ticks {
                assert_eq!(t.get::<String, _>("status"), want, "site {site}");
                let err: Option<String> = t.get("error");
                let http: Option<i16> = t.get("http_status");
                if site == down {
                    assert_eq!(http, Some(503));
                }
                if site == slow {
                    // Timed out at the site's 1 s, not the page's 3 s.
                    let e = err.clone().expect("timeout error text");
                    assert!(e.contains("timeout"), "{e}");
                    let latency: i32 = t.get("latency_ms");
                    assert!((1_000..2_500).contains(&latency), "latency {latency}");
                }
                if site == missing {
                    assert!(err.unwrap_or_default().contains("not-there"));
                }
            }
        }
    }
    // No slot ran twice and every tick earned the configured reward.
    let dup: i64 = count(
        &db,
        "SELECT count(*) FROM (SELECT 1 FROM rounds GROUP BY website_id, slot HAVING count(*) > 1) d",
    )
    .await;
    assert_eq!(dup, 0);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM ticks WHERE reward_lamports <> 1000"
        )
        .await,
        0
    );

    // The `hub sites status` table shows each site and its regions.
    let table =
        hub::cli::status_table(&db.store.site_statuses().await.unwrap(), protocol::now_ms());
    let line = |id: store::WebsiteId| {
        table
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("site {id} in\n{table}"))
            .to_string()
    };
    assert!(
        line(up).contains(" up ") && line(up).contains("eu-west: up 200"),
        "{table}"
    );
    assert!(
        line(down).contains("down") && line(down).contains("down 503"),
        "{table}"
    );
    assert!(line(slow).contains("timeout"), "{table}");

    assert!(metric(&hub.state, "uptime_hub_validators_connected", &[]) == 3.0);
    assert!(metric(&hub.state, "uptime_hub_ticks_written_total", &[]) >= 30.0);
    assert!(metric(&hub.state, "uptime_hub_write_batch_size_count", &[]) >= 1.0);

    stop_validators(&stop, validators).await;
    hub.stop().await;
    sites_stop.cancel();
}

/// Starts a hub over 1,500 sites at `interval_secs` (more than a hub takes
/// on "in bulk"), with three validators; returns, once `rounds` rounds are
/// open, how many of them are for a slot that began before the hub started.
async fn bulk_start(interval_secs: i32, rounds: i64) -> i64 {
    let db = TestDb::new().await.unwrap();
    sqlx::query(
        "INSERT INTO websites (url, interval_secs, timeout_ms) \
         SELECT 'http://127.0.0.1:9/' || g, $1, 1000 FROM generate_series(1, 1500) g",
    )
    .bind(interval_secs)
    .execute(db.pool())
    .await
    .unwrap();
    let started_ms = protocol::now_ms();
    let hub = TestHub::start(settings(&db)).await;
    let mut validators = Vec::new();
    for (n, region) in [(1, "eu-west"), (2, "us-east"), (3, "ap-south")] {
        validators.push(RawClient::login(&hub.ws_url(), key(n), region).await.0);
    }
    eventually(10, "rounds to open", || async {
        (count(&db, "SELECT count(*) FROM rounds").await >= rounds).then_some(())
    })
    .await;
    let early: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rounds WHERE scheduled_at < to_timestamp($1::float8 / 1000)",
    )
    .bind(started_ms as f64)
    .fetch_one(db.pool())
    .await
    .unwrap();
    drop(validators);
    hub.stop().await;
    early
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_taken_on_in_bulk_start_at_their_next_slot() {
    // At 60 s, none may run the slot that was current when the hub took
    // them (that would be a burst of up to 1,500 rounds at once).
    let early = bulk_start(60, 5).await;
    assert_eq!(
        early, 0,
        "no slot that began before the hub took the sites ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_taken_on_in_bulk_with_long_intervals_are_not_left_waiting() {
    // At a day, waiting for the next slot could mean a day without a check:
    // they run their current slot, spread over a minute (~25 rounds/s here).
    let early = bulk_start(86_400, 5).await;
    assert!(early >= 5, "current slots ran within seconds: {early}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_website_added_in_plain_sql_is_checked_within_a_second() {
    let db = TestDb::new().await.unwrap();
    let (base, sites_stop) = demo_sites(Default::default()).await;
    let mut s = settings(&db);
    // Only the PostgreSQL notification can explain a quick pickup.
    s.reload_interval_ms = 600_000;
    let hub = TestHub::start(s).await;
    let stop = CancellationToken::new();
    let (v, _) = spawn_validator(&[hub.ws_url()], 50, "eu-west", &stop);
    v.wait_until(|s| s.connected).await;
    // The hub's first reload has happened (the interval fires at once).
    eventually(5, "the first reload", || async {
        (metric(&hub.state, "uptime_hub_websites_owned", &[]) == 0.0).then_some(())
    })
    .await;

    let added = std::time::Instant::now();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO websites (url, interval_secs) VALUES ($1, 60) RETURNING id",
    )
    .bind(format!("{base}/up"))
    .fetch_one(db.pool())
    .await
    .unwrap();
    eventually(5, "a round for the new website", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rounds WHERE website_id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();
        (n > 0).then_some(())
    })
    .await;
    let took = added.elapsed();
    assert!(took < Duration::from_secs(1), "picked up after {took:?}");
    stop.cancel();
    hub.stop().await;
    sites_stop.cancel();
}

/// The owners' API and a hub on one database, as an owner uses them: sign
/// up, make a key, add a demo site with it, see the hub's validators check
/// it within one interval and read its status and history through the API.
/// Then pause, resume and delete it: each change reaches the hub within a
/// second, and the hub reloads just that row (the notification names it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_adds_a_site_through_the_api_and_reads_its_checks() {
    let db = TestDb::new().await.unwrap();
    let (base, sites_stop) = demo_sites(Default::default()).await;
    let mut s = settings(&db);
    s.reload_interval_ms = 600_000;
    let hub = TestHub::start(s).await;
    let stop = CancellationToken::new();
    for (seed, region) in [(50, "eu-west"), (51, "us-east")] {
        let (v, _) = spawn_validator(&[hub.ws_url()], seed, region, &stop);
        v.wait_until(|s| s.connected).await;
    }
    eventually(5, "the first reload", || async {
        (metric(
            &hub.state,
            "uptime_hub_website_reloads_total",
            &[("scope", "all")],
        ) >= 1.0)
            .then_some(())
    })
    .await;
    let full_reloads = metric(
        &hub.state,
        "uptime_hub_website_reloads_total",
        &[("scope", "all")],
    );

    let api = api_for(&db).await;
    let key = sign_up_and_make_a_key(&api.0).await;
    let program = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String, body: Option<serde_json::Value>| {
        let mut r = program
            .request(method, format!("{}{path}", api.0))
            .bearer_auth(&key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    let get = |path: String| {
        let c = call(reqwest::Method::GET, path, None);
        async move { c.await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };

    let added = std::time::Instant::now();
    let site: serde_json::Value = call(
        reqwest::Method::POST,
        "/v1/websites".into(),
        Some(serde_json::json!({"url": format!("{base}/up"), "interval_secs": 60})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let id = site["id"].as_i64().expect("a website id");
    eventually(5, "a round for the new website", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rounds WHERE website_id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();
        (n > 0).then_some(())
    })
    .await;
    let took = added.elapsed();
    assert!(took < Duration::from_secs(1), "picked up after {took:?}");
    assert_eq!(metric(&hub.state, "uptime_hub_websites_owned", &[]), 1.0);

    // Checked within one interval; the API shows the round and each region.
    let status = eventually(60, "the site's status through the API", || async {
        let st = get(format!("/v1/websites/{id}/status")).await;
        (st["status"] == "up").then_some(st)
    })
    .await;
    let regions: HashSet<&str> = status["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, HashSet::from(["eu-west", "us-east"]), "{status}");
    let rounds = get(format!("/v1/websites/{id}/rounds")).await;
    let first = &rounds["items"][0];
    assert_eq!(first["status"], "up", "{rounds}");
    assert_eq!(first["results"].as_array().unwrap().len(), 2, "{rounds}");
    let results = get(format!("/v1/websites/{id}/results")).await;
    assert!(results["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["http_status"] == 200));
    let uptime = get(format!("/v1/websites/{id}/uptime")).await;
    assert_eq!(uptime["windows"][0]["uptime_pct"], 100.0, "{uptime}");

    // Paused, resumed, deleted: the hub follows within a second each time.
    for (action, path, want) in [
        (
            reqwest::Method::POST,
            format!("/v1/websites/{id}/pause"),
            0.0,
        ),
        (
            reqwest::Method::POST,
            format!("/v1/websites/{id}/resume"),
            1.0,
        ),
        (reqwest::Method::DELETE, format!("/v1/websites/{id}"), 0.0),
    ] {
        let at = std::time::Instant::now();
        let resp = call(action.clone(), path.clone(), None).await.unwrap();
        assert!(
            resp.status().is_success(),
            "{action} {path}: {}",
            resp.status()
        );
        eventually(5, "the hub to follow", || async {
            (metric(&hub.state, "uptime_hub_websites_owned", &[]) == want).then_some(())
        })
        .await;
        let took = at.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "{action} {path} reached the hub after {took:?}"
        );
    }
    // Each change reloaded its row only: no full reload since the first.
    assert_eq!(
        metric(
            &hub.state,
            "uptime_hub_website_reloads_total",
            &[("scope", "all")]
        ),
        full_reloads
    );
    assert!(
        metric(
            &hub.state,
            "uptime_hub_website_reloads_total",
            &[("scope", "some")]
        ) >= 4.0
    );
    // The deleted site's rounds and results are kept (settlement pays them).
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM ticks WHERE website_id = $1")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(kept >= 2);
    api.1.cancel();
    stop.cancel();
    hub.stop().await;
    sites_stop.cancel();
}

/// Signs up at the api as a browser would (cookie and CSRF token) and
/// makes a write-scoped API key, which it returns.
async fn sign_up_and_make_a_key(api_url: &str) -> String {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let signed: serde_json::Value = browser
        .post(format!("{api_url}/v1/accounts"))
        .json(
            &serde_json::json!({"email": "owner@example.com", "password": "correct horse battery"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let csrf = signed["csrf_token"]
        .as_str()
        .expect("signed up")
        .to_string();
    let made: serde_json::Value = browser
        .post(format!("{api_url}/v1/keys"))
        .header("x-csrf-token", &csrf)
        .json(&serde_json::json!({"name": "e2e", "scope": "write"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    made["key"].as_str().expect("a key").to_string()
}

/// The same owner's journey on real processes: `hub serve`, `api serve`
/// and two `validator run`s, talking over loopback sockets as deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_real_processes_a_site_added_through_the_api_is_checked_and_shown() {
    let db = TestDb::new().await.unwrap();
    let (base, sites_stop) = demo_sites(Default::default()).await;
    let hub = HubProc::start(&db, "hub-p", free_port(), &[]).await;
    let api_port = free_port();
    let mut api = tokio::process::Command::new(sibling_binary("api"))
        .arg("serve")
        .env("API_DATABASE_URL", &db.url)
        .env("API_LISTEN", format!("127.0.0.1:{api_port}"))
        .env(
            "API_KEY_SECRET",
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        )
        .env("API_COOKIE_SECURE", "false")
        .env("API_ALLOW_PRIVATE_TARGETS", "true")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("api starts");
    let api_url = format!("http://127.0.0.1:{api_port}");
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    eventually(30, "the api to answer", || async {
        let r = http.get(format!("{api_url}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let dir = tempdir();
    let mut validators = Vec::new();
    for region in ["eu-west", "us-east"] {
        let keypair = dir.join(format!("{region}.json"));
        let out = tokio::process::Command::new(sibling_binary("validator"))
            .args(["keygen", "--out"])
            .arg(&keypair)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        validators.push(
            tokio::process::Command::new(sibling_binary("validator"))
                .args(["run", "--hub", &hub.ws_url(), "--region", region])
                .arg("--keypair")
                .arg(&keypair)
                .arg("--allow-private-targets")
                .env("RUST_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("validator starts"),
        );
    }

    let key = sign_up_and_make_a_key(&api_url).await;
    let program = reqwest::Client::new();
    let site: serde_json::Value = program
        .post(format!("{api_url}/v1/websites"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"url": format!("{base}/up"), "interval_secs": 60}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = site["id"].as_i64().expect("a website id");
    // Within one interval: decided up by both regions, shown by the API.
    let status = eventually(60, "the site's status through the API", || async {
        let st: serde_json::Value = program
            .get(format!("{api_url}/v1/websites/{id}/status"))
            .bearer_auth(&key)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (st["status"] == "up" && st["regions"].as_array()?.len() == 2).then_some(st)
    })
    .await;
    assert!(
        status["regions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["http_status"] == 200),
        "{status}"
    );
    let rounds: serde_json::Value = program
        .get(format!("{api_url}/v1/websites/{id}/rounds"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        rounds["items"][0]["results"].as_array().unwrap().len(),
        2,
        "{rounds}"
    );

    for mut v in validators {
        let _ = v.start_kill();
        let _ = v.wait().await;
    }
    let _ = api.start_kill();
    let _ = api.wait().await;
    hub.sigterm().await;
    sites_stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A private folder under the system's temp dir.
fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("uptime-e2e-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An owner's site flaps: the hub's rounds open an incident and resolve it,
/// and the owner's webhook (which fails its first two requests) and email
/// each get every transition once after deduping by idempotency key, in
/// order, matching the incidents table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_site_alerts_each_transition_once_after_dedupe() {
    use test_support::receivers::{SmtpSink, WebhookReceiver};
    let db = TestDb::new().await.unwrap();
    let (base, sites_stop) = demo_sites(demo_sites::Config {
        flap_period: Duration::from_secs(8),
        ..Default::default()
    })
    .await;
    let hub = TestHub::start(settings(&db)).await;
    let stop = CancellationToken::new();
    for (seed, region) in [(60, "eu-west"), (61, "us-east"), (62, "ap-south")] {
        let (v, _) = spawn_validator(&[hub.ws_url()], seed, region, &stop);
        v.wait_until(|s| s.connected).await;
    }
    let hook = WebhookReceiver::start(2).await;
    let sink = SmtpSink::start().await;
    let api = api_with(&db, |c| {
        c.min_interval_secs = 1;
        c.default_min_interval_secs = 1;
        c.alert_retry_base_ms = 100;
        c.alert_retry_max_secs = 1;
        c.smtp_url = sink.url().into();
    })
    .await;
    let key = sign_up_and_make_a_key(&api.0).await;
    let program = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        program
            .post(format!("{}{path}", api.0))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    for (kind, target) in [
        ("webhook", hook.url("/hook")),
        ("email", "owner@example.com".to_string()),
    ] {
        let r = post(
            "/v1/alert-channels",
            serde_json::json!({"kind": kind, "name": kind, "target": target}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let r = post(
        "/v1/websites",
        serde_json::json!({"url": format!("{base}/flap"), "interval_secs": 2, "timeout_ms": 1000}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let site = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();

    // Down for 8 s, up for 8 s: an incident opens and resolves within 40 s.
    eventually(40, "an incident opened and resolved", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM incidents WHERE website_id = $1 AND resolved_at IS NOT NULL",
        )
        .bind(site)
        .fetch_one(db.pool())
        .await
        .unwrap();
        (n >= 1).then_some(())
    })
    .await;
    // No more transitions: stop checking, let the outbox drain.
    stop.cancel();
    hub.stop().await;
    eventually(20, "every delivery finished", || async {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM alert_outbox WHERE state <> 'delivered'")
                .fetch_one(db.pool())
                .await
                .unwrap();
        (pending == 0).then_some(())
    })
    .await;
    let incidents: Vec<(i64, bool)> = sqlx::query_as(
        "SELECT id, resolved_at IS NOT NULL FROM incidents WHERE website_id = $1 ORDER BY id",
    )
    .bind(site)
    .fetch_all(db.pool())
    .await
    .unwrap();
    // What each receiver should have, in order: per incident, opened then
    // (if it resolved) resolved.
    let mut want = Vec::new();
    for (id, resolved) in &incidents {
        want.push((*id, "incident_opened".to_string()));
        if *resolved {
            want.push((*id, "incident_resolved".to_string()));
        }
    }
    // The webhook: dedupe by key, keep the first successful copy of each.
    let got = hook.received();
    assert_eq!(got.iter().filter(|r| r.status == 500).count(), 2);
    let mut keys = HashSet::new();
    let webhook: Vec<(i64, String)> = got
        .iter()
        .filter(|r| r.status == 200)
        .filter(|r| keys.insert(r.header("x-idempotency-key").unwrap().to_string()))
        .map(|r| {
            let b = r.json();
            (
                b["incident"]["id"].as_i64().unwrap(),
                b["event"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(webhook, want, "webhook, deduped: {got:#?}");
    // Email: dedupe by Message-ID.
    let mails = sink.mails();
    let mut ids = HashSet::new();
    let emails: Vec<String> = mails
        .iter()
        .filter(|m| ids.insert(m.header("message-id").unwrap()))
        .map(|m| m.header("subject").unwrap())
        .collect();
    assert_eq!(emails.len(), want.len(), "{emails:?}");
    for (subject, (_, event)) in emails.iter().zip(&want) {
        let prefix = if event == "incident_opened" {
            "DOWN: "
        } else {
            "UP: "
        };
        assert!(subject.starts_with(prefix), "{subject} for {event}");
    }
    api.1.cancel();
    sites_stop.cancel();
}
