//! Structured logs. One JSON object per line by default (what log shippers want); `pretty`
//! for a developer's terminal. Log lines name user ids, never emails, names, tokens,
//! passwords or IP addresses (DESIGN.md rule 9): that is enforced where fields are chosen,
//! and the access log (gateway) never records paths, query strings or bodies.
//!
//! The same spans, when an OTLP endpoint is configured, are also exported as OpenTelemetry
//! spans ([`crate::otel`]).

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;
use crate::otel::{OtlpError, OtlpSettings};

/// The process's span exporter, kept to flush it at exit.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber, writing to standard output, and exporting spans when
/// `otlp` says where. `level` is an `EnvFilter` directive such as `info` or
/// `info,eriop_gateway=debug`; `RUST_LOG` wins when set.
pub fn init(format: LogFormat, level: &str, otlp: Option<&OtlpSettings>) -> Result<(), OtlpError> {
    let tracer = match otlp {
        Some(settings) => {
            let provider = crate::otel::tracer_provider(settings)?;
            let tracer = crate::otel::tracer(&provider);
            let _ = PROVIDER.set(provider);
            Some(tracer)
        }
        None => None,
    };
    // An error means a subscriber is already installed: keep the first.
    let _ =
        tracing::subscriber::set_global_default(subscriber(format, level, std::io::stdout, tracer));
    Ok(())
}

/// Sends the spans still queued (at exit): waits at most a few seconds for the collector.
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
    }
}

/// The subscriber every service uses, writing to `writer` (tests capture it), and exporting
/// its spans with `tracer` when there is one.
pub fn subscriber<W>(
    format: LogFormat,
    level: &str,
    writer: W,
    tracer: Option<Tracer>,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish()
                .with(exported(tracer)),
        ),
        LogFormat::Pretty => Box::new(builder.compact().finish().with(exported(tracer))),
    }
}

/// The OpenTelemetry layer over subscriber `S`, when spans are exported.
fn exported<S>(
    tracer: Option<Tracer>,
) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, Tracer>>
where
    S: Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    // A span's log lines also travel inside it as span events (what trace viewers show
    // beside the timing); they are the same lines, with no personal data. Source locations
    // are left out: they say nothing to an operator and only grow every span.
    tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_location(false)
    })
}
