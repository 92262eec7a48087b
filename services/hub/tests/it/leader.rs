//! Payout leader election: only hubs with a treasury stand; one leader at
//! a time, fenced by a PostgreSQL epoch that only goes up, and a leader
//! that cannot renew stops at once.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use test_support::solana::SolanaRpc;
use test_support::{Mode, RedisServer, TcpProxy, TestDb, TestRedis};

const LEASE_MS: u64 = 600;

/// A cluster member without payout settings: it does not stand.
fn hub_settings(db: &TestDb, redis_url: &str, prefix: &str, id: &str) -> hub::Config {
    let mut s = settings(db);
    s.hub_id = id.into();
    s.redis_url = redis_url.into();
    s.redis_prefix = prefix.into();
    s.announce_interval_ms = 200;
    s.leader_lease_ms = LEASE_MS;
    s
}

/// A cluster member with a treasury: it stands for the payout election.
fn leader_settings(
    db: &TestDb,
    redis_url: &str,
    prefix: &str,
    id: &str,
    treasury: &Treasury,
) -> hub::Config {
    let mut s = hub_settings(db, redis_url, prefix, id);
    s.payout_treasury_keypair = treasury.file.to_string_lossy().into_owned();
    s.payout_rpc_url = treasury.chain.url().into();
    s
}

/// A treasury keypair file (owner-only, as the hub requires) and a local
/// chain for its RPC; nothing is earned here, so nothing is paid.
struct Treasury {
    chain: SolanaRpc,
    file: PathBuf,
}

impl Treasury {
    async fn new() -> Self {
        let file = std::env::temp_dir().join(format!("treasury-{}.json", uuid::Uuid::new_v4()));
        protocol::keypair::write_new(&file, &protocol::keypair::generate()).unwrap();
        Self {
            chain: payouts::chain().await,
            file,
        }
    }
}

