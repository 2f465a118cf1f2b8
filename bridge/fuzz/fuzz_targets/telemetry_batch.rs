//! What the telemetry projector reads from `TELEMETRY`, and the TALQ typing of a device's
//! values, on arbitrary bytes: a typed batch or an error, never a panic.
#![no_main]

use eriop_domain::device::talq;
use eriop_nats::traffic::TelemetryBatch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = serde_json::from_slice::<TelemetryBatch>(data) {
        assert!(serde_json::to_vec(&batch).is_ok());
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        for expected in [
            None,
            Some(talq::AttributeType::Float),
            Some(talq::AttributeType::LevelState),
        ] {
            let typed = talq::typed_value(expected, &value);
            assert!(!typed.attribute.kind.is_empty());
        }
    }
});
