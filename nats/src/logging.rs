//! Structured logs. One JSON object per line by default (what log shippers want); `pretty`
//! for a developer's terminal. Log lines name user ids, never emails, names, tokens,
//! passwords or IP addresses (DESIGN.md rule 9): that is enforced where fields are chosen,
//! and the access log (gateway) never records query strings or bodies.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber. `level` is an `EnvFilter` directive such as `info` or
/// `info,eriop_gateway=debug`; `RUST_LOG` wins when set.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_target(true);
    // An error means a subscriber is already installed (tests build several apps in one
    // process): keep the first.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
