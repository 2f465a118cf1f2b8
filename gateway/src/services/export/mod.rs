//! The audit export (`GET /api/v1/audit/export`): NDJSON an auditor takes away and checks
//! alone, with `eriop-audit verify FILE` and no database.
//!
//! ```text
//! {"eriop_audit_export":1, "agency_id":…, "from":…, "to":…, "exported_at":…, "exported_by":…}
//! {"aggregate_type":…, …, "payload":{…}, "metadata":{…}, "previous_hash":…, "hash":…}   one per event, store order
//! {"end":{"events":…, "redacted":…, "sha256":…, "chain_heads":[…]}, "signature":"<JWS>"}
//! ```
//!
//! An event line holds `payload` and `metadata` exactly as the database hashed them
//! (`jsonb::text`), so the verifier recomputes each event's hash the way the store's trigger
//! did (migrations/sql/0001_event_store.up.sql) and follows each aggregate's chain. A line
//! whose payload held a secret's hash carries it redacted (`"redacted":true`): its own hash
//! cannot be recomputed, but the next event of its chain still covers that hash, and the
//! signature covers the line. The end line names the chain heads the export covers and the
//! SHA-256 of every line before it; its `signature` is a JWS over the same (EdDSA, the
//! gateway's token key, checked with the public keys of `/.well-known/jwks.json`).

mod format;
mod verify;

pub use format::{
    chain_hash, ChainHead, ChainHeads, End, EventRow, Header, Signed, AUDIENCE, FORMAT,
};
pub use verify::{BadLine, Report, Verifier};

#[cfg(test)]
mod tests;
