//! Rollups: per website and 5 minutes, hour and day, the round decisions
//! (region `''`) and each region's results with a latency histogram
//! (migrations/20261201000004_rollups.sql says what each column holds).
//!
//! [`Store::roll_up`] adds closed rounds to them, each exactly once (the
//! per-round watermark `rounds.rolled_up_at`); [`Store::prune_rollups`]
//! deletes what is past retention. Neither runs by itself: a maintenance
//! task calls them (one caller at a time does the work, so every hub may).
//! The reads are in `owner_sites` (uptime, latency, a page's 24 h uptime).

use std::time::Duration;

use sqlx::Row;

use crate::{Result, Store};

/// How long 5-minute rollups are kept by default: reads use them only at
/// the start of a window of at most a day (and for the last hour).
pub const KEEP_5M: Duration = Duration::from_secs(8 * 86_400);
/// How long hourly rollups are kept by default (windows up to 30 days).
pub const KEEP_1H: Duration = Duration::from_secs(100 * 86_400);
/// How long daily rollups are kept by default: at least 400 days.
pub const KEEP_1D: Duration = Duration::from_secs(400 * 86_400);

/// The latency histogram's bucket bounds, ms: bucket 0 is `[0, 1)`,
/// bucket `i` is `[LATENCY_BOUNDS_MS[i-1], LATENCY_BOUNDS_MS[i])`, the last
/// `[120000, inf)`. 1 ms apart up to 10 ms, then 17 per power of ten, no
/// bucket above 10 ms wider than 20% of its lower bound. The migration's
/// `rollup_latency_bounds()` is the same list (a test compares them).
pub const LATENCY_BOUNDS_MS: [i32; 79] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, //
    10, 12, 14, 16, 18, 20, 23, 26, 30, 35, 40, 45, 50, 60, 70, 80, 90, //
    100, 120, 140, 160, 180, 200, 230, 260, 300, 350, 400, 450, 500, 600, 700, 800, 900, //
    1000, 1200, 1400, 1600, 1800, 2000, 2300, 2600, 3000, 3500, 4000, 4500, 5000, 6000, 7000, 8000,
    9000, //
    10000, 12000, 14000, 16000, 18000, 20000, 23000, 26000, 30000, 35000, 40000, 45000, 50000,
    60000, 70000, 80000, 90000, 100000, 120000,
];

/// Bucket sizes, seconds, finest first.
pub(crate) const BUCKET_SECS: [i32; 3] = [300, 3_600, 86_400];

/// The rollups a window of `window_secs` is read from: `(fine, coarse)`
/// bucket sizes. The window starts at the `fine` boundary at or before
/// `now - window` (so it reaches back up to one fine bucket further);
/// `fine` rows cover it up to the next `coarse` boundary, `coarse` rows
/// from there to now. Up to a day: 5 minutes then hours; up to 30 days:
/// hours then days; longer: days.
pub(crate) fn granularity(window_secs: i64) -> (i32, i32) {
    if window_secs <= 86_400 {
        (BUCKET_SECS[0], BUCKET_SECS[1])
    } else if window_secs <= 30 * 86_400 {
        (BUCKET_SECS[1], BUCKET_SECS[2])
    } else {
        (BUCKET_SECS[2], BUCKET_SECS[2])
    }
}

/// A merged latency histogram: counts per bucket of [`LATENCY_BOUNDS_MS`]
/// (absent entries are zero) and the least and greatest latency seen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Histogram {
    pub counts: Vec<i64>,
    pub min_ms: i32,
    pub max_ms: i32,
}

impl Histogram {
    pub fn total(&self) -> i64 {
        self.counts.iter().sum()
    }

    /// The `p` quantile (0..=1) as `percentile_cont` would give it, estimated:
    /// the rank `h = p * (n - 1)` falls in the bucket holding the
    /// `floor(h)`-th smallest result, and the value is interpolated within
    /// that bucket, whose integer values are taken as `[lower, upper - 1]`
    /// narrowed to `[min, max]`. When the `ceil(h)`-th result is in the same
    /// bucket (as it is unless the results are sparse around the rank) the
    /// estimate is within `upper - 1 - lower` ms of the exact value: exact
    /// below 10 ms, off by less than 20% of the value above. `None` when
    /// the histogram is empty.
    pub fn quantile(&self, p: f64) -> Option<f64> {
        let n = self.total();
        if n == 0 {
            return None;
        }
        let h = p.clamp(0.0, 1.0) * (n - 1) as f64;
        let mut before = 0i64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c <= 0 {
                continue;
            }
            if h < (before + c) as f64 || before + c == n {
                let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] };
                let upper = LATENCY_BOUNDS_MS
                    .get(i)
                    .map_or(self.max_ms, |u| u.saturating_sub(1));
                let lo = f64::from(lower.max(self.min_ms));
                let hi = f64::from(upper.min(self.max_ms)).max(lo);
                let frac = ((h - before as f64 + 0.5) / c as f64).clamp(0.0, 1.0);
                return Some(lo + frac * (hi - lo));
            }
            before += c;
        }
        None
    }
}

