//! The HTTP side: the routes (`/ws`, `/healthz`, `/readyz`, `/metrics`,
//! earnings), each with only the state it uses, the caps and time limits in
//! front of them, and the accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use store::Store;

use crate::config::HttpSettings;
use crate::edge::earnings;
use crate::edge::preauth::{client_key, PreAuth, PreAuthFull};
use crate::edge::session::Sessions;
use crate::edge::wire::Handshake;
use crate::metrics::Metrics;

/// What the routes are built from.
pub struct Routes {
    pub settings: HttpSettings,
    pub sessions: Arc<Sessions>,
    pub preauth: Arc<PreAuth>,
    /// Validator sockets this replica holds (`HUB_MAX_CONNECTIONS`).
    pub connections: Arc<Semaphore>,
    /// Every session's task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// The writers' pool: readiness is about it.
    pub store: Store,
    /// The read endpoints' own pool.
    pub read_store: Store,
    pub metrics: Arc<Metrics>,
    pub draining: CancellationToken,
}

/// `/ws`'s state: the door validators come in by.
struct Door {
    sessions: Arc<Sessions>,
    preauth: Arc<PreAuth>,
    connections: Arc<Semaphore>,
    tracker: TaskTracker,
    trusted_proxies: runtime::TrustedProxies,
    metrics: Arc<Metrics>,
    draining: CancellationToken,
}

/// `/readyz`'s state: it asks PostgreSQL at most once a second, one probe
/// at a time.
struct Readiness {
    store: Store,
    last: Mutex<Option<(tokio::time::Instant, bool)>>,
    draining: CancellationToken,
}

pub fn router(r: Routes) -> Router {
    let timeout = r.settings.timeout;
    let cap = r.settings.max_concurrent;
    // Each group of read routes has a cap of its own, so a flood of one
    // (say, earnings) cannot take the scrapes of the other.
    let gate = |cap: Option<usize>| Gate {
        permits: cap.map(|n| Arc::new(Semaphore::new(n))),
        timeout,
        metrics: r.metrics.clone(),
    };
    let earnings = Router::new()
        .route(
            "/v1/validators/{public_key}/earnings",
            get(earnings::earnings),
        )
        .with_state(r.read_store)
        .layer(axum::middleware::from_fn_with_state(gate(Some(cap)), gated));
    let metrics_route = Router::new()
        .route("/metrics", get(metrics))
        .with_state(r.metrics.clone())
        .layer(axum::middleware::from_fn_with_state(gate(Some(cap)), gated));
    // Probes are cheap (readyz asks the database at most once a second):
    // a time limit, no cap, so a flood cannot make a hub look unready.
    let readiness = Arc::new(Readiness {
        store: r.store,
        last: Mutex::new(None),
        draining: r.draining.clone(),
    });
    let probes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(readiness)
        .layer(axum::middleware::from_fn_with_state(gate(None), gated));
    let door = Arc::new(Door {
        sessions: r.sessions,
        preauth: r.preauth,
        connections: r.connections,
        tracker: r.tracker,
        trusted_proxies: r.settings.trusted_proxies,
        metrics: r.metrics,
        draining: r.draining,
    });
    Router::new()
        .route("/ws", get(ws))
        .with_state(door)
        .merge(earnings)
        .merge(metrics_route)
        .merge(probes)
}

/// The validator's address ([`runtime::client_ip`]); the port is the
/// peer's only when no load balancer stands between.
fn client_addr(
    trusted: &runtime::TrustedProxies,
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
) -> SocketAddr {
    let values = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    match runtime::client_ip(trusted, peer.ip(), values) {
        ip if ip == peer.ip() => peer,
        ip => SocketAddr::new(ip, 0),
    }
}

async fn ws(
    State(door): State<Arc<Door>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: axum::extract::Request,
) -> Response {
    let handshake = match Handshake::check(&mut req) {
        Ok(h) => h,
        Err(refusal) => return refusal.into_response(),
    };
    let peer = client_addr(&door.trusted_proxies, peer, req.headers());
    if door.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let refused = |reason: &str, status: StatusCode, body: &'static str| {
        door.metrics
            .connections_refused
            .with_label_values(&[reason])
            .inc();
        (status, [("retry-after", "1")], body).into_response()
    };
    let preauth = match door.preauth.enter(client_key(peer.ip())) {
        Ok(g) => g,
        Err(PreAuthFull::PerIp) => {
            return refused(
                "preauth_per_ip",
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from this address still to say hello",
            )
        }
        Err(PreAuthFull::Total) => {
            return refused(
                "preauth_total",
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections still to say hello",
            )
        }
    };
    let Ok(permit) = door.connections.clone().try_acquire_owned() else {
        return refused(
            "total",
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections",
        );
    };
    let (response, socket) = handshake.accept(door.sessions.max_frame_bytes());
    let sessions = door.sessions.clone();
    let session = async move {
        match socket.await {
            Ok(socket) => sessions.run(socket, peer, preauth).await,
            Err(e) => tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
        }
        drop(permit);
    };
    door.tracker.spawn(session);
    response
}

async fn readyz(State(r): State<Arc<Readiness>>) -> Response {
    if r.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    // One probe at a time asks the database, at most once a second; the
    // others wait for (or reuse) its answer.
    let mut last = r.last.lock().await;
    let now = tokio::time::Instant::now();
    let ok = match *last {
        Some((at, ok)) if now.duration_since(at) < Duration::from_secs(1) => ok,
        _ => {
            let ok = tokio::time::timeout(Duration::from_secs(2), r.store.ping())
                .await
                .is_ok_and(|r| r.is_ok());
            *last = Some((tokio::time::Instant::now(), ok));
            ok
        }
    };
    drop(last);
    if ok {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
    }
}

async fn metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        metrics.render(),
    )
        .into_response()
}

/// Accepts TCP connections and serves HTTP/1.1 on them (with upgrades, for
/// `/ws`) until `stop`, then lets requests in progress finish. Unlike
/// `axum::serve`, a connection must send a complete request head within
/// `header_timeout`, and an idle keep-alive connection is closed after it:
/// a socket that never sends a request costs nothing after that.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    stop: CancellationToken,
) {
    let conns = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, mostly: wait for some to free up.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small frames both ways: Nagle would add up to 40 ms to each.
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    tower::Service::call(&mut router.clone(), req)
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    conns.close();
    conns.wait().await;
}

/// A group of read routes: at most `permits` requests at once (none: no
/// cap), each answered within `timeout`.
#[derive(Clone)]
struct Gate {
    permits: Option<Arc<Semaphore>>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

async fn gated(
    State(gate): State<Gate>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let refused = |reason: &str, message: &str| {
        gate.metrics.http_refused.with_label_values(&[reason]).inc();
        earnings::error(StatusCode::SERVICE_UNAVAILABLE, reason, message)
    };
    let _permit = match &gate.permits {
        Some(p) => match p.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => return refused("overloaded", "too many requests at once; retry later"),
        },
        None => None,
    };
    match tokio::time::timeout(gate.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => refused("timeout", "the request took too long; retry later"),
    }
}
