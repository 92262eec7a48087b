//! SIGTERM under load, on the real `hub` binary: the hub drains and exits 0;
//! every acknowledged result is in PostgreSQL; every result that was not
//! acknowledged is resent to the next hub and stored exactly once.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use test_support::TestDb;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A one-second drain: shorter than the slow checks below.
fn env() -> Vec<(&'static str, String)> {
    vec![
        ("HUB_DRAIN_TIMEOUT_MS", "1000".into()),
        ("HUB_RELOAD_INTERVAL_MS", "200".into()),
    ]
}

async fn stored_task_ids(db: &TestDb) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT task_id FROM ticks")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_result_and_stores_resends_once() {
    let db = TestDb::new().await.unwrap();
    let (base, sites_stop) = demo_sites(Default::default()).await;
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let hub1 = HubProc::start(&db, "hub-a", port, &env()).await;

    let stop = CancellationToken::new();
    let validators: Vec<_> = ["eu-west", "us-east", "ap-south"]
        .iter()
        .enumerate()
        .map(|(i, r)| spawn_validator(std::slice::from_ref(&url), 40 + i as u8, r, &stop))
        .collect();
    for (v, _) in &validators {
        v.wait_until(|s| s.connected).await;
    }
    for _ in 0..20 {
        add_site(&db, &format!("{base}/up"), 1, 2_000, None).await;
    }
    // Checks that outlast the hub's 1 s drain: their results cannot be
    // acknowledged by this hub and must reach the next one before their
    // deadline (the interval, 20 s). Their first rounds start at once.
    for _ in 0..10 {
        add_site(&db, &format!("{base}/slow?ms=6000"), 20, 8_000, None).await;
    }
    for (v, _) in &validators {
        tokio::time::timeout(
            Duration::from_secs(30),
            v.wait_until(|s| s.acks_stored >= 40),
        )
        .await
        .expect("results flow before SIGTERM");
    }

    hub1.sigterm().await;
    // Let the checks still running finish: their results wait, unacknowledged.
    for (v, _) in &validators {
        tokio::time::timeout(Duration::from_secs(30), v.wait_until(|s| s.in_flight == 0))
            .await
            .expect("checks finish");
    }
    let acked_before: HashSet<Uuid> = validators
        .iter()
        .flat_map(|(v, _)| v.acked_task_ids())
        .collect();
    let pending_at_stop: HashSet<Uuid> = validators
        .iter()
        .flat_map(|(v, _)| v.pending_task_ids())
        .collect();
    let stored: HashSet<Uuid> = stored_task_ids(&db).await.into_iter().collect();
    let lost: Vec<_> = acked_before.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    assert!(acked_before.len() >= 120);
    assert!(
        !pending_at_stop.is_empty(),
        "the test must leave results unacknowledged at SIGTERM"
    );
    eprintln!(
        "acked before SIGTERM: {}, pending at stop: {}",
        acked_before.len(),
        pending_at_stop.len()
    );

    // The next hub takes over on the same address; no new rounds, so every
    // validator can empty its pending results.
    sqlx::query("UPDATE websites SET enabled = false")
        .execute(db.pool())
        .await
        .unwrap();
    let hub2 = HubProc::start(&db, "hub-b", port, &env()).await;
    for (v, _) in &validators {
        tokio::time::timeout(
            Duration::from_secs(60),
            v.wait_until(|s| s.connected && s.pending == 0 && s.in_flight == 0),
        )
        .await
        .expect("every pending result is acknowledged by the next hub");
    }

    let ticks = stored_task_ids(&db).await;
    let stored: HashSet<Uuid> = ticks.iter().copied().collect();
    assert_eq!(stored.len(), ticks.len(), "each task stored once");
    let missing: Vec<_> = pending_at_stop.difference(&stored).collect();
    assert!(missing.is_empty(), "resent but not stored: {missing:?}");
    let acked_all: HashSet<Uuid> = validators
        .iter()
        .flat_map(|(v, _)| v.acked_task_ids())
        .collect();
    assert_eq!(acked_all, stored, "stored exactly what was acknowledged");
    for (v, _) in &validators {
        assert_eq!(
            v.stats().acks_rejected_total(),
            0,
            "no result was lost to a deadline"
        );
    }

    stop_validators(&stop, validators).await;
    hub2.sigterm().await;
    sites_stop.cancel();
}
