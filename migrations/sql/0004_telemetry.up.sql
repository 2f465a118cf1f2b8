-- The telemetry model (DESIGN.md, "Telemetry model"). Natural key (device_id, function_id,
-- attribute, time): a sample redelivered after a crash lands once.
--
-- With TimescaleDB available: a hypertable with compression and retention policies.
-- Without it (plain PostgreSQL, as on the build machines): native range partitions by day,
-- created ahead of time by eriop_ensure_telemetry_partitions(), and a default partition
-- that catches late or far-future samples, so no insert ever fails for want of a partition.

CREATE FUNCTION eriop_ensure_telemetry_partitions(from_day date, days integer)
    RETURNS integer
    LANGUAGE plpgsql AS
$$
DECLARE
    day     date;
    created integer := 0;
    part    text;
BEGIN
    -- A hypertable manages its own chunks.
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'telemetry'::regclass) THEN
        RETURN 0;
    END IF;
    FOR i IN 0 .. days - 1 LOOP
        day := from_day + i;
        part := format('telemetry_%s', to_char(day, 'YYYYMMDD'));
        IF to_regclass(part) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF telemetry FOR VALUES FROM (%L) TO (%L)',
                               part, day::timestamptz, (day + 1)::timestamptz);
                created := created + 1;
            EXCEPTION WHEN check_violation THEN
                -- The default partition already holds rows of that day: leave them there
                -- (they stay queryable) rather than fail the caller.
                RAISE NOTICE 'telemetry partition % skipped: the default partition holds rows of that day', part;
            END;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

DO
$$
DECLARE
    -- One definition for both paths.
    columns constant text := $columns$
        time         timestamptz      NOT NULL,
        agency_id    uuid             NOT NULL,
        device_id    uuid             NOT NULL,
        function_id  text             NOT NULL,
        attribute    text             NOT NULL,
        value_double double precision,
        value_text   text,
        value_json   jsonb,
        received_at  timestamptz      NOT NULL DEFAULT now(),
        CONSTRAINT telemetry_natural_key PRIMARY KEY (device_id, function_id, attribute, time)
    $columns$;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXECUTE format('CREATE TABLE telemetry (%s)', columns);
        PERFORM create_hypertable('telemetry', by_range('time', INTERVAL '1 day'));
        ALTER TABLE telemetry SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'agency_id, device_id',
            timescaledb.compress_orderby = 'function_id, attribute, time DESC'
        );
        PERFORM add_compression_policy('telemetry', INTERVAL '7 days');
        PERFORM add_retention_policy('telemetry', INTERVAL '400 days');
    ELSE
        EXECUTE format('CREATE TABLE telemetry (%s) PARTITION BY RANGE (time)', columns);
        CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT;
        -- Yesterday to two weeks ahead; the projections service keeps extending it.
        PERFORM eriop_ensure_telemetry_partitions(current_date - 1, 16);
    END IF;
END
$$;

CREATE INDEX telemetry_agency_time_idx ON telemetry (agency_id, time DESC);
