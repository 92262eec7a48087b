//! Ingest: verify a result, then write accepted ticks in batches.
//!
//! Verification is stateless: the task token (an HMAC under the cluster
//! key) proves which hub assigned which task to which validator and until
//! when, so any hub can accept any result. The writer commits batches with
//! one multi-row `INSERT ... SELECT FROM UNNEST` whose primary key is the
//! duplicate guard, and acknowledges each result only after its commit.

use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use ed25519_dalek::VerifyingKey;
use tokio::sync::{mpsc, watch, Mutex};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use protocol::crypto::{verify_result, verify_results_batch};
use protocol::limits::{CLOCK_SKEW_MS, MAX_ERROR_TEXT};
use protocol::now_ms;
use protocol::{
    AckOutcome, CheckResult, CheckStatus, ErrorCode, HubMessage, Keyring, PublicKey, ResultAck,
};
use store::{NewTick, Store};

use crate::cluster::routing::InboxMessage;
use crate::cluster::{ClusterLink, Ring};
use crate::coordinator::Event;
use crate::metrics::Metrics;
use crate::registry::Outbound;

/// Longest latency a result may claim (ten minutes).
const MAX_LATENCY_MS: u32 = 600_000;

/// Checks results against the cluster keyring.
pub struct Verifier {
    pub keyring: Keyring,
    pub reward_lamports: i64,
}

impl Verifier {
    /// Everything a result must satisfy to be stored, cheapest check first.
    /// `session_key` is the key the sender proved at hello.
    pub fn check(
        &self,
        session_key: &PublicKey,
        vk: &VerifyingKey,
        validator_id: i64,
        r: &CheckResult,
        now_ms: i64,
    ) -> Result<NewTick, ErrorCode> {
        let tick = self.check_unsigned(session_key, validator_id, r, now_ms)?;
        verify_result(vk, r).map_err(|_| ErrorCode::BadSignature)?;
        Ok(tick)
    }

    /// Every check but the signature, which the tick writers verify in
    /// batches ([`signatures_valid`]) before anything is stored or acked.
    pub fn check_unsigned(
        &self,
        session_key: &PublicKey,
        validator_id: i64,
        r: &CheckResult,
        now_ms: i64,
    ) -> Result<NewTick, ErrorCode> {
        if r.error.as_ref().is_some_and(|e| e.len() > MAX_ERROR_TEXT)
            || r.http_status.is_some_and(|s| !(100..=599).contains(&s))
            || r.latency_ms > MAX_LATENCY_MS
        {
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
            website_id: r.website_id,
            round_id: r.round_id,
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
        })
    }
}

