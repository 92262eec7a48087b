//! The hub as a library: build on a listener (port 0 allowed), read
//! `local_addr()`, then `run_until_stopped(signal)`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use store::Store;

use crate::cluster::leader::Term;
use crate::cluster::membership::connect;
use crate::cluster::presence::{Local, Presence, Remote};
use crate::cluster::routing::{self, InboxMessage};
use crate::cluster::{ClusterLink, Keys, Membership, MembershipConfig, Ring};
use crate::config::Settings;
use crate::coordinator::{Coordinator, Event};
use crate::ingest::{IngestItem, Verifier, Writer};
use crate::metrics::Metrics;
use crate::payouts::{Payer, PayoutConfig};
use crate::registry::Registry;
use crate::session;

/// A lone hub's term never runs out (there is no lock to lose).
const STANDALONE_LEASE: Duration = Duration::from_secs(10 * 365 * 86_400);

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
    /// Results accepted and not yet answered by a tick writer.
    pub backlog: Arc<crate::ingest::Backlog>,
    pub events: mpsc::Sender<Event>,
    /// Cancelled on SIGTERM: stop scheduling, leave the ring, tell
    /// validators to go, drain.
    pub shutdown: CancellationToken,
    /// The current ring; this hub schedules the websites it owns in it.
    pub ring: watch::Receiver<Arc<Ring>>,
    /// Presence and routing, when Redis is configured.
    pub cluster: Option<ClusterLink>,
    /// This hub's term as payout leader, if it holds one (cluster only).
    pub leadership: Option<crate::cluster::leader::Leadership>,
    connections: Arc<Semaphore>,
    sessions: TaskTracker,
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Sockets that have not said a valid hello yet (see [`PreAuth`]).
    preauth: Arc<PreAuth>,
    /// Hellos per client address (see [`client_key`]).
    pub hello_limiter: governor::DefaultKeyedRateLimiter<IpAddr>,
    /// The read endpoints' own small pool (`HUB_READ_DB_MAX_CONNECTIONS`).
    pub read_store: Store,
    /// `/readyz` asks PostgreSQL at most once a second, one probe at a time.
    ready: Mutex<Option<(tokio::time::Instant, bool)>>,
}

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<AppState>,
    ingest_rx: mpsc::Receiver<IngestItem>,
    events_rx: mpsc::Receiver<Event>,
    cluster: Option<ClusterParts>,
    payer: Option<Payer>,
    /// Without Redis, this hub leads alone; the sender lives as long as it.
    _standalone_term: Option<watch::Sender<Option<Term>>>,
}

