//! What the browser dashboard reads beyond the REST resources: an account's
//! sites at a glance, the live feed of their state changes (Server-Sent
//! Events), daily uptime and latency over time, the status page settings,
//! badges, and a validator's earnings. The public pages (status pages and
//! badges) are in `routes::public`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{Stream, StreamExt};
use store::{AccountId, SiteChange, StatusPageRefused, WebsiteId};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::auth::{random_token, Reader, Writer};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::model::*;
use crate::routes::sites::owned;

/// Sites the overview lists (an account's quota is far below it).
const OVERVIEW_LIMIT: i64 = 1_000;
/// Live-update streams one account may hold open on one replica.
const STREAMS_PER_ACCOUNT: usize = 20;
/// Live-update streams one replica holds open at most.
const STREAMS_PER_REPLICA: usize = 10_000;
/// A stream ends after this long; the browser reconnects, and its session
/// or key is checked again (a stream must not outlive a sign-out or a
/// revoked key).
const STREAM_LIFETIME: Duration = Duration::from_secs(600);
/// Changes buffered for a slow browser before it misses some (it then
/// reloads the list).
const FEED_BUFFER: usize = 1_024;

/// The live feed: one LISTEN per replica, fanned out to every open stream,
/// each keeping its account's changes.
/// What the fan-out carries: a change, or word that changes may have been
/// missed (the database connection was lost): every stream then tells its
/// browser to reload.
#[derive(Clone)]
enum Feed {
    Change(SiteChange),
    Resync,
}

pub struct Live {
    tx: broadcast::Sender<Feed>,
    open: Mutex<HashMap<AccountId, usize>>,
    /// Cancelled when the server starts shutting down: every open stream
    /// ends then (a graceful shutdown waits for open responses).
    pub closing: CancellationToken,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(FEED_BUFFER).0,
            open: Mutex::new(HashMap::new()),
            closing: CancellationToken::new(),
        }
    }
}

impl Live {
    /// Listens for changes until `stop`, reconnecting after a failure
    /// (streams open meanwhile miss nothing they cannot recover: a browser
    /// reloads the list when its stream reconnects).
    pub async fn run(self: Arc<Self>, store: store::Store, stop: CancellationToken) {
        let mut wait = Duration::from_millis(100);
        loop {
            match store.site_changes().await {
                Ok(changes) => {
                    wait = Duration::from_millis(100);
                    let mut changes = std::pin::pin!(changes);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            c = changes.next() => match c {
                                Some(Some(c)) => { let _ = self.tx.send(Feed::Change(c)); }
                                // Reconnecting: some changes may be lost.
                                Some(None) => { let _ = self.tx.send(Feed::Resync); }
                                None => break,
                            },
                        }
                    }
                    tracing::warn!("the live feed's database connection ended; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "listening for site changes failed"),
            }
            let _ = self.tx.send(Feed::Resync);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }

    fn enter(self: &Arc<Self>, account: AccountId) -> Option<StreamSlot> {
        let mut open = self.open.lock().expect("not poisoned");
        if open.values().sum::<usize>() >= STREAMS_PER_REPLICA {
            return None;
        }
        let n = open.entry(account).or_default();
        if *n >= STREAMS_PER_ACCOUNT {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            live: self.clone(),
            account,
        })
    }
}

/// One open stream, counted until dropped.
struct StreamSlot {
    live: Arc<Live>,
    account: AccountId,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.live.open.lock().expect("not poisoned");
        if let Some(n) = open.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.account);
            }
        }
    }
}

/// Every site of the caller's account with its live state, last checks,
/// 24 h uptime and latency sparkline: what the dashboard's list shows, in
/// one request.
#[utoipa::path(get, path = "/v1/overview", tag = "dashboard",
    responses(
        (status = 200, body = Overview),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ))]
pub async fn overview(
    State(state): State<AppState>,
    Reader(caller): Reader,
) -> ApiResult<axum::Json<Overview>> {
    let sites = state
        .store
        .site_glances(caller.account.id, OVERVIEW_LIMIT)
        .await?;
    let ids: Vec<WebsiteId> = sites.iter().map(|s| s.id).collect();
    let uptime = state.store.uptime_24h_for_sites(&ids).await?;
    Ok(axum::Json(Overview {
        sites: sites
            .into_iter()
            .zip(uptime)
            .map(|(s, (_, u))| SiteGlanceView {
                id: s.id.0,
                name: s.name,
                url: s.url,
                paused: s.paused,
                interval_secs: s.interval_secs,
                latest: s.latest.map(|(status, at)| LatestView {
                    status,
                    scheduled_at_ms: at,
                }),
                state: StateView {
                    status: s.state,
                    open_incident: s.open_incident.map(|(id, since)| OpenIncidentView {
                        id,
                        started_at_ms: since,
                    }),
                },
                regions: s
                    .regions
                    .into_iter()
                    .map(|c| GlanceCheckView {
                        region: c.region,
                        up: c.up,
                        http_status: c.http_status,
                        latency_ms: c.latency_ms,
                        checked_at_ms: c.checked_at_ms,
                        error: c.error,
                    })
                    .collect(),
                uptime_24h_pct: (u.decided > 0).then(|| u.up as f64 * 100.0 / u.decided as f64),
                sparkline: s.sparkline,
            })
            .collect(),
    }))
}

