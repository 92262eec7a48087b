//! The hub's integration tests, one binary (linking the hub, Solana, sqlx, fred and axum once, not once per file). Each module is one area; `common` is shared.

mod attacks;
mod bad_input;
mod cli;
mod cluster;
mod common;
mod e2e;
mod failover;
mod layering;
mod leader;
mod maintenance;
mod outage;
mod payout_leaders;
mod payouts;
mod replacement;
mod sigterm;
