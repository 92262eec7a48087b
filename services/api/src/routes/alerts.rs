//! Alert channels (add, change, test, remove) and the delivery log. Where
//! alerts come from and how they are delivered: `crate::alerts` and
//! docs/ARCHITECTURE.md, "Alerts".

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use store::{
    AlertOutcome, ChannelId, ChannelKind, ChannelPatch, NewChannel, NewChannelOutcome, ALERT_EVENTS,
};
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::auth::{random_token, Reader, Writer};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::routes::page::{self, page_size};
use crate::routes::sites::check_url;

/// Channels an account may hold.
pub const MAX_CHANNELS: i64 = 20;

/// A channel's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A signed JSON POST to your URL.
    Webhook,
    /// A Slack incoming webhook URL.
    Slack,
    /// A Discord webhook URL.
    Discord,
    /// An email address (when the server has SMTP configured).
    Email,
}

impl From<Kind> for ChannelKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Webhook => ChannelKind::Webhook,
            Kind::Slack => ChannelKind::Slack,
            Kind::Discord => ChannelKind::Discord,
            Kind::Email => ChannelKind::Email,
        }
    }
}

impl From<ChannelKind> for Kind {
    fn from(k: ChannelKind) -> Self {
        match k {
            ChannelKind::Webhook => Kind::Webhook,
            ChannelKind::Slack => Kind::Slack,
            ChannelKind::Discord => Kind::Discord,
            ChannelKind::Email => Kind::Email,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChannelBody {
    pub kind: Kind,
    #[schema(example = "on-call", min_length = 1, max_length = 100)]
    pub name: String,
    /// The URL (webhook, slack, discord) or the email address (email).
    #[schema(example = "https://example.com/hooks/uptime", max_length = 2048)]
    pub target: String,
    /// What to send: `incident_opened`, `incident_resolved`,
    /// `degradation_opened`, `degradation_ended`, `latency_high`,
    /// `latency_normal`. Default: the two incident events.
    pub events: Option<Vec<String>>,
}

/// Absent fields are kept.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPatchBody {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    pub events: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// A channel. URL targets are shown as scheme, host and port only: their
/// paths are often credentials (Slack, Discord).
#[derive(Serialize, ToSchema)]
pub struct ChannelView {
    pub id: i64,
    pub kind: Kind,
    pub name: String,
    pub target: String,
    pub events: Vec<String>,
    pub enabled: bool,
    pub created_at_ms: i64,
}

impl From<&store::AlertChannel> for ChannelView {
    fn from(c: &store::AlertChannel) -> Self {
        Self {
            id: c.id.0,
            kind: c.kind.into(),
            name: c.name.clone(),
            target: shown_target(c.kind, &c.target),
            events: c.events.clone(),
            enabled: c.enabled,
            created_at_ms: c.created_at_ms,
        }
    }
}

/// Email addresses in full; URLs as `scheme://host[:port]/…`.
fn shown_target(kind: ChannelKind, target: &str) -> String {
    if kind == ChannelKind::Email {
        return target.to_string();
    }
    match url::Url::parse(target) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let more = u.path() != "/" || u.query().is_some();
            format!(
                "{}://{}{port}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                if more { "/…" } else { "/" }
            )
        }
        Err(_) => "(unparsable)".into(),
    }
}

/// The new channel, and for a webhook the key its `X-Signature` is made
/// with: shown in this response only.
#[derive(Serialize, ToSchema)]
pub struct CreatedChannel {
    pub channel: ChannelView,
    /// Webhooks only: the HMAC-SHA256 key of `X-Signature`.
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ChannelList {
    pub items: Vec<ChannelView>,
}

/// What a test delivery gave.
#[derive(Serialize, ToSchema)]
pub struct TestResult {
    /// The delivery's id in the log.
    pub delivery_id: i64,
    pub delivered: bool,
    /// The receiver's HTTP status (or SMTP reply code).
    pub status: Option<i32>,
    pub error: Option<String>,
}

/// One delivery of one alert to one channel.
#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub channel_id: i64,
    pub website_id: Option<i64>,
    /// The alert's event, or `test`.
    pub event: String,
    /// Sent with every attempt (`X-Idempotency-Key`, the email's
    /// Message-ID): receivers dedupe on it.
    pub idempotency_key: uuid::Uuid,
    /// `pending` (waiting or being retried), `delivered`, or `dead` (given
    /// up after the last attempt).
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub last_status: Option<i32>,
    pub created_at_ms: i64,
    /// When the next attempt is due (pending only).
    pub next_attempt_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

impl From<&store::AlertDelivery> for DeliveryView {
    fn from(d: &store::AlertDelivery) -> Self {
        Self {
            id: d.id.0,
            channel_id: d.channel_id.0,
            website_id: d.website_id.map(|w| w.0),
            event: d.event.clone(),
            idempotency_key: d.idempotency_key,
            state: d.state.clone(),
            attempts: d.attempts,
            last_error: d.last_error.clone(),
            last_status: d.last_status,
            created_at_ms: d.created_at_ms,
            next_attempt_at_ms: d.next_attempt_at_ms,
            finished_at_ms: d.finished_at_ms,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// Only this channel's deliveries.
    pub channel_id: Option<i64>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must be 1 to 100 characters without control characters",
        ));
    }
    Ok(n.to_string())
}

fn check_events(events: &[String]) -> Result<Vec<String>, ApiError> {
    let mut seen = BTreeSet::new();
    for e in events {
        if !ALERT_EVENTS.contains(&e.as_str()) {
            return Err(ApiError::invalid(
                "events",
                format!("{e:?} is not one of {}", ALERT_EVENTS.join(", ")),
            ));
        }
        seen.insert(e.clone());
    }
    if seen.is_empty() {
        return Err(ApiError::invalid("events", "must name at least one event"));
    }
    // In the documented order, not the caller's.
    Ok(ALERT_EVENTS
        .iter()
        .filter(|e| seen.contains(**e))
        .map(|e| e.to_string())
        .collect())
}

async fn check_target(state: &AppState, kind: Kind, target: &str) -> Result<String, ApiError> {
    if kind == Kind::Email {
        if !state.alerts.has_smtp() {
            return Err(ApiError::invalid(
                "kind",
                "email alerts are not configured on this server (the operator sets API_SMTP_URL)",
            ));
        }
        let t = target.trim();
        return match t.parse::<lettre::Address>() {
            Ok(a) if t.len() <= 254 => Ok(a.to_string()),
            _ => Err(ApiError::invalid("target", "must be an email address")),
        };
    }
    // The website rules: http(s), no credentials, no blocked port, not a
    // private address (and again at every delivery).
    let url = check_url(target, state.settings.allow_private_targets)
        .await
        .map_err(|e| e.with_field("target"))?;
    Ok(url.as_str().to_string())
}

/// The account's alert channels.
#[utoipa::path(get, path = "/v1/alert-channels", tag = "alerts",
    responses((status = 200, body = ChannelList)))]
