//! One validator's WebSocket session: challenge, hello, then a loop that
//! reads frames, writes queued frames, watches the heartbeat, and drains on
//! shutdown or when chosen to move (rebalancing). A bad frame costs the
//! sender an error frame, never the hub.
//!
//! What closes a session (each documented in docs/protocol.md): no valid
//! hello in time, a bad hello, an oversized frame, a flood past the rate
//! limit, a result or heartbeat before hello, heartbeat silence, a newer
//! session with the same key, the access rules refusing the key or address, a write that cannot finish in 10 s, and a
//! drain (shutdown, or rebalancing) once in-flight work is handed in. A full
//! outbound queue does not close it: new tasks go to other validators, and a
//! dropped ack is recovered by the validator's resend.

use foldhash::{HashMap, HashMapExt, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use governor::RateLimiter;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant, Sleep};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use protocol::{
    crypto::verify_hello, negotiate_version, now_ms, AckOutcome, Challenge, ErrorCode, Hello,
    HubMessage, Nonce, Reconnect, ResultAck, ValidatorMessage, Welcome, SUPPORTED_VERSIONS,
};

use store::Store;

use crate::cluster::router::Router;
use crate::config::SessionSettings;
use crate::edge::access::{AccessPolicy, Refusal};
use crate::edge::preauth::{client_key, PreAuthGuard};
use crate::edge::wire::{Incoming, Socket};
use crate::edge::HelloLimiter;
use crate::ingest::{Backlog, IngestItem, Verifier, MAX_REFUSED_ROWS};
use crate::metrics::Metrics;
use crate::registry::{Kick, Outbound, Registry, SessionHandle};

/// What every session of this hub shares: exactly what a session uses.
pub struct Sessions {
    pub settings: SessionSettings,
    pub metrics: Arc<Metrics>,
    /// The checks at the door (all but the signature).
    pub verifier: Verifier,
    /// To the tick writers.
    pub ingest: mpsc::Sender<IngestItem>,
    /// Results accepted and not yet answered.
    pub backlog: Arc<Backlog>,
    /// Records the validator at hello.
    pub store: Store,
    /// Looks up late resends (the read endpoints' pool).
    pub read_store: Store,
    pub registry: Arc<Registry>,
    /// Presence claims, and the coordinator's "session closed".
    pub router: Router,
    pub hello_limiter: Arc<HelloLimiter>,
    /// The operator's allow and deny rules.
    pub access: Arc<AccessPolicy>,
    /// Cancelled on shutdown: sessions drain.
    pub draining: CancellationToken,
}

impl Sessions {
    pub fn max_frame_bytes(&self) -> usize {
        self.settings.max_frame_bytes
    }
}

/// How long one frame may take to write before the peer counts as stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The session loop looks at its rare events (replacement, a drain, the
/// timer) directly at least once every this many steps.
const RARE_EVERY: u32 = 32;

/// At most this many queued frames go out in one flush.
const WRITE_BATCH: usize = 64;

/// A session counts as receiving tasks (so acks may wait for the next one,
/// `HUB_ACK_HOLD_MS`) while one was sent within this long.
const TASKS_FLOWING: Duration = Duration::from_secs(1);

/// Most bytes of acks held back at once (about 20): well under what
/// leaves room for a pong.
const HELD_MAX_BYTES: usize = 2048;

/// The `reason` of the `reconnect` hint: on shutdown, and to a session this
/// hub chose to move elsewhere (`cluster::rebalance`). For humans only: a
/// validator does the same with either.
const HINT_SHUTDOWN: &str = "hub is shutting down";
const HINT_REBALANCE: &str = "rebalancing: this hub holds more than its share of validators";

const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;

type Limiter = governor::DefaultDirectRateLimiter;

/// Why the session ended, for logs.
#[derive(Debug)]
enum End {
    PeerClosed,
    #[allow(dead_code, reason = "read through Debug in logs")]
    Error(ErrorCode),
    Drained,
    /// The peer broke the framing rules; closed with this code.
    #[allow(dead_code, reason = "read through Debug in logs")]
    Framing(u16),
    Io,
}

/// Runs one flush under [`WRITE_TIMEOUT`]. A loopback or healthy peer's
/// socket takes the bytes at once, so the flush is polled once first and a
/// timer is armed only if it has to wait.
async fn timed(step: impl Future<Output = std::io::Result<()>>) -> Result<(), End> {
    let mut step = std::pin::pin!(step);
    let first = std::future::poll_fn(|cx| Poll::Ready(step.as_mut().poll(cx))).await;
    let done = match first {
        Poll::Ready(r) => r,
        Poll::Pending => match timeout(WRITE_TIMEOUT, step).await {
            Ok(r) => r,
            Err(_) => return Err(End::Io),
        },
    };
    done.map_err(|_| End::Io)
}

