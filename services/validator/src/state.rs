//! State shared by the connection loop, the check tasks and
//! [`ValidatorHandle`]: the pending results, the tasks in flight, the current
//! connection's outbox, and the counters tests and operators read.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use protocol::{AckOutcome, CheckResult, ErrorCode, PublicKey, ResultAck};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::pending::Pending;

/// Unacknowledged results kept across reconnects.
pub const MAX_PENDING: usize = 10_000;
/// Tasks accepted but not finished (running or waiting for a slot). Beyond
/// this a task is dropped rather than queued without bound.
pub const MAX_QUEUED_TASKS: usize = 10_000;
/// How many acknowledged task ids [`ValidatorHandle::acked_task_ids`] remembers.
pub const ACK_HISTORY: usize = 100_000;

/// Counters and state, cheap to clone. Updated on every change; await a
/// condition with [`ValidatorHandle::wait_until`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every `task` frame received, taken or not.
    pub tasks_received: u64,
    /// Tasks not run: while draining, duplicates, for another validator, or
    /// over [`MAX_QUEUED_TASKS`].
    pub tasks_dropped: u64,
    /// `result` frames written to a socket, resends included.
    pub results_sent: u64,
    pub acks_stored: u64,
    pub acks_duplicate: u64,
    /// Rejected acks by code; a rejection without a code (a hub bug) counts
    /// as `internal`.
    pub acks_rejected: HashMap<ErrorCode, u64>,
    /// Results not yet acknowledged.
    pub pending: usize,
    /// Tasks accepted and not finished (running or waiting for a slot).
    pub in_flight: usize,
    /// Between a `welcome` and the end of that connection.
    pub connected: bool,
    /// Connections that got as far as a `welcome`.
    pub connects: u64,
    /// The hub of the current connection.
    pub hub_id: Option<String>,
    /// `error` frames received, by code.
    pub error_frames: HashMap<ErrorCode, u64>,
    /// `reconnect` frames received.
    pub reconnects_requested: u64,
    pub heartbeats_sent: u64,
    /// Results given up without an ack: still unacknowledged 30 s after
    /// their deadline, or pushed out of a full pending map. Lost rewards.
    pub results_abandoned: u64,
}

impl Stats {
    pub fn acks_rejected_total(&self) -> u64 {
        self.acks_rejected.values().sum()
    }

    /// Acks of any outcome.
    pub fn acks_total(&self) -> u64 {
        self.acks_stored + self.acks_duplicate + self.acks_rejected_total()
    }
}

/// What goes to the writer task.
#[derive(Debug)]
pub(crate) enum Out {
    Msg(Box<protocol::ValidatorMessage>),
    Ping,
    /// Sent after everything queued before it, then the writer stops.
    Close,
}

/// Where to send on the current connection.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    pub generation: u64,
    pub frames: mpsc::Sender<Out>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Accept {
    Yes,
    Duplicate,
    Full,
}

struct State {
    pending: Pending,
    in_flight: HashSet<Uuid>,
    outbox: Option<Outbox>,
    acked: VecDeque<Uuid>,
    rejected: VecDeque<(Uuid, Option<ErrorCode>)>,
}

pub(crate) struct Shared {
    pub public_key: PublicKey,
    stats: watch::Sender<Stats>,
    // A std Mutex: every critical section is short and never awaits.
    state: Mutex<State>,
}

