//! Reconciling the payout ledger with the treasury's on-chain history (see
//! `migrations/*_payout_reconcile.sql` and docs/ARCHITECTURE.md, "After a
//! restore"). The payout leader lists the treasury's finalized transactions
//! newer than the cursor; one no batch here knows was signed by a ledger
//! this database no longer remembers (it was restored from an older
//! backup), and its transfers are recorded as paid before anything more is
//! claimed, so no lamport is paid twice. Every write takes the leader's
//! fencing epoch, as in `payouts`.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use crate::payouts::fenced;
use crate::{Result, Store, ValidatorId};

/// Where reconciliation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCursor {
    /// Every treasury transaction finalized at or before this slot is
    /// reconciled; `None` before the first reconciliation.
    pub slot: Option<u64>,
    /// The newest of them, if any: a listing of the history that reaches
    /// neither it nor an older entry is incomplete.
    pub signature: Option<String>,
    /// Without a slot: transactions older than this (Unix seconds, when the
    /// cursor was made) are not this database's payouts.
    pub since_unix: i64,
}

/// A successful treasury transaction found on chain and unknown here.
#[derive(Debug, Clone)]
pub struct FoundBatch {
    /// Base58, the transaction's first signature.
    pub signature: String,
    /// The transaction as fetched (wire format).
    pub transaction: Vec<u8>,
    pub blockhash: String,
    /// The slot it landed in.
    pub slot: u64,
    /// Its block time (Unix seconds), if the node knows it.
    pub block_time: Option<i64>,
    pub fee_lamports: i64,
    /// Its system transfers out of the treasury, in order: (to, base58;
    /// lamports).
    pub transfers: Vec<(String, i64)>,
}

/// What recording a found batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundOutcome {
    /// The batch was known already (recorded by an earlier cycle): nothing
    /// was written.
    pub known: bool,
    /// Nothing was written: a validator it pays has a payout in a batch
    /// whose outcome is not known yet; record it once that batch resolves.
    pub blocked: bool,
    /// Transfers that paid a payout this ledger still held waiting
    /// (claimed or short of funds) or had given up (`failed`, since retried
    /// by an operator): marked paid.
    pub matched: usize,
    /// Transfers this ledger had not claimed: recorded as paid payouts and
    /// added to the validator's `claimed`; where that passes `earned` plus
    /// what rounds not settled here but settled before the transfer will
    /// credit again, `earned` is raised to match (those lamports paid
    /// rounds the restore lost).
    pub added: usize,
    /// Lamports recorded (matched and added).
    pub lamports: i64,
    /// Transfers to accounts no validator here has (base58, lamports): not
    /// recorded (their earnings are not in this database either).
    pub unknown: Vec<(String, i64)>,
}

/// A transfer resolved against the ledger before anything is written.
enum Resolved {
    /// An open payout of this validator for exactly this amount.
    Open(Uuid),
    /// A payout the ledger never claimed.
    New(ValidatorId, Uuid, i64),
}