/// A verified result on its way to the database, with where to send its ack.
pub struct IngestItem {
    pub tick: NewTick,
    pub reply: mpsc::Sender<Outbound>,
    /// The session's key and the result, whose signature the writer
    /// verifies in a batch (about 2.3x the one-at-a-time rate).
    pub signed: Box<(VerifyingKey, CheckResult)>,
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

pub struct Writer {
    pub store: Store,
    pub hub_id: String,
    pub metrics: Arc<Metrics>,
    pub events: mpsc::Sender<Event>,
    pub batch_max: usize,
    /// To tell a round's owner, when it is another hub, that a task was
    /// answered, so it can close the round early.
    pub ring: watch::Receiver<Arc<Ring>>,
    pub cluster: Option<ClusterLink>,
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
                }
                self.metrics.ingest_queue_depth.set(rx.len() as i64);
            }
            self.write(&mut batch).await;
        }
    }

    /// Best effort: if the message is lost or the owner busy, the round
    /// closes at its deadline instead of early.
    fn tell_owner(&self, website_id: i64, round_id: i64, task_id: Uuid) {
        if let Some(link) = &self.cluster {
            let owner = self.ring.borrow().owner(website_id).map(str::to_string);
            if let Some(owner) = owner.filter(|o| *o != self.hub_id) {
                link.outbox
                    .send(&owner, InboxMessage::Answered { round_id, task_id });
                return;
            }
        }
        let _ = self.events.try_send(Event::Answered { round_id, task_id });
    }

    /// Verifies the batch's signatures; answers and drops forged results.
    async fn verify(&self, batch: &mut Vec<IngestItem>) {
        let verdicts = if batch.len() <= INLINE_VERIFY_MAX {
            signatures_valid(batch)
        } else {
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
                Err(_) => return,
            }
        };
        let mut verdict = verdicts.into_iter();
        batch.retain(|item| {
            if verdict.next().unwrap_or(false) {
                self.metrics.results_accepted.inc();
                return true;
            }
            let code = ErrorCode::BadSignature;
            self.metrics
                .results_rejected
                .with_label_values(&[code.as_str()])
                .inc();
            let _ = item
                .reply
                .try_send(Outbound::Ack(Box::new(HubMessage::ResultAck(ResultAck {
                    task_id: item.tick.task_id,
                    outcome: AckOutcome::Rejected,
                    code: Some(code),
                }))));
            false
        });
    }

    async fn write(&self, batch: &mut Vec<IngestItem>) {
        self.verify(batch).await;
        if batch.is_empty() {
            return;
        }
        // A resend can arrive while its first copy is still queued: keep the
        // first, answer the others as duplicates.
        let mut first: HashMap<(Uuid, i64), usize> = HashMap::with_capacity(batch.len());
        let mut rows = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter().enumerate() {
            if first
                .insert((item.tick.task_id, item.tick.validator_id), i)
                .is_none()
            {
                rows.push(item.tick.clone());
            }
        }
        let started = Instant::now();
        let res = (|| self.store.insert_ticks(&self.hub_id, &rows))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(8)
                    .with_jitter(),
            )
            .notify(|e, wait| {
                self.metrics.write_errors.inc();
                tracing::warn!(error = %e, ?wait, "tick write failed; retrying");
            })
            .await;
        let stored = match res {
            Ok(s) => s,
            Err(e) => {
                // Not acknowledged: validators resend until the deadline.
                tracing::error!(error = %e, rows = rows.len(), "tick write gave up; results will be resent");
                batch.clear();
                return;
            }
        };
        self.metrics
            .write_latency
            .observe(started.elapsed().as_secs_f64());
        self.metrics.write_batch_size.observe(rows.len() as f64);
        self.metrics.ticks_written.inc_by(stored.len() as u64);
        let stored: HashSet<(Uuid, i64)> = stored.into_iter().collect();
        for (i, item) in batch.drain(..).enumerate() {
            let key = (item.tick.task_id, item.tick.validator_id);
            let outcome = if first.get(&key) == Some(&i) && stored.contains(&key) {
                if let Some(s) = dispatch_to_commit(&item.tick, now_ms()) {
                    self.metrics.dispatch_to_commit.observe(s);
                }
                AckOutcome::Stored
            } else {
                self.metrics.ticks_duplicate.inc();
                AckOutcome::Duplicate
            };
            // Duplicates too: if the first summary was lost, a resend is
            // the owner's next chance to hear of the answer.
            self.tell_owner(item.tick.website_id, item.tick.round_id, item.tick.task_id);
            let ack = HubMessage::ResultAck(ResultAck {
                task_id: item.tick.task_id,
                outcome,
                code: None,
            });
            // A full or closed session loses the ack; the validator resends
            // and is told `duplicate`.
            let _ = item.reply.try_send(Outbound::Ack(Box::new(ack)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use protocol::crypto::sign_result;
    use protocol::{CheckSpec, StatusRange, Task};

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
        c.verifier.check(session, &vk, 5, r, now)
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
        let (tx, _rx) = mpsc::channel(1);
        let items: Vec<IngestItem> = (0..40)
            .map(|i| {
                let mut r = signed(&c, |_| {});
                if i % 13 == 5 {
                    r.latency_ms += 1; // changed after signing
                }
                IngestItem {
                    tick: c.verifier.check_unsigned(&c.pk, 5, &r, 1_002_000).unwrap(),
                    reply: tx.clone(),
                    signed: Box::new((vk, r)),
                }
            })
            .collect();
        let verdicts = signatures_valid(&items);
        let bad: Vec<usize> = (0..40).filter(|i| !verdicts[*i]).collect();
        assert_eq!(bad, [5, 18, 31]);
    }

    #[test]
    fn dispatch_to_commit_excludes_the_check_time() {
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, 1_700_000_000, 250_000_000);
        let tick = NewTick {
            website_id: 1,
            round_id: 1,
            validator_id: 1,
            task_id: Uuid::new_v7(ts),
            scheduled_at_ms: 0,
            up: true,
            http_status: Some(200),
            latency_ms: 300,
            error: None,
            checked_at_ms: 0,
            received_at_ms: 0,
            reward_lamports: 0,
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
        assert_eq!((t.validator_id, t.reward_lamports, t.up), (5, 7, true));
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
