//! The value types of the device registry. Parse, don't validate: a value of these types is
//! known good, so the aggregates and the adapters never check them again.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must be 1 to {max} characters without control characters")]
    Length { max: usize },
    #[error("must be 1 to 64 letters, digits, '_' or '-' (a '.' separates function and attribute in states)")]
    FunctionId,
    #[error("`{0}` is not a TALQ 2.7.1 function type (e.g. BasicFunction, LampActuatorFunction)")]
    FunctionType(String),
    #[error("must be 1 to 128 characters, none of '/', '+', '#', whitespace or control characters (it is an MQTT topic level)")]
    TopicLevel,
    #[error("must be between {min} and {max} seconds")]
    OfflineAfter { min: u32, max: u32 },
    #[error("function `{0}` appears twice")]
    DuplicateFunction(String),
    #[error("a class needs at least one function")]
    NoFunction,
}

fn text(raw: &str, max: usize) -> Result<String, NameError> {
    let t = raw.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(char::is_control) {
        return Err(NameError::Length { max });
    }
    Ok(t.to_owned())
}

/// A human name for a device or a device class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceName(String);

impl DeviceName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        text(raw, 200).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A TALQ function id, chosen by the vendor (e.g. `lampActuator001`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FunctionId(String);

impl FunctionId {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        ok.then(|| Self(raw.to_owned()))
            .ok_or(NameError::FunctionId)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The function types of TALQ 2.7.1 (`components/schemas/*Function` of the data model).
pub const FUNCTION_TYPES: [&str; 57] = [
    "BasicFunction",
    "GatewayFunction",
    "CommunicationFunction",
    "TimeFunction",
    "SimpleActuatorFunction",
    "GenericActuatorFunction",
    "LampActuatorFunction",
    "LampMonitorFunction",
    "ElectricalMeterFunction",
    "PhotocellFunction",
    "LightSensorFunction",
    "BinarySensorFunction",
    "GenericSensorFunction",
    "TemperatureSensorFunction",
    "HumiditySensorFunction",
    "ParticulateMatterSensorFunction",
    "PresenceSensorFunction",
    "MovementSensorFunction",
    "LocationSensorFunction",
    "AccelerometerFunction",
    "OrientationFunction",
    "BatteryLevelSensorFunction",
    "FillingLevelSensorFunction",
    "SolarBatteryChargerFunction",
    "BatteryManagementSystemFunction",
    "TrafficCounterFunction",
    "FluidLevelSensorFunction",
    "WasteContainerFunction",
    "pHSensorFunction",
    "WeightSensorFunction",
    "GasSensorFunction",
    "SegmentMonitorFunction",
    "NoiseMonitoringSensorFunction",
    "AtmosphericSensorFunction",
    "WindSensorFunction",
    "PrecipitationSensorFunction",
    "SkySensorFunction",
    "GullySensorFunction",
    "WaterFlowSensorFunction",
    "WaterQualitySensorFunction",
    "TextDisplayActuatorFunction",
    "ParkingSensorFunction",
    "ParkingCameraSensorFunction",
    "LuminaireAssetFunction",
    "DriverAssetFunction",
    "ControllerAssetFunction",
    "CabinetConfigurationFunction",
    "CabinetMonitorFunction",
    "ControlGearDaliPart102Function",
    "ControlDeviceDaliPart103Function",
    "LuminaireDataDaliPart251Function",
    "EnergyDataDaliPart252Function",
    "DiagnosticsAndMaintenanceDataDaliPart253Function",
    "OccupancySensorDaliPart303InstanceFunction",
    "LightSensorDaliPart304InstanceFunction",
    "GeneralPurposeSensorDaliPart306InstanceFunction",
    "LuminaireMountedControlDeviceDaliPart351Function",
];

/// One function of a device class (TALQ `FunctionDesc`): its id and its TALQ type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionDesc {
    pub id: FunctionId,
    #[serde(rename = "type")]
    pub function_type: String,
}

impl FunctionDesc {
    pub fn parse(id: &str, function_type: &str) -> Result<Self, NameError> {
        let function_type = FUNCTION_TYPES
            .iter()
            .find(|t| **t == function_type)
            .ok_or_else(|| NameError::FunctionType(function_type.to_owned()))?;
        Ok(Self {
            id: FunctionId::parse(id)?,
            function_type: (*function_type).to_owned(),
        })
    }

    /// A class's functions: at least one, ids unique.
    pub fn parse_all(raw: &[(String, String)]) -> Result<Vec<Self>, NameError> {
        if raw.is_empty() {
            return Err(NameError::NoFunction);
        }
        let mut out: Vec<Self> = Vec::with_capacity(raw.len());
        for (id, function_type) in raw {
            let f = Self::parse(id, function_type)?;
            if out.iter().any(|o| o.id == f.id) {
                return Err(NameError::DuplicateFunction(f.id.0));
            }
            out.push(f);
        }
        Ok(out)
    }
}

/// A device's identity at Fundamentum: the topic levels `registries/{registry}/devices/{serial}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FundamentumId {
    pub registry: String,
    pub serial: String,
}

impl FundamentumId {
    pub fn parse(registry: &str, serial: &str) -> Result<Self, NameError> {
        Ok(Self {
            registry: topic_level(registry)?,
            serial: topic_level(serial)?,
        })
    }
}

/// The name of a Fundamentum registry: one clean MQTT topic level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegistryName(String);

impl RegistryName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        topic_level(raw).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn topic_level(raw: &str) -> Result<String, NameError> {
    let ok = !raw.is_empty()
        && raw.chars().count() <= 128
        && !raw
            .chars()
            .any(|c| matches!(c, '/' | '+' | '#') || c.is_whitespace() || c.is_control());
    ok.then(|| raw.to_owned()).ok_or(NameError::TopicLevel)
}

/// How long without any message before a device is offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OfflineAfter(u32);

impl OfflineAfter {
    pub const MIN: u32 = 1;
    /// A week: heartbeats are every 15 minutes by default, a few missed ones is the norm.
    pub const MAX: u32 = 7 * 24 * 3600;

    pub fn seconds(secs: u32) -> Result<Self, NameError> {
        (Self::MIN..=Self::MAX)
            .contains(&secs)
            .then_some(Self(secs))
            .ok_or(NameError::OfflineAfter {
                min: Self::MIN,
                max: Self::MAX,
            })
    }

    pub fn as_secs(self) -> u32 {
        self.0
    }
}
