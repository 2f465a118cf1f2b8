//! The metadata every stored event carries (DESIGN.md rule 1). The event store is the audit
//! trail, so who did what, in which agency, through which request, and when, is recorded
//! with each event. Values are strings because that is what cqrs-es stores.

/// Id of the user (or service account, or `bootstrap`) that issued the command.
pub const ACTOR: &str = "actor";
/// The agency the change belongs to.
pub const AGENCY_ID: &str = "agency_id";
/// The `x-request-id` of the HTTP request (or message) that caused the change.
pub const REQUEST_ID: &str = "request_id";
/// The command's name, e.g. `CreateAgency`.
pub const COMMAND: &str = "command";
/// When the command was handled, RFC 3339 in UTC.
pub const TIME: &str = "time";
/// Hex SHA-256 of the previous event of the same aggregate, written by the event store
/// itself (see migrations/sql/0001_event_store.up.sql): empty for the first event.
pub const PREVIOUS_HASH: &str = "previous_hash";

/// Every key a command's caller must provide.
pub const REQUIRED: [&str; 5] = [ACTOR, AGENCY_ID, REQUEST_ID, COMMAND, TIME];
