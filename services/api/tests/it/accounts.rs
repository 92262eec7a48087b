//! Sign-up, sign-in, sessions, CSRF, API keys and their scopes.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{code, Api, Client};

#[tokio::test]
async fn sign_up_sets_a_strict_http_only_cookie_and_sign_in_and_out_work() {
    let api = Api::start_with(|c| c.cookie_secure = true).await;
    let c = Client::new(&api.base);
    let resp = c
        .send(
            Method::POST,
            "/v1/accounts",
            Some(json!({"email": "a@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for part in [
        "uptime_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    // The same email in another case is taken.
    let (s, b) = Client::new(&api.base)
        .post(
            "/v1/accounts",
            json!({"email": "A@Example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "email_taken"));
    // The stored hash is argon2id, never the password.
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM accounts")
        .fetch_one(api.db.pool())
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains("correct horse"));

    let b = Client::new(&api.base);
    let (s, body) = b
        .post(
            "/v1/sessions",
            json!({"email": "a@example.com", "password": "wrong horse battery"}),
        )
        .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::UNAUTHORIZED, "bad_credentials")
    );
    let (s, body) = b
        .post(
            "/v1/sessions",
            json!({"email": "nobody@example.com", "password": "wrong horse battery"}),
        )
        .await;
    assert_eq!(
        (s, code(&body)),
        (StatusCode::UNAUTHORIZED, "bad_credentials")
    );
    // reqwest keeps a Secure cookie off plain HTTP: sign in without it.
    api.stop().await;

    let api = Api::start().await;
    let mut b = api.owner("b@example.com").await;
    let (s, me) = b.get("/v1/account").await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["account"]["email"], "b@example.com");
    assert_eq!(me["account"]["max_sites"], 20);
    assert_eq!(me["csrf_token"], b.csrf.clone().unwrap().as_str());
    // Sign-out needs the CSRF token, then the cookie no longer works.
    let token = b.csrf.take();
    let (s, body) = b.call(Method::DELETE, "/v1/sessions/current", None).await;
    assert_eq!((s, code(&body)), (StatusCode::FORBIDDEN, "csrf_failed"));
    b.csrf = token;
    let (s, _) = b.call(Method::DELETE, "/v1/sessions/current", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, body) = b.get("/v1/account").await;
    assert_eq!((s, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    // Signing in again works.
    let (s, body) = b
        .post(
            "/v1/sessions",
            json!({"email": "B@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    b.csrf = body["csrf_token"].as_str().map(str::to_string);
    assert_eq!(b.get("/v1/account").await.0, StatusCode::OK);
    api.stop().await;
}

#[tokio::test]
async fn bad_sign_ups_are_refused_with_their_field() {
    let api = Api::start().await;
    let c = Client::new(&api.base);
    for (body, field) in [
        (
            json!({"email": "not-an-email", "password": "correct horse battery"}),
            "email",
        ),
        (
            json!({"email": "a@example.com", "password": "short"}),
            "password",
        ),
    ] {
        let (s, b) = c.post("/v1/accounts", body).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field")
        );
        assert_eq!(b["error"]["field"], field);
    }
    let (s, b) = c
        .post("/v1/accounts", json!({"email": "a@example.com"}))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{b}"
    );
    let (s, b) = c
        .post(
            "/v1/accounts",
            json!({"email": "a@example.com", "password": "correct horse battery", "admin": true}),
        )
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{b}"
    );
    api.stop().await;
}

#[tokio::test]
async fn closed_sign_up_refuses_and_auth_attempts_are_rate_limited() {
    let api = Api::start_with(|c| {
        c.signup_open = false;
        c.auth_attempts_per_minute = 3;
    })
    .await;
    let c = Client::new(&api.base);
    let (s, b) = c
        .post(
            "/v1/accounts",
            json!({"email": "a@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "signup_closed"));
    for _ in 0..2 {
        let (s, _) = c
            .post(
                "/v1/sessions",
                json!({"email": "a@example.com", "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let resp = c
        .send(
            Method::POST,
            "/v1/sessions",
            Some(json!({"email": "a@example.com", "password": "x"})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let b: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(code(&b), "rate_limited");
    api.stop().await;
}

#[tokio::test]
async fn keys_are_shown_once_scoped_and_revocable() {
    let api = Api::start().await;
    let owner = api.owner("a@example.com").await;
    let write = owner.new_key("write").await;
    let read = owner.new_key("read").await;
    assert!(
        write.starts_with("upk_") && write.len() >= 4 + 12 + 1 + 43,
        "{write}"
    );
    // Stored as an HMAC with a visible prefix; the key itself is nowhere.
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT prefix, mac FROM api_keys")
        .fetch_all(api.db.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for (prefix, mac) in &rows {
        assert!(write.contains(prefix.as_str()) || read.contains(prefix.as_str()));
        assert_eq!(mac.len(), 32);
    }
    let (_, list) = owner.get("/v1/keys").await;
    let listed = serde_json::to_string(&list).unwrap();
    assert!(
        !listed.contains(&write[20..]) && !listed.contains(&read[20..]),
        "{listed}"
    );
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    let w = Client::with_key(&api.base, &write);
    let r = Client::with_key(&api.base, &read);
    let site = w.new_site("http://127.0.0.1:8089/up").await;
    assert_eq!(
        r.get(&format!("/v1/websites/{site}")).await.0,
        StatusCode::OK
    );
    let (s, b) = r
        .post("/v1/websites", json!({"url": "http://127.0.0.1:8089/x"}))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "insufficient_scope"));
    // A key cannot manage keys, whatever its scope.
    let (s, b) = w
        .post("/v1/keys", json!({"name": "x", "scope": "write"}))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "session_required"));
    // A cookie write without the CSRF token is refused.
    let mut owner2 = owner;
    let token = owner2.csrf.take();
    let (s, b) = owner2
        .post("/v1/websites", json!({"url": "http://127.0.0.1:8089/y"}))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "csrf_failed"));
    owner2.csrf = token;

    // Revoked: refused at once. Wrong or malformed keys: 401.
    let id = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["scope"] == "read")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let (s, b) = owner2
        .call(Method::DELETE, &format!("/v1/keys/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b["revoked_at_ms"].is_i64());
    let (s, b) = r.get("/v1/websites").await;
    assert_eq!((s, code(&b)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let mut forged = write.clone();
    forged.replace_range(forged.len() - 3.., "AAA");
    for bad in [forged.as_str(), "upk_nothing", "Basic abc"] {
        let (s, _) = Client::with_key(&api.base, bad).get("/v1/websites").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{bad}");
    }
    let m = test_support::metrics::Metrics::parse(&api.state.metrics.render());
    let failures = m.value("uptime_api_auth_failures_total", &[("kind", "key")]);
    assert!(failures >= Some(3.0), "{failures:?}");
    // last_used_at is written by the once-a-minute flush.
    api.state.key_use.flush(&api.db.store).await;
    let used: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE last_used_at IS NOT NULL")
            .fetch_one(api.db.pool())
            .await
            .unwrap();
    assert_eq!(used, 2);
    api.stop().await;
}
