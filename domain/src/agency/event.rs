use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::AgencyId;

/// What happened to an agency. Names are stored as plain strings: history is immutable and
/// must still load if the naming rules change later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgencyEvent {
    AgencyCreated {
        id: AgencyId,
        name: String,
    },
    AgencyRenamed {
        name: String,
    },
    AgencySuspended,
    AgencyReactivated,
    AgencyMfaRequirementChanged {
        required: bool,
    },
    /// The most live devices the agency may have.
    AgencyDeviceQuotaSet {
        devices: u32,
    },
    /// The most device commands the agency may send a minute.
    AgencyCommandQuotaSet {
        per_minute: u32,
    },
    /// The most telemetry messages the agency's devices may send a second.
    AgencyTelemetryQuotaSet {
        per_second: u32,
    },
    /// How many days the agency's telemetry is kept (the retention job deletes older
    /// samples).
    AgencyTelemetryRetentionSet {
        days: u32,
    },
}

impl DomainEvent for AgencyEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AgencyCreated { .. } => "AgencyCreated",
            Self::AgencyRenamed { .. } => "AgencyRenamed",
            Self::AgencySuspended => "AgencySuspended",
            Self::AgencyReactivated => "AgencyReactivated",
            Self::AgencyMfaRequirementChanged { .. } => "AgencyMfaRequirementChanged",
            Self::AgencyDeviceQuotaSet { .. } => "AgencyDeviceQuotaSet",
            Self::AgencyCommandQuotaSet { .. } => "AgencyCommandQuotaSet",
            Self::AgencyTelemetryQuotaSet { .. } => "AgencyTelemetryQuotaSet",
            Self::AgencyTelemetryRetentionSet { .. } => "AgencyTelemetryRetentionSet",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
