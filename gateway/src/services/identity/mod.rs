//! The identity flows: registering users, login with lockout and MFA, refresh rotation,
//! logout, TOTP enrolment. Every state change goes through the User aggregate (and so into
//! the audit trail); sessions live in Redis; personal data is sealed with the user's own
//! data key, kept outside the event store (`user_data_keys`), so deleting that key erases
//! the person and leaves the history whole.

use cqrs_es::AggregateError;
use eriop_domain::user::{LoginCheck, User, UserCommand, UserError};
use secrecy::SecretString;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::services::audit::Audit;
use crate::services::auth::{crypto, Auth, TokenPair};
use crate::services::event_log::EventLog;

mod admin;
mod login;
mod mfa;
mod personal;
mod sessions;
mod standing;

pub use standing::{caller_standing, Standing, Standings};

pub type UserCqrs = EventLog<User>;
pub type UserStore = EventLog<User>;

/// The one answer to every failed login, whatever the reason (RFC 6749 style): it never
/// tells whether the account exists, is locked or deactivated.
const INVALID_LOGIN: &str = "invalid email or password";
/// An email signs in to one account on the whole platform (a person working for several
/// agencies is a member of each, not several accounts). So a new account cannot take an
/// address already in use, in this agency or another: the answer is the same either way,
/// names no account and no agency, and says what to do instead (README, "Identity").
const EMAIL_TAKEN: &str = "this email address already signs in to an ERIOP account, so a new \
     account cannot use it; if that person should work in your agency, ask a platform \
     administrator to make them a member (PUT /api/v1/users/{id}/memberships/{agency})";
const TOTP_STEP_SECONDS: u64 = 30;
/// Retries of a user command that lost an optimistic-concurrency race.
const MAX_CONFLICT_RETRIES: u32 = 8;

pub struct Identity<'a> {
    pub pool: &'a PgPool,
    pub users: &'a UserCqrs,
    pub store: &'a UserStore,
    pub auth: &'a Auth,
}

pub enum LoginOutcome {
    Tokens(TokenPair),
    MfaRequired { mfa_token: String },
}

/// OAuth 2.0 token endpoint errors (RFC 6749 section 5.2).
#[derive(Debug, Serialize)]
pub struct OAuthError {
    pub error: &'static str,
    pub error_description: &'static str,
}

/// Whether `agency` is suspended now (its read model row; an agency not projected yet is
/// not). A suspended agency's users cannot log in, refresh or use their tokens, and its
/// devices' messages go to `DLQ` (DESIGN.md, "Suspension suspends").
pub async fn agency_suspended(pool: &sqlx::PgPool, agency: &str) -> Result<bool, sqlx::Error> {
    let Ok(id) = Uuid::parse_str(agency) else {
        return Ok(false);
    };
    // One round trip, outside any transaction (migration 0016): it runs on every request.
    sqlx::query_scalar("SELECT eriop_agency_suspended($1)")
        .bind(id)
        .fetch_one(pool)
        .await
}

pub const AGENCY_SUSPENDED: &str =
    "this agency is suspended: a platform administrator can reactivate it";

pub fn invalid_grant() -> OAuthError {
    OAuthError {
        error: "invalid_grant",
        error_description: "the refresh token is invalid, expired or revoked",
    }
}

#[derive(Serialize)]
pub struct Enrolment {
    pub secret: String,
    pub otpauth_uri: String,
    pub qr_code: String,
}

#[derive(Serialize)]
pub struct Me {
    pub id: String,
    pub agency_id: String,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<String>,
    pub mfa_enabled: bool,
    pub password_change_required: bool,
}

fn user_error(e: AggregateError<UserError>) -> ApiError {
    crate::http::command::refusal(e, "user")
}

impl Identity<'_> {
    async fn execute(
        &self,
        user_id: &str,
        command: UserCommand,
        audit: &Audit<'_>,
    ) -> Result<(), AggregateError<UserError>> {
        // A user's aggregate sees concurrent commands (logins from two devices, a login during
        // an admin's unlock): optimistic concurrency refuses the later commit, and the command,
        // decided again on the fresh state, is simply retried.
        let mut attempts = 0;
        loop {
            let metadata = audit.metadata(command.name());
            match self
                .users
                .execute_with_metadata(user_id, command.clone(), metadata)
                .await
            {
                Err(AggregateError::AggregateConflict) if attempts < MAX_CONFLICT_RETRIES => {
                    attempts += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// Records a password (or client secret) check: lockout is decided by the aggregate,
    /// with the clock's time; the actor is the account that tried.
    async fn record_attempt(
        &self,
        user_id: &str,
        agency_id: &str,
        matched: bool,
        request_id: &str,
    ) -> Result<(), AggregateError<UserError>> {
        let audit = Audit {
            actor: user_id,
            agency_id,
            request_id,
        };
        let check = if matched {
            LoginCheck::PasswordMatched
        } else {
            LoginCheck::PasswordWrong
        };
        let attempt = UserCommand::AttemptLogin {
            check,
            now: self.auth.now(),
            policy: self.auth.lockout,
        };
        self.execute(user_id, attempt, &audit).await
    }

    pub async fn load(&self, user_id: &str) -> Result<User, ApiError> {
        self.store
            .load_aggregate(user_id)
            .await
            .map(|context| context.aggregate)
            .map_err(user_error)
    }
}

/// Makes the first platform administrator's password, when none is given: 24 random
/// characters, to be changed at first login.
pub fn one_time_password() -> SecretString {
    SecretString::from(crypto::random_token()[..24].to_owned())
}
