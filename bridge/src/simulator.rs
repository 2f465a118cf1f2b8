//! Virtual street lights speaking Fundamentum's MQTT (the `eriop-simulate` command, and the
//! device side of the end-to-end tests). Each light publishes protobuf v1 heartbeats and
//! JSON states as an SDK 0.16 device does, and answers the `commands` it receives with
//! `ongoing` then `success` on `commands/{id}`.
//!
//! Built on rumqttc directly rather than Dimonoff's `fundamentum-sdk-mqtt`: that SDK always
//! connects to port 8883, where tests run one private broker each on a free port. The wire
//! format is the SDK's own (its protobuf bindings, `fundamentum`).

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::fundamentum;

/// A virtual light's identity at Fundamentum.
#[derive(Debug, Clone)]
pub struct LightId {
    pub registry: String,
    pub serial: String,
}

impl LightId {
    pub fn topic(&self, kind: &str) -> String {
        format!(
            "registries/{}/devices/{}/{kind}",
            self.registry, self.serial
        )
    }
}

/// A command as the device received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub topic: String,
    pub body: Value,
}

pub struct VirtualLight {
    pub id: LightId,
    pub client: AsyncClient,
    commands: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl VirtualLight {
    /// Connects (the options carry the broker, TLS and credentials) and subscribes to the
    /// light's `commands` topic. `answer`: reply `ongoing` then `success` to each command.
    pub async fn connect(id: LightId, mut options: MqttOptions, answer: bool) -> Self {
        options.set_keep_alive(Duration::from_secs(30));
        let (client, eventloop) = AsyncClient::new(options, 1_000);
        let (tx, commands) = mpsc::unbounded_channel();
        let (subscribed, mut ready) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(drive(
            eventloop,
            client.clone(),
            id.clone(),
            tx,
            answer,
            subscribed,
        ));
        // Ready when the broker confirmed the subscription to its commands (or after 10 s).
        let _ = tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|s| *s)).await;
        Self {
            id,
            client,
            commands,
            task,
        }
    }

    /// A heartbeat, protobuf v1 (MQTT user property `v=1`).
    pub async fn heartbeat(&self, uptime_secs: u32) -> Result<(), rumqttc::v5::ClientError> {
        let properties = PublishProperties {
            user_properties: vec![("v".into(), "1".into())],
            ..Default::default()
        };
        self.client
            .publish_with_properties(
                self.id.topic("heartbeat"),
                QoS::AtLeastOnce,
                false,
                fundamentum::encode_heartbeat_v1(uptime_secs, &[]),
                properties,
            )
            .await
    }

    /// A `states` message at `timestamp_ms`.
    pub async fn states(
        &self,
        timestamp_ms: i64,
        states: Value,
    ) -> Result<(), rumqttc::v5::ClientError> {
        let body = json!({ "timestamp": timestamp_ms, "states": states });
        self.publish_raw("states", serde_json::to_vec(&body).unwrap_or_default())
            .await
    }

    /// Any bytes on `registries/{r}/devices/{s}/{kind}`.
    pub async fn publish_raw(
        &self,
        kind: &str,
        payload: Vec<u8>,
    ) -> Result<(), rumqttc::v5::ClientError> {
        self.client
            .publish(self.id.topic(kind), QoS::AtLeastOnce, false, payload)
            .await
    }

    /// The next command the light received.
    pub async fn next_command(&mut self) -> Option<Received> {
        self.commands.recv().await
    }
}

impl Drop for VirtualLight {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    id: LightId,
    commands: mpsc::UnboundedSender<Received>,
    answer: bool,
    subscribed: tokio::sync::watch::Sender<bool>,
) {
    loop {
        match eventloop.poll().await {
            // (Re)subscribe on every connection: the broker may not have kept the session.
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client
                    .subscribe(id.topic("commands"), QoS::AtLeastOnce)
                    .await;
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let _ = subscribed.send(true);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                let body: Value = serde_json::from_slice(&publish.payload).unwrap_or(Value::Null);
                if answer {
                    for command in body.as_array().into_iter().flatten() {
                        if let Some(n) = command.get("device_command_id").and_then(Value::as_i64) {
                            for status in ["ongoing", "success"] {
                                let reply = json!({ "status": status, "message": format!("{status} ({})", id.serial) });
                                let _ = client
                                    .publish(
                                        id.topic(&format!("commands/{n}")),
                                        QoS::AtLeastOnce,
                                        false,
                                        serde_json::to_vec(&reply).unwrap_or_default(),
                                    )
                                    .await;
                            }
                        }
                    }
                }
                let _ = commands.send(Received { topic, body });
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The states a street light reports: power, energy, voltage, level.
pub fn light_states(step: u64) -> Value {
    let level = (step * 7) % 101;
    json!({
        "lampMonitor001.activePower": 20.0 + (level as f64) * 0.8,
        "lampMonitor001.activeEnergy": (step as f64) * 0.01,
        "lampMonitor001.supplyVoltage": 239.5,
        "lampActuator001": { "actualLightState": level },
    })
}
