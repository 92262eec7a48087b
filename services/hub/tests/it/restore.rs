//! A ledger restored from an older backup never pays twice (issue 14): pay,
//! back up with `pg_dump` as the README says, pay more (one transaction
//! still in flight when the payers stop), restore with `pg_restore`, and the
//! next payer reconciles the ledger with the treasury's on-chain transfers,
//! and waits out the blockhashes of payers before it, before paying
//! anything. Real PostgreSQL tools, the litesvm chain, the production payer.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use common::payouts::*;
use hub::payouts::{CrashPoint, PayoutError};
use sqlx::{Connection, Executor};
use test_support::solana::SendBehaviour;
use test_support::TestDb;

/// A PostgreSQL client tool: from `UPTIME_TEST_PG_BINDIR` (scripts/test.sh
/// sets it to the test server's own binaries, so versions match), else
/// from the PATH.
fn pg_tool(name: &str) -> PathBuf {
    match std::env::var_os("UPTIME_TEST_PG_BINDIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => PathBuf::from(name),
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The database's URL as libpq reads it: sqlx adds query parameters of its
/// own (`statement-cache-capacity`) that pg_dump refuses.
fn libpq_url(db: &TestDb) -> String {
    let mut url = url::Url::parse(&db.url).unwrap();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "statement-cache-capacity")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(kept);
    url.to_string()
}

/// `pg_dump --format=custom`, the README's backup.
fn back_up(db: &TestDb, file: &std::path::Path) {
    run(Command::new(pg_tool("pg_dump"))
        .arg("--format=custom")
        .arg("--file")
        .arg(file)
        .arg(libpq_url(db)));
}

/// The README's restore: the database dropped and made again empty, then
/// `pg_restore --exit-on-error --single-transaction --no-owner`.
/// (`pg_restore --clean` into the existing database fails on the tick
/// partitions' inherited constraints.)
async fn restore(db: &TestDb, file: &std::path::Path) {
    let admin = std::env::var(test_support::TEST_DB_ENV).unwrap();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    // `db.name` is a generated identifier (test_<uuid>).
    for sql in [
        format!("DROP DATABASE {} WITH (FORCE)", db.name),
        format!("CREATE DATABASE {}", db.name),
    ] {
        conn.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
    }
    run(Command::new(pg_tool("pg_restore"))
        .args([
            "--exit-on-error",
            "--single-transaction",
            "--no-owner",
            "--dbname",
        ])
        .arg(libpq_url(db))
        .arg(file));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_restored_from_an_older_backup_pays_nothing_twice() {
    let Setup {
        db,
        chain,
        treasury,
        start,
        mut farm,
    } = setup(1_000_000_000_000).await;
    let dump = std::env::temp_dir().join(format!("uptime-restore-{}.dump", db.name));
    let v: Vec<Val> = {
        let mut out = Vec::new();
        for n in 0..4 {
            out.push(farm.validator(n).await);
        }
        out
    };
    let m = MIN;

    // Paid before the backup: 2 MIN each.
    farm.round(
        &[
            (&v[0], 2 * m, true),
            (&v[1], 2 * m, true),
            (&v[2], 2 * m, true),
            (&v[3], 2 * m, true),
        ],
        &[],
    )
    .await;
    let (a, _t, _) = leader(&db, &chain, &treasury, None).await;
    a.cycle().await.unwrap();
    for x in &v {
        assert_eq!(chain.received(x.bytes()) as i64, 2 * m);
    }
    // v3: 3 MIN in a transaction sent and in flight at the backup (held,
    // re-sent by every cycle, held again).
    chain.set_default_behaviour(SendBehaviour::Hold);
    farm.round(&[(&v[3], 3 * m, true)], &[]).await;
    let (a, _t, _) = leader(&db, &chain, &treasury, None).await;
    a.cycle().await.unwrap();
    // v1 then v2: 4 MIN each claimed, not yet in a transaction (the payer
    // died after claiming, twice).
    for x in [&v[1], &v[2]] {
        farm.round(&[(x, 4 * m, true)], &[]).await;
        let (a, _t, _) = leader(&db, &chain, &treasury, Some(CrashPoint::AfterClaim)).await;
        assert!(matches!(a.cycle().await, Err(PayoutError::Crashed(_))));
    }
    // v0: 3 MIN in a closed round not yet settled.
    farm.round(&[(&v[0], 3 * m, true)], &[]).await;
    let open = || async {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT state, lamports FROM payouts WHERE state <> 'paid' ORDER BY created_at, id",
        )
        .fetch_all(db.pool())
        .await
        .unwrap()
    };
    let at_backup = [
        ("batched".to_string(), 3 * m),
        ("claimed".to_string(), 4 * m),
        ("claimed".to_string(), 4 * m),
    ];
    assert_eq!(open().await, at_backup);

    back_up(&db, &dump);

    // After the backup the payers go on, one transfer per transaction: v3's
    // transaction expires unseen and its payout is paid by a new one; v1's
    // claim is sent but still in flight when the payers stop; v2's claim
    // is paid; v0 is paid the unsettled round and a new one (5 MIN, a
    // round the restore will lose) together.
    chain.advance_blocks(VALIDITY + 1);
    chain.set_default_behaviour(SendBehaviour::Land);
    farm.round(&[(&v[0], 5 * m, true)], &[]).await;
    let mut cfg = config(None);
    cfg.max_transfers = 1;
    let (a, _t, _) = leader_with(&db, &chain, &treasury, cfg).await;
    for b in [
        SendBehaviour::Land,
        SendBehaviour::Hold,
        SendBehaviour::Land,
        SendBehaviour::Land,
    ] {
        chain.push_behaviour(b);
    }
    let r = a.cycle().await.unwrap();
    assert_eq!((r.batches_sent, r.batches_confirmed), (4, 3), "{r:?}");
    drop(a);
    assert_eq!(chain.received(v[0].bytes()) as i64, 10 * m);
    assert_eq!(chain.received(v[1].bytes()) as i64, 2 * m);
    assert_eq!(chain.received(v[2].bytes()) as i64, 6 * m);
    assert_eq!(chain.received(v[3].bytes()) as i64, 5 * m);

    restore(&db, &dump).await;
    let _ = std::fs::remove_file(&dump);
    assert_eq!(
        open().await,
        at_backup,
        "the restored ledger is the backup's"
    );

    // The next payer starts as a hub's does: it arms its start fence.
    let (b, _t, _) = leader(&db, &chain, &treasury, None).await;
    b.arm_start_fence().await.unwrap();
    let sends = chain.send_calls();
    let r = b.cycle().await.unwrap();
    assert!(r.held_back, "a payer that just started waits: {r:?}");
    assert_eq!(r.found_batches, 3, "{r:?}");
    assert_eq!((r.payouts_claimed, r.batches_sent), (0, 0));
    // The transaction in flight lands while the new payer waits (without
    // the wait, v1's claim would have been paid again).
    assert_eq!(chain.release_held(), 1);
    let r = b.cycle().await.unwrap();
    assert!(r.held_back);
    assert_eq!(r.found_batches, 1, "{r:?}");
    assert_eq!(chain.send_calls(), sends, "nothing sent while waiting");
    // Once the blockhashes of the payers before it have expired, it pays:
    // nothing, since everything the restored ledger owes was paid.
    chain.advance_blocks(VALIDITY + 40);
    let r = b.cycle().await.unwrap();
    assert!(!r.held_back, "{r:?}");
    assert_eq!(
        (r.found_batches, r.payouts_claimed, r.batches_sent),
        (0, 0, 0),
        "{r:?}"
    );
    assert_eq!(chain.send_calls(), sends, "nothing paid twice");
    for (x, want) in v.iter().zip([10, 6, 6, 5]) {
        assert_eq!(chain.received(x.bytes()) as i64, want * m);
        assert_eq!(
            paid(&db, x).await,
            want * m,
            "the ledger knows every payment"
        );
    }

    // New earnings after the restore are paid in full: the earnings of
    // the round the restore lost (v0's 5 MIN) were paid once, and are not
    // taken back.
    farm.round(
        &[
            (&v[0], 6 * m, true),
            (&v[1], 2 * m, true),
            (&v[2], 2 * m, true),
            (&v[3], 2 * m, true),
        ],
        &[],
    )
    .await;
    let r = b.cycle().await.unwrap();
    assert_eq!(r.payouts_claimed, 4, "{r:?}");
    for (x, want) in v.iter().zip([16, 8, 8, 7]) {
        assert_eq!(
            chain.received(x.bytes()) as i64,
            want * m,
            "validator {} received everything it earned, once",
            x.id
        );
        let (earned, claimed) = ledger(&db, x).await;
        assert_eq!(
            (earned, claimed),
            (want * m, want * m),
            "validator {}",
            x.id
        );
    }
    assert!(settled_up(&db).await);
    audit(&db, &chain, &treasury, start, &v).await;
    let found: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payout_batches WHERE found_on_chain_at IS NOT NULL",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(found, 4, "four transactions found on chain");
}

/// A batch in flight at the backup that landed after it, then a second
/// payout of the same amount to the same validator: the restored ledger
/// must credit the landed batch to its own payout (found by recovering it)
/// and the unknown transaction to the second one, not the other way round
/// (which would leave the second claim unrecorded and its rounds paid again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_flight_at_the_backup_and_an_equal_payout_after_it_are_told_apart() {
    let Setup {
        db,
        chain,
        treasury,
        start,
        mut farm,
    } = setup(1_000_000_000_000).await;
    let dump = std::env::temp_dir().join(format!("uptime-restore-{}.dump", db.name));
    let v = farm.validator(0).await;
    let m = MIN;
    // 2 MIN in a transaction held in flight at the backup, and 2 MIN more
    // in a closed round not settled yet.
    chain.set_default_behaviour(SendBehaviour::Hold);
    farm.round(&[(&v, 2 * m, true)], &[]).await;
    let (a, _t, _) = leader(&db, &chain, &treasury, None).await;
    a.cycle().await.unwrap();
    farm.round(&[(&v, 2 * m, true)], &[]).await;
    back_up(&db, &dump);

    // The held transaction lands; the old payer confirms it, settles the
    // round and pays it: an equal amount in a second transaction.
    assert_eq!(chain.release_held(), 1);
    chain.set_default_behaviour(SendBehaviour::Land);
    // (A new blockhash: the same transfer over the same one would be the
    // same transaction.)
    chain.advance_blocks(1);
    let (a, _t, _) = leader(&db, &chain, &treasury, None).await;
    let r = a.cycle().await.unwrap();
    assert_eq!((r.batches_confirmed, r.payouts_claimed), (2, 1), "{r:?}");
    assert_eq!(chain.received(v.bytes()) as i64, 4 * m);

    restore(&db, &dump).await;
    let _ = std::fs::remove_file(&dump);
    let (b, _t, _) = leader(&db, &chain, &treasury, None).await;
    b.arm_start_fence().await.unwrap();
    let r = b.cycle().await.unwrap();
    assert!(r.held_back, "{r:?}");
    assert_eq!((r.batches_confirmed, r.found_batches), (1, 1), "{r:?}");
    chain.advance_blocks(VALIDITY + 40);
    let r = b.cycle().await.unwrap();
    assert!(!r.held_back, "{r:?}");
    assert_eq!(
        (r.payouts_claimed, r.batches_sent),
        (0, 0),
        "nothing paid twice: {r:?}"
    );
    assert_eq!(chain.received(v.bytes()) as i64, 4 * m);
    assert_eq!(ledger(&db, &v).await, (4 * m, 4 * m));
    assert_eq!(paid(&db, &v).await, 4 * m);
    audit(&db, &chain, &treasury, start, &[v]).await;
}
