//! The Device aggregate: registration, changes, decommissioning, liveness transitions and
//! the commands sent to it. Liveness records transitions only (online, offline), never a
//! heartbeat: the heartbeats themselves travel on the `DEVICE` stream.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CommandStatus, DeviceName, DeviceRequest, FunctionDesc, FundamentumId, OfflineAfter};
use crate::{AgencyId, Timestamp};

#[derive(Debug, Clone, PartialEq)]
pub enum DeviceCommand {
    Register {
        id: Uuid,
        agency_id: AgencyId,
        class_id: Uuid,
        functions: Vec<FunctionDesc>,
        fundamentum: FundamentumId,
        name: DeviceName,
        offline_after: Option<OfflineAfter>,
    },
    Update {
        name: Option<DeviceName>,
        /// `Some(None)`: back to the class's timeout.
        offline_after: Option<Option<OfflineAfter>>,
    },
    Decommission,
    MarkOnline {
        at: Timestamp,
    },
    MarkOffline {
        at: Timestamp,
        last_activity: Option<Timestamp>,
    },
    IssueCommand {
        command_id: i64,
        request: DeviceRequest,
    },
    RecordCommandStatus {
        command_id: i64,
        status: CommandStatus,
        message: Option<String>,
    },
}

impl DeviceCommand {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Register { .. } => "RegisterDevice",
            Self::Update { .. } => "UpdateDevice",
            Self::Decommission => "DecommissionDevice",
            Self::MarkOnline { .. } => "MarkDeviceOnline",
            Self::MarkOffline { .. } => "MarkDeviceOffline",
            Self::IssueCommand { .. } => "IssueDeviceCommand",
            Self::RecordCommandStatus { .. } => "RecordDeviceCommandStatus",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DeviceEvent {
    DeviceRegistered {
        id: Uuid,
        agency_id: AgencyId,
        class_id: Uuid,
        functions: Vec<FunctionDesc>,
        fundamentum: FundamentumId,
        name: String,
        offline_after_secs: Option<u32>,
    },
    DeviceUpdated {
        name: Option<String>,
        /// Absent: unchanged. (An explicit enum: `Option<Option<_>>` would not survive JSON,
        /// where `Some(None)` and `None` are both `null`.)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offline_after: Option<Timeout>,
    },
    DeviceDecommissioned,
    DeviceCameOnline {
        at: Timestamp,
    },
    DeviceWentOffline {
        at: Timestamp,
        last_activity: Option<Timestamp>,
    },
    CommandIssued {
        command_id: i64,
        request: DeviceRequest,
    },
    CommandStatusChanged {
        command_id: i64,
        status: CommandStatus,
        message: Option<String>,
    },
}

impl DomainEvent for DeviceEvent {
    fn event_type(&self) -> String {
        match self {
            Self::DeviceRegistered { .. } => "DeviceRegistered",
            Self::DeviceUpdated { .. } => "DeviceUpdated",
            Self::DeviceDecommissioned => "DeviceDecommissioned",
            Self::DeviceCameOnline { .. } => "DeviceCameOnline",
            Self::DeviceWentOffline { .. } => "DeviceWentOffline",
            Self::CommandIssued { .. } => "CommandIssued",
            Self::CommandStatusChanged { .. } => "CommandStatusChanged",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// A device's offline timeout: its class's, or its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timeout {
    ClassDefault,
    Seconds(u32),
}

impl Timeout {
    pub fn seconds(self) -> Option<u32> {
        match self {
            Self::ClassDefault => None,
            Self::Seconds(s) => Some(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("a device with this id already exists")]
    AlreadyExists,
    #[error("no such device")]
    NotFound,
    #[error("the device is decommissioned")]
    Decommissioned,
    #[error("the device has no command {0}")]
    UnknownCommand(i64),
    #[error("command {0} was issued already")]
    DuplicateCommand(i64),
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    agency_id: Option<AgencyId>,
    name: String,
    offline_after_secs: Option<u32>,
    decommissioned: bool,
    online: bool,
    commands: BTreeMap<i64, CommandStatus>,
}

impl Device {
    pub fn agency_id(&self) -> Option<AgencyId> {
        self.agency_id
    }

    pub fn is_online(&self) -> bool {
        self.online
    }

    /// The events `command` produces. Changes that change nothing record nothing: an online
    /// device marked online again, a repeated status, a status after the final one.
    pub fn decide(&self, command: DeviceCommand) -> Result<Vec<DeviceEvent>, DeviceError> {
        if let DeviceCommand::Register {
            id,
            agency_id,
            class_id,
            functions,
            fundamentum,
            name,
            offline_after,
        } = command
        {
            if self.agency_id.is_some() {
                return Err(DeviceError::AlreadyExists);
            }
            return Ok(vec![DeviceEvent::DeviceRegistered {
                id,
                agency_id,
                class_id,
                functions,
                fundamentum,
                name: name.as_str().to_owned(),
                offline_after_secs: offline_after.map(OfflineAfter::as_secs),
            }]);
        }
        if self.agency_id.is_none() {
            return Err(DeviceError::NotFound);
        }
        if self.decommissioned {
            // Liveness of a device being removed is no longer news; anything else is refused.
            return match command {
                DeviceCommand::MarkOnline { .. } | DeviceCommand::MarkOffline { .. } => {
                    Ok(Vec::new())
                }
                _ => Err(DeviceError::Decommissioned),
            };
        }
        Ok(match command {
            DeviceCommand::Register { .. } => Vec::new(),
            DeviceCommand::Update {
                name,
                offline_after,
            } => {
                let name = name
                    .map(|n| n.as_str().to_owned())
                    .filter(|n| *n != self.name);
                let offline_after = offline_after
                    .map(|o| o.map(OfflineAfter::as_secs))
                    .filter(|o| *o != self.offline_after_secs)
                    .map(|o| o.map_or(Timeout::ClassDefault, Timeout::Seconds));
                if name.is_none() && offline_after.is_none() {
                    Vec::new()
                } else {
                    vec![DeviceEvent::DeviceUpdated {
                        name,
                        offline_after,
                    }]
                }
            }
            DeviceCommand::Decommission => vec![DeviceEvent::DeviceDecommissioned],
            DeviceCommand::MarkOnline { at } => (!self.online)
                .then_some(DeviceEvent::DeviceCameOnline { at })
                .into_iter()
                .collect(),
            DeviceCommand::MarkOffline { at, last_activity } => self
                .online
                .then_some(DeviceEvent::DeviceWentOffline { at, last_activity })
                .into_iter()
                .collect(),
            DeviceCommand::IssueCommand {
                command_id,
                request,
            } => {
                if self.commands.contains_key(&command_id) {
                    return Err(DeviceError::DuplicateCommand(command_id));
                }
                vec![DeviceEvent::CommandIssued {
                    command_id,
                    request,
                }]
            }
            DeviceCommand::RecordCommandStatus {
                command_id,
                status,
                message,
            } => {
                let current = self
                    .commands
                    .get(&command_id)
                    .ok_or(DeviceError::UnknownCommand(command_id))?;
                if current.is_final() || (*current == status && message.is_none()) {
                    Vec::new()
                } else {
                    vec![DeviceEvent::CommandStatusChanged {
                        command_id,
                        status,
                        message,
                    }]
                }
            }
        })
    }
}

impl Aggregate for Device {
    const TYPE: &'static str = "device";
    type Command = DeviceCommand;
    type Event = DeviceEvent;
    type Error = DeviceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            DeviceEvent::DeviceRegistered {
                agency_id,
                name,
                offline_after_secs,
                ..
            } => {
                self.agency_id = Some(agency_id);
                self.name = name;
                self.offline_after_secs = offline_after_secs;
            }
            DeviceEvent::DeviceUpdated {
                name,
                offline_after,
            } => {
                if let Some(name) = name {
                    self.name = name;
                }
                if let Some(o) = offline_after {
                    self.offline_after_secs = o.seconds();
                }
            }
            DeviceEvent::DeviceDecommissioned => self.decommissioned = true,
            DeviceEvent::DeviceCameOnline { .. } => self.online = true,
            DeviceEvent::DeviceWentOffline { .. } => self.online = false,
            DeviceEvent::CommandIssued { command_id, .. } => {
                self.commands.insert(command_id, CommandStatus::Pending);
            }
            DeviceEvent::CommandStatusChanged {
                command_id, status, ..
            } => {
                self.commands.insert(command_id, status);
            }
        }
    }
}
