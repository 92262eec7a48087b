//! Uptime and latency read from rollups (issue 13): 1,000 websites at a
//! 60 s interval holding 30 days of rollups, as `Store::roll_up` leaves
//! them (5-minute rows for the last 8 days, hourly and daily rows for 30
//! days; the decisions' row and three regions per bucket, rows of all
//! sites interleaved in time order as the roll-ups write them), and each
//! site's last three rounds closed but not rolled up yet (the grace).
//! Measures (a) one site's uptime over 24 h, 7 d, 30 d and 90 d
//! (`uptime_counts`, what `GET /v1/websites/{id}/uptime` runs), (b) a page
//! of 100 sites' 24 h uptime (`uptime_24h_for_sites`, the site list), and
//! latency percentiles over 24 h and 7 d; then, after criterion, p50/p99/
//! max of 1,000 calls of (a) and (b) one at a time, and what `roll_up`
//! takes to add 13 minutes of every site's rounds (13,000 rounds, 39,000
//! results) to those rows, printed.
//!
//! Needs UPTIME_TEST_DATABASE_URL. Seeding writes about 12 million rows
//! (a few minutes, ~3.5 GB, dropped afterwards).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use store::{Store, WebsiteId};

#[path = "../tests/it/fresh_db.rs"]
#[allow(dead_code)] // `pool()` serves the tests
mod fresh_db;

const SITES: i64 = 1_000;

const SEED_SITES: &str = "
INSERT INTO websites (url) SELECT 'http://127.0.0.1:8089/bench/' || g FROM generate_series(1, $1) AS g";

/// Rollups of one size over `[now - $2 s, now]`: `$1` is the size, `$3`
/// the rounds per bucket (60 s interval). Histograms: 16 shapes, each of
/// one result per round spread over five buckets near 100-500 ms.
const SEED_ROLLUPS: &str = "
WITH h AS (
    SELECT k, array_fill(0, ARRAY[28 + k % 12])
              || ARRAY[$3 / 5, $3 / 5, $3 / 5, $3 / 5, $3 - 4 * ($3 / 5)] AS arr,
           (rollup_latency_bounds())[28 + k % 12] AS lo,
           (rollup_latency_bounds())[32 + k % 12] AS hi
      FROM generate_series(0, 15) AS k
)
INSERT INTO rollups (website_id, bucket_secs, bucket_start, region, rounds_up, rounds_down,
                     rounds_unknown, ticks_up, ticks_down, latency_counts, latency_sum_ms,
                     latency_min_ms, latency_max_ms)
SELECT w.id, $1, b.t, r.region,
       CASE WHEN r.region = '' THEN $3 - d.down ELSE 0 END,
       CASE WHEN r.region = '' THEN d.down ELSE 0 END,
       0,
       CASE WHEN r.region = '' THEN 0 ELSE $3 END,
       0,
       CASE WHEN r.region = '' THEN '{}' ELSE h.arr END,
       CASE WHEN r.region = '' THEN 0 ELSE $3 * (h.lo + h.hi) / 2 END,
       CASE WHEN r.region = '' THEN NULL ELSE h.lo END,
       CASE WHEN r.region = '' THEN NULL ELSE h.hi END
  FROM generate_series(date_bin(make_interval(secs => $1), now() - make_interval(secs => $2),
                                'epoch'),
                       now(), make_interval(secs => $1)) AS b(t)
 CROSS JOIN (SELECT id FROM websites) AS w
 CROSS JOIN (VALUES (''), ('ap-south'), ('eu-west'), ('us-east')) AS r(region)
 CROSS JOIN LATERAL (SELECT CASE WHEN (w.id * 31 + extract(epoch FROM b.t)::int8 / $1) % 97 = 0
                                 THEN 1 ELSE 0 END AS down) AS d
  JOIN h ON h.k = (w.id + extract(epoch FROM b.t)::int8 / $1) % 16";

