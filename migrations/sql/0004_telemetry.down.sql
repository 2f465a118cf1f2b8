-- Partitions and hypertable chunks go with their parent. The timescaledb extension, if any,
-- stays: other schemas of the database may use it.
DROP TABLE IF EXISTS telemetry CASCADE;
DROP FUNCTION IF EXISTS eriop_ensure_telemetry_partitions(date, integer);
