//! Authentication mechanics: keys, tokens, sessions, passwords, the server's secrets, the
//! clock, the verified caller. The flows that use them (login, refresh, MFA, ...) are in
//! `services::identity`; the HTTP extractors that check them at each request in `http`.

mod caller;
pub mod clock;
pub mod crypto;
pub mod keys;
pub mod passwords;
pub mod sessions;
pub mod tokens;
pub mod verified;

use std::sync::Arc;
use std::time::Duration;

use eriop_domain::user::{Email, LockoutPolicy, Sealed};
use eriop_domain::Timestamp;
use eriop_nats::Settings;
use secrecy::ExposeSecret;
use serde::Serialize;

pub use caller::Caller;
pub use clock::{Clock, ManualClock, ShiftedClock, SystemClock};
use keys::SigningKeys;
use sessions::Sessions;
use tokens::{Claims, TokenError};

/// A step the user must take before the token opens anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restriction {
    /// A first password chosen by someone else.
    PasswordChange,
    /// The agency requires MFA and the user has none yet.
    MfaEnrolment,
}

impl Restriction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordChange => "password-change",
            Self::MfaEnrolment => "mfa-enrolment",
        }
    }

    /// The routes (suffixes of the API path) the restricted token may reach.
    pub(crate) fn allows(self, path: &str) -> bool {
        let common = ["/auth/me", "/auth/logout"];
        let own: &[&str] = match self {
            Self::PasswordChange => &["/auth/password"],
            Self::MfaEnrolment => &["/auth/mfa/totp", "/auth/mfa/totp/confirm"],
        };
        common
            .iter()
            .chain(own)
            .any(|allowed| path.ends_with(allowed))
    }

    pub(crate) fn parse(raw: &str) -> Option<Self> {
        match raw {
            "password-change" => Some(Self::PasswordChange),
            "mfa-enrolment" => Some(Self::MfaEnrolment),
            _ => None,
        }
    }
}

/// What a successful login or refresh answers (RFC 6749 section 5.1).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    pub expires_in: u64,
}

pub struct Auth {
    pub keys: SigningKeys,
    pub sessions: Sessions,
    pub clock: Arc<dyn Clock>,
    /// Access tokens this process verified already (signature checked once per token).
    verified: verified::VerifiedTokens,
    seal_key: [u8; 32],
    index_key: [u8; 32],
    recovery_key: [u8; 32],
    /// The purpose keys of `ERIOP_SECRET_KEY_PREVIOUS`, newest first: what was sealed,
    /// wrapped, indexed or hashed before a rotation still opens, matches and is found, until
    /// `eriop-gateway rotate-keys` re-wrapped and re-indexed it (TOTP secrets and recovery
    /// codes stay in immutable events: keep a previous key while they may be in use).
    previous: Vec<PurposeKeys>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub mfa_ttl: Duration,
    pub lockout: LockoutPolicy,
    pub login_attempts_per_ip_per_minute: u64,
    /// Platform administrators' sessions open only MFA enrolment until they enrolled.
    pub platform_admins_need_mfa: bool,
    pub trust_proxy_headers: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("ERIOP_SECRET_KEY is required by the gateway (it signs tokens and seals secrets). Generate one with `openssl rand -base64 48` and set ERIOP_SECRET_KEY or ERIOP_SECRET_KEY_FILE")]
    NoSecretKey,
    #[error("{0}")]
    Keys(#[from] keys::KeyError),
}

/// The keys derived from one server key, one per purpose (HKDF).
struct PurposeKeys {
    seal: [u8; 32],
    index: [u8; 32],
    recovery: [u8; 32],
}

impl PurposeKeys {
    fn derive(secret: &[u8]) -> Self {
        Self {
            seal: crypto::derive(secret, "seal"),
            index: crypto::derive(secret, "email-index"),
            recovery: crypto::derive(secret, "recovery-codes"),
        }
    }
}

