//! Alert channels and deliveries, with real receivers on loopback: a
//! webhook endpoint (which can fail or stall on demand) and an SMTP sink.
//! Incidents come from rounds written as the hubs write them, applied as
//! the hubs apply them.

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use test_support::receivers::{Received, SmtpSink, WebhookReceiver};

use crate::common::{code, Api, Client};
use crate::reads::seed_round;

/// Fast retries, a short attempt time limit.
async fn fast_api(edit: impl FnOnce(&mut api::config::Config)) -> Api {
    Api::start_with(|c| {
        c.alert_retry_base_ms = 50;
        c.alert_retry_max_secs = 1;
        c.alert_timeout_ms = 1_000;
        c.alert_lease_secs = 6;
        edit(c);
    })
    .await
}

async fn channel(c: &Client, body: Value) -> (i64, Option<String>) {
    let (s, b) = c.post("/v1/alert-channels", body).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    (
        b["channel"]["id"].as_i64().unwrap(),
        b["secret"].as_str().map(str::to_string),
    )
}

/// Seeds `statuses` (oldest first, a minute apart, ending a minute ago)
/// and applies them as a hub does after closing rounds.
async fn rounds(api: &Api, site: i64, statuses: &[&str]) -> (i32, i32) {
    let n = statuses.len() as i64;
    for (i, s) in statuses.iter().enumerate() {
        seed_round(api, site, s, 60 * (n - i as i64)).await;
    }
    api.db
        .store
        .apply_round_decisions(&[store::WebsiteId(site)], 2, 2)
        .await
        .unwrap()
}

/// The distinct idempotency keys of the requests to `path` that got a 200,
/// in the order of their first success, with the event of each.
fn delivered(got: &[Received], path: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in got.iter().filter(|r| r.path == path && r.status == 200) {
        let key = r.header("x-idempotency-key").unwrap().to_string();
        if !out.iter().any(|(k, _)| *k == key) {
            out.push((key, r.header("x-alert-event").unwrap().to_string()));
        }
    }
    out
}

fn verify(secret: &str, r: &Received) -> bool {
    let sig = r.header("x-signature").expect("X-Signature");
    let mut t = None;
    let mut v1 = None;
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_string()),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (t, v1) = (t.expect("t="), v1.expect("v1="));
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(format!("{t}.{}", r.body).as_bytes());
    m.verify_slice(&hex::decode(v1).unwrap()).is_ok()
}

