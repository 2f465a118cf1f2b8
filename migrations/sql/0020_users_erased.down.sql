-- The read model only: a rebuild after migrating up again restores 'erased' from the events.
UPDATE users SET status = 'deactivated' WHERE status = 'erased';
ALTER TABLE users DROP CONSTRAINT users_status_check;
ALTER TABLE users ADD CONSTRAINT users_status_check CHECK (status IN ('active', 'deactivated'));
