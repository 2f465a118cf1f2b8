DROP VIEW IF EXISTS stored_events;
DROP TABLE IF EXISTS snapshots;
DROP TABLE IF EXISTS events;
DROP FUNCTION IF EXISTS eriop_events_append_only();
DROP FUNCTION IF EXISTS eriop_events_chain();
