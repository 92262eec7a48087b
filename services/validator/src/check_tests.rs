use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use protocol::limits::MAX_KEYWORD_LEN;
use protocol::{CheckSpec, CheckStatus, StatusRange};

use super::*;

/// A test site on 127.0.0.1 that counts every request it sees.
struct Site {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Site {
    async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/ok", get(|| async { "hello world" }))
            .route(
                "/status/{code}",
                get(|Path(code): Path<u16>| async move {
                    (StatusCode::from_u16(code).unwrap(), "status")
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/redirect", get(|| async { Redirect::temporary("/ok") }))
            .route("/loop", get(|| async { Redirect::temporary("/loop") }))
            .route(
                "/to/{host}",
                get(move |Path(host): Path<String>| async move {
                    Redirect::temporary(&format!("http://{host}:{}/ok", addr.port()))
                }),
            )
            .route(
                "/to-port/{port}",
                get(|Path(port): Path<u16>| async move {
                    Redirect::temporary(&format!("http://127.0.0.1:{port}/ok"))
                }),
            )
            .route(
                "/big",
                get(|| async { format!("{}needle", "x".repeat(MAX_BODY_BYTES)) }),
            )
            .layer(middleware::from_fn_with_state(hits.clone(), count));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn count(State(hits): State<Arc<AtomicUsize>>, req: Request, next: Next) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    next.run(req).await.into_response()
}

fn spec() -> CheckSpec {
    CheckSpec {
        timeout_ms: 5_000,
        expected_status: StatusRange::DEFAULT,
        keyword: None,
        follow_redirects: false,
    }
}

/// Runs one check and compares status, HTTP status and error.
#[track_caller]
fn expect(o: &Outcome, status: CheckStatus, http: Option<u16>, error: Option<&str>) {
    assert_eq!(
        (o.status, o.http_status, o.error.as_deref()),
        (status, http, error),
        "{o:?}"
    );
}

#[tokio::test]
async fn up_down_and_expected_status() {
    let site = Site::start().await;
    let c = Checker::new(true);
    let o = c.run(&site.url("/ok"), &spec()).await;
    expect(&o, CheckStatus::Up, Some(200), None);
    assert!(o.latency_ms < 5_000);

    let o = c.run(&site.url("/status/503"), &spec()).await;
    expect(
        &o,
        CheckStatus::Down,
        Some(503),
        Some("status 503 not in 200-399"),
    );

    let only_404 = CheckSpec {
        expected_status: StatusRange { min: 404, max: 404 },
        ..spec()
    };
    let o = c.run(&site.url("/status/404"), &only_404).await;
    expect(&o, CheckStatus::Up, Some(404), None);
    let o = c.run(&site.url("/ok"), &only_404).await;
    expect(
        &o,
        CheckStatus::Down,
        Some(200),
        Some("status 200 not in 404-404"),
    );
}

#[tokio::test]
async fn keyword_found_or_not() {
    let site = Site::start().await;
    let c = Checker::new(true);
    let with = |k: &str| CheckSpec {
        keyword: Some(k.into()),
        ..spec()
    };
    let o = c.run(&site.url("/ok"), &with("o wor")).await;
    expect(&o, CheckStatus::Up, Some(200), None);
    let o = c.run(&site.url("/ok"), &with("foo")).await;
    expect(
        &o,
        CheckStatus::Down,
        Some(200),
        Some("keyword \"foo\" not found"),
    );
    // Only the first MiB is searched.
    let o = c.run(&site.url("/big"), &with("needle")).await;
    expect(
        &o,
        CheckStatus::Down,
        Some(200),
        Some("keyword \"needle\" not found"),
    );
    // Error text stays within the protocol limit whatever the keyword
    // (each control character is shown escaped, six bytes).
    let o = c
        .run(&site.url("/ok"), &with(&"\u{1}".repeat(MAX_KEYWORD_LEN)))
        .await;
    assert_eq!(o.error.unwrap().len(), MAX_ERROR_TEXT);
    // Bytes, case-sensitive.
    let o = c.run(&site.url("/ok"), &with("Hello")).await;
    assert_eq!(o.status, CheckStatus::Down, "{o:?}");
}

/// A keyword over `MAX_KEYWORD_LEN` (which hubs refuse at registration) is
/// answered as a failed check without a request.
#[tokio::test]
async fn a_keyword_over_the_limit_fails_without_a_request() {
    let site = Site::start().await;
    let c = Checker::new(true);
    let spec = CheckSpec {
        keyword: Some("k".repeat(MAX_KEYWORD_LEN + 1)),
        ..spec()
    };
    let o = c.run(&site.url("/ok"), &spec).await;
    expect(
        &o,
        CheckStatus::Down,
        None,
        Some("keyword is 257 bytes; at most 256 are checked"),
    );
    assert_eq!(site.hits(), 0);
}

/// Bad ports (the Fetch standard's list) are refused, in the URL and in a
/// redirect, before any connection.
#[tokio::test]
async fn bad_ports_are_refused_before_any_request() {
    fn nothing(_: IpAddr) -> bool {
        false
    }
    let site = Site::start().await;
    let c = Checker::with_policy(TargetPolicy::custom(nothing), "test");
    let o = c.run("http://127.0.0.1:25/", &spec()).await;
    expect(
        &o,
        CheckStatus::Down,
        None,
        Some("refused: port 25 is reserved for another protocol"),
    );
    let follow = CheckSpec {
        follow_redirects: true,
        ..spec()
    };
    let o = c.run(&site.url("/to-port/6667"), &follow).await;
    expect(
        &o,
        CheckStatus::Down,
        None,
        Some("refused: port 6667 is reserved for another protocol"),
    );
    assert_eq!(site.hits(), 1, "the first hop only");
}

#[tokio::test]
async fn timeout_reports_down_near_the_limit() {
    let site = Site::start().await;
    let c = Checker::new(true);
    let short = CheckSpec {
        timeout_ms: 300,
        ..spec()
    };
    let o = c.run(&site.url("/slow"), &short).await;
    expect(&o, CheckStatus::Down, None, Some("timeout after 300 ms"));
    assert!((300..1_500).contains(&o.latency_ms), "{o:?}");
}

#[tokio::test]
async fn redirects_followed_or_reported() {
    let site = Site::start().await;
    let c = Checker::new(true);
    let o = c.run(&site.url("/redirect"), &spec()).await;
    expect(&o, CheckStatus::Up, Some(307), None);
    let two_xx = CheckSpec {
        expected_status: StatusRange { min: 200, max: 299 },
        ..spec()
    };
    let o = c.run(&site.url("/redirect"), &two_xx).await;
    expect(
        &o,
        CheckStatus::Down,
        Some(307),
        Some("status 307 not in 200-299"),
    );
    let follow = CheckSpec {
        follow_redirects: true,
        ..two_xx
    };
    let o = c.run(&site.url("/redirect"), &follow).await;
    expect(&o, CheckStatus::Up, Some(200), None);

    let before = site.hits();
    let o = c.run(&site.url("/loop"), &follow).await;
    expect(
        &o,
        CheckStatus::Down,
        None,
        Some("too many redirects (more than 5)"),
    );
    assert_eq!(
        site.hits() - before,
        1 + MAX_REDIRECTS,
        "the original plus 5 hops"
    );
}

#[tokio::test]
async fn private_targets_are_refused_before_any_request() {
    let site = Site::start().await;
    let c = Checker::new(false);
    let o = c.run(&site.url("/ok"), &spec()).await;
    expect(
        &o,
        CheckStatus::Down,
        None,
        Some("refused: 127.0.0.1 is a private/loopback/link-local address"),
    );
    let by_name = format!("http://localhost:{}/ok", site.addr.port());
    let o = c.run(&by_name, &spec()).await;
    assert_eq!(o.status, CheckStatus::Down);
    let err = o.error.unwrap();
    assert!(
        err.starts_with("refused: ") && err.ends_with(" is a private/loopback/link-local address"),
        "{err}"
    );
    let metadata = "http://169.254.169.254/latest/meta-data/";
    let o = c.run(metadata, &spec()).await;
    expect(
        &o,
        CheckStatus::Down,
        None,
        Some("refused: 169.254.169.254 is a private/loopback/link-local address"),
    );
    assert_eq!(site.hits(), 0, "no request may reach a refused target");
}

#[tokio::test]
async fn redirect_to_a_forbidden_address_is_refused() {
    // Everything on loopback is private, so this test forbids only
    // 127.0.0.2 to see the redirect gate work while the site stays reachable.
    fn only_127_0_0_2(ip: IpAddr) -> bool {
        ip == IpAddr::from([127, 0, 0, 2])
    }
    let site = Site::start().await;
    let c = Checker::with_policy(TargetPolicy::custom(only_127_0_0_2), "test");
    let follow = CheckSpec {
        follow_redirects: true,
        ..spec()
    };
    let o = c.run(&site.url("/to/127.0.0.2"), &follow).await;
    expect(
        &o,
        CheckStatus::Down,
        None,
        Some("refused: 127.0.0.2 is a private/loopback/link-local address"),
    );
    assert_eq!(site.hits(), 1, "the first hop only");
    // Not following, the redirect itself is the answer and nothing is refused.
    let o = c.run(&site.url("/to/127.0.0.2"), &spec()).await;
    expect(&o, CheckStatus::Up, Some(307), None);
}

#[tokio::test]
async fn connection_failures_and_bad_urls() {
    let c = Checker::new(true);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let o = c.run(&format!("http://{closed}/"), &spec()).await;
    expect(&o, CheckStatus::Down, None, Some("connection refused"));
    let o = c.run("ftp://example.com/", &spec()).await;
    expect(
        &o,
        CheckStatus::Down,
        None,
        Some("unsupported scheme \"ftp\""),
    );
    let o = c.run("not a url", &spec()).await;
    expect(
        &o,
        CheckStatus::Down,
        None,
        Some("invalid url: relative URL without a base"),
    );
}
