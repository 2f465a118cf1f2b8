//! The second factor: TOTP codes (each step once, attempts counted atomically), enrolment,
//! recovery codes, and removing one's own MFA.

use cqrs_es::AggregateError;
use eriop_domain::user::{MfaProof, UserCommand, UserError};
use secrecy::SecretString;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm as TotpAlgorithm, TOTP};

use crate::http::error::ApiError;
use crate::services::audit::Audit;
use crate::services::auth::{crypto, passwords, Caller, TokenPair};

use super::*;

impl Identity<'_> {
    /// The TOTP step (RFC 6238: SHA-1, 6 digits, 30 s, one step of skew) that `code` matches.
    pub(super) fn totp_step(&self, secret: &[u8], code: &str) -> Option<u64> {
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
            |e: crate::services::auth::sessions::SessionError| ApiError::Unavailable(e.to_string());
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
            |e: crate::services::auth::sessions::SessionError| ApiError::Unavailable(e.to_string());
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
                passwords::verify(password, Some(user.password_hash().to_owned())).await?
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
}
