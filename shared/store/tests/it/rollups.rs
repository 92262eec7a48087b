//! Rollups: every closed round counted exactly once (late closes, repeated
//! and concurrent roll-ups, roll-ups while rounds close), reads from them
//! equal to counting the raw rows, latency percentiles within their
//! documented error, and retention by age.

use std::time::Duration;

use store::{
    OpenedRound, RoundId, Store, ValidatorId, WebsiteId, KEEP_1D, KEEP_1H, KEEP_5M,
    LATENCY_BOUNDS_MS,
};

use crate::{db, open_round, past_ms, store_ticks, tick, validator, website};

/// Slot 0's time, fixed once (see incidents.rs): three hours ago, so the
/// rounds below cross several 5-minute and hourly boundaries.
fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(past_ms)
}

/// Three validators in three regions and a second one in eu-west.
async fn validators(store: &Store) -> [ValidatorId; 4] {
    [
        validator(store, "val-eu", "eu-west").await,
        validator(store, "val-eu-2", "eu-west").await,
        validator(store, "val-us", "us-east").await,
        validator(store, "val-ap", "ap-south").await,
    ]
}

/// A latency that varies with `i` and the validator, 5 ms to about 2 s.
fn latency(i: i64, v: usize) -> i32 {
    let x = (i * 7_919 + v as i64 * 104_729) % 1_000;
    (5 + x * x / 500) as i32
}

/// Opens the round of `site` at `at_ms` and stores a result from each of
/// `vals` (up unless `pattern` says otherwise), leaving it open.
async fn staffed(
    store: &Store,
    site: WebsiteId,
    at_ms: i64,
    i: i64,
    vals: &[ValidatorId],
) -> OpenedRound {
    let r = open_round(store, site, at_ms).await;
    let ticks: Vec<_> = vals
        .iter()
        .enumerate()
        .map(|(k, v)| {
            // Mostly up; every 5th round down everywhere, every 7th split.
            let up = match (i % 5, i % 7) {
                (0, _) => false,
                (_, 0) => k % 2 == 0,
                _ => true,
            };
            let mut t = tick(&r, *v, up);
            t.latency_ms = latency(i, k);
            t
        })
        .collect();
    store_ticks(store, &ticks).await;
    r
}

async fn close(store: &Store, ids: &[RoundId]) {
    store.close_rounds(ids, "h1", &[]).await.unwrap();
}

/// Rolls up until nothing is left, `limit` rounds at a time; returns the
/// rounds rolled up.
async fn roll_up_all(store: &Store, limit: i64) -> i64 {
    let mut total = 0;
    loop {
        let n = store.roll_up(Duration::ZERO, limit).await.unwrap();
        total += n;
        if n == 0 {
            return total;
        }
    }
}

