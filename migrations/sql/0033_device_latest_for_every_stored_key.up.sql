-- Every stored telemetry key has its row in device_latest (issue 13). The ingest writes it
-- with the rows since migration 0012; samples stored before that have none, and the
-- retention job (which goes key by key from device_latest since 0032) and the rollup would
-- never see them. Each missing key gets its newest sample, as the ingest would have kept it;
-- keys that have a row keep it. Row-level security is forced on both tables, even for their
-- owner: this transaction acts for every agency, as the projections do.
SELECT set_config('eriop.all_agencies', 'on', true);

INSERT INTO device_latest (device_id, function_id, attribute, agency_id, time,
                           value_double, value_text, value_json)
SELECT DISTINCT ON (device_id, function_id, attribute)
       device_id, function_id, attribute, agency_id, time, value_double, value_text, value_json
  FROM telemetry
 ORDER BY device_id, function_id, attribute, time DESC
ON CONFLICT (device_id, function_id, attribute) DO NOTHING;
