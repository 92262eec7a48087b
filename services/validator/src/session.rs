//! One connection to one hub: connect, answer the challenge, then serve
//! tasks until the socket ends, the hub asks us to reconnect, or we shut down.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures_util::StreamExt;
use protocol::crypto::sign_result;
use protocol::{
    CheckResult, Heartbeat, Hello, HubMessage, Signature, Task, ValidatorMessage, Welcome,
    SUPPORTED_VERSIONS,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument};
use url::Url;

use crate::check::Checker;
use crate::config::RunConfig;
use crate::state::{Accept, Out, Outbox, Shared};
use crate::writer::{write_loop, Pacer};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// TCP + TLS + WebSocket upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// From connect to `challenge`, and from `hello` to `welcome`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(protocol::limits::AUTH_TIMEOUT_MS);
/// After `reconnect`: how long in-flight checks may take to finish and be
/// acknowledged before we close anyway.
const RECONNECT_DRAIN: Duration = Duration::from_secs(10);
/// After the shutdown signal: how long in-flight checks may take.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// For our close frame to go out and the hub's to come back.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Result frames queued for the writer before check tasks wait.
const OUTBOX_CAPACITY: usize = 256;
/// Hub frames are small (16 KiB by default); allow some slack, no more.
const MAX_INBOUND_BYTES: usize = 4 * protocol::limits::MAX_FRAME_BYTES;

/// What every session shares with the reconnect loop.
pub(crate) struct Ctx {
    pub config: RunConfig,
    pub key: Arc<SigningKey>,
    pub checker: Checker,
    pub shared: Arc<Shared>,
    pub permits: Arc<Semaphore>,
    /// Check tasks outlive the session that started them: a result finished
    /// after a disconnect is sent on the next connection.
    pub checks: TaskTracker,
    pub abort_checks: CancellationToken,
}

/// How a session ended, which decides what the reconnect loop does next.
#[derive(Debug)]
pub(crate) enum End {
    /// The socket failed or closed; `welcomed` says whether it got that far.
    Lost {
        welcomed: bool,
    },
    /// The hub asked us to come back at `at`, preferably to `urls`.
    Reconnect {
        at: Instant,
        urls: Vec<Url>,
    },
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("connect failed: {0}")]
    Connect(#[source] WsError),
    #[error("socket failed: {0}")]
    Socket(#[source] WsError),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("hub closed the connection before {0}")]
    Closed(&'static str),
    #[error("hub sent {got} while we waited for {want}")]
    Unexpected { got: String, want: &'static str },
    #[error("hub refused us: {code}: {message}")]
    Refused { code: &'static str, message: String },
    #[error("no protocol version in common (hub speaks {0:?}, we speak {SUPPORTED_VERSIONS:?})")]
    Version(Vec<u16>),
}

pub(crate) async fn run(
    ctx: &Ctx,
    url: &Url,
    generation: u64,
    shutdown: &CancellationToken,
) -> End {
    let span = tracing::info_span!("session", hub = %url, generation);
    async {
        let handshake = tokio::select! {
            r = handshake(ctx, url) => r,
            _ = shutdown.cancelled() => return End::Shutdown,
        };
        match handshake {
            Ok((ws, welcome)) => serve(ctx, ws, welcome, generation, shutdown).await,
            Err(e @ (HandshakeError::Refused { .. } | HandshakeError::Version(_))) => {
                // Our hello was judged and refused: likely a config problem.
                error!("{e}");
                End::Lost { welcomed: false }
            }
            Err(e) => {
                warn!("{e}");
                End::Lost { welcomed: false }
            }
        }
    }
    .instrument(span)
    .await
}

async fn handshake(ctx: &Ctx, url: &Url) -> Result<(Ws, Welcome), HandshakeError> {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_INBOUND_BYTES))
        .max_frame_size(Some(MAX_INBOUND_BYTES));
    let (mut ws, _) = timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config), true),
    )
    .await
    .map_err(|_| HandshakeError::Timeout("the WebSocket upgrade"))?
    .map_err(HandshakeError::Connect)?;

    let challenge = match next_message(&mut ws, "challenge").await? {
        HubMessage::Challenge(c) => c,
        other => return Err(unexpected(other, "challenge")),
    };
    if protocol::negotiate_version(&challenge.protocol_versions).is_none() {
        return Err(HandshakeError::Version(challenge.protocol_versions));
    }
    let mut hello = Hello {
        public_key: ctx.shared.public_key,
        region: ctx.config.region.clone(),
        tags: ctx.config.tags.clone(),
        capacity: ctx.config.concurrency,
        client_version: env!("CARGO_PKG_VERSION").to_string(),
        protocol_versions: SUPPORTED_VERSIONS.to_vec(),
        signature: Signature([0; 64]),
    };
    protocol::crypto::sign_hello(&ctx.key, &challenge.nonce, &mut hello);
    let hello = ValidatorMessage::Hello(hello).encode();
    futures_util::SinkExt::send(&mut ws, Message::text(hello))
        .await
        .map_err(HandshakeError::Socket)?;

    match next_message(&mut ws, "welcome").await? {
        HubMessage::Welcome(w) if SUPPORTED_VERSIONS.contains(&w.protocol_version) => Ok((ws, w)),
        HubMessage::Welcome(w) => Err(HandshakeError::Version(vec![w.protocol_version])),
        other => Err(unexpected(other, "welcome")),
    }
}

