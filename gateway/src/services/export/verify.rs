//! Checking an export alone: each event's hash recomputed, each aggregate's chain followed,
//! the end line's totals and digest recomputed, and its signature checked against the
//! gateway's public keys when given. The first line that fails is named.

use std::collections::HashSet;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::format::{chain_hash, ChainHeads, End, Header, Signed, AUDIENCE, FORMAT};

/// The first line that fails, and why (lines count from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

/// What a good export holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub events: u64,
    pub chains: usize,
    /// Events whose payload is redacted: their hash is not recomputed, but the next event of
    /// their chain covers it and the signature covers the line.
    pub redacted: u64,
    /// Whether the signature was checked (public keys given) and held.
    pub signature_checked: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine<'a> {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    #[serde(borrow)]
    payload: &'a RawValue,
    #[serde(borrow)]
    metadata: &'a RawValue,
    #[allow(dead_code)]
    recorded_at: String,
    previous_hash: String,
    hash: String,
    #[serde(default)]
    redacted: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndLine {
    end: End,
    signature: String,
}

/// Feed it the export's lines in order (without their `\n`), then [`Verifier::finish`].
#[derive(Default)]
pub struct Verifier {
    line: usize,
    digest: Sha256,
    /// Each aggregate's last sequence and hash so far.
    chains: ChainHeads,
    events: u64,
    redacted: u64,
    end: Option<EndLine>,
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lines read so far.
    pub fn lines(&self) -> usize {
        self.line
    }

    pub fn line(&mut self, raw: &str) -> Result<(), BadLine> {
        self.line += 1;
        let line = self.line;
        let bad = move |reason: String| BadLine { line, reason };
        if self.end.is_some() {
            return Err(bad("a line after the end line".into()));
        }
        if self.line == 1 {
            let header: Header = serde_json::from_str(raw)
                .map_err(|e| bad(format!("not an ERIOP audit export header: {e}")))?;
            if header.eriop_audit_export != FORMAT {
                return Err(bad(format!(
                    "format {} (this verifier reads {FORMAT})",
                    header.eriop_audit_export
                )));
            }
        } else if raw.starts_with("{\"end\"") {
            let end: EndLine =
                serde_json::from_str(raw).map_err(|e| bad(format!("a malformed end line: {e}")))?;
            self.check_end(&end.end).map_err(bad)?;
            self.end = Some(end);
            return Ok(());
        } else {
            let event: EventLine<'_> =
                serde_json::from_str(raw).map_err(|e| bad(format!("not an event line: {e}")))?;
            self.check_event(&event).map_err(bad)?;
        }
        self.digest.update(raw.as_bytes());
        self.digest.update(b"\n");
        Ok(())
    }

    fn check_event(&mut self, event: &EventLine<'_>) -> Result<(), String> {
        #[derive(Deserialize)]
        struct Chained {
            previous_hash: String,
        }
        let chained: Chained = serde_json::from_str(event.metadata.get())
            .map_err(|_| "its metadata names no previous_hash".to_owned())?;
        if chained.previous_hash != event.previous_hash {
            return Err("its metadata's previous_hash is not its previous_hash".into());
        }
        if event.redacted {
            self.redacted += 1;
        } else {
            let hash = chain_hash(
                &event.previous_hash,
                &event.aggregate_type,
                &event.aggregate_id,
                event.sequence,
                &event.event_type,
                &event.event_version,
                event.payload.get(),
                event.metadata.get(),
            );
            if hash != event.hash {
                return Err(format!(
                    "the hash of {} {} #{} does not match its content: the event was altered",
                    event.aggregate_type, event.aggregate_id, event.sequence
                ));
            }
        }
        match self.chains.get(&event.aggregate_type, &event.aggregate_id) {
            Some((sequence, hash)) => {
                if event.sequence != sequence + 1 {
                    return Err(format!(
                        "{} {} #{} follows #{sequence}: an event is missing or out of order",
                        event.aggregate_type, event.aggregate_id, event.sequence
                    ));
                }
                if &event.previous_hash != hash {
                    return Err(format!(
                        "{} {} #{} does not chain to #{sequence}: an event was altered or replaced",
                        event.aggregate_type, event.aggregate_id, event.sequence
                    ));
                }
            }
            None if event.sequence < 1
                || (event.sequence == 1) != event.previous_hash.is_empty() =>
            {
                return Err(format!(
                    "{} {} #{} cannot start a chain",
                    event.aggregate_type, event.aggregate_id, event.sequence
                ));
            }
            None => {}
        }
        self.chains.record(
            &event.aggregate_type,
            &event.aggregate_id,
            event.sequence,
            &event.hash,
        );
        self.events += 1;
        Ok(())
    }

    fn check_end(&self, end: &End) -> Result<(), String> {
        if self.line == 1 {
            return Err("no header".into());
        }
        if end.events != self.events || end.redacted != self.redacted {
            return Err(format!(
                "the end line counts {} events ({} redacted), the export holds {} ({})",
                end.events, end.redacted, self.events, self.redacted
            ));
        }
        if end.sha256 != hex::encode(self.digest.clone().finalize()) {
            return Err("the lines before the end line are not the ones it covers".into());
        }
        let mut heads = end.chain_heads.clone();
        heads.sort_by(|a, b| {
            (&a.aggregate_type, &a.aggregate_id).cmp(&(&b.aggregate_type, &b.aggregate_id))
        });
        if heads != self.chains.heads() {
            return Err("the chain heads it names are not the export's".into());
        }
        Ok(())
    }

    /// The report, once every line was read. `keys`: the gateway's public keys
    /// (`/.well-known/jwks.json`), to check the signature.
    pub fn finish(self, keys: Option<&JwkSet>) -> Result<Report, BadLine> {
        let Some(end) = &self.end else {
            return Err(BadLine {
                line: self.line + 1,
                reason: "no end line: the export was cut short".into(),
            });
        };
        let signature_checked = match keys {
            Some(keys) => {
                check_signature(&end.signature, &end.end, keys).map_err(|reason| BadLine {
                    line: self.line,
                    reason,
                })?;
                true
            }
            None => false,
        };
        Ok(Report {
            events: self.events,
            chains: self.chains.len(),
            redacted: self.redacted,
            signature_checked,
        })
    }
}

/// The signature holds, by one of `keys`, over exactly `end`. EdDSA only: a shared-secret
/// (HS256) signature proves nothing to someone outside.
fn check_signature(token: &str, end: &End, keys: &JwkSet) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| format!("the signature is not a JWS: {e}"))?;
    if header.alg != Algorithm::EdDSA {
        return Err(format!(
            "the signature is {:?}, not EdDSA: only the gateway's Ed25519 key can be checked outside",
            header.alg
        ));
    }
    let jwk = header
        .kid
        .as_deref()
        .and_then(|kid| keys.find(kid))
        .ok_or("the signature's key is not among the public keys given")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("a bad public key: {e}"))?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.set_audience(&[AUDIENCE]);
    let signed = jsonwebtoken::decode::<Signed>(token, &key, &validation)
        .map_err(|e| format!("the signature does not hold: {e}"))?;
    if &signed.claims.end != end {
        return Err("the signature attests another end line".into());
    }
    Ok(())
}
