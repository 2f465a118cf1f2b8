//! The TALQ adapter: Fundamentum states (and JSON events) to TALQ `AttributeLogData`
//! records, typed by the device's class.
//!
//! The convention ERIOP defines: a state key is `{functionId}.{attributeName}` (e.g.
//! `lampMonitor001.activePower`), or a nested object `{functionId: {attributeName: value}}`
//! whose key is one of the class's functions. Any other key is kept as an attribute of the
//! device itself (no function), typed by its JSON value: nothing is dropped.

use chrono::{SecondsFormat, TimeZone, Utc};
use eriop_domain::device::{talq, FunctionDesc};
use serde_json::{Map, Value};
use uuid::Uuid;

pub fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The records of one device's states at `timestamp_ms`.
pub fn records(
    device: Uuid,
    functions: &[FunctionDesc],
    states: &Map<String, Value>,
    timestamp_ms: i64,
) -> Vec<talq::AttributeLogData> {
    let time = rfc3339(timestamp_ms);
    let function_type = |id: &str| {
        functions
            .iter()
            .find(|f| f.id.as_str() == id)
            .map(|f| f.function_type.as_str())
    };
    let mut out = Vec::with_capacity(states.len());
    let mut push = |function_id: &str, attribute: &str, raw: &Value| {
        let expected = function_type(function_id).and_then(|t| talq::attribute_type(t, attribute));
        let value = talq::typed_value(expected, raw);
        out.push(talq::attribute_log_data(
            device,
            function_id,
            attribute,
            &value,
            &time,
        ));
    };
    for (key, raw) in states {
        match (key.split_once('.'), raw) {
            (Some((function_id, attribute)), _) if function_type(function_id).is_some() => {
                push(function_id, attribute, raw)
            }
            (None, Value::Object(attributes)) if function_type(key).is_some() => {
                for (attribute, raw) in attributes {
                    push(key, attribute, raw);
                }
            }
            _ => push("", key, raw),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_become_typed_records_and_unknown_keys_are_kept() {
        let functions = vec![
            FunctionDesc::parse("lampMonitor001", "LampMonitorFunction").unwrap(),
            FunctionDesc::parse("lampActuator001", "LampActuatorFunction").unwrap(),
        ];
        let states = json!({
            "lampMonitor001.activePower": 41.5,
            "lampActuator001": {"actualLightState": 80},
            "vendorCounter": 3,
        });
        let records = records(
            Uuid::from_u128(9),
            &functions,
            states.as_object().unwrap(),
            1_000,
        );
        assert_eq!(records.len(), 3);
        let by_name = |n: &str| {
            records
                .iter()
                .find(|r| r.attribute_name == n)
                .unwrap()
                .clone()
        };
        assert_eq!(
            by_name("activePower").attribute_value.kind,
            "AttributeFloat"
        );
        assert_eq!(
            by_name("actualLightState").attribute_value.kind,
            "AttributeLevelState"
        );
        assert_eq!(
            by_name("vendorCounter").src_address,
            Uuid::from_u128(9).to_string()
        );
        assert_eq!(by_name("activePower").timestamp, "1970-01-01T00:00:01.000Z");
    }
}
