//! The projections' Prometheus metrics (issue 14), answered on their operations port
//! (`ERIOP_PROJECTIONS_OPS_ADDR`): how far each projection is behind its stream, in events
//! and in seconds, read from JetStream at each scrape (nothing to keep in step).

use std::sync::atomic::AtomicU64;

use async_nats::jetstream;
use eriop_nats::{Stream, Topology};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Projection {
    pub projection: String,
}

#[derive(Clone, Default)]
pub struct ProjectionMetrics {
    lag_events: Family<Projection, Gauge>,
    lag_seconds: Family<Projection, Gauge<f64, AtomicU64>>,
    up: Family<Projection, Gauge>,
    /// Telemetry rows committed (new rows: a redelivered sample is not counted twice).
    pub telemetry_rows: Counter,
    /// Minutes of the telemetry rollup written (an agency's device attribute's minute each).
    pub telemetry_minutes: Counter,
    /// How long the oldest closed minute has waited for the rollup (0: none waits).
    rollup_behind: Gauge<f64, AtomicU64>,
}

impl ProjectionMetrics {
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("eriop_projection");
        registry.register(
            "lag_events",
            "Events (or telemetry messages) of its stream the projection has not applied yet",
            self.lag_events.clone(),
        );
        registry.register(
            "lag_seconds",
            "Age of the oldest message the projection has not applied yet (0 when caught up)",
            self.lag_seconds.clone(),
        );
        registry.register(
            "telemetry_rows",
            "Telemetry rows committed by this process (a redelivered sample counts once)",
            self.telemetry_rows.clone(),
        );
        registry.register(
            "telemetry_minutes",
            "Minutes of the telemetry rollup (one device attribute's each) written by this process",
            self.telemetry_minutes.clone(),
        );
        registry.register(
            "telemetry_rollup_behind_seconds",
            "How long the oldest closed minute has waited for the telemetry rollup, read at each scrape (0 when none waits)",
            self.rollup_behind.clone(),
        );
        registry.register(
            "consumer_up",
            "1 when the projection's durable consumer answered at the last scrape, else 0",
            self.up.clone(),
        );
        registry
    }

    /// Reads how far the telemetry rollup is behind: the age of the oldest mark of a minute
    /// it should have taken (closed for more than its grace and a turn). Unknown (the
    /// database away) leaves the last value.
    pub async fn refresh_rollup(&self, telemetry: &sqlx::PgPool) {
        let due = crate::telemetry::rollup::GRACE + crate::telemetry::rollup::EVERY;
        // Marks are the agencies' rows: read across agencies, as the rollup does.
        let behind = async {
            let mut tx = eriop_nats::db::begin(telemetry, eriop_nats::db::Scope::All).await?;
            let seconds: Option<f64> = sqlx::query_scalar(
                "SELECT extract(epoch FROM now() - INTERVAL '1 minute' - $1 * INTERVAL '1 second' - min(minute))::float8
                   FROM telemetry_touched
                  WHERE minute < now() - INTERVAL '1 minute' - $1 * INTERVAL '1 second'",
            )
            .bind(due.as_secs_f64())
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(seconds)
        }
        .await;
        match behind {
            Ok(seconds) => {
                self.rollup_behind.set(seconds.unwrap_or(0.0).max(0.0));
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the telemetry rollup's backlog"),
        }
    }

    /// Reads each projection's durable consumer: what is pending, and how old the first of
    /// it is. A consumer that does not answer reads as down (its last lag is kept).
    pub async fn refresh(
        &self,
        js: &jetstream::Context,
        topology: &Topology,
        projections: &[(&'static str, Stream)],
    ) {
        for (name, stream) in projections {
            let label = Projection {
                projection: (*name).to_owned(),
            };
            match lag(js, topology, name, *stream).await {
                Ok((events, seconds)) => {
                    self.lag_events
                        .get_or_create(&label)
                        .set(i64::try_from(events).unwrap_or(i64::MAX));
                    self.lag_seconds.get_or_create(&label).set(seconds);
                    self.up.get_or_create(&label).set(1);
                }
                Err(e) => {
                    tracing::debug!(projection = name, error = %e, "cannot read the consumer's lag");
                    self.up.get_or_create(&label).set(0);
                }
            }
        }
    }
}

async fn lag(
    js: &jetstream::Context,
    topology: &Topology,
    name: &str,
    stream: Stream,
) -> Result<(u64, f64), async_nats::Error> {
    let stream = js.get_stream(topology.stream_name(stream)).await?;
    let info = stream.consumer_info(name).await?;
    let events = info.num_pending + info.num_ack_pending as u64;
    if events == 0 {
        return Ok((0, 0.0));
    }
    // The first message of the consumer's subjects after its ack floor: the oldest it has
    // not applied.
    let filter = match info.config.filter_subject.as_str() {
        "" => ">".to_owned(),
        subject => subject.to_owned(),
    };
    let oldest = stream
        .raw_message_builder()
        .sequence(info.ack_floor.stream_sequence + 1)
        .next_by_subject(filter)
        .send()
        .await?;
    let now_ns = i128::from(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX));
    #[allow(clippy::cast_precision_loss)]
    let age = (now_ns - oldest.time.unix_timestamp_nanos()) as f64 / 1e9;
    Ok((events, age.max(0.0)))
}
