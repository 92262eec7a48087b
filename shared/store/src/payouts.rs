//! Earnings ledger and payouts. Every write here takes the caller's fencing
//! epoch; triggers on `validator_ledger`, `payouts` and `payout_batches`
//! refuse it unless it is the newest epoch (see
//! `migrations/*_payouts.sql`), which surfaces as [`StoreError::StaleEpoch`].
//!
//! States (see docs/ARCHITECTURE.md, "Payouts"):
//! - payout: `claimed` | `insufficient_funds` -> `batched` -> `paid`, or back
//!   to `claimed` when its batch provably did not land, or `failed` after
//!   too many attempts. A payout whose batch of several failed on chain comes
//!   back `solo`: it rides alone from then on, so one transfer that always
//!   fails cannot keep failing the others.
//! - batch (one Solana transaction): `signed` -> `sent` -> `confirmed` |
//!   `failed` (landed with an error) | `expired` (never landed; its
//!   blockhash is past its last valid block height).

use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use crate::{Result, Store, StoreError, ValidatorId};

/// A payout waiting for a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingPayout {
    pub id: Uuid,
    pub validator_id: ValidatorId,
    /// Where it is paid: the validator's payout address (protocol 2
    /// hello), else its key.
    pub public_key: String,
    pub lamports: i64,
    /// Its batch failed on chain with others in it: pay it alone.
    pub solo: bool,
}

/// A signed transaction about to be sent, and the payouts it carries.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub id: Uuid,
    pub signature: String,
    pub transaction: Vec<u8>,
    pub blockhash: String,
    pub last_valid_block_height: u64,
    pub lamports: i64,
    pub fee_lamports: i64,
    pub payout_ids: Vec<Uuid>,
    /// The finalized slot read before signing: it cannot land earlier.
    pub signed_slot: u64,
}

/// A batch whose outcome is not known yet.
#[derive(Debug, Clone)]
pub struct UnfinishedBatch {
    pub id: Uuid,
    pub signature: String,
    pub transaction: Vec<u8>,
    pub last_valid_block_height: u64,
    pub lamports: i64,
    pub fee_lamports: i64,
    pub payout_ids: Vec<Uuid>,
    /// The slot it cannot have landed before: the finalized slot read before
    /// signing, or, for a batch stored before that was recorded, its last
    /// valid block height minus 300 (a blockhash lives 150 blocks, and a
    /// slot number is never below its block height).
    pub signed_slot: u64,
}

/// How a batch ended when it did not confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Landed with an error: no transfer happened (only the fee was paid).
    Failed(String),
    /// Never landed, and never can: the chain is past its last valid block
    /// height.
    Expired,
}

/// One payout as a validator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutRow {
    pub id: Uuid,
    pub lamports: i64,
    pub state: String,
    pub attempts: i32,
    pub signature: Option<String>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub paid_at_ms: Option<i64>,
}

/// A validator's earnings and payouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earnings {
    pub validator_id: ValidatorId,
    pub public_key: String,
    /// Credited from settled rounds.
    pub earned_lamports: i64,
    /// Rewards of stored ticks whose rounds are not settled yet (an upper
    /// bound: replaced tasks among them will earn nothing).
    pub settling_lamports: i64,
    /// Earned but not yet claimed into a payout (below the minimum payout,
    /// or waiting for the next cycle).
    pub unclaimed_lamports: i64,
    /// Paid on chain beyond what this ledger credits (transfers found by
    /// reconciling a restored ledger), until the rounds they paid settle again.
    pub prepaid_lamports: i64,
    /// Claimed, not yet paid (waiting, insufficient funds, or in flight).
    pub pending_lamports: i64,
    pub paid_lamports: i64,
    /// Given up after repeated failures; needs an operator.
    pub failed_lamports: i64,
    pub earning_ticks: i64,
    pub agreed: i64,
    pub disagreed: i64,
    /// Newest first, at most 50.
    pub payouts: Vec<PayoutRow>,
}

