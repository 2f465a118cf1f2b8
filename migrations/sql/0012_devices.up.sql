-- The device registry (issue: devices and telemetry): read models fed by the DeviceClass and
-- Device aggregates, the platform-wide reservation of Fundamentum identities, the devices'
-- last activity (from the DEVICE stream) and their latest attribute values (from TELEMETRY).

CREATE TABLE device_classes
(
    id                 uuid PRIMARY KEY,
    agency_id          uuid        NOT NULL,
    name               text        NOT NULL,
    functions          jsonb       NOT NULL,
    offline_after_secs integer     NOT NULL,
    created_at         timestamptz NOT NULL,
    version            bigint      NOT NULL
);
CREATE INDEX device_classes_agency_idx ON device_classes (agency_id, name);

CREATE TABLE devices
(
    id                 uuid PRIMARY KEY,
    agency_id          uuid        NOT NULL,
    class_id           uuid        NOT NULL,
    registry           text        NOT NULL,
    serial             text        NOT NULL,
    name               text        NOT NULL,
    functions          jsonb       NOT NULL,
    offline_after_secs integer,
    decommissioned     boolean     NOT NULL DEFAULT false,
    online             boolean     NOT NULL DEFAULT false,
    status_changed_at  timestamptz,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    version            bigint      NOT NULL
);
CREATE INDEX devices_agency_idx ON devices (agency_id, name);
CREATE INDEX devices_fundamentum_idx ON devices (registry, serial) WHERE NOT decommissioned;

-- A Fundamentum identity names one live device on the whole platform. The gateway reserves
-- it before registering (a unique key, not a read model: two agencies racing for the same
-- serial cannot both win) and releases it when the device is decommissioned.
CREATE TABLE device_identities
(
    registry  text NOT NULL,
    serial    text NOT NULL,
    device_id uuid NOT NULL UNIQUE,
    PRIMARY KEY (registry, serial)
);

-- Fundamentum's device_command_id is a number: one sequence for the platform.
CREATE SEQUENCE device_command_ids;

CREATE TABLE device_commands
(
    command_id bigint PRIMARY KEY,
    device_id  uuid        NOT NULL,
    agency_id  uuid        NOT NULL,
    request    jsonb       NOT NULL,
    status     text        NOT NULL,
    message    text,
    issued_at  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX device_commands_device_idx ON device_commands (device_id, command_id DESC);

-- Written by the liveness monitor from the DEVICE stream (not events: a heartbeat is not a
-- change of state). After a restart, liveness is reconciled from last_activity.
CREATE TABLE device_activity
(
    device_id      uuid PRIMARY KEY,
    agency_id      uuid        NOT NULL,
    last_activity  timestamptz NOT NULL,
    last_heartbeat timestamptz,
    uptime_secs    bigint
);

-- Each attribute's most recent value by device time: a late sample never replaces it.
CREATE TABLE device_latest
(
    device_id    uuid             NOT NULL,
    function_id  text             NOT NULL,
    attribute    text             NOT NULL,
    agency_id    uuid             NOT NULL,
    time         timestamptz      NOT NULL,
    value_double double precision,
    value_text   text,
    value_json   jsonb,
    PRIMARY KEY (device_id, function_id, attribute)
);

DO
$$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['device_classes', 'devices', 'device_commands', 'device_activity', 'device_latest'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY agency_isolation ON %I
            USING (current_setting('eriop.all_agencies', true) = 'on'
                   OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid)
            WITH CHECK (current_setting('eriop.all_agencies', true) = 'on'
                   OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid)$p$, t);
    END LOOP;
END
$$;
