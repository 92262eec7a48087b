//! A hub replica.
//!
//! # Layout (in the order a result flows)
//! - [`edge`]: the HTTP server and its routes (`/ws`, `/healthz`, `/readyz`,
//!   `/metrics`, earnings); one validator socket's session (challenge,
//!   hello, frames, heartbeat, drain), which knows nothing of rounds; the
//!   caps on sockets that have not said hello.
//! - `ingest`: the checks at the door, the backlog of results not yet
//!   answered, and the batched tick writers.
//! - [`rounds`]: the coordinator (the one task that schedules owned
//!   websites, assigns and replaces tasks, and closes rounds), the round's
//!   state machine, and the scheduler's pure slot arithmetic and choice.
//! - [`cluster`]: Redis membership, the consistent-hash ring, presence,
//!   hub inboxes, the payout leader's lock, and the router that decides
//!   whether a message stays on this hub or goes to another.
//! - [`payouts`]: the leader's settle / claim / pay / recover cycle.
//! - [`maintenance`]: rollups, and retention (tick partitions made ahead
//!   and dropped, old rounds and rollups deleted), on every hub, each step
//!   under its own database lock.
//! - `registry`: connected validators by key (one session per key).
//! - [`app`]: wires the parts together and owns the shutdown order.
//! - [`config`]: the operator's settings, parsed once into typed groups.
//! - [`metrics`]: every Prometheus metric, defined once.
//! - [`cli`]: `hub serve | migrate | sites ...`.
//!
//! No module imports one that imports it back (tests/it/layering.rs checks).

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod edge;
mod ingest;
pub mod maintenance;
pub mod metrics;
pub mod payouts;
mod registry;
pub mod rounds;

pub use app::{Application, Handle};
pub use config::{Config, Settings};
pub use registry::NetPrefix;
