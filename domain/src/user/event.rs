use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::Sealed;
use crate::time::Timestamp;
use crate::{AgencyId, UserId};

/// What happened to a user. Never a password, a TOTP code or a plaintext secret: hashes
/// and sealed values only (DESIGN.md rule 9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered {
        id: UserId,
        agency_id: AgencyId,
        email: Sealed,
        display_name: Sealed,
        password_hash: String,
        must_change_password: bool,
        roles: Vec<String>,
        #[serde(default)]
        service_account: bool,
    },
    PasswordChanged {
        password_hash: String,
        at: Timestamp,
    },
    ProfileUpdated {
        display_name: Sealed,
    },
    LoginSucceeded {
        at: Timestamp,
        /// The TOTP step of the code used, kept so no code is accepted twice.
        totp_step: Option<u64>,
    },
    LoginFailed {
        at: Timestamp,
        consecutive_failures: u32,
    },
    UserLocked {
        until: Timestamp,
    },
    UserUnlocked {
        by_admin: bool,
    },
    RoleAssigned {
        role: String,
    },
    RoleUnassigned {
        role: String,
    },
    MembershipGranted {
        agency_id: AgencyId,
        roles: Vec<String>,
    },
    MembershipRevoked {
        agency_id: AgencyId,
    },
    MfaEnrolmentStarted {
        secret: Sealed,
    },
    MfaEnabled {
        totp_step: u64,
    },
    RecoveryCodesGenerated {
        hashes: Vec<String>,
    },
    RecoveryCodeUsed {
        index: usize,
    },
    MfaDisabled {
        by_admin: bool,
    },
    LoggedOut {
        at: Timestamp,
    },
    /// A session opened in another agency the user belongs to (switch-agency): the trail
    /// says who acted where, not only who logged in.
    AgencyEntered {
        agency_id: AgencyId,
        at: Timestamp,
    },
    UserDeactivated,
    UserReactivated,
    /// The person's data key was deleted: the sealed email and name in earlier events can
    /// never be opened again (DESIGN.md rule 10). The account is deactivated for good.
    PersonalDataErased,
}

impl UserEvent {
    /// The payload fields that hold a secret's hash or sealed form: the password or client
    /// secret hash, the sealed TOTP secret, the recovery codes' hashes. They stay in the
    /// event store (and its hash chain), and are redacted in every answer to auditors: a hash
    /// taken away is a password guessed offline.
    pub const SECRET_FIELDS: [&'static str; 3] = ["password_hash", "secret", "hashes"];
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserRegistered { .. } => "UserRegistered",
            Self::PasswordChanged { .. } => "PasswordChanged",
            Self::ProfileUpdated { .. } => "ProfileUpdated",
            Self::LoginSucceeded { .. } => "LoginSucceeded",
            Self::LoginFailed { .. } => "LoginFailed",
            Self::UserLocked { .. } => "UserLocked",
            Self::UserUnlocked { .. } => "UserUnlocked",
            Self::RoleAssigned { .. } => "RoleAssigned",
            Self::RoleUnassigned { .. } => "RoleUnassigned",
            Self::MembershipGranted { .. } => "MembershipGranted",
            Self::MembershipRevoked { .. } => "MembershipRevoked",
            Self::MfaEnrolmentStarted { .. } => "MfaEnrolmentStarted",
            Self::MfaEnabled { .. } => "MfaEnabled",
            Self::RecoveryCodesGenerated { .. } => "RecoveryCodesGenerated",
            Self::RecoveryCodeUsed { .. } => "RecoveryCodeUsed",
            Self::MfaDisabled { .. } => "MfaDisabled",
            Self::LoggedOut { .. } => "LoggedOut",
            Self::AgencyEntered { .. } => "AgencyEntered",
            Self::UserDeactivated => "UserDeactivated",
            Self::UserReactivated => "UserReactivated",
            Self::PersonalDataErased => "PersonalDataErased",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
