//! Websites: create, list, read, update, pause, resume, delete. Every
//! statement is scoped to the caller's account (another account's site is
//! a 404). Changes reach the owning hub through the `websites` trigger's
//! notification, which names the changed ids.

use axum::extract::State;
use axum::http::StatusCode;
use protocol::target::TargetPolicy;
use store::{Account, SiteSettings, WebsiteId, WebsiteUrl};

use crate::app::AppState;
use crate::auth::{Reader, Writer};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::model::{NewSite, PageQuery, SiteListItem, SitePage, SitePatch, SiteView};
use crate::routes::page::{self, page_size};

/// Longest interval, seconds (the column's bound).
pub const MAX_INTERVAL_SECS: i32 = 86_400;
/// Per-check timeout bounds, ms.
pub const TIMEOUT_MS: std::ops::RangeInclusive<i32> = 100..=60_000;
fn check_name(name: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(n) = name else { return Ok(None) };
    let n = n.trim().to_string();
    if n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must be at most 100 characters without control characters",
        ));
    }
    Ok((!n.is_empty()).then_some(n))
}

/// Name lookups for URL checks running at once, per replica. The system
/// resolver blocks a thread until it gives up (which a dead name server
/// can make long), so lookups run on threads of their own, at most this
/// many; more wait, and give up with the request.
pub const MAX_LOOKUPS: usize = 8;

static LOOKUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_LOOKUPS);

/// The addresses of `host` (empty if it does not resolve within 3 s).
async fn resolve(host: &str) -> Result<Vec<std::net::IpAddr>, ApiError> {
    use std::net::ToSocketAddrs;
    let permit = tokio::time::timeout(std::time::Duration::from_secs(3), LOOKUPS.acquire())
        .await
        .map_err(|_| ApiError::unavailable())?
        .map_err(|_| ApiError::internal())?;
    permit.forget();
    let host = host.to_string();
    // The permit goes back when the lookup ends, not when the request does.
    let lookup = tokio::task::spawn_blocking(move || {
        let found = (host.as_str(), 0)
            .to_socket_addrs()
            .map(|a| a.map(|a| a.ip()).collect::<Vec<_>>())
            .unwrap_or_default();
        LOOKUPS.add_permits(1);
        found
    });
    Ok(
        tokio::time::timeout(std::time::Duration::from_secs(3), lookup)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
    )
}

/// Checks a URL as validators will: the shape (http/https, host, no
/// credentials, length, port), then the address. A name is resolved and
/// refused when every address it has is private; a name that does not
/// resolve (yet) is accepted: its checks will say `down`.
pub async fn check_url(raw: &str, allow_private: bool) -> Result<WebsiteUrl, ApiError> {
    let url = WebsiteUrl::parse(raw).map_err(|e| ApiError::invalid("url", e.to_string()))?;
    let policy = TargetPolicy::new(allow_private);
    let parsed =
        url::Url::parse(url.as_str()).map_err(|e| ApiError::invalid("url", e.to_string()))?;
    policy
        .check_url(&parsed)
        .map_err(|e| ApiError::invalid("url", e.to_string()))?;
    if allow_private {
        return Ok(url);
    }
    if let Some(url::Host::Domain(host)) = parsed.host() {
        let addrs = resolve(host).await?;
        if !addrs.is_empty() && addrs.iter().all(|ip| policy.check(*ip).is_err()) {
            // The address is not echoed: it would tell anyone what names
            // resolve to inside this service's network.
            return Err(ApiError::invalid(
                "url",
                format!("{host} resolves only to private/loopback/link-local addresses"),
            ));
        }
    }
    Ok(url)
}

