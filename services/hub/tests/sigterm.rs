//! SIGTERM under load, on the real `hub` binary: the hub drains and exits 0;
//! every acknowledged result is in PostgreSQL; every result that was not
//! acknowledged is resent to the next hub and stored exactly once.

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use test_support::TestDb;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_hub(db: &TestDb, port: u16, id: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hub"))
        .arg("serve")
        .env("HUB_DATABASE_URL", &db.url)
        .env("HUB_LISTEN", format!("127.0.0.1:{port}"))
        .env("HUB_ID", id)
        .env("HUB_TOKEN_KEYS", TOKEN_KEYS)
        .env("HUB_MIN_INTERVAL_SECS", "1")
        .env("HUB_TASK_DEADLINE_MS", "20000")
        .env("HUB_SCHEDULER_TICK_MS", "50")
        .env("HUB_RELOAD_INTERVAL_MS", "200")
        .env("HUB_DRAIN_TIMEOUT_MS", "1000")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("hub binary starts")
}

async fn wait_ready(child: &mut Child, port: u16) {
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("hub exited before listening: {status}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("hub did not listen within 30 s");
}

async fn sigterm_and_wait(child: &mut Child) {
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: plain kill(2) on a child we own.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("hub exits within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "hub exit status {status}");
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
    let mut hub1 = spawn_hub(&db, port, "hub-a");
    wait_ready(&mut hub1, port).await;

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

    sigterm_and_wait(&mut hub1).await;
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
    let mut hub2 = spawn_hub(&db, port, "hub-b");
    wait_ready(&mut hub2, port).await;
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

    stop.cancel();
    for (_, j) in validators {
        tokio::time::timeout(Duration::from_secs(10), j)
            .await
            .expect("validator stops")
            .unwrap()
            .unwrap();
    }
    sigterm_and_wait(&mut hub2).await;
    sites_stop.cancel();
}
