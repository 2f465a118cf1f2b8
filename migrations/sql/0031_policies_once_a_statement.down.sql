-- The policies as 0008-0030 wrote them: the settings read for each row.
DO
$$
DECLARE
    t   text;
    key text;
BEGIN
    FOR t, key IN
        SELECT c.relname, CASE WHEN c.relname = 'agencies' THEN 'id' ELSE 'agency_id' END
          FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE p.polname = 'agency_isolation' AND n.nspname = 'public'
    LOOP
        EXECUTE format($p$ALTER POLICY agency_isolation ON public.%1$I
            USING (current_setting('eriop.all_agencies', true) = 'on'
                   OR %2$I = nullif(current_setting('eriop.agency_id', true), '')::uuid)
            WITH CHECK (current_setting('eriop.all_agencies', true) = 'on'
                   OR %2$I = nullif(current_setting('eriop.agency_id', true), '')::uuid)$p$,
            t, key);
    END LOOP;
END
$$;