impl Shared {
    pub fn new(public_key: PublicKey) -> Arc<Self> {
        Arc::new(Self {
            public_key,
            stats: watch::Sender::new(Stats::default()),
            state: Mutex::new(State {
                pending: Pending::new(MAX_PENDING),
                in_flight: HashSet::new(),
                outbox: None,
                acked: VecDeque::new(),
                rejected: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No critical section can leave the state half-updated in a way that
        // matters more than stopping the validator would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` and publishes the new stats. The state lock is always
    /// taken before the watch lock, never the other way round.
    fn update<R>(&self, f: impl FnOnce(&mut State, &mut Stats) -> R) -> R {
        let mut st = self.lock();
        let mut out = None;
        self.stats.send_modify(|s| {
            out = Some(f(&mut st, s));
            s.pending = st.pending.len();
            s.in_flight = st.in_flight.len();
        });
        out.expect("send_modify runs the closure")
    }

    fn count(&self, f: impl FnOnce(&mut Stats)) {
        self.stats.send_modify(f);
    }

    pub fn subscribe(&self) -> watch::Receiver<Stats> {
        self.stats.subscribe()
    }

    /// True when nothing is running and every result was acknowledged.
    pub fn is_idle(&self) -> bool {
        let st = self.lock();
        st.in_flight.is_empty() && st.pending.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    pub fn task_received(&self) {
        self.count(|s| s.tasks_received += 1);
    }

    pub fn task_dropped(&self) {
        self.count(|s| s.tasks_dropped += 1);
    }

    pub fn accept_task(&self, id: Uuid) -> Accept {
        self.update(|st, s| {
            let verdict = if st.in_flight.contains(&id) || st.pending.contains(&id) {
                Accept::Duplicate
            } else if st.in_flight.len() >= MAX_QUEUED_TASKS {
                Accept::Full
            } else {
                st.in_flight.insert(id);
                Accept::Yes
            };
            if verdict != Accept::Yes {
                s.tasks_dropped += 1;
            }
            verdict
        })
    }

    /// Records a finished, signed result. Returns it with the outbox to
    /// send it on if a connection is up; otherwise it waits in the pending
    /// map for the next welcome.
    pub fn task_done(&self, result: CheckResult) -> Option<(Outbox, CheckResult)> {
        let id = result.task_id;
        self.update(|st, s| {
            st.in_flight.remove(&id);
            if let Some(old) = st.pending.insert(result) {
                s.results_abandoned += 1;
                tracing::warn!(task_id = %old, "pending results full; dropped the oldest");
            }
            let outbox = st.outbox.clone()?;
            let r = st.pending.claim(&id, outbox.generation)?;
            Some((outbox, r))
        })
    }

    pub fn task_abandoned(&self, id: Uuid) {
        self.update(|st, _| st.in_flight.remove(&id));
    }

    pub fn connected(&self, outbox: Outbox, hub_id: &str) {
        self.update(|st, s| {
            st.outbox = Some(outbox);
            s.connected = true;
            s.connects += 1;
            s.hub_id = Some(hub_id.to_string());
        });
    }

    pub fn disconnected(&self, generation: u64) {
        self.update(|st, s| {
            if st
                .outbox
                .as_ref()
                .is_some_and(|o| o.generation == generation)
            {
                st.outbox = None;
                s.connected = false;
                s.hub_id = None;
            }
        });
    }

    /// Drops results whose deadline is at or before `cutoff_ms`.
    pub fn prune(&self, cutoff_ms: i64) {
        self.update(|st, s| {
            for id in st.pending.drop_expired(cutoff_ms) {
                s.results_abandoned += 1;
                tracing::warn!(task_id = %id, "giving up an unacknowledged result 120 s past its deadline");
            }
        });
    }

    /// [`Self::prune`], then the task ids still pending, oldest first.
    pub fn unexpired(&self, cutoff_ms: i64) -> Vec<Uuid> {
        self.prune(cutoff_ms);
        self.lock().pending.ids()
    }

    /// See [`Pending::due_for_resend`](crate::pending::Pending::due_for_resend).
    pub fn due_for_resend(&self, generation: u64, every: std::time::Duration) -> Vec<CheckResult> {
        self.lock()
            .pending
            .due_for_resend(generation, std::time::Instant::now(), every)
    }

    pub fn claim(&self, id: &Uuid, generation: u64) -> Option<CheckResult> {
        self.lock().pending.claim(id, generation)
    }

    pub fn ack(&self, ack: &ResultAck) {
        self.update(|st, s| {
            st.pending.remove(&ack.task_id);
            match ack.outcome {
                AckOutcome::Stored | AckOutcome::Duplicate => {
                    if ack.outcome == AckOutcome::Stored {
                        s.acks_stored += 1;
                    } else {
                        s.acks_duplicate += 1;
                    }
                    if st.acked.len() >= ACK_HISTORY {
                        st.acked.pop_front();
                    }
                    st.acked.push_back(ack.task_id);
                }
                AckOutcome::Rejected => {
                    let code = ack.code.unwrap_or(ErrorCode::Internal);
                    *s.acks_rejected.entry(code).or_default() += 1;
                    if st.rejected.len() >= ACK_HISTORY {
                        st.rejected.pop_front();
                    }
                    st.rejected.push_back((ack.task_id, ack.code));
                }
            }
        });
    }

    pub fn result_sent(&self) {
        self.count(|s| s.results_sent += 1);
    }

    pub fn heartbeat_sent(&self) {
        self.count(|s| s.heartbeats_sent += 1);
    }

    pub fn error_frame(&self, code: ErrorCode) {
        self.count(|s| *s.error_frames.entry(code).or_default() += 1);
    }

    pub fn reconnect_requested(&self) {
        self.count(|s| s.reconnects_requested += 1);
    }
}

/// A running validator, seen from outside: counters, acknowledged and
/// pending task ids, and a way to await a condition without sleeping.
#[derive(Clone)]
pub struct ValidatorHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ValidatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatorHandle")
            .field("public_key", &self.shared.public_key)
            .finish_non_exhaustive()
    }
}

impl ValidatorHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub fn public_key(&self) -> PublicKey {
        self.shared.public_key
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats.borrow().clone()
    }

    /// A receiver that sees every change of [`Stats`].
    pub fn watch(&self) -> watch::Receiver<Stats> {
        self.shared.subscribe()
    }

    /// Resolves with the stats once `pred` holds (at once if it already
    /// does). Never resolves if it never holds: wrap it in a timeout.
    /// `pred` runs under the stats lock, so it must not call back into the
    /// handle.
    pub async fn wait_until(&self, pred: impl FnMut(&Stats) -> bool) -> Stats {
        let mut rx = self.shared.subscribe();
        let stats = rx
            .wait_for(pred)
            .await
            .expect("the sender lives as long as the handle");
        stats.clone()
    }

    /// Task ids acknowledged as stored or duplicate, oldest first (the last
    /// [`ACK_HISTORY`]).
    pub fn acked_task_ids(&self) -> Vec<Uuid> {
        self.shared.lock().acked.iter().copied().collect()
    }

    /// Task ids whose results were rejected, with the code, oldest first.
    pub fn rejected_task_ids(&self) -> Vec<(Uuid, Option<ErrorCode>)> {
        self.shared.lock().rejected.iter().copied().collect()
    }

    /// Task ids with results not yet acknowledged, oldest first.
    pub fn pending_task_ids(&self) -> Vec<Uuid> {
        self.shared.lock().pending.ids()
    }
}
