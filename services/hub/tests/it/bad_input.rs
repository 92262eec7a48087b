//! Every kind of bad input gets its documented error code, the session is
//! kept or closed as docs/protocol.md says, and nothing is written.

use crate::common;

use common::*;
use protocol::crypto::sign_result;
use protocol::{
    now_ms, AckOutcome, CheckResult, CheckStatus, ErrorCode, Heartbeat, HubMessage, PublicKey,
    Task, ValidatorMessage,
};
use test_support::TestDb;

async fn hub(db: &TestDb, edit: impl FnOnce(&mut hub::Config)) -> TestHub {
    let mut s = settings(db);
    edit(&mut s);
    TestHub::start(s).await
}

fn error_code(m: Option<HubMessage>) -> ErrorCode {
    match m {
        Some(HubMessage::Error(e)) => e.code,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

async fn ack(c: &mut RawClient) -> (AckOutcome, Option<ErrorCode>) {
    c.recv_until(|m| match m {
        HubMessage::ResultAck(a) => Some((a.outcome, a.code)),
        _ => None,
    })
    .await
}

async fn ticks(db: &TestDb) -> i64 {
    count(db, "SELECT count(*) FROM ticks").await
}

#[tokio::test]
async fn malformed_and_unknown_frames_keep_the_session() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |_| {}).await;
    let (mut c, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    c.send_text("{not json".into()).await;
    assert_eq!(error_code(c.recv().await), ErrorCode::MalformedFrame);
    c.send_text(r#"{"type":"launch_missiles"}"#.into()).await;
    assert_eq!(error_code(c.recv().await), ErrorCode::UnknownType);
    c.send_text(r#"{"type":"result","task_id":"nope"}"#.into())
        .await;
    assert_eq!(error_code(c.recv().await), ErrorCode::MalformedFrame);
    // Still alive.
    c.send(&ValidatorMessage::Heartbeat(Heartbeat {
        seq: 7,
        in_flight: 0,
    }))
    .await;
    assert!(matches!(c.recv().await, Some(HubMessage::HeartbeatAck(a)) if a.seq == 7));
    // A second hello is refused but harmless.
    let h = hello(&c.key, &c.nonce, "eu-west");
    c.send(&ValidatorMessage::Hello(h)).await;
    assert_eq!(error_code(c.recv().await), ErrorCode::AlreadyAuthenticated);
    assert_eq!(ticks(&db).await, 0);
    assert_eq!(
        metric(
            &hub.state,
            "uptime_hub_protocol_errors_total",
            &[("code", "malformed_frame")]
        ),
        2.0
    );
    hub.stop().await;
}

#[tokio::test]
async fn oversized_frame_is_refused_and_closes() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |s| s.max_frame_bytes = 4096).await;
    let (mut c, w) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    assert_eq!(w.limits.max_frame_bytes, 4096);
    c.send_text(format!(
        r#"{{"type":"heartbeat","pad":"{}"}}"#,
        "x".repeat(5000)
    ))
    .await;
    assert_eq!(error_code(c.recv().await), ErrorCode::FrameTooLarge);
    c.expect_closed().await;
    hub.stop().await;
}

#[tokio::test]
async fn hello_with_a_bad_signature_is_refused() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |_| {}).await;
    let mut c = RawClient::connect(&hub.ws_url(), key(1)).await;
    let mut h = hello(&c.key, &c.nonce, "eu-west");
    h.region = "us-east".into(); // altered after signing
    c.send(&ValidatorMessage::Hello(h)).await;
    assert_eq!(error_code(c.recv().await), ErrorCode::BadSignature);
    c.expect_closed().await;
    assert_eq!(count(&db, "SELECT count(*) FROM validators").await, 0);
    hub.stop().await;
}

#[tokio::test]
async fn hello_signed_over_an_old_nonce_is_refused() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |_| {}).await;
    let first = RawClient::connect(&hub.ws_url(), key(1)).await;
    let replayed = hello(&first.key, &first.nonce, "eu-west");
    let mut second = RawClient::connect(&hub.ws_url(), key(1)).await;
    assert_ne!(
        first.nonce, second.nonce,
        "every connection gets a fresh nonce"
    );
    second.send(&ValidatorMessage::Hello(replayed)).await;
    assert_eq!(error_code(second.recv().await), ErrorCode::BadSignature);
    second.expect_closed().await;
    assert_eq!(count(&db, "SELECT count(*) FROM validators").await, 0);
    hub.stop().await;
}

