-- Telemetry is written and read by its natural key only (issue 13). The index by agency and
-- time (0004) cost every ingested sample a second index insertion, a third of the insert's
-- database time (docs/BENCHMARKS.md), and served one reader: the retention job, which now
-- deletes an agency's samples key by key, with the keys from device_latest (written with the
-- rows, projections/src/retention.rs). Every other read names its device.
DROP INDEX IF EXISTS telemetry_agency_time_idx;