impl From<Earnings> for protocol::api::Earnings {
    /// The earnings document the hubs and the api serve (docs/protocol.md,
    /// "HTTP: earnings").
    fn from(e: Earnings) -> Self {
        let counted = e.agreed + e.disagreed;
        Self {
            public_key: e.public_key,
            earned_lamports: e.earned_lamports,
            settling_lamports: e.settling_lamports,
            unclaimed_lamports: e.unclaimed_lamports,
            prepaid_lamports: e.prepaid_lamports,
            pending_lamports: e.pending_lamports,
            paid_lamports: e.paid_lamports,
            failed_lamports: e.failed_lamports,
            earning_ticks: e.earning_ticks,
            agreement: protocol::api::Agreement {
                agreed: e.agreed,
                disagreed: e.disagreed,
                rate: (counted > 0).then(|| e.agreed as f64 / counted as f64),
            },
            payouts: e
                .payouts
                .into_iter()
                .map(|p| protocol::api::Payout {
                    id: p.id,
                    lamports: p.lamports,
                    state: p.state,
                    attempts: p.attempts,
                    signature: p.signature,
                    last_error: p.last_error,
                    created_at_ms: p.created_at_ms,
                    paid_at_ms: p.paid_at_ms,
                })
                .collect(),
        }
    }
}

pub(crate) fn fenced(epoch: i64) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("UP409") => {
            StoreError::StaleEpoch(epoch)
        }
        _ => StoreError::Db(e),
    }
}

/// What one settlement statement did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    pub rounds: i64,
    /// Results that agreed / disagreed with their round's decision.
    pub agreed: i64,
    pub disagreed: i64,
    /// Shadow checks passed / failed.
    pub passed: i64,
    pub failed: i64,
}

/// When a new key's probation ends (`HUB_PROBATION_RESULTS`,
/// `HUB_PROBATION_CHALLENGES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probation {
    /// Results that agreed with a decided round.
    pub results: i32,
    /// Shadow checks passed.
    pub challenges: i32,
}

impl Default for Probation {
    fn default() -> Self {
        Self {
            results: 20,
            challenges: 2,
        }
    }
}

