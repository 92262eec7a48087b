//! Rows per second through the tick writer's statement (`insert_ticks`:
//! one multi-row INSERT ... SELECT FROM UNNEST ... ON CONFLICT DO NOTHING)
//! into a real local PostgreSQL, at several batch sizes, plus the
//! all-duplicates case (a burst of resends).
//!
//! Needs UPTIME_TEST_DATABASE_URL; `scripts/bench.sh` starts a private
//! PostgreSQL and runs every benchmark.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use store::{NewTick, RoundId, ValidatorId, WebsiteId};
use uuid::Uuid;

#[path = "../tests/it/fresh_db.rs"]
#[allow(dead_code)] // `pool()` serves the tests
mod fresh_db;

fn ticks(n: usize, now_ms: i64) -> Vec<NewTick> {
    (0..n)
        .map(|i| NewTick {
            website_id: WebsiteId((i % 1000) as i64),
            round_id: RoundId(i as i64),
            validator_id: ValidatorId((i % 3) as i64),
            task_id: Uuid::now_v7(),
            scheduled_at_ms: now_ms,
            up: i % 7 != 0,
            http_status: Some(200),
            latency_ms: 42,
            error: None,
            checked_at_ms: now_ms,
            received_at_ms: now_ms,
            reward_lamports: 1000,
            evidence: None,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Needs UPTIME_TEST_DATABASE_URL (scripts/bench.sh starts a server).
    let db = rt.block_on(fresh_db::FreshDb::new());
    let store = db.store.clone();
    let now = protocol::now_ms();

    let mut g = c.benchmark_group("tick_writer");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    for batch in [100usize, 1_000, 5_000] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::new("insert_new", batch), &batch, |b, &n| {
            b.iter_custom(|iters| {
                let batches: Vec<_> = (0..iters).map(|_| ticks(n, now)).collect();
                rt.block_on(async {
                    let start = Instant::now();
                    for t in &batches {
                        let stored = store.insert_ticks("bench", t).await.unwrap();
                        assert_eq!(stored.len(), n);
                    }
                    start.elapsed()
                })
            })
        });
    }
    let dup = ticks(1_000, now);
    rt.block_on(store.insert_ticks("bench", &dup)).unwrap();
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("insert_all_duplicates/1000", |b| {
        b.iter(|| {
            let stored = rt.block_on(store.insert_ticks("bench", &dup)).unwrap();
            assert!(stored.is_empty());
        })
    });
    g.finish();
    drop(store);
    drop(db);
}

criterion_group!(benches, bench);
criterion_main!(benches);
