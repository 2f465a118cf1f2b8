//! Structured logs. One JSON object per line by default (what log shippers want); `pretty`
//! for a developer's terminal. Log lines name user ids, never emails, names, tokens,
//! passwords or IP addresses (DESIGN.md rule 9): that is enforced where fields are chosen,
//! and the access log (gateway) never records paths, query strings or bodies.

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber, writing to standard output. `level` is an `EnvFilter`
/// directive such as `info` or `info,eriop_gateway=debug`; `RUST_LOG` wins when set.
pub fn init(format: LogFormat, level: &str) {
    // An error means a subscriber is already installed: keep the first.
    let _ = tracing::subscriber::set_global_default(subscriber(format, level, std::io::stdout));
}

/// The subscriber every service uses, writing to `writer` (tests capture it).
pub fn subscriber<W>(format: LogFormat, level: &str, writer: W) -> Box<dyn Subscriber + Send + Sync>
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
                .finish(),
        ),
        LogFormat::Pretty => Box::new(builder.compact().finish()),
    }
}
