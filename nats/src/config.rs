//! Configuration, in layers: built-in defaults, then the development profile's overrides
//! (when `ERIOP_PROFILE=development`, the default), then an optional TOML file
//! (`ERIOP_CONFIG_FILE`), then `ERIOP_*` environment variables, then secrets read from
//! files named by `ERIOP_*_FILE` (the Docker/Kubernetes secrets convention).
//!
//! Secrets are [`SecretString`]s: they print as `[REDACTED]` and are only exposed where a
//! connection is made. Unknown `ERIOP_*` variables are an error, so a typo is caught at
//! start-up instead of silently falling back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The settings that may also be given as `ERIOP_<NAME>_FILE=/path/to/secret`.
pub const SECRET_SETTINGS: [&str; 7] = [
    "secret_key",
    "secret_key_previous",
    "database_url",
    "timescale_url",
    "redis_url",
    "mqtt_password",
    "nats_url",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Local development and tests: plain MQTT on 1883, readable logs allowed, a missing
    /// `SECRET_KEY` tolerated.
    #[default]
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub profile: Profile,
    #[serde(default = "defaults::app_name")]
    pub app_name: String,
    #[serde(default)]
    pub debug: bool,
    #[serde(default = "defaults::api_v1_prefix")]
    pub api_v1_prefix: String,
    /// Server key (JWT HS256 secret, encryption of TOTP secrets). Required in production.
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    /// Earlier server keys, comma-separated, after a rotation: access tokens they signed
    /// stay valid until they expire, and their public keys stay in the JWKS.
    #[serde(default)]
    pub secret_key_previous: Option<SecretString>,
    #[serde(default = "defaults::jwt_algorithm")]
    pub jwt_algorithm: String,
    #[serde(default = "defaults::jwt_issuer")]
    pub jwt_issuer: String,
    #[serde(default = "defaults::jwt_audience")]
    pub jwt_audience: String,
    /// Two refreshes of one token within this many seconds (several browser tabs) get the
    /// same new pair; later, presenting a rotated token revokes its whole session family.
    #[serde(default = "defaults::refresh_reuse_grace_seconds")]
    pub refresh_reuse_grace_seconds: u64,
    /// Lifetime of the token that carries a login from the password to the second factor.
    #[serde(default = "defaults::mfa_token_minutes")]
    pub mfa_token_minutes: u32,
    /// Consecutive failed logins that lock an account, and for how long.
    #[serde(default = "defaults::lockout_threshold")]
    pub lockout_threshold: u32,
    #[serde(default = "defaults::lockout_minutes")]
    pub lockout_minutes: u32,
    /// Take the client's address from `X-Real-IP` (per-address login throttling). Only behind
    /// a proxy that always sets it (the nginx of docker-compose.yml does): a client could
    /// otherwise choose its own address.
    #[serde(default)]
    pub trust_proxy_headers: bool,
    /// Login attempts one client address may make per minute, whatever the accounts.
    #[serde(default = "defaults::login_attempts_per_ip_per_minute")]
    pub login_attempts_per_ip_per_minute: u32,
    /// Requests a minute one user may make (bursts up to a minute's worth), counted in
    /// Redis across every gateway replica.
    #[serde(default = "defaults::rate_limit_per_user")]
    pub rate_limit_per_user: u32,
    /// Requests a minute all the users of one agency may make together.
    #[serde(default = "defaults::rate_limit_per_agency")]
    pub rate_limit_per_agency: u32,
    /// Requests a minute one client address may make without a token (logins, token
    /// requests, health, the document).
    #[serde(default = "defaults::rate_limit_per_address")]
    pub rate_limit_per_address: u32,
    /// The most live devices an agency may have, unless a platform administrator set the
    /// agency's own (`PATCH /api/v1/agencies/{id}` with `device_quota`).
    #[serde(default = "defaults::agency_device_quota")]
    pub agency_device_quota: u32,
    /// Device commands an agency may send a minute (bursts up to a minute's worth), counted
    /// in Redis across gateway replicas, unless a platform administrator set the agency's own
    /// (`command_quota`).
    #[serde(default = "defaults::agency_commands_per_minute")]
    pub agency_commands_per_minute: u32,
    /// Telemetry messages an agency's devices may send a second (bursts up to a second's
    /// worth), counted by each bridge, unless a platform administrator set the agency's own
    /// (`telemetry_quota`). Past it a message is dead-lettered with the reason.
    #[serde(default = "defaults::agency_telemetry_per_second")]
    pub agency_telemetry_per_second: u32,
    /// Password hashes (argon2id) computed at once; more wait in a queue of this many per
    /// worker, and past it are refused at once with 429 and Retry-After.
    #[serde(default = "defaults::password_hash_queue")]
    pub password_hash_queue: u32,
    /// Platform administrators must enrol in MFA: until they did, their sessions open only
    /// the enrolment. On by default; a development setup may turn it off.
    #[serde(default = "defaults::yes")]
    pub platform_admins_need_mfa: bool,
    #[serde(default = "defaults::access_token_expire_minutes")]
    pub access_token_expire_minutes: u32,
    #[serde(default = "defaults::refresh_token_expire_days")]
    pub refresh_token_expire_days: u32,

    #[serde(default = "defaults::database_url")]
    pub database_url: SecretString,
    #[serde(default = "defaults::database_max_connections")]
    pub database_max_connections: u32,
    /// The role the services act as (`SET ROLE` on each connection): neither superuser nor
    /// BYPASSRLS, so row-level security applies (migration 0008 creates it). Empty: none.
    #[serde(default = "defaults::database_role")]
    pub database_role: String,
    /// Telemetry may live in its own (TimescaleDB) database; defaults to `database_url`.
    #[serde(default)]
    pub timescale_url: Option<SecretString>,
    #[serde(default = "defaults::redis_url")]
    pub redis_url: SecretString,
    /// Every Redis key this deployment writes starts with this (tests use their own).
    #[serde(default = "defaults::redis_key_prefix")]
    pub redis_key_prefix: String,

    #[serde(default = "defaults::nats_url")]
    pub nats_url: SecretString,
    /// Namespace of stream names and subjects. Empty in a deployment; tests set their own so
    /// they can share one server.
    #[serde(default)]
    pub nats_prefix: String,
    #[serde(default = "defaults::nats_request_timeout_ms")]
    pub nats_request_timeout_ms: u64,

    #[serde(default = "defaults::mqtt_broker_host")]
    pub mqtt_broker_host: String,
    #[serde(default = "defaults::mqtt_broker_port")]
    pub mqtt_broker_port: u16,
    #[serde(default = "defaults::yes")]
    pub mqtt_use_tls: bool,
    #[serde(default = "defaults::mqtt_client_id")]
    pub mqtt_client_id: String,
    #[serde(default)]
    pub mqtt_username: Option<String>,
    #[serde(default)]
    pub mqtt_password: Option<SecretString>,
    /// CA bundle for the broker's certificate; the system roots when unset.
    #[serde(default)]
    pub mqtt_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) when the broker asks for mutual TLS.
    #[serde(default)]
    pub mqtt_client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub mqtt_client_key_file: Option<PathBuf>,
    /// Shared-subscription group (`$share/{group}/...`) so several bridges share the load;
    /// empty: plain subscriptions (one bridge).
    #[serde(default)]
    pub mqtt_share_group: String,
    /// MQTT v5 Receive Maximum: QoS 1 messages in flight unacknowledged (DESIGN.md rule 6).
    #[serde(default = "defaults::mqtt_receive_maximum")]
    pub mqtt_receive_maximum: u16,
    /// Readiness: the MQTT link counts as down when a bridge that has received messages got
    /// none for this long (data must flow, not only a connection). 0: never judged.
    #[serde(default = "defaults::mqtt_max_silence_secs")]
    pub mqtt_max_silence_secs: u64,
    /// Payloads larger than this go to `DLQ` (reason `oversized`).
    #[serde(default = "defaults::mqtt_max_payload_bytes")]
    pub mqtt_max_payload_bytes: usize,
    /// Group commit of the bridge: a JetStream message per this many samples at most...
    #[serde(default = "defaults::bridge_batch_max_samples")]
    pub bridge_batch_max_samples: usize,
    /// ...or after this long at most, from the first message of the batch.
    #[serde(default = "defaults::bridge_batch_max_delay_ms")]
    pub bridge_batch_max_delay_ms: u64,
    /// Messages one device may send per second on average (GCRA), and in one burst; past
    /// that its messages go to `DLQ` with reason `rate`. A device reports every few minutes:
    /// the default leaves room for a gateway with beacons catching up after an outage.
    #[serde(default = "defaults::bridge_device_messages_per_second")]
    pub bridge_device_messages_per_second: u32,
    #[serde(default = "defaults::bridge_device_burst")]
    pub bridge_device_burst: u32,
    /// At most one `DEVICE` activity message per device this often (ms); heartbeats go at
    /// once. 0 publishes one per group of MQTT messages (see bridge/src/activity.rs).
    #[serde(default = "defaults::bridge_activity_interval_ms")]
    pub bridge_activity_interval_ms: u64,
    /// The bridge's operations port: `/metrics`, `/health/live`, `/health/ready`.
    #[serde(default = "defaults::bridge_ops_addr")]
    pub bridge_ops_addr: String,
    /// The projections' operations port: `/metrics`, `/health/live`, `/health/ready`.
    #[serde(default = "defaults::projections_ops_addr")]
    pub projections_ops_addr: String,
    /// How often the projections apply each agency's telemetry retention (seconds).
    #[serde(default = "defaults::telemetry_retention_interval_secs")]
    pub telemetry_retention_interval_secs: u64,
    /// How long the bridge trusts what it read of a known device (seconds): a
    /// decommissioning, a registry taken back or an agency suspended reaches it within this.
    #[serde(default = "defaults::bridge_registry_cache_secs")]
    pub bridge_registry_cache_secs: u64,
    /// A device timestamp older than this (seconds before now) goes to `DLQ`.
    #[serde(default = "defaults::device_timestamp_max_age_secs")]
    pub device_timestamp_max_age_secs: u64,
    /// A device timestamp further ahead than this (seconds after now) goes to `DLQ`: a clock
    /// in the future would pin the latest value.
    #[serde(default = "defaults::device_timestamp_max_ahead_secs")]
    pub device_timestamp_max_ahead_secs: u64,

    /// Bytes each JetStream stream may hold (`eriop_nats::streams::StreamLimits`): their sum
    /// must fit in the NATS server's `max_file_store`.
    #[serde(default = "defaults::stream_events_max_bytes")]
    pub stream_events_max_bytes: i64,
    #[serde(default = "defaults::stream_telemetry_max_bytes")]
    pub stream_telemetry_max_bytes: i64,
    #[serde(default = "defaults::stream_device_max_bytes")]
    pub stream_device_max_bytes: i64,
    #[serde(default = "defaults::stream_commands_max_bytes")]
    pub stream_commands_max_bytes: i64,
    #[serde(default = "defaults::stream_dlq_max_bytes")]
    pub stream_dlq_max_bytes: i64,
    /// Copies of every stream in a JetStream cluster: 1 on one server, 3 on a 3-node cluster
    /// (any one node may then fail without losing or stopping anything). At most 5.
    #[serde(default = "defaults::stream_replicas")]
    pub stream_replicas: usize,

    #[serde(default = "defaults::http_addr")]
    pub http_addr: SocketAddr,
    /// Comma-separated origins allowed by CORS (e.g. `https://ops.city.example`). Empty: none.
    #[serde(default)]
    pub cors_allowed_origins: String,
    #[serde(default = "defaults::body_limit_bytes")]
    pub body_limit_bytes: usize,
    /// How long a command's response waits for the read model to show it (DESIGN.md rule 3).
    #[serde(default = "defaults::read_your_writes_timeout_ms")]
    pub read_your_writes_timeout_ms: u64,
    /// How long a gateway may answer from a caller's kept standing (suspension, roles)
    /// when the hint of a change to it is lost; 0 reads it at every request.
    #[serde(default = "defaults::standing_cache_ms")]
    pub standing_cache_ms: u64,
    /// How long a gateway may answer a hot read (a device, the device list, a telemetry
    /// series) from the same agency's answer to the same request a moment ago; a command's
    /// hint ends it at once, so this bounds only how old measurements may be. 0: no answer
    /// is kept.
    #[serde(default = "defaults::read_cache_ms")]
    pub read_cache_ms: u64,
    /// The memory those kept answers may take in all (their bodies), in bytes.
    #[serde(default = "defaults::read_cache_bytes")]
    pub read_cache_bytes: u64,
    /// Read the API's hot reads (a device, the device list) pipelined, one round trip to
    /// PostgreSQL each, rather than through sqlx (a round trip a statement). Off: every read
    /// through sqlx. A database URL that requires TLS reads through sqlx either way.
    #[serde(default = "defaults::yes")]
    pub pipelined_reads: bool,

    /// Run the event-store relay in this gateway (several may; one is active at a time).
    #[serde(default = "defaults::yes")]
    pub relay_enabled: bool,
    #[serde(default = "defaults::relay_batch_size")]
    pub relay_batch_size: u32,
    /// Run the device supervisor in this gateway: liveness (online/offline) and the
    /// forwarding of device commands to the bridge (several may; one is active at a time).
    #[serde(default = "defaults::yes")]
    pub device_supervisor_enabled: bool,

    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
}

