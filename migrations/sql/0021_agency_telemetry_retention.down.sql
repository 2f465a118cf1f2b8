-- The retention is also in the event store: a rebuild after migrating up again restores it.
ALTER TABLE agencies DROP COLUMN telemetry_retention_days;