/// Credits ticks of closed, unsettled rounds to the ledger, and marks the
/// rounds settled, in one statement. What a tick earns, whether it agrees
/// and how its shadow check went is `tick_rewards`
/// (migrations/20261202000004_trust.sql): agreement with the round's
/// decision or its region's majority, not replaced before the hub received
/// it, no failed shadow check, not on probation. The same statement moves
/// each validator's trust (an exponentially weighted average, weight 0.05 a
/// result, of agreements and passed checks over agreements, disagreements
/// and checks) and ends probation after `$4` agreeing results and `$5`
/// passed checks with trust at least 0.5. Trust counts a result backed by
/// its region's majority as agreeing.
const SETTLE_SQL: &str = "
WITH due AS (
    SELECT id, website_id, scheduled_at, status, replaced_tasks, replaced_at_ms
      FROM rounds
     WHERE settled_at IS NULL AND status <> 'open'
       AND closed_at < now() - make_interval(secs => $2)
     ORDER BY closed_at
     LIMIT $3
       FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE rounds r SET settled_at = now() FROM due WHERE r.id = due.id RETURNING r.id
), per_tick AS (
    -- The reward rule (migrations/20261202000004_trust.sql).
    SELECT validator_id, earned, agrees, disagrees, backed, challenge
      FROM tick_rewards(ARRAY(SELECT id FROM due))
), per_validator AS (
    SELECT validator_id, sum(earned) AS earned, count(*) FILTER (WHERE earned > 0) AS earning,
           count(*) FILTER (WHERE agrees) AS a, count(*) FILTER (WHERE disagrees) AS d,
           -- Trust counts regional agreement as agreement.
           count(*) FILTER (WHERE backed) AS b,
           count(*) FILTER (WHERE disagrees AND NOT backed) AS nb,
           count(*) FILTER (WHERE challenge > 0) AS cp,
           count(*) FILTER (WHERE challenge < 0) AS cf
      FROM per_tick
     GROUP BY validator_id
), credited AS (
    INSERT INTO validator_ledger AS l
           (validator_id, earned_lamports, earning_ticks, agreed, disagreed,
            challenges_passed, challenges_failed, epoch)
    SELECT validator_id, earned, earning, a, d, cp, cf, $1
      FROM per_validator
    ON CONFLICT (validator_id) DO UPDATE
       SET earned_lamports = l.earned_lamports + EXCLUDED.earned_lamports,
           earning_ticks = l.earning_ticks + EXCLUDED.earning_ticks,
           agreed = l.agreed + EXCLUDED.agreed,
           disagreed = l.disagreed + EXCLUDED.disagreed,
           challenges_passed = l.challenges_passed + EXCLUDED.challenges_passed,
           challenges_failed = l.challenges_failed + EXCLUDED.challenges_failed,
           epoch = EXCLUDED.epoch, updated_at = now()
    RETURNING 1
), judged AS (
    SELECT v.id, v.probation, v.trusted,
           v.probation_agreed + p.a AS agreed, v.probation_passed + p.cp AS passed,
           CASE WHEN p.b + p.nb + p.cp + p.cf = 0 THEN v.trust
                ELSE (v.trust * power(0.95, p.b + p.nb + p.cp + p.cf)
                      + (1 - power(0.95, p.b + p.nb + p.cp + p.cf))
                        * (p.b + p.cp)::float8 / (p.b + p.nb + p.cp + p.cf))::real
           END AS trust
      FROM per_validator p JOIN validators v ON v.id = p.validator_id
), standing AS (
    UPDATE validators v
       SET trust = j.trust,
           probation_agreed = CASE WHEN j.probation THEN j.agreed ELSE v.probation_agreed END,
           probation_passed = CASE WHEN j.probation THEN j.passed ELSE v.probation_passed END,
           probation = j.probation AND NOT j.trusted
                       AND NOT (j.agreed >= $4 AND j.passed >= $5 AND j.trust >= 0.5)
      FROM judged j WHERE v.id = j.id
    RETURNING 1
)
SELECT (SELECT count(*) FROM marked) AS rounds, (SELECT count(*) FROM credited) AS validators,
       (SELECT count(*) FROM standing) AS judged,
       (SELECT COALESCE(sum(a), 0)::int8 FROM per_validator) AS agreed,
       (SELECT COALESCE(sum(d), 0)::int8 FROM per_validator) AS disagreed,
       (SELECT COALESCE(sum(cp), 0)::int8 FROM per_validator) AS passed,
       (SELECT COALESCE(sum(cf), 0)::int8 FROM per_validator) AS failed";

impl Store {
    /// Settles up to `limit` rounds closed more than `delay` ago; returns
    /// how many. Call until it returns fewer than `limit`.
    pub async fn settle_rounds(&self, epoch: i64, delay: Duration, limit: i64) -> Result<i64> {
        Ok(self
            .settle_rounds_with(epoch, delay, limit, Probation::default())
            .await?
            .rounds)
    }

    /// [`Self::settle_rounds`] with the probation rule's figures.
    pub async fn settle_rounds_with(
        &self,
        epoch: i64,
        delay: Duration,
        limit: i64,
        probation: Probation,
    ) -> Result<Settled> {
        let row = sqlx::query(SETTLE_SQL)
            .bind(epoch)
            .bind(delay.as_secs_f64())
            .bind(limit)
            .bind(probation.results)
            .bind(probation.challenges)
            .fetch_one(&self.pool)
            .await
            .map_err(fenced(epoch))?;
        Ok(Settled {
            rounds: row.get("rounds"),
            agreed: row.get("agreed"),
            disagreed: row.get("disagreed"),
            passed: row.get("passed"),
            failed: row.get("failed"),
        })
    }

