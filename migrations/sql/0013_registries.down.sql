-- The registry events stay in the append-only event store (history is immutable); only the
-- read model and the helper go.
DROP FUNCTION eriop_registry_id(text);
DROP TABLE registries;
