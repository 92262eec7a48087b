//! Websites as their owners see them (services/api): every statement here
//! takes the owner's [`AccountId`] and matches it in SQL, so one account
//! can never read or change another's site. Deleted sites (`deleted_at`)
//! are invisible here; their rounds and ticks stay for settlement.

use sqlx::Row;
use uuid::Uuid;

use crate::website_url::check_keyword;

/// Latest time a page cursor may name, ms (9999-12-31): no row is later,
/// and `to_timestamp` takes it. A page without a cursor starts here.
pub const MAX_CURSOR_MS: i64 = 253_402_300_799_000;
use crate::{AccountId, Result, RoundId, Store, WebsiteId, WebsiteUrl};

/// A website with what its owner set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedSite {
    pub id: WebsiteId,
    pub name: Option<String>,
    pub url: String,
    pub interval_secs: i32,
    pub timeout_ms: i32,
    pub expected_status_min: i16,
    pub expected_status_max: i16,
    pub keyword: Option<String>,
    pub follow_redirects: bool,
    pub paused: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Every setting of a site, as created or after an update (the caller
/// merges a partial update and validates the result).
#[derive(Debug, Clone)]
pub struct SiteSettings {
    pub name: Option<String>,
    pub url: WebsiteUrl,
    pub interval_secs: i32,
    pub timeout_ms: i32,
    pub expected_status_min: i16,
    pub expected_status_max: i16,
    pub keyword: Option<String>,
    pub follow_redirects: bool,
}

/// The account already has its `max_sites`: no site was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaReached {
    pub max_sites: i32,
}

macro_rules! site_columns {
    () => {
        "id, name, url, interval_secs, timeout_ms, expected_status_min, \
     expected_status_max, keyword, follow_redirects, NOT enabled AS paused, \
     (extract(epoch FROM created_at) * 1000)::int8 AS created_ms, \
     (extract(epoch FROM updated_at) * 1000)::int8 AS updated_ms"
    };
}

fn site_from_row(r: &sqlx::postgres::PgRow) -> OwnedSite {
    OwnedSite {
        id: r.get("id"),
        name: r.get("name"),
        url: r.get("url"),
        interval_secs: r.get("interval_secs"),
        timeout_ms: r.get("timeout_ms"),
        expected_status_min: r.get("expected_status_min"),
        expected_status_max: r.get("expected_status_max"),
        keyword: r.get("keyword"),
        follow_redirects: r.get("follow_redirects"),
        paused: r.get("paused"),
        created_at_ms: r.get("created_ms"),
        updated_at_ms: r.get("updated_ms"),
    }
}

/// A region's latest result for a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionCheck {
    pub region: String,
    pub validator: String,
    pub up: bool,
    pub http_status: Option<i16>,
    pub latency_ms: i32,
    pub error: Option<String>,
    pub checked_at_ms: i64,
    pub round_id: RoundId,
}

/// The latest decided round of a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestRound {
    pub round_id: RoundId,
    pub status: String,
    pub scheduled_at_ms: i64,
    pub closed_at_ms: Option<i64>,
}

/// Decided rounds (up or down) and those up, over one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UptimeCount {
    pub up: i64,
    pub decided: i64,
    pub unknown: i64,
}

/// Latency of `up` results from one region over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionLatency {
    pub region: String,
    pub results: i64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// One round with each result it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundRecord {
    pub round_id: RoundId,
    pub status: String,
    pub scheduled_at_ms: i64,
    pub deadline_ms: i64,
    pub closed_at_ms: Option<i64>,
    pub results: Vec<TickRecord>,
}

/// One stored result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickRecord {
    pub task_id: Uuid,
    pub round_id: RoundId,
    pub scheduled_at_ms: i64,
    pub validator: String,
    pub region: String,
    pub up: bool,
    pub http_status: Option<i16>,
    pub latency_ms: i32,
    pub error: Option<String>,
    pub checked_at_ms: i64,
}

/// An incident of a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRecord {
    pub id: i64,
    pub started_at_ms: i64,
    pub opened_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
    /// What each region saw in the round that opened it (JSON array).
    pub regions_json: String,
}

/// A site's state under the incident rule (`website_state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentState {
    /// `up`, `down` or `unknown` (before a streak decided it).
    pub status: String,
    pub open_incident: Option<i64>,
}

