DO
$$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'telemetry'::regclass) THEN
        DROP POLICY IF EXISTS agency_isolation ON telemetry;
        ALTER TABLE telemetry NO FORCE ROW LEVEL SECURITY;
        ALTER TABLE telemetry DISABLE ROW LEVEL SECURITY;
    END IF;
END
$$;
