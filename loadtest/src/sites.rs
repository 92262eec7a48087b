//! The simulated websites and the tick count, in PostgreSQL.
//!
//! Websites are `http://127.0.0.1:9/lt/{i}` (port 9 is "discard": nothing is
//! ever fetched, the tool answers tasks without HTTP), owner `loadtest`. The
//! whole set is written in one statement, whatever its size, and so wakes
//! the hubs once (the `websites_changed` trigger fires per statement): a
//! 100k-site insert row by row would take minutes of commits. The rows are
//! reused between runs: `seed` enables `lt/0 .. lt/{M-1}` with the wanted
//! interval and disables any other `lt/` row; `disable` turns them all off
//! at the end so the hubs stop scheduling them.
//!
//! These statements are the tool's own (the `store` crate has one method per
//! statement the services run, and the services never run these); they
//! touch only rows whose URL starts with the prefix above.

use anyhow::Context;
use store::sqlx::{self, PgPool};

/// Every simulated website's URL starts with this.
pub const URL_PREFIX: &str = "http://127.0.0.1:9/lt/";

/// Connects (a pool of two) and checks that the schema is there.
pub async fn connect(url: &str) -> anyhow::Result<PgPool> {
    let store = store::Store::connect(url, 2)
        .await
        .context("connecting to PostgreSQL (--database-url)")?;
    let pool = store.pool().clone();
    sqlx::query("SELECT 1 FROM websites LIMIT 0")
        .execute(&pool)
        .await
        .context("the database has no websites table; start a hub (or `hub migrate`) first")?;
    Ok(pool)
}

/// What [`seed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Seeded {
    pub inserted: u64,
    pub updated: u64,
    pub enabled: u64,
}

/// Makes exactly `count` simulated websites enabled, at `interval_secs`
/// with check timeout `timeout_ms`, in one transaction.
pub async fn seed(
    pool: &PgPool,
    count: u32,
    interval_secs: u32,
    timeout_ms: u32,
) -> anyhow::Result<Seeded> {
    let mut tx = pool
        .begin()
        .await
        .context("starting the seed transaction")?;
    let prefix_len = URL_PREFIX.len() as i32;
    // Existing rows: enable those in range (with the wanted schedule),
    // disable the rest. Only rows that change are written.
    let updated = sqlx::query(
        "UPDATE websites w
            SET enabled = n.want, interval_secs = $2, timeout_ms = $3, updated_at = now()
           FROM (SELECT id, substr(url, $5 + 1)::bigint < $1 AS want
                   FROM websites
                  WHERE url LIKE $4 || '%' AND substr(url, $5 + 1) ~ '^[0-9]+$') n
          WHERE w.id = n.id
            AND (w.enabled, w.interval_secs, w.timeout_ms) IS DISTINCT FROM (n.want, $2, $3)",
    )
    .bind(i64::from(count))
    .bind(interval_secs as i32)
    .bind(timeout_ms as i32)
    .bind(URL_PREFIX)
    .bind(prefix_len)
    .execute(&mut *tx)
    .await
    .context("updating existing simulated websites")?
    .rows_affected();
    let inserted = sqlx::query(
        "INSERT INTO websites (url, interval_secs, timeout_ms, owner)
         SELECT $4 || i, $2, $3, 'loadtest'
           FROM generate_series(0, $1 - 1) AS i
          WHERE NOT EXISTS (SELECT 1 FROM websites w WHERE w.url = $4 || i)",
    )
    .bind(i64::from(count))
    .bind(interval_secs as i32)
    .bind(timeout_ms as i32)
    .bind(URL_PREFIX)
    .execute(&mut *tx)
    .await
    .context("inserting simulated websites")?
    .rows_affected();
    tx.commit()
        .await
        .context("committing the simulated websites")?;
    let enabled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM websites WHERE url LIKE $1 || '%' AND enabled")
            .bind(URL_PREFIX)
            .fetch_one(pool)
            .await
            .context("counting simulated websites")?;
    Ok(Seeded {
        inserted,
        updated,
        enabled: enabled as u64,
    })
}

/// Disables every simulated website; returns how many were enabled.
pub async fn disable(pool: &PgPool) -> anyhow::Result<u64> {
    Ok(sqlx::query(
        "UPDATE websites SET enabled = false, updated_at = now()
          WHERE url LIKE $1 || '%' AND enabled",
    )
    .bind(URL_PREFIX)
    .execute(pool)
    .await
    .context("disabling simulated websites")?
    .rows_affected())
}

/// Enabled websites that are not simulated ones (their tasks get answered
/// too, and count in every figure).
pub async fn other_enabled(pool: &PgPool) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM websites WHERE enabled AND url NOT LIKE $1 || '%'",
    )
    .bind(URL_PREFIX)
    .fetch_one(pool)
    .await
    .context("counting other websites")?;
    Ok(n as u64)
}

/// Ticks whose `received_at` (the commit transaction's time) falls in
/// `[from_ms, to_ms)`, whatever website they belong to.
pub async fn ticks_between(pool: &PgPool, from_ms: i64, to_ms: i64) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ticks
          WHERE received_at >= to_timestamp($1::float8 / 1000)
            AND received_at <  to_timestamp($2::float8 / 1000)",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_one(pool)
    .await
    .context("counting ticks in the hold window")?;
    Ok(n as u64)
}
