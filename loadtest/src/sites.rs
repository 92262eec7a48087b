//! The simulated websites and the tick count, in PostgreSQL.
//!
//! Websites are `http://127.0.0.1:9/lt/{i}` ([`store::SIMULATED_URL_PREFIX`];
//! port 9 is "discard": nothing is ever fetched, the tool answers tasks
//! without HTTP), owner `loadtest`. The whole set is written in one statement, whatever its
//! size, and so wakes the hubs once (the `websites_changed` trigger fires
//! per statement): a 100k-site insert row by row would take minutes of
//! commits. The rows are reused between runs: `seed` enables
//! `lt/0 .. lt/{M-1}` with the wanted interval and disables any other `lt/`
//! row; `seed_burst` enables `lt/{id}` for the ids the burst chose (rows
//! with those very ids, from 2^40 up; see `burst`) and disables every other
//! `lt/` row; `disable` turns them all off at the end so the hubs stop
//! scheduling them.
//!
//! The statements live in `store` (`shared/store/src/simulated.rs`), like
//! all SQL; the services never run them, and they touch only rows whose URL
//! starts with the prefix above.

use anyhow::Context;
use store::Store;

/// Connects (a pool of two) and checks that the schema is there.
pub async fn connect(url: &str) -> anyhow::Result<Store> {
    let store = Store::connect(url, 2)
        .await
        .context("connecting to PostgreSQL (--database-url)")?;
    store
        .check_schema()
        .await
        .context("the database has no websites table; start a hub (or `hub migrate`) first")?;
    Ok(store)
}

/// What [`seed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Seeded {
    pub inserted: u64,
    pub updated: u64,
    pub enabled: u64,
}

/// Makes exactly `count` simulated websites enabled, at `interval_secs`
/// with check timeout `timeout_ms`, in one transaction.
pub async fn seed(
    store: &Store,
    count: u32,
    interval_secs: u32,
    timeout_ms: u32,
) -> anyhow::Result<Seeded> {
    let s = store
        .seed_simulated_websites(count, interval_secs as i32, timeout_ms as i32)
        .await
        .context("writing the simulated websites")?;
    Ok(Seeded {
        inserted: s.inserted,
        updated: s.updated,
        enabled: s.enabled,
    })
}

/// Makes exactly the websites `ids` (the burst's) the enabled simulated
/// ones, at `interval_secs` with check timeout `timeout_ms`, in one
/// transaction.
pub async fn seed_burst(
    store: &Store,
    ids: &[store::WebsiteId],
    interval_secs: u32,
    timeout_ms: u32,
) -> anyhow::Result<Seeded> {
    let s = store
        .seed_simulated_burst(ids, interval_secs as i32, timeout_ms as i32)
        .await
        .context("writing the burst's websites")?;
    Ok(Seeded {
        inserted: s.inserted,
        updated: s.updated,
        enabled: s.enabled,
    })
}

/// Ticks of the burst's websites whose slot starts in `[from_ms, to_ms)`.
pub async fn burst_ticks(store: &Store, from_ms: i64, to_ms: i64) -> anyhow::Result<u64> {
    store
        .count_burst_ticks_scheduled_between(from_ms, to_ms)
        .await
        .context("counting the burst's ticks")
}

/// Disables every simulated website; returns how many were enabled.
pub async fn disable(store: &Store) -> anyhow::Result<u64> {
    store
        .disable_simulated_websites()
        .await
        .context("disabling simulated websites")
}

/// Enabled websites that are not simulated ones (their tasks get answered
/// too, and count in every figure).
pub async fn other_enabled(store: &Store) -> anyhow::Result<u64> {
    store
        .count_other_enabled_websites()
        .await
        .context("counting other websites")
}

/// Ticks whose `received_at` (the commit transaction's time) falls in
/// `[from_ms, to_ms)`, whatever website they belong to.
pub async fn ticks_between(store: &Store, from_ms: i64, to_ms: i64) -> anyhow::Result<u64> {
    store
        .count_ticks_received_between(from_ms, to_ms)
        .await
        .context("counting ticks in the hold window")
}
