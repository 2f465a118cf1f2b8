//! What may be done, as a closed catalogue: a permission that is not here does not exist,
//! and code asks for one by its variant, never by a string.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    #[serde(rename = "agencies:manage")]
    AgenciesManage,
    #[serde(rename = "users:read")]
    UsersRead,
    #[serde(rename = "users:write")]
    UsersWrite,
    #[serde(rename = "roles:manage")]
    RolesManage,
    #[serde(rename = "devices:read")]
    DevicesRead,
    #[serde(rename = "devices:write")]
    DevicesWrite,
    #[serde(rename = "devices:command")]
    DevicesCommand,
    #[serde(rename = "telemetry:read")]
    TelemetryRead,
    #[serde(rename = "audit:read")]
    AuditRead,
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        Permission::AgenciesManage,
        Permission::UsersRead,
        Permission::UsersWrite,
        Permission::RolesManage,
        Permission::DevicesRead,
        Permission::DevicesWrite,
        Permission::DevicesCommand,
        Permission::TelemetryRead,
        Permission::AuditRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgenciesManage => "agencies:manage",
            Self::UsersRead => "users:read",
            Self::UsersWrite => "users:write",
            Self::RolesManage => "roles:manage",
            Self::DevicesRead => "devices:read",
            Self::DevicesWrite => "devices:write",
            Self::DevicesCommand => "devices:command",
            Self::TelemetryRead => "telemetry:read",
            Self::AuditRead => "audit:read",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::AgenciesManage => "create, rename, suspend agencies (platform)",
            Self::UsersRead => "see the users of the agency",
            Self::UsersWrite => "create, change, lock, deactivate users of the agency",
            Self::RolesManage => "define roles and give them to users",
            Self::DevicesRead => "see devices and their state",
            Self::DevicesWrite => "register, change, decommission devices",
            Self::DevicesCommand => "send commands to devices",
            Self::TelemetryRead => "query telemetry",
            Self::AuditRead => "read and verify the audit trail",
        }
    }

    /// The permissions of a built-in role named `role`; other names have none.
    pub fn of_builtin_role(role: &str) -> &'static [Permission] {
        role.parse::<crate::BuiltInRole>()
            .map_or(&[], |role| role.permissions())
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission {0:?}")]
pub struct UnknownPermission(pub String);

impl FromStr for Permission {
    type Err = UnknownPermission;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPermission(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_nothing_else_parses() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>(), Ok(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert!("devices:delete_all".parse::<Permission>().is_err());
    }

    #[test]
    fn built_in_roles_nest() {
        let viewer = Permission::of_builtin_role("viewer");
        let operator = Permission::of_builtin_role("operator");
        let admin = Permission::of_builtin_role("agency-admin");
        assert!(viewer.iter().all(|p| operator.contains(p)));
        assert!(operator.iter().all(|p| admin.contains(p)));
        assert!(
            !admin.contains(&Permission::AgenciesManage),
            "agencies are the platform's"
        );
        assert_eq!(
            Permission::of_builtin_role("platform-admin").len(),
            Permission::ALL.len()
        );
        assert!(Permission::of_builtin_role("nobody").is_empty());
    }
}
