-- Erasure (issue 15, item 6): a person whose data key was deleted shows as 'erased' in the
-- users read model, their sealed email and name blanked there (the events keep the sealed
-- values, which no key opens any more).
ALTER TABLE users DROP CONSTRAINT users_status_check;
ALTER TABLE users ADD CONSTRAINT users_status_check CHECK (status IN ('active', 'deactivated', 'erased'));
