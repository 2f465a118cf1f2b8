-- The relay is no longer woken by NOTIFY from the transaction that stores events (issue 13).
-- PostgreSQL serializes the commits of notifying transactions: PreCommit_Notify takes a
-- database-wide lock and holds it until the commit's WAL is on disk, so every command's
-- commit waited for the flush of the one before it, and concurrent commands could not share
-- a flush (pgbench on the benchmark machine, 16 clients inserting one row: 11,100-11,800
-- transactions/s plain, 2,400-2,700/s with a pg_notify in each).
--
-- The gateway that stored the events now signals the relay after the commit, on core NATS
-- (`eriop.stored`, gateway/src/services/event_log.rs). The relay still polls every second,
-- and `relay_pending` is still written in the storing transaction (0002), so an event stored
-- by anything else (a command-line tool, SQL) is relayed all the same, a second later.
DROP TRIGGER events_relay_notify ON events;
DROP FUNCTION eriop_relay_notify();
