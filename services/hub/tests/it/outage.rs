//! A PostgreSQL outage of 30 s on the real `hub` binary loses nothing: the
//! hub's path to the database is cut (every connection reset, new ones
//! refused) through a `TcpProxy` while validators keep checking; tick
//! writers keep their batches and retry, validators resend on the same
//! connection, rounds wait for their results, and when the database returns
//! every result sent in time is stored once and acknowledged.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use protocol::now_ms;
use test_support::{Mode, TcpProxy, TestDb};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const OUTAGE: Duration = Duration::from_secs(30);
/// What the hub's RSS must stay under (debug build): the ingest queue and
/// the writers' batches are bounded, so an outage cannot grow it.
const RSS_BOUND_KIB: u64 = 256 * 1024;

fn rss_kib(pid: libc::pid_t) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `host:port` of a `postgres://` URL.
fn host_port(url: &str) -> String {
    let u = url::Url::parse(url).expect("a database URL");
    format!(
        "{}:{}",
        u.host_str().expect("a host"),
        u.port().expect("a port")
    )
}

/// `url` with its host and port replaced by `addr`.
fn via(url: &str, addr: std::net::SocketAddr) -> String {
    let mut u = url::Url::parse(url).expect("a database URL");
    u.set_ip_host(addr.ip()).expect("a URL with a host");
    u.set_port(Some(addr.port())).expect("a URL with a host");
    u.into()
}

/// An in-process hub whose path to `db` goes through a `TcpProxy` the test
/// can cut.
async fn hub_behind_proxy(db: &TestDb, edit: impl FnOnce(&mut hub::Config)) -> (TestHub, TcpProxy) {
    let proxy = TcpProxy::start(host_port(&db.url)).await.unwrap();
    let mut s = settings(db);
    s.database_url = via(&db.url, proxy.addr()).into();
    edit(&mut s);
    (TestHub::start(s).await, proxy)
}