impl Store {
    /// Adds closed rounds to the rollups: up to `limit` rounds whose
    /// `closed_at` is more than `grace` ago and that were not rolled up
    /// yet, oldest close first, with their decisions and their stored
    /// results (each result under its validator's region). Marking the
    /// rounds and adding them is one statement in one transaction: a crash
    /// neither counts a round twice nor loses it. Returns how many rounds
    /// it rolled up; 0 also when another caller is at it: a transaction
    /// advisory lock lets one work at a time (two at once would add to the
    /// same rollup rows in different orders and deadlock), so every hub may
    /// call this. The rounds are also taken `FOR UPDATE SKIP LOCKED`, so a
    /// round some other statement holds is left for the next call.
    ///
    /// `grace` defines a late result: one stored after its round was
    /// rolled up is kept and paid but not in the rollups. Validators
    /// resend held results for up to 120 s past the deadline, so pass
    /// about 3 minutes. Call it every minute or so, and again at once
    /// while it returns `limit` (a backlog, e.g. the history that existed
    /// when the migration ran).
    pub async fn roll_up(&self, grace: Duration, limit: i64) -> Result<i64> {
        let mut tx = self.pool().begin().await?;
        let mine: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('rollups'))")
                .fetch_one(&mut *tx)
                .await?;
        if !mine {
            return Ok(0);
        }
        let row = sqlx::query(ROLL_UP_SQL)
            .bind(grace.as_secs_f64())
            .bind(limit)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.get("rounds"))
    }

    /// Deletes rollups whose bucket ended more than its size's keep ago
    /// ([`KEEP_5M`], [`KEEP_1H`], [`KEEP_1D`] are the defaults), at most
    /// `limit` rows of each size per call; returns how many it deleted
    /// (0 also when a roll-up holds the lock). Call it again while it
    /// deletes anything. A keep shorter than the
    /// reads need (a day and an hour of 5-minute rows, 31 days of hourly,
    /// 91 of daily) makes uptime and latency undercount.
    pub async fn prune_rollups(
        &self,
        keep_5m: Duration,
        keep_1h: Duration,
        keep_1d: Duration,
        limit: i64,
    ) -> Result<u64> {
        // Under the roll-up's lock: a prune and a roll-up touching the same
        // old rows (the history backfill) in different orders would
        // deadlock.
        let mut tx = self.pool().begin().await?;
        let mine: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('rollups'))")
                .fetch_one(&mut *tx)
                .await?;
        if !mine {
            return Ok(0);
        }
        let r = sqlx::query(
            "DELETE FROM rollups r
              USING (SELECT o.website_id, o.bucket_secs, o.region, o.bucket_start
                       FROM UNNEST($1::int4[], $2::float8[]) AS k(secs, keep)
                      CROSS JOIN LATERAL (
                            SELECT website_id, bucket_secs, region, bucket_start FROM rollups
                             WHERE bucket_secs = k.secs
                               AND bucket_start <= now() - make_interval(secs => k.keep + k.secs)
                             LIMIT $3) AS o) AS old
              WHERE (r.website_id, r.bucket_secs, r.region, r.bucket_start)
                  = (old.website_id, old.bucket_secs, old.region, old.bucket_start)",
        )
        .bind(&BUCKET_SECS[..])
        .bind(&[keep_5m, keep_1h, keep_1d].map(|k| k.as_secs_f64())[..])
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }
}

