//! What the dashboard reads beyond the resources, and the public pages:
//! status page settings (validation, a slug another account holds, another
//! account's site), the page itself (names only, cache headers, 404 when
//! off), badges (a new token retires the old one), the live feed (one event
//! per change, only the account's own), a validator's earnings.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{code, Api};

#[tokio::test]
async fn a_status_page_is_validated_public_by_name_only_and_private_when_off() {
    let api = Api::start().await;
    let alice = api.owner("alice@example.com").await;
    let bob = api.owner("bob@example.com").await;
    let shop = alice
        .new_site("http://127.0.0.1:8089/shop-secret-path")
        .await;
    let bobs = bob.new_site("http://127.0.0.1:8089/bob").await;
    let (_, b) = alice
        .call(
            Method::PATCH,
            &format!("/v1/websites/{shop}"),
            Some(json!({"name": "Shop"})),
        )
        .await;
    assert_eq!(b["name"], "Shop");

    let (s, page) = alice.get("/v1/status-page").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["slug"], json!(null));
    for (body, field) in [
        (
            json!({"slug": "a", "title": "T", "enabled": true, "website_ids": []}),
            "slug",
        ),
        (
            json!({"slug": "-abc", "title": "T", "enabled": true, "website_ids": []}),
            "slug",
        ),
        (
            json!({"slug": null, "title": "T", "enabled": true, "website_ids": []}),
            "slug",
        ),
        (
            json!({"slug": "acme", "title": "", "enabled": true, "website_ids": []}),
            "title",
        ),
        (
            json!({"slug": "acme", "title": "T", "enabled": true, "website_ids": [bobs]}),
            "website_ids",
        ),
    ] {
        let (s, b) = alice.call(Method::PUT, "/v1/status-page", Some(body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        assert_eq!(b["error"]["field"], field, "{b}");
    }
    let (s, b) = alice
        .call(
            Method::PUT,
            "/v1/status-page",
            Some(json!({"slug": "Acme", "title": "Acme status", "enabled": true, "website_ids": [shop]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["slug"], "acme");
    assert_eq!(b["url"], "/status/acme");
    assert_eq!(b["website_ids"], json!([shop]));
    let (s, b) = bob
        .call(
            Method::PUT,
            "/v1/status-page",
            Some(json!({"slug": "acme", "title": "Mine", "enabled": true, "website_ids": []})),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "slug_taken"), "{b}");
    // Bob sees none of Alice's settings.
    let (_, b) = bob.get("/v1/status-page").await;
    assert_eq!(b["slug"], json!(null));

    let anon = reqwest::Client::new();
    let r = anon.get(api.url("/status/acme")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers();
    assert_eq!(h["cache-control"], "public, max-age=30");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let html = r.text().await.unwrap();
    assert!(html.contains("Acme status") && html.contains("Shop"));
    assert_eq!(html.matches("class=\"bar ").count(), 90, "90 daily bars");
    for leak in ["shop-secret-path", "alice@example.com", "127.0.0.1"] {
        assert!(!html.contains(leak), "{leak} on the public page");
    }
    // Off: gone.
    alice
        .call(
            Method::PUT,
            "/v1/status-page",
            Some(json!({"slug": "acme", "title": "Acme status", "enabled": false, "website_ids": [shop]})),
        )
        .await;
    let r = anon.get(api.url("/status/acme")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    api.stop().await;
}

#[tokio::test]
async fn badges_are_opt_in_and_a_new_token_retires_the_old_one() {
    let api = Api::start().await;
    let alice = api.owner("alice@example.com").await;
    let site = alice.new_site("http://127.0.0.1:8089/a").await;
    let (_, b) = alice.get(&format!("/v1/websites/{site}")).await;
    assert_eq!(b["badge"], json!(null));
    let (s, first) = alice
        .call(Method::POST, &format!("/v1/websites/{site}/badge"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let anon = reqwest::Client::new();
    let get = |path: String| {
        let anon = anon.clone();
        let url = api.url(&path);
        async move { anon.get(url).send().await.unwrap() }
    };
    let r = get(first["status_svg"].as_str().unwrap().to_string()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    let svg = r.text().await.unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains(">unknown<"),
        "{svg}"
    );
    let r = get(first["uptime_svg"].as_str().unwrap().to_string()).await;
    assert!(r.text().await.unwrap().contains(">no data<"));
    let (_, second) = alice
        .call(Method::POST, &format!("/v1/websites/{site}/badge"), None)
        .await;
    assert_ne!(first, second);
    let old = get(first["status_svg"].as_str().unwrap().to_string()).await;
    assert_eq!(
        old.status(),
        StatusCode::NOT_FOUND,
        "the old token is retired"
    );
    let (_, b) = alice.get(&format!("/v1/websites/{site}")).await;
    assert_eq!(b["badge"], second);
    let (s, _) = alice
        .call(Method::DELETE, &format!("/v1/websites/{site}/badge"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let r = get(second["status_svg"].as_str().unwrap().to_string()).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        get("/badge/nope/status.svg".into()).await.status(),
        StatusCode::NOT_FOUND
    );
    api.stop().await;
}

/// The live feed carries one event per change of a site's state, only to
/// its own account's streams.
#[tokio::test]
async fn the_live_feed_sends_each_change_to_its_account_only() {
    let api = Api::start().await;
    let alice = api.owner("alice@example.com").await;
    let bob = api.owner("bob@example.com").await;
    let site = alice.new_site("http://127.0.0.1:8089/a").await;
    let bobs = bob.new_site("http://127.0.0.1:8089/b").await;
    for id in [site, bobs] {
        sqlx::query("INSERT INTO website_state (website_id) VALUES ($1)")
            .bind(id)
            .execute(api.db.pool())
            .await
            .unwrap();
    }
    let mut a = alice.send(Method::GET, "/v1/events", None).await;
    let mut b = bob.send(Method::GET, "/v1/events", None).await;
    for r in [&a, &b] {
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
    }
    // Both streams are open once each has its hello.
    for s in [&mut a, &mut b] {
        let first = tokio::time::timeout(Duration::from_secs(5), s.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&first).contains("event: hello"));
    }
    // A round that changes nothing shown: no event. Then Alice's site goes
    // down: one event, to Alice.
    sqlx::query("UPDATE website_state SET applied_through = now() WHERE website_id = $1")
        .bind(site)
        .execute(api.db.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE website_state SET consecutive_down = 1 WHERE website_id = $1")
        .bind(site)
        .execute(api.db.pool())
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), a.chunk())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&ev).to_string();
    assert!(text.contains("event: site"), "{text}");
    let data: serde_json::Value =
        serde_json::from_str(text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert_eq!(data["website_id"], site);
    assert_eq!(data["latest_status"], "down");
    assert_eq!(data["state_status"], "unknown");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), b.chunk())
            .await
            .is_err(),
        "Bob's stream hears nothing of Alice's site"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), a.chunk())
            .await
            .is_err(),
        "one event per change, none for the round that changed nothing"
    );
    // Without a session: 401.
    let r = reqwest::get(api.url("/v1/events")).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    api.stop().await;
}

/// The dashboard's files come from the binary, revalidated by ETag.
#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_csp_and_etags() {
    let api = Api::start().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (path, to) in [("/", "/app/"), ("/app", "/app/")] {
        let r = http.get(api.url(path)).send().await.unwrap();
        assert!(r.status().is_redirection(), "{path}");
        assert_eq!(r.headers()["location"], to);
    }
    let r = http
        .get(api.url("/app/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    let etag = r.headers()["etag"].clone();
    let again = http
        .get(api.url("/app/assets/app.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let html = http
        .get(api.url("/app/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("/app/assets/app.js")
            && !html.contains("http://")
            && !html.contains("https://")
    );
    let missing = http
        .get(api.url("/app/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    api.stop().await;
}

#[tokio::test]
async fn a_validators_earnings_are_public_and_keys_are_checked() {
    let api = Api::start().await;
    let anon = crate::common::Client::new(&api.base);
    let (s, b) = anon.get("/v1/validators/not-a-key/earnings").await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field")
    );
    let key = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin";
    let (s, _) = anon.get(&format!("/v1/validators/{key}/earnings")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    api.db
        .store
        .upsert_validator(key, "eu-west", &[], "test")
        .await
        .unwrap();
    let (s, b) = anon.get(&format!("/v1/validators/{key}/earnings")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (
            b["earned_lamports"].as_i64(),
            b["prepaid_lamports"].as_i64()
        ),
        (Some(0), Some(0))
    );
    api.stop().await;
}