/// The monotonic instant of wall-clock time `at_ms`, given one reading of
/// each clock (`now`, `now_ms`); a time already past maps to `now`.
fn instant_of(at_ms: i64, now: Instant, now_ms: i64) -> Instant {
    now + Duration::from_millis((at_ms - now_ms).max(0) as u64)
}

/// Writes one frame and flushes it.
async fn send(sock: &mut Socket, msg: &HubMessage) -> Result<(), End> {
    sock.queue_json(msg);
    timed(sock.flush()).await
}

async fn close(sock: &mut Socket, code: u16, reason: &'static str) {
    sock.queue_close(code, reason);
    let _ = timeout(WRITE_TIMEOUT, sock.flush()).await;
}

/// Sends an error frame and counts it.
async fn send_error(
    app: &Sessions,
    sock: &mut Socket,
    code: ErrorCode,
    message: impl Into<String>,
) -> Result<(), End> {
    app.metrics
        .protocol_errors
        .with_label_values(&[code.as_str()])
        .inc();
    send(sock, &HubMessage::error(code, message)).await
}

/// Sends an error frame, then closes the socket.
async fn fail(app: &Sessions, sock: &mut Socket, code: ErrorCode, message: String, ws: u16) -> End {
    let _ = send_error(app, sock, code, message).await;
    close(sock, ws, code.as_str()).await;
    End::Error(code)
}

fn limiter(app: &Sessions) -> Limiter {
    RateLimiter::direct(app.settings.message_quota())
}

/// Checks the hello's fields (not its signature): the wire rules of
/// `protocol::limits`, the same the reference validator applies.
fn validate_hello(h: &Hello) -> Result<(), String> {
    protocol::limits::check_hello(h).map_err(|e| e.to_string())
}

/// What a session keeps of its peer once welcomed.
struct Authenticated {
    vk: VerifyingKey,
    version: u16,
}

/// The authenticated peer.
struct Peer {
    hello: Hello,
    vk: VerifyingKey,
    version: u16,
}

/// Challenge, then wait for a valid hello within the auth timeout.
async fn authenticate(
    app: &Sessions,
    sock: &mut Socket,
    limiter: &Limiter,
    client: std::net::IpAddr,
    addr: std::net::IpAddr,
) -> Result<Box<Peer>, End> {
    let nonce = Nonce::random();
    let challenge = HubMessage::Challenge(Challenge {
        nonce,
        hub_id: app.settings.hub_id.clone(),
        protocol_versions: SUPPORTED_VERSIONS.to_vec(),
        server_time_ms: now_ms(),
    });
    send(sock, &challenge).await?;
    let until = Instant::now() + app.settings.auth_timeout;
    loop {
        let incoming = tokio::select! {
            i = sock.read() => i,
            _ = sleep_until(until) => {
                return Err(fail(app, sock, ErrorCode::AuthTimeout,
                    format!("no valid hello within {} ms", app.settings.auth_timeout.as_millis()),
                    CLOSE_POLICY).await);
            }
        };
        let text = match incoming {
            Incoming::Closed => return Err(End::PeerClosed),
            Incoming::TooBig => return Err(too_big(app, sock).await),
            Incoming::Invalid(code) => return Err(broken_framing(sock, code).await),
            // Pings and pongs count against the message rate too: each
            // ping costs the hub a pong.
            Incoming::Control => {
                if limiter.check().is_err() {
                    return Err(rate_limited(app, sock).await);
                }
                continue;
            }
            Incoming::Binary => {
                if limiter.check().is_err() {
                    return Err(rate_limited(app, sock).await);
                }
                send_error(
                    app,
                    sock,
                    ErrorCode::MalformedFrame,
                    "binary frames are not accepted",
                )
                .await?;
                continue;
            }
            Incoming::Text(t) => t,
        };
        if limiter.check().is_err() {
            return Err(rate_limited(app, sock).await);
        }
        match ValidatorMessage::decode(&text) {
            Err(e) => send_error(app, sock, e.code(), e.to_string()).await?,
            Ok(ValidatorMessage::Hello(hello)) => {
                // Before any work a hello costs (a signature check, a row).
                if app.hello_limiter.check_key(&client).is_err() {
                    return Err(hello_rate_limited(app, sock).await);
                }
                if let Err(problem) = validate_hello(&hello) {
                    return Err(
                        fail(app, sock, ErrorCode::InvalidHello, problem, CLOSE_POLICY).await,
                    );
                }
                // A banned network costs no signature check.
                if let Err(why) = app.access.check_address(addr) {
                    return Err(access_denied(app, sock, &why).await);
                }
                let Some(version) = negotiate_version(&hello.protocol_versions) else {
                    return Err(fail(
                        app,
                        sock,
                        ErrorCode::UnsupportedVersion,
                        format!("this hub speaks protocol versions {SUPPORTED_VERSIONS:?}"),
                        CLOSE_POLICY,
                    )
                    .await);
                };
                if let Err(e) = protocol::limits::check_hello_version(&hello, version) {
                    return Err(fail(
                        app,
                        sock,
                        ErrorCode::InvalidHello,
                        e.to_string(),
                        CLOSE_POLICY,
                    )
                    .await);
                }
                return match verify_hello(&nonce, &hello) {
                    Ok(vk) => match app.access.check_key(&hello.public_key) {
                        Ok(()) => Ok(Box::new(Peer { hello, vk, version })),
                        Err(why) => Err(access_denied(app, sock, &why).await),
                    },
                    Err(e) => Err(fail(
                        app,
                        sock,
                        ErrorCode::BadSignature,
                        format!("hello signature over this connection's nonce: {e}"),
                        CLOSE_POLICY,
                    )
                    .await),
                };
            }
            Ok(_) => {
                return Err(fail(
                    app,
                    sock,
                    ErrorCode::NotAuthenticated,
                    "send hello first".into(),
                    CLOSE_POLICY,
                )
                .await)
            }
        }
    }
}

