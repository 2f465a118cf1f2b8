-- Back to 0013: the function as 0004 and 0008 made it, the partitions granted again.
CREATE OR REPLACE FUNCTION eriop_ensure_telemetry_partitions(from_day date, days integer)
    RETURNS integer
    LANGUAGE plpgsql
    SECURITY DEFINER
AS
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
    part regclass;
BEGIN
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'telemetry'::regclass LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO eriop_app', part);
    END LOOP;
END
$$;
