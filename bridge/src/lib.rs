//! ERIOP's Fundamentum MQTT bridge: device traffic in (heartbeats, states, events, command
//! replies through the TALQ adapter to JetStream, nothing acked before JetStream has it),
//! commands out (from `COMMANDS` to the devices' `commands` topic).
//!
//! * MQTT v5 (rumqttc) over TLS: CA file, optional client certificate, user name and
//!   password (or a JWT as password); a fixed client id with a persistent session (clean
//!   start off, session expiry of a day), manual acknowledgements, Receive Maximum of
//!   1,000 by default, keep-alive, `$share/{group}/...` when configured.
//! * Its own reconnect backoff: exponential with full jitter, capped at 30 s, reset after a
//!   connection stayed up for a healthy period.
//! * Reports its link, and the age of the last message it got, to Redis for the gateway's
//!   readiness (`eriop_nats::links`).

mod activity;
mod adapter;
mod downlink;
pub mod fundamentum;
pub mod ingest;
mod link;
pub mod metrics;
mod pipeline;
mod quota;
pub mod registry;
pub mod simulator;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eriop_nats::backoff::Backoff;
use eriop_nats::{connect, Settings, Topology};
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use secrecy::ExposeSecret;
use tokio::sync::mpsc;

/// A connection that stayed up this long was healthy: the next failure backs off from the start.
const HEALTHY: Duration = Duration::from_secs(10);
/// The MQTT packets the broker may send us: above the payload limit, so that an oversized
/// payload still arrives (and goes to `DLQ`) instead of being dropped by the broker.
const MAX_PACKET: u32 = 1024 * 1024;
/// How long the broker keeps our session (and the QoS 1 messages for us) while we are away.
const SESSION_EXPIRY_SECS: u32 = 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("ERIOP_MQTT_{which}={path} cannot be read ({reason})")]
    File {
        which: &'static str,
        path: String,
        reason: String,
    },
    #[error("ERIOP_MQTT_CLIENT_CERT_FILE and ERIOP_MQTT_CLIENT_KEY_FILE go together: set both or neither")]
    ClientAuth,
    #[error("ERIOP_REDIS_URL is not a valid Redis URL ({0})")]
    RedisUrl(String),
    #[error("ERIOP_DATABASE_URL is not a valid PostgreSQL URL ({0})")]
    DatabaseUrl(String),
    #[error("ERIOP_NATS_URL is not usable ({0})")]
    NatsUrl(String),
    #[error("{0}")]
    OpsPort(String),
}

/// What the bridge did, for tests and operators.
#[derive(Debug, Default)]
pub struct BridgeStatus {
    connection_attempts: Mutex<Vec<Instant>>,
    groups: AtomicU64,
    messages: AtomicU64,
    samples: AtomicU64,
    dead_lettered: AtomicU64,
    last_message_ms: AtomicU64,
    up: std::sync::atomic::AtomicBool,
    retries: AtomicU64,
    /// The same story for Prometheus (`/metrics` on the operations port).
    pub metrics: metrics::BridgeMetrics,
}

impl BridgeStatus {
    /// When the bridge tried to connect (the last 64 attempts).
    pub fn connection_attempts(&self) -> Vec<Instant> {
        self.connection_attempts
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Whether the MQTT connection is up now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }

    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }

    /// How often a group could not be handed over (NATS or the registry unreachable) and
    /// was retried, nothing acked meanwhile.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.metrics.retries.inc();
    }

    fn record_attempt(&self) {
        if let Ok(mut attempts) = self.connection_attempts.lock() {
            attempts.push(Instant::now());
            let excess = attempts.len().saturating_sub(64);
            attempts.drain(..excess);
        }
    }

    fn record_group(&self, messages: usize, acked: usize) {
        self.metrics.acked.inc_by(acked as u64);
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.messages.fetch_add(messages as u64, Ordering::Relaxed);
        let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        self.last_message_ms.store(now, Ordering::Relaxed);
    }

    fn record_output(&self, samples: usize, dead: usize, published: usize) {
        self.metrics.samples.inc_by(samples as u64);
        self.metrics.dead_lettered.inc_by(dead as u64);
        self.metrics.published.inc_by(published as u64);
        self.samples.fetch_add(samples as u64, Ordering::Relaxed);
        self.dead_lettered.fetch_add(dead as u64, Ordering::Relaxed);
    }

    /// When the last MQTT message was handed over (Unix ms), if any.
    pub fn last_message_ms(&self) -> Option<i64> {
        match self.last_message_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => i64::try_from(ms).ok(),
        }
    }
}

