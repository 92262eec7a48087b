//! Failure behaviour of a three-hub cluster, with real hub processes, real
//! Redis and PostgreSQL, and real validators. Short intervals keep each test
//! under a minute; every loop is bounded.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use fred::interfaces::ClientLike;
use test_support::{Mode, RedisServer, TcpProxy, TestDb, TestRedis};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Seconds between checks of every test website.
const INTERVAL_MS: i64 = 2_000;
/// The bound the issue sets on gaps: interval plus 10 s.
const MAX_GAP_MS: i64 = INTERVAL_MS + 10_000;
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

fn hub_env(redis_url: &str, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HUB_REDIS_URL", redis_url.to_string()),
        ("HUB_REDIS_PREFIX", prefix.to_string()),
        ("HUB_ANNOUNCE_INTERVAL_MS", "500".into()),
        ("HUB_DRAIN_TIMEOUT_MS", "3000".into()),
    ]
}

struct Load {
    stop: CancellationToken,
    validators: Vec<validator::ValidatorHandle>,
    sites_stop: CancellationToken,
}

/// Six validators (two per region), each told every hub URL starting at a
/// different one, and 30 websites checked every 2 s.
async fn start_load(db: &TestDb, urls: &[String]) -> Load {
    // A third of the sites flap (3 rounds down, 3 up), so incidents open
    // and resolve while hubs come and go.
    let (base, sites_stop) = demo_sites(demo_sites::Config {
        flap_period: Duration::from_millis(3 * INTERVAL_MS as u64),
        ..Default::default()
    })
    .await;
    for i in 0..30 {
        let page = if i % 3 == 0 { "flap" } else { "up" };
        add_site(
            db,
            &format!("{base}/{page}"),
            (INTERVAL_MS / 1000) as i32,
            1_000,
            None,
        )
        .await;
    }
    let stop = CancellationToken::new();
    let mut validators = Vec::new();
    for i in 0..6 {
        let mut rotated = urls.to_vec();
        rotated.rotate_left(i % urls.len());
        let (h, _) = spawn_validator(&rotated, 80 + i as u8, REGIONS[i % 3], &stop);
        validators.push(h);
    }
    for v in &validators {
        tokio::time::timeout(
            Duration::from_secs(20),
            v.wait_until(|s| s.acks_stored >= 3),
        )
        .await
        .expect("results flow");
    }
    Load {
        stop,
        validators,
        sites_stop,
    }
}

impl Load {
    fn acked(&self) -> HashSet<Uuid> {
        self.validators
            .iter()
            .flat_map(|v| v.acked_task_ids())
            .collect()
    }

    fn stop(self) {
        self.stop.cancel();
        self.sites_stop.cancel();
    }
}

/// The invariants every failure test ends on: no slot ran twice and no
/// website waited longer than its interval plus 10 s. Then stops it all.
/// Judges the run (see the checks below) and stops it; returns how many
/// incidents the run made.
async fn judge_and_stop(db: &TestDb, load: Load, hubs: Vec<HubProc>) -> usize {
    assert_eq!(slots_run_twice(db).await, 0, "no slot ran twice");
    let gap = max_round_gap_ms(db).await;
    assert!(gap <= MAX_GAP_MS, "largest gap between rounds {gap} ms");
    load.stop();
    for h in hubs {
        h.sigterm().await;
    }
    // With every hub stopped: nothing applies meanwhile, so the rounds read
    // and the incidents read see the same state.
    incidents_match_a_replay_of_the_rounds(db).await
}

