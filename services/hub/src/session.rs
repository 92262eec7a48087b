//! One validator's WebSocket session: challenge, hello, then a loop that
//! reads frames, writes queued frames, watches the heartbeat, and drains on
//! shutdown. A bad frame costs the sender an error frame, never the hub.
//!
//! What closes a session (each documented in docs/protocol.md): no valid
//! hello in time, a bad hello, an oversized frame, a flood past the rate
//! limit, a result or heartbeat before hello, heartbeat silence, a newer
//! session with the same key, a write that cannot finish in 10 s, and
//! shutdown once in-flight work is handed in. A full outbound queue does not
//! close it: new tasks go to other validators, and a dropped ack is
//! recovered by the validator's resend.

use foldhash::{HashMap, HashMapExt, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use ed25519_dalek::VerifyingKey;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use governor::{Quota, RateLimiter};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use protocol::limits::{MAX_CLIENT_VERSION_LEN, MAX_REGION_LEN, MAX_TAGS, MAX_TAG_LEN};
use protocol::{
    crypto::verify_hello, negotiate_version, now_ms, AckOutcome, Challenge, ErrorCode, Hello,
    HubMessage, Nonce, Reconnect, ResultAck, ValidatorMessage, Welcome, SUPPORTED_VERSIONS,
};

use crate::app::AppState;
use crate::cluster::presence::Claim;
use crate::coordinator::Event;
use crate::ingest::{IngestItem, MAX_REFUSED_ROWS};
use crate::registry::{Outbound, SessionHandle};

/// How long one frame may take to write before the peer counts as stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many queued frames go out in one flush.
const WRITE_BATCH: usize = 64;

const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;
type Limiter = governor::DefaultDirectRateLimiter;

/// Why the session ended, for logs.
#[derive(Debug)]
enum End {
    PeerClosed,
    #[allow(dead_code, reason = "read through Debug in logs")]
    Error(ErrorCode),
    Drained,
    Io,
}

/// What one read from the socket produced.
enum Incoming {
    Text(Utf8Bytes),
    /// Ping/pong (answered by the library) or binary: nothing to process.
    Other(bool),
    Closed,
    TooBig,
}

async fn read(stream: &mut Stream) -> Incoming {
    match stream.next().await {
        None | Some(Ok(Message::Close(_))) => Incoming::Closed,
        Some(Ok(Message::Text(t))) => Incoming::Text(t),
        Some(Ok(Message::Binary(_))) => Incoming::Other(true),
        Some(Ok(_)) => Incoming::Other(false),
        Some(Err(e)) => {
            let too_big = e
                .into_inner()
                .downcast_ref::<tokio_tungstenite::tungstenite::Error>()
                .is_some_and(|e| matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)));
            if too_big {
                Incoming::TooBig
            } else {
                Incoming::Closed
            }
        }
    }
}

