//! The load tool's statements (`loadtest/`): simulated websites and the tick
//! count. The services never run these.
//!
//! Simulated websites are `{SIMULATED_URL_PREFIX}{i}` (port 9 is "discard":
//! nothing is ever fetched, the tool answers tasks without HTTP), owner
//! `loadtest`. Every statement here touches only rows whose URL starts with
//! the prefix, which is why the prefix is a constant here and not an
//! argument: an empty one would reach every website.
//!
//! Two sets share the prefix. The regular one ([`Store::seed_simulated_websites`]):
//! `i` is an index `0 .. count`, the row's id comes from the sequence. The
//! burst set ([`Store::seed_simulated_burst`]): rows whose ids the tool chose
//! (from [`SIMULATED_BURST_FIRST_ID`] up, so that their schedule phases fall
//! in one second) and `i` is the id itself. Seeding either disables the
//! other; `disable` reaches both.

use crate::{AccountId, Result, Store, WebsiteId};

/// Every simulated website's URL starts with this; a decimal number follows.
pub const SIMULATED_URL_PREFIX: &str = "http://127.0.0.1:9/lt/";

/// The burst set's ids start here: `websites.id` is a `bigserial` no
/// sequence reaches this far (2^40), so explicit ids from here on collide
/// with no other website; and as an index of the regular set (the same URL
/// form) it is far beyond any `count`, so seeding that set disables them.
pub const SIMULATED_BURST_FIRST_ID: i64 = 1 << 40;

/// What [`Store::seed_simulated_websites`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeededWebsites {
    /// New rows.
    pub inserted: u64,
    /// Existing rows enabled, disabled or rescheduled.
    pub updated: u64,
    /// Simulated websites enabled afterwards.
    pub enabled: u64,
}

impl Store {
    /// Fails unless the schema is there (the `websites` table): for tools
    /// that use a database a hub has migrated.
    pub async fn check_schema(&self) -> Result<()> {
        sqlx::query("SELECT 1 FROM websites LIMIT 0")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Makes exactly `count` simulated websites (`lt/0 .. lt/{count-1}`)
    /// enabled, at `interval_secs` with check timeout `timeout_ms`, and
    /// disables any other simulated one, in one transaction. The new rows
    /// go in with one statement, whatever their number, so they wake the
    /// hubs once (the `websites_changed` trigger fires per statement); rows
    /// from earlier runs are reused, and only those that change are written.
    pub async fn seed_simulated_websites(
        &self,
        count: u32,
        interval_secs: i32,
        timeout_ms: i32,
    ) -> Result<SeededWebsites> {
        let count = i64::from(count);
        let prefix_len = SIMULATED_URL_PREFIX.len() as i32;
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE websites w
                SET enabled = n.want, interval_secs = $2, timeout_ms = $3, updated_at = now()
               FROM (SELECT id, substr(url, $5 + 1)::bigint < $1 AS want
                       FROM websites
                      WHERE url LIKE $4 || '%' AND substr(url, $5 + 1) ~ '^[0-9]+$') n
              WHERE w.id = n.id
                AND (w.enabled, w.interval_secs, w.timeout_ms) IS DISTINCT FROM (n.want, $2, $3)",
        )
        .bind(count)
        .bind(interval_secs)
        .bind(timeout_ms)
        .bind(SIMULATED_URL_PREFIX)
        .bind(prefix_len)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let inserted = sqlx::query(
            "INSERT INTO websites (url, interval_secs, timeout_ms, owner)
             SELECT $4 || i, $2, $3, 'loadtest'
               FROM generate_series(0, $1 - 1) AS i
              WHERE NOT EXISTS (SELECT 1 FROM websites w WHERE w.url = $4 || i)",
        )
        .bind(count)
        .bind(interval_secs)
        .bind(timeout_ms)
        .bind(SIMULATED_URL_PREFIX)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(SeededWebsites {
            inserted,
            updated,
            enabled: self.simulated_enabled().await?,
        })
    }

