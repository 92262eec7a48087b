//! Website -> owner hub by consistent hashing over the live hubs.
//!
//! `hashring` has no virtual nodes, so each hub is added `VNODES` times as a
//! stable `(hub id, replica)` pair. Both the points and the lookups hash
//! explicit little-endian bytes with hashring's fixed-key SipHash, so every
//! hub on every platform computes the same owners from the same members.

use std::hash::{Hash, Hasher};

use hashring::HashRing;
use store::WebsiteId;

/// Points per hub: enough for an even spread over a handful of hubs.
pub const VNODES: u16 = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
struct VNode {
    hub: String,
    replica: u16,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.hub.as_bytes());
        state.write(&[0xff]);
        state.write(&self.replica.to_le_bytes());
    }
}

/// Hashes the id's integer (little-endian), as before the id was typed:
/// owners must not move (see `owners_are_pinned_for_fixed_inputs`).
struct WebsiteKey(WebsiteId);

impl Hash for WebsiteKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(b"website:");
        state.write(&self.0 .0.to_le_bytes());
    }
}

/// An immutable ring; a membership change builds a new one.
pub struct Ring {
    members: Vec<String>,
    ring: HashRing<VNode>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("members", &self.members)
            .finish()
    }
}

impl Ring {
    /// A ring over `members` (order and duplicates do not matter).
    pub fn new(members: impl IntoIterator<Item = String>) -> Self {
        let mut members: Vec<String> = members.into_iter().collect();
        members.sort();
        members.dedup();
        let mut ring = HashRing::new();
        ring.batch_add(
            members
                .iter()
                .flat_map(|hub| {
                    (0..VNODES).map(move |replica| VNode {
                        hub: hub.clone(),
                        replica,
                    })
                })
                .collect(),
        );
        Self { members, ring }
    }

    /// Sorted member ids.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The hub that owns `website_id`, if any hub is live.
    pub fn owner(&self, website_id: WebsiteId) -> Option<&str> {
        self.ring
            .get(&WebsiteKey(website_id))
            .map(|v| v.hub.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[&str]) -> Ring {
        Ring::new(ids.iter().map(|s| s.to_string()))
    }

    #[test]
    fn owners_are_pinned_for_fixed_inputs() {
        // If this changes, hubs of different versions would disagree on
        // ownership during a rolling upgrade: change it only on purpose.
        let r = ring(&["hub-a", "hub-b", "hub-c"]);
        let owners: Vec<&str> = (1..=12).map(|id| r.owner(WebsiteId(id)).unwrap()).collect();
        assert_eq!(owners, PINNED);
        // Member order does not matter.
        let r2 = ring(&["hub-c", "hub-a", "hub-b", "hub-a"]);
        assert!((1..=12).all(|id| r.owner(WebsiteId(id)) == r2.owner(WebsiteId(id))));
    }

    const PINNED: [&str; 12] = [
        "hub-c", "hub-a", "hub-b", "hub-c", "hub-a", "hub-b", "hub-a", "hub-c", "hub-b", "hub-a",
        "hub-a", "hub-a",
    ];

    #[test]
    fn adding_a_hub_moves_about_one_nth_and_only_to_it() {
        let before = ring(&["hub-a", "hub-b", "hub-c"]);
        let after = ring(&["hub-a", "hub-b", "hub-c", "hub-d"]);
        let n = 20_000;
        let mut moved = 0;
        for id in 0..n {
            let id = WebsiteId(id);
            let (b, a) = (before.owner(id).unwrap(), after.owner(id).unwrap());
            if a != b {
                moved += 1;
                assert_eq!(a, "hub-d", "a website only moves to the new hub");
            }
        }
        let share = moved as f64 / n as f64;
        assert!((0.18..0.32).contains(&share), "moved {share}");
    }

    #[test]
    fn load_is_spread_evenly_enough() {
        let r = ring(&["hub-a", "hub-b", "hub-c"]);
        let mut counts = std::collections::HashMap::new();
        for id in 0..30_000 {
            *counts.entry(r.owner(WebsiteId(id)).unwrap()).or_insert(0) += 1;
        }
        for (hub, c) in counts {
            assert!((7_000..13_000).contains(&c), "{hub}: {c}");
        }
    }

    #[test]
    fn an_empty_ring_owns_nothing() {
        assert_eq!(Ring::new(Vec::new()).owner(WebsiteId(1)), None);
    }
}
