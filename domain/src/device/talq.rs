//! The TALQ 2.7.1 objects ERIOP produces (`AttributeLogData`, `Device`, `OverrideCommand`),
//! and the types of the attributes of the functions that matter first. The shapes follow
//! `components/schemas` of the TALQ data model; `tests/tests/e2e/talq.rs` validates what
//! these functions produce against that document, and checks this table against it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::FunctionDesc;

/// The TALQ attribute types ERIOP reads from device states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeType {
    Float,
    Integer,
    Boolean,
    String,
    Percent,
    LevelState,
}

impl AttributeType {
    /// The name of its TALQ schema (`AttributeFloat`, ...).
    pub fn talq_name(self) -> &'static str {
        match self {
            Self::Float => "AttributeFloat",
            Self::Integer => "AttributeInteger",
            Self::Boolean => "AttributeBoolean",
            Self::String => "AttributeString",
            Self::Percent => "AttributePercent",
            Self::LevelState => "AttributeLevelState",
        }
    }
}

use AttributeType::{Boolean as B, Float as F, Integer as I, LevelState as L, String as S};

/// `(function type, attribute, type)` for the functions of a street light and its cabinet.
/// Attributes not listed here are still kept, typed by their JSON value.
pub const ATTRIBUTE_TYPES: &[(&str, &str, AttributeType)] = &[
    ("BasicFunction", "serial", S),
    ("BasicFunction", "hwVersion", S),
    ("BasicFunction", "swVersion", S),
    ("BasicFunction", "operatingHours", I),
    ("BasicFunction", "cabinetDoorOpen", B),
    ("CommunicationFunction", "communicationQuality", F),
    ("CommunicationFunction", "communicationFailure", B),
    ("CommunicationFunction", "numberOfHops", I),
    ("LampActuatorFunction", "actualLightState", L),
    ("LampActuatorFunction", "defaultLightState", L),
    ("LampMonitorFunction", "activePower", F),
    ("LampMonitorFunction", "activeEnergy", F),
    ("LampMonitorFunction", "supplyVoltage", F),
    ("LampMonitorFunction", "supplyCurrent", F),
    ("LampMonitorFunction", "powerFactor", F),
    ("LampMonitorFunction", "temperature", F),
    ("LampMonitorFunction", "operatingHours", F),
    ("LampMonitorFunction", "switchOnCounter", I),
    ("LampMonitorFunction", "lampFailure", B),
    ("LampMonitorFunction", "supplyLoss", B),
    ("ElectricalMeterFunction", "totalPower", F),
    ("ElectricalMeterFunction", "totalActiveEnergy", F),
    ("ElectricalMeterFunction", "supplyVoltage", F),
    ("ElectricalMeterFunction", "frequency", F),
    ("LightSensorFunction", "lightLevel", F),
    ("PhotocellFunction", "onLevel", F),
    ("PhotocellFunction", "offLevel", F),
    ("PhotocellFunction", "photocellOutputOn", B),
];

/// The TALQ type of `attribute` in a function of type `function_type`, when ERIOP knows it.
pub fn attribute_type(function_type: &str, attribute: &str) -> Option<AttributeType> {
    ATTRIBUTE_TYPES
        .iter()
        .find(|(f, a, _)| *f == function_type && *a == attribute)
        .map(|(_, _, t)| *t)
}

/// A TALQ attribute object: its TALQ type and its value
/// (`{"type": "AttributeFloat", "value": 12.5}`; a level state's value is
/// `{"name": "LevelState", "value": 40}`; `Attribute` for a value of no known type, kept whole).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributeValue {
    /// `AttributeFloat`, `AttributeInteger`, `AttributeBoolean`, `AttributeString`,
    /// `AttributePercent`, `AttributeLevelState` or `Attribute`.
    #[serde(rename = "type")]
    pub kind: String,
    pub value: Value,
}

/// The `type` of an [`AttributeLogData`]: always `AttributeLogData`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LogDataType {
    AttributeLogData,
}

/// A TALQ 2.7.1 `AttributeLogData` record: one attribute's value at one time, from one
/// device or one of its functions. What `TELEMETRY` carries (docs/NATS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributeLogData {
    #[serde(rename = "type")]
    pub kind: LogDataType,
    /// The device's address (a UUID), or `{device}/{functionId}` for one of its functions.
    pub src_address: String,
    /// RFC 3339, the device's time of measurement.
    pub timestamp: String,
    pub attribute_name: String,
    pub attribute_value: AttributeValue,
}

