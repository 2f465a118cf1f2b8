-- Every aggregate snapshot is dropped, to be made again from the events (which are the
-- truth; a snapshot only shortens loading). cqrs-es 0.5 applied a commit's events twice to the
-- snapshot it wrote at each 20th (agencies, users) or 50th (devices) event: an event whose
-- application is not idempotent was wrong in it. `MfaEnabled` applied twice left the user no
-- TOTP secret (MFA off until the next snapshot), `RoleAssigned` a duplicate role. The gateway
-- now writes snapshots itself (gateway/src/services/event_log.rs). Until an aggregate's next
-- snapshot is written, it is loaded from all its events: slower at first, right at once.
DELETE FROM snapshots;
