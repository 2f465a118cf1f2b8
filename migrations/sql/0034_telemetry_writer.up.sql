-- The telemetry projector copies new rows straight into telemetry (issue 13): a COPY into
-- the table costs PostgreSQL about a fifth less a row than a COPY into a staging table and
-- INSERT ... SELECT (docs/BENCHMARKS.md), and the insert is most of its work at ingest.
-- PostgreSQL refuses COPY FROM into a table under row-level security ("use INSERT statements
-- instead") unless the role bypasses it. So, where telemetry is under row-level security
-- (plain PostgreSQL; a TimescaleDB hypertable has none, migration 0011), a role that
-- bypasses it and may only insert into telemetry: it can read nothing, not even the rows it
-- wrote. The policy already lets the projector write every agency's rows
-- (eriop.all_agencies), so the bypass gives nothing away; every reader stays under the
-- policies. eriop_app may SET ROLE to it (the projector does, for the COPY only, inside the
-- group's transaction); role attributes such as BYPASSRLS are never inherited, so eriop_app
-- itself stays bound by the policies.
--
-- Creating a role that bypasses row-level security takes a superuser. Migrated by another
-- role (a managed database), this does nothing and the projector keeps the staging table:
-- slower, as correct. Roles belong to the cluster: a concurrent creation or grant (two
-- databases migrated at once) is taken for what it is.
DO
$$
BEGIN
    IF (SELECT relrowsecurity FROM pg_class WHERE oid = 'telemetry'::regclass) THEN
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'eriop_telemetry_writer') THEN
                CREATE ROLE eriop_telemetry_writer NOLOGIN NOSUPERUSER NOINHERIT BYPASSRLS;
            END IF;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'eriop_telemetry_writer not created (it takes a superuser): telemetry is written through a staging table';
                RETURN;
        END;
        BEGIN
            REVOKE ALL ON telemetry FROM eriop_telemetry_writer;
            GRANT INSERT ON telemetry TO eriop_telemetry_writer;
            GRANT eriop_telemetry_writer TO eriop_app;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;
            WHEN insufficient_privilege OR undefined_object THEN
                RAISE NOTICE 'eriop_telemetry_writer not granted: telemetry is written through a staging table';
        END;
    END IF;
END
$$;
