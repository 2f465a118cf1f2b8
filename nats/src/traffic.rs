//! What travels on `TELEMETRY`, `DEVICE` and `COMMANDS`: the bridge's output and the
//! downlink's input, as typed messages shared by producer and consumers.

use eriop_domain::device::talq::AttributeLogData;
use eriop_domain::device::CommandStatus;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One message on `TELEMETRY` (`eriop.telemetry.{agency}`): a batch of TALQ
/// `AttributeLogData` records of one agency, as the bridge's group commit gathered them
/// (DESIGN.md rule 6). Integrations read pure TALQ records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TelemetryBatch {
    pub agency_id: Uuid,
    pub records: Vec<AttributeLogData>,
}

/// `eriop.device.{agency}.{device}.activity`: the device was heard from (any message), with
/// its uptime when the message was a heartbeat. One per device per bridge batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceActivity {
    pub agency_id: Uuid,
    pub device_id: Uuid,
    /// When the bridge received the last message (Unix milliseconds).
    pub at_ms: i64,
    /// Set when a heartbeat was among the messages.
    pub heartbeat_at_ms: Option<i64>,
    pub uptime_secs: Option<u64>,
}

/// `eriop.device.{agency}.{device}.command-status`: a device's reply on `commands/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommandReply {
    pub agency_id: Uuid,
    pub device_id: Uuid,
    pub command_id: i64,
    pub status: ReplyStatus,
    /// The device's words, at most 4,096 characters, no NUL.
    pub message: Option<String>,
}

/// What a device said of a command, as Fundamentum spells it. Anything else is refused by
/// the bridge (to the DLQ, with the status as sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReplyStatus {
    Ongoing,
    Success,
    Failure,
    Retry,
}

impl ReplyStatus {
    /// `raw` as a device sent it, if it is one of the four.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "ongoing" => Some(Self::Ongoing),
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            "retry" => Some(Self::Retry),
            _ => None,
        }
    }
}

impl From<ReplyStatus> for CommandStatus {
    fn from(status: ReplyStatus) -> Self {
        match status {
            ReplyStatus::Ongoing => Self::Ongoing,
            ReplyStatus::Success => Self::Success,
            ReplyStatus::Failure => Self::Failure,
            ReplyStatus::Retry => Self::Retry,
        }
    }
}

/// The kinds of `DEVICE` subjects.
pub const ACTIVITY: &str = "activity";
pub const COMMAND_STATUS: &str = "command-status";

/// One message on `COMMANDS` (`eriop.commands.{agency}.{device}`): what the bridge publishes
/// to the device's Fundamentum `commands` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DownlinkCommand {
    pub agency_id: Uuid,
    pub device_id: Uuid,
    pub registry: String,
    pub serial: String,
    pub command_id: i64,
    pub command_short_name: String,
    pub parameters: serde_json::Value,
}

impl DownlinkCommand {
    /// The JetStream de-duplication id: a command forwarded twice is sent once. Globally
    /// unique (DESIGN.md rule 11): the device's UUID with the command's number, so a database
    /// made anew, or a second deployment on the same NATS account, whose command numbers
    /// start again at 1, never has a new command taken for an old one.
    pub fn message_id(&self) -> String {
        format!("command:{}:{}", self.device_id, self.command_id)
    }
}
