//! What a site shows: status, uptime, latency, rounds, results and the
//! validators that checked it. Each handler first checks that the site is
//! the caller's (404 otherwise), then reads by the site's id.

use axum::extract::State;
use store::{RoundId, WebsiteId};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Reader;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Path, Query};
use crate::model::*;
use crate::routes::page::{self, page_size};
use crate::routes::sites::owned;

/// Uptime windows, as (label, seconds).
pub const UPTIME_WINDOWS: [(&str, i64); 4] = [
    ("24h", 86_400),
    ("7d", 7 * 86_400),
    ("30d", 30 * 86_400),
    ("90d", 90 * 86_400),
];

/// The latest decided round and each region's latest result.
#[utoipa::path(get, path = "/v1/websites/{id}/status", tag = "reads", params(("id" = i64, Path)),
    responses(
        (status = 200, body = StatusView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn status(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<StatusView>> {
    let site = owned(&state, &caller.account, id).await?;
    let (last, regions, incident, degraded) = tokio::try_join!(
        state.store.latest_round(site.id),
        state.store.latest_by_region(site.id, 86_400),
        state.store.incident_state(site.id),
        state.store.open_degradations(site.id),
    )?;
    let status = match (&last, site.paused) {
        (_, true) => "paused".to_string(),
        (Some(r), false) => r.status.clone(),
        (None, false) => "pending".to_string(),
    };
    Ok(axum::Json(StatusView {
        website_id: id,
        incident_state: incident
            .as_ref()
            .map_or_else(|| "unknown".to_string(), |i| i.status.clone()),
        open_incident: incident.and_then(|i| i.open_incident),
        degraded_regions: degraded
            .into_iter()
            .map(|(region, since_ms)| DegradedRegion { region, since_ms })
            .collect(),
        status,
        last_round: last.map(|r| RoundRef {
            round_id: r.round_id.0,
            status: r.status,
            scheduled_at_ms: r.scheduled_at_ms,
            closed_at_ms: r.closed_at_ms,
        }),
        regions: regions
            .into_iter()
            .map(|c| RegionCheckView {
                region: c.region,
                validator: c.validator,
                up: c.up,
                http_status: c.http_status,
                latency_ms: c.latency_ms,
                error: c.error,
                checked_at_ms: c.checked_at_ms,
                round_id: c.round_id.0,
            })
            .collect(),
    }))
}

/// Uptime over 24 h, 7 d, 30 d and 90 d, from round decisions: read from
/// the rollups plus the closed rounds not rolled up yet. Each window starts
/// at the bucket boundary at or before its length ago (5 minutes for 24 h,
/// an hour for 7 d and 30 d, a day for 90 d).
#[utoipa::path(get, path = "/v1/websites/{id}/uptime", tag = "reads", params(("id" = i64, Path)),
    responses(
        (status = 200, body = UptimeView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn uptime(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<UptimeView>> {
    let site = owned(&state, &caller.account, id).await?;
    let counts = state
        .store
        .uptime_counts(site.id, UPTIME_WINDOWS.map(|(_, s)| s))
        .await?;
    Ok(axum::Json(UptimeView {
        website_id: id,
        windows: UPTIME_WINDOWS
            .iter()
            .zip(counts)
            .map(|((label, _), c)| UptimeWindow {
                window: (*label).to_string(),
                uptime_pct: (c.decided > 0).then(|| c.up as f64 * 100.0 / c.decided as f64),
                rounds_up: c.up,
                rounds_decided: c.decided,
                rounds_unknown: c.unknown,
            })
            .collect(),
    }))
}

/// Latency percentiles of `up` results per region, estimated from the
/// rollups' histograms and the results of closed rounds not rolled up yet
/// (docs/api.md gives the error bound).
#[utoipa::path(get, path = "/v1/websites/{id}/latency", tag = "reads",
    params(("id" = i64, Path), WindowQuery),
    responses(
        (status = 200, body = LatencyView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn latency(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<i64>,
    Query(q): Query<WindowQuery>,
) -> ApiResult<axum::Json<LatencyView>> {
    let w = q.window.unwrap_or_default();
    let (label, secs) = (w.label(), w.secs());
    let site = owned(&state, &caller.account, id).await?;
    let regions = state.store.latency_by_region(site.id, secs).await?;
    Ok(axum::Json(LatencyView {
        website_id: id,
        window: label.to_string(),
        regions: regions
            .into_iter()
            .map(|r| RegionLatencyView {
                region: r.region,
                results: r.results,
                p50_ms: r.p50_ms,
                p95_ms: r.p95_ms,
                p99_ms: r.p99_ms,
            })
            .collect(),
    }))
}

/// Rounds, newest first, each with its results.
#[utoipa::path(get, path = "/v1/websites/{id}/rounds", tag = "reads",
    params(("id" = i64, Path), PageQuery),
    responses(
        (status = 200, body = RoundPage),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field` (cursor, limit)", body = ErrorBody),
    ))]
pub async fn rounds(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<i64>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<RoundPage>> {
    let limit = page_size(q.limit)?;
    let before = page::before(q.cursor.as_deref())?.map(|(ms, id)| (ms, RoundId(id)));
    let site = owned(&state, &caller.account, id).await?;
    let rows = state.store.round_page(site.id, before, limit + 1).await?;
    let (rows, next_cursor) = page::cut(rows, limit, |r| {
        format!("{}:{}", r.scheduled_at_ms, r.round_id.0)
    });
    Ok(axum::Json(RoundPage {
        items: rows
            .iter()
            .map(|r| RoundView {
                id: r.round_id.0,
                status: r.status.clone(),
                scheduled_at_ms: r.scheduled_at_ms,
                deadline_ms: r.deadline_ms,
                closed_at_ms: r.closed_at_ms,
                results: r.results.iter().map(TickView::from).collect(),
            })
            .collect(),
        next_cursor,
    }))
}

/// Results (ticks), newest first.
#[utoipa::path(get, path = "/v1/websites/{id}/results", tag = "reads",
    params(("id" = i64, Path), PageQuery),
    responses(
        (status = 200, body = TickPage),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field` (cursor, limit)", body = ErrorBody),
    ))]
pub async fn results(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<i64>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<TickPage>> {
    let limit = page_size(q.limit)?;
    let before = page::before::<Uuid>(q.cursor.as_deref())?;
    let site = owned(&state, &caller.account, id).await?;
    let rows = state.store.tick_page(site.id, before, limit + 1).await?;
    let (rows, next_cursor) = page::cut(rows, limit, |t| {
        format!("{}:{}", t.scheduled_at_ms, t.task_id)
    });
    Ok(axum::Json(TickPage {
        items: rows.iter().map(TickView::from).collect(),
        next_cursor,
    }))
}

/// The validators that checked the site, most results first (at most 100).
#[utoipa::path(get, path = "/v1/websites/{id}/validators", tag = "reads",
    params(("id" = i64, Path), WindowQuery),
    responses(
        (status = 200, body = SiteValidators),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn validators(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<i64>,
    Query(q): Query<WindowQuery>,
) -> ApiResult<axum::Json<SiteValidators>> {
    let w = q.window.unwrap_or_default();
    let (label, secs) = (w.label(), w.secs());
    let site = owned(&state, &caller.account, id).await?;
    let rows = state
        .store
        .site_validators(WebsiteId(site.id.0), secs, 100)
        .await?;
    Ok(axum::Json(SiteValidators {
        website_id: id,
        window: label.to_string(),
        items: rows
            .into_iter()
            .map(|v| SiteValidatorView {
                public_key: v.public_key,
                region: v.region,
                results: v.results,
                last_checked_at_ms: v.last_checked_at_ms,
            })
            .collect(),
    }))
}

/// Incidents, newest first: when each started and ended and what each
/// region saw when it opened.
#[utoipa::path(get, path = "/v1/websites/{id}/incidents", tag = "reads",
    params(("id" = i64, Path), PageQuery),
    responses(
        (status = 200, body = IncidentPage),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field` (cursor, limit)", body = ErrorBody),
    ))]
pub async fn incidents(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<i64>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<IncidentPage>> {
    let limit = page_size(q.limit)?;
    let before = page::before(q.cursor.as_deref())?;
    let site = owned(&state, &caller.account, id).await?;
    let rows = state
        .store
        .incident_page(site.id, before, limit + 1)
        .await?;
    let (rows, next_cursor) = page::cut(rows, limit, |i| format!("{}:{}", i.started_at_ms, i.id));
    Ok(axum::Json(IncidentPage {
        items: rows
            .iter()
            .map(|i| IncidentView {
                id: i.id,
                started_at_ms: i.started_at_ms,
                opened_at_ms: i.opened_at_ms,
                resolved_at_ms: i.resolved_at_ms,
                // Written by the database's own jsonb_build_object.
                regions: serde_json::from_str(&i.regions_json).unwrap_or_default(),
            })
            .collect(),
        next_cursor,
    }))
}
