//! Ingest: verify a result, then write accepted ticks in batches.
//!
//! Verification is stateless: the task token (an HMAC under the cluster
//! key) proves which hub assigned which task to which validator and until
//! when, so any hub can accept any result. The writer commits batches with
//! one multi-row `INSERT ... SELECT FROM UNNEST` whose primary key is the
//! duplicate guard, and acknowledges each result only after its commit.

use foldhash::{HashMap, HashSet};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use ed25519_dalek::VerifyingKey;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use protocol::crypto::verify_results_batch;
use protocol::limits::CLOCK_SKEW_MS;
use protocol::now_ms;
use protocol::{
    AckOutcome, CheckResult, CheckStatus, ErrorCode, HubMessage, Keyring, PublicKey, ResultAck,
};
use store::{ErrorKind, NewTick, RoundId, Store, ValidatorId, WebsiteId};

use crate::cluster::router::Router;
use crate::metrics::Metrics;
use crate::registry::Outbound;

/// Checks results against the cluster keyring.
pub struct Verifier {
    pub keyring: Keyring,
    pub reward_lamports: i64,
}

impl Verifier {
    /// Everything a result must satisfy to be stored, cheapest check first.
    /// `session_key` is the key the sender proved at hello.
    #[cfg(test)]
    pub fn check(
        &self,
        session_key: &PublicKey,
        vk: &VerifyingKey,
        validator_id: ValidatorId,
        r: &CheckResult,
        now_ms: i64,
    ) -> Result<NewTick, ErrorCode> {
        let tick = self.check_unsigned(session_key, validator_id, r, now_ms)?;
        protocol::crypto::verify_result(vk, r).map_err(|_| ErrorCode::BadSignature)?;
        Ok(tick)
    }

    /// Every check but the signature, which the tick writers verify in
    /// batches ([`signatures_valid`]) before anything is stored or acked.
    /// Where a result's ids stop being the wire's integers.
    pub fn check_unsigned(
        &self,
        session_key: &PublicKey,
        validator_id: ValidatorId,
        r: &CheckResult,
        now_ms: i64,
    ) -> Result<NewTick, ErrorCode> {
        if protocol::limits::check_result(r).is_err() {
            return Err(ErrorCode::InvalidResult);
        }
        let fields = r.token_fields();
        self.keyring
            .verify(&r.token, &fields)
            .map_err(|_| ErrorCode::BadToken)?;
        if r.validator != *session_key {
            return Err(ErrorCode::NotAssigned);
        }
        if now_ms > r.deadline_ms {
            return Err(ErrorCode::DeadlinePassed);
        }
        if r.checked_at_ms < r.scheduled_at_ms - CLOCK_SKEW_MS
            || r.checked_at_ms > now_ms + CLOCK_SKEW_MS
        {
            return Err(ErrorCode::ImplausibleTime);
        }
        Ok(NewTick {
            website_id: WebsiteId(r.website_id),
            round_id: RoundId(r.round_id),
            validator_id,
            task_id: r.task_id,
            scheduled_at_ms: r.scheduled_at_ms,
            up: r.status == CheckStatus::Up,
            http_status: r.http_status.map(|s| s as i16),
            latency_ms: r.latency_ms as i32,
            error: r.error.clone(),
            checked_at_ms: r.checked_at_ms,
            received_at_ms: now_ms,
            reward_lamports: self.reward_lamports,
            evidence: r.evidence,
        })
    }
}

/// A checked result on its way to the database. Where its ack goes is kept
/// in the [`Backlog`], which every item enters before it is queued.
pub struct IngestItem {
    pub tick: NewTick,
    /// The session's key and the result, whose signature the writer
    /// verifies in a batch (about 2.3x the one-at-a-time rate).
    pub signed: Box<(VerifyingKey, CheckResult)>,
}

impl IngestItem {
    /// The duplicate guard's key: one tick per (task, validator).
    pub fn key(&self) -> (Uuid, ValidatorId) {
        (self.tick.task_id, self.tick.validator_id)
    }
}

/// One verdict per item: is its result's signature valid?
pub fn signatures_valid(items: &[IngestItem]) -> Vec<bool> {
    let pairs: Vec<(&VerifyingKey, &CheckResult)> =
        items.iter().map(|i| (&i.signed.0, &i.signed.1)).collect();
    verify_results_batch(&pairs)
}

