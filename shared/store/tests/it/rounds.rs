use std::time::Duration;

use store::{ClosedRound, NewRound, RoundId, RoundStatus, Store, WebsiteId};
use uuid::Uuid;

use crate::{db, open_round, past_ms, store_ticks, tick, validator, website};

#[tokio::test]
async fn open_rounds_returns_only_the_rounds_it_created() {
    let db = db().await;
    let (a, b) = (website(&db.store, 1).await, website(&db.store, 2).await);
    let t = past_ms();
    let round = |website_id, at: i64| NewRound {
        website_id,
        slot: at / 60_000,
        scheduled_at_ms: at,
        deadline_ms: at + 30_000,
    };
    let first = db
        .store
        .open_rounds("h1", &[round(a.id, t), round(b.id, t)])
        .await
        .unwrap();
    assert_eq!(
        first
            .iter()
            .map(|r| (r.website_id, r.scheduled_at_ms))
            .collect::<Vec<_>>(),
        vec![(a.id, t), (b.id, t)]
    );
    // Another hub tries the same slots and one new one: only the new one is
    // its own.
    let second = db
        .store
        .open_rounds(
            "h2",
            &[round(a.id, t), round(b.id, t), round(a.id, t + 60_000)],
        )
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(
        (second[0].website_id, second[0].scheduled_at_ms),
        (a.id, t + 60_000)
    );
    let rows: Vec<(WebsiteId, String, String)> =
        sqlx::query_as("SELECT website_id, hub_id, status FROM rounds ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            (a.id, "h1".into(), "open".into()),
            (b.id, "h1".into(), "open".into()),
            (a.id, "h2".into(), "open".into()),
        ]
    );
    assert!(db.store.open_rounds("h1", &[]).await.unwrap().is_empty());
    // The first hub tries its slots again (an insert that committed while
    // its connection broke): it gets back its open round, with the new
    // deadline, but not one that is closed.
    db.store
        .close_rounds(&[first[1].round_id], "h1", &[])
        .await
        .unwrap();
    let mut again = round(a.id, t);
    again.deadline_ms = t + 45_000;
    let retried = db
        .store
        .open_rounds("h1", &[again, round(b.id, t)])
        .await
        .unwrap();
    assert_eq!(
        retried.iter().map(|r| r.round_id).collect::<Vec<_>>(),
        vec![first[0].round_id]
    );
    let deadline: i64 = sqlx::query_scalar(
        "SELECT (extract(epoch FROM deadline) * 1000)::int8 FROM rounds WHERE id = $1",
    )
    .bind(first[0].round_id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(deadline, t + 45_000);
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM rounds")
            .fetch_one(db.pool())
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn delete_open_rounds_frees_the_slot_but_spares_closed_rounds() {
    let db = db().await;
    let w = website(&db.store, 1).await;
    let t = past_ms();
    let open = open_round(&db.store, w.id, t).await;
    let closed = open_round(&db.store, w.id, t + 60_000).await;
    db.store
        .close_rounds(&[closed.round_id], "h1", &[])
        .await
        .unwrap();
    let deleted = db
        .store
        .delete_open_rounds(&[open.round_id, closed.round_id])
        .await
        .unwrap();
    assert_eq!(deleted, 1, "only the open round");
    let again = open_round(&db.store, w.id, t).await;
    assert_ne!(again.round_id, open.round_id, "the slot opens again");
}

/// Closes a round of a new website (`n`) holding `ups` up and `downs` down
/// results and checks the status SQL decided, in what it returns and in
/// the row.
async fn check_majority(store: &Store, n: u32, ups: usize, downs: usize, want: RoundStatus) {
    let w = website(store, n).await;
    let r = open_round(store, w.id, past_ms()).await;
    let mut ticks = Vec::new();
    for i in 0..ups + downs {
        let v = validator(store, &format!("key{n}-{i}"), "eu").await;
        ticks.push(tick(&r, v, i < ups));
    }
    store_ticks(store, &ticks).await;
    let closed = store.close_rounds(&[r.round_id], "h2", &[]).await.unwrap();
    assert_eq!(
        closed,
        vec![ClosedRound {
            round_id: r.round_id,
            website_id: w.id,
            opened_by: "h1".into(),
            status: want.to_string(),
            up: ups as i64,
            down: downs as i64,
        }],
        "{ups} up, {downs} down"
    );
    let (status, up, down, closed_by, closed_at_set): (RoundStatus, i32, i32, String, bool) =
        sqlx::query_as(
            "SELECT status, results_up, results_down, closed_by, closed_at IS NOT NULL \
               FROM rounds WHERE id = $1",
        )
        .bind(r.round_id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        (
            status,
            up as usize,
            down as usize,
            closed_by.as_str(),
            closed_at_set
        ),
        (want, ups, downs, "h2", true),
        "{ups} up, {downs} down: the row"
    );
}

#[tokio::test]
async fn close_rounds_decides_by_strict_majority_of_at_least_two() {
    use RoundStatus::*;
    let db = db().await;
    let cases = [
        (0, 0, Unknown),
        (1, 0, Unknown),
        (0, 1, Unknown),
        (2, 0, Up),
        (2, 1, Up),
        (1, 1, Unknown),
        (2, 2, Unknown),
        (1, 2, Down),
        (0, 3, Down),
    ];
    for (n, (ups, downs, want)) in cases.into_iter().enumerate() {
        check_majority(&db.store, n as u32, ups, downs, want).await;
    }
}

#[tokio::test]
async fn ticks_of_another_round_or_slot_do_not_count() {
    let db = db().await;
    let w = website(&db.store, 1).await;
    let t = past_ms();
    let r = open_round(&db.store, w.id, t).await;
    let other = open_round(&db.store, w.id, t + 60_000).await;
    let (v1, v2) = (
        validator(&db.store, "k1", "eu").await,
        validator(&db.store, "k2", "us").await,
    );
    // Up results for the other round; one down for this one.
    store_ticks(
        &db.store,
        &[
            tick(&other, v1, true),
            tick(&other, v2, true),
            tick(&r, v1, false),
        ],
    )
    .await;
    let closed = db
        .store
        .close_rounds(&[r.round_id], "h1", &[])
        .await
        .unwrap();
    assert_eq!((closed[0].up, closed[0].down), (0, 1));
    assert_eq!(closed[0].status, "unknown");
}

#[tokio::test]
async fn closing_is_idempotent_and_records_replaced_tasks() {
    let db = db().await;
    let w = website(&db.store, 1).await;
    let t = past_ms();
    let (r1, r2) = (
        open_round(&db.store, w.id, t).await,
        open_round(&db.store, w.id, t + 60_000).await,
    );
    let (ta, tb, tc) = (Uuid::from_u128(2), Uuid::from_u128(1), Uuid::from_u128(3));
    let replaced = [
        (r1.round_id, ta, t + 10_000),
        (r1.round_id, tb, t + 20_000),
        (r2.round_id, tc, t + 70_000),
    ];
    let closed = db
        .store
        .close_rounds(&[r1.round_id, r2.round_id], "h1", &replaced)
        .await
        .unwrap();
    assert_eq!(closed.len(), 2);
    let again = db
        .store
        .close_rounds(
            &[r1.round_id, r2.round_id],
            "h2",
            &[(r1.round_id, Uuid::from_u128(9), t)],
        )
        .await
        .unwrap();
    assert!(again.is_empty(), "already closed: skipped");
    let rows: Vec<(Vec<Uuid>, Vec<i64>, String)> =
        sqlx::query_as("SELECT replaced_tasks, replaced_at_ms, closed_by FROM rounds ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            // Ordered by task id, times aligned with their tasks.
            (vec![tb, ta], vec![t + 20_000, t + 10_000], "h1".into()),
            (vec![tc], vec![t + 70_000], "h1".into()),
        ]
    );
    assert!(db
        .store
        .close_rounds(&[], "h1", &[])
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_overdue_sweep_closes_only_rounds_past_deadline_and_grace() {
    let db = db().await;
    let w = website(&db.store, 1).await;
    let now = protocol::now_ms();
    // Deadlines: 10 min ago, 5 min ago, 1 min ago (within the grace), and
    // in the future.
    let old = open_round(&db.store, w.id, now - 630_000).await;
    let older_second = open_round(&db.store, w.id, now - 330_000).await;
    let recent = open_round(&db.store, w.id, now - 90_000).await;
    let future = open_round(&db.store, w.id, now).await;
    let grace = Duration::from_secs(120);
    let first = db
        .store
        .close_overdue_rounds(grace, 1, "sweeper")
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|c| c.round_id).collect::<Vec<_>>(),
        vec![old.round_id],
        "oldest deadline first, up to the limit"
    );
    let rest = db
        .store
        .close_overdue_rounds(grace, 10, "sweeper")
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|c| c.round_id).collect::<Vec<_>>(),
        vec![older_second.round_id]
    );
    assert_eq!(rest[0].status, "unknown");
    assert_eq!(rest[0].opened_by, "h1");
    let open: Vec<RoundId> =
        sqlx::query_scalar("SELECT id FROM rounds WHERE status = 'open' ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(open, vec![recent.round_id, future.round_id]);
}

