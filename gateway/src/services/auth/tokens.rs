//! Access tokens (and the short-lived MFA token) as JWTs, and their checks. Every check that
//! a careless verifier skips is made here: the algorithm must be ours (no `none`, no HS256
//! signed with our public key), the `kid` known, the signature valid, `iss` and `aud` ours,
//! and `exp` in the future by our clock.

use jsonwebtoken::{decode, decode_header, encode, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::SigningKeys;
use eriop_domain::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The active agency.
    pub agency: String,
    pub roles: Vec<String>,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    /// The session family (one login); empty in an MFA token.
    #[serde(default)]
    pub sid: String,
    /// `iat` in milliseconds: a password change revokes the tokens issued before it, even
    /// within the same second.
    #[serde(default)]
    pub iat_ms: i64,
    /// Set when the token may only be used to finish a required step first:
    /// `password-change` or `mfa-enrolment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restriction: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unexpected algorithm")]
    Algorithm,
    #[error("unknown key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("expired token")]
    Expired,
}

pub fn issue(keys: &SigningKeys, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(keys.algorithm);
    header.kid = Some(keys.kid().to_owned());
    header.typ = Some("JWT".to_owned());
    encode(&header, claims, keys.encoding())
}

pub fn verify(
    keys: &SigningKeys,
    token: &str,
    issuer: &str,
    audience: &str,
    now: Timestamp,
) -> Result<Claims, TokenError> {
    let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != keys.algorithm {
        return Err(TokenError::Algorithm);
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| keys.decoding(kid))
        .ok_or(TokenError::UnknownKey)?;
    let mut validation = Validation::new(keys.algorithm);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // Expiry is checked below against our clock (an input, so tests can move it).
    validation.validate_exp = false;
    validation.leeway = 0;
    let claims = decode::<Claims>(token, key, &validation)
        .map_err(|e| TokenError::Invalid(e.to_string()))?
        .claims;
    unexpired(&claims, now)?;
    Ok(claims)
}

/// Whether `claims` are still good at `now` by our clock: expired at `exp` exactly.
pub fn unexpired(claims: &Claims, now: Timestamp) -> Result<(), TokenError> {
    if claims.exp.saturating_mul(1000) <= now.millis() {
        return Err(TokenError::Expired);
    }
    Ok(())
}