    /// How many simulated websites are enabled.
    async fn simulated_enabled(&self) -> Result<u64> {
        let enabled: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM websites WHERE url LIKE $1 || '%' AND enabled",
        )
        .bind(SIMULATED_URL_PREFIX)
        .fetch_one(&self.pool)
        .await?;
        Ok(enabled as u64)
    }

    /// Makes exactly the websites `ids` (each at least
    /// [`SIMULATED_BURST_FIRST_ID`]; smaller ones are ignored) the enabled
    /// simulated websites, at `interval_secs` with check timeout
    /// `timeout_ms`, as `{SIMULATED_URL_PREFIX}{id}` with that very id; every
    /// other simulated website (of either set) is disabled. One
    /// transaction; the missing rows go in with one statement whatever
    /// their number, and rows from earlier runs are reused, only those that
    /// change written. An id some other website already has is left alone,
    /// so `enabled` then falls short of `ids.len()`.
    pub async fn seed_simulated_burst(
        &self,
        ids: &[WebsiteId],
        interval_secs: i32,
        timeout_ms: i32,
    ) -> Result<SeededWebsites> {
        let ids: Vec<i64> = ids
            .iter()
            .map(|id| id.0)
            .filter(|id| *id >= SIMULATED_BURST_FIRST_ID)
            .collect();
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE websites w
                SET enabled = n.want,
                    interval_secs = CASE WHEN n.want THEN $2 ELSE w.interval_secs END,
                    timeout_ms = CASE WHEN n.want THEN $3 ELSE w.timeout_ms END,
                    updated_at = now()
               FROM (SELECT w2.id, s.id IS NOT NULL AS want
                       FROM websites w2
                       LEFT JOIN unnest($1::bigint[]) AS s(id) ON s.id = w2.id
                      WHERE w2.url LIKE $4 || '%') n
              WHERE w.id = n.id
                AND (w.enabled IS DISTINCT FROM n.want
                     OR (n.want AND (w.interval_secs, w.timeout_ms) IS DISTINCT FROM ($2, $3)))",
        )
        .bind(&ids)
        .bind(interval_secs)
        .bind(timeout_ms)
        .bind(SIMULATED_URL_PREFIX)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let inserted = sqlx::query(
            "INSERT INTO websites (id, url, interval_secs, timeout_ms, owner)
             SELECT s.id, $4 || s.id, $2, $3, 'loadtest'
               FROM unnest($1::bigint[]) AS s(id)
              WHERE NOT EXISTS (SELECT 1 FROM websites w WHERE w.id = s.id)",
        )
        .bind(&ids)
        .bind(interval_secs)
        .bind(timeout_ms)
        .bind(SIMULATED_URL_PREFIX)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(SeededWebsites {
            inserted,
            updated,
            enabled: self.simulated_enabled().await?,
        })
    }

    /// Ticks of the burst set's websites (ids from
    /// [`SIMULATED_BURST_FIRST_ID`]) whose slot (`scheduled_at`) falls in
    /// `[from_ms, to_ms)`.
    pub async fn count_burst_ticks_scheduled_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ticks
              WHERE website_id >= $3
                AND scheduled_at >= to_timestamp($1::float8 / 1000)
                AND scheduled_at <  to_timestamp($2::float8 / 1000)",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(SIMULATED_BURST_FIRST_ID)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    /// Disables every simulated website; returns how many were enabled.
    pub async fn disable_simulated_websites(&self) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE websites SET enabled = false, updated_at = now()
              WHERE url LIKE $1 || '%' AND enabled",
        )
        .bind(SIMULATED_URL_PREFIX)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Enabled websites that are not simulated ones.
    pub async fn count_other_enabled_websites(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM websites WHERE enabled AND url NOT LIKE $1 || '%'",
        )
        .bind(SIMULATED_URL_PREFIX)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    /// Ticks whose `received_at` (the commit transaction's time) falls in
    /// `[from_ms, to_ms)`, whatever website they belong to.
    pub async fn count_ticks_received_between(&self, from_ms: i64, to_ms: i64) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ticks
              WHERE received_at >= to_timestamp($1::float8 / 1000)
                AND received_at <  to_timestamp($2::float8 / 1000)",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    /// Gives the first `count` enabled simulated websites (by id) to
    /// `account`, so the owners' API can read them under load; returns
    /// their ids.
    pub async fn adopt_simulated_websites(
        &self,
        account: AccountId,
        count: i64,
    ) -> Result<Vec<WebsiteId>> {
        let ids: Vec<WebsiteId> = sqlx::query_scalar(
            "UPDATE websites SET account_id = $1, updated_at = now()
              WHERE id IN (SELECT id FROM websites
                            WHERE url LIKE $2 || '%' AND enabled
                            ORDER BY id LIMIT $3)
              RETURNING id",
        )
        .bind(account)
        .bind(SIMULATED_URL_PREFIX)
        .bind(count)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }
}