#[tokio::test]
async fn invalid_hello_fields_and_messages_before_hello_are_refused() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |_| {}).await;
    let mut c = RawClient::connect(&hub.ws_url(), key(1)).await;
    let mut h = hello(&c.key, &c.nonce, "EU WEST!");
    protocol::crypto::sign_hello(&c.key, &c.nonce, &mut h);
    c.send(&ValidatorMessage::Hello(h)).await;
    assert_eq!(error_code(c.recv().await), ErrorCode::InvalidHello);
    c.expect_closed().await;

    let mut c = RawClient::connect(&hub.ws_url(), key(1)).await;
    let mut h = hello(&c.key, &c.nonce, "eu-west");
    h.protocol_versions = vec![99];
    protocol::crypto::sign_hello(&c.key, &c.nonce, &mut h);
    c.send(&ValidatorMessage::Hello(h)).await;
    assert_eq!(error_code(c.recv().await), ErrorCode::UnsupportedVersion);
    c.expect_closed().await;

    let mut c = RawClient::connect(&hub.ws_url(), key(1)).await;
    c.send(&ValidatorMessage::Heartbeat(Heartbeat {
        seq: 1,
        in_flight: 0,
    }))
    .await;
    assert_eq!(error_code(c.recv().await), ErrorCode::NotAuthenticated);
    c.expect_closed().await;
    hub.stop().await;
}

#[tokio::test]
async fn no_hello_within_the_time_allowed_closes() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |s| s.auth_timeout_ms = 300).await;
    let mut c = RawClient::connect(&hub.ws_url(), key(1)).await;
    assert_eq!(error_code(c.recv().await), ErrorCode::AuthTimeout);
    c.expect_closed().await;
    hub.stop().await;
}

#[tokio::test]
async fn a_flood_past_the_rate_limit_closes() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |s| {
        s.max_messages_per_sec = 5;
        s.message_burst = 5;
    })
    .await;
    let (mut c, w) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    assert_eq!(w.limits.max_messages_per_sec, 5);
    let hb = ValidatorMessage::Heartbeat(Heartbeat {
        seq: 1,
        in_flight: 0,
    });
    for _ in 0..30 {
        c.send(&hb).await;
    }
    let code = c
        .recv_until(|m| match m {
            HubMessage::Error(e) => Some(e.code),
            _ => None,
        })
        .await;
    assert_eq!(code, ErrorCode::RateLimited);
    c.expect_closed().await;
    hub.stop().await;
}

