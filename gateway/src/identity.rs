//! The identity flows: registering users, login with lockout and MFA, refresh rotation,
//! logout, TOTP enrolment. Every state change goes through the User aggregate (and so into
//! the audit trail); sessions live in Redis; personal data is sealed with the user's own
//! data key, kept outside the event store (`user_data_keys`), so deleting that key erases
//! the person and leaves the history whole.

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateError, CqrsFramework, EventStore};
use eriop_domain::user::{
    Email, LoginCheck, MfaProof, PasswordPolicy, Sealed, User, UserCommand, UserError, UserStatus,
};
use eriop_domain::{AgencyId, BuiltInRole, UserId};
use postgres_es::PostgresEventRepository;
use secrecy::SecretString;
use serde::Serialize;
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm as TotpAlgorithm, TOTP};
use uuid::Uuid;

use crate::audit::Audit;
use crate::auth::sessions::{RefreshOwner, Rotation};
use crate::auth::{crypto, passwords, Auth, Caller, Restriction, TokenPair};
use crate::error::ApiError;

pub type UserCqrs = CqrsFramework<User, PersistedEventStore<PostgresEventRepository, User>>;
pub type UserStore = PersistedEventStore<PostgresEventRepository, User>;

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
    let mut tx = crate::tenancy::begin(pool, crate::tenancy::Scope::All).await?;
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM agencies WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(status.as_deref() == Some("suspended"))
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
    crate::command::refusal(e, "user")
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

    async fn user_by_email(&self, email: &Email) -> Result<Option<Uuid>, ApiError> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM user_emails WHERE email_index = ANY($1) LIMIT 1",
        )
        .bind(self.auth.email_indexes(email))
        .fetch_optional(self.pool)
        .await?)
    }

    /// Makes and stores the person's data key (wrapped), before any of their data is sealed.
    async fn new_data_key(&self, user_id: UserId) -> Result<[u8; 32], ApiError> {
        let key = crypto::random_key();
        sqlx::query("INSERT INTO user_data_keys (user_id, wrapped_key) VALUES ($1, $2)")
            .bind(user_id.as_uuid())
            .bind(self.auth.wrap_data_key(&user_id.to_string(), &key))
            .execute(self.pool)
            .await?;
        Ok(key)
    }

    async fn data_key(&self, user_id: &str) -> Result<[u8; 32], ApiError> {
        let wrapped: Option<String> =
            sqlx::query_scalar("SELECT wrapped_key FROM user_data_keys WHERE user_id = $1::uuid")
                .bind(user_id)
                .fetch_optional(self.pool)
                .await?;
        let wrapped = wrapped
            .ok_or_else(|| ApiError::NotFound("this user's personal data was erased".into()))?;
        self.auth
            .unwrap_data_key(user_id, &wrapped)
            .map_err(ApiError::internal)
    }

    /// Registers a user. The email is reserved first, in the write side's own table, so two
    /// registrations of one address cannot both succeed.
    #[allow(clippy::too_many_arguments)]
    pub async fn register(
        &self,
        audit: &Audit<'_>,
        agency_id: AgencyId,
        email: &Email,
        display_name: &str,
        password: SecretString,
        must_change_password: bool,
        roles: Vec<String>,
    ) -> Result<UserId, ApiError> {
        let user_id = UserId::from_uuid(Uuid::now_v7());
        let id = user_id.to_string();
        // Taken under a previous key too (a rotation not re-indexed yet).
        if self.user_by_email(email).await?.is_some() {
            return Err(ApiError::Conflict(EMAIL_TAKEN.into()));
        }
        let reserved = sqlx::query(
            "INSERT INTO user_emails (email_index, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(self.auth.email_index(email))
        .bind(user_id.as_uuid())
        .execute(self.pool)
        .await?;
        if reserved.rows_affected() == 0 {
            return Err(ApiError::Conflict(EMAIL_TAKEN.into()));
        }
        let data_key = self.new_data_key(user_id).await?;
        let password_hash = passwords::hash(password)
            .await
            .map_err(ApiError::internal)?;
        let command = UserCommand::Register {
            id: user_id,
            agency_id,
            email: Sealed(crypto::seal(
                &data_key,
                &format!("email:{id}"),
                email.as_str().as_bytes(),
            )),
            display_name: Sealed(crypto::seal(
                &data_key,
                &format!("name:{id}"),
                display_name.as_bytes(),
            )),
            password_hash,
            must_change_password,
            roles,
            service_account: false,
        };
        if let Err(e) = self.execute(&id, command, audit).await {
            // Release the reservation so the address can be registered again.
            let _ = sqlx::query("DELETE FROM user_emails WHERE user_id = $1")
                .bind(user_id.as_uuid())
                .execute(self.pool)
                .await;
            return Err(user_error(e));
        }
        Ok(user_id)
    }

    pub async fn login(
        &self,
        email: &str,
        password: SecretString,
        request_id: &str,
    ) -> Result<LoginOutcome, ApiError> {
        // The same work whatever the address, so that neither the answer nor its timing
        // tells whether an account exists: one lookup, one event-store read (of nobody's
        // stream for an unknown address), one password hash, one committed write (an event
        // on the account, or the unknown address's failure counter).
        let account = match Email::parse(email) {
            Ok(email) => self.user_by_email(&email).await?,
            Err(_) => None,
        };
        let user = self
            .load(&account.unwrap_or(Uuid::nil()).to_string())
            .await?;
        let hash = account.map(|_| user.password_hash().to_owned());
        let matched = passwords::verify(password, hash).await;
        let Some(user_id) = account else {
            self.count_unknown_failure(email).await?;
            return Err(ApiError::Unauthorized(INVALID_LOGIN));
        };
        let id = user_id.to_string();
        let agency = user.agency_id().map(|a| a.to_string()).unwrap_or_default();
        match self.record_attempt(&id, &agency, matched, request_id).await {
            Ok(()) => {}
            Err(AggregateError::UserError(UserError::Locked { .. } | UserError::Deactivated)) => {
                tracing::info!(user_id = %id, "login refused: account locked or deactivated");
                return Err(ApiError::Unauthorized(INVALID_LOGIN));
            }
            Err(e) => return Err(user_error(e)),
        }
        if !matched {
            return Err(ApiError::Unauthorized(INVALID_LOGIN));
        }
        if user.mfa_enabled() {
            let mfa_token = self
                .auth
                .mfa_token(&id, &agency)
                .map_err(ApiError::internal)?;
            return Ok(LoginOutcome::MfaRequired { mfa_token });
        }
        Ok(LoginOutcome::Tokens(self.open_session(&id, &user).await?))
    }

    /// Counts a failed login on an address that has no account (migration 0015), and prunes
    /// a few counters of addresses nobody tried for 30 days.
    async fn count_unknown_failure(&self, typed: &str) -> Result<(), ApiError> {
        sqlx::query(
            "WITH pruned AS (
                 DELETE FROM login_failures_unknown WHERE address_index IN (
                     SELECT address_index FROM login_failures_unknown
                      WHERE last_at < now() - interval '30 days' ORDER BY last_at LIMIT 10))
             INSERT INTO login_failures_unknown (address_index, failures) VALUES ($1, 1)
             ON CONFLICT (address_index) DO UPDATE
                SET failures = login_failures_unknown.failures + 1, last_at = now()",
        )
        .bind(self.auth.address_index(typed))
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// What the user must do before anything else, if anything: change a password chosen by
    /// someone else, or enrol in MFA when the agency requires it.
    /// `agency` is the session's (the user's own, or one it is a member of).
    async fn restriction_for(
        &self,
        user: &User,
        agency: AgencyId,
    ) -> Result<Option<Restriction>, ApiError> {
        if user.must_change_password() {
            return Ok(Some(Restriction::PasswordChange));
        }
        if user.mfa_enabled() {
            return Ok(None);
        }
        // Whoever can act on every agency proves a second factor: until enrolled, a platform
        // administrator's session opens MFA enrolment only.
        let platform = user.roles_in(agency).is_some_and(|roles| {
            roles
                .iter()
                .any(|r| r == BuiltInRole::PlatformAdmin.as_str())
        });
        if platform && self.auth.platform_admins_need_mfa {
            return Ok(Some(Restriction::MfaEnrolment));
        }
        let agency_text = agency.to_string();
        let mut tx =
            crate::tenancy::begin(self.pool, crate::tenancy::Scope::Agency(&agency_text)).await?;
        let required: Option<bool> =
            sqlx::query_scalar("SELECT mfa_required FROM agencies WHERE id = $1")
                .bind(agency.as_uuid())
                .fetch_optional(&mut *tx)
                .await?;
        Ok(required
            .unwrap_or(false)
            .then_some(Restriction::MfaEnrolment))
    }

    /// A new session in the user's own agency.
    async fn open_session(&self, user_id: &str, user: &User) -> Result<TokenPair, ApiError> {
        let agency = user
            .agency_id()
            .ok_or_else(|| ApiError::NotFound("no such user".into()))?;
        self.open_session_in(user_id, user, agency).await
    }

    /// A new session scoped to `agency`, with the roles the user holds there.
    async fn open_session_in(
        &self,
        user_id: &str,
        user: &User,
        agency: AgencyId,
    ) -> Result<TokenPair, ApiError> {
        let roles = user
            .roles_in(agency)
            .ok_or_else(|| ApiError::NotFound("you are not a member of this agency".into()))?;
        let agency_id = agency.to_string();
        if agency_suspended(self.pool, &agency_id).await? {
            return Err(ApiError::Forbidden(AGENCY_SUSPENDED));
        }
        let restriction = self.restriction_for(user, agency).await?;
        let family = Uuid::new_v4().to_string();
        let pair = self
            .auth
            .new_pair(user_id, &agency_id, roles, &family, restriction)
            .map_err(ApiError::internal)?;
        let owner = RefreshOwner {
            family,
            user_id: user_id.to_owned(),
            agency_id,
        };
        self.auth
            .sessions
            .open_family(&owner, &pair.refresh_token, self.auth.refresh_ttl)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok(pair)
    }

    /// The TOTP step (RFC 6238: SHA-1, 6 digits, 30 s, one step of skew) that `code` matches.
    fn totp_step(&self, secret: &[u8], code: &str) -> Option<u64> {
        let totp = TOTP::new_unchecked(
            TotpAlgorithm::SHA1,
            6,
            1,
            TOTP_STEP_SECONDS,
            secret.to_vec(),
            None,
            String::new(),
        );
        let now = u64::try_from(self.auth.now().millis() / 1000).ok()?;
        let step = now / TOTP_STEP_SECONDS;
        [step.saturating_sub(1), step, step + 1]
            .into_iter()
            .find(|s| {
                let expected = totp.generate(s * TOTP_STEP_SECONDS);
                bool::from(expected.as_bytes().ct_eq(code.trim().as_bytes()))
            })
    }

    pub async fn verify_mfa(
        &self,
        mfa_token: &str,
        code: &str,
        request_id: &str,
    ) -> Result<TokenPair, ApiError> {
        let claims = self
            .auth
            .verify_mfa_token(mfa_token)
            .map_err(|_| ApiError::Unauthorized("the MFA token is not valid; log in again"))?;
        let user = self.load(&claims.sub).await?;
        let secret = user
            .totp_secret()
            .ok_or(ApiError::Unauthorized("MFA is not enabled"))?;
        let secret = self
            .auth
            .open(&format!("totp:{}", claims.sub), secret)
            .map_err(ApiError::internal)?;
        let sessions = &self.auth.sessions;
        let unavailable =
            |e: crate::auth::sessions::SessionError| ApiError::Unavailable(e.to_string());
        // One use per MFA token, and none after a password change (the user's not-before).
        if sessions
            .access_revoked(&claims.jti, &claims.sub, claims.iat_ms, "")
            .await
            .map_err(unavailable)?
        {
            return Err(ApiError::Unauthorized(
                "the MFA token was used or revoked; log in again",
            ));
        }
        let now = self.auth.now();
        // Three codes per step and account: every attempt is counted before its code is
        // looked at (one atomic increment), so concurrent guesses cannot all be tried.
        let step_now = u64::try_from(now.millis() / 1000).unwrap_or(0) / TOTP_STEP_SECONDS;
        let attempts_key = format!("mfa-attempts:{}:{step_now}", claims.sub);
        if sessions
            .count_per_minute(&attempts_key)
            .await
            .map_err(unavailable)?
            > 3
        {
            return Err(ApiError::Unauthorized(
                "too many codes tried; wait for the next code",
            ));
        }
        let proof = match self.totp_step(&secret, code) {
            Some(step) => Some(MfaProof::Totp { step }),
            None => {
                let hashes = self.auth.recovery_code_hashes(code);
                user.unused_recovery_codes()
                    .find(|(_, h)| {
                        hashes
                            .iter()
                            .any(|hash| bool::from(h.as_bytes().ct_eq(hash.as_bytes())))
                    })
                    .map(|(index, _)| MfaProof::RecoveryCode { index })
            }
        };
        let Some(proof) = proof else {
            // A wrong second factor is a failed login: it counts toward the lockout.
            match self
                .record_attempt(&claims.sub, &claims.agency, false, request_id)
                .await
            {
                Ok(()) | Err(AggregateError::UserError(_)) => {}
                Err(e) => return Err(user_error(e)),
            }
            return Err(ApiError::Unauthorized("the code is not valid"));
        };
        let audit = Audit {
            actor: &claims.sub,
            agency_id: &claims.agency,
            request_id,
        };
        match self
            .execute(&claims.sub, UserCommand::CompleteMfa { proof, now }, &audit)
            .await
        {
            Ok(()) => {}
            Err(AggregateError::UserError(UserError::CodeAlreadyUsed)) => {
                return Err(ApiError::Unauthorized(
                    "this code was already used; wait for the next one",
                ))
            }
            Err(AggregateError::UserError(UserError::Locked { .. } | UserError::Deactivated)) => {
                return Err(ApiError::Unauthorized(INVALID_LOGIN))
            }
            Err(e) => return Err(user_error(e)),
        }
        sessions
            .deny(&claims.jti, claims.exp.saturating_mul(1000), now.millis())
            .await
            .map_err(unavailable)?;
        self.open_session(&claims.sub, &user).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, OAuthError> {
        let unavailable = |_| OAuthError {
            error: "temporarily_unavailable",
            error_description: "retry later",
        };
        let owner = self
            .auth
            .sessions
            .owner(refresh_token)
            .await
            .map_err(unavailable)?
            .ok_or_else(invalid_grant)?;
        let user = self
            .load(&owner.user_id)
            .await
            .map_err(|_| invalid_grant())?;
        if user.status() != Some(UserStatus::Active) {
            return Err(invalid_grant());
        }
        // The roles held now in the session's agency (a revoked membership ends the session).
        let agency: AgencyId = owner.agency_id.parse().map_err(|_| invalid_grant())?;
        let roles = user.roles_in(agency).ok_or_else(invalid_grant)?;
        if agency_suspended(self.pool, &owner.agency_id)
            .await
            .map_err(|_| OAuthError {
                error: "temporarily_unavailable",
                error_description: "retry later",
            })?
        {
            return Err(OAuthError {
                error: "invalid_grant",
                error_description: AGENCY_SUSPENDED,
            });
        }
        let pair = self
            .auth
            .new_pair(
                &owner.user_id,
                &owner.agency_id,
                roles,
                &owner.family,
                // Decided again: a refresh never lifts a restriction.
                self.restriction_for(&user, agency)
                    .await
                    .map_err(|_| invalid_grant())?,
            )
            .map_err(|_| OAuthError {
                error: "server_error",
                error_description: "cannot sign the token",
            })?;
        let successor = serde_json::to_vec(&pair).unwrap_or_default();
        let rotation = self
            .auth
            .sessions
            .rotate(
                &owner,
                refresh_token,
                &pair.refresh_token,
                &successor,
                self.auth.now().millis(),
            )
            .await
            .map_err(unavailable)?;
        match rotation {
            Rotation::Rotated => Ok(pair),
            Rotation::AlreadyRotated(earlier) => {
                serde_json::from_slice(&earlier).map_err(|_| invalid_grant())
            }
            Rotation::Reused => {
                tracing::warn!(user_id = %owner.user_id, family = %owner.family, "refresh token reused: session family revoked");
                Err(invalid_grant())
            }
            Rotation::Invalid => Err(invalid_grant()),
        }
    }

    pub async fn logout(&self, caller: &Caller, request_id: &str) -> Result<(), ApiError> {
        let sessions = &self.auth.sessions;
        let now = self.auth.now().millis();
        let unavailable =
            |e: crate::auth::sessions::SessionError| ApiError::Unavailable(e.to_string());
        sessions
            .revoke_family(&caller.claims.sid)
            .await
            .map_err(unavailable)?;
        sessions
            .deny(&caller.claims.jti, caller.claims.exp * 1000, now)
            .await
            .map_err(unavailable)?;
        let audit = Audit::by(caller, request_id);
        self.execute(
            caller.claims.sub.as_str(),
            UserCommand::LogOut {
                now: self.auth.now(),
            },
            &audit,
        )
        .await
        .map_err(user_error)
    }

    pub async fn me(&self, caller: &Caller) -> Result<Me, ApiError> {
        let user = self.load(caller.claims.sub.as_str()).await?;
        let id = caller.claims.sub.as_str();
        let key = self.data_key(id).await?;
        let open = |context: String, sealed: Option<&Sealed>| -> String {
            sealed
                .and_then(|s| crypto::open(&key, &context, &s.0).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default()
        };
        Ok(Me {
            id: id.to_owned(),
            agency_id: caller.claims.agency.as_str().to_owned(),
            email: open(format!("email:{id}"), user.email()),
            display_name: open(format!("name:{id}"), user.display_name()),
            // The roles in the token's agency.
            roles: user
                .roles_in(caller.agency_id())
                .map(<[String]>::to_vec)
                .unwrap_or_default(),
            mfa_enabled: user.mfa_enabled(),
            password_change_required: user.must_change_password(),
        })
    }

    pub async fn start_totp(
        &self,
        caller: &Caller,
        request_id: &str,
    ) -> Result<Enrolment, ApiError> {
        let me = self.me(caller).await?;
        let secret = crypto::random_key()[..20].to_vec();
        let totp = TOTP::new(
            TotpAlgorithm::SHA1,
            6,
            1,
            TOTP_STEP_SECONDS,
            secret.clone(),
            Some("ERIOP".into()),
            me.email,
        )
        .map_err(ApiError::internal)?;
        let sealed = self
            .auth
            .seal(&format!("totp:{}", caller.claims.sub.as_str()), &secret);
        let audit = Audit::by(caller, request_id);
        self.execute(
            caller.claims.sub.as_str(),
            UserCommand::StartMfaEnrolment { secret: sealed },
            &audit,
        )
        .await
        .map_err(user_error)?;
        let qr = totp
            .get_qr_base64()
            .map_err(|e| ApiError::Internal(e.into()))?;
        Ok(Enrolment {
            secret: totp.get_secret_base32(),
            otpauth_uri: totp.get_url(),
            qr_code: format!("data:image/png;base64,{qr}"),
        })
    }

    /// Confirms enrolment with a first code; answers ten recovery codes, shown once.
    pub async fn confirm_totp(
        &self,
        caller: &Caller,
        code: &str,
        request_id: &str,
    ) -> Result<Vec<String>, ApiError> {
        let user = self.load(caller.claims.sub.as_str()).await?;
        let pending = user.pending_totp_secret().ok_or_else(|| {
            ApiError::Conflict("start the enrolment first (POST /api/v1/auth/mfa/totp)".into())
        })?;
        let secret = self
            .auth
            .open(&format!("totp:{}", caller.claims.sub.as_str()), pending)
            .map_err(ApiError::internal)?;
        let step = self
            .totp_step(&secret, code)
            .ok_or_else(|| ApiError::validation("code", "does not match the authenticator"))?;
        // 80 random bits each (20 hex digits in groups of five): a code is a password that
        // skips the second factor, and must not be guessable offline from its hash either.
        let codes: Vec<String> = (0..10)
            .map(|_| {
                let raw = crypto::hex(&crypto::random_key()[..10]);
                format!(
                    "{}-{}-{}-{}",
                    &raw[..5],
                    &raw[5..10],
                    &raw[10..15],
                    &raw[15..]
                )
            })
            .collect();
        let hashes = codes
            .iter()
            .map(|c| self.auth.recovery_code_hash(c))
            .collect();
        let audit = Audit::by(caller, request_id);
        self.execute(
            caller.claims.sub.as_str(),
            UserCommand::ConfirmMfa {
                step,
                recovery_code_hashes: hashes,
            },
            &audit,
        )
        .await
        .map_err(user_error)?;
        Ok(codes)
    }

    pub async fn unlock(
        &self,
        admin: &Caller,
        user_id: &str,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let user = self.load(user_id).await?;
        self.visible_to(admin, &user)?;
        let audit = Audit::by(admin, request_id);
        self.execute(user_id, UserCommand::Unlock, &audit)
            .await
            .map_err(user_error)
    }

    /// Changes the caller's password (the current one is required), ends every other
    /// session, and answers a new pair for this one.
    pub async fn change_password(
        &self,
        caller: &Caller,
        current: SecretString,
        new: SecretString,
        request_id: &str,
    ) -> Result<TokenPair, ApiError> {
        let id = caller.claims.sub.as_str();
        let user = self.load(id).await?;
        let matched = passwords::verify(current, Some(user.password_hash().to_owned())).await;
        // The same attempt limit as a login: a stolen session cannot guess the password.
        match self
            .record_attempt(id, caller.claims.agency.as_str(), matched, request_id)
            .await
        {
            Ok(()) => {}
            Err(AggregateError::UserError(UserError::Locked { .. } | UserError::Deactivated)) => {
                return Err(ApiError::Unauthorized(INVALID_LOGIN));
            }
            Err(e) => return Err(user_error(e)),
        }
        if !matched {
            return Err(ApiError::validation(
                "current_password",
                "is not the current password",
            ));
        }
        let me = self.me(caller).await?;
        PasswordPolicy::default()
            .check(
                secrecy::ExposeSecret::expose_secret(&new),
                &[me.email.as_str(), me.display_name.as_str()],
            )
            .map_err(|e| ApiError::validation("new_password", e.to_string()))?;
        let password_hash = passwords::hash(new).await.map_err(ApiError::internal)?;
        let audit = Audit {
            actor: id,
            agency_id: caller.claims.agency.as_str(),
            request_id,
        };
        self.execute(
            id,
            UserCommand::ChangePassword {
                password_hash,
                now: self.auth.now(),
            },
            &audit,
        )
        .await
        .map_err(user_error)?;
        self.end_sessions(id).await?;
        let user = self.load(id).await?;
        self.open_session(id, &user).await
    }

    /// Every access token issued until now stops working, every session family is revoked.
    async fn end_sessions(&self, user_id: &str) -> Result<(), ApiError> {
        let unavailable =
            |e: crate::auth::sessions::SessionError| ApiError::Unavailable(e.to_string());
        let sessions = &self.auth.sessions;
        sessions
            .set_not_before(user_id, self.auth.now().millis(), self.auth.access_ttl)
            .await
            .map_err(unavailable)?;
        sessions
            .revoke_user_families(user_id, None)
            .await
            .map_err(unavailable)
    }

    /// Turns the caller's MFA off; needs a current code or the password.
    pub async fn disable_own_mfa(
        &self,
        caller: &Caller,
        code: Option<&str>,
        password: Option<SecretString>,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let id = caller.claims.sub.as_str();
        let user = self.load(id).await?;
        // The same limits as a login: three codes per step (counted before any is looked
        // at), no code accepted twice, and every failure toward the account lockout.
        let unavailable =
            |e: crate::auth::sessions::SessionError| ApiError::Unavailable(e.to_string());
        let proven = match (code, password) {
            (Some(code), _) => match user.totp_secret() {
                Some(secret) => {
                    let step_now = u64::try_from(self.auth.now().millis() / 1000).unwrap_or(0)
                        / TOTP_STEP_SECONDS;
                    if self
                        .auth
                        .sessions
                        .count_per_minute(&format!("mfa-attempts:{id}:{step_now}"))
                        .await
                        .map_err(unavailable)?
                        > 3
                    {
                        return Err(ApiError::Unauthorized(
                            "too many codes tried; wait for the next code",
                        ));
                    }
                    let secret = self
                        .auth
                        .open(&format!("totp:{id}"), secret)
                        .map_err(ApiError::internal)?;
                    match self.totp_step(&secret, code) {
                        Some(step) if user.last_totp_step().is_some_and(|last| step <= last) => {
                            return Err(ApiError::Unauthorized(
                                "this code was already used; wait for the next one",
                            ))
                        }
                        found => found.is_some(),
                    }
                }
                None => false,
            },
            (None, Some(password)) => {
                passwords::verify(password, Some(user.password_hash().to_owned())).await
            }
            (None, None) => {
                return Err(ApiError::validation(
                    "code",
                    "give a current code or the password",
                ))
            }
        };
        if !proven {
            match self
                .record_attempt(id, caller.claims.agency.as_str(), false, request_id)
                .await
            {
                Ok(()) | Err(AggregateError::UserError(_)) => {}
                Err(e) => return Err(user_error(e)),
            }
            return Err(ApiError::Unauthorized("the code or password is not valid"));
        }
        if user.lockout().is_locked(self.auth.now()) {
            return Err(ApiError::Unauthorized(INVALID_LOGIN));
        }
        let audit = Audit {
            actor: id,
            agency_id: caller.claims.agency.as_str(),
            request_id,
        };
        self.execute(id, UserCommand::DisableMfa { by_admin: false }, &audit)
            .await
            .map_err(user_error)
    }

    /// An administrator's MFA reset of another user: its own audited event.
    pub async fn reset_mfa(
        &self,
        admin: &Caller,
        user_id: &str,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let user = self.load(user_id).await?;
        self.visible_to(admin, &user)?;
        let audit = Audit::by(admin, request_id);
        self.execute(user_id, UserCommand::DisableMfa { by_admin: true }, &audit)
            .await
            .map_err(user_error)
    }

    /// Deactivates (the history stays; the account can be reactivated) and ends its sessions.
    pub async fn set_active(
        &self,
        admin: &Caller,
        user_id: &str,
        active: bool,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let user = self.load(user_id).await?;
        self.visible_to(admin, &user)?;
        let audit = Audit::by(admin, request_id);
        let command = if active {
            UserCommand::Reactivate
        } else {
            UserCommand::Deactivate
        };
        match self.execute(user_id, command, &audit).await {
            Ok(()) | Err(AggregateError::UserError(UserError::Unchanged)) => {}
            Err(e) => return Err(user_error(e)),
        }
        if !active {
            self.end_sessions(user_id).await?;
        }
        Ok(())
    }

    pub async fn update_profile(
        &self,
        admin: &Caller,
        user_id: &str,
        display_name: &str,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let user = self.load(user_id).await?;
        self.visible_to(admin, &user)?;
        let key = self.data_key(user_id).await?;
        let sealed = Sealed(crypto::seal(
            &key,
            &format!("name:{user_id}"),
            display_name.as_bytes(),
        ));
        let audit = Audit::by(admin, request_id);
        self.execute(
            user_id,
            UserCommand::UpdateProfile {
                display_name: sealed,
            },
            &audit,
        )
        .await
        .map_err(user_error)
    }

    /// Registers a service account (integrations, auditors): no email, a random secret shown
    /// once, the client-credentials grant only.
    pub async fn register_service_account(
        &self,
        audit: &Audit<'_>,
        agency_id: AgencyId,
        name: &str,
        roles: Vec<String>,
    ) -> Result<(UserId, SecretString), ApiError> {
        let user_id = UserId::from_uuid(Uuid::now_v7());
        let id = user_id.to_string();
        let data_key = self.new_data_key(user_id).await?;
        let secret = SecretString::from(crypto::random_token());
        let password_hash = passwords::hash(secret.clone())
            .await
            .map_err(ApiError::internal)?;
        let command = UserCommand::Register {
            id: user_id,
            agency_id,
            email: Sealed(crypto::seal(&data_key, &format!("email:{id}"), b"")),
            display_name: Sealed(crypto::seal(
                &data_key,
                &format!("name:{id}"),
                name.as_bytes(),
            )),
            password_hash,
            must_change_password: false,
            roles,
            service_account: true,
        };
        self.execute(&id, command, audit)
            .await
            .map_err(user_error)?;
        Ok((user_id, secret))
    }

    /// The client-credentials grant (RFC 6749 section 4.4): a service account's id and
    /// secret give an access token, and no refresh token.
    pub async fn client_credentials(
        &self,
        client_id: &str,
        client_secret: SecretString,
        request_id: &str,
    ) -> Result<(String, u64), OAuthError> {
        let invalid_client = || OAuthError {
            error: "invalid_client",
            error_description: "unknown client or wrong secret",
        };
        let user = match Uuid::parse_str(client_id) {
            Ok(id) => self
                .load(&id.to_string())
                .await
                .ok()
                .filter(|u| u.is_service_account()),
            Err(_) => None,
        };
        let matched = passwords::verify(
            client_secret,
            user.as_ref().map(|u| u.password_hash().to_owned()),
        )
        .await;
        let Some(user) = user else {
            return Err(invalid_client());
        };
        let agency = user.agency_id().map(|a| a.to_string()).unwrap_or_default();
        let recorded = self
            .record_attempt(client_id, &agency, matched, request_id)
            .await;
        if recorded.is_err() || !matched {
            return Err(invalid_client());
        }
        if agency_suspended(self.pool, &agency).await.unwrap_or(true) {
            return Err(OAuthError {
                error: "invalid_client",
                error_description: AGENCY_SUSPENDED,
            });
        }
        let pair = self
            .auth
            .new_pair(client_id, &agency, user.roles(), "", None)
            .map_err(|_| OAuthError {
                error: "server_error",
                error_description: "cannot sign the token",
            })?;
        Ok((pair.access_token, pair.expires_in))
    }

    /// Tokens for another agency the caller belongs to (a new session there).
    pub async fn switch_agency(
        &self,
        caller: &Caller,
        agency: AgencyId,
    ) -> Result<TokenPair, ApiError> {
        let user = self.load(caller.claims.sub.as_str()).await?;
        self.open_session_in(caller.claims.sub.as_str(), &user, agency)
            .await
    }

    /// Grants (`Some(roles)`) or revokes a membership in `agency`; answers the user's version.
    pub async fn set_membership(
        &self,
        admin: &Caller,
        user_id: &str,
        agency: AgencyId,
        roles: Option<Vec<String>>,
        request_id: &str,
    ) -> Result<i64, ApiError> {
        let audit = Audit {
            actor: admin.claims.sub.as_str(),
            agency_id: &agency.to_string(),
            request_id,
        };
        let command = match roles {
            Some(roles) => UserCommand::GrantMembership {
                agency_id: agency,
                roles,
            },
            None => UserCommand::RevokeMembership { agency_id: agency },
        };
        self.execute(user_id, command, &audit)
            .await
            .map_err(user_error)?;
        self.version(user_id).await
    }

    async fn version(&self, user_id: &str) -> Result<i64, ApiError> {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT max(sequence) FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1",
        )
        .bind(user_id)
        .fetch_one(self.pool)
        .await?;
        Ok(version.unwrap_or(0))
    }

    /// Gives (`assign`) or takes a role; answers the user's version afterwards.
    pub async fn set_role(
        &self,
        admin: &Caller,
        user_id: &str,
        role: &str,
        assign: bool,
        request_id: &str,
    ) -> Result<i64, ApiError> {
        let user = self.load(user_id).await?;
        self.visible_to(admin, &user)?;
        let audit = Audit::by(admin, request_id);
        let role = role.to_owned();
        let command = if assign {
            UserCommand::AssignRole { role }
        } else {
            UserCommand::UnassignRole { role }
        };
        self.execute(user_id, command, &audit)
            .await
            .map_err(user_error)?;
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT max(sequence) FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1",
        )
        .bind(user_id)
        .fetch_one(self.pool)
        .await?;
        Ok(version.unwrap_or(0))
    }

    /// Opens a user's sealed personal `field` (`email` or `name`) with the user's wrapped data
    /// key; `None` once the person was erased (no key) or the value was altered.
    pub fn open_personal(
        &self,
        user_id: &str,
        wrapped_key: Option<&str>,
        field: &str,
        sealed: &str,
    ) -> Option<String> {
        let key = self.auth.unwrap_data_key(user_id, wrapped_key?).ok()?;
        let plain = crypto::open(&key, &format!("{field}:{user_id}"), sealed).ok()?;
        String::from_utf8(plain).ok()
    }

    /// Another agency's user does not exist for the caller (404, never 403).
    pub fn visible_to(&self, caller: &Caller, user: &User) -> Result<(), ApiError> {
        let same_agency = user
            .agency_id()
            .is_some_and(|a| a.to_string() == caller.claims.agency.as_str());
        if same_agency {
            Ok(())
        } else if caller.has_role(BuiltInRole::PlatformAdmin) {
            // Only the platform role crosses agencies, and that is logged (DESIGN.md rule 7).
            tracing::info!(
                target: "authz",
                user_id = %caller.claims.sub.as_str(),
                agency_id = %caller.claims.agency.as_str(),
                target_agency_id = %user.agency_id().map(|a| a.to_string()).unwrap_or_default(),
                outcome = "cross-agency",
                "platform admin acts in another agency"
            );
            Ok(())
        } else {
            Err(ApiError::NotFound("no such user".into()))
        }
    }
}

/// Makes the first platform administrator's password, when none is given: 24 random
/// characters, to be changed at first login.
pub fn one_time_password() -> SecretString {
    SecretString::from(crypto::random_token()[..24].to_owned())
}
