//! The load tool's statements (`shared/store/src/simulated.rs`).

use store::{SeededWebsites, Store, SIMULATED_URL_PREFIX};

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