mod defaults {
    use secrecy::SecretString;
    use std::net::{Ipv4Addr, SocketAddr};

    pub fn app_name() -> String {
        "ERIOP".into()
    }
    pub fn api_v1_prefix() -> String {
        "/api/v1".into()
    }
    pub fn jwt_algorithm() -> String {
        "EdDSA".into()
    }
    pub fn jwt_issuer() -> String {
        "eriop".into()
    }
    pub fn jwt_audience() -> String {
        "eriop-api".into()
    }
    pub fn refresh_reuse_grace_seconds() -> u64 {
        2
    }
    pub fn mfa_token_minutes() -> u32 {
        5
    }
    pub fn lockout_threshold() -> u32 {
        5
    }
    pub fn lockout_minutes() -> u32 {
        15
    }
    pub fn rate_limit_per_user() -> u32 {
        1_200
    }
    pub fn rate_limit_per_agency() -> u32 {
        12_000
    }
    pub fn agency_device_quota() -> u32 {
        100_000
    }
    pub fn agency_commands_per_minute() -> u32 {
        6_000
    }
    pub fn agency_telemetry_per_second() -> u32 {
        20_000
    }
    pub fn rate_limit_per_address() -> u32 {
        600
    }
    pub fn password_hash_queue() -> u32 {
        8
    }
    pub fn login_attempts_per_ip_per_minute() -> u32 {
        30
    }
    pub fn access_token_expire_minutes() -> u32 {
        15
    }
    pub fn refresh_token_expire_days() -> u32 {
        7
    }
    pub fn database_url() -> SecretString {
        "postgres://postgres@127.0.0.1:5432/eriop".into()
    }
    pub fn database_max_connections() -> u32 {
        10
    }
    pub fn database_role() -> String {
        "eriop_app".into()
    }
    pub fn redis_url() -> SecretString {
        "redis://127.0.0.1:6379".into()
    }
    pub fn redis_key_prefix() -> String {
        "eriop:".into()
    }
    /// The project's own current nats-server (see Makefile), not Debian's 2.9 on 4222.
    pub fn nats_url() -> SecretString {
        "nats://127.0.0.1:4223".into()
    }
    pub fn nats_request_timeout_ms() -> u64 {
        5_000
    }
    pub fn mqtt_broker_host() -> String {
        "127.0.0.1".into()
    }
    pub fn mqtt_broker_port() -> u16 {
        8883
    }
    pub fn mqtt_client_id() -> String {
        "eriop-bridge".into()
    }
    pub fn mqtt_receive_maximum() -> u16 {
        1_000
    }
    pub fn mqtt_max_silence_secs() -> u64 {
        900
    }
    pub fn mqtt_max_payload_bytes() -> usize {
        256 * 1024
    }
    pub fn bridge_batch_max_samples() -> usize {
        300
    }
    pub fn bridge_batch_max_delay_ms() -> u64 {
        5
    }
    pub fn bridge_device_messages_per_second() -> u32 {
        10
    }
    pub fn bridge_device_burst() -> u32 {
        200
    }
    pub fn bridge_activity_interval_ms() -> u64 {
        1_000
    }
    pub fn bridge_ops_addr() -> String {
        "0.0.0.0:9101".to_owned()
    }
    pub fn projections_ops_addr() -> String {
        "0.0.0.0:9102".to_owned()
    }
    pub fn telemetry_retention_interval_secs() -> u64 {
        3_600
    }
    pub fn bridge_registry_cache_secs() -> u64 {
        30
    }
    pub fn device_timestamp_max_age_secs() -> u64 {
        30 * 24 * 3600
    }
    pub fn device_timestamp_max_ahead_secs() -> u64 {
        300
    }
    fn limits() -> crate::streams::StreamLimits {
        crate::streams::StreamLimits::default()
    }
    pub fn stream_events_max_bytes() -> i64 {
        limits().events
    }
    pub fn stream_telemetry_max_bytes() -> i64 {
        limits().telemetry
    }
    pub fn stream_device_max_bytes() -> i64 {
        limits().device
    }
    pub fn stream_commands_max_bytes() -> i64 {
        limits().commands
    }
    pub fn stream_dlq_max_bytes() -> i64 {
        limits().dlq
    }
    pub fn stream_replicas() -> usize {
        1
    }
    pub fn yes() -> bool {
        true
    }
    pub fn http_addr() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))
    }
    pub fn body_limit_bytes() -> usize {
        64 * 1024
    }
    pub fn read_your_writes_timeout_ms() -> u64 {
        5_000
    }
    pub fn standing_cache_ms() -> u64 {
        1_000
    }
    pub fn read_cache_ms() -> u64 {
        500
    }
    pub fn read_cache_bytes() -> u64 {
        16 * 1024 * 1024
    }
    pub fn relay_batch_size() -> u32 {
        500
    }
    pub fn log_level() -> String {
        "info".into()
    }
}