#[tokio::test]
async fn site_statuses_show_the_latest_closed_round_with_each_region() {
    let db = db().await;
    let (a, b) = (website(&db.store, 1).await, website(&db.store, 2).await);
    let (eu, us) = (
        validator(&db.store, "k-eu", "eu").await,
        validator(&db.store, "k-us", "us").await,
    );
    let t = past_ms();
    let older = open_round(&db.store, a.id, t).await;
    let latest = open_round(&db.store, a.id, t + 60_000).await;
    let still_open = open_round(&db.store, a.id, t + 120_000).await;
    store_ticks(
        &db.store,
        &[
            tick(&older, eu, false),
            tick(&older, us, false),
            tick(&latest, us, true),
            tick(&latest, eu, true),
            tick(&still_open, eu, false),
        ],
    )
    .await;
    db.store
        .close_rounds(&[older.round_id, latest.round_id], "h1", &[])
        .await
        .unwrap();
    let statuses = db.store.site_statuses().await.unwrap();
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[0].website, a);
    let round = statuses[0].round.as_ref().expect("a closed round");
    assert_eq!(
        (round.round_id, round.status.as_str(), round.scheduled_at_ms),
        (latest.round_id, "up", t + 60_000)
    );
    let results: Vec<_> = round
        .results
        .iter()
        .map(|r| {
            (
                r.region.as_str(),
                r.up,
                r.http_status,
                r.latency_ms,
                r.checked_at_ms,
            )
        })
        .collect();
    assert_eq!(
        results,
        vec![
            ("eu", true, Some(200), 42, t + 60_500),
            ("us", true, Some(200), 42, t + 60_500),
        ],
        "ordered by region"
    );
    assert_eq!(statuses[1].website, b);
    assert!(statuses[1].round.is_none(), "never closed a round");
}

