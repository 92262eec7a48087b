//! docs/metrics.md lists exactly what the api's `/metrics` serves: the same
//! families, types and labels, and only documented label values.

use std::mem::{size_of, size_of_val};

use reqwest::{Method, StatusCode};
use serde_json::json;
use test_support::metrics::{doc_differences, read_doc, scrape, touch};

use crate::common::{Api, Client};

/// Makes one series of each labelled family (see [`touch`]), so that the
/// page serves the families nothing has used yet.
macro_rules! touch_vecs {
    ($m:expr, [$($field:ident),* $(,)?]) => {{
        $( touch(|v| $m.$field.get_metric_with_label_values(v).is_ok()); )*
    }};
}

#[tokio::test]
async fn docs_metrics_md_lists_what_the_api_serves() {
    // Some real requests first, so real label values show up too.
    let api = Api::start().await;
    let owner = api.owner("metrics@example.com").await;
    assert_eq!(owner.get("/v1/websites").await.0, StatusCode::OK);
    assert_eq!(owner.get("/v1/nowhere").await.0, StatusCode::NOT_FOUND);
    let stranger = Client::with_key(&api.base, "not-a-key");
    assert_eq!(
        stranger.get("/v1/websites").await.0,
        StatusCode::UNAUTHORIZED
    );
    let wrong = json!({"email": "metrics@example.com", "password": "not the password"});
    let (s, _) = Client::new(&api.base)
        .call(Method::POST, "/v1/sessions", Some(wrong))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let m = &api.state.metrics;
    touch_vecs!(
        m,
        [
            requests,
            request_seconds,
            rate_limited,
            auth_failures,
            alert_attempts,
            alert_outbox,
        ]
    );
    let page = scrape(&api.url("/metrics")).await.unwrap();
    let doc = read_doc().unwrap();
    let differences = doc_differences(&doc, &page, "uptime_api_", &[]);
    assert!(
        differences.is_empty(),
        "docs/metrics.md and the api's /metrics differ:\n{}",
        differences.join("\n")
    );

    // A labelled family added to `Metrics` and missing from `touch_vecs!`
    // would be neither served nor compared. `Metrics` is the registry plus
    // one handle per family, each a single pointer (an `Arc` in prometheus
    // 0.14, checked here), so its size counts the families.
    let word = size_of::<usize>();
    assert_eq!(size_of_val(&m.requests), word);
    assert_eq!(size_of_val(&m.request_seconds), word);
    assert_eq!(size_of_val(&m.alert_outbox), word);
    let handles = size_of::<api::metrics::Metrics>() / word - 1;
    let served = page
        .families()
        .keys()
        .filter(|n| n.starts_with("uptime_api_"))
        .count();
    assert_eq!(
        served, handles,
        "api::metrics::Metrics holds {handles} metrics but /metrics serves {served} families: \
         add a new labelled metric to touch_vecs! above (or, if a field that is not a metric \
         was added, count it here)"
    );
    api.stop().await;
}
