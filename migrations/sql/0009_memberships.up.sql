-- Memberships of users in agencies other than their own, with the roles held there. Under
-- the same row-level security as the other read models: an agency sees its members.
CREATE TABLE user_memberships
(
    user_id   uuid   NOT NULL,
    agency_id uuid   NOT NULL,
    roles     text[] NOT NULL,
    PRIMARY KEY (user_id, agency_id)
);

ALTER TABLE user_memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY agency_isolation ON user_memberships
    USING (current_setting('eriop.all_agencies', true) = 'on'
           OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid)
    WITH CHECK (current_setting('eriop.all_agencies', true) = 'on'
           OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid);
