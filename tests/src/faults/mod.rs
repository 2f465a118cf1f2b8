//! The fault suite (`make test-faults`, `eriop-faults`): a whole deployment on loopback
//! under steady load (QoS 1 telemetry from simulated lights, API commands, device commands
//! the lights answer), in which one component at a time, then two at once, is killed with
//! SIGKILL and started again. After each fault, every accepted message must be stored exactly
//! once, every accepted command be in the event store and the read models, every device
//! command reach its device once (or, when the broker itself was killed, at least once: see
//! [`check::Row::redelivered`]), and every service be healthy again by itself.
//!
//! "Accepted" is what a client was told: a sample is sent once the broker acknowledged it
//! (PUBACK), a command once the gateway answered 201 or 202. What was refused or never
//! answered during an outage is the client's to send again, and is not counted.

pub mod check;
pub mod device;
pub mod stack;
pub mod traffic;

use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use check::Row;
use device::FaultDevice;
use stack::{Stack, Target};

/// How one phase runs.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Load before the fault.
    pub before: Duration,
    /// How long the killed components stay down.
    pub down: Duration,
    /// Load after recovery.
    pub after: Duration,
    /// Longest wait for readiness after a restart.
    pub recover_within: Duration,
    /// Longest wait for every accepted item to show once all is up.
    pub settle_within: Duration,
}

/// A stack under load: its lights, the API traffic, and the phase they follow.
pub struct Run {
    pub stack: Stack,
    pub lights: Vec<FaultDevice>,
    pub accepted: traffic::Shared,
    phase: watch::Sender<Option<u32>>,
    next_phase: u32,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Run {
    pub async fn start(stack: Stack, lights: usize, rate_per_second: u32) -> Self {
        let (phase, watcher) = watch::channel(None);
        let registered = stack.register_lights(lights).await;
        let mut devices = Vec::new();
        for (serial, id) in &registered {
            let light = eriop_bridge::simulator::LightId {
                registry: "faults".into(),
                serial: serial.clone(),
            };
            devices.push(
                FaultDevice::connect(
                    light,
                    id.clone(),
                    |client| stack.device_options(client),
                    watcher.clone(),
                    rate_per_second,
                )
                .await,
            );
        }
        let accepted = traffic::Shared::default();
        let api = tokio::spawn(traffic::run(
            stack.http.clone(),
            stack.url(""),
            stack.token.clone(),
            registered.iter().map(|(_, id)| id.clone()).collect(),
            Duration::from_millis(250),
            watcher,
            accepted.clone(),
        ));
        Self {
            stack,
            lights: devices,
            accepted,
            phase,
            next_phase: 1,
            tasks: vec![api],
        }
    }

    /// One fault: load, kill `targets` (in order), keep them down, start them again (in
    /// order), await readiness, more load, then check everything accepted in the phase.
    pub async fn fault(&mut self, label: &str, targets: &[Target], timing: &Timing) -> Row {
        let phase = self.next_phase;
        self.next_phase += 1;
        let started = chrono::Utc::now();
        eprintln!("faults: [{label}] load");
        self.phase.send_replace(Some(phase));
        tokio::time::sleep(timing.before).await;
        eprintln!("faults: [{label}] kill -9 {}", names(targets));
        for target in targets {
            self.stack.kill(*target).await;
        }
        tokio::time::sleep(timing.down).await;
        eprintln!("faults: [{label}] restart");
        for target in targets {
            self.stack.restart(*target).await;
        }
        let restarted = Instant::now();
        let recovered = self.recovered(timing.recover_within).await;
        let recover_secs = restarted.elapsed().as_secs_f64();
        eprintln!(
            "faults: [{label}] {} after {recover_secs:.1} s",
            if recovered.is_ok() {
                "ready"
            } else {
                "NOT ready"
            }
        );
        tokio::time::sleep(timing.after).await;
        self.phase.send_replace(None);
        // The lights' last messages get their PUBACKs.
        let drained = Instant::now();
        while self.lights.iter().any(FaultDevice::waiting)
            && drained.elapsed() < Duration::from_secs(15)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("faults: [{label}] checking");
        let broker_killed = targets.contains(&Target::Broker);
        let mut row =
            check::settle(self, phase, started, timing.settle_within, broker_killed).await;
        row.fault = label.to_owned();
        row.recover_secs = recover_secs;
        if let Err(why) = recovered {
            row.problems.push(why);
        }
        if let Some(exit) = self.stack.exited() {
            row.problems.push(exit);
        }
        if !row.passed() {
            self.stack.keep_logs = true;
        }
        row
    }

    /// Whether a sample the lights sent after `since` is stored (the ingest path works).
    async fn ingesting_since(&self, since: chrono::DateTime<chrono::Utc>) -> bool {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM telemetry WHERE attribute = $1 AND time > $2)",
        )
        .bind(device::ATTRIBUTE)
        .bind(since)
        .fetch_one(&self.stack.db)
        .await
        .unwrap_or(false)
    }

    /// Readiness 200, a sample sent after the restart stored, and a command answered 201
    /// (read your writes: event store, relay, JetStream, projection, read model).
    async fn recovered(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let since = chrono::Utc::now();
        let mut probe = 0;
        loop {
            if let Some(exit) = self.stack.exited() {
                return Err(exit);
            }
            if self.stack.ready().await && self.ingesting_since(since).await {
                probe += 1;
                let name = format!("Faults probe {}-{probe}", self.next_phase - 1);
                let answer = self
                    .stack
                    .request(reqwest::Method::POST, "/agencies")
                    .json(&serde_json::json!({ "name": name }))
                    .send()
                    .await;
                if let Ok(answer) = answer {
                    let status = answer.status().as_u16();
                    if let Ok(body) = answer.json::<serde_json::Value>().await {
                        if let Some(id) = body["id"].as_str() {
                            traffic::lock(&self.accepted).agencies.push((
                                self.next_phase - 1,
                                id.to_owned(),
                                name,
                            ));
                        }
                    }
                    if status == 201 {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not ready within {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn names(targets: &[Target]) -> String {
    targets
        .iter()
        .map(|t| t.label())
        .collect::<Vec<_>>()
        .join(" + ")
}
