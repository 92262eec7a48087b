//! What keeps the database's size and reads in shape, run by every hub:
//! rollups (`Store::roll_up`, every `rollup_interval`), and, every
//! `retention_interval`, tick partitions made ahead, old rollups pruned,
//! old rounds deleted and old tick partitions dropped. Each step takes its
//! own lock in the database (an advisory lock, or `SKIP LOCKED` rows), so
//! any number of hubs may run this at once and the work is done once; a
//! failed step is counted and retried at its next interval.

use std::time::Duration;

use store::Store;
use tokio_util::sync::CancellationToken;

use crate::config::MaintenanceSettings;
use crate::metrics::Metrics;

/// Rounds per rollup statement.
const ROLLUP_BATCH: i64 = 5_000;
/// Rollup statements per interval at most (a backlog is worked through
/// over several intervals rather than in one long burst).
const ROLLUP_BATCHES: usize = 20;
/// Rollup rows per size per prune statement.
const PRUNE_BATCH: i64 = 10_000;

pub async fn run(
    store: Store,
    s: MaintenanceSettings,
    metrics: std::sync::Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut rollup = tokio::time::interval(s.rollup_interval);
    rollup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first retention pass a little after start, not with it: a rolling
    // restart of many hubs does not start with all of them at once.
    let first = tokio::time::Instant::now()
        + Duration::from_millis(fastrand::u64(5_000..30_000)).min(s.retention_interval);
    let mut retention = tokio::time::interval_at(first, s.retention_interval);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = rollup.tick() => roll_up(&store, &s, &metrics, &stop).await,
            // A pass can take long (a backlog, partitions locked by long
            // reads): shutdown does not wait for it. Every step is safe to
            // cut off (batches are transactions of their own; a detach cut
            // off is finished by the next pass).
            _ = retention.tick() => tokio::select! {
                _ = stop.cancelled() => return,
                _ = retain(&store, &s, &metrics) => {}
            },
        }
    }
}

/// Rolls up the rounds that are due, a batch at a time.
pub async fn roll_up(
    store: &Store,
    s: &MaintenanceSettings,
    metrics: &Metrics,
    stop: &CancellationToken,
) {
    for _ in 0..ROLLUP_BATCHES {
        if stop.is_cancelled() {
            return;
        }
        match store.roll_up(s.rollup_grace, ROLLUP_BATCH).await {
            Ok(n) => {
                metrics.rounds_rolled_up.inc_by(n.max(0) as u64);
                if n < ROLLUP_BATCH {
                    return;
                }
            }
            Err(e) => {
                metrics
                    .maintenance_errors
                    .with_label_values(&["rollups"])
                    .inc();
                tracing::warn!(error = %e, "rolling up rounds failed");
                return;
            }
        }
    }
}

/// One retention pass: partitions ahead, rollups pruned, rounds deleted,
/// partitions dropped (rounds before partitions: a partition goes only
/// once the rounds in it are done).
pub async fn retain(store: &Store, s: &MaintenanceSettings, metrics: &Metrics) {
    let fail = |task: &str, e: &dyn std::fmt::Display| {
        metrics.maintenance_errors.with_label_values(&[task]).inc();
        tracing::warn!(error = %e, task, "maintenance step failed; retried at the next interval");
    };
    if let Err(e) = store.ensure_partitions(s.partitions_ahead_days).await {
        fail("partitions", &e);
    }
    match store.tick_partitions_ahead().await {
        Ok(days) => metrics.tick_partitions_ahead_days.set(days),
        Err(e) => fail("partitions", &e),
    }
    loop {
        match store
            .prune_rollups(s.keep_5m, s.keep_1h, s.keep_1d, PRUNE_BATCH)
            .await
        {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) => {
                fail("rollup_prune", &e);
                break;
            }
        }
    }
    match store
        .delete_old_rounds(s.retention_days, s.rounds_batch, s.lock_timeout)
        .await
    {
        Ok(n) => metrics.retention_rounds_deleted.inc_by(n),
        Err(e) => fail("rounds", &e),
    }
    match store
        .drop_old_tick_partitions(s.retention_days, s.lock_timeout, s.retries)
        .await
    {
        Ok(dropped) => metrics
            .retention_partitions_dropped
            .inc_by(dropped.len() as u64),
        Err(e) => fail("tick_partitions", &e),
    }
}