pub async fn list(
    State(state): State<AppState>,
    Reader(caller): Reader,
) -> ApiResult<axum::Json<ChannelList>> {
    let items = state.store.alert_channels(caller.account.id).await?;
    Ok(axum::Json(ChannelList {
        items: items.iter().map(ChannelView::from).collect(),
    }))
}

/// Add a channel. A webhook's signing secret is in this response only.
#[utoipa::path(post, path = "/v1/alert-channels", tag = "alerts", request_body = NewChannelBody,
    responses(
        (status = 201, body = CreatedChannel),
        (status = 403, description = "`forbidden` (a read-only key), `csrf_failed`", body = ErrorBody),
        (status = 409, description = "`too_many_channels`", body = ErrorBody),
        (status = 422, description = "`invalid_field` (kind, name, target, events)", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Json(req): Json<NewChannelBody>,
) -> ApiResult<(StatusCode, axum::Json<CreatedChannel>)> {
    let name = check_name(&req.name)?;
    let events = match &req.events {
        Some(e) => check_events(e)?,
        None => vec!["incident_opened".into(), "incident_resolved".into()],
    };
    let target = check_target(&state, req.kind, &req.target).await?;
    let secret = (req.kind == Kind::Webhook).then(|| format!("whsec_{}", random_token()));
    let outcome = state
        .store
        .create_alert_channel(
            caller.account.id,
            &NewChannel {
                kind: req.kind.into(),
                name: &name,
                target: &target,
                secret: secret.as_deref(),
                events: &events,
            },
            MAX_CHANNELS,
        )
        .await?;
    match outcome {
        NewChannelOutcome::Created(c) => {
            tracing::info!(
                account = caller.account.id.0,
                channel = c.id.0,
                kind = c.kind.as_str(),
                "alert channel created"
            );
            Ok((
                StatusCode::CREATED,
                axum::Json(CreatedChannel {
                    channel: ChannelView::from(&c),
                    secret,
                }),
            ))
        }
        NewChannelOutcome::TooMany => Err(ApiError::conflict(
            "too_many_channels",
            format!("an account may hold {MAX_CHANNELS} alert channels; remove one first"),
        )),
    }
}

/// One channel.
#[utoipa::path(get, path = "/v1/alert-channels/{id}", tag = "alerts",
    params(("id" = i64, Path)),
    responses(
        (status = 200, body = ChannelView),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<ChannelView>> {
    let c = state
        .store
        .alert_channel(caller.account.id, ChannelId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("alert channel"))?;
    Ok(axum::Json(ChannelView::from(&c)))
}

/// Rename, change the events, enable or disable a channel. A disabled
/// channel gets no new alerts; those already waiting are still sent.
#[utoipa::path(patch, path = "/v1/alert-channels/{id}", tag = "alerts",
    params(("id" = i64, Path)), request_body = ChannelPatchBody,
    responses(
        (status = 200, body = ChannelView),
        (status = 403, description = "`forbidden` (a read-only key), `csrf_failed`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field` (name, events)", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<i64>,
    Json(req): Json<ChannelPatchBody>,
) -> ApiResult<axum::Json<ChannelView>> {
    let patch = ChannelPatch {
        name: req.name.as_deref().map(check_name).transpose()?,
        events: req.events.as_deref().map(check_events).transpose()?,
        enabled: req.enabled,
    };
    let c = state
        .store
        .update_alert_channel(caller.account.id, ChannelId(id), &patch)
        .await?
        .ok_or_else(|| ApiError::not_found("alert channel"))?;
    Ok(axum::Json(ChannelView::from(&c)))
}

/// Remove a channel, with its deliveries (waiting ones are not sent).
#[utoipa::path(delete, path = "/v1/alert-channels/{id}", tag = "alerts",
    params(("id" = i64, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "`forbidden` (a read-only key), `csrf_failed`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    if !state
        .store
        .delete_alert_channel(caller.account.id, ChannelId(id))
        .await?
    {
        return Err(ApiError::not_found("alert channel"));
    }
    tracing::info!(
        account = caller.account.id.0,
        channel = id,
        "alert channel removed"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Send a `test` alert to the channel now, once (no retries), and say what
/// happened. The attempt is in the delivery log too.
#[utoipa::path(post, path = "/v1/alert-channels/{id}/test", tag = "alerts",
    params(("id" = i64, Path)),
    responses(
        (status = 200, body = TestResult),
        (status = 403, description = "`forbidden` (a read-only key), `csrf_failed`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn test(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<TestResult>> {
    let payload = serde_json::json!({
        "event": "test",
        "occurred_at_ms": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64,
        "site": null,
        "message": "A test alert: this channel receives uptime alerts.",
    });
    let a = state
        .store
        .claim_test_alert(
            caller.account.id,
            ChannelId(id),
            &payload.to_string(),
            state.settings.alerts.lease,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("alert channel"))?;
    // Sent and recorded in a task of its own: a request cut off by its time
    // limit (or a client that goes away) still leaves the outcome in the
    // log.
    let (store, deliverer) = (state.store.clone(), state.alerts.clone());
    let attempt = tokio::spawn(async move {
        let attempt = deliverer.deliver(&a).await;
        let outcome = if attempt.delivered {
            AlertOutcome::Delivered {
                status: attempt.status,
            }
        } else {
            AlertOutcome::Dead {
                error: attempt.error.clone().unwrap_or_default(),
                status: attempt.status,
            }
        };
        store
            .finish_alert(a.id, a.claim_token, &outcome)
            .await
            .map(|_| (a.id, attempt))
    })
    .await
    .map_err(|_| ApiError::internal())??;
    let (id, attempt) = attempt;
    Ok(axum::Json(TestResult {
        delivery_id: id.0,
        delivered: attempt.delivered,
        status: attempt.status,
        error: attempt.error,
    }))
}

/// The delivery log, newest first: every alert sent or being sent to the
/// account's channels, with its attempts and last error. Delivered rows
/// are kept 7 days, dead ones 30 (the operator's settings).
#[utoipa::path(get, path = "/v1/alert-deliveries", tag = "alerts", params(DeliveryQuery),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 422, description = "`invalid_field` (cursor, limit)", body = ErrorBody),
    ))]
pub async fn deliveries(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Query(q): Query<DeliveryQuery>,
) -> ApiResult<axum::Json<DeliveryPage>> {
    let limit = page_size(q.limit)?;
    let before = page::after::<i64>(q.cursor.as_deref())?;
    let rows = state
        .store
        .alert_deliveries(
            caller.account.id,
            q.channel_id.map(ChannelId),
            before,
            limit + 1,
        )
        .await?;
    let (rows, next_cursor) = page::cut(rows, limit, |d| d.id.0.to_string());
    Ok(axum::Json(DeliveryPage {
        items: rows.iter().map(DeliveryView::from).collect(),
        next_cursor,
    }))
}
