-- What every authenticated request asks before its handler runs, in one round trip (issue
-- 13): whether the caller's agency is suspended (as 0016's function answers), whether the
-- read models know the user, and the user's roles in that agency now (its own agency's, else
-- a membership's). Before, the gateway asked the first here and the rest in a transaction
-- acting for every agency: BEGIN, set_config, SELECT and ROLLBACK on every request.
--
-- Like 0016's function it answers about one user in one agency and nothing else, reading
-- `agencies`, `users` and `user_memberships` for every agency while it runs (its SET clause
-- lasts only that long). Pinned search_path, as for every SECURITY DEFINER here.
CREATE FUNCTION eriop_caller_standing(caller uuid, agency uuid)
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
REVOKE ALL ON FUNCTION eriop_caller_standing(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION eriop_caller_standing(uuid, uuid) TO eriop_app;
