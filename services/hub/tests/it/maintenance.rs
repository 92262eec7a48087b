//! Rollups and retention as a running hub does them: closed rounds reach
//! the rollups without anyone asking, and a retention pass keeps
//! partitions ahead and says so in its metrics.

use crate::common::*;

use test_support::TestDb;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_hub_rolls_up_its_rounds_and_keeps_partitions_ahead() {
    let db = TestDb::new().await.unwrap();
    let (base, sites_stop) = demo_sites(Default::default()).await;
    let up = add_site(&db, &format!("{base}/up"), 1, 1_000, None).await;
    let down = add_site(&db, &format!("{base}/down"), 1, 1_000, None).await;
    let mut config = settings(&db);
    config.rollup_interval_ms = 200;
    config.rollup_grace_secs = 0;
    let hub = TestHub::start(config.clone()).await;
    let stop = CancellationToken::new();
    for (seed, region) in [(70, "eu-west"), (71, "us-east")] {
        let (v, _) = spawn_validator(&[hub.ws_url()], seed, region, &stop);
        v.wait_until(|s| s.connected).await;
    }
    // Every round the hub closed is rolled up within moments, each once.
    eventually(30, "three rolled-up rounds per site", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT website_id FROM rounds WHERE rolled_up_at IS NOT NULL
                                    GROUP BY website_id HAVING count(*) >= 3) s",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        (n == 2).then_some(())
    })
    .await;
    stop.cancel();
    hub.stop().await;
    let settings = config.parse().unwrap();
    let metrics = hub::metrics::Metrics::new("t");
    hub::maintenance::roll_up(
        &db.store,
        &settings.maintenance,
        &metrics,
        &CancellationToken::new(),
    )
    .await;
    for (site, status) in [(up, "up"), (down, "down")] {
        let (rolled, raw): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COALESCE(sum(rounds_up + rounds_down + rounds_unknown), 0)::int8
                       FROM rollups WHERE website_id = $1 AND region = '' AND bucket_secs = 300),
                    (SELECT count(*) FROM rounds WHERE website_id = $1 AND status <> 'open')",
        )
        .bind(site)
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(rolled, raw, "{status}: every closed round counted once");
        let counts = db
            .store
            .uptime_counts(site, [86_400, 604_800, 2_592_000, 7_776_000])
            .await
            .unwrap();
        let want_up = if status == "up" { counts[0].decided } else { 0 };
        assert_eq!(counts[0].up, want_up, "{status}: {counts:?}");
        assert!(counts[0].decided + counts[0].unknown >= raw, "{counts:?}");
    }
    // A retention pass: partitions ahead, nothing of today dropped.
    let ticks_before: i64 = sqlx::query_scalar("SELECT count(*) FROM ticks")
        .fetch_one(db.pool())
        .await
        .unwrap();
    hub::maintenance::retain(&db.store, &settings.maintenance, &metrics).await;
    let rendered = test_support::metrics::Metrics::parse(&metrics.render());
    assert!(
        rendered
            .value("uptime_hub_tick_partitions_ahead_days", &[])
            .unwrap()
            >= 6.0
    );
    for task in [
        "rollups",
        "partitions",
        "rollup_prune",
        "rounds",
        "tick_partitions",
    ] {
        assert_eq!(
            rendered.value("uptime_hub_maintenance_errors_total", &[("task", task)]),
            None,
            "{task} did not fail"
        );
    }
    assert!(
        !metrics
            .render()
            .contains("uptime_hub_maintenance_errors_total{"),
        "no step failed"
    );
    let ticks_after: i64 = sqlx::query_scalar("SELECT count(*) FROM ticks")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(ticks_before, ticks_after);
    sites_stop.cancel();
}
