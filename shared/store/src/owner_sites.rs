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
    /// Latency alerts: the threshold (ms; `None`: off) and the up rounds in
    /// a row above it that alert.
    pub latency_threshold_ms: Option<i32>,
    pub latency_alert_rounds: i32,
    pub paused: bool,
    /// Its badges' token, when they are on.
    pub badge_token: Option<String>,
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
    pub latency_threshold_ms: Option<i32>,
    pub latency_alert_rounds: i32,
}

/// The account already has its `max_sites`: no site was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaReached {
    pub max_sites: i32,
}

macro_rules! site_columns {
    () => {
        "id, name, url, interval_secs, timeout_ms, expected_status_min, \
     expected_status_max, keyword, follow_redirects, latency_threshold_ms, \
     latency_alert_rounds, NOT enabled AS paused, badge_token, \
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
        latency_threshold_ms: r.get("latency_threshold_ms"),
        latency_alert_rounds: r.get("latency_alert_rounds"),
        paused: r.get("paused"),
        badge_token: r.get("badge_token"),
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

/// The windows `$2` (seconds back from now) with their rollup sizes `$3`
/// (fine) and `$4` (coarse), numbered `i` from 1: each starts at the fine
/// boundary at or before `now - window` (`start`); fine rows cover it up to
/// the first coarse boundary at or after `start` (`mid`), coarse rows from
/// there on. Buckets are aligned on the Unix epoch, as the rollups' are.
macro_rules! window_bounds {
    () => {
        "SELECT u.i, u.fine, u.coarse, b.start,
                date_bin(make_interval(secs => u.coarse),
                         b.start + make_interval(secs => u.coarse) - interval '1 microsecond',
                         'epoch') AS mid
           FROM UNNEST($2::int8[], $3::int4[], $4::int4[]) WITH ORDINALITY AS u(secs, fine, coarse, i)
          CROSS JOIN LATERAL (
                SELECT date_bin(make_interval(secs => u.fine),
                                now() - make_interval(secs => u.secs), 'epoch') AS start) AS b"
    };
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
                 expected_status_min, expected_status_max, keyword, follow_redirects, \
                 latency_threshold_ms, latency_alert_rounds) \
             VALUES ($1, 'account:' || $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
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
        .bind(s.latency_threshold_ms)
        .bind(s.latency_alert_rounds)
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
                    follow_redirects = $10, latency_threshold_ms = $11, \
                    latency_alert_rounds = $12, updated_at = now() \
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
        .bind(s.latency_threshold_ms)
        .bind(s.latency_alert_rounds)
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
    /// windows (seconds back from now, shortest first), from the rollups
    /// plus the site's closed rounds not rolled up yet (one statement, one
    /// snapshot: a round is counted once whether or not a roll-up commits
    /// meanwhile). A window starts at the rollup boundary at or before
    /// `now - window` (5 minutes for up to a day, an hour up to 30 days,
    /// else a day: see `rollups::granularity`).
    pub async fn uptime_counts(
        &self,
        id: WebsiteId,
        windows: [i64; 4],
    ) -> Result<[UptimeCount; 4]> {
        let rows = self.uptime_windows(&[id], &windows).await?;
        let mut out = [UptimeCount::default(); 4];
        for (_, i, c) in rows {
            if let Some(o) = out.get_mut(i) {
                *o = c;
            }
        }
        Ok(out)
    }

    /// Each site's uptime over the last 24 hours (as [`Self::uptime_counts`]
    /// counts it), in the order of `ids`; zeros for a site with no round.
    /// One statement for a page of sites: 5-minute and hourly rollups and
    /// the rounds not rolled up yet.
    pub async fn uptime_24h_for_sites(
        &self,
        ids: &[WebsiteId],
    ) -> Result<Vec<(WebsiteId, UptimeCount)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.uptime_windows(ids, &[86_400]).await?;
        Ok(ids
            .iter()
            .map(|id| {
                let c = rows
                    .iter()
                    .find(|(w, _, _)| w == id)
                    .map_or_else(UptimeCount::default, |(_, _, c)| *c);
                (*id, c)
            })
            .collect())
    }

    /// `(site, window index, counts)` for the sites and windows that have
    /// any round; `windows` shortest first. The '' rows' counts are in the
    /// primary key's index, so the rollups are read by index-only scans, at
    /// most a coarse bucket's worth of fine rows and the coarse rows after
    /// them per window. The rounds not rolled up yet are read once, from
    /// the longest window's start, by their partial index
    /// `rounds_site_not_rolled_up`: each counts in the shortest window that
    /// holds it (`width_bucket` over the starts, which move back as windows
    /// grow) and in every longer one. Normally they are the last few
    /// minutes; with roll-ups stopped, this is the old raw count.
    async fn uptime_windows(
        &self,
        ids: &[WebsiteId],
        windows: &[i64],
    ) -> Result<Vec<(WebsiteId, usize, UptimeCount)>> {
        debug_assert!(windows.windows(2).all(|w| w[0] <= w[1]), "shortest first");
        let (fine, coarse): (Vec<i32>, Vec<i32>) = windows
            .iter()
            .map(|w| crate::rollups::granularity(*w))
            .unzip();
        let rows = sqlx::query(concat!(
            "WITH s AS (",
            window_bounds!(),
            "), e AS (
                 SELECT array_agg(start ORDER BY i DESC) AS starts, count(*)::int4 AS n,
                        min(start) AS first
                   FROM s
             ), own AS (
                 SELECT x.website_id, e.n - width_bucket(x.scheduled_at, e.starts) + 1 AS wi,
                        count(*) FILTER (WHERE x.status = 'up')::int4 AS up,
                        count(*) FILTER (WHERE x.status = 'down')::int4 AS down,
                        count(*) FILTER (WHERE x.status = 'unknown')::int4 AS unknown
                   FROM e JOIN rounds x
                     ON x.website_id = ANY($1) AND x.rolled_up_at IS NULL
                    AND x.status <> 'open' AND x.scheduled_at >= e.first
                  GROUP BY 1, 2
             ), c AS (
                 SELECT r.website_id, s.i, r.rounds_up AS up, r.rounds_down AS down,
                        r.rounds_unknown AS unknown
                   FROM s JOIN rollups r
                     ON r.website_id = ANY($1) AND r.bucket_secs = s.fine AND r.region = ''
                    AND r.bucket_start >= s.start AND r.bucket_start < s.mid
                 UNION ALL
                 SELECT r.website_id, s.i, r.rounds_up, r.rounds_down, r.rounds_unknown
                   FROM s JOIN rollups r
                     ON r.website_id = ANY($1) AND r.bucket_secs = s.coarse AND r.region = ''
                    AND r.bucket_start >= s.mid
                 UNION ALL
                 SELECT o.website_id, s.i, o.up, o.down, o.unknown FROM own o JOIN s ON o.wi <= s.i
             )
             SELECT website_id, i, sum(up)::int8 AS up, sum(down)::int8 AS down,
                    sum(unknown)::int8 AS unknown
               FROM c GROUP BY 1, 2"
        ))
        .bind(ids)
        .bind(windows)
        .bind(&fine)
        .bind(&coarse)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let (up, down): (i64, i64) = (r.get("up"), r.get("down"));
                let i: i64 = r.get("i");
                (
                    r.get("website_id"),
                    usize::try_from(i - 1).unwrap_or(usize::MAX),
                    UptimeCount {
                        up,
                        decided: up + down,
                        unknown: r.get("unknown"),
                    },
                )
            })
            .collect())
    }

    /// p50/p95/p99 latency of `up` results per region over the last
    /// `window_secs` (the window starts as [`Self::uptime_counts`]' do),
    /// estimated from the merged histograms of the rollups and of the
    /// results of closed rounds not rolled up yet (error bound:
    /// `rollups::Histogram::quantile`). Results of rounds still open are
    /// not in it yet.
    pub async fn latency_by_region(
        &self,
        id: WebsiteId,
        window_secs: i64,
    ) -> Result<Vec<RegionLatency>> {
        let (fine, coarse) = crate::rollups::granularity(window_secs);
        let rows = sqlx::query(concat!(
            "WITH s AS (",
            window_bounds!(),
            "), src AS (
                 SELECT r.region, r.latency_counts AS c, r.latency_min_ms AS lo,
                        r.latency_max_ms AS hi
                   FROM s JOIN rollups r
                     ON r.website_id = $1 AND r.bucket_secs = s.fine AND r.region > ''
                    AND r.bucket_start >= s.start AND r.bucket_start < s.mid
                 UNION ALL
                 SELECT r.region, r.latency_counts, r.latency_min_ms, r.latency_max_ms
                   FROM s JOIN rollups r
                     ON r.website_id = $1 AND r.bucket_secs = s.coarse AND r.region > ''
                    AND r.bucket_start >= s.mid
                 UNION ALL
                 SELECT v.region,
                        rollup_histogram(array_agg(width_bucket(t.latency_ms,
                                                                rollup_latency_bounds()))),
                        min(t.latency_ms), max(t.latency_ms)
                   FROM s JOIN rounds x
                     ON x.website_id = $1 AND x.rolled_up_at IS NULL
                    AND x.status <> 'open' AND x.scheduled_at >= s.start
                   JOIN ticks t
                     ON t.round_id = x.id AND t.website_id = x.website_id
                    AND t.scheduled_at = x.scheduled_at
                   JOIN validators v ON v.id = t.validator_id
                  WHERE t.status = 'up' AND v.region > ''
                  GROUP BY v.region
             )
             SELECT region, rollup_sum(c) AS counts, min(lo) AS lo, max(hi) AS hi
               FROM src GROUP BY region HAVING max(hi) IS NOT NULL ORDER BY region"
        ))
        .bind(id)
        .bind(&[window_secs][..])
        .bind(&[fine][..])
        .bind(&[coarse][..])
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let counts: Vec<i32> = r.get("counts");
                let h = crate::rollups::Histogram {
                    counts: counts.into_iter().map(i64::from).collect(),
                    min_ms: r.get("lo"),
                    max_ms: r.get("hi"),
                };
                let q = |p| h.quantile(p).unwrap_or(0.0);
                RegionLatency {
                    region: r.get("region"),
                    results: h.total(),
                    p50_ms: q(0.5),
                    p95_ms: q(0.95),
                    p99_ms: q(0.99),
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