/// Overrides of the development profile: the local broker speaks plain MQTT on 1883, and
/// the streams are sized for the development nats-server (`max_file_store` 8 GB).
#[derive(Serialize)]
struct DevelopmentOverrides {
    mqtt_broker_port: u16,
    mqtt_use_tls: bool,
    platform_admins_need_mfa: bool,
    stream_events_max_bytes: i64,
    stream_telemetry_max_bytes: i64,
    stream_device_max_bytes: i64,
    stream_commands_max_bytes: i64,
    stream_dlq_max_bytes: i64,
}

impl DevelopmentOverrides {
    fn new() -> Self {
        let l = crate::streams::StreamLimits::development();
        Self {
            mqtt_broker_port: 1883,
            mqtt_use_tls: false,
            // `make run` then `make bootstrap-admin`: no authenticator needed to try it.
            platform_admins_need_mfa: false,
            stream_events_max_bytes: l.events,
            stream_telemetry_max_bytes: l.telemetry,
            stream_device_max_bytes: l.device,
            stream_commands_max_bytes: l.commands,
            stream_dlq_max_bytes: l.dlq,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}. Fix the ERIOP_* environment variable or the file named by ERIOP_CONFIG_FILE; .env.example lists every setting")]
    Invalid(String),
    #[error("configuration: {var}={path} cannot be read ({reason}). Fix the path or unset {var}")]
    SecretFile {
        var: String,
        path: String,
        reason: String,
    },
    #[error("configuration: {0}")]
    Missing(String),
}

impl Settings {
    /// Loads the settings of this process: defaults, profile, `ERIOP_CONFIG_FILE`, `ERIOP_*`.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var_os("ERIOP_CONFIG_FILE").map(PathBuf::from);
        Self::load_from(file.as_deref())
    }

