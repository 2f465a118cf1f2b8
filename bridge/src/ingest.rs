//! From one MQTT message to what ERIOP keeps of it, with no I/O (DESIGN.md rule 11): every
//! byte here came from a device, and is hostile until proven otherwise.
//!
//! [`decode`] reads the topic and the payload and refuses what cannot be stored or shown
//! safely: identities that are not clean topic levels, NUL characters (PostgreSQL text and
//! jsonb refuse them, so one would stall the projector), attribute names that are not
//! printable, timestamps outside the window, unknown reply statuses. [`adapt`] then turns a
//! decoded message into TALQ records, device activity and command replies, given the devices
//! it names (looked up by the caller). Anything refused becomes a [`DeadLetter`] with a reason
//! whose device-chosen parts are quoted and cut ([`eriop_nats::dlq::quote`]).
//!
//! Both are total: whatever the input, they answer records or a reason, never panic. The
//! property tests below drive arbitrary topics, payloads and user properties through them.

use std::collections::BTreeMap;

use eriop_domain::device::talq::AttributeLogData;
use eriop_domain::device::FundamentumId;
use eriop_nats::dlq::{quote, DeadLetter};
use eriop_nats::traffic::{CommandReply, DeviceActivity, ReplyStatus};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::adapter;
use crate::fundamentum::{self, Kind};
use crate::registry::DeviceInfo;

/// How much device input is quoted in a reason.
const QUOTE: usize = 64;
/// The longest attribute name (a state key) kept.
const MAX_ATTRIBUTE_NAME: usize = 256;
/// The longest message of a command reply kept.
const MAX_REPLY_MESSAGE: usize = 4096;

/// What a device may send, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub max_payload: usize,
    /// Device timestamps are accepted within `[now - max_age_ms, now + max_ahead_ms]`.
    pub max_age_ms: i64,
    pub max_ahead_ms: i64,
}

/// A message read and checked, not yet tied to a registered device.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub id: FundamentumId,
    pub message: Message,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The cloud's own downlink, seen through the wildcard subscription: nothing to keep.
    Downlink,
    Heartbeat {
        uptime_secs: Option<u64>,
        /// Sub-devices the gateway vouches for: a clean serial, or why not.
        sub_devices: Vec<(Result<String, String>, Option<u64>)>,
    },
    States {
        timestamp: Option<i64>,
        states: Map<String, Value>,
        beacons: Vec<Beacon>,
    },
    Event {
        timestamp: Option<i64>,
        attributes: Map<String, Value>,
    },
    Reply {
        command_id: i64,
        status: ReplyStatus,
        message: Option<String>,
    },
}

/// A beacon's clean serial, its timestamp and its states.
pub type BeaconStates = (String, Option<i64>, Map<String, Value>);

/// A beacon of a states message: checked on its own, so one bad beacon does not cost its
/// gateway's other states.
#[derive(Debug, Clone, PartialEq)]
pub struct Beacon {
    /// A clean serial and its states, or why the beacon is refused.
    pub checked: Result<BeaconStates, String>,
    /// The beacon as sent (for the DLQ).
    pub original: Vec<u8>,
}

/// What one group of MQTT messages becomes.
#[derive(Debug, Default)]
pub struct Output {
    pub telemetry: BTreeMap<Uuid, Vec<AttributeLogData>>,
    pub activity: BTreeMap<Uuid, DeviceActivity>,
    pub replies: Vec<CommandReply>,
    pub dead: Vec<DeadLetter>,
}

impl Output {
    pub fn heard(&mut self, device: &DeviceInfo, at_ms: i64, uptime: Option<Option<u64>>) {
        let entry = self.activity.entry(device.id).or_insert(DeviceActivity {
            agency_id: device.agency_id,
            device_id: device.id,
            at_ms,
            heartbeat_at_ms: None,
            uptime_secs: None,
        });
        entry.at_ms = entry.at_ms.max(at_ms);
        if let Some(uptime) = uptime {
            entry.heartbeat_at_ms = Some(at_ms);
            entry.uptime_secs = uptime.or(entry.uptime_secs);
        }
    }

    pub fn samples(&self) -> usize {
        self.telemetry.values().map(Vec::len).sum()
    }

    pub fn dead_letter(&mut self, reason: impl Into<String>, topic: &str, original: &[u8]) {
        self.dead
            .push(DeadLetter::new(reason, topic, original.to_vec()));
    }
}

/// The identity a topic names, if it is a device topic with clean levels: what the per-device
/// rate is counted on, before anything is decoded.
pub fn identity(topic: &str) -> Option<FundamentumId> {
    let parsed = fundamentum::parse_topic(topic)?;
    FundamentumId::parse(&parsed.registry, &parsed.serial).ok()
}

