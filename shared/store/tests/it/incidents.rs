//! Incidents from decided rounds, in slot order, each round applied once.

use store::{RoundId, Store, WebsiteId};

use crate::{db, open_round, past_ms, store_ticks, tick, validator, website};

/// Opens and closes the round of `site` at slot `i` (a minute apart) with
/// two results: `Some(true)` up, `Some(false)` down, `None` one up and one
/// down (no majority: `unknown`). Returns its id.
/// The time slot 0 is scheduled at, fixed once: `past_ms` read twice can
/// straddle a second and disagree with itself.
fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(past_ms)
}

async fn decided(store: &Store, site: WebsiteId, i: i64, up: Option<bool>) -> RoundId {
    let r = open_round(store, site, t0() + i * 60_000).await;
    let (a, b) = (
        validator(store, "val-a", "eu-west").await,
        validator(store, "val-b", "us-east").await,
    );
    let (ua, ub) = match up {
        Some(u) => (u, u),
        None => (true, false),
    };
    store_ticks(store, &[tick(&r, a, ua), tick(&r, b, ub)]).await;
    store.close_rounds(&[r.round_id], "h1", &[]).await.unwrap();
    r.round_id
}

async fn apply(store: &Store, site: WebsiteId) -> (i32, i32) {
    store.apply_round_decisions(&[site], 2, 2).await.unwrap()
}