/// The cluster pieces `run_until_stopped` drives.
struct ClusterParts {
    membership: Membership,
    clients: crate::cluster::membership::Clients,
    keys: Keys,
    outbox_rx: mpsc::Receiver<(String, InboxMessage)>,
    remotes_tx: watch::Sender<Arc<Vec<Remote>>>,
    interval: Duration,
    election: crate::cluster::leader::Election,
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
        let (cluster, link, leadership) = if settings.redis_url.is_empty() {
            (None, None, None)
        } else {
            let address = if settings.advertise_address.is_empty() {
                local_addr.to_string()
            } else {
                settings.advertise_address.clone()
            };
            let interval = Duration::from_millis(settings.announce_interval_ms);
            let keys = Keys::new(settings.redis_prefix.clone());
            let clients = connect(&settings.redis_url, interval)
                .context("configuring Redis (HUB_REDIS_URL)")?;
            let client = clients.client.clone();
            let cfg = MembershipConfig {
                keys: keys.clone(),
                hub_id: settings.hub_id.clone(),
                address,
                interval,
            };
            let membership = Membership::new(
                cfg,
                client.clone(),
                clients.membership.clone(),
                metrics.clone(),
                ring_tx,
            );
            // A claim outlives a few missed announcements, not a crash.
            let presence = Presence::new(
                client.clone(),
                keys.clone(),
                settings.hub_id.clone(),
                interval * 3 + Duration::from_secs(1),
            );
            let (outbox, outbox_rx) = routing::outbox(OUTBOX_QUEUE, metrics.clone());
            let (remotes_tx, remotes) = watch::channel(Arc::new(Vec::new()));
            let link = ClusterLink {
                presence,
                outbox,
                remotes,
            };
            let (election, leadership) = crate::cluster::leader::Election::new(
                client.clone(),
                store.clone(),
                keys.clone(),
                settings.hub_id.clone(),
                Duration::from_millis(settings.leader_lease_ms),
                metrics.clone(),
            );
            let parts = ClusterParts {
                election,
                membership,
                clients,
                keys,
                outbox_rx,
                remotes_tx,
                interval,
            };
            (Some(parts), Some(link), Some(leadership))
        };
        // Payouts need a leader: the Redis election, or, with no Redis, this
        // hub alone with a fresh epoch (a second such hub would take a newer
        // epoch, and the database would refuse this one's writes).
        let mut standalone_term = None;
        let mut leadership = leadership;
        let payer = if settings.payouts_enabled() {
            let treasury = Payer::read_treasury(
                &settings.payout_treasury_keypair,
                settings.allow_insecure_keypair,
            )
            .context("reading the treasury keypair (HUB_PAYOUT_TREASURY_KEYPAIR)")?;
            let cfg = PayoutConfig::from_settings(&settings)?;
            let lead = match leadership.clone() {
                Some(l) => l,
                None => {
                    let epoch = store
                        .next_epoch(crate::cluster::leader::PAYOUT_ROLE)
                        .await
                        .context("taking a payout epoch")?;
                    let term = Term {
                        epoch,
                        lease_until: tokio::time::Instant::now() + STANDALONE_LEASE,
                    };
                    metrics.is_leader.set(1);
                    metrics.leader_epoch.set(epoch);
                    let (tx, rx) = watch::channel(Some(term));
                    standalone_term = Some(tx);
                    leadership = Some(rx.clone());
                    rx
                }
            };
            let payer = Payer::new(
                store.clone(),
                &settings.payout_rpc_url,
                treasury,
                cfg,
                metrics.clone(),
                lead,
            );
            tracing::info!(treasury = %payer.treasury(), rpc = %settings.payout_rpc_url, "payouts enabled (run while this hub leads)");
            Some(payer)
        } else {
            None
        };
        let metrics_for_preauth = metrics.clone();
        let state = Arc::new(AppState {
            metrics,
            ring,
            cluster: link,
            leadership,
            verifier: Verifier {
                keyring,
                reward_lamports: settings.reward_lamports,
            },
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            registry: Registry::default(),
            sessions: TaskTracker::new(),
            trusted_proxies: settings.trusted_proxies()?,
            preauth: Arc::new(PreAuth::new(&settings, metrics_for_preauth)),
            hello_limiter: governor::RateLimiter::keyed(
                governor::Quota::per_second(
                    NonZeroU32::new(settings.hello_rate_per_ip).context("HUB_HELLO_RATE_PER_IP")?,
                )
                .allow_burst(
                    NonZeroU32::new(settings.hello_burst_per_ip)
                        .context("HUB_HELLO_BURST_PER_IP")?,
                ),
            ),
            read_store: Store::connect_reader(
                &settings.database_url,
                settings.read_db_max_connections,
                Duration::from_millis(settings.http_timeout_ms),
            )
            .await
            .context("configuring the read pool (HUB_DATABASE_URL)")?,
            ready: Mutex::new(None),
            shutdown: CancellationToken::new(),
            settings,
            store,
            ingest,
            backlog: Arc::default(),
            events,
        });
        Ok(Self {
            listener,
            local_addr,
            state,
            ingest_rx,
            events_rx,
            cluster,
            payer,
            _standalone_term: standalone_term,
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
            cluster,
            payer,
            _standalone_term,
            local_addr: _,
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
            ring: state.ring.clone(),
            cluster: state.cluster.clone(),
            backlog: state.backlog.clone(),
            shutdown_grace: s.drain_timeout(),
            stop: writer_stop.clone(),
            stopped_at: std::sync::OnceLock::new(),
        });
        let writers: Vec<_> = (0..s.writers)
            .map(|_| tokio::spawn(writer.clone().run(ingest_rx.clone(), writer_stop.clone())))
            .collect();

        // Membership and presence stop (leaving the ring) as soon as shutdown
        // starts, so other hubs take over this hub's websites while it
        // drains; routing runs to the end, to carry the last summaries.
        let routing_stop = CancellationToken::new();
        let cluster_tasks = cluster.map(|c| {
            let clients = (
                c.clients.client.clone(),
                c.clients.membership.clone(),
                c.clients.inbox.clone(),
            );
            (spawn_cluster(&state, c, routing_stop.clone()), clients)
        });

        let notifications = tokio::spawn(crate::coordinator::follow_website_changes(
            state.clone(),
            state.shutdown.clone(),
        ));

        // Stops at once on shutdown: every step of a payout is safe to
        // interrupt (the next leader recovers it).
        let payer = payer.map(|p| tokio::spawn(p.run(state.shutdown.clone())));

