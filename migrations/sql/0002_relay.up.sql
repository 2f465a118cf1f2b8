-- The relay's bookkeeping (DESIGN.md rule 4). Every stored event gets a row here in the
-- same transaction that stores it; the relay publishes pending events to JetStream in
-- sequence order per aggregate and deletes their rows only after JetStream acked them.
-- The event store itself stays append-only, and no global bigserial position is needed
-- (concurrent commits would make gaps that fill later).
CREATE TABLE relay_pending
(
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    enqueued_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    FOREIGN KEY (aggregate_type, aggregate_id, sequence)
        REFERENCES events (aggregate_type, aggregate_id, sequence)
);

CREATE FUNCTION eriop_relay_enqueue() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    INSERT INTO relay_pending (aggregate_type, aggregate_id, sequence)
    VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.sequence);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_relay_enqueue
    AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION eriop_relay_enqueue();

-- Wakes the relay at commit instead of making it poll.
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
