//! Hub-driven rebalancing: a hub joins a cluster whose validators all sit
//! on the first hub (the load balancer had nowhere else to put them), and
//! validators move until both hubs are near the mean, without losing a
//! result and without bouncing back.

use crate::common;

use std::time::{Duration, Instant};

use common::balancer::Balancer;
use common::*;
use test_support::{TestDb, TestRedis};
use tokio_util::sync::CancellationToken;

const VALIDATORS: usize = 40;
/// `HUB_REBALANCE_TOLERANCE`'s default.
const TOLERANCE: f64 = 0.2;
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

fn hub_settings(db: &TestDb, redis: &TestRedis, id: &str, rebalance: bool) -> hub::Config {
    let mut s = settings(db);
    s.hub_id = id.into();
    s.redis_url = redis.url.clone().into();
    s.redis_prefix = redis.prefix.clone();
    s.announce_interval_ms = 200;
    s.rebalance = rebalance;
    // Forty validators over two hubs: with the default of 10 above the
    // mean, hub A would stop at about 30 and leave hub B 10.
    s.rebalance_min_excess = 4;
    // Every validator here connects from 127.0.0.1.
    s.hello_rate_per_ip = 1_000;
    s.hello_burst_per_ip = 1_000;
    s.max_preauth_per_ip = 1_000;
    s
}

fn connected(h: &TestHub) -> usize {
    metric(&h.state, "uptime_hub_validators_connected", &[]) as usize
}

fn hints(h: &TestHub) -> u64 {
    metric(&h.state, "uptime_hub_rebalance_hints_total", &[]) as u64
}

/// Both hubs hold every validator between them, each within the tolerance
/// of the mean.
fn balanced(a: usize, b: usize) -> bool {
    let mean = VALIDATORS as f64 / 2.0;
    let near = |n: usize| (n as f64 - mean).abs() <= mean * TOLERANCE;
    a + b == VALIDATORS && near(a) && near(b)
}

