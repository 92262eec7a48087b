//! Retention: daily tick partitions made ahead with no default partition,
//! old ones detached and dropped while ticks are written (past a long
//! read, after an interrupted detach), and old rounds deleted once done.
//!
//! The writers' bound: while retention runs, no tick insert fails or takes
//! longer than [`WRITER_BOUND`] (500 ms). In the long-read test retention's
//! lock timeout is 1 s and the read lasts about 2.5 s, so a writer queued
//! behind a lock that retention waits for would take longer than that.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use store::{ErrorKind, OpenedRound, RoundId, Store, StoreError, ValidatorId, WebsiteId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{db, open_round, past_ms, store_ticks, tick, validator, website};

const DAY_MS: i64 = 86_400_000;
const KEEP_DAYS: i32 = 30;
const WRITER_BOUND: Duration = Duration::from_millis(500);

/// Start (Unix ms) of the UTC month `months_back` months before this one.
/// Two months back is at least 59 days ago, and before every partition the
/// migrations made (they start at last month).
async fn month_start(s: &Store, months_back: i32) -> i64 {
    sqlx::query_scalar(
        "SELECT (extract(epoch FROM (date_trunc('month', now() AT TIME ZONE 'UTC') \
                 - make_interval(months => $1)) AT TIME ZONE 'UTC') * 1000)::int8",
    )
    .bind(months_back)
    .fetch_one(s.pool())
    .await
    .unwrap()
}

/// Makes a monthly partition `ticks_YYYY_MM` for the month `months_back`
/// months ago, as the first migration made them; returns its name and start.
async fn legacy_month(s: &Store, months_back: i32) -> (String, i64) {
    let start = month_start(s, months_back).await;
    let (name, made): (String, i32) = sqlx::query_as(
        "SELECT 'ticks_' || to_char(m, 'YYYY_MM'),
                create_tick_partition(m AT TIME ZONE 'UTC', (m + interval '1 month') AT TIME ZONE 'UTC',
                                      'ticks_' || to_char(m, 'YYYY_MM'))
           FROM (SELECT to_timestamp($1 / 1000.0) AT TIME ZONE 'UTC' AS m) x",
    )
    .bind(start)
    .fetch_one(s.pool())
    .await
    .unwrap();
    assert_eq!(made, 1, "{name} was not there");
    (name, start)
}

/// Makes the daily partition of the day starting at `day_ms`; its name.
async fn old_day(s: &Store, day_ms: i64) -> String {
    assert_eq!(
        s.ensure_partitions_between(day_ms, day_ms).await.unwrap(),
        1
    );
    partition_at(s, day_ms).await.expect("just made")
}

/// The partition whose range holds `at_ms`.
async fn partition_at(s: &Store, at_ms: i64) -> Option<String> {
    sqlx::query_scalar(
        "SELECT name FROM tick_partitions \
          WHERE lower_bound <= to_timestamp($1 / 1000.0) AND upper_bound > to_timestamp($1 / 1000.0)",
    )
    .bind(at_ms)
    .fetch_optional(s.pool())
    .await
    .unwrap()
}

async fn table_exists(s: &Store, name: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(name)
        .fetch_one(s.pool())
        .await
        .unwrap()
}

async fn pending_detach(s: &Store) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM tick_partitions WHERE detach_pending")
        .fetch_all(s.pool())
        .await
        .unwrap()
}

/// A round that is not in `rounds` (ticks have no foreign key), scheduled
/// at `at_ms`.
fn round_at(website_id: WebsiteId, at_ms: i64) -> OpenedRound {
    OpenedRound {
        round_id: RoundId(0),
        website_id,
        scheduled_at_ms: at_ms,
    }
}

/// Ticks scheduled before `KEEP_DAYS` ago.
async fn old_ticks(s: &Store) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM ticks WHERE scheduled_at < now() - make_interval(days => $1)",
    )
    .bind(KEEP_DAYS)
    .fetch_one(s.pool())
    .await
    .unwrap()
}

/// A tick writer: inserts one tick scheduled now after another until
/// stopped, panicking on a failed insert; reports how many it stored and
/// the slowest insert.
struct Ingest {
    stop: Arc<AtomicBool>,
    done: watch::Receiver<usize>,
    task: JoinHandle<(usize, Duration)>,
}