fn unexpected(got: HubMessage, want: &'static str) -> HandshakeError {
    match got {
        HubMessage::Error(e) => HandshakeError::Refused {
            code: e.code.as_str(),
            message: e.message,
        },
        other => HandshakeError::Unexpected {
            got: message_type(&other).to_string(),
            want,
        },
    }
}

fn message_type(m: &HubMessage) -> &'static str {
    match m {
        HubMessage::Challenge(_) => "challenge",
        HubMessage::Welcome(_) => "welcome",
        HubMessage::HeartbeatAck(_) => "heartbeat_ack",
        HubMessage::Task(_) => "task",
        HubMessage::ResultAck(_) => "result_ack",
        HubMessage::Error(_) => "error",
        HubMessage::Reconnect(_) => "reconnect",
    }
}

/// The next hub message during the handshake, skipping control frames and
/// frames we cannot read.
async fn next_message(ws: &mut Ws, want: &'static str) -> Result<HubMessage, HandshakeError> {
    let read = async {
        loop {
            match ws.next().await {
                None | Some(Ok(Message::Close(_))) => return Err(HandshakeError::Closed(want)),
                Some(Err(e)) => return Err(HandshakeError::Socket(e)),
                Some(Ok(Message::Text(t))) => match HubMessage::decode(&t) {
                    Ok(m) => return Ok(m),
                    Err(e) => warn!("ignoring unreadable frame from hub: {e}"),
                },
                Some(Ok(_)) => {}
            }
        }
    };
    timeout(HANDSHAKE_TIMEOUT, read)
        .await
        .map_err(|_| HandshakeError::Timeout(want))?
}

/// Why the main loop stopped, and whether the socket is still fit for a
/// polite close.
struct Stop {
    end: End,
    socket_ok: bool,
}

/// Set once we stop taking tasks: wait until idle or `until`, then end.
struct Drain {
    until: Instant,
    then: End,
}

