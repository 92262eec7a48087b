-- Trust and probation (docs/ARCHITECTURE.md, "Validator trust").
--
-- A new key starts on probation: its results are stored and compared, but
-- they do not count toward a round's decision and earn nothing (probation
-- work is never paid, so a fresh key costs its operator real checks before
-- it earns). It leaves probation after `HUB_PROBATION_RESULTS` results that
-- agreed with a decided round and `HUB_PROBATION_CHALLENGES` shadow checks
-- passed (see tick_rewards below), counted by settlement. Keys on the
-- operator's `HUB_TRUSTED_VALIDATORS` list are never on probation, so a new
-- network (and the local stack) has quorum at once.
--
-- `trust` is an exponentially weighted average (weight 0.05 per result) of
-- results backed (agreeing with the round's decision, or with the majority
-- of two or more results of their region: an honest region seeing a
-- regional outage keeps its trust) and shadow checks passed, updated by
-- settlement; 0.5 for a new key. Keys below 0.5 decide nothing, and hubs pick
-- them only for shadow places or when nobody else has room.
ALTER TABLE validators ADD COLUMN trusted boolean NOT NULL DEFAULT false,
                       ADD COLUMN probation boolean NOT NULL DEFAULT true,
                       ADD COLUMN probation_agreed integer NOT NULL DEFAULT 0,
                       ADD COLUMN probation_passed integer NOT NULL DEFAULT 0,
                       ADD COLUMN trust real NOT NULL DEFAULT 0.5
                           CHECK (trust >= 0 AND trust <= 1);
-- Validators known before this release have done their probation.
UPDATE validators SET probation = false;

ALTER TABLE validator_ledger ADD COLUMN challenges_passed bigint NOT NULL DEFAULT 0,
                             ADD COLUMN challenges_failed bigint NOT NULL DEFAULT 0;

-- The shadow check: in a round where at least two results of validators in
-- good standing (not on probation, trust at least 0.5) say `up` with
-- evidence and all show the same body digest (a page that is the same for
-- everyone), every other `up` result with evidence must show that digest
-- too: `challenge` is 1 when it does, -1 when it does not (a validator that
-- answers without fetching cannot know it), 0 when the round has no such
-- reference or the result carries no evidence (protocol 1) or says down.
-- A failed check earns nothing. Results of probation keys earn nothing.
-- Otherwise a result earns as 20261202000002_rewards_follow_agreement.sql
-- says: `backed` (agreeing with the decision, or with a regional majority
-- of validators that claimed the region before the result).
CREATE FUNCTION tick_rewards(round_ids bigint[])
RETURNS TABLE (validator_id bigint, round_id bigint, earned bigint, agrees boolean,
               disagrees boolean, backed boolean, challenge smallint)
LANGUAGE sql STABLE AS $$
    WITH t AS (
        SELECT t.validator_id, r.id AS round_id, r.status AS decided, t.status,
               -- Regions are [a-z0-9-]: a result whose validator changed its
               -- region since is a group of its own.
               CASE WHEN v.region_since <= t.received_at THEN v.region
                    ELSE 'moved ' || t.task_id::text END AS region,
               v.probation, NOT v.probation AND v.trust >= 0.5 AS vouches,
               t.evidence_sha256 AS digest,
               CASE WHEN v.probation THEN 0
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
