-- Telemetry retention per agency (issue 15, item 8), in days, set by platform administrators
-- (AgencyTelemetryRetentionSet) and applied by the projections' retention job. NULL: the
-- platform's retention (on TimescaleDB, the hypertable's 400-day policy).
ALTER TABLE agencies ADD COLUMN telemetry_retention_days bigint;
