//! The hub as a library: build on a listener (port 0 allowed), read
//! `local_addr()`, then `run_until_stopped(signal)`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use store::Store;

use crate::cluster::{Keys, Membership, MembershipConfig, Ring};
use crate::config::Settings;
use crate::coordinator::{Coordinator, Event};
use crate::ingest::{IngestItem, Verifier, Writer};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::session;

/// Events queued for the coordinator before senders start dropping them.
const EVENT_QUEUE: usize = 65_536;

/// What every request handler and session shares.
pub struct AppState {
    pub settings: Settings,
    pub store: Store,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub verifier: Verifier,
    pub ingest: mpsc::Sender<IngestItem>,
    pub events: mpsc::Sender<Event>,
    /// Cancelled on SIGTERM: stop scheduling, leave the ring, tell
    /// validators to go, drain.
    pub shutdown: CancellationToken,
    /// The current ring; this hub schedules the websites it owns in it.
    pub ring: watch::Receiver<Arc<Ring>>,
    connections: Arc<Semaphore>,
    sessions: TaskTracker,
}

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<AppState>,
    ingest_rx: mpsc::Receiver<IngestItem>,
    events_rx: mpsc::Receiver<Event>,
    membership: Option<Membership>,
}

impl Application {
    /// Connects to PostgreSQL, applies migrations, binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let keyring = settings.keyring()?;
        let store = Store::connect(&settings.database_url, settings.db_max_connections)
            .await
            .context("connecting to PostgreSQL (HUB_DATABASE_URL)")?;
        store.migrate().await.context("applying migrations")?;
        store
            .ensure_partitions(3)
            .await
            .context("creating tick partitions")?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let local_addr = listener.local_addr()?;
        let (ingest, ingest_rx) = mpsc::channel(settings.ingest_queue);
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let metrics = Arc::new(Metrics::new(&settings.hub_id));
        // Alone until Redis says otherwise (and for good without Redis).
        let (ring_tx, ring) = watch::channel(Arc::new(Ring::new([settings.hub_id.clone()])));
        metrics.ring_members.set(1);
        let membership = if settings.redis_url.is_empty() {
            None
        } else {
            let address = if settings.advertise_address.is_empty() {
                local_addr.to_string()
            } else {
                settings.advertise_address.clone()
            };
            let cfg = MembershipConfig {
                redis_url: settings.redis_url.clone(),
                keys: Keys::new(settings.redis_prefix.clone()),
                hub_id: settings.hub_id.clone(),
                address,
                interval: Duration::from_millis(settings.announce_interval_ms),
            };
            Some(
                Membership::new(cfg, metrics.clone(), ring_tx)
                    .context("configuring Redis (HUB_REDIS_URL)")?,
            )
        };
        let state = Arc::new(AppState {
            metrics,
            ring,
            verifier: Verifier {
                keyring,
                reward_lamports: settings.reward_lamports,
            },
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            registry: Registry::default(),
            sessions: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            settings,
            store,
            ingest,
            events,
        });
        Ok(Self {
            listener,
            local_addr,
            state,
            ingest_rx,
            events_rx,
            membership,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `signal` resolves, then shuts down in order: stop
    /// accepting and scheduling, send every validator a reconnect hint, wait
    /// (bounded) for in-flight results, flush the tick writers, return.
    pub async fn run_until_stopped(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            ingest_rx,
            events_rx,
            membership,
            ..
        } = self;
        let s = &state.settings;
        tracing::info!(hub_id = %s.hub_id, addr = %listener.local_addr()?, "hub listening");

        let writer_stop = CancellationToken::new();
        let ingest_rx = Arc::new(Mutex::new(ingest_rx));
        let writer = Arc::new(Writer {
            store: state.store.clone(),
            hub_id: s.hub_id.clone(),
            metrics: state.metrics.clone(),
            events: state.events.clone(),
            batch_max: s.write_batch_max,
        });
        let writers: Vec<_> = (0..s.writers)
            .map(|_| tokio::spawn(writer.clone().run(ingest_rx.clone(), writer_stop.clone())))
            .collect();

        // Membership stops (and leaves the ring) as soon as shutdown starts,
        // so other hubs take over this hub's websites while it drains.
        let membership = membership.map(|m| {
            let st = state.clone();
            tokio::spawn(m.run(move || st.registry.len(), state.shutdown.clone()))
        });

        let notifications = tokio::spawn(crate::coordinator::follow_website_changes(
            state.clone(),
            state.shutdown.clone(),
        ));

        let coordinator_stop = CancellationToken::new();
        let coordinator =
            tokio::spawn(Coordinator::new(state.clone(), events_rx).run(coordinator_stop.clone()));

        let router = router(state.clone());
        let listener = listener.tap_io(|tcp| {
            // Small frames both ways: Nagle would add up to 40 ms to each.
            let _ = tcp.set_nodelay(true);
        });
        let server_stop = state.shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(server_stop.cancelled_owned())
            .await
        });

        signal.await;
        tracing::info!("shutting down: draining validator sessions");
        state.shutdown.cancel();
        state.sessions.close();
        let grace = s.drain_timeout() + Duration::from_secs(2);
        if tokio::time::timeout(grace, state.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!("sessions still open after the drain timeout");
        }
        coordinator_stop.cancel();
        let _ = coordinator.await;
        writer_stop.cancel();
        for w in writers {
            let _ = w.await;
        }
        tracing::info!("tick writers flushed");
        notifications.abort();
        if let Some(m) = membership {
            let _ = tokio::time::timeout(Duration::from_secs(5), m).await;
        }
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(res)) => res.context("serving HTTP")?,
            Ok(Err(e)) => return Err(e).context("HTTP server task"),
            Err(_) => tracing::warn!("HTTP server did not stop in time"),
        }
        Ok(())
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ws", get(ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn ws(
    upgrade: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    let max = state.settings.max_frame_bytes;
    // 4 KiB buffers instead of the 128 KiB default: ~5 KB per idle socket.
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let tracker = state.sessions.clone();
            tracker.track_future(async move {
                session::run(socket, state, peer).await;
                drop(permit);
            })
        })
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => "ready".into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response(),
    }
}

/// The `/metrics` body.
pub fn render_metrics(state: &AppState) -> String {
    state.metrics.render()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        render_metrics(&state),
    )
        .into_response()
}
