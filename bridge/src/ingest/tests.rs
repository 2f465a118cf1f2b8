//! The ingest path against hostile input: examples of what broke it once, and property tests
//! over arbitrary topics, payloads and user properties (no broker, no database).

use eriop_domain::device::FunctionDesc;
use proptest::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

use super::*;

const NOW: i64 = 1_800_000_000_000;

fn rules() -> Rules {
    Rules {
        max_payload: 4096,
        max_age_ms: 30 * 24 * 3600 * 1000,
        max_ahead_ms: 300_000,
    }
}

fn device(n: u128, agency: u128) -> DeviceInfo {
    DeviceInfo {
        id: Uuid::from_u128(n),
        agency_id: Uuid::from_u128(agency),
        functions: vec![FunctionDesc::parse("lampMonitor001", "LampMonitorFunction").unwrap()],
        suspended: false,
        telemetry_quota: None,
    }
}

/// Decodes and adapts one message with `resolve`, as the pipeline does.
fn run(
    topic: &str,
    payload: &[u8],
    version: Option<&str>,
    resolve: &dyn Fn(&str) -> Option<DeviceInfo>,
) -> Output {
    let mut out = Output::default();
    match decode(topic, payload, version, NOW, &rules()) {
        Ok(decoded) => adapt(decoded, topic, payload, NOW, resolve, &mut out),
        Err(reason) => out.dead_letter(reason, topic, payload),
    }
    out
}

fn everyone(serial: &str) -> Option<DeviceInfo> {
    Some(device(serial.len() as u128 + 1, 7))
}

/// Every dead letter becomes a NATS message without panicking, and the record strings can be
/// stored by PostgreSQL (no NUL).
fn assert_deliverable(out: Output) {
    for letter in out.dead {
        assert!(!letter.reason.is_empty());
        let (headers, body) = letter.into_message();
        assert!(body.len() <= eriop_nats::dlq::MAX_ORIGINAL);
        for (_, values) in headers.iter() {
            for value in values {
                assert!(!value.as_str().contains(['\r', '\n']));
            }
        }
    }
    for records in out.telemetry.values() {
        for record in records {
            let text = serde_json::to_string(record).unwrap();
            assert!(!text.contains("\\u0000"), "a NUL reached a record: {text}");
        }
    }
}

#[test]
fn a_beacon_with_cr_lf_is_dead_lettered_with_a_printable_reason_and_its_gateway_is_stored() {
    let payload = br#"{"timestamp":1800000000000,"states":{"lampMonitor001.activePower":3},"beacons":[{"identification":"a\r\nb","states":{"x":1}}]}"#;
    let out = run("registries/R/devices/S/states", payload, None, &everyone);
    assert_eq!(out.samples(), 1);
    assert_eq!(out.dead.len(), 1);
    assert!(
        out.dead[0].reason.contains(r#""a\r\nb""#),
        "{}",
        out.dead[0].reason
    );
    assert_deliverable(out);
}

#[test]
fn a_reply_status_with_cr_lf_is_dead_lettered() {
    let out = run(
        "registries/R/devices/S/commands/12",
        br#"{"status":"succ\r\ness"}"#,
        None,
        &everyone,
    );
    assert!(out.replies.is_empty());
    assert_eq!(out.dead.len(), 1);
    assert_deliverable(out);
}

#[test]
fn nul_characters_and_control_characters_in_identities_are_refused() {
    let nul = run(
        "registries/R/devices/S/states",
        br#"{"states":{"note":"a\u0000b"}}"#,
        None,
        &everyone,
    );
    assert_eq!((nul.samples(), nul.dead.len()), (0, 1));
    let topic = run(
        "registries/R/devices/S\u{0}x/heartbeat",
        b"{}",
        None,
        &everyone,
    );
    assert!(topic.dead[0].reason.starts_with("unknown topic"));
    assert_deliverable(topic);
}

#[test]
fn timestamps_outside_the_window_are_refused() {
    let future = NOW + 301_000;
    let old = NOW - 31 * 24 * 3600 * 1000;
    for t in [future, old] {
        let payload = json!({"timestamp": t, "states": {"lampMonitor001.activePower": 1}});
        let out = run(
            "registries/R/devices/S/states",
            &serde_json::to_vec(&payload).unwrap(),
            None,
            &everyone,
        );
        assert_eq!(out.samples(), 0);
        assert!(out.dead[0].reason.starts_with("timestamp"));
    }
    let fine = json!({"timestamp": NOW + 299_000, "states": {"lampMonitor001.activePower": 1}});
    let out = run(
        "registries/R/devices/S/states",
        &serde_json::to_vec(&fine).unwrap(),
        None,
        &everyone,
    );
    assert_eq!(out.samples(), 1);
}

#[test]
fn a_beacon_of_another_agency_is_not_accepted() {
    let resolve = |serial: &str| match serial {
        "gw" => Some(device(1, 7)),
        "lamp" => Some(device(2, 8)),
        _ => None,
    };
    let payload = br#"{"states":{},"beacons":[{"identification":"lamp","states":{"x":1}}]}"#;
    let out = run("registries/R/devices/gw/states", payload, None, &resolve);
    assert_eq!(out.samples(), 0);
    assert!(out.dead[0].reason.starts_with("unregistered beacon"));
    assert!(!out.activity.contains_key(&Uuid::from_u128(2)));
}

#[test]
fn a_suspended_agencys_device_is_dead_lettered_and_nothing_is_kept() {
    let resolve = |_: &str| {
        let mut d = device(1, 7);
        d.suspended = true;
        Some(d)
    };
    let out = run(
        "registries/R/devices/S/states",
        br#"{"states":{"lampMonitor001.activePower":1}}"#,
        None,
        &resolve,
    );
    assert!(out.telemetry.is_empty() && out.activity.is_empty());
    assert!(out.dead[0].reason.starts_with("agency suspended"));
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{1,12}",
        "[\\x00-\\x7f]{0,12}",
        any::<String>(),
        Just(String::new()),
    ]
}

