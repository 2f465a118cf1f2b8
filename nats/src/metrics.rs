//! Prometheus metrics (issue 14): each service keeps its own [`Registry`] and answers it in
//! the OpenMetrics text format, which Prometheus scrapes. The gateway answers `/metrics` on
//! its API port; the bridge and the projections, which have no API, answer it on an
//! operations port of their own ([`serve`]), beside `/health/live` and `/health/ready` for
//! Kubernetes' probes.
//!
//! Names follow Prometheus' conventions: `eriop_` and the service, base units (seconds),
//! `_total` on counters. Labels are bounded sets (a route's template, never its path; a
//! projection's name; a status code): no id, address or name of anyone is ever a label.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
pub use prometheus_client;
use prometheus_client::registry::Registry;

/// What Prometheus is told it reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry in the text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// `/metrics` as an HTTP answer.
pub fn answer(registry: &Registry) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(registry)).into_response()
}

/// A readiness check: `Ok` when the service can do its work, else what it waits for.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Something to refresh just before each scrape (a gauge read from elsewhere: a
/// consumer's lag, a table's backlog).
pub type BeforeScrape = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The operations port: `/metrics`, `/health/live` (the process answers) and `/health/ready`
/// (`ready` says it can work: 200, else 503 naming what is missing).
pub fn router(registry: Arc<Registry>, before_scrape: BeforeScrape, ready: ReadyCheck) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                let before_scrape = before_scrape.clone();
                async move {
                    before_scrape().await;
                    answer(&registry)
                }
            }),
        )
        .route(
            "/health/live",
            get(|| async { axum::Json(serde_json::json!({"status": "live"})) }),
        )
        .route(
            "/health/ready",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => (
                            StatusCode::OK,
                            axum::Json(serde_json::json!({"status": "ready"})),
                        ),
                        Err(waiting) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(
                                serde_json::json!({"status": "not ready", "error": waiting}),
                            ),
                        ),
                    }
                }
            }),
        )
}

/// Serves the operations port until the process ends (an error is logged: metrics going
/// away must not stop the data path).
pub async fn serve(listener: tokio::net::TcpListener, router: Router) {
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(error = %e, "the operations port (metrics, health) stopped");
    }
}

/// Binds the operations port of `setting` (`host:port`; port 0: any free one, as in tests).
pub async fn bind(setting: &'static str, address: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("{setting}={address} cannot be bound ({e}): choose a free host:port"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn a_counter_is_rendered_with_its_name_and_value() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("eriop_example", "An example", counter.clone());
        counter.inc_by(3);
        let text = render(&registry);
        assert!(text.contains("eriop_example_total 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
