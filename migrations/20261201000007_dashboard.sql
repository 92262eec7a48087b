-- The owners' dashboard and public status pages (docs/api.md, "Dashboard",
-- "Status pages and badges"). Additive: hubs ignore all of it.

-- Live updates: one notification per change of what the sites list shows,
-- not one per round. `website_state` is updated by every applied round
-- (apply_round_decisions); this trigger notifies only when the latest
-- decided round's status (read from the streaks: `unknown` rounds count for
-- neither), the status under the confirmation rule, or the open incident
-- changes. Each api replica LISTENs once and fans out to its browsers by
-- account. Payload: {"a": account, "w": website, "l": latest, "s": state,
-- "i": open incident or null, "t": Unix ms}.
CREATE FUNCTION website_state_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    account bigint;
    latest_old text := CASE WHEN OLD.consecutive_down > 0 THEN 'down'
                            WHEN OLD.consecutive_up > 0 THEN 'up' END;
    latest_new text := CASE WHEN NEW.consecutive_down > 0 THEN 'down'
                            WHEN NEW.consecutive_up > 0 THEN 'up' END;
BEGIN
    IF latest_old IS NOT DISTINCT FROM latest_new
       AND OLD.status = NEW.status
       AND OLD.open_incident_id IS NOT DISTINCT FROM NEW.open_incident_id THEN
        RETURN NULL;
    END IF;
    SELECT account_id INTO account FROM websites WHERE id = NEW.website_id;
    IF account IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('website_state', json_build_object(
        'a', account, 'w', NEW.website_id, 'l', latest_new, 's', NEW.status,
        'i', NEW.open_incident_id,
        't', (extract(epoch FROM clock_timestamp()) * 1000)::int8)::text);
    RETURN NULL;
END;
$$;
-- The WHEN clause is evaluated without calling the function, so the rounds
-- that change nothing shown (nearly all) cost no PL/pgSQL call; the
-- function checks exactly (both streaks may move without `latest` changing).
CREATE TRIGGER website_state_notify AFTER UPDATE ON website_state
FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status
      OR OLD.open_incident_id IS DISTINCT FROM NEW.open_incident_id
      OR (OLD.consecutive_down > 0) IS DISTINCT FROM (NEW.consecutive_down > 0)
      OR (OLD.consecutive_up > 0) IS DISTINCT FROM (NEW.consecutive_up > 0))
EXECUTE FUNCTION website_state_notify();

-- One public status page per account, at /status/{slug}.
CREATE TABLE status_pages (
    account_id bigint      PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    slug       text        NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9](?:[a-z0-9-]{1,38}[a-z0-9])$'),
    title      text        NOT NULL CHECK (length(title) BETWEEN 1 AND 100),
    enabled    boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Which sites the account's status page shows, and each site's badge
-- token (opt-in; an unguessable token in the badge URL, so private sites
-- stay private; a new token replaces the old one).
ALTER TABLE websites ADD COLUMN on_status_page boolean NOT NULL DEFAULT false;
ALTER TABLE websites ADD COLUMN badge_token text UNIQUE;
