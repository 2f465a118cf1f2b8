//! Access tokens this process has verified already, so that a client calling many times
//! with one token pays the signature check (Ed25519) once rather than at every request
//! (issue 13). Only what [`tokens::verify`] accepted is kept, and a kept token is still
//! checked against the clock at each use, so it expires exactly when an unkept one would.
//! Revocation, suspension, roles and rate limits do not come from here: the caller
//! extractor asks for them at every request, as before.
//!
//! Keyed by the token's SHA-256, not the token: a lookup compares digests, which tell
//! nothing of a token to someone timing it, and the memory holds no bearer token. Bounded
//! (S3-FIFO eviction by `quick_cache`): a burst of new tokens evicts old ones, and the only
//! cost of an eviction is one more signature check.
//!
//! [`tokens::verify`]: super::tokens::verify

use eriop_domain::Timestamp;
use sha2::{Digest, Sha256};

use super::tokens::{self, Claims, TokenError};

/// At most this many verified tokens are kept (about 1 KiB each).
pub const CAPACITY: usize = 4_096;

pub struct VerifiedTokens {
    kept: quick_cache::sync::Cache<[u8; 32], Claims>,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::new(CAPACITY)
    }
}

impl VerifiedTokens {
    pub fn new(capacity: usize) -> Self {
        Self {
            kept: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    /// The claims of `token`: kept ones checked against `now`, others through `verify`,
    /// and kept when it accepts them.
    pub fn claims(
        &self,
        token: &str,
        now: Timestamp,
        verify: impl FnOnce() -> Result<Claims, TokenError>,
    ) -> Result<Claims, TokenError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.kept.get(&key) {
            if let Err(expired) = tokens::unexpired(&claims, now) {
                self.kept.remove(&key);
                return Err(expired);
            }
            return Ok(claims);
        }
        let claims = verify()?;
        self.kept.insert(key, claims.clone());
        Ok(claims)
    }

    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "eriop".into(),
            aud: "eriop-api".into(),
            sub: "user".into(),
            agency: "agency".into(),
            roles: vec!["viewer".into()],
            jti: "jti".into(),
            iat: exp - 900,
            exp,
            sid: "sid".into(),
            iat_ms: (exp - 900) * 1000,
            restriction: None,
        }
    }

    #[test]
    fn a_token_is_verified_once_then_kept_until_it_expires() {
        let kept = VerifiedTokens::new(16);
        let checks = Cell::new(0);
        let verify = || {
            checks.set(checks.get() + 1);
            Ok(claims(1_000))
        };
        let before = Timestamp::from_millis(999_999);
        assert_eq!(kept.claims("t", before, verify), Ok(claims(1_000)));
        assert_eq!(kept.claims("t", before, verify), Ok(claims(1_000)));
        assert_eq!(checks.get(), 1, "the second use was not verified again");
        // At `exp` by the clock, the kept token is refused as an unkept one would be.
        let at_expiry = Timestamp::from_millis(1_000_000);
        assert_eq!(
            kept.claims("t", at_expiry, || Ok(claims(1_000))),
            Err(TokenError::Expired)
        );
        assert!(kept.is_empty(), "an expired token is not kept");
    }

    #[test]
    fn a_refused_token_is_not_kept_and_is_refused_again() {
        let kept = VerifiedTokens::new(16);
        let now = Timestamp::from_millis(0);
        let refuse = || Err(TokenError::Invalid("signature".into()));
        assert!(kept.claims("forged", now, refuse).is_err());
        assert!(kept.is_empty());
        assert_eq!(
            kept.claims("forged", now, refuse),
            Err(TokenError::Invalid("signature".into()))
        );
    }

    #[test]
    fn another_token_is_verified_on_its_own() {
        let kept = VerifiedTokens::new(16);
        let now = Timestamp::from_millis(0);
        kept.claims("a", now, || Ok(claims(1_000))).unwrap();
        let mut other = claims(2_000);
        other.sub = "another user".into();
        let got = kept.claims("b", now, || Ok(other.clone())).unwrap();
        assert_eq!(got.sub, "another user");
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn the_kept_tokens_are_bounded() {
        let kept = VerifiedTokens::new(8);
        let now = Timestamp::from_millis(0);
        for n in 0..100 {
            kept.claims(&format!("token {n}"), now, || Ok(claims(1_000)))
                .unwrap();
        }
        assert!(kept.len() <= 8 * 2, "kept {} tokens", kept.len());
    }
}