impl Ingest {
    fn start(s: &Store, website_id: WebsiteId, v: ValidatorId) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (count, done) = watch::channel(0);
        let (s, stop2) = (s.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            while !stop2.load(Ordering::Relaxed) {
                let t = tick(&round_at(website_id, protocol::now_ms()), v, true);
                let started = Instant::now();
                let stored = s.insert_ticks("h1", &[t]).await.expect("a tick insert");
                slowest = slowest.max(started.elapsed());
                assert_eq!(stored.len(), 1);
                count.send_modify(|n| *n += 1);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (*count.borrow(), slowest)
        });
        Self { stop, done, task }
    }

    /// Waits until `n` more ticks are stored.
    async fn more(&mut self, n: usize) {
        let want = *self.done.borrow() + n;
        tokio::time::timeout(Duration::from_secs(10), self.done.wait_for(|c| *c >= want))
            .await
            .expect("the writer goes on")
            .unwrap();
    }

    /// Stops it; checks it stored ticks all along within `WRITER_BOUND`.
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let (n, slowest) = self.task.await.expect("no insert failed");
        eprintln!("{n} ticks written, the slowest insert in {slowest:?}");
        assert!(n > 0);
        assert!(
            slowest < WRITER_BOUND,
            "the slowest insert took {slowest:?} (bound {WRITER_BOUND:?})"
        );
        n
    }
}

#[tokio::test]
async fn migrate_leaves_no_default_partition_and_daily_partitions_ahead() {
    let db = db().await;
    let s = &db.store;
    let defaults: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = 'ticks'::regclass AND partdefid <> 0",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(defaults, 0, "no default partition");
    assert!(!table_exists(s, "ticks_default").await);
    // The migration made today and 7 days ahead (less what passed of today).
    assert!(s.tick_partitions_ahead().await.unwrap() >= 6);
    s.ensure_partitions(7).await.unwrap();
    assert_eq!(s.ensure_partitions(7).await.unwrap(), 0, "all there");
    assert_eq!(s.tick_partitions_ahead().await.unwrap(), 7);
    assert_eq!(
        s.ensure_partitions(10).await.unwrap(),
        3,
        "only the missing days"
    );
    assert_eq!(s.tick_partitions_ahead().await.unwrap(), 10);
    // Every partition from today on is one UTC day, named for it.
    let ahead: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT name, 'ticks_' || to_char(lower_bound AT TIME ZONE 'UTC', 'YYYY_MM_DD'),
                upper_bound - lower_bound = interval '1 day'
           FROM tick_partitions WHERE upper_bound > now() ORDER BY lower_bound",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(ahead.len(), 11, "today and 10 days ahead");
    for (name, by_day, one_day) in &ahead {
        assert_eq!(name, by_day);
        assert!(one_day, "{name}");
    }
    // A tick of today goes in its day's partition.
    let w = website(s, 1).await;
    let v = validator(s, "k1", "eu").await;
    let now = protocol::now_ms();
    store_ticks(s, &[tick(&round_at(w.id, now), v, true)]).await;
    let part: String = sqlx::query_scalar("SELECT tableoid::regclass::text FROM ticks")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(part, ahead[0].0);
}

#[tokio::test]
async fn a_tick_with_no_partition_is_a_transient_error_of_its_own() {
    let db = db().await;
    let s = &db.store;
    let w = website(s, 1).await;
    let v = validator(s, "k1", "eu").await;
    let far = (protocol::now_ms() / DAY_MS + 400) * DAY_MS + 60_000;
    let batch = [
        tick(&round_at(w.id, past_ms()), v, true),
        tick(&round_at(w.id, far), v, true),
    ];
    let e = s.insert_ticks("h1", &batch).await.unwrap_err();
    assert!(matches!(e, StoreError::NoTickPartition(_)), "{e:?}");
    assert_eq!(
        e.kind(),
        ErrorKind::Transient,
        "not the rows' fault: retried, never refused"
    );
    assert!(e.to_string().contains("no tick partition"), "{e}");
    // A CHECK violation is still the rows' fault.
    let mut bad = tick(&round_at(w.id, past_ms()), v, true);
    bad.latency_ms = -1;
    let e = s.insert_ticks("h1", &[bad]).await.unwrap_err();
    assert!(matches!(e, StoreError::Db(_)), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Data);
    // Making the partition mends it.
    assert_eq!(s.ensure_partitions_between(far, far).await.unwrap(), 1);
    store_ticks(s, &batch).await;
    // A lock timeout is transient too.
    assert_eq!(store::sqlstate_kind("55P03"), ErrorKind::Transient);
}

