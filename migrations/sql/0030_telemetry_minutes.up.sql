-- The telemetry rollup (issue 13): one row per agency, device, attribute and minute, kept by
-- the projections service apart from ingest, so that a series over a day reads at most 1,440
-- rows an attribute instead of every raw sample (README, "Telemetry rollup").
--
-- How it stays exact:
-- * Whoever stores telemetry (the projector) records in the same transaction which devices'
--   minutes it touched (`telemetry_touched`), a few rows a group, plain inserts: nothing
--   waits on a lock, and ingest does no aggregation.
-- * The rollup worker takes (deletes) the marks of minutes that have closed and, in the same
--   transaction, recomputes those minutes from the raw rows, after the marks were taken (so
--   with every row committed with them).
-- * So a minute is either rolled up from every raw row committed with the marks it deleted,
--   or still marked: a series reads a marked minute from the raw rows, and the others from
--   here. A late sample (a device's buffer after a power cut) marks its old minute again.
--
-- Both tables are plain tables on TimescaleDB too (a continuous aggregate would be a second
-- way to the same rows), and both are the agency's: row-level security as elsewhere.
CREATE TABLE telemetry_minutes
(
    agency_id       uuid             NOT NULL,
    device_id       uuid             NOT NULL,
    function_id     text             NOT NULL,
    attribute       text             NOT NULL,
    minute          timestamptz      NOT NULL,
    -- Every sample, and those with a numeric value (what an average divides by).
    samples         bigint           NOT NULL,
    numeric_samples bigint           NOT NULL,
    -- Exact: a device's hostile values (1e308 twice) do not overflow it.
    sum_value       numeric,
    min_value       double precision,
    max_value       double precision,
    -- The minute's latest sample, whatever its type (the series' `last`).
    last_time       timestamptz      NOT NULL,
    last_value      jsonb,
    PRIMARY KEY (agency_id, device_id, function_id, attribute, minute)
);

-- Marks: minutes whose raw rows changed since they were rolled up. No key: two groups
-- touching the same minute both insert, and neither waits for the other.
CREATE TABLE telemetry_touched
(
    agency_id  uuid        NOT NULL,
    minute     timestamptz NOT NULL,
    device_ids uuid[]      NOT NULL
);
CREATE INDEX telemetry_touched_minute_idx ON telemetry_touched (agency_id, minute);
-- The worker takes the oldest marks first, across agencies.
CREATE INDEX telemetry_touched_oldest_idx ON telemetry_touched (minute);

DO
$$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['telemetry_minutes', 'telemetry_touched'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY agency_isolation ON %I
            USING (current_setting('eriop.all_agencies', true) = 'on'
                   OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid)
            WITH CHECK (current_setting('eriop.all_agencies', true) = 'on'
                   OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid)$p$, t);
    END LOOP;
END
$$;
