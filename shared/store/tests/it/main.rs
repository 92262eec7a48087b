//! `store`'s own SQL against a real PostgreSQL (`UPTIME_TEST_DATABASE_URL`):
//! every test gets a fresh, migrated database ([`FreshDb`]) and asserts on
//! the rows the statements leave behind, read back with ad-hoc queries.
//!
//! One binary, one module per area; the fixtures below build the rows most
//! tests need (a website, a validator, a round, a tick).

mod alerts;
mod earnings;
mod errors;
mod fresh_db;
mod incidents;
mod payouts;
mod retention;
mod rollups;
mod rounds;
mod simulated;
mod ticks;
mod tls;
mod validators;
mod websites;

use store::{
    NewRound, NewTick, NewWebsite, OpenedRound, Store, ValidatorId, Website, WebsiteId, WebsiteUrl,
};
use uuid::Uuid;

use crate::fresh_db::FreshDb;

/// A fresh database with every migration applied.
async fn db() -> FreshDb {
    FreshDb::new().await
}

/// A whole second some hours ago: far enough back for deadlines to have
/// passed, and exact in both `to_timestamp` conversions the SQL uses.
fn past_ms() -> i64 {
    (protocol::now_ms() / 1000 - 3 * 3600) * 1000
}

fn new_website(url: &str) -> NewWebsite {
    NewWebsite {
        url: WebsiteUrl::parse(url).unwrap(),
        interval_secs: 60,
        timeout_ms: 5_000,
        expected_status_min: 200,
        expected_status_max: 399,
        keyword: None,
        follow_redirects: true,
        owner: "test".into(),
    }
}

async fn website(store: &Store, n: u32) -> Website {
    store
        .add_website(&new_website(&format!("https://example.com/{n}")))
        .await
        .unwrap()
}

async fn validator(store: &Store, key: &str, region: &str) -> ValidatorId {
    store
        .upsert_validator(key, region, &[], "test/1")
        .await
        .unwrap()
}

/// Opens the round of `website` scheduled at `at_ms` (deadline 30 s later)
/// as hub `h1`; panics if the slot was taken.
async fn open_round(store: &Store, website_id: WebsiteId, at_ms: i64) -> OpenedRound {
    let r = NewRound {
        website_id,
        slot: at_ms / 60_000,
        scheduled_at_ms: at_ms,
        deadline_ms: at_ms + 30_000,
    };
    let opened = store.open_rounds("h1", &[r]).await.unwrap();
    assert_eq!(
        opened.len(),
        1,
        "slot {at_ms} of website {website_id} was free"
    );
    opened[0]
}

/// A result for `round` from `validator_id`, received 1 s after it was
/// scheduled, worth 1,000 lamports.
fn tick(round: &OpenedRound, validator_id: ValidatorId, up: bool) -> NewTick {
    NewTick {
        website_id: round.website_id,
        round_id: round.round_id,
        validator_id,
        task_id: Uuid::now_v7(),
        scheduled_at_ms: round.scheduled_at_ms,
        up,
        http_status: Some(if up { 200 } else { 503 }),
        latency_ms: 42,
        error: (!up).then(|| "status 503".to_string()),
        checked_at_ms: round.scheduled_at_ms + 500,
        received_at_ms: round.scheduled_at_ms + 1_000,
        reward_lamports: 1_000,
        evidence: None,
    }
}

/// Stores `ticks` as hub `h1`; panics unless every one was new.
async fn store_ticks(store: &Store, ticks: &[NewTick]) {
    let stored = store.insert_ticks("h1", ticks).await.unwrap();
    assert_eq!(stored.len(), ticks.len(), "every tick was new");
}
