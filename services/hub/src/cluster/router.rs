//! The one place that decides where a message goes: to a validator session
//! on this hub or through another hub's inbox, to this hub's coordinator or
//! to the hub that owns the website. A hub without Redis is
//! [`Mesh::Alone`]: every validator it can reach is its own and every
//! website is its own, so nothing else in the hub asks whether there is a
//! cluster.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use foldhash::{HashSet, HashSetExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use protocol::{HubMessage, PublicKey, Task};
use store::{RoundId, ValidatorId, WebsiteId};

use crate::cluster::presence::Claim;
use crate::cluster::routing::InboxMessage;
use crate::cluster::{ClusterLink, Ring};
use crate::metrics::Metrics;
use crate::registry::{NetPrefix, Outbound, Registry, SessionHandle};
use crate::rounds::Event;

/// How this hub reaches the others.
pub enum Mesh {
    /// No Redis: this hub alone.
    Alone,
    /// Presence and inboxes over Redis.
    Redis(Box<ClusterLink>),
}

/// Where a task for a validator goes.
#[derive(Clone)]
pub enum Target {
    Local(Arc<SessionHandle>),
    /// Held by another hub: the task travels through that hub's inbox.
    Remote(String),
}

/// A validator a task can be sent to, as its holder last reported it.
pub struct Reachable {
    pub key: PublicKey,
    pub region: String,
    pub capacity: u32,
    /// Tasks its session has in flight (all owners' tasks), as its holder
    /// counts them.
    pub load: u32,
    /// Its client's network; `None` when announced by an older hub.
    pub prefix: Option<NetPrefix>,
    /// Its results count toward decisions (not on probation, trusted
    /// enough); an older hub's validators count.
    pub counts: bool,
    pub target: Target,
}

impl Reachable {
    pub fn is_local(&self) -> bool {
        matches!(self.target, Target::Local(_))
    }
}

/// Cheap to clone; every clone routes the same way.
#[derive(Clone)]
pub struct Router(Arc<Inner>);

struct Inner {
    hub_id: String,
    registry: Arc<Registry>,
    ring: watch::Receiver<Arc<Ring>>,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    mesh: Mesh,
    /// Cancelled when this hub starts draining: tasks from other hubs are
    /// then refused.
    draining: CancellationToken,
}

impl Router {
    pub fn new(
        hub_id: String,
        registry: Arc<Registry>,
        ring: watch::Receiver<Arc<Ring>>,
        events: mpsc::Sender<Event>,
        metrics: Arc<Metrics>,
        mesh: Mesh,
        draining: CancellationToken,
    ) -> Self {
        Self(Arc::new(Inner {
            hub_id,
            registry,
            ring,
            events,
            metrics,
            mesh,
            draining,
        }))
    }

    pub fn hub_id(&self) -> &str {
        &self.0.hub_id
    }

    /// Every validator a task can go to: this hub's sessions, then those
    /// other hubs advertise (a validator that just moved here and is still
    /// listed there counts once, as local). A session told to move
    /// (rebalancing) is not one: it is leaving.
    pub fn reachable(&self) -> Vec<Reachable> {
        let handles = self.0.registry.snapshot();
        let mut out = Vec::with_capacity(handles.len());
        let mut seen = HashSet::with_capacity(handles.len());
        for h in handles {
            // Its next session may be on another hub already.
            if h.is_leaving() {
                continue;
            }
            seen.insert(h.key);
            out.push(Reachable {
                key: h.key,
                region: h.region.clone(),
                capacity: h.capacity,
                load: h.in_flight.load(Relaxed),
                prefix: Some(h.prefix),
                counts: h.counts.load(Relaxed),
                target: Target::Local(h),
            });
        }
        if let Mesh::Redis(link) = &self.0.mesh {
            for r in link.remotes.borrow().iter() {
                if !seen.insert(r.key) {
                    continue;
                }
                out.push(Reachable {
                    key: r.key,
                    region: r.region.clone(),
                    capacity: r.capacity,
                    load: r.load,
                    prefix: r.prefix,
                    counts: r.counts,
                    target: Target::Remote(r.hub_id.clone()),
                });
            }
        }
        out
    }

    /// Records whether each local validator's results count now.
    pub fn note_standings(&self, standings: &[store::Standing]) {
        let counts: foldhash::HashMap<ValidatorId, bool> =
            standings.iter().map(|s| (s.id, s.counts())).collect();
        for h in self.0.registry.snapshot() {
            if let Some(c) = counts.get(&h.validator_id) {
                h.counts.store(*c, Relaxed);
            }
        }
    }

    /// Whether `key` has a session on this hub.
    pub fn is_local(&self, key: &PublicKey) -> bool {
        self.0.registry.get(key).is_some()
    }

    /// The validator ids of this hub's sessions.
    pub fn local_validator_ids(&self) -> Vec<ValidatorId> {
        self.0
            .registry
            .snapshot()
            .iter()
            .map(|h| h.validator_id)
            .collect()
    }

    /// Hands `task` to its validator's session or to the hub holding it.
    /// False when it cannot go now (a full queue: a slow consumer, or a full
    /// outbox): the caller picks someone else.
    pub fn send_task(&self, to: &Target, task: Task) -> bool {
        match (to, &self.0.mesh) {
            (Target::Local(h), _) => {
                h.tx.try_send(Outbound::Frame(Box::new(HubMessage::Task(task))))
                    .is_ok()
            }
            (Target::Remote(hub), Mesh::Redis(link)) => {
                link.outbox.send(hub, InboxMessage::Task { task })
            }
            (Target::Remote(_), Mesh::Alone) => false,
        }
    }

