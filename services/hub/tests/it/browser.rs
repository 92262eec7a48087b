//! The owners' dashboard and a public status page in a real browser:
//! headless Chromium (Debian's `chromium` and `chromium-driver`) driven over
//! WebDriver, against the real api, a hub, three validators and a target
//! site on loopback that the test turns down and up again. Screenshots of
//! the list, a site page and a status page are written to
//! `$CARGO_TARGET_TMPDIR/browser/` (the README's come from there).

use crate::common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use common::{api_with, eventually, free_port, settings, spawn_validator, TestHub};
use test_support::TestDb;

/// chromedriver: `UPTIME_TEST_CHROMEDRIVER` (scripts/test.sh sets it, and
/// installs Debian's chromium-driver when missing), else from the PATH.
fn chromedriver() -> PathBuf {
    std::env::var_os("UPTIME_TEST_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromedriver"))
}

/// A chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    url: String,
    _child: tokio::process::Child,
}

impl Driver {
    /// Starts chromedriver on a free port and waits for it to answer. The
    /// port is free when chosen, but another test may take it before
    /// chromedriver binds it (then chromedriver exits): it is tried again
    /// on another port.
    async fn start() -> Self {
        let probe = reqwest::Client::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = tokio::process::Command::new(chromedriver())
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "starting {}: {e} (install Debian's chromium-driver, or run scripts/test.sh)",
                        chromedriver().display()
                    )
                });
            let url = format!("http://127.0.0.1:{port}");
            let until = tokio::time::Instant::now() + Duration::from_secs(60);
            while tokio::time::Instant::now() < until {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                let answered = probe
                    .get(format!("{url}/status"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if answered {
                    return Self { url, _child: child };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("chromedriver did not answer on any of 3 ports within 60 s each");
    }

    /// A new headless browser session; `javascript: false` turns scripts off.
    async fn browser(&self, javascript: bool) -> Client {
        let mut prefs = json!({});
        if !javascript {
            prefs = json!({"profile.managed_default_content_settings.javascript": 2});
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         "--no-first-run", "--no-default-browser-check"],
                "prefs": prefs,
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        // Plain HTTP to chromedriver on loopback: no TLS stack needed.
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

/// A target that answers 200 until turned down, then 503.
async fn switchable_site() -> (String, Arc<AtomicBool>, CancellationToken) {
    let up = Arc::new(AtomicBool::new(true));
    let flag = up.clone();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let flag = flag.clone();
            async move {
                if flag.load(Ordering::SeqCst) {
                    (axum::http::StatusCode::OK, "ok")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
    });
    (url, up, stop)
}

/// Waits until the page has rendered (`body[data-ready="1"]`).
async fn ready(c: &Client) {
    for _ in 0..200 {
        if let Ok(v) = c
            .execute(
                "return document.body && document.body.dataset.ready",
                vec![],
            )
            .await
        {
            if v == json!("1") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the page did not finish rendering");
}

/// Opens a dashboard route and waits for it to render.
async fn open(c: &Client, base: &str, route: &str) {
    c.goto(&format!("{base}/app/{route}")).await.unwrap();
    ready(c).await;
}

async fn fill(c: &Client, form: &str, name: &str, value: &str) {
    let el = c
        .find(Locator::Css(&format!("#{form} [name=\"{name}\"]")))
        .await
        .unwrap_or_else(|e| panic!("#{form} [name={name}]: {e}"));
    el.clear().await.unwrap();
    el.send_keys(value).await.unwrap();
}

async fn submit(c: &Client, form: &str) {
    c.find(Locator::Css(&format!("#{form} [type=\"submit\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The text of `selector`, if it exists.
async fn text(c: &Client, selector: &str) -> Option<String> {
    let el = c.find(Locator::Css(selector)).await.ok()?;
    el.text().await.ok().map(|t| t.trim().to_string())
}

/// Waits until `selector`'s text is `want`.
async fn wait_text(c: &Client, selector: &str, want: &str, secs: u64) {
    let mut last = None;
    for _ in 0..secs * 20 {
        last = text(c, selector).await;
        if last.as_deref() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{selector}: wanted {want:?}, last saw {last:?}");
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, c.screenshot().await.unwrap()).unwrap();
    path
}

async fn sign_up(c: &Client, base: &str, email: &str) {
    open(c, base, "#/signup").await;
    fill(c, "signup-form", "email", email).await;
    fill(c, "signup-form", "password", "a long enough password 123").await;
    submit(c, "signup-form").await;
    eventually(10, "the sites page after sign-up", || async {
        let url = c.current_url().await.ok()?;
        (url.fragment() == Some("/sites")).then_some(())
    })
    .await;
    ready(c).await;
}

/// When the page saw `field` of the site's row become `value` (Unix ms by
/// the browser's clock, the machine's), recorded by a MutationObserver.
async fn watch(c: &Client, site: i64, field: &str, value: &str) {
    c.execute(
        "const [site, field, value] = arguments;
         const key = `${site}:${field}:${value}`;
         window.__seen = window.__seen || {};
         const check = () => {
           const el = document.querySelector(`[data-site-id=\"${site}\"] [data-field=\"${field}\"]`);
           if (el && el.textContent.trim() === value && !window.__seen[key]) window.__seen[key] = Date.now();
         };
         new MutationObserver(check).observe(document.body, {subtree: true, childList: true, characterData: true});
         check();",
        vec![json!(site), json!(field), json!(value)],
    )
    .await
    .unwrap();
}

async fn seen_at(c: &Client, site: i64, field: &str, value: &str) -> Option<i64> {
    c.execute(
        "return (window.__seen || {})[arguments[0]] || null",
        vec![json!(format!("{site}:{field}:{value}"))],
    )
    .await
    .ok()?
    .as_i64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_watches_a_site_go_down_and_up_live_and_shares_a_status_page() {
    let db = TestDb::new().await.unwrap();
    let (target, target_up, target_stop) = switchable_site().await;
    let hub = TestHub::start(settings(&db)).await;
    let stop = CancellationToken::new();
    let validators: Vec<_> = ["eu-west", "us-east", "ap-south"]
        .iter()
        .enumerate()
        .map(|(i, r)| spawn_validator(&[hub.ws_url()], 90 + i as u8, r, &stop))
        .collect();
    let (base, api_stop) = api_with(&db, |c| {
        c.min_interval_secs = 1;
        c.default_min_interval_secs = 1;
        // Status pages may be a second old, not 30 (the default).
        c.public_cache_secs = 1;
    })
    .await;
    let driver = Driver::start().await;
    let c = driver.browser(true).await;

    // Sign up, add the site through the form.
    sign_up(&c, &base, "owner@example.com").await;
    fill(&c, "site-form", "name", "Shop").await;
    fill(&c, "site-form", "url", &target).await;
    fill(&c, "site-form", "interval_secs", "1").await;
    fill(&c, "site-form", "timeout_ms", "800").await;
    submit(&c, "site-form").await;
    let site: i64 = eventually(10, "the new site's row", || async {
        let el = c.find(Locator::Css("[data-site-id]")).await.ok()?;
        el.attr("data-site-id").await.ok()??.parse().ok()
    })
    .await;
    let row = format!("[data-site-id=\"{site}\"]");
    wait_text(
        &c,
        &format!("{row} [data-field=\"latest-status\"]"),
        "up",
        30,
    )
    .await;
    wait_text(&c, &format!("{row} [data-field=\"incident\"]"), "none", 5).await;
    // A mark the page keeps until it reloads.
    c.execute("window.__noReload = 1", vec![]).await.unwrap();
    watch(&c, site, "latest-status", "down").await;
    watch(&c, site, "incident", "open").await;

    // Down: the round's status shows within a second of the round closing,
    // the incident after the confirmation rounds, without a reload.
    target_up.store(false, Ordering::SeqCst);
    let down_shown = eventually(20, "the row to show the down round", || async {
        seen_at(&c, site, "latest-status", "down").await
    })
    .await;
    wait_text(&c, &format!("{row} [data-field=\"incident\"]"), "open", 20).await;
    let closed_ms: i64 = sqlx::query_scalar(
        "SELECT (extract(epoch FROM closed_at) * 1000)::int8 FROM rounds
          WHERE website_id = $1 AND status = 'down' ORDER BY scheduled_at LIMIT 1",
    )
    .bind(site)
    .fetch_one(db.pool())
    .await
    .unwrap();
    let lag = down_shown - closed_ms;
    eprintln!("the first down round closed; the list showed it {lag} ms later");
    assert!(
        lag <= 1_000,
        "the list showed the down round {lag} ms after it closed"
    );
    assert_eq!(
        c.execute("return window.__noReload || null", vec![])
            .await
            .unwrap(),
        json!(1),
        "no reload"
    );
    screenshot(&c, "sites-list-incident.png").await;

    // The status page: set up in the dashboard, shown to anyone.
    open(&c, &base, "#/status-page").await;
    fill(&c, "status-page-form", "slug", "shop-status").await;
    fill(&c, "status-page-form", "title", "Shop status").await;
    for sel in [
        "#status-page-form [name=\"enabled\"]".to_string(),
        format!("#status-page-form [name=\"website_ids\"][value=\"{site}\"]"),
    ] {
        let el = c.find(Locator::Css(&sel)).await.unwrap();
        if el.prop("checked").await.unwrap().as_deref() != Some("true") {
            el.click().await.unwrap();
        }
    }
    submit(&c, "status-page-form").await;
    let status_url = format!("{base}/status/shop-status");
    let anon = reqwest::Client::new();
    let page = eventually(10, "the status page to be public", || async {
        let r = anon.get(&status_url).send().await.ok()?;
        r.status().is_success().then_some(r)
    })
    .await;
    assert!(page
        .headers()
        .get("cache-control")
        .is_some_and(|v| v.to_str().unwrap() == "public, max-age=1"));
    let html = page.text().await.unwrap();
    assert!(html.contains("Shop") && html.contains("Incident ongoing since"));
    assert!(
        !html.contains("owner@example.com") && !html.contains(&target),
        "no account data or site URL on the public page"
    );
    // In the browser, and with JavaScript off.
    c.goto(&status_url).await.unwrap();
    assert_eq!(
        text(&c, "[data-field=\"state\"]").await.as_deref(),
        Some("Down")
    );
    screenshot(&c, "status-page.png").await;
    let nojs = driver.browser(false).await;
    nojs.goto(&status_url).await.unwrap();
    assert_eq!(
        text(&nojs, "[data-field=\"state\"]").await.as_deref(),
        Some("Down"),
        "the status page works without JavaScript"
    );
    assert!(text(&nojs, ".incident-now").await.is_some());
    // (Scripts really are off there: the dashboard shows its <noscript>.)
    nojs.goto(&format!("{base}/app/")).await.unwrap();
    let main = text(&nojs, "main").await.unwrap_or_default();
    assert!(main.contains("needs JavaScript"), "{main}");

    // Up again: the round, then the incident resolved, live.
    open(&c, &base, "#/sites").await;
    target_up.store(true, Ordering::SeqCst);
    wait_text(
        &c,
        &format!("{row} [data-field=\"latest-status\"]"),
        "up",
        20,
    )
    .await;
    wait_text(&c, &format!("{row} [data-field=\"incident\"]"), "none", 20).await;
    screenshot(&c, "sites-list.png").await;
    open(&c, &base, &format!("#/sites/{site}")).await;
    // The uptime bars and the incident timeline are there.
    assert!(c.find(Locator::Css(".bar")).await.is_ok(), "uptime bars");
    screenshot(&c, "site-page.png").await;
    // (Reloads: the page may be up to a second old here.)
    nojs.goto(&status_url).await.unwrap();
    eventually(5, "the status page to say operational", || async {
        nojs.refresh().await.ok()?;
        let state = text(&nojs, "[data-field=\"state\"]").await?;
        (state == "Operational").then_some(())
    })
    .await;

    // Keyboard: from the page's content (where a route puts the focus),
    // Shift+Tab reaches the navigation's links.
    c.execute(
        "document.activeElement && document.activeElement.blur()",
        vec![],
    )
    .await
    .unwrap();
    let mut reached = false;
    for _ in 0..15 {
        let tab = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: '\u{E008}' })
            .then(KeyAction::Down { value: '\u{E004}' })
            .then(KeyAction::Up { value: '\u{E004}' })
            .then(KeyAction::Up { value: '\u{E008}' });
        c.perform_actions(tab).await.unwrap();
        let href: Value = c
            .execute(
                "return document.activeElement && document.activeElement.getAttribute('href')",
                vec![],
            )
            .await
            .unwrap();
        if href == json!("#/alerts") {
            reached = true;
            break;
        }
    }
    assert!(reached, "the Alerts link is reachable with the keyboard");

    // At a phone's width nothing is wider than the screen.
    c.set_window_size(390, 844).await.unwrap();
    for (route, shot) in [
        ("#/sites".to_string(), "phone-sites.png"),
        (format!("#/sites/{site}"), "phone-site.png"),
    ] {
        open(&c, &base, &route).await;
        let wide: Value = c
            .execute(
                "return document.documentElement.scrollWidth > document.documentElement.clientWidth",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(wide, json!(false), "{route} scrolls sideways at 390 px");
        screenshot(&c, shot).await;
    }

    // A second account sees none of the first one's sites or settings.
    let other = driver.browser(true).await;
    sign_up(&other, &base, "other@example.com").await;
    assert!(
        other
            .find_all(Locator::Css("[data-site-id]"))
            .await
            .unwrap()
            .is_empty(),
        "no sites of the first account"
    );
    open(&other, &base, &format!("#/sites/{site}")).await;
    assert!(other.find(Locator::Css(&row)).await.is_err());
    open(&other, &base, "#/status-page").await;
    let slug = other
        .find(Locator::Css("#status-page-form [name=\"slug\"]"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(
        slug.as_deref(),
        Some(""),
        "not the first account's settings"
    );
    let seen: Value = other
        .execute(
            "return fetch('/v1/websites/' + arguments[0]).then(r => r.status)",
            vec![json!(site)],
        )
        .await
        .unwrap();
    assert_eq!(seen, json!(404));

    for b in [c, nojs, other] {
        let _ = b.close().await;
    }
    stop.cancel();
    for (_, task) in validators {
        let _ = task.await;
    }
    api_stop.cancel();
    hub.stop().await;
    target_stop.cancel();
}