/// Rows of `rollups` that differ from counting the rolled-up rounds and
/// their results directly (both ways), histograms bucketed here with the
/// Rust bounds. 0 means the rollups are exactly the direct count.
async fn mismatches(store: &Store) -> i64 {
    sqlx::query_scalar(
        "WITH g (secs) AS (VALUES (300), (3600), (86400)),
         d AS (
             SELECT r.website_id, g.secs, date_bin(make_interval(secs => g.secs), r.scheduled_at,
                                                   'epoch') AS b, ''::text AS region,
                    count(*) FILTER (WHERE r.status = 'up')::int4 AS ru,
                    count(*) FILTER (WHERE r.status = 'down')::int4 AS rd,
                    count(*) FILTER (WHERE r.status = 'unknown')::int4 AS rk,
                    0 AS tu, 0 AS td, 0::int8 AS ls, NULL::int4 AS mn, NULL::int4 AS mx
               FROM rounds r CROSS JOIN g WHERE r.rolled_up_at IS NOT NULL GROUP BY 1, 2, 3
         ), t AS (
             SELECT r.website_id, g.secs, date_bin(make_interval(secs => g.secs), r.scheduled_at,
                                                   'epoch') AS b, v.region,
                    0 AS ru, 0 AS rd, 0 AS rk,
                    count(*) FILTER (WHERE t.status = 'up')::int4 AS tu,
                    count(*) FILTER (WHERE t.status = 'down')::int4 AS td,
                    COALESCE(sum(t.latency_ms) FILTER (WHERE t.status = 'up'), 0)::int8 AS ls,
                    min(t.latency_ms) FILTER (WHERE t.status = 'up') AS mn,
                    max(t.latency_ms) FILTER (WHERE t.status = 'up') AS mx
               FROM rounds r
               JOIN ticks t ON t.round_id = r.id AND t.scheduled_at = r.scheduled_at
               JOIN validators v ON v.id = t.validator_id
              CROSS JOIN g
              WHERE r.rolled_up_at IS NOT NULL GROUP BY 1, 2, 3, 4
         ), raw AS (SELECT * FROM d UNION ALL SELECT * FROM t),
         rolled AS (
             SELECT website_id, bucket_secs, bucket_start, region, rounds_up, rounds_down,
                    rounds_unknown, ticks_up, ticks_down, latency_sum_ms, latency_min_ms,
                    latency_max_ms FROM rollups
         ), raw_h AS (
             SELECT r.website_id, g.secs, date_bin(make_interval(secs => g.secs), r.scheduled_at,
                                                   'epoch') AS b, v.region,
                    width_bucket(t.latency_ms, $1::int4[]) + 1 AS i, count(*)::int4 AS n
               FROM rounds r
               JOIN ticks t ON t.round_id = r.id AND t.scheduled_at = r.scheduled_at
               JOIN validators v ON v.id = t.validator_id
              CROSS JOIN g
              WHERE r.rolled_up_at IS NOT NULL AND t.status = 'up' GROUP BY 1, 2, 3, 4, 5
         ), rolled_h AS (
             SELECT website_id, bucket_secs, bucket_start, region, u.i::int4, u.n
               FROM rollups, unnest(latency_counts) WITH ORDINALITY AS u(n, i) WHERE u.n <> 0
         )
         SELECT (SELECT count(*) FROM (SELECT * FROM raw EXCEPT ALL SELECT * FROM rolled) a)
              + (SELECT count(*) FROM (SELECT * FROM rolled EXCEPT ALL SELECT * FROM raw) b)
              + (SELECT count(*) FROM (SELECT * FROM raw_h EXCEPT ALL SELECT * FROM rolled_h) c)
              + (SELECT count(*) FROM (SELECT * FROM rolled_h EXCEPT ALL SELECT * FROM raw_h) e)",
    )
    .bind(&LATENCY_BOUNDS_MS[..])
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Rounds counted in the decisions' daily rows.
async fn rounds_in_rollups(store: &Store) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(rounds_up + rounds_down + rounds_unknown), 0)::int8
           FROM rollups WHERE bucket_secs = 86400 AND region = ''",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn the_histogram_bounds_in_sql_are_the_rust_bounds() {
    let db = db().await;
    let sql: Vec<i32> = sqlx::query_scalar("SELECT rollup_latency_bounds()")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(sql, LATENCY_BOUNDS_MS);
    assert!(KEEP_1D >= Duration::from_secs(400 * 86_400));
    assert!(KEEP_5M < KEEP_1H && KEEP_1H < KEEP_1D);
}

