//! Every route that takes an id answers 404 for another account's object,
//! and changes nothing. The routes come from the OpenAPI document, so a
//! route added later is covered without editing this test.

use reqwest::{Method, StatusCode};
use serde_json::json;
use utoipa::OpenApi;

use crate::common::{code, Api};

#[tokio::test]
async fn another_accounts_ids_are_not_found_on_every_route() {
    let api = Api::start().await;
    let alice = api.owner("alice@example.com").await;
    let mallory = api.owner("mallory@example.com").await;
    let site = alice.new_site("http://127.0.0.1:8089/alice").await;
    alice.new_key("read").await;
    let (_, keys) = alice.get("/v1/keys").await;
    let key_id = keys["items"][0]["id"].as_i64().unwrap();
    // Mallory has objects of her own, so an empty account proves nothing.
    mallory.new_site("http://127.0.0.1:8089/mallory").await;

    let doc = serde_json::to_value(api::openapi::ApiDoc::openapi()).unwrap();
    let mut tried = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if !path.contains("{id}") {
            continue;
        }
        let id = if path.starts_with("/v1/keys") {
            key_id
        } else {
            site
        };
        let concrete = path.replace("{id}", &id.to_string());
        for method in ops.as_object().unwrap().keys() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (m == Method::PATCH).then(|| json!({"name": "mine now"}));
            let (s, b) = mallory.call(m.clone(), &concrete, body).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{m} {concrete}: {b}");
            assert_eq!(code(&b), "not_found");
            tried += 1;
        }
    }
    assert!(tried >= 12, "only {tried} routes take an id?");
    // Nothing of Alice's changed.
    let (s, b) = alice.get(&format!("/v1/websites/{site}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["name"], serde_json::Value::Null);
    assert_eq!(b["paused"], false);
    let (_, keys) = alice.get("/v1/keys").await;
    assert!(keys["items"][0]["revoked_at_ms"].is_null());
    // And Alice's list holds only hers.
    let (_, list) = alice.get("/v1/websites").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    api.stop().await;
}
