//! Several hubs over one Redis: membership, ownership, convergence.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fred::interfaces::{ClientLike, KeysInterface, PubsubInterface, SortedSetsInterface};
use test_support::{TestDb, TestRedis};

fn cluster_settings(db: &TestDb, redis: &TestRedis, id: &str) -> hub::Settings {
    let mut s = settings(db);
    s.hub_id = id.into();
    s.redis_url = redis.url.clone();
    s.redis_prefix = redis.prefix.clone();
    s.announce_interval_ms = 200;
    // Only ring changes and NOTIFY may drive reloads here.
    s.reload_interval_ms = 600_000;
    s
}

fn gauge(h: &TestHub, name: &str) -> i64 {
    metric(&h.state, name, "") as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_split_the_websites_and_take_over_when_one_leaves() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    for i in 0..60 {
        add_site(&db, &format!("http://127.0.0.1:9/{i}"), 60, 1_000, None).await;
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
    let client =
        fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&redis.url).unwrap())
            .build()
            .unwrap();
    client.init().await.unwrap();
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
            "direction=\"out\""
        ) > 0.0
    );
    assert!(
        metric(
            &a.state,
            "uptime_hub_cross_hub_messages_total",
            "direction=\"in\""
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
    let (mut old, _) = RawClient::login(&a.ws_url(), key(7), "eu-west").await;
    // Hello does not wait for the presence claim: let hub A's claim land
    // first, as it does when a validator reconnects later. (Two hellos in
    // the same instant on two hubs are ordered by whichever claim Redis runs
    // last; see ARCHITECTURE.md, Presence.)
    let claim = hub::cluster::Keys::new(redis.prefix.clone())
        .validator_session(&protocol::PublicKey::from(&key(7)).to_string());
    let client =
        fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&redis.url).unwrap())
            .build()
            .unwrap();
    fred::interfaces::ClientLike::init(&client).await.unwrap();
    eventually(10, "hub A's presence claim", || {
        let (client, claim) = (client.clone(), claim.clone());
        async move {
            let v: Option<String> = fred::interfaces::KeysInterface::get(&client, claim)
                .await
                .unwrap();
            v.filter(|v| v.starts_with("hub-a|"))
        }
    })
    .await;
    let (_new, _) = RawClient::login(&b.ws_url(), key(7), "eu-west").await;
    let code = old
        .recv_until(|m| match m {
            protocol::HubMessage::Error(e) => Some(e.code),
            _ => None,
        })
        .await;
    assert_eq!(code, protocol::ErrorCode::SessionReplaced);
    old.expect_closed().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_started_while_redis_is_unreachable_joins_once_it_is_back() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let proxy = test_support::TcpProxy::start(redis.addr()).await.unwrap();
    proxy.mode(test_support::Mode::Reset);
    let mut cut = cluster_settings(&db, &redis, "hub-a");
    cut.redis_url = proxy.url_for("redis");
    let a = TestHub::start(cut).await;
    let b = TestHub::start(cluster_settings(&db, &redis, "hub-b")).await;
    eventually(5, "hub B alone in Redis", || {
        let n = gauge(&b, "uptime_hub_ring_members");
        async move { (n == 1).then_some(()) }
    })
    .await;
    eventually(5, "hub A to notice Redis is unreachable", || {
        let n = metric(&a.state, "uptime_hub_redis_errors_total", "");
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
