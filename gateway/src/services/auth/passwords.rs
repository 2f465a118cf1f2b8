//! Password hashing: argon2id with OWASP's minimum (m = 19 MiB, t = 2, p = 1), in a PHC
//! string, always off the async runtime (a hash takes tens of milliseconds of CPU).

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

fn argon2() -> Argon2<'static> {
    // Fixed, valid parameters: Params::new cannot fail for them.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

pub async fn hash(password: SecretString) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HashError(e.to_string()))
    })
    .await
    .map_err(|e| HashError(e.to_string()))?
}

/// Checks `password` against `phc`; with no hash (no such account) it checks against a
/// dummy hash instead, so the answer takes the same time either way.
pub async fn verify(password: SecretString, phc: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let phc = phc.as_deref().unwrap_or_else(|| dummy_hash());
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        argon2()
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(b"no account has this password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Computes the dummy hash once at start-up, so the first unknown login is not faster.
pub fn warm_up() {
    let _ = dummy_hash();
}
