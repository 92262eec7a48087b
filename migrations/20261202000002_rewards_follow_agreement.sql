-- Rewards follow agreement (docs/ARCHITECTURE.md, "Payouts" and "Validator
-- trust"). One definition, used by settlement (`SETTLE_SQL`) and by the
-- reconciliation after a restore (`credited_again`), so the two can never
-- disagree about what a result earns.
--
-- A result of a closed round earns its `reward_lamports` when
--   1. its task was not replaced before the result was received, and
--   2. it agrees with the round's decision (`up` or `down`), or its region
--      (the validator's region, claimed since before the result) has at
--      least two results in the round and
--      it agrees with their strict majority, so an honest region that sees a
--      regional outage is not punished for disagreeing with the rest.
-- A round closed `unknown` decides nothing: only rule 2's regional majority
-- pays there, so a round with a single result pays nothing (a lone lazy
-- answer earns nothing). `agrees` / `disagrees` compare with the round's
-- decision only (both false for `unknown`).
-- A result counts in its region's majority only if its validator has
-- claimed that region since before the result was received: regions are
-- what a hello says, so keys that move into one region after the fact
-- cannot form a majority for results they already sent (each such result
-- stands alone). Validators known before this migration count as settled
-- in their region.
ALTER TABLE validators ADD COLUMN region_since timestamptz NOT NULL DEFAULT '-infinity';

CREATE FUNCTION tick_rewards(round_ids bigint[])
RETURNS TABLE (validator_id bigint, round_id bigint, earned bigint, agrees boolean,
               disagrees boolean)
LANGUAGE sql STABLE AS $$
    WITH t AS (
        SELECT t.validator_id, r.id AS round_id, r.status AS decided, t.status,
               -- Regions are [a-z0-9-]: a result whose validator changed its
               -- region since is a group of its own.
               CASE WHEN v.region_since <= t.received_at THEN v.region
                    ELSE 'moved ' || t.task_id::text END AS region,
               CASE WHEN EXISTS (SELECT 1 FROM UNNEST(r.replaced_tasks, r.replaced_at_ms)
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
          FROM t GROUP BY round_id, region
    )
    SELECT t.validator_id, t.round_id,
           CASE WHEN (t.decided IN ('up', 'down') AND t.status = t.decided)
                  OR (g.n >= 2 AND CASE WHEN t.status = 'up' THEN 2 * g.ups > g.n
                                        ELSE 2 * (g.n - g.ups) > g.n END)
                THEN t.reward ELSE 0 END,
           t.decided IN ('up', 'down') AND t.status = t.decided,
           t.decided IN ('up', 'down') AND t.status <> t.decided
      FROM t JOIN g ON g.round_id = t.round_id AND g.region = t.region
$$;
