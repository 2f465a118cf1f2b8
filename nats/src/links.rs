//! How a service tells the others the state of a link only it holds: the bridge reports its
//! MQTT link to Redis under these keys, with a short expiry, and the gateway's readiness
//! reads them. A report older than [`LINK_REPORT_TTL`] is gone: its bridge is not running.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const LINK_REPORT_TTL: Duration = Duration::from_secs(15);

/// The key of one bridge's report.
pub fn mqtt_link_key(redis_prefix: &str, client_id: &str) -> String {
    format!("{redis_prefix}bridge:mqtt-link:{client_id}")
}

/// The keys of every bridge's report (for `SCAN MATCH`).
pub fn mqtt_link_pattern(redis_prefix: &str) -> String {
    format!("{redis_prefix}bridge:mqtt-link:*")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReport {
    pub up: bool,
    /// When the report was written (RFC 3339).
    pub at: String,
    /// When the bridge last handed over an MQTT message (RFC 3339): data flowing, not only
    /// a connection.
    #[serde(default)]
    pub last_message_at: Option<String>,
    /// Since the bridge started: MQTT messages handed over, samples published, and messages
    /// sent to `DLQ` (rejected input is counted, not only stored).
    #[serde(default)]
    pub messages: u64,
    #[serde(default)]
    pub samples: u64,
    #[serde(default)]
    pub dead_lettered: u64,
}
