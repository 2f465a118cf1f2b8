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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use eriop_nats::backoff::Backoff;
use eriop_nats::traffic::{self, DeviceActivity, TelemetryBatch};
use eriop_nats::NatsError;
use eriop_nats::Topology;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::AsyncClient;
use tokio::sync::mpsc;

use crate::activity::Coalescer;
use crate::fundamentum::{self, Kind};
use crate::ingest::{self, Output, Rules};
use crate::quota::AgencyQuotas;
use crate::registry::Registry;
use crate::BridgeStatus;

pub struct Limits {
    pub max_samples: usize,
    /// MQTT messages received and not yet acked, at most (the Receive Maximum the bridge
    /// announced): new groups are gathered while fewer are in flight.
    pub window: usize,
    pub max_delay: Duration,
    pub rules: Rules,
    /// Messages per second and burst allowed to one device.
    pub device_rate: (u32, u32),
    /// At most one activity message per device this often (ms; 0: every group).
    pub activity_interval_ms: u64,
    /// Telemetry messages a second an agency may send unless it has its own quota.
    pub agency_telemetry_per_second: u32,
}

pub struct Pipeline {
    pub client: AsyncClient,
    pub js: jetstream::Context,
    pub topology: Topology,
    pub registry: Registry,
    pub limits: Limits,
    pub status: Arc<BridgeStatus>,
}