/// Batches larger than this are verified on the blocking pool, so a writer
/// never holds a runtime thread for long.
const INLINE_VERIFY_MAX: usize = 16;

/// Seconds from the task's dispatch (its id is a UUIDv7 minted by the
/// dispatching hub) to the commit of its tick, minus the check itself (the
/// latency the validator reports). `None` for ids without a timestamp.
fn dispatch_to_commit(tick: &NewTick, now_ms: i64) -> Option<f64> {
    let (secs, nanos) = tick.task_id.get_timestamp()?.to_unix();
    let dispatched_ms = secs as i64 * 1000 + i64::from(nanos / 1_000_000);
    let ms = now_ms - dispatched_ms - i64::from(tick.latency_ms);
    Some(ms.max(0) as f64 / 1000.0)
}

/// Results accepted at the door and not yet answered by a tick writer, by
/// `(task, validator)`: in the ingest queue, in a writer's batch, or waiting
/// for the database to come back. Three things read it:
/// - a session, so a resend of a result still queued costs nothing (its ack
///   goes to the newest copy's session instead);
/// - the coordinator, so a round is not decided by time while results
///   received before its deadline may still be on their way to the database
///   ([`Backlog::clear_before`]);
/// - the writers, which record here when the database fails and recovers.
pub struct Backlog {
    inner: std::sync::Mutex<BacklogInner>,
}

#[derive(Default)]
struct BacklogInner {
    queued: HashMap<(Uuid, ValidatorId), Queued>,
    /// How many queued results were received at each millisecond.
    by_received: BTreeMap<i64, u32>,
    /// When the current run of failing writes began (none: writes work).
    failing_since: Option<i64>,
    /// The last outage: when it began and when writes worked again.
    last_outage: Option<(i64, i64)>,
}

struct Queued {
    received_ms: i64,
    reply: mpsc::Sender<Outbound>,
}

/// After writes work again, other hubs' writers (sharing the database) may
/// still be emptying their queues: for this long, rounds whose deadline fell
/// in the outage are not decided by time.
pub const RECOVERY_GRACE_MS: i64 = 5_000;

impl Default for Backlog {
    fn default() -> Self {
        Self {
            inner: std::sync::Mutex::new(BacklogInner::default()),
        }
    }
}

impl Backlog {
    fn lock(&self) -> std::sync::MutexGuard<'_, BacklogInner> {
        // Nothing panics while holding it; a poisoned lock still holds
        // consistent data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a result on its way to a writer. `false` if one for the same
    /// `(task, validator)` is already on its way: that copy's ack will go to
    /// `reply` instead, and this one is dropped.
    pub fn enter(
        &self,
        key: (Uuid, ValidatorId),
        received_ms: i64,
        reply: &mpsc::Sender<Outbound>,
    ) -> bool {
        let mut b = self.lock();
        if let Some(q) = b.queued.get_mut(&key) {
            q.reply = reply.clone();
            return false;
        }
        b.queued.insert(
            key,
            Queued {
                received_ms,
                reply: reply.clone(),
            },
        );
        *b.by_received.entry(received_ms).or_default() += 1;
        true
    }

    /// If a result for `key` is on its way, points its ack at `reply` and
    /// returns `true`.
    pub fn redirect(&self, key: (Uuid, ValidatorId), reply: &mpsc::Sender<Outbound>) -> bool {
        match self.lock().queued.get_mut(&key) {
            Some(q) => {
                q.reply = reply.clone();
                true
            }
            None => false,
        }
    }

