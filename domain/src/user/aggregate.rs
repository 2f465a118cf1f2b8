use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{Lockout, LoginCheck, MfaProof, Sealed, UserCommand, UserEvent};
use crate::time::Timestamp;
use crate::{AgencyId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Deactivated,
}

/// Why a command was refused. The gateway answers an unauthenticated caller the same for
/// all login refusals, so none of them tells whether an account exists or is locked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("a user with this id already exists")]
    AlreadyRegistered,
    #[error("no such user")]
    NotFound,
    #[error("the account is locked")]
    Locked { until: Timestamp },
    #[error("the account is deactivated")]
    Deactivated,
    #[error("no MFA enrolment was started")]
    MfaNotEnrolling,
    #[error("MFA is already enabled")]
    MfaAlreadyEnabled,
    #[error("MFA is not enabled")]
    MfaNotEnabled,
    #[error("this code was already used")]
    CodeAlreadyUsed,
    #[error("the account is already in that state")]
    Unchanged,
    #[error("this person's personal data was erased: the account cannot be used again")]
    Erased,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Mfa {
    pending_secret: Option<Sealed>,
    secret: Option<Sealed>,
    last_step: Option<u64>,
    /// Hashes of the recovery codes, and whether each was used.
    recovery_codes: Vec<(String, bool)>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    id: Option<UserId>,
    agency_id: Option<AgencyId>,
    status: Option<UserStatus>,
    email: Option<Sealed>,
    display_name: Option<Sealed>,
    roles: Vec<String>,
    #[serde(default)]
    service_account: bool,
    /// Other agencies the user belongs to, with the roles held there.
    #[serde(default)]
    memberships: std::collections::BTreeMap<AgencyId, Vec<String>>,
    /// The person's data key was deleted (crypto-shredding): their email and name, sealed
    /// in the events, can never be opened again, and the account stays deactivated.
    #[serde(default)]
    erased: bool,
    password_hash: String,
    must_change_password: bool,
    lockout: Lockout,
    mfa: Mfa,
}

impl User {
    /// The state's fields that hold a secret's hash or sealed form (the password hash, the
    /// sealed TOTP secrets, the recovery codes' hashes): redacted wherever auditors see the
    /// state, as [`UserEvent::SECRET_FIELDS`] are in the events.
    pub const SECRET_STATE_FIELDS: [&'static str; 4] = [
        "password_hash",
        "pending_secret",
        "secret",
        "recovery_codes",
    ];

