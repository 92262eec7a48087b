//! One connection to one hub: connect, answer the challenge, then serve
//! tasks until the socket ends, the hub asks us to reconnect, or we shut down.
//!
//! `handshake` runs up to the welcome. After it a `Session` holds the
//! connection's state; its loop waits for the next event and hands it to a
//! step: read a frame, handle a hub message, resend due results, heartbeat,
//! begin or end a drain. `Session::finish` closes politely when it can.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use protocol::crypto::sign_result;
use protocol::{
    CheckResult, Heartbeat, Hello, HubMessage, Reconnect, Signature, Task, ValidatorMessage,
    Welcome, SUPPORTED_VERSIONS,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{sleep_until, timeout, Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument};
use url::Url;

use crate::check::Checker;
use crate::config::RunConfig;
use crate::state::{Accept, Out, Outbox, Shared, Stats};
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
    let Some(version) = protocol::negotiate_version(&challenge.protocol_versions) else {
        return Err(HandshakeError::Version(challenge.protocol_versions));
    };
    let payout_address = match ctx.config.payout_address {
        Some(a) if version < 2 => {
            warn!(payout_address = %a, "this hub speaks protocol {version}: the payout address is not sent, and earnings go to the signing key");
            None
        }
        other => other,
    };
    let mut hello = Hello {
        public_key: ctx.shared.public_key,
        region: ctx.config.region.clone(),
        tags: ctx.config.tags.clone(),
        capacity: ctx.config.concurrency,
        client_version: env!("CARGO_PKG_VERSION").to_string(),
        protocol_versions: SUPPORTED_VERSIONS.to_vec(),
        payout_address,
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

/// What a step of the main loop decides: go on, or stop.
type Step = ControlFlow<Stop>;

/// Set once we stop taking tasks: wait until idle or `until`, then end.
struct Drain {
    until: Instant,
    then: End,
}

/// The heartbeat clock and what it watches.
struct Heartbeats {
    every: Duration,
    /// The hub answers every heartbeat, and our pings when it is quiet, so
    /// this long a silence means the connection is dead without a FIN.
    silence_limit: Duration,
    ticker: Interval,
    seq: u64,
    /// When the hub last sent any frame.
    last_rx: Instant,
}

/// One welcomed connection: the read half of the socket, the writer task
/// behind the two queues, the timers and the drain state.
///
/// [`Session::run`] is the main loop: a `select!` that only waits and
/// dispatches to one step per event (read a frame, handle a hub message,
/// resend due results, heartbeat, begin or end a drain).
/// [`Session::finish`] closes the socket and hands back how it ended.
struct Session<'a> {
    ctx: &'a Ctx,
    generation: u64,
    stream: SplitStream<Ws>,
    /// The only task that writes to the socket; it ends when the socket
    /// fails or after it has sent our close frame.
    writer: JoinHandle<Result<(), WsError>>,
    /// Heartbeats and pings: ahead of queued results.
    urgent_tx: mpsc::Sender<Out>,
    /// Results, then our close frame, in order.
    frames_tx: mpsc::Sender<Out>,
    /// Sends the results still pending from earlier connections.
    resend_backlog: JoinHandle<()>,
    heartbeat: Heartbeats,
    /// Unacknowledged results go out again on this connection (the
    /// protocol's required resend; the hub drops a copy it still holds).
    resend_every: Duration,
    resend_tick: Interval,
    /// Wakes a drain when a check finishes or an ack arrives.
    stats_rx: watch::Receiver<Stats>,
    drain: Option<Drain>,
    /// When a draining session last sent a heartbeat to ask for held acks.
    last_nudge: Instant,
}

/// While draining with every check done and only acks outstanding, a
/// heartbeat this often: a hub may hold acks back up to 200 ms to send
/// them with the next task (docs/protocol.md, "Acknowledgements"), and its
/// answer to a heartbeat carries them at once, so the drain does not wait
/// (and drop the tasks that keep coming meanwhile).
const DRAIN_NUDGE: Duration = Duration::from_millis(50);

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
    let mut session = Session::start(ctx, ws, &welcome, generation);
    let stop = session.run(shutdown).await;
    session.finish(stop).await
}

