//! Building the gateway: the one path from [`Settings`] to a listening server, used by
//! `main.rs` and by the end-to-end tests alike (which bind port 0 and read [`App::port`]).

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::devices::supervisor::Supervisor;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::routing::{get, post, put};
use axum::{middleware, Router};
use cqrs_es::persist::PersistedEventStore;
use eriop_nats::{connect, Settings, Topology};
use postgres_es::PostgresEventRepository;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{Auth, Clock, SystemClock};
use crate::error::ApiError;
use crate::relay::{Relay, RelayStatus};
use crate::state::{AppState, Inner};
use crate::{
    agencies, audit_routes, auth_routes, devices, edge, health, openapi, roles, telemetry, users,
};

const USER_SNAPSHOT_EVERY: usize = 20;
/// A bulk registration of thousands of devices is larger than an ordinary request.
const BULK_BODY_LIMIT: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("ERIOP_DATABASE_URL is not a valid PostgreSQL URL ({0})")]
    DatabaseUrl(String),
    #[error("ERIOP_REDIS_URL is not a valid Redis URL ({0})")]
    RedisUrl(String),
    #[error("ERIOP_NATS_URL is not usable ({0})")]
    NatsUrl(String),
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthSetupError),
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
        let connect = PgConnectOptions::from_str(settings.database_url.expose_secret())
            .map_err(|e| StartupError::DatabaseUrl(e.to_string()))?;
        let pool = crate::tenancy::act_as(PgPoolOptions::new(), &settings.database_role)
            .max_connections(settings.database_max_connections)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(connect);
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
        let telemetry_pool = if settings.telemetry_database_url().expose_secret()
            == settings.database_url.expose_secret()
        {
            pool.clone()
        } else {
            let connect =
                PgConnectOptions::from_str(settings.telemetry_database_url().expose_secret())
                    .map_err(|e| StartupError::DatabaseUrl(e.to_string()))?;
            crate::tenancy::act_as(PgPoolOptions::new(), &settings.database_role)
                .max_connections(settings.database_max_connections)
                .acquire_timeout(Duration::from_secs(2))
                .connect_lazy_with(connect)
        };
        let auth = Auth::from_settings(&settings, redis.clone(), clock)?;
        let state = AppState::new(Inner {
            agencies: postgres_es::postgres_cqrs(pool.clone(), Vec::new(), ()),
            // Users log in often: a snapshot every 20 events keeps loading them short.
            users: postgres_es::postgres_snapshot_cqrs(
                pool.clone(),
                Vec::new(),
                USER_SNAPSHOT_EVERY,
                (),
            ),
            user_store: PersistedEventStore::new_snapshot_store(
                PostgresEventRepository::new(pool.clone()),
                USER_SNAPSHOT_EVERY,
            ),
            roles: postgres_es::postgres_cqrs(pool.clone(), Vec::new(), ()),
            auth,
            pool: pool.clone(),
            nats,
            redis,
            redis_prefix: settings.redis_key_prefix.clone(),
            read_your_writes_timeout: Duration::from_millis(settings.read_your_writes_timeout_ms),
            device_classes: postgres_es::postgres_cqrs(pool.clone(), Vec::new(), ()),
            devices: postgres_es::postgres_snapshot_cqrs(
                pool.clone(),
                Vec::new(),
                devices::DEVICE_SNAPSHOT_EVERY,
                (),
            ),
            registries: postgres_es::postgres_cqrs(pool.clone(), Vec::new(), ()),
            telemetry_pool,
            api_prefix: settings.api_v1_prefix.clone(),
            mqtt_max_silence: Duration::from_secs(settings.mqtt_max_silence_secs),
            topology: Topology::from_settings(&settings),
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
        let router = router(&settings, state)?;
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

/// A background task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn router(settings: &Settings, state: AppState) -> Result<Router, StartupError> {
    let api = &settings.api_v1_prefix;
    let router = Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/.well-known/jwks.json", get(auth_routes::jwks))
        .route(&format!("{api}/openapi.json"), {
            let doc = std::sync::Arc::new(openapi::document(api));
            get(move || openapi::serve(doc.clone()))
        })
        .route(&format!("{api}/docs"), get(openapi::page))
        .route(&format!("{api}/auth/login"), post(auth_routes::login))
        .route(
            &format!("{api}/auth/mfa/verify"),
            post(auth_routes::mfa_verify),
        )
        .route(&format!("{api}/auth/token"), post(auth_routes::token))
        .route(&format!("{api}/auth/logout"), post(auth_routes::logout))
        .route(&format!("{api}/auth/me"), get(auth_routes::me))
        .route(&format!("{api}/permissions"), get(auth_routes::permissions))
        .route(&format!("{api}/audit/events"), get(audit_routes::events))
        .route(&format!("{api}/audit/verify"), get(audit_routes::verify))
        .route(
            &format!("{api}/auth/mfa/totp"),
            post(auth_routes::start_totp).delete(auth_routes::disable_totp),
        )
        .route(
            &format!("{api}/auth/mfa/totp/confirm"),
            post(auth_routes::confirm_totp),
        )
        .route(
            &format!("{api}/users"),
            post(users::create).get(users::list),
        )
        .route(
            &format!("{api}/users/{{id}}"),
            get(users::get)
                .patch(users::update)
                .delete(users::deactivate),
        )
        .route(&format!("{api}/users/{{id}}/unlock"), post(users::unlock))
        .route(
            &format!("{api}/users/{{id}}/memberships/{{agency_id}}"),
            put(users::grant_membership).delete(users::revoke_membership),
        )
        .route(
            &format!("{api}/auth/switch-agency"),
            post(auth_routes::switch_agency),
        )
        .route(
            &format!("{api}/roles"),
            post(roles::create).get(roles::list),
        )
        .route(
            &format!("{api}/roles/{{id}}"),
            get(roles::get).patch(roles::rename).delete(roles::delete),
        )
        .route(
            &format!("{api}/roles/{{id}}/permissions/{{permission}}"),
            put(roles::grant).delete(roles::revoke),
        )
        .route(
            &format!("{api}/users/{{id}}/roles/{{role}}"),
            put(users::assign_role).delete(users::unassign_role),
        )
        .route(
            &format!("{api}/users/{{id}}/reactivate"),
            post(users::reactivate),
        )
        .route(
            &format!("{api}/users/{{id}}/mfa/reset"),
            post(users::reset_mfa),
        )
        .route(
            &format!("{api}/auth/password"),
            post(auth_routes::change_password),
        )
        .route(
            &format!("{api}/service-accounts"),
            post(users::create_service_account),
        )
        .route(
            &format!("{api}/agencies"),
            get(agencies::list).post(agencies::create),
        )
        .route(
            &format!("{api}/agencies/{{id}}"),
            get(agencies::get).patch(agencies::patch),
        )
        .route(
            &format!("{api}/registries"),
            post(devices::registries::assign).get(devices::registries::list),
        )
        .route(
            &format!("{api}/registries/{{registry}}"),
            get(devices::registries::get).delete(devices::registries::remove),
        )
        .route(
            &format!("{api}/device-classes"),
            post(devices::classes::create).get(devices::classes::list),
        )
        .route(
            &format!("{api}/device-classes/{{id}}"),
            get(devices::classes::get),
        )
        .route(
            &format!("{api}/devices"),
            post(devices::registry::create).get(devices::registry::list),
        )
        .route(
            &format!("{api}/devices/bulk"),
            post(devices::bulk::register).layer(DefaultBodyLimit::max(BULK_BODY_LIMIT)),
        )
        .route(
            &format!("{api}/devices/{{id}}"),
            get(devices::registry::get)
                .patch(devices::registry::patch)
                .delete(devices::registry::decommission),
        )
        .route(
            &format!("{api}/devices/{{id}}/commands"),
            post(devices::commands::issue).get(devices::commands::list),
        )
        .route(
            &format!("{api}/devices/{{id}}/commands/{{command_id}}"),
            get(devices::commands::get),
        )
        .route(
            &format!("{api}/devices/{{id}}/telemetry"),
            get(telemetry::series),
        )
        .route(
            &format!("{api}/devices/{{id}}/telemetry/export"),
            get(telemetry::export),
        )
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this route does not accept that method".into())
        })
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes));
    let router = match cors(&settings.cors_allowed_origins)? {
        Some(cors) => router.layer(cors),
        None => router,
    };
    Ok(router
        .layer(middleware::from_fn(edge::request_context))
        .with_state(state))
}

/// CORS for the configured origins only; none configured: no CORS headers (same origin).
fn cors(origins: &str) -> Result<Option<CorsLayer>, StartupError> {
    let origins = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| HeaderValue::from_str(o).map_err(|_| StartupError::CorsOrigin(o.to_owned())))
        .collect::<Result<Vec<_>, _>>()?;
    if origins.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::PUT,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(edge::REQUEST_ID_HEADER),
            ])
            .expose_headers([HeaderName::from_static(edge::REQUEST_ID_HEADER)])
            .max_age(Duration::from_secs(600)),
    ))
}