/// A validator that checked a site, over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteValidator {
    pub public_key: String,
    pub region: String,
    pub results: i64,
    pub last_checked_at_ms: i64,
}

macro_rules! tick_columns {
    () => {
        "t.task_id, t.round_id, \
     (extract(epoch FROM t.scheduled_at) * 1000)::int8 AS sched_ms, \
     v.public_key, v.region, t.status = 'up' AS up, t.http_status, t.latency_ms, t.error, \
     (extract(epoch FROM t.checked_at) * 1000)::int8 AS checked_ms"
    };
}

fn tick_from_row(r: &sqlx::postgres::PgRow) -> TickRecord {
    TickRecord {
        task_id: r.get("task_id"),
        round_id: r.get("round_id"),
        scheduled_at_ms: r.get("sched_ms"),
        validator: r.get("public_key"),
        region: r.get("region"),
        up: r.get("up"),
        http_status: r.get("http_status"),
        latency_ms: r.get("latency_ms"),
        error: r.get("error"),
        checked_at_ms: r.get("checked_ms"),
    }
}

impl Store {
    /// Creates a site if the account has room under its `max_sites`. The
    /// account row is locked meanwhile, so concurrent creates cannot both
    /// take the last place.
    pub async fn create_owned_site(
        &self,
        account: AccountId,
        s: &SiteSettings,
    ) -> Result<Result<OwnedSite, QuotaReached>> {
        if let Some(k) = &s.keyword {
            check_keyword(k)?;
        }
        let mut tx = self.pool().begin().await?;
        let max_sites: i32 =
            sqlx::query_scalar("SELECT max_sites FROM accounts WHERE id = $1 FOR UPDATE")
                .bind(account)
                .fetch_one(&mut *tx)
                .await?;
        let have: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM websites WHERE account_id = $1 AND deleted_at IS NULL",
        )
        .bind(account)
        .fetch_one(&mut *tx)
        .await?;
        if have >= i64::from(max_sites) {
            return Ok(Err(QuotaReached { max_sites }));
        }
        let row = sqlx::query(concat!(
            "INSERT INTO websites (account_id, owner, name, url, interval_secs, timeout_ms, \
                 expected_status_min, expected_status_max, keyword, follow_redirects) \
             VALUES ($1, 'account:' || $1, $2, $3, $4, $5, $6, $7, $8, $9) \
             RETURNING ",
            site_columns!(),
            ""
        ))
        .bind(account)
        .bind(&s.name)
        .bind(s.url.as_str())
        .bind(s.interval_secs)
        .bind(s.timeout_ms)
        .bind(s.expected_status_min)
        .bind(s.expected_status_max)
        .bind(&s.keyword)
        .bind(s.follow_redirects)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(site_from_row(&row)))
    }

    /// Sites the account has (not deleted).
    pub async fn count_owned_sites(&self, account: AccountId) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM websites WHERE account_id = $1 AND deleted_at IS NULL",
        )
        .bind(account)
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn owned_site(&self, account: AccountId, id: WebsiteId) -> Result<Option<OwnedSite>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            site_columns!(),
            " FROM websites \
              WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL"
        ))
        .bind(id)
        .bind(account)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(site_from_row))
    }

    /// The account's sites with ids above `after`, in id order, at most
    /// `limit`.
    pub async fn owned_sites(
        &self,
        account: AccountId,
        after: Option<WebsiteId>,
        limit: i64,
    ) -> Result<Vec<OwnedSite>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            site_columns!(),
            " FROM websites \
              WHERE account_id = $1 AND deleted_at IS NULL AND id > $2 \
              ORDER BY id LIMIT $3"
        ))
        .bind(account)
        .bind(after.map_or(0, |w| w.0))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(site_from_row).collect())
    }

    /// Writes every setting; `None` if the account has no such site.
    pub async fn update_owned_site(
        &self,
        account: AccountId,
        id: WebsiteId,
        s: &SiteSettings,
    ) -> Result<Option<OwnedSite>> {
        if let Some(k) = &s.keyword {
            check_keyword(k)?;
        }
        let row = sqlx::query(concat!(
            "UPDATE websites SET name = $3, url = $4, interval_secs = $5, timeout_ms = $6, \
                    expected_status_min = $7, expected_status_max = $8, keyword = $9, \
                    follow_redirects = $10, updated_at = now() \
              WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL \
              RETURNING ",
            site_columns!(),
            ""
        ))
        .bind(id)
        .bind(account)
        .bind(&s.name)
        .bind(s.url.as_str())
        .bind(s.interval_secs)
        .bind(s.timeout_ms)
        .bind(s.expected_status_min)
        .bind(s.expected_status_max)
        .bind(&s.keyword)
        .bind(s.follow_redirects)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(site_from_row))
    }

    /// Pauses or resumes; `None` if the account has no such site.
    pub async fn set_owned_site_paused(
        &self,
        account: AccountId,
        id: WebsiteId,
        paused: bool,
    ) -> Result<Option<OwnedSite>> {
        let row = sqlx::query(concat!(
            "UPDATE websites SET enabled = NOT $3, updated_at = now() \
              WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL \
              RETURNING ",
            site_columns!(),
            ""
        ))
        .bind(id)
        .bind(account)
        .bind(paused)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(site_from_row))
    }

    /// Soft delete: the site stops being checked and disappears from the
    /// owner's view; rounds and ticks stay. False if there was no such site.
    pub async fn delete_owned_site(&self, account: AccountId, id: WebsiteId) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE websites SET deleted_at = now(), enabled = false, updated_at = now() \
              WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(account)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    // ---- reads (the caller has checked the site is the account's) ----

    /// The latest decided round of a site, if any.
    pub async fn latest_round(&self, id: WebsiteId) -> Result<Option<LatestRound>> {
        let row = sqlx::query(
            "SELECT id, status, (extract(epoch FROM scheduled_at) * 1000)::int8 AS sched_ms, \
                    (extract(epoch FROM closed_at) * 1000)::int8 AS closed_ms \
               FROM rounds WHERE website_id = $1 AND status <> 'open' \
              ORDER BY scheduled_at DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| LatestRound {
            round_id: r.get("id"),
            status: r.get("status"),
            scheduled_at_ms: r.get("sched_ms"),
            closed_at_ms: r.get("closed_ms"),
        }))
    }

    /// Each region's latest result within `within_secs`.
    pub async fn latest_by_region(
        &self,
        id: WebsiteId,
        within_secs: i64,
    ) -> Result<Vec<RegionCheck>> {
        let rows = sqlx::query(
            "SELECT DISTINCT ON (v.region) v.region, v.public_key, t.status = 'up' AS up, \
                    t.http_status, t.latency_ms, t.error, t.round_id, \
                    (extract(epoch FROM t.checked_at) * 1000)::int8 AS checked_ms \
               FROM ticks t JOIN validators v ON v.id = t.validator_id \
              WHERE t.website_id = $1 \
                AND t.scheduled_at >= now() - make_interval(secs => $2) \
              ORDER BY v.region, t.scheduled_at DESC, t.checked_at DESC",
        )
        .bind(id)
        .bind(within_secs as f64)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| RegionCheck {
                region: r.get("region"),
                validator: r.get("public_key"),
                up: r.get("up"),
                http_status: r.get("http_status"),
                latency_ms: r.get("latency_ms"),
                error: r.get("error"),
                checked_at_ms: r.get("checked_ms"),
                round_id: r.get("round_id"),
            })
            .collect())
    }

    /// Rounds decided up, decided at all, and `unknown`, over each of four
    /// windows (seconds back from now, shortest first), in one index-only
    /// scan of the longest (`rounds_website_time_status`): each round is
    /// counted in the shortest window that holds it, and the counts are
    /// summed outwards here.
    pub async fn uptime_counts(
        &self,
        id: WebsiteId,
        windows: [i64; 4],
    ) -> Result<[UptimeCount; 4]> {
        debug_assert!(windows.windows(2).all(|w| w[0] <= w[1]), "shortest first");
        let rows = sqlx::query(
            "WITH c AS (SELECT now() - make_interval(secs => $2) AS c0,
                               now() - make_interval(secs => $3) AS c1,
                               now() - make_interval(secs => $4) AS c2,
                               now() - make_interval(secs => $5) AS c3)
             SELECT CASE WHEN r.scheduled_at >= c.c0 THEN 0
                         WHEN r.scheduled_at >= c.c1 THEN 1
                         WHEN r.scheduled_at >= c.c2 THEN 2
                         ELSE 3 END AS w,
                    r.status, count(*) AS n
               FROM rounds r, c
              WHERE r.website_id = $1 AND r.scheduled_at >= c.c3
              GROUP BY 1, 2",
        )
        .bind(id)
        .bind(windows[0] as f64)
        .bind(windows[1] as f64)
        .bind(windows[2] as f64)
        .bind(windows[3] as f64)
        .fetch_all(self.pool())
        .await?;
        let mut own = [UptimeCount::default(); 4];
        for r in &rows {
            let w = r.get::<i32, _>("w").clamp(0, 3) as usize;
            let n: i64 = r.get("n");
            match r.get::<&str, _>("status") {
                "up" => {
                    own[w].up += n;
                    own[w].decided += n;
                }
                "down" => own[w].decided += n,
                "unknown" => own[w].unknown += n,
                _ => {}
            }
        }
        let mut out = [UptimeCount::default(); 4];
        let mut sum = UptimeCount::default();
        for (i, c) in own.iter().enumerate() {
            sum.up += c.up;
            sum.decided += c.decided;
            sum.unknown += c.unknown;
            out[i] = sum;
        }
        Ok(out)
    }

    /// p50/p95/p99 latency of `up` results per region over the last
    /// `window_secs`.
    pub async fn latency_by_region(
        &self,
        id: WebsiteId,
        window_secs: i64,
    ) -> Result<Vec<RegionLatency>> {
        let rows = sqlx::query(
            "SELECT v.region, count(*) AS n, \
                    percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY t.latency_ms) AS p \
               FROM ticks t JOIN validators v ON v.id = t.validator_id \
              WHERE t.website_id = $1 AND t.status = 'up' \
                AND t.scheduled_at >= now() - make_interval(secs => $2) \
              GROUP BY v.region ORDER BY v.region",
        )
        .bind(id)
        .bind(window_secs as f64)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let p: Vec<f64> = r.get("p");
                RegionLatency {
                    region: r.get("region"),
                    results: r.get("n"),
                    p50_ms: p.first().copied().unwrap_or(0.0),
                    p95_ms: p.get(1).copied().unwrap_or(0.0),
                    p99_ms: p.get(2).copied().unwrap_or(0.0),
                }
            })
            .collect())
    }

    /// Rounds strictly older than the cursor `(scheduled_at_ms, round id)`
    /// in (scheduled_at, id) descending order, each with its results.
    pub async fn round_page(
        &self,
        id: WebsiteId,
        before: Option<(i64, RoundId)>,
        limit: i64,
    ) -> Result<Vec<RoundRecord>> {
        let (b_ms, b_id) = before.unwrap_or((MAX_CURSOR_MS, RoundId(i64::MAX)));
        let rows = sqlx::query(
            "SELECT id, status, (extract(epoch FROM scheduled_at) * 1000)::int8 AS sched_ms, \
                    (extract(epoch FROM deadline) * 1000)::int8 AS deadline_ms, \
                    (extract(epoch FROM closed_at) * 1000)::int8 AS closed_ms \
               FROM rounds \
              WHERE website_id = $1 \
                AND (scheduled_at, id) < (to_timestamp($2 / 1000.0), $3) \
              ORDER BY scheduled_at DESC, id DESC LIMIT $4",
        )
        .bind(id)
        .bind(b_ms.min(MAX_CURSOR_MS))
        .bind(b_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut out: Vec<RoundRecord> = rows
            .iter()
            .map(|r| RoundRecord {
                round_id: r.get("id"),
                status: r.get("status"),
                scheduled_at_ms: r.get("sched_ms"),
                deadline_ms: r.get("deadline_ms"),
                closed_at_ms: r.get("closed_ms"),
                results: Vec::new(),
            })
            .collect();
        if out.is_empty() {
            return Ok(out);
        }
        let ids: Vec<i64> = out.iter().map(|r| r.round_id.0).collect();
        // Times cross as milliseconds: widen by one so a scheduled_at with
        // microseconds (written by hand) is not cut off.
        let oldest = out.iter().map(|r| r.scheduled_at_ms).min().unwrap_or(0) - 1;
        let newest = out.iter().map(|r| r.scheduled_at_ms).max().unwrap_or(0) + 1;
        let ticks = sqlx::query(concat!(
            "SELECT ",
            tick_columns!(),
            " FROM ticks t JOIN validators v ON v.id = t.validator_id \
              WHERE t.website_id = $1 AND t.round_id = ANY($2) \
                AND t.scheduled_at BETWEEN to_timestamp($3 / 1000.0) AND to_timestamp($4 / 1000.0) \
              ORDER BY v.region, t.checked_at"
        ))
        .bind(id)
        .bind(ids)
        .bind(oldest)
        .bind(newest)
        .fetch_all(self.pool())
        .await?;
        for t in ticks.iter().map(tick_from_row) {
            if let Some(r) = out.iter_mut().find(|r| r.round_id == t.round_id) {
                r.results.push(t);
            }
        }
        Ok(out)
    }

    /// Results strictly older than the cursor `(scheduled_at_ms, task id)`
    /// in (scheduled_at, task_id) descending order.
    pub async fn tick_page(
        &self,
        id: WebsiteId,
        before: Option<(i64, Uuid)>,
        limit: i64,
    ) -> Result<Vec<TickRecord>> {
        let (b_ms, b_task) = before.unwrap_or((MAX_CURSOR_MS, Uuid::max()));
        let rows = sqlx::query(concat!(
            "SELECT ",
            tick_columns!(),
            " FROM ticks t JOIN validators v ON v.id = t.validator_id \
              WHERE t.website_id = $1 \
                AND (t.scheduled_at, t.task_id) < (to_timestamp($2 / 1000.0), $3) \
              ORDER BY t.scheduled_at DESC, t.task_id DESC LIMIT $4"
        ))
        .bind(id)
        .bind(b_ms.min(MAX_CURSOR_MS))
        .bind(b_task)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(tick_from_row).collect())
    }

    /// Validators whose results for the site were stored in the last
    /// `window_secs`, most results first, at most `limit`.
    pub async fn site_validators(
        &self,
        id: WebsiteId,
        window_secs: i64,
        limit: i64,
    ) -> Result<Vec<SiteValidator>> {
        let rows = sqlx::query(
            "SELECT v.public_key, v.region, count(*) AS n, \
                    (extract(epoch FROM max(t.checked_at)) * 1000)::int8 AS last_ms \
               FROM ticks t JOIN validators v ON v.id = t.validator_id \
              WHERE t.website_id = $1 AND t.scheduled_at >= now() - make_interval(secs => $2) \
              GROUP BY v.id ORDER BY n DESC, v.public_key LIMIT $3",
        )
        .bind(id)
        .bind(window_secs as f64)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| SiteValidator {
                public_key: r.get("public_key"),
                region: r.get("region"),
                results: r.get("n"),
                last_checked_at_ms: r.get("last_ms"),
            })
            .collect())
    }

    /// The site's state under the incident rule, if a round was applied.
    pub async fn incident_state(&self, id: WebsiteId) -> Result<Option<IncidentState>> {
        let row =
            sqlx::query("SELECT status, open_incident_id FROM website_state WHERE website_id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|r| IncidentState {
            status: r.get("status"),
            open_incident: r.get("open_incident_id"),
        }))
    }

    /// Incidents strictly older than the cursor `(started_at_ms, id)`,
    /// newest first.
    pub async fn incident_page(
        &self,
        id: WebsiteId,
        before: Option<(i64, i64)>,
        limit: i64,
    ) -> Result<Vec<IncidentRecord>> {
        let (b_ms, b_id) = before.unwrap_or((MAX_CURSOR_MS, i64::MAX));
        let rows = sqlx::query(
            "SELECT id, (extract(epoch FROM started_at) * 1000)::int8 AS started_ms,
                    (extract(epoch FROM opened_at) * 1000)::int8 AS opened_ms,
                    (extract(epoch FROM resolved_at) * 1000)::int8 AS resolved_ms,
                    regions::text AS regions
               FROM incidents
              WHERE website_id = $1 AND (started_at, id) < (to_timestamp($2 / 1000.0), $3)
              ORDER BY started_at DESC, id DESC LIMIT $4",
        )
        .bind(id)
        .bind(b_ms)
        .bind(b_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| IncidentRecord {
                id: r.get("id"),
                started_at_ms: r.get("started_ms"),
                opened_at_ms: r.get("opened_ms"),
                resolved_at_ms: r.get("resolved_ms"),
                regions_json: r.get("regions"),
            })
            .collect())
    }

    /// Regions that see the site down while the quorum sees it up, now
    /// (open regional degradations): `(region, started_at_ms)`.
    pub async fn open_degradations(&self, id: WebsiteId) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT region, (extract(epoch FROM started_at) * 1000)::int8
               FROM regional_degradations
              WHERE website_id = $1 AND ended_at IS NULL ORDER BY region",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?)
    }
}