        let coordinator_stop = CancellationToken::new();
        let coordinator =
            tokio::spawn(Coordinator::new(state.clone(), events_rx).run(coordinator_stop.clone()));

        let housekeeping = tokio::spawn(housekeeping(state.clone()));

        let router = router(state.clone());
        let server = tokio::spawn(serve_http(
            listener,
            router,
            Duration::from_millis(s.http_timeout_ms),
            state.shutdown.clone(),
        ));

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
        if let Some(p) = payer {
            let _ = p.await;
        }
        coordinator_stop.cancel();
        let _ = coordinator.await;
        writer_stop.cancel();
        for w in writers {
            let _ = w.await;
        }
        tracing::info!("tick writers flushed");
        notifications.abort();
        housekeeping.abort();
        routing_stop.cancel();
        if let Some((tasks, (client, membership, inbox))) = cluster_tasks {
            for t in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
            }
            // Ends fred's connection and resubscription tasks too.
            use fred::interfaces::ClientLike;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = membership.quit().await;
                let _ = inbox.quit().await;
                let _ = client.quit().await;
            })
            .await;
        }
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e).context("HTTP server task"),
            Err(_) => tracing::warn!("HTTP server did not stop in time"),
        }
        Ok(())
    }
}

/// Hub-to-hub messages queued before new ones are dropped.
const OUTBOX_QUEUE: usize = 8_192;

fn spawn_cluster(
    state: &Arc<AppState>,
    c: ClusterParts,
    routing_stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    watch_reconnects(state, &c.clients.client, "commands");
    watch_reconnects(state, &c.clients.membership, "membership subscriber");
    watch_reconnects(state, &c.clients.inbox, "inbox subscriber");
    let st = state.clone();
    let membership = tokio::spawn(
        c.membership
            .run(move || st.registry.len(), state.shutdown.clone()),
    );
    let publisher = tokio::spawn(routing::run_publisher(
        c.clients.client.clone(),
        c.keys.clone(),
        state.metrics.clone(),
        c.outbox_rx,
        routing_stop.clone(),
    ));
    let st = state.clone();
    let inbox = tokio::spawn(routing::run_inbox(
        c.clients.inbox.clone(),
        c.keys,
        state.settings.hub_id.clone(),
        state.metrics.clone(),
        move |m| deliver(&st, m),
        routing_stop,
    ));
    let presence = tokio::spawn(run_presence(state.clone(), c.remotes_tx, c.interval));
    // Steps down and releases the lock as soon as shutdown starts.
    let election = tokio::spawn(c.election.run(state.shutdown.clone()));
    vec![membership, publisher, inbox, presence, election]
}

/// Counts and logs every reconnection of a Redis client. Redis closes a
/// subscriber whose output buffer overflows (`client-output-buffer-limit
/// pubsub`); this is where a hub that fell behind shows up.
fn watch_reconnects(
    state: &Arc<AppState>,
    client: &impl fred::interfaces::EventInterface,
    which: &'static str,
) {
    let st = state.clone();
    client.on_reconnect(move |server| {
        st.metrics.redis_reconnects.inc();
        tracing::warn!(%server, client = which, "reconnected to Redis");
        async { Ok(()) }
    });
}

/// Acts on a message from another hub.
fn deliver(state: &AppState, msg: InboxMessage) {
    match msg {
        InboxMessage::Task { task } => {
            // A draining hub takes no new work for its leaving sessions.
            let sent = !state.shutdown.is_cancelled()
                && state.registry.get(&task.validator).is_some_and(|h| {
                    h.tx.try_send(crate::registry::Outbound::Frame(Box::new(
                        protocol::HubMessage::Task(task),
                    )))
                    .is_ok()
                });
            if !sent {
                // The owner finds out at the deadline and replaces the task.
                state
                    .metrics
                    .cross_hub_dropped
                    .with_label_values(&["in"])
                    .inc();
            }
        }
        InboxMessage::Answered { round_id, task_id } => {
            let _ = state.events.try_send(Event::Answered { round_id, task_id });
        }
        InboxMessage::Ping { sent_at_ms } => {
            let rtt = (protocol::now_ms() - sent_at_ms).max(0) as f64 / 1000.0;
            state.metrics.pubsub_rtt.observe(rtt);
        }
        InboxMessage::Kick {
            validator,
            generation,
        } => {
            if let Some(h) = state.registry.get(&validator) {
                if h.generation == generation {
                    h.replaced.cancel();
                }
            }
        }
    }
}

