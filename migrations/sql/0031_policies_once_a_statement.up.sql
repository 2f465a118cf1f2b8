-- Row-level security evaluated once a statement, not once a row (issue 13). The policies of
-- 0008-0030 called current_setting() for every row they looked at, and cast the agency id
-- from text each time: in a profile of `GET /api/v1/devices` (a page of 100 devices, joined
-- with their classes and activity) that was about 15% of PostgreSQL's CPU (GUC lookups,
-- uuid_in), and ingest paid one lookup a sample. Wrapped in scalar subqueries, the settings
-- become initplans: read once when the statement first needs them, then compared as
-- parameters. Same policies, same answers: only when the settings are read changes, and
-- nothing sets them in the middle of a statement (a transaction sets them when it begins;
-- SECURITY DEFINER functions set theirs for their own statements).
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
            USING ((SELECT current_setting('eriop.all_agencies', true) = 'on')
                   OR %2$I = (SELECT nullif(current_setting('eriop.agency_id', true), '')::uuid))
            WITH CHECK ((SELECT current_setting('eriop.all_agencies', true) = 'on')
                   OR %2$I = (SELECT nullif(current_setting('eriop.agency_id', true), '')::uuid))$p$,
            t, key);
    END LOOP;
END
$$;