    /// Takes answered results out; returns where each one's ack goes (the
    /// session of its newest copy), `None` for a key not recorded.
    pub fn leave(
        &self,
        keys: impl Iterator<Item = (Uuid, ValidatorId)>,
    ) -> Vec<Option<mpsc::Sender<Outbound>>> {
        let mut b = self.lock();
        keys.map(|k| {
            let q = b.queued.remove(&k)?;
            if let std::collections::btree_map::Entry::Occupied(mut e) =
                b.by_received.entry(q.received_ms)
            {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
            Some(q.reply)
        })
        .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().queued.len()
    }

    fn write_failed(&self, now_ms: i64) {
        self.lock().failing_since.get_or_insert(now_ms);
    }

    fn write_worked(&self, now_ms: i64) {
        let mut b = self.lock();
        if let Some(since) = b.failing_since.take() {
            b.last_outage = Some((since, now_ms));
        }
    }

    /// Every result this hub received before the returned instant (Unix
    /// ms) has been answered (stored, a duplicate, or refused), and so has
    /// every other hub's as far as this hub can tell: not during an outage,
    /// nor within [`RECOVERY_GRACE_MS`] after one. A round may be decided by
    /// time once its deadline is before it.
    pub fn clear_before(&self, now_ms: i64) -> i64 {
        let b = self.lock();
        let mut t = now_ms;
        if let Some((&oldest, _)) = b.by_received.first_key_value() {
            t = t.min(oldest);
        }
        if let Some(since) = b.failing_since {
            t = t.min(since);
        }
        if let Some((since, until)) = b.last_outage {
            if now_ms < until + RECOVERY_GRACE_MS {
                t = t.min(since);
            }
        }
        t
    }
}

/// A validator whose rows the database refuses this many times on one
/// connection is disconnected (`invalid_result`, close 1008).
pub const MAX_REFUSED_ROWS: u32 = 3;

/// Attempts at a statement that failed neither for the database's absence
/// nor for its rows (a bug, a schema mismatch) before its results are given
/// up unacknowledged (validators resend them).
const OTHER_ERROR_ATTEMPTS: usize = 8;

/// One insert may take this long before it counts as a transient failure
/// (a silent network: the statement is retried; if it had committed, the
/// retry finds its rows and answers `duplicate`).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What became of a batch's rows.
#[derive(Default)]
struct Written {
    /// New rows.
    stored: HashSet<(Uuid, ValidatorId)>,
    /// Indexes of rows the database refused (data errors).
    refused: Vec<usize>,
    /// Indexes of rows given up (not stored, not acknowledged).
    given_up: Vec<usize>,
}

enum InsertError {
    /// The rows are at fault.
    Data(store::StoreError),
    /// Retried as long as allowed, still failing.
    GaveUp(store::StoreError),
}

pub struct Writer {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub batch_max: usize,
    /// After the first result of a batch, how long to wait for more before
    /// writing (zero: write what is there). Fewer, larger writes cost less
    /// per result: one round trip and one commit for many rows, and
    /// signatures verified in larger batches.
    pub linger: Duration,
    /// Tells a round's owner (this hub or another) that a task was
    /// answered, so it can close the round early.
    pub router: Router,
    pub backlog: Arc<Backlog>,
    /// After shutdown begins, how long writes keep being retried while the
    /// database is away before the rest is given up (validators resend it
    /// to the next hub).
    pub shutdown_grace: Duration,
    /// Cancelled when the hub stops (after its sessions drained).
    pub stop: CancellationToken,
    /// When a writer first saw `stop` cancelled.
    pub stopped_at: std::sync::OnceLock<Instant>,
}

impl Writer {
    /// Runs until the channel closes, or until `stop` and the queue is empty.
    /// Several writers may share one receiver.
    pub async fn run(
        self: Arc<Self>,
        rx: Arc<Mutex<mpsc::Receiver<IngestItem>>>,
        stop: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(self.batch_max);
        loop {
            {
                let mut rx = rx.lock().await;
                if stop.is_cancelled() {
                    while batch.len() < self.batch_max {
                        match rx.try_recv() {
                            Ok(item) => batch.push(item),
                            Err(_) => break,
                        }
                    }
                    if batch.is_empty() {
                        return;
                    }
                } else {
                    tokio::select! {
                        n = rx.recv_many(&mut batch, self.batch_max) => if n == 0 { return },
                        _ = stop.cancelled() => continue,
                    }
                    // One timer, then whatever came meanwhile: no wake-up
                    // per result while waiting.
                    if !self.linger.is_zero() && batch.len() < self.batch_max {
                        tokio::time::sleep(self.linger).await;
                        while batch.len() < self.batch_max {
                            match rx.try_recv() {
                                Ok(item) => batch.push(item),
                                Err(_) => break,
                            }
                        }
                    }
                }
                self.metrics.ingest_queue_depth.set(rx.len() as i64);
            }
            self.write(&mut batch).await;
        }
    }

    /// Best effort: if the message is lost or the owner busy, the round
    /// closes at its deadline instead of early.
    fn tell_owner(&self, website_id: WebsiteId, round_id: RoundId, task_id: Uuid) {
        self.router.answered(website_id, round_id, task_id);
    }

