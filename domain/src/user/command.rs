use super::{LockoutPolicy, Sealed};
use crate::time::Timestamp;
use crate::{AgencyId, UserId};

/// The outcome of the password check, made by the caller (argon2 is I/O-bound work for
/// the domain's purposes) and judged here together with the lockout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginCheck {
    PasswordMatched,
    PasswordWrong,
}

/// What a user offered as the second factor, already checked by the caller against the
/// secret: the TOTP step the code matched, or the index of the recovery code it matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaProof {
    Totp { step: u64 },
    RecoveryCode { index: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    Register {
        id: UserId,
        agency_id: AgencyId,
        email: Sealed,
        display_name: Sealed,
        password_hash: String,
        /// A first password chosen by someone else must be changed at first login.
        must_change_password: bool,
        roles: Vec<String>,
        /// An integration's or auditor's account: no email, authenticates with the
        /// client-credentials grant only, never with the login endpoint.
        service_account: bool,
    },
    /// A login attempt's password check. Refused while locked, whatever the password.
    AttemptLogin {
        check: LoginCheck,
        /// Whether a second factor must follow (then success is recorded by `CompleteMfa`).
        now: Timestamp,
        policy: LockoutPolicy,
    },
    /// The second factor of a login.
    CompleteMfa {
        proof: MfaProof,
        now: Timestamp,
    },
    ChangePassword {
        password_hash: String,
        now: Timestamp,
    },
    UpdateProfile {
        display_name: Sealed,
    },
    Unlock,
    AssignRole {
        role: String,
    },
    /// Membership in another agency than the user's own, with roles there (a regional
    /// coordinator, a contractor). Granting again replaces the roles.
    GrantMembership {
        agency_id: AgencyId,
        roles: Vec<String>,
    },
    RevokeMembership {
        agency_id: AgencyId,
    },
    UnassignRole {
        role: String,
    },
    StartMfaEnrolment {
        secret: Sealed,
    },
    /// The first code proves the authenticator works: MFA is on, with these recovery codes
    /// (hashes) shown once to the user.
    ConfirmMfa {
        step: u64,
        recovery_code_hashes: Vec<String>,
    },
    DisableMfa {
        by_admin: bool,
    },
    LogOut {
        now: Timestamp,
    },
    /// Open a session in `agency_id`, another agency the user is a member of.
    EnterAgency {
        agency_id: AgencyId,
        now: Timestamp,
    },
    Deactivate,
    /// Erase the person: the gateway deletes their data key once this is recorded.
    ErasePersonalData,
    Reactivate,
}

impl UserCommand {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Register { .. } => "RegisterUser",
            Self::AttemptLogin { .. } => "AttemptLogin",
            Self::CompleteMfa { .. } => "CompleteMfa",
            Self::ChangePassword { .. } => "ChangePassword",
            Self::UpdateProfile { .. } => "UpdateUserProfile",
            Self::Unlock => "UnlockUser",
            Self::AssignRole { .. } => "AssignRole",
            Self::GrantMembership { .. } => "GrantMembership",
            Self::RevokeMembership { .. } => "RevokeMembership",
            Self::UnassignRole { .. } => "UnassignRole",
            Self::StartMfaEnrolment { .. } => "StartMfaEnrolment",
            Self::ConfirmMfa { .. } => "ConfirmMfa",
            Self::DisableMfa { .. } => "DisableMfa",
            Self::LogOut { .. } => "LogOut",
            Self::EnterAgency { .. } => "EnterAgency",
            Self::Deactivate => "DeactivateUser",
            Self::ErasePersonalData => "ErasePersonalData",
            Self::Reactivate => "ReactivateUser",
        }
    }
}
