//! One simulated validator: a real WebSocket connection, a real ed25519
//! key, the real protocol (challenge, signed hello, welcome, heartbeats,
//! signed results, acks), without the HTTP check.
//!
//! It does what `services/validator/src/session.rs` does on the wire, with
//! the same `protocol` crate calls (`sign_hello`, `CheckResult::for_task`,
//! `sign_result`), so every signature covers this connection's nonce or the
//! task's own token. When told to stop it takes no new tasks, lets the
//! running checks finish and waits for their acks (at most 2 s, as the
//! reference validator does on shutdown), then closes politely. What it
//! leaves out: resending unacknowledged results after a reconnect (they are
//! counted as `unacked_at_close` instead) and the drain after a `reconnect`
//! hint (it closes politely at once, collecting the acks that arrive within
//! the close, then reconnects after `retry_after_ms`).
//!
//! A "check" is a sleep of `check_latency` (plus up to `check_jitter`);
//! whether the site is down is decided by a hash of (website, slot), so the
//! validators of one round agree, and about `failure_rate` of the rounds
//! come back down.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use protocol::crypto::{sign_hello, sign_result};
use protocol::{
    AckOutcome, CheckResult, CheckStatus, ErrorCode, Heartbeat, Hello, HubMessage, Limits,
    PublicKey, Signature, Task, ValidatorMessage, Welcome, SUPPORTED_VERSIONS,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

use crate::net::{self, HubTarget};
use crate::stats::Stats;

type Ws = WebSocketStream<TcpStream>;

/// TCP connect, and separately the WebSocket upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// From upgrade to `challenge`, and from `hello` to `welcome`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(protocol::limits::AUTH_TIMEOUT_MS);
/// For our close frame to go out and the hub's to come back.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// When told to stop: how long running checks may take to finish and be
/// acknowledged before the socket is closed anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect backoff: 1 s doubling to 10 s, plus up to 1 s of jitter.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const BACKOFF_JITTER: Duration = Duration::from_secs(1);
/// Hub frames are at most 16 KiB by default; leave slack, no more.
const MAX_INBOUND_BYTES: usize = 4 * protocol::limits::MAX_FRAME_BYTES;

/// What every simulated validator shares.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub hubs: Vec<HubTarget>,
    /// Spread sockets over 127.0.0.1 ..= 127.0.0.K.
    pub source_addrs: usize,
    pub regions: Vec<String>,
    pub capacity: u32,
    pub check_latency: Duration,
    pub check_jitter: Duration,
    pub failure_rate: f64,
    /// How many validators there are (spreads the ramp-down).
    pub count: usize,
}

/// When validators stop: validator `i` of `n` closes at
/// `base + spread * i / n`. Changing it (Ctrl-C: spread zero) takes effect
/// at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Control {
    pub stop: Option<(Instant, Duration)>,
}

