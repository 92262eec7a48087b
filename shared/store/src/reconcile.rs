//! Reconciling the payout ledger with the treasury's on-chain history (see
//! `migrations/*_payout_reconcile.sql` and docs/ARCHITECTURE.md, "After a
//! restore"). The payout leader lists the treasury's finalized transactions
//! newer than the cursor; one no batch here knows was signed by a ledger
//! this database no longer remembers (it was restored from an older
//! backup), and its transfers are recorded as paid before anything more is
//! claimed, so no lamport is paid twice. Every write takes the leader's
//! fencing epoch, as in `payouts`.

use std::collections::HashSet;

use sqlx::Row;
use uuid::Uuid;

use crate::payouts::fenced;
use crate::{Result, Store, ValidatorId};

/// Where reconciliation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainCursor {
    /// Every treasury transaction finalized at or before this slot is
    /// reconciled; `None` before the first reconciliation.
    pub slot: Option<u64>,
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
    /// Transfers that paid a payout this ledger still held open (claimed,
    /// short of funds, or in a batch that will not land): marked paid.
    pub matched: usize,
    /// Transfers this ledger had not claimed: recorded as paid payouts and
    /// added to the validator's `claimed`; where that passes `earned` plus
    /// the rewards of its results in rounds not settled yet, `earned` is
    /// raised to match (those lamports paid rounds the restore lost).
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
            "SELECT slot, extract(epoch FROM since)::int8 AS since FROM payout_chain_cursor",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => ChainCursor {
                slot: r.get::<Option<i64>, _>("slot").map(|s| s.max(0) as u64),
                since_unix: r.get("since"),
            },
            None => ChainCursor {
                slot: None,
                since_unix: protocol_now_secs(),
            },
        })
    }

    /// Moves the cursor to `slot`: everything finalized at or before it is
    /// reconciled.
    pub async fn set_chain_cursor(&self, epoch: i64, slot: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO payout_chain_cursor (slot, epoch) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET slot = EXCLUDED.slot, epoch = EXCLUDED.epoch,
                                            updated_at = now()",
        )
        .bind(slot as i64)
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
    /// knows. Each transfer to a validator first pays the validator's open
    /// payout of exactly that amount, if there is one (a payout claimed
    /// before the backup and paid after it); otherwise it becomes a new
    /// `paid` payout and the validator's `claimed` grows by it. `claimed`
    /// may then pass `earned` by at most the rewards of the validator's
    /// results in rounds not settled yet (which the payers before the
    /// restore settled and paid; settling them again fills the
    /// difference); beyond that, the transfer paid rounds the restore lost
    /// and `earned` is raised by the excess, so later work is paid in full
    /// and nothing is paid twice. The
    /// batch row is `confirmed`, with `found_on_chain_at` set. Idempotent:
    /// a batch already known is left alone.
    pub async fn record_found_batch(&self, epoch: i64, b: &FoundBatch) -> Result<FoundOutcome> {
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
        let mut resolved = Vec::with_capacity(b.transfers.len());
        let mut taken: HashSet<Uuid> = HashSet::new();
        for (to, lamports) in &b.transfers {
            if *lamports <= 0 {
                continue;
            }
            let validator: Option<ValidatorId> =
                sqlx::query_scalar("SELECT id FROM validators WHERE public_key = $1")
                    .bind(to)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(validator) = validator else {
                out.unknown.push((to.clone(), *lamports));
                continue;
            };
            let open: Option<Uuid> = sqlx::query_scalar(
                "SELECT id FROM payouts
                  WHERE validator_id = $1 AND lamports = $2
                    AND state IN ('claimed', 'insufficient_funds', 'batched')
                    AND id <> ALL ($3)
                  ORDER BY created_at, id LIMIT 1
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
                 signed_slot, sent_at, finished_at, found_on_chain_at)
             VALUES ($1, 'confirmed', $2, $3, $4, $5, $6, $7, $8, $9, $5, $5, now(), now(), now())",
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
                    // What the restored ledger may still credit this
                    // validator (its results in rounds not settled yet, an
                    // upper bound): a transfer beyond its unclaimed
                    // earnings pays those first, and what is left paid
                    // rounds the restore lost, which are credited as
                    // earned so they are not taken back from later work.
                    let unsettled: i64 = sqlx::query_scalar(
                        "SELECT COALESCE(sum(t.reward_lamports), 0)::int8
                           FROM rounds r
                           JOIN ticks t ON t.round_id = r.id AND t.website_id = r.website_id
                                       AND t.scheduled_at = r.scheduled_at
                          WHERE r.settled_at IS NULL AND t.validator_id = $1",
                    )
                    .bind(validator)
                    .fetch_one(&mut *tx)
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
                    .bind(unsettled)
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
}

fn protocol_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
