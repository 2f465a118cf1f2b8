//! Logging in: passwords (with lockout), the same work for an unknown address, the
//! restrictions a fresh session starts with, service accounts' client credentials, and
//! changing one's own password.

use cqrs_es::AggregateError;
use eriop_domain::user::{Email, PasswordPolicy, User, UserCommand, UserError};
use eriop_domain::{AgencyId, BuiltInRole};
use secrecy::SecretString;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::services::audit::Audit;
use crate::services::auth::{passwords, Caller, Restriction, TokenPair};

use super::*;

impl Identity<'_> {
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
        let matched = passwords::verify(password, hash).await?;
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
    pub(super) async fn count_unknown_failure(&self, typed: &str) -> Result<(), ApiError> {
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
    pub(super) async fn restriction_for(
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
        let mut tx =
            crate::tenancy::begin(self.pool, crate::tenancy::Scope::Agency(agency.as_uuid()))
                .await?;
        let required: Option<bool> =
            sqlx::query_scalar("SELECT mfa_required FROM agencies WHERE id = $1")
                .bind(agency.as_uuid())
                .fetch_optional(&mut *tx)
                .await?;
        Ok(required
            .unwrap_or(false)
            .then_some(Restriction::MfaEnrolment))
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
        let matched = passwords::verify(current, Some(user.password_hash().to_owned())).await?;
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
        .await
        .map_err(|_| OAuthError {
            error: "temporarily_unavailable",
            error_description: "the server is busy checking secrets: send again in a second",
        })?;
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
}