#[tokio::test]
async fn old_partitions_are_dropped_while_ticks_are_written() {
    let db = db().await;
    let s = &db.store;
    let w = website(s, 1).await;
    let v = validator(s, "k1", "eu").await;
    // A legacy monthly partition three months back, and daily ones two
    // months back (at least 54 days ago), each with a tick.
    let (month, month_ms) = legacy_month(s, 3).await;
    let two_back = month_start(s, 2).await;
    let mut old = vec![month];
    for d in 0..3 {
        old.push(old_day(s, two_back + d * DAY_MS).await);
    }
    for at in [month_ms, two_back, two_back + DAY_MS, two_back + 2 * DAY_MS] {
        store_ticks(s, &[tick(&round_at(w.id, at + 3_600_000), v, true)]).await;
    }
    assert_eq!(old_ticks(s).await, 4);
    let ahead = s.tick_partitions_ahead().await.unwrap();

    let mut ingest = Ingest::start(s, w.id, v);
    ingest.more(5).await;
    let dropped = s
        .drop_old_tick_partitions(KEEP_DAYS, Duration::from_secs(1), 3)
        .await
        .unwrap();
    ingest.more(5).await;
    let written = ingest.finish().await;

    for name in &old {
        assert!(dropped.contains(name), "{name} in {dropped:?}");
        assert!(!table_exists(s, name).await, "{name} dropped");
    }
    assert_eq!(old_ticks(s).await, 0);
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tick_partitions WHERE upper_bound <= now() - make_interval(days => $1)",
    )
    .bind(KEEP_DAYS)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(left, 0, "no partition older than the retention is left");
    assert_eq!(s.tick_partitions_ahead().await.unwrap(), ahead);
    let recent: i64 = sqlx::query_scalar("SELECT count(*) FROM ticks")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(
        recent as usize, written,
        "every tick written meanwhile is there"
    );
    // Nothing left to do.
    assert!(s
        .drop_old_tick_partitions(KEEP_DAYS, Duration::from_secs(1), 3)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_long_read_makes_the_detach_time_out_and_retry_without_holding_up_writers() {
    let db = db().await;
    let s = &db.store;
    let w = website(s, 1).await;
    let v = validator(s, "k1", "eu").await;
    let day = month_start(s, 2).await;
    let old = old_day(s, day).await;
    store_ticks(s, &[tick(&round_at(w.id, day + 60_000), v, true)]).await;
    let mut ingest = Ingest::start(s, w.id, v);

    // A read of the old partition, left open.
    let mut reader = db.pool().begin().await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ticks WHERE scheduled_at < now() - interval '40 days'",
    )
    .fetch_one(&mut *reader)
    .await
    .unwrap();
    assert_eq!(n, 1);
    let held = Instant::now();

    // Without retries the detach gives up after its lock timeout, half-way:
    // the partition is marked "detach pending" and stays.
    let e = s
        .drop_old_tick_partitions(KEEP_DAYS, Duration::from_secs(1), 0)
        .await
        .unwrap_err();
    assert!(e.is_lock_timeout(), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Transient);
    assert_eq!(pending_detach(s).await, std::slice::from_ref(&old));

    // With retries it keeps trying while the read goes on; writers go on.
    let retention = {
        let s = s.clone();
        tokio::spawn(async move {
            s.drop_old_tick_partitions(KEEP_DAYS, Duration::from_secs(1), 30)
                .await
        })
    };
    ingest.more(5).await;
    tokio::time::sleep(Duration::from_millis(2_500).saturating_sub(held.elapsed())).await;
    assert!(!retention.is_finished(), "the detach waits for the read");
    assert!(table_exists(s, &old).await);
    ingest.more(5).await;

    reader.commit().await.unwrap();
    let dropped = tokio::time::timeout(Duration::from_secs(10), retention)
        .await
        .expect("the drop completes once the read ends")
        .unwrap()
        .unwrap();
    assert!(dropped.contains(&old), "{dropped:?}");
    assert!(!table_exists(s, &old).await);
    assert!(pending_detach(s).await.is_empty());
    ingest.more(5).await;
    ingest.finish().await;
}