async fn serve(
    ctx: &Ctx,
    ws: Ws,
    welcome: Welcome,
    generation: u64,
    shutdown: &CancellationToken,
) -> End {
    info!(
        hub_id = %welcome.hub_id,
        validator_id = welcome.validator_id,
        protocol_version = welcome.protocol_version,
        "connected"
    );
    let (sink, mut stream) = ws.split();
    let (urgent_tx, urgent_rx) = mpsc::channel(8);
    let (frames_tx, frames_rx) = mpsc::channel(OUTBOX_CAPACITY);
    let mut writer = tokio::spawn(write_loop(
        sink,
        urgent_rx,
        frames_rx,
        Pacer::for_limits(&welcome.limits),
        ctx.shared.clone(),
    ));
    let outbox = Outbox {
        generation,
        frames: frames_tx.clone(),
    };
    // Publish the outbox before listing pending results: a check finishing
    // in between either lands in the list or sees the outbox, never neither.
    ctx.shared.connected(outbox.clone(), &welcome.hub_id);
    let resend = tokio::spawn(resend_pending(ctx.shared.clone(), outbox).in_current_span());

    let beat = Duration::from_millis(welcome.heartbeat_interval_ms.max(100));
    // The hub answers every heartbeat, and our pings when it is quiet, so
    // this long a silence means the connection is dead without a FIN.
    let silence_limit = Duration::from_millis(welcome.heartbeat_timeout_ms).max(beat * 3);
    let mut ticker = tokio::time::interval_at(Instant::now() + beat, beat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    // Unacknowledged results go out again on this connection (the
    // protocol's required resend; the hub drops a copy it still holds).
    let resend_every = Duration::from_millis(protocol::limits::RESULT_RESEND_MS);
    let mut resend_tick =
        tokio::time::interval_at(Instant::now() + resend_every / 2, resend_every / 2);
    resend_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rx = Instant::now();
    let mut stats_rx = ctx.shared.subscribe();
    let mut drain: Option<Drain> = None;

    let stop = loop {
        if drain.is_some() && ctx.shared.is_idle() {
            let d = drain.take().expect("checked above");
            break Stop {
                end: d.then,
                socket_ok: true,
            };
        }
        let drain_until = drain.as_ref().map(|d| d.until);
        let shutting_down = matches!(
            drain,
            Some(Drain {
                then: End::Shutdown,
                ..
            })
        );
        tokio::select! {
            _ = shutdown.cancelled(), if !shutting_down => {
                info!("shutting down: finishing in-flight checks");
                let until = Instant::now() + SHUTDOWN_GRACE;
                drain = Some(Drain {
                    until: drain_until.map_or(until, |d| d.min(until)),
                    then: End::Shutdown,
                });
            }
            _ = sleep_until(drain_until.unwrap_or_else(Instant::now)), if drain.is_some() => {
                warn!(
                    in_flight = ctx.shared.in_flight(),
                    "gave up waiting for in-flight checks and acks"
                );
                let d = drain.take().expect("guarded by the branch condition");
                break Stop { end: d.then, socket_ok: true };
            }
            _ = stats_rx.changed(), if drain.is_some() => {}
            res = &mut writer => {
                match res {
                    Ok(Ok(())) => debug!("writer finished"),
                    Ok(Err(e)) => warn!("writing to hub failed: {e}"),
                    Err(e) => warn!("writer task failed: {e}"),
                }
                break lost(drain.take());
            }
            _ = resend_tick.tick() => {
                let due = ctx.shared.due_for_resend(generation, resend_every);
                if !due.is_empty() {
                    debug!(count = due.len(), "resending unacknowledged results");
                }
                for r in due {
                    // A full outbox skips it; it is due again next time.
                    if frames_tx.try_send(Out::Msg(Box::new(ValidatorMessage::Result(r)))).is_err() {
                        break;
                    }
                }
            }
            _ = ticker.tick() => {
                if last_rx.elapsed() > silence_limit {
                    warn!(silent_ms = last_rx.elapsed().as_millis() as u64, "hub went silent");
                    break lost(drain.take());
                }
                seq += 1;
                // Queued tasks count as load too: the hub should not pile
                // more on a validator whose slots are all taken.
                let in_flight = u32::try_from(ctx.shared.in_flight()).unwrap_or(u32::MAX);
                let hb = ValidatorMessage::Heartbeat(Heartbeat { seq, in_flight });
                if urgent_tx.try_send(Out::Msg(Box::new(hb))).is_err() {
                    debug!("writer busy; skipped a heartbeat");
                }
                if last_rx.elapsed() >= beat {
                    let _ = urgent_tx.try_send(Out::Ping);
                }
                // Results sent before a deadline may be acked after it, so
                // only forget them once even a skewed hub clock is past it.
                ctx.shared.prune(protocol::now_ms() - protocol::limits::RESULT_RESEND_GRACE_MS);
            }
            frame = stream.next() => match frame {
                None => {
                    info!("hub closed the connection");
                    break lost(drain.take());
                }
                Some(Err(e)) => {
                    warn!("reading from hub failed: {e}");
                    break lost(drain.take());
                }
                Some(Ok(msg)) => {
                    last_rx = Instant::now();
                    match msg {
                        Message::Text(t) => on_text(ctx, &t, &mut drain),
                        // tungstenite answers the close; keep reading until the
                        // stream ends so the handshake completes.
                        Message::Close(f) => debug!(frame = ?f, "hub sent close"),
                        Message::Binary(_) => warn!("ignoring binary frame from hub"),
                        _ => {}
                    }
                }
            },
        }
    };

    if stop.socket_ok {
        // Results queued before the close frame go out first.
        let polite = async {
            if frames_tx.send(Out::Close).await.is_ok() {
                let _ = (&mut writer).await;
            }
            // The hub's close reply completes the handshake. Acks that
            // arrive before it still count; tasks are no longer taken.
            while let Some(Ok(m)) = stream.next().await {
                match m {
                    Message::Close(_) => break,
                    Message::Text(t) => {
                        if let Ok(HubMessage::ResultAck(ack)) = HubMessage::decode(&t) {
                            ctx.shared.ack(&ack);
                        }
                    }
                    _ => {}
                }
            }
        };
        if timeout(CLOSE_TIMEOUT * 2, polite).await.is_err() {
            debug!("hub did not finish the close handshake in time");
        }
    }
    writer.abort();
    resend.abort();
    ctx.shared.disconnected(generation);
    stop.end
}

/// The socket is gone; a drain in progress still decides what comes next.
fn lost(drain: Option<Drain>) -> Stop {
    Stop {
        end: drain.map_or(End::Lost { welcomed: true }, |d| d.then),
        socket_ok: false,
    }
}

fn on_text(ctx: &Ctx, text: &str, drain: &mut Option<Drain>) {
    let msg = match HubMessage::decode(text) {
        Ok(m) => m,
        Err(e) => {
            // Unknown types are how a newer hub adds messages; skip them.
            warn!("ignoring unreadable frame from hub: {e}");
            return;
        }
    };
    match msg {
        HubMessage::Task(task) => {
            ctx.shared.task_received();
            if drain.is_some() {
                debug!(task_id = %task.task_id, "not taking tasks while draining");
                ctx.shared.task_dropped();
            } else {
                start_check(ctx, task);
            }
        }
        HubMessage::ResultAck(ack) => {
            debug!(task_id = %ack.task_id, outcome = ?ack.outcome, code = ?ack.code, "result acknowledged");
            ctx.shared.ack(&ack);
        }
        HubMessage::HeartbeatAck(_) => {}
        HubMessage::Error(e) => {
            warn!(code = e.code.as_str(), "hub error: {}", e.message);
            ctx.shared.error_frame(e.code);
        }
        HubMessage::Reconnect(r) => {
            ctx.shared.reconnect_requested();
            let urls: Vec<Url> = r
                .urls
                .iter()
                .filter_map(|u| match crate::config::parse_hub_url(u) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        warn!("ignoring reconnect target: {e}");
                        None
                    }
                })
                .collect();
            info!(
                reason = %r.reason,
                retry_after_ms = r.retry_after_ms,
                urls = ?r.urls,
                "hub asked us to reconnect; finishing in-flight checks first"
            );
            let now = Instant::now();
            let until = now + RECONNECT_DRAIN;
            *drain = Some(match drain.take() {
                // Shutting down already: that wins.
                Some(
                    d @ Drain {
                        then: End::Shutdown,
                        ..
                    },
                ) => d,
                other => Drain {
                    until: other.map_or(until, |d| d.until.min(until)),
                    then: End::Reconnect {
                        at: now + Duration::from_millis(r.retry_after_ms),
                        urls,
                    },
                },
            });
        }
        m @ (HubMessage::Challenge(_) | HubMessage::Welcome(_)) => {
            warn!("ignoring unexpected {} after welcome", message_type(&m));
        }
    }
}

