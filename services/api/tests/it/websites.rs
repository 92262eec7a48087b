//! Websites: validation, quotas, pages, pause, resume, soft delete, and the
//! notification that tells hubs which website changed.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{code, Api};

#[tokio::test]
async fn each_bad_setting_is_refused_with_its_field() {
    let api = Api::start_with(|c| c.allow_private_targets = false).await;
    let c = api.owner("a@example.com").await;
    let cases = [
        (json!({"url": "ftp://example.com/"}), "url"),
        (json!({"url": "http://user:pw@example.com/"}), "url"),
        (json!({"url": "http://127.0.0.1:8080/"}), "url"),
        (json!({"url": "http://localhost/"}), "url"),
        (json!({"url": "http://10.1.2.3/"}), "url"),
        (json!({"url": "http://example.com:25/"}), "url"),
        (
            json!({"url": format!("https://example.com/{}", "a".repeat(2100))}),
            "url",
        ),
        (
            json!({"url": "https://203.0.113.7/", "interval_secs": 30}),
            "interval_secs",
        ),
        (
            json!({"url": "https://203.0.113.7/", "interval_secs": 90000}),
            "interval_secs",
        ),
        (
            json!({"url": "https://203.0.113.7/", "timeout_ms": 50}),
            "timeout_ms",
        ),
        (
            json!({"url": "https://203.0.113.7/", "timeout_ms": 61000, "interval_secs": 120}),
            "timeout_ms",
        ),
        (
            json!({"url": "https://203.0.113.7/", "expected_status_min": 99}),
            "expected_status_min",
        ),
        (
            json!({"url": "https://203.0.113.7/", "expected_status_min": 300, "expected_status_max": 200}),
            "expected_status_max",
        ),
        (
            json!({"url": "https://203.0.113.7/", "keyword": "k".repeat(257)}),
            "keyword",
        ),
        (
            json!({"url": "https://203.0.113.7/", "keyword": "a\u{0}b"}),
            "keyword",
        ),
        (
            json!({"url": "https://203.0.113.7/", "name": "n".repeat(101)}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let (s, b) = c.post("/v1/websites", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {b}");
        assert_eq!(
            (code(&b), b["error"]["field"].as_str()),
            ("invalid_field", Some(field)),
            "{body}: {b}"
        );
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM websites")
        .fetch_one(api.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
    // A good one gets the defaults.
    let (s, b) = c
        .post(
            "/v1/websites",
            json!({"url": "https://203.0.113.7/health", "name": " shop "}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["interval_secs"], 60);
    assert_eq!(b["timeout_ms"], 10000);
    assert_eq!(
        (
            b["expected_status_min"].as_i64(),
            b["expected_status_max"].as_i64()
        ),
        (Some(200), Some(399))
    );
    assert_eq!(b["name"], "shop");
    assert_eq!(b["follow_redirects"], true);
    api.stop().await;
}

#[tokio::test]
async fn quotas_hold_under_concurrent_creates() {
    let api = Api::start().await;
    let c = api.owner("a@example.com").await;
    sqlx::query("UPDATE accounts SET max_sites = 3, min_interval_secs = 120")
        .execute(api.db.pool())
        .await
        .unwrap();
    let (s, b) = c
        .post(
            "/v1/websites",
            json!({"url": "http://127.0.0.1:8089/a", "interval_secs": 60}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("interval_secs")),
        "{b}"
    );
    let creates = (0..8).map(|i| {
        c.post(
            "/v1/websites",
            json!({"url": format!("http://127.0.0.1:8089/{i}")}),
        )
    });
    let results = futures_util::future::join_all(creates).await;
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 3, "{results:?}");
    for (s, b) in results.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_eq!((*s, code(b)), (StatusCode::FORBIDDEN, "quota_exceeded"));
    }
    // The default interval follows the account's minimum.
    let (_, list) = c.get("/v1/websites").await;
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["interval_secs"] == 120));
    // Deleting one makes room.
    let id = list["items"][0]["id"].as_i64().unwrap();
    assert_eq!(
        c.call(Method::DELETE, &format!("/v1/websites/{id}"), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.post("/v1/websites", json!({"url": "http://127.0.0.1:8089/z"}))
            .await
            .0,
        StatusCode::CREATED
    );
    api.stop().await;
}

#[tokio::test]
async fn pages_are_stable_and_capped() {
    let api = Api::start().await;
    let c = api.owner("a@example.com").await;
    sqlx::query("UPDATE accounts SET max_sites = 100")
        .execute(api.db.pool())
        .await
        .unwrap();
    let mut made = HashSet::new();
    for i in 0..7 {
        made.insert(c.new_site(&format!("http://127.0.0.1:8089/{i}")).await);
    }
    let seen: Vec<i64> = c
        .all_pages("/v1/websites?limit=3", 3)
        .await
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    assert_eq!(seen.len(), 7);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.iter().copied().collect::<HashSet<_>>(), made);
    for bad in [
        "/v1/websites?limit=0",
        "/v1/websites?limit=101",
        "/v1/websites?cursor=bm90IGEgbnVtYmVy",
    ] {
        let (s, b) = c.get(bad).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            "{bad}"
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn update_pause_resume_and_a_soft_delete_that_keeps_history() {
    let api = Api::start().await;
    let c = api.owner("a@example.com").await;
    let id = c.new_site("http://127.0.0.1:8089/a").await;
    let (s, b) = c
        .call(
            Method::PATCH,
            &format!("/v1/websites/{id}"),
            Some(json!({"keyword": "ok", "name": "A", "interval_secs": 120})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (
            b["keyword"].as_str(),
            b["name"].as_str(),
            b["interval_secs"].as_i64()
        ),
        (Some("ok"), Some("A"), Some(120))
    );
    // null clears, absence keeps.
    let (_, b) = c
        .call(
            Method::PATCH,
            &format!("/v1/websites/{id}"),
            Some(json!({"keyword": null})),
        )
        .await;
    assert_eq!(
        (b["keyword"].is_null(), b["name"].as_str()),
        (true, Some("A"))
    );
    let (_, b) = c
        .call(
            Method::PATCH,
            &format!("/v1/websites/{id}"),
            Some(json!({"timeout_ms": 5})),
        )
        .await;
    assert_eq!(code(&b), "invalid_field");

    let (_, b) = c.post(&format!("/v1/websites/{id}/pause"), json!({})).await;
    assert_eq!(b["paused"], true);
    let enabled: bool = sqlx::query_scalar("SELECT enabled FROM websites WHERE id = $1")
        .bind(id)
        .fetch_one(api.db.pool())
        .await
        .unwrap();
    assert!(!enabled);
    let (_, b) = c.get(&format!("/v1/websites/{id}/status")).await;
    assert_eq!(b["status"], "paused");
    let (_, b) = c
        .post(&format!("/v1/websites/{id}/resume"), json!({}))
        .await;
    assert_eq!(b["paused"], false);

    // A round with a result, then delete: the site is gone for the owner,
    // its round and tick stay (for settlement), nothing cascades.
    crate::reads::seed_round(&api, id, "up", 0).await;
    assert_eq!(
        c.call(Method::DELETE, &format!("/v1/websites/{id}"), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.get(&format!("/v1/websites/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.call(Method::DELETE, &format!("/v1/websites/{id}"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (rounds, ticks, enabled, deleted): (i64, i64, bool, bool) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM rounds WHERE website_id = $1), (SELECT count(*) FROM ticks WHERE website_id = $1), \
                enabled, deleted_at IS NOT NULL FROM websites WHERE id = $1",
    )
    .bind(id)
    .fetch_one(api.db.pool())
    .await
    .unwrap();
    assert_eq!((rounds, ticks, enabled, deleted), (1, 2, false, true));
    // A hard delete of a site with rounds is refused, not cascaded.
    let e = sqlx::query("DELETE FROM websites WHERE id = $1")
        .bind(id)
        .execute(api.db.pool())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("foreign key"), "{e}");
    api.stop().await;
}

#[tokio::test]
async fn changes_are_announced_with_the_ids_of_the_changed_websites() {
    let api = Api::start().await;
    let c = api.owner("a@example.com").await;
    let mut listener = api.db.store.listen_website_changes().await.unwrap();
    let id = c.new_site("http://127.0.0.1:8089/a").await;
    let n = listener.recv().await.unwrap();
    assert_eq!(n.payload(), format!("ids:{id}"));
    c.post(&format!("/v1/websites/{id}/pause"), json!({})).await;
    assert_eq!(
        listener.recv().await.unwrap().payload(),
        format!("ids:{id}")
    );
    c.call(Method::DELETE, &format!("/v1/websites/{id}"), None)
        .await;
    assert_eq!(
        listener.recv().await.unwrap().payload(),
        format!("ids:{id}")
    );
    // A statement over many rows says "reload everything".
    sqlx::query("INSERT INTO websites (url) SELECT 'http://127.0.0.1:8089/' || g FROM generate_series(1, 501) g")
        .execute(api.db.pool())
        .await
        .unwrap();
    assert_eq!(listener.recv().await.unwrap().payload(), "*");
    api.stop().await;
}