impl Drop for Treasury {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// The epoch of the hub that holds a valid term right now, asserting that
/// no two hubs do.
fn current_leader(hubs: &[&TestHub]) -> Option<(String, i64)> {
    leaders(hubs, true).into_iter().max_by_key(|l| l.1)
}

/// Every hub holding a valid term; with `exclusive`, asserts there is at
/// most one. (A Redis restarted empty can elect a second leader before the
/// first's lease runs out: that is what the epoch fence is for.)
fn leaders(hubs: &[&TestHub], exclusive: bool) -> Vec<(String, i64)> {
    let leaders: Vec<(String, i64)> = hubs
        .iter()
        .filter_map(|h| {
            let term = (*h.state.leadership.as_ref()?.borrow())?;
            term.valid().then(|| (h.id.clone(), term.epoch))
        })
        .collect();
    assert!(
        !exclusive || leaders.len() <= 1,
        "two leaders at once: {leaders:?}"
    );
    leaders
}

/// Samples every 10 ms (checking there is never more than one leader)
/// until a leader other than `not` appears with an epoch above `above`.
async fn await_leader(
    hubs: &[&TestHub],
    not: Option<&str>,
    above: i64,
    secs: u64,
) -> (String, i64) {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some((id, epoch)) = current_leader(hubs) {
            if Some(id.as_str()) != not && epoch > above {
                return (id, epoch);
            }
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no new leader in {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn db_epoch(db: &TestDb) -> i64 {
    db.store.current_epoch("payouts").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_the_epoch_only_goes_up() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let t = Treasury::new().await;
    let a = TestHub::start(leader_settings(&db, &redis.url, &redis.prefix, "hub-a", &t)).await;
    let b = TestHub::start(leader_settings(&db, &redis.url, &redis.prefix, "hub-b", &t)).await;
    let c = TestHub::start(leader_settings(&db, &redis.url, &redis.prefix, "hub-c", &t)).await;
    let (first, e1) = await_leader(&[&a, &b, &c], None, 0, 5).await;
    assert_eq!(db_epoch(&db).await, e1, "the leader's epoch is the newest");
    // Several lease periods later it is still the only leader, same term.
    for _ in 0..200 {
        let now = current_leader(&[&a, &b, &c]);
        assert_eq!(now, Some((first.clone(), e1)), "stable leadership");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let metric_sum: f64 = [&a, &b, &c]
        .iter()
        .map(|h| metric(&h.state, "uptime_hub_is_leader", &[]))
        .sum();
    assert_eq!(metric_sum, 1.0);

    // The leader leaves: another takes over with a higher epoch.
    let mut rest = Vec::new();
    for h in [a, b, c] {
        if h.id == first {
            h.stop().await;
        } else {
            rest.push(h);
        }
    }
    let refs: Vec<&TestHub> = rest.iter().collect();
    let (second, e2) = await_leader(&refs, Some(&first), e1, 5).await;
    assert!(e2 > e1);
    assert_eq!(db_epoch(&db).await, e2);
    let new_leader = rest.iter().find(|h| h.id == second).unwrap();
    assert_eq!(
        metric(&new_leader.state, "uptime_hub_leader_epoch", &[]),
        e2 as f64
    );
    for h in rest {
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_cannot_reset_the_fence() {
    let db = TestDb::new().await.unwrap();
    let mut redis = RedisServer::start().await.unwrap();
    let t = Treasury::new().await;
    let a = TestHub::start(leader_settings(&db, &redis.url(), "t:", "hub-a", &t)).await;
    let b = TestHub::start(leader_settings(&db, &redis.url(), "t:", "hub-b", &t)).await;
    let (_, e1) = await_leader(&[&a, &b], None, 0, 5).await;
    redis.restart_empty().await.unwrap();
    // Whoever leads next (the same hub or the other) has a newer epoch; for
    // up to one lease the old term may overlap it, fenced by the epoch.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let e2 = loop {
        if let Some(e) = leaders(&[&a, &b], false)
            .iter()
            .map(|l| l.1)
            .find(|e| *e > e1)
        {
            break e;
        }
        assert!(tokio::time::Instant::now() < until, "no new term");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(e2 > e1);
    assert_eq!(db_epoch(&db).await, e2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_redis_stops_within_its_lease() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let proxy = TcpProxy::start(redis.addr()).await.unwrap();
    let t = Treasury::new().await;
    // Hub A reaches Redis through the proxy and starts first, so it leads.
    let a = TestHub::start(leader_settings(
        &db,
        &proxy.url_for("redis"),
        &redis.prefix,
        "hub-a",
        &t,
    ))
    .await;
    let (first, e1) = await_leader(&[&a], None, 0, 5).await;
    assert_eq!(first, "hub-a");
    let b = TestHub::start(leader_settings(&db, &redis.url, &redis.prefix, "hub-b", &t)).await;
    proxy.mode(Mode::BlackHole);
    let cut_at = tokio::time::Instant::now();
    // Hub B takes over only after A's lease ran out (checked every 10 ms:
    // never two valid terms), with a higher epoch.
    let (second, e2) = await_leader(&[&a, &b], Some("hub-a"), e1, 10).await;
    assert_eq!(second, "hub-b");
    assert!(e2 > e1);
    assert!(cut_at.elapsed() >= Duration::from_millis(LEASE_MS / 2));
    assert!(metric(&a.state, "uptime_hub_lease_renewal_failures_total", &[]) >= 1.0);
    assert_eq!(metric(&a.state, "uptime_hub_is_leader", &[]), 0.0);
    proxy.mode(Mode::Pass);
    a.stop().await;
    b.stop().await;
}

/// Samples every 10 ms for `ms` that no hub holds a valid term.
async fn assert_no_leader(hubs: &[&TestHub], ms: u64, when: &str) {
    let until = tokio::time::Instant::now() + Duration::from_millis(ms);
    while tokio::time::Instant::now() < until {
        let now = leaders(hubs, false);
        assert!(now.is_empty(), "{when}: {now:?} leads");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A hub without a treasury never takes the lock: not while alone in the
/// cluster (where it would have won at once), not beside a hub with one,
/// not after that hub leaves. It goes on serving without a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_hubs_with_a_treasury_stand_for_the_payout_election() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let t = Treasury::new().await;
    let plain = TestHub::start(hub_settings(&db, &redis.url, &redis.prefix, "hub-plain")).await;
    assert_no_leader(&[&plain], 3 * LEASE_MS, "alone without a treasury").await;

    let payer = TestHub::start(leader_settings(
        &db,
        &redis.url,
        &redis.prefix,
        "hub-payer",
        &t,
    ))
    .await;
    let (first, e1) = await_leader(&[&plain, &payer], None, 0, 5).await;
    assert_eq!(first, "hub-payer");
    for _ in 0..(3 * LEASE_MS / 10) {
        let now = current_leader(&[&plain, &payer]);
        assert_eq!(now, Some((payer.id.clone(), e1)), "stable leadership");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metric(&plain.state, "uptime_hub_is_leader", &[]), 0.0);
    assert_eq!(metric(&payer.state, "uptime_hub_is_leader", &[]), 1.0);

    // The only candidate leaves: nobody leads, and no epoch is taken.
    payer.stop().await;
    assert_no_leader(&[&plain], 3 * LEASE_MS, "after the treasury hub left").await;
    assert_eq!(db_epoch(&db).await, e1, "nobody won the lock since");
    assert!(
        plain.state.leadership.is_none(),
        "it does not even campaign"
    );
    assert_eq!(
        metric(&plain.state, "uptime_hub_leader_changes_total", &[]),
        0.0
    );

    // It still serves: ready, and validators get in.
    let ready = reqwest::get(format!("http://{}/readyz", plain.addr))
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let (_client, welcome) = RawClient::login(&plain.ws_url(), key(7), "eu-west").await;
    assert_eq!(welcome.hub_id, "hub-plain");
    plain.stop().await;
}