#[tokio::test]
async fn rollups_match_a_direct_count_and_a_second_pass_counts_nothing() {
    let db = db().await;
    let s = &db.store;
    let vals = validators(s).await;
    let mut closed = 0;
    for n in 0..2 {
        let site = website(s, n).await.id;
        // Every 97 s for about 1.6 hours: several 5-minute and hourly buckets.
        let mut ids = Vec::new();
        for i in 0..60 {
            let r = staffed(s, site, t0() + i * 97_000, i, &vals[..4 - n as usize]).await;
            ids.push(r.round_id);
        }
        // A round without results: `unknown`.
        ids.push(open_round(s, site, t0() - 3_600_000).await.round_id);
        close(s, &ids).await;
        closed += ids.len() as i64;
    }
    // A round still open is not rolled up.
    let open = website(s, 9).await.id;
    open_round(s, open, t0()).await;

    assert_eq!(roll_up_all(s, 7).await, closed);
    assert_eq!(mismatches(s).await, 0);
    assert_eq!(rounds_in_rollups(s).await, closed);
    let statuses: (i64, i64, i64) = sqlx::query_as(
        "SELECT sum(rounds_up)::int8, sum(rounds_down)::int8, sum(rounds_unknown)::int8
           FROM rollups WHERE bucket_secs = 300 AND region = ''",
    )
    .fetch_one(s.pool())
    .await
    .unwrap();
    assert!(
        statuses.0 > 0 && statuses.1 > 0 && statuses.2 > 0,
        "{statuses:?}"
    );

    // Again: nothing is counted twice.
    let before: Vec<(i64, i32, String, i64, i32, Vec<i32>)> = sqlx::query_as(
        "SELECT website_id, bucket_secs, region, (extract(epoch FROM bucket_start))::int8,
                rounds_up + rounds_down + rounds_unknown + ticks_up + ticks_down, latency_counts
           FROM rollups ORDER BY 1, 2, 3, 4",
    )
    .fetch_all(s.pool())
    .await
    .unwrap();
    assert_eq!(s.roll_up(Duration::ZERO, 1_000).await.unwrap(), 0);
    let after: Vec<(i64, i32, String, i64, i32, Vec<i32>)> = sqlx::query_as(
        "SELECT website_id, bucket_secs, region, (extract(epoch FROM bucket_start))::int8,
                rounds_up + rounds_down + rounds_unknown + ticks_up + ticks_down, latency_counts
           FROM rollups ORDER BY 1, 2, 3, 4",
    )
    .fetch_all(s.pool())
    .await
    .unwrap();
    assert_eq!(before, after);
}

#[tokio::test]
async fn a_round_closed_late_is_counted_once_and_at_once() {
    let db = db().await;
    let s = &db.store;
    let vals = validators(s).await;
    let site = website(s, 1).await.id;
    let late = staffed(s, site, t0(), 1, &vals).await;
    let mut ids = Vec::new();
    for i in 1..6 {
        ids.push(
            staffed(s, site, t0() + i * 60_000, i + 1, &vals)
                .await
                .round_id,
        );
    }
    close(s, &ids).await;
    assert_eq!(roll_up_all(s, 100).await, 5);
    let count = |s: Store| async move {
        s.uptime_counts(site, [86_400, 7 * 86_400, 30 * 86_400, 90 * 86_400])
            .await
            .unwrap()[0]
    };
    let c = count(s.clone()).await;
    assert_eq!(c.decided + c.unknown, 5);

    // The slot before them closes now (an owner's sweep, out of order):
    // read at once from the rounds table, then rolled up, counted once.
    close(s, &[late.round_id]).await;
    let c = count(s.clone()).await;
    assert_eq!(c.decided + c.unknown, 6, "counted from its close on");
    assert_eq!(roll_up_all(s, 100).await, 1);
    assert_eq!(count(s.clone()).await, c, "same count from the rollups");
    assert_eq!(mismatches(s).await, 0);
    assert_eq!(rounds_in_rollups(s).await, 6);

    // A result stored after its round was rolled up is late: kept, not in
    // the rollups.
    let ap2 = validator(s, "val-ap-2", "ap-south").await;
    store_ticks(s, &[tick(&late, ap2, true)]).await;
    let ap_ticks: i64 = sqlx::query_scalar(
        "SELECT sum(ticks_up + ticks_down)::int8 FROM rollups
          WHERE bucket_secs = 86400 AND region = 'ap-south'",
    )
    .fetch_one(s.pool())
    .await
    .unwrap();
    assert_eq!(
        ap_ticks, 6,
        "one ap-south result per round, not the late one"
    );
}