/// Rounds a failed insert may have created: this hub's open rounds at
/// those slots without a tick go; one with a tick, a closed one, another
/// hub's, and one at another slot stay.
#[tokio::test]
async fn unstaffed_rounds_of_failed_inserts_are_deleted() {
    let db = db().await;
    let s = &db.store;
    let (a, b, c) = (
        website(s, 1).await,
        website(s, 2).await,
        website(s, 3).await,
    );
    let t = past_ms();
    let v = validator(s, "v", "eu").await;
    let empty = open_round(s, a.id, t).await;
    let answered = open_round(s, b.id, t).await;
    store_ticks(s, &[tick(&answered, v, true)]).await;
    let closed = open_round(s, c.id, t).await;
    s.close_rounds(&[closed.round_id], "test", &[])
        .await
        .unwrap();
    let other = s
        .open_rounds(
            "other-hub",
            &[NewRound {
                website_id: a.id,
                slot: 1,
                scheduled_at_ms: t + 60_000,
                deadline_ms: t + 90_000,
            }],
        )
        .await
        .unwrap();
    let elsewhere = open_round(s, b.id, t + 120_000).await;
    let hub: String = sqlx::query_scalar("SELECT hub_id FROM rounds WHERE id = $1")
        .bind(empty.round_id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    let slots = [(a.id, t), (b.id, t), (c.id, t), (a.id, t + 60_000)];
    assert_eq!(s.delete_unstaffed_rounds(&hub, &slots).await.unwrap(), 1);
    let left: Vec<RoundId> = sqlx::query_scalar("SELECT id FROM rounds ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(
        left,
        vec![
            answered.round_id,
            closed.round_id,
            other[0].round_id,
            elsewhere.round_id
        ]
    );
    assert_eq!(s.delete_unstaffed_rounds(&hub, &[]).await.unwrap(), 0);
}
