//! Building the gateway: the one path from [`Settings`] to a listening server, used by
//! `main.rs` and by the end-to-end tests alike (which bind port 0 and read [`App::port`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::workers::progress::Progress;
use crate::workers::supervisor::Supervisor;
use axum::Router;
use eriop_nats::{connect, Settings, Topology};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::http::answers::Answers;
use crate::services::auth::{Auth, Clock, SystemClock};
use crate::services::event_log::{EventLog, StoredSignal};
use crate::services::identity::Standings;
use crate::state::{AppState, Inner};
use crate::workers::relay::{Relay, RelayStatus};

pub(crate) const USER_SNAPSHOT_EVERY: usize = 20;
pub(crate) const AGENCY_SNAPSHOT_EVERY: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("ERIOP_DATABASE_URL is not a valid PostgreSQL URL ({0})")]
    DatabaseUrl(String),
    #[error("ERIOP_REDIS_URL is not a valid Redis URL ({0})")]
    RedisUrl(String),
    #[error("ERIOP_NATS_URL is not usable ({0})")]
    NatsUrl(String),
    #[error("{0}")]
    Auth(#[from] crate::services::auth::AuthSetupError),
    #[error("ERIOP_CORS_ALLOWED_ORIGINS: `{0}` is not an origin such as https://ops.city.example")]
    CorsOrigin(String),
    #[error(
        "cannot listen on {addr} ({reason}). Is another process using it? Set ERIOP_HTTP_ADDR"
    )]
    Listen { addr: String, reason: String },
}

pub struct App {
    listener: TcpListener,
    router: Router,
    relay: Option<Relay>,
    supervisor: Option<Supervisor>,
    relay_status: Option<Arc<RelayStatus>>,
    progress: Arc<Progress>,
    nats: async_nats::Client,
}