#[tokio::test]
async fn grace_holds_back_recent_closes() {
    let db = db().await;
    let s = &db.store;
    let vals = validators(s).await;
    let site = website(s, 1).await.id;
    let r = staffed(s, site, t0(), 1, &vals).await;
    close(s, &[r.round_id]).await;
    assert_eq!(s.roll_up(Duration::from_secs(180), 100).await.unwrap(), 0);
    sqlx::query("UPDATE rounds SET closed_at = now() - interval '181 seconds'")
        .execute(s.pool())
        .await
        .unwrap();
    assert_eq!(s.roll_up(Duration::from_secs(180), 100).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_count_each_round_once() {
    let db = db().await;
    let s = &db.store;
    let vals = validators(s).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let site = website(s, n).await.id;
        for i in 0..50 {
            ids.push(
                staffed(s, site, t0() + i * 61_000, i, &vals[..2])
                    .await
                    .round_id,
            );
        }
    }
    close(s, &ids).await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = 0;
            loop {
                mine += store.roll_up(Duration::ZERO, 5).await.unwrap();
                let left: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM rounds WHERE rolled_up_at IS NULL AND status <> 'open'",
                )
                .fetch_one(store.pool())
                .await
                .unwrap();
                if left == 0 {
                    return mine;
                }
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 200);
    assert_eq!(rounds_in_rollups(s).await, 200);
    assert_eq!(mismatches(s).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roll_up_runs_while_rounds_close() {
    let db = db().await;
    let s = &db.store;
    let vals = validators(s).await;
    let sites = [website(s, 1).await.id, website(s, 2).await.id];
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closer = {
        let store = s.clone();
        let done = done.clone();
        tokio::spawn(async move {
            for i in 0..80 {
                let site = sites[i as usize % 2];
                let r = staffed(&store, site, t0() + i * 45_000, i, &vals).await;
                store.close_rounds(&[r.round_id], "h1", &[]).await.unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut rollers = Vec::new();
    for _ in 0..2 {
        let store = s.clone();
        let done = done.clone();
        rollers.push(tokio::spawn(async move {
            let mut mine = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let n = store.roll_up(Duration::ZERO, 3).await.unwrap();
                mine += n;
                if finished && n == 0 {
                    return mine;
                }
            }
        }));
    }
    closer.await.unwrap();
    let mut total = 0;
    for t in rollers {
        total += t.await.unwrap();
    }
    // A caller that found the lock taken returned 0 and may have stopped
    // while the other still had rounds: finish them.
    total += roll_up_all(s, 100).await;
    assert_eq!(total, 80);
    assert_eq!(rounds_in_rollups(s).await, 80);
    assert_eq!(mismatches(s).await, 0);
}

/// Seeds `days` of closed rounds every 10 minutes for `site` (statuses in
/// a pattern, closed 10 s after their slot), without results.
async fn seed_history(store: &Store, site: WebsiteId, days: i64) {
    sqlx::query(
        "INSERT INTO rounds (website_id, slot, scheduled_at, deadline, hub_id, status,
                             closed_at, closed_by)
         SELECT $1, g, date_bin('10 minutes', now(), 'epoch') - make_interval(mins => 10 * g::int4)
                       + make_interval(secs => $1 % 7),
                date_bin('10 minutes', now(), 'epoch') - make_interval(mins => 10 * g::int4)
                       + interval '30 s',
                'h1',
                CASE WHEN (g + $1) % 13 = 0 THEN 'down' WHEN (g + $1) % 29 = 0 THEN 'unknown'
                     ELSE 'up' END,
                date_bin('10 minutes', now(), 'epoch') - make_interval(mins => 10 * g::int4)
                       + interval '10 s',
                'h1'
           FROM generate_series(1, $2 * 144) AS g",
    )
    .bind(site)
    .bind(days)
    .execute(store.pool())
    .await
    .unwrap();
}

/// Counts the rounds as the reads promise to: from the bucket boundary at
/// or before `now - window` (5 minutes for up to a day, else an hour up to
/// 30 days, else a day).
async fn raw_uptime(store: &Store, site: WebsiteId, window: i64) -> (i64, i64, i64) {
    let bucket = if window <= 86_400 {
        300
    } else if window <= 30 * 86_400 {
        3_600
    } else {
        86_400
    };
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'up'),
                count(*) FILTER (WHERE status IN ('up', 'down')),
                count(*) FILTER (WHERE status = 'unknown')
           FROM rounds
          WHERE website_id = $1 AND status <> 'open'
            AND scheduled_at >= date_bin(make_interval(secs => $3), now() - make_interval(secs => $2),
                                         'epoch')",
    )
    .bind(site)
    .bind(window as f64)
    .bind(bucket)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Checks `uptime_counts` of `a` and `uptime_24h_for_sites` of `b`, `none`
/// and `a` against [`raw_uptime`].
async fn check_uptime(s: &Store, a: WebsiteId, b: WebsiteId, none: WebsiteId) {
    let windows = [86_400, 7 * 86_400, 30 * 86_400, 90 * 86_400];
    // A bucket boundary passing between the read and the check would move
    // the window's start: retry then.
    for attempt in 0.. {
        let mut before = Vec::new();
        for w in windows {
            before.push(raw_uptime(s, a, w).await);
        }
        let got = s.uptime_counts(a, windows).await.unwrap();
        let list = s.uptime_24h_for_sites(&[b, none, a]).await.unwrap();
        let b_raw = raw_uptime(s, b, 86_400).await;
        let mut after = Vec::new();
        for w in windows {
            after.push(raw_uptime(s, a, w).await);
        }
        if before != after && attempt < 3 {
            continue;
        }
        let got: Vec<(i64, i64, i64)> = got.iter().map(|c| (c.up, c.decided, c.unknown)).collect();
        assert_eq!(got, before);
        assert!(before[3].1 > 12_000, "90 days of rounds: {:?}", before[3]);
        let ids: Vec<WebsiteId> = list.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [b, none, a], "in the order asked");
        let c = list[0].1;
        assert_eq!((c.up, c.decided, c.unknown), b_raw);
        assert_eq!(list[1].1, Default::default());
        let c = list[2].1;
        assert_eq!((c.up, c.decided, c.unknown), before[0]);
        return;
    }
}

#[tokio::test]
async fn uptime_from_rollups_equals_the_raw_count() {
    let db = db().await;
    let s = &db.store;
    let a = website(s, 1).await.id;
    let b = website(s, 2).await.id;
    let none = website(s, 3).await.id;
    seed_history(s, a, 95).await;
    seed_history(s, b, 3).await;
    // Nothing rolled up: every round is read from the rounds table.
    check_uptime(s, a, b, none).await;
    // Rounds older than 10 days rolled up: the long windows mix both.
    while s
        .roll_up(Duration::from_secs(10 * 86_400), 5_000)
        .await
        .unwrap()
        > 0
    {}
    check_uptime(s, a, b, none).await;
    // All but the last two hours.
    while s.roll_up(Duration::from_secs(7_200), 5_000).await.unwrap() > 0 {}
    let unrolled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rounds WHERE rolled_up_at IS NULL")
            .fetch_one(s.pool())
            .await
            .unwrap();
    assert!(unrolled >= 20, "{unrolled}");
    check_uptime(s, a, b, none).await;
}

/// `percentile_cont` of sorted values.
fn exact(sorted: &[i32], p: f64) -> f64 {
    let h = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (sorted[h.floor() as usize], sorted[h.ceil() as usize]);
    f64::from(lo) + (h - h.floor()) * f64::from(hi - lo)
}

/// `[lower, upper)` of the histogram bucket holding `ms`.
fn bucket(ms: i32) -> (i32, i32) {
    let i = LATENCY_BOUNDS_MS.partition_point(|b| *b <= ms);
    let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] };
    (lower, LATENCY_BOUNDS_MS.get(i).copied().unwrap_or(i32::MAX))
}

