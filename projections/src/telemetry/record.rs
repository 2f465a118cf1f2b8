//! From a TALQ `AttributeLogData` record to a telemetry row.

use chrono::{DateTime, Utc};
use eriop_domain::device::talq::AttributeLogData;
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub time: DateTime<Utc>,
    pub agency_id: Uuid,
    pub device_id: Uuid,
    pub function_id: String,
    pub attribute: String,
    pub value_double: Option<f64>,
    pub value_text: Option<String>,
    pub value_json: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("srcAddress is not {{deviceAddress}}[/{{functionId}}]")]
    Address,
    #[error("timestamp is not RFC 3339")]
    Timestamp,
    /// PostgreSQL stores no NUL in `text` (22021) nor `\u0000` in `jsonb` (22P05): the
    /// whole group's transaction would fail, and fail again at each redelivery, so one such
    /// record from any publisher would stop the projection. The bridge refuses them at the
    /// edge; this is the same rule where the rows are made.
    #[error("a NUL character in the function id, the attribute name or the value")]
    Nul,
}

impl Row {
    /// The row of a record (its shape is the type's: `TelemetryBatch` refuses any other).
    pub fn from_record(agency_id: Uuid, record: &AttributeLogData) -> Result<Self, RowError> {
        let address = record.src_address.as_str();
        let (device, function_id) = address.split_once('/').unwrap_or((address, ""));
        let device_id = Uuid::parse_str(device).map_err(|_| RowError::Address)?;
        let time = DateTime::parse_from_rfc3339(&record.timestamp)
            .map_err(|_| RowError::Timestamp)?
            .with_timezone(&Utc);
        let value = &record.attribute_value.value;
        // A level state carries its number inside ({"name": "LevelState", "value": 40}).
        let scalar = value
            .get("value")
            .filter(|v| v.is_number())
            .unwrap_or(value);
        let (value_double, value_text, value_json) = match scalar {
            Value::Number(n) => (n.as_f64(), None, (scalar != value).then(|| value.clone())),
            Value::Bool(b) => (Some(f64::from(u8::from(*b))), None, Some(value.clone())),
            Value::String(s) => (None, Some(s.clone()), None),
            _ => (None, None, Some(value.clone())),
        };
        let texts = [Some(function_id), Some(record.attribute_name.as_str())];
        if texts.iter().flatten().any(|t| t.contains('\0'))
            || value_text.as_deref().is_some_and(|t| t.contains('\0'))
            || value_json.as_ref().is_some_and(holds_nul)
        {
            return Err(RowError::Nul);
        }
        Ok(Self {
            time,
            agency_id,
            device_id,
            function_id: function_id.to_owned(),
            attribute: record.attribute_name.clone(),
            value_double,
            value_text,
            value_json,
        })
    }
}

/// Whether any string or key inside `value` holds a NUL.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_becomes_a_row_at_the_device_time() {
        let device = Uuid::from_u128(5);
        let record = json!({
            "type": "AttributeLogData",
            "srcAddress": format!("{device}/lampMonitor001"),
            "timestamp": "2026-11-25T10:00:00.250Z",
            "attributeName": "activePower",
            "attributeValue": {"type": "AttributeFloat", "value": 41.5},
        });
        let record: AttributeLogData = serde_json::from_value(record).unwrap();
        let row = Row::from_record(Uuid::from_u128(1), &record).unwrap();
        assert_eq!(row.device_id, device);
        assert_eq!(row.function_id, "lampMonitor001");
        assert_eq!(row.value_double, Some(41.5));
        assert_eq!(row.time.timestamp_millis(), 1_795_600_800_250);
        let bad = json!({"type": "AttributeLogData", "srcAddress": "x", "timestamp": "t",
                         "attributeName": "a", "attributeValue": {"type": "Attribute", "value": 1}});
        let bad: AttributeLogData = serde_json::from_value(bad).unwrap();
        assert_eq!(Row::from_record(Uuid::nil(), &bad), Err(RowError::Address));
        // Not the shape of a record at all: refused by the type, before any row.
        let shapeless = json!({"type": "AttributeLogData", "srcAddress": device});
        assert!(serde_json::from_value::<AttributeLogData>(shapeless).is_err());
    }

    fn record(function: &str, attribute: &str, value: Value) -> AttributeLogData {
        serde_json::from_value(json!({
            "type": "AttributeLogData",
            "srcAddress": format!("{}/{function}", Uuid::from_u128(5)),
            "timestamp": "2026-11-25T10:00:00Z",
            "attributeName": attribute,
            "attributeValue": {"type": "Attribute", "value": value},
        }))
        .unwrap()
    }

    #[test]
    fn a_nul_anywhere_is_refused_not_sent_to_the_database() {
        let refused = [
            record("lamp\0", "activePower", json!(1)),
            record("lamp", "active\0Power", json!(1)),
            record("lamp", "mode", json!("on\0")),
            record(
                "lamp",
                "state",
                json!({"name": "LevelState", "value": 40, "note": "a\0"}),
            ),
            record("lamp", "state", json!({"k\0": true})),
            record("lamp", "list", json!([1, ["x", "\0"]])),
        ];
        for r in &refused {
            assert_eq!(
                Row::from_record(Uuid::nil(), r),
                Err(RowError::Nul),
                "{r:?}"
            );
        }
        assert!(Row::from_record(Uuid::nil(), &record("lamp", "mode", json!("on"))).is_ok());
    }

    proptest::proptest! {
        /// Whatever the strings, a row holds no NUL, and a record is refused only for one.
        #[test]
        fn rows_never_hold_a_nul(function in "[a-z\\x00]{0,6}", attribute in "[a-z\\x00]{1,6}",
                                 text in "[a-z\\x00]{0,6}", key in "[a-z\\x00]{1,4}") {
            let value = json!({ key.clone(): [text.clone()] });
            let has_nul = [&function, &attribute, &text, &key].iter().any(|s| s.contains('\0'));
            match Row::from_record(Uuid::nil(), &record(&function, &attribute, value)) {
                Ok(row) => {
                    proptest::prop_assert!(!has_nul);
                    proptest::prop_assert!(!row.function_id.contains('\0'));
                    proptest::prop_assert!(!row.attribute.contains('\0'));
                }
                Err(e) => proptest::prop_assert_eq!((e, has_nul), (RowError::Nul, true)),
            }
        }
    }
}
