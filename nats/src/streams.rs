//! The JetStream streams of DESIGN.md, as code. Every service calls [`ensure_streams`] at
//! start-up: it creates what is missing and updates what drifted, so a deployment never
//! depends on someone having run a CLI first.
//!
//! A [`Topology`] carries an optional prefix: empty in a deployment (streams `EVENTS`, ...,
//! subjects `eriop.events....`), set by tests so that many can share one server without
//! seeing each other's messages.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

/// The streams of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Every domain event, relayed from the event store. Kept forever: auditors replay it.
    Events,
    /// Batches of TALQ attribute records from the bridge.
    Telemetry,
    /// Heartbeats and command status, per device.
    Device,
    /// Downlink commands to devices.
    Commands,
    /// Rejected input, with the reason.
    Dlq,
}

impl Stream {
    pub const ALL: [Stream; 5] = [
        Stream::Events,
        Stream::Telemetry,
        Stream::Device,
        Stream::Commands,
        Stream::Dlq,
    ];

    fn name(self) -> &'static str {
        match self {
            Stream::Events => "EVENTS",
            Stream::Telemetry => "TELEMETRY",
            Stream::Device => "DEVICE",
            Stream::Commands => "COMMANDS",
            Stream::Dlq => "DLQ",
        }
    }

    fn subject_root(self) -> &'static str {
        match self {
            Stream::Events => "events",
            Stream::Telemetry => "telemetry",
            Stream::Device => "device",
            Stream::Commands => "commands",
            Stream::Dlq => "dlq",
        }
    }
}

/// How many bytes each stream may hold (DESIGN.md rule 11: devices cannot exhaust storage).
/// `TELEMETRY`, `DEVICE` and `DLQ` drop their oldest messages when full (size them for the
/// longest projection outage you want to ride out); `EVENTS` and `COMMANDS` refuse new
/// messages instead (the event store keeps every event, the relay retries) and readiness says
/// so. JetStream reserves each stream's `max_bytes` from the server's `max_file_store`: their
/// sum must fit in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    pub events: i64,
    pub telemetry: i64,
    pub device: i64,
    pub commands: i64,
    pub dlq: i64,
}

impl Default for StreamLimits {
    fn default() -> Self {
        const MIB: i64 = 1024 * 1024;
        Self {
            events: 8 * 1024 * MIB,
            telemetry: 16 * 1024 * MIB,
            device: 2 * 1024 * MIB,
            commands: 256 * MIB,
            dlq: 1024 * MIB,
        }
    }
}

impl StreamLimits {
    /// The development profile's sizes: under 2 GiB in all, so that `make run` and the
    /// test streams of `make test` fit together in the development nats-server's 8 GB
    /// `max_file_store` (JetStream reserves each stream's size from it).
    pub fn development() -> Self {
        const MIB: i64 = 1024 * 1024;
        Self {
            events: 256 * MIB,
            telemetry: 1024 * MIB,
            device: 256 * MIB,
            commands: 64 * MIB,
            dlq: 128 * MIB,
        }
    }

    /// Small streams for tests and tools sharing one server (which reserves each stream's
    /// size from its store): 16 MiB for telemetry, 4 MiB for the others.
    pub fn small() -> Self {
        const MIB: i64 = 1024 * 1024;
        Self {
            events: 4 * MIB,
            telemetry: 16 * MIB,
            device: 4 * MIB,
            commands: 4 * MIB,
            dlq: 4 * MIB,
        }
    }

    pub fn max_bytes(&self, which: Stream) -> i64 {
        match which {
            Stream::Events => self.events,
            Stream::Telemetry => self.telemetry,
            Stream::Device => self.device,
            Stream::Commands => self.commands,
            Stream::Dlq => self.dlq,
        }
    }

    /// What a full stream does: drop the oldest, or refuse the new message.
    pub fn discard(which: Stream) -> stream::DiscardPolicy {
        match which {
            Stream::Events | Stream::Commands => stream::DiscardPolicy::New,
            Stream::Telemetry | Stream::Device | Stream::Dlq => stream::DiscardPolicy::Old,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    limits: StreamLimits,
    replicas: usize,
}

impl Topology {
    /// `prefix` is lower-case letters and digits (checked by the configuration); empty for a
    /// deployment. Small streams ([`StreamLimits::small`]): services use [`Self::from_settings`].
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            limits: StreamLimits::small(),
            replicas: 1,
        }
    }

    /// The topology of a service: prefix and stream sizes from its settings. Every service
    /// of a deployment must agree on both (each one creates or updates the streams).
    pub fn from_settings(settings: &crate::Settings) -> Self {
        Self {
            prefix: settings.nats_prefix.clone(),
            limits: settings.stream_limits(),
            replicas: settings.stream_replicas.clamp(1, 5),
        }
    }

    pub fn limits(&self) -> StreamLimits {
        self.limits
    }

    pub fn stream_name(&self, stream: Stream) -> String {
        if self.prefix.is_empty() {
            stream.name().to_owned()
        } else {
            format!("{}_{}", self.prefix.to_uppercase(), stream.name())
        }
    }

