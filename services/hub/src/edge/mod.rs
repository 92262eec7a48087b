//! The validator-facing edge: the HTTP server and its routes ([`http`]),
//! the operator's access rules ([`access`]), the caps on sockets that have not said hello yet ([`preauth`]), one
//! validator's session ([`session`]), and the earnings endpoint.

pub mod access;
pub(crate) mod earnings;
pub(crate) mod http;
pub(crate) mod preauth;
pub(crate) mod session;
pub(crate) mod wire;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use store::Store;

use crate::metrics::Metrics;

/// Hellos per client address.
pub type HelloLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// Every minute: forget idle hello-rate buckets; every ten (and at start):
/// delete validator rows whose key never had a result stored and was not
/// seen for `HUB_UNUSED_VALIDATOR_TTL_SECS`. Every hub runs it; rows are
/// taken with SKIP LOCKED, so hubs do not contend.
pub async fn housekeeping(
    hello_limiter: Arc<HelloLimiter>,
    store: Store,
    metrics: Arc<Metrics>,
    ttl: Duration,
) {
    const BATCH: i64 = 1_000;
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tick.tick().await;
        hello_limiter.retain_recent();
        hello_limiter.shrink_to_fit();
        if n % 10 != 0 {
            continue;
        }
        // At most 10 batches a pass; the rest waits for the next one.
        for _ in 0..10 {
            match store.forget_unused_validators(ttl, BATCH).await {
                Ok(gone) => {
                    metrics.validators_forgotten.inc_by(gone);
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
