//! A hub replica.
//!
//! # Layout
//! - [`app`]: `Application::build` / `run_until_stopped`; the HTTP routes
//!   (`/ws`, `/healthz`, `/readyz`, `/metrics`) and the shutdown order.
//! - `session`: one validator socket: challenge, hello, frames, heartbeat,
//!   drain. Knows nothing of rounds.
//! - `registry`: connected validators by key (one session per key).
//! - `coordinator`: the single task that schedules owned websites, assigns
//!   and replaces tasks, and closes rounds.
//! - `scheduler`: pure slot arithmetic and validator choice.
//! - `ingest`: stateless result verification and the batched tick writer.
//! - [`cluster`]: Redis membership, the consistent-hash ring, key names.
//! - [`config`]: typed settings (defaults, file, `HUB_*` environment).
//! - [`payouts`]: the leader's settle / claim / pay / recover cycle.
//! - `earnings`: `GET /v1/validators/{key}/earnings`.
//! - `metrics`: every Prometheus metric, defined once.
//! - [`cli`]: `hub serve | migrate | sites ...`.

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
mod coordinator;
mod earnings;
mod ingest;
pub mod metrics;
pub mod payouts;
mod registry;
pub mod scheduler;
mod session;

pub use app::{AppState, Application};
pub use config::Settings;
