//! The payout ledger's SQL (`shared/store/src/payouts.rs`): settlement,
//! claims, batches and their outcomes, and the epoch fence.

use std::time::Duration;

use store::{
    BatchOutcome, NewBatch, OpenedRound, RoundId, Store, StoreError, ValidatorId, WaitingPayout,
};
use uuid::Uuid;

use crate::{db, open_round, past_ms, store_ticks, tick, validator, website};

/// A round of a new website (`n`) holding one result per `(validator, up,
/// reward)`, closed (the majority decides its status).
pub(crate) async fn closed_round(
    store: &Store,
    n: u32,
    results: &[(ValidatorId, bool, i64)],
) -> OpenedRound {
    let w = website(store, n).await;
    let r = open_round(store, w.id, past_ms()).await;
    let ticks: Vec<_> = results
        .iter()
        .map(|&(v, up, reward)| {
            let mut t = tick(&r, v, up);
            t.reward_lamports = reward;
            t
        })
        .collect();
    store_ticks(store, &ticks).await;
    store.close_rounds(&[r.round_id], "h1", &[]).await.unwrap();
    r
}

/// Settles every closed round; returns how many.
pub(crate) async fn settle(store: &Store, epoch: i64) -> i64 {
    store
        .settle_rounds(epoch, Duration::ZERO, 100)
        .await
        .unwrap()
}

/// `(earned, claimed, earning_ticks, agreed, disagreed)` of a validator's
/// ledger row.
async fn ledger(store: &Store, validator_id: ValidatorId) -> Option<(i64, i64, i64, i64, i64)> {
    sqlx::query_as(
        "SELECT earned_lamports, claimed_lamports, earning_ticks, agreed, disagreed \
           FROM validator_ledger WHERE validator_id = $1",
    )
    .bind(validator_id)
    .fetch_optional(store.pool())
    .await
    .unwrap()
}

