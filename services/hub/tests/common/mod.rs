//! Shared by the hub's integration tests: a real hub on 127.0.0.1:0 against
//! a fresh database, and a raw WebSocket client that speaks the protocol by
//! hand (so tests can send exactly the bytes they mean to).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use hub::{AppState, Application, Settings};
use protocol::crypto::sign_hello;
use protocol::{HubMessage, Keyring, Nonce, PublicKey, Signature, ValidatorMessage, Welcome};
use test_support::TestDb;

pub const TOKEN_KEYS: &str =
    "test:5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f";

pub fn keyring() -> Keyring {
    Keyring::parse(TOKEN_KEYS).unwrap()
}

/// Settings for tests: fast schedules, short deadlines.
pub fn settings(db: &TestDb) -> Settings {
    let s = Settings {
        database_url: db.url.clone(),
        db_max_connections: 8,
        listen: "127.0.0.1:0".parse().unwrap(),
        hub_id: "hub-test".into(),
        token_keys: TOKEN_KEYS.into(),
        min_interval_secs: 1,
        task_deadline_ms: 3_000,
        scheduler_tick_ms: 50,
        reload_interval_ms: 200,
        drain_timeout_ms: 3_000,
        ..Settings::default()
    };
    s.validate().unwrap();
    s
}

pub struct TestHub {
    pub addr: SocketAddr,
    pub id: String,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestHub {
    pub async fn start(settings: Settings) -> Self {
        let id = settings.hub_id.clone();
        let app = Application::build(settings).await.expect("hub builds");
        let addr = app.local_addr();
        let state = app.state();
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

/// Sum of the samples of metric `name` whose labels contain `labels`
/// (e.g. `reason="bad_token"`; empty for all).
pub fn metric(state: &AppState, name: &str, labels: &str) -> f64 {
    hub::app::render_metrics(state)
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']) && rest.contains(labels))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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
) -> i64 {
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
