//! The bridge's Prometheus metrics (issue 14), answered on its operations port
//! (`ERIOP_BRIDGE_OPS_ADDR`): what came in from MQTT, what went to JetStream and to `DLQ`,
//! what was acked back to the broker, and the MQTT link.

use eriop_nats::metrics::prometheus_client::metrics::counter::Counter;
use eriop_nats::metrics::prometheus_client::metrics::gauge::Gauge;
use eriop_nats::metrics::prometheus_client::registry::Registry;

/// Counters shared by the link loop and the pipeline (clones count into the same values).
#[derive(Debug, Default, Clone)]
pub struct BridgeMetrics {
    pub received: Counter,
    pub published: Counter,
    pub samples: Counter,
    pub dead_lettered: Counter,
    pub acked: Counter,
    pub retries: Counter,
    pub link_up: Gauge,
    pub reconnects: Counter,
}

impl BridgeMetrics {
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("eriop_bridge");
        registry.register(
            "mqtt_messages_received",
            "MQTT messages received from the broker",
            self.received.clone(),
        );
        registry.register(
            "jetstream_messages_published",
            "Messages published to JetStream and acknowledged by it (telemetry batches, device activity, command replies, dead letters)",
            self.published.clone(),
        );
        registry.register(
            "samples_published",
            "TALQ samples published to TELEMETRY",
            self.samples.clone(),
        );
        registry.register(
            "messages_dead_lettered",
            "MQTT messages sent to DLQ with their reason (unreadable, unknown device, over rate, ...)",
            self.dead_lettered.clone(),
        );
        registry.register(
            "mqtt_messages_acked",
            "MQTT messages acknowledged to the broker (each only after JetStream had it)",
            self.acked.clone(),
        );
        registry.register(
            "group_retries",
            "Groups of MQTT messages handed over again after NATS or the registry failed (nothing acked meanwhile)",
            self.retries.clone(),
        );
        registry.register(
            "mqtt_link_up",
            "1 while the MQTT connection is up, else 0",
            self.link_up.clone(),
        );
        registry.register(
            "mqtt_reconnects",
            "MQTT connections made again after the first",
            self.reconnects.clone(),
        );
        registry
    }
}
