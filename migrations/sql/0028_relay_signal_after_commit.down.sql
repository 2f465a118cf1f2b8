CREATE FUNCTION eriop_relay_notify() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('eriop_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_relay_notify
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION eriop_relay_notify();