/// Every transition happened exactly once, whichever hub applied it and
/// whichever died: the incidents table equals a replay of the decided
/// rounds in slot order under the rule (2 downs open, 2 ups resolve,
/// `unknown` counts for neither, stop at the first open round). Pending
/// rounds are applied first, as the next close would. Returns how many.
async fn incidents_match_a_replay_of_the_rounds(db: &TestDb) -> usize {
    let sites: Vec<store::WebsiteId> = sqlx::query_scalar("SELECT id FROM websites ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap();
    db.store.apply_round_decisions(&sites, 2, 2).await.unwrap();
    let mut total = 0;
    for site in sites {
        let rounds: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, status FROM rounds WHERE website_id = $1 ORDER BY scheduled_at",
        )
        .bind(site)
        .fetch_all(db.pool())
        .await
        .unwrap();
        let (mut up, mut down) = (0, 0);
        let mut open: Option<i64> = None;
        let mut want: Vec<(i64, Option<i64>)> = Vec::new();
        for (id, status) in rounds {
            match status.as_str() {
                "open" => break,
                "up" => (up, down) = (up + 1, 0),
                "down" => (up, down) = (0, down + 1),
                _ => {}
            }
            if open.is_none() && down >= 2 {
                open = Some(id);
                want.push((id, None));
            } else if open.is_some() && up >= 2 {
                open = None;
                want.last_mut().unwrap().1 = Some(id);
            }
        }
        let got: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT opened_by_round, resolved_by_round FROM incidents WHERE website_id = $1 ORDER BY id",
        )
        .bind(site)
        .fetch_all(db.pool())
        .await
        .unwrap();
        assert_eq!(got, want, "incidents of website {site}");
        total += got.len();
    }
    total
}

