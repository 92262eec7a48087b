//! Retention: raw ticks and rounds are kept a set number of days
//! (docs/ARCHITECTURE.md, "Retention"; the schema side is
//! migrations/20261201000005_retention.sql).
//!
//! Ticks are partitioned by UTC day on the round's scheduled time, with no
//! default partition, so a partition can leave with `ALTER TABLE ticks
//! DETACH PARTITION .. CONCURRENTLY`: it takes SHARE UPDATE EXCLUSIVE on
//! `ticks`, which neither waits for readers nor holds up the writers'
//! inserts, then waits for the queries that may still read the partition.
//! Every statement runs under a `lock_timeout` and is retried with backoff,
//! so a long read delays retention instead of retention queueing the tick
//! writers behind it.
//!
//! A round is *done* when it is closed, rolled up (`rolled_up_at`) and,
//! where payouts are in use (the ledger has a row: some hub settles), settled
//! (`settled_at`). Retention deletes only done rounds, and keeps the ticks of
//! every partition that ends after the oldest round not done: settlement and
//! rollups read ticks, so a stalled payout leader or rollup holds retention
//! back rather than losing what they have not counted yet.

use std::time::Duration;

use backon::{ExponentialBuilder, RetryableWithContext};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Postgres};

use crate::{Result, Store, StoreError};

/// The SQLSTATE of a statement cancelled by `lock_timeout` (or `NOWAIT`).
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The oldest time retention keeps: `keep_days` ($1) ago, at least a day
/// (a tick arrives at most minutes after its round's scheduled time, so
/// the partition it needs is never one retention drops).
macro_rules! cutoff {
    () => {
        "(now() - make_interval(days => greatest($1, 1)))"
    };
}

/// Whether round `r` is done (see the module's comment).
macro_rules! round_done {
    () => {
        "(r.status <> 'open' AND r.rolled_up_at IS NOT NULL \
          AND (r.settled_at IS NOT NULL OR NOT EXISTS (SELECT 1 FROM validator_ledger)) \
          AND r.scheduled_at <= COALESCE((SELECT ws.applied_through FROM website_state ws \
                                           WHERE ws.website_id = r.website_id), '-infinity'))"
    };
}

/// Up to which time (Unix ms) tick partitions may go: the cutoff, or the
/// scheduled time of the oldest round before it that is not done.
const HORIZON_SQL: &str = concat!(
    "SELECT (extract(epoch FROM least(",
    cutoff!(),
    ", (SELECT min(r.scheduled_at) FROM rounds r WHERE r.scheduled_at < ",
    cutoff!(),
    " AND NOT ",
    round_done!(),
    "))) * 1000)::int8"
);

const DELETE_ROUNDS_SQL: &str = concat!(
    "WITH doomed AS (
         SELECT r.id FROM rounds r
          WHERE r.scheduled_at < ",
    cutoff!(),
    " AND ",
    round_done!(),
    " ORDER BY r.scheduled_at
          LIMIT $2
            FOR UPDATE SKIP LOCKED
     )
     DELETE FROM rounds r USING doomed d WHERE r.id = d.id"
);

/// Tables left by a detach whose `DROP TABLE` did not happen (named as
/// partitions are: `ticks_YYYY_MM` or `ticks_YYYY_MM_DD`), whose name's
/// range ends at or before the horizon ($1, Unix ms).
const ORPHANS_SQL: &str = "
SELECT c.relname::text, format('%I', c.relname)
  FROM pg_class c
 WHERE c.relkind = 'r' AND NOT c.relispartition
   AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'ticks'::regclass)
   AND c.relname ~ '^ticks_[0-9]{4}_[0-9]{2}(_[0-9]{2})?$'
   AND (CASE WHEN length(c.relname) = 16
             THEN to_date(substr(c.relname, 7), 'YYYY_MM_DD') + interval '1 day'
             ELSE to_date(substr(c.relname, 7), 'YYYY_MM') + interval '1 month'
        END) AT TIME ZONE 'UTC' <= to_timestamp($1 / 1000.0)
 ORDER BY 1";

