-- The registry events stay in the append-only event store (history is immutable); migrated
-- up again, 0013 finds each registry's aggregate there and reserves its id anew.
DROP TABLE registries;
DROP TABLE registry_ids;
