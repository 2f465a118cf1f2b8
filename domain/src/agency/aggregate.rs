use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{AgencyCommand, AgencyEvent, AgencyName};
use crate::AgencyId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgencyStatus {
    Active,
    Suspended,
}

impl AgencyStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }
}

/// Why a command was refused. Each maps to a distinct HTTP answer at the gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgencyError {
    #[error("an agency with this id already exists")]
    AlreadyExists,
    #[error("no such agency")]
    NotFound,
    #[error("the agency is already suspended")]
    AlreadySuspended,
    #[error("the agency is not suspended")]
    NotSuspended,
}

/// The write-side state of an agency: just what its rules need.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agency {
    id: Option<AgencyId>,
    name: String,
    status: Option<AgencyStatus>,
    #[serde(default)]
    mfa_required: bool,
    #[serde(default)]
    device_quota: Option<u32>,
    #[serde(default)]
    command_quota: Option<u32>,
    #[serde(default)]
    telemetry_quota: Option<u32>,
    #[serde(default)]
    telemetry_retention_days: Option<u32>,
}

impl Agency {
    pub fn status(&self) -> Option<AgencyStatus> {
        self.status
    }

    fn existing_status(&self) -> Result<AgencyStatus, AgencyError> {
        self.status.ok_or(AgencyError::NotFound)
    }

    /// The events that `command` produces from this state, or why it is refused.
    /// Kept synchronous and free of the event sink so the rules read as a plain function.
    pub fn decide(&self, command: AgencyCommand) -> Result<Vec<AgencyEvent>, AgencyError> {
        match command {
            AgencyCommand::Create { id, name } => match self.status {
                Some(_) => Err(AgencyError::AlreadyExists),
                None => Ok(vec![AgencyEvent::AgencyCreated {
                    id,
                    name: name.as_str().to_owned(),
                }]),
            },
            AgencyCommand::Rename { name } => {
                self.existing_status()?;
                Ok(self.rename(&name).into_iter().collect())
            }
            AgencyCommand::Suspend => match self.existing_status()? {
                AgencyStatus::Suspended => Err(AgencyError::AlreadySuspended),
                AgencyStatus::Active => Ok(vec![AgencyEvent::AgencySuspended]),
            },
            AgencyCommand::Reactivate => match self.existing_status()? {
                AgencyStatus::Active => Err(AgencyError::NotSuspended),
                AgencyStatus::Suspended => Ok(vec![AgencyEvent::AgencyReactivated]),
            },
            AgencyCommand::Amend {
                name,
                status,
                mfa_required,
                device_quota,
                command_quota,
                telemetry_quota,
                telemetry_retention_days,
            } => {
                let current = self.existing_status()?;
                let mut events: Vec<AgencyEvent> =
                    name.iter().filter_map(|n| self.rename(n)).collect();
                match (current, status) {
                    (AgencyStatus::Active, Some(AgencyStatus::Suspended)) => {
                        events.push(AgencyEvent::AgencySuspended)
                    }
                    (AgencyStatus::Suspended, Some(AgencyStatus::Active)) => {
                        events.push(AgencyEvent::AgencyReactivated)
                    }
                    _ => {}
                }
                if let Some(required) = mfa_required.filter(|r| *r != self.mfa_required) {
                    events.push(AgencyEvent::AgencyMfaRequirementChanged { required });
                }
                if let Some(devices) = device_quota.filter(|q| Some(*q) != self.device_quota) {
                    events.push(AgencyEvent::AgencyDeviceQuotaSet { devices });
                }
                if let Some(per_minute) = command_quota.filter(|q| Some(*q) != self.command_quota) {
                    events.push(AgencyEvent::AgencyCommandQuotaSet { per_minute });
                }
                if let Some(per_second) =
                    telemetry_quota.filter(|q| Some(*q) != self.telemetry_quota)
                {
                    events.push(AgencyEvent::AgencyTelemetryQuotaSet { per_second });
                }
                if let Some(days) =
                    telemetry_retention_days.filter(|d| Some(*d) != self.telemetry_retention_days)
                {
                    events.push(AgencyEvent::AgencyTelemetryRetentionSet { days });
                }
                Ok(events)
            }
        }
    }

    /// Renaming to the current name records nothing.
    fn rename(&self, name: &AgencyName) -> Option<AgencyEvent> {
        (self.name != name.as_str()).then(|| AgencyEvent::AgencyRenamed {
            name: name.as_str().to_owned(),
        })
    }
}

impl Aggregate for Agency {
    const TYPE: &'static str = "agency";
    type Command = AgencyCommand;
    type Event = AgencyEvent;
    type Error = AgencyError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            AgencyEvent::AgencyCreated { id, name } => {
                self.id = Some(id);
                self.name = name;
                self.status = Some(AgencyStatus::Active);
            }
            AgencyEvent::AgencyRenamed { name } => self.name = name,
            AgencyEvent::AgencySuspended => self.status = Some(AgencyStatus::Suspended),
            AgencyEvent::AgencyReactivated => self.status = Some(AgencyStatus::Active),
            AgencyEvent::AgencyMfaRequirementChanged { required } => self.mfa_required = required,
            AgencyEvent::AgencyDeviceQuotaSet { devices } => self.device_quota = Some(devices),
            AgencyEvent::AgencyCommandQuotaSet { per_minute } => {
                self.command_quota = Some(per_minute)
            }
            AgencyEvent::AgencyTelemetryRetentionSet { days } => {
                self.telemetry_retention_days = Some(days)
            }
            AgencyEvent::AgencyTelemetryQuotaSet { per_second } => {
                self.telemetry_quota = Some(per_second)
            }
        }
    }
}