/// Each site's last three slots, closed in the last three minutes and not
/// rolled up, with a result per region.
const SEED_RECENT: &str = "
WITH v AS (INSERT INTO validators (public_key, region)
           SELECT 'bench-' || r, r FROM unnest(ARRAY['eu-west', 'us-east', 'ap-south']) AS r
           RETURNING id),
rs AS (
    INSERT INTO rounds (website_id, slot, scheduled_at, deadline, hub_id, status, closed_at,
                        closed_by)
    SELECT w.id, g, date_trunc('minute', now()) - make_interval(mins => g),
           date_trunc('minute', now()) - make_interval(mins => g) + interval '10 s', 'bench', 'up',
           date_trunc('minute', now()) - make_interval(mins => g) + interval '2 s', 'bench'
      FROM websites w, generate_series(0, 2) AS g
    RETURNING id, website_id, scheduled_at)
INSERT INTO ticks (website_id, round_id, validator_id, task_id, scheduled_at, status, http_status,
                   latency_ms, checked_at, reward_lamports, hub_id)
SELECT rs.website_id, rs.id, v.id, gen_random_uuid(), rs.scheduled_at, 'up', 200,
       100 + (rs.id * 13 + v.id * 7) % 300, rs.scheduled_at + interval '1 s', 1000, 'bench'
  FROM rs CROSS JOIN v";

/// The ten minutes before the recent rounds, closed, for every site, three
/// results each, for `roll_up` to add (10,000 rounds, 30,000 results).
const SEED_TO_ROLL: &str = "
WITH rs AS (
    INSERT INTO rounds (website_id, slot, scheduled_at, deadline, hub_id, status, closed_at,
                        closed_by)
    SELECT w.id, g, t.first - make_interval(mins => g),
           t.first - make_interval(mins => g) + interval '10 s', 'bench',
           CASE WHEN (w.id + g) % 50 = 0 THEN 'down' ELSE 'up' END,
           t.first - make_interval(mins => g) + interval '2 s', 'bench'
      FROM websites w, generate_series(1, 10) AS g,
           (SELECT min(scheduled_at) AS first FROM rounds) AS t
    RETURNING id, website_id, scheduled_at, status)
INSERT INTO ticks (website_id, round_id, validator_id, task_id, scheduled_at, status, http_status,
                   latency_ms, checked_at, reward_lamports, hub_id)
SELECT rs.website_id, rs.id, v.id, gen_random_uuid(), rs.scheduled_at, rs.status, 200,
       50 + (rs.id * 13 + v.id * 7) % 900, rs.scheduled_at + interval '1 s', 1000, 'bench'
  FROM rs CROSS JOIN validators v";

const WINDOWS: [i64; 4] = [86_400, 7 * 86_400, 30 * 86_400, 90 * 86_400];

/// p50, p99 and max of `n` calls of `f`, one at a time.
fn spread(n: usize, mut f: impl FnMut(usize)) -> [Duration; 3] {
    let mut took: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect();
    took.sort();
    [took[n / 2], took[n * 99 / 100], took[n - 1]]
}

