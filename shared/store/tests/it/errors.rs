//! `StoreError::kind` on real failures: what the tick writer's retry policy
//! rests on.

use store::{ErrorKind, Store, StoreError};

use crate::{db, new_website, open_round, past_ms, tick, validator, website};

/// The SQLSTATE PostgreSQL reported, if the error came from it.
fn sqlstate(e: &StoreError) -> Option<String> {
    match e {
        StoreError::Db(sqlx::Error::Database(d)) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Writes a batch of three ticks whose middle one `spoil` damages, and
/// checks the error's SQLSTATE and kind, and that the batch left no row.
async fn check_refused_batch(spoil: impl FnOnce(&mut store::NewTick), want_sqlstate: &str) {
    let db = db().await;
    let w = website(&db.store, 1).await;
    let r = open_round(&db.store, w.id, past_ms()).await;
    let v = validator(&db.store, "k1", "eu").await;
    let mut batch = vec![tick(&r, v, true), tick(&r, v, true), tick(&r, v, false)];
    spoil(&mut batch[1]);
    let e = db.store.insert_ticks("h1", &batch).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some(want_sqlstate), "{e}");
    assert_eq!(e.kind(), ErrorKind::Data, "{e}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM ticks")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0, "one statement: all or nothing");
}

#[tokio::test]
async fn a_nul_byte_is_a_data_error() {
    // Class 22: PostgreSQL text cannot hold a NUL.
    check_refused_batch(|t| t.error = Some("poison \0 byte".into()), "22021").await;
}

#[tokio::test]
async fn a_check_violation_is_a_data_error() {
    // Class 23: `latency_ms >= 0`.
    check_refused_batch(|t| t.latency_ms = -1, "23514").await;
}

#[tokio::test]
async fn a_website_outside_the_checks_is_a_data_error() {
    let db = db().await;
    let mut w = new_website("https://example.com/");
    w.interval_secs = 0;
    let e = db.store.add_website(&w).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23514"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Data);
}

#[tokio::test]
async fn a_closed_pool_is_transient() {
    let db = db().await;
    db.store.ping().await.unwrap();
    db.pool().close().await;
    let e = db.store.ping().await.unwrap_err();
    assert!(
        matches!(e, StoreError::Db(sqlx::Error::PoolClosed)),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Transient);
}

#[test]
fn errors_that_are_not_the_database_s_are_other_and_a_timeout_is_transient() {
    assert_eq!(StoreError::StaleEpoch(3).kind(), ErrorKind::Other);
    assert_eq!(StoreError::Conflict("x".into()).kind(), ErrorKind::Other);
    assert_eq!(StoreError::timeout().kind(), ErrorKind::Transient);
}

#[test]
fn sqlstates_are_classified_by_class() {
    use store::sqlstate_kind;
    use ErrorKind::*;
    for (code, want) in [
        ("22021", Data),
        ("22P02", Data),
        ("23505", Data),
        ("23514", Data),
        ("08006", Transient),
        ("53300", Transient),
        ("57P01", Transient),
        ("58030", Transient),
        ("40001", Transient),
        ("40P01", Transient),
        ("40002", Other),
        ("42P01", Other),
        ("UP409", Other),
        ("", Other),
    ] {
        assert_eq!(sqlstate_kind(code), want, "{code:?}");
    }
}

/// The writers' pool has the server end a session left idle inside a
/// transaction (a frozen process must not hold locks, such as the fencing
/// row's, for ever); the read pool keeps its statement time limit.
#[tokio::test]
async fn the_pools_carry_their_time_limits() {
    let url = std::env::var(crate::fresh_db::TEST_DB_ENV).expect("the test database URL");
    let writers = Store::connect(&url, 1).await.unwrap();
    let v: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(writers.pool())
        .await
        .unwrap();
    assert_eq!(v, "5s");
    assert_eq!(store::IDLE_IN_TRANSACTION_TIMEOUT.as_secs(), 5);
    let readers = Store::connect_reader(&url, 1, std::time::Duration::from_millis(1500))
        .await
        .unwrap();
    let v: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(readers.pool())
        .await
        .unwrap();
    assert_eq!(v, "1500ms");
}
