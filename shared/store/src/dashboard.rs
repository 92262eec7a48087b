//! What the owners' dashboard and the public status pages read and write:
//! a whole account's sites at a glance, daily uptime and latency over time
//! from the rollups, the status page settings and badge tokens, and the live
//! feed of site state changes (`migrations/*_dashboard.sql`).

use futures_util::stream::Stream;
use serde::Deserialize;
use sqlx::Row;

use crate::rollups::Histogram;
use crate::{AccountId, Result, Store, WebsiteId};

/// The channel `website_state_notify()` notifies.
const WEBSITE_STATE: &str = "website_state";

/// One site on the dashboard's list.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteGlance {
    pub id: WebsiteId,
    pub name: Option<String>,
    pub url: String,
    pub paused: bool,
    pub interval_secs: i32,
    /// The latest round decided up or down (as the live feed's `latest`:
    /// `unknown` rounds change nothing): (status, scheduled at, Unix ms).
    pub latest: Option<(String, i64)>,
    /// The status under the confirmation rule (`unknown` before a streak).
    pub state: String,
    /// The open incident: (id, started at, Unix ms).
    pub open_incident: Option<(i64, i64)>,
    /// Each region's latest result of the last five intervals (at least
    /// five minutes).
    pub regions: Vec<GlanceCheck>,
    /// Hourly median latency of `up` results over the last 24 hours, the
    /// regions of `regions` together: (bucket start, Unix ms; median ms).
    pub sparkline: Vec<(i64, Option<f64>)>,
}

/// A region's latest result, on the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlanceCheck {
    pub region: String,
    pub up: bool,
    pub http_status: Option<i16>,
    pub latency_ms: i32,
    pub checked_at_ms: i64,
    pub error: Option<String>,
}

/// One UTC day's round decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DayCount {
    /// The day's start, Unix ms.
    pub day_ms: i64,
    pub up: i64,
    pub down: i64,
    pub unknown: i64,
}

/// A region's latency over time: (bucket start, Unix ms; p50; p95).
#[derive(Debug, Clone, PartialEq)]
pub struct RegionSeries {
    pub region: String,
    pub points: Vec<(i64, Option<f64>, Option<f64>)>,
}

/// An account's status page settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusPage {
    pub slug: String,
    pub title: String,
    pub enabled: bool,
}

/// A site as its status page shows it: a name, never its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicSite {
    pub id: WebsiteId,
    pub name: String,
    /// The status under the confirmation rule.
    pub state: String,
    pub paused: bool,
    /// The open incident's start, Unix ms.
    pub incident_since_ms: Option<i64>,
}

/// A change of what the sites list shows, from `website_state_notify()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteChange {
    pub account: AccountId,
    pub website: WebsiteId,
    /// The latest decided round's status (`up`, `down`; `None` before one).
    pub latest: Option<String>,
    /// The status under the confirmation rule.
    pub state: String,
    pub open_incident: Option<i64>,
    /// When it changed, Unix ms (the database's clock).
    pub at_ms: i64,
}

/// The notification's payload (see the migration).
#[derive(Deserialize)]
struct RawChange {
    a: i64,
    w: i64,
    l: Option<String>,
    s: String,
    i: Option<i64>,
    t: i64,
}

impl From<RawChange> for SiteChange {
    fn from(r: RawChange) -> Self {
        Self {
            account: AccountId(r.a),
            website: WebsiteId(r.w),
            latest: r.l,
            state: r.s,
            open_incident: r.i,
            at_ms: r.t,
        }
    }
}

/// Why a status page could not be saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusPageRefused {
    /// Another account has this slug.
    SlugTaken,
    /// A site id that is not one of the account's sites.
    UnknownSite(i64),
}

fn hist(r: &sqlx::postgres::PgRow) -> Histogram {
    let counts: Vec<i32> = r.get("counts");
    Histogram {
        counts: counts.into_iter().map(i64::from).collect(),
        min_ms: r.get("lo"),
        max_ms: r.get("hi"),
    }
}

