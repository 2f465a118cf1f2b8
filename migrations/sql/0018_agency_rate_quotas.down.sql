-- The quotas are also in the event store: a rebuild after migrating up again restores them.
ALTER TABLE agencies DROP COLUMN command_quota, DROP COLUMN telemetry_quota;