pub struct Bridge {
    options: MqttOptions,
    share_group: String,
    receive_maximum: u16,
    reporter: link::Reporter,
    pool: sqlx::PgPool,
    js: async_nats::jetstream::Context,
    topology: Topology,
    limits: pipeline::Limits,
    registry_ttl: Duration,
    status: Arc<BridgeStatus>,
    nats: async_nats::Client,
    ops: tokio::net::TcpListener,
}

fn millis(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn read(which: &'static str, path: &std::path::Path) -> Result<Vec<u8>, BridgeError> {
    std::fs::read(path).map_err(|e| BridgeError::File {
        which,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The MQTT v5 options of the settings: TLS, credentials, session, flow control.
pub fn mqtt_options(settings: &Settings) -> Result<MqttOptions, BridgeError> {
    let mut options = MqttOptions::new(
        settings.mqtt_client_id.clone(),
        settings.mqtt_broker_host.clone(),
        settings.mqtt_broker_port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(SESSION_EXPIRY_SECS));
    options.set_receive_maximum(Some(settings.mqtt_receive_maximum.max(1)));
    options.set_max_packet_size(Some(MAX_PACKET));
    options.set_manual_acks(true);
    if let Some(user) = &settings.mqtt_username {
        let password = settings
            .mqtt_password
            .as_ref()
            .map(|p| p.expose_secret().to_owned())
            .unwrap_or_default();
        options.set_credentials(user.clone(), password);
    }
    if settings.mqtt_use_tls {
        let client_auth = match (
            &settings.mqtt_client_cert_file,
            &settings.mqtt_client_key_file,
        ) {
            (Some(cert), Some(key)) => Some((
                read("CLIENT_CERT_FILE", cert)?,
                read("CLIENT_KEY_FILE", key)?,
            )),
            (None, None) => None,
            _ => return Err(BridgeError::ClientAuth),
        };
        let transport = match &settings.mqtt_ca_file {
            Some(path) => Transport::Tls(TlsConfiguration::Simple {
                ca: read("CA_FILE", path)?,
                alpn: None,
                client_auth,
            }),
            None if client_auth.is_none() => Transport::tls_with_default_config(),
            None => {
                return Err(BridgeError::File {
                    which: "CA_FILE",
                    path: String::new(),
                    reason: "a client certificate needs the broker's CA file too".into(),
                })
            }
        };
        options.set_transport(transport);
    }
    Ok(options)
}

impl Bridge {
    pub async fn build(settings: &Settings) -> Result<Self, BridgeError> {
        let options = mqtt_options(settings)?;
        let redis = redis::Client::open(settings.redis_url.expose_secret())
            .map_err(|e| BridgeError::RedisUrl(e.to_string()))?;
        let status = Arc::new(BridgeStatus::default());
        let reporter = link::Reporter::new(
            redis,
            &settings.redis_key_prefix,
            &settings.mqtt_client_id,
            status.clone(),
        );
        let pool = eriop_nats::db::lazy_pool(
            settings.database_url.expose_secret(),
            &settings.database_role,
            2,
            Duration::from_secs(5),
        )
        .map_err(|e| BridgeError::DatabaseUrl(e.to_string()))?;
        let nats = connect::nats(settings.nats_url.expose_secret(), "eriop-bridge")
            .await
            .map_err(|e| BridgeError::NatsUrl(e.to_string()))?;
        let js = connect::jetstream(
            nats.clone(),
            Duration::from_millis(settings.nats_request_timeout_ms),
        );
        let ops = eriop_nats::metrics::bind("ERIOP_BRIDGE_OPS_ADDR", &settings.bridge_ops_addr)
            .await
            .map_err(BridgeError::OpsPort)?;
        Ok(Self {
            nats,
            ops,
            options,
            share_group: settings.mqtt_share_group.clone(),
            receive_maximum: settings.mqtt_receive_maximum.max(1),
            reporter,
            pool,
            js,
            topology: Topology::from_settings(settings),
            limits: pipeline::Limits {
                max_samples: settings.bridge_batch_max_samples.max(1),
                window: usize::from(settings.mqtt_receive_maximum.max(1)),
                max_delay: Duration::from_millis(settings.bridge_batch_max_delay_ms),
                rules: ingest::Rules {
                    max_payload: settings.mqtt_max_payload_bytes,
                    max_age_ms: millis(settings.device_timestamp_max_age_secs),
                    max_ahead_ms: millis(settings.device_timestamp_max_ahead_secs),
                },
                device_rate: (
                    settings.bridge_device_messages_per_second,
                    settings.bridge_device_burst,
                ),
                activity_interval_ms: settings.bridge_activity_interval_ms,
                agency_telemetry_per_second: settings.agency_telemetry_per_second,
            },
            registry_ttl: Duration::from_secs(settings.bridge_registry_cache_secs),
            status,
        })
    }

    pub fn status(&self) -> Arc<BridgeStatus> {
        self.status.clone()
    }

    /// Where the operations port listens (`/metrics`, `/health/live`, `/health/ready`).
    pub fn ops_addr(&self) -> Option<std::net::SocketAddr> {
        self.ops.local_addr().ok()
    }

    /// The operations port: ready while the MQTT link is up and NATS connected.
    fn ops_router(&self) -> axum::Router {
        let registry = Arc::new(self.status.metrics.registry());
        let status = self.status.clone();
        let nats = self.nats.clone();
        eriop_nats::metrics::router(
            registry,
            Arc::new(|| Box::pin(async {})),
            Arc::new(move || {
                let up = status.is_up();
                let connected = nats.connection_state() == async_nats::connection::State::Connected;
                Box::pin(async move {
                    match (up, connected) {
                        (true, true) => Ok(()),
                        (false, _) => Err("the MQTT link is down".to_owned()),
                        (true, false) => Err("NATS is not connected".to_owned()),
                    }
                })
            }),
        )
    }

    /// Runs until `shutdown`.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        // Built before `self` is taken apart below.
        let ops_router = self.ops_router();
        let ops = eriop_nats::metrics::serve(self.ops, ops_router);
        let (client, mut eventloop) =
            AsyncClient::new(self.options, usize::from(self.receive_maximum) * 2);
        // Unbounded on purpose: the loop that polls the MQTT connection must never wait for
        // the pipeline, or the pipeline's acks (which that loop sends) could never leave:
        // a deadlock. MQTT's own flow control (Receive Maximum) bounds what is in flight.
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let state = self.reporter.state();
        let status = self.status.clone();
        let filters: Vec<Filter> = fundamentum::subscriptions(&self.share_group)
            .into_iter()
            .map(|f| Filter::new(f, QoS::AtLeastOnce))
            .collect();
        let subscriber = client.clone();
        let link = async move {
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
            let mut connected_at: Option<Instant> = None;
            let mut attempting = true;
            let mut connects: u64 = 0;
            loop {
                if attempting {
                    status.record_attempt();
                    attempting = false;
                }
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected_at = Some(Instant::now());
                        state.send_replace(true);
                        status.up.store(true, Ordering::Relaxed);
                        status.metrics.link_up.set(1);
                        if connects > 0 {
                            status.metrics.reconnects.inc();
                        }
                        connects += 1;
                        tracing::info!("MQTT link up");
                        // Subscribing again is harmless when the session kept them.
                        if let Err(e) = subscriber.subscribe_many(filters.clone()).await {
                            tracing::warn!(error = %e, "cannot subscribe");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        status.metrics.received.inc();
                        if incoming_tx.send(publish).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        status.up.store(false, Ordering::Relaxed);
                        status.metrics.link_up.set(0);
                        if connected_at.take().is_some_and(|t| t.elapsed() >= HEALTHY) {
                            backoff.reset();
                        }
                        if state.send_replace(false) {
                            tracing::warn!(error = %e, "MQTT link down, will retry");
                        } else {
                            tracing::debug!(error = %e, attempt = backoff.attempts(), "MQTT connection failed");
                        }
                        backoff.wait().await;
                        attempting = true;
                    }
                }
            }
        };
        let pipeline = pipeline::Pipeline {
            client: client.clone(),
            js: self.js.clone(),
            topology: self.topology.clone(),
            registry: registry::Registry::new(self.pool.clone(), self.registry_ttl),
            limits: self.limits,
            status: self.status.clone(),
        };
        let downlink = async {
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
            loop {
                if let Err(e) =
                    downlink::run(client.clone(), self.js.clone(), self.topology.clone()).await
                {
                    tracing::warn!(error = %e, "command downlink interrupted, will retry");
                }
                backoff.wait().await;
            }
        };
        tokio::select! {
            _ = link => {}
            _ = pipeline.run(incoming_rx) => {}
            _ = downlink => {}
            _ = self.reporter.run() => {}
            _ = ops => {}
            _ = shutdown => tracing::info!("stopping"),
        }
    }
}
