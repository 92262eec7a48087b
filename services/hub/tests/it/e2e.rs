//! End to end on one hub: real validators check real demo sites on
//! loopback, and rounds close with the right status.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use sqlx::Row;
use test_support::TestDb;
use tokio_util::sync::CancellationToken;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_site_gets_three_regions_per_round_with_the_right_status() {
    let db = TestDb::new().await.unwrap();
    let (base, sites_stop) = demo_sites(demo_sites::Config {
        slow_ms: 3_000,
        ..Default::default()
    })
    .await;
    let up = add_site(&db, &format!("{base}/up"), 2, 2_000, None).await;
    let down = add_site(&db, &format!("{base}/down"), 2, 2_000, None).await;
    let slow = add_site(&db, &format!("{base}/slow"), 2, 1_000, None).await;
    let keyword = add_site(
        &db,
        &format!("{base}/keyword"),
        2,
        2_000,
        Some("uptime-demo-keyword"),
    )
    .await;
    let missing = add_site(&db, &format!("{base}/up"), 2, 2_000, Some("not-there")).await;

    let hub = TestHub::start(settings(&db)).await;
    let stop = CancellationToken::new();
    let validators: Vec<_> = REGIONS
        .iter()
        .enumerate()
        .map(|(i, r)| spawn_validator(&[hub.ws_url()], 10 + i as u8, r, &stop))
        .collect();

    // Two full rounds (three results each) for every site.
    let sites = [up, down, slow, keyword, missing];
    eventually(30, "two full rounds per site", || async {
        let full: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT website_id) FROM (
               SELECT website_id FROM rounds
                WHERE status <> 'open' AND results_up + results_down = 3
                GROUP BY website_id HAVING count(*) >= 2) s",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        (full == sites.len() as i64).then_some(())
    })
    .await;

    let expect = [
        (up, "up"),
        (down, "down"),
        (slow, "down"),
        (keyword, "up"),
        (missing, "down"),
    ];
    for (site, want) in expect {
        let rounds = sqlx::query(
            "SELECT id, status FROM rounds
              WHERE website_id = $1 AND status <> 'open' AND results_up + results_down = 3",
        )
        .bind(site)
        .fetch_all(db.pool())
        .await
        .unwrap();
        assert!(rounds.len() >= 2);
        for r in rounds {
            let round_id: i64 = r.get("id");
            assert_eq!(r.get::<String, _>("status"), want, "site {site}");
            let ticks = sqlx::query(
                "SELECT v.region, t.status, t.http_status, t.error, t.latency_ms
                   FROM ticks t JOIN validators v ON v.id = t.validator_id
                  WHERE t.round_id = $1",
            )
            .bind(round_id)
            .fetch_all(db.pool())
            .await
            .unwrap();
            let regions: HashSet<String> = ticks.iter().map(|t| t.get("region")).collect();
            assert_eq!(regions.len(), 3, "three regions in round {round_id}");
            for t in &ticks {
                assert_eq!(t.get::<String, _>("status"), want, "site {site}");
                let err: Option<String> = t.get("error");
                let http: Option<i16> = t.get("http_status");
                if site == down {
                    assert_eq!(http, Some(503));
                }
                if site == slow {
                    // Timed out at the site's 1 s, not the page's 3 s.
                    let e = err.clone().expect("timeout error text");
                    assert!(e.contains("timeout"), "{e}");
                    let latency: i32 = t.get("latency_ms");
                    assert!((1_000..2_500).contains(&latency), "latency {latency}");
                }
                if site == missing {
                    assert!(err.unwrap_or_default().contains("not-there"));
                }
            }
        }
    }
    // No slot ran twice and every tick earned the configured reward.
    let dup: i64 = count(
        &db,
        "SELECT count(*) FROM (SELECT 1 FROM rounds GROUP BY website_id, slot HAVING count(*) > 1) d",
    )
    .await;
    assert_eq!(dup, 0);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM ticks WHERE reward_lamports <> 1000"
        )
        .await,
        0
    );

    // The `hub sites status` table shows each site and its regions.
    let table =
        hub::cli::status_table(&db.store.site_statuses().await.unwrap(), protocol::now_ms());
    let line = |id: i64| {
        table
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("site {id} in\n{table}"))
            .to_string()
    };
    assert!(
        line(up).contains(" up ") && line(up).contains("eu-west: up 200"),
        "{table}"
    );
    assert!(
        line(down).contains("down") && line(down).contains("down 503"),
        "{table}"
    );
    assert!(line(slow).contains("timeout"), "{table}");

    assert!(metric(&hub.state, "uptime_hub_validators_connected", &[]) == 3.0);
    assert!(metric(&hub.state, "uptime_hub_ticks_written_total", &[]) >= 30.0);
    assert!(metric(&hub.state, "uptime_hub_write_batch_size_count", &[]) >= 1.0);

    stop_validators(&stop, validators).await;
    hub.stop().await;
    sites_stop.cancel();
}

