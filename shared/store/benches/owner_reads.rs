//! The owners' API reads on a website with 90 days of rounds at a 60 s
//! interval (129,600 rounds) and a week of results from three regions
//! (30,240 ticks), none of it rolled up (the reads' worst case: rollups
//! stopped, so uptime and latency fall back to raw rounds and results):
//! uptime over 24h/7d/30d/90d, latency percentiles per region over 24 h
//! and 7 d, each region's last result, and a page of 50 rounds with their
//! results. `rollup_reads` measures the same reads from rollups.
//!
//! Needs UPTIME_TEST_DATABASE_URL; `scripts/bench.sh` starts a private
//! PostgreSQL and runs every benchmark.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use store::WebsiteId;

#[path = "../tests/it/fresh_db.rs"]
#[allow(dead_code)] // `pool()` serves the tests
mod fresh_db;

const SEED: &str = "
WITH w AS (INSERT INTO websites (url) VALUES ('http://127.0.0.1:8089/bench') RETURNING id),
v AS (INSERT INTO validators (public_key, region)
      SELECT 'bench-' || r, r FROM unnest(ARRAY['eu-west', 'us-east', 'ap-south']) AS r
      RETURNING id, region)
INSERT INTO rounds (website_id, slot, scheduled_at, deadline, hub_id, status, closed_at, closed_by)
SELECT w.id, g, date_trunc('minute', now()) - make_interval(mins => g),
       date_trunc('minute', now()) - make_interval(mins => g) + interval '10 s', 'bench',
       CASE WHEN g % 97 = 0 THEN 'down' WHEN g % 211 = 0 THEN 'unknown' ELSE 'up' END,
       date_trunc('minute', now()) - make_interval(mins => g) + interval '2 s', 'bench'
  FROM w, generate_series(1, 129600) AS g";

const SEED_TICKS: &str = "
INSERT INTO ticks (website_id, round_id, validator_id, task_id, scheduled_at, status, http_status,
                   latency_ms, checked_at, reward_lamports, hub_id)
SELECT r.website_id, r.id, v.id, gen_random_uuid(), r.scheduled_at,
       CASE WHEN r.status = 'down' THEN 'down' ELSE 'up' END, 200,
       20 + (r.slot * 7 + v.id * 13) % 300, r.scheduled_at + interval '1 s', 1000, 'bench'
  FROM rounds r CROSS JOIN validators v
 WHERE r.scheduled_at >= now() - interval '7 days'";

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(fresh_db::FreshDb::new());
    let store = db.store.clone();
    let id: WebsiteId = rt.block_on(async {
        sqlx::query(SEED).execute(store.pool()).await.unwrap();
        sqlx::query(SEED_TICKS).execute(store.pool()).await.unwrap();
        sqlx::query("VACUUM ANALYZE rounds")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("ANALYZE ticks")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query_scalar("SELECT id FROM websites")
            .fetch_one(store.pool())
            .await
            .unwrap()
    });

    let mut g = c.benchmark_group("owner_reads");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    let windows = [86_400, 7 * 86_400, 30 * 86_400, 90 * 86_400];
    g.bench_function("uptime_24h_7d_30d_90d", |b| {
        b.iter(|| rt.block_on(store.uptime_counts(id, windows)).unwrap())
    });
    g.bench_function("latency_by_region_24h", |b| {
        b.iter(|| rt.block_on(store.latency_by_region(id, 86_400)).unwrap())
    });
    g.bench_function("latency_by_region_7d", |b| {
        b.iter(|| {
            rt.block_on(store.latency_by_region(id, 7 * 86_400))
                .unwrap()
        })
    });
    g.bench_function("latest_by_region", |b| {
        b.iter(|| rt.block_on(store.latest_by_region(id, 86_400)).unwrap())
    });
    g.bench_function("round_page_50", |b| {
        b.iter(|| rt.block_on(store.round_page(id, None, 50)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
