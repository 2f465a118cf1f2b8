-- Per-minute partials of the telemetry rollup (issue 13). 0030's worker recomputed each
-- marked minute from its raw rows when the minute closed: at saturated ingest about 6 million
-- samples a minute, one statement of 8-13 s that took a core from ingest and raised its
-- latency for the runs after (docs/BENCHMARKS.md).
--
-- Now a group of ingest whose samples repeat their keys within a minute (a device reporting
-- several times a minute: the bursts) aggregates them itself, from the staging table it has
-- in hand, into one row per device, attribute and minute, committed with the rows. The worker
-- adds the partials of closed minutes to `telemetry_minutes` (and deletes them, in the same
-- statement) instead of re-reading samples. Groups whose keys do not repeat (a city whose
-- lights report once a minute) and groups written skipping stored keys (a redelivery: only
-- the new rows count) still mark their minutes (0030), which the worker recomputes from the
-- raw rows, deleting those minutes' partials in the same statement.
--
-- So for a device's minute, at any snapshot: marked, and read raw; or its row here plus its
-- pending partials equals its raw rows.
CREATE TABLE telemetry_partials
(
    agency_id       uuid             NOT NULL,
    device_id       uuid             NOT NULL,
    function_id     text             NOT NULL,
    attribute       text             NOT NULL,
    minute          timestamptz      NOT NULL,
    samples         bigint           NOT NULL,
    numeric_samples bigint           NOT NULL,
    sum_value       numeric,
    min_value       double precision,
    max_value       double precision,
    last_time       timestamptz      NOT NULL,
    last_value      jsonb
);
-- A series reads its device's pending partials; the worker drops a marked minute's.
CREATE INDEX telemetry_partials_device_idx ON telemetry_partials (agency_id, device_id, minute);
-- The worker takes the oldest first, across agencies.
CREATE INDEX telemetry_partials_oldest_idx ON telemetry_partials (minute);

ALTER TABLE telemetry_partials ENABLE ROW LEVEL SECURITY;
ALTER TABLE telemetry_partials FORCE ROW LEVEL SECURITY;
-- In 0031's form: the settings read once a statement.
CREATE POLICY agency_isolation ON telemetry_partials
    USING ((SELECT current_setting('eriop.all_agencies', true) = 'on')
           OR agency_id = (SELECT nullif(current_setting('eriop.agency_id', true), '')::uuid))
    WITH CHECK ((SELECT current_setting('eriop.all_agencies', true) = 'on')
           OR agency_id = (SELECT nullif(current_setting('eriop.agency_id', true), '')::uuid));
