//! From MQTT messages to JetStream, in groups (DESIGN.md rules 5 and 6).
//!
//! Messages are gathered for at most `max_delay` or `max_samples` records, decoded and
//! adapted; each agency's records become one `TELEMETRY` message, each device heard from one
//! `DEVICE` activity message, each command reply one `DEVICE` status message, each rejected
//! message one `DLQ` message (reason and original bytes). Only when JetStream acked all of
//! them are the MQTT messages acked, in the order they came. While NATS or the registry's
//! database is unreachable the group is retried with backoff and nothing is acked, so the
//! broker keeps (and later redelivers) everything; a redelivered sample lands once anyway,
//! by its natural key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use eriop_nats::backoff::Backoff;
use eriop_nats::traffic::{self, CommandReply, DeviceActivity, TelemetryBatch};
use eriop_nats::Topology;
use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::AsyncClient;
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::fundamentum::{self, Kind};
use crate::registry::{DeviceInfo, Registry};
use crate::{adapter, BridgeStatus};

/// A DLQ message keeps the original bytes up to this size (NATS' default limit is 1 MiB).
const DLQ_MAX_ORIGINAL: usize = 900 * 1024;

pub struct Limits {
    pub max_samples: usize,
    pub max_delay: Duration,
    pub max_payload: usize,
}

pub struct Pipeline {
    pub client: AsyncClient,
    pub js: jetstream::Context,
    pub topology: Topology,
    pub registry: Registry,
    pub limits: Limits,
    pub status: Arc<BridgeStatus>,
}

