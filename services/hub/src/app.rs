//! The hub as a library: build on a listener (port 0 allowed), read
//! `local_addr()`, then `run_until_stopped(signal)`. This module only wires
//! the parts together and owns the shutdown order; each part gets the
//! narrow handles it uses.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use store::Store;

use crate::cluster::leader::{Leadership, Term};
use crate::cluster::node::{Joined, Node};
use crate::cluster::router::{Mesh, Router};
use crate::cluster::Ring;
use crate::config::Settings;
use crate::edge::access::AccessPolicy;
use crate::edge::http::{self, Routes};
use crate::edge::preauth::PreAuth;
use crate::edge::session::Sessions;
use crate::ingest::{Backlog, IngestItem, Verifier, Writer};
use crate::metrics::Metrics;
use crate::payouts::Payer;
use crate::registry::Registry;
use crate::rounds::coordinator::{self, Coordinator};
use crate::rounds::Event;

/// A lone hub's term never runs out (there is no lock to lose).
const STANDALONE_LEASE: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Events queued for the coordinator before senders start dropping them.
const EVENT_QUEUE: usize = 65_536;

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    settings: Settings,
    store: Store,
    read_store: Store,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    access: Arc<AccessPolicy>,
    router: Router,
    ring: watch::Receiver<Arc<Ring>>,
    backlog: Arc<Backlog>,
    ingest: mpsc::Sender<IngestItem>,
    ingest_rx: mpsc::Receiver<IngestItem>,
    events_rx: mpsc::Receiver<Event>,
    node: Option<Node>,
    leadership: Option<Leadership>,
    payer: Option<Payer>,
    /// Cancelled on SIGTERM: stop scheduling, leave the ring, tell
    /// validators to go, drain.
    draining: CancellationToken,
    /// Without Redis, this hub leads alone; the sender lives as long as it.
    _standalone_term: Option<watch::Sender<Option<Term>>>,
}

/// What an embedding program (or a test) may watch of a running hub.
#[derive(Clone)]
pub struct Handle {
    pub metrics: Arc<Metrics>,
    /// This hub's term as payout leader; `None` on a hub without a
    /// treasury, which never stands.
    pub leadership: Option<Leadership>,
}

