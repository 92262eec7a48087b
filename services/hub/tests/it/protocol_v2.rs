//! Protocol 2 (issue 16, parts 1 and 5): results carry signed evidence, a
//! hello may name a payout address, and hubs serve version 1 and 2 peers
//! side by side (a rolling upgrade).

use ed25519_dalek::SigningKey;
use protocol::crypto::{sign_hello, sign_result};
use protocol::{
    AckOutcome, CheckResult, CheckStatus, ErrorCode, Evidence, HubMessage, PublicKey,
    ValidatorMessage,
};
use test_support::TestDb;
use tokio_util::sync::CancellationToken;

use crate::common::{
    add_site, demo_sites, eventually, hello, key, settings, spawn_validator, stop_validators,
    RawClient, TestHub,
};

/// Connects and says a hello of `versions`, with `payout`.
async fn hello_with(
    hub: &TestHub,
    k: SigningKey,
    versions: Vec<u16>,
    payout: Option<PublicKey>,
) -> (RawClient, Result<protocol::Welcome, protocol::ErrorFrame>) {
    let mut c = RawClient::connect(&hub.ws_url(), k).await;
    let mut h = hello(&c.key, &c.nonce, "eu");
    h.protocol_versions = versions;
    h.payout_address = payout;
    sign_hello(&c.key, &c.nonce, &mut h);
    c.send(&ValidatorMessage::Hello(h)).await;
    let answer = match c.recv().await {
        Some(HubMessage::Welcome(w)) => Ok(w),
        Some(HubMessage::Error(e)) => Err(e),
        other => panic!("expected welcome or error, got {other:?}"),
    };
    (c, answer)
}

/// The ack of the result `c` sends for its next task, with `edit` applied
/// before signing.
async fn answer_next_task(
    c: &mut RawClient,
    edit: impl FnOnce(&mut CheckResult),
) -> protocol::ResultAck {
    let task = c
        .recv_until(|m| match m {
            HubMessage::Task(t) => Some(t),
            _ => None,
        })
        .await;
    let mut r = CheckResult::for_task(
        &task,
        CheckStatus::Up,
        Some(200),
        5,
        None,
        protocol::now_ms(),
    );
    edit(&mut r);
    sign_result(&c.key, &mut r);
    c.send(&ValidatorMessage::Result(r)).await;
    c.recv_until(|m| match m {
        HubMessage::ResultAck(a) if a.task_id == task.task_id => Some(a),
        _ => None,
    })
    .await
}

fn evidence() -> Evidence {
    Evidence {
        body_sha256: Some(protocol::Digest::of(b"hello")),
        body_bytes: 5,
        remote_ip: Some("127.0.0.1".parse().unwrap()),
    }
}

