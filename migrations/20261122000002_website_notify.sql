-- Tell hubs about website changes within a second, however they are made
-- (hub CLI, API, or plain SQL): a statement-level trigger sends one NOTIFY
-- per statement. Hubs LISTEN on `websites_changed` and reload; their
-- periodic reload remains the safety net for a missed notification.
-- Additive only, so hubs without this listener keep working beside it.

CREATE FUNCTION notify_websites_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('websites_changed', TG_OP);
    RETURN NULL;
END;
$$;

CREATE TRIGGER websites_changed
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON websites
FOR EACH STATEMENT EXECUTE FUNCTION notify_websites_changed();
