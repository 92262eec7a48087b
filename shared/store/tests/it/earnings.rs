//! The earnings document and the summary the payout leader refreshes.

use store::{Earnings, PayoutRow, Store, ValidatorId};

use crate::payouts::{batch, closed_round, settle};
use crate::{db, open_round, store_ticks, tick, validator, website};

/// `validator_earnings_summary` as `(validator_id, settling_lamports)`.
async fn summary(store: &Store) -> Vec<(ValidatorId, i64)> {
    sqlx::query_as(
        "SELECT validator_id, settling_lamports FROM validator_earnings_summary \
          ORDER BY validator_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_key_that_never_said_hello_has_no_earnings() {
    let db = db().await;
    validator(&db.store, "known", "eu").await;
    assert_eq!(db.store.earnings("unknown").await.unwrap(), None);
    assert_eq!(db.store.earnings_summary("unknown").await.unwrap(), None);
}

#[tokio::test]
async fn the_summary_holds_rewards_of_unsettled_rounds_of_the_last_week() {
    let db = db().await;
    let s = &db.store;
    let epoch = s.next_epoch("payouts").await.unwrap();
    let (a, b) = (validator(s, "a", "eu").await, validator(s, "b", "us").await);
    // Open, and closed but unsettled: both count. Eight days old: not.
    let w = website(s, 1).await;
    let open = open_round(s, w.id, crate::past_ms()).await;
    store_ticks(s, &[tick(&open, a, true)]).await;
    closed_round(s, 2, &[(a, true, 1_000), (b, true, 1_000)]).await;
    let old = open_round(s, w.id, protocol::now_ms() - 8 * 86_400_000).await;
    store_ticks(s, &[tick(&old, b, true)]).await;

    assert_eq!(s.refresh_earnings_summary().await.unwrap(), 2);
    assert_eq!(summary(s).await, vec![(a, 2_000), (b, 1_000)]);
    for (key, want) in [("a", 2_000), ("b", 1_000)] {
        let from_summary = s.earnings_summary(key).await.unwrap().unwrap();
        let computed = s.earnings(key).await.unwrap().unwrap();
        assert_eq!(from_summary.settling_lamports, want, "{key}");
        assert_eq!(
            computed.settling_lamports, want,
            "{key}: computed per request"
        );
    }

    // Settled: b's settling clears, a keeps the open round's.
    settle(s, epoch).await;
    assert_eq!(
        s.refresh_earnings_summary().await.unwrap(),
        2,
        "a upserted, b cleared"
    );
    assert_eq!(summary(s).await, vec![(a, 1_000), (b, 0)]);

    s.close_rounds(&[open.round_id], "h1", &[]).await.unwrap();
    settle(s, epoch).await;
    assert_eq!(s.refresh_earnings_summary().await.unwrap(), 1, "a cleared");
    assert_eq!(summary(s).await, vec![(a, 0), (b, 0)]);
    assert_eq!(
        s.refresh_earnings_summary().await.unwrap(),
        0,
        "nothing to write"
    );
}

#[tokio::test]
async fn the_earnings_document_adds_up_ledger_payouts_and_settling() {
    let db = db().await;
    let s = &db.store;
    let epoch = s.next_epoch("payouts").await.unwrap();
    let (a, b) = (validator(s, "a", "eu").await, validator(s, "b", "us").await);
    // Three settled rounds, a agreeing twice (its disagreeing result in
    // round 2 earns nothing), then paid out.
    closed_round(s, 1, &[(a, true, 1_000), (b, true, 1_000)]).await;
    closed_round(s, 2, &[(a, false, 1_000), (b, true, 1_000), (b, true, 0)]).await;
    closed_round(s, 3, &[(a, true, 1_000), (b, true, 1_000)]).await;
    settle(s, epoch).await;
    s.claim_payouts(epoch, 1, 100).await.unwrap();
    let waiting: Vec<_> = s
        .waiting_payouts(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.validator_id == a)
        .collect();
    let paid = batch(&waiting);
    s.save_batch(epoch, &paid).await.unwrap();
    s.confirm_batch(epoch, paid.id, 9).await.unwrap();
    // Then: 500 more settled (unclaimed), 700 in an open round (settling).
    closed_round(s, 4, &[(a, true, 500), (b, true, 0)]).await;
    settle(s, epoch).await;
    let w = website(s, 5).await;
    let open = open_round(s, w.id, crate::past_ms()).await;
    let mut t = tick(&open, a, true);
    t.reward_lamports = 700;
    store_ticks(s, &[t]).await;
    s.refresh_earnings_summary().await.unwrap();

    let doc = s.earnings_summary("a").await.unwrap().unwrap();
    let p = &doc.payouts;
    assert_eq!(p.len(), 1);
    assert!(p[0].created_at_ms > 0 && p[0].paid_at_ms >= Some(p[0].created_at_ms));
    assert_eq!(
        doc,
        Earnings {
            validator_id: a,
            public_key: "a".into(),
            earned_lamports: 2_500,
            settling_lamports: 700,
            unclaimed_lamports: 500,
            prepaid_lamports: 0,
            pending_lamports: 0,
            paid_lamports: 2_000,
            failed_lamports: 0,
            earning_ticks: 3,
            agreed: 3,
            disagreed: 1,
            payouts: vec![PayoutRow {
                id: waiting[0].id,
                lamports: 2_000,
                state: "paid".into(),
                attempts: 0,
                signature: Some(paid.signature.clone()),
                last_error: None,
                created_at_ms: p[0].created_at_ms,
                paid_at_ms: p[0].paid_at_ms,
            }],
        }
    );
    // The per-request variant computes `settling` itself: the same document.
    assert_eq!(s.earnings("a").await.unwrap().unwrap(), doc);
    // b: claimed, not paid.
    let b_doc = s.earnings_summary("b").await.unwrap().unwrap();
    assert_eq!(
        (
            b_doc.earned_lamports,
            b_doc.unclaimed_lamports,
            b_doc.pending_lamports,
            b_doc.paid_lamports,
            b_doc.earning_ticks,
            b_doc.payouts[0].state.as_str(),
            b_doc.payouts[0].signature.as_deref(),
        ),
        (3_000, 0, 3_000, 0, 3, "claimed", None)
    );
}
