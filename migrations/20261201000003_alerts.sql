-- Alerts: channels per account, and a transactional outbox. A state
-- change (incident opened or resolved, a regional degradation opened or
-- ended, latency above a site's threshold) writes one outbox row per
-- subscribed channel in the same transaction as the change itself, so an
-- alert exists exactly when its transition does. Workers of any api
-- replica claim rows with a lease, deliver outside any transaction, and
-- record the outcome (services/api/src/alerts). See docs/ARCHITECTURE.md,
-- "Alerts".

CREATE TABLE alert_channels (
    id          bigserial   PRIMARY KEY,
    account_id  bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind        text        NOT NULL CHECK (kind IN ('webhook', 'slack', 'discord', 'email')),
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- a URL (webhook, slack, discord) or an email address (email)
    target      text        NOT NULL CHECK (length(target) BETWEEN 3 AND 2048),
    -- webhook only: the HMAC-SHA256 key of `X-Signature`
    secret      text,
    events      text[]      NOT NULL DEFAULT '{incident_opened,incident_resolved}'
                CHECK (events <@ ARRAY['incident_opened', 'incident_resolved',
                                       'degradation_opened', 'degradation_ended',
                                       'latency_high', 'latency_normal']::text[]),
    enabled     boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'webhook') = (secret IS NOT NULL))
);
CREATE INDEX alert_channels_account ON alert_channels (account_id, id);