#[tokio::test]
async fn latency_percentiles_are_within_a_bucket_of_the_exact_ones() {
    let db = db().await;
    let s = &db.store;
    let vals = validators(s).await;
    let site = website(s, 1).await.id;
    // A round every 2 minutes for the last 20 hours; the last ones are
    // left to the raw read.
    let now = protocol::now_ms() / 1000 * 1000;
    let mut ids = Vec::new();
    for i in 1..=600 {
        ids.push(staffed(s, site, now - i * 120_000, i, &vals).await.round_id);
    }
    close(s, &ids[20..]).await;
    roll_up_all(s, 1_000).await;
    close(s, &ids[..20]).await;

    for (window, bucket_secs) in [(3_600, 300), (86_400, 300), (7 * 86_400, 3_600)] {
        let got = s.latency_by_region(site, window).await.unwrap();
        let rows: Vec<(String, Vec<i32>)> = sqlx::query_as(
            "SELECT v.region, array_agg(t.latency_ms ORDER BY t.latency_ms)
               FROM ticks t JOIN validators v ON v.id = t.validator_id
              WHERE t.website_id = $1 AND t.status = 'up'
                AND t.scheduled_at >= date_bin(make_interval(secs => $3),
                                               now() - make_interval(secs => $2), 'epoch')
              GROUP BY 1 ORDER BY 1",
        )
        .bind(site)
        .bind(window as f64)
        .bind(bucket_secs)
        .fetch_all(s.pool())
        .await
        .unwrap();
        let regions: Vec<&str> = got.iter().map(|r| r.region.as_str()).collect();
        assert_eq!(regions, ["ap-south", "eu-west", "us-east"]);
        for (r, (region, sorted)) in got.iter().zip(&rows) {
            assert_eq!(&r.region, region);
            assert_eq!(r.results, sorted.len() as i64, "{region} {window}");
            for (p, est) in [(0.5, r.p50_ms), (0.95, r.p95_ms), (0.99, r.p99_ms)] {
                let v = exact(sorted, p);
                let h = p * (sorted.len() - 1) as f64;
                let below = bucket(sorted[h.floor() as usize]);
                let above = bucket(sorted[h.ceil() as usize]);
                // The documented bound: within the bucket of the result
                // below the rank (integers: up to upper - 1), or between it
                // and the next result's bucket when they differ.
                let bound = f64::from(above.1 - 1 - below.0);
                assert!(
                    (est - v).abs() <= bound,
                    "{region} {window}s p{p}: {est} vs exact {v} (bound {bound})"
                );
                if below == above {
                    assert!(
                        (est - v).abs() <= (0.2 * v).max(1.0),
                        "{region} {window}s p{p}: {est} vs exact {v}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn prune_removes_only_what_is_older_than_each_keep() {
    let db = db().await;
    let s = &db.store;
    // For each size, a row per bucket back to 30 buckets past its keep.
    let keeps = [(300, 3_600), (3_600, 86_400), (86_400, 10 * 86_400)];
    for (secs, keep) in keeps {
        sqlx::query(
            "INSERT INTO rollups (website_id, bucket_secs, bucket_start, region, rounds_up)
             SELECT 1, $1, date_bin(make_interval(secs => $1), now(), 'epoch')
                           - make_interval(secs => $1 * g), r, 1
               FROM generate_series(0, $2 / $1 + 30) AS g, unnest(ARRAY['', 'eu-west']) AS r",
        )
        .bind(secs)
        .bind(keep)
        .execute(s.pool())
        .await
        .unwrap();
    }
    let expired = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM rollups r
              WHERE r.bucket_start + make_interval(secs => r.bucket_secs)
                    <= now() - make_interval(secs => CASE r.bucket_secs WHEN 300 THEN 3600
                                                          WHEN 3600 THEN 86400 ELSE 864000 END)",
        )
        .fetch_one(s.pool())
        .await
        .unwrap()
    };
    let old = expired().await;
    assert!(old >= 3 * 2 * 29, "{old}");
    let mut deleted = 0;
    loop {
        let n = s
            .prune_rollups(
                Duration::from_secs(3_600),
                Duration::from_secs(86_400),
                Duration::from_secs(10 * 86_400),
                10,
            )
            .await
            .unwrap();
        assert!(n <= 30, "at most the limit of each size");
        deleted += n as i64;
        if n == 0 {
            break;
        }
    }
    // (A bucket boundary passing meanwhile can make one more row old.)
    assert!(deleted >= old && deleted <= old + 6, "{deleted} of {old}");
    assert_eq!(expired().await, 0, "everything past its keep is gone");
    // Rows only grow older: those young now were young when pruned, and
    // all of them are still here.
    let (left, young): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE r.bucket_start + make_interval(secs => r.bucket_secs)
                    > now() - make_interval(secs => CASE r.bucket_secs WHEN 300 THEN 3600
                                                        WHEN 3600 THEN 86400 ELSE 864000 END))
           FROM rollups r",
    )
    .fetch_one(s.pool())
    .await
    .unwrap();
    assert_eq!(left, young);
    assert!(young >= 3 * 2 * 10, "{young}");
    // With the defaults, nothing here is old enough.
    assert_eq!(
        s.prune_rollups(KEEP_5M, KEEP_1H, KEEP_1D, 100)
            .await
            .unwrap(),
        0
    );
}