    /// Verifies the batch's signatures; answers and drops forged results.
    async fn verify(&self, batch: &mut Vec<IngestItem>) {
        let verdicts = if batch.len() <= INLINE_VERIFY_MAX {
            signatures_valid(batch)
        } else {
            let keys: Vec<(Uuid, ValidatorId)> = batch.iter().map(IngestItem::key).collect();
            let items = std::mem::take(batch);
            match tokio::task::spawn_blocking(move || {
                let v = signatures_valid(&items);
                (items, v)
            })
            .await
            {
                Ok((items, v)) => {
                    *batch = items;
                    v
                }
                // The blocking pool is gone (runtime shutting down): nothing
                // is acked, validators resend.
                Err(_) => {
                    self.backlog.leave(keys.into_iter());
                    return;
                }
            }
        };
        let mut verdict = verdicts.into_iter();
        let mut forged = Vec::new();
        batch.retain(|item| {
            if verdict.next().unwrap_or(false) {
                self.metrics.results_accepted.inc();
                return true;
            }
            forged.push(item.key());
            false
        });
        let code = ErrorCode::BadSignature;
        let replies = self.backlog.leave(forged.iter().copied());
        for ((task_id, _), reply) in forged.into_iter().zip(replies) {
            self.metrics
                .results_rejected
                .with_label_values(&[code.as_str()])
                .inc();
            if let Some(reply) = reply {
                let _ = reply.try_send(Outbound::Ack(Box::new(HubMessage::ResultAck(ResultAck {
                    task_id,
                    outcome: AckOutcome::Rejected,
                    code: Some(code),
                }))));
            }
        }
    }

    /// Whether a write that keeps failing for the database's sake is still
    /// worth retrying: always while the hub runs, for `shutdown_grace` once
    /// it stops.
    fn keep_retrying(&self) -> bool {
        if !self.stop.is_cancelled() {
            return true;
        }
        // Seen here too: a writer stuck retrying never gets back to `run`.
        self.stopped_at.get_or_init(Instant::now).elapsed() < self.shutdown_grace
    }