/// A value as read from a device, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedValue {
    /// The TALQ attribute object (`{"type": "AttributeFloat", "value": 12.5}`).
    pub attribute: AttributeValue,
    /// The value as a number, when it is one (what telemetry aggregates).
    pub number: Option<f64>,
    /// The value as text, when it is text.
    pub text: Option<String>,
    /// Whether the value did not have the type TALQ gives the attribute (kept as read).
    pub mistyped: bool,
}

/// Types `raw` as `expected` says, or by its JSON shape when ERIOP does not know the
/// attribute (or the value does not fit its type: it is kept, marked, not dropped).
pub fn typed_value(expected: Option<AttributeType>, raw: &Value) -> TypedValue {
    let number = raw.as_f64().or_else(|| raw.as_bool().map(f64::from));
    let fits = |t: AttributeType| match t {
        AttributeType::Float => raw.is_number(),
        AttributeType::Integer => raw.is_i64() || raw.is_u64(),
        AttributeType::Percent | AttributeType::LevelState => {
            raw.as_f64().is_some_and(|v| (0.0..=100.0).contains(&v))
        }
        AttributeType::Boolean => raw.is_boolean(),
        AttributeType::String => raw.is_string(),
    };
    let (ty, mistyped) = match expected {
        Some(t) if fits(t) => (Some(t), false),
        Some(_) => (None, true),
        None => (None, false),
    };
    let ty = ty.or(match raw {
        Value::Bool(_) => Some(AttributeType::Boolean),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(AttributeType::Integer),
        Value::Number(_) => Some(AttributeType::Float),
        Value::String(_) => Some(AttributeType::String),
        _ => None,
    });
    let attribute = match ty {
        Some(AttributeType::LevelState) => AttributeValue {
            kind: "AttributeLevelState".into(),
            value: json!({ "name": "LevelState", "value": raw }),
        },
        Some(t) => AttributeValue {
            kind: t.talq_name().into(),
            value: raw.clone(),
        },
        // Objects and arrays: an attribute of no known type, the value kept whole.
        None => AttributeValue {
            kind: "Attribute".into(),
            value: raw.clone(),
        },
    };
    TypedValue {
        attribute,
        number: if raw.is_number() || raw.is_boolean() {
            number
        } else {
            None
        },
        text: raw.as_str().map(str::to_owned),
        mistyped,
    }
}

/// A TALQ source address: the device, or one of its functions.
pub fn src_address(device: Uuid, function_id: &str) -> String {
    if function_id.is_empty() {
        device.to_string()
    } else {
        format!("{device}/{function_id}")
    }
}

/// A TALQ `AttributeLogData`. `timestamp` is RFC 3339 (the device's time of measurement).
pub fn attribute_log_data(
    device: Uuid,
    function_id: &str,
    attribute: &str,
    value: &TypedValue,
    timestamp: &str,
) -> AttributeLogData {
    AttributeLogData {
        kind: LogDataType::AttributeLogData,
        src_address: src_address(device, function_id),
        timestamp: timestamp.to_owned(),
        attribute_name: attribute.to_owned(),
        attribute_value: value.attribute.clone(),
    }
}

/// A TALQ `Device`: the device's address, name, class name and its functions.
pub fn device(address: Uuid, name: &str, class: &str, functions: &[FunctionDesc]) -> Value {
    let functions: Vec<Value> = functions
        .iter()
        .map(|f| json!({ "id": f.id.as_str(), "type": f.function_type }))
        .collect();
    json!({ "address": address, "name": name, "class": class, "functions": functions })
}

/// A TALQ `OverrideCommand` on one device's light level; no level ends the override.
/// Times are RFC 3339; `ramp_seconds` is TALQ's `rampToLevelTime`.
pub fn override_command(
    device: Uuid,
    level: Option<u8>,
    start: &str,
    expiration: Option<&str>,
    ramp_seconds: Option<u32>,
    cms_ref_id: &str,
) -> Value {
    let addresses = json!([{ "resource": "devices", "address": device }]);
    let Some(level) = level else {
        return json!({ "addresses": addresses });
    };
    let mut command = json!({
        "state": { "name": "LevelState", "value": level },
        "reason": "override",
        "cmsRefId": cms_ref_id,
        "start": start,
    });
    if let Some(map) = command.as_object_mut() {
        if let Some(expiration) = expiration {
            map.insert("expiration".into(), json!(expiration));
        }
        if let Some(ramp) = ramp_seconds {
            map.insert("rampToLevelTime".into(), json!(ramp));
        }
    }
    json!({ "addresses": addresses, "targetCommand": command })
}