/// What one group of MQTT messages becomes.
#[derive(Default)]
struct Output {
    telemetry: BTreeMap<Uuid, Vec<Value>>,
    activity: BTreeMap<Uuid, DeviceActivity>,
    replies: Vec<CommandReply>,
    dead: Vec<(String, String, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
enum Retry {
    #[error("device registry: {0}")]
    Database(#[from] sqlx::Error),
    #[error("NATS: {0}")]
    Nats(String),
}

impl Output {
    fn heard(&mut self, device: &DeviceInfo, at_ms: i64, uptime: Option<Option<u64>>) {
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

    fn samples(&self) -> usize {
        self.telemetry.values().map(Vec::len).sum()
    }
}

impl Pipeline {
    pub async fn run(mut self, mut incoming: mpsc::UnboundedReceiver<Publish>) {
        loop {
            let Some(first) = incoming.recv().await else {
                return;
            };
            let mut group = vec![first];
            let deadline = tokio::time::Instant::now() + self.limits.max_delay;
            // Messages, not samples, bound the wait: a states message is a few samples.
            while group.len() < self.limits.max_samples {
                match tokio::time::timeout_at(deadline, incoming.recv()).await {
                    Ok(Some(publish)) => group.push(publish),
                    Ok(None) | Err(_) => break,
                }
            }
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                match self.commit(&group).await {
                    Ok(()) => break,
                    Err(e) => {
                        self.status.record_retry();
                        tracing::warn!(error = %e, messages = group.len(), attempt = backoff.attempts(), "cannot hand over a group of MQTT messages, will retry (nothing acked)");
                        backoff.wait().await;
                    }
                }
            }
            for publish in &group {
                if let Err(e) = self.client.ack(publish).await {
                    tracing::warn!(error = %e, "cannot ack an MQTT message; the broker will send it again");
                }
            }
            self.status.record_group(group.len());
        }
    }

    async fn commit(&mut self, group: &[Publish]) -> Result<(), Retry> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut out = Output::default();
        for publish in group {
            self.adapt(publish, now, &mut out).await?;
        }
        self.publish(out).await
    }

    async fn adapt(&mut self, publish: &Publish, now: i64, out: &mut Output) -> Result<(), Retry> {
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        let dead = |out: &mut Output, reason: String| {
            out.dead
                .push((reason, topic.clone(), publish.payload.to_vec()));
        };
        if publish.payload.len() > self.limits.max_payload {
            dead(
                out,
                format!(
                    "oversized: {} bytes, the limit is {} (ERIOP_MQTT_MAX_PAYLOAD_BYTES)",
                    publish.payload.len(),
                    self.limits.max_payload
                ),
            );
            return Ok(());
        }
        let Some(parsed) = fundamentum::parse_topic(&topic) else {
            dead(out, "unknown topic: not registries/{registry}/devices/{serial}/{heartbeat|states|events[/..]|commands/{id}}".into());
            return Ok(());
        };
        if parsed.kind == Kind::Downlink {
            return Ok(()); // the cloud's own messages to devices
        }
        let Some(device) = self
            .registry
            .lookup(&parsed.registry, &parsed.serial)
            .await?
        else {
            dead(
                out,
                "unregistered device: no live device has this Fundamentum registry and serial"
                    .into(),
            );
            return Ok(());
        };
        match parsed.kind {
            Kind::Heartbeat => {
                let version = publish.properties.as_ref().and_then(|p| {
                    p.user_properties
                        .iter()
                        .find(|(k, _)| k == "v")
                        .map(|(_, v)| v.as_str())
                });
                match fundamentum::decode_heartbeat(&publish.payload, version) {
                    Ok(hb) => {
                        out.heard(&device, now, Some(hb.uptime_secs));
                        for (serial, uptime) in hb.sub_devices {
                            if let Some(sub) =
                                self.registry.lookup(&parsed.registry, &serial).await?
                            {
                                out.heard(&sub, now, Some(uptime));
                            }
                        }
                    }
                    Err(reason) => dead(out, format!("malformed: {reason}")),
                }
            }
            Kind::States => {
                match fundamentum::decode_states(&publish.payload) {
                    Ok(states) => {
                        let at = states.timestamp.unwrap_or(now);
                        out.heard(&device, now, None);
                        out.telemetry.entry(device.agency_id).or_default().extend(
                            adapter::records(device.id, &device.functions, &states.states, at),
                        );
                        for beacon in states.beacons {
                            match self.registry.lookup(&parsed.registry, &beacon.identification).await? {
                            Some(sub) => {
                                out.heard(&sub, now, None);
                                out.telemetry.entry(sub.agency_id).or_default().extend(adapter::records(
                                    sub.id,
                                    &sub.functions,
                                    &beacon.states,
                                    beacon.timestamp.unwrap_or(at),
                                ));
                            }
                            None => out.dead.push((
                                format!("unregistered beacon `{}` (its gateway's other states are stored)", beacon.identification),
                                topic.clone(),
                                serde_json::to_vec(&beacon.states).unwrap_or_default(),
                            )),
                        }
                        }
                    }
                    Err(reason) => dead(out, format!("malformed: {reason}")),
                }
            }
            Kind::Events(_) => match fundamentum::decode_event(&publish.payload) {
                Ok((timestamp, attributes)) => {
                    out.heard(&device, now, None);
                    out.telemetry
                        .entry(device.agency_id)
                        .or_default()
                        .extend(adapter::records(
                            device.id,
                            &device.functions,
                            &attributes,
                            timestamp.unwrap_or(now),
                        ));
                }
                Err(reason) => dead(out, format!("malformed: {reason}")),
            },
            Kind::CommandReply(command_id) => match fundamentum::decode_reply(&publish.payload) {
                Ok(reply) => {
                    out.heard(&device, now, None);
                    out.replies.push(CommandReply {
                        agency_id: device.agency_id,
                        device_id: device.id,
                        command_id,
                        status: reply.status,
                        message: reply.message,
                    });
                }
                Err(reason) => dead(out, format!("malformed: {reason}")),
            },
            Kind::Downlink => {}
        }
        Ok(())
    }

    /// Publishes everything of the group and waits for every JetStream ack.
    async fn publish(&self, out: Output) -> Result<(), Retry> {
        let nats = |e: &dyn std::fmt::Display| Retry::Nats(e.to_string());
        let samples = out.samples();
        let mut acks = Vec::new();
        for (agency, records) in out.telemetry {
            // Moved, not copied: each JetStream message takes its share of the records.
            let mut records = records;
            while !records.is_empty() {
                let rest = records.split_off(records.len().min(self.limits.max_samples.max(1)));
                let batch = TelemetryBatch {
                    agency_id: agency,
                    records: std::mem::replace(&mut records, rest),
                };
                let body = serde_json::to_vec(&batch).map_err(|e| nats(&e))?;
                acks.push(
                    self.js
                        .publish(
                            self.topology.telemetry_subject(&agency.to_string()),
                            body.into(),
                        )
                        .await
                        .map_err(|e| nats(&e))?,
                );
            }
        }
        for (device, activity) in &out.activity {
            let subject = self.topology.device_subject(
                &activity.agency_id.to_string(),
                &device.to_string(),
                traffic::ACTIVITY,
            );
            let body = serde_json::to_vec(activity).map_err(|e| nats(&e))?;
            acks.push(
                self.js
                    .publish(subject, body.into())
                    .await
                    .map_err(|e| nats(&e))?,
            );
        }
        for reply in &out.replies {
            let subject = self.topology.device_subject(
                &reply.agency_id.to_string(),
                &reply.device_id.to_string(),
                traffic::COMMAND_STATUS,
            );
            let body = serde_json::to_vec(reply).map_err(|e| nats(&e))?;
            acks.push(
                self.js
                    .publish(subject, body.into())
                    .await
                    .map_err(|e| nats(&e))?,
            );
        }
        for (reason, topic, mut original) in out.dead.iter().cloned() {
            tracing::warn!(%reason, "MQTT message dead-lettered");
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Eriop-Reason", reason.as_str());
            headers.insert("Eriop-Original-Subject", topic.as_str());
            if original.len() > DLQ_MAX_ORIGINAL {
                headers.insert("Eriop-Original-Length", original.len().to_string().as_str());
                original.truncate(DLQ_MAX_ORIGINAL);
            }
            acks.push(
                self.js
                    .publish_with_headers(
                        self.topology.dlq_subject("bridge"),
                        headers,
                        original.into(),
                    )
                    .await
                    .map_err(|e| nats(&e))?,
            );
        }
        for ack in
            futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future))
                .await
        {
            ack.map_err(|e| nats(&e))?;
        }
        self.status.record_output(samples, out.dead.len());
        Ok(())
    }
}
