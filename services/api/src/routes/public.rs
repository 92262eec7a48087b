//! Pages anyone may read: an account's status page (`/status/{slug}`,
//! server-rendered HTML that needs no JavaScript) and a site's SVG badges
//! (`/badge/{token}/status.svg`, `/badge/{token}/uptime.svg`), plus the
//! dashboard's static files (`/app/`). Not in the OpenAPI document (not
//! JSON); described in docs/api.md. Nothing here names an account, an
//! email or a site's URL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use store::{PublicSite, WebsiteId};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;

/// Incidents a status page lists.
const STATUS_PAGE_INCIDENTS: i64 = 50;
/// The dashboard and the status pages load nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

#[derive(rust_embed::Embed)]
#[folder = "assets/"]
struct Assets;

/// Rendered public pages and badges, kept for as long as clients may cache
/// them (`API_PUBLIC_CACHE_SECS`): anyone may ask for them at any rate, so
/// each is built from the database at most once per that long per replica.
pub struct PublicCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Bytes)>>,
}

/// Pages and badges kept at most (past it, expired ones go, then all).
const CACHE_ENTRIES: usize = 10_000;

impl PublicCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Cache-Control` for what it keeps.
    fn cache_control(&self) -> String {
        format!("public, max-age={}", self.ttl.as_secs())
    }

    fn get(&self, key: &str) -> Option<Bytes> {
        let entries = self.entries.lock().expect("not poisoned");
        let (at, body) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| body.clone())
    }

    /// Drops what this replica keeps of a status page (by slug) or of a
    /// site's badges (by token), after its owner changed it; other replicas
    /// serve theirs until it expires.
    pub fn forget_page(&self, slug: &str) {
        self.entries
            .lock()
            .expect("not poisoned")
            .remove(&format!("status:{slug}"));
    }

    pub fn forget_badges(&self, token: &str) {
        let mut entries = self.entries.lock().expect("not poisoned");
        for kind in ["status.svg", "uptime.svg"] {
            entries.remove(&format!("badge:{token}:{kind}"));
        }
    }

    fn put(&self, key: String, body: String) -> Bytes {
        let body = Bytes::from(body);
        let mut entries = self.entries.lock().expect("not poisoned");
        if entries.len() >= CACHE_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), body.clone()));
        body
    }
}

/// `/`: the dashboard.
pub async fn root() -> Redirect {
    Redirect::to("/app/")
}

/// `/app`: the dashboard's page is `/app/`.
pub async fn app_slash() -> Redirect {
    Redirect::permanent("/app/")
}

/// `/app/`: the dashboard's page (one page; it routes by the URL's `#`).
pub async fn app_page(headers: HeaderMap) -> Response {
    asset_response("index.html", &headers)
}

/// `/app/assets/{*path}`: the dashboard's scripts, styles and vendored
/// libraries, compiled into the binary.
pub async fn asset(
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    asset_response(&path, &headers)
}

/// A compiled-in file, or `304 Not Modified` when the browser's copy (its
/// `If-None-Match`) is current.
fn asset_response(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::not_found("file").into_response();
    };
    let mime = file.metadata.mimetype().to_string();
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..12]));
    let current = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag);
    if current {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag),
                (header::CACHE_CONTROL, "no-cache".to_string()),
            ],
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, mime),
            // Revalidated on every load (a new binary has new files).
            (header::CACHE_CONTROL, "no-cache".to_string()),
            (header::ETAG, etag),
            (header::CONTENT_SECURITY_POLICY, CSP.to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::REFERRER_POLICY, "same-origin".to_string()),
        ],
        file.data.into_owned(),
    )
        .into_response()
}

struct DayBar {
    class: &'static str,
    label: String,
}

struct ServiceView {
    name: String,
    state_class: &'static str,
    state_label: &'static str,
    incident_since: Option<String>,
    days: Vec<DayBar>,
    uptime_90d: String,
}

struct IncidentLine {
    site: String,
    started: String,
    resolved: Option<String>,
    duration: String,
}

#[derive(Template)]
#[template(path = "status.html")]
struct StatusPageHtml {
    title: String,
    overall: &'static str,
    overall_class: &'static str,
    updated: String,
    sites: Vec<ServiceView>,
    incidents: Vec<IncidentLine>,
}

#[derive(Template)]
#[template(path = "badge.svg")]
struct BadgeSvg {
    label: &'static str,
    value: String,
    color: &'static str,
    width: u32,
    left: u32,
    right: u32,
    left_mid: u32,
    right_mid: u32,
}

/// `YYYY-MM-DD HH:MM` (UTC) of Unix ms.
fn when(ms: i64) -> String {
    rfc3339(ms)[..16].replace('T', " ")
}

/// `YYYY-MM-DD` (UTC) of Unix ms.
fn day(ms: i64) -> String {
    rfc3339(ms)[..10].to_string()
}