#[tokio::test]
async fn an_interrupted_detach_is_finalized_and_a_detached_table_dropped() {
    let db = db().await;
    let s = &db.store;
    let w = website(s, 1).await;
    let v = validator(s, "k1", "eu").await;
    let day = month_start(s, 2).await;
    let (pending, detached) = (old_day(s, day).await, old_day(s, day + DAY_MS).await);
    store_ticks(s, &[tick(&round_at(w.id, day + 60_000), v, true)]).await;

    // A detach cut short after its first step (a lock timeout here; a
    // crash leaves the same), and a detach that finished without the drop.
    let mut reader = db.pool().begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM ticks")
        .execute(&mut *reader)
        .await
        .unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    conn.close_on_drop();
    sqlx::query("SET lock_timeout = '100ms'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let e = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE ticks DETACH PARTITION {pending} CONCURRENTLY"
    )))
    .execute(&mut *conn)
    .await
    .unwrap_err();
    assert!(e.to_string().contains("lock timeout"), "{e}");
    drop(conn);
    reader.commit().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE ticks DETACH PARTITION {detached}"
    )))
    .execute(db.pool())
    .await
    .unwrap();
    assert_eq!(pending_detach(s).await, std::slice::from_ref(&pending));
    assert!(partition_at(s, day + DAY_MS).await.is_none());

    let dropped = s
        .drop_old_tick_partitions(KEEP_DAYS, Duration::from_secs(1), 3)
        .await
        .unwrap();
    for name in [&pending, &detached] {
        assert!(dropped.contains(name), "{name} in {dropped:?}");
        assert!(!table_exists(s, name).await, "{name}");
    }
    assert!(pending_detach(s).await.is_empty());
}

/// Opens and closes (`unknown`: no results) the round of `site` at `at_ms`;
/// then sets `rolled_up_at` and `settled_at` as asked (a rolled-up round
/// also counts as applied to its site's incidents).
async fn round(s: &Store, site: WebsiteId, at_ms: i64, rolled_up: bool, settled: bool) -> RoundId {
    let r = open_round(s, site, at_ms).await;
    s.close_rounds(&[r.round_id], "h1", &[]).await.unwrap();
    mark(s, r.round_id, rolled_up, settled).await;
    r.round_id
}

async fn mark(s: &Store, id: RoundId, rolled_up: bool, settled: bool) {
    sqlx::query(
        "UPDATE rounds SET rolled_up_at = CASE WHEN $2 THEN now() END,
                           settled_at = CASE WHEN $3 THEN now() END
          WHERE id = $1",
    )
    .bind(id)
    .bind(rolled_up)
    .bind(settled)
    .execute(s.pool())
    .await
    .unwrap();
    if rolled_up {
        sqlx::query(
            "INSERT INTO website_state (website_id, applied_through)
             SELECT website_id, scheduled_at FROM rounds WHERE id = $1
             ON CONFLICT (website_id) DO UPDATE
                SET applied_through = greatest(website_state.applied_through,
                                               EXCLUDED.applied_through)",
        )
        .bind(id)
        .execute(s.pool())
        .await
        .unwrap();
    }
}

