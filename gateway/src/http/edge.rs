//! What happens to every request at the edge: a request id (propagated when the caller sent
//! a sane one, generated otherwise, echoed in the response), a span carrying it so that every
//! log line of the request names it (and its W3C trace id, taken from `traceparent` or
//! new), one access-log line, and its count and latency in
//! the metrics.
//!
//! Hand-written rather than tower-http's request-id layers because an id taken from a client
//! goes into logs, so it is checked first (printable, short), and because one place doing
//! id, span and log is easier to read than three layers.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use eriop_domain::trace::{TraceContext, TRACEPARENT};

use crate::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    /// The request's trace (W3C Trace Context), for whatever the request's task stores or
    /// sends: event metadata, NATS headers.
    static TRACE: TraceContext;
}

/// The trace of the request being handled on this task, if any.
pub fn current_trace() -> Option<TraceContext> {
    TRACE.try_with(|t| *t).ok()
}

/// The request's id, for handlers (event metadata) and errors.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub async fn request_context(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    // The route template (`/api/v1/agencies/{id}`), never the path or the query string:
    // those may carry personal data.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // The caller's trace, one span further (this request's span, exported as its child
    // when spans are exported); or a new trace.
    let parent = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        trace_id = tracing::field::Empty,
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.response.status_code = tracing::field::Empty,
    );
    let trace = eriop_nats::otel::continue_trace(&span, parent);
    span.record("trace_id", tracing::field::display(trace.trace_id()));
    let mut response = TRACE
        .scope(trace, next.run(request).instrument(span.clone()))
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    // Every answer is the caller's own (tokens, one-time passwords, client secrets, TOTP
    // secrets, recovery codes, agency data): no shared or browser cache may keep it.
    response
        .headers_mut()
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    let seconds = started.elapsed().as_secs_f64();
    state
        .metrics()
        .request(method.as_str(), &route, status, seconds);
    let latency_ms = seconds * 1000.0;
    span.in_scope(|| {
        tracing::info!(
            target: "access",
            request_id = %id,
            method = %method,
            route = %route,
            status,
            latency_ms,
            "request"
        )
    });
    response
}

#[cfg(test)]
mod tests {
    use super::acceptable;

    #[test]
    fn only_sane_request_ids_are_propagated() {
        assert!(acceptable("0190f5f2-1b7a-7c1e-9a57-6f0e2c1d9b10"));
        assert!(acceptable("trace:abc.DEF_1"));
        assert!(!acceptable(""));
        assert!(!acceptable(&"a".repeat(129)));
        assert!(!acceptable("jane@example.org"));
        assert!(!acceptable("a b"));
    }
}