#[tokio::test]
async fn bad_results_are_rejected_with_their_code_and_nothing_is_written() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |_| {}).await;
    let (mut a, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    let a_key = PublicKey::from(&key(1));
    let b_key = PublicKey::from(&key(2));
    let far = now_ms() + 60_000;

    // Signed by someone else than the session's key.
    let task = mint_task(a_key, far);
    a.send(&result(&task, &key(9))).await;
    assert_eq!(
        ack(&mut a).await,
        (AckOutcome::Rejected, Some(ErrorCode::BadSignature))
    );

    // A task assigned to another validator, presented as-is.
    let theirs = mint_task(b_key, far);
    a.send(&result(&theirs, &key(1))).await;
    assert_eq!(
        ack(&mut a).await,
        (AckOutcome::Rejected, Some(ErrorCode::NotAssigned))
    );

    // The same task with the assignee rewritten: the token no longer matches.
    let mut stolen = theirs.clone();
    stolen.validator = a_key;
    a.send(&result(&stolen, &key(1))).await;
    assert_eq!(
        ack(&mut a).await,
        (AckOutcome::Rejected, Some(ErrorCode::BadToken))
    );

    // After its deadline.
    let late = mint_task(a_key, now_ms() - 1);
    a.send(&result(&late, &key(1))).await;
    assert_eq!(
        ack(&mut a).await,
        (AckOutcome::Rejected, Some(ErrorCode::DeadlinePassed))
    );
    assert_eq!(ticks(&db).await, 0, "no rejected result is written");

    // A good one is stored once; its resend is a duplicate.
    let good = mint_task(a_key, far);
    a.send(&result(&good, &key(1))).await;
    assert_eq!(ack(&mut a).await, (AckOutcome::Stored, None));
    a.send(&result(&good, &key(1))).await;
    assert_eq!(ack(&mut a).await, (AckOutcome::Duplicate, None));
    assert_eq!(ticks(&db).await, 1);

    // The session survived all of it.
    a.send(&ValidatorMessage::Heartbeat(Heartbeat {
        seq: 2,
        in_flight: 0,
    }))
    .await;
    assert!(matches!(
        a.recv_until(|m| match m {
            HubMessage::HeartbeatAck(x) => Some(x.seq),
            _ => None,
        })
        .await,
        2
    ));
    for reason in [
        "bad_signature",
        "not_assigned",
        "bad_token",
        "deadline_passed",
    ] {
        assert_eq!(
            metric(
                &hub.state,
                "uptime_hub_results_rejected_total",
                &[("reason", reason)]
            ),
            1.0,
            "{reason} in\n{}",
            hub.state.metrics.render()
        );
    }
    assert_eq!(
        metric(&hub.state, "uptime_hub_ticks_written_total", &[]),
        1.0
    );
    assert_eq!(
        metric(&hub.state, "uptime_hub_ticks_duplicate_total", &[]),
        1.0
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_burst_of_results_is_acknowledged_in_full() {
    // 200 results sent back to back land in the writer together, so their
    // acks queue up for the session at once: every one must go out (the
    // session writes what is queued in batches).
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |s| {
        s.max_messages_per_sec = 1_000;
        s.message_burst = 1_000;
    })
    .await;
    let (mut a, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    let me = PublicKey::from(&key(1));
    let far = now_ms() + 60_000;
    let tasks: Vec<Task> = (0..200).map(|_| mint_task(me, far)).collect();
    for t in &tasks {
        a.send(&result(t, &key(1))).await;
    }
    let mut acked = std::collections::HashSet::new();
    while acked.len() < tasks.len() {
        let (id, outcome) = a
            .recv_until(|m| match m {
                HubMessage::ResultAck(x) => Some((x.task_id, x.outcome)),
                _ => None,
            })
            .await;
        assert_eq!(outcome, AckOutcome::Stored);
        assert!(acked.insert(id), "acked twice: {id}");
    }
    assert_eq!(ticks(&db).await, 200);
    hub.stop().await;
}

#[tokio::test]
async fn a_second_session_with_the_same_key_replaces_the_first() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |_| {}).await;
    let (mut old, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    let (_new, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    assert_eq!(error_code(old.recv().await), ErrorCode::SessionReplaced);
    old.expect_closed().await;
    assert_eq!(count(&db, "SELECT count(*) FROM validators").await, 1);
    hub.stop().await;
}

#[tokio::test]
async fn heartbeat_silence_closes_the_session() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |s| {
        s.heartbeat_interval_ms = 100;
        s.heartbeat_timeout_ms = 400;
    })
    .await;
    let (mut c, w) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    assert_eq!(w.heartbeat_timeout_ms, 400);
    assert_eq!(error_code(c.recv().await), ErrorCode::HeartbeatTimeout);
    c.expect_closed().await;
    hub.stop().await;
}

#[tokio::test]
async fn binary_frames_are_refused_and_count_against_the_rate_limit() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |s| {
        s.max_messages_per_sec = 3;
        s.message_burst = 3;
    })
    .await;
    let (mut c, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    use futures_util::SinkExt;
    c.ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        vec![1, 2, 3].into(),
    ))
    .await
    .unwrap();
    assert_eq!(error_code(c.recv().await), ErrorCode::MalformedFrame);
    for _ in 0..10 {
        let _ =
            c.ws.send(tokio_tungstenite::tungstenite::Message::Binary(
                vec![0].into(),
            ))
            .await;
    }
    let code = c
        .recv_until(|m| match m {
            HubMessage::Error(e) if e.code != ErrorCode::MalformedFrame => Some(e.code),
            _ => None,
        })
        .await;
    assert_eq!(code, ErrorCode::RateLimited);
    c.expect_closed().await;
    hub.stop().await;
}