    fn subject(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            format!("eriop.{rest}")
        } else {
            format!("{}.eriop.{rest}", self.prefix)
        }
    }

    /// `eriop.events.{aggregate_type}.{id}`
    pub fn event_subject(&self, aggregate_type: &str, aggregate_id: &str) -> String {
        self.subject(&format!("events.{aggregate_type}.{aggregate_id}"))
    }

    /// Every event of one aggregate type: `eriop.events.{aggregate_type}.>`
    pub fn events_of(&self, aggregate_type: &str) -> String {
        self.subject(&format!("events.{aggregate_type}.>"))
    }

    /// `eriop.projected.{aggregate_type}.{id}`: a read model shows a write (core NATS, no
    /// stream; [`crate::progress`]).
    pub fn projected_subject(&self, aggregate_type: &str, id: &str) -> String {
        self.subject(&format!("projected.{aggregate_type}.{id}"))
    }

    /// `eriop.stored`: events were stored; wakes the relay (core NATS, no stream).
    pub fn stored_subject(&self) -> String {
        self.subject("stored")
    }

    /// Every progress hint: `eriop.projected.>`
    pub fn projected_all(&self) -> String {
        self.subject("projected.>")
    }

    /// `eriop.dlq.{source}`
    pub fn dlq_subject(&self, source: &str) -> String {
        self.subject(&format!("dlq.{source}"))
    }

    /// `eriop.telemetry.{agency}`
    pub fn telemetry_subject(&self, agency: &str) -> String {
        self.subject(&format!("telemetry.{agency}"))
    }

    /// `eriop.device.{agency}.{device}.{kind}`
    pub fn device_subject(&self, agency: &str, device: &str, kind: &str) -> String {
        self.subject(&format!("device.{agency}.{device}.{kind}"))
    }

    /// `eriop.commands.{agency}.{device}`
    pub fn command_subject(&self, agency: &str, device: &str) -> String {
        self.subject(&format!("commands.{agency}.{device}"))
    }

    /// The definition of one stream. Replicas: `ERIOP_STREAM_REPLICAS` (1; 3 on a 3-node
    /// cluster, see README, "Deploy").
    pub fn stream_config(&self, which: Stream) -> stream::Config {
        let day = Duration::from_secs(24 * 3600);
        let (max_age, duplicate_window, description) = match which {
            // Zero max_age: kept until deleted. The dedup window covers a relay that
            // crashed between JetStream's ack and marking the event published.
            Stream::Events => (
                Duration::ZERO,
                Duration::from_secs(3600),
                "domain events, relayed from the event store",
            ),
            Stream::Telemetry => (
                7 * day,
                Duration::from_secs(600),
                "batches of TALQ attribute records",
            ),
            Stream::Device => (
                7 * day,
                Duration::from_secs(600),
                "heartbeats and command status per device",
            ),
            Stream::Commands => (
                day,
                Duration::from_secs(600),
                "downlink commands to devices",
            ),
            Stream::Dlq => (
                30 * day,
                Duration::from_secs(120),
                "rejected input, with the reason",
            ),
        };
        stream::Config {
            name: self.stream_name(which),
            description: Some(description.to_owned()),
            subjects: vec![self.subject(&format!("{}.>", which.subject_root()))],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age,
            max_bytes: self.limits.max_bytes(which),
            discard: StreamLimits::discard(which),
            duplicate_window,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }
}

/// Creates every stream, or updates it to the definition above. Idempotent.
pub async fn ensure_streams(
    js: &jetstream::Context,
    topology: &Topology,
) -> Result<(), jetstream::context::CreateStreamError> {
    for which in Stream::ALL {
        js.create_or_update_stream(topology.stream_config(which))
            .await?;
    }
    Ok(())
}

/// Opens the durable pull consumer `config.durable_name` on `which` (created, or updated to
/// `config`) and its message stream, pulling up to `batch` messages at a time. The stream asks with short heartbeats, so that after a
/// NATS restart a stalled pull is noticed and renewed within seconds; it ends with an error
/// when the connection is lost, and the caller retries with backoff.
pub async fn durable_messages(
    js: &jetstream::Context,
    topology: &Topology,
    which: Stream,
    config: jetstream::consumer::pull::Config,
    batch: usize,
) -> Result<jetstream::consumer::pull::Stream, async_nats::Error> {
    ensure_streams(js, topology).await?;
    let name = config.durable_name.clone().unwrap_or_default();
    let consumer = js
        .get_stream(topology.stream_name(which))
        .await?
        .get_or_create_consumer(&name, config)
        .await?;
    Ok(consumer
        .stream()
        .max_messages_per_batch(batch.max(1))
        .heartbeat(Duration::from_secs(2))
        .expires(Duration::from_secs(10))
        .messages()
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_names_follow_the_design() {
        let t = Topology::new("");
        assert_eq!(t.stream_name(Stream::Events), "EVENTS");
        assert_eq!(t.event_subject("agency", "42"), "eriop.events.agency.42");
        assert_eq!(t.stream_config(Stream::Dlq).subjects, vec!["eriop.dlq.>"]);
        assert_eq!(t.command_subject("a", "d"), "eriop.commands.a.d");
    }

    #[test]
    fn a_prefix_keeps_tests_apart() {
        let t = Topology::new("t1a2");
        assert_eq!(t.stream_name(Stream::Telemetry), "T1A2_TELEMETRY");
        assert_eq!(t.events_of("agency"), "t1a2.eriop.events.agency.>");
    }
}
