-- Read your writes in one round trip (issue 13). A command's answer waits until the read
-- model shows the version it stored, looking again after 1, 2, 4, then every 8 ms. Each look
-- was a transaction acting for every agency: BEGIN and set_config, the SELECT, ROLLBACK, so
-- three round trips and four statements, three or four times a command (pg_stat_statements
-- during the command benchmark: 5 BEGIN and 4 ROLLBACK a command). This function answers
-- the one number in one statement.
--
-- It answers the version of one row, found by its id, and nothing else: no agency's data
-- leaves it (the caller already holds the id, having just written it). It reads every
-- agency's rows while it runs (its SET clause lasts only that long), as 0024's function does.
-- Pinned search_path, as for every SECURITY DEFINER here. Plans are kept per connection
-- (PL/pgSQL, static statements).
CREATE FUNCTION eriop_read_model_version(aggregate_type text, row_id uuid)
    RETURNS bigint
    LANGUAGE plpgsql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    SET eriop.all_agencies = 'on'
AS
$$
BEGIN
    CASE aggregate_type
        WHEN 'agency' THEN RETURN (SELECT r.version FROM public.agencies r WHERE r.id = row_id);
        WHEN 'user' THEN RETURN (SELECT r.version FROM public.users r WHERE r.id = row_id);
        WHEN 'role' THEN RETURN (SELECT r.version FROM public.roles r WHERE r.id = row_id);
        WHEN 'device_class' THEN
            RETURN (SELECT r.version FROM public.device_classes r WHERE r.id = row_id);
        WHEN 'device' THEN RETURN (SELECT r.version FROM public.devices r WHERE r.id = row_id);
        WHEN 'registry' THEN RETURN (SELECT r.version FROM public.registries r WHERE r.id = row_id);
        ELSE RAISE EXCEPTION 'no read model for aggregate type %', aggregate_type
            USING ERRCODE = 'invalid_parameter_value';
    END CASE;
END
$$;
REVOKE ALL ON FUNCTION eriop_read_model_version(text, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION eriop_read_model_version(text, uuid) TO eriop_app;
