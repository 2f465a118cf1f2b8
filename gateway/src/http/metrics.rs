//! The gateway's Prometheus metrics (issue 14), at `GET /metrics` on its own port: requests
//! by route template, method and status with their latency, rate-limit refusals by limit,
//! and the relay's backlog (events stored and not yet on NATS), read at each scrape.
//!
//! `/metrics` answers anyone who reaches the gateway's port; nginx does not pass it on
//! (deploy/nginx), and in Kubernetes only Prometheus may reach the port (NetworkPolicy).
//! Nothing in it names a person or an agency: labels are route templates, methods, status
//! codes and limit names.

use axum::extract::State;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::state::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookLabels {
    /// `first`, `hint` or `pause`: what made a waiting command look at the read model.
    pub woken_by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    /// `kept` (this gateway's answer to the same request a moment ago) or `read`.
    pub from: &'static str,
}

fn latency_buckets() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct GatewayMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    refusals: Family<LimitLabels, Counter>,
    relay_backlog: Gauge,
    relay_oldest_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    looks: Family<LookLabels, Counter>,
    answers: Family<AnswerLabels, Counter>,
    registry: Registry,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_buckets,
        );
        let refusals = Family::<LimitLabels, Counter>::default();
        let relay_backlog = Gauge::default();
        let relay_oldest_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let mut registry = Registry::with_prefix("eriop_gateway");
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route template and method",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        registry.register(
            "rate_limit_refusals",
            "Requests refused with 429 by a rate limit (user, agency, address, login, ...)",
            refusals.clone(),
        );
        registry.register(
            "relay_backlog_events",
            "Events stored in PostgreSQL and not yet published to NATS",
            relay_backlog.clone(),
        );
        registry.register_with_unit(
            "relay_backlog_oldest",
            "Age of the oldest event waiting for the relay (0 when none waits)",
            prometheus_client::registry::Unit::Seconds,
            relay_oldest_seconds.clone(),
        );
        let looks = Family::<LookLabels, Counter>::default();
        registry.register(
            "read_your_writes_looks",
            "Looks at the read model by commands waiting to answer, by what woke them \
             (first, hint, pause; many pauses mean progress hints do not arrive)",
            looks.clone(),
        );
        let answers = Family::<AnswerLabels, Counter>::default();
        registry.register(
            "hot_read_answers",
            "Answers to the hot reads (a device, the device list, a telemetry series), by \
             where they came from: kept (the agency's answer to the same request a moment \
             ago) or read (from PostgreSQL)",
            answers.clone(),
        );
        Self {
            requests,
            latency,
            refusals,
            relay_backlog,
            relay_oldest_seconds,
            looks,
            answers,
            registry,
        }
    }
}

impl GatewayMetrics {
    /// One answered request (from the edge middleware).
    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// A waiting command looked at the read model, woken by `woken_by`.
    pub fn looked(&self, woken_by: &'static str) {
        self.looks.get_or_create(&LookLabels { woken_by }).inc();
    }

    /// A hot read answered, `from` a kept answer or `read`.
    pub fn answered(&self, from: &'static str) {
        self.answers.get_or_create(&AnswerLabels { from }).inc();
    }

    /// One request refused by the limit `limit`.
    pub fn refused(&self, limit: &str) {
        self.refusals
            .get_or_create(&LimitLabels {
                limit: limit.to_owned(),
            })
            .inc();
    }
}

/// `GET /metrics`. The relay backlog is read now (a database that does not answer keeps the
/// last value: the scrape itself still succeeds, and `eriop_gateway_up`-style alerts come
/// from readiness and Prometheus' own `up`).
pub async fn serve(State(state): State<AppState>) -> Response {
    let metrics = state.metrics();
    match relay_backlog(&state).await {
        Ok((events, oldest)) => {
            metrics.relay_backlog.set(events);
            metrics.relay_oldest_seconds.set(oldest);
        }
        Err(e) => tracing::debug!(error = %e, "cannot read the relay backlog for /metrics"),
    }
    eriop_nats::metrics::answer(&metrics.registry)
}

/// `relay_pending` holds keys of events, no agency's data (no row-level security): read
/// without acting for any agency.
async fn relay_backlog(state: &AppState) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(enqueued_at)), 0)::float8
           FROM relay_pending",
    )
    .fetch_one(state.pool())
    .await
}