/// Resolves when validator `i` should stop.
async fn stop_signal(mut control: watch::Receiver<Control>, i: usize, n: usize) {
    loop {
        let c = *control.borrow_and_update();
        match c.stop {
            Some((base, spread)) => {
                let at = base + spread.mul_f64(i as f64 / n.max(1) as f64);
                tokio::select! {
                    _ = sleep_until(at) => return,
                    r = control.changed() => if r.is_err() { return },
                }
            }
            None => {
                if control.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// How a session ended.
enum End {
    /// We were told to stop.
    Stopped,
    /// The socket closed or failed.
    Lost,
    /// The hub asked us to come back after this long.
    Reconnect(Duration),
}

/// Runs validator `i` until its stop time: connect, serve, reconnect with
/// backoff when a session is lost.
pub async fn run(
    i: usize,
    key: SigningKey,
    cfg: Arc<SimConfig>,
    stats: Arc<Stats>,
    control: watch::Receiver<Control>,
) {
    let key = Arc::new(key);
    let stop = stop_signal(control, i, cfg.count);
    tokio::pin!(stop);
    let mut attempt = 0usize;
    // Restarted by every welcome: after a lost session the first wait is
    // the shortest again.
    let mut delays = backoff();
    loop {
        let hub = &cfg.hubs[(i + attempt) % cfg.hubs.len()];
        let source = net::source_addr(&hub.addr, i, cfg.source_addrs);
        let region = &cfg.regions[i % cfg.regions.len()];
        let shake = tokio::select! {
            biased;
            _ = &mut stop => return,
            r = handshake(hub, source, &key, region, cfg.capacity) => r,
        };
        let wait = match shake {
            Ok((ws, welcome)) => {
                delays = backoff();
                stats.sessions.fetch_add(1, Relaxed);
                stats.connected.fetch_add(1, Relaxed);
                let end = serve(ws, &welcome, &key, &cfg, &stats, stop.as_mut()).await;
                stats.connected.fetch_sub(1, Relaxed);
                match end {
                    End::Stopped => return,
                    End::Lost => {
                        stats.sessions_lost.fetch_add(1, Relaxed);
                        next_delay(&mut delays)
                    }
                    End::Reconnect(after) => after,
                }
            }
            Err(reason) => {
                stats.connect_failed(reason);
                next_delay(&mut delays)
            }
        };
        attempt += 1;
        tokio::select! {
            biased;
            _ = &mut stop => return,
            _ = sleep(wait) => {}
        }
    }
}

type Delays = <ExponentialBuilder as BackoffBuilder>::Backoff;

/// The waits before reconnecting, one per failed attempt in a row.
fn backoff() -> Delays {
    ExponentialBuilder::default()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .without_max_times()
        .build()
}

/// The next wait, plus up to [`BACKOFF_JITTER`] so validators dropped
/// together do not come back in lockstep. (backon's own jitter is up to
/// the whole delay; a fixed second keeps reconnects of a ramp tight.)
fn next_delay(delays: &mut Delays) -> Duration {
    let base = delays.next().unwrap_or(BACKOFF_MAX);
    base + BACKOFF_JITTER.mul_f64(fastrand::f64())
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: the tool holds tens of thousands of these.
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(MAX_INBOUND_BYTES))
        .max_frame_size(Some(MAX_INBOUND_BYTES))
}

/// A short, low-cardinality reason for a failed connection attempt.
fn ws_reason(e: &WsError) -> String {
    match e {
        WsError::Http(r) => format!("http_{}", r.status().as_u16()),
        WsError::Io(e) => format!("io:{:?}", e.kind()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "closed".into(),
        WsError::Protocol(_) => "ws_protocol".into(),
        WsError::Capacity(_) => "ws_capacity".into(),
        _ => "ws_other".into(),
    }
}

/// TCP connect from `source`, WebSocket upgrade, challenge, signed hello,
/// welcome. The error is a reason for the failure counters.
async fn handshake(
    hub: &HubTarget,
    source: Option<std::net::IpAddr>,
    key: &SigningKey,
    region: &str,
    capacity: u32,
) -> Result<(Ws, Welcome), String> {
    let tcp = net::connect(hub.addr, source, CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("io:{:?}", e.kind()))?;
    let (mut ws, _) = timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::client_async_with_config(hub.url.as_str(), tcp, Some(ws_config())),
    )
    .await
    .map_err(|_| "timeout:upgrade".to_string())?
    .map_err(|e| ws_reason(&e))?;

    let challenge = match next_message(&mut ws, "challenge").await? {
        HubMessage::Challenge(c) => c,
        other => return Err(unexpected(other)),
    };
    if protocol::negotiate_version(&challenge.protocol_versions).is_none() {
        return Err("no_common_version".into());
    }
    let mut hello = Hello {
        public_key: PublicKey::from(key),
        region: region.to_string(),
        tags: vec!["loadtest".into()],
        capacity,
        client_version: concat!("loadtest/", env!("CARGO_PKG_VERSION")).into(),
        protocol_versions: SUPPORTED_VERSIONS.to_vec(),
        payout_address: None,
        signature: Signature([0; 64]),
    };
    sign_hello(key, &challenge.nonce, &mut hello);
    ws.send(Message::text(ValidatorMessage::Hello(hello).encode()))
        .await
        .map_err(|e| ws_reason(&e))?;
    match next_message(&mut ws, "welcome").await? {
        HubMessage::Welcome(w) if SUPPORTED_VERSIONS.contains(&w.protocol_version) => Ok((ws, w)),
        HubMessage::Welcome(_) => Err("no_common_version".into()),
        other => Err(unexpected(other)),
    }
}

fn unexpected(m: HubMessage) -> String {
    match m {
        HubMessage::Error(e) => format!("refused:{}", e.code.as_str()),
        _ => "unexpected_frame".into(),
    }
}

/// The next decodable hub message during the handshake.
async fn next_message(ws: &mut Ws, want: &'static str) -> Result<HubMessage, String> {
    let read = async {
        loop {
            match ws.next().await {
                None | Some(Ok(Message::Close(_))) => return Err(format!("closed_before_{want}")),
                Some(Err(e)) => return Err(ws_reason(&e)),
                Some(Ok(Message::Text(t))) => {
                    if let Ok(m) = HubMessage::decode(t.as_str()) {
                        return Ok(m);
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    };
    timeout(HANDSHAKE_TIMEOUT, read)
        .await
        .map_err(|_| format!("timeout:{want}"))?
}

/// A token bucket under the hub's announced rate (90% of it, half the
/// burst), as the reference validator paces itself.
struct Pacer {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    fn new(l: &Limits) -> Option<Self> {
        (l.max_messages_per_sec > 0).then(|| {
            let burst = f64::from((l.message_burst / 2).max(1));
            Self {
                per_sec: f64::from(l.max_messages_per_sec) * 0.9,
                burst,
                tokens: burst,
                last: Instant::now(),
            }
        })
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec)
            .min(self.burst);
        self.last = now;
    }

    /// How long until a token is free (zero: now).
    fn wait(&mut self) -> Duration {
        self.refill();
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec)
        }
    }

    /// Spends a token; heartbeats may overdraw (they are rare).
    fn take(&mut self) {
        self.refill();
        self.tokens -= 1.0;
    }
}

/// A result whose check finished, waiting for the socket.
struct Finished {
    result: CheckResult,
}

/// A result on the wire, waiting for its ack.
struct Sent {
    at: Instant,
    latency_ms: u32,
}

/// Serves one welcomed session until it ends.
async fn serve(
    mut ws: Ws,
    welcome: &Welcome,
    key: &Arc<SigningKey>,
    cfg: &Arc<SimConfig>,
    stats: &Arc<Stats>,
    mut stop: Pin<&mut impl Future<Output = ()>>,
) -> End {
    let me = PublicKey::from(key.as_ref());
    let (tx, mut rx) = mpsc::channel::<Finished>(cfg.capacity as usize * 2 + 16);
    let mut pacer = Pacer::new(&welcome.limits);
    let beat = Duration::from_millis(welcome.heartbeat_interval_ms.max(100));
    let mut ticker = tokio::time::interval_at(Instant::now() + beat, beat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut checking = 0usize;
    let mut sent: HashMap<Uuid, Sent> = HashMap::new();
    // Set once told to stop: no new checks; finish and hand in the running
    // ones (as the reference validator does on shutdown), then close.
    let mut draining: Option<Instant> = None;
    // Once stopping, every ending is a stop (`stop` has completed and must
    // not be awaited again).
    let lost = |draining: &Option<Instant>| {
        if draining.is_some() {
            End::Stopped
        } else {
            End::Lost
        }
    };

    let end = loop {
        if draining.is_some() && checking == 0 && sent.is_empty() {
            break End::Stopped;
        }
        let wait = pacer.as_mut().map_or(Duration::ZERO, Pacer::wait);
        tokio::select! {
            biased;
            _ = stop.as_mut(), if draining.is_none() => {
                draining = Some(Instant::now() + DRAIN_TIMEOUT);
            }
            _ = sleep_until(draining.unwrap_or_else(Instant::now)), if draining.is_some() => {
                break End::Stopped;
            }
            frame = ws.next() => match frame {
                None | Some(Err(_)) => {
                    count_unacked(stats, checking, &sent);
                    return lost(&draining);
                }
                Some(Ok(Message::Text(t))) => {
                    match HubMessage::decode(t.as_str()) {
                        Ok(HubMessage::Task(task)) => {
                            stats.task_received(task.scheduled_at_ms, protocol::now_ms());
                            if task.validator != me {
                                stats.foreign_tasks.fetch_add(1, Relaxed);
                            } else if draining.is_some() {
                                stats.tasks_dropped.fetch_add(1, Relaxed);
                            } else {
                                checking += 1;
                                start_check(
                                    task,
                                    key.clone(),
                                    cfg,
                                    tx.clone(),
                                    welcome.protocol_version,
                                );
                            }
                        }
                        Ok(HubMessage::ResultAck(ack)) => {
                            on_ack(stats, &mut sent, ack.task_id, ack.outcome, ack.code);
                        }
                        Ok(HubMessage::Error(e)) => stats.errors_by.inc(e.code),
                        Ok(HubMessage::Reconnect(r)) => {
                            stats.reconnect_hints.fetch_add(1, Relaxed);
                            if draining.is_none() {
                                break End::Reconnect(Duration::from_millis(r.retry_after_ms));
                            }
                        }
                        Ok(_) | Err(_) => {}
                    }
                }
                // tungstenite answers the close; the stream then ends.
                Some(Ok(_)) => {}
            },
            _ = ticker.tick() => {
                seq += 1;
                if let Some(p) = pacer.as_mut() {
                    p.take();
                }
                let hb = ValidatorMessage::Heartbeat(Heartbeat {
                    seq,
                    in_flight: u32::try_from(checking).unwrap_or(u32::MAX),
                });
                if ws.send(Message::text(hb.encode())).await.is_err() {
                    count_unacked(stats, checking, &sent);
                    return lost(&draining);
                }
                stats.heartbeats.fetch_add(1, Relaxed);
            }
            Some(done) = rx.recv(), if wait.is_zero() => {
                checking -= 1;
                if let Some(p) = pacer.as_mut() {
                    p.take();
                }
                let r = done.result;
                let (id, latency_ms) = (r.task_id, r.latency_ms);
                if ws.send(Message::text(ValidatorMessage::Result(r).encode())).await.is_err() {
                    count_unacked(stats, checking + 1, &sent);
                    return lost(&draining);
                }
                stats.result_sent(protocol::now_ms());
                sent.insert(id, Sent { at: Instant::now(), latency_ms });
            }
            _ = sleep(wait), if !wait.is_zero() => {}
        }
    };

    // Polite close: our close frame, then read (acks still count) until the
    // hub's close ends the stream.
    let closing = async {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "loadtest done".into(),
        };
        if ws.close(Some(frame)).await.is_err() {
            return;
        }
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                if let Ok(HubMessage::ResultAck(ack)) = HubMessage::decode(t.as_str()) {
                    on_ack(stats, &mut sent, ack.task_id, ack.outcome, ack.code);
                }
            }
        }
    };
    let _ = timeout(CLOSE_TIMEOUT, closing).await;
    count_unacked(stats, checking, &sent);
    end
}

fn count_unacked(stats: &Stats, checking: usize, sent: &HashMap<Uuid, Sent>) {
    stats
        .unacked_at_close
        .fetch_add((checking + sent.len()) as u64, Relaxed);
}

fn on_ack(
    stats: &Stats,
    sent: &mut HashMap<Uuid, Sent>,
    task_id: Uuid,
    outcome: AckOutcome,
    code: Option<ErrorCode>,
) {
    stats.ack_received(protocol::now_ms());
    match outcome {
        AckOutcome::Stored => stats.stored.fetch_add(1, Relaxed),
        AckOutcome::Duplicate => stats.duplicate.fetch_add(1, Relaxed),
        AckOutcome::Rejected => {
            stats.rejected_by.inc(code.unwrap_or(ErrorCode::Unknown));
            stats.rejected.fetch_add(1, Relaxed)
        }
    };
    if let Some(s) = sent.remove(&task_id) {
        stats.record_ack_rtt_us(s.at.elapsed().as_micros() as u64);
        if let Some(dispatched) = uuid_v7_ms(&task_id) {
            stats.record_dispatch_to_ack_ms(
                protocol::now_ms() - dispatched - i64::from(s.latency_ms),
            );
        }
    }
}

/// The Unix-ms timestamp of a UUIDv7 (the hub mints task ids at dispatch).
fn uuid_v7_ms(id: &Uuid) -> Option<i64> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    Some(secs as i64 * 1000 + i64::from(nanos / 1_000_000))
}

/// Whether a round's simulated site is down: the same answer for every
/// validator of (website, slot), true for about `rate` of them.
pub fn simulated_down(website_id: i64, slot: i64, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let seed = (website_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (slot as u64);
    fastrand::Rng::with_seed(seed).f64() < rate
}

/// "Checks" the task on its own tokio task: sleeps the check latency, then
/// builds and signs the result and hands it to the session.
/// On a protocol 2 session the result carries evidence: the simulated
/// page's digest (it fetches nothing) and no address.
fn start_check(
    task: Task,
    key: Arc<SigningKey>,
    cfg: &SimConfig,
    tx: mpsc::Sender<Finished>,
    version: u16,
) {
    let jitter = if cfg.check_jitter.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_micros(fastrand::u64(..=cfg.check_jitter.as_micros() as u64))
    };
    let latency = cfg.check_latency + jitter;
    let down = simulated_down(task.website_id, task.slot, cfg.failure_rate);
    tokio::spawn(async move {
        let started = Instant::now();
        if !latency.is_zero() {
            sleep(latency).await;
        }
        let latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        let (status, http_status, error) = if down {
            (
                CheckStatus::Down,
                Some(503),
                Some("loadtest: simulated failure".to_string()),
            )
        } else {
            (CheckStatus::Up, Some(200), None)
        };
        let mut r = CheckResult::for_task(
            &task,
            status,
            http_status,
            latency_ms,
            error,
            protocol::now_ms(),
        );
        if version >= 2 {
            r.evidence = Some(protocol::Evidence {
                body_sha256: Some(protocol::Digest(*SIMULATED_BODY_SHA256)),
                body_bytes: SIMULATED_BODY.len() as u32,
                remote_ip: None,
            });
        }
        sign_result(&key, &mut r);
        // A closed channel: the session ended; it counted this one.
        let _ = tx.send(Finished { result: r }).await;
    });
}

/// The page a simulated check "saw", and its digest (computed once).
const SIMULATED_BODY: &[u8] = b"loadtest: simulated page";
static SIMULATED_BODY_SHA256: std::sync::LazyLock<[u8; 32]> =
    std::sync::LazyLock::new(|| protocol::Digest::of(SIMULATED_BODY).0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_failures_agree_and_match_the_rate() {
        assert_eq!(simulated_down(7, 100, 0.3), simulated_down(7, 100, 0.3));
        assert!(!simulated_down(7, 100, 0.0));
        assert!(simulated_down(7, 100, 1.0));
        let n = 20_000;
        let down = (0..n).filter(|s| simulated_down(42, *s, 0.1)).count();
        let rate = down as f64 / n as f64;
        assert!((0.08..0.12).contains(&rate), "{rate}");
    }

    #[test]
    fn uuid_v7_time_is_read_back() {
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, 1_700_000_000, 250_000_000);
        assert_eq!(uuid_v7_ms(&Uuid::new_v7(ts)), Some(1_700_000_000_250));
        assert_eq!(uuid_v7_ms(&Uuid::nil()), None);
    }

    #[test]
    fn backoff_doubles_from_a_second_to_ten_with_a_second_of_jitter() {
        let mut d = backoff();
        let waits: Vec<Duration> = (0..30).map(|_| next_delay(&mut d)).collect();
        for (w, base) in waits.iter().zip([1, 2, 4, 8, 10, 10]) {
            let base = Duration::from_secs(base);
            assert!(*w >= base && *w < base + BACKOFF_JITTER, "{waits:?}");
        }
        assert!(waits.iter().all(|w| *w < BACKOFF_MAX + BACKOFF_JITTER));
        // Never gives up, and a fresh one starts short again.
        assert!(next_delay(&mut backoff()) < BACKOFF_MIN + BACKOFF_JITTER);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_signal_spreads_and_can_be_hurried() {
        let (tx, rx) = watch::channel(Control::default());
        let start = Instant::now();
        let last = tokio::spawn(stop_signal(rx.clone(), 9, 10));
        let first = tokio::spawn(stop_signal(rx, 0, 10));
        tokio::task::yield_now().await;
        tx.send_replace(Control {
            stop: Some((start, Duration::from_secs(10))),
        });
        first.await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(10));
        // Hurry the rest: a zero spread stops everyone now.
        sleep(Duration::from_secs(1)).await;
        tx.send_replace(Control {
            stop: Some((Instant::now(), Duration::ZERO)),
        });
        last.await.unwrap();
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
}
