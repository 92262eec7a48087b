-- Retention: raw ticks are kept a set number of days and dropped a
-- partition at a time; rounds are deleted in small batches once they are
-- closed, settled (where payouts are in use) and rolled up. The statements
-- are `Store::drop_old_tick_partitions` and `Store::delete_old_rounds`
-- (shared/store/src/retention.rs); see docs/ARCHITECTURE.md, "Retention".
--
-- Ticks move from monthly partitions and a DEFAULT partition to daily
-- partitions and no default:
-- * A default partition forbids `DETACH PARTITION ... CONCURRENTLY`, and
--   adding any partition must scan it. It is removed here, its rows moved
--   into daily partitions made for them. From now on a tick whose time has
--   no partition is refused (SQLSTATE 23514, "no partition of relation
--   ... found for row"): the store reports that as its own error
--   (`StoreError::NoTickPartition`, transient: making the partition mends
--   it), never as a fault of the rows.
-- * Monthly partitions that hold rows stay until retention drops them.
--   Empty ones that reach past the start of today (made ahead by the old
--   `ensure_tick_partitions`) are cut back to end there, or dropped, so
--   daily partitions start today.
-- * Partitions are made by attaching a new empty table: ATTACH takes SHARE
--   UPDATE EXCLUSIVE on `ticks`, so it neither waits for readers nor holds
--   up the tick writers (CREATE TABLE ... PARTITION OF would take ACCESS
--   EXCLUSIVE, queued behind any long read, with every writer queued
--   behind it).
--
-- All partition arithmetic is in UTC (a day is a UTC day).

SET LOCAL TimeZone = 'UTC';
-- Nothing writes ticks while the default partition leaves. A long read of
-- `ticks` would make this lock wait, and every tick writer queue behind
-- it: give up after 10 s instead (the hub's start fails and is retried).
SET LOCAL lock_timeout = '10s';
LOCK TABLE ticks IN ACCESS EXCLUSIVE MODE;

-- Every partition of `ticks` with its bounds, read from the catalog (the
-- bounds of a default partition are NULL). `detach_pending`: a `DETACH
-- ... CONCURRENTLY` was interrupted after its first transaction; only
-- `DETACH ... FINALIZE` completes it.
CREATE VIEW tick_partitions AS
SELECT c.oid::regclass AS part,
       c.relname::text AS name,
       CASE WHEN b[1] = 'MINVALUE' THEN '-infinity'::timestamptz
            ELSE btrim(b[1], '''')::timestamptz END AS lower_bound,
       CASE WHEN b[2] = 'MAXVALUE' THEN 'infinity'::timestamptz
            ELSE btrim(b[2], '''')::timestamptz END AS upper_bound,
       i.inhdetachpending AS detach_pending
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
  LEFT JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                 '^FOR VALUES FROM \((.*)\) TO \((.*)\)$') AS b ON true
 WHERE i.inhparent = 'ticks'::regclass;

-- Makes partition `part` of ticks for [lo, hi) unless a partition already
-- overlaps that range. Returns 1 if it made it.
CREATE FUNCTION create_tick_partition(lo timestamptz, hi timestamptz, part text)
RETURNS integer LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM tick_partitions WHERE lower_bound < hi AND upper_bound > lo) THEN
        RETURN 0;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE ticks INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format('ALTER TABLE ticks ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   part, lo, hi);
    RETURN 1;
END;
$$;

-- Makes the daily partitions `ticks_YYYY_MM_DD` for the UTC days from
-- `from_ts`'s to `to_ts`'s that no partition covers yet; returns how many
-- it made. Callers serialise on an advisory lock. Its lock_timeout bounds
-- the wait for SHARE UPDATE EXCLUSIVE on `ticks` (held only by DDL,
-- ANALYZE and a detach's first step, all short); the caller retries.
CREATE FUNCTION create_daily_tick_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql SET TimeZone = 'UTC' SET lock_timeout = '5s' AS $$
DECLARE
    d       timestamptz := date_trunc('day', from_ts);
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ensure_tick_partitions'));
    WHILE d <= to_ts LOOP
        created := created + create_tick_partition(d, d + interval '1 day',
                                                   'ticks_' || to_char(d, 'YYYY_MM_DD'));
        d := d + interval '1 day';
    END LOOP;
    RETURN created;
END;
$$;

-- The daily partitions from today to `days_ahead` days ahead. Hubs call it
-- at start and hourly (`Store::ensure_partitions`).
CREATE FUNCTION ensure_daily_tick_partitions(days_ahead integer)
RETURNS integer LANGUAGE sql AS $$
    SELECT create_daily_tick_partitions(now(), now() + make_interval(hours => 24 * greatest(days_ahead, 0)))
$$;

-- The monthly version, for hubs built before this migration (during a
-- rolling upgrade): a monthly partition would overlap the daily ones, so
-- it makes a week of daily partitions whatever it is asked.
CREATE OR REPLACE FUNCTION ensure_tick_partitions(from_ts timestamptz, months integer)
RETURNS integer LANGUAGE sql AS $$
    SELECT ensure_daily_tick_partitions(7)
$$;

DO $$
DECLARE
    today    timestamptz := date_trunc('day', now());
    p        record;
    d        timestamptz;
    has_rows boolean;
BEGIN
    IF EXISTS (SELECT 1 FROM tick_partitions WHERE name = 'ticks_default' AND lower_bound IS NULL) THEN
        ALTER TABLE ticks DETACH PARTITION ticks_default;
    END IF;
    -- Empty partitions reaching past today: cut back to [lower, today).
    FOR p IN SELECT * FROM tick_partitions WHERE upper_bound > today ORDER BY lower_bound LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', p.part) INTO has_rows;
        CONTINUE WHEN has_rows;
        EXECUTE format('DROP TABLE %s', p.part);
        IF p.lower_bound < today THEN
            PERFORM create_tick_partition(p.lower_bound, today, p.name);
        END IF;
    END LOOP;
    PERFORM ensure_daily_tick_partitions(7);
    IF to_regclass('ticks_default') IS NOT NULL THEN
        FOR d IN SELECT DISTINCT date_trunc('day', scheduled_at) FROM ticks_default LOOP
            PERFORM create_daily_tick_partitions(d, d);
        END LOOP;
        INSERT INTO ticks SELECT * FROM ticks_default;
        DROP TABLE ticks_default;
    END IF;
END;
$$;

-- Retention finds old rounds by their scheduled time (the other indexes
-- on it lead with the website). Built in the transaction, as the indexes
-- of 20261201000004 are.
CREATE INDEX rounds_scheduled ON rounds (scheduled_at);
