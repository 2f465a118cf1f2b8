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
}
