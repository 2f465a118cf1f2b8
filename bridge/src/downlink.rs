//! Commands to devices: a durable consumer of `COMMANDS` publishes each one on the device's
//! Fundamentum `commands` topic (QoS 1), and acks it once the MQTT client took it. The
//! device's replies come back through the pipeline (`commands/{id}`).

use std::time::Duration;
use tracing::Instrument;

use async_nats::jetstream::{self, consumer::pull};
use eriop_nats::traffic::DownlinkCommand;
use eriop_nats::{Stream, Topology};
use futures::StreamExt;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::AsyncClient;

use crate::fundamentum;

const NAME: &str = "bridge-downlink";

pub async fn run(
    client: AsyncClient,
    js: jetstream::Context,
    topology: Topology,
) -> Result<(), String> {
    let mut messages = eriop_nats::streams::durable_messages(
        &js,
        &topology,
        Stream::Commands,
        pull::Config {
            durable_name: Some(NAME.to_owned()),
            description: Some("device commands to Fundamentum".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        },
        100,
    )
    .await
    .map_err(|e| e.to_string())?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        // The trace of the request that issued the command (the supervisor's header).
        let parent = message
            .headers
            .as_ref()
            .and_then(|h| h.get(eriop_domain::trace::TRACEPARENT))
            .and_then(|v| eriop_domain::trace::TraceContext::parse(v.as_str()));
        let trace_id = parent.map(|t| t.trace_id()).unwrap_or_default();
        // This hop's span (exported as the supervisor's child when spans are exported).
        let span = tracing::info_span!("send command", otel.kind = "producer", trace_id);
        if parent.is_some() {
            eriop_nats::otel::continue_trace(&span, parent);
        }
        async {
            match serde_json::from_slice::<DownlinkCommand>(&message.payload) {
                Ok(command) => {
                    client
                        .publish(
                            fundamentum::commands_topic(&command.registry, &command.serial),
                            QoS::AtLeastOnce,
                            false,
                            fundamentum::encode_command(
                                command.command_id,
                                &command.command_short_name,
                                &command.parameters,
                            ),
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    tracing::info!(device_id = %command.device_id, command_id = command.command_id, trace_id, "command sent to the device");
                    message.ack().await.map_err(|e| e.to_string())?;
                }
                Err(e) => {
                    tracing::error!(error = %e, "undecodable downlink command, dropped");
                    message
                        .ack_with(jetstream::AckKind::Term)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok::<(), String>(())
        }
        .instrument(span)
        .await?;
    }
    Err("the COMMANDS consumer ended".into())
}
