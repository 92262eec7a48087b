//! The hub's integration tests, one binary (linking the hub, Solana, sqlx, fred and axum once, not once per file). Each module is one area; `common` is shared.

mod access;
mod alert_rules;
mod attacks;
mod bad_input;
mod browser;
mod chart;
mod cli;
mod cluster;
mod common;
mod diversity;
mod e2e;
mod failover;
mod layering;
mod leader;
mod maintenance;
mod metrics_doc;
mod outage;
mod payout_leaders;
mod payouts;
mod prometheus_scrape;
mod protocol_v2;
mod rebalance;
mod redis_tls;
mod replacement;
mod restore;
mod sigterm;
