-- The checks of every authenticated request (0016, 0024) in PL/pgSQL rather than SQL, with
-- the same answers (issue 13). PostgreSQL (before 18) parses and plans a SQL function's body
-- again at every call that it cannot inline, and a SECURITY DEFINER function with SET clauses
-- is never inlined: each request paid the parsing and planning of four subqueries. A
-- PL/pgSQL function keeps its plans for the life of the connection. Measured with pgbench on
-- this machine (one client, prepared): 0.33-0.35 ms a call as SQL, 0.16-0.19 ms as PL/pgSQL.
--
-- Same signatures, attributes, owner and grants (CREATE OR REPLACE keeps them).
CREATE OR REPLACE FUNCTION eriop_caller_standing(caller uuid, agency uuid)
    RETURNS TABLE (suspended boolean, known boolean, roles text[])
    LANGUAGE plpgsql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    SET eriop.all_agencies = 'on'
AS
$$
BEGIN
    RETURN QUERY
    SELECT coalesce((SELECT a.status = 'suspended' FROM public.agencies a WHERE a.id = agency), false),
           EXISTS (SELECT 1 FROM public.users u WHERE u.id = caller),
           coalesce((SELECT u.roles FROM public.users u WHERE u.id = caller AND u.agency_id = agency),
                    (SELECT m.roles FROM public.user_memberships m
                      WHERE m.user_id = caller AND m.agency_id = agency));
END
$$;

CREATE OR REPLACE FUNCTION eriop_agency_suspended(agency uuid)
    RETURNS boolean
    LANGUAGE plpgsql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    SET eriop.all_agencies = 'on'
AS
$$
BEGIN
    RETURN coalesce((SELECT a.status = 'suspended' FROM public.agencies a WHERE a.id = agency), false);
END
$$;