async fn ready(port: u16) -> Option<u16> {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    Some(r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_second_database_outage_loses_no_result() {
    let db = TestDb::new().await.unwrap();
    let proxy = TcpProxy::start(host_port(&db.url)).await.unwrap();
    let (base, sites_stop) = demo_sites(Default::default()).await;
    let port = free_port();
    let hub = HubProc::start(
        &db,
        "hub-a",
        port,
        &[
            ("HUB_DATABASE_URL", via(&db.url, proxy.addr())),
            ("HUB_RELOAD_INTERVAL_MS", "1000".into()),
        ],
    )
    .await;
    let url = hub.ws_url();

    let stop = CancellationToken::new();
    let regions = ["eu-west", "us-east", "ap-south"];
    let validators: Vec<_> = (0..6)
        .map(|i| {
            spawn_validator(
                std::slice::from_ref(&url),
                60 + i as u8,
                regions[i % 3],
                &stop,
            )
        })
        .collect();
    for (v, _) in &validators {
        v.wait_until(|s| s.connected).await;
    }
    // Fast sites, and slow ones whose checks are still running when the
    // database goes: their results arrive during the outage.
    let mut intervals = BTreeMap::new();
    for _ in 0..15 {
        intervals.insert(
            add_site(&db, &format!("{base}/up"), 2, 2_000, None).await,
            2,
        );
    }
    for _ in 0..15 {
        let id = add_site(&db, &format!("{base}/slow?ms=1500"), 5, 4_000, None).await;
        intervals.insert(id, 5);
    }
    for (v, _) in &validators {
        tokio::time::timeout(
            Duration::from_secs(30),
            v.wait_until(|s| s.acks_stored >= 5),
        )
        .await
        .expect("results flow before the outage");
    }

    // The outage, cut while the slow checks are running (15 sites, 3
    // validators each: 45 tasks in flight for 1.5 s of every 5), so results
    // arrive while the database is away whatever the sites' phases.
    eventually(30, "slow checks in flight", || async {
        let in_flight: usize = validators.iter().map(|(v, _)| v.stats().in_flight).sum();
        (in_flight >= 20).then_some(())
    })
    .await;
    let cut_ms = now_ms();
    proxy.mode(Mode::Reset);
    let started = Instant::now();
    let mut max_rss = 0;
    let mut unready = false;
    while started.elapsed() < OUTAGE {
        max_rss = max_rss.max(rss_kib(hub.pid()));
        if ready(port).await == Some(503) {
            unready = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let during: u64 = validators
        .iter()
        .map(|(v, _)| v.stats().pending as u64)
        .sum();
    proxy.mode(Mode::Pass);
    let restored_ms = now_ms();
    assert!(unready, "/readyz turned 503 while the database was away");
    eprintln!("outage from {cut_ms} to {restored_ms}; results pending at its end: {during}");
    assert!(during > 0, "the outage must leave results waiting");

    // Rounds resume within one interval (plus the hub's one-second retry,
    // a reconnect and a scheduler tick: 3 s, as CI runs this beside other
    // tests on two cores).
    let first_after: Vec<(store::WebsiteId, i64)> =
        eventually(30, "every site has a round after the outage", || async {
            let rows: Vec<(store::WebsiteId, i64)> = sqlx::query_as(
                "SELECT website_id, (extract(epoch FROM min(scheduled_at)) * 1000)::int8 \
               FROM rounds WHERE scheduled_at >= to_timestamp($1 / 1000.0) GROUP BY website_id",
            )
            .bind(restored_ms)
            .fetch_all(db.pool())
            .await
            .unwrap();
            (rows.len() == intervals.len()).then_some(rows)
        })
        .await;
    for (site, first) in first_after {
        let interval_ms = intervals[&site] * 1000;
        assert!(
            first - restored_ms <= interval_ms + 3_000,
            "site {site}: first round {} ms after the database returned (interval {interval_ms} ms)",
            first - restored_ms
        );
    }
    max_rss = max_rss.max(rss_kib(hub.pid()));

    // No new rounds; every validator empties its pending results.
    sqlx::query("UPDATE websites SET enabled = false")
        .execute(db.pool())
        .await
        .unwrap();
    for (v, _) in &validators {
        tokio::time::timeout(
            Duration::from_secs(60),
            v.wait_until(|s| s.pending == 0 && s.in_flight == 0),
        )
        .await
        .expect("every result is answered after the outage");
    }
    eventually(30, "every round is closed", || async {
        (count(&db, "SELECT count(*) FROM rounds WHERE status = 'open'").await == 0).then_some(())
    })
    .await;

    // Every acknowledged result is stored, and nothing else is.
    let stored: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT v.public_key, t.task_id FROM ticks t JOIN validators v ON v.id = t.validator_id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let stored_set: HashSet<(String, Uuid)> = stored.iter().cloned().collect();
    assert_eq!(stored_set.len(), stored.len(), "no result stored twice");
    let mut acked = HashSet::new();
    for (v, _) in &validators {
        let key = v.public_key().to_base58();
        for t in v.acked_task_ids() {
            acked.insert((key.clone(), t));
        }
        let rejected = v.rejected_task_ids();
        assert!(
            rejected.is_empty(),
            "every result sent in time is stored, none rejected: {rejected:?}"
        );
        let s = v.stats();
        assert_eq!(s.connects, 1, "sessions were kept through the outage");
        assert_eq!(
            s.results_abandoned, 0,
            "every result sent in time was answered; none was given up unacknowledged"
        );
    }
    let lost: Vec<_> = acked.difference(&stored_set).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    let unacked: Vec<_> = stored_set.difference(&acked).collect();
    assert!(
        unacked.is_empty(),
        "stored but never acknowledged: {unacked:?}"
    );

    // No round was decided without results that were on their way: every
    // site is up, and every round had answers.
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM rounds GROUP BY status ORDER BY status")
            .fetch_all(db.pool())
            .await
            .unwrap();
    eprintln!("rounds by status: {statuses:?}; hub RSS peak {max_rss} KiB");
    let odd: Vec<(i64, i64, i64, i64, String, i64)> = sqlx::query_as(
        "SELECT r.website_id, (extract(epoch FROM r.scheduled_at) * 1000)::int8 - $1,
                (extract(epoch FROM r.closed_at) * 1000)::int8 - $1,
                (SELECT count(*) FROM ticks t WHERE t.round_id = r.id),
                r.closed_by, (extract(epoch FROM r.deadline) * 1000)::int8 - $1
           FROM rounds r WHERE r.status <> 'up' ORDER BY r.scheduled_at",
    )
    .bind(cut_ms)
    .fetch_all(db.pool())
    .await
    .unwrap();
    if !odd.is_empty() {
        eprintln!(
            "rounds not up (site, scheduled, closed, ticks, closed by, deadline; ms from the cut): {odd:?}"
        );
    }
    assert!(
        statuses.iter().all(|(s, _)| s == "up"),
        "only up rounds (no false down or unknown): {statuses:?}"
    );
    assert!(
        max_rss > 0 && max_rss < RSS_BOUND_KIB,
        "hub RSS {max_rss} KiB"
    );
    let resent = hub.metric("uptime_hub_results_resent_total").await.unwrap();
    assert!(resent >= 1.0, "validators resent queued results ({resent})");

    stop_validators(&stop, validators).await;
    hub.sigterm().await;
    sites_stop.cancel();
}

/// While the database is away, a validator resending a result the hub still
/// holds keeps its message rate (resends draw on a budget of their own), the
/// copies are dropped, and the one ack comes when the database is back.
#[tokio::test]
async fn resends_of_a_held_result_cost_no_rate_and_get_one_ack() {
    use protocol::{AckOutcome, Heartbeat, HubMessage, ValidatorMessage};
    let db = TestDb::new().await.unwrap();
    let (hub, proxy) = hub_behind_proxy(&db, |s| {
        // The hello and three more messages at once; then 2 a second.
        s.max_messages_per_sec = 2;
        s.message_burst = 4;
    })
    .await;
    let (mut c, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    proxy.mode(Mode::Reset);
    let me = protocol::PublicKey::from(&key(1));
    let held = result(&mint_task(me, now_ms() + 60_000), &key(1));
    c.send(&held).await;
    // Three resends at once: on the main budget they and the hello and the
    // first copy would exceed the burst of 4.
    for _ in 0..3 {
        c.send(&held).await;
    }
    let hb = |seq| ValidatorMessage::Heartbeat(Heartbeat { seq, in_flight: 0 });
    c.send(&hb(1)).await;
    c.send(&hb(2)).await;
    let mut acks = 0;
    c.recv_until(|m| match m {
        HubMessage::HeartbeatAck(a) if a.seq == 2 => Some(()),
        HubMessage::ResultAck(_) => {
            acks += 1;
            None
        }
        _ => None,
    })
    .await;
    assert_eq!(
        acks, 0,
        "nothing is acknowledged while the database is away"
    );
    proxy.mode(Mode::Pass);
    let ack = c
        .recv_until(|m| match m {
            HubMessage::ResultAck(a) => Some(a),
            _ => None,
        })
        .await;
    assert_eq!(ack.outcome, AckOutcome::Stored);
    // No second ack for the copies: the next frame after a heartbeat's ack
    // round trip is that ack.
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.send(&hb(3)).await;
    c.recv_until(|m| match m {
        HubMessage::HeartbeatAck(a) if a.seq == 3 => Some(()),
        HubMessage::ResultAck(a) => panic!("a second ack: {a:?}"),
        _ => None,
    })
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM ticks").await, 1);
    hub.stop().await;
}

/// SIGTERM while the database is away: the writers stop retrying after the
/// drain timeout and the hub exits (the results it held are resent by their
/// validators to the next hub), instead of retrying for ever.
#[tokio::test]
async fn a_hub_stopped_during_an_outage_still_exits() {
    let db = TestDb::new().await.unwrap();
    let (hub, proxy) = hub_behind_proxy(&db, |s| s.drain_timeout_ms = 1_000).await;
    let (mut c, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    proxy.mode(Mode::Reset);
    let me = protocol::PublicKey::from(&key(1));
    c.send(&result(&mint_task(me, now_ms() + 60_000), &key(1)))
        .await;
    // Let a writer take it and start retrying.
    eventually(10, "a write fails", || async {
        (metric(&hub.state, "uptime_hub_write_errors_total", &[]) >= 1.0).then_some(())
    })
    .await;
    let started = Instant::now();
    hub.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped in {:?}",
        started.elapsed()
    );
}

/// A round whose insert committed while the hub's connection broke (the hub
/// saw an error and never learnt the round's id, so no task went out for
/// it) is deleted once the database answers again, instead of staying open
/// until the sweep closes it `unknown`.
#[tokio::test]
async fn a_round_a_failed_insert_created_is_deleted_not_swept_unknown() {
    let db = TestDb::new().await.unwrap();
    let (hub, proxy) = hub_behind_proxy(&db, |_| {}).await;
    // Someone to check, so the hub opens rounds (it never answers).
    let (_raw, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    let site = add_site(&db, "http://127.0.0.1:1023/nobody", 10, 1_000, None).await;
    eventually(10, "a first round", || async {
        (count(&db, "SELECT count(*) FROM rounds").await > 0).then_some(())
    })
    .await;
    proxy.mode(Mode::Reset);
    // The next slot starts during the outage: the hub tries to open it
    // (every second, for its misfire window of 5 s) and fails. Its insert
    // "committed" all the same: the test writes the row.
    let schedule = hub::rounds::scheduler::Schedule::new(site, 10);
    let at = schedule.scheduled_at(schedule.slot_at(now_ms()) + 1);
    let round_id: i64 = sqlx::query_scalar(
        "INSERT INTO rounds (website_id, slot, scheduled_at, deadline, hub_id) \
         VALUES ($1, $2, to_timestamp($3 / 1000.0), to_timestamp(($3 + 20000) / 1000.0), $4) \
         RETURNING id",
    )
    .bind(site)
    .bind(schedule.slot_at(at))
    .bind(at)
    .bind(&hub.id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    // Past the misfire window: the hub has moved on to the next slot.
    let back = at + 6_000;
    tokio::time::sleep(Duration::from_millis((back - now_ms()).max(0) as u64)).await;
    proxy.mode(Mode::Pass);
    // Well before its deadline (+20 s) and the sweep's grace.
    eventually(
        10,
        "the round the failed insert made is deleted",
        || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rounds WHERE id = $1")
                .bind(round_id)
                .fetch_one(db.pool())
                .await
                .unwrap();
            (n == 0).then_some(())
        },
    )
    .await;
    hub.stop().await;
}
