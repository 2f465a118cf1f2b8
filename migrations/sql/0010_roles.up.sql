-- The roles agencies define (the built-in roles are not stored: they exist everywhere).
CREATE TABLE roles
(
    id          uuid PRIMARY KEY,
    agency_id   uuid        NOT NULL,
    name        text        NOT NULL,
    permissions text[]      NOT NULL,
    deleted     boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL
);

CREATE INDEX roles_agency_idx ON roles (agency_id, name);

ALTER TABLE roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE roles FORCE ROW LEVEL SECURITY;
CREATE POLICY agency_isolation ON roles
    USING (current_setting('eriop.all_agencies', true) = 'on'
           OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid)
    WITH CHECK (current_setting('eriop.all_agencies', true) = 'on'
           OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid);
