//! This hub as a cluster member: the Redis clients, and the tasks that keep
//! it in the ring (membership), carry hub-to-hub messages (publisher and
//! inbox), advertise its validators (presence), rebalance them and, on hubs
//! that hold a treasury, stand for the payout election.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fred::interfaces::ClientLike;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use store::Store;

use crate::cluster::leader::{Election, Leadership};
use crate::cluster::membership::{connect, Clients};
use crate::cluster::presence::{Local, Presence, Remote};
use crate::cluster::rebalance;
use crate::cluster::router::Router;
use crate::cluster::routing::{self, InboxMessage};
use crate::cluster::{ClusterLink, Keys, Membership, MembershipConfig, Ring};
use crate::config::{ClusterSettings, RebalanceSettings};
use crate::metrics::Metrics;

/// Hub-to-hub messages queued before new ones are dropped.
const OUTBOX_QUEUE: usize = 8_192;

/// The cluster pieces, built and not yet running.
pub struct Node {
    membership: Membership,
    clients: Clients,
    keys: Keys,
    outbox_rx: mpsc::Receiver<(String, InboxMessage)>,
    remotes_tx: watch::Sender<Arc<Vec<Remote>>>,
    interval: Duration,
    rebalance: RebalanceSettings,
    /// `None`: this hub does not stand (it has no treasury).
    election: Option<Election>,
}

/// What [`Node::connect`] hands the rest of the hub.
pub struct Joined {
    pub node: Node,
    /// For the [`Router`].
    pub link: ClusterLink,
    /// This hub's term as payout leader, when it holds one; `None` when it
    /// does not stand.
    pub leadership: Option<Leadership>,
}

impl Node {
    /// Configures the Redis clients (they connect in the background) and
    /// the membership, presence and routing pieces, and, if this hub is a
    /// `candidate` for the payout election, the election. Only hubs that
    /// can pay stand: a leader without a treasury would hold the lock and
    /// pay nothing, while a hub with one waited.
    pub fn connect(
        s: &ClusterSettings,
        hub_id: &str,
        candidate: bool,
        local_addr: SocketAddr,
        store: Store,
        metrics: Arc<Metrics>,
        ring: watch::Sender<Arc<Ring>>,
    ) -> anyhow::Result<Joined> {
        let address = s
            .advertise_address
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let interval = s.announce_interval;
        let keys = Keys::new(s.prefix.clone());
        let clients = connect(&s.redis_url, s.tls_ca.as_deref(), interval)
            .context("configuring Redis (HUB_REDIS_URL, HUB_REDIS_TLS_CA)")?;
        let client = clients.client.clone();
        let cfg = MembershipConfig {
            keys: keys.clone(),
            hub_id: hub_id.to_string(),
            address,
            interval,
        };
        let membership = Membership::new(
            cfg,
            client.clone(),
            clients.membership.clone(),
            metrics.clone(),
            ring,
        );
        // A claim outlives a few missed announcements, not a crash.
        let presence = Presence::new(
            client.clone(),
            keys.clone(),
            hub_id.to_string(),
            interval * 3 + Duration::from_secs(1),
        );
        let (outbox, outbox_rx) = routing::outbox(OUTBOX_QUEUE, metrics.clone());
        let (remotes_tx, remotes) = watch::channel(Arc::new(Vec::new()));
        let link = ClusterLink {
            presence,
            outbox,
            remotes,
        };
        let (election, leadership) = if candidate {
            let (e, l) = Election::new(
                client,
                store,
                keys.clone(),
                hub_id.to_string(),
                s.leader_lease,
                metrics,
            );
            (Some(e), Some(l))
        } else {
            (None, None)
        };
        Ok(Joined {
            node: Node {
                membership,
                clients,
                keys,
                outbox_rx,
                remotes_tx,
                interval,
                rebalance: s.rebalance.clone(),
                election,
            },
            link,
            leadership,
        })
    }