/// What the limits said of one message of a group, judged once whatever the group's retries
/// (a retried group must not count its messages twice).
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    /// Not yet counted against its agency's quota (the agency is known after the lookup).
    Unjudged,
    Passed,
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
enum Retry {
    #[error("device registry: {0}")]
    Database(#[from] sqlx::Error),
    #[error("NATS: {0}")]
    Nats(#[from] NatsError),
    #[error("encoding a message: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Per-device GCRA (governor), keyed by the topic's `registry/serial`: counted before any
/// decoding or lookup, so a flooding device costs the bridge little.
struct DeviceRate {
    limiter: DefaultKeyedRateLimiter<String>,
    per_second: u32,
}

impl DeviceRate {
    fn new((per_second, burst): (u32, u32)) -> Self {
        let per_second = per_second.max(1);
        let quota = Quota::per_second(NonZeroU32::MIN.saturating_add(per_second - 1))
            .allow_burst(NonZeroU32::MIN.saturating_add(burst.max(1) - 1));
        Self {
            limiter: RateLimiter::keyed(quota),
            per_second,
        }
    }

    /// Why this message is over its device's rate, if it is. The cloud's own downlink
    /// messages (seen through the wildcard subscription) are not the device's.
    fn refusal(&self, topic: &str) -> Option<String> {
        let parsed = fundamentum::parse_topic(topic)?;
        if parsed.kind == Kind::Downlink {
            return None;
        }
        let id = ingest::identity(topic)?;
        let key = format!("{}/{}", id.registry, id.serial);
        self.limiter.check_key(&key).err().map(|_| {
            format!(
                "rate: this device sent more than {} messages a second (ERIOP_BRIDGE_DEVICE_MESSAGES_PER_SECOND, ERIOP_BRIDGE_DEVICE_BURST)",
                self.per_second
            )
        })
    }

    /// Forgets devices whose bucket is full again, so memory follows the active devices.
    fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// JetStream's acks of everything a group published, awaited as one.
type Acks = Pin<Box<dyn Future<Output = Result<(), Retry>> + Send>>;

/// A group of MQTT messages whose output was sent to JetStream: acked to the broker, in the
/// order the messages came, once `acks` answer (or handed over again if it fails).
struct Sent {
    group: Vec<Publish>,
    verdicts: Vec<Verdict>,
    /// Activity the group published: kept again if the acks fail.
    activity: Vec<DeviceActivity>,
    /// `None`: the sending itself failed (the activity is already kept again).
    acks: Option<Acks>,
}

impl Pipeline {
    pub async fn run(mut self, mut incoming: mpsc::UnboundedReceiver<Publish>) {
        let rate = DeviceRate::new(self.limits.device_rate);
        let mut quotas = AgencyQuotas::new(self.limits.agency_telemetry_per_second);
        let mut activity = Coalescer::new(self.limits.activity_interval_ms);
        let idle = Duration::from_millis(self.limits.activity_interval_ms.max(1));
        let mut groups: u64 = 0;
        let mut in_flight: VecDeque<Sent> = VecDeque::new();
        loop {
            // The oldest group's acks first (the broker's acks go in order), then the next
            // message if there is room; while no message comes, kept activity still goes
            // out once due.
            let first = tokio::select! {
                biased;
                acked = oldest(&mut in_flight), if !in_flight.is_empty() => {
                    if let Some(sent) = in_flight.pop_front() {
                        self.settle(sent, acked, &mut in_flight, &mut quotas, &mut activity).await;
                    }
                    continue;
                }
                first = incoming.recv(), if messages(&in_flight) < self.limits.window => first,
                () = tokio::time::sleep(idle), if activity.keeps() => {
                    self.flush(&mut activity).await;
                    continue;
                }
            };
            let Some(first) = first else {
                // Shutting down: what is in flight is settled (or handed over again) first.
                self.recover(std::mem::take(&mut in_flight), &mut quotas, &mut activity)
                    .await;
                return;
            };
            let mut group = vec![first];
            let deadline = tokio::time::Instant::now() + self.limits.max_delay;
            // Messages, not samples, bound the wait: a states message is a few samples.
            let room = self.limits.window.saturating_sub(messages(&in_flight));
            while group.len() < self.limits.max_samples.min(room) {
                match tokio::time::timeout_at(deadline, incoming.recv()).await {
                    Ok(Some(publish)) => group.push(publish),
                    Ok(None) | Err(_) => break,
                }
            }
            // Judged once per message, before any retry of the group.
            let mut verdicts: Vec<Verdict> = group
                .iter()
                .map(|p| {
                    rate.refusal(&String::from_utf8_lossy(&p.topic))
                        .map_or(Verdict::Unjudged, Verdict::Refused)
                })
                .collect();
            groups += 1;
            if groups.is_multiple_of(1024) {
                rate.forget_idle();
            }
            match self
                .send(&group, &mut verdicts, &mut quotas, &mut activity)
                .await
            {
                Ok((published, acks)) => in_flight.push_back(Sent {
                    group,
                    verdicts,
                    activity: published,
                    acks: Some(acks),
                }),
                Err(e) => {
                    self.status.record_retry();
                    tracing::warn!(error = %e, messages = group.len(), "cannot hand over a group of MQTT messages, will retry (nothing acked)");
                    let mut queue = std::mem::take(&mut in_flight);
                    queue.push_back(Sent {
                        group,
                        verdicts,
                        activity: Vec::new(),
                        acks: None,
                    });
                    self.recover(queue, &mut quotas, &mut activity).await;
                }
            }
        }
    }

    /// The oldest group in flight got its acks (`acked`): acks its MQTT messages, or hands it
    /// and every later group over again, in order.
    async fn settle(
        &mut self,
        sent: Sent,
        acked: Result<(), Retry>,
        in_flight: &mut VecDeque<Sent>,
        quotas: &mut AgencyQuotas,
        coalescer: &mut Coalescer,
    ) {
        match acked {
            Ok(()) => self.ack(&sent.group).await,
            Err(e) => {
                self.status.record_retry();
                tracing::warn!(error = %e, messages = sent.group.len(), "JetStream did not take a group of MQTT messages, will retry (nothing acked)");
                let mut queue = std::mem::take(in_flight);
                queue.push_front(Sent { acks: None, ..sent });
                for a in queue
                    .front_mut()
                    .map(|s| std::mem::take(&mut s.activity))
                    .into_iter()
                    .flatten()
                {
                    coalescer.restore(a);
                }
                self.recover(queue, quotas, coalescer).await;
            }
        }
    }

    /// Settles `queue` in order: groups whose acks answer are acked to the broker until one
    /// fails; from there on every group (even one JetStream took: the order of a device's
    /// command replies is kept) is handed over again, with backoff, then acked. A sample
    /// handed over twice lands once, by its natural key.
    async fn recover(
        &mut self,
        queue: VecDeque<Sent>,
        quotas: &mut AgencyQuotas,
        coalescer: &mut Coalescer,
    ) {
        let mut failed = false;
        for mut sent in queue {
            if let Some(acks) = sent.acks.take() {
                let acked = acks.await;
                if !failed && acked.is_ok() {
                    self.ack(&sent.group).await;
                    continue;
                }
                if acked.is_err() {
                    for a in std::mem::take(&mut sent.activity) {
                        coalescer.restore(a);
                    }
                }
            }
            failed = true;
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                match self
                    .commit(&sent.group, &mut sent.verdicts, quotas, coalescer)
                    .await
                {
                    Ok(()) => break,
                    Err(e) => {
                        self.status.record_retry();
                        tracing::warn!(error = %e, messages = sent.group.len(), attempt = backoff.attempts(), "cannot hand over a group of MQTT messages, will retry (nothing acked)");
                        backoff.wait().await;
                    }
                }
            }
            self.ack(&sent.group).await;
        }
    }

    /// Acks a group's MQTT messages to the broker, in the order they came.
    async fn ack(&self, group: &[Publish]) {
        let mut acked = 0;
        for publish in group {
            match self.client.ack(publish).await {
                Ok(()) => acked += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot ack an MQTT message; the broker will send it again")
                }
            }
        }
        self.status.record_group(group.len(), acked);
    }

    /// Hands a group over and waits for JetStream's acks (the retry path).
    async fn commit(
        &mut self,
        group: &[Publish],
        verdicts: &mut [Verdict],
        quotas: &mut AgencyQuotas,
        coalescer: &mut Coalescer,
    ) -> Result<(), Retry> {
        let (activity, acks) = self.send(group, verdicts, quotas, coalescer).await?;
        let acked = acks.await;
        if acked.is_err() {
            for a in activity {
                coalescer.restore(a);
            }
        }
        acked
    }

    /// Adapts a group and sends its output to JetStream; answers the activity it published
    /// and the acks to await. On failure the activity is kept again.
    async fn send(
        &mut self,
        group: &[Publish],
        verdicts: &mut [Verdict],
        quotas: &mut AgencyQuotas,
        coalescer: &mut Coalescer,
    ) -> Result<(Vec<DeviceActivity>, Acks), Retry> {
        let now = chrono::Utc::now().timestamp_millis();
        // Every device the group's topics name, looked up in one query (see registry.rs).
        let named = group
            .iter()
            .zip(verdicts.iter())
            .filter(|(_, verdict)| !matches!(verdict, Verdict::Refused(_)))
            .filter_map(|(publish, _)| ingest::device_of(&String::from_utf8_lossy(&publish.topic)));
        self.registry.prefetch(named).await?;
        let mut out = Output::default();
        for (publish, verdict) in group.iter().zip(verdicts.iter_mut()) {
            let topic = String::from_utf8_lossy(&publish.topic);
            if let Verdict::Refused(reason) = verdict {
                out.dead_letter(reason.clone(), &topic, &publish.payload);
                continue;
            }
            self.adapt(publish, &topic, now, verdict, quotas, &mut out)
                .await?;
        }
        let heard = std::mem::take(&mut out.activity);
        let mut activity: Vec<DeviceActivity> = heard
            .into_values()
            .filter_map(|a| coalescer.offer(a, now))
            .collect();
        activity.extend(coalescer.due(now));
        match self.send_output(out, &activity).await {
            Ok(acks) => Ok((activity, acks)),
            Err(e) => {
                // Published again with the group's retry (or the next due activity).
                for a in activity {
                    coalescer.restore(a);
                }
                Err(e)
            }
        }
    }

    /// Publishes kept activity that is due, between groups.
    async fn flush(&self, coalescer: &mut Coalescer) {
        let now = chrono::Utc::now().timestamp_millis();
        let due = coalescer.due(now);
        if due.is_empty() {
            return;
        }
        if let Err(e) = self.publish(Output::default(), &due).await {
            tracing::warn!(error = %e, "cannot publish device activity, will retry");
            for a in due {
                coalescer.restore(a);
            }
        }
    }

    async fn adapt(
        &mut self,
        publish: &Publish,
        topic: &str,
        now: i64,
        verdict: &mut Verdict,
        quotas: &mut AgencyQuotas,
        out: &mut Output,
    ) -> Result<(), Retry> {
        let version = publish.properties.as_ref().and_then(|p| {
            p.user_properties
                .iter()
                .find(|(k, _)| k == "v")
                .map(|(_, v)| v.as_str())
        });
        let decoded =
            match ingest::decode(topic, &publish.payload, version, now, &self.limits.rules) {
                Ok(decoded) => decoded,
                Err(reason) => {
                    out.dead_letter(reason, topic, &publish.payload);
                    return Ok(());
                }
            };
        if decoded.message == ingest::Message::Downlink {
            return Ok(());
        }
        // Every device the message names, looked up first: adaptation itself has no I/O.
        let mut known = HashMap::new();
        for serial in
            std::iter::once(decoded.id.serial.clone()).chain(ingest::named_serials(&decoded))
        {
            if let std::collections::hash_map::Entry::Vacant(slot) = known.entry(serial) {
                let device = self
                    .registry
                    .lookup(&decoded.id.registry, slot.key())
                    .await?;
                slot.insert(device);
            }
        }
        // The agency's telemetry quota, once the device (so its agency) is known.
        let counted = !matches!(decoded.message, ingest::Message::Reply { .. });
        if let (Verdict::Unjudged, Some(Some(device)), true) =
            (&*verdict, known.get(&decoded.id.serial), counted)
        {
            *verdict = match quotas.refusal(device.agency_id, device.telemetry_quota) {
                Some(reason) => Verdict::Refused(reason),
                None => Verdict::Passed,
            };
        }
        if let Verdict::Refused(reason) = verdict {
            out.dead_letter(reason.clone(), topic, &publish.payload);
            return Ok(());
        }
        let resolve = |serial: &str| known.get(serial).cloned().flatten();
        ingest::adapt(decoded, topic, &publish.payload, now, &resolve, out);
        Ok(())
    }

    /// Publishes everything of the group and waits for every JetStream ack.
    async fn publish(&self, out: Output, activity: &[DeviceActivity]) -> Result<(), Retry> {
        self.send_output(out, activity).await?.await
    }

    /// Sends everything of the group to JetStream; answers its acks, to await.
    async fn send_output(&self, out: Output, activity: &[DeviceActivity]) -> Result<Acks, Retry> {
        let nats =
            |e: async_nats::jetstream::context::PublishError| Retry::Nats(NatsError::client(e));
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
                let body = serde_json::to_vec(&batch)?;
                acks.push(
                    self.js
                        .publish(
                            self.topology.telemetry_subject(&agency.to_string()),
                            body.into(),
                        )
                        .await
                        .map_err(nats)?,
                );
            }
        }
        for activity in activity {
            let subject = self.topology.device_subject(
                &activity.agency_id.to_string(),
                &activity.device_id.to_string(),
                traffic::ACTIVITY,
            );
            let body = serde_json::to_vec(activity)?;
            acks.push(self.js.publish(subject, body.into()).await.map_err(nats)?);
        }
        for reply in &out.replies {
            let subject = self.topology.device_subject(
                &reply.agency_id.to_string(),
                &reply.device_id.to_string(),
                traffic::COMMAND_STATUS,
            );
            let body = serde_json::to_vec(reply)?;
            acks.push(self.js.publish(subject, body.into()).await.map_err(nats)?);
        }
        let dead = out.dead.len();
        for letter in out.dead {
            tracing::warn!(reason = %letter.reason, "MQTT message dead-lettered");
            let (headers, body) = letter.into_message();
            acks.push(
                self.js
                    .publish_with_headers(self.topology.dlq_subject("bridge"), headers, body)
                    .await
                    .map_err(nats)?,
            );
        }
        let published = acks.len();
        let status = Arc::clone(&self.status);
        Ok(Box::pin(async move {
            for ack in futures::future::join_all(
                acks.into_iter().map(std::future::IntoFuture::into_future),
            )
            .await
            {
                ack.map_err(nats)?;
            }
            status.record_output(samples, dead, published);
            Ok(())
        }))
    }
}

/// MQTT messages in flight (received, not yet acked), in the groups handed to JetStream
/// whose acks are not awaited yet: while JetStream writes one group to disk, the next ones
/// are gathered, adapted and sent. What bounds them is the broker's window
/// (`Limits::window`, the Receive Maximum), counted in messages: with a fixed number of
/// groups, short groups (a few milliseconds of traffic each) left most of the window unused,
/// and throughput was that count of groups per JetStream round trip.
fn messages(in_flight: &VecDeque<Sent>) -> usize {
    in_flight.iter().map(|sent| sent.group.len()).sum()
}

/// The acks of the oldest group in flight (the caller makes sure there is one).
async fn oldest(in_flight: &mut VecDeque<Sent>) -> Result<(), Retry> {
    match in_flight.front_mut().and_then(|sent| sent.acks.as_mut()) {
        Some(acks) => acks.await,
        None => std::future::pending().await,
    }
}