async fn access_denied(app: &Sessions, sock: &mut Socket, why: &Refusal) -> End {
    fail(
        app,
        sock,
        ErrorCode::AccessDenied,
        why.to_string(),
        CLOSE_POLICY,
    )
    .await
}

async fn too_big(app: &Sessions, sock: &mut Socket) -> End {
    let max = app.settings.max_frame_bytes;
    fail(
        app,
        sock,
        ErrorCode::FrameTooLarge,
        format!("frames are limited to {max} bytes"),
        CLOSE_TOO_BIG,
    )
    .await
}

async fn rate_limited(app: &Sessions, sock: &mut Socket) -> End {
    let s = &app.settings;
    let msg = format!(
        "more than {} messages/s (burst {})",
        s.messages_per_sec, s.message_burst
    );
    fail(app, sock, ErrorCode::RateLimited, msg, CLOSE_POLICY).await
}

/// Forgets the result an ack answers.
fn acked(awaiting: &mut HashSet<Uuid>, ack: &HubMessage) {
    if let HubMessage::ResultAck(a) = ack {
        awaiting.remove(&a.task_id);
    }
}

/// Hands a result to the tick writers. Waiting for room is the
/// backpressure: a full queue (a database outage) slows this validator only.
/// The session reads nothing meanwhile, so the validator hears no heartbeat
/// ack; it gets a WebSocket ping every heartbeat interval instead, so it
/// does not take the wait for a dead hub and reconnect (which could not be
/// welcomed while the database is away).
async fn enqueue(app: &Sessions, sock: &mut Socket, item: IngestItem) -> Result<(), End> {
    let key = item.key();
    // Room at once (the usual case): no timer is armed.
    let item = match app.ingest.try_send(item) {
        Ok(()) => return Ok(()),
        Err(mpsc::error::TrySendError::Full(item)) => item,
        Err(mpsc::error::TrySendError::Closed(_)) => {
            app.backlog.leave(std::iter::once(key));
            return Err(End::Io);
        }
    };
    // Acks held for the next task (HUB_ACK_HOLD_MS) must not wait out the
    // wait for room: the loop and its timer are not polled meanwhile.
    if sock.pending_output() > 0 {
        if let Err(end) = timed(sock.flush()).await {
            app.backlog.leave(std::iter::once(key));
            return Err(end);
        }
    }
    let every = app.settings.heartbeat_interval;
    let send = app.ingest.send(item);
    tokio::pin!(send);
    let res = loop {
        tokio::select! {
            r = &mut send => break r.map_err(|_| End::Io),
            () = tokio::time::sleep(every) => {
                sock.queue_ping();
                if let Err(end) = timed(sock.flush()).await {
                    break Err(end);
                }
            }
        }
    };
    if res.is_err() {
        // The result never reached a writer.
        app.backlog.leave(std::iter::once(key));
    }
    res
}

