DROP INDEX IF EXISTS events_request_id_idx;
DROP INDEX IF EXISTS events_actor_idx;
DROP INDEX IF EXISTS events_agency_order_idx;
DROP INDEX IF EXISTS events_store_order_idx;
ALTER TABLE events DROP COLUMN IF EXISTS position, DROP COLUMN IF EXISTS transaction_id;
