//! The lines of an export, as the gateway writes them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The format's version, in the header line.
pub const FORMAT: u32 = 1;
/// The audience of an export's signature: never an access token's (`eriop-api`), so neither
/// passes for the other.
pub const AUDIENCE: &str = "eriop-audit-export";

/// The first line.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub eriop_audit_export: u32,
    /// The agency the export covers; `null`: every agency (a platform admin's export).
    pub agency_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub exported_at: String,
    pub exported_by: String,
}

/// The last event of an aggregate in the export.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainHead {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub hash: String,
}

/// The last event of each aggregate seen so far: what the writer states in the end line and
/// what the verifier recomputes to check it.
#[derive(Debug, Default)]
pub struct ChainHeads(std::collections::BTreeMap<(String, String), (i64, String)>);

impl ChainHeads {
    /// The head of one aggregate's chain: `(sequence, hash)`.
    pub fn get(&self, aggregate_type: &str, aggregate_id: &str) -> Option<&(i64, String)> {
        self.0
            .get(&(aggregate_type.to_owned(), aggregate_id.to_owned()))
    }

    pub fn record(&mut self, aggregate_type: &str, aggregate_id: &str, sequence: i64, hash: &str) {
        self.0.insert(
            (aggregate_type.to_owned(), aggregate_id.to_owned()),
            (sequence, hash.to_owned()),
        );
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// In the order of (aggregate type, id).
    pub fn heads(&self) -> Vec<ChainHead> {
        self.0
            .iter()
            .map(
                |((aggregate_type, aggregate_id), (sequence, hash))| ChainHead {
                    aggregate_type: aggregate_type.clone(),
                    aggregate_id: aggregate_id.clone(),
                    sequence: *sequence,
                    hash: hash.clone(),
                },
            )
            .collect()
    }
}

/// What the last line states, and its signature attests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct End {
    pub events: u64,
    pub redacted: u64,
    /// Hex SHA-256 of every byte before the end line.
    pub sha256: String,
    pub chain_heads: Vec<ChainHead>,
}

/// The signature's claims: the end line's content, by whom and when.
#[derive(Debug, Serialize, Deserialize)]
pub struct Signed {
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    #[serde(flatten)]
    pub end: End,
}

/// One event as the store hashed it: `payload` and `metadata` are `jsonb::text`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    pub recorded_at: String,
    /// Hex; empty for an aggregate's first event.
    pub previous_hash: String,
    pub hash: String,
}

impl EventRow {
    /// The event's line. `redacted`: the payload with its secrets replaced, when it held any.
    pub fn line(&self, redacted: Option<&serde_json::Value>) -> String {
        let text = |s: &str| serde_json::Value::from(s).to_string();
        let (payload, flag) = match redacted {
            Some(value) => (value.to_string(), ",\"redacted\":true"),
            None => (self.payload.clone(), ""),
        };
        format!(
            "{{\"aggregate_type\":{},\"aggregate_id\":{},\"sequence\":{},\"event_type\":{},\
             \"event_version\":{},\"payload\":{payload},\"metadata\":{},\"recorded_at\":{},\
             \"previous_hash\":{},\"hash\":{}{flag}}}",
            text(&self.aggregate_type),
            text(&self.aggregate_id),
            self.sequence,
            text(&self.event_type),
            text(&self.event_version),
            self.metadata,
            text(&self.recorded_at),
            text(&self.previous_hash),
            text(&self.hash),
        )
    }
}

/// An event's hash, as the store's trigger computes it: SHA-256 of the fields joined by the
/// unit separator (PostgreSQL's `concat_ws(E'\x1f', …)`), the previous hash first.
#[allow(clippy::too_many_arguments)]
pub fn chain_hash(
    previous_hash: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    event_version: &str,
    payload: &str,
    metadata: &str,
) -> String {
    let sequence = sequence.to_string();
    let mut digest = Sha256::new();
    for (i, part) in [
        previous_hash,
        aggregate_type,
        aggregate_id,
        &sequence,
        event_type,
        event_version,
        payload,
        metadata,
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            digest.update([0x1f]);
        }
        digest.update(part.as_bytes());
    }
    hex::encode(digest.finalize())
}
