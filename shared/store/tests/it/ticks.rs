use store::{RoundId, ValidatorId, WebsiteId};
use uuid::Uuid;

use crate::{db, open_round, past_ms, tick, validator, website};

#[tokio::test]
async fn insert_ticks_stores_each_field_and_returns_only_new_pairs() {
    let db = db().await;
    let w = website(&db.store, 1).await;
    let r = open_round(&db.store, w.id, past_ms()).await;
    let (v1, v2, v3) = (
        validator(&db.store, "k1", "eu").await,
        validator(&db.store, "k2", "us").await,
        validator(&db.store, "k3", "ap").await,
    );
    let first = [tick(&r, v1, true), tick(&r, v2, false)];
    let stored = db.store.insert_ticks("h1", &first).await.unwrap();
    assert_eq!(
        stored,
        vec![(first[0].task_id, v1), (first[1].task_id, v2)],
        "both new"
    );
    // A resend of both with one new result: only the new one is reported.
    let mut again = first.to_vec();
    again.push(tick(&r, v3, true));
    let stored = db.store.insert_ticks("h2", &again).await.unwrap();
    assert_eq!(stored, vec![(again[2].task_id, v3)]);

    type Row = (
        WebsiteId,
        RoundId,
        String,
        Option<i16>,
        i32,
        Option<String>,
        i64,
        i64,
        i64,
        i64,
        String,
    );
    let row: Row = sqlx::query_as(
        "SELECT website_id, round_id, status, http_status, latency_ms, error, \
                (extract(epoch FROM scheduled_at) * 1000)::int8, \
                (extract(epoch FROM checked_at) * 1000)::int8, \
                (extract(epoch FROM received_at) * 1000)::int8, \
                reward_lamports, hub_id \
           FROM ticks WHERE task_id = $1 AND validator_id = $2",
    )
    .bind(first[1].task_id)
    .bind(v2)
    .fetch_one(db.pool())
    .await
    .unwrap();
    let t = &first[1];
    assert_eq!(
        row,
        (
            w.id,
            r.round_id,
            "down".into(),
            Some(503),
            42,
            Some("status 503".into()),
            t.scheduled_at_ms,
            t.checked_at_ms,
            t.received_at_ms,
            1_000,
            "h1".into(),
        ),
        "the first write's values; the resend changed nothing"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM ticks")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(count, 3);
    assert!(db.store.insert_ticks("h1", &[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn tick_exists_looks_in_the_slot_s_partition() {
    let db = db().await;
    let w = website(&db.store, 1).await;
    let r = open_round(&db.store, w.id, past_ms()).await;
    let v = validator(&db.store, "k1", "eu").await;
    let t = tick(&r, v, true);
    let exists =
        |task: Uuid, validator: ValidatorId, at: i64| db.store.tick_exists(task, validator, at);
    assert!(!exists(t.task_id, v, t.scheduled_at_ms).await.unwrap());
    db.store
        .insert_ticks("h1", std::slice::from_ref(&t))
        .await
        .unwrap();
    assert!(exists(t.task_id, v, t.scheduled_at_ms).await.unwrap());
    assert!(!exists(t.task_id, ValidatorId(v.0 + 1), t.scheduled_at_ms)
        .await
        .unwrap());
    assert!(!exists(t.task_id, v, t.scheduled_at_ms + 1_000)
        .await
        .unwrap());
    assert!(!exists(Uuid::now_v7(), v, t.scheduled_at_ms).await.unwrap());
}