    /// The fields, in the state and in the events, that hold the person's sealed personal
    /// data: shown as `[erased]` once the person is erased.
    pub const PERSONAL_FIELDS: [&'static str; 2] = ["email", "display_name"];

    pub fn is_erased(&self) -> bool {
        self.erased
    }

    pub fn mfa_enabled(&self) -> bool {
        self.mfa.secret.is_some()
    }

    pub fn agency_id(&self) -> Option<AgencyId> {
        self.agency_id
    }

    pub fn status(&self) -> Option<UserStatus> {
        self.status
    }

    pub fn password_hash(&self) -> &str {
        &self.password_hash
    }

    pub fn must_change_password(&self) -> bool {
        self.must_change_password
    }

    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// The roles held in `agency`: the user's own agency, or one it is a member of.
    pub fn roles_in(&self, agency: AgencyId) -> Option<&[String]> {
        if self.agency_id == Some(agency) {
            return Some(&self.roles);
        }
        self.memberships.get(&agency).map(Vec::as_slice)
    }

    pub fn is_service_account(&self) -> bool {
        self.service_account
    }

    pub fn email(&self) -> Option<&Sealed> {
        self.email.as_ref()
    }

    pub fn display_name(&self) -> Option<&Sealed> {
        self.display_name.as_ref()
    }

    pub fn lockout(&self) -> Lockout {
        self.lockout
    }

    /// The TOTP secret in use, or the one being enrolled.
    /// The TOTP step of the last code accepted: no code of that step or before counts again.
    pub fn last_totp_step(&self) -> Option<u64> {
        self.mfa.last_step
    }

    pub fn totp_secret(&self) -> Option<&Sealed> {
        self.mfa.secret.as_ref()
    }

    pub fn pending_totp_secret(&self) -> Option<&Sealed> {
        self.mfa.pending_secret.as_ref()
    }

    /// Hashes of the recovery codes not used yet, with their index.
    pub fn unused_recovery_codes(&self) -> impl Iterator<Item = (usize, &str)> {
        self.mfa
            .recovery_codes
            .iter()
            .enumerate()
            .filter(|(_, (_, used))| !used)
            .map(|(i, (hash, _))| (i, hash.as_str()))
    }

    fn active(&self) -> Result<(), UserError> {
        match self.status {
            None => Err(UserError::NotFound),
            Some(UserStatus::Deactivated) => Err(UserError::Deactivated),
            Some(UserStatus::Active) => Ok(()),
        }
    }

    /// Refuses while locked; lifts an expired lock first (an event of its own).
    fn unlocked_at(&self, now: Timestamp) -> Result<Vec<UserEvent>, UserError> {
        if let Some(until) = self
            .lockout
            .locked_until
            .filter(|_| self.lockout.is_locked(now))
        {
            return Err(UserError::Locked { until });
        }
        Ok(if self.lockout.expired(now) {
            vec![UserEvent::UserUnlocked { by_admin: false }]
        } else {
            Vec::new()
        })
    }

    /// The events `command` produces from this state, or why it is refused.
    pub fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        if !matches!(command, UserCommand::Register { .. }) && self.status.is_none() {
            return Err(UserError::NotFound);
        }
        match command {
            UserCommand::Register {
                id,
                agency_id,
                email,
                display_name,
                password_hash,
                must_change_password,
                roles,
                service_account,
            } => match self.status {
                Some(_) => Err(UserError::AlreadyRegistered),
                None => Ok(vec![UserEvent::UserRegistered {
                    id,
                    agency_id,
                    email,
                    display_name,
                    password_hash,
                    must_change_password,
                    roles,
                    service_account,
                }]),
            },
            UserCommand::AttemptLogin { check, now, policy } => {
                self.active()?;
                let mut events = self.unlocked_at(now)?;
                let lockout = if events.is_empty() {
                    self.lockout
                } else {
                    Lockout::default()
                };
                match check {
                    LoginCheck::PasswordWrong => {
                        let (consecutive_failures, lock) = lockout.after_failure(now, policy);
                        events.push(UserEvent::LoginFailed {
                            at: now,
                            consecutive_failures,
                        });
                        events.extend(lock.map(|until| UserEvent::UserLocked { until }));
                    }
                    // With MFA on, success is recorded once the second factor is given.
                    LoginCheck::PasswordMatched if self.mfa_enabled() => {}
                    LoginCheck::PasswordMatched => events.push(UserEvent::LoginSucceeded {
                        at: now,
                        totp_step: None,
                    }),
                }
                Ok(events)
            }
            UserCommand::CompleteMfa { proof, now } => {
                self.active()?;
                let mut events = self.unlocked_at(now)?;
                if !self.mfa_enabled() {
                    return Err(UserError::MfaNotEnabled);
                }
                match proof {
                    MfaProof::Totp { step } => {
                        if self.mfa.last_step.is_some_and(|last| step <= last) {
                            return Err(UserError::CodeAlreadyUsed);
                        }
                        events.push(UserEvent::LoginSucceeded {
                            at: now,
                            totp_step: Some(step),
                        });
                    }
                    MfaProof::RecoveryCode { index } => {
                        match self.mfa.recovery_codes.get(index) {
                            Some((_, false)) => {}
                            _ => return Err(UserError::CodeAlreadyUsed),
                        }
                        events.push(UserEvent::RecoveryCodeUsed { index });
                        events.push(UserEvent::LoginSucceeded {
                            at: now,
                            totp_step: None,
                        });
                    }
                }
                Ok(events)
            }
            UserCommand::ChangePassword { password_hash, now } => {
                self.active()?;
                Ok(vec![UserEvent::PasswordChanged {
                    password_hash,
                    at: now,
                }])
            }
            UserCommand::UpdateProfile { display_name } => {
                if self.erased {
                    return Err(UserError::Erased);
                }
                self.active()?;
                Ok(vec![UserEvent::ProfileUpdated { display_name }])
            }
            // Giving a role twice, or taking one not held, records nothing.
            UserCommand::AssignRole { role } => {
                self.active()?;
                Ok((!self.roles.contains(&role))
                    .then_some(UserEvent::RoleAssigned { role })
                    .into_iter()
                    .collect())
            }
            UserCommand::UnassignRole { role } => Ok(self
                .roles
                .contains(&role)
                .then_some(UserEvent::RoleUnassigned { role })
                .into_iter()
                .collect()),
            UserCommand::GrantMembership { agency_id, roles } => {
                self.active()?;
                if self.agency_id == Some(agency_id)
                    || self.memberships.get(&agency_id) == Some(&roles)
                {
                    return Ok(Vec::new());
                }
                Ok(vec![UserEvent::MembershipGranted { agency_id, roles }])
            }
            UserCommand::RevokeMembership { agency_id } => Ok(self
                .memberships
                .contains_key(&agency_id)
                .then_some(UserEvent::MembershipRevoked { agency_id })
                .into_iter()
                .collect()),
            UserCommand::Unlock => {
                let locked =
                    self.lockout.locked_until.is_some() || self.lockout.consecutive_failures > 0;
                Ok(locked
                    .then_some(UserEvent::UserUnlocked { by_admin: true })
                    .into_iter()
                    .collect())
            }
            UserCommand::StartMfaEnrolment { secret } => {
                self.active()?;
                if self.mfa_enabled() {
                    return Err(UserError::MfaAlreadyEnabled);
                }
                Ok(vec![UserEvent::MfaEnrolmentStarted { secret }])
            }
            UserCommand::ConfirmMfa {
                step,
                recovery_code_hashes,
            } => {
                self.active()?;
                if self.mfa_enabled() {
                    return Err(UserError::MfaAlreadyEnabled);
                }
                if self.mfa.pending_secret.is_none() {
                    return Err(UserError::MfaNotEnrolling);
                }
                Ok(vec![
                    UserEvent::MfaEnabled { totp_step: step },
                    UserEvent::RecoveryCodesGenerated {
                        hashes: recovery_code_hashes,
                    },
                ])
            }
            UserCommand::DisableMfa { by_admin } => {
                if !self.mfa_enabled() {
                    return Err(UserError::MfaNotEnabled);
                }
                Ok(vec![UserEvent::MfaDisabled { by_admin }])
            }
            UserCommand::LogOut { now } => Ok(vec![UserEvent::LoggedOut { at: now }]),
            UserCommand::EnterAgency { agency_id, now } => {
                self.active()?;
                if self.roles_in(agency_id).is_none() {
                    return Err(UserError::NotFound);
                }
                Ok(vec![UserEvent::AgencyEntered { agency_id, at: now }])
            }
            UserCommand::Deactivate => match self.status {
                Some(UserStatus::Active) => Ok(vec![UserEvent::UserDeactivated]),
                _ => Err(UserError::Unchanged),
            },
            // Erasing twice records nothing: the gateway deletes the key again (a retry after
            // a crash between the event and the deletion).
            UserCommand::ErasePersonalData => match (self.status, self.erased) {
                (None, _) => Err(UserError::NotFound),
                (Some(_), true) => Ok(Vec::new()),
                (Some(_), false) => Ok(vec![UserEvent::PersonalDataErased]),
            },
            UserCommand::Reactivate if self.erased => Err(UserError::Erased),
            UserCommand::Reactivate => match self.status {
                Some(UserStatus::Deactivated) => Ok(vec![UserEvent::UserReactivated]),
                _ => Err(UserError::Unchanged),
            },
        }
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
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
            UserEvent::UserRegistered {
                id,
                agency_id,
                email,
                display_name,
                password_hash,
                must_change_password,
                roles,
                service_account,
            } => {
                self.service_account = service_account;
                self.id = Some(id);
                self.agency_id = Some(agency_id);
                self.email = Some(email);
                self.display_name = Some(display_name);
                self.roles = roles;
                self.status = Some(UserStatus::Active);
                self.password_hash = password_hash;
                self.must_change_password = must_change_password;
            }
            UserEvent::PasswordChanged { password_hash, .. } => {
                self.password_hash = password_hash;
                self.must_change_password = false;
            }
            UserEvent::ProfileUpdated { display_name } => self.display_name = Some(display_name),
            UserEvent::LoginSucceeded { totp_step, .. } => {
                self.lockout = Lockout::default();
                if totp_step.is_some() {
                    self.mfa.last_step = totp_step;
                }
            }
            UserEvent::LoginFailed {
                consecutive_failures,
                ..
            } => self.lockout.consecutive_failures = consecutive_failures,
            UserEvent::UserLocked { until } => self.lockout.locked_until = Some(until),
            UserEvent::UserUnlocked { .. } => self.lockout = Lockout::default(),
            UserEvent::RoleAssigned { role } => self.roles.push(role),
            UserEvent::RoleUnassigned { role } => self.roles.retain(|r| *r != role),
            UserEvent::MembershipGranted { agency_id, roles } => {
                self.memberships.insert(agency_id, roles);
            }
            UserEvent::MembershipRevoked { agency_id } => {
                self.memberships.remove(&agency_id);
            }
            UserEvent::MfaEnrolmentStarted { secret } => self.mfa.pending_secret = Some(secret),
            UserEvent::MfaEnabled { totp_step } => {
                self.mfa.secret = self.mfa.pending_secret.take();
                self.mfa.last_step = Some(totp_step);
            }
            UserEvent::RecoveryCodesGenerated { hashes } => {
                self.mfa.recovery_codes = hashes.into_iter().map(|h| (h, false)).collect();
            }
            UserEvent::RecoveryCodeUsed { index } => {
                if let Some(code) = self.mfa.recovery_codes.get_mut(index) {
                    code.1 = true;
                }
            }
            UserEvent::MfaDisabled { .. } => self.mfa = Mfa::default(),
            UserEvent::LoggedOut { .. } | UserEvent::AgencyEntered { .. } => {}
            UserEvent::UserDeactivated => self.status = Some(UserStatus::Deactivated),
            UserEvent::UserReactivated => self.status = Some(UserStatus::Active),
            UserEvent::PersonalDataErased => {
                self.erased = true;
                self.status = Some(UserStatus::Deactivated);
                self.email = None;
                self.display_name = None;
            }
        }
    }
}
