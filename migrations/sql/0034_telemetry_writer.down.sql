-- The writer loses its grant on this database's telemetry. The role itself stays: roles
-- belong to the cluster, and other databases may use it.
DO
$$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'eriop_telemetry_writer') THEN
        REVOKE ALL ON telemetry FROM eriop_telemetry_writer;
    END IF;
END
$$;