    /// Starts the cluster tasks. Membership, presence, rebalancing and the
    /// election stop (leaving the ring, stepping down) as soon as
    /// `draining` is cancelled, so other hubs take over this hub's websites
    /// while it drains; routing runs until `routing_stop`, to carry the
    /// last summaries.
    pub fn spawn(
        self,
        router: Router,
        metrics: Arc<Metrics>,
        draining: CancellationToken,
        routing_stop: CancellationToken,
    ) -> Running {
        let c = self;
        watch_reconnects(&metrics, &c.clients.client, "commands");
        watch_reconnects(&metrics, &c.clients.membership, "membership subscriber");
        watch_reconnects(&metrics, &c.clients.inbox, "inbox subscriber");
        let loads = c.membership.loads();
        let r = router.clone();
        let membership = tokio::spawn(
            c.membership
                .run(move || r.registry().len(), draining.clone()),
        );
        let rebalance = tokio::spawn(rebalance::run(
            router.clone(),
            loads,
            c.rebalance,
            c.interval,
            draining.clone(),
        ));
        let publisher = tokio::spawn(routing::run_publisher(
            c.clients.client.clone(),
            c.keys.clone(),
            metrics.clone(),
            c.outbox_rx,
            routing_stop.clone(),
        ));
        let r = router.clone();
        let inbox = tokio::spawn(routing::run_inbox(
            c.clients.inbox.clone(),
            c.keys,
            router.hub_id().to_string(),
            metrics,
            move |m| r.inbound(m),
            routing_stop,
        ));
        let presence = tokio::spawn(run_presence(
            router,
            c.remotes_tx,
            c.interval,
            draining.clone(),
        ));
        let mut tasks = vec![membership, rebalance, publisher, inbox, presence];
        if let Some(e) = c.election {
            tasks.push(tokio::spawn(e.run(draining)));
        }
        Running {
            tasks,
            clients: c.clients,
        }
    }
}

/// The running cluster tasks.
pub struct Running {
    tasks: Vec<JoinHandle<()>>,
    clients: Clients,
}

impl Running {
    /// Waits (bounded) for the tasks, then ends the Redis connections and
    /// fred's reconnection tasks.
    pub async fn stop(self) {
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let c = self.clients;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = c.membership.quit().await;
            let _ = c.inbox.quit().await;
            let _ = c.client.quit().await;
        })
        .await;
    }
}

/// Counts and logs every reconnection of a Redis client. Redis closes a
/// subscriber whose output buffer overflows (`client-output-buffer-limit
/// pubsub`); this is where a hub that fell behind shows up.
fn watch_reconnects(
    metrics: &Arc<Metrics>,
    client: &impl fred::interfaces::EventInterface,
    which: &'static str,
) {
    let metrics = metrics.clone();
    client.on_reconnect(move |server| {
        metrics.redis_reconnects.inc();
        tracing::warn!(%server, client = which, "reconnected to Redis");
        async { Ok(()) }
    });
}

/// Every announcement: advertise this hub's validators and read the
/// others'. On shutdown, withdraw the list at once.
async fn run_presence(
    router: Router,
    remotes: watch::Sender<Arc<Vec<Remote>>>,
    interval: Duration,
    draining: CancellationToken,
) {
    let Some(link) = router.link().cloned() else {
        return;
    };
    let metrics = router.metrics();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_read = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = draining.cancelled() => break,
            _ = tick.tick() => {}
        }
        let sessions = router.registry().snapshot();
        // A session told to move (rebalancing) is advertised with no room,
        // so owners (old hubs too) send it nothing; its claim is still
        // extended until it closes.
        let locals: Vec<Local> = sessions
            .iter()
            .map(|h| Local {
                key: h.key.to_base58(),
                generation: h.generation,
                region: h.region.clone(),
                capacity: if h.is_leaving() { 0 } else { h.capacity },
                load: h.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                prefix: h.prefix,
                counts: h.counts.load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect();
        link.outbox.send(
            router.hub_id(),
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
                    metrics.sessions_replaced.inc();
                    h.signals.replace();
                }
                // This session's claim found an older session's in place
                // (its own claim failed, or Redis lost it): that one goes.
                for (i, hub, generation) in found.displaced {
                    if let Some(h) = sessions.get(i) {
                        router.kick(&hub, h.key, generation);
                    }
                }
                if let Some(e) = found.error {
                    metrics.redis_errors.inc();
                    tracing::warn!(error = %e, "extending validators' presence claims failed");
                }
            }
            Err(e) => {
                metrics.redis_errors.inc();
                tracing::warn!(error = %e, "advertising validators failed");
            }
        }
        let members = router.ring().borrow().members().to_vec();
        match link.presence.remotes(&members).await {
            Ok(r) => {
                last_read = tokio::time::Instant::now();
                remotes.send_replace(Arc::new(r));
            }
            Err(e) => {
                // Keep the last view for a while (a task to a gone validator
                // just expires); past the presence TTL, cut off from Redis,
                // use only this hub's own validators.
                metrics.redis_errors.inc();
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