/// Reads raw frames until the hub's close frame and returns its code;
/// panics if the connection ends without one (a reset shows as an error).
async fn close_code(c: &mut RawClient) -> (Vec<HubMessage>, u16) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut seen = Vec::new();
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), c.ws.next())
            .await
            .expect("hub answered within 10 s");
        match frame {
            Some(Ok(Message::Text(t))) => seen.push(HubMessage::decode(&t).unwrap()),
            Some(Ok(Message::Close(f))) => {
                return (seen, f.map_or(1005, |f| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("connection failed before a close frame ({e}); seen {seen:?}"),
            None => panic!("connection ended without a close frame; seen {seen:?}"),
        }
    }
}

fn error_codes(seen: &[HubMessage]) -> Vec<ErrorCode> {
    seen.iter()
        .filter_map(|m| match m {
            HubMessage::Error(e) => Some(e.code),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_result_with_a_control_character_is_rejected_at_the_door() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |_| {}).await;
    let (mut c, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    let me = PublicKey::from(&key(1));
    for bad in [
        "nul \u{0} byte",
        "bell \u{7}",
        "clear \u{1b}[2J",
        "newline\n",
    ] {
        let task = mint_task(me, now_ms() + 60_000);
        let mut r = CheckResult::for_task(&task, CheckStatus::Down, None, 5, None, now_ms());
        r.error = Some(bad.into());
        sign_result(&key(1), &mut r);
        c.send(&ValidatorMessage::Result(r)).await;
        assert_eq!(
            ack(&mut c).await,
            (AckOutcome::Rejected, Some(ErrorCode::InvalidResult)),
            "{bad:?}"
        );
    }
    // A good result right after is stored: nothing was sunk.
    let task = mint_task(me, now_ms() + 60_000);
    c.send(&result(&task, &key(1))).await;
    assert_eq!(ack(&mut c).await, (AckOutcome::Stored, None));
    assert_eq!(ticks(&db).await, 1);
    hub.stop().await;
}

#[tokio::test]
async fn a_flood_gets_its_error_and_close_frames_rather_than_a_reset() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |_| {}).await;
    let hb = ValidatorMessage::Heartbeat(Heartbeat {
        seq: 1,
        in_flight: 0,
    })
    .encode();
    // Before hello: junk frames, a few hundred back to back.
    let mut c = RawClient::connect(&hub.ws_url(), key(1)).await;
    for _ in 0..400 {
        c.send_text("{not json".into()).await;
    }
    let (seen, code) = close_code(&mut c).await;
    assert_eq!(error_codes(&seen).last(), Some(&ErrorCode::RateLimited));
    assert_eq!(code, 1008);
    // After hello.
    let (mut c, _) = RawClient::login(&hub.ws_url(), key(2), "eu-west").await;
    for _ in 0..400 {
        c.send_text(hb.clone()).await;
    }
    let (seen, code) = close_code(&mut c).await;
    assert_eq!(error_codes(&seen), vec![ErrorCode::RateLimited]);
    assert_eq!(code, 1008);
    hub.stop().await;
}

#[tokio::test]
async fn the_hub_answers_a_close_frame_with_one() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |_| {}).await;
    let (mut c, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    // Sent as a raw frame: the client library must not answer for us.
    c.ws.send(tokio_tungstenite::tungstenite::Message::Close(Some(
        CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        },
    )))
    .await
    .unwrap();
    let (_, code) = close_code(&mut c).await;
    assert_eq!(code, 1000, "the hub echoes the close code");
    // Before hello too.
    let mut c = RawClient::connect(&hub.ws_url(), key(2)).await;
    c.ws.send(tokio_tungstenite::tungstenite::Message::Close(Some(
        CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        },
    )))
    .await
    .unwrap();
    let (_, code) = close_code(&mut c).await;
    assert_eq!(code, 1000);
    hub.stop().await;
}

#[tokio::test]
async fn a_hello_with_null_tags_is_read_as_having_none() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |_| {}).await;
    let mut c = RawClient::connect(&hub.ws_url(), key(1)).await;
    let mut h = hello(&c.key, &c.nonce, "eu-west");
    h.tags.clear();
    protocol::crypto::sign_hello(&c.key, &c.nonce, &mut h);
    let mut doc = serde_json::to_value(ValidatorMessage::Hello(h)).unwrap();
    doc["tags"] = serde_json::Value::Null;
    c.send_text(doc.to_string()).await;
    assert!(
        matches!(c.recv().await, Some(HubMessage::Welcome(_))),
        "welcomed"
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_resend_after_the_deadline_is_answered_from_the_database() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |_| {}).await;
    let (mut c, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    let me = PublicKey::from(&key(1));
    let deadline = now_ms() + 1_000;
    let stored = mint_task(me, deadline);
    let never_sent = mint_task(me, deadline);
    let first = result(&stored, &key(1));
    c.send(&first).await;
    assert_eq!(ack(&mut c).await, (AckOutcome::Stored, None));
    tokio::time::sleep(std::time::Duration::from_millis(
        (deadline - now_ms() + 50).max(0) as u64,
    ))
    .await;
    // Its ack was lost, say: the late resend learns it was stored.
    c.send(&first).await;
    assert_eq!(ack(&mut c).await, (AckOutcome::Duplicate, None));
    // A result first sent after the deadline is refused.
    c.send(&result(&never_sent, &key(1))).await;
    assert_eq!(
        ack(&mut c).await,
        (AckOutcome::Rejected, Some(ErrorCode::DeadlinePassed))
    );
    assert_eq!(ticks(&db).await, 1);
    hub.stop().await;
}

