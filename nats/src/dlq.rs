//! The dead-letter stream (`DLQ`, DESIGN.md rule 11), written the same way by every service:
//! a rejected message keeps its reason, where it came from, its length, its SHA-256 and at
//! most the first [`MAX_ORIGINAL`] bytes of what was sent.
//!
//! Reasons and origins may carry bytes an attacker chose (a device's serial, an MQTT topic),
//! and a NATS header refuses CR and LF (async-nats panics on them when a header is built
//! from a `&str`). So every header value goes through [`header_text`]: control characters
//! are escaped and the length is bounded, whatever the input. Nothing here can panic.

use async_nats::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

/// The DLQ keeps at most this much of a rejected payload (its length and SHA-256 say the rest).
pub const MAX_ORIGINAL: usize = 64 * 1024;
/// A header value never exceeds this many bytes (an attacker's topic can be 64 KiB long).
pub const MAX_HEADER: usize = 512;

pub const REASON: &str = "Eriop-Reason";
pub const ORIGIN: &str = "Eriop-Original-Subject";
pub const LENGTH: &str = "Eriop-Original-Length";
pub const SHA256: &str = "Eriop-Original-Sha256";

/// `raw` made safe for a NATS header, a log field or a subject-free text: control characters
/// (CR, LF, NUL, ...) as `\u{..}` escapes, at most [`MAX_HEADER`] bytes (cut on a character
/// boundary, with `…`).
pub fn header_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_HEADER));
    for c in raw.chars() {
        let piece: String = if c.is_control() {
            c.escape_unicode().to_string()
        } else {
            c.to_string()
        };
        if out.len() + piece.len() > MAX_HEADER - '…'.len_utf8() {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// A header value from any text: never fails, never panics.
pub fn header_value(raw: &str) -> HeaderValue {
    // `header_text` leaves no CR or LF, the only characters a HeaderValue refuses; the
    // fallback is there so that this function has no panic path at all.
    header_text(raw)
        .parse()
        .unwrap_or_else(|_| HeaderValue::from(String::from("(unprintable)")))
}

/// One rejected message on its way to `DLQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Why it was refused: what a person needs to fix it.
    pub reason: String,
    /// Where it came from (an MQTT topic, a NATS subject).
    pub origin: String,
    pub original: Vec<u8>,
}

impl DeadLetter {
    pub fn new(reason: impl Into<String>, origin: impl Into<String>, original: Vec<u8>) -> Self {
        Self {
            reason: reason.into(),
            origin: origin.into(),
            original,
        }
    }

    /// The headers and the body of its `DLQ` message: the body is at most [`MAX_ORIGINAL`]
    /// bytes, the headers say the whole length and its SHA-256.
    pub fn into_message(self) -> (HeaderMap, bytes::Bytes) {
        let mut headers = HeaderMap::new();
        headers.insert(REASON, header_value(&self.reason));
        headers.insert(ORIGIN, header_value(&self.origin));
        headers.insert(LENGTH, header_value(&self.original.len().to_string()));
        headers.insert(SHA256, header_value(&hex(&Sha256::digest(&self.original))));
        let mut original = self.original;
        original.truncate(MAX_ORIGINAL);
        (headers, original.into())
    }
}

/// Publishes one dead letter to `subject` and waits for JetStream's ack: the one way every
/// service writes to `DLQ` one message at a time (the bridge batches its own acks).
pub async fn publish(
    js: &async_nats::jetstream::Context,
    subject: String,
    letter: DeadLetter,
) -> Result<(), async_nats::Error> {
    let (headers, body) = letter.into_message();
    js.publish_with_headers(subject, headers, body)
        .await?
        .await?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A fragment of device input quoted inside a reason: escaped (Rust debug quoting) and cut
/// to `max` characters, so a reason stays short and readable whatever was sent.
pub fn quote(raw: &str, max: usize) -> String {
    let cut: String = raw.chars().take(max).collect();
    if cut.len() < raw.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_length_is_bounded() {
        assert_eq!(header_text("a\r\nb"), "a\\u{d}\\u{a}b");
        assert_eq!(header_text("plain"), "plain");
        let long = "é".repeat(10_000);
        let safe = header_text(&long);
        assert!(safe.len() <= MAX_HEADER);
        assert!(safe.ends_with('…'));
        assert_eq!(header_value("x\ny").as_str(), "x\\u{a}y");
    }

    #[test]
    fn a_dead_letter_keeps_64_kib_with_its_length_and_digest() {
        let big = vec![b'x'; 100_000];
        let (headers, body) = DeadLetter::new("oversized", "t/\r\n", big.clone()).into_message();
        assert_eq!(body.len(), MAX_ORIGINAL);
        assert_eq!(headers.get(LENGTH).map(|v| v.as_str()), Some("100000"));
        let digest = hex(&Sha256::digest(&big));
        assert_eq!(
            headers.get(SHA256).map(|v| v.as_str()),
            Some(digest.as_str())
        );
        assert_eq!(
            headers.get(ORIGIN).map(|v| v.as_str()),
            Some("t/\\u{d}\\u{a}")
        );
    }

    #[test]
    fn quotes_are_escaped_and_cut() {
        assert_eq!(quote("a\r\nb", 10), "\"a\\r\\nb\"");
        assert_eq!(quote("abcdef", 3), "\"abc\"…");
    }
}
