//! Leader election for singleton work (payouts) through a Redis lock,
//! fenced by an epoch from PostgreSQL. Only hubs with a treasury run an
//! [`Election`] (see `node::Node::connect`); the others never touch the
//! lock, so a leader can always pay.
//!
//! - Acquire: `SET lock value NX PX lease`, the value unique to this term.
//! - Renew: compare-and-extend (only if the lock still holds our value).
//! - Release: compare-and-delete.
//! - After winning, take the next epoch from PostgreSQL (`fencing`), which
//!   only goes up: a Redis that restarts empty can elect a second leader,
//!   but never hand out an epoch twice, and every leader write is checked
//!   against the newest epoch.
//! - A leader stops acting the moment it cannot be sure it holds the lock:
//!   a failed or refused renewal, or its lease running out on its own
//!   monotonic clock (measured from *before* the command that set it, so
//!   the local lease never outlives Redis's).

use std::sync::Arc;
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::KeysInterface;
use fred::types::scripts::Script;
use fred::types::{Expiration, SetOptions};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use store::Store;

use crate::cluster::Keys;
use crate::metrics::Metrics;

/// The fencing role payouts use.
pub const PAYOUT_ROLE: &str = "payouts";

/// KEYS: lock. ARGV: value, lease ms.
const EXTEND: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// This hub's current term as leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub epoch: i64,
    /// Act only before this instant (monotonic clock).
    pub lease_until: Instant,
}

impl Term {
    /// True while the lease, as this hub measures it, has not run out.
    pub fn valid(&self) -> bool {
        Instant::now() < self.lease_until
    }
}

/// Current leadership; `None` when this hub is not (or no longer sure it is)
/// the leader. Whoever acts as leader checks `Term::valid` before each step.
pub type Leadership = watch::Receiver<Option<Term>>;

pub struct Election {
    client: Client,
    store: Store,
    keys: Keys,
    hub_id: String,
    lease: Duration,
    metrics: Arc<Metrics>,
    state: watch::Sender<Option<Term>>,
    extend: Script,
    release: Script,
}

impl Election {
    pub fn new(
        client: Client,
        store: Store,
        keys: Keys,
        hub_id: String,
        lease: Duration,
        metrics: Arc<Metrics>,
    ) -> (Self, Leadership) {
        let (state, rx) = watch::channel(None);
        (
            Self {
                client,
                store,
                keys,
                hub_id,
                lease,
                metrics,
                state,
                extend: Script::from_lua(EXTEND),
                release: Script::from_lua(super::COMPARE_AND_DELETE),
            },
            rx,
        )
    }

    fn step_down(&self, why: &str) {
        if self.state.borrow().is_some() {
            tracing::warn!(reason = why, "no longer the leader");
            self.metrics.is_leader.set(0);
            self.state.send_replace(None);
        }
    }

    /// Tries to take the lock; on success takes a new epoch.
    async fn try_acquire(&self, value: &str) -> Option<Term> {
        let started = Instant::now();
        let set: Result<Option<String>, _> = self
            .client
            .set(
                self.keys.leader_lock(),
                value,
                Some(Expiration::PX(self.lease.as_millis() as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await;
        match set {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => {
                self.metrics.redis_errors.inc();
                tracing::debug!(error = %e, "taking the leader lock failed");
                return None;
            }
        }
        match self.store.next_epoch(PAYOUT_ROLE).await {
            Ok(epoch) => Some(Term {
                epoch,
                lease_until: started + self.lease,
            }),
            Err(e) => {
                // Without an epoch we may not act: give the lock back.
                tracing::warn!(error = %e, "taking a fencing epoch failed; releasing the lock");
                self.release_lock(value).await;
                None
            }
        }
    }

    async fn renew(&self, value: &str) -> Result<bool, fred::error::Error> {
        let n: i64 = self
            .extend
            .evalsha_with_reload(
                &self.client,
                vec![self.keys.leader_lock()],
                vec![value.to_string(), self.lease.as_millis().to_string()],
            )
            .await?;
        Ok(n == 1)
    }

    async fn release_lock(&self, value: &str) {
        let r: Result<i64, _> = self
            .release
            .evalsha_with_reload(
                &self.client,
                vec![self.keys.leader_lock()],
                vec![value.to_string()],
            )
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "releasing the leader lock failed");
        }
    }

    /// Campaigns and renews every third of the lease until `stop`, then
    /// releases the lock if it still holds it.
    pub async fn run(self, stop: CancellationToken) {
        let every = self.lease / 3;
        let mut value = String::new();
        loop {
            let current = *self.state.borrow();
            match current {
                None => {
                    value = format!("{}|{:016x}", self.hub_id, fastrand::u64(..));
                    if let Some(term) = self.try_acquire(&value).await {
                        tracing::info!(epoch = term.epoch, "became the leader");
                        self.metrics.is_leader.set(1);
                        self.metrics.leader_epoch.set(term.epoch);
                        self.metrics.leader_changes.inc();
                        self.state.send_replace(Some(term));
                    }
                }
                Some(term) => {
                    let started = Instant::now();
                    match self.renew(&value).await {
                        Ok(true) if term.valid() => {
                            self.state.send_replace(Some(Term {
                                epoch: term.epoch,
                                lease_until: started + self.lease,
                            }));
                        }
                        Ok(true) => {
                            // Renewed, but our own lease had already run out
                            // (a pause): another may have led meanwhile.
                            self.metrics.lease_renewal_failures.inc();
                            self.step_down("lease ran out before renewal");
                            self.release_lock(&value).await;
                        }
                        Ok(false) => {
                            self.metrics.lease_renewal_failures.inc();
                            self.step_down("lock lost");
                        }
                        Err(e) => {
                            self.metrics.lease_renewal_failures.inc();
                            self.metrics.redis_errors.inc();
                            tracing::warn!(error = %e, "renewing the leader lock failed");
                            self.step_down("renewal failed");
                        }
                    }
                }
            }
            // Also wake when the lease would run out, so the state never
            // claims leadership past it.
            let lease_end = self
                .state
                .borrow()
                .map(|t| t.lease_until)
                .unwrap_or_else(|| Instant::now() + every);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
                _ = tokio::time::sleep_until(lease_end) => {
                    if self.state.borrow().is_some_and(|t| !t.valid()) {
                        self.metrics.lease_renewal_failures.inc();
                        self.step_down("lease ran out");
                    }
                }
            }
        }
        if self.state.borrow().is_some() {
            self.step_down("shutting down");
            self.release_lock(&value).await;
        }
    }
}
