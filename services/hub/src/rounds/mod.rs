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
use uuid::Uuid;

/// What the rest of the hub tells the coordinator.
#[derive(Debug)]
pub enum Event {
    /// A result for this task was committed.
    Answered { round_id: i64, task_id: Uuid },
    /// A session ended; its unanswered tasks may need replacing.
    SessionClosed { key: PublicKey, generation: u64 },
    /// Websites changed in PostgreSQL (NOTIFY): reload now.
    WebsitesChanged,
}
