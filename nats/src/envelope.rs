//! The form in which a stored event travels on the `EVENTS` stream: the event store's row,
//! whole, so that a subscriber or an auditor sees exactly what the store holds (hash
//! included) and can check it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One message on `EVENTS` (`eriop.events.{aggregate_type}.{aggregate_id}`): an event as
/// the event store holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StoredEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: HashMap<String, String>,
    /// When the store committed the event (RFC 3339).
    pub recorded_at: String,
    /// Hex SHA-256 chaining this event to the previous one of its aggregate.
    pub hash: String,
}

impl StoredEvent {
    /// The JetStream de-duplication id (DESIGN.md rule 4): the same event published twice
    /// within the stream's duplicate window is stored once.
    pub fn message_id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.aggregate_type, self.aggregate_id, self.sequence
        )
    }
}