    fn load_from(file: Option<&Path>) -> Result<Self, ConfigError> {
        let sources = |base: Figment| {
            let base = match file {
                Some(path) => base.merge(Toml::file_exact(path)),
                None => base,
            };
            base.merge(
                Env::prefixed("ERIOP_")
                    .ignore(&["config_file"])
                    .filter(|key| {
                        let key = key.as_str().to_ascii_lowercase();
                        // ERIOP_TEST_* and ERIOP_DEV_* belong to the test suite and the
                        // development scripts; the secrets' *_FILE are read below. Other
                        // settings named *_file (MQTT_CA_FILE, ...) are paths, read here.
                        let secret_file = SECRET_SETTINGS
                            .iter()
                            .any(|name| key == format!("{name}_file"));
                        !key.starts_with("test_") && !key.starts_with("dev_") && !secret_file
                    }),
            )
        };
        let profile: Profile = sources(Figment::new())
            .extract_inner("profile")
            .unwrap_or_default();
        let mut figment = Figment::new();
        if profile == Profile::Development {
            figment = figment.merge(Serialized::defaults(DevelopmentOverrides::new()));
        }
        let mut figment = sources(figment);
        for name in SECRET_SETTINGS {
            let var = format!("ERIOP_{}_FILE", name.to_uppercase());
            if let Some(path) = std::env::var_os(&var) {
                let value = read_secret_file(&var, Path::new(&path))?;
                figment = figment.merge(Serialized::default(name, value));
            }
        }
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.profile == Profile::Production {
            match &self.secret_key {
                None => {
                    return Err(ConfigError::Missing(
                        "ERIOP_SECRET_KEY is required in production. Generate one with \
                         `openssl rand -base64 48` and set ERIOP_SECRET_KEY or ERIOP_SECRET_KEY_FILE"
                            .into(),
                    ))
                }
                Some(key) if key.expose_secret().len() < 32 => {
                    return Err(ConfigError::Invalid(
                        "ERIOP_SECRET_KEY must be at least 32 bytes (try `openssl rand -base64 48`)"
                            .into(),
                    ))
                }
                Some(_) => {}
            }
        }
        if !self.api_v1_prefix.starts_with('/') || self.api_v1_prefix.ends_with('/') {
            return Err(ConfigError::Invalid(
                "ERIOP_API_V1_PREFIX must start with '/' and not end with one, e.g. /api/v1".into(),
            ));
        }
        if !matches!(self.jwt_algorithm.as_str(), "EdDSA" | "HS256") {
            return Err(ConfigError::Invalid(
                "ERIOP_JWT_ALGORITHM must be EdDSA (default) or HS256".into(),
            ));
        }
        if !self
            .nats_prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(ConfigError::Invalid(
                "ERIOP_NATS_PREFIX may hold only lower-case letters and digits".into(),
            ));
        }
        let limits = self.stream_limits();
        for which in crate::Stream::ALL {
            if limits.max_bytes(which) < 64 * 1024 {
                return Err(ConfigError::Invalid(format!(
                    "ERIOP_STREAM_{}_MAX_BYTES must be at least 65536 (64 KiB)",
                    format!("{which:?}").to_uppercase()
                )));
            }
        }
        if self.bridge_device_messages_per_second == 0 || self.bridge_device_burst == 0 {
            return Err(ConfigError::Invalid(
                "ERIOP_BRIDGE_DEVICE_MESSAGES_PER_SECOND and ERIOP_BRIDGE_DEVICE_BURST must be at least 1"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The size of each JetStream stream.
    pub fn stream_limits(&self) -> crate::streams::StreamLimits {
        crate::streams::StreamLimits {
            events: self.stream_events_max_bytes,
            telemetry: self.stream_telemetry_max_bytes,
            device: self.stream_device_max_bytes,
            commands: self.stream_commands_max_bytes,
            dlq: self.stream_dlq_max_bytes,
        }
    }

    /// The database of the telemetry table: `timescale_url`, else `database_url`.
    pub fn telemetry_database_url(&self) -> &SecretString {
        self.timescale_url.as_ref().unwrap_or(&self.database_url)
    }

    /// Settings for a local run: the defaults of the development profile, no file, no
    /// environment. Tests start from this and change what they need.
    pub fn development() -> Result<Self, ConfigError> {
        Figment::new()
            .merge(Serialized::defaults(DevelopmentOverrides::new()))
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

fn read_secret_file(var: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
        .map_err(|e| ConfigError::SecretFile {
            var: var.to_owned(),
            path: path.display().to_string(),
            reason: e.kind().to_string(),
        })
}

#[cfg(test)]
// figment's Jail closures return figment::Error, which is large; not ours to shrink.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load(jail: &Jail) -> Result<Settings, ConfigError> {
        let file = jail.directory().join("eriop.toml");
        Settings::load_from(file.exists().then_some(file.as_path()))
    }

    #[test]
    fn defaults_work_on_a_development_machine() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let s = load(jail).map_err(|e| e.to_string())?;
            assert_eq!(s.profile, Profile::Development);
            assert_eq!(s.api_v1_prefix, "/api/v1");
            assert_eq!(
                s.database_url.expose_secret(),
                "postgres://postgres@127.0.0.1:5432/eriop"
            );
            assert_eq!(
                s.telemetry_database_url().expose_secret(),
                s.database_url.expose_secret()
            );
            assert_eq!(s.mqtt_broker_port, 1883);
            assert!(!s.mqtt_use_tls);
            assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
            assert_eq!(s.access_token_expire_minutes, 15);
            Ok(())
        });
    }

