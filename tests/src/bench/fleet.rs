//! The ingest benchmark's load: virtual street lights, one MQTT v5 connection each over TLS,
//! sending Fundamentum `states` messages at QoS 1 (four samples each), paced or as fast as
//! the broker's flow control lets them.
//!
//! A message counts as sent once the broker PUBACKed it. Each light's timestamps are its
//! wall clock in milliseconds, strictly increasing (so no two samples share a natural key),
//! which makes `commit time - sample time` the message's latency from publish to committed row.

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eriop_bridge::simulator::light_states;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::watch;

/// QoS 1 messages one light may have unacknowledged at once.
const IN_FLIGHT_PER_LIGHT: u16 = 100;

/// Counters shared by every light of the fleet.
#[derive(Debug, Default)]
pub struct Counters {
    pub issued: AtomicU64,
    pub acked: AtomicU64,
    /// The latest timestamp any light sent (Unix ms).
    pub last_ms: AtomicI64,
}

struct Light {
    client: AsyncClient,
    topic: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Light {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Fleet {
    lights: Vec<Light>,
    pub counters: Arc<Counters>,
}

/// How a run offers its load.
#[derive(Debug, Clone, Copy)]
pub enum Offer {
    /// As fast as QoS 1 flow control lets each light go.
    Saturate,
    /// This many messages a second in all, spread over the lights.
    Rate(u32),
}

/// MQTT v5 options of a light on the broker at `port` whose certificate `ca` signed.
pub fn options(client_id: &str, port: u16, ca: &Path) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_outgoing_inflight_upper_limit(IN_FLIGHT_PER_LIGHT);
    options.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: std::fs::read(ca).unwrap_or_default(),
        alpn: None,
        client_auth: None,
    }));
    options
}

impl Fleet {
    /// Connects `count` lights `{prefix}-{n}` sending as `registries/{registry}/devices/SN-{n}`.
    pub async fn connect(count: usize, registry: &str, prefix: &str, port: u16, ca: &Path) -> Self {
        let counters = Arc::new(Counters::default());
        let mut lights = Vec::with_capacity(count);
        for n in 0..count {
            let (client, mut eventloop) = AsyncClient::new(
                options(&format!("{prefix}-{n}"), port, ca),
                usize::from(IN_FLIGHT_PER_LIGHT),
            );
            let (up_tx, mut up) = watch::channel(false);
            let counted = counters.clone();
            let task = tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            up_tx.send_replace(true);
                        }
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            counted.acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            eprintln!("bench: a light's connection failed ({e}); reconnecting");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            });
            let connected =
                tokio::time::timeout(Duration::from_secs(20), up.wait_for(|u| *u)).await;
            assert!(
                matches!(connected, Ok(Ok(_))),
                "light {n} did not connect to the broker on port {port}"
            );
            lights.push(Light {
                client,
                topic: format!("registries/{registry}/devices/SN-{n}/states"),
                task,
            });
        }
        Self { lights, counters }
    }

    pub fn len(&self) -> usize {
        self.lights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lights.is_empty()
    }

    /// Sends for `duration` as `offer` says, pausing while `open` is false (the saturation
    /// run's bound on what may wait in the pipeline). Returns when every light stopped.
    pub async fn send(&self, offer: Offer, duration: Duration, open: watch::Receiver<bool>) {
        let until = Instant::now() + duration;
        let per_light = match offer {
            Offer::Saturate => None,
            Offer::Rate(rate) => Some(Duration::from_secs_f64(
                self.lights.len() as f64 / f64::from(rate.max(1)),
            )),
        };
        let senders = self.lights.iter().enumerate().map(|(n, light)| {
            let counters = self.counters.clone();
            let mut open = open.clone();
            async move {
                let mut ticker = per_light.map(|period| {
                    // Lights start spread over one period, not all at once.
                    let first = tokio::time::Instant::now()
                        + period.mul_f64(n as f64 / self.lights.len().max(1) as f64);
                    let mut t = tokio::time::interval_at(first, period);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    t
                });
                let mut last = 0_i64;
                let mut step = 0_u64;
                while Instant::now() < until {
                    if let Some(t) = ticker.as_mut() {
                        t.tick().await;
                    }
                    if !*open.borrow() && open.wait_for(|o| *o).await.is_err() {
                        return;
                    }
                    let ts = chrono::Utc::now().timestamp_millis().max(last + 1);
                    last = ts;
                    let body = serde_json::json!({ "timestamp": ts, "states": light_states(step) });
                    step += 1;
                    let payload = serde_json::to_vec(&body).unwrap_or_default();
                    if light
                        .client
                        .publish(light.topic.clone(), QoS::AtLeastOnce, false, payload)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    counters.issued.fetch_add(1, Ordering::Relaxed);
                    counters.last_ms.fetch_max(ts, Ordering::Relaxed);
                }
            }
        });
        futures::future::join_all(senders).await;
    }

    /// Waits (at most `within`) until the broker acknowledged every message issued.
    pub async fn await_acks(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.counters.acked.load(Ordering::Relaxed)
            < self.counters.issued.load(Ordering::Relaxed)
        {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}
