//! The session loop against a fake hub built from tokio-tungstenite's server
//! side: challenge and signed hello, tasks and signed results, resend until
//! acknowledged, `reconnect`, and a clean close on shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use protocol::crypto::{verify_hello, verify_result};
use protocol::{
    AckOutcome, Challenge, CheckResult, CheckSpec, CheckStatus, ErrorCode, Hello, HubMessage,
    Keyring, Limits, Nonce, Reconnect, ResultAck, StatusRange, Task, TokenFields, ValidatorMessage,
    Welcome,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use validator::{RunConfig, Stats, ValidatorHandle};

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

type Conn = WebSocketStream<TcpStream>;

/// A site for the checks: `/ok` answers at once, `/slow` after 300 ms.
async fn site() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/ok", get(|| async { "ok" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "slow"
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The hub side of the protocol, one connection at a time.
struct FakeHub {
    listener: TcpListener,
    keyring: Keyring,
}

impl FakeHub {
    async fn bind() -> Self {
        Self {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            keyring: Keyring::random("k1"),
        }
    }

    fn url(&self) -> url::Url {
        let addr = self.listener.local_addr().unwrap();
        url::Url::parse(&format!("ws://{addr}/ws")).unwrap()
    }

    async fn accept(&self) -> Conn {
        let (tcp, _) = timeout(WAIT, self.listener.accept())
            .await
            .expect("the validator connects")
            .unwrap();
        tokio_tungstenite::accept_async(tcp).await.unwrap()
    }

    /// Accepts a connection and runs the handshake; returns the verified hello.
    async fn accept_and_welcome(&self, heartbeat_interval_ms: u64) -> (Conn, Hello) {
        let mut conn = self.accept().await;
        let nonce = Nonce::random();
        send(
            &mut conn,
            HubMessage::Challenge(Challenge {
                nonce,
                hub_id: "fake-hub".into(),
                protocol_versions: vec![1],
                server_time_ms: protocol::now_ms(),
            }),
        )
        .await;
        let hello = match recv(&mut conn).await {
            ValidatorMessage::Hello(h) => h,
            other => panic!("expected hello, got {other:?}"),
        };
        verify_hello(&nonce, &hello).expect("hello is signed over our nonce");
        send(
            &mut conn,
            HubMessage::Welcome(Welcome {
                validator_id: 7,
                protocol_version: 1,
                hub_id: "fake-hub".into(),
                heartbeat_interval_ms,
                heartbeat_timeout_ms: 45_000,
                limits: Limits {
                    max_frame_bytes: 16 * 1024,
                    max_messages_per_sec: 50,
                    message_burst: 100,
                    auth_timeout_ms: 10_000,
                },
            }),
        )
        .await;
        (conn, hello)
    }

    fn task(&self, v: &ValidatorHandle, url: String, deadline_ms: i64) -> Task {
        let validator = v.public_key();
        let task_id = Uuid::new_v4();
        let scheduled_at_ms = protocol::now_ms();
        let token = self.keyring.issue(&TokenFields {
            task_id,
            website_id: 11,
            round_id: 22,
            slot: 33,
            scheduled_at_ms,
            validator: &validator,
            deadline_ms,
        });
        Task {
            task_id,
            website_id: 11,
            round_id: 22,
            slot: 33,
            scheduled_at_ms,
            url,
            check: CheckSpec {
                timeout_ms: 5_000,
                expected_status: StatusRange::DEFAULT,
                keyword: None,
                follow_redirects: false,
            },
            validator,
            deadline_ms,
            token,
        }
    }

    /// Checks what a hub checks: the signature and the token.
    fn verify(&self, hello: &Hello, r: &CheckResult) {
        let vk = hello.public_key.verifying_key().unwrap();
        verify_result(&vk, r).expect("result signature verifies");
        self.keyring
            .verify(&r.token, &r.token_fields())
            .expect("token matches the task");
    }
}

async fn send(conn: &mut Conn, m: HubMessage) {
    conn.send(Message::text(m.encode())).await.unwrap();
}

/// The next validator message; skips pings and pongs.
async fn recv(conn: &mut Conn) -> ValidatorMessage {
    loop {
        let frame = timeout(WAIT, conn.next())
            .await
            .expect("a frame arrives in time")
            .expect("the connection is open")
            .expect("the frame is readable");
        match frame {
            Message::Text(t) => return ValidatorMessage::decode(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The next result, skipping heartbeats.
async fn recv_result(conn: &mut Conn) -> CheckResult {
    loop {
        match recv(conn).await {
            ValidatorMessage::Result(r) => return r,
            ValidatorMessage::Heartbeat(_) => {}
            other => panic!("expected a result, got {other:?}"),
        }
    }
}

async fn ack(conn: &mut Conn, task_id: Uuid, outcome: AckOutcome, code: Option<ErrorCode>) {
    send(
        conn,
        HubMessage::ResultAck(ResultAck {
            task_id,
            outcome,
            code,
        }),
    )
    .await;
}

async fn wait_until(v: &ValidatorHandle, what: &str, pred: impl FnMut(&Stats) -> bool) -> Stats {
    match timeout(WAIT, v.wait_until(pred)).await {
        Ok(s) => s,
        Err(_) => panic!("timed out waiting for {what}: {:?}", v.stats()),
    }
}

fn start(hub: &FakeHub, concurrency: u32) -> (ValidatorHandle, CancellationToken, Spawned) {
    // Logs appear with a failing test's output (RUST_LOG overrides the level).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("validator=debug")),
        )
        .with_test_writer()
        .try_init();
    let mut config = RunConfig::new(hub.url());
    config.region = "test-region".into();
    config.tags = vec!["t1".into()];
    config.concurrency = concurrency;
    config.allow_private_targets = true;
    let shutdown = CancellationToken::new();
    let (handle, task) = validator::spawn(config, protocol::keypair::generate(), shutdown.clone());
    (handle, shutdown, task)
}

type Spawned = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Reads until the stream ends, which sends tungstenite's reply to the
/// validator's close frame.
async fn finish_close(conn: &mut Conn) {
    while let Ok(Some(Ok(_))) = timeout(WAIT, conn.next()).await {}
}

/// Cancels and expects a normal close frame on `conn` and a clean exit.
async fn shut_down(conn: &mut Conn, shutdown: CancellationToken, task: Spawned) {
    shutdown.cancel();
    loop {
        match timeout(WAIT, conn.next()).await.expect("close in time") {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(f.code, CloseCode::Normal);
                finish_close(conn).await;
                break;
            }
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    timeout(WAIT, task)
        .await
        .expect("the validator stops in time")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn results_are_signed_and_resent_until_acknowledged() {
    let site = site().await;
    let hub = FakeHub::bind().await;
    let (v, shutdown, task) = start(&hub, 4);

    let (mut conn, hello) = hub.accept_and_welcome(60_000).await;
    assert_eq!(hello.public_key, v.public_key());
    assert_eq!(hello.region, "test-region");
    assert_eq!(hello.tags, vec!["t1".to_string()]);
    assert_eq!(hello.capacity, 4);
    assert_eq!(hello.protocol_versions, protocol::SUPPORTED_VERSIONS);
    assert_eq!(hello.client_version, env!("CARGO_PKG_VERSION"));
    wait_until(&v, "connected", |s| s.connected && s.connects == 1).await;

    // A: a long deadline, so it must survive the reconnect. C: a short one
    // that passes while the validator is away: still within the resend
    // grace, so it is resent too. B: one whose grace runs out while the
    // validator is away, so its resend must be dropped.
    let grace = protocol::limits::RESULT_RESEND_GRACE_MS;
    let a = hub.task(&v, format!("http://{site}/ok"), protocol::now_ms() + 60_000);
    let b_deadline = protocol::now_ms() - grace + 1_000;
    let b = hub.task(&v, format!("http://{site}/ok"), b_deadline);
    let c = hub.task(&v, format!("http://{site}/ok"), protocol::now_ms() + 1_000);
    for t in [&a, &b, &c] {
        send(&mut conn, HubMessage::Task(t.clone())).await;
    }
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(recv_result(&mut conn).await);
    }
    let order = [a.task_id, b.task_id, c.task_id];
    first.sort_by_key(|r| order.iter().position(|t| *t == r.task_id));
    let (ra, rc) = (&first[0], &first[2]);
    assert_eq!(
        first.iter().map(|r| r.task_id).collect::<Vec<_>>(),
        order.to_vec()
    );
    for r in &first {
        hub.verify(&hello, r);
        assert_eq!(r.status, CheckStatus::Up);
        assert_eq!(r.http_status, Some(200));
        assert_eq!(r.error, None);
        assert!(r.checked_at_ms >= r.scheduled_at_ms && r.checked_at_ms <= protocol::now_ms());
    }
    let s = wait_until(&v, "three results sent", |s| s.results_sent == 3).await;
    assert_eq!((s.tasks_received, s.pending, s.in_flight), (3, 3, 0));

    // Drop the connection without acking any result.
    drop(conn);
    wait_until(&v, "disconnect", |s| !s.connected).await;
    // Let B's grace (and C's deadline) pass before the validator can get
    // back in.
    let until_b =
        Duration::from_millis((b_deadline + grace - protocol::now_ms()).max(0) as u64 + 50);
    tokio::time::sleep(until_b).await;

    let (mut conn, hello) = hub.accept_and_welcome(60_000).await;
    let mut resent = [recv_result(&mut conn).await, recv_result(&mut conn).await];
    resent.sort_by_key(|r| r.task_id != a.task_id);
    assert_eq!(&resent[0], ra, "the same signed result, byte for byte");
    assert_eq!(
        &resent[1], rc,
        "resent after its deadline, within the grace"
    );
    for r in &resent {
        hub.verify(&hello, r);
    }
    let s = wait_until(&v, "B dropped", |s| s.pending == 2).await;
    assert_eq!(s.results_abandoned, 1);
    let mut left = v.pending_task_ids();
    left.sort_by_key(|t| *t != a.task_id);
    assert_eq!(left, vec![a.task_id, c.task_id]);

    ack(&mut conn, c.task_id, AckOutcome::Duplicate, None).await;
    ack(&mut conn, a.task_id, AckOutcome::Stored, None).await;
    let s = wait_until(&v, "ack", |s| s.acks_stored == 1 && s.pending == 0).await;
    assert_eq!(s.connects, 2);
    let mut acked = v.acked_task_ids();
    acked.sort_by_key(|t| *t != a.task_id);
    assert_eq!(acked, vec![a.task_id, c.task_id]);
    assert!(v.pending_task_ids().is_empty());

    // Once acknowledged it is never sent again: after the next welcome the
    // first frame is a heartbeat, not a result.
    drop(conn);
    let (mut conn, _) = hub.accept_and_welcome(200).await;
    match recv(&mut conn).await {
        ValidatorMessage::Heartbeat(h) => assert_eq!((h.seq, h.in_flight), (1, 0)),
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    assert_eq!(v.stats().results_sent, 5);

    shut_down(&mut conn, shutdown, task).await;
}

#[tokio::test]
async fn late_results_are_sent_and_rejections_counted() {
    let site = site().await;
    let hub = FakeHub::bind().await;
    let (v, shutdown, task) = start(&hub, 1);
    let (mut conn, hello) = hub.accept_and_welcome(60_000).await;

    // The deadline is already gone: the validator still reports, the hub
    // rejects, and the result leaves the pending map.
    let late = hub.task(&v, format!("http://{site}/ok"), protocol::now_ms() - 1);
    send(&mut conn, HubMessage::Task(late.clone())).await;
    let r = recv_result(&mut conn).await;
    hub.verify(&hello, &r);
    ack(
        &mut conn,
        late.task_id,
        AckOutcome::Rejected,
        Some(ErrorCode::DeadlinePassed),
    )
    .await;
    // A duplicate ack and an error frame are counted too.
    let dup = hub.task(&v, format!("http://{site}/ok"), protocol::now_ms() + 60_000);
    send(&mut conn, HubMessage::Task(dup.clone())).await;
    let r = recv_result(&mut conn).await;
    assert_eq!(r.task_id, dup.task_id);
    ack(&mut conn, dup.task_id, AckOutcome::Duplicate, None).await;
    send(
        &mut conn,
        HubMessage::error(ErrorCode::RateLimited, "slow down"),
    )
    .await;
    let s = wait_until(&v, "acks", |s| {
        s.acks_total() == 2 && s.error_frames.contains_key(&ErrorCode::RateLimited)
    })
    .await;
    assert_eq!(s.acks_rejected.get(&ErrorCode::DeadlinePassed), Some(&1));
    assert_eq!(s.acks_duplicate, 1);
    assert_eq!(s.pending, 0);
    assert_eq!(
        v.rejected_task_ids(),
        vec![(late.task_id, Some(ErrorCode::DeadlinePassed))]
    );
    assert_eq!(v.acked_task_ids(), vec![dup.task_id]);

    shut_down(&mut conn, shutdown, task).await;
}

#[tokio::test]
async fn reconnect_finishes_in_flight_work_then_moves_to_the_given_hub() {
    let site = site().await;
    let hub = FakeHub::bind().await;
    let other = FakeHub::bind().await;
    let (v, shutdown, task) = start(&hub, 2);
    let (mut conn, hello) = hub.accept_and_welcome(60_000).await;

    let slow = hub.task(
        &v,
        format!("http://{site}/slow"),
        protocol::now_ms() + 60_000,
    );
    send(&mut conn, HubMessage::Task(slow.clone())).await;
    wait_until(&v, "check running", |s| s.in_flight == 1).await;
    send(
        &mut conn,
        HubMessage::Reconnect(Reconnect {
            reason: "hub draining".into(),
            retry_after_ms: 50,
            urls: vec![other.url().to_string()],
        }),
    )
    .await;
    // Taken from this connection no more.
    let ignored = hub.task(&v, format!("http://{site}/ok"), protocol::now_ms() + 60_000);
    send(&mut conn, HubMessage::Task(ignored)).await;

    let r = recv_result(&mut conn).await;
    assert_eq!(r.task_id, slow.task_id);
    hub.verify(&hello, &r);
    ack(&mut conn, slow.task_id, AckOutcome::Stored, None).await;
    // With nothing left in flight or unacknowledged, the validator closes.
    loop {
        match timeout(WAIT, conn.next()).await.expect("close in time") {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(f.code, CloseCode::Normal);
                finish_close(&mut conn).await;
                break;
            }
            Some(Ok(Message::Text(t))) => {
                let m = ValidatorMessage::decode(&t).unwrap();
                assert!(matches!(m, ValidatorMessage::Heartbeat(_)), "{m:?}");
            }
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    let (mut conn2, _) = other.accept_and_welcome(60_000).await;
    let s = wait_until(&v, "second connection", |s| s.connects == 2 && s.connected).await;
    assert_eq!(s.reconnects_requested, 1);
    assert_eq!(s.tasks_received, 2);
    assert_eq!(s.tasks_dropped, 1);
    assert_eq!((s.acks_stored, s.pending, s.in_flight), (1, 0, 0));

    shut_down(&mut conn2, shutdown, task).await;
}

#[tokio::test]
async fn a_refused_hello_is_retried_and_shutdown_while_away_is_clean() {
    let hub = FakeHub::bind().await;
    let (v, shutdown, task) = start(&hub, 1);
    let mut conn = hub.accept().await;
    send(
        &mut conn,
        HubMessage::Challenge(Challenge {
            nonce: Nonce::random(),
            hub_id: "fake-hub".into(),
            protocol_versions: vec![1],
            server_time_ms: protocol::now_ms(),
        }),
    )
    .await;
    assert!(matches!(recv(&mut conn).await, ValidatorMessage::Hello(_)));
    send(
        &mut conn,
        HubMessage::error(ErrorCode::InvalidHello, "region unknown"),
    )
    .await;
    drop(conn);
    // It backs off and tries again.
    let (conn, _) = hub.accept_and_welcome(60_000).await;
    wait_until(&v, "connected", |s| s.connected).await;
    drop(conn);
    wait_until(&v, "disconnected", |s| !s.connected).await;
    shutdown.cancel();
    timeout(WAIT, task).await.unwrap().unwrap().unwrap();
    assert_eq!(v.stats().connects, 1);
}

#[tokio::test]
async fn wss_hubs_are_reached_over_tls() {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = url::Url::parse(&format!("wss://127.0.0.1:{port}/ws")).unwrap();
    let shutdown = CancellationToken::new();
    let (_, task) = validator::spawn(
        RunConfig::new(url),
        protocol::keypair::generate(),
        shutdown.clone(),
    );
    let (mut tcp, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let mut first = [0u8; 3];
    timeout(WAIT, tcp.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    // A TLS handshake record (0x16), TLS 1.x record version (0x03 0x0N): the
    // TLS stack is compiled in and has a crypto provider.
    assert_eq!(&first[..2], &[0x16, 0x03], "{first:?}");
    shutdown.cancel();
    timeout(WAIT, task).await.unwrap().unwrap().unwrap();
}

/// The binary as an operator runs it: tags in the documented alphabet
/// (`isp:hetzner`, as the hub accepts them) from `--tag` and from
/// `VALIDATOR_TAGS` reach the hello unchanged.
#[tokio::test]
async fn the_binary_sends_tags_from_flags_and_environment() {
    use std::process::Stdio;
    use tokio::io::AsyncReadExt;

    let dir = std::env::temp_dir().join(format!(
        "validator-tags-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("id.json");
    protocol::keypair::write_new(&key, &protocol::keypair::generate()).unwrap();
    let flags: &[&str] = &["--tag", "isp:hetzner", "--tag", "dc.fsn1"];
    for (args, env) in [(flags, None), (&[][..], Some("isp:hetzner,dc.fsn1"))] {
        let hub = FakeHub::bind().await;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_validator"));
        cmd.args(["run", "--hub", hub.url().as_str()])
            .args(["--keypair", key.to_str().unwrap(), "--region", "eu-west"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in [
            "VALIDATOR_HUB_URLS",
            "VALIDATOR_KEYPAIR",
            "VALIDATOR_REGION",
            "VALIDATOR_TAGS",
            "VALIDATOR_CONCURRENCY",
            "VALIDATOR_ALLOW_PRIVATE_TARGETS",
            "VALIDATOR_USER_AGENT",
            "VALIDATOR_ALLOW_INSECURE_KEYPAIR",
        ] {
            cmd.env_remove(var);
        }
        if let Some(tags) = env {
            cmd.env("VALIDATOR_TAGS", tags);
        }
        let mut child = cmd.spawn().unwrap();
        let hello = tokio::select! {
            (_conn, hello) = hub.accept_and_welcome(60_000) => hello,
            status = child.wait() => {
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err).await;
                panic!("the validator exited ({status:?}): {err}");
            }
        };
        assert_eq!(hello.tags, ["isp:hetzner", "dc.fsn1"], "{args:?} {env:?}");
        child.kill().await.unwrap();
    }
    std::fs::remove_dir_all(dir).unwrap();
}
