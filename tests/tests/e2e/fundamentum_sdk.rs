//! A real Fundamentum device: Dimonoff's own `fundamentum-sdk-mqtt` (0.16) talks to the bridge
//! through a TLS Mosquitto on 8883 (the only port the SDK connects to), as a device in the
//! field would: RS256 JWT password, protobuf heartbeat, states, and the commands workflow.

use std::time::Duration;

use eriop_tests::mosquitto::Broker;
use eriop_tests::{wait, TestApp, TestDb};
use fundamentum_sdk_mqtt::models::{CommandStatus, DeviceCommandUpdate, Heartbeat, StatesEvent};
use fundamentum_sdk_mqtt::{
    Client, ClientSettings, Device, MQTTOptionsOverrides, Message, Publisher, QoS, SecurityBuilder,
    SecurityFileFetcher,
};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_running_dimonoffs_sdk_on_8883_talks_to_the_bridge() {
    let broker = Broker::start_tls_on(8883);
    let (ca, dir) = (broker.ca_file(), broker.dir.path().to_owned());
    let app = TestApp::spawn_with(TestDb::migrated().await, {
        let ca = ca.clone();
        move |s| {
            s.mqtt_broker_host = "127.0.0.1".into();
            s.mqtt_broker_port = 8883;
            s.mqtt_use_tls = true;
            s.mqtt_ca_file = Some(ca);
        }
    })
    .await;
    // Fundamentum ids are numbers: registry 12 is the topic level "12".
    let class: Value = app
        .request(Method::POST, "/device-classes")
        .json(
            &json!({"name": "Light", "offline_after_secs": 600, "functions": [
            {"id": "lampMonitor001", "type": "LampMonitorFunction"}]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let serial = format!("SDK-{}", app.settings.nats_prefix);
    app.own_registry("12").await;
    let device: Value = app
        .request(Method::POST, "/devices")
        .json(&json!({"class_id": class["id"], "registry": "12", "serial": serial, "name": "SDK light"}))
        .send().await.unwrap().json().await.unwrap();
    let id = device["id"].as_str().unwrap().to_owned();

    // The device's RSA key signs its JWT password (the test broker accepts any password).
    let key = dir.join("device.pem");
    let status = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let security = SecurityBuilder::default()
        .project_id(13)
        .fetcher(SecurityFileFetcher::new_boxed(
            key.to_str().unwrap().to_owned(),
        ))
        .build()
        .unwrap();
    let overrides = MQTTOptionsOverrides {
        transport: Some(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Simple {
            ca: std::fs::read(&ca).unwrap(),
            alpn: None,
            client_auth: None,
        })),
        ..Default::default()
    };
    let settings = ClientSettings::new(
        security,
        Device::new(serial.clone(), 13, 1, 12),
        "127.0.0.1".into(),
        Some(overrides),
    );
    let client = Client::new(settings).await.unwrap();
    client.subscribe_commands(QoS::AtLeastOnce).await.unwrap();
    let mut received = client.get_receiver();
    let runner = client.clone();
    let running = tokio::spawn(async move {
        let _ = runner.run().await;
    });

    client
        .publish(Heartbeat::default().with_uptime(42))
        .await
        .unwrap();
    let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
    client
        .publish(StatesEvent::new(
            json!({"lampMonitor001.activePower": 33.5}),
            now,
            Vec::new(),
        ))
        .await
        .unwrap();
    wait::until(
        "the SDK device online with its uptime and power",
        Duration::from_secs(30),
        || async {
            let d: Value = app
                .request(Method::GET, &format!("/devices/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (d["online"] == true
                && d["uptime_secs"] == 42
                && d["latest"]["lampMonitor001.activePower"]["value"] == 33.5)
                .then_some(())
        },
    )
    .await;

    // A command reaches the SDK as its own Command type; the SDK's status updates come back.
    let command: Value = app
        .request(Method::POST, &format!("/devices/{id}/commands"))
        .json(&json!({"type": "fundamentum", "name": "reboot", "parameters": {"delay_s": 5}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let command_id = command["id"].as_i64().unwrap();
    let commands = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(Message::Commands(commands)) = received.recv().await {
                return commands;
            }
        }
    })
    .await
    .expect("the SDK receives the command");
    let got = &commands[0];
    assert_eq!(i64::try_from(got.device_command_id).unwrap(), command_id);
    for status in [CommandStatus::Ongoing, CommandStatus::Success] {
        client
            .publish(DeviceCommandUpdate::new(
                got.device_command_id,
                status,
                "done by the SDK",
            ))
            .await
            .unwrap();
    }
    wait::until("success in the API", Duration::from_secs(30), || async {
        let c: Value = app
            .request(Method::GET, &format!("/devices/{id}/commands/{command_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (c["status"] == "success" && c["message"] == "done by the SDK").then_some(())
    })
    .await;
    running.abort();
}
