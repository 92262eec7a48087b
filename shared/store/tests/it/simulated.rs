//! The load tool's statements (`shared/store/src/simulated.rs`).

use store::{SeededWebsites, Store, WebsiteId, SIMULATED_BURST_FIRST_ID, SIMULATED_URL_PREFIX};

use crate::{db, open_round, past_ms, store_ticks, tick, validator, website};

/// `(url suffix, enabled, interval_secs, timeout_ms, owner)` of every
/// simulated website, by index.
async fn simulated(store: &Store) -> Vec<(String, bool, i32, i32, String)> {
    sqlx::query_as(
        "SELECT substr(url, length($1) + 1), enabled, interval_secs, timeout_ms, owner \
           FROM websites WHERE url LIKE $1 || '%' \
          ORDER BY substr(url, length($1) + 1)::int",
    )
    .bind(SIMULATED_URL_PREFIX)
    .fetch_all(store.pool())
    .await
    .unwrap()
}

fn rows(enabled: &[bool], interval: i32, timeout: i32) -> Vec<(String, bool, i32, i32, String)> {
    enabled
        .iter()
        .enumerate()
        .map(|(i, &on)| (i.to_string(), on, interval, timeout, "loadtest".into()))
        .collect()
}

#[tokio::test]
async fn seeding_enables_exactly_count_and_reuses_rows() {
    let db = db().await;
    let s = &db.store;
    let mine = website(s, 1).await;
    let seeded = |inserted, updated, enabled| SeededWebsites {
        inserted,
        updated,
        enabled,
    };

    assert_eq!(
        s.seed_simulated_websites(5, 60, 1_000).await.unwrap(),
        seeded(5, 0, 5)
    );
    assert_eq!(simulated(s).await, rows(&[true; 5], 60, 1_000));

    // Fewer: the rest are disabled, not deleted.
    assert_eq!(
        s.seed_simulated_websites(3, 60, 1_000).await.unwrap(),
        seeded(0, 2, 3)
    );
    assert_eq!(
        simulated(s).await,
        rows(&[true, true, true, false, false], 60, 1_000)
    );

    // Same again: nothing to write.
    assert_eq!(
        s.seed_simulated_websites(3, 60, 1_000).await.unwrap(),
        seeded(0, 0, 3)
    );

    // A new schedule and more sites: the old rows rescheduled (the disabled
    // ones too), one new.
    assert_eq!(
        s.seed_simulated_websites(6, 10, 500).await.unwrap(),
        seeded(1, 5, 6)
    );
    assert_eq!(simulated(s).await, rows(&[true; 6], 10, 500));

    // Other websites are never touched, and are counted apart.
    let all = s.list_websites().await.unwrap();
    assert_eq!(all.iter().find(|w| w.id == mine.id), Some(&mine));
    assert_eq!(s.count_other_enabled_websites().await.unwrap(), 1);
    s.set_website_enabled(mine.id, false).await.unwrap();
    assert_eq!(s.count_other_enabled_websites().await.unwrap(), 0);

    assert_eq!(s.disable_simulated_websites().await.unwrap(), 6);
    assert_eq!(simulated(s).await, rows(&[false; 6], 10, 500));
    assert_eq!(s.disable_simulated_websites().await.unwrap(), 0);
    assert_eq!(
        s.seed_simulated_websites(0, 10, 500).await.unwrap(),
        seeded(0, 0, 0)
    );
}

/// A row under the prefix whose suffix is not a number is left alone by the
/// seed (its index cannot be compared), though `disable` reaches it.
#[tokio::test]
async fn seeding_skips_rows_under_the_prefix_without_an_index() {
    let db = db().await;
    let s = &db.store;
    // Port 9 is one `WebsiteUrl` refuses: written by hand, as a tool might.
    let odd: i64 = sqlx::query_scalar(
        "INSERT INTO websites (url, timeout_ms, owner) VALUES ($1 || 'x', 7000, 'other') \
         RETURNING id",
    )
    .bind(SIMULATED_URL_PREFIX)
    .fetch_one(s.pool())
    .await
    .unwrap();
    assert_eq!(
        s.seed_simulated_websites(2, 60, 1_000).await.unwrap(),
        SeededWebsites {
            inserted: 2,
            updated: 0,
            enabled: 3,
        }
    );
    let timeout: i32 = sqlx::query_scalar("SELECT timeout_ms FROM websites WHERE id = $1")
        .bind(odd)
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(timeout, 7_000, "not rescheduled");
    assert_eq!(s.count_other_enabled_websites().await.unwrap(), 0);
    assert_eq!(s.disable_simulated_websites().await.unwrap(), 3);
}