impl StoreError {
    /// A statement cancelled by its `lock_timeout`: something held a
    /// conflicting lock for longer. Transient.
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::Database(d))
            if d.code().as_deref() == Some(LOCK_NOT_AVAILABLE))
    }
}

/// Backoff between attempts of a statement that hit its lock timeout.
pub(crate) fn lock_backoff(retries: usize) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(retries)
        .with_jitter()
}

/// `lock_timeout` as PostgreSQL reads it; at least 1 ms (0 would mean none).
fn lock_timeout_setting(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

impl Store {
    /// [`Store::ensure_partitions`], by the database's clock.
    pub(crate) async fn ensure_daily_partitions(&self, days_ahead: i32) -> Result<i32> {
        let attempt = || async {
            sqlx::query_scalar("SELECT ensure_daily_tick_partitions($1)")
                .bind(days_ahead)
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::from)
        };
        backon::Retryable::retry(attempt, lock_backoff(3))
            .when(StoreError::is_lock_timeout)
            .await
    }

    /// Makes the daily tick partitions for the UTC days from `from_ms`'s to
    /// `to_ms`'s that no partition covers; returns how many it made. For
    /// rows with times [`Store::ensure_partitions`] does not cover (tests,
    /// imports): a tick with no partition for its time is refused
    /// ([`StoreError::NoTickPartition`]).
    pub async fn ensure_partitions_between(&self, from_ms: i64, to_ms: i64) -> Result<i32> {
        let attempt = || async {
            sqlx::query_scalar(
                "SELECT create_daily_tick_partitions(to_timestamp($1 / 1000.0), \
                                                     to_timestamp($2 / 1000.0))",
            )
            .bind(from_ms)
            .bind(to_ms)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from)
        };
        backon::Retryable::retry(attempt, lock_backoff(3))
            .when(StoreError::is_lock_timeout)
            .await
    }

    /// Whole days from now to the end of the partitions that cover now and
    /// follow each other without a gap: 0 when now has no partition (ticks
    /// are being refused). For a gauge and an alert (below 2, say: the hub
    /// makes them hourly).
    pub async fn tick_partitions_ahead(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "WITH RECURSIVE covered(upper_bound) AS (
                 SELECT upper_bound FROM tick_partitions
                  WHERE lower_bound <= now() AND upper_bound > now() AND NOT detach_pending
                 UNION ALL
                 SELECT p.upper_bound FROM covered c
                   JOIN tick_partitions p ON p.lower_bound = c.upper_bound AND NOT p.detach_pending
             )
             SELECT COALESCE(floor(extract(epoch FROM max(upper_bound) - now()) / 86400), 0)::int8
               FROM covered",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Detaches and drops the tick partitions whose range ends at least
    /// `keep_days` (at least 1) ago, oldest first, keeping any that ends
    /// after a round not done yet (see the module's comment). Returns the
    /// names of the tables dropped.
    ///
    /// Runs on one connection of its own, closed afterwards (its session
    /// settings never reach another caller): `lock_timeout` is set on it,
    /// and each statement that times out is retried `retries` times with
    /// backoff; the last timeout is returned ([`StoreError::is_lock_timeout`],
    /// transient) and the next call carries on where this one stopped. A
    /// detach interrupted after its first step (the partition left "detach
    /// pending", by a timeout or a crash) is completed with `DETACH ..
    /// FINALIZE`, and a table detached but not dropped is dropped. One
    /// caller at a time (a session advisory lock): another hub's call
    /// meanwhile returns at once with nothing dropped.
    pub async fn drop_old_tick_partitions(
        &self,
        keep_days: i32,
        lock_timeout: Duration,
        retries: usize,
    ) -> Result<Vec<String>> {
        let mut conn = self.pool.acquire().await?;
        conn.close_on_drop();
        sqlx::query("SELECT set_config('lock_timeout', $1, false)")
            .bind(lock_timeout_setting(lock_timeout))
            .execute(&mut *conn)
            .await?;
        let mine: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('drop_old_tick_partitions'))")
                .fetch_one(&mut *conn)
                .await?;
        if !mine {
            return Ok(Vec::new());
        }
        let horizon_ms: i64 = sqlx::query_scalar(HORIZON_SQL)
            .bind(keep_days)
            .fetch_one(&mut *conn)
            .await?;
        // A pending detach first: no other can start while one is pending.
        let parts: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT name, format('%I', name), upper_bound <= to_timestamp($1 / 1000.0)
               FROM tick_partitions
              WHERE detach_pending OR upper_bound <= to_timestamp($1 / 1000.0)
              ORDER BY detach_pending DESC, lower_bound",
        )
        .bind(horizon_ms)
        .fetch_all(&mut *conn)
        .await?;
        let mut dropped = Vec::new();
        for (name, ident, old) in parts {
            conn = retrying(conn, retries, &name, |c| detach(c, name.clone())).await?;
            if old {
                let sql = format!("DROP TABLE IF EXISTS {ident}");
                conn = retrying(conn, retries, &name, |c| execute(c, sql.clone())).await?;
                tracing::info!(partition = %name, "dropped an old tick partition");
                dropped.push(name);
            }
        }
        let orphans: Vec<(String, String)> = sqlx::query_as(ORPHANS_SQL)
            .bind(horizon_ms)
            .fetch_all(&mut *conn)
            .await?;
        for (name, ident) in orphans {
            let sql = format!("DROP TABLE IF EXISTS {ident}");
            conn = retrying(conn, retries, &name, |c| execute(c, sql.clone())).await?;
            tracing::info!(table = %name, "dropped a detached tick partition");
            dropped.push(name);
        }
        Ok(dropped)
    }

    /// Deletes the done rounds (see the module's comment) scheduled at
    /// least `keep_days` (at least 1) ago, oldest first, `batch` rows per
    /// statement, each in a transaction of its own under `lock_timeout`,
    /// until none is left; returns how many it deleted. Rows another caller
    /// holds are skipped, so any number of hubs may run it at once. Nothing
    /// refers to a round by foreign key: incidents keep their round ids,
    /// and ticks stay until their partition goes.
    pub async fn delete_old_rounds(
        &self,
        keep_days: i32,
        batch: i64,
        lock_timeout: Duration,
    ) -> Result<u64> {
        let batch = batch.max(1);
        let mut deleted = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                .bind(lock_timeout_setting(lock_timeout))
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query(DELETE_ROUNDS_SQL)
                .bind(keep_days)
                .bind(batch)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            deleted += n;
            if n < batch as u64 {
                return Ok(deleted);
            }
        }
    }
}