/// Starts a hub over 1,500 sites at `interval_secs` (more than a hub takes
/// on "in bulk"), with three validators; returns, once `rounds` rounds are
/// open, how many of them are for a slot that began before the hub started.
async fn bulk_start(interval_secs: i32, rounds: i64) -> i64 {
    let db = TestDb::new().await.unwrap();
    sqlx::query(
        "INSERT INTO websites (url, interval_secs, timeout_ms) \
         SELECT 'http://127.0.0.1:9/' || g, $1, 1000 FROM generate_series(1, 1500) g",
    )
    .bind(interval_secs)
    .execute(db.pool())
    .await
    .unwrap();
    let started_ms = protocol::now_ms();
    let hub = TestHub::start(settings(&db)).await;
    let mut validators = Vec::new();
    for (n, region) in [(1, "eu-west"), (2, "us-east"), (3, "ap-south")] {
        validators.push(RawClient::login(&hub.ws_url(), key(n), region).await.0);
    }
    eventually(10, "rounds to open", || async {
        (count(&db, "SELECT count(*) FROM rounds").await >= rounds).then_some(())
    })
    .await;
    let early: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rounds WHERE scheduled_at < to_timestamp($1::float8 / 1000)",
    )
    .bind(started_ms as f64)
    .fetch_one(db.pool())
    .await
    .unwrap();
    drop(validators);
    hub.stop().await;
    early
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_taken_on_in_bulk_start_at_their_next_slot() {
    // At 60 s, none may run the slot that was current when the hub took
    // them (that would be a burst of up to 1,500 rounds at once).
    let early = bulk_start(60, 5).await;
    assert_eq!(
        early, 0,
        "no slot that began before the hub took the sites ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_taken_on_in_bulk_with_long_intervals_are_not_left_waiting() {
    // At a day, waiting for the next slot could mean a day without a check:
    // they run their current slot, spread over a minute (~25 rounds/s here).
    let early = bulk_start(86_400, 5).await;
    assert!(early >= 5, "current slots ran within seconds: {early}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_website_added_in_plain_sql_is_checked_within_a_second() {
    let db = TestDb::new().await.unwrap();
    let (base, sites_stop) = demo_sites(Default::default()).await;
    let mut s = settings(&db);
    // Only the PostgreSQL notification can explain a quick pickup.
    s.reload_interval_ms = 600_000;
    let hub = TestHub::start(s).await;
    let stop = CancellationToken::new();
    let (v, _) = spawn_validator(&[hub.ws_url()], 50, "eu-west", &stop);
    v.wait_until(|s| s.connected).await;
    // The hub's first reload has happened (the interval fires at once).
    eventually(5, "the first reload", || async {
        (metric(&hub.state, "uptime_hub_websites_owned", &[]) == 0.0).then_some(())
    })
    .await;

    let added = std::time::Instant::now();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO websites (url, interval_secs) VALUES ($1, 60) RETURNING id",
    )
    .bind(format!("{base}/up"))
    .fetch_one(db.pool())
    .await
    .unwrap();
    eventually(5, "a round for the new website", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rounds WHERE website_id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();
        (n > 0).then_some(())
    })
    .await;
    let took = added.elapsed();
    assert!(took < Duration::from_secs(1), "picked up after {took:?}");
    stop.cancel();
    hub.stop().await;
    sites_stop.cancel();
}
