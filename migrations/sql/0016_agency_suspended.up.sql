-- The suspension check of every authenticated request, in one round trip (issue 13: API
-- reads paid BEGIN, set_config, SELECT and COMMIT before the handler ran). The function
-- answers one boolean about one agency and nothing else: it reads `agencies` for every
-- agency (its SET clause lasts only while it runs), so the app role needs no transaction
-- acting for all agencies to ask. Pinned search_path, as for every SECURITY DEFINER here.
CREATE FUNCTION eriop_agency_suspended(agency uuid)
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
REVOKE ALL ON FUNCTION eriop_agency_suspended(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION eriop_agency_suspended(uuid) TO eriop_app;
