use std::time::Duration;

use store::ValidatorId;

use crate::fresh_db::FreshDb;
use crate::{db, open_round, past_ms, store_ticks, tick, validator, website};

#[tokio::test]
async fn a_second_hello_keeps_the_id_and_takes_the_new_details() {
    let db = db().await;
    let tags = vec!["fast".to_string(), "ipv6".to_string()];
    let id = db
        .store
        .upsert_validator("key-a", "eu", &tags, "v/1")
        .await
        .unwrap();
    let other = validator(&db.store, "key-b", "us").await;
    assert_ne!(id, other);
    let again = db
        .store
        .upsert_validator("key-a", "ap", &[], "v/2")
        .await
        .unwrap();
    assert_eq!(again, id, "same key, same row");
    let row: (String, String, Vec<String>, String) = sqlx::query_as(
        "SELECT public_key, region, tags, client_version FROM validators WHERE id = $1",
    )
    .bind(id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        row,
        ("key-a".into(), "ap".into(), vec![], "v/2".into()),
        "the newest hello"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM validators")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(count, 2);
}

/// Moves `last_seen` of `ids` two hours back.
async fn age(db: &FreshDb, ids: &[ValidatorId]) {
    sqlx::query("UPDATE validators SET last_seen = now() - interval '2 hours' WHERE id = ANY($1)")
        .bind(ids)
        .execute(db.pool())
        .await
        .unwrap();
}

/// Ids of validators not seen for an hour.
async fn idle(db: &FreshDb) -> Vec<ValidatorId> {
    sqlx::query_scalar(
        "SELECT id FROM validators WHERE last_seen < now() - interval '1 hour' ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn touch_validators_bumps_last_seen_of_those_named() {
    let db = db().await;
    let (a, b, c) = (
        validator(&db.store, "a", "eu").await,
        validator(&db.store, "b", "eu").await,
        validator(&db.store, "c", "eu").await,
    );
    age(&db, &[a, b, c]).await;
    db.store.touch_validators(&[a, c]).await.unwrap();
    assert_eq!(idle(&db).await, vec![b]);
    db.store.touch_validators(&[]).await.unwrap();
    assert_eq!(idle(&db).await, vec![b]);
}

#[tokio::test]
async fn forgetting_deletes_idle_unused_keys_and_retains_used_ones() {
    let db = db().await;
    let w = website(&db.store, 1).await;
    let r = open_round(&db.store, w.id, past_ms()).await;
    let unused = validator(&db.store, "unused", "eu").await;
    let used = validator(&db.store, "used", "eu").await;
    let recent = validator(&db.store, "recent", "eu").await;
    store_ticks(&db.store, &[tick(&r, used, true)]).await;
    age(&db, &[unused, used]).await;
    let hour = Duration::from_secs(3600);
    assert_eq!(
        db.store.forget_unused_validators(hour, 100).await.unwrap(),
        1
    );
    let rows: Vec<(ValidatorId, bool)> =
        sqlx::query_as("SELECT id, retained FROM validators ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![(used, true), (recent, false)],
        "unused gone, used retained, recent untouched"
    );
    assert_eq!(
        db.store.forget_unused_validators(hour, 100).await.unwrap(),
        0,
        "a retained row is never deleted"
    );
    // The key comes back: a new row.
    let back = validator(&db.store, "unused", "eu").await;
    assert!(back > recent);
}

#[tokio::test]
async fn forgetting_stops_at_the_limit_oldest_first() {
    let db = db().await;
    let ids = [
        validator(&db.store, "a", "eu").await,
        validator(&db.store, "b", "eu").await,
        validator(&db.store, "c", "eu").await,
    ];
    for (i, id) in ids.iter().enumerate() {
        sqlx::query(
            "UPDATE validators SET last_seen = now() - make_interval(hours => $2) WHERE id = $1",
        )
        .bind(id)
        .bind(10 - i as i32)
        .execute(db.pool())
        .await
        .unwrap();
    }
    let hour = Duration::from_secs(3600);
    assert_eq!(db.store.forget_unused_validators(hour, 2).await.unwrap(), 2);
    let left: Vec<ValidatorId> = sqlx::query_scalar("SELECT id FROM validators")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(left, vec![ids[2]], "the two seen longest ago went first");
}
