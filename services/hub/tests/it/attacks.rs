//! Cheap attacks on the hub (issue 10, section 4): silent sockets, hello
//! floods with fresh keys, and the HTTP read endpoints. Each test runs the
//! real hub on loopback; attackers use other loopback addresses
//! (127.0.0.2, ...) as their source, so the hub sees distinct clients.

use crate::common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ed25519_dalek::SigningKey;
use protocol::crypto::sign_result;
use protocol::{
    now_ms, CheckResult, CheckStatus, ErrorCode, HubMessage, PublicKey, ValidatorMessage,
};
use test_support::TestDb;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::MaybeTlsStream;
use uuid::Uuid;

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A TCP connection to `hub` from source address `from`.
async fn tcp_from(from: IpAddr, hub: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    sock.connect(hub).await.unwrap()
}

/// A WebSocket upgrade from `from`: the client after the challenge, or the
/// HTTP status the hub refused the upgrade with.
async fn ws_from(from: IpAddr, hub: &TestHub, key: SigningKey) -> Result<RawClient, u16> {
    let tcp = tcp_from(from, hub.addr).await;
    match tokio_tungstenite::client_async(hub.ws_url(), MaybeTlsStream::Plain(tcp)).await {
        Ok((mut ws, _)) => {
            let nonce = match next_msg(&mut ws).await {
                Some(HubMessage::Challenge(c)) => c.nonce,
                other => panic!("expected challenge, got {other:?}"),
            };
            Ok(RawClient { ws, key, nonce })
        }
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("upgrade failed oddly: {e}"),
    }
}