/// Runs a task's check on its own task, so the reader never waits for a
/// check or for a free slot.
///
/// A result whose deadline passed while the check ran is still sent: the hub
/// answers `deadline_passed`, which shows up in [`crate::Stats`], and the
/// result leaves the pending map like any acknowledged one.
fn start_check(ctx: &Ctx, task: Task) {
    let id = task.task_id;
    if task.validator != ctx.shared.public_key {
        warn!(task_id = %id, validator = %task.validator, "ignoring a task for another validator");
        ctx.shared.task_dropped();
        return;
    }
    match ctx.shared.accept_task(id) {
        Accept::Yes => {}
        Accept::Duplicate => {
            debug!(task_id = %id, "ignoring a task we already have");
            return;
        }
        Accept::Full => {
            warn!(task_id = %id, "too many queued tasks; dropping one");
            return;
        }
    }
    debug!(task_id = %id, url = %task.url, "task received");
    let permits = ctx.permits.clone();
    let checker = ctx.checker.clone();
    let key = ctx.key.clone();
    let shared = ctx.shared.clone();
    let abort = ctx.abort_checks.clone();
    ctx.checks.spawn(
        async move {
            let check = async {
                let _slot = permits
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                let o = checker.run(&task.url, &task.check).await;
                let mut r = CheckResult::for_task(
                    &task,
                    o.status,
                    o.http_status,
                    o.latency_ms,
                    o.error,
                    protocol::now_ms(),
                );
                sign_result(&key, &mut r);
                r
            };
            let result = tokio::select! {
                r = check => r,
                _ = abort.cancelled() => {
                    debug!(task_id = %id, "check abandoned");
                    shared.task_abandoned(id);
                    return;
                }
            };
            debug!(task_id = %id, status = result.status.as_str(), latency_ms = result.latency_ms, "check done");
            if let Some((outbox, r)) = shared.task_done(result) {
                // A closed channel means the connection just ended; the
                // result stays pending and goes out after the next welcome.
                let _ = outbox
                    .frames
                    .send(Out::Msg(Box::new(ValidatorMessage::Result(r))))
                    .await;
            }
        }
        .in_current_span(),
    );
}

/// After a welcome: resend every unacknowledged result not yet
/// `RESULT_RESEND_GRACE_MS` past its deadline, oldest first; drop the rest.
/// (A hub answers a late copy `duplicate` if it was stored, else a final
/// `deadline_passed`.)
async fn resend_pending(shared: Arc<Shared>, outbox: Outbox) {
    let ids = shared.unexpired(protocol::now_ms() - protocol::limits::RESULT_RESEND_GRACE_MS);
    if !ids.is_empty() {
        info!(count = ids.len(), "resending unacknowledged results");
    }
    for id in ids {
        if let Some(r) = shared.claim(&id, outbox.generation) {
            if outbox
                .frames
                .send(Out::Msg(Box::new(ValidatorMessage::Result(r))))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