/// Every announcement: advertise this hub's validators and read the
/// others'. On shutdown, withdraw the list at once.
async fn run_presence(
    state: Arc<AppState>,
    remotes: watch::Sender<Arc<Vec<Remote>>>,
    interval: Duration,
) {
    let Some(link) = state.cluster.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_read = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let sessions = state.registry.snapshot();
        let locals: Vec<Local> = sessions
            .iter()
            .map(|h| Local {
                key: h.key.to_base58(),
                generation: h.generation,
                region: h.region.clone(),
                capacity: h.capacity,
                load: h.in_flight.load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect();
        link.outbox.send(
            &state.settings.hub_id,
            InboxMessage::Ping {
                sent_at_ms: protocol::now_ms(),
            },
        );
        match link.presence.publish(&locals).await {
            Ok(found) => {
                // A newer session of the same key holds the claim and the
                // kick that should have closed this one was lost (pub/sub is
                // at most once): close it now.
                for h in found.superseded.iter().filter_map(|i| sessions.get(*i)) {
                    tracing::info!(validator = %h.key, "a newer session on another hub holds this key");
                    state.metrics.sessions_replaced.inc();
                    h.replaced.cancel();
                }
                // This session's claim found an older session's in place
                // (its own claim failed, or Redis lost it): that one goes.
                for (i, hub, generation) in found.displaced {
                    let Some(h) = sessions.get(i) else { continue };
                    if hub != state.settings.hub_id {
                        link.outbox.send(
                            &hub,
                            InboxMessage::Kick {
                                validator: h.key,
                                generation,
                            },
                        );
                    }
                }
                if let Some(e) = found.error {
                    state.metrics.redis_errors.inc();
                    tracing::warn!(error = %e, "extending validators' presence claims failed");
                }
            }
            Err(e) => {
                state.metrics.redis_errors.inc();
                tracing::warn!(error = %e, "advertising validators failed");
            }
        }
        let members = state.ring.borrow().members().to_vec();
        match link.presence.remotes(&members).await {
            Ok(r) => {
                last_read = tokio::time::Instant::now();
                remotes.send_replace(Arc::new(r));
            }
            Err(e) => {
                // Keep the last view for a while (a task to a gone validator
                // just expires); past the presence TTL, cut off from Redis,
                // use only this hub's own validators.
                state.metrics.redis_errors.inc();
                tracing::warn!(error = %e, "reading other hubs' validators failed");
                if last_read.elapsed() > interval * 3 && !remotes.borrow().is_empty() {
                    remotes.send_replace(Arc::new(Vec::new()));
                }
            }
        }
    }
    if let Err(e) = link.presence.clear().await {
        tracing::warn!(error = %e, "withdrawing validators failed");
    }
}

fn router(state: Arc<AppState>) -> Router {
    let s = &state.settings;
    let timeout = Duration::from_millis(s.http_timeout_ms);
    // Each group of read routes has a cap of its own, so a flood of one
    // (say, earnings) cannot take the scrapes of the other.
    let gate = |cap: Option<usize>| Gate {
        permits: cap.map(|n| Arc::new(Semaphore::new(n))),
        timeout,
        metrics: state.metrics.clone(),
    };
    let earnings = Router::new()
        .route(
            "/v1/validators/{public_key}/earnings",
            get(crate::earnings::earnings),
        )
        .layer(axum::middleware::from_fn_with_state(
            gate(Some(s.http_max_concurrent)),
            gated,
        ));
    let metrics_route =
        Router::new()
            .route("/metrics", get(metrics))
            .layer(axum::middleware::from_fn_with_state(
                gate(Some(s.http_max_concurrent)),
                gated,
            ));
    // Probes are cheap (readyz asks the database at most once a second):
    // a time limit, no cap, so a flood cannot make a hub look unready.
    let probes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(axum::middleware::from_fn_with_state(gate(None), gated));
    Router::new()
        .route("/ws", get(ws))
        .merge(earnings)
        .merge(metrics_route)
        .merge(probes)
        .with_state(state)
}

/// The validator's address: the socket peer, or, behind a trusted load
/// balancer, the last address it appended to `X-Forwarded-For`.
fn client_addr(state: &AppState, peer: SocketAddr, headers: &axum::http::HeaderMap) -> SocketAddr {
    if !state.trusted_proxies.contains(&peer.ip()) {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 0))
        .unwrap_or(peer)
}

