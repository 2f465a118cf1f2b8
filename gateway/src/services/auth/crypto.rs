//! The server's secrets, each derived from `SECRET_KEY` for one purpose (HKDF-SHA256), and
//! what is done with them: sealing (AES-256-GCM) of TOTP secrets and of the per-user data
//! keys that seal personal data, the blind index that finds a user by email without storing
//! the email, and the hashing of random tokens and recovery codes.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::Aes256Gcm;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
#[error("sealed data cannot be opened (wrong key, or altered)")]
pub struct OpenError;

/// 32 bytes derived from `secret` for `purpose`. Different purposes give unrelated keys.
pub fn derive(secret: &[u8], purpose: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit (8160): expand cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(b"eriop/v1"), secret).expand(purpose.as_bytes(), &mut out);
    out
}

/// Seals with AES-256-GCM under `key`, bound to `context` (so a value sealed for one user
/// or purpose cannot be replayed as another's): base64 of nonce and ciphertext.
pub fn seal(key: &[u8; 32], context: &str, plaintext: &[u8]) -> String {
    let cipher = Aes256Gcm::new(key.into());
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    // AES-GCM fails only past 64 GiB of plaintext.
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: context.as_bytes(),
            },
        )
        .unwrap_or_default();
    let mut out = nonce.to_vec();
    out.extend(sealed);
    STANDARD.encode(out)
}

pub fn open(key: &[u8; 32], context: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
    let bytes = STANDARD.decode(sealed).map_err(|_| OpenError)?;
    if bytes.len() < 12 {
        return Err(OpenError);
    }
    let (nonce, ciphertext) = bytes.split_at(12);
    Aes256Gcm::new(key.into())
        .decrypt(
            nonce.into(),
            Payload {
                msg: ciphertext,
                aad: context.as_bytes(),
            },
        )
        .map_err(|_| OpenError)
}

/// HMAC-SHA256 of `value` under `key`, hex. Deterministic: a blind index or a keyed hash.
pub fn mac_hex(key: &[u8; 32], value: &str) -> String {
    // HMAC takes keys of any length: the error branch cannot happen.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(value.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// SHA-256, hex: for random tokens (256 bits of entropy need no slow hash).
pub fn sha256_hex(value: &str) -> String {
    hex(&Sha256::digest(value.as_bytes()))
}

/// 256 random bits, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = derive(b"server key", "test");
        let sealed = seal(&key, "user:1", b"jane@laval.ca");
        assert_eq!(open(&key, "user:1", &sealed).unwrap(), b"jane@laval.ca");
        assert!(open(&key, "user:2", &sealed).is_err());
        assert!(open(&derive(b"other", "test"), "user:1", &sealed).is_err());
        assert_ne!(derive(b"k", "a"), derive(b"k", "b"));
    }
}