    /// Claims every validator's unclaimed earnings of at least
    /// `min_lamports` into a new payout (one per validator, and only for
    /// validators without an unfinished payout). The claim and the ledger's
    /// `claimed` move in one statement, so no lamport is claimed twice.
    /// Returns how many payouts were created.
    pub async fn claim_payouts(&self, epoch: i64, min_lamports: i64, limit: i64) -> Result<u64> {
        let r = sqlx::query(
            "WITH due AS (
                 SELECT l.validator_id, l.earned_lamports - l.claimed_lamports AS amount
                   FROM validator_ledger l
                  WHERE l.earned_lamports - l.claimed_lamports >= $2
                    AND NOT EXISTS (SELECT 1 FROM payouts p
                                     WHERE p.validator_id = l.validator_id
                                       AND p.state IN ('claimed', 'insufficient_funds', 'batched'))
                  ORDER BY l.validator_id
                  LIMIT $3
                    FOR UPDATE OF l
             ), moved AS (
                 UPDATE validator_ledger l
                    SET claimed_lamports = l.claimed_lamports + due.amount,
                        epoch = $1, updated_at = now()
                   FROM due WHERE l.validator_id = due.validator_id
                 RETURNING l.validator_id, due.amount
             )
             INSERT INTO payouts (id, validator_id, lamports, state, epoch)
             SELECT gen_random_uuid(), validator_id, amount, 'claimed', $1 FROM moved",
        )
        .bind(epoch)
        .bind(min_lamports)
        .bind(limit)
        .execute(&self.pool)
        .await
        .map_err(fenced(epoch))?;
        Ok(r.rows_affected())
    }

    /// Payouts waiting for a transaction, oldest first.
    pub async fn waiting_payouts(&self, limit: i64) -> Result<Vec<WaitingPayout>> {
        let rows = sqlx::query(
            "SELECT p.id, p.validator_id,
                    COALESCE(v.payout_address, v.public_key) AS public_key, p.lamports, p.solo
               FROM payouts p JOIN validators v ON v.id = p.validator_id
              WHERE p.state IN ('claimed', 'insufficient_funds')
              ORDER BY p.created_at, p.id
              LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| WaitingPayout {
                id: r.get("id"),
                validator_id: r.get("validator_id"),
                public_key: r.get("public_key"),
                lamports: r.get("lamports"),
                solo: r.get("solo"),
            })
            .collect())
    }

    /// Marks payouts the treasury cannot cover; they stay waiting.
    pub async fn mark_insufficient_funds(&self, epoch: i64, ids: &[Uuid]) -> Result<()> {
        sqlx::query(
            "UPDATE payouts SET state = 'insufficient_funds', epoch = $1, updated_at = now(),
                    last_error = 'treasury balance does not cover this batch and its fee'
              WHERE id = ANY ($2) AND state IN ('claimed', 'insufficient_funds')",
        )
        .bind(epoch)
        .bind(ids)
        .execute(&self.pool)
        .await
        .map_err(fenced(epoch))?;
        Ok(())
    }

    /// Stores a signed transaction and moves its payouts into it, before it
    /// is sent. Fails with `Conflict` (and writes nothing) unless every
    /// payout was still waiting.
    pub async fn save_batch(&self, epoch: i64, b: &NewBatch) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO payout_batches (id, state, signature, transaction, blockhash,
                 last_valid_block_height, lamports, payout_ids, epoch, fee_lamports, signed_slot)
             VALUES ($1, 'signed', $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(b.id)
        .bind(&b.signature)
        .bind(&b.transaction)
        .bind(&b.blockhash)
        .bind(b.last_valid_block_height as i64)
        .bind(b.lamports)
        .bind(&b.payout_ids)
        .bind(epoch)
        .bind(b.fee_lamports)
        .bind(b.signed_slot as i64)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            // Same payouts, amounts and blockhash as an earlier batch: the
            // same transaction, which the chain would refuse as processed.
            sqlx::Error::Database(d) if d.constraint() == Some("payout_batches_signature_key") => {
                StoreError::Conflict(format!(
                    "batch {}: same transaction (signature) as an earlier batch; needs a new blockhash",
                    b.id
                ))
            }
            _ => fenced(epoch)(e),
        })?;
        let moved = sqlx::query(
            "UPDATE payouts SET state = 'batched', batch_id = $1, epoch = $2, updated_at = now(),
                    last_error = NULL
              WHERE id = ANY ($3) AND state IN ('claimed', 'insufficient_funds')",
        )
        .bind(b.id)
        .bind(epoch)
        .bind(&b.payout_ids)
        .execute(&mut *tx)
        .await
        .map_err(fenced(epoch))?
        .rows_affected();
        if moved != b.payout_ids.len() as u64 {
            return Err(StoreError::Conflict(format!(
                "batch {}: {moved} of {} payouts were still waiting",
                b.id,
                b.payout_ids.len()
            )));
        }
        tx.commit().await.map_err(fenced(epoch))?;
        Ok(())
    }

    /// Records one more send of a stored batch.
    pub async fn mark_batch_sent(&self, epoch: i64, id: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE payout_batches SET state = 'sent', sends = sends + 1, sent_at = now(), epoch = $1
              WHERE id = $2 AND state IN ('signed', 'sent')",
        )
        .bind(epoch)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(fenced(epoch))?;
        Ok(())
    }

    /// Batches whose outcome is unknown (signed or sent), oldest first.
    pub async fn unfinished_batches(&self) -> Result<Vec<UnfinishedBatch>> {
        let rows = sqlx::query(
            "SELECT id, signature, transaction, last_valid_block_height, lamports,
                    fee_lamports, payout_ids,
                    COALESCE(signed_slot, GREATEST(last_valid_block_height - 300, 0)) AS signed_slot
               FROM payout_batches WHERE state IN ('signed', 'sent')
              ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| UnfinishedBatch {
                id: r.get("id"),
                signature: r.get("signature"),
                transaction: r.get("transaction"),
                last_valid_block_height: r.get::<i64, _>("last_valid_block_height") as u64,
                lamports: r.get("lamports"),
                fee_lamports: r.get("fee_lamports"),
                payout_ids: r.get("payout_ids"),
                signed_slot: r.get::<i64, _>("signed_slot") as u64,
            })
            .collect())
    }

    /// The batch landed successfully at `slot`: its payouts are paid.
    pub async fn confirm_batch(&self, epoch: i64, id: Uuid, slot: u64) -> Result<()> {
        let mut tx = self
            .finish_batch(epoch, id, "confirmed", Some(slot as i64), None)
            .await?;
        sqlx::query(
            "UPDATE payouts SET state = 'paid', paid_at = now(), epoch = $1, updated_at = now()
              WHERE batch_id = $2 AND state = 'batched'",
        )
        .bind(epoch)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(fenced(epoch))?;
        tx.commit().await.map_err(fenced(epoch))
    }

    /// The batch did not pay (it landed with an error, or expired unseen):
    /// its payouts wait again for a new transaction, or are marked `failed`
    /// once they have been tried `max_attempts` times. A batch of several
    /// that failed on chain does not say which transfer was at fault: its
    /// payouts come back `solo`, without counting an attempt, and are tried
    /// one per transaction; a solo failure counts.
    pub async fn abandon_batch(
        &self,
        epoch: i64,
        id: Uuid,
        outcome: &BatchOutcome,
        max_attempts: i32,
    ) -> Result<()> {
        let (state, error) = match outcome {
            BatchOutcome::Failed(e) => ("failed", e.as_str()),
            BatchOutcome::Expired => (
                "expired",
                "transaction expired unconfirmed (blockhash past its last valid block height)",
            ),
        };
        let mut tx = self
            .finish_batch(epoch, id, state, None, Some(error))
            .await?;
        let split = matches!(outcome, BatchOutcome::Failed(_));
        sqlx::query(
            "WITH b AS (
                 SELECT $5 AND cardinality(payout_ids) > 1 AS split
                   FROM payout_batches WHERE id = $4
             )
             UPDATE payouts
                SET attempts = attempts + CASE WHEN b.split THEN 0 ELSE 1 END,
                    solo = solo OR b.split,
                    last_error = $1, epoch = $2, updated_at = now(),
                    batch_id = NULL,
                    state = CASE WHEN NOT b.split AND attempts + 1 >= $3 THEN 'failed'
                                 ELSE 'claimed' END
               FROM b
              WHERE batch_id = $4 AND state = 'batched'",
        )
        .bind(error)
        .bind(epoch)
        .bind(max_attempts)
        .bind(id)
        .bind(split)
        .execute(&mut *tx)
        .await
        .map_err(fenced(epoch))?;
        tx.commit().await.map_err(fenced(epoch))
    }

    /// Opens a transaction that moves an unfinished batch to its final
    /// `state`; the caller moves its payouts and commits. A batch already
    /// finished is a `Conflict`.
    async fn finish_batch(
        &self,
        epoch: i64,
        id: Uuid,
        state: &str,
        slot: Option<i64>,
        error: Option<&str>,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE payout_batches SET state = $1, slot = $2, error = $3, finished_at = now(),
                    epoch = $4
              WHERE id = $5 AND state IN ('signed', 'sent')",
        )
        .bind(state)
        .bind(slot)
        .bind(error)
        .bind(epoch)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(fenced(epoch))?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "batch {id} is not unfinished"
            )));
        }
        Ok(tx)
    }

    /// Puts payouts marked `failed` back in the queue (operator action,
    /// after fixing the cause): the oldest per validator, since a validator
    /// has at most one unfinished payout; run it again for the next ones.
    /// Returns how many.
    pub async fn retry_failed_payouts(&self, epoch: i64) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE payouts SET state = 'claimed', attempts = 0, epoch = $1, updated_at = now()
              WHERE id IN (
                  SELECT DISTINCT ON (f.validator_id) f.id
                    FROM payouts f
                   WHERE f.state = 'failed'
                     AND NOT EXISTS (SELECT 1 FROM payouts o
                                      WHERE o.validator_id = f.validator_id
                                        AND o.state IN ('claimed', 'insufficient_funds', 'batched'))
                   ORDER BY f.validator_id, f.created_at)",
        )
        .bind(epoch)
        .execute(&self.pool)
        .await
        .map_err(fenced(epoch))?;
        Ok(r.rows_affected())
    }

    /// Lamports the treasury spent (or may still spend) on batches signed
    /// since the start of the current UTC day, by the database's clock:
    /// transfers and fees of batches unfinished or confirmed, fees of batches
    /// that failed on chain. Expired batches spent nothing.
    pub async fn payout_spent_today(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(sum(CASE WHEN state = 'failed' THEN fee_lamports
                                      ELSE lamports + fee_lamports END), 0)::int8
               FROM payout_batches
              WHERE state IN ('signed', 'sent', 'confirmed', 'failed')
                AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Totals across all validators: (unfinished batches, payouts waiting
    /// for funds, payouts failed). For gauges.
    pub async fn payout_backlog(&self) -> Result<(i64, i64, i64)> {
        let r = sqlx::query(
            "SELECT (SELECT count(*) FROM payout_batches WHERE state IN ('signed', 'sent')) AS b,
                    (SELECT count(*) FROM payouts WHERE state = 'insufficient_funds') AS i,
                    (SELECT count(*) FROM payouts WHERE state = 'failed') AS f",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((r.get("b"), r.get("i"), r.get("f")))
    }

    /// What a validator earned and was paid; `None` if the key never said
    /// hello.
    pub async fn earnings(&self, public_key: &str) -> Result<Option<Earnings>> {
        let Some(r) = sqlx::query(
            "SELECT v.id, v.public_key,
                    COALESCE(l.earned_lamports, 0) AS earned,
                    COALESCE(l.claimed_lamports, 0) AS claimed,
                    COALESCE(l.earning_ticks, 0) AS earning_ticks,
                    COALESCE(l.agreed, 0) AS agreed,
                    COALESCE(l.disagreed, 0) AS disagreed,
                    (SELECT COALESCE(sum(lamports), 0)::int8 FROM payouts p
                      WHERE p.validator_id = v.id AND p.state = 'paid') AS paid,
                    (SELECT COALESCE(sum(lamports), 0)::int8 FROM payouts p
                      WHERE p.validator_id = v.id
                        AND p.state IN ('claimed', 'insufficient_funds', 'batched')) AS pending,
                    (SELECT COALESCE(sum(lamports), 0)::int8 FROM payouts p
                      WHERE p.validator_id = v.id AND p.state = 'failed') AS failed,
                    (SELECT COALESCE(sum(t.reward_lamports), 0)::int8
                       FROM ticks t JOIN rounds r
                         ON r.id = t.round_id AND r.website_id = t.website_id
                        AND r.scheduled_at = t.scheduled_at
                      WHERE t.validator_id = v.id AND r.settled_at IS NULL
                        AND t.scheduled_at > now() - interval '7 days') AS settling
               FROM validators v
               LEFT JOIN validator_ledger l ON l.validator_id = v.id
              WHERE v.public_key = $1",
        )
        .bind(public_key)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        self.earnings_document(&r).await.map(Some)
    }

    /// The earnings document from a row holding the validator's `id`,
    /// `public_key`, ledger sums, `settling`, `paid`, `pending` and `failed`,
    /// with its newest 50 payouts.
    pub(crate) async fn earnings_document(&self, r: &sqlx::postgres::PgRow) -> Result<Earnings> {
        let validator_id: ValidatorId = r.get("id");
        let earned: i64 = r.get("earned");
        let claimed: i64 = r.get("claimed");
        let rows = sqlx::query(
            "SELECT p.id, p.lamports, p.state, p.attempts, p.last_error, b.signature,
                    (extract(epoch FROM p.created_at) * 1000)::int8 AS created_ms,
                    (extract(epoch FROM p.paid_at) * 1000)::int8 AS paid_ms
               FROM payouts p LEFT JOIN payout_batches b ON b.id = p.batch_id
              WHERE p.validator_id = $1
              ORDER BY p.created_at DESC, p.id DESC
              LIMIT 50",
        )
        .bind(validator_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Earnings {
            validator_id,
            public_key: r.get("public_key"),
            earned_lamports: earned,
            settling_lamports: r.get("settling"),
            unclaimed_lamports: (earned - claimed).max(0),
            prepaid_lamports: (claimed - earned).max(0),
            pending_lamports: r.get("pending"),
            paid_lamports: r.get("paid"),
            failed_lamports: r.get("failed"),
            earning_ticks: r.get("earning_ticks"),
            agreed: r.get("agreed"),
            disagreed: r.get("disagreed"),
            payouts: rows
                .iter()
                .map(|p| PayoutRow {
                    id: p.get("id"),
                    lamports: p.get("lamports"),
                    state: p.get("state"),
                    attempts: p.get("attempts"),
                    signature: p.get("signature"),
                    last_error: p.get("last_error"),
                    created_at_ms: p.get("created_ms"),
                    paid_at_ms: p.get("paid_ms"),
                })
                .collect(),
        })
    }
}