/// Takes the rounds, marks them, and adds them to all three sizes: their
/// decisions to region `''` rows, their results to their regions' rows
/// (`up` results' latency into the histogram). Each `(website, size,
/// region, bucket)` appears once in the insert, as `ON CONFLICT DO UPDATE`
/// requires. A validator with an empty region (the protocol allows none)
/// is left out rather than mixed into the decisions' row.
const ROLL_UP_SQL: &str = "
WITH picked AS (
    SELECT id FROM rounds
     WHERE rolled_up_at IS NULL AND status <> 'open'
       AND closed_at < now() - make_interval(secs => $1)
     ORDER BY closed_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE rounds r SET rolled_up_at = now()
      FROM picked p
     WHERE r.id = p.id AND r.rolled_up_at IS NULL
    RETURNING r.id, r.website_id, r.scheduled_at, r.status
), g (secs) AS (VALUES (300), (3600), (86400)),
decided AS (
    SELECT m.website_id, g.secs,
           date_bin(make_interval(secs => g.secs), m.scheduled_at, 'epoch') AS bucket_start,
           count(*) FILTER (WHERE m.status = 'up') AS up,
           count(*) FILTER (WHERE m.status = 'down') AS down,
           count(*) FILTER (WHERE m.status = 'unknown') AS unknown
      FROM marked m CROSS JOIN g
     GROUP BY 1, 2, 3
), results AS (
    SELECT m.website_id, m.scheduled_at, v.region, t.status, t.latency_ms
      FROM marked m
      JOIN ticks t
        ON t.round_id = m.id AND t.website_id = m.website_id AND t.scheduled_at = m.scheduled_at
      JOIN validators v ON v.id = t.validator_id
     WHERE v.region <> ''
), seen AS (
    SELECT x.website_id, g.secs,
           date_bin(make_interval(secs => g.secs), x.scheduled_at, 'epoch') AS bucket_start,
           x.region,
           count(*) FILTER (WHERE x.status = 'up') AS up,
           count(*) FILTER (WHERE x.status = 'down') AS down,
           rollup_histogram(array_agg(width_bucket(x.latency_ms, rollup_latency_bounds()))
                            FILTER (WHERE x.status = 'up')) AS hist,
           COALESCE(sum(x.latency_ms) FILTER (WHERE x.status = 'up'), 0) AS lsum,
           min(x.latency_ms) FILTER (WHERE x.status = 'up') AS lmin,
           max(x.latency_ms) FILTER (WHERE x.status = 'up') AS lmax
      FROM results x CROSS JOIN g
     GROUP BY 1, 2, 3, 4
), added AS (
    INSERT INTO rollups AS o (website_id, bucket_secs, bucket_start, region,
                              rounds_up, rounds_down, rounds_unknown, ticks_up, ticks_down,
                              latency_counts, latency_sum_ms, latency_min_ms, latency_max_ms)
    SELECT website_id, secs, bucket_start, '', up, down, unknown, 0, 0, '{}', 0, NULL, NULL
      FROM decided
    UNION ALL
    SELECT website_id, secs, bucket_start, region, 0, 0, 0, up, down, hist, lsum, lmin, lmax
      FROM seen
    ON CONFLICT (website_id, bucket_secs, region, bucket_start) DO UPDATE SET
        rounds_up = o.rounds_up + EXCLUDED.rounds_up,
        rounds_down = o.rounds_down + EXCLUDED.rounds_down,
        rounds_unknown = o.rounds_unknown + EXCLUDED.rounds_unknown,
        ticks_up = o.ticks_up + EXCLUDED.ticks_up,
        ticks_down = o.ticks_down + EXCLUDED.ticks_down,
        latency_counts = rollup_add(o.latency_counts, EXCLUDED.latency_counts),
        latency_sum_ms = o.latency_sum_ms + EXCLUDED.latency_sum_ms,
        latency_min_ms = LEAST(o.latency_min_ms, EXCLUDED.latency_min_ms),
        latency_max_ms = GREATEST(o.latency_max_ms, EXCLUDED.latency_max_ms)
    RETURNING 1
)
SELECT (SELECT count(*) FROM marked) AS rounds, (SELECT count(*) FROM added) AS rows";

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(latencies: &[i32]) -> Histogram {
        let mut counts = vec![0i64; LATENCY_BOUNDS_MS.len() + 1];
        for &l in latencies {
            counts[LATENCY_BOUNDS_MS.partition_point(|b| *b <= l)] += 1;
        }
        Histogram {
            counts,
            min_ms: *latencies.iter().min().unwrap_or(&0),
            max_ms: *latencies.iter().max().unwrap_or(&0),
        }
    }

    #[test]
    fn bounds_rise_and_no_bucket_above_10_ms_is_wider_than_a_fifth() {
        for w in LATENCY_BOUNDS_MS.windows(2) {
            assert!(w[0] < w[1], "{w:?}");
            if w[0] >= 10 {
                assert!(w[1] * 5 <= w[0] * 6, "{w:?}");
            }
        }
    }

    #[test]
    fn one_value_or_values_in_one_narrow_bucket_come_back_exactly() {
        let h = hist(&[100, 100, 100, 100]);
        assert_eq!(h.quantile(0.5), Some(100.0));
        assert_eq!(h.quantile(0.99), Some(100.0));
        let h = hist(&[3, 5, 5, 7]);
        assert_eq!(h.quantile(0.5), Some(5.0));
        assert_eq!(h.quantile(0.0), Some(3.0));
        assert_eq!(h.quantile(1.0), Some(7.0));
        assert_eq!(hist(&[]).quantile(0.5), None);
        // Beyond the last bound: the greatest latency seen bounds it.
        assert_eq!(hist(&[150_000]).quantile(0.5), Some(150_000.0));
    }

    #[test]
    fn estimates_stay_within_their_bucket() {
        // 1..=1000 ms: the exact median is 500.5, in [500, 600).
        let all: Vec<i32> = (1..=1000).collect();
        let h = hist(&all);
        let p50 = h.quantile(0.5).unwrap();
        assert!((500.0..=599.0).contains(&p50), "{p50}");
        assert!((p50 - 500.5).abs() <= 99.0);
        let p99 = h.quantile(0.99).unwrap();
        assert!((900.0..=999.0).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), Some(1000.0));
    }

    #[test]
    fn windows_pick_their_rollups() {
        assert_eq!(granularity(3_600), (300, 3_600));
        assert_eq!(granularity(86_400), (300, 3_600));
        assert_eq!(granularity(7 * 86_400), (3_600, 86_400));
        assert_eq!(granularity(30 * 86_400), (3_600, 86_400));
        assert_eq!(granularity(90 * 86_400), (86_400, 86_400));
    }
}
