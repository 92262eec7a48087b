-- A result's probation is fixed when it arrives (docs/ARCHITECTURE.md,
-- "Validator trust"). Before, `tick_rewards` read the validator's row when
-- the round was settled: a key whose probation ended while some of its
-- probation-era rounds were closed but not yet settled was paid for them,
-- against "probation work is never paid". Each tick now records whether
-- its validator was on probation when the tick was stored (the tick
-- writers' insert reads the validator's row), and settlement and the close
-- read that. Ticks stored before this column (NULL) are judged by the
-- validator's row, as before.
ALTER TABLE ticks ADD COLUMN on_probation boolean;

-- 20261202000004_trust.sql's function; what changed is only where
-- `probation` comes from.
CREATE OR REPLACE FUNCTION tick_rewards(round_ids bigint[])
RETURNS TABLE (validator_id bigint, round_id bigint, earned bigint, agrees boolean,
               disagrees boolean, backed boolean, challenge smallint)
LANGUAGE sql STABLE AS $$
    WITH t AS (
        SELECT t.validator_id, r.id AS round_id, r.status AS decided, t.status,
               -- Regions are [a-z0-9-]: a result whose validator changed its
               -- region since is a group of its own.
               CASE WHEN v.region_since <= t.received_at THEN v.region
                    ELSE 'moved ' || t.task_id::text END AS region,
               -- On probation when the result arrived (NULL: a tick stored
               -- before this column, judged by the validator's row as before).
               COALESCE(t.on_probation, v.probation) AS probation,
               NOT COALESCE(t.on_probation, v.probation) AND NOT v.probation
                   AND v.trust >= 0.5 AS vouches,
               t.evidence_sha256 AS digest,
               CASE WHEN COALESCE(t.on_probation, v.probation) THEN 0
                    WHEN EXISTS (SELECT 1 FROM UNNEST(r.replaced_tasks, r.replaced_at_ms)
                                            AS x(tid, at)
                                  WHERE x.tid = t.task_id
                                    AND t.received_at > to_timestamp(x.at / 1000.0))
                    THEN 0 ELSE t.reward_lamports END AS reward
          FROM rounds r
          JOIN ticks t
            ON t.round_id = r.id AND t.website_id = r.website_id
           AND t.scheduled_at = r.scheduled_at
          -- A tick whose validator row was forgotten (cleanup raced its
          -- first tick) earns nothing rather than fail the ledger's foreign
          -- key, and with it every validator's settlement.
          JOIN validators v ON v.id = t.validator_id
         WHERE r.id = ANY (round_ids) AND r.status <> 'open'
    ), g AS (
        SELECT round_id, region, count(*) AS n, count(*) FILTER (WHERE status = 'up') AS ups
          FROM t WHERE NOT probation GROUP BY round_id, region
    ), ref AS (
        SELECT round_id, (array_agg(digest))[1] AS digest
          FROM t WHERE vouches AND status = 'up' AND digest IS NOT NULL
         GROUP BY round_id
        HAVING count(*) >= 2 AND count(DISTINCT digest) = 1
    ), judged AS (
        SELECT t.*, g.n, g.ups,
               CASE WHEN ref.digest IS NULL OR t.digest IS NULL OR t.status <> 'up' THEN 0
                    WHEN t.digest = ref.digest THEN 1 ELSE -1 END::smallint AS challenge
          FROM t
          LEFT JOIN g ON g.round_id = t.round_id AND g.region = t.region
          LEFT JOIN ref ON ref.round_id = t.round_id
    )
    SELECT validator_id, round_id,
           CASE WHEN challenge < 0 THEN 0 WHEN backed THEN reward ELSE 0 END,
           decided IN ('up', 'down') AND status = decided,
           decided IN ('up', 'down') AND status <> decided,
           backed,
           challenge
      FROM (SELECT j.*,
                   (decided IN ('up', 'down') AND status = decided)
                   OR COALESCE(n >= 2 AND CASE WHEN status = 'up' THEN 2 * ups > n
                                               ELSE 2 * (n - ups) > n END, false) AS backed
              FROM judged j) b
$$;