/// `GET /v1/events`: Server-Sent Events, one `site` event per change of a
/// site's latest round status, confirmed state or open incident (not one
/// per round), and a comment every 15 s to keep proxies from closing it.
/// Not in the OpenAPI document (a stream); described in docs/api.md.
pub async fn events(State(state): State<AppState>, Reader(caller): Reader) -> Response {
    let account = caller.account.id;
    let Some(slot) = state.live.enter(account) else {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "at most {STREAMS_PER_ACCOUNT} live-update streams per account at once (and \
                 {STREAMS_PER_REPLICA} per server); close one or retry later"
            ),
        )
        .into_response();
    };
    let rx = state.live.tx.subscribe();
    let stream = feed(rx, account, slot);
    let hello = futures_util::stream::once(async {
        Ok::<_, Infallible>(Event::default().event("hello").data("{}"))
    });
    let closing = state.live.closing.clone().cancelled_owned();
    let expired = tokio::time::sleep(STREAM_LIFETIME);
    Sse::new(hello.chain(stream).take_until(closing).take_until(expired))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn feed(
    rx: broadcast::Receiver<Feed>,
    account: AccountId,
    slot: StreamSlot,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((rx, slot), move |(mut rx, slot)| async move {
        loop {
            match rx.recv().await {
                Ok(Feed::Change(c)) if c.account == account => {
                    let data = serde_json::json!({
                        "website_id": c.website.0,
                        "latest_status": c.latest,
                        "state_status": c.state,
                        "open_incident_id": c.open_incident,
                        "at_ms": c.at_ms,
                    });
                    let ev = Event::default().event("site").data(data.to_string());
                    return Some((Ok(ev), (rx, slot)));
                }
                Ok(Feed::Change(_)) => continue,
                // Changes may have been missed (the database connection was
                // lost, or this stream fell behind): the browser reloads.
                Ok(Feed::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let ev = Event::default().event("reload").data("{}");
                    return Some((Ok(ev), (rx, slot)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Round decisions per UTC day, oldest first, for the uptime bars.
#[utoipa::path(get, path = "/v1/websites/{id}/uptime/daily", tag = "reads",
    params(("id" = i64, Path), DaysQuery),
    responses(
        (status = 200, body = DailyUptime),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field` (days)", body = ErrorBody),
    ))]
pub async fn uptime_daily(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<i64>,
    Query(q): Query<DaysQuery>,
) -> ApiResult<axum::Json<DailyUptime>> {
    let days = q.days.unwrap_or(90);
    if !(1..=365).contains(&days) {
        return Err(ApiError::invalid("days", "days must be 1 to 365"));
    }
    let site = owned(&state, &caller.account, id).await?;
    let rows = state.store.daily_uptime(site.id, days as i32).await?;
    Ok(axum::Json(DailyUptime {
        website_id: id,
        days: rows.into_iter().map(DayView::from).collect(),
    }))
}

/// Latency per region over time (p50 and p95 per rollup bucket).
#[utoipa::path(get, path = "/v1/websites/{id}/latency/series", tag = "reads",
    params(("id" = i64, Path), SeriesQuery),
    responses(
        (status = 200, body = LatencySeries),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn latency_series(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<i64>,
    Query(q): Query<SeriesQuery>,
) -> ApiResult<axum::Json<LatencySeries>> {
    let w = q.window.unwrap_or_default();
    let site = owned(&state, &caller.account, id).await?;
    let regions = state
        .store
        .latency_series(site.id, w.secs(), w.bucket_secs())
        .await?;
    Ok(axum::Json(LatencySeries {
        website_id: id,
        window: w.label().to_string(),
        bucket_secs: w.bucket_secs(),
        regions: regions
            .into_iter()
            .map(|r| RegionSeriesView {
                region: r.region,
                points: r.points,
            })
            .collect(),
    }))
}

/// The account's public status page settings.
#[utoipa::path(get, path = "/v1/status-page", tag = "status pages",
    responses(
        (status = 200, body = StatusPageView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ))]
pub async fn status_page(
    State(state): State<AppState>,
    Reader(caller): Reader,
) -> ApiResult<axum::Json<StatusPageView>> {
    let (page, ids) = state.store.status_page(caller.account.id).await?;
    Ok(axum::Json(StatusPageView::new(page, ids)))
}

/// Sets the status page: its URL slug, title, whether it is public, and
/// exactly which sites it shows.
#[utoipa::path(put, path = "/v1/status-page", tag = "status pages",
    request_body = StatusPageInput,
    responses(
        (status = 200, body = StatusPageView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `csrf_failed`", body = ErrorBody),
        (status = 409, description = "`slug_taken`", body = ErrorBody),
        (status = 422, description = "`invalid_field` (slug, title, website_ids)", body = ErrorBody),
    ))]
pub async fn save_status_page(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Json(input): Json<StatusPageInput>,
) -> ApiResult<axum::Json<StatusPageView>> {
    let slug = input
        .slug
        .as_deref()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !valid_slug(&slug) {
        return Err(ApiError::invalid(
            "slug",
            "slug must be 3 to 40 characters: lowercase letters, digits and '-', \
             starting and ending with a letter or digit",
        ));
    }
    let title = input.title.trim().to_string();
    if title.is_empty() || title.chars().count() > 100 || title.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "title",
            "title must be 1 to 100 characters, without control characters",
        ));
    }
    if input.website_ids.len() > OVERVIEW_LIMIT as usize {
        return Err(ApiError::invalid("website_ids", "too many sites"));
    }
    let ids: Vec<WebsiteId> = input.website_ids.iter().map(|i| WebsiteId(*i)).collect();
    let (before, _) = state.store.status_page(caller.account.id).await?;
    let page = store::StatusPage {
        slug,
        title,
        enabled: input.enabled,
    };
    match state
        .store
        .save_status_page(caller.account.id, &page, &ids)
        .await?
    {
        Ok(()) => {}
        Err(StatusPageRefused::SlugTaken) => {
            return Err(ApiError::conflict(
                "slug_taken",
                "another account's status page has this slug",
            )
            .with_field("slug"))
        }
        Err(StatusPageRefused::UnknownSite(id)) => {
            return Err(ApiError::invalid(
                "website_ids",
                format!("no website {id} in this account"),
            ))
        }
    }
    for p in before.iter().chain([&page]) {
        state.public.forget_page(&p.slug);
    }
    let (page, ids) = state.store.status_page(caller.account.id).await?;
    Ok(axum::Json(StatusPageView::new(page, ids)))
}

/// A slug: 3 to 40 of `[a-z0-9-]`, starting and ending with a letter or
/// digit (as the table's check says).
fn valid_slug(s: &str) -> bool {
    let b = s.as_bytes();
    (3..=40).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Makes a new badge token for the site (the old one stops working) and
/// returns the badge URLs.
#[utoipa::path(post, path = "/v1/websites/{id}/badge", tag = "status pages",
    params(("id" = i64, Path)),
    responses(
        (status = 200, body = BadgeView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `csrf_failed`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn make_badge(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<BadgeView>> {
    let site = owned(&state, &caller.account, id).await?;
    let token = random_token();
    if !state
        .store
        .set_badge_token(caller.account.id, site.id, Some(&token))
        .await?
    {
        return Err(ApiError::not_found("website"));
    }
    if let Some(old) = &site.badge_token {
        state.public.forget_badges(old);
    }
    Ok(axum::Json(BadgeView::for_token(&token)))
}

/// Turns the site's badges off.
#[utoipa::path(delete, path = "/v1/websites/{id}/badge", tag = "status pages",
    params(("id" = i64, Path)),
    responses(
        (status = 204, description = "badges off"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `csrf_failed`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn delete_badge(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    let site = owned(&state, &caller.account, id).await?;
    if !state
        .store
        .set_badge_token(caller.account.id, site.id, None)
        .await?
    {
        return Err(ApiError::not_found("website"));
    }
    if let Some(old) = &site.badge_token {
        state.public.forget_badges(old);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A validator's earnings and payouts, as the hubs' own endpoint serves
/// them (docs/protocol.md, "HTTP: earnings"); public, like the chain.
#[utoipa::path(get, path = "/v1/validators/{public_key}/earnings", tag = "validators",
    params(("public_key" = String, Path, description = "base58 ed25519 public key")),
    responses(
        (status = 200, body = Object, description = "protocol::api::Earnings (docs/protocol.md)"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field` (public_key)", body = ErrorBody),
    ))]
pub async fn earnings(
    State(state): State<AppState>,
    Path(public_key): Path<String>,
) -> ApiResult<axum::Json<protocol::api::Earnings>> {
    let key = protocol::PublicKey::from_base58(&public_key)
        .ok_or_else(|| ApiError::invalid("public_key", "not a base58 ed25519 public key"))?;
    let e = state
        .store
        .earnings_summary(&key.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("validator"))?;
    Ok(axum::Json(e.into()))
}

#[cfg(test)]
mod tests {
    use super::valid_slug;

    #[test]
    fn slugs() {
        for ok in ["abc", "acme-status", "a1b", &"a".repeat(40)] {
            assert!(valid_slug(ok), "{ok}");
        }
        for bad in ["ab", "-ab", "ab-", "Ab c", "ab_c", "é-ab", &"a".repeat(41)] {
            assert!(!valid_slug(bad), "{bad}");
        }
    }
}
