//! Fundamentum's MQTT wire format, version 1 (SDK 0.15 and 0.16): topics and payloads. Dimonoff
//! gives no compatibility guarantee, so every byte-level detail lives in this one module.

use eriop_nats::traffic::ReplyStatus;
use prost::Message as _;
use serde::Deserialize;
use serde_json::Value;

use fundamentum_iot_mqtt_proto::com::fundamentum::heartbeats::v1::Heartbeat as HeartbeatV1;

/// What a topic under `registries/{registry}/devices/{serial}/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Heartbeat,
    States,
    /// `events` or `events/{sub_topic}`.
    Events(String),
    /// A device's reply on `commands/{id}`.
    CommandReply(i64),
    /// What the cloud sends to devices (`commands`, `actions`, `config`): ours, not input.
    Downlink,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub registry: String,
    pub serial: String,
    pub kind: Kind,
}

/// The subscriptions: every topic of every device, exactly once (five levels, and six or
/// more), so that a topic the bridge does not know still arrives and goes to `DLQ`.
pub fn subscriptions(share_group: &str) -> [String; 2] {
    let share = |filter: &str| {
        if share_group.is_empty() {
            filter.to_owned()
        } else {
            format!("$share/{share_group}/{filter}")
        }
    };
    [
        share("registries/+/devices/+/+"),
        share("registries/+/devices/+/+/+/#"),
    ]
}

pub fn parse_topic(topic: &str) -> Option<Topic> {
    let mut parts = topic.splitn(6, '/');
    let (Some("registries"), Some(registry), Some("devices"), Some(serial), Some(kind)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if registry.is_empty() || serial.is_empty() {
        return None;
    }
    let rest = parts.next();
    let kind = match (kind, rest) {
        ("heartbeat", None) => Kind::Heartbeat,
        ("states", None) => Kind::States,
        ("events", None) => Kind::Events(String::new()),
        ("events", Some(sub)) if !sub.is_empty() => Kind::Events(sub.to_owned()),
        ("commands", Some(id)) => Kind::CommandReply(id.parse().ok()?),
        ("commands" | "actions" | "config", None) => Kind::Downlink,
        _ => return None,
    };
    Some(Topic {
        registry: registry.to_owned(),
        serial: serial.to_owned(),
        kind,
    })
}

/// A heartbeat: the device's uptime and the sub-devices it vouches for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Heartbeat {
    pub uptime_secs: Option<u64>,
    pub sub_devices: Vec<(String, Option<u64>)>,
}

#[derive(Deserialize)]
struct HeartbeatJson {
    uptime: Option<u64>,
}

/// JSON `{"uptime": N}` (SDK 0.15), or protobuf `heartbeats.v1.Heartbeat` when the MQTT
/// user property `v` is `1` (SDK 0.16).
pub fn decode_heartbeat(payload: &[u8], version: Option<&str>) -> Result<Heartbeat, String> {
    match version {
        Some("1") => {
            let hb = HeartbeatV1::decode(payload)
                .map_err(|e| format!("heartbeat is not a protobuf heartbeats.v1.Heartbeat: {e}"))?;
            Ok(Heartbeat {
                uptime_secs: hb.uptime.map(u64::from),
                sub_devices: hb
                    .sub_devices
                    .into_iter()
                    .map(|s| (s.serial_number, s.uptime.map(u64::from)))
                    .collect(),
            })
        }
        Some(other) => Err(format!(
            "heartbeat version v={other} is not supported (known: 1)"
        )),
        None => {
            let hb: HeartbeatJson = serde_json::from_slice(payload)
                .map_err(|e| format!("heartbeat is not JSON {{\"uptime\": N}}: {e}"))?;
            Ok(Heartbeat {
                uptime_secs: hb.uptime,
                sub_devices: Vec::new(),
            })
        }
    }
}

