-- Agency isolation, the second time (DESIGN.md rule 7): besides the agency filter in every
-- query, PostgreSQL itself refuses rows of another agency. The services act as eriop_app
-- (`SET ROLE`, see ERIOP_DATABASE_ROLE), which is neither superuser nor BYPASSRLS, and say in
-- each transaction which agency they act for: `eriop.agency_id`, or `eriop.all_agencies = on`
-- for the projections and the platform's own views.
DO
$$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'eriop_app') THEN
        CREATE ROLE eriop_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO eriop_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO eriop_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO eriop_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO eriop_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO eriop_app;

-- Partitions are created by the projections service: as the owner, not as eriop_app.
ALTER FUNCTION eriop_ensure_telemetry_partitions(date, integer) SECURITY DEFINER;

ALTER TABLE agencies ENABLE ROW LEVEL SECURITY;
ALTER TABLE agencies FORCE ROW LEVEL SECURITY;
CREATE POLICY agency_isolation ON agencies
    USING (current_setting('eriop.all_agencies', true) = 'on'
           OR id = nullif(current_setting('eriop.agency_id', true), '')::uuid)
    WITH CHECK (current_setting('eriop.all_agencies', true) = 'on'
           OR id = nullif(current_setting('eriop.agency_id', true), '')::uuid);

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY agency_isolation ON users
    USING (current_setting('eriop.all_agencies', true) = 'on'
           OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid)
    WITH CHECK (current_setting('eriop.all_agencies', true) = 'on'
           OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid);
