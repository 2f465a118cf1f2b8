-- Fundamentum registries belong to agencies (DESIGN.md rule 7): the `registries` read model
-- of the Registry aggregate, and the assignment of the registries already in use.
--
-- A registry is assigned to one agency by a platform administrator; only that agency
-- registers devices under it, and the bridge keeps a device's messages only while its
-- registry belongs to the device's agency. An unassigned registry keeps its row with no
-- agency (its version goes on counting events).

CREATE TABLE registries
(
    registry    text PRIMARY KEY,
    -- The aggregate id (registry_ids).
    id          uuid        NOT NULL UNIQUE,
    agency_id   uuid,
    assigned_at timestamptz,
    version     bigint      NOT NULL
);
CREATE INDEX registries_agency_idx ON registries (agency_id, registry);

ALTER TABLE registries ENABLE ROW LEVEL SECURITY;
ALTER TABLE registries FORCE ROW LEVEL SECURITY;
CREATE POLICY agency_isolation ON registries
    USING (current_setting('eriop.all_agencies', true) = 'on'
           OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid)
    WITH CHECK (current_setting('eriop.all_agencies', true) = 'on'
           OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON registries TO eriop_app;

-- One aggregate per registry name: its id, reserved at the first assignment (a unique key,
-- not a read model, like device_identities). Random, not derived from the name: ids that
-- cross NATS are unique (DESIGN.md rule 11), so a database made anew, or another deployment
-- on the same NATS account, never has its events taken for duplicates of older ones.
CREATE TABLE registry_ids
(
    registry text PRIMARY KEY,
    id       uuid NOT NULL UNIQUE
);
GRANT SELECT, INSERT ON registry_ids TO eriop_app;

-- The registries of live devices go to their devices' agency, as events (the audit trail
-- says who: this migration) and as rows (so the bridge keeps ingesting across the upgrade;
-- the projection finds them applied). Where devices of several agencies shared a registry,
-- the agency of the oldest device gets it: the others' devices must move to a registry of
-- their own (their messages go to DLQ until then), and a NOTICE names the registry.
DO
$$
DECLARE
    r      record;
    shared text;
    rid    uuid;
    t      text := to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
BEGIN
    FOR r IN SELECT DISTINCT ON (registry) registry, agency_id
               FROM devices
              WHERE NOT decommissioned
              ORDER BY registry, created_at, id
    LOOP
        -- Migrated up, down and up again: the registry's aggregate is in the store already.
        SELECT aggregate_id::uuid INTO rid FROM events
         WHERE aggregate_type = 'registry' AND payload -> 'RegistryAssigned' ->> 'registry' = r.registry
         LIMIT 1;
        rid := coalesce(rid, gen_random_uuid());
        INSERT INTO registry_ids (registry, id) VALUES (r.registry, rid);
        INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                            payload, metadata, hash)
        VALUES ('registry', rid::text, 1, 'RegistryAssigned', '1.0',
                jsonb_build_object('RegistryAssigned',
                                   jsonb_build_object('registry', r.registry, 'agency_id', r.agency_id)),
                jsonb_build_object('actor', 'migration:0013_registries', 'agency_id', r.agency_id::text,
                                   'request_id', 'migration:0013_registries', 'command', 'AssignRegistry',
                                   'time', t),
                '\x'::bytea)
        ON CONFLICT DO NOTHING;
        INSERT INTO registries (registry, id, agency_id, assigned_at, version)
        VALUES (r.registry, rid, r.agency_id, t::timestamptz, 1)
        ON CONFLICT DO NOTHING;
    END LOOP;
    FOR shared IN SELECT registry FROM devices WHERE NOT decommissioned
                   GROUP BY registry HAVING count(DISTINCT agency_id) > 1
    LOOP
        RAISE NOTICE 'registry % had devices of several agencies: it now belongs to one of them', shared;
    END LOOP;
END
$$;
