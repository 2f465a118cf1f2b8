DROP TRIGGER IF EXISTS events_relay_notify ON events;
DROP TRIGGER IF EXISTS events_relay_enqueue ON events;
DROP FUNCTION IF EXISTS eriop_relay_notify();
DROP FUNCTION IF EXISTS eriop_relay_enqueue();
DROP TABLE IF EXISTS relay_pending;