impl Application {
    /// Connects to PostgreSQL, applies migrations, binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = &settings.database;
        let store = Store::connect(&db.url, db.max_connections)
            .await
            .context("connecting to PostgreSQL (HUB_DATABASE_URL)")?;
        store.migrate().await.context("applying migrations")?;
        store
            .ensure_partitions(settings.maintenance.partitions_ahead_days)
            .await
            .context("creating tick partitions")?;
        let read_store =
            Store::connect_reader(&db.url, db.read_max_connections, settings.http.timeout)
                .await
                .context("configuring the read pool (HUB_DATABASE_URL)")?;
        let listener = TcpListener::bind(settings.http.listen)
            .await
            .with_context(|| format!("binding {}", settings.http.listen))?;
        let local_addr = listener.local_addr()?;
        let (ingest, ingest_rx) = mpsc::channel(settings.ingest.queue);
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let metrics = Arc::new(Metrics::new(&settings.hub_id));
        // Alone until Redis says otherwise (and for good without Redis).
        let (ring_tx, ring) = watch::channel(Arc::new(Ring::new([settings.hub_id.clone()])));
        metrics.ring_members.set(1);
        // Only a hub that can pay stands for the payout election.
        let candidate = settings.payouts.is_some();
        let (mesh, node, mut leadership) = match &settings.cluster {
            None => (Mesh::Alone, None, None),
            Some(c) => {
                let Joined {
                    node,
                    link,
                    leadership,
                } = Node::connect(
                    c,
                    &settings.hub_id,
                    candidate,
                    local_addr,
                    store.clone(),
                    metrics.clone(),
                    ring_tx,
                )?;
                (Mesh::Redis(Box::new(link)), Some(node), leadership)
            }
        };
        // Payouts need a leader: the Redis election among the hubs with a
        // treasury, or, with no Redis, this hub alone with a fresh epoch (a
        // second such hub would take a newer epoch, and the database would
        // refuse this one's writes). A hub without a treasury never leads.
        let mut standalone_term = None;
        let payer = match &settings.payouts {
            None => {
                if settings.cluster.is_some() {
                    tracing::info!(
                        "no treasury (HUB_PAYOUT_TREASURY_KEYPAIR): not standing for the payout election"
                    );
                }
                None
            }
            Some(p) => {
                let treasury = Payer::read_treasury(&p.treasury_keypair, p.allow_insecure_keypair)
                    .context("reading the treasury keypair (HUB_PAYOUT_TREASURY_KEYPAIR)")?;
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
                    &p.rpc_url,
                    treasury,
                    p.cycle.clone(),
                    metrics.clone(),
                    lead,
                );
                tracing::info!(treasury = %payer.treasury(), rpc = %p.rpc_url, "payouts enabled (run while this hub leads)");
                Some(payer)
            }
        };
        let access = Arc::new(AccessPolicy::new(settings.validator_access));
        access
            .reload(&store)
            .await
            .context("reading the validator access rules")?;
        let registry = Arc::new(Registry::default());
        let draining = CancellationToken::new();
        let router = Router::new(
            settings.hub_id.clone(),
            registry.clone(),
            ring.clone(),
            events,
            metrics.clone(),
            mesh,
            draining.clone(),
        );
        Ok(Self {
            listener,
            local_addr,
            store,
            read_store,
            metrics,
            registry,
            router,
            ring,
            access,
            backlog: Arc::default(),
            ingest,
            ingest_rx,
            events_rx,
            node,
            leadership,
            payer,
            draining,
            _standalone_term: standalone_term,
            settings,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn handle(&self) -> Handle {
        Handle {
            metrics: self.metrics.clone(),
            leadership: self.leadership.clone(),
        }
    }

    /// Serves until `signal` resolves, then shuts down in order: stop
    /// accepting and scheduling, send every validator a reconnect hint, wait
    /// (bounded) for in-flight results, flush the tick writers, return.
    pub async fn run_until_stopped(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            listener,
            local_addr: _,
            settings: s,
            store,
            read_store,
            metrics,
            registry,
            router,
            ring,
            access,
            backlog,
            ingest,
            ingest_rx,
            events_rx,
            node,
            leadership: _,
            payer,
            draining,
            _standalone_term,
        } = self;
        tracing::info!(hub_id = %s.hub_id, addr = %listener.local_addr()?, "hub listening");

        let writer_stop = CancellationToken::new();
        let ingest_rx = Arc::new(Mutex::new(ingest_rx));
        let writer = Arc::new(Writer {
            store: store.clone(),
            metrics: metrics.clone(),
            batch_max: s.ingest.batch_max,
            linger: s.ingest.linger,
            router: router.clone(),
            backlog: backlog.clone(),
            shutdown_grace: s.sessions.drain_timeout,
            stop: writer_stop.clone(),
            stopped_at: std::sync::OnceLock::new(),
        });
        let writers: Vec<_> = (0..s.ingest.writers)
            .map(|_| tokio::spawn(writer.clone().run(ingest_rx.clone(), writer_stop.clone())))
            .collect();

        let routing_stop = CancellationToken::new();
        let cluster = node.map(|n| {
            n.spawn(
                router.clone(),
                metrics.clone(),
                draining.clone(),
                routing_stop.clone(),
            )
        });

        let access_rules = tokio::spawn(crate::edge::access::follow(
            store.clone(),
            access.clone(),
            registry.clone(),
            metrics.clone(),
            draining.clone(),
        ));
        let notifications = tokio::spawn(coordinator::follow_website_changes(
            store.clone(),
            router.clone(),
            draining.clone(),
        ));

        // Stops at once on shutdown: every step of a payout is safe to
        // interrupt (the next leader recovers it).
        let payer = payer.map(|p| tokio::spawn(p.run(draining.clone())));
        let maintenance = tokio::spawn(crate::maintenance::run(
            store.clone(),
            s.maintenance.clone(),
            metrics.clone(),
            draining.clone(),
        ));

        let coordinator_stop = CancellationToken::new();
        let coordinator = tokio::spawn(
            Coordinator::new(
                coordinator::Parts {
                    settings: s.rounds.clone(),
                    store: store.clone(),
                    metrics: metrics.clone(),
                    router: router.clone(),
                    keyring: s.keyring.clone(),
                    backlog: backlog.clone(),
                    ring,
                    draining: draining.clone(),
                },
                events_rx,
            )
            .run(coordinator_stop.clone()),
        );

        let hello_limiter = Arc::new(governor::RateLimiter::keyed(s.sessions.hello_quota()));
        let housekeeping = tokio::spawn(crate::edge::housekeeping(
            hello_limiter.clone(),
            store.clone(),
            metrics.clone(),
            s.unused_validator_ttl,
        ));

        let sessions = Arc::new(Sessions {
            settings: s.sessions.clone(),
            metrics: metrics.clone(),
            verifier: Verifier {
                keyring: s.keyring.clone(),
                reward_lamports: s.sessions.reward_lamports,
            },
            ingest,
            backlog,
            store: store.clone(),
            read_store: read_store.clone(),
            registry,
            router,
            hello_limiter,
            access,
            draining: draining.clone(),
        });
        let tracker = TaskTracker::new();
        let routes = http::router(Routes {
            preauth: Arc::new(PreAuth::new(&s.sessions, metrics.clone())),
            connections: Arc::new(Semaphore::new(s.sessions.max_connections)),
            tracker: tracker.clone(),
            settings: s.http.clone(),
            sessions,
            store,
            read_store,
            metrics,
            draining: draining.clone(),
        });
        let server = tokio::spawn(http::serve_http(
            listener,
            routes,
            s.http.timeout,
            draining.clone(),
        ));

        signal.await;
        tracing::info!("shutting down: draining validator sessions");
        draining.cancel();
        tracker.close();
        let grace = s.sessions.drain_timeout + Duration::from_secs(2);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("sessions still open after the drain timeout");
        }
        if let Some(p) = payer {
            let _ = p.await;
        }
        let _ = maintenance.await;
        coordinator_stop.cancel();
        let _ = coordinator.await;
        writer_stop.cancel();
        for w in writers {
            let _ = w.await;
        }
        tracing::info!("tick writers flushed");
        notifications.abort();
        access_rules.abort();
        housekeeping.abort();
        routing_stop.cancel();
        if let Some(c) = cluster {
            c.stop().await;
        }
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e).context("HTTP server task"),
            Err(_) => tracing::warn!("HTTP server did not stop in time"),
        }
        Ok(())
    }
}
