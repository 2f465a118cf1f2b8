-- A page of an agency's live devices (GET /api/v1/devices: ORDER BY name, id, LIMIT and
-- OFFSET) read in order from one index, with no sort of the agency's devices (issue 13).
-- It also serves counting an agency's live devices (the device quota). It replaces the
-- index on (agency_id, name), which held decommissioned devices too.
CREATE INDEX devices_agency_page_idx ON devices (agency_id, name, id) WHERE NOT decommissioned;
DROP INDEX devices_agency_idx;