/// A row the database refuses although it passed the checks at the door
/// (here a constraint the test adds, as a stand-in for any value the door
/// does not know to refuse) is answered `invalid_result` alone, results sent
/// with it are stored, and the third such row closes the connection.
#[tokio::test]
async fn rows_the_database_refuses_are_answered_alone_and_the_third_closes() {
    let db = TestDb::new().await.unwrap();
    sqlx::query("ALTER TABLE ticks ADD CONSTRAINT test_refuses_slow CHECK (latency_ms < 500)")
        .execute(db.pool())
        .await
        .unwrap();
    let hub = hub(&db, |_| {}).await;
    let (mut c, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    let me = PublicKey::from(&key(1));
    let far = now_ms() + 60_000;
    let signed = |latency_ms| {
        let mut r = CheckResult::for_task(
            &mint_task(me, far),
            CheckStatus::Up,
            Some(200),
            latency_ms,
            None,
            now_ms(),
        );
        sign_result(&key(1), &mut r);
        r
    };
    for round in 0..3 {
        // Sent back to back, so they usually share a write batch.
        let batch: Vec<CheckResult> = (0..20)
            .map(|i| signed(if i == 7 { 900 } else { 5 }))
            .collect();
        for r in &batch {
            c.send(&ValidatorMessage::Result(r.clone())).await;
        }
        let mut stored = 0;
        let mut rejected = Vec::new();
        while stored + rejected.len() < batch.len() {
            match c.recv().await {
                Some(HubMessage::ResultAck(a)) if a.outcome == AckOutcome::Stored => stored += 1,
                Some(HubMessage::ResultAck(a)) => rejected.push((a.task_id, a.code)),
                Some(_) => {}
                None => panic!("closed early in round {round}"),
            }
        }
        assert_eq!(stored, 19, "round {round}");
        assert_eq!(
            rejected,
            vec![(batch[7].task_id, Some(ErrorCode::InvalidResult))]
        );
    }
    c.expect_error_and_close(ErrorCode::InvalidResult).await;
    assert_eq!(ticks(&db).await, 57);
    hub.stop().await;
}

/// The documented check order: the signature is checked last (in batches,
/// by the tick writers), so a forged result after its deadline gets
/// `deadline_passed`, and one with a bad token `bad_token`.
#[tokio::test]
async fn a_forged_result_gets_the_code_of_the_first_rule_it_breaks() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |_| {}).await;
    let (mut c, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    let me = PublicKey::from(&key(1));
    let late = mint_task(me, now_ms() - 1);
    c.send(&result(&late, &key(9))).await;
    assert_eq!(
        ack(&mut c).await,
        (AckOutcome::Rejected, Some(ErrorCode::DeadlinePassed))
    );
    let mut bad_token = mint_task(me, now_ms() + 60_000);
    bad_token.token.mac[0] ^= 1;
    c.send(&result(&bad_token, &key(9))).await;
    assert_eq!(
        ack(&mut c).await,
        (AckOutcome::Rejected, Some(ErrorCode::BadToken))
    );
    c.send(&result(&mint_task(me, now_ms() + 60_000), &key(9)))
        .await;
    assert_eq!(
        ack(&mut c).await,
        (AckOutcome::Rejected, Some(ErrorCode::BadSignature))
    );
    assert_eq!(ticks(&db).await, 0);
    hub.stop().await;
}

/// A heartbeat's `seq` is echoed as sent; the hub does not require it to
/// increase.
#[tokio::test]
async fn heartbeat_seq_is_echoed_even_when_it_does_not_increase() {
    let db = TestDb::new().await.unwrap();
    let hub = hub(&db, |_| {}).await;
    let (mut c, _) = RawClient::login(&hub.ws_url(), key(1), "eu-west").await;
    for seq in [5, 3, 3, 0] {
        c.send(&ValidatorMessage::Heartbeat(Heartbeat {
            seq,
            in_flight: 0,
        }))
        .await;
        assert!(
            matches!(c.recv().await, Some(HubMessage::HeartbeatAck(a)) if a.seq == seq),
            "seq {seq}"
        );
    }
    hub.stop().await;
}
