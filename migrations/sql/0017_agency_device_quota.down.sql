-- The quota is also in the event store: a rebuild after migrating up again restores it.
ALTER TABLE agencies DROP COLUMN device_quota;
