//! Devices and telemetry, end to end: a private TLS Mosquitto with a CA made by the test,
//! virtual Fundamentum devices, the bridge, NATS JetStream, the projections and the API.

use std::time::Duration;

use eriop_bridge::simulator::{LightId, VirtualLight};
use eriop_nats::{Settings, Stream};
use eriop_tests::mosquitto::{make_ca, Broker};
use eriop_tests::{wait, TestApp, TestDb};
use reqwest::Method;
use serde_json::{json, Value};

pub(crate) async fn app_on(broker: &Broker) -> TestApp {
    let (port, ca) = (broker.port, broker.ca_file());
    TestApp::spawn_with(TestDb::migrated().await, move |s| {
        s.mqtt_broker_host = "127.0.0.1".into();
        s.mqtt_broker_port = port;
        s.mqtt_use_tls = true;
        s.mqtt_ca_file = Some(ca);
    })
    .await
}

pub(crate) async fn create_class(app: &TestApp, offline_after_secs: u32) -> String {
    let response = app
        .request(Method::POST, "/device-classes")
        .json(&json!({
            "name": "Street light",
            "offline_after_secs": offline_after_secs,
            "functions": [
                {"id": "lampMonitor001", "type": "LampMonitorFunction"},
                {"id": "lampActuator001", "type": "LampActuatorFunction"},
                {"id": "comm001", "type": "CommunicationFunction"},
            ],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) async fn register(app: &TestApp, class: &str, registry: &str, serial: &str) -> String {
    app.own_registry(registry).await;
    let response = app
        .request(Method::POST, "/devices")
        .json(&json!({"class_id": class, "registry": registry, "serial": serial, "name": format!("Pole {serial}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A virtual device on the test's broker, with a persistent session (its unacked messages
/// are sent again after a broker restart).
pub(crate) async fn light(
    app: &TestApp,
    registry: &str,
    serial: &str,
    answer: bool,
) -> VirtualLight {
    let mut s: Settings = app.settings.clone();
    s.mqtt_client_id = format!("{}-{registry}-{serial}", app.settings.nats_prefix);
    let mut options = eriop_bridge::mqtt_options(&s).unwrap();
    options.set_manual_acks(false);
    let id = LightId {
        registry: registry.into(),
        serial: serial.into(),
    };
    VirtualLight::connect(id, options, answer).await
}

async fn device(app: &TestApp, id: &str) -> Value {
    let response = app
        .request(Method::GET, &format!("/devices/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Each light publishes states `from..to` (one sample each, at `start + i` ms).
async fn publish(lights: &[VirtualLight], start: i64, from: i64, to: i64) {
    let futures = lights.iter().map(|l| async move {
        for i in from..to {
            l.states(start + i, json!({ "lampMonitor001.activePower": i as f64 }))
                .await
                .unwrap();
        }
    });
    futures::future::join_all(futures).await;
}

/// The samples the devices sent (not the liveness records ERIOP adds).
pub(crate) async fn rows(app: &TestApp) -> i64 {
    app.db
        .count("SELECT count(*) FROM telemetry WHERE attribute = 'activePower'")
        .await
}

/// Every message of the test's DLQ stream: (reason, original subject, bytes).
async fn dead_letters(app: &TestApp) -> Vec<(String, String, Vec<u8>)> {
    let header = |h: &async_nats::HeaderMap, name: &str| {
        h.get(name).map(|v| v.to_string()).unwrap_or_default()
    };
    app.dead_letters()
        .await
        .into_iter()
        .map(|(h, body)| {
            (
                header(&h, eriop_nats::dlq::REASON),
                header(&h, eriop_nats::dlq::ORIGIN),
                body,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bridge_speaks_tls_and_refuses_a_broker_its_ca_did_not_sign() {
    let broker = Broker::start_tls();
    let app = app_on(&broker).await;
    wait::until(
        "the bridge to connect over TLS",
        Duration::from_secs(20),
        || async { app.bridge.is_up().then_some(()) },
    )
    .await;

    let other = tempfile::tempdir().unwrap();
    let stranger_ca = make_ca(other.path(), "stranger");
    let (port, ca) = (broker.port, stranger_ca);
    let refused = TestApp::spawn_with(TestDb::migrated().await, move |s| {
        s.mqtt_broker_host = "127.0.0.1".into();
        s.mqtt_broker_port = port;
        s.mqtt_use_tls = true;
        s.mqtt_ca_file = Some(ca);
    })
    .await;
    wait::until(
        "the bridge to try (and fail) three times",
        Duration::from_secs(20),
        || async { (refused.bridge.connection_attempts().len() >= 3).then_some(()) },
    )
    .await;
    assert!(
        !refused.bridge.is_up(),
        "a broker whose certificate the CA did not sign is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_qos1_messages_land_exactly_once_through_a_broker_restart_and_a_bridge_crash()
{
    const DEVICES: usize = 10;
    const PER_DEVICE: i64 = 1_000;
    let mut broker = Broker::start_tls();
    let mut app = app_on(&broker).await;
    let class = create_class(&app, 600).await;
    let mut lights = Vec::new();
    for n in 0..DEVICES {
        let serial = format!("SN-{n}");
        register(&app, &class, "reg-load", &serial).await;
        lights.push(light(&app, "reg-load", &serial, false).await);
    }
    let start = chrono::Utc::now().timestamp_millis() - 3_600_000;
    publish(&lights, start, 0, 300).await;
    wait::until("some rows", Duration::from_secs(60), || async {
        (rows(&app).await > 0).then_some(())
    })
    .await;

    // The broker restarts in the middle (it saves its persistence on SIGTERM).
    let attempts_before = app.bridge.connection_attempts().len();
    broker.stop();
    let down = std::time::Instant::now();
    publish(&lights, start, 300, 500).await; // queued by the devices' clients while the broker is away
    wait::until("the bridge to retry", Duration::from_secs(20), || async {
        (app.bridge.connection_attempts().len() >= attempts_before + 3).then_some(())
    })
    .await;
    let outage = down.elapsed();
    broker.restart();
    let attempts = app.bridge.connection_attempts()[attempts_before..].to_vec();
    // Backoff, not a busy loop: few attempts over the outage, and the wait before attempt
    // k+1 within its ceiling, 200 ms doubling (full jitter: anywhere below it).
    assert!(
        attempts.len() <= 4 + (outage.as_millis() / 100) as usize,
        "{} attempts in {outage:?}",
        attempts.len()
    );
    for (k, pair) in attempts.windows(2).enumerate() {
        let ceiling = Duration::from_millis(200 * 2u64.pow(k as u32)).min(Duration::from_secs(30));
        let gap = pair[1] - pair[0];
        assert!(
            gap <= ceiling + Duration::from_millis(500),
            "wait {k}: {gap:?} above {ceiling:?}"
        );
    }

    publish(&lights, start, 500, 700).await;
    // The bridge crashes, and comes back with the same session.
    app.kill_bridge();
    publish(&lights, start, 700, PER_DEVICE).await;
    app.start_bridge().await;

    let expected = DEVICES as i64 * PER_DEVICE;
    wait::until_eq(
        "every sample to land, once",
        Duration::from_secs(120),
        expected,
        || rows(&app),
    )
    .await;
    let distinct = app
        .db
        .count("SELECT count(DISTINCT (device_id, time)) FROM telemetry WHERE attribute = 'activePower'")
        .await;
    assert_eq!(distinct, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_messages_go_to_the_dlq_with_their_reason_and_the_valid_ones_around_them_are_stored() {
    let broker = Broker::start_tls();
    let app = app_on(&broker).await;
    let class = create_class(&app, 600).await;
    let id = register(&app, &class, "reg-dlq", "SN-1").await;
    let good = light(&app, "reg-dlq", "SN-1", false).await;
    let stranger = light(&app, "reg-dlq", "SN-UNKNOWN", false).await;
    let now = chrono::Utc::now().timestamp_millis();

    good.states(now, json!({"lampMonitor001.activePower": 1.0}))
        .await
        .unwrap();
    good.publish_raw("states", b"{not json".to_vec())
        .await
        .unwrap();
    good.client
        .publish_with_properties(
            good.id.topic("heartbeat"),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            vec![0xff, 0xff, 0xff, 0x01],
            rumqttc::v5::mqttbytes::v5::PublishProperties {
                user_properties: vec![("v".into(), "1".into())],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    good.publish_raw("events", vec![b'x'; 300 * 1024])
        .await
        .unwrap();
    good.publish_raw("telemetry", b"{}".to_vec()).await.unwrap();
    stranger
        .states(now, json!({"lampMonitor001.activePower": 9.0}))
        .await
        .unwrap();
    good.states(now + 1, json!({"lampMonitor001.activePower": 2.0}))
        .await
        .unwrap();

    wait::until("five dead letters", Duration::from_secs(30), || async {
        (dead_letters(&app).await.len() >= 5).then_some(())
    })
    .await;
    let dead = dead_letters(&app).await;
    let reasons: Vec<&str> = dead.iter().map(|(r, _, _)| r.as_str()).collect();
    for expected in [
        "states is not",
        "protobuf",
        "oversized",
        "unknown topic",
        "unregistered device",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "{expected} in {reasons:?}"
        );
    }
    let original = dead
        .iter()
        .find(|(r, _, _)| r.contains("states is not"))
        .unwrap();
    assert_eq!(original.2, b"{not json", "the original bytes are kept");
    assert!(original.1.ends_with("/devices/SN-1/states"));
    wait::until_eq("the two valid samples", Duration::from_secs(30), 2, || {
        rows(&app)
    })
    .await;
    assert_eq!(
        app.db.count(&format!("SELECT count(*) FROM telemetry WHERE device_id = '{id}' AND attribute = 'activePower'")).await,
        2
    );
    assert_eq!(dead.len(), 5);
    // Counted where operators look: the bridge's report in readiness.
    wait::until(
        "the count in readiness",
        Duration::from_secs(20),
        || async {
            let body: Value = app
                .http
                .get(format!("{}/health/ready", app.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (body["checks"]["mqtt"]["details"]["dead_lettered"] == 5).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_device_goes_offline_and_its_next_heartbeat_brings_it_back() {
    let broker = Broker::start_tls();
    let app = app_on(&broker).await;
    let class = create_class(&app, 2).await;
    let id = register(&app, &class, "reg-live", "SN-1").await;
    let lamp = light(&app, "reg-live", "SN-1", false).await;
    assert_eq!(device(&app, &id).await["online"], false);

    lamp.heartbeat(120).await.unwrap();
    wait::until("online", Duration::from_secs(20), || async {
        let d = device(&app, &id).await;
        (d["online"] == true && d["uptime_secs"] == 120).then_some(())
    })
    .await;
    let offline = wait::until(
        "offline after 2 s of silence",
        Duration::from_secs(20),
        || async {
            let d = device(&app, &id).await;
            (d["online"] == false).then_some(d)
        },
    )
    .await;
    // Not before its timeout, by the times the platform recorded (not by when this test
    // happened to look): offline at least 2 s after the last activity.
    let time = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(offline[field].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    assert!(
        time("status_changed_at") - time("last_activity") >= 2_000,
        "not before its timeout: {offline}"
    );
    let latest = &device(&app, &id).await["latest"];
    wait::until(
        "the TALQ communicationFailure record",
        Duration::from_secs(20),
        || async {
            (device(&app, &id).await["latest"]["comm001.communicationFailure"]["value"] == true)
                .then_some(())
        },
    )
    .await;
    let _ = latest;

    lamp.heartbeat(125).await.unwrap();
    wait::until("online again", Duration::from_secs(20), || async {
        (device(&app, &id).await["online"] == true).then_some(())
    })
    .await;
    let events: Vec<String> = app
        .events_on_stream()
        .await
        .into_iter()
        .filter(|(_, e)| e.aggregate_id == id)
        .map(|(_, e)| e.event_type)
        .collect();
    assert_eq!(
        events,
        [
            "DeviceRegistered",
            "DeviceCameOnline",
            "DeviceWentOffline",
            "DeviceCameOnline"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_reaches_the_device_as_fundamentum_json_and_its_replies_show_in_the_api() {
    let broker = Broker::start_tls();
    let app = app_on(&broker).await;
    let class = create_class(&app, 600).await;
    let id = register(&app, &class, "reg-cmd", "SN-1").await;
    let mut lamp = light(&app, "reg-cmd", "SN-1", true).await;
    // The device is known to the bridge once it spoke.
    lamp.heartbeat(1).await.unwrap();

    let response = app
        .request(Method::POST, &format!("/devices/{id}/commands"))
        .json(&json!({"type": "override", "level": 40, "ramp_seconds": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let command: Value = response.json().await.unwrap();
    let command_id = command["id"].as_i64().unwrap();
    assert_eq!(command["status"], "pending");

    let received = tokio::time::timeout(Duration::from_secs(30), lamp.next_command())
        .await
        .expect("the command reaches the device")
        .unwrap();
    assert_eq!(received.topic, "registries/reg-cmd/devices/SN-1/commands");
    let sent = &received.body[0];
    assert_eq!(sent["device_command_id"], command_id);
    assert_eq!(sent["command_short_name"], "talq-override");
    assert_eq!(
        sent["parameters"]["targetCommand"]["state"],
        json!({"name": "LevelState", "value": 40})
    );
    assert_eq!(sent["parameters"]["addresses"][0]["address"], id.as_str());

    let listed: Value = app
        .request(Method::GET, &format!("/devices/{id}/commands"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], command_id);
    wait::until("the device's success", Duration::from_secs(30), || async {
        let r = app
            .request(Method::GET, &format!("/devices/{id}/commands/{command_id}"))
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        (body["status"] == "success").then_some(())
    })
    .await;

    // What went over NATS is what docs/NATS.md says: every message of every stream
    // validates against the JSON Schema of its kind (docs/schemas/, made from the types).
    lamp.states(
        chrono::Utc::now().timestamp_millis(),
        json!({"lampMonitor001.activePower": 41.5, "lampActuator001": {"actualLightState": 40}}),
    )
    .await
    .unwrap();
    wait::until(
        "telemetry on the stream",
        Duration::from_secs(30),
        || async { (!app.messages_on(Stream::Telemetry).await.is_empty()).then_some(()) },
    )
    .await;
    let schema = |name: &str| {
        let path = format!("{}/../docs/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    };
    let mut checked = std::collections::BTreeMap::new();
    // Which schema a message of a stream has, by its subject.
    type SchemaOf = fn(&str) -> &'static str;
    let kinds: [(Stream, SchemaOf); 4] = [
        (Stream::Events, |_: &str| "events.stored-event.json"),
        (Stream::Telemetry, |_: &str| "telemetry.batch.json"),
        (Stream::Commands, |_: &str| "commands.downlink.json"),
        (Stream::Device, |subject: &str| {
            if subject.ends_with(".activity") {
                "device.activity.json"
            } else {
                "device.command-status.json"
            }
        }),
    ];
    for (stream, kind) in kinds {
        for (subject, payload) in app.messages_on(stream).await {
            let name = kind(&subject);
            let message: Value = serde_json::from_slice(&payload).unwrap();
            let errors: Vec<String> = schema(name)
                .iter_errors(&message)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "{subject} against {name}: {errors:?}\n{message:#}"
            );
            *checked.entry(name).or_insert(0) += 1;
        }
    }
    assert_eq!(
        checked.len(),
        5,
        "every kind of message was seen: {checked:?}"
    );
    // And the check can fail: a reply with a status no device may send is not one.
    let bad = json!({"agency_id": id, "device_id": id, "command_id": 1, "status": "done"});
    assert!(!schema("device.command-status.json").is_valid(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_samples_are_stored_but_do_not_replace_a_newer_latest_value() {
    let broker = Broker::start_tls();
    late_samples(app_on(&broker).await).await;
}

/// The same with telemetry in a database of its own (`ERIOP_TIMESCALE_URL`: here another
/// address of the same database), which a device's view reads in a transaction of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_samples_with_telemetry_apart() {
    let broker = Broker::start_tls();
    let (port, ca) = (broker.port, broker.ca_file());
    let db = TestDb::migrated().await;
    let telemetry = format!("{}?application_name=eriop-telemetry", db.url);
    let app = TestApp::spawn_with(db, move |s| {
        s.mqtt_broker_host = "127.0.0.1".into();
        s.mqtt_broker_port = port;
        s.mqtt_use_tls = true;
        s.mqtt_ca_file = Some(ca);
        s.timescale_url = Some(telemetry.into());
    })
    .await;
    late_samples(app).await;
}

async fn late_samples(app: TestApp) {
    let class = create_class(&app, 600).await;
    let id = register(&app, &class, "reg-late", "SN-1").await;
    let lamp = light(&app, "reg-late", "SN-1", false).await;
    let now = chrono::Utc::now().timestamp_millis();
    lamp.states(now, json!({"lampMonitor001.activePower": 50.0}))
        .await
        .unwrap();
    wait::until_eq("the current sample", Duration::from_secs(30), 1, || {
        rows(&app)
    })
    .await;
    lamp.states(now - 3_600_000, json!({"lampMonitor001.activePower": 10.0}))
        .await
        .unwrap();
    wait::until_eq("the late sample", Duration::from_secs(30), 2, || rows(&app)).await;

    let d = device(&app, &id).await;
    assert_eq!(d["latest"]["lampMonitor001.activePower"]["value"], 50.0);
    let from = chrono::DateTime::from_timestamp_millis(now - 7_200_000)
        .unwrap()
        .to_rfc3339();
    let to = chrono::DateTime::from_timestamp_millis(now + 1_000)
        .unwrap()
        .to_rfc3339();
    let csv = app
        .http
        .get(app.api(&format!("/devices/{id}/telemetry/export")))
        .query(&[("from", &from), ("to", &to)])
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    let power: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains(",activePower,"))
        .collect();
    assert_eq!(power.len(), 2, "{csv}");
    assert!(
        power[0].ends_with(",lampMonitor001,activePower,10,,"),
        "{csv}"
    );
    assert!(
        power[1].ends_with(",lampMonitor001,activePower,50,,"),
        "{csv}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bulk_file_of_1000_devices_with_10_bad_rows_registers_990_and_reports_10() {
    let app = TestApp::spawn().await;
    let class = create_class(&app, 600).await;
    app.own_registry("reg-bulk").await;
    let mut csv = String::from("class_id,registry,serial,name\n");
    let mut bad = Vec::new();
    for n in 1..=1000 {
        let row = match n % 100 {
            7 => {
                bad.push(n);
                format!("{class},reg-bulk,SN/{n},Pole {n}\n")
            }
            _ => format!("{class},reg-bulk,SN-{n},Pole {n}\n"),
        };
        csv.push_str(&row);
    }
    let response = app
        .request(Method::POST, "/devices/bulk")
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["registered"], 990);
    assert_eq!(report["failed"], 10);
    let failed: Vec<u64> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "failed")
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    assert_eq!(failed, bad);
    assert_eq!(app.db.count("SELECT count(*) FROM devices").await, 990);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_reports_mqtt_down_when_connected_but_no_message_flows() {
    let broker = Broker::start_tls();
    let (port, ca) = (broker.port, broker.ca_file());
    let app = TestApp::spawn_with(TestDb::migrated().await, move |s| {
        s.mqtt_broker_host = "127.0.0.1".into();
        s.mqtt_broker_port = port;
        s.mqtt_use_tls = true;
        s.mqtt_ca_file = Some(ca);
        s.mqtt_max_silence_secs = 1;
    })
    .await;
    let mqtt = || async {
        let body: Value = app
            .http
            .get(format!("{}/health/ready", app.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["checks"]["mqtt"].clone()
    };
    // Connected and never had a message (a new deployment): ready.
    wait::until("mqtt up", Duration::from_secs(20), || async {
        (mqtt().await["status"] == "up").then_some(())
    })
    .await;
    let class = create_class(&app, 600).await;
    register(&app, &class, "reg-ready", "SN-1").await;
    let lamp = light(&app, "reg-ready", "SN-1", false).await;
    lamp.heartbeat(1).await.unwrap();
    wait::until("silence noticed", Duration::from_secs(30), || async {
        let check = mqtt().await;
        (check["status"] == "down"
            && check["error"]
                .as_str()
                .unwrap_or("")
                .contains("no MQTT message"))
        .then_some(())
    })
    .await;
    // Messages flow again (a heartbeat per look): ready again within a report refresh.
    wait::until(
        "mqtt up again while messages flow",
        Duration::from_secs(30),
        || async {
            lamp.heartbeat(2).await.unwrap();
            (mqtt().await["status"] == "up").then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_restart_no_device_stays_falsely_online() {
    let broker = Broker::start_tls();
    let mut app = app_on(&broker).await;
    let class = create_class(&app, 2).await;
    let id = register(&app, &class, "reg-restart", "SN-1").await;
    let lamp = light(&app, "reg-restart", "SN-1", false).await;
    lamp.heartbeat(1).await.unwrap();
    wait::until("online", Duration::from_secs(20), || async {
        (device(&app, &id).await["online"] == true).then_some(())
    })
    .await;
    // The gateway (and its supervisor, the only one) is down while the device falls silent
    // past its 2 s timeout: nothing runs that could notice. Time is an input: the
    // supervisor's clock moves on instead of the test waiting.
    app.kill_gateway();
    drop(lamp);
    app.device_clock.advance(Duration::from_millis(2_500));
    app.start_gateway().await;
    wait::until("reconciled: offline", Duration::from_secs(20), || async {
        (device(&app, &id).await["online"] == false).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beacons_are_their_own_devices_and_an_unregistered_one_goes_to_the_dlq() {
    let broker = Broker::start_tls();
    let app = app_on(&broker).await;
    let class = create_class(&app, 600).await;
    let cabinet = register(&app, &class, "reg-beacon", "CAB-1").await;
    let lamp = register(&app, &class, "reg-beacon", "LAMP-1").await;
    let gateway = light(&app, "reg-beacon", "CAB-1", false).await;
    let now = chrono::Utc::now().timestamp_millis();
    let body = json!({
        "timestamp": now,
        "states": {"lampMonitor001.activePower": 5.0},
        "beacons": [
            {"identification": "LAMP-1", "states": {"lampMonitor001": {"activePower": 7.5}}},
            {"identification": "LAMP-UNKNOWN", "states": {"lampMonitor001.activePower": 9.0}},
        ],
    });
    gateway
        .publish_raw("states", serde_json::to_vec(&body).unwrap())
        .await
        .unwrap();
    wait::until_eq(
        "the cabinet's and the lamp's samples",
        Duration::from_secs(30),
        2,
        || rows(&app),
    )
    .await;
    assert_eq!(
        device(&app, &cabinet).await["latest"]["lampMonitor001.activePower"]["value"],
        5.0
    );
    assert_eq!(
        device(&app, &lamp).await["latest"]["lampMonitor001.activePower"]["value"],
        7.5
    );
    wait::until(
        "the unknown beacon in the DLQ",
        Duration::from_secs(30),
        || async {
            dead_letters(&app)
                .await
                .into_iter()
                .find(|(reason, _, _)| reason.contains("LAMP-UNKNOWN"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_is_changed_decommissioned_and_its_identity_reused() {
    let app = TestApp::spawn().await;
    let class = create_class(&app, 600).await;
    let id = register(&app, &class, "reg-life", "SN-1").await;
    let again = app
        .request(Method::POST, "/devices")
        .json(&json!({"class_id": class, "registry": "reg-life", "serial": "SN-1", "name": "Twin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        409,
        "one live device per Fundamentum identity"
    );

    let patched = app
        .request(Method::PATCH, &format!("/devices/{id}"))
        .json(&json!({"name": "Pole 1 (Rue Principale)", "offline_after_secs": 120}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let d: Value = patched.json().await.unwrap();
    assert_eq!(
        (d["name"].as_str(), d["offline_after_secs"].as_i64()),
        (Some("Pole 1 (Rue Principale)"), Some(120))
    );
    let back: Value = app
        .request(Method::PATCH, &format!("/devices/{id}"))
        .json(&json!({"offline_after_secs": null}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        back["offline_after_secs"], 600,
        "back to the class's timeout"
    );

    let gone = app
        .request(Method::DELETE, &format!("/devices/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    let missing = app
        .request(Method::GET, &format!("/devices/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    register(&app, &class, "reg-life", "SN-1").await;

    // JSON bulk: the good rows in, the bad one reported.
    let response = app
        .request(Method::POST, "/devices/bulk")
        .json(&json!([
            {"class_id": class, "registry": "reg-life", "serial": "SN-2", "name": "Two"},
            {"class_id": class, "registry": "reg-life", "serial": "SN-3"},
            {"class_id": class, "registry": "reg-life", "serial": "SN-4", "name": "Four"},
        ]))
        .send()
        .await
        .unwrap();
    let report: Value = response.json().await.unwrap();
    assert_eq!(
        (report["registered"].as_u64(), report["failed"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(report["rows"][1]["status"], "failed");
    assert!(report["rows"][1]["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("name"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_bridges_in_a_shared_subscription_split_the_load_and_store_each_sample_once() {
    let broker = Broker::start_tls();
    let (port, ca) = (broker.port, broker.ca_file());
    let app = TestApp::spawn_with(TestDb::migrated().await, move |s| {
        s.mqtt_broker_host = "127.0.0.1".into();
        s.mqtt_broker_port = port;
        s.mqtt_use_tls = true;
        s.mqtt_ca_file = Some(ca);
        s.mqtt_share_group = "eriop".into();
    })
    .await;
    let mut second = app.settings.clone();
    second.mqtt_client_id = format!("{}-bridge-2", app.settings.nats_prefix);
    let bridge = eriop_bridge::Bridge::build(&second).await.unwrap();
    let status = bridge.status();
    let _running = tokio::spawn(bridge.run_until(std::future::pending()));
    wait::until(
        "both bridges connected",
        Duration::from_secs(20),
        || async { (app.bridge.is_up() && status.is_up()).then_some(()) },
    )
    .await;

    let class = create_class(&app, 600).await;
    let mut lights = Vec::new();
    for n in 0..4 {
        let serial = format!("SN-{n}");
        register(&app, &class, "reg-share", &serial).await;
        lights.push(light(&app, "reg-share", &serial, false).await);
    }
    let start = chrono::Utc::now().timestamp_millis() - 60_000;
    publish(&lights, start, 0, 500).await;
    wait::until_eq("every sample, once", Duration::from_secs(60), 2_000, || {
        rows(&app)
    })
    .await;
    let (one, two) = (app.bridge.messages(), status.messages());
    assert!(
        one > 0 && two > 0,
        "both bridges took a share: {one} and {two}"
    );
    assert_eq!(one + two, 2_000, "each message went to one bridge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bridge_holds_its_acks_while_nats_and_the_registry_are_down_and_catches_up() {
    let broker = Broker::start_tls();
    let mut nats = eriop_tests::NatsServer::start().await;
    let proxy = eriop_tests::TcpProxy::start("127.0.0.1:5432").await;
    let db = TestDb::migrated().await;
    let (db_url, nats_url, port, ca) = (
        db.url_via(proxy.port),
        nats.url(),
        broker.port,
        broker.ca_file(),
    );
    let app = TestApp::spawn_with(db, move |s| {
        s.database_url = db_url.into();
        s.nats_url = nats_url.into();
        s.mqtt_broker_host = "127.0.0.1".into();
        s.mqtt_broker_port = port;
        s.mqtt_use_tls = true;
        s.mqtt_ca_file = Some(ca);
    })
    .await;
    let class = create_class(&app, 600).await;
    let mut lights = Vec::new();
    for n in 0..3 {
        let serial = format!("SN-{n}");
        register(&app, &class, "reg-outage", &serial).await;
        lights.push(light(&app, "reg-outage", &serial, false).await);
    }
    let start = chrono::Utc::now().timestamp_millis() - 60_000;
    // Two devices speak before the outage (the bridge knows them), the third only during it.
    publish(&lights[..2], start, 0, 100).await;
    wait::until_eq("the first samples", Duration::from_secs(30), 200, || {
        rows(&app)
    })
    .await;
    let handed_over = app.bridge.messages();

    proxy.cut();
    nats.stop();
    publish(&lights, start, 100, 300).await;
    wait::until("the bridge to retry", Duration::from_secs(30), || async {
        (app.bridge.retries() >= 2).then_some(())
    })
    .await;
    assert_eq!(
        app.bridge.messages(),
        handed_over,
        "nothing handed over, nothing acked"
    );

    nats.resume().await;
    proxy.restore();
    wait::until_eq(
        "every sample, once",
        Duration::from_secs(90),
        200 + 3 * 200,
        || rows(&app),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_telemetry_projector_catches_up_soon_after_its_database_returns() {
    let broker = Broker::start_tls();
    let proxy = eriop_tests::TcpProxy::start("127.0.0.1:5432").await;
    let db = TestDb::migrated().await;
    let (db_url, port, ca) = (db.url_via(proxy.port), broker.port, broker.ca_file());
    let app = TestApp::spawn_with(db, move |s| {
        s.database_url = db_url.into();
        s.mqtt_broker_host = "127.0.0.1".into();
        s.mqtt_broker_port = port;
        s.mqtt_use_tls = true;
        s.mqtt_ca_file = Some(ca);
    })
    .await;
    let class = create_class(&app, 600).await;
    register(&app, &class, "reg-db", "SN-1").await;
    let lights = vec![light(&app, "reg-db", "SN-1", false).await];
    let start = chrono::Utc::now().timestamp_millis() - 60_000;
    publish(&lights, start, 0, 50).await;
    wait::until_eq("the first samples", Duration::from_secs(30), 50, || {
        rows(&app)
    })
    .await;
    let js = app.jetstream().await;
    let telemetry = app.topology.stream_name(eriop_nats::Stream::Telemetry);
    let stored = || {
        let (js, name) = (js.clone(), telemetry.clone());
        async move {
            js.get_stream(&name)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .last_sequence
        }
    };
    let before = stored().await;

    proxy.cut();
    publish(&lights, start, 50, 100).await;
    // The bridge knows the device (cached): the samples reach JetStream; the projector
    // cannot write them.
    wait::until(
        "the samples on TELEMETRY",
        Duration::from_secs(30),
        || async { (stored().await > before).then_some(()) },
    )
    .await;
    // The projector failed to write them, and asked for them again (a NAK with a short
    // delay, not JetStream's 30 s ack wait).
    wait::until(
        "a redelivery to the projector",
        Duration::from_secs(15),
        || {
            let (js, name) = (js.clone(), telemetry.clone());
            async move {
                let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
                    .get_stream(&name)
                    .await
                    .unwrap()
                    .get_consumer("telemetry")
                    .await
                    .unwrap();
                (consumer.info().await.unwrap().num_redelivered > 0).then_some(())
            }
        },
    )
    .await;
    proxy.restore();
    // The redelivery above is the projector's own NAK (not JetStream's 30 s ack wait); once
    // the database is back it catches up without a manual step. Bounded generously: under
    // the instrumented, fully parallel CI run its backoff (up to 5 s) and reconnection took
    // over 20 s once.
    wait::until_eq("every sample, once", Duration::from_secs(45), 100, || {
        rows(&app)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bridge_presents_its_client_certificate_when_the_broker_asks_for_one() {
    let broker = Broker::start_tls_requiring_client_certificates();
    let (cert, key) = broker.client_certificate("eriop-bridge");
    let (port, ca) = (broker.port, broker.ca_file());
    let app = TestApp::spawn_with(TestDb::migrated().await, move |s| {
        s.mqtt_broker_host = "127.0.0.1".into();
        s.mqtt_broker_port = port;
        s.mqtt_use_tls = true;
        s.mqtt_ca_file = Some(ca);
        s.mqtt_client_cert_file = Some(cert);
        s.mqtt_client_key_file = Some(key);
    })
    .await;
    wait::until(
        "connected with its certificate",
        Duration::from_secs(20),
        || async { app.bridge.is_up().then_some(()) },
    )
    .await;

    // Without one, the broker refuses it.
    let mut without = app.settings.clone();
    without.mqtt_client_id = format!("{}-no-cert", app.settings.nats_prefix);
    without.mqtt_client_cert_file = None;
    without.mqtt_client_key_file = None;
    let bridge = eriop_bridge::Bridge::build(&without).await.unwrap();
    let status = bridge.status();
    let _running = tokio::spawn(bridge.run_until(std::future::pending()));
    wait::until(
        "three refused attempts",
        Duration::from_secs(20),
        || async { (status.connection_attempts().len() >= 3).then_some(()) },
    )
    .await;
    assert!(!status.is_up());
}

/// The device list, page by page: the agency's live devices in name order (then id), each
/// page a slice of that order, decommissioned devices left out, the `online` filter applied
/// before the page is cut (the page is read first and joined after, issue 13).
#[tokio::test]
async fn the_device_list_pages_through_live_devices_in_name_order() {
    device_list_pages(TestApp::spawn().await).await;
}

/// The same reads through sqlx, a round trip a statement: where reads are not pipelined
/// (`ERIOP_PIPELINED_READS=false`, or a database URL that requires TLS).
#[tokio::test]
async fn the_device_list_pages_the_same_with_reads_through_sqlx() {
    let app = TestApp::spawn_with(eriop_tests::TestDb::migrated().await, |s| {
        s.pipelined_reads = false;
    })
    .await;
    device_list_pages(app).await;
}

async fn device_list_pages(app: TestApp) {
    let class = create_class(&app, 300).await;
    let mut ids = std::collections::HashMap::new();
    for serial in ["C", "A", "B", "D", "E"] {
        ids.insert(serial, register(&app, &class, "list-1", serial).await);
    }
    // Two devices of one name: the id decides between them.
    let renamed = app
        .request(Method::PATCH, &format!("/devices/{}", ids["E"]))
        .json(&json!({ "name": "Pole A" }))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);
    let retired = app
        .request(Method::DELETE, &format!("/devices/{}", ids["D"]))
        .send()
        .await
        .unwrap();
    assert!(retired.status().is_success(), "{}", retired.status());

    let mut expected: Vec<(String, String)> = ["A", "E", "B", "C"]
        .iter()
        .map(|s| {
            let name = if *s == "E" {
                "Pole A".to_owned()
            } else {
                format!("Pole {s}")
            };
            (name, ids[s].clone())
        })
        .collect();
    expected.sort();
    let list = |query: String| {
        let app = &app;
        async move {
            let response = app
                .request(Method::GET, &format!("/devices?{query}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["items"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let mut paged = Vec::new();
    for offset in [0, 2, 4] {
        let page = list(format!("limit=2&offset={offset}")).await;
        assert!(page.len() <= 2);
        for item in &page {
            assert_eq!(item["offline_after_secs"], 300, "{item}");
            assert_eq!(item["class_id"], class.as_str());
            paged.push((
                item["name"].as_str().unwrap().to_owned(),
                item["id"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert_eq!(paged, expected);
    // A list shows each device as its own view does, less its latest values and TALQ object
    // (the list reads its own columns: issue 13).
    for item in list("limit=10".into()).await {
        let path = format!("/devices/{}", item["id"].as_str().unwrap());
        let mut view: Value = app.get_as(&app.token, &path).await.json().await.unwrap();
        let fields = view.as_object_mut().unwrap();
        assert!(fields.remove("latest").is_some() && fields.remove("talq").is_some());
        assert_eq!(view, item);
    }
    assert_eq!(list("online=false".into()).await.len(), 4);
    assert!(list("online=true&limit=1".into()).await.is_empty());
    // Another agency sees none of them, neither listed nor by id.
    let (_, other) = app.admin_of_new_agency("Ville L", "l@l.example").await;
    let theirs: Value = app.get_as(&other, "/devices").await.json().await.unwrap();
    assert_eq!(theirs["items"], json!([]), "{theirs}");
    let path = format!("/devices/{}", ids["A"]);
    assert_eq!(app.get_as(&other, &path).await.status(), 404);
    assert_eq!(app.get_as(&app.token, &path).await.status(), 200);
}

/// Hostile attribute names in a series (read pipelined, issue 13): each answered as the
/// client's mistake or as an empty series, never a server error.
#[tokio::test]
async fn hostile_attributes_in_a_series_are_refused_or_empty_never_a_server_error() {
    let app = TestApp::spawn().await;
    let class = create_class(&app, 600).await;
    let id = register(&app, &class, "reg-hostile", "SN-1").await;
    let path = app.api(&format!("/devices/{id}/telemetry"));
    let series = |attribute: String| {
        let (app, path) = (&app, &path);
        async move {
            app.http
                .get(path)
                .query(&[
                    ("attribute", attribute.as_str()),
                    ("from", "2026-01-01T00:00:00Z"),
                    ("to", "2026-01-02T00:00:00Z"),
                    ("bucket", "5m"),
                ])
                .bearer_auth(&app.token)
                .send()
                .await
                .unwrap()
        }
    };
    let nul = series("lampMonitor001.active\0Power".into()).await;
    assert_eq!(nul.status(), 422);
    let problem: Value = nul.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("NUL"),
        "{problem}"
    );
    for attribute in [
        "lampMonitor001.active\r\nPower".to_owned(),
        format!("lampMonitor001.{}", "x".repeat(8 * 1024)),
        "'; DROP TABLE telemetry; --".to_owned(),
    ] {
        let answer = series(attribute).await;
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["points"], json!([]), "{body}");
    }
    let invalid_utf8 = app
        .http
        .get(format!(
            "{path}?attribute=%FF%FE&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&bucket=5m"
        ))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    // A query string is decoded as forms are (invalid UTF-8 becomes U+FFFD): a name no
    // device has, so an empty series.
    assert_eq!(invalid_utf8.status(), 200);
    let body: Value = invalid_utf8.json().await.unwrap();
    assert_eq!(body["points"], json!([]), "{body}");
    // The quote went in as a value: the table is still there, and empty.
    assert_eq!(app.db.count("SELECT count(*) FROM telemetry").await, 0);
}
