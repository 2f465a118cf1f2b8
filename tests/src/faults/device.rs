//! A simulated street light that knows which of its messages the broker took.
//!
//! It publishes `states` at a steady rate, QoS 1, one message at a time: the next waits for
//! the broker's PUBACK of the one before (or gives up on it after a while connected, when a
//! broker that lost the session dropped it), so each PUBACK names one sample for sure. A
//! sample counts as sent only once acknowledged: what the device may forget. Commands come
//! on a second connection (the simulator's light, which answers `ongoing` then `success`),
//! so that its replies' PUBACKs never mix with the samples'.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eriop_bridge::simulator::{LightId, VirtualLight};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde_json::json;
use tokio::sync::{watch, Notify};

/// The attribute each sample is stored under (`lampMonitor001.activePower`).
pub const ATTRIBUTE: &str = "activePower";
/// Give up on a message the broker has not acknowledged after this long connected.
const ACK_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Ledger {
    /// The phase and device time (ms) of the one message awaiting its PUBACK.
    outstanding: Option<(u32, i64)>,
    /// Device times of the messages the broker acknowledged, per phase.
    acked: BTreeMap<u32, Vec<i64>>,
    /// Messages given up on (never acknowledged), per phase.
    unconfirmed: BTreeMap<u32, u64>,
    /// How often each command id reached the device.
    commands: BTreeMap<i64, u32>,
}

pub struct FaultDevice {
    pub id: LightId,
    /// ERIOP's id of the device.
    pub device_id: String,
    ledger: Arc<Mutex<Ledger>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|e| e.into_inner())
}

impl FaultDevice {
    /// Connects both connections; `options(client_id)` gives the broker, TLS and session.
    pub async fn connect(
        id: LightId,
        device_id: String,
        options: impl Fn(&str) -> MqttOptions,
        phase: watch::Receiver<Option<u32>>,
        rate_per_second: u32,
    ) -> Self {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let base = format!("{}-{}", id.registry, id.serial);
        let mut commands =
            VirtualLight::connect(id.clone(), options(&format!("{base}-cmd")), true).await;
        let counted = ledger.clone();
        let command_task = tokio::spawn(async move {
            while let Some(received) = commands.next_command().await {
                for command in received.body.as_array().into_iter().flatten() {
                    if let Some(n) = command
                        .get("device_command_id")
                        .and_then(serde_json::Value::as_i64)
                    {
                        *lock(&counted).commands.entry(n).or_default() += 1;
                    }
                }
            }
        });
        let mut telemetry = options(&format!("{base}-tel"));
        telemetry.set_keep_alive(Duration::from_secs(5));
        let (client, eventloop) = AsyncClient::new(telemetry, 10);
        let (connected_tx, connected) = watch::channel(false);
        let acked = Arc::new(Notify::new());
        let driver = tokio::spawn(drive(
            eventloop,
            ledger.clone(),
            connected_tx,
            acked.clone(),
        ));
        let publisher = tokio::spawn(publish(
            client,
            id.clone(),
            ledger.clone(),
            connected,
            acked,
            phase,
            rate_per_second,
        ));
        Self {
            id,
            device_id,
            ledger,
            tasks: vec![command_task, driver, publisher],
        }
    }

    /// The device times the broker acknowledged in `phase`.
    pub fn acked(&self, phase: u32) -> Vec<i64> {
        lock(&self.ledger)
            .acked
            .get(&phase)
            .cloned()
            .unwrap_or_default()
    }

    pub fn unconfirmed(&self, phase: u32) -> u64 {
        lock(&self.ledger)
            .unconfirmed
            .get(&phase)
            .copied()
            .unwrap_or(0)
    }

    /// Whether a message still waits for its PUBACK.
    pub fn waiting(&self) -> bool {
        lock(&self.ledger).outstanding.is_some()
    }

    /// How often the device received command `id`.
    pub fn receipts(&self, command_id: i64) -> u32 {
        lock(&self.ledger)
            .commands
            .get(&command_id)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FaultDevice {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn drive(
    mut eventloop: EventLoop,
    ledger: Arc<Mutex<Ledger>>,
    connected: watch::Sender<bool>,
    acked: Arc<Notify>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected.send_replace(true);
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                // Reason codes below 0x80 are successes (0x10: no subscriber matched).
                let ok = (ack.reason as u8) < 0x80;
                let mut l = lock(&ledger);
                if let Some((phase, ts)) = l.outstanding.take() {
                    if ok {
                        l.acked.entry(phase).or_default().push(ts);
                    } else {
                        *l.unconfirmed.entry(phase).or_default() += 1;
                    }
                }
                drop(l);
                acked.notify_one();
            }
            Ok(_) => {}
            Err(_) => {
                connected.send_replace(false);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One `states` message of one sample per tick while a phase runs (`phase` is `Some`), each
/// after the PUBACK of the one before; ticks missed while waiting are skipped, as a light
/// that samples on a timer does.
async fn publish(
    client: AsyncClient,
    id: LightId,
    ledger: Arc<Mutex<Ledger>>,
    mut connected: watch::Receiver<bool>,
    acked: Arc<Notify>,
    mut phase: watch::Receiver<Option<u32>>,
    rate_per_second: u32,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate_per_second.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = 0i64;
    loop {
        tick.tick().await;
        let Some(current) = *phase.borrow_and_update() else {
            if phase.changed().await.is_err() {
                return;
            }
            continue;
        };
        if connected.wait_for(|c| *c).await.is_err() {
            return;
        }
        // Device time, strictly increasing: each sample has its own natural key.
        let ts = chrono::Utc::now().timestamp_millis().max(last + 1);
        last = ts;
        lock(&ledger).outstanding = Some((current, ts));
        let body = json!({ "timestamp": ts, "states": { "lampMonitor001.activePower": (ts % 100_000) as f64 } });
        let payload = serde_json::to_vec(&body).unwrap_or_default();
        if client
            .publish(id.topic("states"), QoS::AtLeastOnce, false, payload)
            .await
            .is_err()
        {
            return;
        }
        // Wait for the PUBACK; the patience runs only while connected (a broker that came
        // back without the session dropped the message: give up on it then).
        let mut patience = ACK_PATIENCE;
        loop {
            if lock(&ledger).outstanding.is_none() {
                break;
            }
            let started = tokio::time::Instant::now();
            let woke =
                tokio::time::timeout(patience.min(Duration::from_millis(500)), acked.notified())
                    .await;
            if woke.is_err() && *connected.borrow() {
                patience = patience.saturating_sub(started.elapsed());
                if patience.is_zero() {
                    let mut l = lock(&ledger);
                    if let Some((p, _)) = l.outstanding.take() {
                        *l.unconfirmed.entry(p).or_default() += 1;
                    }
                    break;
                }
            }
        }
    }
}
