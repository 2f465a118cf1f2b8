//! ERIOP's Fundamentum MQTT bridge.
//!
//! Foundation stage: it keeps an MQTT link to the broker (TLS when configured, credentials
//! from the settings, reconnect with capped jittered backoff) and reports the link's state
//! to Redis, where the gateway's readiness reads it (DESIGN.md, "Gateway edge"). The device
//! traffic (subscriptions, TALQ adapter, batching to JetStream, downlink) is the
//! devices-and-telemetry work, built on this link.

mod link;

use std::time::Duration;

use eriop_nats::backoff::Backoff;
use eriop_nats::Settings;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, TlsConfiguration, Transport};
use secrecy::ExposeSecret;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("ERIOP_MQTT_CA_FILE={path} cannot be read ({reason})")]
    CaFile { path: String, reason: String },
    #[error("ERIOP_REDIS_URL is not a valid Redis URL ({0})")]
    RedisUrl(String),
}

pub struct Bridge {
    options: MqttOptions,
    reporter: link::Reporter,
}

impl Bridge {
    pub fn build(settings: &Settings) -> Result<Self, BridgeError> {
        let mut options = MqttOptions::new(
            settings.mqtt_client_id.clone(),
            settings.mqtt_broker_host.clone(),
            settings.mqtt_broker_port,
        );
        options.set_keep_alive(Duration::from_secs(30));
        // A persistent session: the broker keeps QoS 1 messages for us while we reconnect.
        options.set_clean_session(false);
        if let Some(user) = &settings.mqtt_username {
            let password = settings
                .mqtt_password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_default();
            options.set_credentials(user.clone(), password);
        }
        if settings.mqtt_use_tls {
            let transport = match &settings.mqtt_ca_file {
                Some(path) => Transport::Tls(TlsConfiguration::Simple {
                    ca: std::fs::read(path).map_err(|e| BridgeError::CaFile {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?,
                    alpn: None,
                    client_auth: None,
                }),
                None => Transport::tls_with_default_config(),
            };
            options.set_transport(transport);
        }
        let redis = redis::Client::open(settings.redis_url.expose_secret())
            .map_err(|e| BridgeError::RedisUrl(e.to_string()))?;
        let reporter =
            link::Reporter::new(redis, &settings.redis_key_prefix, &settings.mqtt_client_id);
        Ok(Self { options, reporter })
    }

    /// Keeps the link up and reported until `shutdown`.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        let (_client, mut eventloop) = AsyncClient::new(self.options, 1_000);
        let state = self.reporter.state();
        let link = async {
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff.reset();
                        state.send_replace(true);
                        tracing::info!("MQTT link up");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if state.send_replace(false) {
                            tracing::warn!(error = %e, "MQTT link down, will retry");
                        } else {
                            tracing::debug!(error = %e, attempt = backoff.attempts(), "MQTT reconnect failed");
                        }
                        backoff.wait().await;
                    }
                }
            }
        };
        tokio::select! {
            _ = link => {}
            _ = self.reporter.run() => {}
            _ = shutdown => tracing::info!("stopping"),
        }
    }
}
