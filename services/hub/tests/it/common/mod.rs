//! Shared by the hub's integration tests: a real hub on 127.0.0.1:0 against
//! a fresh database, and a raw WebSocket client that speaks the protocol by
//! hand (so tests can send exactly the bytes they mean to).
#![allow(dead_code)]

pub mod balancer;
pub mod payouts;

use std::net::SocketAddr;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use hub::{Application, Config, Handle};
use protocol::crypto::{sign_hello, sign_result};
use protocol::{
    now_ms, CheckResult, CheckSpec, CheckStatus, HubMessage, Keyring, Nonce, PublicKey, Signature,
    StatusRange, Task, TokenFields, ValidatorMessage, Welcome,
};
use test_support::metrics::{scrape, Metrics};
use test_support::TestDb;
use uuid::Uuid;

pub const TOKEN_KEYS: &str =
    "test:5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f";

pub fn keyring() -> Keyring {
    Keyring::parse(TOKEN_KEYS).unwrap()
}

/// Settings for tests: fast schedules, short deadlines.
pub fn settings(db: &TestDb) -> Config {
    Config {
        database_url: db.url.clone().into(),
        db_max_connections: 8,
        listen: "127.0.0.1:0".parse().unwrap(),
        hub_id: "hub-test".into(),
        token_keys: TOKEN_KEYS.into(),
        min_interval_secs: 1,
        task_deadline_ms: 3_000,
        scheduler_tick_ms: 50,
        reload_interval_ms: 200,
        drain_timeout_ms: 3_000,
        // Every test validator connects from 127.0.0.1 (one /24); tests of
        // the rule turn it on (tests/it/diversity.rs).
        prefix_diversity: false,
        // New test keys count at once; tests of probation turn it on
        // (tests/it/trust.rs).
        probation_results: 0,
        ..Config::default()
    }
}