async fn incidents(store: &Store, site: WebsiteId) -> Vec<(i64, Option<i64>, i64, Option<i64>)> {
    sqlx::query_as(
        "SELECT (extract(epoch FROM started_at) * 1000)::int8, (extract(epoch FROM resolved_at) * 1000)::int8,
                opened_by_round, resolved_by_round
           FROM incidents WHERE website_id = $1 ORDER BY id",
    )
    .bind(site)
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn two_downs_open_two_ups_resolve_and_each_round_counts_once() {
    let db = db().await;
    let s = &db.store;
    let site = website(s, 1).await.id;
    decided(s, site, 0, Some(true)).await;
    decided(s, site, 1, Some(false)).await;
    assert_eq!(apply(s, site).await, (0, 0), "one down round opens nothing");
    let second_down = decided(s, site, 2, Some(false)).await;
    assert_eq!(apply(s, site).await, (1, 0));
    // Applying again changes nothing: each round is applied once.
    assert_eq!(apply(s, site).await, (0, 0));
    decided(s, site, 3, Some(true)).await;
    assert_eq!(
        apply(s, site).await,
        (0, 0),
        "one up round resolves nothing"
    );
    let second_up = decided(s, site, 4, Some(true)).await;
    decided(s, site, 5, Some(true)).await;
    assert_eq!(apply(s, site).await, (0, 1));
    let got = incidents(s, site).await;
    assert_eq!(got.len(), 1);
    let (started, resolved, opened_by, resolved_by) = got[0];
    assert_eq!(started, t0() + 60_000, "from the first down round");
    assert_eq!(
        resolved,
        Some(t0() + 3 * 60_000),
        "at the first up round of the streak"
    );
    assert_eq!(opened_by, second_down.0);
    assert_eq!(
        resolved_by,
        Some(second_up.0),
        "resolved by the second up round, slot 4"
    );
    // What each region saw when it opened.
    let seen: Vec<(String, bool, i64)> = sqlx::query_as(
        "SELECT r->>'region', (r->>'up')::bool, (r->>'http_status')::int8
           FROM incidents, jsonb_array_elements(regions) AS r ORDER BY 1",
    )
    .fetch_all(s.pool())
    .await
    .unwrap();
    assert_eq!(
        seen,
        [
            ("eu-west".to_string(), false, 503),
            ("us-east".to_string(), false, 503)
        ]
    );
    let state: (String, Option<i64>) =
        sqlx::query_as("SELECT status, open_incident_id FROM website_state WHERE website_id = $1")
            .bind(site)
            .fetch_one(s.pool())
            .await
            .unwrap();
    assert_eq!(state, ("up".to_string(), None));
}

#[tokio::test]
async fn rounds_are_applied_in_slot_order_and_wait_for_an_open_one() {
    let db = db().await;
    let s = &db.store;
    let site = website(s, 1).await.id;
    decided(s, site, 0, Some(false)).await;
    // Slot 1 is still open; slot 2 closed before it.
    let open = open_round(s, site, t0() + 60_000).await;
    decided(s, site, 2, Some(false)).await;
    assert_eq!(apply(s, site).await, (0, 0), "slot 2 waits for slot 1");
    // Slot 1 closes up: down, up, down is no incident.
    let a = validator(s, "val-a", "eu-west").await;
    let b = validator(s, "val-b", "us-east").await;
    store_ticks(s, &[tick(&open, a, true), tick(&open, b, true)]).await;
    s.close_rounds(&[open.round_id], "h1", &[]).await.unwrap();
    assert_eq!(apply(s, site).await, (0, 0));
    assert!(incidents(s, site).await.is_empty());
}

#[tokio::test]
async fn unknown_rounds_neither_open_nor_close_nor_break_a_streak() {
    let db = db().await;
    let s = &db.store;
    let site = website(s, 1).await.id;
    decided(s, site, 0, Some(false)).await;
    decided(s, site, 1, None).await;
    decided(s, site, 2, None).await;
    assert_eq!(apply(s, site).await, (0, 0));
    decided(s, site, 3, Some(false)).await;
    assert_eq!(
        apply(s, site).await,
        (1, 0),
        "down, unknown, unknown, down opens"
    );
    decided(s, site, 4, Some(true)).await;
    decided(s, site, 5, None).await;
    decided(s, site, 6, Some(true)).await;
    assert_eq!(apply(s, site).await, (0, 1), "up, unknown, up resolves");
}

#[tokio::test]
async fn concurrent_appliers_make_exactly_one_transition_per_change() {
    let db = db().await;
    let s = &db.store;
    let mut sites = Vec::new();
    for n in 0..20 {
        let site = website(s, n).await.id;
        // up, down, up, down, down: one incident, at slot 4.
        for (i, up) in [true, false, true, false, false].into_iter().enumerate() {
            decided(s, site, i as i64, Some(up)).await;
        }
        sites.push(site);
    }
    // Eight appliers over the same sites, in different orders, at once.
    let mut tasks = Vec::new();
    for k in 0..8 {
        let store = s.clone();
        let mut order = sites.clone();
        let n = order.len();
        order.rotate_left((k * 3) % n);
        tasks.push(tokio::spawn(async move {
            store.apply_round_decisions(&order, 2, 2).await.unwrap()
        }));
    }
    let mut opened = 0;
    for t in tasks {
        opened += t.await.unwrap().0;
    }
    assert_eq!(opened, 20, "one incident per site, whoever applied it");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM incidents")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(n, 20);
}

/// An `up` round (us-east and ap-south up) in which eu-west sees the site
/// down, or up too.
async fn up_with_eu(store: &Store, site: WebsiteId, i: i64, eu_up: bool) {
    let r = open_round(store, site, t0() + i * 60_000).await;
    let eu = validator(store, "val-eu", "eu-west").await;
    let us = validator(store, "val-us", "us-east").await;
    let ap = validator(store, "val-ap", "ap-south").await;
    store_ticks(
        store,
        &[tick(&r, eu, eu_up), tick(&r, us, true), tick(&r, ap, true)],
    )
    .await;
    let closed = store.close_rounds(&[r.round_id], "h1", &[]).await.unwrap();
    assert_eq!(closed[0].status, "up");
}

#[tokio::test]
async fn a_region_against_the_quorum_is_a_regional_degradation_not_an_incident() {
    let db = db().await;
    let s = &db.store;
    let site = website(s, 1).await.id;
    up_with_eu(s, site, 0, false).await;
    assert_eq!(apply(s, site).await, (0, 0));
    assert!(
        s.open_degradations(site).await.unwrap().is_empty(),
        "one round is not a streak"
    );
    up_with_eu(s, site, 1, false).await;
    up_with_eu(s, site, 2, false).await;
    assert_eq!(apply(s, site).await, (0, 0), "no incident");
    assert_eq!(
        s.open_degradations(site).await.unwrap(),
        vec![("eu-west".to_string(), t0())],
        "open from the first round of the streak"
    );
    up_with_eu(s, site, 3, true).await;
    apply(s, site).await;
    assert!(s.open_degradations(site).await.unwrap().is_empty());
    let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT region, (extract(epoch FROM started_at) * 1000)::int8,
                (extract(epoch FROM ended_at) * 1000)::int8 FROM regional_degradations",
    )
    .fetch_all(s.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![("eu-west".to_string(), t0(), Some(t0() + 3 * 60_000))]
    );
    assert!(incidents(s, site).await.is_empty());
}
