//! Several hubs over one Redis: membership, ownership, convergence.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use fred::interfaces::{ClientLike, KeysInterface, PubsubInterface, SortedSetsInterface};
use test_support::{TestDb, TestRedis};

fn cluster_settings(db: &TestDb, redis: &TestRedis, id: &str) -> hub::Config {
    let mut s = settings(db);
    s.hub_id = id.into();
    s.redis_url = redis.url.clone().into();
    s.redis_prefix = redis.prefix.clone();
    s.announce_interval_ms = 200;
    // Only ring changes and NOTIFY may drive reloads here.
    s.reload_interval_ms = 600_000;
    s
}

fn gauge(h: &TestHub, name: &str) -> i64 {
    metric(&h.state, name, &[]) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_split_the_websites_and_take_over_when_one_leaves() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    for i in 0..60 {
        add_site(&db, &format!("http://127.0.0.1:59/{i}"), 60, 1_000, None).await;
    }
    let mut hubs = Vec::new();
    for id in ["hub-a", "hub-b", "hub-c"] {
        hubs.push(TestHub::start(cluster_settings(&db, &redis, id)).await);
    }
    let owned = |hubs: &[TestHub]| -> Vec<i64> {
        hubs.iter()
            .map(|h| gauge(h, "uptime_hub_websites_owned"))
            .collect()
    };
    eventually(10, "three members and a full split", || {
        let ok = hubs
            .iter()
            .all(|h| gauge(h, "uptime_hub_ring_members") == 3)
            && owned(&hubs).iter().sum::<i64>() == 60
            && owned(&hubs).iter().all(|n| *n > 0);
        async move { ok.then_some(()) }
    })
    .await;

    // A graceful leave: the others own everything within about a second.
    let c = hubs.pop().unwrap();
    let left_at = Instant::now();
    c.stop().await;
    eventually(5, "two members own all websites", || {
        let ok = hubs
            .iter()
            .all(|h| gauge(h, "uptime_hub_ring_members") == 2)
            && owned(&hubs).iter().sum::<i64>() == 60;
        async move { ok.then_some(()) }
    })
    .await;
    let took = left_at.elapsed();
    eprintln!("ownership converged {took:?} after the leave");
    assert!(took < Duration::from_millis(1_500), "took {took:?}");
    for h in hubs {
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_announcing_is_dropped() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let hub = TestHub::start(cluster_settings(&db, &redis, "hub-a")).await;
    eventually(5, "the hub to announce itself", || {
        let n = gauge(&hub, "uptime_hub_ring_members");
        async move { (n == 1).then_some(()) }
    })
    .await;

    // A ghost announces once (on Redis's clock, as the script does) and
    // tells everyone; then it goes silent, as a crashed hub would.
    let client = redis_client(&redis).await;
    let keys = hub::cluster::Keys::new(redis.prefix.clone());
    let (secs, micros): (i64, i64) = {
        let t: Vec<String> = client
            .custom(fred::cmd!("TIME"), Vec::<String>::new())
            .await
            .unwrap();
        (t[0].parse().unwrap(), t[1].parse().unwrap())
    };
    let now_ms = secs * 1000 + micros / 1000;
    let _: i64 = client
        .zadd(
            keys.members(),
            None,
            None,
            false,
            false,
            (now_ms as f64, "ghost"),
        )
        .await
        .unwrap();
    let _: i64 = client
        .publish(keys.membership_channel(), "ghost")
        .await
        .unwrap();
    eventually(3, "the ghost to join the ring", || {
        let n = gauge(&hub, "uptime_hub_ring_members");
        async move { (n == 2).then_some(()) }
    })
    .await;
    // Two missed announcements (2 x 200 ms + 500 ms of grace) later it is gone.
    eventually(5, "the ghost to be dropped", || {
        let n = gauge(&hub, "uptime_hub_ring_members");
        async move { (n == 1).then_some(()) }
    })
    .await;
    let left: i64 = client.exists(keys.members()).await.unwrap();
    assert_eq!(left, 1, "the hub itself is still a member");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_uses_validators_held_by_another_hub() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let (base, sites_stop) = demo_sites(Default::default()).await;
    let a = TestHub::start(cluster_settings(&db, &redis, "hub-a")).await;
    let b = TestHub::start(cluster_settings(&db, &redis, "hub-b")).await;
    // Every validator connects to hub A only.
    let stop = tokio_util::sync::CancellationToken::new();
    for (i, region) in ["eu-west", "us-east", "ap-south"].iter().enumerate() {
        let (h, _) = spawn_validator(&[a.ws_url()], 60 + i as u8, region, &stop);
        h.wait_until(|s| s.connected).await;
    }
    eventually(5, "both hubs in the ring", || {
        let ok =
            gauge(&a, "uptime_hub_ring_members") == 2 && gauge(&b, "uptime_hub_ring_members") == 2;
        async move { ok.then_some(()) }
    })
    .await;
    for _ in 0..20 {
        add_site(&db, &format!("{base}/up"), 2, 1_000, None).await;
    }
    // Hub B owns some sites and staffs their rounds with A's validators;
    // the results reach A, and their summaries let B close rounds early.
    let closed_early = eventually(
        20,
        "hub B's rounds to close early with 3 results",
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM rounds WHERE hub_id = 'hub-b' AND status = 'up'
               AND results_up = 3 AND closed_by = 'hub-b' AND closed_at < deadline",
            )
            .fetch_one(db.pool())
            .await
            .unwrap();
            (n >= 3).then_some(n)
        },
    )
    .await;
    assert!(closed_early >= 3);
    assert!(
        metric(
            &b.state,
            "uptime_hub_cross_hub_messages_total",
            &[("direction", "out")]
        ) > 0.0
    );
    assert!(
        metric(
            &a.state,
            "uptime_hub_cross_hub_messages_total",
            &[("direction", "in")]
        ) > 0.0
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM (SELECT 1 FROM rounds GROUP BY website_id, slot HAVING count(*) > 1) d").await,
        0,
        "no slot ran twice"
    );
    stop.cancel();
    a.stop().await;
    b.stop().await;
    sites_stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_to_another_hub_replaces_the_old_session() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let a = TestHub::start(cluster_settings(&db, &redis, "hub-a")).await;
    let b = TestHub::start(cluster_settings(&db, &redis, "hub-b")).await;
    // Hello does not wait for the presence claim, so hub A's claim may
    // still be on its way when the validator's hello reaches hub B: the
    // later hello stays either way (generations are hello times).
    let (mut old, _) = RawClient::login(&a.ws_url(), key(7), "eu-west").await;
    let (_new, _) = RawClient::login(&b.ws_url(), key(7), "eu-west").await;
    old.expect_error_and_close(protocol::ErrorCode::SessionReplaced)
        .await;
    a.stop().await;
    b.stop().await;
}

