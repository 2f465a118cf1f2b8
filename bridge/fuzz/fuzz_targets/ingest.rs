//! The bridge's ingest path (decode, then adapt) on arbitrary topics, payloads and
//! Fundamentum protocol versions: it never panics, and whatever it refuses becomes a valid
//! NATS message (no CR/LF in a header, a bounded body).
#![no_main]

use eriop_bridge::ingest::{adapt, decode, Output, Rules};
use eriop_bridge::registry::DeviceInfo;
use eriop_domain::device::FunctionDesc;
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

const NOW: i64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    // `topic \n version \n payload`: the fuzzer finds the separators.
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let topic = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let version = parts
        .next()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let payload = parts.next().unwrap_or_default();
    let rules = Rules {
        max_payload: 64 * 1024,
        max_age_ms: 30 * 24 * 3600 * 1000,
        max_ahead_ms: 300_000,
    };
    let functions = FunctionDesc::parse("lampMonitor001", "LampMonitorFunction")
        .map(|f| vec![f])
        .unwrap_or_default();
    let resolve = |serial: &str| {
        Some(DeviceInfo {
            id: Uuid::from_u128(serial.len() as u128 + 1),
            agency_id: Uuid::from_u128(7),
            functions: functions.clone(),
            suspended: serial.len() % 5 == 0,
            telemetry_quota: None,
        })
    };
    let mut out = Output::default();
    match decode(&topic, payload, version.as_deref(), NOW, &rules) {
        Ok(decoded) => adapt(decoded, &topic, payload, NOW, &resolve, &mut out),
        Err(reason) => out.dead_letter(reason, &topic, payload),
    }
    for records in out.telemetry.values() {
        for record in records {
            assert!(!record.attribute_name.contains('\0'));
            assert!(serde_json::to_vec(record).is_ok());
        }
    }
    for letter in out.dead {
        let (headers, body) = letter.into_message();
        assert!(body.len() <= eriop_nats::dlq::MAX_ORIGINAL);
        for (_, values) in headers.iter() {
            for value in values {
                assert!(!value.as_str().contains(['\r', '\n']));
            }
        }
    }
});