/// Reads and checks one MQTT message. `Err` is the reason it goes to `DLQ`.
/// The device (registry, serial) an uplink topic names, as [`decode`] reads it; `None` for a
/// topic `decode` refuses, or a downlink.
pub fn device_of(topic: &str) -> Option<(String, String)> {
    let parsed = fundamentum::parse_topic(topic)?;
    if parsed.kind == Kind::Downlink {
        return None;
    }
    let id = FundamentumId::parse(&parsed.registry, &parsed.serial).ok()?;
    Some((id.registry, id.serial))
}

pub fn decode(
    topic: &str,
    payload: &[u8],
    version: Option<&str>,
    now_ms: i64,
    rules: &Rules,
) -> Result<Decoded, String> {
    if payload.len() > rules.max_payload {
        return Err(format!(
            "oversized: {} bytes, the limit is {} (ERIOP_MQTT_MAX_PAYLOAD_BYTES)",
            payload.len(),
            rules.max_payload
        ));
    }
    let unknown = || {
        "unknown topic: not registries/{registry}/devices/{serial}/{heartbeat|states|events[/..]|commands/{id}} with printable levels of at most 128 characters".to_owned()
    };
    let parsed = fundamentum::parse_topic(topic).ok_or_else(unknown)?;
    let id = FundamentumId::parse(&parsed.registry, &parsed.serial).map_err(|_| unknown())?;
    let malformed = |reason: String| format!("malformed: {reason}");
    let message = match parsed.kind {
        Kind::Downlink => Message::Downlink,
        Kind::Heartbeat => {
            let hb = fundamentum::decode_heartbeat(payload, version).map_err(malformed)?;
            Message::Heartbeat {
                uptime_secs: hb.uptime_secs,
                sub_devices: hb
                    .sub_devices
                    .into_iter()
                    .map(|(serial, uptime)| (clean_serial(&serial, "sub-device"), uptime))
                    .collect(),
            }
        }
        Kind::States => {
            let states = fundamentum::decode_states(payload).map_err(malformed)?;
            check_time(states.timestamp, now_ms, rules)?;
            check_attributes(&states.states)?;
            let beacons = states
                .beacons
                .into_iter()
                .map(|b| {
                    let original = serde_json::to_vec(&serde_json::json!({
                        "identification": b.identification,
                        "timestamp": b.timestamp,
                        "states": b.states,
                    }))
                    .unwrap_or_default();
                    let checked = clean_serial(&b.identification, "beacon").and_then(|serial| {
                        check_time(b.timestamp, now_ms, rules)?;
                        check_attributes(&b.states)?;
                        Ok((serial, b.timestamp, b.states))
                    });
                    Beacon { checked, original }
                })
                .collect();
            Message::States {
                timestamp: states.timestamp,
                states: states.states,
                beacons,
            }
        }
        Kind::Events(_) => {
            let (timestamp, attributes) = fundamentum::decode_event(payload).map_err(malformed)?;
            check_time(timestamp, now_ms, rules)?;
            check_attributes(&attributes)?;
            Message::Event {
                timestamp,
                attributes,
            }
        }
        Kind::CommandReply(command_id) => {
            let (status, message) = fundamentum::decode_reply(payload).map_err(malformed)?;
            if let Some(text) = &message {
                if text.contains('\0') || text.chars().count() > MAX_REPLY_MESSAGE {
                    return Err(malformed(format!(
                        "a command reply's message is at most {MAX_REPLY_MESSAGE} characters, without NUL"
                    )));
                }
            }
            Message::Reply {
                command_id,
                status,
                message,
            }
        }
    };
    Ok(Decoded { id, message })
}

/// The serials a decoded message names besides its own device: beacons and sub-devices.
pub fn named_serials(decoded: &Decoded) -> Vec<String> {
    match &decoded.message {
        Message::States { beacons, .. } => beacons
            .iter()
            .filter_map(|b| b.checked.as_ref().ok().map(|(s, _, _)| s.clone()))
            .collect(),
        Message::Heartbeat { sub_devices, .. } => sub_devices
            .iter()
            .filter_map(|(s, _)| s.as_ref().ok().cloned())
            .collect(),
        _ => Vec::new(),
    }
}