fn topic() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just("heartbeat".to_owned()),
        Just("states".to_owned()),
        Just("events".to_owned()),
        "events/[a-z/]{0,8}",
        "commands/-?[0-9]{1,20}",
        Just("commands".to_owned()),
        Just("config".to_owned()),
        level(),
    ];
    prop_oneof![
        (level(), level(), kind).prop_map(|(r, s, k)| format!("registries/{r}/devices/{s}/{k}")),
        any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e300f64..1e300).prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        "[\\x00-\\x1f]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop_oneof![
            Just("lampMonitor001.activePower".to_owned()),
            Just("lampMonitor001".to_owned()),
            any::<String>()
        ],
        json_value(),
        0..5,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn timestamp() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        Just(None),
        (NOW - 40 * 24 * 3600 * 1000..NOW + 600_000).prop_map(Some),
        any::<i64>().prop_map(Some),
    ]
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    let states = (
        timestamp(),
        attributes(),
        prop::collection::vec((level(), attributes(), timestamp()), 0..3),
    )
        .prop_map(|(t, states, beacons)| {
            let beacons: Vec<Value> = beacons
                .into_iter()
                .map(|(id, s, t)| json!({"identification": id, "states": s, "timestamp": t}))
                .collect();
            serde_json::to_vec(&json!({"timestamp": t, "states": states, "beacons": beacons}))
                .unwrap()
        });
    let reply = (
        prop_oneof![
            Just("success".to_owned()),
            Just("ongoing".to_owned()),
            any::<String>()
        ],
        prop::option::of(any::<String>()),
    )
        .prop_map(|(status, message)| {
            serde_json::to_vec(&json!({"status": status, "message": message})).unwrap()
        });
    let heartbeat = (
        any::<u32>(),
        prop::collection::vec((level(), any::<u32>()), 0..3),
    )
        .prop_map(|(uptime, subs)| crate::fundamentum::encode_heartbeat_v1(uptime, &subs));
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        states,
        reply,
        heartbeat,
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        Just(vec![b'x'; 5000]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Whatever arrives: no panic, and either something kept (records, activity, a reply)
    /// or a DLQ reason; every dead letter is a valid NATS message; nothing unstorable kept.
    #[test]
    fn any_message_gives_records_or_a_reason(
        topic in topic(),
        payload in payload(),
        version in prop::option::of(prop_oneof![Just("1".to_owned()), any::<String>()]),
    ) {
        let out = run(&topic, &payload, version.as_deref(), &everyone);
        let downlink = crate::fundamentum::parse_topic(&topic)
            .is_some_and(|t| t.kind == crate::fundamentum::Kind::Downlink)
            && ingest_ok(&topic, &payload);
        prop_assert!(
            downlink || !out.activity.is_empty() || !out.dead.is_empty() || !out.replies.is_empty(),
            "neither kept nor refused: {topic:?}"
        );
        for records in out.telemetry.values() {
            for record in records {
                let time = record.timestamp.as_str();
                let t = chrono::DateTime::parse_from_rfc3339(time).unwrap().timestamp_millis();
                prop_assert!(t >= NOW - rules().max_age_ms && t <= NOW + rules().max_ahead_ms);
            }
        }
        assert_deliverable(out);
    }

    /// With no device registered, nothing is kept: everything is refused with a reason.
    #[test]
    fn nothing_is_kept_for_an_unregistered_device(topic in topic(), payload in payload()) {
        let out = run(&topic, &payload, None, &|_| None);
        prop_assert!(out.telemetry.is_empty() && out.activity.is_empty() && out.replies.is_empty());
        assert_deliverable(out);
    }

    /// The device a group's prefetch looks up is the one decode reads from the topic, and a
    /// topic decode refuses (or a downlink) names none.
    #[test]
    fn the_device_looked_up_first_is_the_one_decode_reads(topic in topic()) {
        let payload = br#"{"states":{"lampMonitor001.activePower":1}}"#;
        match decode(&topic, payload, None, NOW, &rules()) {
            Ok(decoded) => {
                let named = (decoded.message != Message::Downlink)
                    .then_some((decoded.id.registry, decoded.id.serial));
                prop_assert_eq!(device_of(&topic), named);
            }
            Err(reason) if reason.starts_with("unknown topic") => {
                prop_assert_eq!(device_of(&topic), None);
            }
            Err(_) => {}
        }
    }

    /// Any text makes a valid NATS header value.
    #[test]
    fn any_text_makes_a_header(text in any::<String>()) {
        let value = eriop_nats::dlq::header_value(&text);
        prop_assert!(value.as_str().len() <= eriop_nats::dlq::MAX_HEADER);
        prop_assert!(!value.as_str().contains(['\r', '\n']));
    }
}

fn ingest_ok(topic: &str, payload: &[u8]) -> bool {
    decode(topic, payload, None, NOW, &rules()).is_ok()
}