/// Checks every setting against the service's and the account's bounds.
async fn validate(state: &AppState, account: &Account, s: Draft) -> Result<SiteSettings, ApiError> {
    let url = check_url(&s.url, state.settings.allow_private_targets).await?;
    let floor = account
        .min_interval_secs
        .max(state.settings.min_interval_secs);
    if !(floor..=MAX_INTERVAL_SECS).contains(&s.interval_secs) {
        return Err(ApiError::invalid(
            "interval_secs",
            format!("must be {floor} to {MAX_INTERVAL_SECS} seconds for this account"),
        ));
    }
    let max_timeout = (*TIMEOUT_MS.end()).min(s.interval_secs.saturating_mul(1000));
    if !(*TIMEOUT_MS.start()..=max_timeout).contains(&s.timeout_ms) {
        return Err(ApiError::invalid(
            "timeout_ms",
            format!(
                "must be {} to {max_timeout} ms (at most the interval)",
                TIMEOUT_MS.start()
            ),
        ));
    }
    for (field, v) in [
        ("expected_status_min", s.expected_status_min),
        ("expected_status_max", s.expected_status_max),
    ] {
        if !(100..=599).contains(&v) {
            return Err(ApiError::invalid(
                field,
                "must be an HTTP status, 100 to 599",
            ));
        }
    }
    if s.expected_status_min > s.expected_status_max {
        return Err(ApiError::invalid(
            "expected_status_max",
            "must be at least expected_status_min",
        ));
    }
    if let Some(k) = &s.keyword {
        store::check_keyword(k).map_err(|e| ApiError::invalid("keyword", e.to_string()))?;
        if k.is_empty() {
            return Err(ApiError::invalid(
                "keyword",
                "must not be empty (send null for none)",
            ));
        }
    }
    if let Some(t) = s.latency_threshold_ms {
        if !(1..=120_000).contains(&t) {
            return Err(ApiError::invalid(
                "latency_threshold_ms",
                "must be 1 to 120000 ms (or null: no latency alerts)",
            ));
        }
    }
    if !(1..=100).contains(&s.latency_alert_rounds) {
        return Err(ApiError::invalid(
            "latency_alert_rounds",
            "must be 1 to 100 rounds",
        ));
    }
    Ok(SiteSettings {
        name: check_name(s.name)?,
        url,
        interval_secs: s.interval_secs,
        timeout_ms: s.timeout_ms,
        expected_status_min: s.expected_status_min,
        expected_status_max: s.expected_status_max,
        keyword: s.keyword,
        follow_redirects: s.follow_redirects,
        latency_threshold_ms: s.latency_threshold_ms,
        latency_alert_rounds: s.latency_alert_rounds,
    })
}

/// Settings before validation.
struct Draft {
    name: Option<String>,
    url: String,
    interval_secs: i32,
    timeout_ms: i32,
    expected_status_min: i16,
    expected_status_max: i16,
    keyword: Option<String>,
    follow_redirects: bool,
    latency_threshold_ms: Option<i32>,
    latency_alert_rounds: i32,
}

