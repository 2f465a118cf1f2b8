-- Row-level security has no side door (issue: identity and tenancy hardening).
--
-- A partition named directly is not filtered by its parent's policies: as the app role,
-- `SELECT count(*) FROM telemetry_20261201` counted every agency's rows. Partitions are
-- storage, not an interface: the app role keeps no privilege on them (it reads and writes
-- `telemetry`, whose policies apply, and PostgreSQL checks privileges on the parent only).
-- Default privileges granted each new partition to the app role, so the function that
-- creates them takes the grant back at once. It is SECURITY DEFINER: its search_path is
-- pinned, so that no object a caller creates can stand in for one it uses.
DO
$$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'telemetry'::regclass LOOP
        EXECUTE format('REVOKE ALL ON %s FROM eriop_app', part);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION eriop_ensure_telemetry_partitions(from_day date, days integer)
    RETURNS integer
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
AS
$$
DECLARE
    day     date;
    created integer := 0;
    part    text;
BEGIN
    -- A hypertable manages its own chunks.
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'public.telemetry'::regclass) THEN
        RETURN 0;
    END IF;
    FOR i IN 0 .. days - 1 LOOP
        day := from_day + i;
        part := format('telemetry_%s', to_char(day, 'YYYYMMDD'));
        IF to_regclass(format('public.%I', part)) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE public.%I PARTITION OF public.telemetry FOR VALUES FROM (%L) TO (%L)',
                               part, day::timestamptz, (day + 1)::timestamptz);
                EXECUTE format('REVOKE ALL ON public.%I FROM eriop_app', part);
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
