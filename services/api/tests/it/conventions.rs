//! What every response has in common: one error shape, a request id,
//! limits on bodies, the probes, metrics and the OpenAPI document.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{code, Api, Client};

#[tokio::test]
async fn errors_have_one_shape_and_every_response_a_request_id() {
    let api = Api::start_with(|c| c.max_body_bytes = 4096).await;
    let c = Client::new(&api.base);
    let http = reqwest::Client::new();
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            http.get(api.url("/v1/nothing")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            http.get(api.url("/v1/websites")),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            http.post(api.url("/v1/accounts"))
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            http.post(api.url("/v1/accounts")).body("email=a"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            http.post(api.url("/v1/accounts"))
                .json(&json!({"email": "a@b.co", "password": "x".repeat(10_000)})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            http.get(api.url("/v1/websites/abc")),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
    ];
    for (req, status, want) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status);
        let id = resp
            .headers()
            .get("x-request-id")
            .expect("a request id")
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(id.len(), 36, "{id}");
        let b: Value = resp.json().await.unwrap();
        assert_eq!(code(&b), want, "{b}");
        assert!(b["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // A request id the client sends is kept.
    let resp = http
        .get(api.url("/healthz"))
        .header("x-request-id", "trace-me-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me-1");
    // A path id that is not a number, signed in: 400.
    let owner = api.owner("a@example.com").await;
    let (s, b) = owner.get("/v1/websites/abc").await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    drop(c);
    api.stop().await;
}

#[tokio::test]
async fn per_ip_and_per_caller_limits_answer_429_with_retry_after() {
    let api = Api::start_with(|c| {
        c.rate_per_ip = 1;
        c.burst_per_ip = 5;
    })
    .await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = http.get(api.url("/v1/websites")).send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status());
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count(),
        3,
        "{statuses:?}"
    );
    // Probes and metrics are not behind the per-IP limit.
    assert_eq!(
        http.get(api.url("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    api.stop().await;

    let api = Api::start_with(|c| {
        c.rate_per_caller = 1;
        c.burst_per_caller = 3;
    })
    .await;
    let owner = api.owner("a@example.com").await;
    let mut limited = 0;
    for _ in 0..6 {
        let (s, b) = owner.get("/v1/websites").await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(code(&b), "rate_limited");
            limited += 1;
        }
    }
    assert_eq!(limited, 3);
    let m = test_support::metrics::Metrics::parse(&api.state.metrics.render());
    assert_eq!(
        m.value("uptime_api_rate_limited_total", &[("limit", "caller")]),
        Some(3.0)
    );
    api.stop().await;
}

#[tokio::test]
async fn probes_metrics_and_the_openapi_document() {
    let api = Api::start().await;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(api.url("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        http.get(api.url("/readyz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    let doc: Value = http
        .get(api.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for p in [
        "/v1/websites",
        "/v1/websites/{id}/uptime",
        "/v1/keys/{id}",
        "/v1/sessions",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
    }
    // The docs page and its assets are served from the binary.
    let page = http.get(api.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
    let css = http
        .get(api.url("/docs/swagger-ui.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    // Requests are counted by route template, not by concrete path.
    let owner = api.owner("a@example.com").await;
    let id = owner.new_site("http://127.0.0.1:8089/a").await;
    owner.get(&format!("/v1/websites/{id}")).await;
    let body = http
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // (Read as text: prometheus-parse stops a label value at its first `}`.)
    let line =
        r#"uptime_api_requests_total{method="GET",route="/v1/websites/{id}",status="200"} 1"#;
    assert!(body.lines().any(|l| l == line), "{body}");
    assert!(
        !body.contains(&format!("/v1/websites/{id}\"")),
        "a concrete path as a label"
    );
    api.stop().await;
}

#[tokio::test]
async fn made_up_methods_do_not_make_new_metric_series() {
    let api = Api::start().await;
    let http = reqwest::Client::new();
    for m in ["FROB1", "FROB2", "BREW"] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let r = http
            .request(method, api.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{m}: {}", r.status());
    }
    let text = http
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("FROB") && !text.contains("BREW"), "{text}");
    assert!(text.contains("method=\"other\""), "{text}");
    api.stop().await;
}
