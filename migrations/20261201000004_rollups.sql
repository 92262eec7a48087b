-- Rollups: per website, per 5 minutes, hour and day, the round decisions
-- and each region's results, so uptime and latency over long windows are
-- read from a few hundred rows instead of every round and result. Derived
-- data, written only by `Store::roll_up` (shared/store/src/rollups.rs). See
-- docs/ARCHITECTURE.md, "Rollups".
--
-- Buckets are aligned on the Unix epoch (`date_bin`, so a day is a UTC day)
-- and keyed by the round's `scheduled_at`, never a validator's clock.
--
-- Two kinds of row share the table:
-- * region '' (empty): the rounds decided in the bucket, by their quorum
--   status (`rounds_*`); its tick and latency columns stay zero/empty.
-- * region = a validator region: that region's results of the same rounds
--   (`ticks_*`) and the latency of its `up` results; its `rounds_*` stay 0.
--   A result's region is its validator's region when the round was rolled
--   up (the region declared at its latest hello).
--
-- Latency is a histogram over fixed, log-spaced buckets. `latency_counts[i]`
-- (1-based) counts `up` results with
--   rollup_latency_bounds()[i-1] <= latency_ms < rollup_latency_bounds()[i]
-- (`width_bucket` + 1; the first bucket is [0, 1), the last [120000, inf)).
-- The bounds are 1 ms apart up to 10 ms, then 10, 12, 14, 16, 18, 20, 23,
-- 26, 30, 35, 40, 45, 50, 60, 70, 80, 90 times each power of ten up to
-- 120 s: above 10 ms no bucket is wider than 20% of its lower bound. The
-- array is cut after its last non-zero entry (absent entries are zero), so
-- a row holds only as many as its slowest result needs. The same bounds
-- are `store::LATENCY_BOUNDS_MS` in Rust (a test compares them). Min and
-- max keep a percentile estimate inside what was seen.
--
-- When a round is counted: `rounds.rolled_up_at` is the watermark, per
-- round. `roll_up` takes closed rounds whose `closed_at` is older than its
-- grace (meant to be about 3 minutes; validators resend results they
-- hold for up to 120 s past the deadline), marks them and adds their
-- decisions and results in one statement, so a crash neither counts a
-- round twice nor loses it, and a round closed late (the owner's sweep,
-- out of slot order) is counted when it closes. A result stored after its
-- round was rolled up is late: it is kept and paid as any other, but it is
-- not in the rollups. A round's decision never changes after its close, so
-- `rounds_*` are exact; only `ticks_*` and latency can miss late results.
--
-- Reads add the site's closed rounds not rolled up yet (and their results)
-- from `rounds`, in the same statement, so a round counts from its close.

CREATE FUNCTION rollup_latency_bounds() RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '{1,2,3,4,5,6,7,8,9,
             10,12,14,16,18,20,23,26,30,35,40,45,50,60,70,80,90,
             100,120,140,160,180,200,230,260,300,350,400,450,500,600,700,800,900,
             1000,1200,1400,1600,1800,2000,2300,2600,3000,3500,4000,4500,5000,6000,7000,8000,9000,
             10000,12000,14000,16000,18000,20000,23000,26000,30000,35000,40000,45000,50000,
             60000,70000,80000,90000,100000,120000}'::integer[]
$$;

-- Histogram of bucket numbers (0-based, from `width_bucket`): counts per
-- bucket, cut after the last non-empty one; '{}' for none. (PL/pgSQL: its
-- arrays are updated in place, an order of magnitude cheaper here than a
-- set-based SQL function.)
CREATE FUNCTION rollup_histogram(buckets integer[]) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    top integer := -1;
    h   integer[];
    b   integer;
BEGIN
    FOREACH b IN ARRAY COALESCE(buckets, '{}') LOOP
        top := greatest(top, b);
    END LOOP;
    -- sized first: assigning into an empty array would set its lower bound
    h := array_fill(0, ARRAY[top + 1]);
    FOREACH b IN ARRAY COALESCE(buckets, '{}') LOOP
        h[b + 1] := h[b + 1] + 1;
    END LOOP;
    RETURN h;
END;
$$;

-- Element-wise sum of two histograms of any lengths (missing entries are 0).
CREATE FUNCTION rollup_add(a integer[], b integer[]) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    long  integer[] := COALESCE(a, '{}');
    short integer[] := COALESCE(b, '{}');
BEGIN
    IF cardinality(long) < cardinality(short) THEN
        long := short;
        short := COALESCE(a, '{}');
    END IF;
    FOR i IN 1 .. cardinality(short) LOOP
        long[i] := long[i] + short[i];
    END LOOP;
    RETURN long;
END;
$$;

-- Sums histograms (reads merge a window's rows with it).
CREATE AGGREGATE rollup_sum(integer[]) (SFUNC = rollup_add, STYPE = integer[], INITCOND = '{}');

CREATE TABLE rollups (
    -- no foreign key: like ticks, derived rows must never make a write fail
    website_id     bigint      NOT NULL,
    bucket_secs    integer     NOT NULL CHECK (bucket_secs IN (300, 3600, 86400)),
    bucket_start   timestamptz NOT NULL,
    -- '' for the round decisions, else a validator region
    region         text        NOT NULL,
    rounds_up      integer     NOT NULL DEFAULT 0,
    rounds_down    integer     NOT NULL DEFAULT 0,
    rounds_unknown integer     NOT NULL DEFAULT 0,
    ticks_up       integer     NOT NULL DEFAULT 0,
    ticks_down     integer     NOT NULL DEFAULT 0,
    latency_counts integer[]   NOT NULL DEFAULT '{}',
    latency_sum_ms bigint      NOT NULL DEFAULT 0,
    latency_min_ms integer,
    latency_max_ms integer,
    -- Uptime reads only the '' rows' counts: with them in the key's index
    -- they are index-only scans. A region row's update leaves them as they
    -- are, so it can still be a HOT update (hence the fill factor).
    PRIMARY KEY (website_id, bucket_secs, region, bucket_start)
        INCLUDE (rounds_up, rounds_down, rounds_unknown)
) WITH (fillfactor = 80);
-- retention (`Store::prune_rollups`) finds old rows by age
CREATE INDEX rollups_age ON rollups (bucket_secs, bucket_start);

-- The watermark. Rounds that exist now are not rolled up yet: `roll_up`
-- takes them in `closed_at` order, a batch at a time, so history is
-- backfilled (rows older than the retention are pruned afterwards).
ALTER TABLE rounds ADD COLUMN rolled_up_at timestamptz;
-- what `roll_up` picks next
-- (Both indexes are built in this migration's transaction, which holds
-- round writers for the build: on a large `rounds` table, upgrade at a
-- quiet time. `CREATE INDEX CONCURRENTLY` in a migration of its own would
-- wait for every transaction of the database, hubs waiting for the
-- migration lock included: a deadlock when several hubs start at once.)
CREATE INDEX rounds_not_rolled_up ON rounds (closed_at)
    WHERE rolled_up_at IS NULL AND status <> 'open';
-- what a read adds to the rollups: a site's closed rounds not rolled up yet
CREATE INDEX rounds_site_not_rolled_up ON rounds (website_id, scheduled_at) INCLUDE (status)
    WHERE rolled_up_at IS NULL AND status <> 'open';
