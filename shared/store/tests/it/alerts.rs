//! The alert outbox: rows written by the transitions themselves, claimed
//! with a lease, in order per (channel, subject), finished only by the
//! claim's holder.

use std::collections::HashSet;
use std::time::Duration;

use store::{
    AccountId, AlertOutcome, ChannelKind, NewAccount, NewChannel, NewChannelOutcome, Store,
    WebsiteId,
};

use crate::{db, open_round, past_ms, store_ticks, tick, validator, website};

async fn account(store: &Store, email: &str) -> AccountId {
    store
        .create_account(&NewAccount {
            email,
            password_hash: "x",
            max_sites: 10,
            min_interval_secs: 60,
        })
        .await
        .unwrap()
        .unwrap()
        .id
}

/// A website of `account`.
async fn owned_site(store: &Store, account: AccountId, n: u32) -> WebsiteId {
    let w = website(store, n).await.id;
    sqlx::query("UPDATE websites SET account_id = $2, name = 'site' WHERE id = $1")
        .bind(w)
        .bind(account)
        .execute(store.pool())
        .await
        .unwrap();
    w
}

async fn channel(store: &Store, account: AccountId, kind: ChannelKind, events: &[&str]) -> i64 {
    let events: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    match store
        .create_alert_channel(
            account,
            &NewChannel {
                kind,
                name: "c",
                target: "https://example.com/hook",
                secret: (kind == ChannelKind::Webhook).then_some("whsec_x"),
                events: &events,
            },
            20,
        )
        .await
        .unwrap()
    {
        NewChannelOutcome::Created(c) => c.id.0,
        NewChannelOutcome::TooMany => panic!("too many"),
    }
}

fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(past_ms)
}

/// Decides the round of `site` at slot `i` with one result per
/// `(region, up, latency_ms)`, and applies it.
async fn round(store: &Store, site: WebsiteId, i: i64, results: &[(&str, bool, i32)]) {
    let r = open_round(store, site, t0() + i * 60_000).await;
    let mut ticks = Vec::new();
    for (n, (region, up, latency)) in results.iter().enumerate() {
        let v = validator(store, &format!("val-{region}-{n}"), region).await;
        let mut t = tick(&r, v, *up);
        t.latency_ms = *latency;
        ticks.push(t);
    }
    store_ticks(store, &ticks).await;
    store.close_rounds(&[r.round_id], "h1", &[]).await.unwrap();
    store.apply_round_decisions(&[site], 2, 2).await.unwrap();
}

const UP: &[(&str, bool, i32)] = &[("eu-west", true, 40), ("us-east", true, 60)];
const DOWN: &[(&str, bool, i32)] = &[("eu-west", false, 0), ("us-east", false, 0)];