impl Auth {
    pub fn from_settings(
        settings: &Settings,
        redis: redis::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuthSetupError> {
        let secret = settings
            .secret_key
            .as_ref()
            .ok_or(AuthSetupError::NoSecretKey)?;
        let secret = secret.expose_secret().as_bytes();
        let previous: Vec<String> = settings
            .secret_key_previous
            .as_ref()
            .map(|p| {
                p.expose_secret()
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let previous: Vec<&[u8]> = previous.iter().map(|s| s.as_bytes()).collect();
        passwords::configure(settings.password_hash_queue);
        passwords::warm_up();
        Ok(Self {
            keys: SigningKeys::derive(&settings.jwt_algorithm, secret, &previous)?,
            sessions: Sessions::new(
                redis,
                &settings.redis_key_prefix,
                Duration::from_secs(settings.refresh_reuse_grace_seconds),
            ),
            clock,
            verified: verified::VerifiedTokens::default(),
            seal_key: crypto::derive(secret, "seal"),
            index_key: crypto::derive(secret, "email-index"),
            recovery_key: crypto::derive(secret, "recovery-codes"),
            previous: previous.iter().map(|p| PurposeKeys::derive(p)).collect(),
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
            access_ttl: Duration::from_secs(u64::from(settings.access_token_expire_minutes) * 60),
            refresh_ttl: Duration::from_secs(
                u64::from(settings.refresh_token_expire_days) * 86_400,
            ),
            mfa_ttl: Duration::from_secs(u64::from(settings.mfa_token_minutes) * 60),
            lockout: LockoutPolicy {
                threshold: settings.lockout_threshold,
                lock_millis: i64::from(settings.lockout_minutes) * 60_000,
            },
            login_attempts_per_ip_per_minute: u64::from(settings.login_attempts_per_ip_per_minute),
            platform_admins_need_mfa: settings.platform_admins_need_mfa,
            trust_proxy_headers: settings.trust_proxy_headers,
        })
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Finds a user by email without storing the email: HMAC under a server key.
    pub fn email_index(&self, email: &Email) -> String {
        crypto::mac_hex(&self.index_key, email.as_str())
    }

    /// The blind index of what was typed as a login name, an email or not: failed logins on
    /// addresses without an account are counted by it, never by the address itself.
    pub fn address_index(&self, typed: &str) -> String {
        match Email::parse(typed) {
            Ok(email) => self.email_index(&email),
            Err(_) => crypto::mac_hex(&self.index_key, typed),
        }
    }

    /// The email's index under the current key, then under each previous one (an address
    /// indexed before a rotation, and not re-indexed yet, is still found and still taken).
    pub fn email_indexes(&self, email: &Email) -> Vec<String> {
        std::iter::once(self.email_index(email))
            .chain(
                self.previous
                    .iter()
                    .map(|k| crypto::mac_hex(&k.index, email.as_str())),
            )
            .collect()
    }

    pub fn recovery_code_hash(&self, code: &str) -> String {
        crypto::mac_hex(&self.recovery_key, &normalized_code(code))
    }

    /// A recovery code's hash under every key, current first: codes made before a rotation
    /// still work.
    pub fn recovery_code_hashes(&self, code: &str) -> Vec<String> {
        let code = normalized_code(code);
        std::iter::once(crypto::mac_hex(&self.recovery_key, &code))
            .chain(
                self.previous
                    .iter()
                    .map(|k| crypto::mac_hex(&k.recovery, &code)),
            )
            .collect()
    }

    /// Seals a server-side secret (a TOTP secret) for `context`.
    pub fn seal(&self, context: &str, value: &[u8]) -> Sealed {
        Sealed(crypto::seal(&self.seal_key, context, value))
    }

    /// Opens with the current key, else with a previous one (AES-GCM tells a wrong key).
    pub fn open(&self, context: &str, sealed: &Sealed) -> Result<Vec<u8>, crypto::OpenError> {
        self.open_any(context, &sealed.0)
    }

    fn open_any(&self, context: &str, sealed: &str) -> Result<Vec<u8>, crypto::OpenError> {
        crypto::open(&self.seal_key, context, sealed).or_else(|e| {
            self.previous
                .iter()
                .find_map(|k| crypto::open(&k.seal, context, sealed).ok())
                .ok_or(e)
        })
    }

    /// A user's personal data key, wrapped under the server key for storage.
    pub fn wrap_data_key(&self, user_id: &str, key: &[u8; 32]) -> String {
        crypto::seal(&self.seal_key, &format!("data-key:{user_id}"), key)
    }

    pub fn unwrap_data_key(
        &self,
        user_id: &str,
        wrapped: &str,
    ) -> Result<[u8; 32], crypto::OpenError> {
        let key = self.open_any(&format!("data-key:{user_id}"), wrapped)?;
        key.try_into().map_err(|_| crypto::OpenError)
    }

    /// Whether `wrapped` is wrapped under the current key (else a rotation left it behind).
    pub fn wrapped_with_current_key(&self, user_id: &str, wrapped: &str) -> bool {
        crypto::open(&self.seal_key, &format!("data-key:{user_id}"), wrapped).is_ok()
    }

    fn claims(
        &self,
        user_id: &str,
        agency_id: &str,
        roles: &[String],
        family: &str,
        audience: &str,
        ttl: Duration,
    ) -> Claims {
        let now_ms = self.now().millis();
        let now = now_ms / 1000;
        Claims {
            iss: self.issuer.clone(),
            aud: audience.to_owned(),
            sub: user_id.to_owned(),
            agency: agency_id.to_owned(),
            roles: roles.to_vec(),
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            sid: family.to_owned(),
            iat_ms: now_ms,
            restriction: None,
        }
    }

    /// A new access token and refresh token for the session `family`.
    pub fn new_pair(
        &self,
        user_id: &str,
        agency_id: &str,
        roles: &[String],
        family: &str,
        restriction: Option<Restriction>,
    ) -> Result<TokenPair, jsonwebtoken::errors::Error> {
        let mut claims = self.claims(
            user_id,
            agency_id,
            roles,
            family,
            &self.audience,
            self.access_ttl,
        );
        claims.restriction = restriction.map(|r| r.as_str().to_owned());
        Ok(TokenPair {
            access_token: tokens::issue(&self.keys, &claims)?,
            refresh_token: crypto::random_token(),
            token_type: "Bearer".to_owned(),
            expires_in: self.access_ttl.as_secs(),
        })
    }

    fn mfa_audience(&self) -> String {
        format!("{}/mfa", self.audience)
    }

    /// The token that carries a login from the password to the second factor.
    pub fn mfa_token(
        &self,
        user_id: &str,
        agency_id: &str,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = self.claims(
            user_id,
            agency_id,
            &[],
            "",
            &self.mfa_audience(),
            self.mfa_ttl,
        );
        tokens::issue(&self.keys, &claims)
    }

    pub fn verify_mfa_token(&self, token: &str) -> Result<Claims, TokenError> {
        tokens::verify(
            &self.keys,
            token,
            &self.issuer,
            &self.mfa_audience(),
            self.now(),
        )
    }

    /// The claims of a valid access token: its signature checked the first time this
    /// process sees it, its expiry at every use (`verified`).
    pub fn verify_access_token(&self, token: &str) -> Result<Claims, TokenError> {
        let now = self.now();
        self.verified.claims(token, now, || {
            tokens::verify(&self.keys, token, &self.issuer, &self.audience, now)
        })
    }
}

fn normalized_code(code: &str) -> String {
    code.replace('-', "").to_lowercase()
}