/// `(state, attempts, solo, batch_id)` of a payout.
async fn payout(store: &Store, id: Uuid) -> (String, i32, bool, Option<Uuid>) {
    sqlx::query_as("SELECT state, attempts, solo, batch_id FROM payouts WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// `(state, sends, slot, error)` of a batch.
async fn batch_row(store: &Store, id: Uuid) -> (String, i32, Option<i64>, Option<String>) {
    sqlx::query_as("SELECT state, sends, slot, error FROM payout_batches WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// A signed batch of `payouts` (its signature unique per call).
pub(crate) fn batch(payouts: &[WaitingPayout]) -> NewBatch {
    let id = Uuid::now_v7();
    NewBatch {
        id,
        signature: format!("sig-{id}"),
        transaction: vec![1, 2, 3],
        blockhash: "hash".into(),
        last_valid_block_height: 1_150,
        lamports: payouts.iter().map(|p| p.lamports).sum(),
        fee_lamports: 5_000,
        payout_ids: payouts.iter().map(|p| p.id).collect(),
        signed_slot: 1_000,
    }
}

/// Validators `a` and `b`, each credited 2,000 lamports (two rounds both
/// saw up), and claimed into one payout each; returns the epoch, both ids
/// and the waiting payouts (in the order the store lists them).
async fn claimed(store: &Store) -> (i64, ValidatorId, ValidatorId, Vec<WaitingPayout>) {
    let epoch = store.next_epoch("payouts").await.unwrap();
    let a = validator(store, "key-a", "eu").await;
    let b = validator(store, "key-b", "us").await;
    for n in 0..2 {
        closed_round(store, n, &[(a, true, 1_000), (b, true, 1_000)]).await;
    }
    assert_eq!(settle(store, epoch).await, 2);
    assert_eq!(store.claim_payouts(epoch, 1, 100).await.unwrap(), 2);
    let waiting = store.waiting_payouts(100).await.unwrap();
    let mut got: Vec<_> = waiting
        .iter()
        .map(|p| (p.validator_id, p.lamports))
        .collect();
    got.sort();
    assert_eq!(got, vec![(a, 2_000), (b, 2_000)]);
    (epoch, a, b, waiting)
}

#[tokio::test]
async fn epochs_only_go_up() {
    let db = db().await;
    let s = &db.store;
    assert_eq!(s.current_epoch("payouts").await.unwrap(), 0, "migration");
    assert_eq!(s.next_epoch("payouts").await.unwrap(), 1);
    assert_eq!(s.next_epoch("payouts").await.unwrap(), 2);
    assert_eq!(s.current_epoch("payouts").await.unwrap(), 2);
    assert_eq!(s.next_epoch("other").await.unwrap(), 1, "per role");
    assert_eq!(s.current_epoch("nobody").await.unwrap(), 0);
}

#[tokio::test]
async fn settlement_credits_each_closed_round_once() {
    let db = db().await;
    let s = &db.store;
    let epoch = s.next_epoch("payouts").await.unwrap();
    let (a, b, c) = (
        validator(s, "a", "eu").await,
        validator(s, "b", "us").await,
        validator(s, "c", "ap").await,
    );
    // Round 1: a and b up, c down (and c's task replaced before its result
    // was received: it earns nothing); b's task was replaced only after its
    // result arrived, so it earns.
    let w = website(s, 1).await;
    let r1 = open_round(s, w.id, past_ms()).await;
    let (ta, tb, tc) = (tick(&r1, a, true), tick(&r1, b, true), tick(&r1, c, false));
    store_ticks(s, &[ta.clone(), tb.clone(), tc.clone()]).await;
    let replaced = [
        (r1.round_id, tb.task_id, tb.received_at_ms + 5_000),
        (r1.round_id, tc.task_id, tc.received_at_ms - 500),
    ];
    let closed = s
        .close_rounds(&[r1.round_id], "h1", &replaced)
        .await
        .unwrap();
    assert_eq!(closed[0].status, "up");
    // Round 2: a alone, closed unknown: agrees with nothing, and with no
    // decision and no regional majority, earns nothing.
    let r2 = closed_round(s, 2, &[(a, true, 1_000)]).await;
    // Round 3 stays open: not settled.
    let w3 = website(s, 3).await;
    let r3 = open_round(s, w3.id, past_ms()).await;
    store_ticks(s, &[tick(&r3, b, true)]).await;

    assert_eq!(
        s.settle_rounds(epoch, Duration::from_secs(3600), 100)
            .await
            .unwrap(),
        0,
        "closed less than the delay ago"
    );
    assert_eq!(s.settle_rounds(epoch, Duration::ZERO, 1).await.unwrap(), 1);
    assert_eq!(settle(s, epoch).await, 1, "the rest");
    assert_eq!(settle(s, epoch).await, 0, "nothing twice");
    assert_eq!(ledger(s, a).await, Some((1_000, 0, 1, 1, 0)));
    assert_eq!(ledger(s, b).await, Some((1_000, 0, 1, 1, 0)));
    assert_eq!(ledger(s, c).await, Some((0, 0, 0, 0, 1)));
    let settled: Vec<(RoundId, bool)> =
        sqlx::query_as("SELECT id, settled_at IS NOT NULL FROM rounds ORDER BY id")
            .fetch_all(s.pool())
            .await
            .unwrap();
    assert_eq!(
        settled,
        vec![
            (r1.round_id, true),
            (r2.round_id, true),
            (r3.round_id, false)
        ]
    );
}

/// A result is judged by its validator's probation when it was stored, not
/// when its round is settled: `c` is on probation when its results are
/// stored and leaves it before settlement, as when settlement ends a
/// probation while some of the key's probation-era rounds wait to be
/// settled. Its work decides nothing and is never paid.
#[tokio::test]
async fn probation_work_is_never_paid_even_once_probation_has_ended() {
    let db = db().await;
    let s = &db.store;
    let epoch = s.next_epoch("payouts").await.unwrap();
    let (a, b, c) = (
        validator(s, "a", "eu").await,
        validator(s, "b", "us").await,
        validator(s, "c", "ap").await,
    );
    let set_probation = |on: bool| {
        sqlx::query("UPDATE validators SET probation = $1 WHERE id = $2")
            .bind(on)
            .bind(c)
            .execute(s.pool())
    };
    set_probation(true).await.unwrap();
    // Decided up by a and b; c agrees.
    let w1 = website(s, 1).await;
    let r1 = open_round(s, w1.id, past_ms()).await;
    store_ticks(
        s,
        &[tick(&r1, a, true), tick(&r1, b, true), tick(&r1, c, true)],
    )
    .await;
    // a and c alone: only a's result counts, and one result decides nothing.
    let w2 = website(s, 2).await;
    let r2 = open_round(s, w2.id, past_ms()).await;
    store_ticks(s, &[tick(&r2, a, true), tick(&r2, c, true)]).await;
    set_probation(false).await.unwrap();
    let closed = s
        .close_rounds(&[r1.round_id, r2.round_id], "h1", &[])
        .await
        .unwrap();
    let status = |id: RoundId| {
        closed
            .iter()
            .find(|r| r.round_id == id)
            .unwrap()
            .status
            .clone()
    };
    assert_eq!(status(r1.round_id), "up");
    assert_eq!(
        status(r2.round_id),
        "unknown",
        "a probation-era result decided it"
    );
    assert_eq!(settle(s, epoch).await, 2);
    assert_eq!(ledger(s, a).await.unwrap().0, 1_000, "a earns round 1 only");
    assert_eq!(ledger(s, b).await.unwrap().0, 1_000);
    let paid_c = ledger(s, c).await.map_or(0, |l| l.0);
    assert_eq!(paid_c, 0, "probation-era work was paid");
}

#[tokio::test]
async fn claims_move_unclaimed_earnings_into_one_payout_per_validator() {
    let db = db().await;
    let s = &db.store;
    let epoch = s.next_epoch("payouts").await.unwrap();
    let (a, b) = (validator(s, "a", "eu").await, validator(s, "b", "us").await);
    closed_round(s, 1, &[(a, true, 3_000), (b, true, 500)]).await;
    settle(s, epoch).await;
    assert_eq!(s.claim_payouts(epoch, 1_000, 100).await.unwrap(), 1);
    let waiting = s.waiting_payouts(100).await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        (
            waiting[0].validator_id,
            waiting[0].public_key.as_str(),
            waiting[0].lamports,
            waiting[0].solo
        ),
        (a, "a", 3_000, false)
    );
    assert_eq!(ledger(s, a).await, Some((3_000, 3_000, 1, 1, 0)));
    // More earnings for a: not claimed while its payout is unfinished; b's
    // 500 only once the minimum allows it.
    closed_round(s, 2, &[(a, true, 2_000), (b, true, 500)]).await;
    settle(s, epoch).await;
    assert_eq!(
        s.claim_payouts(epoch, 1_000, 100).await.unwrap(),
        1,
        "b's 1,000"
    );
    assert_eq!(s.claim_payouts(epoch, 1, 100).await.unwrap(), 0);
    assert_eq!(ledger(s, a).await, Some((5_000, 3_000, 2, 2, 0)));
    assert_eq!(ledger(s, b).await, Some((1_000, 1_000, 2, 2, 0)));
    assert_eq!(s.waiting_payouts(1).await.unwrap().len(), 1, "the limit");
}

#[tokio::test]
async fn a_stored_batch_is_sent_then_confirmed_into_paid_payouts() {
    let db = db().await;
    let s = &db.store;
    let (epoch, _, _, waiting) = claimed(s).await;
    let b = batch(&waiting);
    s.save_batch(epoch, &b).await.unwrap();
    assert!(s.waiting_payouts(100).await.unwrap().is_empty());
    for p in &waiting {
        assert_eq!(
            payout(s, p.id).await,
            ("batched".into(), 0, false, Some(b.id))
        );
    }
    let unfinished = s.unfinished_batches().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    let u = &unfinished[0];
    assert_eq!(
        (
            u.id,
            u.signature.as_str(),
            u.transaction.as_slice(),
            u.last_valid_block_height,
            u.lamports,
            u.fee_lamports,
            u.payout_ids.as_slice(),
            u.signed_slot,
        ),
        (
            b.id,
            b.signature.as_str(),
            &[1u8, 2, 3][..],
            1_150,
            4_000,
            5_000,
            b.payout_ids.as_slice(),
            1_000
        )
    );
    s.mark_batch_sent(epoch, b.id).await.unwrap();
    s.mark_batch_sent(epoch, b.id).await.unwrap();
    assert_eq!(batch_row(s, b.id).await, ("sent".into(), 2, None, None));
    assert_eq!(s.payout_backlog().await.unwrap(), (1, 0, 0));
    assert_eq!(s.payout_spent_today().await.unwrap(), 4_000 + 5_000);

    s.confirm_batch(epoch, b.id, 77).await.unwrap();
    assert_eq!(
        batch_row(s, b.id).await,
        ("confirmed".into(), 2, Some(77), None)
    );
    for p in &waiting {
        assert_eq!(payout(s, p.id).await.0, "paid");
    }
    assert!(s.unfinished_batches().await.unwrap().is_empty());
    assert_eq!(s.payout_backlog().await.unwrap(), (0, 0, 0));
    assert_eq!(s.payout_spent_today().await.unwrap(), 4_000 + 5_000);
    let e = s.confirm_batch(epoch, b.id, 78).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "finished once: {e:?}");
    assert_eq!(batch_row(s, b.id).await.2, Some(77));
}

#[tokio::test]
async fn a_batch_is_stored_only_if_every_payout_still_waits() {
    let db = db().await;
    let s = &db.store;
    let (epoch, _, _, waiting) = claimed(s).await;
    let mut stray = batch(&waiting[..1]);
    stray.payout_ids.push(Uuid::now_v7());
    let e = s.save_batch(epoch, &stray).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("1 of 2")),
        "{e:?}"
    );
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM payout_batches")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(batches, 0, "rolled back");
    assert_eq!(payout(s, waiting[0].id).await.0, "claimed");

    let first = batch(&waiting[..1]);
    s.save_batch(epoch, &first).await.unwrap();
    let mut same_tx = batch(&waiting[1..]);
    same_tx.signature = first.signature.clone();
    let e = s.save_batch(epoch, &same_tx).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("same transaction")),
        "{e:?}"
    );
    let e = s
        .save_batch(epoch, &batch(&waiting[..1]))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Conflict(_)),
        "already batched: {e:?}"
    );
}