    /// A result of this round was committed: tell the coordinator that owns
    /// the website (this hub's, or another's through its inbox).
    pub fn answered(&self, website_id: WebsiteId, round_id: RoundId, task_id: Uuid) {
        if let Mesh::Redis(link) = &self.0.mesh {
            let owner = self.0.ring.borrow().owner(website_id).map(str::to_string);
            if let Some(owner) = owner.filter(|o| *o != self.0.hub_id) {
                let msg = InboxMessage::Answered {
                    round_id: round_id.0,
                    task_id,
                };
                link.outbox.send(&owner, msg);
                return;
            }
        }
        let _ = self
            .0
            .events
            .try_send(Event::Answered { round_id, task_id });
    }

    /// A session of this hub ended: its unanswered tasks may need replacing.
    pub fn session_closed(&self, key: PublicKey, generation: u64) {
        let _ = self
            .0
            .events
            .try_send(Event::SessionClosed { key, generation });
    }

    /// Websites changed in PostgreSQL.
    pub fn websites_changed(&self, which: crate::rounds::Changed) {
        let _ = self.0.events.try_send(Event::WebsitesChanged(which));
    }

    /// Acts on a message from another hub.
    pub fn inbound(&self, msg: InboxMessage) {
        let inner = &self.0;
        match msg {
            InboxMessage::Task { task } => {
                // A draining hub takes no new work for its leaving
                // sessions, nor does a session told to move.
                let sent = !inner.draining.is_cancelled()
                    && inner.registry.get(&task.validator).is_some_and(|h| {
                        !h.is_leaving()
                            && h.tx
                                .try_send(Outbound::Frame(Box::new(HubMessage::Task(task))))
                                .is_ok()
                    });
                if !sent {
                    // The owner finds out at the deadline and replaces the task.
                    inner
                        .metrics
                        .cross_hub_dropped
                        .with_label_values(&["in"])
                        .inc();
                }
            }
            InboxMessage::Answered { round_id, task_id } => {
                let round_id = RoundId(round_id);
                let _ = inner.events.try_send(Event::Answered { round_id, task_id });
            }
            InboxMessage::Ping { sent_at_ms } => {
                let rtt = (protocol::now_ms() - sent_at_ms).max(0) as f64 / 1000.0;
                inner.metrics.pubsub_rtt.observe(rtt);
            }
            InboxMessage::Kick {
                validator,
                generation,
            } => self.close_if_current(&validator, generation),
        }
    }

    /// Closes this hub's session of `key` if it is still `generation`.
    fn close_if_current(&self, key: &PublicKey, generation: u64) {
        if let Some(h) = self.0.registry.get(key) {
            if h.generation == generation {
                h.signals.replace();
            }
        }
    }

    /// Tells `hub` to close its session of `validator` if it is still
    /// `generation` (a newer one is here).
    pub fn kick(&self, hub: &str, validator: PublicKey, generation: u64) {
        if hub == self.0.hub_id {
            return;
        }
        if let Mesh::Redis(link) = &self.0.mesh {
            link.outbox.send(
                hub,
                InboxMessage::Kick {
                    validator,
                    generation,
                },
            );
        }
    }

    /// Claims the cluster-wide presence of a new session, in the background
    /// (a slow or absent Redis must not delay the welcome): the hub that held
    /// the key before is told to let go; if a newer session elsewhere holds
    /// it, this one is closed.
    pub fn claim(&self, handle: &SessionHandle) {
        let Mesh::Redis(link) = &self.0.mesh else {
            return;
        };
        let (router, link) = (self.clone(), link.clone());
        let (key, generation, signals) = (handle.key, handle.generation, handle.signals.clone());
        tokio::spawn(async move {
            match link.presence.claim(&key.to_base58(), generation).await {
                Ok(Claim::Won(Some((hub, generation)))) => router.kick(&hub, key, generation),
                Ok(Claim::Won(None)) => {}
                Ok(Claim::Lost(hub, _)) => {
                    // Another hub's session with this key said hello later
                    // (by the hubs' clocks), and its claim landed first:
                    // the later hello stays.
                    tracing::info!(validator = %key, newer_on = %hub, "a newer session holds this key");
                    router.0.metrics.sessions_replaced.inc();
                    signals.replace();
                }
                Err(e) => {
                    router.0.metrics.redis_errors.inc();
                    tracing::warn!(error = %e, "claiming the validator's presence failed");
                }
            }
        });
    }

    /// Releases a closed session's presence claim, in the background.
    pub fn release(&self, key: PublicKey, generation: u64) {
        let Mesh::Redis(link) = &self.0.mesh else {
            return;
        };
        let (link, metrics) = (link.clone(), self.0.metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = link.presence.release(&key.to_base58(), generation).await {
                metrics.redis_errors.inc();
                tracing::debug!(error = %e, "releasing the validator's presence failed");
            }
        });
    }

    /// The cluster link, for the presence loop.
    pub(super) fn link(&self) -> Option<&ClusterLink> {
        match &self.0.mesh {
            Mesh::Redis(link) => Some(link),
            Mesh::Alone => None,
        }
    }

    pub(super) fn registry(&self) -> &Registry {
        &self.0.registry
    }

    pub(super) fn ring(&self) -> &watch::Receiver<Arc<Ring>> {
        &self.0.ring
    }

    pub(super) fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
}