impl Store {
    /// Every site of the account (not deleted), oldest first, at most
    /// `limit`, with what the dashboard's list shows. A handful of
    /// statements for the whole account, each by index per site.
    pub async fn site_glances(&self, account: AccountId, limit: i64) -> Result<Vec<SiteGlance>> {
        let rows = sqlx::query(
            "SELECT w.id, w.name, w.url, NOT w.enabled AS paused, w.interval_secs,
                    COALESCE(s.status, 'unknown') AS state,
                    i.id AS incident, (extract(epoch FROM i.started_at) * 1000)::int8 AS since,
                    l.status AS latest, (extract(epoch FROM l.scheduled_at) * 1000)::int8 AS at
               FROM websites w
               LEFT JOIN website_state s ON s.website_id = w.id
               LEFT JOIN incidents i ON i.id = s.open_incident_id
               LEFT JOIN LATERAL (
                   SELECT status, scheduled_at FROM rounds
                    WHERE website_id = w.id AND status IN ('up', 'down')
                    ORDER BY scheduled_at DESC LIMIT 1) l ON true
              WHERE w.account_id = $1 AND w.deleted_at IS NULL
              ORDER BY w.id LIMIT $2",
        )
        .bind(account)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut out: Vec<SiteGlance> = rows
            .iter()
            .map(|r| {
                let incident: Option<i64> = r.get("incident");
                let latest: Option<String> = r.get("latest");
                SiteGlance {
                    id: r.get("id"),
                    name: r.get("name"),
                    url: r.get("url"),
                    paused: r.get("paused"),
                    interval_secs: r.get("interval_secs"),
                    latest: latest.map(|s| (s, r.get::<i64, _>("at"))),
                    state: r.get("state"),
                    open_incident: incident.map(|i| (i, r.get::<i64, _>("since"))),
                    regions: Vec::new(),
                    sparkline: Vec::new(),
                }
            })
            .collect();
        if out.is_empty() {
            return Ok(out);
        }
        let ids: Vec<WebsiteId> = out.iter().map(|s| s.id).collect();
        let checks = sqlx::query(
            "SELECT w.id, c.* FROM unnest($1::int8[], $2::int4[]) AS w(id, every)
               CROSS JOIN LATERAL (
                   SELECT DISTINCT ON (v.region) v.region, t.status = 'up' AS up,
                          t.http_status, t.latency_ms, t.error,
                          (extract(epoch FROM t.checked_at) * 1000)::int8 AS checked_ms
                     FROM ticks t JOIN validators v ON v.id = t.validator_id
                    WHERE t.website_id = w.id
                      AND t.scheduled_at >= now() - make_interval(secs => greatest(w.every * 5, 300))
                    ORDER BY v.region, t.scheduled_at DESC, t.checked_at DESC) c
              ORDER BY w.id, c.region",
        )
        .bind(&ids)
        .bind(out.iter().map(|s| s.interval_secs).collect::<Vec<_>>())
        .fetch_all(self.pool())
        .await?;
        // Each region's hourly rows by the primary key's prefix (site,
        // bucket size, region, bucket start): the regions are those seen
        // in the last checks.
        let (pair_site, pair_region): (Vec<WebsiteId>, Vec<String>) = checks
            .iter()
            .map(|r| (r.get::<WebsiteId, _>("id"), r.get::<String, _>("region")))
            .unzip();
        let lines = sqlx::query(
            "SELECT k.id, (extract(epoch FROM r.bucket_start) * 1000)::int8 AS at,
                    rollup_sum(r.latency_counts) AS counts, min(r.latency_min_ms) AS lo,
                    max(r.latency_max_ms) AS hi
               FROM unnest($1::int8[], $2::text[]) AS k(id, region)
               JOIN rollups r
                 ON r.website_id = k.id AND r.bucket_secs = 3600 AND r.region = k.region
                AND r.bucket_start >= date_bin('1 hour', now() - interval '24 hours',
                                               'epoch'::timestamptz)
              GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .bind(&pair_site)
        .bind(&pair_region)
        .fetch_all(self.pool())
        .await?;
        for s in &mut out {
            s.regions = checks
                .iter()
                .filter(|r| r.get::<WebsiteId, _>("id") == s.id)
                .map(|r| GlanceCheck {
                    region: r.get("region"),
                    up: r.get("up"),
                    http_status: r.get("http_status"),
                    latency_ms: r.get("latency_ms"),
                    checked_at_ms: r.get("checked_ms"),
                    error: r.get("error"),
                })
                .collect();
            s.sparkline = lines
                .iter()
                .filter(|r| r.get::<WebsiteId, _>("id") == s.id)
                .filter(|r| r.get::<Option<i32>, _>("hi").is_some())
                .map(|r| (r.get("at"), hist(r).quantile(0.5)))
                .collect();
        }
        Ok(out)
    }

    /// The last `days` UTC days' round decisions (today included), oldest
    /// first, one entry per day (zeros for a day without rounds): the daily
    /// rollups plus the closed rounds not rolled up yet.
    pub async fn daily_uptime(&self, id: WebsiteId, days: i32) -> Result<Vec<DayCount>> {
        let rows = sqlx::query(
            "WITH d AS (
                 SELECT generate_series(
                            date_bin('1 day', now(), 'epoch'::timestamptz)
                                - make_interval(days => $2 - 1),
                            date_bin('1 day', now(), 'epoch'::timestamptz),
                            interval '1 day') AS day
             ), c AS (
                 SELECT bucket_start AS day, rounds_up AS up, rounds_down AS down,
                        rounds_unknown AS unknown
                   FROM rollups
                  WHERE website_id = $1 AND bucket_secs = 86400 AND region = ''
                    AND bucket_start >= (SELECT min(day) FROM d)
                 UNION ALL
                 SELECT date_bin('1 day', scheduled_at, 'epoch'::timestamptz),
                        (status = 'up')::int4, (status = 'down')::int4, (status = 'unknown')::int4
                   FROM rounds
                  WHERE website_id = $1 AND rolled_up_at IS NULL AND status <> 'open'
                    AND scheduled_at >= (SELECT min(day) FROM d)
             )
             SELECT (extract(epoch FROM d.day) * 1000)::int8 AS day_ms,
                    COALESCE(sum(c.up), 0)::int8 AS up, COALESCE(sum(c.down), 0)::int8 AS down,
                    COALESCE(sum(c.unknown), 0)::int8 AS unknown
               FROM d LEFT JOIN c ON c.day = d.day
              GROUP BY d.day ORDER BY d.day",
        )
        .bind(id)
        .bind(days)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| DayCount {
                day_ms: r.get("day_ms"),
                up: r.get("up"),
                down: r.get("down"),
                unknown: r.get("unknown"),
            })
            .collect())
    }

    /// Latency of `up` results per region over the last `window_secs`, one
    /// point per `bucket_secs` rollup (300 or 3600) that has results: the
    /// estimated p50 and p95. From the rollups only, so the newest few
    /// minutes (not rolled up yet) are not in it.
    pub async fn latency_series(
        &self,
        id: WebsiteId,
        window_secs: i64,
        bucket_secs: i32,
    ) -> Result<Vec<RegionSeries>> {
        let rows = sqlx::query(
            "SELECT region, (extract(epoch FROM bucket_start) * 1000)::int8 AS at,
                    latency_counts AS counts, latency_min_ms AS lo, latency_max_ms AS hi
               FROM rollups
              WHERE website_id = $1 AND bucket_secs = $2 AND region > ''
                AND bucket_start >= now() - make_interval(secs => $3)
                AND latency_max_ms IS NOT NULL
              ORDER BY region, bucket_start",
        )
        .bind(id)
        .bind(bucket_secs)
        .bind(window_secs as f64)
        .fetch_all(self.pool())
        .await?;
        let mut out: Vec<RegionSeries> = Vec::new();
        for r in &rows {
            let region: String = r.get("region");
            let h = hist(r);
            let point = (r.get("at"), h.quantile(0.5), h.quantile(0.95));
            match out.last_mut() {
                Some(s) if s.region == region => s.points.push(point),
                _ => out.push(RegionSeries {
                    region,
                    points: vec![point],
                }),
            }
        }
        Ok(out)
    }

    /// The account's status page settings and the ids of the sites on it.
    pub async fn status_page(
        &self,
        account: AccountId,
    ) -> Result<(Option<StatusPage>, Vec<WebsiteId>)> {
        let page =
            sqlx::query("SELECT slug, title, enabled FROM status_pages WHERE account_id = $1")
                .bind(account)
                .fetch_optional(self.pool())
                .await?
                .map(|r| StatusPage {
                    slug: r.get("slug"),
                    title: r.get("title"),
                    enabled: r.get("enabled"),
                });
        let ids: Vec<WebsiteId> = sqlx::query_scalar(
            "SELECT id FROM websites
              WHERE account_id = $1 AND deleted_at IS NULL AND on_status_page ORDER BY id",
        )
        .bind(account)
        .fetch_all(self.pool())
        .await?;
        Ok((page, ids))
    }

    /// Saves the account's status page and the sites on it (exactly
    /// `sites`, each one of the account's), in one transaction.
    pub async fn save_status_page(
        &self,
        account: AccountId,
        page: &StatusPage,
        sites: &[WebsiteId],
    ) -> Result<std::result::Result<(), StatusPageRefused>> {
        let mut tx = self.pool().begin().await?;
        let owned: Vec<WebsiteId> = sqlx::query_scalar(
            "SELECT id FROM websites WHERE account_id = $1 AND deleted_at IS NULL AND id = ANY($2)",
        )
        .bind(account)
        .bind(sites)
        .fetch_all(&mut *tx)
        .await?;
        if let Some(bad) = sites.iter().find(|s| !owned.contains(s)) {
            return Ok(Err(StatusPageRefused::UnknownSite(bad.0)));
        }
        let saved = sqlx::query(
            "INSERT INTO status_pages (account_id, slug, title, enabled) VALUES ($1, $2, $3, $4)
             ON CONFLICT (account_id) DO UPDATE
                SET slug = EXCLUDED.slug, title = EXCLUDED.title, enabled = EXCLUDED.enabled,
                    updated_at = now()",
        )
        .bind(account)
        .bind(&page.slug)
        .bind(&page.title)
        .bind(page.enabled)
        .execute(&mut *tx)
        .await;
        match saved {
            Ok(_) => {}
            Err(sqlx::Error::Database(d)) if d.constraint() == Some("status_pages_slug_key") => {
                return Ok(Err(StatusPageRefused::SlugTaken));
            }
            Err(e) => return Err(e.into()),
        }
        sqlx::query(
            "UPDATE websites SET on_status_page = (id = ANY($2))
              WHERE account_id = $1 AND on_status_page IS DISTINCT FROM (id = ANY($2))",
        )
        .bind(account)
        .bind(sites)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// An enabled status page by its slug: its account and title.
    pub async fn status_page_by_slug(&self, slug: &str) -> Result<Option<(AccountId, String)>> {
        let row =
            sqlx::query("SELECT account_id, title FROM status_pages WHERE slug = $1 AND enabled")
                .bind(slug)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|r| (r.get("account_id"), r.get("title"))))
    }

    /// The sites an account shows on its status page, by id.
    pub async fn public_sites(&self, account: AccountId) -> Result<Vec<PublicSite>> {
        let rows = sqlx::query(
            "SELECT w.id, w.name, NOT w.enabled AS paused,
                    COALESCE(s.status, 'unknown') AS state,
                    (extract(epoch FROM i.started_at) * 1000)::int8 AS since
               FROM websites w
               LEFT JOIN website_state s ON s.website_id = w.id
               LEFT JOIN incidents i ON i.id = s.open_incident_id
              WHERE w.account_id = $1 AND w.deleted_at IS NULL AND w.on_status_page
              ORDER BY w.id",
        )
        .bind(account)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .enumerate()
            .map(|(i, r)| PublicSite {
                id: r.get("id"),
                // Unnamed: by position, never by the global id.
                name: r
                    .get::<Option<String>, _>("name")
                    .unwrap_or_else(|| format!("Service {}", i + 1)),
                state: r.get("state"),
                paused: r.get("paused"),
                incident_since_ms: r.get("since"),
            })
            .collect())
    }

    /// Sets (`Some`) or removes (`None`) a site's badge token; false if the
    /// account has no such site.
    pub async fn set_badge_token(
        &self,
        account: AccountId,
        id: WebsiteId,
        token: Option<&str>,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE websites SET badge_token = $3
              WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(account)
        .bind(id)
        .bind(token)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// The site a badge token is for (not deleted): its id, its state under
    /// the confirmation rule, and whether it is paused.
    pub async fn site_by_badge(&self, token: &str) -> Result<Option<(WebsiteId, String, bool)>> {
        let row = sqlx::query(
            "SELECT w.id, COALESCE(s.status, 'unknown') AS state, NOT w.enabled AS paused
               FROM websites w LEFT JOIN website_state s ON s.website_id = w.id
              WHERE w.badge_token = $1 AND w.deleted_at IS NULL",
        )
        .bind(token)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| (r.get("id"), r.get("state"), r.get("paused"))))
    }

    /// Changes of what the sites list shows, as they commit: `Some(change)`,
    /// or `None` when the connection was lost and changes may have been
    /// missed (the listener reconnects on the next poll; the caller tells its
    /// clients to reload). Ends only on an error reconnecting. A malformed
    /// notification is skipped. The listener holds one connection of the pool.
    pub async fn site_changes(
        &self,
    ) -> Result<impl Stream<Item = Option<SiteChange>> + Send + 'static> {
        let mut l = sqlx::postgres::PgListener::connect_with(self.pool()).await?;
        l.listen(WEBSITE_STATE).await?;
        Ok(futures_util::stream::unfold(l, |mut l| async move {
            loop {
                match l.try_recv().await {
                    Ok(Some(n)) => {
                        if let Ok(raw) = serde_json::from_str::<RawChange>(n.payload()) {
                            return Some((Some(SiteChange::from(raw)), l));
                        }
                    }
                    Ok(None) => return Some((None, l)),
                    Err(e) => {
                        tracing::warn!(error = %e, "the site-change listener failed");
                        return None;
                    }
                }
            }
        }))
    }
}