async fn stored(db: &TestDb) -> HashSet<Uuid> {
    sqlx::query_scalar::<_, Uuid>("SELECT task_id FROM ticks")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn ring_size(h: &HubProc) -> i64 {
    h.metric("uptime_hub_ring_members").await.unwrap_or(-1.0) as i64
}

async fn start_three(db: &TestDb, env: &[(&str, String)]) -> Vec<HubProc> {
    let mut hubs = Vec::new();
    for id in ["hub-a", "hub-b", "hub-c"] {
        hubs.push(HubProc::start(db, id, free_port(), env).await);
    }
    hubs
}

async fn wait_ring(hubs: &[HubProc], n: i64, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut all = true;
        for h in hubs {
            all &= ring_size(h).await == n;
        }
        if all {
            return;
        }
        assert!(
            Instant::now() < until,
            "ring of {n} not reached in {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_one_of_three_hubs_under_load() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let mut hubs = start_three(&db, &hub_env(&redis.url, &redis.prefix)).await;
    wait_ring(&hubs, 3, 10).await;
    let urls: Vec<String> = hubs.iter().map(HubProc::ws_url).collect();
    let load = start_load(&db, &urls).await;
    // Let the cluster settle into a steady state.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let victim = hubs.pop().unwrap();
    let killed_at_ms = protocol::now_ms();
    let killed_at = Instant::now();
    victim.kill9().await;

    // Its validators reconnect to the others within 5 s.
    for v in &load.validators {
        tokio::time::timeout(
            Duration::from_secs(5),
            v.wait_until(|s| s.connected && s.hub_id.as_deref() != Some("hub-c")),
        )
        .await
        .expect("validator reconnected to a live hub within 5 s");
    }
    // Its websites get a new owner within 10 s: every site has a round
    // opened by a live hub after the kill.
    eventually(12, "every website owned by a live hub", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT website_id) FROM rounds
              WHERE hub_id <> 'hub-c' AND scheduled_at > to_timestamp($1 / 1000.0)",
        )
        .bind(killed_at_ms)
        .fetch_one(db.pool())
        .await
        .unwrap();
        (n == 30).then_some(())
    })
    .await;
    assert!(
        killed_at.elapsed() < Duration::from_secs(10) + Duration::from_millis(INTERVAL_MS as u64)
    );
    wait_ring(&hubs, 2, 5).await;
    // Run on a while, then judge the whole run.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // No round stays open because its owner died: the survivors sweep
    // overdue rounds from PostgreSQL (deadline + 5 s grace, every 5 s).
    eventually(15, "no overdue round left open", || async {
        let n = count(
            &db,
            "SELECT count(*) FROM rounds WHERE status = 'open' AND deadline < now() - interval '11 seconds'",
        )
        .await;
        (n == 0).then_some(())
    })
    .await;
    // The hubs apply decided rounds as they close them (the check below
    // applies what is left, as a next close would, and compares).
    let by_hubs = count(&db, "SELECT count(*) FROM incidents").await;
    assert!(
        by_hubs > 0,
        "the hubs opened incidents for the flapping sites"
    );
    let incidents = judge_and_stop(&db, load, hubs).await;
    assert!(incidents as i64 >= by_hubs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_with_sigterm_loses_nothing() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let env = hub_env(&redis.url, &redis.prefix);
    let mut hubs = start_three(&db, &env).await;
    wait_ring(&hubs, 3, 10).await;
    let urls: Vec<String> = hubs.iter().map(HubProc::ws_url).collect();
    let load = start_load(&db, &urls).await;

    for i in 0..hubs.len() {
        let (id, port) = (hubs[i].id.clone(), hubs[i].port);
        hubs.remove(i).sigterm().await;
        hubs.insert(i, HubProc::start(&db, &id, port, &env).await);
        wait_ring(&hubs, 3, 10).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Quiesce, then every acknowledged result must be stored.
    sqlx::query("UPDATE websites SET enabled = false")
        .execute(db.pool())
        .await
        .unwrap();
    for v in &load.validators {
        tokio::time::timeout(
            Duration::from_secs(30),
            v.wait_until(|s| s.pending == 0 && s.in_flight == 0),
        )
        .await
        .expect("validators hand in everything");
    }
    let acked = load.acked();
    let stored = stored(&db).await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    judge_and_stop(&db, load, hubs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_mid_run() {
    let db = TestDb::new().await.unwrap();
    let mut redis = RedisServer::start().await.unwrap();
    let hubs = start_three(&db, &hub_env(&redis.url(), "t:")).await;
    wait_ring(&hubs, 3, 10).await;
    let urls: Vec<String> = hubs.iter().map(HubProc::ws_url).collect();
    let load = start_load(&db, &urls).await;

    let before: i64 = count(&db, "SELECT count(*) FROM ticks").await;
    redis.restart_empty().await.unwrap();
    // Ticks keep landing meanwhile.
    eventually(10, "ticks to keep landing", || async {
        let now: i64 = count(&db, "SELECT count(*) FROM ticks").await;
        (now > before + 30).then_some(())
    })
    .await;
    // Membership and presence are rebuilt in the empty Redis from the live
    // processes (each hub kept its ring meanwhile).
    let client =
        fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&redis.url()).unwrap())
            .build()
            .unwrap();
    client.init().await.unwrap();
    let keys = hub::cluster::Keys::new("t:");
    eventually(15, "membership and presence rebuilt", || async {
        use fred::interfaces::{HashesInterface, SortedSetsInterface};
        let members: i64 = client.zcard(keys.members()).await.ok()?;
        let mut validators = 0i64;
        for h in &hubs {
            let n: i64 = client.hlen(keys.hub_validators(&h.id)).await.ok()?;
            validators += n;
        }
        (members == 3 && validators == 6).then_some(())
    })
    .await;
    wait_ring(&hubs, 3, 15).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    judge_and_stop(&db, load, hubs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_cut_off_from_redis_for_20_s() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let proxy = TcpProxy::start(redis.addr()).await.unwrap();
    let env = hub_env(&redis.url, &redis.prefix);
    let mut cut_env = env.clone();
    cut_env[0].1 = proxy.url_for("redis");
    let hubs = vec![
        HubProc::start(&db, "hub-a", free_port(), &env).await,
        HubProc::start(&db, "hub-b", free_port(), &env).await,
        HubProc::start(&db, "hub-c", free_port(), &cut_env).await,
    ];
    wait_ring(&hubs, 3, 10).await;
    let urls: Vec<String> = hubs.iter().map(HubProc::ws_url).collect();
    let load = start_load(&db, &urls).await;
    let owned_before = hubs[2].metric("uptime_hub_websites_owned").await.unwrap();
    assert!(owned_before > 0.0 && owned_before < 30.0);

    proxy.mode(Mode::BlackHole);
    // The others drop hub C and take over its websites; hub C keeps the
    // ring it had and goes on checking what it last owned.
    wait_ring(&hubs[..2], 2, 10).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    proxy.mode(Mode::Pass);

    // Once back, C rejoins and drops the websites it no longer owns.
    wait_ring(&hubs, 3, 15).await;
    eventually(
        5,
        "every website to have exactly one owner again",
        || async {
            let mut owned = 0.0;
            for h in &hubs {
                owned += h.metric("uptime_hub_websites_owned").await?;
            }
            (owned == 30.0).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    judge_and_stop(&db, load, hubs).await;
}