/// `(id, url suffix, enabled, interval_secs)` of every simulated website,
/// by id.
async fn simulated_by_id(store: &Store) -> Vec<(i64, String, bool, i32)> {
    sqlx::query_as(
        "SELECT id, substr(url, length($1) + 1), enabled, interval_secs \
           FROM websites WHERE url LIKE $1 || '%' ORDER BY id",
    )
    .bind(SIMULATED_URL_PREFIX)
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn the_burst_set_has_chosen_ids_and_each_seed_disables_the_other_set() {
    let db = db().await;
    let s = &db.store;
    let mine = website(s, 1).await;
    let f = SIMULATED_BURST_FIRST_ID;
    let seeded = |inserted, updated, enabled| SeededWebsites {
        inserted,
        updated,
        enabled,
    };
    let ids = |v: &[i64]| v.iter().map(|i| WebsiteId(*i)).collect::<Vec<_>>();
    s.seed_simulated_websites(2, 60, 1_000).await.unwrap();

    // The regular rows are disabled; an id below the range is ignored.
    assert_eq!(
        s.seed_simulated_burst(&ids(&[f, f + 5, f + 9, 7]), 60, 1_000)
            .await
            .unwrap(),
        seeded(3, 2, 3)
    );
    let rows = simulated_by_id(s).await;
    assert_eq!(rows.len(), 5);
    assert!(rows[..2].iter().all(|r| !r.2 && r.0 < f), "{rows:?}");
    assert_eq!(
        rows[2..],
        [
            (f, f.to_string(), true, 60),
            (f + 5, (f + 5).to_string(), true, 60),
            (f + 9, (f + 9).to_string(), true, 60)
        ]
    );

    // Same again: nothing to write. Another set: the rest disabled, the
    // kept row rescheduled, one new.
    assert_eq!(
        s.seed_simulated_burst(&ids(&[f, f + 5, f + 9]), 60, 1_000)
            .await
            .unwrap(),
        seeded(0, 0, 3)
    );
    assert_eq!(
        s.seed_simulated_burst(&ids(&[f + 5, f + 11]), 30, 1_000)
            .await
            .unwrap(),
        seeded(1, 3, 2)
    );
    let enabled: Vec<(i64, i32)> = simulated_by_id(s)
        .await
        .into_iter()
        .filter(|r| r.2)
        .map(|r| (r.0, r.3))
        .collect();
    assert_eq!(enabled, [(f + 5, 30), (f + 11, 30)]);

    // An id another website holds is not taken over.
    sqlx::query(
        "INSERT INTO websites (id, url, owner) VALUES ($1, 'https://example.com/x', 'other')",
    )
    .bind(f + 20)
    .execute(s.pool())
    .await
    .unwrap();
    assert_eq!(
        s.seed_simulated_burst(&ids(&[f + 5, f + 11, f + 20]), 30, 1_000)
            .await
            .unwrap(),
        seeded(0, 0, 2)
    );

    // The regular seed disables the burst set (its ids read as indexes far
    // beyond any count); other websites are never touched.
    assert_eq!(
        s.seed_simulated_websites(2, 60, 1_000).await.unwrap(),
        seeded(0, 4, 2)
    );
    assert!(simulated_by_id(s).await.iter().all(|r| r.2 == (r.0 < f)));
    assert_eq!(s.count_other_enabled_websites().await.unwrap(), 2);
    let all = s.list_websites().await.unwrap();
    assert_eq!(all.iter().find(|w| w.id == mine.id), Some(&mine));
    s.seed_simulated_burst(&ids(&[f]), 60, 1_000).await.unwrap();
    assert_eq!(s.disable_simulated_websites().await.unwrap(), 1);
}

#[tokio::test]
async fn burst_ticks_are_counted_by_slot_time_for_the_burst_set_only() {
    let db = db().await;
    let s = &db.store;
    let f = SIMULATED_BURST_FIRST_ID;
    s.seed_simulated_burst(&[WebsiteId(f), WebsiteId(f + 1)], 60, 1_000)
        .await
        .unwrap();
    let other = website(s, 1).await;
    let v = validator(s, "k", "eu").await;
    let t0 = past_ms();
    let mut ticks = Vec::new();
    for (w, at) in [(f, t0), (f + 1, t0 + 999), (f, t0 + 1_000), (f + 1, t0 - 1)] {
        let r = open_round(s, WebsiteId(w), at).await;
        ticks.push(tick(&r, v, true));
    }
    let r = open_round(s, other.id, t0).await;
    ticks.push(tick(&r, v, true));
    store_ticks(s, &ticks).await;
    let count = |from, to| s.count_burst_ticks_scheduled_between(from, to);
    assert_eq!(count(t0, t0 + 1_000).await.unwrap(), 2, "[t0, t0+1s)");
    assert_eq!(count(t0 - 1, t0 + 1_001).await.unwrap(), 4);
    assert_eq!(count(t0 + 1_001, t0 + 2_000).await.unwrap(), 0);
}

#[tokio::test]
async fn ticks_are_counted_by_received_time_in_a_half_open_window() {
    let db = db().await;
    let s = &db.store;
    let w = website(s, 1).await;
    let r = open_round(s, w.id, past_ms()).await;
    let v = validator(s, "k", "eu").await;
    let t0 = r.scheduled_at_ms + 10_000;
    let ticks: Vec<_> = [0, 1_000, 2_000]
        .iter()
        .map(|d| {
            let mut t = tick(&r, v, true);
            t.received_at_ms = t0 + d;
            t
        })
        .collect();
    store_ticks(s, &ticks).await;
    let count = |from, to| s.count_ticks_received_between(from, to);
    assert_eq!(count(t0, t0 + 2_000).await.unwrap(), 2, "[t0, t0+2s)");
    assert_eq!(count(t0, t0 + 2_001).await.unwrap(), 3);
    assert_eq!(count(t0 + 1, t0 + 2_001).await.unwrap(), 2);
    assert_eq!(count(t0 - 5_000, t0).await.unwrap(), 0);
}

#[tokio::test]
async fn check_schema_fails_without_the_websites_table() {
    let db = db().await;
    db.store.check_schema().await.unwrap();
    sqlx::query("DROP TABLE websites CASCADE")
        .execute(db.pool())
        .await
        .unwrap();
    let e = db.store.check_schema().await.unwrap_err();
    assert!(e.to_string().contains("websites"), "{e}");
}