pub struct TestHub {
    pub addr: SocketAddr,
    pub id: String,
    pub state: Handle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestHub {
    pub async fn start(config: Config) -> Self {
        let settings = config.parse().expect("valid test settings");
        let id = settings.hub_id.clone();
        let app = Application::build(settings).await.expect("hub builds");
        let addr = app.local_addr();
        let state = app.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            id,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Graceful shutdown, as on SIGTERM; waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("hub stops in time")
                .expect("hub task")
                .expect("hub exits cleanly");
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A hand-driven validator connection.
pub struct RawClient {
    pub ws: Ws,
    pub key: SigningKey,
    pub nonce: Nonce,
}

pub fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

pub fn hello(key: &SigningKey, nonce: &Nonce, region: &str) -> protocol::Hello {
    let mut h = protocol::Hello {
        public_key: PublicKey::from(key),
        region: region.into(),
        tags: vec!["test".into()],
        capacity: 10,
        client_version: "raw-test".into(),
        protocol_versions: vec![1],
        payout_address: None,
        signature: Signature([0; 64]),
    };
    sign_hello(key, nonce, &mut h);
    h
}

impl RawClient {
    /// Connects and reads the challenge; does not authenticate.
    pub async fn connect(url: &str, key: SigningKey) -> Self {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let nonce = match next_msg(&mut ws).await {
            Some(HubMessage::Challenge(c)) => c.nonce,
            other => panic!("expected challenge, got {other:?}"),
        };
        Self { ws, key, nonce }
    }

    /// As [`Self::connect`], from the loopback address `src`
    /// (`127.x.y.z`), so a test can play validators on distinct networks.
    pub async fn connect_from(url: &str, key: SigningKey, src: std::net::IpAddr) -> Self {
        let addr: SocketAddr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .expect("a ws://ip:port/ URL");
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(src, 0)).expect("bind source");
        let stream = socket.connect(addr).await.expect("connect");
        let (mut ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrade");
        let nonce = match next_msg(&mut ws).await {
            Some(HubMessage::Challenge(c)) => c.nonce,
            other => panic!("expected challenge, got {other:?}"),
        };
        Self { ws, key, nonce }
    }

    /// Sends hello; the welcome, or the error frame that refused it.
    pub async fn try_hello(&mut self, region: &str) -> Result<Welcome, protocol::ErrorFrame> {
        let h = hello(&self.key, &self.nonce, region);
        self.send(&ValidatorMessage::Hello(h)).await;
        match self.recv().await {
            Some(HubMessage::Welcome(w)) => Ok(w),
            Some(HubMessage::Error(e)) => Err(e),
            other => panic!("expected welcome or error, got {other:?}"),
        }
    }

    /// Connects and completes the handshake.
    pub async fn login(url: &str, key: SigningKey, region: &str) -> (Self, Welcome) {
        let mut c = Self::connect(url, key).await;
        let h = hello(&c.key, &c.nonce, region);
        c.send(&ValidatorMessage::Hello(h)).await;
        match c.recv().await {
            Some(HubMessage::Welcome(w)) => (c, w),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, m: &ValidatorMessage) {
        self.send_text(m.encode()).await;
    }

    pub async fn send_text(&mut self, t: String) {
        self.ws.send(Message::Text(t.into())).await.expect("send");
    }

    /// Next protocol message, or None once the hub closed the connection.
    pub async fn recv(&mut self) -> Option<HubMessage> {
        next_msg(&mut self.ws).await
    }

    /// Reads until a message matching `f`, skipping others (tasks, acks).
    pub async fn recv_until<T>(&mut self, mut f: impl FnMut(HubMessage) -> Option<T>) -> T {
        loop {
            let m = self.recv().await.expect("connection closed while waiting");
            if let Some(t) = f(m) {
                return t;
            }
        }
    }

    /// Waits for an error frame and asserts its code, then that the hub
    /// closes the connection.
    pub async fn expect_error_and_close(&mut self, code: protocol::ErrorCode) {
        let got = self
            .recv_until(|m| match m {
                HubMessage::Error(e) => Some(e.code),
                _ => None,
            })
            .await;
        assert_eq!(got, code);
        self.expect_closed().await;
    }

    /// Asserts the hub closes the connection (after any messages).
    pub async fn expect_closed(&mut self) {
        while let Some(m) = self.recv().await {
            assert!(
                !matches!(m, HubMessage::Welcome(_)),
                "unexpected welcome before close"
            );
        }
    }
}

/// Reads the next text frame as a HubMessage within 10 s; None on close.
pub async fn next_msg(ws: &mut Ws) -> Option<HubMessage> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("hub answered within 10 s");
        match frame {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
            Some(Ok(Message::Text(t))) => {
                return Some(HubMessage::decode(&t).expect("hub sends valid messages"))
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// Polls `f` until it returns Some, every 50 ms, for at most `secs`.
/// For conditions that live in the database, which has no event to await.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn count(db: &TestDb, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap()
}

/// Sum of the samples of metric `name` whose labels include every pair in
/// `labels` (`&[]` for all); 0 when there is none.
pub fn metric(state: &Handle, name: &str, labels: &[(&str, &str)]) -> f64 {
    Metrics::parse(&state.metrics.render())
        .value(name, labels)
        .unwrap_or(0.0)
}

/// The demo sites on 127.0.0.1:0; stops when the returned token is cancelled.
pub async fn demo_sites(
    config: demo_sites::Config,
) -> (String, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(demo_sites::serve(listener, config, async move {
        s.cancelled().await
    }));
    (base, stop)
}

/// Registers a website directly in the store.
pub async fn add_site(
    db: &TestDb,
    url: &str,
    interval_secs: i32,
    timeout_ms: i32,
    keyword: Option<&str>,
) -> store::WebsiteId {
    db.store
        .add_website(&store::NewWebsite {
            url: store::WebsiteUrl::parse(url).unwrap(),
            interval_secs,
            timeout_ms,
            expected_status_min: 200,
            expected_status_max: 399,
            keyword: keyword.map(Into::into),
            follow_redirects: true,
            owner: "test".into(),
        })
        .await
        .unwrap()
        .id
}

/// An in-process validator (the real `validator` crate) on `urls`.
pub fn spawn_validator(
    urls: &[String],
    seed: u8,
    region: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> (
    validator::ValidatorHandle,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut cfg = validator::RunConfig::new(urls[0].parse().unwrap());
    cfg.hub_urls = urls.iter().map(|u| u.parse().unwrap()).collect();
    cfg.region = region.into();
    cfg.allow_private_targets = true;
    validator::spawn(cfg, key(seed), shutdown.clone())
}

/// Cancels `stop` and waits (10 s at most each) for the validators to end
/// cleanly.
pub async fn stop_validators(
    stop: &tokio_util::sync::CancellationToken,
    validators: Vec<(
        validator::ValidatorHandle,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
) {
    stop.cancel();
    for (_, j) in validators {
        tokio::time::timeout(Duration::from_secs(10), j)
            .await
            .expect("validator stops")
            .unwrap()
            .unwrap();
    }
}

/// A real `hub` process, for tests that kill, restart or cut off hubs.
pub struct HubProc {
    pub id: String,
    pub port: u16,
    child: tokio::process::Child,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl HubProc {
    /// Starts `hub serve` on `port` and waits until it listens. `env` adds
    /// or overrides HUB_* settings.
    pub async fn start(db: &TestDb, id: &str, port: u16, env: &[(&str, String)]) -> Self {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hub"));
        cmd.arg("serve")
            .env("HUB_DATABASE_URL", &db.url)
            .env("HUB_LISTEN", format!("127.0.0.1:{port}"))
            .env("HUB_ID", id)
            .env("HUB_TOKEN_KEYS", TOKEN_KEYS)
            .env("HUB_MIN_INTERVAL_SECS", "1")
            .env("HUB_TASK_DEADLINE_MS", "20000")
            .env("HUB_SCHEDULER_TICK_MS", "50")
            .env("HUB_RELOAD_INTERVAL_MS", "1000")
            .env("HUB_PREFIX_DIVERSITY", "false")
            .env("HUB_PROBATION_RESULTS", "0")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("hub binary starts");
        for _ in 0..600 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("hub {id} exited before listening: {status}");
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    id: id.into(),
                    port,
                    child,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("hub {id} did not listen within 30 s");
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn sigterm(mut self) {
        let pid = self.child.id().expect("running") as libc::pid_t;
        // SAFETY: plain kill(2) on a child we own.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("hub exits within 30 s of SIGTERM")
            .unwrap();
        assert!(status.success(), "hub {} exit status {status}", self.id);
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id().expect("running") as libc::pid_t
    }

    /// Sends `sig` (SIGSTOP, SIGCONT, ...).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on a child we own.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(mut self, secs: u64) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(secs), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("hub {} did not exit within {secs} s", self.id))
            .unwrap()
    }

    /// SIGKILL: no drain, no goodbye.
    pub async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }

    /// One sample from `/metrics` (summed over labels; 0 when absent), or
    /// None if the hub does not answer.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        Some(scrape(&url).await.ok()?.value(name, &[]).unwrap_or(0.0))
    }
}

/// Largest gap, in ms, between consecutive rounds of any website.
pub async fn max_round_gap_ms(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(max(gap), 0)::int8 FROM (
           SELECT extract(epoch FROM scheduled_at - lag(scheduled_at)
                    OVER (PARTITION BY website_id ORDER BY scheduled_at)) * 1000 AS gap
             FROM rounds) g",
    )
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// Slots that have more than one round (must be zero).
pub async fn slots_run_twice(db: &TestDb) -> i64 {
    count(
        db,
        "SELECT count(*) FROM (SELECT 1 FROM rounds GROUP BY website_id, slot HAVING count(*) > 1) d",
    )
    .await
}

/// A task as the hub would issue it to `validator`.
pub fn mint_task(validator: PublicKey, deadline_ms: i64) -> Task {
    let task_id = Uuid::new_v4();
    let scheduled_at_ms = now_ms() - 1000;
    let token = keyring().issue(&TokenFields {
        task_id,
        website_id: 1,
        round_id: 1,
        slot: 1,
        scheduled_at_ms,
        validator: &validator,
        deadline_ms,
    });
    Task {
        task_id,
        website_id: 1,
        round_id: 1,
        slot: 1,
        scheduled_at_ms,
        url: "http://127.0.0.1/".into(),
        check: CheckSpec {
            timeout_ms: 1000,
            expected_status: StatusRange::DEFAULT,
            keyword: None,
            follow_redirects: true,
        },
        validator,
        deadline_ms,
        token,
    }
}

pub fn result(task: &Task, signer: &SigningKey) -> ValidatorMessage {
    let mut r = CheckResult::for_task(task, CheckStatus::Up, Some(200), 5, None, now_ms());
    sign_result(signer, &mut r);
    ValidatorMessage::Result(r)
}

/// A workspace binary beside the hub's (`target/debug/NAME`). A
/// whole-workspace test run builds every binary; `-p hub` alone does not.
pub fn sibling_binary(name: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_hub")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run the suite for the whole workspace (scripts/test.sh), or `cargo build -p {name}` first",
        path.display()
    );
    path
}

/// The repository's root (helm/, scripts/, docs/ are read from there).
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The owners' API on a loopback port, on the test's database: its base URL
/// and the token that stops it.
pub async fn api_for(db: &test_support::TestDb) -> (String, tokio_util::sync::CancellationToken) {
    api_with(db, |_| {}).await
}

pub async fn api_with(
    db: &test_support::TestDb,
    edit: impl FnOnce(&mut api::config::Config),
) -> (String, tokio_util::sync::CancellationToken) {
    let mut config = api::config::Config {
        database_url: db.url.as_str().into(),
        key_secret: "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into(),
        cookie_secure: false,
        allow_private_targets: true,
        ..Default::default()
    };
    edit(&mut config);
    let settings = config.parse().unwrap();
    let state = api::app::AppState::with_store(db.store.clone(), settings).expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = api::app::serve(state, listener, async move { s.cancelled().await }).await;
    });
    (base, stop)
}
