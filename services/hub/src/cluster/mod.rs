//! The cluster seam: membership and ownership over Redis.
//!
//! Redis makes the cluster efficient, never correct: the one-round-per-slot
//! guard lives in PostgreSQL, so two hubs that disagree about the ring for a
//! while can both try a slot and only one wins. Pub/sub is at most once; a
//! lost "membership changed" message is repaired by the next announcement.
//!
//! - [`keys`]: every key and channel name (hash-tagged for Redis Cluster).
//! - [`ring`]: website -> owner by consistent hashing with virtual nodes.
//! - [`leader`]: the payout leader's lock, fenced by a PostgreSQL epoch;
//!   only hubs with a treasury stand.
//! - [`presence`]: which hub holds which validator (compare-and-delete).
//! - [`routing`]: hub inboxes over pub/sub (tasks, result summaries, kicks).
//! - [`membership`]: announce, read the live members, publish changes, and
//!   keep a `watch` of the current [`Ring`] that the coordinator follows.
//! - [`router`]: the one place that decides whether a task, a result summary
//!   or a kick stays on this hub or goes to another hub's inbox.
//! - [`rebalance`]: a hub well above the cluster's mean of validators asks
//!   some of them to reconnect (the rule, pure, and the task applying it).
//! - [`node`]: this hub's Redis clients and cluster tasks (membership,
//!   publisher, inbox, the presence loop, rebalancing, the election if it
//!   stands), started and stopped as one.
//!
//! Without Redis (`HUB_REDIS_URL` unset) the ring is this hub alone and the
//! router's mesh is [`router::Mesh::Alone`].

pub mod keys;
pub mod leader;
pub mod membership;
pub mod node;
pub mod presence;
pub mod rebalance;
pub mod ring;
pub mod router;
pub mod routing;

pub use keys::Keys;
pub use membership::{Membership, MembershipConfig};
pub use ring::Ring;

use std::sync::Arc;

/// KEYS: a key. ARGV: the value we set. Deletes it only if it still holds
/// that value, so a holder can never erase a successor's key.
pub(crate) const COMPARE_AND_DELETE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

use tokio::sync::watch;

/// What the rest of the hub uses of the cluster when Redis is configured.
#[derive(Clone)]
pub struct ClusterLink {
    pub presence: presence::Presence,
    pub outbox: routing::Outbox,
    /// Validators other hubs hold, refreshed every announcement.
    pub remotes: watch::Receiver<Arc<Vec<presence::Remote>>>,
}