fn page(first: usize) -> Vec<WebsiteId> {
    // A page of the list: 100 consecutive ids.
    let start = (first * 100) as i64 % SITES;
    (0..100)
        .map(|k| WebsiteId(1 + (start + k) % SITES))
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(fresh_db::FreshDb::new());
    let store: Store = db.store.clone();
    rt.block_on(async {
        let t = Instant::now();
        let pool = store.pool();
        sqlx::query(SEED_SITES)
            .bind(SITES)
            .execute(pool)
            .await
            .unwrap();
        for (secs, span, per_bucket) in [
            (300, 8 * 86_400, 5),
            (3_600, 30 * 86_400, 60),
            (86_400, 30 * 86_400, 1_440),
        ] {
            sqlx::query(SEED_ROLLUPS)
                .bind(secs)
                .bind(f64::from(span))
                .bind(per_bucket)
                .execute(pool)
                .await
                .unwrap();
        }
        sqlx::query(SEED_RECENT).execute(pool).await.unwrap();
        // What autovacuum does to a table written this much; the
        // index-only scans need its visibility map.
        for q in [
            "VACUUM ANALYZE rollups",
            "VACUUM ANALYZE rounds",
            "ANALYZE ticks",
        ] {
            sqlx::query(q).execute(pool).await.unwrap();
        }
        let (rows, size): (i64, String) = sqlx::query_as(
            "SELECT count(*), pg_size_pretty(pg_total_relation_size('rollups')) FROM rollups",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        eprintln!("seeded {rows} rollup rows ({size}) in {:.0?}", t.elapsed());
    });

    let mut g = c.benchmark_group("rollup_reads");
    g.sample_size(50).measurement_time(Duration::from_secs(8));
    let mut i = 0i64;
    g.bench_function("uptime_counts_24h_7d_30d_90d", |b| {
        b.iter(|| {
            i += 1;
            let site = WebsiteId(1 + (i * 7) % SITES);
            rt.block_on(store.uptime_counts(site, WINDOWS)).unwrap()
        })
    });
    let mut k = 0usize;
    g.bench_function("uptime_24h_for_sites_100", |b| {
        b.iter(|| {
            k += 1;
            rt.block_on(store.uptime_24h_for_sites(&page(k))).unwrap()
        })
    });
    g.bench_function("latency_by_region_24h", |b| {
        b.iter(|| {
            i += 1;
            let site = WebsiteId(1 + (i * 7) % SITES);
            rt.block_on(store.latency_by_region(site, 86_400)).unwrap()
        })
    });
    g.bench_function("latency_by_region_7d", |b| {
        b.iter(|| {
            i += 1;
            let site = WebsiteId(1 + (i * 7) % SITES);
            rt.block_on(store.latency_by_region(site, 7 * 86_400))
                .unwrap()
        })
    });
    g.finish();

    // Tails, which criterion's means do not show.
    let check = rt
        .block_on(store.uptime_counts(WebsiteId(1), WINDOWS))
        .unwrap();
    assert!(check[2].decided > 40_000, "30 days of rounds: {check:?}");
    let one = spread(1_000, |n| {
        let site = WebsiteId(1 + (n as i64 * 7) % SITES);
        rt.block_on(store.uptime_counts(site, WINDOWS)).unwrap();
    });
    let list = spread(1_000, |n| {
        let got = rt.block_on(store.uptime_24h_for_sites(&page(n))).unwrap();
        assert_eq!(got.len(), 100);
    });
    for (what, [p50, p99, max]) in [
        ("uptime_counts (one site, 24h/7d/30d/90d)", one),
        ("uptime_24h_for_sites (100 sites)", list),
    ] {
        println!("rollup_reads {what}: 1,000 calls: p50 {p50:.2?}, p99 {p99:.2?}, max {max:.2?}");
    }

    // The write side: ten more minutes of rounds for every site, three
    // results each, rolled up with the three recent ones into the existing
    // rows, 1,000 rounds a call.
    let (calls, took) = rt.block_on(async {
        sqlx::query(SEED_TO_ROLL)
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("ANALYZE rounds")
            .execute(store.pool())
            .await
            .unwrap();
        let t = Instant::now();
        let mut calls = 0;
        loop {
            let n = store.roll_up(Duration::ZERO, 1_000).await.unwrap();
            if n == 0 {
                break;
            }
            assert_eq!(n, 1_000);
            calls += 1;
        }
        (calls, t.elapsed())
    });
    println!(
        "rollup_reads roll_up: {} rounds ({} results) in {calls} calls of 1,000: {:.1?} a call, {:.1?} a round",
        calls * 1_000,
        calls * 3_000,
        took / calls,
        took / (calls * 1_000)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