async fn join_a_loaded_cluster(rebalance: bool) {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let (base, sites_stop) = demo_sites(Default::default()).await;
    for _ in 0..20 {
        add_site(&db, &format!("{base}/up"), 1, 1_000, None).await;
    }
    let a = TestHub::start(hub_settings(&db, &redis, "hub-a", rebalance)).await;
    // The validators know only the balancer, as behind an ingress; after a
    // reconnect hint they come back through it.
    let lb = Balancer::start(&[a.addr]).await;
    let stop = CancellationToken::new();
    let validators: Vec<_> = (0..VALIDATORS)
        .map(|i| spawn_validator(&[lb.ws_url()], 100 + i as u8, REGIONS[i % 3], &stop))
        .collect();
    eventually(20, "every validator on hub A", || {
        let n = connected(&a);
        async move { (n == VALIDATORS).then_some(()) }
    })
    .await;
    eventually(20, "rounds closing", || async {
        let n = count(&db, "SELECT count(*) FROM rounds WHERE status = 'up'").await;
        (n >= 40).then_some(())
    })
    .await;

    let b = TestHub::start(hub_settings(&db, &redis, "hub-b", rebalance)).await;
    lb.add(b.addr);
    let joined = Instant::now();
    eventually(30, "both hubs within the tolerance of the mean", || {
        let (na, nb) = (connected(&a), connected(&b));
        async move { balanced(na, nb).then_some(()) }
    })
    .await;
    let took = joined.elapsed();
    let (hints_a, hints_b) = (hints(&a), hints(&b));
    let (na, nb) = (connected(&a), connected(&b));
    eprintln!(
        "balanced {took:?} after hub B joined: A {na}, B {nb}; hints A {hints_a}, B {hints_b}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // Not every validator was bounced: about the excess, no more.
    assert!(hints_a <= (VALIDATORS / 2 + 4) as u64, "{hints_a} hints");
    assert_eq!(hints_b, 0, "hub B never sends validators back");

    // No ping-pong: fifteen more announcements, and nothing moves.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!((hints(&a), hints(&b)), (hints_a, hints_b), "hints stopped");
    assert!(
        balanced(connected(&a), connected(&b)),
        "still balanced: A {}, B {}",
        connected(&a),
        connected(&b)
    );
    let mean = metric(&a.state, "uptime_hub_cluster_mean_validators", &[]);
    assert_eq!(mean, VALIDATORS as f64 / 2.0);
    let told: u64 = validators
        .iter()
        .map(|(v, _)| v.stats().reconnects_requested)
        .sum();
    assert_eq!(told, hints_a, "each hint reached its validator once");

    // Every round keeps closing, and none for want of a result.
    eventually(15, "every round past its deadline closed", || async {
        let n = count(
            &db,
            "SELECT count(*) FROM rounds WHERE status = 'open'
               AND deadline < now() - interval '1 second'",
        )
        .await;
        (n == 0).then_some(())
    })
    .await;
    let handles: Vec<_> = validators.iter().map(|(v, _)| v.clone()).collect();
    // A validator that is stopping takes no new task while it waits for
    // its last acks (tasks still come: the hub is not told); those drops
    // are the test's teardown, not the rebalancing's doing, so they are
    // counted before it.
    let dropped_before_stop: Vec<u64> = handles.iter().map(|v| v.stats().tasks_dropped).collect();
    // Rounds opened while the validators stop (one by one) may find fewer
    // than three and close unknown: not the rebalancing's doing.
    let stopping: f64 = sqlx::query_scalar("SELECT extract(epoch FROM now())::float8")
        .fetch_one(db.pool())
        .await
        .unwrap();
    stop_validators(&stop, validators).await;
    a.stop().await;
    b.stop().await;
    let stored: std::collections::HashSet<uuid::Uuid> =
        sqlx::query_scalar("SELECT task_id FROM ticks")
            .fetch_all(db.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    let mut acked = 0;
    for (v, dropped) in handles.iter().zip(dropped_before_stop) {
        let s = v.stats();
        assert_eq!(
            (dropped, s.results_abandoned, s.acks_rejected_total()),
            (0, 0, 0),
            "validator {}: no task dropped, no result abandoned or rejected: {s:?}",
            v.public_key()
        );
        for id in v.acked_task_ids() {
            assert!(stored.contains(&id), "acked result {id} is stored");
            acked += 1;
        }
    }
    let unknown: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rounds WHERE status = 'unknown' \
          AND scheduled_at < to_timestamp($1) - interval '1 second'",
    )
    .bind(stopping)
    .fetch_one(db.pool())
    .await
    .unwrap();
    let rounds = count(&db, "SELECT count(*) FROM rounds").await;
    eprintln!(
        "{rounds} rounds, {unknown} unknown; {} ticks stored, {acked} acked",
        stored.len()
    );
    assert_eq!(unknown, 0, "no round went unknown");
    assert_eq!(slots_run_twice(&db).await, 0, "no slot ran twice");
    sites_stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_joining_a_loaded_cluster_takes_its_share_of_validators() {
    join_a_loaded_cluster(true).await;
}

/// Validators that know only hub A (no balancer in front) come straight
/// back when hinted: hub A backs off rather than bounce them at its full
/// rate for as long as it stays above the mean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_that_come_straight_back_make_the_hub_back_off() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let a = TestHub::start(hub_settings(&db, &redis, "hub-a", true)).await;
    let b = TestHub::start(hub_settings(&db, &redis, "hub-b", true)).await;
    let stop = CancellationToken::new();
    let validators: Vec<_> = (0..VALIDATORS)
        .map(|i| spawn_validator(&[a.ws_url()], 100 + i as u8, REGIONS[i % 3], &stop))
        .collect();
    eventually(
        20,
        "every validator on hub A, both hubs in the ring",
        || {
            let ok = connected(&a) == VALIDATORS
                && metric(&a.state, "uptime_hub_ring_members", &[]) == 2.0;
            async move { ok.then_some(()) }
        },
    )
    .await;
    // Without the back-off, hub A went on at about 15 hints a second here.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let early = hints(&a);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let late = hints(&a) - early;
    eprintln!(
        "hints by 4 s after both hubs were up: {early}, in the next 4 s: {late}; B holds {}",
        connected(&b)
    );
    assert!(early > 0, "hub A tried");
    assert!(early <= 30, "{early} hints before backing off");
    assert!(late <= 8, "{late} hints while backing off");
    assert_eq!(connected(&b), 0, "nobody could move");
    stop_validators(&stop, validators).await;
    a.stop().await;
    b.stop().await;
}