async fn redis_client(redis: &TestRedis) -> fred::prelude::Client {
    let client =
        fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&redis.url).unwrap())
            .build()
            .unwrap();
    client.init().await.unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_keeps_the_newest_session_whichever_claim_reaches_redis_first() {
    use hub::cluster::presence::{Claim, Local, Presence};
    let redis = TestRedis::new().await.unwrap();
    let client = redis_client(&redis).await;
    let keys = hub::cluster::Keys::new(redis.prefix.clone());
    let ttl = Duration::from_secs(10);
    let a = Presence::new(client.clone(), keys.clone(), "hub-a".into(), ttl);
    let b = Presence::new(client.clone(), keys.clone(), "hub-b".into(), ttl);
    let local = |key: &str, generation| Local {
        key: key.into(),
        generation,
        region: "eu-west".into(),
        capacity: 1,
        load: 0,
        prefix: hub::NetPrefix(0),
        counts: true,
    };
    let holder = |key: &str| {
        let (client, k) = (client.clone(), keys.validator_session(key));
        async move { client.get::<Option<String>, _>(k).await.unwrap() }
    };

    // The later hello's claim (generation 2000) lands first, the earlier
    // one's (1000) after it: the earlier session is told it lost.
    assert_eq!(b.claim("K", 2000).await.unwrap(), Claim::Won(None));
    assert_eq!(
        a.claim("K", 1000).await.unwrap(),
        Claim::Lost("hub-b".into(), 2000)
    );
    assert_eq!(holder("K").await.as_deref(), Some("hub-b|2000"));
    // In order, a newer session takes the key and learns whom to kick.
    assert_eq!(
        a.claim("K", 3000).await.unwrap(),
        Claim::Won(Some(("hub-b".into(), 2000)))
    );
    // Had that kick been lost, hub B's next announcement finds its session
    // superseded; hub A's extends its own claim.
    let found = b.publish(&[local("K", 2000)]).await.unwrap();
    assert_eq!(found.superseded, vec![0]);
    assert!(found.displaced.is_empty() && found.error.is_none());
    let found = a.publish(&[local("K", 3000)]).await.unwrap();
    assert!(found.superseded.is_empty() && found.displaced.is_empty());
    assert_eq!(holder("K").await.as_deref(), Some("hub-a|3000"));

    // A newer session whose own claim never landed (it failed, or Redis
    // lost it) takes the key over at an announcement and learns whom to
    // kick; the older session's next announcement finds it superseded.
    assert_eq!(b.claim("L", 1000).await.unwrap(), Claim::Won(None));
    let found = a
        .publish(&[local("K", 3000), local("L", 5000)])
        .await
        .unwrap();
    assert!(found.superseded.is_empty());
    assert_eq!(found.displaced, vec![(1, "hub-b".to_string(), 1000)]);
    assert_eq!(holder("L").await.as_deref(), Some("hub-a|5000"));
    assert_eq!(
        b.publish(&[local("L", 1000)]).await.unwrap().superseded,
        vec![0]
    );
    // A claim that vanished (Redis restarted empty) is restored, with
    // nobody to kick.
    let _: i64 = client.del(keys.validator_session("K")).await.unwrap();
    let found = a.publish(&[local("K", 3000)]).await.unwrap();
    assert!(found.superseded.is_empty() && found.displaced.is_empty());
    assert_eq!(holder("K").await.as_deref(), Some("hub-a|3000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_key_a_newer_session_already_holds_is_closed() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let a = TestHub::start(cluster_settings(&db, &redis, "hub-a")).await;
    // Another hub's session of this key said hello a minute "later" than
    // anything this hub can see now, and its claim is already in Redis.
    let client = redis_client(&redis).await;
    let claim = hub::cluster::Keys::new(redis.prefix.clone())
        .validator_session(&protocol::PublicKey::from(&key(9)).to_string());
    let later = (protocol::now_ms() as u64 + 60_000) * 1000;
    let _: () = client
        .set(claim.clone(), format!("hub-z|{later}"), None, None, false)
        .await
        .unwrap();
    let (mut session, _) = RawClient::login(&a.ws_url(), key(9), "eu-west").await;
    session
        .expect_error_and_close(protocol::ErrorCode::SessionReplaced)
        .await;
    let v: Option<String> = client.get(claim).await.unwrap();
    assert_eq!(v, Some(format!("hub-z|{later}")), "the newer claim stands");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_started_while_redis_is_unreachable_joins_once_it_is_back() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let proxy = test_support::TcpProxy::start(redis.addr()).await.unwrap();
    proxy.mode(test_support::Mode::Reset);
    let mut cut = cluster_settings(&db, &redis, "hub-a");
    cut.redis_url = proxy.url_for("redis").into();
    let a = TestHub::start(cut).await;
    let b = TestHub::start(cluster_settings(&db, &redis, "hub-b")).await;
    eventually(5, "hub B alone in Redis", || {
        let n = gauge(&b, "uptime_hub_ring_members");
        async move { (n == 1).then_some(()) }
    })
    .await;
    eventually(5, "hub A to notice Redis is unreachable", || {
        let n = metric(&a.state, "uptime_hub_redis_errors_total", &[]);
        async move { (n >= 1.0).then_some(()) }
    })
    .await;
    proxy.mode(test_support::Mode::Pass);
    eventually(10, "both hubs in one ring", || {
        let ok =
            gauge(&a, "uptime_hub_ring_members") == 2 && gauge(&b, "uptime_hub_ring_members") == 2;
        async move { ok.then_some(()) }
    })
    .await;
    a.stop().await;
    b.stop().await;
}
