-- Store order for auditors (issue 15, item 1): a cursor over the audit trail must never skip
-- an event that commits after the cursor was handed out. recorded_at is taken at insert, not
-- at commit, and a bigserial position is handed out at insert too: a transaction that inserts
-- first and commits last would land behind a cursor already given (DESIGN.md rule 4).
--
-- So each event carries the id of the transaction that stored it (xid8, as a bigint: it
-- counts up, epoch included, and never wraps) and a position within the store. Readers order
-- by (transaction_id, position) and show only events of transactions older than the oldest
-- one still running (pg_snapshot_xmin of their snapshot): every transaction below that
-- horizon has committed or aborted, and every transaction still to commit has a larger id,
-- so nothing can later appear before an event already read.
--
-- Events stored before this migration share its transaction id and keep their physical
-- order, the order they were inserted in.
ALTER TABLE events
    ADD COLUMN transaction_id bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    ADD COLUMN position bigint GENERATED ALWAYS AS IDENTITY;

CREATE UNIQUE INDEX events_store_order_idx ON events (transaction_id, position);
-- Auditors' filters: who, in which agency, through which request.
CREATE INDEX events_agency_order_idx ON events ((metadata ->> 'agency_id'), transaction_id, position);
CREATE INDEX events_actor_idx ON events ((metadata ->> 'actor'), transaction_id, position);
CREATE INDEX events_request_id_idx ON events ((metadata ->> 'request_id'));
