CREATE INDEX devices_agency_idx ON devices (agency_id, name);
DROP INDEX devices_agency_page_idx;