#[tokio::test]
async fn an_expired_batch_counts_an_attempt_until_the_payout_fails() {
    let db = db().await;
    let s = &db.store;
    let (epoch, _, _, waiting) = claimed(s).await;
    let one = &waiting[..1];
    let first = batch(one);
    s.save_batch(epoch, &first).await.unwrap();
    s.abandon_batch(epoch, first.id, &BatchOutcome::Expired, 2)
        .await
        .unwrap();
    let (state, _, slot, error) = batch_row(s, first.id).await;
    assert_eq!((state.as_str(), slot), ("expired", None));
    assert!(error.unwrap().contains("expired"));
    assert_eq!(
        payout(s, one[0].id).await,
        ("claimed".into(), 1, false, None)
    );
    assert_eq!(
        s.payout_spent_today().await.unwrap(),
        0,
        "expired spent nothing"
    );

    let second = batch(one);
    s.save_batch(epoch, &second).await.unwrap();
    s.abandon_batch(epoch, second.id, &BatchOutcome::Expired, 2)
        .await
        .unwrap();
    assert_eq!(
        payout(s, one[0].id).await,
        ("failed".into(), 2, false, None)
    );
    assert_eq!(s.payout_backlog().await.unwrap(), (0, 0, 1));
    let e = s
        .abandon_batch(epoch, second.id, &BatchOutcome::Expired, 2)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");

    // The operator's retry: back in the queue with a fresh count.
    assert_eq!(s.retry_failed_payouts(epoch).await.unwrap(), 1);
    assert_eq!(
        payout(s, one[0].id).await,
        ("claimed".into(), 0, false, None)
    );
    assert_eq!(s.retry_failed_payouts(epoch).await.unwrap(), 0);
}

