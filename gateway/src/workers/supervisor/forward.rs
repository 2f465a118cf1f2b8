//! Commands on their way: a `CommandIssued` event becomes a `DownlinkCommand` on `COMMANDS`.

use eriop_domain::device::{talq, DeviceRequest};
use eriop_nats::traffic::DownlinkCommand;
use eriop_nats::StoredEvent;
use tracing::Instrument;
use uuid::Uuid;

use super::watch::Watch;
use super::{nats, rfc3339, Supervisor, SupervisorError};

impl Supervisor {
    pub(super) async fn forward(
        &self,
        id: Uuid,
        watch: &Watch,
        command_id: i64,
        request: DeviceRequest,
        event: &StoredEvent,
    ) -> Result<(), SupervisorError> {
        let issued = event
            .metadata
            .get(eriop_domain::metadata::TIME)
            .cloned()
            .unwrap_or_else(|| event.recorded_at.clone());
        let (command_short_name, parameters) = match request {
            DeviceRequest::Override {
                level,
                expiration,
                ramp_seconds,
            } => (
                "talq-override".to_owned(),
                talq::override_command(
                    id,
                    level,
                    &issued,
                    expiration.map(rfc3339).as_deref(),
                    ramp_seconds,
                    &command_id.to_string(),
                ),
            ),
            DeviceRequest::Fundamentum { name, parameters } => (name, parameters),
        };
        let downlink = DownlinkCommand {
            agency_id: watch.agency_id,
            device_id: id,
            registry: watch.registry.clone(),
            serial: watch.serial.clone(),
            command_id,
            command_short_name,
            parameters,
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            downlink.message_id().as_str(),
        );
        // The command's trace (from the request that issued it) goes on to the bridge, from
        // this hop's own span (exported as the request's child when spans are exported).
        let parent = event
            .metadata
            .get(eriop_domain::trace::TRACEPARENT)
            .and_then(|t| eriop_domain::trace::TraceContext::parse(t));
        let span = tracing::info_span!(
            "forward command",
            otel.kind = "producer",
            trace_id = tracing::field::Empty,
        );
        let trace = parent.map(|parent| {
            let trace = eriop_nats::otel::continue_trace(&span, Some(parent));
            span.record("trace_id", tracing::field::display(trace.trace_id()));
            trace
        });
        if let Some(trace) = &trace {
            headers.insert(eriop_domain::trace::TRACEPARENT, trace.to_string().as_str());
        }
        let trace_id = trace.map(|t| t.trace_id()).unwrap_or_default();
        let body = serde_json::to_vec(&downlink).map_err(nats)?;
        let subject = self
            .topology
            .command_subject(&watch.agency_id.to_string(), &id.to_string());
        async {
            let ack = self
                .js
                .publish_with_headers(subject, headers, body.into())
                .await
                .map_err(nats)?
                .await
                .map_err(nats)?;
            if ack.duplicate {
                // The same command again (the supervisor resumed after a crash): JetStream
                // kept the first copy, which is the one the bridge sends.
                tracing::warn!(device_id = %id, command_id, trace_id, "command already on COMMANDS (duplicate message id): not forwarded again");
            } else {
                tracing::info!(device_id = %id, command_id, trace_id, "command forwarded to the bridge");
            }
            Ok(())
        }
        .instrument(span)
        .await
    }
}
