//! OTLP trace export (issue 14): when an endpoint is configured, every service sends its
//! spans to an OpenTelemetry collector, and each hop's span is the child of the one before
//! it: the gateway's request span continues the caller's `traceparent`, and the projections,
//! the device supervisor and the bridge's downlink continue the `traceparent` that the event
//! metadata and the NATS headers carry ([`continue_trace`]). The ids exported are the ids
//! logged and propagated, so a trace id found in a log line finds the trace, and back.
//!
//! Configured the way every OpenTelemetry SDK is, by the standard variables:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) or `OTEL_EXPORTER_OTLP_ENDPOINT` (a
//! base URL, `/v1/traces` appended), and `OTEL_SERVICE_NAME` (defaults to the program's name).
//! Nothing set: nothing exported, and traces still travel (logs carry their ids).
//!
//! HTTP/protobuf to a collector beside the service (a sidecar, a DaemonSet, the compose
//! file's collector), which handles TLS, authentication and retries towards the backend:
//! the endpoint must be `http://`, an `https://` one is refused at start-up with what to do.
//! Spans leave on the SDK's own export thread, in batches, so a slow or absent collector
//! never slows a request; when its queue is full, spans are dropped, never requests.

use std::time::Duration;

use eriop_domain::trace::TraceContext;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";

/// How long one export may take before the batch is given up (the collector is local).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error(
        "{var} must be an http:// URL of an OpenTelemetry collector running beside the service \
         (the collector does TLS towards your tracing backend); got {got:?}. Fix it or unset it \
         to run without trace export"
    )]
    NotHttp { var: &'static str, got: String },
    #[error("cannot build the OTLP trace exporter: {0}")]
    Exporter(String),
}

/// Where spans go, and under which service name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub traces_endpoint: String,
    pub service_name: String,
}

impl OtlpSettings {
    /// From the standard OpenTelemetry variables; `None` when no endpoint is set.
    pub fn from_env(program: &str) -> Result<Option<Self>, OtlpError> {
        Self::from_vars(|name| std::env::var(name).ok(), program)
    }

    /// As [`Self::from_env`], reading variables through `var` (tests pass a map).
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        program: &str,
    ) -> Result<Option<Self>, OtlpError> {
        let set = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let (name, traces_endpoint) = match (set(TRACES_ENDPOINT_VAR), set(ENDPOINT_VAR)) {
            (Some(url), _) => (TRACES_ENDPOINT_VAR, url),
            (None, Some(base)) => (
                ENDPOINT_VAR,
                format!("{}/v1/traces", base.trim_end_matches('/')),
            ),
            (None, None) => return Ok(None),
        };
        let host = traces_endpoint
            .strip_prefix("http://")
            .map(|rest| rest.split(['/', '?']).next().unwrap_or_default());
        if host.is_none_or(str::is_empty) {
            return Err(OtlpError::NotHttp {
                var: name,
                got: traces_endpoint,
            });
        }
        Ok(Some(Self {
            traces_endpoint,
            service_name: set(SERVICE_NAME_VAR).unwrap_or_else(|| program.to_owned()),
        }))
    }
}

/// The span pipeline: a batch exporter to `settings.traces_endpoint`. Keep the provider to
/// flush it at exit ([`SdkTracerProvider::shutdown`]); take tracers from it.
pub fn tracer_provider(settings: &OtlpSettings) -> Result<SdkTracerProvider, OtlpError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(settings.traces_endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| OtlpError::Exporter(e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build())
}

/// The tracer our spans are exported with.
pub fn tracer(provider: &SdkTracerProvider) -> Tracer {
    provider.tracer("eriop")
}

/// Makes `span` the child of `parent` (the caller's or the previous hop's `traceparent`) in
/// the exported trace, and answers what to propagate further: this span's own context when
/// spans are exported (so the next hop's parent is a span the collector has), else the
/// same trace one span further (a new trace when there is no parent). Call it before the
/// span is entered.
pub fn continue_trace(span: &tracing::Span, parent: Option<TraceContext>) -> TraceContext {
    if let Some(parent) = parent {
        let flags = if parent.sampled() {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id_bytes()),
            SpanId::from_bytes(parent.span_id_bytes()),
            flags,
            true,
            TraceState::default(),
        );
        // An error means no exporter is installed (or the span is disabled): nothing to do.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    own.is_valid()
        .then(|| {
            TraceContext::from_ids(
                own.trace_id().to_bytes(),
                own.span_id().to_bytes(),
                own.is_sampled(),
            )
        })
        .flatten()
        .unwrap_or_else(|| parent.map_or_else(TraceContext::root, |p| p.child()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Option<OtlpSettings>, OtlpError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OtlpSettings::from_vars(|name| vars.get(name).cloned(), "eriop-gateway")
    }

    #[test]
    fn no_endpoint_means_no_export() {
        assert_eq!(from(&[]).unwrap(), None);
        assert_eq!(from(&[(ENDPOINT_VAR, "  ")]).unwrap(), None);
    }

    #[test]
    fn the_base_endpoint_gets_the_traces_path_and_the_signal_endpoint_is_taken_as_is() {
        let base = from(&[(ENDPOINT_VAR, "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(base.traces_endpoint, "http://collector:4318/v1/traces");
        assert_eq!(base.service_name, "eriop-gateway");
        let signal = from(&[
            (ENDPOINT_VAR, "http://ignored:4318"),
            (TRACES_ENDPOINT_VAR, "http://collector:4318/custom"),
            (SERVICE_NAME_VAR, "gateway-eu-1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(signal.traces_endpoint, "http://collector:4318/custom");
        assert_eq!(signal.service_name, "gateway-eu-1");
    }

    #[test]
    fn anything_but_a_plain_http_url_is_refused_with_what_to_do() {
        for bad in [
            "https://collector:4318",
            "collector:4318",
            "http://",
            "grpc://x",
        ] {
            let error = from(&[(ENDPOINT_VAR, bad)]).unwrap_err().to_string();
            assert!(error.contains(ENDPOINT_VAR), "{error}");
            assert!(error.contains("collector"), "{error}");
        }
    }

    #[test]
    fn without_an_exporter_a_hop_continues_the_trace_one_span_further() {
        let parent =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let span = tracing::info_span!("hop");
        let next = continue_trace(&span, Some(parent));
        assert_eq!(next.trace_id(), parent.trace_id());
        assert_ne!(next.span_id(), parent.span_id());
        let root = continue_trace(&span, None);
        assert_ne!(root.trace_id(), parent.trace_id());
    }
}
