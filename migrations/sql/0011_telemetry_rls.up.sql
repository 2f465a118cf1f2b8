-- Telemetry rows are an agency's too: the same row-level security as the read models.
-- TimescaleDB refuses row-level security on hypertables with compression ("columnstore"),
-- so on TimescaleDB the isolation of telemetry rests on the queries' agency filter alone
-- (README, "Authorization"); on plain PostgreSQL it holds twice.
DO
$$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'telemetry'::regclass) THEN
        ALTER TABLE telemetry ENABLE ROW LEVEL SECURITY;
        ALTER TABLE telemetry FORCE ROW LEVEL SECURITY;
        CREATE POLICY agency_isolation ON telemetry
            USING (current_setting('eriop.all_agencies', true) = 'on'
                   OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid)
            WITH CHECK (current_setting('eriop.all_agencies', true) = 'on'
                   OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid);
    END IF;
END
$$;