impl<'a> Session<'a> {
    /// Starts the writer, publishes this connection's outbox and starts
    /// resending what earlier connections left unacknowledged.
    fn start(ctx: &'a Ctx, ws: Ws, welcome: &Welcome, generation: u64) -> Self {
        let (sink, stream) = ws.split();
        let (urgent_tx, urgent_rx) = mpsc::channel(8);
        let (frames_tx, frames_rx) = mpsc::channel(OUTBOX_CAPACITY);
        let writer = tokio::spawn(write_loop(
            sink,
            urgent_rx,
            frames_rx,
            Pacer::for_limits(&welcome.limits),
            ctx.shared.clone(),
            // Results are signed with their evidence (protocol 2); a
            // protocol 1 hub gets them without it, signed again.
            (welcome.protocol_version < 2).then(|| ctx.key.clone()),
        ));
        let outbox = Outbox {
            generation,
            frames: frames_tx.clone(),
        };
        // Publish the outbox before listing pending results: a check finishing
        // in between either lands in the list or sees the outbox, never neither.
        ctx.shared.connected(outbox.clone(), &welcome.hub_id);
        let resend_backlog =
            tokio::spawn(resend_pending(ctx.shared.clone(), outbox).in_current_span());

        let beat = Duration::from_millis(welcome.heartbeat_interval_ms.max(100));
        let resend_every = Duration::from_millis(protocol::limits::RESULT_RESEND_MS);
        Self {
            ctx,
            generation,
            stream,
            writer,
            urgent_tx,
            frames_tx,
            resend_backlog,
            heartbeat: Heartbeats {
                every: beat,
                silence_limit: Duration::from_millis(welcome.heartbeat_timeout_ms).max(beat * 3),
                ticker: delayed_interval(beat),
                seq: 0,
                last_rx: Instant::now(),
            },
            resend_every,
            resend_tick: delayed_interval(resend_every / 2),
            stats_rx: ctx.shared.subscribe(),
            drain: None,
            last_nudge: Instant::now(),
        }
    }

    /// The main loop: wait for the next event, hand it to its step.
    async fn run(&mut self, shutdown: &CancellationToken) -> Stop {
        loop {
            if let Some(stop) = self.drained() {
                return stop;
            }
            let draining = self.drain.is_some();
            let drain_until = self.drain.as_ref().map_or_else(Instant::now, |d| d.until);
            let shutting_down = self.shutting_down();
            let nudge = draining && self.ctx.shared.in_flight() == 0 && !self.ctx.shared.is_idle();
            // Each branch's future is dropped before its step runs, so the
            // steps may borrow the whole session.
            let step = tokio::select! {
                _ = shutdown.cancelled(), if !shutting_down => self.begin_shutdown(),
                _ = sleep_until(drain_until), if draining => self.drain_timed_out(),
                _ = self.stats_rx.changed(), if draining => Step::Continue(()),
                _ = sleep_until(self.last_nudge + DRAIN_NUDGE), if nudge => {
                    self.send_heartbeat();
                    Step::Continue(())
                }
                res = &mut self.writer => self.writer_ended(res),
                _ = self.resend_tick.tick() => self.resend_due(),
                _ = self.heartbeat.ticker.tick() => self.heartbeat_tick(),
                frame = self.stream.next() => self.read_frame(frame),
            };
            if let Step::Break(stop) = step {
                return stop;
            }
        }
    }

    /// One frame (or the end of the stream) from the hub. Any frame counts
    /// as a sign of life.
    fn read_frame(&mut self, frame: Option<Result<Message, WsError>>) -> Step {
        let msg = match frame {
            None => {
                info!("hub closed the connection");
                return Step::Break(self.lost());
            }
            Some(Err(e)) => {
                warn!("reading from hub failed: {e}");
                return Step::Break(self.lost());
            }
            Some(Ok(msg)) => msg,
        };
        self.heartbeat.last_rx = Instant::now();
        match msg {
            Message::Text(t) => self.handle_text(&t),
            // tungstenite answers the close; keep reading until the
            // stream ends so the handshake completes.
            Message::Close(f) => debug!(frame = ?f, "hub sent close"),
            Message::Binary(_) => warn!("ignoring binary frame from hub"),
            _ => {}
        }
        Step::Continue(())
    }

    fn handle_text(&mut self, text: &str) {
        match HubMessage::decode(text) {
            Ok(m) => self.handle_message(m),
            // Unknown types are how a newer hub adds messages; skip them.
            Err(e) => warn!("ignoring unreadable frame from hub: {e}"),
        }
    }

