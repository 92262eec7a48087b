use std::time::Duration;

use sqlx::postgres::PgListener;
use store::{StoreError, WebsiteId};

use crate::{db, new_website, website};

#[tokio::test]
async fn add_website_stores_every_field_and_lists_it() {
    let db = db().await;
    let mut w = new_website("https://Example.com/health");
    w.interval_secs = 30;
    w.timeout_ms = 2_500;
    w.expected_status_min = 200;
    w.expected_status_max = 204;
    w.keyword = Some("ok".into());
    w.follow_redirects = false;
    w.owner = "alice".into();
    let added = db.store.add_website(&w).await.unwrap();
    assert!(added.id.0 > 0);
    assert_eq!(added.url, "https://example.com/health", "the parsed URL");
    assert_eq!(
        (added.interval_secs, added.timeout_ms),
        (30, 2_500),
        "schedule"
    );
    assert_eq!(
        (added.expected_status_min, added.expected_status_max),
        (200, 204)
    );
    assert_eq!(added.keyword.as_deref(), Some("ok"));
    assert!(!added.follow_redirects);
    assert!(added.enabled, "enabled by default");
    assert_eq!(added.owner, "alice");
    assert_eq!(db.store.list_websites().await.unwrap(), vec![added.clone()]);
    assert_eq!(db.store.enabled_websites().await.unwrap(), vec![added]);
}

#[tokio::test]
async fn a_keyword_validators_would_refuse_is_refused_before_any_row() {
    let db = db().await;
    let mut w = new_website("https://example.com/");
    w.keyword = Some("a\0b".into());
    let e = db.store.add_website(&w).await.unwrap_err();
    assert!(matches!(e, StoreError::Keyword(_)), "{e:?}");
    assert!(db.store.list_websites().await.unwrap().is_empty());
}

#[tokio::test]
async fn disabled_websites_are_listed_but_not_scheduled() {
    let db = db().await;
    let a = website(&db.store, 1).await;
    let b = website(&db.store, 2).await;
    assert!(db.store.set_website_enabled(a.id, false).await.unwrap());
    assert!(
        !db.store
            .set_website_enabled(WebsiteId(b.id.0 + 100), false)
            .await
            .unwrap(),
        "no such website"
    );
    let listed = db.store.list_websites().await.unwrap();
    assert_eq!(
        listed.iter().map(|w| (w.id, w.enabled)).collect::<Vec<_>>(),
        vec![(a.id, false), (b.id, true)],
        "ordered by id"
    );
    let enabled = db.store.enabled_websites().await.unwrap();
    assert_eq!(enabled.iter().map(|w| w.id).collect::<Vec<_>>(), vec![b.id]);
    assert!(db.store.set_website_enabled(a.id, true).await.unwrap());
    assert_eq!(db.store.enabled_websites().await.unwrap().len(), 2);
}

/// One notification per statement that changed rows, naming their ids, so
/// a hub reloads just those; more than 500 rows, or TRUNCATE, say "reload
/// everything".
#[tokio::test]
async fn every_statement_on_websites_names_the_changed_ids_once() {
    let db = db().await;
    let mut listener = db.store.listen_website_changes().await.unwrap();
    let w = website(&db.store, 1).await;
    assert_eq!(next(&mut listener).await, format!("ids:{}", w.id));
    db.store.set_website_enabled(w.id, false).await.unwrap();
    assert_eq!(next(&mut listener).await, format!("ids:{}", w.id));
    // Three new rows in one statement: one notification with three ids.
    db.store
        .seed_simulated_websites(3, 60, 1_000)
        .await
        .unwrap();
    let ids = next(&mut listener).await;
    assert_eq!(
        ids.strip_prefix("ids:").unwrap().split(',').count(),
        3,
        "{ids}"
    );
    // A statement that changes nothing says nothing.
    sqlx::query("UPDATE websites SET enabled = true WHERE id < 0")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO websites (url) SELECT 'http://127.0.0.1:8089/' || g FROM generate_series(1, 501) g")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(next(&mut listener).await, "*");
    sqlx::query("DELETE FROM websites WHERE url LIKE 'http://127.0.0.1:8089/%' AND id IN (SELECT max(id) FROM websites)")
        .execute(db.pool())
        .await
        .unwrap();
    assert!(next(&mut listener).await.starts_with("ids:"));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.recv())
            .await
            .is_err(),
        "nothing more"
    );
}

#[tokio::test]
async fn enabled_websites_by_ids_finds_only_enabled_named_rows() {
    let db = db().await;
    let a = website(&db.store, 1).await;
    let b = website(&db.store, 2).await;
    let c = website(&db.store, 3).await;
    db.store.set_website_enabled(b.id, false).await.unwrap();
    let found = db
        .store
        .enabled_websites_by_ids(&[a.id, b.id, WebsiteId(c.id.0 + 100)])
        .await
        .unwrap();
    assert_eq!(found.iter().map(|w| w.id).collect::<Vec<_>>(), vec![a.id]);
}

async fn next(l: &mut PgListener) -> String {
    tokio::time::timeout(Duration::from_secs(5), l.recv())
        .await
        .expect("a notification within 5 s")
        .unwrap()
        .payload()
        .to_owned()
}

/// The typed id encodes as the `bigint` column it names.
#[tokio::test]
async fn website_id_binds_and_decodes_as_its_column() {
    let db = db().await;
    let w = website(&db.store, 1).await;
    let url: String = sqlx::query_scalar("SELECT url FROM websites WHERE id = $1")
        .bind(w.id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(url, w.url);
    let ids: Vec<WebsiteId> = sqlx::query_scalar("SELECT id FROM websites WHERE id = ANY($1)")
        .bind(vec![w.id, WebsiteId(w.id.0 + 1)])
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(ids, vec![w.id]);
}

#[tokio::test]
async fn deleted_websites_leave_the_operators_list_and_cannot_be_enabled() {
    let db = db().await;
    let a = website(&db.store, 1).await;
    let b = website(&db.store, 2).await;
    sqlx::query("UPDATE websites SET deleted_at = now(), enabled = false WHERE id = $1")
        .bind(a.id)
        .execute(db.pool())
        .await
        .unwrap();
    let listed: Vec<WebsiteId> = db
        .store
        .list_websites()
        .await
        .unwrap()
        .iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(listed, vec![b.id]);
    assert!(
        !db.store.set_website_enabled(a.id, true).await.unwrap(),
        "no such website"
    );
    assert!(db.store.set_website_enabled(b.id, false).await.unwrap());
}