/// Answers a result received after its deadline: `duplicate` if an earlier
/// copy is stored (its ack was lost), otherwise `rejected` with
/// `deadline_passed`. The lookup runs in the background, so the session
/// does not wait for the database, on the read pool (never the tick
/// writers'), at most [`LATE_LOOKUPS`] at once. When it cannot look (every
/// lookup slot taken, the database slow or away) the answer is
/// `deadline_passed` at once: final, so an overloaded hub does not draw more
/// resends, and safe, because a copy stored or still held by a hub is not
/// affected by it (only the validator's count of its stored results is).
fn late_resend(app: &Sessions, handle: &SessionHandle, r: &protocol::CheckResult) {
    let (store, metrics, tx) = (
        app.read_store.clone(),
        app.metrics.clone(),
        handle.tx.clone(),
    );
    let (task_id, validator_id, scheduled_at_ms) =
        (r.task_id, handle.validator_id, r.scheduled_at_ms);
    let answer = move |stored: bool| {
        let (outcome, code) = if stored {
            metrics.ticks_duplicate.inc();
            (AckOutcome::Duplicate, None)
        } else {
            let code = ErrorCode::DeadlinePassed;
            metrics
                .results_rejected
                .with_label_values(&[code.as_str()])
                .inc();
            (AckOutcome::Rejected, Some(code))
        };
        let ack = HubMessage::ResultAck(ResultAck {
            task_id,
            outcome,
            code,
        });
        let _ = tx.try_send(Outbound::Frame(Box::new(ack)));
    };
    let Ok(permit) = LATE_LOOKUPS.try_acquire() else {
        answer(false);
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let lookup = store.tick_exists(task_id, validator_id, scheduled_at_ms);
        let stored = matches!(timeout(Duration::from_secs(2), lookup).await, Ok(Ok(true)));
        answer(stored);
    });
}

/// Database lookups for late results running at once, per process.
static LATE_LOOKUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(32);

/// How long a closing session keeps reading after its close frame, for the
/// peer's close reply.
const LINGER: Duration = Duration::from_secs(2);

/// Ends the WebSocket politely. The peer closed: its close frame is
/// answered (the library queued the reply; it goes out with this flush).
/// We closed: input the peer sent meanwhile is read and dropped until its
/// close reply or [`LINGER`], because closing a socket with unread input
/// makes the kernel reset it, and the reset can destroy the error and close
/// frames before the peer reads them.
async fn finish(sock: &mut Socket, end: &End) {
    match end {
        End::PeerClosed => {
            let _ = timeout(LINGER, sock.flush()).await;
        }
        End::Error(_) | End::Drained | End::Framing(_) => {
            let _ = timeout(LINGER, async {
                loop {
                    if let Incoming::Closed | Incoming::Invalid(_) = sock.read().await {
                        break;
                    }
                }
            })
            .await;
        }
        End::Io => {}
    }
}

/// The peer broke the framing rules (see `wire`): a close frame with the
/// code, no error frame (the stream cannot be trusted to carry one).
async fn broken_framing(sock: &mut Socket, code: u16) -> End {
    close(sock, code, "").await;
    End::Framing(code)
}

impl Sessions {
    /// Runs one connection to its end.
    pub async fn run(&self, mut sock: Socket, peer_addr: SocketAddr, preauth: PreAuthGuard) {
        let app = self;
        let limiter = limiter(app);
        // IPv4 clients of a dual-stack listener (or proxy) arrive as
        // `::ffff:a.b.c.d`; rules and prefixes name the IPv4 address.
        let peer_addr = SocketAddr::new(peer_addr.ip().to_canonical(), peer_addr.port());
        let client = client_key(peer_addr.ip());
        // Boxed, as the hello's record below: one-time steps, so the
        // session's task does not carry their state for its whole life.
        let authenticated = Box::pin(authenticate(
            app,
            &mut sock,
            &limiter,
            client,
            peer_addr.ip(),
        ))
        .await;
        // A valid hello (or the end): no longer a pre-auth socket.
        drop(preauth);
        let peer = match authenticated {
            Ok(p) => p,
            Err(end) => {
                Box::pin(finish(&mut sock, &end)).await;
                tracing::debug!(%peer_addr, ?end, "session ended before hello");
                return;
            }
        };
        let key = peer.hello.public_key;
        let payout = peer.hello.payout_address.map(|a| a.to_base58());
        let public_key = key.to_base58();
        let record = store::HelloRecord {
            public_key: &public_key,
            region: &peer.hello.region,
            tags: &peer.hello.tags,
            client_version: &peer.hello.client_version,
            payout_address: payout.as_deref(),
            trusted: app.settings.trusted.contains(&key),
            probation: app.settings.probation,
        };
        let standing = match Box::pin(app.store.record_hello(&record)).await {
            Ok(Ok(s)) => s,
            Ok(Err(taken)) => {
                let end = Box::pin(fail(
                    app,
                    &mut sock,
                    ErrorCode::InvalidHello,
                    taken.to_string(),
                    CLOSE_POLICY,
                ))
                .await;
                Box::pin(finish(&mut sock, &end)).await;
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "recording validator failed");
                let end = Box::pin(fail(
                    app,
                    &mut sock,
                    ErrorCode::Internal,
                    "try again later".into(),
                    1011,
                ))
                .await;
                Box::pin(finish(&mut sock, &end)).await;
                return;
            }
        };
        let validator_id = standing.id;
        let (tx, rx) = mpsc::channel(app.settings.queue);
        let handle = Arc::new(SessionHandle {
            generation: app.registry.next_generation(),
            validator_id,
            key,
            region: peer.hello.region.clone(),
            capacity: peer.hello.capacity,
            client: peer_addr.ip(),
            prefix: crate::registry::NetPrefix::of(peer_addr.ip()),
            counts: standing.counts().into(),
            in_flight: std::sync::atomic::AtomicU32::new(0),
            tx,
            kicked: std::sync::OnceLock::new(),
            signals: crate::registry::Signals::new(&app.draining),
        });
        if app.registry.register(handle.clone()).is_some() {
            app.metrics.sessions_replaced.inc();
        }
        // A rule loaded since the hello was judged: the reload's sweep may
        // have missed this session, which was not registered yet.
        if let Err(why) = app.access.check(&key, peer_addr.ip()) {
            if handle.kick(Kick::Refused(why.to_string())) {
                app.metrics.sessions_refused.inc();
            }
        }
        app.metrics.validators_connected.inc();
        app.router.claim(&handle);
        tracing::info!(%peer_addr, validator = %key, region = %peer.hello.region, validator_id = validator_id.0, "validator connected");
        // What the loop needs of the hello; the rest is not kept for the
        // session's life.
        let peer = Authenticated {
            vk: peer.vk,
            version: peer.version,
        };
        let end = Conn::new(app, &handle, &peer, &mut sock, &limiter)
            .serve(rx)
            .await;
        app.registry.unregister(&key, handle.generation);
        app.metrics.validators_connected.dec();
        app.router.session_closed(key, handle.generation);
        // Unregistered first: no task waits on a session that is closing.
        Box::pin(finish(&mut sock, &end)).await;
        app.router.release(key, handle.generation);
        tracing::info!(validator = %key, ?end, "validator disconnected");
    }
}