async fn ws(
    upgrade: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    let peer = client_addr(&state, peer, &headers);
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let refused = |reason: &str, status: StatusCode, body: &'static str| {
        state
            .metrics
            .connections_refused
            .with_label_values(&[reason])
            .inc();
        (status, [("retry-after", "1")], body).into_response()
    };
    let preauth = match state.preauth.enter(client_key(peer.ip())) {
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
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        return refused(
            "total",
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections",
        );
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
                session::run(socket, state, peer, preauth).await;
                drop(permit);
            })
        })
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    // One probe at a time asks the database, at most once a second; the
    // others wait for (or reuse) its answer. The writers' pool is the one
    // asked: it is the one readiness is about.
    let mut last = state.ready.lock().await;
    let now = tokio::time::Instant::now();
    let ok = match *last {
        Some((at, ok)) if now.duration_since(at) < Duration::from_secs(1) => ok,
        _ => {
            let ok = tokio::time::timeout(Duration::from_secs(2), state.store.ping())
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

// ---- cheap attacks (issue 10, section 4) ----

/// The key the per-address limits count by: the address itself, except
/// IPv6, counted per /64 (one host usually holds a whole /64), and IPv4
/// mapped into IPv6, counted as the IPv4 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

/// Sockets that have not said a valid hello yet: at most
/// `HUB_MAX_PREAUTH_CONNECTIONS` in all (and never more than
/// `HUB_MAX_CONNECTIONS`), and `HUB_MAX_PREAUTH_PER_IP` per client key.
/// Silent sockets therefore hold at most that much of the total, and a
/// single address at most its share of that.
struct PreAuth {
    total: Arc<Semaphore>,
    /// Attacker-chosen keys: std's randomly seeded hasher, not foldhash.
    per_ip: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    metrics: Arc<Metrics>,
}

enum PreAuthFull {
    PerIp,
    Total,
}

/// A socket's place among the pre-auth ones; dropped after a valid hello
/// (or when the socket ends first).
pub struct PreAuthGuard {
    preauth: Arc<PreAuth>,
    ip: IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl PreAuth {
    fn new(s: &Settings, metrics: Arc<Metrics>) -> Self {
        Self {
            total: Arc::new(Semaphore::new(
                s.max_preauth_connections.min(s.max_connections),
            )),
            per_ip: Default::default(),
            max_per_ip: s.max_preauth_per_ip,
            metrics,
        }
    }

    fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<PreAuthGuard, PreAuthFull> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(PreAuthFull::PerIp);
        }
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            if *n == 0 {
                per_ip.remove(&ip);
            }
            return Err(PreAuthFull::Total);
        };
        *n += 1;
        self.metrics.preauth_connections.inc();
        Ok(PreAuthGuard {
            preauth: self.clone(),
            ip,
            _permit: permit,
        })
    }
}

impl Drop for PreAuthGuard {
    fn drop(&mut self) {
        let mut per_ip = self
            .preauth
            .per_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.preauth.metrics.preauth_connections.dec();
    }
}

/// Accepts TCP connections and serves HTTP/1.1 on them (with upgrades, for
/// `/ws`) until `stop`, then lets requests in progress finish. Unlike
/// `axum::serve`, a connection must send a complete request head within
/// `header_timeout`, and an idle keep-alive connection is closed after it:
/// a socket that never sends a request costs nothing after that.
async fn serve_http(
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
        crate::earnings::error(StatusCode::SERVICE_UNAVAILABLE, reason, message)
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

/// Every minute: forget idle hello-rate buckets; every ten (and at start):
/// delete validator rows whose key never had a result stored and was not
/// seen for `HUB_UNUSED_VALIDATOR_TTL_SECS`. Every hub runs it; rows are
/// taken with SKIP LOCKED, so hubs do not contend.
async fn housekeeping(state: Arc<AppState>) {
    const BATCH: i64 = 1_000;
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ttl = Duration::from_secs(state.settings.unused_validator_ttl_secs);
    for n in 0u64.. {
        tick.tick().await;
        state.hello_limiter.retain_recent();
        state.hello_limiter.shrink_to_fit();
        if n % 10 != 0 {
            continue;
        }
        // At most 10 batches a pass; the rest waits for the next one.
        for _ in 0..10 {
            match state.store.forget_unused_validators(ttl, BATCH).await {
                Ok(gone) => {
                    state.metrics.validators_forgotten.inc_by(gone);
                    if gone > 0 {
                        tracing::info!(
                            validators = gone,
                            "forgot validators that never returned a result"
                        );
                    }
                    if gone < BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "forgetting unused validators failed");
                    break;
                }
            }
        }
    }
}