    fn handle_message(&mut self, msg: HubMessage) {
        let ctx = self.ctx;
        match msg {
            HubMessage::Task(task) => {
                ctx.shared.task_received();
                if self.drain.is_some() {
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
            HubMessage::Reconnect(r) => self.begin_reconnect(r),
            m @ (HubMessage::Challenge(_) | HubMessage::Welcome(_)) => {
                warn!("ignoring unexpected {} after welcome", message_type(&m));
            }
        }
    }

    /// The hub is going away: finish in-flight work (at most
    /// `RECONNECT_DRAIN`), then reconnect, preferably to the hubs it names.
    fn begin_reconnect(&mut self, r: Reconnect) {
        self.ctx.shared.reconnect_requested();
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
        self.drain = Some(match self.drain.take() {
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

    /// The shutdown signal: finish in-flight checks (at most
    /// `SHUTDOWN_GRACE`, or sooner if a drain already ends sooner).
    fn begin_shutdown(&mut self) -> Step {
        info!("shutting down: finishing in-flight checks");
        let until = Instant::now() + SHUTDOWN_GRACE;
        let until = self.drain.as_ref().map_or(until, |d| d.until.min(until));
        self.drain = Some(Drain {
            until,
            then: End::Shutdown,
        });
        Step::Continue(())
    }

    fn shutting_down(&self) -> bool {
        matches!(
            self.drain,
            Some(Drain {
                then: End::Shutdown,
                ..
            })
        )
    }

    /// Draining, and nothing is left in flight: done.
    fn drained(&mut self) -> Option<Stop> {
        let idle = || self.ctx.shared.is_idle();
        self.drain.take_if(|_| idle()).map(|d| Stop {
            end: d.then,
            socket_ok: true,
        })
    }

    fn drain_timed_out(&mut self) -> Step {
        warn!(
            in_flight = self.ctx.shared.in_flight(),
            "gave up waiting for in-flight checks and acks"
        );
        let d = self.drain.take().expect("guarded by the branch condition");
        Step::Break(Stop {
            end: d.then,
            socket_ok: true,
        })
    }

    fn writer_ended(&mut self, res: Result<Result<(), WsError>, JoinError>) -> Step {
        match res {
            Ok(Ok(())) => debug!("writer finished"),
            Ok(Err(e)) => warn!("writing to hub failed: {e}"),
            Err(e) => warn!("writer task failed: {e}"),
        }
        Step::Break(self.lost())
    }

    /// Queues the results that have waited `RESULT_RESEND_MS` for an ack
    /// on this connection.
    fn resend_due(&mut self) -> Step {
        let due = self
            .ctx
            .shared
            .due_for_resend(self.generation, self.resend_every);
        if !due.is_empty() {
            debug!(count = due.len(), "resending unacknowledged results");
        }
        for r in due {
            // A full outbox skips it; it is due again next time.
            let frame = Out::Msg(Box::new(ValidatorMessage::Result(r)));
            if self.frames_tx.try_send(frame).is_err() {
                break;
            }
        }
        Step::Continue(())
    }

    /// Every heartbeat interval: give up on a hub that has gone silent, else
    /// send a heartbeat (and a ping when the hub has been quiet), and forget
    /// results too far past their deadline.
    fn heartbeat_tick(&mut self) -> Step {
        let hb = &mut self.heartbeat;
        if hb.last_rx.elapsed() > hb.silence_limit {
            warn!(
                silent_ms = hb.last_rx.elapsed().as_millis() as u64,
                "hub went silent"
            );
            return Step::Break(self.lost());
        }
        self.send_heartbeat();
        let hb = &mut self.heartbeat;
        if hb.last_rx.elapsed() >= hb.every {
            let _ = self.urgent_tx.try_send(Out::Ping);
        }
        // Results sent before a deadline may be acked after it, so only
        // forget them once even a skewed hub clock is past it.
        self.ctx
            .shared
            .prune(protocol::now_ms() - protocol::limits::RESULT_RESEND_GRACE_MS);
        Step::Continue(())
    }

    /// Sends a heartbeat now.
    fn send_heartbeat(&mut self) {
        let hb = &mut self.heartbeat;
        hb.seq += 1;
        self.last_nudge = Instant::now();
        // Queued tasks count as load too: the hub should not pile more on a
        // validator whose slots are all taken.
        let in_flight = u32::try_from(self.ctx.shared.in_flight()).unwrap_or(u32::MAX);
        let beat = ValidatorMessage::Heartbeat(Heartbeat {
            seq: hb.seq,
            in_flight,
        });
        if self.urgent_tx.try_send(Out::Msg(Box::new(beat))).is_err() {
            debug!("writer busy; skipped a heartbeat");
        }
    }

    /// The socket is gone; a drain in progress still decides what comes next.
    fn lost(&mut self) -> Stop {
        Stop {
            end: self
                .drain
                .take()
                .map_or(End::Lost { welcomed: true }, |d| d.then),
            socket_ok: false,
        }
    }

    /// Closes the socket if it is still fit for it, stops the session's
    /// tasks and returns how the session ended.
    async fn finish(mut self, stop: Stop) -> End {
        if stop.socket_ok {
            self.close_politely().await;
        }
        self.writer.abort();
        self.resend_backlog.abort();
        self.ctx.shared.disconnected(self.generation);
        stop.end
    }

    /// Our close frame after the results already queued, then the hub's
    /// reply, which completes the handshake. Acks that arrive before it
    /// still count; tasks are no longer taken.
    async fn close_politely(&mut self) {
        let polite = async {
            if self.frames_tx.send(Out::Close).await.is_ok() {
                let _ = (&mut self.writer).await;
            }
            while let Some(Ok(m)) = self.stream.next().await {
                match m {
                    Message::Close(_) => break,
                    Message::Text(t) => {
                        if let Ok(HubMessage::ResultAck(ack)) = HubMessage::decode(&t) {
                            self.ctx.shared.ack(&ack);
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
}

/// An interval whose first tick is one `period` from now, and which waits a
/// full period after a late tick rather than bursting to catch up.
fn delayed_interval(period: Duration) -> Interval {
    let mut i = tokio::time::interval_at(Instant::now() + period, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
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
                r.evidence = Some(o.evidence);
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
