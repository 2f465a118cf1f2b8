//! A Fundamentum registry and the agency it belongs to (DESIGN.md rule 7: device identities
//! belong to agencies). A platform administrator assigns a registry to one agency; only that
//! agency registers devices under it, and the bridge keeps a device's messages only while its
//! registry is its agency's. One aggregate per registry name, so two agencies racing for the
//! same registry cannot both win (the event store's optimistic concurrency decides).

use super::names::RegistryName;
use crate::AgencyId;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq)]
pub enum RegistryCommand {
    Assign {
        registry: RegistryName,
        agency_id: AgencyId,
    },
    /// Gives the registry back (the caller checked that no live device is under it).
    Unassign,
}

impl RegistryCommand {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Assign { .. } => "AssignRegistry",
            Self::Unassign => "UnassignRegistry",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RegistryEvent {
    RegistryAssigned {
        registry: String,
        agency_id: AgencyId,
    },
    RegistryUnassigned {
        registry: String,
        agency_id: AgencyId,
    },
}

impl DomainEvent for RegistryEvent {
    fn event_type(&self) -> String {
        match self {
            Self::RegistryAssigned { .. } => "RegistryAssigned",
            Self::RegistryUnassigned { .. } => "RegistryUnassigned",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("this registry is assigned to another agency: remove it there first")]
    AssignedElsewhere,
    #[error("this registry is assigned to no agency")]
    NotAssigned,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    assigned: Option<(String, AgencyId)>,
}

impl Registry {
    /// The agency the registry belongs to now, if any.
    pub fn agency(&self) -> Option<AgencyId> {
        self.assigned.as_ref().map(|(_, a)| *a)
    }

    pub fn decide(&self, command: RegistryCommand) -> Result<Vec<RegistryEvent>, RegistryError> {
        match (command, &self.assigned) {
            // Asking for the current state records nothing: a retry is safe.
            (RegistryCommand::Assign { agency_id, .. }, Some((_, owner)))
                if *owner == agency_id =>
            {
                Ok(Vec::new())
            }
            (RegistryCommand::Assign { .. }, Some(_)) => Err(RegistryError::AssignedElsewhere),
            (
                RegistryCommand::Assign {
                    registry,
                    agency_id,
                },
                None,
            ) => Ok(vec![RegistryEvent::RegistryAssigned {
                registry: registry.as_str().to_owned(),
                agency_id,
            }]),
            (RegistryCommand::Unassign, Some((registry, agency_id))) => {
                Ok(vec![RegistryEvent::RegistryUnassigned {
                    registry: registry.clone(),
                    agency_id: *agency_id,
                }])
            }
            (RegistryCommand::Unassign, None) => Err(RegistryError::NotAssigned),
        }
    }
}

impl Aggregate for Registry {
    const TYPE: &'static str = "registry";
    type Command = RegistryCommand;
    type Event = RegistryEvent;
    type Error = RegistryError;
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
            RegistryEvent::RegistryAssigned {
                registry,
                agency_id,
            } => self.assigned = Some((registry, agency_id)),
            RegistryEvent::RegistryUnassigned { .. } => self.assigned = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn agency(n: u128) -> AgencyId {
        AgencyId::from_uuid(Uuid::from_u128(n))
    }

    fn assign(n: u128) -> RegistryCommand {
        RegistryCommand::Assign {
            registry: RegistryName::parse("city-lights").unwrap(),
            agency_id: agency(n),
        }
    }

    fn given(events: Vec<RegistryEvent>) -> Registry {
        let mut r = Registry::default();
        for e in events {
            r.apply(e);
        }
        r
    }

    fn first_again() -> Vec<RegistryEvent> {
        Registry::default().decide(assign(1)).unwrap()
    }

    #[test]
    fn a_registry_belongs_to_one_agency_at_a_time() {
        let first = Registry::default().decide(assign(1)).unwrap();
        assert_eq!(
            first,
            vec![RegistryEvent::RegistryAssigned {
                registry: "city-lights".into(),
                agency_id: agency(1)
            }]
        );
        let owned = given(first);
        assert_eq!(owned.decide(assign(1)), Ok(Vec::new()));
        assert_eq!(
            owned.decide(assign(2)),
            Err(RegistryError::AssignedElsewhere)
        );
        let unassigned = owned.decide(RegistryCommand::Unassign).unwrap();
        let freed = given([first_again(), unassigned].concat());
        assert_eq!(freed.agency(), None);
        assert!(freed.decide(assign(2)).is_ok());
        assert_eq!(
            Registry::default().decide(RegistryCommand::Unassign),
            Err(RegistryError::NotAssigned)
        );
    }
}
