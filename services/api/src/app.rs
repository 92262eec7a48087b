//! The service: state, routes, the layers every request goes through, and
//! the background chores (expired sessions, idle rate-limit buckets, API
//! keys' last-used times) and the alert delivery worker.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use store::{ApiKeyId, Store};
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::alerts::Deliverer;
use crate::auth::Passwords;
use crate::config::{Settings, TrustedProxies};
use crate::error::ApiError;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::openapi::ApiDoc;
use crate::routes::dashboard::Live;
use crate::routes::{accounts, alerts, dashboard, keys, public, reads, sites};

/// What handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub settings: Arc<Settings>,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    pub passwords: Arc<Passwords>,
    pub key_use: Arc<KeyUse>,
    /// Sends alerts (the worker's, and the channels' test calls).
    pub alerts: Arc<Deliverer>,
    /// The dashboard's live feed of site changes.
    pub live: Arc<Live>,
    /// Status pages and badges rendered lately.
    pub public: Arc<public::PublicCache>,
}

/// API keys used since the last flush; their `last_used_at` is written once
/// a minute in one statement instead of once per request.
#[derive(Default)]
pub struct KeyUse(Mutex<HashSet<ApiKeyId>>);

impl KeyUse {
    pub const FLUSH_EVERY: Duration = Duration::from_secs(60);

    pub fn note(&self, id: ApiKeyId) {
        self.0.lock().expect("not poisoned").insert(id);
    }

    fn take(&self) -> Vec<ApiKeyId> {
        self.0.lock().expect("not poisoned").drain().collect()
    }

    pub async fn flush(&self, store: &Store) {
        let ids = self.take();
        if ids.is_empty() {
            return;
        }
        if let Err(e) = store.touch_api_keys(&ids).await {
            tracing::warn!(error = %e, keys = ids.len(), "recording API key use failed");
        }
    }
}

impl AppState {
    pub async fn new(settings: Settings) -> anyhow::Result<Self> {
        let store = Store::connect(&settings.database_url, settings.db_max_connections).await?;
        store.migrate().await?;
        Self::with_store(store, settings)
    }

    pub fn with_store(store: Store, settings: Settings) -> anyhow::Result<Self> {
        let alerts = Arc::new(Deliverer::new(
            &settings.alerts,
            settings.allow_private_targets,
        )?);
        let metrics = Arc::new(Metrics::new());
        let public = Arc::new(public::PublicCache::new(settings.public_cache));
        let limits = Arc::new(Limits::new(
            settings.rate_per_ip,
            settings.rate_per_caller,
            settings.auth_attempts_per_minute,
            metrics.clone(),
        ));
        Ok(Self {
            store,
            settings: Arc::new(settings),
            limits,
            metrics,
            passwords: Passwords::new(2),
            key_use: Arc::new(KeyUse::default()),
            alerts,
            live: Arc::new(Live::default()),
            public,
        })
    }
}