/// `(channel, event, subject)` of every outbox row, in id order.
async fn outbox(store: &Store) -> Vec<(i64, String, String)> {
    sqlx::query_as("SELECT channel_id, event, subject FROM alert_outbox ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn transitions_write_one_row_per_subscribed_enabled_channel() {
    let db = db().await;
    let s = &db.store;
    let a = account(s, "a@example.com").await;
    let site = owned_site(s, a, 1).await;
    let hook = channel(
        s,
        a,
        ChannelKind::Webhook,
        &["incident_opened", "incident_resolved"],
    )
    .await;
    let only_resolved = channel(s, a, ChannelKind::Slack, &["incident_resolved"]).await;
    let disabled = channel(s, a, ChannelKind::Discord, &["incident_opened"]).await;
    sqlx::query("UPDATE alert_channels SET enabled = false WHERE id = $1")
        .bind(disabled)
        .execute(s.pool())
        .await
        .unwrap();
    // Another account's channel, and a site without an account.
    let b = account(s, "b@example.com").await;
    channel(s, b, ChannelKind::Webhook, &["incident_opened"]).await;
    let cli_site = website(s, 2).await.id;

    round(s, site, 0, DOWN).await;
    assert!(outbox(s).await.is_empty(), "one down round alerts nobody");
    round(s, site, 1, DOWN).await;
    round(s, cli_site, 0, DOWN).await;
    round(s, cli_site, 1, DOWN).await;
    let incident: i64 = sqlx::query_scalar("SELECT id FROM incidents WHERE website_id = $1")
        .bind(site)
        .fetch_one(s.pool())
        .await
        .unwrap();
    let subject = format!("incident:{incident}");
    assert_eq!(
        outbox(s).await,
        vec![(hook, "incident_opened".into(), subject.clone())]
    );
    round(s, site, 2, UP).await;
    round(s, site, 3, UP).await;
    assert_eq!(
        outbox(s).await,
        vec![
            (hook, "incident_opened".into(), subject.clone()),
            (hook, "incident_resolved".into(), subject.clone()),
            (only_resolved, "incident_resolved".into(), subject),
        ]
    );
    let payload: String = sqlx::query_scalar(
        "SELECT payload::text FROM alert_outbox WHERE event = 'incident_opened'",
    )
    .fetch_one(s.pool())
    .await
    .unwrap();
    let p: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(p["site"]["id"].as_i64(), Some(site.0));
    assert_eq!(p["incident"]["id"].as_i64(), Some(incident));
    assert_eq!(p["incident"]["regions"].as_array().unwrap().len(), 2, "{p}");
}

#[tokio::test]
async fn claims_hold_a_lease_keep_order_per_subject_and_only_the_holder_finishes() {
    let db = db().await;
    let s = &db.store;
    let a = account(s, "a@example.com").await;
    let site = owned_site(s, a, 1).await;
    channel(
        s,
        a,
        ChannelKind::Webhook,
        &["incident_opened", "incident_resolved"],
    )
    .await;
    for (i, r) in [DOWN, DOWN, UP, UP].into_iter().enumerate() {
        round(s, site, i as i64, r).await;
    }
    let lease = Duration::from_millis(300);
    let first = s.claim_alerts(lease, 10).await.unwrap();
    assert_eq!(first.len(), 1, "resolved waits for opened: {first:?}");
    assert_eq!(
        (first[0].event.as_str(), first[0].attempts),
        ("incident_opened", 1)
    );
    assert!(
        s.claim_alerts(lease, 10).await.unwrap().is_empty(),
        "leased"
    );
    // The lease runs out: another worker takes the row; the first one's
    // outcome no longer counts.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = s.claim_alerts(lease, 10).await.unwrap();
    assert_eq!(
        (again.len(), again[0].id, again[0].attempts),
        (1, first[0].id, 2)
    );
    let delivered = AlertOutcome::Delivered { status: Some(200) };
    assert!(!s
        .finish_alert(first[0].id, first[0].claim_token, &delivered)
        .await
        .unwrap());
    // A retry puts it back for later; resolved still waits.
    let retry = AlertOutcome::Retry {
        after: Duration::from_millis(200),
        error: "the receiver answered 500".into(),
        status: Some(500),
    };
    assert!(s
        .finish_alert(again[0].id, again[0].claim_token, &retry)
        .await
        .unwrap());
    assert!(
        s.claim_alerts(lease, 10).await.unwrap().is_empty(),
        "backing off"
    );
    assert!(s.next_alert_due().await.unwrap().unwrap() <= Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let third = s.claim_alerts(lease, 10).await.unwrap();
    assert_eq!((third.len(), third[0].attempts), (1, 3));
    assert!(s
        .finish_alert(third[0].id, third[0].claim_token, &delivered)
        .await
        .unwrap());
    let next = s.claim_alerts(lease, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event, "incident_resolved");
    assert_eq!(next[0].secret.as_deref(), Some("whsec_x"));
    assert!(
        !format!("{:?}", next[0]).contains("whsec_x"),
        "Debug hides the secret"
    );
    let dead = AlertOutcome::Dead {
        error: "x".repeat(2_000),
        status: None,
    };
    assert!(s
        .finish_alert(next[0].id, next[0].claim_token, &dead)
        .await
        .unwrap());
    assert_eq!(s.alert_backlog().await.unwrap(), (0, 1));
    assert_eq!(s.next_alert_due().await.unwrap(), None);
    let log = s.alert_deliveries(a, None, None, 10).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0].state.as_str(), log[1].state.as_str()),
        ("dead", "delivered")
    );
    assert_eq!(
        log[0].last_error.as_ref().unwrap().chars().count(),
        500,
        "clipped"
    );
    assert_eq!(log[1].attempts, 3);
    // Finished rows go after their keep time.
    assert_eq!(
        s.clean_alert_outbox(Duration::from_secs(3600), Duration::from_secs(3600), 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.clean_alert_outbox(Duration::ZERO, Duration::from_secs(3600), 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.alert_deliveries(a, None, None, 10).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn concurrent_workers_never_claim_the_same_row() {
    let db = db().await;
    let s = &db.store;
    let a = account(s, "a@example.com").await;
    let ch = channel(s, a, ChannelKind::Webhook, &["incident_opened"]).await;
    sqlx::query(
        "INSERT INTO alert_outbox (channel_id, account_id, event, subject, payload)
         SELECT $1, $2, CASE WHEN g % 2 = 0 THEN 'incident_opened' ELSE 'incident_resolved' END,
                'incident:' || (g / 2), '{}' FROM generate_series(1, 300) g
          ORDER BY g",
    )
    .bind(ch)
    .bind(a)
    .execute(s.pool())
    .await
    .unwrap();
    // Rows pair up by subject (incident:N, opened then resolved): a
    // worker delivers what it claims and then claims more, so a row is
    // only ever claimed once the row before it in its subject is done.
    let done = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (s, done) = (s.clone(), done.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut idle = 0;
                while idle < 3 {
                    let got = s.claim_alerts(Duration::from_secs(60), 7).await.unwrap();
                    if got.is_empty() {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    idle = 0;
                    for a in &got {
                        let id: i64 = a.id.0;
                        // The earlier row of this subject (id - 1 when this
                        // one is a resolve) must be delivered already.
                        if a.event == "incident_resolved" && id > 1 {
                            let earlier = sqlx::query_scalar::<_, String>(
                                "SELECT state FROM alert_outbox WHERE subject = (SELECT subject FROM alert_outbox WHERE id = $1) AND id < $1",
                            )
                            .bind(id)
                            .fetch_optional(s.pool())
                            .await
                            .unwrap();
                            if let Some(st) = earlier {
                                assert_eq!(st, "delivered", "row {id} claimed before its subject's earlier row");
                            }
                        }
                        let ok = AlertOutcome::Delivered { status: Some(200) };
                        assert!(s.finish_alert(a.id, a.claim_token, &ok).await.unwrap());
                        done.lock().unwrap().insert(id);
                    }
                    mine.extend(got.iter().map(|a| a.id));
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (300, 300));
    assert_eq!(done.lock().unwrap().len(), 300);
}

#[tokio::test]
async fn latency_and_regional_degradation_alerts_open_and_close() {
    let db = db().await;
    let s = &db.store;
    let a = account(s, "a@example.com").await;
    let site = owned_site(s, a, 1).await;
    let ch = channel(
        s,
        a,
        ChannelKind::Webhook,
        &[
            "degradation_opened",
            "degradation_ended",
            "latency_high",
            "latency_normal",
        ],
    )
    .await;
    sqlx::query(
        "UPDATE websites SET latency_threshold_ms = 100, latency_alert_rounds = 2 WHERE id = $1",
    )
    .bind(site)
    .execute(s.pool())
    .await
    .unwrap();
    let slow: &[(&str, bool, i32)] = &[("eu-west", true, 500), ("us-east", true, 700)];
    let one_region_down: &[(&str, bool, i32)] = &[
        ("eu-west", true, 40),
        ("us-east", true, 60),
        ("ap-south", false, 0),
    ];
    round(s, site, 0, slow).await;
    assert!(outbox(s).await.is_empty(), "one slow round is not enough");
    round(s, site, 1, DOWN).await; // a down round leaves the streak as it is
    round(s, site, 2, slow).await;
    round(s, site, 3, slow).await; // still slow: no second alert
    round(s, site, 4, one_region_down).await; // fast again; ap-south down (1)
    round(s, site, 5, one_region_down).await; // ap-south down (2): degraded
    round(s, site, 6, UP).await; // ap-south has no result: still degraded
    let all_three: &[(&str, bool, i32)] = &[
        ("eu-west", true, 40),
        ("us-east", true, 60),
        ("ap-south", true, 50),
    ];
    round(s, site, 7, all_three).await;
    let events: Vec<String> = outbox(s)
        .await
        .into_iter()
        .map(|(c, e, _)| {
            assert_eq!(c, ch);
            e
        })
        .collect();
    assert_eq!(
        events,
        [
            "latency_high",
            "latency_normal",
            "degradation_opened",
            "degradation_ended"
        ]
    );
    let p: String =
        sqlx::query_scalar("SELECT payload::text FROM alert_outbox WHERE event = 'latency_high'")
            .fetch_one(s.pool())
            .await
            .unwrap();
    let p: serde_json::Value = serde_json::from_str(&p).unwrap();
    assert_eq!(
        (
            p["latency"]["median_ms"].as_f64(),
            p["latency"]["threshold_ms"].as_i64()
        ),
        (Some(600.0), Some(100)),
        "{p}"
    );
}
