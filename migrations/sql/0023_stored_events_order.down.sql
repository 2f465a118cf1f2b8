-- A view's columns cannot be dropped in place: made again as migration 0001 made it, with
-- the grant migration 0008 gave it.
DROP VIEW stored_events;
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
GRANT SELECT, INSERT, UPDATE, DELETE ON stored_events TO eriop_app;