    /// One insert, retried with backoff: for as long as the database is away
    /// ([`ErrorKind::Transient`](store::ErrorKind)), a few times for other
    /// errors, never for data errors.
    async fn insert(&self, rows: &[NewTick]) -> Result<Vec<(Uuid, ValidatorId)>, InsertError> {
        let other_attempts = std::sync::atomic::AtomicUsize::new(0);
        let attempt = || async {
            match tokio::time::timeout(
                STATEMENT_TIMEOUT,
                self.store.insert_ticks(self.router.hub_id(), rows),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(store::StoreError::timeout()),
            }
        };
        let res = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_secs(1))
                    .without_max_times()
                    .with_jitter(),
            )
            .when(|e| match e.kind() {
                ErrorKind::Data => false,
                ErrorKind::Transient => self.keep_retrying(),
                ErrorKind::Other => {
                    let n = other_attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    n < OTHER_ERROR_ATTEMPTS && self.keep_retrying()
                }
            })
            .notify(|e, wait| {
                self.metrics.write_errors.inc();
                if e.kind() == ErrorKind::Transient {
                    self.backlog.write_failed(now_ms());
                    self.metrics.store_failing.set(1);
                }
                tracing::warn!(error = %e, ?wait, rows = rows.len(), "tick write failed; retrying");
            })
            .await;
        match res {
            Ok(stored) => {
                self.backlog.write_worked(now_ms());
                self.metrics.store_failing.set(0);
                Ok(stored)
            }
            Err(e) if e.kind() == ErrorKind::Data => Err(InsertError::Data(e)),
            Err(e) => Err(InsertError::GaveUp(e)),
        }
    }

    /// Writes `rows`; when the database refuses some of them (a data error
    /// fails the whole statement), halves the batch until each refused row
    /// stands alone, so every good row is stored.
    async fn insert_all(&self, rows: &[NewTick]) -> Written {
        let mut out = Written::default();
        let mut todo = Vec::with_capacity(16);
        todo.push(0..rows.len());
        while let Some(range) = todo.pop() {
            match self.insert(&rows[range.clone()]).await {
                Ok(stored) => out.stored.extend(stored),
                Err(InsertError::Data(e)) if range.len() == 1 => {
                    tracing::warn!(error = %e, task_id = %rows[range.start].task_id,
                        validator_id = rows[range.start].validator_id.0, "the database refused a tick");
                    out.refused.push(range.start);
                }
                Err(InsertError::Data(_)) => {
                    let mid = range.start + range.len() / 2;
                    todo.push(mid..range.end);
                    todo.push(range.start..mid);
                }
                Err(InsertError::GaveUp(e)) => {
                    // Not acknowledged: validators resend until the deadline.
                    tracing::error!(error = %e, rows = range.len(), "tick write gave up; results will be resent");
                    out.given_up.extend(range);
                }
            }
        }
        out
    }

    async fn write(&self, batch: &mut Vec<IngestItem>) {
        self.verify(batch).await;
        if batch.is_empty() {
            return;
        }
        // The backlog lets one copy of each (task, validator) in at a time,
        // so the batch holds no duplicates of its own.
        let rows: Vec<NewTick> = batch.iter().map(|i| i.tick.clone()).collect();
        let started = Instant::now();
        let written = self.insert_all(&rows).await;
        self.metrics
            .write_latency
            .observe(started.elapsed().as_secs_f64());
        self.metrics.write_batch_size.observe(rows.len() as f64);
        self.metrics
            .ticks_written
            .inc_by(written.stored.len() as u64);
        let mut fate = vec![Fate::Answered; batch.len()];
        for &i in &written.refused {
            fate[i] = Fate::Refused;
        }
        for &i in &written.given_up {
            fate[i] = Fate::GivenUp;
        }
        let replies = self.backlog.leave(batch.iter().map(IngestItem::key));
        self.metrics.ingest_backlog.set(self.backlog.len() as i64);
        for ((item, fate), reply) in batch.drain(..).zip(fate).zip(replies) {
            let task_id = item.tick.task_id;
            let key = item.key();
            let out = match fate {
                Fate::GivenUp => continue,
                Fate::Refused => {
                    let code = ErrorCode::InvalidResult;
                    self.metrics.ticks_refused.inc();
                    self.metrics
                        .results_rejected
                        .with_label_values(&[code.as_str()])
                        .inc();
                    Outbound::Refused(Box::new(HubMessage::ResultAck(ResultAck {
                        task_id,
                        outcome: AckOutcome::Rejected,
                        code: Some(code),
                    })))
                }
                Fate::Answered => {
                    let outcome = if written.stored.contains(&key) {
                        if let Some(s) = dispatch_to_commit(&item.tick, now_ms()) {
                            self.metrics.dispatch_to_commit.observe(s);
                        }
                        AckOutcome::Stored
                    } else {
                        self.metrics.ticks_duplicate.inc();
                        AckOutcome::Duplicate
                    };
                    // Duplicates too: if the first summary was lost, a
                    // resend is the owner's next chance to hear of the answer.
                    self.tell_owner(item.tick.website_id, item.tick.round_id, task_id);
                    Outbound::Ack(Box::new(HubMessage::ResultAck(ResultAck {
                        task_id,
                        outcome,
                        code: None,
                    })))
                }
            };
            // A full or closed session loses the ack; the validator resends
            // and is told `duplicate`. (No reply: not entered in the
            // backlog, which sessions never skip.)
            if let Some(reply) = reply {
                let _ = reply.try_send(out);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Fate {
    Answered,
    Refused,
    GivenUp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::router::Mesh;
    use crate::cluster::Ring;
    use crate::rounds::Event;
    use ed25519_dalek::SigningKey;
    use protocol::crypto::sign_result;
    use protocol::limits::MAX_ERROR_TEXT;
    use protocol::{CheckSpec, StatusRange, Task};
    use tokio::sync::watch;

    struct Case {
        verifier: Verifier,
        key: SigningKey,
        pk: PublicKey,
        task: Task,
    }

    fn case() -> Case {
        let verifier = Verifier {
            keyring: Keyring::random("k1"),
            reward_lamports: 7,
        };
        let key = SigningKey::from_bytes(&[3; 32]);
        let pk = PublicKey::from(&key);
        let mut task = Task {
            task_id: Uuid::from_u128(1),
            website_id: 10,
            round_id: 20,
            slot: 30,
            scheduled_at_ms: 1_000_000,
            url: "http://127.0.0.1/".into(),
            check: CheckSpec {
                timeout_ms: 1000,
                expected_status: StatusRange::DEFAULT,
                keyword: None,
                follow_redirects: true,
            },
            validator: pk,
            deadline_ms: 1_030_000,
            token: protocol::TaskToken {
                kid: String::new(),
                mac: [0; 32],
            },
        };
        task.token = verifier.keyring.issue(&task.token_fields());
        Case {
            verifier,
            key,
            pk,
            task,
        }
    }

    fn check(
        c: &Case,
        r: &CheckResult,
        session: &PublicKey,
        now: i64,
    ) -> Result<NewTick, ErrorCode> {
        let vk = session.verifying_key().unwrap();
        c.verifier.check(session, &vk, ValidatorId(5), r, now)
    }

    fn signed(c: &Case, edit: impl FnOnce(&mut CheckResult)) -> CheckResult {
        let mut r = CheckResult::for_task(&c.task, CheckStatus::Up, Some(200), 12, None, 1_001_000);
        edit(&mut r);
        sign_result(&c.key, &mut r);
        r
    }

    #[test]
    fn batch_verification_finds_exactly_the_forged_results() {
        let c = case();
        let vk = c.pk.verifying_key().unwrap();
        let items: Vec<IngestItem> = (0..40)
            .map(|i| {
                let mut r = signed(&c, |_| {});
                if i % 13 == 5 {
                    r.latency_ms += 1; // changed after signing
                }
                IngestItem {
                    tick: c
                        .verifier
                        .check_unsigned(&c.pk, ValidatorId(5), &r, 1_002_000)
                        .unwrap(),
                    signed: Box::new((vk, r)),
                }
            })
            .collect();
        let verdicts = signatures_valid(&items);
        let bad: Vec<usize> = (0..40).filter(|i| !verdicts[*i]).collect();
        assert_eq!(bad, [5, 18, 31]);
    }

    fn writer(store: Store) -> (Arc<Writer>, mpsc::Receiver<Event>) {
        let (events, events_rx) = mpsc::channel(10_000);
        let (_ring_tx, ring) = watch::channel(Arc::new(Ring::new(["hub-t".to_string()])));
        let metrics = Arc::new(Metrics::new("hub-t"));
        let router = Router::new(
            "hub-t".into(),
            Arc::default(),
            ring,
            events,
            metrics.clone(),
            Mesh::Alone,
            CancellationToken::new(),
        );
        let w = Writer {
            store,
            metrics,
            batch_max: 1000,
            linger: Duration::ZERO,
            router,
            backlog: Arc::default(),
            shutdown_grace: Duration::from_secs(1),
            stop: CancellationToken::new(),
            stopped_at: std::sync::OnceLock::new(),
        };
        (Arc::new(w), events_rx)
    }

    /// `n` signed results of validator `validator_id` (key `c.key`), each
    /// for a task of its own, entered in the backlog as a session would.
    fn items(
        c: &Case,
        w: &Writer,
        n: usize,
        validator_id: ValidatorId,
        reply: &mpsc::Sender<Outbound>,
        mut edit: impl FnMut(usize, &mut CheckResult),
    ) -> Vec<IngestItem> {
        let vk = c.pk.verifying_key().unwrap();
        let now = now_ms();
        (0..n)
            .map(|i| {
                let mut task = c.task.clone();
                task.task_id = Uuid::now_v7();
                task.scheduled_at_ms = now - 1_000;
                task.deadline_ms = now + 60_000;
                task.token = c.verifier.keyring.issue(&task.token_fields());
                let mut r = CheckResult::for_task(&task, CheckStatus::Up, Some(200), 12, None, now);
                edit(i, &mut r);
                sign_result(&c.key, &mut r);
                let tick = c.verifier.check_unsigned(&c.pk, validator_id, &r, now);
                // The door would refuse the poisonous row; build it anyway,
                // as a value the door does not know to refuse would be.
                let tick = tick.unwrap_or_else(|_| NewTick {
                    error: r.error.clone(),
                    ..c.verifier
                        .check_unsigned(
                            &c.pk,
                            validator_id,
                            &CheckResult {
                                error: None,
                                ..r.clone()
                            },
                            now,
                        )
                        .unwrap()
                });
                let item = IngestItem {
                    tick,
                    signed: Box::new((vk, r)),
                };
                assert!(w.backlog.enter(item.key(), item.tick.received_at_ms, reply));
                item
            })
            .collect()
    }

    fn acks(rx: &mut mpsc::Receiver<Outbound>) -> (Vec<ResultAck>, usize) {
        let (mut acks, mut refused) = (Vec::new(), 0);
        while let Ok(o) = rx.try_recv() {
            let m = match o {
                Outbound::Ack(m) => m,
                Outbound::Refused(m) => {
                    refused += 1;
                    m
                }
                Outbound::Frame(m) => panic!("unexpected frame {m:?}"),
            };
            match *m {
                HubMessage::ResultAck(a) => acks.push(a),
                other => panic!("unexpected {other:?}"),
            }
        }
        (acks, refused)
    }

    #[tokio::test]
    async fn one_poisonous_row_does_not_sink_its_batch() {
        let db = test_support::TestDb::new().await.unwrap();
        let c = case();
        let (w, _events) = writer(db.store.clone());
        let (tx, mut rx) = mpsc::channel(1_000);
        // A NUL byte: PostgreSQL text cannot hold it (SQLSTATE 22021).
        let mut batch = items(&c, &w, 500, ValidatorId(5), &tx, |i, r| {
            if i == 321 {
                r.error = Some("poison \u{0} byte".into());
            }
        });
        let poisoned = batch[321].tick.task_id;
        w.write(&mut batch).await;
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM ticks")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(stored, 499, "every good row is stored");
        let (acks, refused) = acks(&mut rx);
        assert_eq!(acks.len(), 500, "every result is answered");
        assert_eq!(refused, 1);
        for a in &acks {
            if a.task_id == poisoned {
                assert_eq!(
                    (a.outcome, a.code),
                    (AckOutcome::Rejected, Some(ErrorCode::InvalidResult))
                );
            } else {
                assert_eq!((a.outcome, a.code), (AckOutcome::Stored, None));
            }
        }
        assert_eq!(w.backlog.len(), 0);
        assert_eq!(w.metrics.ticks_refused.get(), 1);
    }

    #[tokio::test]
    async fn a_resend_while_queued_is_answered_once_at_its_newest_session() {
        let db = test_support::TestDb::new().await.unwrap();
        let c = case();
        let (w, _events) = writer(db.store.clone());
        let (old_tx, mut old_rx) = mpsc::channel(10);
        let (new_tx, mut new_rx) = mpsc::channel(10);
        let mut batch = items(&c, &w, 1, ValidatorId(5), &old_tx, |_, _| {});
        let key = batch[0].key();
        // The validator reconnected and resent: the copy is not let in, and
        // the ack is pointed at the new session.
        assert!(!w.backlog.enter(key, now_ms(), &new_tx));
        assert!(w.backlog.redirect(key, &new_tx));
        w.write(&mut batch).await;
        assert_eq!(acks(&mut old_rx).0.len(), 0);
        let (acks, _) = acks(&mut new_rx);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].outcome, AckOutcome::Stored);
        assert!(
            !w.backlog.redirect(key, &new_tx),
            "answered: gone from the backlog"
        );
    }

    #[test]
    fn clear_before_holds_back_rounds_while_results_wait_and_after_an_outage() {
        let b = Backlog::default();
        let (tx, _rx) = mpsc::channel(1);
        assert_eq!(b.clear_before(1_000), 1_000, "nothing waiting");
        let v = ValidatorId(1);
        assert!(b.enter((Uuid::from_u128(1), v), 400, &tx));
        assert!(b.enter((Uuid::from_u128(2), v), 300, &tx));
        assert_eq!(b.clear_before(1_000), 300, "the oldest waiting result");
        b.leave([(Uuid::from_u128(2), v)].into_iter());
        assert_eq!(b.clear_before(1_000), 400);
        b.leave([(Uuid::from_u128(1), v)].into_iter());
        // An outage from 2,000 to 9,000: nothing after its start is clear
        // until other hubs had RECOVERY_GRACE_MS to empty their queues.
        b.write_failed(2_000);
        b.write_failed(5_000);
        assert_eq!(b.clear_before(8_000), 2_000);
        b.write_worked(9_000);
        assert_eq!(b.clear_before(9_000 + RECOVERY_GRACE_MS - 1), 2_000);
        assert_eq!(
            b.clear_before(9_000 + RECOVERY_GRACE_MS),
            9_000 + RECOVERY_GRACE_MS
        );
    }

    #[test]
    fn store_errors_are_classified_by_sqlstate() {
        use store::{sqlstate_kind, ErrorKind::*};
        assert_eq!(
            sqlstate_kind("22021"),
            Data,
            "invalid byte sequence (a NUL)"
        );
        assert_eq!(sqlstate_kind("23514"), Data, "check violation");
        assert_eq!(sqlstate_kind("08006"), Transient, "connection failure");
        assert_eq!(sqlstate_kind("57P01"), Transient, "admin shutdown");
        assert_eq!(sqlstate_kind("53300"), Transient, "too many connections");
        assert_eq!(sqlstate_kind("40001"), Transient, "serialization failure");
        assert_eq!(sqlstate_kind("42P01"), Other, "undefined table: a bug");
    }

    #[test]
    fn dispatch_to_commit_excludes_the_check_time() {
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, 1_700_000_000, 250_000_000);
        let tick = NewTick {
            website_id: WebsiteId(1),
            round_id: RoundId(1),
            validator_id: ValidatorId(1),
            task_id: Uuid::new_v7(ts),
            scheduled_at_ms: 0,
            up: true,
            http_status: Some(200),
            latency_ms: 300,
            error: None,
            checked_at_ms: 0,
            received_at_ms: 0,
            reward_lamports: 0,
            evidence: None,
        };
        // Dispatched at ...000.250 s, committed at ...001.000 s, 300 ms checking.
        let s = dispatch_to_commit(&tick, 1_700_000_001_000).unwrap();
        assert!((s - 0.45).abs() < 1e-9, "{s}");
        let v4 = NewTick {
            task_id: Uuid::new_v4(),
            ..tick
        };
        assert_eq!(dispatch_to_commit(&v4, 0), None);
    }

    #[test]
    fn accepts_a_good_result_and_records_the_reward() {
        let c = case();
        let t = check(&c, &signed(&c, |_| {}), &c.pk, 1_002_000).unwrap();
        assert_eq!(
            (t.validator_id, t.reward_lamports, t.up),
            (ValidatorId(5), 7, true)
        );
    }

    #[test]
    fn each_bad_result_gets_its_code() {
        let c = case();
        let now = 1_002_000;
        let other = SigningKey::from_bytes(&[4; 32]);
        let other_pk = PublicKey::from(&other);
        // Tampered after signing: the signature no longer matches.
        let mut tampered = signed(&c, |_| {});
        tampered.status = CheckStatus::Down;
        // Another validator presents this validator's task as its own.
        let mut stolen = CheckResult::for_task(&c.task, CheckStatus::Up, None, 1, None, now);
        sign_result(&other, &mut stolen);
        let cases = [
            (
                signed(&c, |r| r.token.mac[0] ^= 1),
                c.pk,
                now,
                ErrorCode::BadToken,
            ),
            (
                signed(&c, |r| r.website_id = 11),
                c.pk,
                now,
                ErrorCode::BadToken,
            ),
            (
                signed(&c, |r| r.validator = other_pk),
                c.pk,
                now,
                ErrorCode::BadToken,
            ),
            (stolen, other_pk, now, ErrorCode::NotAssigned),
            (tampered, c.pk, now, ErrorCode::BadSignature),
            (
                signed(&c, |_| {}),
                c.pk,
                1_030_001,
                ErrorCode::DeadlinePassed,
            ),
            (
                signed(&c, |r| r.checked_at_ms = 0),
                c.pk,
                now,
                ErrorCode::ImplausibleTime,
            ),
            (
                signed(&c, |r| r.checked_at_ms = now + CLOCK_SKEW_MS + 1),
                c.pk,
                now,
                ErrorCode::ImplausibleTime,
            ),
            (
                signed(&c, |r| r.error = Some("x".repeat(MAX_ERROR_TEXT + 1))),
                c.pk,
                now,
                ErrorCode::InvalidResult,
            ),
            (
                signed(&c, |r| r.error = Some("nul \u{0} byte".into())),
                c.pk,
                now,
                ErrorCode::InvalidResult,
            ),
            (
                signed(&c, |r| r.error = Some("escape \u{1b}[2J".into())),
                c.pk,
                now,
                ErrorCode::InvalidResult,
            ),
            (
                signed(&c, |r| r.error = Some("C1 \u{9b} control".into())),
                c.pk,
                now,
                ErrorCode::InvalidResult,
            ),
            (
                signed(&c, |r| r.http_status = Some(42)),
                c.pk,
                now,
                ErrorCode::InvalidResult,
            ),
        ];
        for (i, (r, session, now, want)) in cases.into_iter().enumerate() {
            assert_eq!(check(&c, &r, &session, now).unwrap_err(), want, "case {i}");
        }
    }
}
