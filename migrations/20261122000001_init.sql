-- Foundation schema. Ticks are append-only and range partitioned by the
-- round's scheduled time (never the validator's clock), so the partition
-- column is part of every unique key on ticks.

CREATE TABLE websites (
    id                  bigserial PRIMARY KEY,
    url                 text        NOT NULL,
    interval_secs       integer     NOT NULL DEFAULT 60 CHECK (interval_secs BETWEEN 1 AND 86400),
    timeout_ms          integer     NOT NULL DEFAULT 10000 CHECK (timeout_ms BETWEEN 100 AND 120000),
    expected_status_min smallint    NOT NULL DEFAULT 200,
    expected_status_max smallint    NOT NULL DEFAULT 399,
    keyword             text,
    follow_redirects    boolean     NOT NULL DEFAULT true,
    enabled             boolean     NOT NULL DEFAULT true,
    owner               text        NOT NULL DEFAULT 'local',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (100 <= expected_status_min AND expected_status_min <= expected_status_max
           AND expected_status_max <= 599)
);
CREATE INDEX websites_enabled ON websites (id) WHERE enabled;

CREATE TABLE validators (
    id             bigserial PRIMARY KEY,
    public_key     text        NOT NULL UNIQUE,
    region         text        NOT NULL,
    tags           text[]      NOT NULL DEFAULT '{}',
    client_version text        NOT NULL DEFAULT '',
    first_seen     timestamptz NOT NULL DEFAULT now(),
    last_seen      timestamptz NOT NULL DEFAULT now()
);

-- A round is one check of one website for one schedule slot. The unique key
-- on (website_id, scheduled_at) is the guard that makes a second round for
-- the same slot impossible, whichever hub tries. The slot's identity is its
-- scheduled time rather than its slot number, so that changing a website's
-- interval cannot collide with the numbers of older slots.
CREATE TABLE rounds (
    id           bigserial PRIMARY KEY,
    website_id   bigint      NOT NULL REFERENCES websites (id) ON DELETE CASCADE,
    slot         bigint      NOT NULL,
    scheduled_at timestamptz NOT NULL,
    deadline     timestamptz NOT NULL,
    hub_id       text        NOT NULL,
    status       text        NOT NULL DEFAULT 'open'
                 CHECK (status IN ('open', 'up', 'down', 'unknown')),
    results_up   integer,
    results_down integer,
    closed_at    timestamptz,
    closed_by    text,
    UNIQUE (website_id, scheduled_at)
);
CREATE INDEX rounds_open_by_deadline ON rounds (deadline) WHERE status = 'open';
CREATE INDEX rounds_website_latest ON rounds (website_id, scheduled_at DESC);

CREATE TABLE ticks (
    website_id      bigint      NOT NULL,
    round_id        bigint      NOT NULL,
    validator_id    bigint      NOT NULL,
    task_id         uuid        NOT NULL,
    scheduled_at    timestamptz NOT NULL,
    status          text        NOT NULL CHECK (status IN ('up', 'down')),
    http_status     smallint,
    latency_ms      integer     NOT NULL CHECK (latency_ms >= 0),
    error           text,
    checked_at      timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    reward_lamports bigint      NOT NULL CHECK (reward_lamports >= 0),
    hub_id          text        NOT NULL,
    PRIMARY KEY (task_id, validator_id, scheduled_at)
) PARTITION BY RANGE (scheduled_at);
-- "latest N per website" and time ranges per website.
CREATE INDEX ticks_website_time ON ticks (website_id, scheduled_at DESC);
-- closing a round counts its ticks.
CREATE INDEX ticks_round ON ticks (round_id);
-- per-validator earnings and agreement over time.
CREATE INDEX ticks_validator_time ON ticks (validator_id, scheduled_at);
-- Catches rows outside the monthly partitions so no tick is ever refused.
CREATE TABLE ticks_default PARTITION OF ticks DEFAULT;

-- Creates the monthly partitions covering [month of from_ts, + months).
-- Hubs call it at start and hourly; concurrent callers serialise on an
-- advisory lock so two hubs never race on CREATE TABLE.
CREATE FUNCTION ensure_tick_partitions(from_ts timestamptz, months integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    start_at timestamptz;
    part     text;
    created  integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ensure_tick_partitions'));
    FOR i IN 0 .. months - 1 LOOP
        start_at := date_trunc('month', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                    + make_interval(months => i);
        part := 'ticks_' || to_char(start_at AT TIME ZONE 'UTC', 'YYYY_MM');
        IF to_regclass(part) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF ticks FOR VALUES FROM (%L) TO (%L)',
                           part, start_at, start_at + interval '1 month');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;

SELECT ensure_tick_partitions(now() - interval '1 month', 4);