/// One authenticated connection: what its loop keeps between steps.
struct Conn<'a> {
    app: &'a Sessions,
    handle: &'a SessionHandle,
    peer: &'a Authenticated,
    sock: &'a mut Socket,
    limiter: &'a Limiter,
    /// Resends of results still held draw on a budget of their own.
    resend_limiter: Limiter,
    /// Tasks sent on this socket and not yet answered, with their deadlines,
    /// and results handed to the writer and not yet acknowledged: what a
    /// drain waits for.
    open_tasks: HashMap<Uuid, i64>,
    /// By task id, not a count: the ack of a result resent from another
    /// connection may arrive here, and this session's may go there.
    awaiting_acks: HashSet<Uuid>,
    /// Rows of this session's the database refused (see ingest).
    refused_rows: u32,
    drain_until: Option<Instant>,
    /// When the last task was written to the socket.
    last_task_at: Option<Instant>,
    /// Acks are queued on the socket, unwritten, until then at the latest
    /// (`HUB_ACK_HOLD_MS`): the next task takes them along in its write.
    held_until: Option<Instant>,
    /// A plain store on every message; compared with the clock only when
    /// the timer fires.
    last_heard: Instant,
    heartbeat_timeout: Duration,
}

/// One step's outcome: go on, or the session ends.
type Step = Result<(), End>;

impl<'a> Conn<'a> {
    fn new(
        app: &'a Sessions,
        handle: &'a SessionHandle,
        peer: &'a Authenticated,
        sock: &'a mut Socket,
        limiter: &'a Limiter,
    ) -> Self {
        Self {
            app,
            handle,
            peer,
            sock,
            limiter,
            resend_limiter: self::limiter(app),
            open_tasks: HashMap::new(),
            awaiting_acks: HashSet::default(),
            refused_rows: 0,
            drain_until: None,
            last_task_at: None,
            held_until: None,
            last_heard: Instant::now(),
            heartbeat_timeout: app.settings.heartbeat_timeout,
        }
    }

