//! A running api per test and a client that signs in like a browser.

use std::net::SocketAddr;

use api::app::{self, AppState};
use api::config::{Config, Settings};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use test_support::TestDb;
use tokio_util::sync::CancellationToken;

pub const KEY_SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

pub struct Api {
    pub base: String,
    pub db: TestDb,
    pub state: AppState,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Settings for tests: plain-HTTP cookies, private targets allowed (demo
/// sites on loopback), generous rate limits unless a test sets its own.
pub fn settings(db: &TestDb) -> Config {
    Config {
        database_url: db.url.as_str().into(),
        key_secret: KEY_SECRET.into(),
        cookie_secure: false,
        allow_private_targets: true,
        rate_per_ip: 1000,
        burst_per_ip: 1000,
        rate_per_caller: 1000,
        burst_per_caller: 1000,
        auth_attempts_per_minute: 1000,
        ..Config::default()
    }
}

impl Api {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new().await.unwrap();
        let mut c = settings(&db);
        edit(&mut c);
        let s: Settings = c.parse().unwrap();
        let state = AppState::with_store(db.store.clone(), s).expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s2 = stop.clone();
        let st = state.clone();
        let task = tokio::spawn(async move {
            app::serve(st, listener, async move { s2.cancelled().await })
                .await
                .unwrap();
        });
        Self {
            base: format!("http://{addr}"),
            db,
            state,
            stop,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A browser that signs up as `email`.
    pub async fn owner(&self, email: &str) -> Client {
        let mut c = Client::new(&self.base);
        let (s, body) = c
            .call(
                Method::POST,
                "/v1/accounts",
                Some(json!({"email": email, "password": "correct horse battery"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        c.csrf = body["csrf_token"].as_str().map(str::to_string);
        c
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// A client with a cookie jar (a browser) or a bearer key (a program).
pub struct Client {
    base: String,
    http: reqwest::Client,
    pub csrf: Option<String>,
    pub key: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .cookie_store(true)
                .build()
                .unwrap(),
            csrf: None,
            key: None,
        }
    }

    /// A program holding `key` (no cookies).
    pub fn with_key(base: &str, key: &str) -> Self {
        Self {
            base: base.to_string(),
            http: reqwest::Client::new(),
            csrf: None,
            key: Some(key.to_string()),
        }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            r = r.bearer_auth(k);
        }
        if let Some(t) = &self.csrf {
            r = r.header("x-csrf-token", t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    /// Status and JSON body (`null` when there is none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let resp = self.send(method, path, body).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Every item of a list, following `next_cursor` from `path` (which
    /// has a query, e.g. `?limit=3`); asserts each page is 200 and holds at
    /// most `limit` items.
    pub async fn all_pages(&self, path: &str, limit: usize) -> Vec<Value> {
        let mut items = Vec::new();
        let mut next = path.to_string();
        loop {
            let (s, page) = self.get(&next).await;
            assert_eq!(s, StatusCode::OK, "{next}: {page}");
            let got = page["items"].as_array().expect("items");
            assert!(got.len() <= limit, "{next}: {} items", got.len());
            items.extend(got.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(cur) => next = format!("{path}&cursor={cur}"),
                None => return items,
            }
        }
    }

    /// Creates a key and returns it.
    pub async fn new_key(&self, scope: &str) -> String {
        let (s, b) = self
            .post("/v1/keys", json!({"name": "test", "scope": scope}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["key"].as_str().unwrap().to_string()
    }

    /// Creates a site and returns its id.
    pub async fn new_site(&self, url: &str) -> i64 {
        let (s, b) = self.post("/v1/websites", json!({"url": url})).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["id"].as_i64().unwrap()
    }
}

/// The error code of an error body.
pub fn code(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"))
}
