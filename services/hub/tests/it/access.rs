//! Operator controls (issue 16, part 5): bans of keys and networks and the
//! allow-list mode, set with the real `hub validators` command, applied by
//! every hub of a cluster within 5 s, closing live sessions.

use std::net::IpAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use protocol::{ErrorCode, HubMessage};
use test_support::{TestDb, TestRedis};
use tokio::process::Command;

use crate::common::{key, metric, settings, RawClient, TestHub};

async fn hub_cli(db: &TestDb, args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("hub runs");
    assert!(
        o.status.success(),
        "hub {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn b58(n: u8) -> String {
    protocol::PublicKey::from(&key(n)).to_base58()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cluster_hub(db: &TestDb, redis: &TestRedis, id: &str) -> hub::Config {
    let mut s = settings(db);
    s.hub_id = id.into();
    s.redis_url = redis.url.clone().into();
    s.redis_prefix = redis.prefix.clone();
    s
}

/// Waits (at most 5 s from `since`) for the hub to close `c` with
/// `access_denied`, and returns the error's message.
async fn closed_for_access(c: &mut RawClient, since: Instant) -> String {
    let message = tokio::time::timeout(
        Duration::from_secs(5).saturating_sub(since.elapsed()),
        async {
            loop {
                match c.recv().await {
                    Some(HubMessage::Error(e)) if e.code == ErrorCode::AccessDenied => {
                        break e.message
                    }
                    Some(_) => continue,
                    None => panic!("closed without access_denied"),
                }
            }
        },
    )
    .await
    .expect("the session is closed within 5 s of the ban");
    c.expect_closed().await;
    message
}

#[tokio::test]
async fn banned_keys_and_networks_are_refused_and_their_sessions_close_on_every_hub() {
    let db = TestDb::new().await.unwrap();
    let redis = TestRedis::new().await.unwrap();
    let a = TestHub::start(cluster_hub(&db, &redis, "hub-a")).await;
    let b = TestHub::start(cluster_hub(&db, &redis, "hub-b")).await;

    // Key 1 on hub A, key 2 on hub B, key 3 (never banned) on each.
    let mut on_a = RawClient::connect_from(&a.ws_url(), key(1), ip("127.0.0.1")).await;
    on_a.try_hello("eu").await.expect("admitted");
    let mut on_b = RawClient::connect_from(&b.ws_url(), key(2), ip("127.0.0.1")).await;
    on_b.try_hello("us").await.expect("admitted");
    let mut keeps = RawClient::connect_from(&b.ws_url(), key(3), ip("127.0.0.1")).await;
    keeps.try_hello("ap").await.expect("admitted");

    let banned_at = Instant::now();
    hub_cli(
        &db,
        &["validators", "ban", &b58(1), "--reason", "lazy results"],
    )
    .await;
    hub_cli(&db, &["validators", "ban", &b58(2)]).await;
    let why = closed_for_access(&mut on_a, banned_at).await;
    assert!(
        why.contains("banned") && why.contains("lazy results"),
        "{why}"
    );
    closed_for_access(&mut on_b, banned_at).await;
    eprintln!(
        "both sessions closed {:?} after the bans",
        banned_at.elapsed()
    );

    // Key 3 was not touched.
    keeps
        .send(&protocol::ValidatorMessage::Heartbeat(
            protocol::Heartbeat {
                seq: 1,
                in_flight: 0,
            },
        ))
        .await;
    keeps
        .recv_until(|m| matches!(m, HubMessage::HeartbeatAck(_)).then_some(()))
        .await;

    // A banned key is refused at hello on either hub.
    for hub in [&a, &b] {
        let mut again = RawClient::connect_from(&hub.ws_url(), key(1), ip("127.0.0.1")).await;
        let e = again.try_hello("eu").await.expect_err("refused");
        assert_eq!(e.code, ErrorCode::AccessDenied);
        again.expect_closed().await;
    }
    let refused = metric(&a.state, "uptime_hub_sessions_refused_total", &[]);
    assert_eq!(refused, 1.0);

    // Unbanned: welcome again.
    hub_cli(&db, &["validators", "unban", &b58(1)]).await;
    crate::common::eventually(5, "key 1 admitted after unban", || async {
        let mut c = RawClient::connect_from(&a.ws_url(), key(1), ip("127.0.0.1")).await;
        c.try_hello("eu").await.ok()
    })
    .await;

    // A network ban: every key from 127.0.0.0/24 goes, 127.0.1.1 stays.
    let mut other_net = RawClient::connect_from(&a.ws_url(), key(4), ip("127.0.1.1")).await;
    other_net.try_hello("eu").await.expect("admitted");
    let banned_at = Instant::now();
    hub_cli(
        &db,
        &[
            "validators",
            "ban",
            "127.0.0.0/24",
            "--reason",
            "one operator",
        ],
    )
    .await;
    let why = closed_for_access(&mut keeps, banned_at).await;
    assert!(why.contains("127.0.0.0/24"), "{why}");
    let mut same_net = RawClient::connect_from(&b.ws_url(), key(5), ip("127.0.0.9")).await;
    let e = same_net.try_hello("eu").await.expect_err("refused");
    assert_eq!(e.code, ErrorCode::AccessDenied);
    other_net
        .send(&protocol::ValidatorMessage::Heartbeat(
            protocol::Heartbeat {
                seq: 1,
                in_flight: 0,
            },
        ))
        .await;
    other_net
        .recv_until(|m| matches!(m, HubMessage::HeartbeatAck(_)).then_some(()))
        .await;

    // The CLI lists the rules and shows the ban beside the validator.
    let rules = String::from_utf8(hub_cli(&db, &["validators", "rules"]).await.stdout).unwrap();
    assert!(
        rules.contains("127.0.0.0/24") && rules.contains("one operator"),
        "{rules}"
    );
    let list = String::from_utf8(hub_cli(&db, &["validators", "list"]).await.stdout).unwrap();
    let row = list
        .lines()
        .find(|l| l.starts_with(&b58(2)))
        .expect("key 2 listed");
    assert!(row.contains("banned") && row.contains("us"), "{list}");

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn allowlist_mode_admits_listed_keys_only() {
    let db = TestDb::new().await.unwrap();
    let mut s = settings(&db);
    s.validator_access = "allowlist".into();
    let hub = TestHub::start(s).await;

    let mut stranger = RawClient::connect_from(&hub.ws_url(), key(7), ip("127.0.0.1")).await;
    let e = stranger.try_hello("eu").await.expect_err("refused");
    assert_eq!(e.code, ErrorCode::AccessDenied);
    assert!(
        e.message.contains("listed validators only"),
        "{}",
        e.message
    );
    stranger.expect_closed().await;

    hub_cli(
        &db,
        &["validators", "allow", &b58(7), "--reason", "our node"],
    )
    .await;
    let mut listed = crate::common::eventually(5, "key 7 admitted once allowed", || async {
        let mut c = RawClient::connect_from(&hub.ws_url(), key(7), ip("127.0.0.1")).await;
        c.try_hello("eu").await.ok().map(|_| c)
    })
    .await;

    let taken_off = Instant::now();
    hub_cli(&db, &["validators", "disallow", &b58(7)]).await;
    closed_for_access(&mut listed, taken_off).await;
    hub.stop().await;
}

#[tokio::test]
async fn the_cli_refuses_what_names_no_key_or_network() {
    let db = TestDb::new().await.unwrap();
    for bad in ["not-a-key", "10.1.2.3/24", "10.0.0.0/33"] {
        let o = Command::new(env!("CARGO_BIN_EXE_hub"))
            .args(["validators", "ban", bad])
            .env("DATABASE_URL", &db.url)
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{bad}: accepted");
        assert!(
            err.contains("neither a public key nor a network") || err.contains("host bits"),
            "{bad}: {err}"
        );
    }
    let o = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["validators", "unban", &b58(9)])
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not banned"));
}
