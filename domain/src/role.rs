//! A role an agency defines: a name and a set of permissions, given to its users. The
//! built-in roles (platform-admin, agency-admin, operator, viewer) are fixed and exist in
//! every agency without being stored; these are the agency's own.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{AgencyId, Permission};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RoleName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleNameError {
    #[error("must be 1 to 100 characters, no control characters")]
    Length,
    #[error("is the name of a built-in role")]
    BuiltIn,
}

impl RoleName {
    pub fn parse(raw: &str) -> Result<Self, RoleNameError> {
        let name = raw.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(RoleNameError::Length);
        }
        if name.parse::<crate::BuiltInRole>().is_ok() {
            return Err(RoleNameError::BuiltIn);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RoleCommand {
    Create {
        id: Uuid,
        agency_id: AgencyId,
        name: RoleName,
        permissions: Vec<Permission>,
    },
    Rename {
        name: RoleName,
    },
    Grant {
        permission: Permission,
    },
    Revoke {
        permission: Permission,
    },
    Delete,
}

impl RoleCommand {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Create { .. } => "CreateRole",
            Self::Rename { .. } => "RenameRole",
            Self::Grant { .. } => "GrantPermission",
            Self::Revoke { .. } => "RevokePermission",
            Self::Delete => "DeleteRole",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RoleEvent {
    RoleCreated {
        id: Uuid,
        agency_id: AgencyId,
        name: String,
        permissions: Vec<Permission>,
    },
    RoleRenamed {
        name: String,
    },
    PermissionGranted {
        permission: Permission,
    },
    PermissionRevoked {
        permission: Permission,
    },
    RoleDeleted,
}

impl DomainEvent for RoleEvent {
    fn event_type(&self) -> String {
        match self {
            Self::RoleCreated { .. } => "RoleCreated",
            Self::RoleRenamed { .. } => "RoleRenamed",
            Self::PermissionGranted { .. } => "PermissionGranted",
            Self::PermissionRevoked { .. } => "PermissionRevoked",
            Self::RoleDeleted => "RoleDeleted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("a role with this id already exists")]
    AlreadyExists,
    #[error("no such role")]
    NotFound,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    agency_id: Option<AgencyId>,
    name: String,
    permissions: Vec<Permission>,
    exists: bool,
}

impl Role {
    pub fn agency_id(&self) -> Option<AgencyId> {
        self.agency_id
    }

    /// The events `command` produces; granting a held permission, revoking one not held or
    /// renaming to the current name records nothing.
    pub fn decide(&self, command: RoleCommand) -> Result<Vec<RoleEvent>, RoleError> {
        if !matches!(command, RoleCommand::Create { .. }) && !self.exists {
            return Err(RoleError::NotFound);
        }
        Ok(match command {
            RoleCommand::Create {
                id,
                agency_id,
                name,
                mut permissions,
            } => {
                if self.agency_id.is_some() {
                    return Err(RoleError::AlreadyExists);
                }
                permissions.sort();
                permissions.dedup();
                vec![RoleEvent::RoleCreated {
                    id,
                    agency_id,
                    name: name.as_str().to_owned(),
                    permissions,
                }]
            }
            RoleCommand::Rename { name } => (self.name != name.as_str())
                .then(|| RoleEvent::RoleRenamed {
                    name: name.as_str().to_owned(),
                })
                .into_iter()
                .collect(),
            RoleCommand::Grant { permission } => (!self.permissions.contains(&permission))
                .then_some(RoleEvent::PermissionGranted { permission })
                .into_iter()
                .collect(),
            RoleCommand::Revoke { permission } => self
                .permissions
                .contains(&permission)
                .then_some(RoleEvent::PermissionRevoked { permission })
                .into_iter()
                .collect(),
            RoleCommand::Delete => vec![RoleEvent::RoleDeleted],
        })
    }
}

impl Aggregate for Role {
    const TYPE: &'static str = "role";
    type Command = RoleCommand;
    type Event = RoleEvent;
    type Error = RoleError;
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
            RoleEvent::RoleCreated {
                agency_id,
                name,
                permissions,
                ..
            } => {
                self.agency_id = Some(agency_id);
                self.name = name;
                self.permissions = permissions;
                self.exists = true;
            }
            RoleEvent::RoleRenamed { name } => self.name = name,
            RoleEvent::PermissionGranted { permission } => self.permissions.push(permission),
            RoleEvent::PermissionRevoked { permission } => {
                self.permissions.retain(|p| *p != permission)
            }
            RoleEvent::RoleDeleted => self.exists = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn created() -> RoleEvent {
        RoleEvent::RoleCreated {
            id: Uuid::from_u128(7),
            agency_id: AgencyId::from_uuid(Uuid::from_u128(8)),
            name: "auditors".into(),
            permissions: vec![Permission::AuditRead],
        }
    }

    #[test]
    fn a_role_is_created_with_its_permissions_and_changes_one_at_a_time() {
        TestFramework::<Role>::with(())
            .given_no_previous_events()
            .when(RoleCommand::Create {
                id: Uuid::from_u128(7),
                agency_id: AgencyId::from_uuid(Uuid::from_u128(8)),
                name: RoleName::parse(" auditors ").unwrap(),
                permissions: vec![Permission::AuditRead, Permission::AuditRead],
            })
            .then_expect_events(vec![created()]);
        TestFramework::<Role>::with(())
            .given(vec![created()])
            .when(RoleCommand::Grant {
                permission: Permission::AuditRead,
            })
            .then_expect_events(vec![]);
        TestFramework::<Role>::with(())
            .given(vec![created()])
            .when(RoleCommand::Revoke {
                permission: Permission::AuditRead,
            })
            .then_expect_events(vec![RoleEvent::PermissionRevoked {
                permission: Permission::AuditRead,
            }]);
        TestFramework::<Role>::with(())
            .given(vec![created(), RoleEvent::RoleDeleted])
            .when(RoleCommand::Grant {
                permission: Permission::UsersRead,
            })
            .then_expect_error(RoleError::NotFound);
    }

    #[test]
    fn built_in_names_are_taken() {
        assert_eq!(RoleName::parse("viewer"), Err(RoleNameError::BuiltIn));
        assert_eq!(RoleName::parse(""), Err(RoleNameError::Length));
    }
}
