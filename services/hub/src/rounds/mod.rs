//! Rounds: which websites are due, who checks them, when a round is decided.
//!
//! - [`scheduler`]: pure slot arithmetic and validator choice.
//! - `coordinator`: the one task per hub that schedules the websites this
//!   hub owns, sends and replaces tasks (through the
//!   [`Router`](crate::cluster::router::Router)), and closes rounds; it does
//!   the I/O, the round's rules live in `machine`.
//! - `machine`: the round's life as a pure state machine.

pub(crate) mod coordinator;
pub(crate) mod machine;
pub mod scheduler;

use protocol::PublicKey;
use store::{RoundId, WebsiteId};
use uuid::Uuid;

/// What the rest of the hub tells the coordinator.
#[derive(Debug)]
pub enum Event {
    /// A result for this task was committed.
    Answered { round_id: RoundId, task_id: Uuid },
    /// A session ended; its unanswered tasks may need replacing.
    SessionClosed { key: PublicKey, generation: u64 },
    /// Websites changed in PostgreSQL (NOTIFY): reload them now.
    WebsitesChanged(Changed),
}

/// Which websites a notification says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// These rows (the payload `ids:1,2,3`).
    Ids(Vec<WebsiteId>),
    /// Any or all of them (`*`, a payload of an older trigger, or a lost
    /// connection that may have dropped notifications).
    All,
}

impl Changed {
    /// Reads a `websites_changed` payload (see the migrations).
    pub fn from_payload(p: &str) -> Self {
        let Some(list) = p.strip_prefix("ids:") else {
            return Changed::All;
        };
        list.split(',')
            .map(|id| id.parse().map(WebsiteId))
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|ids| !ids.is_empty())
            .map_or(Changed::All, Changed::Ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_ids_or_everything() {
        assert_eq!(
            Changed::from_payload("ids:3,17"),
            Changed::Ids(vec![WebsiteId(3), WebsiteId(17)])
        );
        for all in ["*", "INSERT", "TRUNCATE", "ids:", "ids:1,x", ""] {
            assert_eq!(Changed::from_payload(all), Changed::All, "{all:?}");
        }
    }
}