-- One delivery of one transition to one channel. `subject` names what the
-- transition is about ("incident:17", "degradation:4", "latency:9"): rows
-- of one (channel, subject) are delivered in id order, each only after
-- every earlier one is delivered or dead, so "resolved" never goes out
-- before "opened". `idempotency_key` travels with every attempt.
CREATE TABLE alert_outbox (
    id              bigserial   PRIMARY KEY,
    channel_id      bigint      NOT NULL REFERENCES alert_channels (id) ON DELETE CASCADE,
    account_id      bigint      NOT NULL,
    website_id      bigint,
    event           text        NOT NULL,
    subject         text        NOT NULL,
    idempotency_key uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    payload         jsonb       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- the lease: a claim sets both; a worker that dies leaves the row to
    -- be claimed again once `claimed_until` passes
    claimed_until   timestamptz,
    claim_token     uuid,
    last_error      text,
    last_status     integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX alert_outbox_subject ON alert_outbox (channel_id, subject, id) WHERE state = 'pending';
CREATE INDEX alert_outbox_account ON alert_outbox (account_id, id DESC);
CREATE INDEX alert_outbox_finished ON alert_outbox (finished_at) WHERE state <> 'pending';

-- Writes the alert `ev` about `subj` for every enabled channel of website
-- `w`'s account that subscribes to it, and wakes the workers when the
-- transaction commits (only if it wrote a row: a NOTIFY makes the commit
-- take a database-wide lock). Websites without an account (the
-- operator's CLI) alert nobody.
CREATE FUNCTION enqueue_alert(w bigint, ev text, subj text, body jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO alert_outbox (channel_id, account_id, website_id, event, subject, payload)
    SELECT c.id, c.account_id, w, ev, subj,
           jsonb_build_object('event', ev, 'occurred_at', now(),
                              'site', jsonb_build_object('id', s.id, 'name', s.name, 'url', s.url))
           || body
      FROM websites s JOIN alert_channels c ON c.account_id = s.account_id
     WHERE s.id = w AND c.enabled AND ev = ANY (c.events)
     ORDER BY c.id;
    IF FOUND THEN
        PERFORM pg_notify('alert_outbox', '');
    END IF;
END;
$$;

-- Latency alerts: per site, a threshold on the median latency of a round's
-- `up` results, crossed for `latency_alert_rounds` up rounds in a row.
ALTER TABLE websites
    ADD COLUMN latency_threshold_ms integer CHECK (latency_threshold_ms BETWEEN 1 AND 120000),
    ADD COLUMN latency_alert_rounds integer NOT NULL DEFAULT 3
               CHECK (latency_alert_rounds BETWEEN 1 AND 100);
ALTER TABLE website_state
    ADD COLUMN consecutive_slow integer NOT NULL DEFAULT 0,
    ADD COLUMN latency_alerting boolean NOT NULL DEFAULT false;

-- As in 20261201000002, plus the alerts: each transition writes its outbox
-- rows in this transaction.
CREATE OR REPLACE FUNCTION apply_round_decisions(ids bigint[], open_after integer, resolve_after integer,
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
    slow_ms  integer;
    slow_n   integer;
    median   double precision;
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
        SELECT latency_threshold_ms, latency_alert_rounds INTO slow_ms, slow_n
          FROM websites WHERE id = w;
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
                PERFORM enqueue_alert(w, 'incident_opened', 'incident:' || n,
                    (SELECT jsonb_build_object('incident', jsonb_build_object(
                                'id', i.id, 'started_at', i.started_at,
                                'opened_at', i.opened_at, 'regions', i.regions))
                       FROM incidents i WHERE i.id = n));
            ELSIF st.open_incident_id IS NOT NULL AND st.consecutive_up >= resolve_after THEN
                UPDATE incidents
                   SET resolved_at = (SELECT scheduled_at FROM rounds WHERE website_id = w
                                         AND scheduled_at <= r.scheduled_at AND status = 'up'
                                       ORDER BY scheduled_at DESC
                                       OFFSET resolve_after - 1 LIMIT 1),
                       resolved_by_round = r.id
                 WHERE id = st.open_incident_id;
                PERFORM enqueue_alert(w, 'incident_resolved', 'incident:' || st.open_incident_id,
                    (SELECT jsonb_build_object('incident', jsonb_build_object(
                                'id', i.id, 'started_at', i.started_at,
                                'resolved_at', i.resolved_at,
                                'duration_secs', extract(epoch FROM i.resolved_at - i.started_at)))
                       FROM incidents i WHERE i.id = st.open_incident_id));
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
                            n := NULL;
                            INSERT INTO regional_degradations
                                   (website_id, region, started_at, opened_by_round)
                            VALUES (w, g.region,
                                    (st.region_streaks -> g.region ->> 'since')::timestamptz, r.id)
                            ON CONFLICT DO NOTHING
                            RETURNING id INTO n;
                            IF n IS NOT NULL THEN
                                PERFORM enqueue_alert(w, 'degradation_opened', 'degradation:' || n,
                                    jsonb_build_object('degradation', jsonb_build_object(
                                        'id', n, 'region', g.region,
                                        'started_at', (st.region_streaks -> g.region ->> 'since')::timestamptz)));
                            END IF;
                        END IF;
                    ELSE
                        st.region_streaks := st.region_streaks - g.region;
                        n := NULL;
                        UPDATE regional_degradations
                           SET ended_at = r.scheduled_at, ended_by_round = r.id
                         WHERE website_id = w AND region = g.region AND ended_at IS NULL
                        RETURNING id INTO n;
                        IF n IS NOT NULL THEN
                            PERFORM enqueue_alert(w, 'degradation_ended', 'degradation:' || n,
                                (SELECT jsonb_build_object('degradation', jsonb_build_object(
                                            'id', d.id, 'region', d.region,
                                            'started_at', d.started_at, 'ended_at', d.ended_at))
                                   FROM regional_degradations d WHERE d.id = n));
                        END IF;
                    END IF;
                END LOOP;
            END IF;
            -- Latency against the site's threshold: the median of the
            -- round's `up` results, over `latency_alert_rounds` up rounds
            -- in a row; other rounds leave the streak as it is. Read only
            -- for sites with a threshold.
            IF r.status = 'up' AND slow_ms IS NOT NULL THEN
                SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY t.latency_ms) INTO median
                  FROM ticks t
                 WHERE t.round_id = r.id AND t.website_id = w
                   AND t.scheduled_at = r.scheduled_at AND t.status = 'up';
                IF median > slow_ms THEN
                    st.consecutive_slow := st.consecutive_slow + 1;
                    IF st.consecutive_slow >= slow_n AND NOT st.latency_alerting THEN
                        st.latency_alerting := true;
                        PERFORM enqueue_alert(w, 'latency_high', 'latency:' || w,
                            jsonb_build_object('latency', jsonb_build_object(
                                'median_ms', round(median), 'threshold_ms', slow_ms,
                                'rounds', st.consecutive_slow, 'round_id', r.id)));
                    END IF;
                ELSIF median IS NOT NULL THEN
                    st.consecutive_slow := 0;
                    IF st.latency_alerting THEN
                        st.latency_alerting := false;
                        PERFORM enqueue_alert(w, 'latency_normal', 'latency:' || w,
                            jsonb_build_object('latency', jsonb_build_object(
                                'median_ms', round(median), 'threshold_ms', slow_ms,
                                'round_id', r.id)));
                    END IF;
                END IF;
            ELSIF slow_ms IS NULL AND (st.consecutive_slow <> 0 OR st.latency_alerting) THEN
                -- the threshold was removed: the streak ends without an alert
                st.consecutive_slow := 0;
                st.latency_alerting := false;
            END IF;
            st.applied_through := r.scheduled_at;
            applied := true;
        END LOOP;
        CONTINUE WHEN NOT applied;
        UPDATE website_state
           SET status = st.status, consecutive_up = st.consecutive_up,
               consecutive_down = st.consecutive_down, down_since = st.down_since,
               applied_through = st.applied_through, open_incident_id = st.open_incident_id,
               region_streaks = st.region_streaks, consecutive_slow = st.consecutive_slow,
               latency_alerting = st.latency_alerting, updated_at = now()
         WHERE website_id = w;
    END LOOP;
END;
$$;
