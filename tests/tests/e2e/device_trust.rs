//! Device plane trust, tried as an attacker would: hostile bytes from a registered device,
//! floods, clocks in the future, registries of other agencies, a database made anew under
//! the same NATS, and devices posing as each other on the shipped broker configuration.

use std::time::Duration;

use async_nats::HeaderMap;
use eriop_nats::{dlq, Settings, Stream};
use eriop_tests::mosquitto::Broker;
use eriop_tests::{wait, TestApp, TestDb};
use reqwest::Method;
use serde_json::{json, Value};

use crate::devices::{create_class, light, register, rows};

pub(crate) async fn app_with(broker: &Broker, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let (port, ca) = (broker.port, broker.ca_file());
    TestApp::spawn_with(TestDb::migrated().await, move |s| {
        s.mqtt_broker_host = "127.0.0.1".into();
        s.mqtt_broker_port = port;
        s.mqtt_use_tls = true;
        s.mqtt_ca_file = Some(ca);
        adjust(s);
    })
    .await
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

async fn await_dead_letters(app: &TestApp, n: usize) -> Vec<(HeaderMap, Vec<u8>)> {
    wait::until("dead letters", Duration::from_secs(30), || async {
        let letters = app.dead_letters().await;
        (letters.len() >= n).then_some(letters)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cr_lf_from_a_registered_device_is_dead_lettered_and_the_next_message_is_stored() {
    let broker = Broker::start_tls();
    let app = app_with(&broker, |_| {}).await;
    let class = create_class(&app, 600).await;
    register(&app, &class, "reg-crlf", "GW-1").await;
    let gateway = light(&app, "reg-crlf", "GW-1", false).await;
    wait::until("the bridge to connect", Duration::from_secs(20), || async {
        app.bridge.is_up().then_some(())
    })
    .await;
    let attempts = app.bridge.connection_attempts().len();
    let now = chrono::Utc::now().timestamp_millis();

    // The issue's reproduction as sent (JSON escapes become real CR and LF once decoded), the
    // same beacon with a current timestamp, and a command reply whose status holds CR/LF.
    gateway
        .publish_raw(
            "states",
            br#"{"timestamp":1,"states":{},"beacons":[{"identification":"a\r\nb","states":{"x":1}}]}"#.to_vec(),
        )
        .await
        .unwrap();
    gateway
        .publish_raw(
            "states",
            format!(r#"{{"timestamp":{now},"states":{{}},"beacons":[{{"identification":"a\r\nb","states":{{"x":1}}}}]}}"#)
                .into_bytes(),
        )
        .await
        .unwrap();
    gateway
        .publish_raw("commands/7", br#"{"status":"succ\r\ness"}"#.to_vec())
        .await
        .unwrap();
    // Then a good message.
    gateway
        .states(now, json!({ "lampMonitor001.activePower": 42.0 }))
        .await
        .unwrap();
    wait::until("the good sample", Duration::from_secs(30), || async {
        (rows(&app).await == 1).then_some(())
    })
    .await;

    let letters = await_dead_letters(&app, 3).await;
    let reasons: Vec<String> = letters
        .iter()
        .map(|(h, _)| header(h, dlq::REASON))
        .collect();
    assert_eq!(letters.len(), 3, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.starts_with("timestamp")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("beacon serial") && r.contains(r#""a\r\nb""#)),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("command reply status") && r.contains(r#""succ\r\ness""#)),
        "{reasons:?}"
    );
    for (headers, _) in &letters {
        assert_eq!(
            header(headers, dlq::ORIGIN),
            "registries/reg-crlf/devices/GW-1/states".replace(
                "states",
                if header(headers, dlq::REASON).contains("reply") {
                    "commands/7"
                } else {
                    "states"
                }
            )
        );
        assert_eq!(header(headers, dlq::SHA256).len(), 64);
    }
    // The bridge never went down: one connection, still up, every message acked.
    assert_eq!(app.bridge.connection_attempts().len(), attempts);
    assert!(app.bridge.is_up());
    assert_eq!(app.bridge.dead_lettered(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floods_future_clocks_and_huge_payloads_go_to_the_dlq_and_nothing_is_lost() {
    let broker = Broker::start_tls();
    let app = app_with(&broker, |s| {
        s.bridge_device_messages_per_second = 1;
        s.bridge_device_burst = 5;
        s.mqtt_max_payload_bytes = 100_000;
    })
    .await;
    let class = create_class(&app, 600).await;
    register(&app, &class, "reg-flood", "FLOOD").await;
    register(&app, &class, "reg-flood", "CLOCK").await;
    let flood = light(&app, "reg-flood", "FLOOD", false).await;
    let clock = light(&app, "reg-flood", "CLOCK", false).await;
    let now = chrono::Utc::now().timestamp_millis();

    // 30 messages at once from one device: the burst passes, the rest is over its rate.
    for i in 0..30 {
        flood
            .states(
                now - 1000 + i,
                json!({ "lampMonitor001.activePower": i as f64 }),
            )
            .await
            .unwrap();
    }
    // Another device: a clock ten minutes ahead, then 300 kB, then a good sample.
    clock
        .states(now + 600_000, json!({ "lampMonitor001.activePower": 1.0 }))
        .await
        .unwrap();
    let huge = vec![b'{'; 300_000];
    clock.publish_raw("states", huge.clone()).await.unwrap();
    clock
        .states(now, json!({ "lampMonitor001.activePower": 2.0 }))
        .await
        .unwrap();

    // Sent = stored + dead-lettered, for every message.
    let (stored, letters) = wait::until(
        "every message accounted for",
        Duration::from_secs(30),
        || async {
            let stored = rows(&app).await;
            let letters = app.dead_letters().await;
            (stored + letters.len() as i64 == 33).then_some((stored, letters))
        },
    )
    .await;
    let reasons: Vec<String> = letters
        .iter()
        .map(|(h, _)| header(h, dlq::REASON))
        .collect();
    let rated = reasons.iter().filter(|r| r.starts_with("rate")).count();
    assert!(rated >= 20, "{rated} over the rate: {reasons:?}");
    assert!(
        stored >= 6,
        "the burst and the other device's good sample: {stored}"
    );
    assert!(reasons.iter().any(|r| r.starts_with("timestamp")));
    let (headers, body) = letters
        .iter()
        .find(|(h, _)| header(h, dlq::REASON).starts_with("oversized"))
        .expect("the oversized message");
    assert_eq!(
        body.len(),
        dlq::MAX_ORIGINAL,
        "the DLQ keeps the first 64 KiB"
    );
    assert_eq!(header(headers, dlq::LENGTH), "300000");
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(&huge)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(header(headers, dlq::SHA256), digest);
}

#[tokio::test]
async fn every_stream_has_a_byte_limit_and_readiness_says_when_events_is_full() {
    let app = TestApp::spawn_with(TestDb::migrated().await, |s| {
        s.stream_events_max_bytes = 64 * 1024;
        s.read_your_writes_timeout_ms = 100;
    })
    .await;
    let js = app.jetstream().await;
    for which in Stream::ALL {
        let mut stream = js
            .get_stream(app.topology.stream_name(which))
            .await
            .unwrap();
        let config = stream.info().await.unwrap().config.clone();
        assert_eq!(
            config.max_bytes,
            app.settings.stream_limits().max_bytes(which)
        );
        let expected = match which {
            Stream::Events | Stream::Commands => async_nats::jetstream::stream::DiscardPolicy::New,
            _ => async_nats::jetstream::stream::DiscardPolicy::Old,
        };
        assert_eq!(config.discard, expected, "{which:?}");
    }
    // Commands keep being accepted (the event store has them); EVENTS fills up, and
    // readiness says which stream and what to raise before it refuses.
    let mut created = 0;
    let body = loop {
        app.create_agency(&format!("Agency {created}")).await;
        created += 1;
        let ready: Value = app
            .http
            .get(format!("{}/health/ready", app.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["checks"]["nats"]["status"] != "up" {
            break ready;
        }
        assert!(created < 400, "EVENTS never reported full");
    };
    let error = body["checks"]["nats"]["error"].as_str().unwrap();
    assert!(error.contains("EVENTS is full"), "{error}");
    assert!(error.contains("ERIOP_STREAM_EVENTS_MAX_BYTES"), "{error}");
}

#[tokio::test]
async fn registries_belong_to_agencies_and_another_agencys_registry_tells_nothing() {
    let app = TestApp::spawn().await;
    let (agency_b, token_b) = app.admin_of_new_agency("Ville B", "admin@b.example").await;
    app.own_registry("reg-a").await;
    let class = create_class(&app, 600).await;
    let a_device = register(&app, &class, "reg-a", "SN-1").await;

    // Agency B: under A's registry, under nobody's, and A's very serial: one same answer.
    let class_b: Value = app
        .http
        .post(app.api("/device-classes"))
        .bearer_auth(&token_b)
        .json(&json!({"name": "B light", "functions": [{"id": "lampMonitor001", "type": "LampMonitorFunction"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let try_b = |registry: &'static str, serial: &'static str| {
        let (app, token, class) = (&app, token_b.clone(), class_b["id"].clone());
        async move {
            let r = app
                .http
                .post(app.api("/devices"))
                .bearer_auth(token)
                .json(&json!({"class_id": class, "registry": registry, "serial": serial, "name": "Pole"}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status_other, other) = try_b("reg-a", "SN-1").await;
    let (status_fresh, fresh) = try_b("reg-a", "SN-NEW").await;
    let (status_none, none) = try_b("reg-nobody", "SN-1").await;
    assert_eq!((status_other, status_fresh, status_none), (422, 422, 422));
    assert_eq!(other["errors"], none["errors"]);
    assert_eq!(other["errors"], fresh["errors"]);
    assert_eq!(other["detail"], none["detail"]);

    // The platform administrator: A's registry cannot go to B, nor be removed under a live
    // device; B gets its own (201, then 200 on a retry, recording nothing more).
    let conflict = app
        .request(Method::POST, "/registries")
        .json(&json!({"registry": "reg-a", "agency_id": agency_b}))
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), 409);
    let busy = app
        .request(Method::DELETE, "/registries/reg-a")
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 409);
    let assign_b = || async {
        app.request(Method::POST, "/registries")
            .json(&json!({"registry": "reg-b", "agency_id": agency_b}))
            .send()
            .await
            .unwrap()
    };
    let first = assign_b().await;
    assert_eq!(first.status(), 201);
    assert!(first.headers()["location"]
        .to_str()
        .unwrap()
        .ends_with("/registries/reg-b"));
    assert_eq!(assign_b().await.status(), 200);
    let (status, _) = try_b("reg-b", "SN-1").await;
    assert_eq!(status, 201, "B registers under its own registry");
    let listed: Value = app
        .request(Method::GET, &format!("/registries?agency_id={agency_b}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["registry"], "reg-b");
    // An agency administrator cannot assign registries.
    let refused = app
        .http
        .post(app.api("/registries"))
        .bearer_auth(&token_b)
        .json(&json!({"registry": "reg-c", "agency_id": agency_b}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // Once A's device is decommissioned its registry can go; each change is an event.
    let gone = app
        .request(Method::DELETE, &format!("/devices/{a_device}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    let removed = app
        .request(Method::DELETE, "/registries/reg-a")
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let after = app
        .request(Method::GET, "/registries/reg-a")
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 404);
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'registry' ORDER BY recorded_at",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        events,
        ["RegistryAssigned", "RegistryAssigned", "RegistryUnassigned"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_reaches_its_device_after_the_database_is_made_anew_on_the_same_nats() {
    let broker = Broker::start_tls();
    let first = app_with(&broker, |_| {}).await;
    let (prefix, redis_prefix, client_id) = (
        first.settings.nats_prefix.clone(),
        first.settings.redis_key_prefix.clone(),
        first.settings.mqtt_client_id.clone(),
    );
    let mut lamp = light(&first, "reg-anew", "SN-1", false).await;
    let send = |app: &TestApp| {
        let app_base = app.api("");
        let token = app.token.clone();
        let http = app.http.clone();
        async move {
            let class = http
                .post(format!("{app_base}/device-classes"))
                .bearer_auth(&token)
                .json(&json!({"name": "L", "functions": [{"id": "lampActuator001", "type": "LampActuatorFunction"}]}))
                .send().await.unwrap().json::<Value>().await.unwrap();
            let device = http
                .post(format!("{app_base}/devices"))
                .bearer_auth(&token)
                .json(&json!({"class_id": class["id"], "registry": "reg-anew", "serial": "SN-1", "name": "Pole"}))
                .send().await.unwrap().json::<Value>().await.unwrap();
            let command = http
                .post(format!(
                    "{app_base}/devices/{}/commands",
                    device["id"].as_str().unwrap()
                ))
                .bearer_auth(&token)
                .json(&json!({"type": "override", "level": 30}))
                .send()
                .await
                .unwrap();
            assert_eq!(command.status(), 202);
            command.json::<Value>().await.unwrap()["id"]
                .as_i64()
                .unwrap()
        }
    };
    first.own_registry("reg-anew").await;
    let one = send(&first).await;
    let received = tokio::time::timeout(Duration::from_secs(30), lamp.next_command())
        .await
        .expect("the first command reaches the device")
        .unwrap();
    assert_eq!(received.body[0]["device_command_id"], one);
    // The streams stay: the point is the same NATS, with its de-duplication memory.
    let mut first = first;
    first.keep_streams = true;
    drop(first);

    // The same NATS streams, the same bridge session, a database made anew: command numbers
    // start at 1 again.
    let second = app_with(&broker, move |s| {
        s.nats_prefix = prefix;
        s.redis_key_prefix = redis_prefix;
        s.mqtt_client_id = client_id;
    })
    .await;
    second.own_registry("reg-anew").await;
    let again = send(&second).await;
    assert_eq!(
        again, one,
        "the new database numbers its commands from the start"
    );
    let received = tokio::time::timeout(Duration::from_secs(30), lamp.next_command())
        .await
        .expect("the new database's first command reaches the device too")
        .unwrap();
    assert_eq!(received.body[0]["device_command_id"], again);
    assert_eq!(
        received.body[0]["parameters"]["targetCommand"]["state"]["value"],
        30
    );
}

/// A raw MQTT v5 client of the shipped broker, logged in as `user`: its received publishes
/// come out of the channel; the task counts disconnections.
struct Client {
    client: rumqttc::v5::AsyncClient,
    received: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    drops: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn client(broker: &Broker, user: &str, client_id: &str) -> Client {
    eriop_tests::init();
    use rumqttc::v5::{Event, MqttOptions};
    use rumqttc::{TlsConfiguration, Transport};
    let mut options = MqttOptions::new(client_id, "127.0.0.1", broker.port);
    options.set_credentials(user, format!("{user}-password"));
    options.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: std::fs::read(broker.ca_file()).unwrap(),
        alpn: None,
        client_auth: None,
    }));
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 100);
    let (tx, received) = tokio::sync::mpsc::unbounded_channel();
    let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let counter = drops.clone();
    let task = tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_))) => {
                    if let Some(t) = ready_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(p))) => {
                    let _ = tx.send((
                        String::from_utf8_lossy(&p.topic).into_owned(),
                        p.payload.to_vec(),
                    ));
                }
                Ok(_) => {}
                Err(_) => {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .expect("the broker accepts the account")
        .unwrap();
    Client {
        client,
        received,
        drops,
        task,
    }
}

async fn next(c: &mut Client) -> (String, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(10), c.received.recv())
        .await
        .expect("a message")
        .unwrap()
}

/// The bridge's next message from a device (it also sees its own commands go by).
async fn next_from_device(c: &mut Client) -> (String, Vec<u8>) {
    loop {
        let (topic, body) = next(c).await;
        if !topic.ends_with("/commands") {
            return (topic, body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shipped_broker_acl_keeps_devices_to_their_own_topics_and_the_bridge_session_safe() {
    use rumqttc::v5::mqttbytes::QoS;
    let (a, b) = ("registries/R1/devices/A", "registries/R1/devices/B");
    let accounts = [
        ("eriop-bridge", "eriop-bridge-password".to_owned()),
        (a, format!("{a}-password")),
        (b, format!("{b}-password")),
    ];
    let accounts: Vec<(&str, &str)> = accounts.iter().map(|(u, p)| (*u, p.as_str())).collect();
    let broker = Broker::start_shipped(&accounts);
    let mut bridge = client(&broker, "eriop-bridge", "eriop-bridge").await;
    bridge
        .client
        .subscribe("$share/eriop/registries/+/devices/+/+", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut device_a = client(&broker, a, "any-id-a").await;
    let mut device_b = client(&broker, b, "eriop-bridge").await; // tries the bridge's client id
    device_b
        .client
        .subscribe("#", QoS::AtLeastOnce)
        .await
        .unwrap();
    device_b
        .client
        .subscribe(format!("{b}/commands"), QoS::AtLeastOnce)
        .await
        .unwrap();
    device_a
        .client
        .subscribe(format!("{b}/commands"), QoS::AtLeastOnce)
        .await
        .unwrap();

    // A publishes as B (dropped), then as itself (delivered): the broker keeps one client's
    // order, so had the spoof passed, the bridge would have seen it first.
    let publish = |c: &Client, topic: String, body: &'static str| {
        let client = c.client.clone();
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, body.as_bytes().to_vec())
                .await
                .unwrap()
        }
    };
    publish(&device_a, format!("{b}/states"), "spoof").await;
    publish(&device_a, format!("{a}/states"), "own").await;
    let (topic, body) = next_from_device(&mut bridge).await;
    assert_eq!(
        (topic.as_str(), body.as_slice()),
        (format!("{a}/states").as_str(), b"own".as_slice())
    );

    // The bridge commands B; B's `#` saw nothing of A before that, and A cannot read B's
    // commands.
    publish(&bridge, format!("{b}/commands"), "cmd-b").await;
    let (topic, body) = next(&mut device_b).await;
    assert_eq!(
        topic,
        format!("{b}/commands"),
        "B's first message is its own command"
    );
    assert_eq!(body, b"cmd-b");
    publish(&device_b, format!("{b}/states"), "b-own").await;
    let (topic, _) = next_from_device(&mut bridge).await;
    assert_eq!(topic, format!("{b}/states"));
    assert!(device_a.received.try_recv().is_err(), "A read B's command");
    // B asked for the bridge's client id and got its own: the bridge was never cut off.
    assert_eq!(bridge.drops.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_panic_in_any_task_ends_the_process_with_an_error_line() {
    let output = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_eriop-panic-probe")).output(),
    )
    .await
    .expect("the process ends by itself, without its 20 s wait")
    .unwrap();
    assert_eq!(output.status.code(), Some(101));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|l: &Value| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("a task panicked"))
        })
        .unwrap_or_else(|| panic!("an error line: {stdout}"));
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["program"], "eriop-panic-probe");
    assert!(!stdout.contains("still running"));
}

/// Hostile values on `/registries`: control characters, a huge name, a path level that is
/// not one, an agency that does not exist: each a clear 4xx, nothing recorded.
#[tokio::test]
async fn hostile_registry_names_and_unknown_agencies_are_refused_cleanly() {
    let app = TestApp::spawn().await;
    let long = "r".repeat(100_000);
    for name in ["a\r\nb", "a\u{0}b", "with space", "a/b", "+", long.as_str()] {
        let r = app
            .request(Method::POST, "/registries")
            .json(&json!({"registry": name, "agency_id": app.admin_agency}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(matches!(status, 413 | 422), "{name:.20?}: {status}");
    }
    let unknown = app
        .request(Method::POST, "/registries")
        .json(&json!({"registry": "reg-x", "agency_id": uuid::Uuid::now_v7()}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 422);
    for path in [
        "/registries/a%0D%0Ab",
        "/registries/a%00b",
        "/registries/%FF%FE",
    ] {
        let r = app.request(Method::GET, path).send().await.unwrap();
        let status = r.status().as_u16();
        assert!(matches!(status, 400 | 422), "{path}: {status}");
        let problem: Value = r.json().await.unwrap();
        assert!(problem["detail"].is_string());
    }
    let recorded = app
        .db
        .count("SELECT count(*) FROM events WHERE aggregate_type = 'registry'")
        .await;
    assert_eq!(recorded, 0);
}
