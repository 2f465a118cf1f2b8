-- The event store of postgres-es (same table and column names, so postgres-es reads and
-- writes it unchanged), made an audit trail:
--  * jsonb instead of json, so auditors can filter on payload and metadata;
--  * recorded_at, the commit time as the store saw it;
--  * a hash chain per aggregate: each event's metadata carries the hash of the previous one,
--    and its own hash covers that, so altering or removing any event breaks every later hash;
--  * append-only: UPDATE, DELETE and TRUNCATE are refused by triggers.
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 1) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        jsonb                        NOT NULL,
    metadata       jsonb                        NOT NULL,
    recorded_at    timestamptz                  NOT NULL DEFAULT clock_timestamp(),
    previous_hash  bytea,
    hash           bytea                        NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- Auditors list events by time and by event type.
CREATE INDEX events_recorded_at_idx ON events (recorded_at);
CREATE INDEX events_event_type_idx ON events (event_type, recorded_at);

CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          jsonb                                NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

CREATE FUNCTION eriop_events_chain() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    prev bytea;
BEGIN
    IF NEW.sequence > 1 THEN
        SELECT hash INTO prev
          FROM events
         WHERE aggregate_type = NEW.aggregate_type
           AND aggregate_id = NEW.aggregate_id
           AND sequence = NEW.sequence - 1;
    END IF;
    NEW.previous_hash := prev;
    -- Metadata values are strings (cqrs-es reads them as such): '' for the first event.
    NEW.metadata := NEW.metadata || jsonb_build_object('previous_hash', coalesce(encode(prev, 'hex'), ''));
    NEW.hash := sha256(convert_to(concat_ws(E'\x1f',
        coalesce(encode(prev, 'hex'), ''),
        NEW.aggregate_type, NEW.aggregate_id, NEW.sequence::text,
        NEW.event_type, NEW.event_version,
        NEW.payload::text, NEW.metadata::text), 'UTF8'));
    RETURN NEW;
END
$$;

CREATE TRIGGER events_chain
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION eriop_events_chain();

CREATE FUNCTION eriop_events_append_only() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION 'the event store is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION eriop_events_append_only();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION eriop_events_append_only();

-- Each event as one JSON document, the form in which it travels on the EVENTS stream
-- (eriop_nats::StoredEvent): the relay publishes it, rebuilds and auditors read it.
CREATE VIEW stored_events AS
SELECT aggregate_type,
       aggregate_id,
       sequence,
       jsonb_build_object(
           'aggregate_type', aggregate_type,
           'aggregate_id', aggregate_id,
           'sequence', sequence,
           'event_type', event_type,
           'event_version', event_version,
           'payload', payload,
           'metadata', metadata,
           'recorded_at', to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'hash', encode(hash, 'hex')
       ) AS envelope
  FROM events;
