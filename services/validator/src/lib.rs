//! The validator node: connects to a hub, runs the HTTP(S) checks it is
//! given, and returns signed results until each is acknowledged.
//!
//! # Layout
//! - [`config`]: [`RunConfig`], validated once at start.
//! - [`earnings`]: the `earnings` subcommand's request and summary.
//! - [`guard`]: refusal of loopback, private and link-local targets (a DNS
//!   resolver that filters, plus checks of IP-literal hosts and redirects).
//! - [`check`]: [`Checker`] runs one check and returns an [`Outcome`].
//! - `session`: one connection: challenge, signed hello, welcome, then tasks,
//!   heartbeats, acks, `reconnect` and shutdown draining.
//! - `writer`: the only task that writes to a socket, paced to the hub's
//!   announced rate limit.
//! - `pending` and `state`: unacknowledged results (kept across reconnects
//!   and resent after each welcome) and the counters behind
//!   [`ValidatorHandle`].
//! - `runner`: [`run`] / [`spawn`], the reconnect loop with jittered
//!   exponential backoff across the configured hubs.
//!
//! **Architecture invariant:** the wire format and every signed byte come
//! from `protocol`; this crate never builds a frame or signing bytes itself.

pub mod check;
pub mod config;
pub mod earnings;
pub use runtime::guard;
mod pending;
mod runner;
mod session;
mod state;
mod writer;

pub use check::{Checker, Outcome};
pub use config::{ConfigError, RawConfig, RunConfig};
pub use runner::{run, spawn};
pub use state::{Stats, ValidatorHandle};
