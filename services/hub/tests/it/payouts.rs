//! Payouts against a real SVM (litesvm) behind a JSON-RPC endpoint, with
//! the production RPC client. Earnings are seeded as real rounds and ticks
//! in a fresh database, then settled, claimed and paid by the leader's
//! payer; every test ends with an audit: what each validator received on
//! chain equals what the ledger says it was paid, and nothing else left
//! the treasury.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use solana_keypair::Keypair;
use solana_signer::Signer;
use uuid::Uuid;

use common::payouts::*;
use hub::payouts::{CrashPoint, PayoutError};
use protocol::PublicKey;
use store::StoreError;
use test_support::solana::{LaggingNode, SendBehaviour, SolanaRpc};
use test_support::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_land_with_the_right_amounts() {
    let Setup {
        db,
        chain,
        treasury,
        start,
        mut farm,
    } = setup(100_000_000_000).await;
    let mut vals = Vec::new();
    for n in 0..7 {
        vals.push(farm.validator(n).await);
    }
    // v0..v5 earn enough in two rounds; v6 stays below the minimum.
    for _ in 0..2 {
        let t: Vec<(&Val, i64, bool)> = vals[..6]
            .iter()
            .enumerate()
            .map(|(i, v)| (v, 500_000 + 100_000 * i as i64, true))
            .collect();
        farm.round(&t, &[]).await;
    }
    farm.round(&[(&vals[6], 400_000, true), (&vals[0], 1, true)], &[])
        .await;

    let (payer, _term, _) = leader(&db, &chain, &treasury, None).await;
    let r = payer.cycle().await.unwrap();
    assert_eq!(r.rounds_settled, 3);
    assert_eq!(r.payouts_claimed, 6);
    assert_eq!(r.batches_sent, 2, "6 transfers, 3 per transaction");
    assert_eq!(r.batches_confirmed, 2);
    for (i, v) in vals[..6].iter().enumerate() {
        let want = 2 * (500_000 + 100_000 * i as u64) + u64::from(i == 0);
        assert_eq!(chain.received(v.bytes()), want, "validator {i}");
    }
    assert_eq!(chain.received(vals[6].bytes()), 0, "below the minimum");
    assert_eq!(ledger(&db, &vals[6]).await, (400_000, 0));

    // The earnings view agrees.
    let e = db
        .store
        .earnings(&PublicKey::from(&vals[1].key).to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.earned_lamports, 1_200_000);
    assert_eq!(e.paid_lamports, 1_200_000);
    assert_eq!(e.pending_lamports, 0);
    assert_eq!(e.payouts.len(), 1);
    assert_eq!(e.payouts[0].state, "paid");
    assert!(e.payouts[0].signature.is_some());

    // A second cycle pays nothing more.
    let r = payer.cycle().await.unwrap();
    assert_eq!((r.payouts_claimed, r.batches_sent), (0, 0));
    audit(&db, &chain, &treasury, start, &vals).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earnings_go_to_the_payout_address_a_hello_named() {
    let Setup {
        db,
        chain,
        treasury,
        mut farm,
        ..
    } = setup(10_000_000_000).await;
    let v = farm.validator(1).await;
    let w = farm.validator(2).await;
    let wallet = solana_keypair::Keypair::new().pubkey();
    let key = PublicKey::from(&v.key).to_string();
    let wallet_text = wallet.to_string();
    db.store
        .record_hello(&store::HelloRecord {
            public_key: &key,
            region: "eu",
            tags: &[],
            client_version: "test",
            payout_address: Some(&wallet_text),
            trusted: false,
            probation: false,
        })
        .await
        .unwrap()
        .expect("the address is free");
    farm.round(&[(&v, 2 * MIN, true), (&w, 2 * MIN, true)], &[])
        .await;
    let (payer, _term, _) = leader(&db, &chain, &treasury, None).await;
    payer.cycle().await.unwrap();
    assert_eq!(chain.received(wallet.to_bytes()), 2 * MIN as u64);
    assert_eq!(chain.received(v.bytes()), 0, "not to the signing key");
    assert_eq!(chain.received(w.bytes()), 2 * MIN as u64);
    let e = db.store.earnings(&key).await.unwrap().unwrap();
    assert_eq!(e.paid_lamports, 2 * MIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_results_earn_nothing_and_agreement_is_counted() {
    let Setup {
        db,
        chain,
        treasury,
        mut farm,
        ..
    } = setup(10_000_000_000).await;
    let a = farm.validator(1).await;
    let b = farm.validator(2).await;
    let c = farm.validator(3).await;
    // Majority up; c disagrees; a's task was replaced before its result
    // came in (at +15 ms; results are received at +20 ms).
    farm.round(
        &[(&a, 1_000, true), (&b, 1_000, true), (&c, 1_000, false)],
        &[(&a, 15)],
    )
    .await;
    // c's task replaced only after its result was received: it still earns.
    farm.round(&[(&c, 1_000, true), (&b, 1_000, true)], &[(&c, 25)])
        .await;
    // No majority (one result): counts for neither, earns nothing.
    farm.round_alone(&[(&b, 1_000, false)], &[]).await;
    // A regional majority pays against the round: d and e (region
    // `ap-south`) see the site down, a and b (`eu`) and f up.
    let d = farm.validator(4).await;
    let e = farm.validator(5).await;
    let f = farm.validator(6).await;
    for v in [&d, &e] {
        sqlx::query("UPDATE validators SET region = 'ap-south' WHERE id = $1")
            .bind(v.id)
            .execute(db.pool())
            .await
            .unwrap();
    }
    farm.round(
        &[
            (&d, 1_000, false),
            (&e, 1_000, false),
            (&f, 1_000, true),
            (&a, 1_000, true),
            (&b, 1_000, true),
        ],
        &[],
    )
    .await;
    // g and h (regions of their own) both say down in a round decided up,
    // then reconnect claiming one region: a majority formed after the fact
    // pays nothing.
    let g = farm.validator(7).await;
    let h = farm.validator(8).await;
    for (v, region) in [(&g, "g-1"), (&h, "h-1")] {
        sqlx::query("UPDATE validators SET region = $2 WHERE id = $1")
            .bind(v.id)
            .bind(region)
            .execute(db.pool())
            .await
            .unwrap();
    }
    farm.round(
        &[
            (&g, 1_000, false),
            (&h, 1_000, false),
            (&a, 1_000, true),
            (&b, 1_000, true),
            (&f, 1_000, true),
        ],
        &[],
    )
    .await;
    for v in [&g, &h] {
        let key = protocol::PublicKey::from(&v.key).to_string();
        db.store
            .upsert_validator(&key, "ap-south", &[], "test")
            .await
            .unwrap();
    }
    let metrics = std::sync::Arc::new(hub::metrics::Metrics::new("test"));
    let (payer, _term, _) =
        leader_full(&db, &chain.url(), &treasury, config(None), metrics.clone()).await;
    payer.cycle().await.unwrap();
    let judged = |o: &str| metrics.results_judged.with_label_values(&[o]).get();
    // Agreed: a, b in round 1; c, b in 2; a, b, f in 4; a, b, f in 5.
    // Disagreed: c in 1; d, e in 4; g, h in 5. No evidence: no shadow checks.
    assert_eq!(
        (
            judged("agreed"),
            judged("disagreed"),
            judged("shadow_failed")
        ),
        (10, 5, 0)
    );
    // g and h disagreed, unbacked: below 0.5; d and e were backed by
    // their region: not.
    let standing = |s: &str| metrics.validators_by_standing.with_label_values(&[s]).get();
    assert_eq!(standing("low_trust"), 2, "g and h");
    assert_eq!(standing("good") + standing("low_trust"), 8);
    let row = |v: &Val| {
        let v = v.id;
        let db = &db;
        async move {
            sqlx::query_as::<_, (i64, i64, i64, i64)>(
                "SELECT earned_lamports, earning_ticks, agreed, disagreed
                   FROM validator_ledger WHERE validator_id = $1",
            )
            .bind(v)
            .fetch_one(db.pool())
            .await
            .unwrap()
        }
    };
    assert_eq!(
        row(&a).await,
        (2_000, 2, 3, 0),
        "replaced: agreed, earned nothing; then agreed and earned twice"
    );
    assert_eq!(
        row(&b).await,
        (4_000, 4, 4, 0),
        "the lone result of an unknown round earned nothing"
    );
    assert_eq!(
        row(&c).await,
        (1_000, 1, 1, 1),
        "disagreeing with the round (and its region) earned nothing"
    );
    assert_eq!(
        row(&d).await,
        (1_000, 1, 0, 1),
        "disagreed with the round, agreed with its region of two: earned"
    );
    assert_eq!(row(&f).await, (2_000, 2, 2, 0));
    assert_eq!(
        row(&g).await,
        (0, 0, 0, 1),
        "a regional majority formed by moving after the result earns nothing"
    );
    // Settled once only.
    let r = payer.cycle().await.unwrap();
    assert_eq!(r.rounds_settled, 0);
    assert_eq!(row(&b).await, (4_000, 4, 4, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leaders_writes_are_rejected_by_the_database() {
    let Setup {
        db,
        chain,
        treasury,
        mut farm,
        ..
    } = setup(10_000_000_000).await;
    let v = farm.validator(1).await;
    farm.round(&[(&v, 2_000_000, true)], &[]).await;

    let (old, _old_term, old_epoch) = leader(&db, &chain, &treasury, None).await;
    let (new, _new_term, new_epoch) = leader(&db, &chain, &treasury, None).await;
    assert!(new_epoch > old_epoch);
    let s = &db.store;
    let stale = |r: Result<(), StoreError>| {
        assert!(
            matches!(r, Err(StoreError::StaleEpoch(e)) if e == old_epoch),
            "{r:?}"
        )
    };
    stale(
        s.settle_rounds(old_epoch, Duration::ZERO, 10)
            .await
            .map(|_| ()),
    );
    // The round may be skipped (SKIP LOCKED) while the failed statement
    // above still holds its row: such a cycle must do nothing, and a later
    // one must be refused.
    let mut refused = false;
    for _ in 0..20 {
        match old.cycle().await {
            Err(PayoutError::Stale(StoreError::StaleEpoch(_))) => {
                refused = true;
                break;
            }
            Ok(r) => {
                assert_eq!((r.rounds_settled, r.payouts_claimed), (0, 0), "{r:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(refused, "the stale leader's cycle was refused");
    assert_eq!(ledger(&db, &v).await, (0, 0), "nothing credited");

    // The newest leader settles and claims; the stale one can touch none of it.
    s.settle_rounds(new_epoch, Duration::ZERO, 10)
        .await
        .unwrap();
    stale(s.claim_payouts(old_epoch, MIN, 10).await.map(|_| ()));
    assert_eq!(ledger(&db, &v).await, (2_000_000, 0), "nothing claimed");
    assert_eq!(s.claim_payouts(new_epoch, MIN, 10).await.unwrap(), 1);
    let waiting = s.waiting_payouts(10).await.unwrap();
    stale(s.mark_insufficient_funds(old_epoch, &[waiting[0].id]).await);
    let batch = store::NewBatch {
        id: Uuid::now_v7(),
        signature: "sig".into(),
        transaction: vec![1],
        blockhash: "h".into(),
        last_valid_block_height: 1,
        lamports: waiting[0].lamports,
        fee_lamports: 5_000,
        payout_ids: vec![waiting[0].id],
        signed_slot: 1,
    };
    stale(s.save_batch(old_epoch, &batch).await);
    s.save_batch(new_epoch, &batch).await.unwrap();
    stale(s.mark_batch_sent(old_epoch, batch.id).await);
    stale(s.confirm_batch(old_epoch, batch.id, 1).await);
    stale(
        s.abandon_batch(old_epoch, batch.id, &store::BatchOutcome::Expired, 3)
            .await,
    );
    let states: (String, String) = sqlx::query_as(
        "SELECT b.state, p.state FROM payout_batches b JOIN payouts p ON p.batch_id = b.id",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(states, ("signed".into(), "batched".into()));
    drop(new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_treasury_cannot_cover_waits_visibly() {
    let Setup {
        db,
        chain,
        treasury,
        start,
        mut farm,
    } = setup(2_000_000).await;
    let v = farm.validator(1).await;
    farm.round(&[(&v, 5_000_000, true)], &[]).await;
    let (payer, _term, _) = leader(&db, &chain, &treasury, None).await;
    let r = payer.cycle().await.unwrap();
    assert_eq!((r.insufficient_funds, r.batches_sent), (1, 0));
    let e = db
        .store
        .earnings(&PublicKey::from(&v.key).to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.payouts[0].state, "insufficient_funds");
    assert_eq!(e.pending_lamports, 5_000_000);
    assert_eq!(chain.send_calls(), 0, "nothing sent");
    chain.airdrop(treasury.pubkey().to_bytes(), 10_000_000);
    let r = payer.cycle().await.unwrap();
    assert_eq!(r.batches_confirmed, 1);
    assert_eq!(chain.received(v.bytes()), 5_000_000);
    audit(&db, &chain, &treasury, start + 10_000_000, &[v]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_blockhash_leads_to_one_new_transaction_not_two_payments() {
    let Setup {
        db,
        chain,
        treasury,
        start,
        mut farm,
    } = setup(10_000_000_000).await;
    let v = farm.validator(1).await;
    farm.round(&[(&v, 3_000_000, true)], &[]).await;
    let (payer, _term, _) = leader(&db, &chain, &treasury, None).await;

    // Sent, never lands.
    chain.set_default_behaviour(SendBehaviour::Drop);
    let r = payer.cycle().await.unwrap();
    assert_eq!((r.batches_sent, r.batches_confirmed), (1, 0));
    // Still valid: the next cycle re-sends the same transaction (dropped
    // again), and builds nothing new.
    let r = payer.cycle().await.unwrap();
    assert_eq!((r.batches_sent, r.batches_abandoned), (0, 0));
    // Past its last valid block height: one new transaction, which lands.
    chain.advance_blocks(VALIDITY + 1);
    chain.set_default_behaviour(SendBehaviour::Land);
    let r = payer.cycle().await.unwrap();
    assert_eq!(
        (r.batches_abandoned, r.batches_sent, r.batches_confirmed),
        (1, 1, 1)
    );
    assert_eq!(chain.received(v.bytes()), 3_000_000);
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM payout_batches ORDER BY created_at")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(states, ["expired", "confirmed"]);
    audit(&db, &chain, &treasury, start, &[v]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_transaction_landing_late_is_found_not_paid_again() {
    let Setup {
        db,
        chain,
        treasury,
        start,
        mut farm,
    } = setup(10_000_000_000).await;
    let v = farm.validator(1).await;
    farm.round(&[(&v, 3_000_000, true)], &[]).await;
    let (first, _t1, _) = leader(&db, &chain, &treasury, None).await;
    chain.set_default_behaviour(SendBehaviour::Hold);
    let r = first.cycle().await.unwrap();
    assert_eq!((r.batches_sent, r.batches_confirmed), (1, 0));
    drop(first);
    // The held copy lands while a new leader takes over.
    assert_eq!(chain.release_held(), 1);
    chain.set_default_behaviour(SendBehaviour::Land);
    let (second, _t2, _) = leader(&db, &chain, &treasury, None).await;
    let r = second.cycle().await.unwrap();
    assert_eq!((r.batches_confirmed, r.batches_sent), (1, 0));
    assert_eq!(chain.received(v.bytes()), 3_000_000);
    audit(&db, &chain, &treasury, start, &[v]).await;
}

/// Leaders die at every step, the chain holds, drops and delays, blocks
/// advance at random; across 50 trials every validator receives exactly
/// what it was paid, and in the end exactly what it earned (minus what is
/// still below the minimum payout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_randomized_crash_trials_pay_exactly_once() {
    crash_trials(Rpc::Tip).await;
}

/// The same trials through a load-balanced pool of a node at the tip and a
/// node some blocks behind with a short history: each RPC request goes to
/// either. A lagging answer must never make a landed transfer look
/// expired (which would pay it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_randomized_trials_through_a_pool_with_a_lagging_node_pay_exactly_once() {
    crash_trials(Rpc::Pool).await;
}

/// Where the trials' payers send their requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    /// One node, at the tip.
    Tip,
    /// The pool of the tip node and a lagging one.
    Pool,
}

async fn crash_trials(rpc: Rpc) {
    let seed = std::env::var("PAYOUT_TRIAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("PAYOUT_TRIAL_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let Setup {
        db,
        chain,
        treasury,
        start,
        mut farm,
    } = setup(1_000_000_000_000).await;
    let mut vals = Vec::new();
    for n in 0..10 {
        vals.push(farm.validator(n).await);
    }
    let mut crashes: HashMap<&'static str, usize> = HashMap::new();
    let mut leaders = 0;
    let mut gaps = 0;
    for trial in 0..50 {
        // Half the pooled trials look statuses up at a dedicated node with
        // full history (the lagging node's history may then be short); the
        // others look them up through the pool too, whose lagging node then
        // keeps history well beyond what a trial leaves unresolved.
        let (url, history) = match rpc {
            Rpc::Tip => (chain.url(), None),
            Rpc::Pool => {
                let dedicated = rng.bool();
                chain.set_lagging(LaggingNode {
                    lag: rng.u64(1..VALIDITY),
                    history: if dedicated {
                        rng.u64(..VALIDITY)
                    } else {
                        rng.u64(6 * VALIDITY..10 * VALIDITY)
                    },
                });
                (chain.pool_url(), dedicated.then(|| chain.url().into()))
            }
        };
        // New earnings for a random subset.
        let mut picked: Vec<(&Val, i64, bool)> = Vec::new();
        for v in &vals {
            if rng.bool() {
                picked.push((v, rng.i64(200_000..2_500_000), true));
            }
        }
        if !picked.is_empty() {
            farm.round(&picked, &[]).await;
        }
        let mut rounds = 0;
        let mut gap = false;
        loop {
            rounds += 1;
            assert!(rounds < 40, "trial {trial} made no progress (seed {seed})");
            let calm = rounds > 6;
            let crash = (!calm && rng.u8(..3) > 0).then(|| CrashPoint::ALL[rng.usize(..4)]);
            chain.set_default_behaviour(SendBehaviour::Land);
            if !calm {
                for _ in 0..rng.usize(..3) {
                    let b = [
                        SendBehaviour::Land,
                        SendBehaviour::Hold,
                        SendBehaviour::Drop,
                    ][rng.usize(..3)];
                    chain.push_behaviour(b);
                }
            }
            if calm || rng.bool() {
                chain.advance_blocks(if calm {
                    VALIDITY + 1
                } else {
                    rng.u64(..VALIDITY)
                });
            }
            if rng.u8(..3) == 0 {
                chain.release_held();
            }
            // Pooled: now and then no leader for a while (never twice in a
            // row), so a landed batch may wait while blocks go on.
            if rpc == Rpc::Pool && !calm && !gap && rng.u8(..4) == 0 {
                gap = true;
                continue;
            }
            gap = false;
            let mut cfg = config(crash);
            cfg.history_rpc_url = history.clone();
            let (payer, _term, _) = leader_on(&db, &url, &treasury, cfg).await;
            leaders += 1;
            match payer.cycle().await {
                Ok(_) => {}
                // The lagging node answered the history check and no longer
                // has an unfinished batch's slot: nothing is paid this time.
                Err(PayoutError::HistoryGap { .. }) => gaps += 1,
                Err(PayoutError::Crashed(p)) => {
                    *crashes.entry(format!("{p:?}").leak()).or_default() += 1;
                }
                Err(e) => panic!("trial {trial}: {e} (seed {seed})"),
            }
            drop(payer);
            // At no moment has anyone received more than was claimed for it.
            for v in &vals {
                let (_, claimed) = ledger(&db, v).await;
                assert!(
                    chain.received(v.bytes()) as i64 <= claimed,
                    "trial {trial}: validator {} paid beyond its claims (seed {seed})",
                    v.id
                );
            }
            if settled_up(&db).await {
                break;
            }
        }
        audit(&db, &chain, &treasury, start, &vals).await;
    }
    // Whatever is left unpaid is below the minimum, and nothing is lost.
    for v in &vals {
        let (earned, claimed) = ledger(&db, v).await;
        assert!(earned - claimed < MIN);
        assert_eq!(chain.received(v.bytes()) as i64, claimed, "seed {seed}");
    }
    eprintln!(
        "{leaders} leaders over 50 trials; crashes: {crashes:?}; history gaps: {gaps}; pool answers (tip, lagging): {:?}",
        chain.pool_answers()
    );
    assert!(
        crashes.len() == 4,
        "every crash point was reached: {crashes:?}"
    );
    if rpc == Rpc::Pool {
        assert!(chain.pool_answers().1 > 100, "the lagging node answered");
    }
}

/// The whole path with real parts: validators check demo sites through a
/// hub, their results are settled and paid by the hub (leading alone, no
/// Redis), and the earnings endpoint shows each payout with its signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_checks_are_paid_and_the_hub_shows_the_earnings() {
    let db = TestDb::new().await.unwrap();
    // Blocks advance by themselves, as on a real chain: equal payouts in
    // successive cycles get different blockhashes, hence transactions.
    // The hub's payer pays once the blockhashes from before it started have
    // expired: about 50 blocks with this validity.
    let chain = SolanaRpc::start(test_support::solana::ChainConfig {
        block_interval: Some(Duration::from_millis(100)),
        blockhash_validity: VALIDITY,
        ..Default::default()
    })
    .await
    .unwrap();
    let key = protocol::keypair::generate();
    let file = std::env::temp_dir().join(format!("treasury-{}.json", Uuid::new_v4()));
    protocol::keypair::write_new(&file, &key).unwrap();
    let treasury = Keypair::new_from_array(key.to_bytes());
    let start = 1_000_000_000_000;
    chain.airdrop(treasury.pubkey().to_bytes(), start);

    let (base, sites_stop) = common::demo_sites(Default::default()).await;
    common::add_site(&db, &format!("{base}/up"), 1, 1_000, None).await;
    let mut s = common::settings(&db);
    s.reward_lamports = 300_000;
    s.payout_treasury_keypair = file.to_string_lossy().into_owned();
    s.payout_rpc_url = chain.url().into();
    s.payout_interval_ms = 300;
    s.task_deadline_ms = 2_000;
    s.payout_settle_delay_ms = 2_000;
    s.payout_confirm_timeout_ms = 500;
    let hub = common::TestHub::start(s).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let regions = ["eu-west", "us-east", "ap-south"];
    let vals: Vec<_> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| common::spawn_validator(&[hub.ws_url()], 60 + i as u8, r, &stop))
        .collect();

    for i in 0..3u8 {
        let k = PublicKey::from(&common::key(60 + i));
        let e = common::eventually(40, "a paid payout", || async {
            let e = validator::earnings::fetch(&hub.ws_url(), &k).await.ok()?;
            (e.paid_lamports > 0).then_some(e)
        })
        .await;
        let p = e.payouts.iter().find(|p| p.state == "paid").unwrap();
        assert!(p.lamports >= MIN);
        assert!(p.signature.is_some());
        assert!(e.earned_lamports >= e.paid_lamports);
        assert_eq!(e.agreement.disagreed, 0, "every check of /up agrees");
        assert!(e.agreement.rate == Some(1.0));
    }
    // Unknown and malformed keys get their documented errors.
    let other = PublicKey::from(&common::key(99));
    match validator::earnings::fetch(&hub.ws_url(), &other).await {
        Err(validator::earnings::EarningsError::Api { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (404, "unknown_validator"))
        }
        r => panic!("{r:?}"),
    }
    let r = reqwest::get(format!("http://{}/v1/validators/nope/earnings", hub.addr))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    stop.cancel();
    for (_, task) in vals {
        let _ = task.await;
    }
    hub.stop().await;
    sites_stop.cancel();
    let _ = std::fs::remove_file(&file);
    // A hub stopped mid-cycle may leave a transaction unresolved; the next
    // leader resolves it. Then every payout that landed is accounted for.
    let (next, _term, _) = leader(&db, &chain, &treasury, None).await;
    next.cycle().await.unwrap();
    let vals: Vec<Val> = {
        let mut out = Vec::new();
        for i in 0..3u8 {
            let key = common::key(60 + i);
            let id: store::ValidatorId =
                sqlx::query_scalar("SELECT id FROM validators WHERE public_key = $1")
                    .bind(PublicKey::from(&key).to_string())
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
            out.push(Val {
                id,
                key,
                account: None,
            });
        }
        out
    };
    audit(&db, &chain, &treasury, start, &vals).await;
}

/// A transfer that keeps failing to land is marked `failed` after the
/// configured attempts, shows in the earnings view, and is paid once an
/// operator queues it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_that_keeps_failing_is_marked_and_can_be_retried() {
    let Setup {
        db,
        chain,
        treasury,
        start,
        mut farm,
    } = setup(10_000_000_000).await;
    let v = farm.validator(1).await;
    farm.round(&[(&v, 2_000_000, true)], &[]).await;
    let mut cfg = config(None);
    cfg.max_attempts = 2;
    let (payer, _term, epoch) = leader_with(&db, &chain, &treasury, cfg).await;
    chain.set_default_behaviour(SendBehaviour::Drop);
    for _ in 0..3 {
        payer.cycle().await.unwrap();
        chain.advance_blocks(VALIDITY + 1);
    }
    let r = payer.cycle().await.unwrap();
    assert_eq!(r.batches_sent, 0, "given up after two transactions");
    let e = db
        .store
        .earnings(&PublicKey::from(&v.key).to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.failed_lamports, e.pending_lamports, e.paid_lamports),
        (2_000_000, 0, 0)
    );
    assert_eq!(e.payouts[0].state, "failed");
    assert_eq!(e.payouts[0].attempts, 2);
    assert!(e.payouts[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("expired"));
    assert_eq!(db.store.payout_backlog().await.unwrap(), (0, 0, 1));

    chain.set_default_behaviour(SendBehaviour::Land);
    assert_eq!(db.store.retry_failed_payouts(epoch).await.unwrap(), 1);
    let r = payer.cycle().await.unwrap();
    assert_eq!(r.batches_confirmed, 1);
    assert_eq!(chain.received(v.bytes()), 2_000_000);
    audit(&db, &chain, &treasury, start, &[v]).await;
}

/// The fence under concurrency: a payout write in flight holds back the
/// next epoch until it commits (so the new leader sees it), and once the
/// new epoch exists the old one's writes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_flight_holds_back_the_next_epoch() {
    let db = TestDb::new().await.unwrap();
    let farm = Farm::new(&db).await;
    let v = farm.validator(1).await;
    let role = hub::cluster::leader::PAYOUT_ROLE;
    let e1 = db.store.next_epoch(role).await.unwrap();
    let mut tx = db.pool().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO validator_ledger (validator_id, earned_lamports, epoch) VALUES ($1, 5, $2)",
    )
    .bind(v.id)
    .bind(e1)
    .execute(&mut *tx)
    .await
    .unwrap();
    let store = db.store.clone();
    let next = tokio::spawn(async move { store.next_epoch(role).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !next.is_finished(),
        "the next epoch waits for the write in flight"
    );
    tx.commit().await.unwrap();
    let e2 = next.await.unwrap().unwrap();
    assert_eq!(e2, e1 + 1);
    assert_eq!(
        ledger(&db, &v).await,
        (5, 0),
        "the write committed under e1"
    );
    let refused = sqlx::query(
        "UPDATE validator_ledger SET earned_lamports = 6, epoch = $2 WHERE validator_id = $1",
    )
    .bind(v.id)
    .bind(e1)
    .execute(db.pool())
    .await
    .unwrap_err();
    let code = refused
        .as_database_error()
        .and_then(|d| d.code().map(|c| c.into_owned()));
    assert_eq!(code.as_deref(), Some("UP409"), "{refused}");
    assert_eq!(ledger(&db, &v).await, (5, 0));
}

/// A transfer that always fails (to a sysvar, which the runtime keeps
/// read-only) fails its whole batch once; then every payout of that batch
/// rides alone, so the others are paid and only the culprit ends `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_that_always_fails_is_found_alone_and_its_batch_mates_are_paid() {
    let Setup {
        db,
        chain,
        treasury,
        start,
        mut farm,
    } = setup(10_000_000_000).await;
    let rent = solana_pubkey::Pubkey::from_str_const("SysvarRent111111111111111111111111111111111");
    let culprit = farm.account(rent.to_bytes()).await;
    let mut vals = vec![
        farm.validator(1).await,
        farm.validator(2).await,
        farm.validator(3).await,
    ];
    let t: Vec<(&Val, i64, bool)> = vals
        .iter()
        .chain([&culprit])
        .map(|v| (v, 2_000_000, true))
        .collect();
    farm.round(&t, &[]).await;
    let mut cfg = config(None);
    cfg.max_transfers = 4;
    cfg.max_attempts = 2;
    let (payer, _term, _) = leader_with(&db, &chain, &treasury, cfg).await;
    for _ in 0..5 {
        payer.cycle().await.unwrap();
        // A new blockhash: the culprit's retry is a new transaction.
        chain.advance_blocks(1);
    }
    for v in &vals {
        assert_eq!(chain.received(v.bytes()), 2_000_000, "validator {}", v.id);
    }
    let culprit_row: (String, i32, bool) =
        sqlx::query_as("SELECT state, attempts, solo FROM payouts WHERE validator_id = $1")
            .bind(culprit.id)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(culprit_row, ("failed".into(), 2, true));
    // One batch of four failed, then the culprit alone, twice.
    let failed: Vec<i32> = sqlx::query_scalar(
        "SELECT cardinality(payout_ids) FROM payout_batches WHERE state = 'failed' ORDER BY created_at",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(failed, [4, 1, 1]);
    assert_eq!(db.store.payout_backlog().await.unwrap(), (0, 0, 1));
    vals.push(culprit);
    audit(&db, &chain, &treasury, start, &vals).await;
}

/// The history RPC must keep every slot an unfinished batch may have landed
/// in. A lagging node with a short history, used for status look-ups,
/// forgets a batch that landed while no leader was there: payouts stop (an
/// error, a metric) rather than take "unknown" for "expired" and pay again.
/// Pointed at a node with the history, the next leader finds it confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_rpc_that_forgot_an_unfinished_batch_stops_payouts() {
    let Setup {
        db,
        chain,
        treasury,
        start,
        mut farm,
    } = setup(10_000_000_000).await;
    chain.set_lagging(LaggingNode { lag: 2, history: 5 });
    let v = farm.validator(1).await;
    farm.round(&[(&v, 3_000_000, true)], &[]).await;
    let mut cfg = config(Some(CrashPoint::BeforeConfirm));
    cfg.history_rpc_url = Some(chain.lagging_url().into());
    let (first, _t1, _) = leader_with(&db, &chain, &treasury, cfg).await;
    assert!(matches!(
        first.cycle().await,
        Err(PayoutError::Crashed(CrashPoint::BeforeConfirm))
    ));
    drop(first);
    assert_eq!(chain.received(v.bytes()), 3_000_000, "it landed");
    // No leader while the chain moves past the blockhash and the lagging
    // node's history.
    chain.advance_blocks(VALIDITY + 10);

    let metrics = std::sync::Arc::new(hub::metrics::Metrics::new("test"));
    let mut cfg = config(None);
    cfg.history_rpc_url = Some(chain.lagging_url().into());
    let (second, _t2, _) = leader_full(&db, &chain.url(), &treasury, cfg, metrics.clone()).await;
    for _ in 0..3 {
        match second.cycle().await {
            Err(PayoutError::HistoryGap { needed, kept, .. }) => assert!(kept > needed),
            r => panic!("{r:?}"),
        }
        assert_eq!(metrics.payout_history_gap.get(), 1);
    }
    assert!(matches!(
        second.check_history().await,
        Err(PayoutError::HistoryGap { .. })
    ));
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM payout_batches")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(states, ["sent"], "not expired, nothing new");
    assert_eq!(chain.received(v.bytes()), 3_000_000);
    drop(second);

    let mut cfg = config(None);
    cfg.history_rpc_url = Some(chain.url().into());
    let (third, _t3, _) = leader_full(&db, &chain.url(), &treasury, cfg, metrics.clone()).await;
    let r = third.cycle().await.unwrap();
    assert_eq!((r.batches_confirmed, r.batches_sent), (1, 0));
    assert_eq!(metrics.payout_history_gap.get(), 0);
    audit(&db, &chain, &treasury, start, &[v]).await;
}

/// With a daily spend cap, batches past it wait (a metric says so) until
/// the next UTC day; what was spent counts transfers and fees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_past_the_daily_spend_cap_wait_for_the_next_day() {
    let Setup {
        db,
        chain,
        treasury,
        start,
        mut farm,
    } = setup(10_000_000_000).await;
    let mut vals = Vec::new();
    for n in 0..4 {
        vals.push(farm.validator(n).await);
    }
    let t: Vec<(&Val, i64, bool)> = vals.iter().map(|v| (v, 2_000_000, true)).collect();
    farm.round(&t, &[]).await;
    let metrics = std::sync::Arc::new(hub::metrics::Metrics::new("test"));
    let mut cfg = config(None);
    cfg.max_transfers = 2;
    cfg.daily_cap_lamports = 4_500_000;
    let (payer, _term, _) = leader_full(&db, &chain.url(), &treasury, cfg, metrics.clone()).await;
    let r = payer.cycle().await.unwrap();
    assert_eq!((r.batches_confirmed, r.capped), (1, 2));
    assert_eq!(metrics.payout_daily_cap_reached.get(), 1);
    assert_eq!(
        metrics.payout_spent_today_lamports.get(),
        0,
        "before the batch"
    );
    let r = payer.cycle().await.unwrap();
    assert_eq!((r.batches_sent, r.capped), (0, 2));
    assert_eq!(metrics.payout_spent_today_lamports.get(), 4_005_000);
    let paid: u64 = vals.iter().map(|v| chain.received(v.bytes())).sum();
    assert_eq!(paid, 4_000_000);
    // The next day (moved the other way: today's batches become yesterday's).
    sqlx::query("UPDATE payout_batches SET created_at = created_at - interval '1 day'")
        .execute(db.pool())
        .await
        .unwrap();
    let r = payer.cycle().await.unwrap();
    assert_eq!((r.batches_confirmed, r.capped), (1, 0));
    assert_eq!(metrics.payout_daily_cap_reached.get(), 0);
    for v in &vals {
        assert_eq!(chain.received(v.bytes()), 2_000_000);
    }
    audit(&db, &chain, &treasury, start, &vals).await;
}

/// A compute-unit price adds a priority fee (price times a small unit
/// limit), recorded with the batch and charged by the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_fee_is_set_recorded_and_paid() {
    let Setup {
        db,
        chain,
        treasury,
        start,
        mut farm,
    } = setup(10_000_000_000).await;
    let v = farm.validator(1).await;
    farm.round(&[(&v, 2_000_000, true)], &[]).await;
    let mut cfg = config(None);
    cfg.priority_fee_micro_lamports = 1_000_000; // 1 lamport per unit
    let (payer, _term, _) = leader_with(&db, &chain, &treasury, cfg).await;
    let r = payer.cycle().await.unwrap();
    assert_eq!(r.batches_confirmed, 1);
    // Two compute-budget instructions and one transfer, 450 units each.
    let want = 5_000 + 3 * 450;
    assert_eq!(chain.landed()[0].fee, want);
    let recorded: i64 = sqlx::query_scalar("SELECT fee_lamports FROM payout_batches")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(recorded, want as i64);
    audit(&db, &chain, &treasury, start, &[v]).await;
}

/// An RPC URL carries a provider's key in its path, query or userinfo: it
/// appears in no error the payer returns (and so in no log line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_errors_do_not_carry_the_rpc_url() {
    let Setup {
        db,
        chain,
        treasury,
        mut farm,
        ..
    } = setup(10_000_000_000).await;
    let v = farm.validator(1).await;
    farm.round(&[(&v, 2_000_000, true)], &[]).await;
    let url = chain.url().replace("http://", "http://user:SECRETPW@") + "/?api-key=SECRETKEY";
    let (payer, _term, _) = leader_on(&db, &url, &treasury, config(None)).await;
    chain.set_unavailable(true);
    let e = payer.cycle().await.unwrap_err();
    assert!(matches!(e, PayoutError::Rpc(_)), "{e:?}");
    for text in [format!("{e}"), format!("{e:?}"), format!("{e:#}")] {
        assert!(!text.contains("SECRET"), "{text}");
    }
    let shown = hub::payouts::RpcUrl::new(url).to_string();
    assert_eq!(shown, format!("{}/…", chain.url()));
}
