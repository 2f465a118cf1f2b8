-- The telemetry table as migration 0004 makes it on plain PostgreSQL (partitioned by day,
-- natural key, agency index), for the SQL harnesses here (`\ir telemetry-table.sql`).
CREATE TABLE telemetry (time timestamptz NOT NULL, agency_id uuid NOT NULL, device_id uuid NOT NULL,
  function_id text NOT NULL, attribute text NOT NULL, value_double double precision, value_text text,
  value_json jsonb, received_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, function_id, attribute, time)) PARTITION BY RANGE (time);
CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT;
CREATE TABLE telemetry_20261205 PARTITION OF telemetry FOR VALUES FROM ('2026-12-05') TO ('2026-12-06');
CREATE INDEX ON telemetry (agency_id, time DESC);
