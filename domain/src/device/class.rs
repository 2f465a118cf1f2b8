//! A device class (TALQ `DeviceClass`): the functions a kind of device has, and how long it
//! may stay silent before it counts as offline. Devices are registered against a class.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{DeviceName, FunctionDesc, OfflineAfter};
use crate::AgencyId;

#[derive(Debug, Clone, PartialEq)]
pub enum DeviceClassCommand {
    Create {
        id: Uuid,
        agency_id: AgencyId,
        name: DeviceName,
        functions: Vec<FunctionDesc>,
        offline_after: OfflineAfter,
    },
}

impl DeviceClassCommand {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Create { .. } => "CreateDeviceClass",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DeviceClassEvent {
    DeviceClassCreated {
        id: Uuid,
        agency_id: AgencyId,
        name: String,
        functions: Vec<FunctionDesc>,
        offline_after_secs: u32,
    },
}

impl DomainEvent for DeviceClassEvent {
    fn event_type(&self) -> String {
        match self {
            Self::DeviceClassCreated { .. } => "DeviceClassCreated",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceClassError {
    #[error("a device class with this id already exists")]
    AlreadyExists,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceClass {
    agency_id: Option<AgencyId>,
}

impl DeviceClass {
    pub fn decide(
        &self,
        command: DeviceClassCommand,
    ) -> Result<Vec<DeviceClassEvent>, DeviceClassError> {
        match command {
            DeviceClassCommand::Create {
                id,
                agency_id,
                name,
                functions,
                offline_after,
            } => {
                if self.agency_id.is_some() {
                    return Err(DeviceClassError::AlreadyExists);
                }
                Ok(vec![DeviceClassEvent::DeviceClassCreated {
                    id,
                    agency_id,
                    name: name.as_str().to_owned(),
                    functions,
                    offline_after_secs: offline_after.as_secs(),
                }])
            }
        }
    }
}

impl Aggregate for DeviceClass {
    const TYPE: &'static str = "device_class";
    type Command = DeviceClassCommand;
    type Event = DeviceClassEvent;
    type Error = DeviceClassError;
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
            DeviceClassEvent::DeviceClassCreated { agency_id, .. } => {
                self.agency_id = Some(agency_id)
            }
        }
    }
}