impl App {
    /// Connects lazily to every dependency (the gateway starts, and says it is not ready,
    /// while one is down) and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As [`App::build`], with the clock given (tests move time by hand).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let pool_of = |url: &str| {
            crate::tenancy::lazy_pool(
                url,
                &settings.database_role,
                settings.database_max_connections,
                Duration::from_secs(2),
            )
            .map_err(|e| StartupError::DatabaseUrl(e.to_string()))
        };
        let pool = pool_of(settings.database_url.expose_secret())?;
        let redis = redis::Client::open(settings.redis_url.expose_secret())
            .map_err(|e| StartupError::RedisUrl(e.to_string()))?;
        let nats = connect::nats(settings.nats_url.expose_secret(), "eriop-gateway")
            .await
            .map_err(|e| StartupError::NatsUrl(e.to_string()))?;
        let relay = settings.relay_enabled.then(|| {
            Relay::new(
                pool.clone(),
                connect::jetstream(
                    nats.clone(),
                    Duration::from_millis(settings.nats_request_timeout_ms),
                ),
                Topology::from_settings(&settings),
                settings.relay_batch_size,
            )
        });
        let relay_status = relay.as_ref().map(Relay::status);
        let telemetry_apart = settings.telemetry_database_url().expose_secret()
            != settings.database_url.expose_secret();
        let telemetry_pool = if !telemetry_apart {
            pool.clone()
        } else {
            pool_of(settings.telemetry_database_url().expose_secret())?
        };
        let reads = pipelined_reads(&settings);
        let auth = Auth::from_settings(&settings, redis.clone(), clock)?;
        // Users log in often: a snapshot every 20 events keeps loading them short.
        // Every commit of events tells the relay (wherever it runs) at once.
        let stored = StoredSignal::new(nats.clone(), &Topology::from_settings(&settings));
        let users = signalling(
            EventLog::with_snapshots(pool.clone(), USER_SNAPSHOT_EVERY),
            &stored,
        );
        let progress = Progress::new(
            Topology::from_settings(&settings),
            Arc::new(Standings::new(Duration::from_millis(
                settings.standing_cache_ms,
            ))),
            Arc::new(Answers::new(
                Duration::from_millis(settings.read_cache_ms),
                settings.read_cache_bytes,
            )),
        );
        let state = AppState::new(Inner {
            // An agency is renamed, suspended, given quotas and retention over years: a
            // snapshot every 20 events keeps loading it short (its events stay the history).
            agencies: signalling(
                EventLog::with_snapshots(pool.clone(), AGENCY_SNAPSHOT_EVERY),
                &stored,
            ),
            user_store: users.clone(),
            users,
            roles: signalling(EventLog::new(pool.clone()), &stored),
            auth,
            pool: pool.clone(),
            nats,
            redis,
            redis_prefix: settings.redis_key_prefix.clone(),
            read_your_writes_timeout: Duration::from_millis(settings.read_your_writes_timeout_ms),
            progress: progress.clone(),
            device_classes: signalling(EventLog::new(pool.clone()), &stored),
            devices: signalling(
                EventLog::with_snapshots(
                    pool.clone(),
                    crate::http::routes::devices::DEVICE_SNAPSHOT_EVERY,
                ),
                &stored,
            ),
            registries: signalling(EventLog::new(pool.clone()), &stored),
            telemetry_pool,
            telemetry_apart,
            reads,
            api_prefix: settings.api_v1_prefix.clone(),
            mqtt_max_silence: Duration::from_secs(settings.mqtt_max_silence_secs),
            topology: Topology::from_settings(&settings),
            limits: crate::http::limits::Limits::new(
                settings.rate_limit_per_user,
                settings.rate_limit_per_agency,
                settings.rate_limit_per_address,
            ),
            metrics: crate::http::metrics::GatewayMetrics::default(),
            agency_device_quota: settings.agency_device_quota,
            agency_commands_per_minute: settings.agency_commands_per_minute,
        });
        let supervisor = settings.device_supervisor_enabled.then(|| {
            Supervisor::new(
                state.clone(),
                connect::jetstream(
                    state.nats().clone(),
                    Duration::from_millis(settings.nats_request_timeout_ms),
                ),
                Topology::from_settings(&settings),
            )
        });
        let nats = state.nats().clone();
        let router = crate::http::router::router(&settings, state)?;
        let listener =
            TcpListener::bind(settings.http_addr)
                .await
                .map_err(|e| StartupError::Listen {
                    addr: settings.http_addr.to_string(),
                    reason: e.to_string(),
                })?;
        Ok(Self {
            listener,
            router,
            relay,
            supervisor,
            relay_status,
            progress,
            nats,
        })
    }

    /// The device supervisor's clock (liveness timeouts): the system clock unless given.
    pub fn with_device_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        if let Some(supervisor) = self.supervisor.as_mut() {
            supervisor.set_clock(clock);
        }
        self
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The relay's state, when this gateway runs one.
    pub fn relay_status(&self) -> Option<Arc<RelayStatus>> {
        self.relay_status.clone()
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        // The workers stop with the server, also when this future is dropped (a task
        // aborted): both are crash-safe by construction (the relay acks before it deletes,
        // the supervisor acks after it acted), so stopping them is enough.
        let _relay = self
            .relay
            .map(|relay| AbortOnDrop(tokio::spawn(relay.run())));
        let _supervisor = self.supervisor.map(|s| AbortOnDrop(tokio::spawn(s.run())));
        let _progress = AbortOnDrop(tokio::spawn(self.progress.run(self.nats)));
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(eriop_nats::shutdown_signal()).await
    }
}

/// The pool of pipelined reads, unless turned off or the database URL asks for what they
/// do not speak (then the reads go through sqlx, and the log says why).
fn pipelined_reads(settings: &Settings) -> Option<eriop_nats::db::pipelined::Reads> {
    if !settings.pipelined_reads {
        return None;
    }
    match eriop_nats::db::pipelined::Reads::new(
        settings.database_url.expose_secret(),
        &settings.database_role,
        usize::try_from(settings.database_max_connections).unwrap_or(10),
        Duration::from_secs(2),
    ) {
        Ok(reads) => Some(reads),
        Err(why) => {
            tracing::warn!(reason = %why, "reads go through sqlx, a round trip a statement (ERIOP_PIPELINED_READS)");
            None
        }
    }
}

/// `log`, telling `signal` after each commit.
fn signalling<A>(log: EventLog<A>, signal: &StoredSignal) -> EventLog<A>
where
    A: cqrs_es::Aggregate<Services = ()>,
{
    log.signal_stored(signal.clone());
    log
}

/// A background task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
