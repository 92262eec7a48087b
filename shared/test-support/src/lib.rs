//! Test helpers shared by the workspace's integration tests. Dev-dependency only.
//!
//! # Layout
//!
//! - [`TestDb`] (`db`): a fresh PostgreSQL database per test, with migrations
//!   applied, on the server named by `UPTIME_TEST_DATABASE_URL`. Tests never
//!   share a database.
//! - [`TestRedis`] (`redis`): a unique key prefix per test on the shared Redis
//!   named by `UPTIME_TEST_REDIS_URL`; its keys are deleted when it drops.
//! - [`RedisServer`] (`redis`): a private `redis-server` process for tests
//!   that stop or restart Redis ("Redis restarted empty").
//! - [`TcpProxy`] (`proxy`): a loopback TCP proxy that can pass, black-hole or
//!   reset traffic at runtime, for partition tests.
//! - [`solana::SolanaRpc`] (`solana`): a litesvm chain behind a JSON-RPC
//!   endpoint the production `RpcClient` talks to, whose test decides whether
//!   each sent transaction lands, is held or is dropped, and when blocks pass.
//! - [`metrics`]: a `/metrics` page fetched ([`metrics::scrape`]) or rendered
//!   by the test, read with `prometheus-parse`; one figure by name and labels
//!   ([`metrics::Metrics::value`]).
//! - [`receivers`]: alert receivers on loopback: a webhook endpoint that
//!   records requests (and fails the first N), and a plain SMTP sink.
//! - `resp`: the few lines of blocking RESP that `TestRedis` needs (private).
//!
//! `scripts/test.sh` starts PostgreSQL and Redis and sets the variables, and
//! `UPTIME_TEST_REDIS_SERVER` (the `redis-server` binary `RedisServer` runs).

mod db;
pub mod metrics;
mod proxy;
pub mod receivers;
mod redis;
mod resp;
pub mod solana;

pub use db::{TestDb, TEST_DB_ENV};
pub use proxy::{Mode, TcpProxy};
pub use redis::{RedisServer, TestRedis, TEST_REDIS_ENV, TEST_REDIS_SERVER_ENV};