/// The client's address ([`runtime::client_ip`]).
pub fn client_ip(trusted: &TrustedProxies, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let values = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    runtime::client_ip(trusted, peer.ip(), values)
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/accounts", post(accounts::sign_up))
        .route("/v1/sessions", post(accounts::sign_in))
        .route(
            "/v1/sessions/current",
            axum::routing::delete(accounts::sign_out),
        )
        .route("/v1/account", get(accounts::me))
        .route("/v1/keys", get(keys::list).post(keys::create))
        .route("/v1/keys/{id}", axum::routing::delete(keys::revoke))
        .route("/v1/websites", get(sites::list).post(sites::create))
        .route(
            "/v1/websites/{id}",
            get(sites::get).patch(sites::update).delete(sites::delete),
        )
        .route("/v1/websites/{id}/pause", post(sites::pause))
        .route("/v1/websites/{id}/resume", post(sites::resume))
        .route("/v1/websites/{id}/status", get(reads::status))
        .route("/v1/websites/{id}/uptime", get(reads::uptime))
        .route("/v1/websites/{id}/latency", get(reads::latency))
        .route("/v1/websites/{id}/rounds", get(reads::rounds))
        .route("/v1/websites/{id}/results", get(reads::results))
        .route("/v1/websites/{id}/validators", get(reads::validators))
        .route("/v1/websites/{id}/incidents", get(reads::incidents))
        .route("/v1/alert-channels", get(alerts::list).post(alerts::create))
        .route(
            "/v1/alert-channels/{id}",
            get(alerts::get)
                .patch(alerts::update)
                .delete(alerts::delete),
        )
        .route("/v1/alert-channels/{id}/test", post(alerts::test))
        .route("/v1/alert-deliveries", get(alerts::deliveries))
        .route("/v1/overview", get(dashboard::overview))
        .route("/v1/events", get(dashboard::events))
        .route(
            "/v1/websites/{id}/uptime/daily",
            get(dashboard::uptime_daily),
        )
        .route(
            "/v1/websites/{id}/latency/series",
            get(dashboard::latency_series),
        )
        .route(
            "/v1/status-page",
            get(dashboard::status_page).put(dashboard::save_status_page),
        )
        .route(
            "/v1/websites/{id}/badge",
            post(dashboard::make_badge).delete(dashboard::delete_badge),
        )
        .route(
            "/v1/validators/{public_key}/earnings",
            get(dashboard::earnings),
        )
        .fallback(|| async { ApiError::not_found("route") })
        .layer(middleware::from_fn_with_state(state.clone(), per_ip))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.settings.max_body_bytes,
        ));
    // Public pages and the dashboard's files: per-IP limits as the API.
    let pages = Router::new()
        .route("/", get(public::root))
        .route("/app", get(public::app_slash))
        .route("/app/", get(public::app_page))
        .route("/app/assets/{*path}", get(public::asset))
        .route("/status/{slug}", get(public::status_page))
        .route("/badge/{token}/{kind}", get(public::badge))
        .layer(middleware::from_fn_with_state(state.clone(), per_ip));
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    // Swagger UI's assets are in the binary (the `vendored` feature): the
    // page works offline. It also serves the document at /openapi.json.
    let docs = utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi());
    Router::new()
        .merge(v1)
        .merge(pages)
        .merge(ops)
        .merge(docs)
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(state.clone())
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(CatchPanicLayer::custom(|_| ApiError::internal().into_response()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
}

/// Counts each request by route and status, times it, and cuts it off
/// after the request time limit (503 `timeout`).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Both are cheap clones (the path is shared), not new strings.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = req.method().clone();
    let started = Instant::now();
    let resp = match tokio::time::timeout(state.settings.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long; a change may or may not have been made: read before retrying it",
        )
        .into_response(),
    };
    state
        .metrics
        .requests
        .with_label_values(&[route, method_label(&method), resp.status().as_str()])
        .inc();
    state
        .metrics
        .request_seconds
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The method as a metrics label: the standard ones by name, anything else `other`, so a
/// client cannot make a new series per request with made-up methods.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn per_ip(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let ip = client_ip(&state.settings.trusted_proxies, peer, req.headers());
    match state.limits.check_ip(ip) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Serves until `stop` resolves, then finishes the requests in flight.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let done = CancellationToken::new();
    let chores = tokio::spawn(chores(state.clone(), done.clone()));
    let deliveries = (state.settings.alerts.workers > 0).then(|| {
        tokio::spawn(crate::alerts::run(
            state.store.clone(),
            state.alerts.clone(),
            state.settings.alerts.clone(),
            state.metrics.clone(),
            done.clone(),
        ))
    });
    let live = tokio::spawn(state.live.clone().run(state.store.clone(), done.clone()));
    let app = router(state.clone());
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown({
        // Live-update streams never end by themselves: end them as the
        // shutdown starts, or it would wait for them.
        let closing = state.live.closing.clone();
        async move {
            stop.await;
            closing.cancel();
        }
    })
    .await?;
    done.cancel();
    let _ = chores.await;
    let _ = live.await;
    if let Some(d) = deliveries {
        let _ = d.await;
    }
    state.key_use.flush(&state.store).await;
    Ok(())
}

async fn chores(state: AppState, stop: CancellationToken) {
    let mut every_minute = tokio::time::interval(Duration::from_secs(60));
    every_minute.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every_minute.tick() => {
                state.limits.forget_idle();
                state.key_use.flush(&state.store).await;
                match state.store.delete_expired_sessions(10_000).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(sessions = n, "expired sessions deleted"),
                    Err(e) => tracing::warn!(error = %e, "deleting expired sessions failed"),
                }
            }
        }
    }
}
