//! What every handler may reach: shared, cheap to clone.

use std::sync::Arc;
use std::time::Duration;

use eriop_domain::agency::Agency;
use eriop_domain::role::Role;
use sqlx::PgPool;

use crate::http::routes::devices::{DeviceClassCqrs, DeviceCqrs, RegistryCqrs};
use crate::services::auth::Auth;
use crate::services::event_log::EventLog;
use crate::services::identity::{Identity, UserCqrs, UserStore};

pub type AgencyCqrs = EventLog<Agency>;
pub type RoleCqrs = EventLog<Role>;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub pool: PgPool,
    pub agencies: AgencyCqrs,
    pub nats: async_nats::Client,
    pub redis: redis::Client,
    pub redis_prefix: String,
    pub users: UserCqrs,
    pub roles: RoleCqrs,
    pub user_store: UserStore,
    pub auth: Auth,
    pub read_your_writes_timeout: Duration,
    /// What the read models show, as the projections say it (read your writes).
    pub progress: std::sync::Arc<crate::workers::progress::Progress>,
    pub device_classes: DeviceClassCqrs,
    pub devices: DeviceCqrs,
    pub registries: RegistryCqrs,
    /// The telemetry database (the same as `pool` unless ERIOP_TIMESCALE_URL is set).
    pub telemetry_pool: PgPool,
    /// `telemetry_pool` is a database of its own, not `pool` again.
    pub telemetry_apart: bool,
    /// The registry's database again, for reads in one round trip (`ERIOP_PIPELINED_READS`);
    /// none when off or when its URL asks for what they do not speak (TLS).
    pub reads: Option<eriop_nats::db::pipelined::Reads>,
    pub api_prefix: String,
    pub mqtt_max_silence: Duration,
    /// The streams (names and sizes), for readiness.
    pub topology: eriop_nats::Topology,
    pub limits: crate::http::limits::Limits,
    pub metrics: crate::http::metrics::GatewayMetrics,
    /// Live devices an agency may have unless it has its own quota (ERIOP_AGENCY_DEVICE_QUOTA).
    pub agency_device_quota: u32,
    /// Device commands an agency may send a minute unless it has its own quota
    /// (ERIOP_AGENCY_COMMANDS_PER_MINUTE).
    pub agency_commands_per_minute: u32,
}

impl AppState {
    pub(crate) fn new(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn agencies(&self) -> &AgencyCqrs {
        &self.inner.agencies
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.inner.nats
    }

    pub fn redis(&self) -> &redis::Client {
        &self.inner.redis
    }

    pub fn redis_prefix(&self) -> &str {
        &self.inner.redis_prefix
    }

    pub fn roles(&self) -> &RoleCqrs {
        &self.inner.roles
    }

    pub fn agency_device_quota(&self) -> u32 {
        self.inner.agency_device_quota
    }

    pub fn agency_commands_per_minute(&self) -> u32 {
        self.inner.agency_commands_per_minute
    }

    pub fn metrics(&self) -> &crate::http::metrics::GatewayMetrics {
        &self.inner.metrics
    }

    pub fn limits(&self) -> &crate::http::limits::Limits {
        &self.inner.limits
    }

    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub fn identity(&self) -> Identity<'_> {
        Identity {
            pool: &self.inner.pool,
            users: &self.inner.users,
            store: &self.inner.user_store,
            auth: &self.inner.auth,
        }
    }

    pub fn device_classes(&self) -> &DeviceClassCqrs {
        &self.inner.device_classes
    }

    pub fn devices(&self) -> &DeviceCqrs {
        &self.inner.devices
    }

    pub fn registries(&self) -> &RegistryCqrs {
        &self.inner.registries
    }

    pub fn telemetry_pool(&self) -> &PgPool {
        &self.inner.telemetry_pool
    }

    pub fn telemetry_apart(&self) -> bool {
        self.inner.telemetry_apart
    }

    pub fn reads(&self) -> Option<&eriop_nats::db::pipelined::Reads> {
        self.inner.reads.as_ref()
    }

    /// How long the bridges may hand over no message before readiness says so.
    pub fn mqtt_max_silence(&self) -> Duration {
        self.inner.mqtt_max_silence
    }

    /// `/api/v1` (ERIOP_API_V1_PREFIX), for links in answers.
    pub fn api_prefix(&self) -> &str {
        &self.inner.api_prefix
    }

    pub fn topology(&self) -> &eriop_nats::Topology {
        &self.inner.topology
    }

    pub fn progress(&self) -> &std::sync::Arc<crate::workers::progress::Progress> {
        &self.inner.progress
    }

    pub fn read_your_writes_timeout(&self) -> Duration {
        self.inner.read_your_writes_timeout
    }
}
