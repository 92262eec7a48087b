//! The website owners' REST API (`api serve`): accounts, API keys,
//! websites, and what the hubs found (status, uptime, latency, history).
//! Stateless: PostgreSQL holds everything, so any number of replicas can
//! run behind a load balancer. Website changes reach the owning hub
//! through the `websites` table's notification.
//!
//! # Layout
//! - [`config`]: settings, parsed once.
//! - [`app`]: state, routes, layers (request id, tracing, limits, time
//!   limit, metrics) and background chores; [`app::serve`].
//! - [`auth`]: callers (session cookie or API key), CSRF, passwords.
//! - [`routes`]: handlers per resource; [`model`]: their bodies.
//! - [`error`]: the one error shape; [`extract`]: extractors that use it.
//! - [`limits`]: rate limits; [`metrics`]; [`openapi`]; [`cli`].
//! - [`alerts`]: the worker that delivers the alert outbox, per channel
//!   kind.

pub mod alerts;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod routes;
