-- Operator controls over which validators may connect (docs/ARCHITECTURE.md,
-- "Validator trust"). Additive: hubs of an older release ignore it.
--
-- One row per rule:
-- - `allow` + key: the key may connect when hubs run with
--   HUB_VALIDATOR_ACCESS=allowlist (a permissioned network). In the default
--   `open` mode allow rows are kept but not needed.
-- - `deny` + key: the key is refused at hello, and its live sessions on
--   every hub are closed (`access_denied`).
-- - `deny` + network: every connection whose client address (after trusted
--   proxies) is inside the prefix is refused the same way.
-- Hubs reload the rules on the notification below and, as a safety net,
-- whenever `validator_access_state.generation` has moved (polled every 2 s),
-- so a change made with the hub CLI or plain SQL applies within 5 s.
CREATE TABLE validator_access (
    id         bigserial   PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN ('allow', 'deny')),
    public_key text,
    network    cidr,
    reason     text        NOT NULL DEFAULT '' CHECK (length(reason) <= 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((public_key IS NULL) <> (network IS NULL)),
    CHECK (kind = 'deny' OR network IS NULL)
);
CREATE UNIQUE INDEX validator_access_key ON validator_access (kind, public_key)
    WHERE public_key IS NOT NULL;
CREATE UNIQUE INDEX validator_access_network ON validator_access (kind, network)
    WHERE network IS NOT NULL;

CREATE TABLE validator_access_state (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    generation bigint  NOT NULL
);
INSERT INTO validator_access_state (generation) VALUES (1);

CREATE FUNCTION validator_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE validator_access_state SET generation = generation + 1;
    PERFORM pg_notify('validator_access_changed', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER validator_access_changed
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON validator_access
FOR EACH STATEMENT EXECUTE FUNCTION validator_access_changed();