/// Adds what a decoded message means to `out`. `resolve` answers the live device of a
/// serial under the message's registry (the caller looked them up); `now_ms` is the
/// bridge's time of receipt.
pub fn adapt(
    decoded: Decoded,
    topic: &str,
    payload: &[u8],
    now_ms: i64,
    resolve: &dyn Fn(&str) -> Option<DeviceInfo>,
    out: &mut Output,
) {
    if decoded.message == Message::Downlink {
        return;
    }
    let Some(device) = resolve(&decoded.id.serial) else {
        out.dead_letter(
            "unregistered device: no live device of an agency owning this registry has this Fundamentum registry and serial",
            topic,
            payload,
        );
        return;
    };
    if device.suspended {
        out.dead_letter(
            "agency suspended: the device's agency is suspended; its messages are kept here until a platform administrator reactivates it",
            topic,
            payload,
        );
        return;
    }
    // A beacon or sub-device counts only if it belongs to the same agency as its gateway.
    let same_agency = |serial: &str| resolve(serial).filter(|d| d.agency_id == device.agency_id);
    match decoded.message {
        Message::Downlink => {}
        Message::Heartbeat {
            uptime_secs,
            sub_devices,
        } => {
            out.heard(&device, now_ms, Some(uptime_secs));
            for (serial, uptime) in sub_devices {
                match serial {
                    // A heartbeat vouching for an unknown sub-device is not kept for it: the
                    // sub-device's own silence will tell.
                    Ok(serial) => {
                        if let Some(sub) = same_agency(&serial) {
                            out.heard(&sub, now_ms, Some(uptime));
                        }
                    }
                    Err(reason) => out.dead_letter(
                        format!("{reason} (its gateway's heartbeat is kept)"),
                        topic,
                        payload,
                    ),
                }
            }
        }
        Message::States {
            timestamp,
            states,
            beacons,
        } => {
            let at = timestamp.unwrap_or(now_ms);
            out.heard(&device, now_ms, None);
            out.telemetry
                .entry(device.agency_id)
                .or_default()
                .extend(adapter::records(device.id, &device.functions, &states, at));
            for beacon in beacons {
                let refused = match beacon.checked {
                    Ok((serial, beacon_at, states)) => match same_agency(&serial) {
                        Some(sub) => {
                            out.heard(&sub, now_ms, None);
                            out.telemetry.entry(sub.agency_id).or_default().extend(
                                adapter::records(
                                    sub.id,
                                    &sub.functions,
                                    &states,
                                    beacon_at.unwrap_or(at),
                                ),
                            );
                            None
                        }
                        None => Some(format!(
                            "unregistered beacon {}: not a live device of its gateway's agency under this registry",
                            quote(&serial, QUOTE)
                        )),
                    },
                    Err(reason) => Some(reason),
                };
                if let Some(reason) = refused {
                    out.dead_letter(
                        format!("{reason} (its gateway's other states are stored)"),
                        topic,
                        &beacon.original,
                    );
                }
            }
        }
        Message::Event {
            timestamp,
            attributes,
        } => {
            out.heard(&device, now_ms, None);
            out.telemetry
                .entry(device.agency_id)
                .or_default()
                .extend(adapter::records(
                    device.id,
                    &device.functions,
                    &attributes,
                    timestamp.unwrap_or(now_ms),
                ));
        }
        Message::Reply {
            command_id,
            status,
            message,
        } => {
            out.heard(&device, now_ms, None);
            out.replies.push(CommandReply {
                agency_id: device.agency_id,
                device_id: device.id,
                command_id,
                status,
                message,
            });
        }
    }
}

/// A beacon's or sub-device's serial, if it is a clean topic level.
fn clean_serial(raw: &str, what: &str) -> Result<String, String> {
    FundamentumId::parse("r", raw)
        .map(|id| id.serial)
        .map_err(|_| {
            format!(
                "malformed: {what} serial {} is not a printable topic level of at most 128 characters",
                quote(raw, QUOTE)
            )
        })
}

fn check_time(timestamp: Option<i64>, now_ms: i64, rules: &Rules) -> Result<(), String> {
    let Some(t) = timestamp else {
        return Ok(());
    };
    let earliest = now_ms.saturating_sub(rules.max_age_ms);
    let latest = now_ms.saturating_add(rules.max_ahead_ms);
    if t < earliest || t > latest {
        return Err(format!(
            "timestamp: {t} ms is outside [now - {} s, now + {} s] (the device's clock, or a replay; ERIOP_DEVICE_TIMESTAMP_MAX_AGE_SECS / _MAX_AHEAD_SECS)",
            rules.max_age_ms / 1000,
            rules.max_ahead_ms / 1000
        ));
    }
    Ok(())
}

/// Attribute names are printable and bounded; no string anywhere holds NUL (PostgreSQL's
/// text and jsonb cannot store it).
fn check_attributes(attributes: &Map<String, Value>) -> Result<(), String> {
    for (key, value) in attributes {
        if key.is_empty()
            || key.chars().count() > MAX_ATTRIBUTE_NAME
            || key.chars().any(char::is_control)
        {
            return Err(format!(
                "malformed: attribute name {} is empty, longer than {MAX_ATTRIBUTE_NAME} characters or not printable",
                quote(key, QUOTE)
            ));
        }
        if holds_nul(value) {
            return Err(format!(
                "malformed: attribute {} holds a NUL character",
                quote(key, QUOTE)
            ));
        }
    }
    Ok(())
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
