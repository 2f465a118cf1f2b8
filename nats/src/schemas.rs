//! The JSON Schemas of what ERIOP publishes on NATS, made from the Rust types that produce
//! and consume each message (so the document cannot drift from the code): `docs/schemas/`,
//! described in `docs/NATS.md`. The test below fails when a type changed and the files did
//! not; `make schemas` writes them anew.

use schemars::{schema_for, Schema};

use crate::traffic::{CommandReply, DeviceActivity, DownlinkCommand, TelemetryBatch};
use crate::StoredEvent;

/// `(file name in docs/schemas/, schema)` for every payload on every stream but `DLQ` (whose
/// body is the rejected message itself, as it came).
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![
        ("events.stored-event.json", schema_for!(StoredEvent)),
        ("telemetry.batch.json", schema_for!(TelemetryBatch)),
        ("device.activity.json", schema_for!(DeviceActivity)),
        ("device.command-status.json", schema_for!(CommandReply)),
        ("commands.downlink.json", schema_for!(DownlinkCommand)),
    ]
}

/// A schema as it is written to its file: pretty JSON and a final newline.
pub fn render(schema: &Schema) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn docs() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
    }

    /// The committed schemas are the types' (`ERIOP_WRITE_SCHEMAS=1`, as `make schemas`
    /// sets it, writes them instead), and `docs/NATS.md` names each one.
    #[test]
    fn the_documented_schemas_are_the_types() {
        let write = std::env::var_os("ERIOP_WRITE_SCHEMAS").is_some();
        let guide = std::fs::read_to_string(docs().join("NATS.md")).unwrap_or_default();
        let mut stale = Vec::new();
        for (name, schema) in all() {
            let path = docs().join("schemas").join(name);
            let expected = render(&schema);
            if write {
                std::fs::write(&path, &expected).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(expected.as_str()) {
                stale.push(name);
            }
            assert!(
                guide.contains(&format!("schemas/{name}")),
                "docs/NATS.md does not name schemas/{name}"
            );
        }
        assert!(
            stale.is_empty(),
            "docs/schemas/ differs from the types for {stale:?}: run `make schemas` and commit"
        );
    }

    /// The schemas describe what is really sent: a message made by the types validates.
    #[test]
    fn a_telemetry_batch_has_typed_records() {
        let schema = serde_json::to_value(schema_for!(TelemetryBatch)).unwrap_or_default();
        let text = schema.to_string();
        for field in [
            "srcAddress",
            "attributeName",
            "attributeValue",
            "AttributeLogData",
        ] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
        let reply = serde_json::to_value(schema_for!(CommandReply)).unwrap_or_default();
        let text = reply.to_string();
        for status in ["ongoing", "success", "failure", "retry"] {
            assert!(text.contains(status), "{status} missing from {text}");
        }
    }
}