#[tokio::test]
async fn each_version_gets_its_own_rules_for_evidence_and_payout_addresses() {
    let db = TestDb::new().await.unwrap();
    let hub = TestHub::start(settings(&db)).await;
    add_site(&db, "http://127.0.0.1:8080/v2", 1, 500, None).await;

    // A payout address on a version 1 session: refused.
    let payout = PublicKey::from(&key(90));
    let (_c, answer) = hello_with(&hub, key(1), vec![1], Some(payout)).await;
    let e = answer.expect_err("refused");
    assert_eq!(e.code, ErrorCode::InvalidHello);
    assert!(e.message.contains("protocol 2"), "{}", e.message);

    // Version 2 with a payout address: welcomed at 2, recorded.
    let (mut v2, answer) = hello_with(&hub, key(2), vec![1, 2], Some(payout)).await;
    assert_eq!(answer.expect("welcome").protocol_version, 2);
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT payout_address FROM validators WHERE public_key = $1")
            .bind(PublicKey::from(&key(2)).to_base58())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(recorded, Some(payout.to_base58()));

    // Another validator naming the same address, or key 2 as its address:
    // refused, so every payout account names one validator.
    for (k, addr) in [(key(3), payout), (key(4), PublicKey::from(&key(2)))] {
        let (_c, answer) = hello_with(&hub, k, vec![2], Some(addr)).await;
        let e = answer.expect_err("refused");
        assert_eq!(e.code, ErrorCode::InvalidHello);
        assert!(e.message.contains("another validator"), "{}", e.message);
    }

    // Version 2 results need evidence; version 1 results must not carry it.
    let ack = answer_next_task(&mut v2, |_| {}).await;
    assert_eq!(
        (ack.outcome, ack.code),
        (AckOutcome::Rejected, Some(ErrorCode::InvalidResult))
    );
    let ack = answer_next_task(&mut v2, |r| r.evidence = Some(evidence())).await;
    assert_eq!(ack.outcome, AckOutcome::Stored);
    let (mut v1, answer) = hello_with(&hub, key(5), vec![1], None).await;
    assert_eq!(answer.expect("welcome").protocol_version, 1);
    let ack = answer_next_task(&mut v1, |r| r.evidence = Some(evidence())).await;
    assert_eq!(
        (ack.outcome, ack.code),
        (AckOutcome::Rejected, Some(ErrorCode::InvalidResult))
    );
    let ack = answer_next_task(&mut v1, |_| {}).await;
    assert_eq!(ack.outcome, AckOutcome::Stored);

    // Evidence that claims more than it may hash: refused.
    let ack = answer_next_task(&mut v2, |r| {
        r.evidence = Some(Evidence {
            body_bytes: protocol::limits::EVIDENCE_BODY_BYTES as u32 + 1,
            ..evidence()
        })
    })
    .await;
    assert_eq!(ack.code, Some(ErrorCode::InvalidResult));

    // The stored evidence is what was signed; version 1 rows have none.
    type Row = (String, Option<Vec<u8>>, Option<i32>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT v.public_key, t.evidence_sha256, t.evidence_bytes, host(t.remote_ip) \
           FROM ticks t JOIN validators v ON v.id = t.validator_id ORDER BY v.public_key",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let of = |k: u8| {
        rows.iter()
            .find(|r| r.0 == PublicKey::from(&key(k)).to_base58())
            .cloned()
            .expect("a stored tick")
    };
    let two = of(2);
    assert_eq!(
        two.1.as_deref(),
        Some(&protocol::Digest::of(b"hello").0[..])
    );
    assert_eq!((two.2, two.3.as_deref()), (Some(5), Some("127.0.0.1")));
    assert_eq!(of(5).1, None);
    hub.stop().await;
}

#[tokio::test]
async fn the_reference_validator_signs_what_it_saw_and_names_its_payout_address() {
    let db = TestDb::new().await.unwrap();
    let hub = TestHub::start(settings(&db)).await;
    let (base, stop_sites) = demo_sites(demo_sites::Config::default()).await;
    add_site(&db, &format!("{base}/up"), 1, 2_000, None).await;
    let stop = CancellationToken::new();
    let payout = PublicKey::from(&key(91));
    let mut cfg = validator::RunConfig::new(hub.ws_url().parse().unwrap());
    cfg.region = "eu".into();
    cfg.allow_private_targets = true;
    cfg.payout_address = Some(payout);
    let v = validator::spawn(cfg, key(11), stop.clone());
    let other = spawn_validator(&[hub.ws_url()], 12, "us", &stop);

    let (digest, bytes, ip): (Vec<u8>, i32, String) =
        eventually(20, "an evidenced tick", || async {
            sqlx::query_as(
                "SELECT t.evidence_sha256, t.evidence_bytes, host(t.remote_ip) FROM ticks t \
               JOIN validators v ON v.id = t.validator_id \
              WHERE v.public_key = $1 AND t.status = 'up' AND t.evidence_sha256 IS NOT NULL \
              LIMIT 1",
            )
            .bind(PublicKey::from(&key(11)).to_base58())
            .fetch_optional(db.pool())
            .await
            .unwrap()
        })
        .await;
    // What the demo page serves, hashed here the same way.
    let body = reqwest::get(format!("{base}/up"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let n = body.len().min(protocol::limits::EVIDENCE_BODY_BYTES);
    assert_eq!(bytes as usize, n);
    assert_eq!(digest, protocol::Digest::of(&body[..n]).0.to_vec());
    assert_eq!(ip, "127.0.0.1");
    let named: Option<String> =
        sqlx::query_scalar("SELECT payout_address FROM validators WHERE public_key = $1")
            .bind(PublicKey::from(&key(11)).to_base58())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(named, Some(payout.to_base58()));
    stop_validators(&stop, vec![v, other]).await;
    stop_sites.cancel();
    hub.stop().await;
}