/// Runs one write step (`feed`, `flush` or `send`) under [`WRITE_TIMEOUT`].
/// A loopback or healthy peer's socket takes the bytes at once, so the step
/// is polled once first and a timer is armed only if it has to wait.
async fn timed(step: impl Future<Output = Result<(), axum::Error>>) -> Result<(), End> {
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

fn text(msg: &HubMessage) -> Message {
    Message::Text(msg.encode().into())
}

/// Writes one frame and flushes it.
async fn send(sink: &mut Sink, msg: &HubMessage) -> Result<(), End> {
    timed(sink.send(text(msg))).await
}

async fn close(sink: &mut Sink, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = timeout(WRITE_TIMEOUT, sink.send(frame)).await;
}

/// Sends an error frame and counts it.
async fn send_error(
    app: &AppState,
    sink: &mut Sink,
    code: ErrorCode,
    message: impl Into<String>,
) -> Result<(), End> {
    app.metrics
        .protocol_errors
        .with_label_values(&[code.as_str()])
        .inc();
    send(sink, &HubMessage::error(code, message)).await
}

/// Sends an error frame, then closes the socket.
async fn fail(app: &AppState, sink: &mut Sink, code: ErrorCode, message: String, ws: u16) -> End {
    let _ = send_error(app, sink, code, message).await;
    close(sink, ws, code.as_str()).await;
    End::Error(code)
}

fn limiter(app: &AppState) -> Limiter {
    let s = &app.settings;
    let rate = NonZeroU32::new(s.max_messages_per_sec).expect("validated positive");
    let burst = NonZeroU32::new(s.message_burst).expect("validated positive");
    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
}

/// Checks the hello's fields (not its signature).
fn validate_hello(h: &Hello) -> Result<(), String> {
    let name_ok = |s: &str, max: usize, extra: &[char]| {
        !s.is_empty()
            && s.len() <= max
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || extra.contains(&c)
            })
    };
    if !name_ok(&h.region, MAX_REGION_LEN, &[]) {
        return Err(format!(
            "region must be 1-{MAX_REGION_LEN} bytes of [a-z0-9-], got {:?}",
            h.region
        ));
    }
    if h.tags.len() > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags"));
    }
    if let Some(t) = h
        .tags
        .iter()
        .find(|t| !name_ok(t, MAX_TAG_LEN, &['_', '.', ':']))
    {
        return Err(format!(
            "tags must be 1-{MAX_TAG_LEN} bytes of [a-z0-9-_.:], got {t:?}"
        ));
    }
    if !(1..=1000).contains(&h.capacity) {
        return Err(format!("capacity must be 1..=1000, got {}", h.capacity));
    }
    if h.client_version.len() > MAX_CLIENT_VERSION_LEN {
        return Err(format!(
            "client_version longer than {MAX_CLIENT_VERSION_LEN} bytes"
        ));
    }
    Ok(())
}

/// The authenticated peer.
struct Peer {
    hello: Hello,
    vk: VerifyingKey,
    version: u16,
}