/// `YYYY-MM-DDTHH:MM:SSZ` of Unix ms (before 1970: 1970).
fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn duration(ms: i64) -> String {
    let mins = (ms / 60_000).max(1);
    match mins {
        m if m < 60 => format!("{m} min"),
        m if m < 48 * 60 => format!("{} h {} min", m / 60, m % 60),
        m => format!("{} days", m / (24 * 60)),
    }
}

/// A day's bar colour class: by its uptime, grey without data.
fn bar_class(pct: Option<f64>) -> &'static str {
    match pct {
        None => "none",
        Some(p) if p >= 99.9 => "ok",
        Some(p) if p >= 99.0 => "minor",
        Some(p) if p >= 95.0 => "major",
        Some(_) => "bad",
    }
}

fn state_of(s: &PublicSite) -> (&'static str, &'static str) {
    match (s.paused, s.state.as_str()) {
        (true, _) => ("paused", "Paused"),
        (false, "up") => ("up", "Operational"),
        (false, "down") => ("down", "Down"),
        _ => ("unknown", "No data yet"),
    }
}

/// `GET /status/{slug}`: the account's public status page, when enabled.
pub async fn status_page(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Response> {
    let slug = slug.to_ascii_lowercase();
    let key = format!("status:{slug}");
    let html = match state.public.get(&key) {
        Some(html) => html,
        None => {
            let html = render_status_page(&state, &slug).await?;
            state.public.put(key, html)
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (header::CACHE_CONTROL, state.public.cache_control()),
            (header::CONTENT_SECURITY_POLICY, CSP.to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::REFERRER_POLICY, "no-referrer".to_string()),
        ],
        html,
    )
        .into_response())
}

async fn render_status_page(state: &AppState, slug: &str) -> ApiResult<String> {
    let Some((account, title)) = state.store.status_page_by_slug(slug).await? else {
        return Err(ApiError::not_found("status page"));
    };
    let sites = state.store.public_sites(account).await?;
    let mut services = Vec::with_capacity(sites.len());
    let mut incidents = Vec::new();
    for s in &sites {
        let days = state.store.daily_uptime(s.id, 90).await?;
        let (up, decided) = days
            .iter()
            .fold((0, 0), |(u, d), c| (u + c.up, d + c.up + c.down));
        let bars = days
            .iter()
            .map(|c| {
                let decided = c.up + c.down;
                let pct = (decided > 0).then(|| c.up as f64 * 100.0 / decided as f64);
                let label = match pct {
                    Some(p) => format!(
                        "{}: {p:.2}% up ({} of {decided} rounds down)",
                        day(c.day_ms),
                        c.down
                    ),
                    None => format!("{}: no data", day(c.day_ms)),
                };
                DayBar {
                    class: bar_class(pct),
                    label,
                }
            })
            .collect();
        let (state_class, state_label) = state_of(s);
        services.push(ServiceView {
            name: s.name.clone(),
            state_class,
            state_label,
            incident_since: s.incident_since_ms.map(when),
            days: bars,
            uptime_90d: if decided > 0 {
                format!("{:.2}% uptime", up as f64 * 100.0 / decided as f64)
            } else {
                "no data".to_string()
            },
        });
        let ninety_days_ago = protocol::now_ms() - 90 * 86_400_000;
        for i in state
            .store
            .incident_page(s.id, None, STATUS_PAGE_INCIDENTS)
            .await?
            .into_iter()
            .filter(|i| i.resolved_at_ms.is_none_or(|r| r >= ninety_days_ago))
        {
            incidents.push((
                i.started_at_ms,
                IncidentLine {
                    site: s.name.clone(),
                    started: when(i.started_at_ms),
                    resolved: i.resolved_at_ms.map(when),
                    duration: i
                        .resolved_at_ms
                        .map(|r| duration(r - i.started_at_ms))
                        .unwrap_or_default(),
                },
            ));
        }
    }
    incidents.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    incidents.truncate(STATUS_PAGE_INCIDENTS as usize);
    let (overall, overall_class) = overall(&sites);
    StatusPageHtml {
        title,
        overall,
        overall_class,
        updated: when(protocol::now_ms()),
        sites: services,
        incidents: incidents.into_iter().map(|(_, i)| i).collect(),
    }
    .render()
    .map_err(|e| {
        tracing::error!(error = %e, "rendering a status page failed");
        ApiError::internal()
    })
}

/// The page's headline: paused sites aside, any down is an outage
/// (partial, or major when all are down); all without a decided state yet is
/// "no data", and nothing to show says so.
fn overall(sites: &[PublicSite]) -> (&'static str, &'static str) {
    let live: Vec<&PublicSite> = sites.iter().filter(|s| !s.paused).collect();
    let down = live.iter().filter(|s| s.state == "down").count();
    let up = live.iter().filter(|s| s.state == "up").count();
    match (sites.is_empty(), live.is_empty(), down, up) {
        (true, _, _, _) => ("No services are listed yet", "unknown"),
        (false, true, _, _) => ("Monitoring is paused", "unknown"),
        (_, _, 0, 0) => ("No data yet", "unknown"),
        (_, _, 0, _) => ("All systems operational", "up"),
        (_, _, d, _) if d == live.len() => ("Major outage", "down"),
        _ => ("Partial outage", "partial"),
    }
}

