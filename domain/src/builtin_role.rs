//! The built-in roles: fixed, in every agency, never stored as roles (an agency's own roles
//! are `role::Role`). One enum, so that a name, its permissions and the rules about it (who
//! may give it) live in one place.

use std::fmt;
use std::str::FromStr;

use crate::Permission;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltInRole {
    /// Runs the platform: every permission, in every agency it acts for.
    PlatformAdmin,
    /// Runs one agency: its users, roles, devices, telemetry and audit trail.
    AgencyAdmin,
    /// Operates an agency's devices.
    Operator,
    /// Watches an agency's devices.
    Viewer,
}

impl BuiltInRole {
    pub const ALL: [Self; 4] = [
        Self::PlatformAdmin,
        Self::AgencyAdmin,
        Self::Operator,
        Self::Viewer,
    ];

    /// The name stored in a user's roles and in tokens.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PlatformAdmin => "platform-admin",
            Self::AgencyAdmin => "agency-admin",
            Self::Operator => "operator",
            Self::Viewer => "viewer",
        }
    }

    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Self::PlatformAdmin => &Permission::ALL,
            Self::AgencyAdmin => &[
                UsersRead,
                UsersWrite,
                RolesManage,
                DevicesRead,
                DevicesWrite,
                DevicesCommand,
                TelemetryRead,
                AuditRead,
            ],
            Self::Operator => &[DevicesRead, DevicesWrite, DevicesCommand, TelemetryRead],
            Self::Viewer => &[DevicesRead, TelemetryRead],
        }
    }

    /// Whether an agency may give it within the agency (a user's roles, a membership, a
    /// service account): every built-in role but the platform's.
    pub fn is_agency_role(self) -> bool {
        self != Self::PlatformAdmin
    }
}

impl fmt::Display for BuiltInRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; known: platform-admin, agency-admin, operator, viewer")]
pub struct UnknownRole(pub String);

impl FromStr for BuiltInRole {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_role() {
        for role in BuiltInRole::ALL {
            assert_eq!(role.as_str().parse::<BuiltInRole>(), Ok(role));
        }
        assert!("Platform-Admin".parse::<BuiltInRole>().is_err());
    }
}
