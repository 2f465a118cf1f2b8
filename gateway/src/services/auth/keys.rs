//! The keys that sign and check access tokens. EdDSA (Ed25519) by default: the key pair is
//! derived from `SECRET_KEY`, so every gateway replica signs with the same key and nothing
//! else needs distributing; its public half is served at `/.well-known/jwks.json`. HS256
//! only when configured. Keys derived from `SECRET_KEY_PREVIOUS` still verify (rotation).

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};

use super::crypto::{derive, hex};

/// PKCS#8 v1 header of an Ed25519 private key (RFC 8410): followed by the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("ERIOP_JWT_ALGORITHM must be EdDSA or HS256")]
    Algorithm,
    #[error("cannot derive the signing key: {0}")]
    Derive(String),
}

pub struct SigningKeys {
    pub algorithm: Algorithm,
    kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
}

impl SigningKeys {
    /// `current` signs; `current` and every `previous` verify.
    pub fn derive(algorithm: &str, current: &[u8], previous: &[&[u8]]) -> Result<Self, KeyError> {
        let algorithm = match algorithm {
            "EdDSA" => Algorithm::EdDSA,
            "HS256" => Algorithm::HS256,
            _ => return Err(KeyError::Algorithm),
        };
        let mut decoding = HashMap::new();
        let mut public = Vec::new();
        let mut signing = None;
        for secret in std::iter::once(current).chain(previous.iter().copied()) {
            let (kid, encoding, decoding_key, jwk) = match algorithm {
                Algorithm::EdDSA => {
                    let seed = derive(secret, "jwt/ed25519");
                    let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
                        .map_err(|e| KeyError::Derive(e.to_string()))?;
                    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
                    let kid = hex(&Sha256::digest(pair.public_key().as_ref())[..8]);
                    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
                    pkcs8.extend_from_slice(&seed);
                    let jwk = serde_json::json!({
                        "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid, "x": x,
                    });
                    let decoding_key = DecodingKey::from_ed_components(&x)
                        .map_err(|e| KeyError::Derive(e.to_string()))?;
                    (
                        kid,
                        EncodingKey::from_ed_der(&pkcs8),
                        decoding_key,
                        Some(jwk),
                    )
                }
                _ => {
                    let key = derive(secret, "jwt/hs256");
                    let kid = hex(&Sha256::digest(key)[..8]);
                    (
                        kid,
                        EncodingKey::from_secret(&key),
                        DecodingKey::from_secret(&key),
                        None,
                    )
                }
            };
            if signing.is_none() {
                signing = Some((kid.clone(), encoding));
            }
            public.extend(jwk);
            decoding.insert(kid, decoding_key);
        }
        let (kid, encoding) = signing.ok_or_else(|| KeyError::Derive("no key".into()))?;
        Ok(Self {
            algorithm,
            kid,
            encoding,
            decoding,
            jwks: serde_json::json!({ "keys": public }),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    pub fn decoding(&self, kid: &str) -> Option<&DecodingKey> {
        self.decoding.get(kid)
    }

    /// The public keys (empty for HS256: a shared secret is never published).
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::auth::tokens::{issue, verify, Claims, TokenError};
    use eriop_domain::Timestamp;

    fn claims() -> Claims {
        Claims {
            iss: "eriop".into(),
            aud: "eriop-api".into(),
            sub: "u".into(),
            agency: "a".into(),
            roles: vec![],
            jti: "j".into(),
            iat: 1_000,
            exp: 2_000,
            sid: String::new(),
            iat_ms: 1_000_000,
            restriction: None,
        }
    }

    #[test]
    fn after_a_rotation_tokens_of_the_previous_key_still_verify() {
        let old =
            SigningKeys::derive("EdDSA", b"the old server key, long enough....", &[]).unwrap();
        let token = issue(&old, &claims()).unwrap();
        let now = Timestamp::from_millis(1_500_000);
        let rotated = SigningKeys::derive(
            "EdDSA",
            b"the new server key, long enough....",
            &[b"the old server key, long enough...."],
        )
        .unwrap();
        assert_eq!(
            verify(&rotated, &token, "eriop", "eriop-api", now).unwrap(),
            claims()
        );
        assert_eq!(rotated.jwks()["keys"].as_array().unwrap().len(), 2);
        assert_ne!(
            rotated.kid(),
            old.kid(),
            "new tokens are signed by the new key"
        );
        let forgotten =
            SigningKeys::derive("EdDSA", b"the new server key, long enough....", &[]).unwrap();
        assert_eq!(
            verify(&forgotten, &token, "eriop", "eriop-api", now),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn hs256_only_when_configured_and_never_published() {
        let hs = SigningKeys::derive("HS256", b"a server key of thirty-two bytes!!", &[]).unwrap();
        let token = issue(&hs, &claims()).unwrap();
        let now = Timestamp::from_millis(1_500_000);
        assert!(verify(&hs, &token, "eriop", "eriop-api", now).is_ok());
        assert_eq!(hs.jwks()["keys"].as_array().unwrap().len(), 0);
        let ed = SigningKeys::derive("EdDSA", b"a server key of thirty-two bytes!!", &[]).unwrap();
        assert_eq!(
            verify(&ed, &token, "eriop", "eriop-api", now),
            Err(TokenError::Algorithm)
        );
        assert!(SigningKeys::derive("RS256", b"k", &[]).is_err());
    }
}
