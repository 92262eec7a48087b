//! schemathesis (PyPI) against the live service: requests generated from
//! the OpenAPI document, good and bad, must get no 5xx and only answers the
//! document describes (status, headers, body schema, content type), and
//! operations that need a caller must refuse one without credentials.
//!
//! `positive_data_acceptance` is left out: it expects every request the
//! schema allows to succeed, but some rules cannot be written in JSON
//! Schema (private addresses, the account's interval floor and quota, the
//! cursor's form), and those answer 422 or 403 as documented.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::Api;

const ST_ENV: &str = "UPTIME_TEST_SCHEMATHESIS";

fn st(api: &Api, headers: &[String], only: Option<&str>) {
    let bin = std::env::var(ST_ENV).unwrap_or_else(|_| {
        panic!(
            "{ST_ENV} is not set: run the tests with scripts/test.sh, which installs schemathesis"
        )
    });
    let mut cmd = Command::new(&bin);
    cmd.args([
        "run",
        &api.url("/openapi.json"),
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        "25",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--seed",
        "20261201",
        "--no-color",
    ]);
    for h in headers {
        cmd.args(["--header", h]);
    }
    if let Some(re) = only {
        cmd.args(["--include-path-regex", re]);
    } else {
        // Sign-out would end the session the second pass uses; keys need one.
        cmd.args(["--exclude-path-regex", "^/v1/(keys|sessions/current)"]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    let summary = text
        .lines()
        .filter(|l| l.contains("generated"))
        .collect::<Vec<_>>();
    eprintln!("schemathesis: {summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_no_server_error_and_only_documented_answers() {
    let api = Api::start().await;
    let owner = api.owner("st@example.com").await;
    let key = owner.new_key("write").await;
    // Data to read: a site with rounds and results.
    let site = owner.new_site("http://127.0.0.1:8089/up").await;
    for ago in [60, 120, 180] {
        crate::reads::seed_round(&api, site, "up", ago).await;
    }
    crate::reads::seed_round(&api, site, "down", 240).await;

    st(&api, &[format!("Authorization: Bearer {key}")], None);

    // Key management and the account, as a signed-in browser.
    let resp = reqwest::Client::new()
        .post(api.url("/v1/sessions"))
        .json(&json!({"email": "st@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body: serde_json::Value = resp.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().unwrap();
    st(
        &api,
        &[format!("Cookie: {cookie}"), format!("X-CSRF-Token: {csrf}")],
        Some("^/v1/(keys|account)"),
    );
    api.stop().await;
}
