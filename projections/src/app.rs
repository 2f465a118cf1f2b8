//! Building the projections service: used by `main.rs` and by the end-to-end tests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eriop_nats::backoff::Backoff;
use eriop_nats::{connect, Settings, Stream, Topology};
use secrecy::ExposeSecret;
use sqlx::PgPool;

use crate::consumer::Consumer;
use crate::metrics::ProjectionMetrics;
use crate::telemetry::TelemetryConsumer;
use crate::ReadModel;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("ERIOP_DATABASE_URL is not a valid PostgreSQL URL ({0})")]
    DatabaseUrl(String),
    #[error("ERIOP_NATS_URL is not usable ({0})")]
    NatsUrl(String),
    #[error("{0}")]
    OpsPort(String),
}

pub struct App {
    consumers: Vec<Consumer>,
    telemetry: TelemetryConsumer,
    telemetry_pool: PgPool,
    pool: PgPool,
    nats: async_nats::Client,
    js: async_nats::jetstream::Context,
    topology: Topology,
    ops: tokio::net::TcpListener,
    metrics: ProjectionMetrics,
    retention_interval: Duration,
}

impl App {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let pool = lazy_pool(
            settings.database_url.expose_secret(),
            settings.database_max_connections,
            &settings.database_role,
        )?;
        let telemetry_pool = lazy_pool(
            settings.telemetry_database_url().expose_secret(),
            4,
            &settings.database_role,
        )?;
        let nats = connect::nats(settings.nats_url.expose_secret(), "eriop-projections")
            .await
            .map_err(|e| StartupError::NatsUrl(e.to_string()))?;
        let js = connect::jetstream(
            nats.clone(),
            Duration::from_millis(settings.nats_request_timeout_ms),
        );
        let topology = Topology::from_settings(&settings);
        let ops =
            eriop_nats::metrics::bind("ERIOP_PROJECTIONS_OPS_ADDR", &settings.projections_ops_addr)
                .await
                .map_err(StartupError::OpsPort)?;
        let metrics = ProjectionMetrics::default();
        Ok(Self {
            pool: pool.clone(),
            nats,
            js: js.clone(),
            topology: topology.clone(),
            ops,
            metrics: metrics.clone(),
            retention_interval: Duration::from_secs(
                settings.telemetry_retention_interval_secs.max(1),
            ),
            telemetry: TelemetryConsumer {
                pool: telemetry_pool.clone(),
                js: js.clone(),
                topology: topology.clone(),
                max_messages: 500,
                // About a second of work per transaction at the rates measured in
                // docs/BENCHMARKS.md; two in flight hide each one's commit wait.
                max_rows: 20_000,
                max_delay: Duration::from_millis(20),
                in_flight: 2,
                rows: metrics.telemetry_rows.clone(),
                careful: Default::default(),
                way_in: Default::default(),
            },
            consumers: ReadModel::ALL
                .into_iter()
                .map(|model| Consumer {
                    model,
                    pool: pool.clone(),
                    js: js.clone(),
                    topology: Topology::from_settings(&settings),
                })
                .collect(),
            telemetry_pool,
        })
    }

    /// Where the operations port listens (`/metrics`, `/health/live`, `/health/ready`).
    pub fn ops_addr(&self) -> Option<std::net::SocketAddr> {
        self.ops.local_addr().ok()
    }

    /// The operations port: the lag of every projection, read at each scrape; ready while
    /// NATS is connected and PostgreSQL answers.
    fn ops_router(&self) -> axum::Router {
        let projections: Vec<(&'static str, Stream)> = ReadModel::ALL
            .into_iter()
            .map(|m| (m.name(), Stream::Events))
            .chain([(crate::telemetry::NAME, Stream::Telemetry)])
            .collect();
        let projections = Arc::new(projections);
        let (metrics, js, topology) =
            (self.metrics.clone(), self.js.clone(), self.topology.clone());
        let (nats, pool) = (self.nats.clone(), self.pool.clone());
        let telemetry = self.telemetry_pool.clone();
        eriop_nats::metrics::router(
            Arc::new(self.metrics.registry()),
            Arc::new(move || {
                let (metrics, js, topology, projections, telemetry) = (
                    metrics.clone(),
                    js.clone(),
                    topology.clone(),
                    projections.clone(),
                    telemetry.clone(),
                );
                Box::pin(async move {
                    metrics.refresh(&js, &topology, &projections).await;
                    metrics.refresh_rollup(&telemetry).await;
                })
            }),
            Arc::new(move || {
                let (nats, pool) = (nats.clone(), pool.clone());
                Box::pin(async move {
                    if nats.connection_state() != async_nats::connection::State::Connected {
                        return Err("NATS is not connected".to_owned());
                    }
                    sqlx::query("SELECT 1")
                        .execute(&pool)
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("PostgreSQL does not answer: {e}"))
                })
            }),
        )
    }

    /// Runs the consumers until `shutdown` completes. Each consumer retries with backoff
    /// after losing NATS or the database, and resumes where its acks stopped.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let ops_router = self.ops_router();
        let ops = eriop_nats::metrics::serve(self.ops, ops_router);
        let consumers = futures::future::join_all(self.consumers.iter().map(|consumer| async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                if let Err(e) = consumer.consume().await {
                    tracing::warn!(projection = consumer.model.name(), error = %e, attempt = backoff.attempts(), "projection interrupted, will retry");
                }
                backoff.wait().await;
            }
        }));
        let telemetry = async {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                if let Err(e) = self.telemetry.consume().await {
                    tracing::warn!(projection = crate::telemetry::NAME, error = %e, attempt = backoff.attempts(), "telemetry interrupted, will retry");
                }
                backoff.wait().await;
            }
        };
        let partitions = keep_telemetry_partitions(&self.telemetry_pool);
        let retention = crate::retention::run(
            self.pool.clone(),
            self.telemetry_pool.clone(),
            self.retention_interval,
        );
        let rollup = crate::telemetry::rollup::run(
            self.telemetry_pool.clone(),
            self.metrics.telemetry_minutes.clone(),
        );
        tokio::select! {
            _ = consumers => {}
            _ = telemetry => {}
            _ = rollup => {}
            _ = partitions => {}
            _ = retention => {}
            _ = ops => {}
            _ = shutdown => tracing::info!("stopping"),
        }
    }

    pub async fn run_until_stopped(self) {
        self.run_until(eriop_nats::shutdown_signal()).await
    }
}

fn lazy_pool(url: &str, max: u32, role: &str) -> Result<PgPool, StartupError> {
    eriop_nats::db::lazy_pool(url, role, max, Duration::from_secs(5))
        .map_err(|e| StartupError::DatabaseUrl(e.to_string()))
}

/// On plain PostgreSQL, telemetry partitions are created two weeks ahead, every hour
/// (a no-op on TimescaleDB, whose hypertable makes its own chunks).
async fn keep_telemetry_partitions(pool: &PgPool) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match sqlx::query_scalar::<_, i32>(
            "SELECT eriop_ensure_telemetry_partitions(current_date - 1, 16)",
        )
        .fetch_one(pool)
        .await
        {
            Ok(created) if created > 0 => tracing::info!(created, "telemetry partitions created"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot create telemetry partitions, will retry in an hour")
            }
        }
    }
}
