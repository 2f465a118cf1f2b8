-- Partials not yet added are lost with the table; their minutes read from the rollup would
-- then be short. Mark them first, so that 0030's worker recomputes them from the raw rows
-- (across agencies: the migrating role may be subject to row-level security).
SELECT set_config('eriop.all_agencies', 'on', true);
INSERT INTO telemetry_touched (agency_id, minute, device_ids)
SELECT agency_id, minute, array_agg(DISTINCT device_id)
  FROM telemetry_partials GROUP BY agency_id, minute;
DROP TABLE telemetry_partials;
