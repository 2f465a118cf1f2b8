-- Back to the SQL bodies of 0016 and 0024 (the same answers, parsed at each call).
CREATE OR REPLACE FUNCTION eriop_caller_standing(caller uuid, agency uuid)
    RETURNS TABLE (suspended boolean, known boolean, roles text[])
    LANGUAGE sql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    SET eriop.all_agencies = 'on'
AS
$$
SELECT coalesce((SELECT a.status = 'suspended' FROM public.agencies a WHERE a.id = $2), false),
       EXISTS (SELECT 1 FROM public.users u WHERE u.id = $1),
       coalesce((SELECT u.roles FROM public.users u WHERE u.id = $1 AND u.agency_id = $2),
                (SELECT m.roles FROM public.user_memberships m
                  WHERE m.user_id = $1 AND m.agency_id = $2))
$$;

CREATE OR REPLACE FUNCTION eriop_agency_suspended(agency uuid)
    RETURNS boolean
    LANGUAGE sql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    SET eriop.all_agencies = 'on'
AS
$$
SELECT coalesce((SELECT status = 'suspended' FROM public.agencies WHERE id = agency), false)
$$;
