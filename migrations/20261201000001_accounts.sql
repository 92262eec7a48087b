-- Website owners (services/api): accounts, their sign-in sessions and API
-- keys; websites belong to an account and are deleted softly; website
-- changes are announced with their ids.

CREATE TABLE accounts (
    id                bigserial   PRIMARY KEY,
    email             text        NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    -- argon2id, PHC string format
    password_hash     text        NOT NULL,
    -- quotas, set by the operator (api accounts quota)
    max_sites         integer     NOT NULL CHECK (max_sites >= 0),
    min_interval_secs integer     NOT NULL CHECK (min_interval_secs BETWEEN 1 AND 86400),
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX accounts_email ON accounts (lower(email));

-- A browser's sign-in. The cookie holds a random token; only its SHA-256
-- is stored, so a copy of this table signs nobody in.
CREATE TABLE account_sessions (
    token_sha256 bytea       PRIMARY KEY,
    account_id   bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- sent back in X-CSRF-Token on every cookie-authenticated write
    csrf_token   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX account_sessions_account ON account_sessions (account_id);
CREATE INDEX account_sessions_expiry ON account_sessions (expires_at);

-- Keys for programs: `upk_<prefix>_<secret>`. The prefix is visible and
-- unique (the lookup); the key's HMAC-SHA256 under the server's secret is
-- what is compared.
CREATE TABLE api_keys (
    id           bigserial   PRIMARY KEY,
    account_id   bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    prefix       text        NOT NULL UNIQUE,
    mac          bytea       NOT NULL,
    name         text        NOT NULL,
    scope        text        NOT NULL CHECK (scope IN ('read', 'write')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_account ON api_keys (account_id, id);

-- Websites of the CLI and of older versions keep account_id NULL.
ALTER TABLE websites
    ADD COLUMN account_id bigint REFERENCES accounts (id) ON DELETE RESTRICT,
    ADD COLUMN name       text,
    ADD COLUMN deleted_at timestamptz,
    ADD CONSTRAINT websites_deleted_is_disabled CHECK (deleted_at IS NULL OR NOT enabled);
CREATE INDEX websites_account ON websites (account_id, id) WHERE deleted_at IS NULL;

-- Deleting a website is soft (deleted_at): its rounds and ticks stay until
-- retention removes them, so settled work is still paid. A hard DELETE of
-- a website that has rounds is refused instead of cascading.
ALTER TABLE rounds DROP CONSTRAINT rounds_website_id_fkey;
ALTER TABLE rounds ADD CONSTRAINT rounds_website_id_fkey
    FOREIGN KEY (website_id) REFERENCES websites (id) ON DELETE RESTRICT;

-- Uptime over a window counts a site's decided rounds by status: an
-- index-only scan of this index, without touching the heap.
CREATE INDEX rounds_website_time_status ON rounds (website_id, scheduled_at) INCLUDE (status);

-- Notifications carry the ids of the changed websites ("ids:1,2,3"), so a
-- hub reloads those rows instead of every website; a statement changing
-- more than 500 rows, and TRUNCATE, send "*" (reload everything). Hubs of
-- the previous version reload everything on any payload.
CREATE OR REPLACE FUNCTION notify_websites_changed_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n   integer;
    ids text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT count(*), string_agg(id::text, ',') INTO n, ids
          FROM (SELECT id FROM old_rows LIMIT 501) AS o;
    ELSE
        SELECT count(*), string_agg(id::text, ',') INTO n, ids
          FROM (SELECT id FROM new_rows LIMIT 501) AS o;
    END IF;
    IF n = 0 THEN
        RETURN NULL;
    ELSIF n > 500 THEN
        PERFORM pg_notify('websites_changed', '*');
    ELSE
        PERFORM pg_notify('websites_changed', 'ids:' || ids);
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER websites_changed ON websites;
CREATE TRIGGER websites_inserted AFTER INSERT ON websites
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_websites_changed_rows();
CREATE TRIGGER websites_updated AFTER UPDATE ON websites
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_websites_changed_rows();
CREATE TRIGGER websites_deleted AFTER DELETE ON websites
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_websites_changed_rows();
-- TRUNCATE has no rows to name: the old function sends its op, which
-- hubs read as "reload everything".
CREATE TRIGGER websites_truncated AFTER TRUNCATE ON websites
    FOR EACH STATEMENT EXECUTE FUNCTION notify_websites_changed();
