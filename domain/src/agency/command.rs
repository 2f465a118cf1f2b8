use super::{AgencyName, AgencyStatus};
use crate::AgencyId;

/// What may be asked of an agency. Names are already parsed: a command cannot carry an
/// invalid one.
#[derive(Debug, Clone, PartialEq)]
pub enum AgencyCommand {
    Create {
        id: AgencyId,
        name: AgencyName,
    },
    Rename {
        name: AgencyName,
    },
    Suspend,
    Reactivate,
    /// A partial update (HTTP PATCH): every requested change is decided together and
    /// committed as one unit, or none is. Asking for the current value changes nothing.
    Amend {
        name: Option<AgencyName>,
        status: Option<AgencyStatus>,
        /// Whether every user of the agency must use MFA.
        mfa_required: Option<bool>,
        /// The most live devices the agency may have (a platform administrator's decision;
        /// until one is made, the platform's default, ERIOP_AGENCY_DEVICE_QUOTA).
        device_quota: Option<u32>,
        /// Device commands the agency may send a minute (ERIOP_AGENCY_COMMANDS_PER_MINUTE until set).
        command_quota: Option<u32>,
        /// Telemetry messages the agency's devices may send a second, counted by each bridge
        /// (ERIOP_AGENCY_TELEMETRY_PER_SECOND until set).
        telemetry_quota: Option<u32>,
        /// Days the agency's telemetry is kept (the platform's retention until set).
        telemetry_retention_days: Option<u32>,
    },
}

impl AgencyCommand {
    /// The command's name as recorded in event metadata.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Create { .. } => "CreateAgency",
            Self::Rename { .. } => "RenameAgency",
            Self::Suspend => "SuspendAgency",
            Self::Reactivate => "ReactivateAgency",
            Self::Amend { .. } => "AmendAgency",
        }
    }
}