    #[test]
    fn production_defaults_to_tls_on_8883_and_requires_a_secret_key() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("ERIOP_PROFILE", "production");
            let err = load(jail).unwrap_err().to_string();
            assert!(err.contains("ERIOP_SECRET_KEY is required"), "{err}");
            jail.set_env("ERIOP_SECRET_KEY", "k".repeat(48));
            let s = load(jail).map_err(|e| e.to_string())?;
            assert_eq!(s.mqtt_broker_port, 8883);
            assert!(s.mqtt_use_tls);
            Ok(())
        });
    }

    #[test]
    fn environment_beats_file_beats_defaults() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "eriop.toml",
                "app_name = \"from-file\"\nhttp_addr = \"0.0.0.0:9000\"\n",
            )?;
            jail.set_env("ERIOP_HTTP_ADDR", "127.0.0.1:9100");
            // The test suite's and the scripts' own variables are not settings.
            jail.set_env("ERIOP_TEST_NATS_URL", "nats://elsewhere");
            jail.set_env("ERIOP_DEV_DATA_DIR", "/tmp/x");
            let s = load(jail).map_err(|e| e.to_string())?;
            assert_eq!(s.app_name, "from-file");
            assert_eq!(s.http_addr.to_string(), "127.0.0.1:9100");
            Ok(())
        });
    }

    #[test]
    fn settings_that_are_paths_are_read_from_the_environment() {
        // ERIOP_MQTT_CA_FILE is a path, not a secret's file: a deployment's bridge must see
        // it (it once was dropped with the secrets' *_FILE names, and TLS failed).
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("ERIOP_MQTT_CA_FILE", "/run/secrets/mqtt_ca");
            jail.set_env("ERIOP_MQTT_CLIENT_CERT_FILE", "/run/secrets/cert");
            jail.set_env("ERIOP_MQTT_CLIENT_KEY_FILE", "/run/secrets/key");
            let s = load(jail).map_err(|e| e.to_string())?;
            assert_eq!(s.mqtt_ca_file, Some(PathBuf::from("/run/secrets/mqtt_ca")));
            assert_eq!(
                s.mqtt_client_cert_file,
                Some(PathBuf::from("/run/secrets/cert"))
            );
            assert_eq!(
                s.mqtt_client_key_file,
                Some(PathBuf::from("/run/secrets/key"))
            );
            Ok(())
        });
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("key", &format!("{}\n", "t".repeat(40)))?;
            let path = jail.directory().join("key");
            jail.set_env("ERIOP_SECRET_KEY_FILE", path.display());
            jail.set_env("ERIOP_DATABASE_URL", "postgres://u:hunter2@db/eriop");
            let s = load(jail).map_err(|e| e.to_string())?;
            let key = s.secret_key.as_ref().map(|t| t.expose_secret().to_owned());
            assert_eq!(key.as_deref(), Some("t".repeat(40).as_str()));
            let printed = format!("{s:?}");
            assert!(
                !printed.contains("hunter2") && !printed.contains("tttt"),
                "{printed}"
            );
            Ok(())
        });
    }

    #[test]
    fn mistakes_are_explained() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("ERIOP_HTTP_ADDR", "not-an-address");
            let err = load(jail).unwrap_err().to_string();
            assert!(
                err.contains("HTTP_ADDR") && err.contains(".env.example"),
                "{err}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("ERIOP_DATABSE_URL", "postgres://typo");
            let err = load(jail).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("databse_url"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("ERIOP_SECRET_KEY_FILE", "/nonexistent/secret");
            let err = load(jail).unwrap_err().to_string();
            assert!(
                err.contains("ERIOP_SECRET_KEY_FILE") && err.contains("Fix the path"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn env_example_lists_every_setting() {
        let example = include_str!("../../.env.example");
        let mut listed: Vec<String> = example
            .lines()
            .map(|l| l.trim_start_matches("# "))
            .filter_map(|l| l.strip_prefix("ERIOP_")?.split_once('='))
            .map(|(name, _)| name.to_lowercase())
            .collect();
        listed.sort();
        Jail::expect_with(|jail| {
            jail.clear_env();
            // The refusal of an unknown setting names every known one.
            jail.set_env("ERIOP_NO_SUCH_SETTING", "1");
            let err = load(jail).unwrap_err().to_string();
            let known = err
                .split("expected `one of ")
                .nth(1)
                .and_then(|rest| rest.split("`` for key").next())
                .unwrap_or_default();
            let mut known: Vec<String> = known
                .split(", ")
                .map(|f| f.trim_matches('`').to_owned())
                .collect();
            known.sort();
            assert_eq!(listed, known);
            Ok(())
        });
    }
}