#[tokio::test]
async fn channels_are_checked_and_url_targets_are_not_shown() {
    let api = Api::start_with(|c| c.allow_private_targets = false).await;
    let c = api.owner("a@example.com").await;
    let (s, b) = c
        .post(
            "/v1/alert-channels",
            json!({"kind": "slack", "name": "team", "target": "https://hooks.example.com/services/T0/B0/secret"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert!(b["secret"].is_null(), "only webhooks have a secret: {b}");
    assert_eq!(b["channel"]["target"], "https://hooks.example.com/…");
    assert_eq!(
        b["channel"]["events"],
        json!(["incident_opened", "incident_resolved"])
    );
    let (s, b) = c
        .post(
            "/v1/alert-channels",
            json!({"kind": "webhook", "name": "hook", "target": "https://example.com/h",
                   "events": ["latency_high", "incident_opened", "incident_opened"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert!(b["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(
        b["channel"]["events"],
        json!(["incident_opened", "latency_high"])
    );
    for (body, field) in [
        (
            json!({"kind": "webhook", "name": "x", "target": "http://127.0.0.1:9/h"}),
            "target",
        ),
        (
            json!({"kind": "webhook", "name": "x", "target": "http://10.1.2.3/h"}),
            "target",
        ),
        (
            json!({"kind": "webhook", "name": "x", "target": "ftp://example.com/"}),
            "target",
        ),
        (
            json!({"kind": "webhook", "name": "", "target": "https://example.com/"}),
            "name",
        ),
        (
            json!({"kind": "webhook", "name": "x", "target": "https://example.com/", "events": ["site_exploded"]}),
            "events",
        ),
        (
            json!({"kind": "webhook", "name": "x", "target": "https://example.com/", "events": []}),
            "events",
        ),
        (
            json!({"kind": "email", "name": "x", "target": "a@example.com"}),
            "kind",
        ),
    ] {
        let (s, b) = c.post("/v1/alert-channels", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {b}");
        assert_eq!(
            (code(&b), b["error"]["field"].as_str()),
            ("invalid_field", Some(field)),
            "{body}"
        );
    }
    let (s, b) = c
        .post(
            "/v1/alert-channels",
            json!({"kind": "pager", "name": "x", "target": "x"}),
        )
        .await;
    assert!(s.is_client_error(), "{b}");
    // A read-only key may list but not add.
    let key = c.new_key("read").await;
    let reader = Client::with_key(&api.base, &key);
    let (s, b) = reader.get("/v1/alert-channels").await;
    assert_eq!(
        (s, b["items"].as_array().unwrap().len()),
        (StatusCode::OK, 2)
    );
    let (s, _) = reader
        .post(
            "/v1/alert-channels",
            json!({"kind": "slack", "name": "x", "target": "https://example.com/"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A channel can be renamed, narrowed, disabled, removed.
    let id = b["items"][0]["id"].as_i64().unwrap();
    let (s, b) = c
        .call(
            Method::PATCH,
            &format!("/v1/alert-channels/{id}"),
            Some(json!({"name": "renamed", "events": ["incident_resolved"], "enabled": false})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (&b["name"], &b["events"], &b["enabled"]),
        (
            &json!("renamed"),
            &json!(["incident_resolved"]),
            &json!(false)
        )
    );
    let (s, _) = c
        .call(Method::DELETE, &format!("/v1/alert-channels/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = c.get(&format!("/v1/alert-channels/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // At most MAX_CHANNELS per account.
    for i in 1..api::routes::alerts::MAX_CHANNELS {
        channel(
            &c,
            json!({"kind": "discord", "name": format!("d{i}"), "target": "https://example.com/d"}),
        )
        .await;
    }
    let (s, b) = c
        .post(
            "/v1/alert-channels",
            json!({"kind": "discord", "name": "one too many", "target": "https://example.com/d"}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "too_many_channels"));
    api.stop().await;
}

#[tokio::test]
async fn an_incident_reaches_each_channel_once_per_transition_in_order_after_failures() {
    // The receiver fails the first two requests it gets.
    let rx = WebhookReceiver::start(2).await;
    let api = fast_api(|_| {}).await;
    let c = api.owner("a@example.com").await;
    let site = c.new_site("http://127.0.0.1:8089/flappy").await;
    let (hook, secret) = channel(
        &c,
        json!({"kind": "webhook", "name": "hook", "target": rx.url("/hook")}),
    )
    .await;
    channel(
        &c,
        json!({"kind": "slack", "name": "slack", "target": rx.url("/slack")}),
    )
    .await;
    channel(
        &c,
        json!({"kind": "discord", "name": "discord", "target": rx.url("/discord")}),
    )
    .await;
    // Another account's channel hears nothing of this site.
    let other = api.owner("b@example.com").await;
    channel(
        &other,
        json!({"kind": "slack", "name": "theirs", "target": rx.url("/other")}),
    )
    .await;

    assert_eq!(
        rounds(&api, site, &["up", "down", "down", "up", "up"]).await,
        (1, 1)
    );
    let got = rx
        .wait_until(Duration::from_secs(20), |g| {
            ["/hook", "/slack", "/discord"]
                .iter()
                .all(|p| delivered(g, p).len() == 2)
        })
        .await;
    for path in ["/hook", "/slack", "/discord"] {
        let d = delivered(&got, path);
        let events: Vec<&str> = d.iter().map(|(_, e)| e.as_str()).collect();
        assert_eq!(
            events,
            ["incident_opened", "incident_resolved"],
            "{path}: {got:#?}"
        );
        // "resolved" was never sent, even once, before "opened" got through.
        let first_ok_open = got
            .iter()
            .position(|r| r.path == path && r.status == 200)
            .unwrap();
        let first_resolved = got
            .iter()
            .position(|r| r.path == path && r.header("x-alert-event") == Some("incident_resolved"))
            .unwrap();
        assert!(first_ok_open < first_resolved, "{path}");
    }
    assert!(got.iter().all(|r| r.path != "/other"));
    assert_eq!(got.iter().filter(|r| r.status == 500).count(), 2);

    // The webhook's body: the incident, the site, the key; signed.
    let hooks: Vec<&Received> = got.iter().filter(|r| r.path == "/hook").collect();
    let secret = secret.unwrap();
    assert!(
        hooks.iter().all(|r| verify(&secret, r)),
        "every attempt is signed"
    );
    let mut forged = hooks[0].clone();
    forged.body = forged.body.replace("incident", "incidenT");
    assert!(!verify(&secret, &forged));
    let opened = hooks
        .iter()
        .find(|r| r.status == 200 && r.header("x-alert-event") == Some("incident_opened"))
        .unwrap()
        .json();
    assert_eq!(opened["site"]["id"].as_i64(), Some(site));
    assert_eq!(
        opened["incident"]["regions"][0]["region"], "eu-west",
        "{opened}"
    );
    assert_eq!(
        opened["idempotency_key"].as_str(),
        hooks
            .iter()
            .find(|r| r.status == 200)
            .and_then(|r| r.header("x-idempotency-key"))
    );
    let resolved = hooks
        .iter()
        .find(|r| r.header("x-alert-event") == Some("incident_resolved"))
        .unwrap()
        .json();
    assert_eq!(resolved["incident"]["id"], opened["incident"]["id"]);
    assert!(resolved["incident"]["duration_secs"].as_f64().unwrap() > 0.0);
    // Slack and Discord get their own shapes.
    let slack = got
        .iter()
        .find(|r| r.path == "/slack" && r.status == 200)
        .unwrap()
        .json();
    assert!(
        slack["text"].as_str().unwrap().starts_with("DOWN: "),
        "{slack}"
    );
    let discord = got
        .iter()
        .find(|r| r.path == "/discord" && r.status == 200)
        .unwrap()
        .json();
    assert!(
        discord["content"].as_str().unwrap().starts_with("DOWN: "),
        "{discord}"
    );
    assert_eq!(discord["allowed_mentions"]["parse"], json!([]));

    // The log: six deliveries, all delivered; the failed attempts counted.
    // A receiver answers before the worker records the delivery: wait for
    // the records.
    let mut log = c.all_pages("/v1/alert-deliveries?limit=4", 4).await;
    for _ in 0..100 {
        if log.len() == 6 && log.iter().all(|d| d["state"] == "delivered") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        log = c.all_pages("/v1/alert-deliveries?limit=4", 4).await;
    }
    assert_eq!(log.len(), 6, "{log:#?}");
    assert!(log.iter().all(|d| d["state"] == "delivered"), "{log:#?}");
    let attempts: i64 = log.iter().map(|d| d["attempts"].as_i64().unwrap()).sum();
    assert_eq!(attempts, 8, "six deliveries, two failed attempts: {log:#?}");
    let (_, only) = c
        .get(&format!("/v1/alert-deliveries?channel_id={hook}"))
        .await;
    assert_eq!(only["items"].as_array().unwrap().len(), 2);
    // Applying again sends nothing more.
    assert_eq!(rounds(&api, site, &[]).await, (0, 0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received().len(), got.len());
    api.stop().await;
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_ends_dead_and_the_next_transition_follows() {
    let rx = WebhookReceiver::start(usize::MAX).await;
    let api = fast_api(|c| c.alert_max_attempts = 3).await;
    let c = api.owner("a@example.com").await;
    let site = c.new_site("http://127.0.0.1:8089/down").await;
    channel(
        &c,
        json!({"kind": "webhook", "name": "hook", "target": rx.url("/hook")}),
    )
    .await;
    rounds(&api, site, &["down", "down", "up", "up"]).await;
    let got = rx
        .wait_until(Duration::from_secs(20), |g| g.len() >= 6)
        .await;
    let events: Vec<&str> = got
        .iter()
        .map(|r| r.header("x-alert-event").unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "incident_opened",
            "incident_opened",
            "incident_opened",
            "incident_resolved",
            "incident_resolved",
            "incident_resolved"
        ],
        "opened is given up after 3 attempts before resolved is tried"
    );
    let log = api_wait(&c, |l| l.iter().all(|d| d["state"] == "dead")).await;
    assert_eq!(log.len(), 2);
    for d in &log {
        assert_eq!(
            (d["attempts"].as_i64(), d["last_status"].as_i64()),
            (Some(3), Some(500)),
            "{d}"
        );
        assert!(d["last_error"].as_str().unwrap().contains("500"), "{d}");
    }
    api.stop().await;
}

/// The delivery log once `pred` holds (10 s at most).
async fn api_wait(c: &Client, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..200 {
        let log = c.all_pages("/v1/alert-deliveries?limit=100", 100).await;
        if pred(&log) {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.all_pages("/v1/alert-deliveries?limit=100", 100).await
}

#[tokio::test]
async fn a_receiver_slower_than_the_time_limit_gets_the_alert_again_with_the_same_key() {
    let rx = WebhookReceiver::start(0).await;
    // The first request is answered after 1.5 s; the sender gives up at 1 s
    // and retries: the receiver has the alert twice, with one key.
    rx.slow_next(1, Duration::from_millis(1_500));
    let api = fast_api(|_| {}).await;
    let c = api.owner("a@example.com").await;
    let site = c.new_site("http://127.0.0.1:8089/slow").await;
    channel(
        &c,
        json!({"kind": "webhook", "name": "hook", "target": rx.url("/hook")}),
    )
    .await;
    rounds(&api, site, &["down", "down"]).await;
    let got = rx
        .wait_until(Duration::from_secs(10), |g| g.len() >= 2)
        .await;
    assert_eq!(got.len(), 2, "{got:#?}");
    let keys: Vec<&str> = got
        .iter()
        .map(|r| r.header("x-idempotency-key").unwrap())
        .collect();
    assert_eq!(keys[0], keys[1]);
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for k in keys {
        *by_key.entry(k).or_default() += 1;
    }
    assert_eq!(by_key.len(), 1, "deduped by key: one alert");
    let log = api_wait(&c, |l| l.iter().all(|d| d["state"] == "delivered")).await;
    assert_eq!(log[0]["attempts"], 2, "{log:#?}");
    assert!(
        log[0]["last_error"].is_null(),
        "the delivered attempt clears the error: {log:#?}"
    );
    api.stop().await;
}

#[tokio::test]
async fn email_alerts_go_through_smtp_with_the_key_as_message_id() {
    let sink = SmtpSink::start().await;
    let api = fast_api(|c| {
        c.smtp_url = sink.url().into();
        c.smtp_from = "Uptime <alerts@example.com>".into();
    })
    .await;
    let c = api.owner("a@example.com").await;
    let site = c.new_site("http://127.0.0.1:8089/mail").await;
    let (s, b) = c
        .post(
            "/v1/alert-channels",
            json!({"kind": "email", "name": "me", "target": "not an address"}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("target"))
    );
    let (id, _) = channel(
        &c,
        json!({"kind": "email", "name": "me", "target": "owner@example.com"}),
    )
    .await;
    // The test call sends at once and says how it went.
    let (s, t) = c
        .post(&format!("/v1/alert-channels/{id}/test"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(
        (t["delivered"].as_bool(), t["status"].as_i64()),
        (Some(true), Some(250)),
        "{t}"
    );
    rounds(&api, site, &["down", "down"]).await;
    let mails = sink
        .wait_until(Duration::from_secs(10), |m| m.len() >= 2)
        .await;
    assert_eq!(mails.len(), 2);
    assert!(
        mails[0].header("subject").unwrap().starts_with("TEST"),
        "{:?}",
        mails[0]
    );
    let m = &mails[1];
    assert_eq!(
        (m.from.as_str(), m.to.as_slice()),
        ("alerts@example.com", &["owner@example.com".to_string()][..])
    );
    assert!(m.header("subject").unwrap().starts_with("DOWN: "), "{m:?}");
    let log = api_wait(&c, |l| {
        l.len() == 2 && l.iter().all(|d| d["state"] == "delivered")
    })
    .await;
    let key = log[0]["idempotency_key"].as_str().unwrap();
    assert_eq!(log[0]["event"], "incident_opened");
    assert_eq!(
        m.header("message-id").unwrap(),
        format!("<{key}@uptime-alerts>")
    );
    api.stop().await;
}

#[tokio::test]
async fn the_test_call_reports_a_failing_receiver_and_a_refused_address() {
    let rx = WebhookReceiver::start(1).await;
    let api = fast_api(|_| {}).await;
    let c = api.owner("a@example.com").await;
    let (id, _) = channel(
        &c,
        json!({"kind": "webhook", "name": "hook", "target": rx.url("/t")}),
    )
    .await;
    let (s, t) = c
        .post(&format!("/v1/alert-channels/{id}/test"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (t["delivered"].as_bool(), t["status"].as_i64()),
        (Some(false), Some(500)),
        "{t}"
    );
    let (_, t) = c
        .post(&format!("/v1/alert-channels/{id}/test"), json!({}))
        .await;
    assert_eq!(t["delivered"], true, "{t}");
    assert_eq!(rx.received()[1].json()["event"], "test");
    // The address guard also applies at send time: a channel stored while
    // private targets were allowed is refused by a server that refuses
    // them, without the address in the error.
    let strict = api::alerts::Deliverer::new(&api.state.settings.alerts, false).unwrap();
    let (_, me) = c.get("/v1/account").await;
    let account = store::AccountId(me["account"]["id"].as_i64().unwrap());
    let a = api
        .db
        .store
        .claim_test_alert(account, store::ChannelId(id), "{}", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let attempt = strict.deliver(&a).await;
    assert!(!attempt.delivered && attempt.permanent, "{attempt:?}");
    assert!(
        !attempt.error.as_deref().unwrap().contains("127.0.0.1"),
        "{attempt:?}"
    );
    api.stop().await;
}

#[tokio::test]
async fn a_site_carries_its_latency_alert_setting() {
    let api = Api::start().await;
    let c = api.owner("a@example.com").await;
    let (s, site) = c
        .post(
            "/v1/websites",
            json!({"url": "http://127.0.0.1:8089/a", "latency_threshold_ms": 800}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{site}");
    assert_eq!(
        (&site["latency_threshold_ms"], &site["latency_alert_rounds"]),
        (&json!(800), &json!(3))
    );
    let id = site["id"].as_i64().unwrap();
    for (body, field) in [
        (json!({"latency_threshold_ms": 0}), "latency_threshold_ms"),
        (
            json!({"latency_threshold_ms": 120_001}),
            "latency_threshold_ms",
        ),
        (json!({"latency_alert_rounds": 0}), "latency_alert_rounds"),
        (json!({"latency_alert_rounds": 101}), "latency_alert_rounds"),
    ] {
        let (s, b) = c
            .call(
                Method::PATCH,
                &format!("/v1/websites/{id}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (s, b["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{body}: {b}"
        );
    }
    let (s, b) = c
        .call(
            Method::PATCH,
            &format!("/v1/websites/{id}"),
            Some(json!({"latency_alert_rounds": 5})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (&b["latency_threshold_ms"], &b["latency_alert_rounds"]),
        (&json!(800), &json!(5)),
        "absent keeps"
    );
    let (_, b) = c
        .call(
            Method::PATCH,
            &format!("/v1/websites/{id}"),
            Some(json!({"latency_threshold_ms": null})),
        )
        .await;
    assert!(b["latency_threshold_ms"].is_null(), "null clears: {b}");
    api.stop().await;
}
