//! Local demo websites whose answers are deterministic, so uptime checks can run with no internet.
//!
//! # Layout
//!
//! - [`Page`]: the fixed set of pages and what each one does (the index at `/` lists them).
//! - [`Config`]: the two knobs (`/slow` delay, `/flap` period).
//! - [`router`]: the axum router plus the per-page [`Hits`] counter that tests assert on.
//! - [`serve`] / [`serve_router`]: run on a listener the caller owns until the caller's
//!   shutdown future resolves (tests bind `127.0.0.1:0`; `main.rs` wires Ctrl-C/SIGTERM).
//!
//! Architecture invariant: no state that differs between servers except the hit counters.
//! `/flap` derives its phase from wall-clock time, so every validator checking the same
//! server (or any copy of it) sees the same answer within one period.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

/// The body text `/keyword` contains; keyword checks look for it.
pub const KEYWORD: &str = "uptime-demo-keyword";

/// Upper bound on `/slow?ms=`: a typo must not park a connection for hours.
pub const MAX_SLOW_MS: u64 = 120_000;

/// How long [`serve_router`] lets in-flight requests (a `/slow` sleep, say) finish after the
/// shutdown signal before it returns anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long `GET /slow` waits before answering, unless `?ms=` says otherwise.
    pub slow_ms: u64,
    /// Length of each up and each down phase of `GET /flap`. Zero means always up.
    pub flap_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            slow_ms: 5_000,
            flap_period: Duration::from_secs(30),
        }
    }
}

/// One of the demo pages. The discriminant indexes [`Hits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Index,
    Up,
    Down,
    Slow,
    Flap,
    Keyword,
    Redirect,
}

impl Page {
    pub const ALL: [Page; 7] = [
        Page::Index,
        Page::Up,
        Page::Down,
        Page::Slow,
        Page::Flap,
        Page::Keyword,
        Page::Redirect,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Page::Index => "/",
            Page::Up => "/up",
            Page::Down => "/down",
            Page::Slow => "/slow",
            Page::Flap => "/flap",
            Page::Keyword => "/keyword",
            Page::Redirect => "/redirect",
        }
    }

    pub fn from_path(path: &str) -> Option<Page> {
        Page::ALL.into_iter().find(|p| p.path() == path)
    }

    fn describe(self, config: &Config) -> String {
        match self {
            Page::Index => "this list".to_owned(),
            Page::Up => "200 \"ok\"".to_owned(),
            Page::Down => "503".to_owned(),
            Page::Slow => format!(
                "200 after {} ms (<code>?ms=N</code> overrides, at most {MAX_SLOW_MS})",
                config.slow_ms
            ),
            Page::Flap => format!(
                "200 and 500 alternating every {} s of wall-clock time",
                config.flap_period.as_secs_f64()
            ),
            Page::Keyword => format!("200 with a body containing \"{KEYWORD}\""),
            Page::Redirect => "302 to /up".to_owned(),
        }
    }
}

/// Requests received per page, counted before the handler answers.
#[derive(Debug, Default)]
pub struct Hits {
    counts: [AtomicU64; Page::ALL.len()],
}

impl Hits {
    /// Requests so far for `path` (for example `"/up"`); 0 for a path that is not a page.
    pub fn get(&self, path: &str) -> u64 {
        Page::from_path(path).map_or(0, |p| self.counts[p as usize].load(Ordering::Relaxed))
    }

    /// Requests so far over all pages.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn record(&self, page: Page) {
        self.counts[page as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether `/flap` is up at `now`: even-numbered periods since the Unix epoch are up, odd ones
/// down. A zero period (or a clock before 1970) means up.
pub fn flap_is_up(now: SystemTime, period: Duration) -> bool {
    let period_ms = period.as_millis();
    if period_ms == 0 {
        return true;
    }
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    (since_epoch.as_millis() / period_ms) % 2 == 0
}

#[derive(Clone)]
struct AppState {
    config: Arc<Config>,
    hits: Arc<Hits>,
}

/// The demo router and its hit counter.
pub fn router(config: Config) -> (Router, Arc<Hits>) {
    let hits = Arc::new(Hits::default());
    let state = AppState {
        config: Arc::new(config),
        hits: hits.clone(),
    };
    let router = Router::new()
        .route("/", get(index))
        .route("/up", get(up))
        .route("/down", get(down))
        .route("/slow", get(slow))
        .route("/flap", get(flap))
        .route("/keyword", get(keyword))
        .route("/redirect", get(redirect))
        .with_state(state);
    (router, hits)
}

/// Serves the demo pages on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(config).0, shutdown).await
}

/// Serves `router` (from [`router`]) on `listener` until `shutdown` resolves. After the signal
/// the listener closes at once, idle connections are closed, and in-flight requests get a short
/// grace period before this returns regardless (a 2-minute `/slow` must not hold up Ctrl-C).
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (fired_tx, fired_rx) = tokio::sync::oneshot::channel::<()>();
    let graceful = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = fired_tx.send(());
    });
    let grace_elapsed = async move {
        // The sender only drops unsent when the server future itself is gone.
        if fired_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = graceful => result,
        () = grace_elapsed => {
            tracing::warn!("requests still in flight after the shutdown grace period; closing");
            Ok(())
        }
    }
}