impl Store {
    /// The reconciliation cursor. A database migrated without the row (it
    /// is made by the migration) reads as "from now on".
    pub async fn chain_cursor(&self) -> Result<ChainCursor> {
        let row = sqlx::query(
            "SELECT slot, signature, extract(epoch FROM since)::int8 AS since
               FROM payout_chain_cursor",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => ChainCursor {
                slot: r.get::<Option<i64>, _>("slot").map(|s| s.max(0) as u64),
                signature: r.get("signature"),
                since_unix: r.get("since"),
            },
            None => ChainCursor {
                slot: None,
                signature: None,
                since_unix: protocol::now_ms() / 1000,
            },
        })
    }

    /// Moves the cursor to `slot`: everything finalized at or before it is
    /// reconciled, `signature` the newest of it.
    pub async fn set_chain_cursor(
        &self,
        epoch: i64,
        slot: u64,
        signature: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO payout_chain_cursor (slot, signature, epoch) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET slot = EXCLUDED.slot, signature = EXCLUDED.signature,
                                            epoch = EXCLUDED.epoch, updated_at = now()",
        )
        .bind(slot as i64)
        .bind(signature)
        .bind(epoch)
        .execute(&self.pool)
        .await
        .map_err(fenced(epoch))?;
        Ok(())
    }

    /// Which of `signatures` belong to a batch this database knows (signed
    /// here, or recorded from the chain).
    pub async fn known_signatures(&self, signatures: &[String]) -> Result<HashSet<String>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT signature FROM payout_batches WHERE signature = ANY ($1)")
                .bind(signatures)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Records a treasury transaction found on chain that no batch here
    /// knows. For each transfer to a validator, in order:
    /// - if the validator has a payout in a batch whose outcome is not
    ///   known yet (`batched`), nothing is written (`blocked`): that batch
    ///   may be what paid it, and is resolved first;
    /// - else its waiting payout (`claimed`, `insufficient_funds`) of exactly
    ///   that amount, or else a `failed` one (retried by an operator after the
    ///   backup), is marked `paid` by it;
    /// - else it becomes a new `paid` payout and the validator's `claimed`
    ///   grows by it. The rounds this ledger has not settled but the payers
    ///   before the restore had settled by the transfer's time (closed, or
    ///   for a round still open here scheduled, at least `settle_delay`
    ///   before its block time; their rewards as settlement credits them)
    ///   will be credited again: `claimed` may pass `earned` by that much.
    ///   Beyond it the transfer paid rounds the restore lost, and `earned` is
    ///   raised by the excess, so nothing is paid twice and later work is
    ///   paid. (A round counted here that the payers had not settled yet makes
    ///   the validator's later work pay that much less: the error is on the
    ///   side of paying less, never twice.)
    ///
    /// The batch row is `confirmed`, with `found_on_chain_at` set and its
    /// block time as `created_at`. Idempotent: a batch already known is left
    /// alone.
    pub async fn record_found_batch(
        &self,
        epoch: i64,
        b: &FoundBatch,
        settle_delay: Duration,
    ) -> Result<FoundOutcome> {
        let mut out = FoundOutcome::default();
        let mut tx = self.pool.begin().await?;
        let known: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM payout_batches WHERE signature = $1)")
                .bind(&b.signature)
                .fetch_one(&mut *tx)
                .await?;
        if known {
            out.known = true;
            return Ok(out);
        }
        let block_time = b.block_time.unwrap_or_else(|| protocol::now_ms() / 1000);
        let mut resolved = Vec::with_capacity(b.transfers.len());
        let mut taken: HashSet<Uuid> = HashSet::new();
        for (to, lamports) in &b.transfers {
            if *lamports <= 0 {
                continue;
            }
            // A validator's key or any payout address it ever named; an
            // address is one validator's only (`Store::record_hello`), and
            // should two ever match, nothing is recorded until an operator
            // looks (the cycle is held back).
            let owners: Vec<ValidatorId> = sqlx::query_scalar(
                "SELECT id FROM validators WHERE public_key = $1
                 UNION SELECT validator_id FROM validator_payout_addresses WHERE address = $1",
            )
            .bind(to)
            .fetch_all(&mut *tx)
            .await?;
            let validator = match owners[..] {
                [] => {
                    out.unknown.push((to.clone(), *lamports));
                    continue;
                }
                [one] => one,
                _ => {
                    tracing::error!(account = %to, "a treasury transfer's account names more than one validator; payouts are held back");
                    return Ok(FoundOutcome {
                        blocked: true,
                        ..FoundOutcome::default()
                    });
                }
            };
            let in_flight: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM payouts
                                 WHERE validator_id = $1 AND state = 'batched')",
            )
            .bind(validator)
            .fetch_one(&mut *tx)
            .await?;
            if in_flight {
                out = FoundOutcome {
                    blocked: true,
                    ..FoundOutcome::default()
                };
                return Ok(out);
            }
            let open: Option<Uuid> = sqlx::query_scalar(
                "SELECT id FROM payouts
                  WHERE validator_id = $1 AND lamports = $2
                    AND state IN ('claimed', 'insufficient_funds', 'failed')
                    AND id <> ALL ($3)
                  ORDER BY state = 'failed', created_at, id LIMIT 1
                    FOR UPDATE",
            )
            .bind(validator)
            .bind(lamports)
            .bind(taken.iter().copied().collect::<Vec<_>>())
            .fetch_optional(&mut *tx)
            .await?;
            match open {
                Some(id) => {
                    taken.insert(id);
                    resolved.push(Resolved::Open(id));
                }
                None => resolved.push(Resolved::New(validator, Uuid::now_v7(), *lamports)),
            }
            out.lamports += lamports;
        }
        if resolved.is_empty() {
            // Nothing here to record it against (deposits never get this
            // far: they carry no transfer out of the treasury).
            return Ok(out);
        }
        let batch_id = Uuid::now_v7();
        let payout_ids: Vec<Uuid> = resolved
            .iter()
            .map(|r| match r {
                Resolved::Open(id) | Resolved::New(_, id, _) => *id,
            })
            .collect();
        sqlx::query(
            "INSERT INTO payout_batches (id, state, signature, transaction, blockhash,
                 last_valid_block_height, lamports, fee_lamports, payout_ids, epoch, slot,
                 signed_slot, created_at, sent_at, finished_at, found_on_chain_at)
             VALUES ($1, 'confirmed', $2, $3, $4, $5, $6, $7, $8, $9, $5, $5,
                     to_timestamp($10), to_timestamp($10), now(), now())",
        )
        .bind(batch_id)
        .bind(&b.signature)
        .bind(&b.transaction)
        .bind(&b.blockhash)
        .bind(b.slot as i64)
        .bind(out.lamports)
        .bind(b.fee_lamports)
        .bind(&payout_ids)
        .bind(epoch)
        .bind(block_time as f64)
        .execute(&mut *tx)
        .await
        .map_err(fenced(epoch))?;
        for r in &resolved {
            match r {
                Resolved::Open(id) => {
                    sqlx::query(
                        "UPDATE payouts SET state = 'paid', batch_id = $1, paid_at = now(),
                                epoch = $2, updated_at = now(), last_error = NULL
                          WHERE id = $3",
                    )
                    .bind(batch_id)
                    .bind(epoch)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(fenced(epoch))?;
                    out.matched += 1;
                }
                Resolved::New(validator, id, lamports) => {
                    sqlx::query(
                        "INSERT INTO payouts (id, validator_id, lamports, state, batch_id, epoch,
                                              paid_at)
                         VALUES ($1, $2, $3, 'paid', $4, $5, now())",
                    )
                    .bind(id)
                    .bind(validator)
                    .bind(lamports)
                    .bind(batch_id)
                    .bind(epoch)
                    .execute(&mut *tx)
                    .await
                    .map_err(fenced(epoch))?;
                    let again = self
                        .credited_again(&mut tx, *validator, block_time, settle_delay)
                        .await?;
                    sqlx::query(
                        "INSERT INTO validator_ledger AS l
                                (validator_id, earned_lamports, claimed_lamports, epoch)
                         VALUES ($1, GREATEST($2 - $4, 0), $2, $3)
                         ON CONFLICT (validator_id) DO UPDATE
                            SET earned_lamports = GREATEST(l.earned_lamports,
                                                           l.claimed_lamports + $2 - $4),
                                claimed_lamports = l.claimed_lamports + $2,
                                epoch = EXCLUDED.epoch, updated_at = now()",
                    )
                    .bind(validator)
                    .bind(lamports)
                    .bind(epoch)
                    .bind(again)
                    .execute(&mut *tx)
                    .await
                    .map_err(fenced(epoch))?;
                    out.added += 1;
                }
            }
        }
        tx.commit().await.map_err(fenced(epoch))?;
        Ok(out)
    }

    /// What settling this ledger's unsettled rounds will credit `validator`
    /// again: rounds the payers before the restore had settled by
    /// `block_time` (closed at least `settle_delay` before it; a round
    /// still open here, scheduled that long before), each result's reward
    /// as settlement credits it (`tick_rewards`: agreement, and nothing for
    /// a task replaced before the result was received).
    async fn credited_again(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        validator: ValidatorId,
        block_time: i64,
        settle_delay: Duration,
    ) -> Result<i64> {
        // Closed rounds: exactly what settlement will credit (the same
        // rule, `tick_rewards`). Rounds still open here: their decision is
        // not known yet, so each result counts in full; overcounting can
        // only leave the validator short, never pay it twice.
        Ok(sqlx::query_scalar(
            "WITH due AS (
                 SELECT r.id, r.status
                   FROM rounds r
                  WHERE r.settled_at IS NULL
                    AND COALESCE(r.closed_at, r.scheduled_at)
                        <= to_timestamp($2) - make_interval(secs => $3)
                    AND EXISTS (SELECT 1 FROM ticks t
                                 WHERE t.round_id = r.id AND t.website_id = r.website_id
                                   AND t.scheduled_at = r.scheduled_at AND t.validator_id = $1)
             )
             SELECT ((SELECT COALESCE(sum(x.earned), 0)
                       FROM tick_rewards(ARRAY(SELECT id FROM due WHERE status <> 'open')) x
                      WHERE x.validator_id = $1)
                  + (SELECT COALESCE(sum(
                                CASE WHEN EXISTS (
                                         SELECT 1 FROM UNNEST(r.replaced_tasks, r.replaced_at_ms)
                                                  AS x(tid, at)
                                          WHERE x.tid = t.task_id
                                            AND t.received_at > to_timestamp(x.at / 1000.0))
                                     THEN 0 ELSE t.reward_lamports END), 0)
                       FROM due d
                       JOIN rounds r ON r.id = d.id
                       JOIN ticks t ON t.round_id = r.id AND t.website_id = r.website_id
                                   AND t.scheduled_at = r.scheduled_at
                      WHERE d.status = 'open' AND t.validator_id = $1))::int8",
        )
        .bind(validator)
        .bind(block_time as f64)
        .bind(settle_delay.as_secs_f64())
        .fetch_one(&mut **tx)
        .await?)
    }
}