    /// Welcome, then the loop. Everything time-driven (heartbeat silence,
    /// task deadlines, the end of a drain) shares one timer that is moved
    /// only when something must happen earlier than it is set for; when it
    /// fires early, [`Self::on_timer`] looks again.
    async fn serve(mut self, mut rx: mpsc::Receiver<Outbound>) -> End {
        if let Err(end) = Box::pin(self.welcome()).await {
            return end;
        }
        let wake = sleep_until(self.last_heard + self.heartbeat_timeout);
        // Replacement, a rebalance or the hub's drain: while working, the
        // loop waits on the one token all three cancel; once draining, on
        // replacement alone (the drain has begun; a replacement ends it).
        let attention = self.handle.signals.attention();
        let replaced = self.handle.signals.on_replaced();
        tokio::pin!(wake, attention, replaced);
        // Frames taken from the queue for one write; empty between writes
        // (an idle session never allocates it).
        let mut queued: Vec<Outbound> = Vec::new();
        let mut steps: u32 = 0;
        loop {
            // The select below is biased toward the queue and the socket;
            // every RARE_EVERY steps the rest is looked at directly, so a
            // socket or queue that is always ready cannot hold off
            // replacement, access refusal, a drain or the timer.
            steps = steps.wrapping_add(1);
            if steps % RARE_EVERY == 0 {
                if self.handle.signals.needs_attention() {
                    if let Err(end) = Box::pin(self.attend(wake.as_mut())).await {
                        return end;
                    }
                }
                if wake.deadline() <= Instant::now() {
                    if let Err(end) = Box::pin(self.on_timer(wake.as_mut())).await {
                        return end;
                    }
                }
            }
            if self.drained() {
                Box::pin(close(self.sock, CLOSE_GOING_AWAY, "shutting_down")).await;
                return End::Drained;
            }
            // In this order, and the first ready wins: the frequent steps
            // are polled first, so a wake-up for a frame or a queued
            // message does not also poll (and lock) the attention token.
            // It is polled whenever neither is ready, which a rate-limited
            // socket and a bounded queue guarantee often.
            //
            // Each step's future is boxed: it exists only while the step
            // runs, instead of every idle session's task being as large as
            // its largest step (5.5 KB, with them inline).
            let step = tokio::select! {
                biased;
                // Everything already queued (up to WRITE_BATCH) goes out in one flush.
                n = rx.recv_many(&mut queued, WRITE_BATCH) => {
                    Box::pin(self.write_queued(n, &mut queued, wake.as_mut())).await
                }
                incoming = self.sock.read() => Box::pin(self.on_read(incoming)).await,
                () = &mut wake => Box::pin(self.on_timer(wake.as_mut())).await,
                _ = &mut attention, if self.drain_until.is_none() => {
                    Box::pin(self.attend(wake.as_mut())).await
                }
                _ = &mut replaced, if self.drain_until.is_some() => {
                    Err(Box::pin(self.replaced()).await)
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn welcome(&mut self) -> Step {
        let s = &self.app.settings;
        let welcome = HubMessage::Welcome(Welcome {
            validator_id: self.handle.validator_id.0,
            protocol_version: self.peer.version,
            hub_id: s.hub_id.clone(),
            heartbeat_interval_ms: s.heartbeat_interval.as_millis() as u64,
            heartbeat_timeout_ms: s.heartbeat_timeout.as_millis() as u64,
            limits: s.limits(),
        });
        send(self.sock, &welcome).await
    }

    /// Draining, and nothing left to wait for.
    fn drained(&self) -> bool {
        self.drain_until.is_some() && self.open_tasks.is_empty() && self.awaiting_acks.is_empty()
    }

    /// The attention token fired: replaced (the end), or told to drain by
    /// the hub's shutdown or a rebalance. Nothing once draining but a
    /// replacement.
    async fn attend(&mut self, wake: Pin<&mut Sleep>) -> Step {
        if self.handle.signals.is_replaced() {
            return Err(self.replaced().await);
        }
        if self.drain_until.is_some() {
            return Ok(());
        }
        let hint = if self.app.draining.is_cancelled() {
            HINT_SHUTDOWN
        } else {
            HINT_REBALANCE
        };
        self.start_drain(wake, hint).await
    }

    async fn replaced(&mut self) -> End {
        if let Some(Kick::Refused(why)) = self.handle.kicked.get() {
            return fail(
                self.app,
                self.sock,
                ErrorCode::AccessDenied,
                why.clone(),
                CLOSE_POLICY,
            )
            .await;
        }
        fail(
            self.app,
            self.sock,
            ErrorCode::SessionReplaced,
            "a newer session with this key connected".into(),
            CLOSE_GOING_AWAY,
        )
        .await
    }

    /// Shutdown began, or this hub is rebalancing and chose this session:
    /// tell the validator to go elsewhere, and wait (up to the drain
    /// timeout) for what it owes and is owed. No `urls`: the load balancer
    /// places it again.
    async fn start_drain(&mut self, wake: Pin<&mut Sleep>, reason: &str) -> Step {
        let until = Instant::now() + self.app.settings.drain_timeout;
        self.drain_until = Some(until);
        if until < wake.deadline() {
            wake.reset(until);
        }
        let hint = HubMessage::Reconnect(Reconnect {
            reason: reason.into(),
            retry_after_ms: 500,
            urls: Vec::new(),
        });
        send(self.sock, &hint).await
    }

    /// Read: one frame from the socket.
    async fn on_read(&mut self, incoming: Incoming) -> Step {
        let text = match incoming {
            Incoming::Closed => return Err(End::PeerClosed),
            Incoming::TooBig => return Err(too_big(self.app, self.sock).await),
            Incoming::Invalid(code) => return Err(broken_framing(self.sock, code).await),
            Incoming::Control | Incoming::Binary => {
                self.last_heard = Instant::now();
                // Pings and pongs count against the message rate too: each
                // ping costs the hub a pong.
                if self.limiter.check().is_err() {
                    return Err(rate_limited(self.app, self.sock).await);
                }
                if incoming == Incoming::Binary {
                    send_error(
                        self.app,
                        self.sock,
                        ErrorCode::MalformedFrame,
                        "binary frames are not accepted",
                    )
                    .await?;
                }
                return Ok(());
            }
            Incoming::Text(t) => t,
        };
        self.last_heard = Instant::now();
        let decoded = ValidatorMessage::decode(&text);
        // A resend of a result still on its way to the database is
        // dropped, and that copy's ack comes here. It is charged to a
        // budget of its own, so an honest validator resending during a
        // database outage keeps its message rate.
        if let Ok(ValidatorMessage::Result(r)) = &decoded {
            if self
                .app
                .backlog
                .redirect((r.task_id, self.handle.validator_id), &self.handle.tx)
            {
                if self.resend_limiter.check().is_err() {
                    return Err(rate_limited(self.app, self.sock).await);
                }
                self.app.metrics.results_resent.inc();
                return Ok(());
            }
        }
        if self.limiter.check().is_err() {
            return Err(rate_limited(self.app, self.sock).await);
        }
        let reply = match decoded {
            Err(e) => HubMessage::error(e.code(), e.to_string()),
            Ok(ValidatorMessage::Hello(_)) => HubMessage::error(
                ErrorCode::AlreadyAuthenticated,
                "this session is already authenticated",
            ),
            Ok(ValidatorMessage::Heartbeat(hb)) => {
                HubMessage::HeartbeatAck(protocol::HeartbeatAck {
                    seq: hb.seq,
                    server_time_ms: now_ms(),
                })
            }
            Ok(ValidatorMessage::Result(r)) => match self.check(r).await? {
                Some(reply) => reply,
                None => return Ok(()),
            },
        };
        if let HubMessage::Error(e) = &reply {
            self.app
                .metrics
                .protocol_errors
                .with_label_values(&[e.code.as_str()])
                .inc();
        }
        send(self.sock, &reply).await
    }

    /// Check: a result's checks at the door (all but the signature, which
    /// the tick writers verify in batches). The reply to send now, if any.
    async fn check(&mut self, r: protocol::CheckResult) -> Result<Option<HubMessage>, End> {
        if self.open_tasks.remove(&r.task_id).is_some() {
            self.handle
                .in_flight
                .store(self.open_tasks.len() as u32, Relaxed);
        }
        let h = self.handle;
        // Evidence from protocol 2 on, none before: part of check 1.
        let checked = match protocol::limits::check_result_version(&r, self.peer.version) {
            Ok(()) => self
                .app
                .verifier
                .check_unsigned(&h.key, h.validator_id, &r, now_ms()),
            Err(_) => Err(ErrorCode::InvalidResult),
        };
        match checked {
            Ok(tick) => {
                let item = IngestItem {
                    tick,
                    signed: Box::new((self.peer.vk, r)),
                };
                self.hand_to_ingest(item).await?;
                Ok(None)
            }
            Err(ErrorCode::DeadlinePassed) => {
                // A resend after the deadline: if an earlier copy was
                // stored (its ack was lost), say so.
                late_resend(self.app, h, &r);
                Ok(None)
            }
            Err(code) => {
                self.app
                    .metrics
                    .results_rejected
                    .with_label_values(&[code.as_str()])
                    .inc();
                Ok(Some(HubMessage::ResultAck(ResultAck {
                    task_id: r.task_id,
                    outcome: AckOutcome::Rejected,
                    code: Some(code),
                })))
            }
        }
    }

    /// Hand to ingest: enter the result in the backlog and queue it for the
    /// tick writers; its ack comes back through the session's queue.
    async fn hand_to_ingest(&mut self, item: IngestItem) -> Step {
        let app = self.app;
        if !app
            .backlog
            .enter(item.key(), item.tick.received_at_ms, &self.handle.tx)
        {
            // Another copy got in first (a race with a resend): its ack
            // comes here.
            app.metrics.results_resent.inc();
            return Ok(());
        }
        self.awaiting_acks.insert(item.tick.task_id);
        enqueue(app, self.sock, item).await?;
        // Time spent waiting here was ours, not the validator's silence.
        self.last_heard = Instant::now();
        Ok(())
    }

    /// Write queued: tasks, acks and refusals others queued for this
    /// validator, in one flush.
    async fn write_queued(
        &mut self,
        n: usize,
        queued: &mut Vec<Outbound>,
        mut wake: Pin<&mut Sleep>,
    ) -> Step {
        if n == 0 {
            return Err(End::Io);
        }
        // A hold's deadline belongs to bytes still unwritten: one left from
        // acks another write (a heartbeat's answer) already took is stale.
        if self.sock.pending_output() == 0 {
            self.held_until = None;
        }
        // Only acknowledgements (no task, no other frame) may be held.
        let (mut urgent, mut task) = (false, false);
        for item in queued.drain(..) {
            let msg = match item {
                Outbound::Frame(m) => {
                    urgent = true;
                    if let HubMessage::Task(t) = &*m {
                        if self.drain_until.is_some() {
                            // Queued before the drain began (the hint is
                            // out): the validator would drop it unrun. Kept
                            // from it, it does not hold the session open;
                            // its owner replaces it when the session closes
                            // or at its deadline.
                            tracing::debug!(task_id = %t.task_id, "not sending a task to a draining session");
                            continue;
                        }
                        task = true;
                        self.open_tasks.insert(t.task_id, t.deadline_ms);
                        self.handle
                            .in_flight
                            .store(self.open_tasks.len() as u32, Relaxed);
                        let at = instant_of(t.deadline_ms, Instant::now(), now_ms());
                        if at < wake.deadline() {
                            wake.as_mut().reset(at);
                        }
                    }
                    m
                }
                Outbound::Ack(m) => {
                    acked(&mut self.awaiting_acks, &m);
                    m
                }
                Outbound::Refused(m) => {
                    acked(&mut self.awaiting_acks, &m);
                    self.refused_rows += 1;
                    m
                }
            };
            self.sock.queue_json(&*msg);
        }
        let now = Instant::now();
        if task {
            self.last_task_at = Some(now);
        }
        if !urgent && self.may_hold(now) {
            let until = *self
                .held_until
                .get_or_insert(now + self.app.settings.ack_hold);
            if until < wake.deadline() {
                wake.reset(until);
            }
        } else {
            timed(self.sock.flush()).await?;
            if self.held_until.take().is_some() {
                // The timer may be set for the hold: back to what is due.
                wake.reset(self.next_wake(now, now_ms()));
            }
        }
        if self.refused_rows >= MAX_REFUSED_ROWS {
            return Err(fail(
                self.app,
                self.sock,
                ErrorCode::InvalidResult,
                format!(
                    "{} results refused by the database on this connection",
                    self.refused_rows
                ),
                CLOSE_POLICY,
            )
            .await);
        }
        Ok(())
    }

    /// Whether acks queued now may wait for the next task's write: tasks
    /// are flowing to this session (one was sent within
    /// [`TASKS_FLOWING`]), it is not draining, and few bytes are held.
    fn may_hold(&self, now: Instant) -> bool {
        !self.app.settings.ack_hold.is_zero()
            && self.drain_until.is_none()
            && self.sock.pending_output() <= HELD_MAX_BYTES
            && self
                .last_task_at
                .is_some_and(|t| now.duration_since(t) < TASKS_FLOWING)
    }

    /// When the timer must next fire: heartbeat silence, the earliest task
    /// deadline, the end of a drain, the end of an ack hold.
    fn next_wake(&self, now: Instant, now_ms: i64) -> Instant {
        let next_task = self
            .open_tasks
            .values()
            .min()
            .map(|d| instant_of(*d, now, now_ms));
        [
            Some(self.last_heard + self.heartbeat_timeout),
            next_task,
            self.drain_until,
            self.held_until,
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("the silence check is always set")
    }

    /// Timers: the end of a drain, heartbeat silence, task deadlines, the
    /// end of an ack hold.
    async fn on_timer(&mut self, mut wake: Pin<&mut Sleep>) -> Step {
        let now = Instant::now();
        if self.held_until.is_some_and(|h| h <= now) {
            self.held_until = None;
            timed(self.sock.flush()).await?;
        }
        if self.drain_until.is_some_and(|d| d <= now) {
            close(self.sock, CLOSE_GOING_AWAY, "shutting_down").await;
            return Err(End::Drained);
        }
        if self.last_heard + self.heartbeat_timeout <= now {
            return Err(fail(
                self.app,
                self.sock,
                ErrorCode::HeartbeatTimeout,
                format!(
                    "nothing received for {} ms",
                    self.heartbeat_timeout.as_millis()
                ),
                CLOSE_POLICY,
            )
            .await);
        }
        // A task the validator never answers stops counting at its
        // deadline (the hub replaces it then), so the advertised load stays
        // honest.
        let now_ms = now_ms();
        self.open_tasks.retain(|_, deadline| *deadline > now_ms);
        self.handle
            .in_flight
            .store(self.open_tasks.len() as u32, Relaxed);
        let next = self.next_wake(now, now_ms);
        wake.as_mut().reset(next);
        Ok(())
    }
}

/// Too many hellos from this client address (`HUB_HELLO_RATE_PER_IP`).
async fn hello_rate_limited(app: &Sessions, sock: &mut Socket) -> End {
    let s = &app.settings;
    app.metrics
        .connections_refused
        .with_label_values(&["hello_rate"])
        .inc();
    let msg = format!(
        "more than {} hellos/s from this address (burst {})",
        s.hello_rate_per_ip, s.hello_burst_per_ip
    );
    fail(app, sock, ErrorCode::RateLimited, msg, CLOSE_POLICY).await
}