/// `GET /badge/{token}/{kind}`: `status.svg` (the state under the
/// confirmation rule) or `uptime.svg` (30 days).
pub async fn badge(
    State(state): State<AppState>,
    Path((token, kind)): Path<(String, String)>,
) -> ApiResult<Response> {
    if token.len() > 100 || !matches!(kind.as_str(), "status.svg" | "uptime.svg") {
        return Err(ApiError::not_found("badge"));
    }
    let key = format!("badge:{token}:{kind}");
    let svg = match state.public.get(&key) {
        Some(svg) => svg,
        None => {
            let svg = render_badge(&state, &token, &kind).await?;
            state.public.put(key, svg)
        }
    };
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_str(&state.public.cache_control()).expect("ASCII"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        svg,
    )
        .into_response())
}

async fn render_badge(state: &AppState, token: &str, kind: &str) -> ApiResult<String> {
    let Some((id, site_state, paused)) = state.store.site_by_badge(token).await? else {
        return Err(ApiError::not_found("badge"));
    };
    let svg = match kind {
        "status.svg" => {
            let (value, color) = match (paused, site_state.as_str()) {
                (true, _) => ("paused", "#9f9f9f"),
                (false, "up") => ("up", "#4c1"),
                (false, "down") => ("down", "#e05d44"),
                _ => ("unknown", "#9f9f9f"),
            };
            badge_svg("status", value.to_string(), color)
        }
        "uptime.svg" => {
            let c = state
                .store
                .uptime_counts(
                    WebsiteId(id.0),
                    [86_400, 7 * 86_400, 30 * 86_400, 90 * 86_400],
                )
                .await?[2];
            let (value, color) = if c.decided == 0 {
                ("no data".to_string(), "#9f9f9f")
            } else {
                let p = c.up as f64 * 100.0 / c.decided as f64;
                let color = match bar_class(Some(p)) {
                    "ok" => "#4c1",
                    "minor" => "#a4a61d",
                    "major" => "#fe7d37",
                    _ => "#e05d44",
                };
                (format!("{p:.2}%"), color)
            };
            badge_svg("uptime 30d", value, color)
        }
        _ => return Err(ApiError::not_found("badge")),
    }
    .map_err(|e| {
        tracing::error!(error = %e, "rendering a badge failed");
        ApiError::internal()
    })?;
    Ok(svg)
}

/// A flat badge, sized by a fixed per-character width (Verdana 11 px
/// averages about 7 px).
fn badge_svg(label: &'static str, value: String, color: &'static str) -> askama::Result<String> {
    let w = |s: &str| s.chars().count() as u32 * 7 + 10;
    let (left, right) = (w(label), w(&value));
    BadgeSvg {
        label,
        color,
        width: left + right,
        left,
        right,
        left_mid: left / 2,
        right_mid: left + right / 2,
        value,
    }
    .render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(when(0), "1970-01-01 00:00");
        assert_eq!(when(1_796_083_200_000 + 3_661_000), "2026-12-01 01:01");
        assert_eq!(day(951_782_400_000), "2000-02-29");
    }

    #[test]
    fn durations_and_bars() {
        assert_eq!(duration(30_000), "1 min");
        assert_eq!(duration(3_600_000 + 120_000), "1 h 2 min");
        assert_eq!(duration(3 * 86_400_000), "3 days");
        assert_eq!(bar_class(None), "none");
        assert_eq!(bar_class(Some(100.0)), "ok");
        assert_eq!(bar_class(Some(99.5)), "minor");
        assert_eq!(bar_class(Some(96.0)), "major");
        assert_eq!(bar_class(Some(50.0)), "bad");
    }

    #[test]
    fn the_headline_says_what_is_known() {
        let site = |state: &str, paused: bool| PublicSite {
            id: WebsiteId(1),
            name: "s".into(),
            state: state.into(),
            paused,
            incident_since_ms: None,
        };
        assert_eq!(overall(&[]).0, "No services are listed yet");
        assert_eq!(overall(&[site("up", true)]).0, "Monitoring is paused");
        assert_eq!(overall(&[site("unknown", false)]).0, "No data yet");
        assert_eq!(
            overall(&[site("up", false), site("down", true)]).0,
            "All systems operational"
        );
        assert_eq!(
            overall(&[site("up", false), site("down", false)]).0,
            "Partial outage"
        );
        assert_eq!(overall(&[site("down", false)]).0, "Major outage");
    }

    #[test]
    fn badges_escape_and_size() {
        let svg = badge_svg("status", "<up>".into(), "#4c1").unwrap();
        assert!(svg.contains("&#60;up&#62;") && !svg.contains("<up>"));
        assert!(svg.starts_with("<svg"));
    }
}