/// Fresh keys, distinct from `common::key(n)` (all bytes `n`).
fn fresh_key(n: u32) -> SigningKey {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&n.to_le_bytes());
    SigningKey::from_bytes(&seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_from_one_address_do_not_lock_out_an_honest_validator() {
    let db = TestDb::new().await.unwrap();
    let mut s = settings(&db);
    // Silent sockets would otherwise hold their slot until the auth timeout.
    s.auth_timeout_ms = 30_000;
    s.max_connections = 24;
    s.max_preauth_connections = 8;
    s.max_preauth_per_ip = 4;
    let hub = TestHub::start(s).await;

    // 3x the pre-auth cap of silent sockets, all from one address.
    let mut silent = Vec::new();
    let mut refused = Vec::new();
    for n in 0..24 {
        match ws_from(ATTACKER, &hub, fresh_key(n)).await {
            Ok(c) => silent.push(c),
            Err(status) => refused.push(status),
        }
    }
    assert_eq!(silent.len(), 4, "the per-address pre-auth limit holds");
    assert!(refused.iter().all(|s| *s == 429), "{refused:?}");
    assert_eq!(
        metric(
            &hub.state,
            "uptime_hub_connections_refused_total",
            &[("reason", "preauth_per_ip")]
        ),
        20.0
    );

    // An honest validator from another address still gets in.
    let (mut honest, w) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    assert_eq!(w.hub_id, hub.id);
    // Once it said hello, it no longer counts as pre-auth.
    assert_eq!(
        metric(&hub.state, "uptime_hub_preauth_connections", &[]),
        4.0
    );
    drop(silent);
    honest.ws.close(None).await.unwrap();
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_auth_cap_is_separate_from_the_total() {
    // Many addresses, each under its own limit, fill the pre-auth cap: the
    // next upgrade gets 503, and validators already connected are untouched.
    let db = TestDb::new().await.unwrap();
    let mut s = settings(&db);
    s.auth_timeout_ms = 30_000;
    s.max_preauth_connections = 6;
    s.max_preauth_per_ip = 2;
    let hub = TestHub::start(s).await;
    let (mut honest, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    let mut silent = Vec::new();
    for n in 0..3u8 {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 1, n + 1));
        for k in 0..2 {
            silent.push(
                ws_from(from, &hub, fresh_key(u32::from(n) * 10 + k))
                    .await
                    .unwrap(),
            );
        }
    }
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 9));
    assert_eq!(ws_from(from, &hub, fresh_key(99)).await.err(), Some(503));
    // The connected validator still talks to the hub.
    honest
        .send(&ValidatorMessage::Heartbeat(protocol::Heartbeat {
            seq: 1,
            in_flight: 0,
        }))
        .await;
    honest
        .recv_until(|m| matches!(m, HubMessage::HeartbeatAck(_)).then_some(()))
        .await;
    drop(silent);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_never_sends_a_request_is_closed() {
    let db = TestDb::new().await.unwrap();
    let mut s = settings(&db);
    s.http_timeout_ms = 500;
    let hub = TestHub::start(s).await;
    let mut tcp = tcp_from(ATTACKER, hub.addr).await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf))
        .await
        .expect("the hub closes a silent TCP connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hellos_from_one_address_are_rate_limited() {
    // Defaults: 5 hellos per second per address, burst 20.
    let db = TestDb::new().await.unwrap();
    let hub = TestHub::start(settings(&db)).await;
    let (mut welcomed, mut limited) = (0, 0);
    for n in 0..40 {
        let mut c = ws_from(ATTACKER, &hub, fresh_key(n)).await.unwrap();
        let h = hello(&c.key, &c.nonce, "eu-west");
        c.send(&ValidatorMessage::Hello(h)).await;
        match c.recv().await {
            Some(HubMessage::Welcome(_)) => welcomed += 1,
            Some(HubMessage::Error(e)) if e.code == ErrorCode::RateLimited => {
                c.expect_closed().await;
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(limited >= 10, "welcomed {welcomed}, rate limited {limited}");
    assert!(welcomed >= 20, "the burst passes: welcomed {welcomed}");
    // Another address is not affected.
    let (_honest, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_that_never_returned_a_result_are_forgotten() {
    let db = TestDb::new().await.unwrap();
    let hub = TestHub::start(settings(&db)).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let (c, w) = RawClient::login(&hub.ws_url(), fresh_key(n), "eu-west").await;
        ids.push(store::ValidatorId(w.validator_id));
        drop(c);
    }
    // One of them returned a result.
    let site = add_site(&db, "http://example.com/", 60, 1000, None).await;
    let at = now_ms();
    let round = db
        .store
        .open_rounds(
            "hub-test",
            &[store::NewRound {
                website_id: site,
                slot: 1,
                scheduled_at_ms: at,
                deadline_ms: at + 1000,
            }],
        )
        .await
        .unwrap()[0]
        .round_id;
    db.store
        .insert_ticks(
            "hub-test",
            &[store::NewTick {
                website_id: site,
                round_id: round,
                validator_id: ids[0],
                task_id: Uuid::now_v7(),
                scheduled_at_ms: at,
                up: true,
                http_status: Some(200),
                latency_ms: 1,
                error: None,
                checked_at_ms: at,
                received_at_ms: at,
                reward_lamports: 1,
                evidence: None,
            }],
        )
        .await
        .unwrap();
    // Not yet idle long enough: nothing goes.
    let gone = db
        .store
        .forget_unused_validators(Duration::from_secs(3600), 100)
        .await
        .unwrap();
    assert_eq!(gone, 0);
    let gone = db
        .store
        .forget_unused_validators(Duration::ZERO, 100)
        .await
        .unwrap();
    assert_eq!(gone, 4);
    let left: Vec<store::ValidatorId> = sqlx::query_scalar("SELECT id FROM validators ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(left, vec![ids[0]]);
    // Kept validators are not looked at again.
    assert_eq!(
        db.store
            .forget_unused_validators(Duration::ZERO, 100)
            .await
            .unwrap(),
        0
    );
    // A forgotten key that comes back gets a row again.
    let (_c, w) = RawClient::login(&hub.ws_url(), fresh_key(1), "eu-west").await;
    assert!(store::ValidatorId(w.validator_id) > ids[4]);
    hub.stop().await;
}

#[tokio::test]
async fn the_earnings_summary_follows_settlement() {
    // What the endpoint serves from the summary equals what the per-request
    // join computed, before and after the round is settled.
    let db = TestDb::new().await.unwrap();
    let key = PublicKey::from(&fresh_key(5)).to_base58();
    let at = now_ms() - 1_000;
    let (v, site, round) = validator_and_round(&db, &key, at, at + 500).await;
    let ticks: Vec<store::NewTick> = (0..3)
        .map(|_| store::NewTick {
            website_id: site,
            round_id: round,
            validator_id: v,
            task_id: Uuid::now_v7(),
            scheduled_at_ms: at,
            up: true,
            http_status: Some(200),
            latency_ms: 1,
            error: None,
            checked_at_ms: at,
            received_at_ms: at,
            reward_lamports: 1_000,
            evidence: None,
        })
        .collect();
    db.store.insert_ticks("hub-test", &ticks).await.unwrap();
    db.store.refresh_earnings_summary().await.unwrap();
    let summary = db.store.earnings_summary(&key).await.unwrap().unwrap();
    assert_eq!(summary.settling_lamports, 3_000);
    assert_eq!(summary, db.store.earnings(&key).await.unwrap().unwrap());

    db.store
        .close_rounds(&[round], "hub-test", &[])
        .await
        .unwrap();
    let epoch = db.store.next_epoch("payouts").await.unwrap();
    db.store
        .settle_rounds(epoch, Duration::ZERO, 100)
        .await
        .unwrap();
    db.store.refresh_earnings_summary().await.unwrap();
    let summary = db.store.earnings_summary(&key).await.unwrap().unwrap();
    assert_eq!(
        (summary.settling_lamports, summary.earned_lamports),
        (0, 3_000)
    );
    assert_eq!(summary, db.store.earnings(&key).await.unwrap().unwrap());
    assert!(db.store.earnings_summary("nobody").await.unwrap().is_none());
}

/// A validator row for `key`, a website, and one open round of it
/// scheduled at `at`: `(validator_id, website_id, round_id)`.
async fn validator_and_round(
    db: &TestDb,
    key: &str,
    at: i64,
    deadline_ms: i64,
) -> (store::ValidatorId, store::WebsiteId, store::RoundId) {
    let v = db
        .store
        .upsert_validator(key, "eu-west", &[], "t")
        .await
        .unwrap();
    let site = add_site(db, "http://example.com/", 60, 1000, None).await;
    let round = db
        .store
        .open_rounds(
            "hub-test",
            &[store::NewRound {
                website_id: site,
                slot: 1,
                scheduled_at_ms: at,
                deadline_ms,
            }],
        )
        .await
        .unwrap()[0]
        .round_id;
    (v, site, round)
}

/// Sends signed results at `per_sec` until `stop`, reading acks as they come.
async fn feed(mut c: RawClient, per_sec: u64, stop: Arc<AtomicBool>) {
    let me = PublicKey::from(&c.key);
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / per_sec));
    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            _ = tick.tick() => {
                let mut r = CheckResult::for_task(&mint_task(me, now_ms() + 60_000), CheckStatus::Up, Some(200), 5, None, now_ms());
                sign_result(&c.key, &mut r);
                c.send(&ValidatorMessage::Result(r)).await;
            }
            m = c.recv() => if m.is_none() { panic!("the hub closed a feeding session") },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earnings_requests_do_not_slow_ingest() {
    let db = TestDb::new().await.unwrap();
    let mut s = settings(&db);
    s.max_messages_per_sec = 1_000;
    s.message_burst = 1_000;
    let hub = TestHub::start(s).await;

    // A validator with a long history: 300k stored ticks in a round not
    // settled yet (what made each request a large join before).
    let rich = fresh_key(1_000_000);
    let rich_key = PublicKey::from(&rich).to_base58();
    let at = now_ms() - 60_000;
    let (rich_id, site, round) = validator_and_round(&db, &rich_key, at, at + 1000).await;
    sqlx::query(
        "INSERT INTO ticks (website_id, round_id, validator_id, task_id, scheduled_at, status, \
           latency_ms, checked_at, reward_lamports, hub_id) \
         SELECT $1, $2, $3, gen_random_uuid(), to_timestamp($4 / 1000.0), 'up', 1, now(), 1000, 'x' \
           FROM generate_series(1, 300000)",
    )
    .bind(site)
    .bind(round)
    .bind(rich_id)
    .bind(at)
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE ticks")
        .execute(db.pool())
        .await
        .unwrap();

    // Ingest: 6 validators at 100 results/s each.
    let stop = Arc::new(AtomicBool::new(false));
    let mut feeders = Vec::new();
    for n in 0..6 {
        let (c, _) = RawClient::login(&hub.ws_url(), fresh_key(n), "eu-west").await;
        feeders.push(tokio::spawn(feed(c, 100, stop.clone())));
    }
    let written = || metric(&hub.state, "uptime_hub_ticks_written_total", &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let phase = Duration::from_secs(6);

    let t0 = written();
    tokio::time::sleep(phase).await;
    let quiet = written() - t0;

    // The same, with 200 clients asking for the rich validator's earnings.
    let url = format!("http://{}/v1/validators/{rich_key}/earnings", hub.addr);
    let http = reqwest::Client::new();
    let asking = Arc::new(AtomicBool::new(true));
    let (ok, busy) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut askers = Vec::new();
    for _ in 0..200 {
        let (http, url, asking, ok, busy) = (
            http.clone(),
            url.clone(),
            asking.clone(),
            ok.clone(),
            busy.clone(),
        );
        askers.push(tokio::spawn(async move {
            while asking.load(Ordering::Relaxed) {
                match http.get(&url).timeout(Duration::from_secs(30)).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) if r.status() == 503 => busy.fetch_add(1, Ordering::Relaxed),
                    other => panic!("unexpected answer {other:?}"),
                };
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t1 = written();
    tokio::time::sleep(phase).await;
    let loaded = written() - t1;
    asking.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for a in askers {
        tokio::time::timeout(Duration::from_secs(40), a)
            .await
            .expect("earnings requests end")
            .unwrap();
    }
    for f in feeders {
        f.await.unwrap();
    }
    eprintln!(
        "ticks written: {quiet} without requests, {loaded} with; earnings 200: {}, 503: {}",
        ok.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed)
    );
    assert!(quiet > 1_000.0, "ingest ran: {quiet}");
    assert!(
        loaded >= quiet * 0.9,
        "ticks/s with earnings requests ({loaded}) within 10% of without ({quiet})"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 0,
        "some requests were answered"
    );
    hub.stop().await;
}