#[tokio::test]
async fn a_failed_batch_of_several_comes_back_solo_without_an_attempt() {
    let db = db().await;
    let s = &db.store;
    let (epoch, _, _, waiting) = claimed(s).await;
    let both = batch(&waiting);
    s.save_batch(epoch, &both).await.unwrap();
    let failed = BatchOutcome::Failed("InstructionError(1, ...)".into());
    s.abandon_batch(epoch, both.id, &failed, 1).await.unwrap();
    assert_eq!(
        batch_row(s, both.id).await,
        (
            "failed".into(),
            0,
            None,
            Some("InstructionError(1, ...)".into())
        )
    );
    let again = s.waiting_payouts(100).await.unwrap();
    assert!(again.iter().all(|p| p.solo), "{again:?}");
    for p in &waiting {
        assert_eq!(payout(s, p.id).await, ("claimed".into(), 0, true, None));
    }
    assert_eq!(s.payout_spent_today().await.unwrap(), 5_000, "only its fee");
    // Alone, a failure counts: at one attempt allowed, it fails for good.
    let alone = batch(&again[..1]);
    s.save_batch(epoch, &alone).await.unwrap();
    s.abandon_batch(epoch, alone.id, &failed, 1).await.unwrap();
    assert_eq!(
        payout(s, again[0].id).await,
        ("failed".into(), 1, true, None)
    );
    assert_eq!(payout(s, again[1].id).await.0, "claimed");
}