async fn index(State(state): State<AppState>) -> Html<String> {
    state.hits.record(Page::Index);
    let mut body = String::from(
        "<!doctype html>\n<html><head><title>demo-sites</title></head><body>\n\
         <h1>demo-sites</h1>\n<ul>\n",
    );
    for page in Page::ALL {
        let path = page.path();
        let what = page.describe(&state.config);
        body.push_str(&format!(
            "<li><a href=\"{path}\"><code>{path}</code></a>: {what}</li>\n"
        ));
    }
    body.push_str("</ul>\n</body></html>\n");
    Html(body)
}

async fn up(State(state): State<AppState>) -> &'static str {
    state.hits.record(Page::Up);
    "ok"
}

async fn down(State(state): State<AppState>) -> (StatusCode, &'static str) {
    state.hits.record(Page::Down);
    (StatusCode::SERVICE_UNAVAILABLE, "down")
}

/// `?ms=N` for `/slow`, parsed by hand (one integer does not earn a serde dependency).
fn parse_ms(query: Option<&str>) -> Result<Option<u64>, String> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut ms = None;
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("ms=") {
            let parsed = value
                .parse::<u64>()
                .map_err(|_| format!("ms must be a whole number of milliseconds, got {value:?}"))?;
            ms = Some(parsed);
        }
    }
    Ok(ms)
}

async fn slow(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    state.hits.record(Page::Slow);
    let ms = match parse_ms(query.as_deref()) {
        Ok(ms) => ms.unwrap_or(state.config.slow_ms).min(MAX_SLOW_MS),
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("ok after {ms} ms").into_response()
}

async fn flap(State(state): State<AppState>) -> (StatusCode, &'static str) {
    state.hits.record(Page::Flap);
    if flap_is_up(SystemTime::now(), state.config.flap_period) {
        (StatusCode::OK, "flap: up")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "flap: down")
    }
}

async fn keyword(State(state): State<AppState>) -> Html<String> {
    state.hits.record(Page::Keyword);
    Html(format!(
        "<!doctype html>\n<html><body><p>This page contains {KEYWORD}.</p></body></html>\n"
    ))
}

async fn redirect(State(state): State<AppState>) -> Response {
    state.hits.record(Page::Redirect);
    // Redirect::to is 303 and Redirect::temporary 307; checkers most often meet a plain 302.
    (StatusCode::FOUND, [(header::LOCATION, Page::Up.path())]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flap_alternates_by_period() {
        let period = Duration::from_secs(30);
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert!(flap_is_up(at(0), period));
        assert!(flap_is_up(at(29), period));
        assert!(!flap_is_up(at(30), period));
        assert!(!flap_is_up(at(59), period));
        assert!(flap_is_up(at(60), period));
    }

    #[test]
    fn zero_period_is_always_up() {
        assert!(flap_is_up(
            UNIX_EPOCH + Duration::from_secs(31),
            Duration::ZERO
        ));
    }

    #[test]
    fn slow_query_parses_ms() {
        assert_eq!(parse_ms(None), Ok(None));
        assert_eq!(parse_ms(Some("x=1")), Ok(None));
        assert_eq!(parse_ms(Some("x=1&ms=250")), Ok(Some(250)));
        assert!(parse_ms(Some("ms=soon")).is_err());
    }

    #[test]
    fn pages_round_trip_through_their_paths() {
        for page in Page::ALL {
            assert_eq!(Page::from_path(page.path()), Some(page));
        }
        assert_eq!(Page::from_path("/nope"), None);
    }
}