/// Encodes a protobuf v1 heartbeat (what SDK 0.16 devices send; the simulator uses it).
pub fn encode_heartbeat_v1(uptime_secs: u32, sub_devices: &[(String, u32)]) -> Vec<u8> {
    use fundamentum_iot_mqtt_proto::com::fundamentum::heartbeats::v1::SubdeviceHeartbeat;
    HeartbeatV1 {
        uptime: Some(uptime_secs),
        sub_devices: sub_devices
            .iter()
            .map(|(serial, uptime)| SubdeviceHeartbeat {
                serial_number: serial.clone(),
                uptime: Some(*uptime),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// A `states` message: the device's states at `timestamp` (ms), and its beacons'.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct States {
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub states: serde_json::Map<String, Value>,
    #[serde(default)]
    pub beacons: Vec<Beacon>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Beacon {
    pub identification: String,
    #[serde(default)]
    pub states: serde_json::Map<String, Value>,
    pub timestamp: Option<i64>,
}

pub fn decode_states(payload: &[u8]) -> Result<States, String> {
    serde_json::from_slice(payload)
        .map_err(|e| format!("states is not Fundamentum states JSON: {e}"))
}

/// An `events` message: JSON in practice. An object is read like states (an optional
/// `timestamp` in ms, the other keys as attributes).
pub fn decode_event(
    payload: &[u8],
) -> Result<(Option<i64>, serde_json::Map<String, Value>), String> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| format!("event is not JSON: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err("event is JSON but not an object".into());
    };
    let timestamp = map.remove("timestamp").and_then(|t| t.as_i64());
    Ok((timestamp, map))
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Reply {
    pub status: String,
    pub message: Option<String>,
}

pub fn decode_reply(payload: &[u8]) -> Result<(ReplyStatus, Option<String>), String> {
    let reply: Reply = serde_json::from_slice(payload)
        .map_err(|e| format!("command reply is not {{\"status\": ..., \"message\": ...}}: {e}"))?;
    let status = ReplyStatus::parse(&reply.status).ok_or_else(|| {
        format!(
            "command reply status {} is not ongoing, success, failure or retry",
            eriop_nats::dlq::quote(&reply.status, 64)
        )
    })?;
    Ok((status, reply.message))
}

/// The `commands` message: a JSON array of commands.
pub fn encode_command(command_id: i64, short_name: &str, parameters: &Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!([{
        "device_command_id": command_id,
        "command_short_name": short_name,
        "parameters": parameters,
    }]))
    .unwrap_or_default()
}

pub fn commands_topic(registry: &str, serial: &str) -> String {
    format!("registries/{registry}/devices/{serial}/commands")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_read_and_unknown_ones_refused() {
        let t = parse_topic("registries/r1/devices/SN-1/commands/42").unwrap();
        assert_eq!(t.kind, Kind::CommandReply(42));
        assert_eq!(
            parse_topic("registries/r1/devices/SN-1/events/power/x")
                .unwrap()
                .kind,
            Kind::Events("power/x".into())
        );
        assert_eq!(parse_topic("registries/r1/devices/SN-1/telemetry"), None);
        assert_eq!(parse_topic("registries/r1/devices/SN-1/commands/abc"), None);
        assert_eq!(
            parse_topic("registries/r1/devices/SN-1/commands")
                .unwrap()
                .kind,
            Kind::Downlink
        );
    }

    #[test]
    fn heartbeats_in_both_versions() {
        let hb =
            decode_heartbeat(&encode_heartbeat_v1(77, &[("lamp-2".into(), 5)]), Some("1")).unwrap();
        assert_eq!(hb.uptime_secs, Some(77));
        assert_eq!(hb.sub_devices, vec![("lamp-2".to_owned(), Some(5))]);
        assert_eq!(
            decode_heartbeat(br#"{"uptime": 9}"#, None)
                .unwrap()
                .uptime_secs,
            Some(9)
        );
        assert!(decode_heartbeat(b"\xff\xff\xff", Some("1")).is_err());
        assert!(decode_heartbeat(b"{", None).is_err());
    }
}