async fn round_ids(s: &Store) -> Vec<RoundId> {
    sqlx::query_scalar("SELECT id FROM rounds ORDER BY id")
        .fetch_all(s.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn old_rounds_are_deleted_once_closed_rolled_up_and_settled_where_payouts_run() {
    let db = db().await;
    let s = &db.store;
    let site = website(s, 1).await.id;
    let old = (protocol::now_ms() / 60_000) * 60_000 - 40 * DAY_MS;
    let at = |i: i64| old + i * 60_000;
    let lock_timeout = Duration::from_secs(1);
    // No ledger row: payouts are not in use, settlement does not count.
    let not_rolled_up = round(s, site, at(0), false, false).await;
    for i in 1..=5 {
        round(s, site, at(i), true, false).await;
    }
    let open = open_round(s, site, at(6)).await.round_id;
    mark(s, open, true, false).await;
    let recent = round(s, site, past_ms(), true, true).await;
    // Rolled up but not yet applied to its site's incidents: kept.
    let other = website(s, 2).await.id;
    let not_applied = open_round(s, other, at(0)).await.round_id;
    s.close_rounds(&[not_applied], "h1", &[]).await.unwrap();
    sqlx::query("UPDATE rounds SET rolled_up_at = now() WHERE id = $1")
        .bind(not_applied)
        .execute(s.pool())
        .await
        .unwrap();
    assert_eq!(
        s.delete_old_rounds(KEEP_DAYS, 2, lock_timeout)
            .await
            .unwrap(),
        5,
        "in batches of two"
    );
    assert_eq!(
        round_ids(s).await,
        [not_rolled_up, open, recent, not_applied]
    );
    sqlx::query("DELETE FROM rounds WHERE id = $1")
        .bind(not_applied)
        .execute(s.pool())
        .await
        .unwrap();
    // An incident's round ids are plain ids: the round can go.
    sqlx::query(
        "INSERT INTO incidents (website_id, started_at, opened_by_round) \
         VALUES ($1, to_timestamp($2 / 1000.0), $3)",
    )
    .bind(site)
    .bind(at(0))
    .bind(not_rolled_up)
    .execute(db.pool())
    .await
    .unwrap();
    mark(s, not_rolled_up, true, false).await;
    assert_eq!(
        s.delete_old_rounds(KEEP_DAYS, 2, lock_timeout)
            .await
            .unwrap(),
        1
    );

    // Payouts in use (a ledger row): an old round also waits for settlement.
    let epoch = s.next_epoch("payouts").await.unwrap();
    let v = validator(s, "k1", "eu").await;
    sqlx::query("INSERT INTO validator_ledger (validator_id, epoch) VALUES ($1, $2)")
        .bind(v)
        .bind(epoch)
        .execute(db.pool())
        .await
        .unwrap();
    let unsettled = round(s, site, at(10), true, false).await;
    let settled = round(s, site, at(11), true, true).await;
    assert_eq!(
        s.delete_old_rounds(KEEP_DAYS, 2, lock_timeout)
            .await
            .unwrap(),
        1
    );
    let left = round_ids(s).await;
    assert!(
        left.contains(&unsettled) && !left.contains(&settled),
        "{left:?}"
    );
    mark(s, unsettled, true, true).await;
    assert_eq!(
        s.delete_old_rounds(KEEP_DAYS, 2, lock_timeout)
            .await
            .unwrap(),
        1
    );
    assert_eq!(round_ids(s).await, [open, recent]);
}

#[tokio::test]
async fn a_partition_stays_while_a_round_in_it_is_not_done() {
    let db = db().await;
    let s = &db.store;
    let site = website(s, 1).await.id;
    let v = validator(s, "k1", "eu").await;
    let day = month_start(s, 2).await;
    let part = old_day(s, day).await;
    let r = open_round(s, site, day + 60_000).await;
    store_ticks(s, &[tick(&r, v, true)]).await;
    s.close_rounds(&[r.round_id], "h1", &[]).await.unwrap();
    // Closed but not rolled up: rollups still need its ticks.
    let dropped = s
        .drop_old_tick_partitions(KEEP_DAYS, Duration::from_secs(1), 3)
        .await
        .unwrap();
    assert!(!dropped.contains(&part), "{dropped:?}");
    assert!(table_exists(s, &part).await);
    mark(s, r.round_id, true, false).await;
    assert_eq!(
        s.delete_old_rounds(KEEP_DAYS, 100, Duration::from_secs(1))
            .await
            .unwrap(),
        1
    );
    let dropped = s
        .drop_old_tick_partitions(KEEP_DAYS, Duration::from_secs(1), 3)
        .await
        .unwrap();
    assert!(dropped.contains(&part), "{dropped:?}");
}
