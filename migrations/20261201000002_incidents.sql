-- Incidents: each website's confirmed state, moved by decided rounds in
-- slot order, and the incidents it opened and resolved.

CREATE TABLE website_state (
    website_id       bigint      PRIMARY KEY REFERENCES websites (id) ON DELETE CASCADE,
    -- the state under the confirmation rule: `unknown` until a streak
    -- decides it
    status           text        NOT NULL DEFAULT 'unknown'
                     CHECK (status IN ('up', 'down', 'unknown')),
    consecutive_up   integer     NOT NULL DEFAULT 0,
    consecutive_down integer     NOT NULL DEFAULT 0,
    -- scheduled time of the first round of the current down streak
    down_since       timestamptz,
    -- scheduled time of the last round applied: rounds are applied in
    -- slot order, each once
    applied_through  timestamptz,
    open_incident_id bigint,
    -- per region: {"eu-west": {"n": 2, "since": "..."}}, the region's
    -- consecutive rounds seen down while the quorum saw the site up
    region_streaks   jsonb       NOT NULL DEFAULT '{}',
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE incidents (
    id                bigserial   PRIMARY KEY,
    website_id        bigint      NOT NULL REFERENCES websites (id) ON DELETE CASCADE,
    -- scheduled time of the first down round of the streak that opened it
    started_at        timestamptz NOT NULL,
    opened_at         timestamptz NOT NULL DEFAULT now(),
    opened_by_round   bigint      NOT NULL,
    -- scheduled time of the first up round of the streak that resolved it
    resolved_at       timestamptz,
    resolved_by_round bigint,
    -- what each region saw in the round that opened it
    regions           jsonb       NOT NULL DEFAULT '[]'
);
CREATE UNIQUE INDEX incidents_one_open ON incidents (website_id) WHERE resolved_at IS NULL;

-- A region that sees the site down while the quorum sees it up: not an
-- incident, but recorded (and shown) as a regional degradation. It opens
-- after `open_after` such rounds in a row and ends at the first round in
-- which the region sees the site up.
CREATE TABLE regional_degradations (
    id              bigserial   PRIMARY KEY,
    website_id      bigint      NOT NULL REFERENCES websites (id) ON DELETE CASCADE,
    region          text        NOT NULL,
    started_at      timestamptz NOT NULL,
    opened_by_round bigint      NOT NULL,
    ended_at        timestamptz,
    ended_by_round  bigint
);
CREATE UNIQUE INDEX regional_degradations_one_open ON regional_degradations (website_id, region)
    WHERE ended_at IS NULL;
CREATE INDEX regional_degradations_website_time ON regional_degradations (website_id, started_at DESC, id DESC);
CREATE INDEX incidents_website_time ON incidents (website_id, started_at DESC, id DESC);

-- Applies the decided rounds of these websites that follow each one's
-- `applied_through`, in slot order, stopping at the first round still open
-- (a later round waits for it). Websites are locked in id order (FOR
-- UPDATE), so concurrent callers (any hub, after a close or a sweep)
-- apply each round exactly once and never deadlock on each other.
-- `open_after` consecutive down rounds open an incident; `resolve_after`
-- consecutive up rounds resolve it; an `unknown` round (no majority)
-- changes neither count. In `up` rounds, a region whose results are all
-- down for `open_after` rounds in a row opens a regional degradation,
-- ended by the first round in which it sees the site up. Returns how many
-- incidents opened and resolved.
CREATE FUNCTION apply_round_decisions(ids bigint[], open_after integer, resolve_after integer,
                                      OUT opened integer, OUT resolved integer)
LANGUAGE plpgsql AS $$
DECLARE
    w  bigint;
    st website_state%ROWTYPE;
    r  record;
    g  record;
    n  bigint;
    k  integer;
    applied boolean;
BEGIN
    opened := 0;
    resolved := 0;
    FOR w IN SELECT DISTINCT x FROM unnest(ids) AS x ORDER BY x LOOP
        SELECT * INTO st FROM website_state WHERE website_id = w FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO website_state (website_id)
            SELECT w WHERE EXISTS (SELECT 1 FROM websites WHERE id = w)
            ON CONFLICT DO NOTHING;
            SELECT * INTO st FROM website_state WHERE website_id = w FOR UPDATE;
            CONTINUE WHEN NOT FOUND;
        END IF;
        applied := false;
        FOR r IN SELECT id, status, scheduled_at, results_down FROM rounds
                  WHERE website_id = w
                    AND scheduled_at > COALESCE(st.applied_through, '-infinity'::timestamptz)
                  ORDER BY scheduled_at LOOP
            EXIT WHEN r.status = 'open';
            IF r.status = 'up' THEN
                st.consecutive_up := st.consecutive_up + 1;
                st.consecutive_down := 0;
                st.down_since := NULL;
            ELSIF r.status = 'down' THEN
                IF st.consecutive_down = 0 THEN
                    st.down_since := r.scheduled_at;
                END IF;
                st.consecutive_down := st.consecutive_down + 1;
                st.consecutive_up := 0;
            END IF;
            IF st.open_incident_id IS NULL AND st.consecutive_down >= open_after THEN
                INSERT INTO incidents (website_id, started_at, opened_by_round, regions)
                SELECT w, st.down_since, r.id,
                       COALESCE(jsonb_agg(jsonb_build_object(
                           'region', v.region, 'validator', v.public_key,
                           'up', t.status = 'up', 'http_status', t.http_status,
                           'latency_ms', t.latency_ms, 'error', t.error)
                           ORDER BY v.region, v.public_key), '[]')
                  FROM ticks t JOIN validators v ON v.id = t.validator_id
                 WHERE t.round_id = r.id AND t.website_id = w
                   AND t.scheduled_at = r.scheduled_at
                RETURNING id INTO n;
                st.open_incident_id := n;
                st.status := 'down';
                opened := opened + 1;
            ELSIF st.open_incident_id IS NOT NULL AND st.consecutive_up >= resolve_after THEN
                UPDATE incidents
                   SET resolved_at = (SELECT scheduled_at FROM rounds WHERE website_id = w
                                         AND scheduled_at <= r.scheduled_at AND status = 'up'
                                       ORDER BY scheduled_at DESC
                                       OFFSET resolve_after - 1 LIMIT 1),
                       resolved_by_round = r.id
                 WHERE id = st.open_incident_id;
                st.open_incident_id := NULL;
                st.status := 'up';
                resolved := resolved + 1;
            ELSIF st.open_incident_id IS NULL AND st.consecutive_up >= resolve_after THEN
                st.status := 'up';
            END IF;
            -- Regions against the quorum: in an `up` round, a region whose
            -- every result is down extends its streak; a region that saw
            -- the site up ends its streak and any open degradation.
            -- (Read only when it can change something: a result was down,
            -- or a streak is running; most up rounds skip the ticks.)
            IF r.status = 'up' AND (r.results_down > 0 OR st.region_streaks <> '{}') THEN
                FOR g IN SELECT v.region, bool_and(t.status = 'down') AS down
                           FROM ticks t JOIN validators v ON v.id = t.validator_id
                          WHERE t.round_id = r.id AND t.website_id = w
                            AND t.scheduled_at = r.scheduled_at
                          GROUP BY v.region LOOP
                    IF g.down THEN
                        k := COALESCE((st.region_streaks -> g.region ->> 'n')::integer, 0) + 1;
                        st.region_streaks := jsonb_set(st.region_streaks, ARRAY[g.region],
                            jsonb_build_object('n', k, 'since',
                                COALESCE(st.region_streaks -> g.region -> 'since',
                                         to_jsonb(r.scheduled_at))));
                        IF k >= open_after THEN
                            INSERT INTO regional_degradations
                                   (website_id, region, started_at, opened_by_round)
                            VALUES (w, g.region,
                                    (st.region_streaks -> g.region ->> 'since')::timestamptz, r.id)
                            ON CONFLICT DO NOTHING;
                        END IF;
                    ELSE
                        st.region_streaks := st.region_streaks - g.region;
                        UPDATE regional_degradations
                           SET ended_at = r.scheduled_at, ended_by_round = r.id
                         WHERE website_id = w AND region = g.region AND ended_at IS NULL;
                    END IF;
                END LOOP;
            END IF;
            st.applied_through := r.scheduled_at;
            applied := true;
        END LOOP;
        CONTINUE WHEN NOT applied;
        UPDATE website_state
           SET status = st.status, consecutive_up = st.consecutive_up,
               consecutive_down = st.consecutive_down, down_since = st.down_since,
               applied_through = st.applied_through, open_incident_id = st.open_incident_id,
               region_streaks = st.region_streaks, updated_at = now()
         WHERE website_id = w;
    END LOOP;
END;
$$;

-- Websites that exist now start from their latest decided round: history
-- is not replayed into incidents.
INSERT INTO website_state (website_id, applied_through)
SELECT w.id, (SELECT max(r.scheduled_at) FROM rounds r
               WHERE r.website_id = w.id AND r.status <> 'open')
  FROM websites w;