type Conn = PoolConnection<Postgres>;

/// Runs `attempt` on `conn`, again after each lock timeout, at most
/// `retries` more times; hands the connection back for the next statement.
async fn retrying<F, Fut>(conn: Conn, retries: usize, what: &str, attempt: F) -> Result<Conn>
where
    F: FnMut(Conn) -> Fut,
    Fut: std::future::Future<Output = (Conn, Result<()>)>,
{
    let (conn, res) = attempt
        .retry(lock_backoff(retries))
        .context(conn)
        .when(StoreError::is_lock_timeout)
        .notify(|e, wait| {
            tracing::info!(partition = %what, error = %e, ?wait,
                "tick retention waited too long for a lock; retrying");
        })
        .await;
    res.map(|()| conn)
}

/// One statement of DDL, as it is (no parameters, not prepared).
async fn execute(mut conn: Conn, sql: String) -> (Conn, Result<()>) {
    let res = sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(StoreError::from);
    (conn, res)
}

/// Detaches partition `name` of `ticks`: `CONCURRENTLY`, or `FINALIZE` if
/// an earlier attempt was interrupted after its first step; nothing if it
/// is detached already.
async fn detach(mut conn: Conn, name: String) -> (Conn, Result<()>) {
    let state: Result<Option<(bool, String)>> = sqlx::query_as(
        "SELECT detach_pending, format('%I', name) FROM tick_partitions WHERE name = $1",
    )
    .bind(&name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::from);
    match state {
        Err(e) => (conn, Err(e)),
        Ok(None) => (conn, Ok(())),
        Ok(Some((pending, ident))) => {
            let how = if pending { "FINALIZE" } else { "CONCURRENTLY" };
            execute(
                conn,
                format!("ALTER TABLE ticks DETACH PARTITION {ident} {how}"),
            )
            .await
        }
    }
}