/// Challenge, then wait for a valid hello within the auth timeout.
async fn authenticate(
    app: &AppState,
    sink: &mut Sink,
    stream: &mut Stream,
    limiter: &Limiter,
    client: std::net::IpAddr,
) -> Result<Peer, End> {
    let nonce = Nonce::random();
    let challenge = HubMessage::Challenge(Challenge {
        nonce,
        hub_id: app.settings.hub_id.clone(),
        protocol_versions: SUPPORTED_VERSIONS.to_vec(),
        server_time_ms: now_ms(),
    });
    send(sink, &challenge).await?;
    let until = Instant::now() + Duration::from_millis(app.settings.auth_timeout_ms);
    loop {
        let incoming = tokio::select! {
            i = read(stream) => i,
            _ = sleep_until(until) => {
                return Err(fail(app, sink, ErrorCode::AuthTimeout,
                    format!("no valid hello within {} ms", app.settings.auth_timeout_ms),
                    CLOSE_POLICY).await);
            }
        };
        let text = match incoming {
            Incoming::Closed => return Err(End::PeerClosed),
            Incoming::TooBig => return Err(too_big(app, sink).await),
            Incoming::Other(false) => continue,
            Incoming::Other(true) => {
                if limiter.check().is_err() {
                    return Err(rate_limited(app, sink).await);
                }
                send_error(
                    app,
                    sink,
                    ErrorCode::MalformedFrame,
                    "binary frames are not accepted",
                )
                .await?;
                continue;
            }
            Incoming::Text(t) => t,
        };
        if limiter.check().is_err() {
            return Err(rate_limited(app, sink).await);
        }
        match ValidatorMessage::decode(&text) {
            Err(e) => send_error(app, sink, e.code(), e.to_string()).await?,
            Ok(ValidatorMessage::Hello(hello)) => {
                // Before any work a hello costs (a signature check, a row).
                if app.hello_limiter.check_key(&client).is_err() {
                    return Err(hello_rate_limited(app, sink).await);
                }
                if let Err(problem) = validate_hello(&hello) {
                    return Err(
                        fail(app, sink, ErrorCode::InvalidHello, problem, CLOSE_POLICY).await,
                    );
                }
                let Some(version) = negotiate_version(&hello.protocol_versions) else {
                    return Err(fail(
                        app,
                        sink,
                        ErrorCode::UnsupportedVersion,
                        format!("this hub speaks protocol versions {SUPPORTED_VERSIONS:?}"),
                        CLOSE_POLICY,
                    )
                    .await);
                };
                return match verify_hello(&nonce, &hello) {
                    Ok(vk) => Ok(Peer { hello, vk, version }),
                    Err(e) => Err(fail(
                        app,
                        sink,
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
                    sink,
                    ErrorCode::NotAuthenticated,
                    "send hello first".into(),
                    CLOSE_POLICY,
                )
                .await)
            }
        }
    }
}

async fn too_big(app: &AppState, sink: &mut Sink) -> End {
    let max = app.settings.max_frame_bytes;
    fail(
        app,
        sink,
        ErrorCode::FrameTooLarge,
        format!("frames are limited to {max} bytes"),
        CLOSE_TOO_BIG,
    )
    .await
}

async fn rate_limited(app: &AppState, sink: &mut Sink) -> End {
    let s = &app.settings;
    let msg = format!(
        "more than {} messages/s (burst {})",
        s.max_messages_per_sec, s.message_burst
    );
    fail(app, sink, ErrorCode::RateLimited, msg, CLOSE_POLICY).await
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
async fn enqueue(app: &AppState, sink: &mut Sink, item: IngestItem) -> Result<(), End> {
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
    let every = Duration::from_millis(app.settings.heartbeat_interval_ms);
    let send = app.ingest.send(item);
    tokio::pin!(send);
    let res = loop {
        tokio::select! {
            r = &mut send => break r.map_err(|_| End::Io),
            () = tokio::time::sleep(every) => {
                if let Err(end) = timed(sink.send(Message::Ping(Default::default()))).await {
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
fn late_resend(app: &AppState, handle: &SessionHandle, r: &protocol::CheckResult) {
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
async fn finish(sink: &mut Sink, stream: &mut Stream, end: &End) {
    match end {
        End::PeerClosed => {
            let _ = timeout(LINGER, sink.flush()).await;
        }
        End::Error(_) | End::Drained => {
            let _ = timeout(LINGER, async {
                while let Some(Ok(m)) = stream.next().await {
                    if matches!(m, Message::Close(_)) {
                        // Completes the handshake on our side too.
                        let _ = sink.flush().await;
                        break;
                    }
                }
            })
            .await;
        }
        End::Io => {}
    }
}

/// Runs one connection to its end.
pub async fn run(
    socket: WebSocket,
    app: Arc<AppState>,
    peer_addr: SocketAddr,
    preauth: crate::app::PreAuthGuard,
) {
    let (mut sink, mut stream) = socket.split();
    let limiter = limiter(&app);
    let client = crate::app::client_key(peer_addr.ip());
    let authenticated = authenticate(&app, &mut sink, &mut stream, &limiter, client).await;
    // A valid hello (or the end): no longer a pre-auth socket.
    drop(preauth);
    let peer = match authenticated {
        Ok(p) => p,
        Err(end) => {
            finish(&mut sink, &mut stream, &end).await;
            tracing::debug!(%peer_addr, ?end, "session ended before hello");
            return;
        }
    };
    let key = peer.hello.public_key;
    let validator_id = match app
        .store
        .upsert_validator(
            &key.to_base58(),
            &peer.hello.region,
            &peer.hello.tags,
            &peer.hello.client_version,
        )
        .await
    {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "recording validator failed");
            let end = fail(
                &app,
                &mut sink,
                ErrorCode::Internal,
                "try again later".into(),
                1011,
            )
            .await;
            finish(&mut sink, &mut stream, &end).await;
            return;
        }
    };
    let (tx, rx) = mpsc::channel(app.settings.session_queue);
    let handle = Arc::new(SessionHandle {
        generation: app.registry.next_generation(),
        validator_id,
        key,
        region: peer.hello.region.clone(),
        capacity: peer.hello.capacity,
        in_flight: std::sync::atomic::AtomicU32::new(0),
        tx,
        replaced: CancellationToken::new(),
    });
    if app.registry.register(handle.clone()).is_some() {
        app.metrics.sessions_replaced.inc();
    }
    app.metrics.validators_connected.inc();
    if let Some(link) = app.cluster.clone() {
        // In the background: a slow or absent Redis must not delay the
        // welcome. Tell the hub that held this key before (if another) to
        // let go of it.
        let app = app.clone();
        let generation = handle.generation;
        let replaced = handle.replaced.clone();
        tokio::spawn(async move {
            match link.presence.claim(&key.to_base58(), generation).await {
                Ok(Claim::Won(Some((hub, generation)))) if hub != app.settings.hub_id => {
                    link.outbox.send(
                        &hub,
                        crate::cluster::routing::InboxMessage::Kick {
                            validator: key,
                            generation,
                        },
                    );
                }
                Ok(Claim::Won(_)) => {}
                Ok(Claim::Lost(hub, _)) => {
                    // Another hub's session with this key said hello later
                    // (by the hubs' clocks), and its claim landed first:
                    // the later hello stays.
                    tracing::info!(validator = %key, newer_on = %hub, "a newer session holds this key");
                    app.metrics.sessions_replaced.inc();
                    replaced.cancel();
                }
                Err(e) => {
                    app.metrics.redis_errors.inc();
                    tracing::warn!(error = %e, "claiming the validator's presence failed");
                }
            }
        });
    }
    tracing::info!(%peer_addr, validator = %key, region = %peer.hello.region, validator_id, "validator connected");
    let end = serve(&app, &handle, &peer, &mut sink, &mut stream, rx, &limiter).await;
    app.registry.unregister(&key, handle.generation);
    app.metrics.validators_connected.dec();
    let _ = app.events.try_send(Event::SessionClosed {
        key,
        generation: handle.generation,
    });
    // Unregistered first: no task waits on a session that is closing.
    finish(&mut sink, &mut stream, &end).await;
    if let Some(link) = app.cluster.clone() {
        let metrics = app.metrics.clone();
        let generation = handle.generation;
        tokio::spawn(async move {
            if let Err(e) = link.presence.release(&key.to_base58(), generation).await {
                metrics.redis_errors.inc();
                tracing::debug!(error = %e, "releasing the validator's presence failed");
            }
        });
    }
    tracing::info!(validator = %key, ?end, "validator disconnected");
}

/// The authenticated loop.
async fn serve(
    app: &AppState,
    handle: &SessionHandle,
    peer: &Peer,
    sink: &mut Sink,
    stream: &mut Stream,
    mut rx: mpsc::Receiver<Outbound>,
    limiter: &Limiter,
) -> End {
    let s = &app.settings;
    let welcome = HubMessage::Welcome(Welcome {
        validator_id: handle.validator_id,
        protocol_version: peer.version,
        hub_id: s.hub_id.clone(),
        heartbeat_interval_ms: s.heartbeat_interval_ms,
        heartbeat_timeout_ms: s.heartbeat_timeout_ms,
        limits: s.limits(),
    });
    if let Err(e) = send(sink, &welcome).await {
        return e;
    }
    let heartbeat_timeout = Duration::from_millis(s.heartbeat_timeout_ms);
    // Tasks sent on this socket and not yet answered, with their deadlines,
    // and results handed to the writer and not yet acknowledged: what a
    // drain waits for.
    let mut open_tasks: HashMap<Uuid, i64> = HashMap::new();
    // By task id, not a count: the ack of a result resent from another
    // connection may arrive here, and this session's may go there.
    let mut awaiting_acks: HashSet<Uuid> = HashSet::default();
    // Rows of this session's the database refused (see ingest).
    let mut refused_rows = 0u32;
    let resend_limiter = self::limiter(app);
    let mut drain_until: Option<Instant> = None;
    // Everything time-driven (heartbeat silence, task deadlines, the end of
    // a drain) shares one timer that is moved only when something must
    // happen earlier than it is set for; when it fires early the loop looks
    // again. A message therefore costs no timer work: `last_heard` is a
    // plain store, checked against the clock only when the timer fires.
    let mut last_heard = Instant::now();
    let wake = sleep_until(last_heard + heartbeat_timeout);
    let shutdown = app.shutdown.cancelled();
    let replaced = handle.replaced.cancelled();
    tokio::pin!(wake, shutdown, replaced);
    // Frames taken from the queue for one write; empty between writes (an
    // idle session never allocates it).
    let mut queued: Vec<Outbound> = Vec::new();

    loop {
        if drain_until.is_some() && open_tasks.is_empty() && awaiting_acks.is_empty() {
            close(sink, CLOSE_GOING_AWAY, "shutting_down").await;
            return End::Drained;
        }
        tokio::select! {
            _ = &mut replaced => {
                return fail(app, sink, ErrorCode::SessionReplaced,
                    "a newer session with this key connected".into(), CLOSE_GOING_AWAY).await;
            }
            _ = &mut shutdown, if drain_until.is_none() => {
                let until = Instant::now() + s.drain_timeout();
                drain_until = Some(until);
                if until < wake.deadline() {
                    wake.as_mut().reset(until);
                }
                let hint = HubMessage::Reconnect(Reconnect {
                    reason: "hub is shutting down".into(),
                    retry_after_ms: 500,
                    urls: Vec::new(),
                });
                if let Err(e) = send(sink, &hint).await {
                    return e;
                }
            }
            incoming = read(stream) => {
                let text = match incoming {
                    Incoming::Closed => return End::PeerClosed,
                    Incoming::TooBig => return too_big(app, sink).await,
                    Incoming::Other(binary) => {
                        last_heard = Instant::now();
                        if binary {
                            if limiter.check().is_err() {
                                return rate_limited(app, sink).await;
                            }
                            if let Err(e) = send_error(app, sink, ErrorCode::MalformedFrame,
                                "binary frames are not accepted").await {
                                return e;
                            }
                        }
                        continue;
                    }
                    Incoming::Text(t) => t,
                };
                last_heard = Instant::now();
                let decoded = ValidatorMessage::decode(&text);
                // A resend of a result still on its way to the database is
                // dropped, and that copy's ack comes here. It is charged to
                // a budget of its own, so an honest validator resending
                // during a database outage keeps its message rate.
                if let Ok(ValidatorMessage::Result(r)) = &decoded {
                    if app.backlog.redirect((r.task_id, handle.validator_id), &handle.tx) {
                        if resend_limiter.check().is_err() {
                            return rate_limited(app, sink).await;
                        }
                        app.metrics.results_resent.inc();
                        continue;
                    }
                }
                if limiter.check().is_err() {
                    return rate_limited(app, sink).await;
                }
                let reply = match decoded {
                    Err(e) => HubMessage::error(e.code(), e.to_string()),
                    Ok(ValidatorMessage::Hello(_)) => HubMessage::error(
                        ErrorCode::AlreadyAuthenticated, "this session is already authenticated"),
                    Ok(ValidatorMessage::Heartbeat(hb)) => {
                        HubMessage::HeartbeatAck(protocol::HeartbeatAck { seq: hb.seq, server_time_ms: now_ms() })
                    }
                    Ok(ValidatorMessage::Result(r)) => {
                        if open_tasks.remove(&r.task_id).is_some() {
                            handle.in_flight.store(open_tasks.len() as u32, Relaxed);
                        }
                        // The signature is verified by the tick writers, in batches.
                        match app.verifier.check_unsigned(&handle.key, handle.validator_id, &r, now_ms()) {
                            Ok(tick) => {
                                let item = IngestItem {
                                    tick,
                                    signed: Box::new((peer.vk, r)),
                                };
                                if !app.backlog.enter(item.key(), item.tick.received_at_ms, &handle.tx) {
                                    // Another copy got in first (a race with
                                    // a resend): its ack comes here.
                                    app.metrics.results_resent.inc();
                                    continue;
                                }
                                awaiting_acks.insert(item.tick.task_id);
                                if let Err(end) = enqueue(app, sink, item).await {
                                    return end;
                                }
                                // Time spent waiting here was ours, not the
                                // validator's silence.
                                last_heard = Instant::now();
                                continue;
                            }
                            Err(ErrorCode::DeadlinePassed) => {
                                // A resend after the deadline: if an earlier
                                // copy was stored (its ack was lost), say so.
                                late_resend(app, handle, &r);
                                continue;
                            }
                            Err(code) => {
                                app.metrics.results_rejected.with_label_values(&[code.as_str()]).inc();
                                HubMessage::ResultAck(ResultAck {
                                    task_id: r.task_id,
                                    outcome: AckOutcome::Rejected,
                                    code: Some(code),
                                })
                            }
                        }
                    }
                };
                if let HubMessage::Error(e) = &reply {
                    app.metrics.protocol_errors.with_label_values(&[e.code.as_str()]).inc();
                }
                if let Err(e) = send(sink, &reply).await {
                    return e;
                }
            }
            // Everything already queued (up to WRITE_BATCH) goes out in one flush.
            n = rx.recv_many(&mut queued, WRITE_BATCH) => {
                if n == 0 {
                    return End::Io;
                }
                for item in queued.drain(..) {
                    let msg = match item {
                        Outbound::Frame(m) => {
                            if let HubMessage::Task(t) = &*m {
                                open_tasks.insert(t.task_id, t.deadline_ms);
                                handle.in_flight.store(open_tasks.len() as u32, Relaxed);
                                let at = instant_of(t.deadline_ms, Instant::now(), now_ms());
                                if at < wake.deadline() {
                                    wake.as_mut().reset(at);
                                }
                            }
                            m
                        }
                        Outbound::Ack(m) => {
                            acked(&mut awaiting_acks, &m);
                            m
                        }
                        Outbound::Refused(m) => {
                            acked(&mut awaiting_acks, &m);
                            refused_rows += 1;
                            m
                        }
                    };
                    if let Err(e) = timed(sink.feed(text(&msg))).await {
                        return e;
                    }
                }
                if let Err(e) = timed(sink.flush()).await {
                    return e;
                }
                if refused_rows >= MAX_REFUSED_ROWS {
                    return fail(app, sink, ErrorCode::InvalidResult,
                        format!("{refused_rows} results refused by the database on this connection"),
                        CLOSE_POLICY).await;
                }
            }
            () = &mut wake => {
                let now = Instant::now();
                if drain_until.is_some_and(|d| d <= now) {
                    close(sink, CLOSE_GOING_AWAY, "shutting_down").await;
                    return End::Drained;
                }
                if last_heard + heartbeat_timeout <= now {
                    return fail(app, sink, ErrorCode::HeartbeatTimeout,
                        format!("nothing received for {} ms", s.heartbeat_timeout_ms), CLOSE_POLICY).await;
                }
                // A task the validator never answers stops counting at its
                // deadline (the hub replaces it then), so the advertised
                // load stays honest.
                let now_ms = now_ms();
                open_tasks.retain(|_, deadline| *deadline > now_ms);
                handle.in_flight.store(open_tasks.len() as u32, Relaxed);
                let next_task = open_tasks.values().min().map(|d| instant_of(*d, now, now_ms));
                let next = [Some(last_heard + heartbeat_timeout), next_task, drain_until]
                    .into_iter()
                    .flatten()
                    .min()
                    .expect("the silence check is always set");
                wake.as_mut().reset(next);
            }
        }
    }
}

/// Too many hellos from this client address (`HUB_HELLO_RATE_PER_IP`).
async fn hello_rate_limited(app: &AppState, sink: &mut Sink) -> End {
    let s = &app.settings;
    app.metrics
        .connections_refused
        .with_label_values(&["hello_rate"])
        .inc();
    let msg = format!(
        "more than {} hellos/s from this address (burst {})",
        s.hello_rate_per_ip, s.hello_burst_per_ip
    );
    fail(app, sink, ErrorCode::RateLimited, msg, CLOSE_POLICY).await
}