#[tokio::test]
async fn payouts_the_treasury_cannot_cover_keep_waiting() {
    let db = db().await;
    let s = &db.store;
    let (epoch, _, _, waiting) = claimed(s).await;
    s.mark_insufficient_funds(epoch, &[waiting[0].id])
        .await
        .unwrap();
    assert_eq!(payout(s, waiting[0].id).await.0, "insufficient_funds");
    assert_eq!(s.payout_backlog().await.unwrap(), (0, 1, 0));
    assert_eq!(
        s.waiting_payouts(100).await.unwrap(),
        waiting,
        "still waiting"
    );
    let b = batch(&waiting);
    s.save_batch(epoch, &b).await.unwrap();
    assert_eq!(payout(s, waiting[0].id).await.0, "batched");
    let error: Option<String> = sqlx::query_scalar("SELECT last_error FROM payouts WHERE id = $1")
        .bind(waiting[0].id)
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(error, None, "cleared when batched");
}

#[tokio::test]
async fn a_stale_epoch_writes_nothing() {
    let db = db().await;
    let s = &db.store;
    let old = s.next_epoch("payouts").await.unwrap();
    let a = validator(s, "a", "eu").await;
    let b = validator(s, "b", "us").await;
    closed_round(s, 1, &[(a, true, 1_000), (b, true, 1_000)]).await;
    let new = s.next_epoch("payouts").await.unwrap();
    let stale = |r: Result<_, StoreError>| match r {
        Err(StoreError::StaleEpoch(e)) => assert_eq!(e, old),
        other => panic!("expected StaleEpoch({old}), got {other:?}"),
    };
    stale(s.settle_rounds(old, Duration::ZERO, 100).await.map(|_| ()));
    let unsettled: i64 = sqlx::query_scalar("SELECT count(*) FROM rounds WHERE settled_at IS NULL")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(unsettled, 1, "the round is not marked either");
    // The refused statement may still hold the round's row for a moment
    // after its error arrives (SKIP LOCKED then passes it over).
    let mut settled = 0;
    for _ in 0..50 {
        settled = settle(s, new).await;
        if settled > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(settled, 1);
    stale(s.claim_payouts(old, 1, 100).await.map(|_| ()));
    assert_eq!(s.claim_payouts(new, 1, 100).await.unwrap(), 2);
    let waiting = s.waiting_payouts(100).await.unwrap();
    stale(s.mark_insufficient_funds(old, &[waiting[0].id]).await);
    stale(s.save_batch(old, &batch(&waiting)).await);
    let b = batch(&waiting);
    s.save_batch(new, &b).await.unwrap();
    stale(s.mark_batch_sent(old, b.id).await);
    stale(s.confirm_batch(old, b.id, 5).await);
    stale(s.abandon_batch(old, b.id, &BatchOutcome::Expired, 3).await);
    assert_eq!(batch_row(s, b.id).await.0, "signed", "untouched");
    assert_eq!(s.unfinished_batches().await.unwrap().len(), 1);
}
