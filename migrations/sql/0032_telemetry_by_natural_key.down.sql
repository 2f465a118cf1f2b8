-- The index by agency and time, as 0004 made it.
CREATE INDEX IF NOT EXISTS telemetry_agency_time_idx ON telemetry (agency_id, time DESC);
