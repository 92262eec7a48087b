//! A task whose validator disconnects or stays silent is replaced once,
//! with a new task id, and the round still completes.

use crate::common;

use std::time::Duration;

use common::*;
use protocol::{HubMessage, PublicKey};
use sqlx::Row;
use test_support::TestDb;
use tokio_util::sync::CancellationToken;

struct Setup {
    hub: TestHub,
    raw: RawClient,
    /// Stops the validators and the demo sites.
    stop: CancellationToken,
    site: store::WebsiteId,
}

/// Three real validators in one region and a hand-driven one alone in its
/// region: with "distinct regions first", every round includes the raw one.
async fn setup(db: &TestDb, deadline_ms: u64) -> Setup {
    let (base, sites_stop) = demo_sites(Default::default()).await;
    let mut s = settings(db);
    s.task_deadline_ms = deadline_ms;
    let hub = TestHub::start(s).await;
    let stop = CancellationToken::new();
    for i in 0..3 {
        let (h, _) = spawn_validator(&[hub.ws_url()], 20 + i, "eu-west", &stop);
        h.wait_until(|s| s.connected).await;
    }
    let (raw, _) = RawClient::login(&hub.ws_url(), key(99), "zz-lonely").await;
    // One round only: the next slot is a day away. (With a minute, the
    // slot boundary of website 1, which every fresh database gives this
    // site, fell inside the test about one run in six.)
    let site = add_site(db, &format!("{base}/up"), 86_400, 2_000, None).await;
    let stop_sites = stop.clone();
    tokio::spawn(async move {
        stop_sites.cancelled().await;
        sites_stop.cancel();
    });
    Setup {
        hub,
        raw,
        stop,
        site,
    }
}

async fn closed_round(db: &TestDb, site: store::WebsiteId) -> (String, i64, i64) {
    eventually(20, "the round to close", || async {
        let r = sqlx::query(
            "SELECT status, results_up, results_down FROM rounds
              WHERE website_id = $1 AND status <> 'open'",
        )
        .bind(site)
        .fetch_optional(db.pool())
        .await
        .unwrap()?;
        Some((
            r.get("status"),
            i64::from(r.get::<i32, _>("results_up")),
            i64::from(r.get::<i32, _>("results_down")),
        ))
    })
    .await
}

async fn assert_replaced(db: &TestDb, hub: &TestHub, site: store::WebsiteId, raw_task: uuid::Uuid) {
    let (status, up, down) = closed_round(db, site).await;
    assert_eq!((status.as_str(), up, down), ("up", 3, 0));
    let raw_key = PublicKey::from(&key(99)).to_base58();
    let ticks = sqlx::query(
        "SELECT t.task_id, v.public_key FROM ticks t JOIN validators v ON v.id = t.validator_id
          WHERE t.website_id = $1",
    )
    .bind(site)
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(ticks.len(), 3);
    for t in &ticks {
        assert_ne!(t.get::<String, _>("public_key"), raw_key);
        assert_ne!(t.get::<uuid::Uuid, _>("task_id"), raw_task, "a new task id");
    }
    assert_eq!(
        metric(&hub.state, "uptime_hub_tasks_replaced_total", &[]),
        1.0
    );
    assert_eq!(metric(&hub.state, "uptime_hub_tasks_sent_total", &[]), 4.0);
}

async fn first_task(raw: &mut RawClient) -> uuid::Uuid {
    raw.recv_until(|m| match m {
        HubMessage::Task(t) => Some(t.task_id),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_that_disconnects_mid_task_is_replaced() {
    let db = TestDb::new().await.unwrap();
    let Setup {
        hub,
        mut raw,
        stop,
        site,
    } = setup(&db, 10_000).await;
    let task = first_task(&mut raw).await;
    drop(raw); // gone mid-task, long before the 10 s deadline
    assert_replaced(&db, &hub, site, task).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), hub.stop())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_that_misses_the_deadline_is_replaced() {
    let db = TestDb::new().await.unwrap();
    let Setup {
        hub,
        mut raw,
        stop,
        site,
    } = setup(&db, 1_000).await;
    let task = first_task(&mut raw).await;
    // Stay connected and silent: the deadline passes.
    assert_replaced(&db, &hub, site, task).await;
    drop(raw);
    stop.cancel();
    hub.stop().await;
}
