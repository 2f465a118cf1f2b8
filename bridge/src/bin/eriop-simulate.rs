//! `eriop-simulate`: virtual street lights against a Fundamentum (or local) broker.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use eriop_bridge::simulator::{light_states, LightId, VirtualLight};

/// Runs virtual street lights that publish heartbeats and states over MQTT v5 and answer
/// commands, so that telemetry flows through the bridge without hardware.
///
/// The broker and TLS come from the same ERIOP_MQTT_* settings as the bridge. Register the
/// devices first (registry and serials below), e.g. with `POST /api/v1/devices/bulk`.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Number of virtual lights (serials SIM-0001, SIM-0002, ...).
    #[arg(long, env = "DEVICES", default_value_t = 10)]
    devices: u32,
    /// States messages per second, all lights together.
    #[arg(long, env = "RATE", default_value_t = 10.0)]
    rate: f64,
    /// The Fundamentum registry of the lights.
    #[arg(long, default_value = "simulator")]
    registry: String,
    /// Heartbeat interval of each light, in seconds.
    #[arg(long, default_value_t = 60)]
    heartbeat_secs: u64,
    /// Stop after this many seconds (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    duration_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(settings) = eriop_nats::start_service("eriop-simulate") else {
        return ExitCode::FAILURE;
    };
    if cli.rate <= 0.0 || cli.devices == 0 {
        eprintln!("eriop-simulate: --devices and --rate must be positive");
        return ExitCode::FAILURE;
    }
    let mut lights = Vec::new();
    for n in 1..=cli.devices {
        let mut s = settings.clone();
        s.mqtt_client_id = format!("{}-sim-{n:04}", settings.mqtt_client_id);
        let options = match eriop_bridge::mqtt_options(&s) {
            Ok(mut o) => {
                o.set_manual_acks(false);
                o.set_clean_start(true);
                o
            }
            Err(e) => {
                eprintln!("eriop-simulate: {e}");
                return ExitCode::FAILURE;
            }
        };
        let id = LightId {
            registry: cli.registry.clone(),
            serial: format!("SIM-{n:04}"),
        };
        lights.push(VirtualLight::connect(id, options, true).await);
    }
    eprintln!(
        "eriop-simulate: {} lights in registry `{}`, {} states/s; Ctrl-C stops",
        cli.devices, cli.registry, cli.rate
    );
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / cli.rate));
    let mut heartbeat = tokio::time::interval(Duration::from_secs(cli.heartbeat_secs.max(1)));
    let mut progress = tokio::time::interval(Duration::from_secs(5));
    let mut sent: u64 = 0;
    let stop = eriop_nats::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = heartbeat.tick() => {
                for light in &lights {
                    let _ = light.heartbeat(u32::try_from(started.elapsed().as_secs()).unwrap_or(u32::MAX)).await;
                }
            }
            _ = tick.tick() => {
                let light = &lights[(sent % lights.len() as u64) as usize];
                let now = chrono::Utc::now().timestamp_millis();
                if light.states(now, light_states(sent)).await.is_ok() {
                    sent += 1;
                }
            }
            _ = progress.tick() => {
                eprintln!("eriop-simulate: {sent} states messages sent in {:.0} s", started.elapsed().as_secs_f64());
                if cli.duration_secs > 0 && started.elapsed().as_secs() >= cli.duration_secs {
                    break;
                }
            }
        }
    }
    eprintln!("eriop-simulate: stopped after {sent} states messages");
    ExitCode::SUCCESS
}