/// Add a website. It is checked from its next slot (within a second of
/// the response, by the hub that owns it).
#[utoipa::path(post, path = "/v1/websites", tag = "websites", request_body = NewSite,
    responses(
        (status = 201, body = SiteView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `csrf_failed`, `quota_exceeded`", body = ErrorBody),
        (status = 422, description = "`invalid_field`", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Json(n): Json<NewSite>,
) -> ApiResult<(StatusCode, axum::Json<SiteView>)> {
    let a = &caller.account;
    let draft = Draft {
        name: n.name,
        url: n.url,
        interval_secs: n.interval_secs.unwrap_or(
            60.max(a.min_interval_secs)
                .max(state.settings.min_interval_secs),
        ),
        timeout_ms: n.timeout_ms.unwrap_or(10_000),
        expected_status_min: n.expected_status_min.unwrap_or(200),
        expected_status_max: n.expected_status_max.unwrap_or(399),
        keyword: n.keyword,
        follow_redirects: n.follow_redirects.unwrap_or(true),
        latency_threshold_ms: n.latency_threshold_ms,
        latency_alert_rounds: n.latency_alert_rounds.unwrap_or(3),
    };
    // The cheap refusal first: an account at its quota costs no lookup.
    if state.store.count_owned_sites(a.id).await? >= i64::from(a.max_sites) {
        return Err(quota_exceeded(a.max_sites));
    }
    let settings = validate(&state, a, draft).await?;
    match state.store.create_owned_site(a.id, &settings).await? {
        Ok(site) => {
            tracing::info!(account = a.id.0, website = site.id.0, "website created");
            Ok((StatusCode::CREATED, axum::Json(SiteView::from(&site))))
        }
        Err(store::QuotaReached { max_sites }) => Err(quota_exceeded(max_sites)),
    }
}

fn quota_exceeded(max_sites: i32) -> ApiError {
    ApiError::forbidden(
        "quota_exceeded",
        format!(
            "this account may have {max_sites} websites; delete one or ask the operator for more"
        ),
    )
}

/// The account's websites in id order, a page at a time, each with its
/// uptime over the last 24 hours.
#[utoipa::path(get, path = "/v1/websites", tag = "websites", params(PageQuery),
    responses(
        (status = 200, body = SitePage),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 422, description = "`invalid_field` (cursor, limit)", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<SitePage>> {
    let limit = page_size(q.limit)?;
    let after = page::after(q.cursor.as_deref())?.map(WebsiteId);
    let sites = state
        .store
        .owned_sites(caller.account.id, after, limit + 1)
        .await?;
    let (sites, next_cursor) = page::cut(sites, limit, |s| s.id.0.to_string());
    let ids: Vec<WebsiteId> = sites.iter().map(|s| s.id).collect();
    let uptime = state.store.uptime_24h_for_sites(&ids).await?;
    Ok(axum::Json(SitePage {
        items: sites
            .iter()
            .zip(uptime)
            .map(|(s, (_, c))| SiteListItem {
                site: SiteView::from(s),
                uptime_24h_pct: (c.decided > 0).then(|| c.up as f64 * 100.0 / c.decided as f64),
            })
            .collect(),
        next_cursor,
    }))
}

/// The caller's site, or 404 (also for another account's site).
pub async fn owned(
    state: &AppState,
    account: &Account,
    id: i64,
) -> Result<store::OwnedSite, ApiError> {
    state
        .store
        .owned_site(account.id, WebsiteId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("website"))
}

#[utoipa::path(get, path = "/v1/websites/{id}", tag = "websites", params(("id" = i64, Path)),
    responses(
        (status = 200, body = SiteView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<SiteView>> {
    Ok(axum::Json(SiteView::from(
        &owned(&state, &caller.account, id).await?,
    )))
}

/// Change some settings; absent fields keep their value.
#[utoipa::path(patch, path = "/v1/websites/{id}", tag = "websites", params(("id" = i64, Path)),
    request_body = SitePatch,
    responses(
        (status = 200, body = SiteView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `csrf_failed`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field`", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<i64>,
    Json(p): Json<SitePatch>,
) -> ApiResult<axum::Json<SiteView>> {
    let cur = owned(&state, &caller.account, id).await?;
    let draft = Draft {
        name: p.name.unwrap_or(cur.name),
        url: p.url.unwrap_or(cur.url),
        interval_secs: p.interval_secs.unwrap_or(cur.interval_secs),
        timeout_ms: p.timeout_ms.unwrap_or(cur.timeout_ms),
        expected_status_min: p.expected_status_min.unwrap_or(cur.expected_status_min),
        expected_status_max: p.expected_status_max.unwrap_or(cur.expected_status_max),
        keyword: p.keyword.unwrap_or(cur.keyword),
        follow_redirects: p.follow_redirects.unwrap_or(cur.follow_redirects),
        latency_threshold_ms: p.latency_threshold_ms.unwrap_or(cur.latency_threshold_ms),
        latency_alert_rounds: p.latency_alert_rounds.unwrap_or(cur.latency_alert_rounds),
    };
    let settings = validate(&state, &caller.account, draft).await?;
    let site = state
        .store
        .update_owned_site(caller.account.id, WebsiteId(id), &settings)
        .await?
        .ok_or_else(|| ApiError::not_found("website"))?;
    Ok(axum::Json(SiteView::from(&site)))
}

async fn set_paused(
    state: AppState,
    caller: &Account,
    id: i64,
    paused: bool,
) -> ApiResult<axum::Json<SiteView>> {
    let site = state
        .store
        .set_owned_site_paused(caller.id, WebsiteId(id), paused)
        .await?
        .ok_or_else(|| ApiError::not_found("website"))?;
    Ok(axum::Json(SiteView::from(&site)))
}

/// Stop checking a site (its history stays).
#[utoipa::path(post, path = "/v1/websites/{id}/pause", tag = "websites", params(("id" = i64, Path)),
    responses(
        (status = 200, body = SiteView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `csrf_failed`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn pause(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<SiteView>> {
    set_paused(state, &caller.account, id, true).await
}

/// Check a paused site again.
#[utoipa::path(post, path = "/v1/websites/{id}/resume", tag = "websites", params(("id" = i64, Path)),
    responses(
        (status = 200, body = SiteView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `csrf_failed`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<SiteView>> {
    set_paused(state, &caller.account, id, false).await
}

/// Delete a site: it is no longer checked or shown; its rounds and results
/// are kept until retention removes them, so validators are still paid for
/// work already done.
#[utoipa::path(delete, path = "/v1/websites/{id}", tag = "websites", params(("id" = i64, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `csrf_failed`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    if state
        .store
        .delete_owned_site(caller.account.id, WebsiteId(id))
        .await?
    {
        tracing::info!(
            account = caller.account.id.0,
            website = id,
            "website deleted"
        );
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("website"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_are_checked_as_validators_check_them() {
        for (bad, why) in [
            ("ftp://example.com/", "scheme"),
            ("http://user:pw@example.com/", "credentials"),
            ("http://127.0.0.1:8080/", "private"),
            ("http://[::1]/", "private"),
            ("http://169.254.169.254/latest/meta-data", "private"),
            ("http://example.com:25/", "port 25"),
            ("http://localhost:8080/", "private"),
        ] {
            let e = check_url(bad, false).await.unwrap_err();
            assert_eq!(e.field, Some("url"), "{bad}");
            assert!(e.message.contains(why), "{bad}: {}", e.message);
        }
        assert!(check_url("http://127.0.0.1:8080/", true).await.is_ok());
        assert!(check_url("https://203.0.113.10/", false).await.is_ok());
    }
}
