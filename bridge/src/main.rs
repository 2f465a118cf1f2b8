//! `eriop-bridge`: the Fundamentum MQTT bridge.

use std::process::ExitCode;

use clap::Parser;

/// ERIOP's Fundamentum MQTT bridge.
///
/// Subscribes to every Fundamentum device topic, turns heartbeats, states, events and command
/// replies into TALQ records and device activity on NATS JetStream (acking each MQTT message
/// only after JetStream has it), rejects what it cannot read to the DLQ stream, and sends
/// device commands from the COMMANDS stream.
///
/// Configured by ERIOP_* environment variables: ERIOP_MQTT_BROKER_HOST, ERIOP_MQTT_BROKER_PORT,
/// ERIOP_MQTT_USE_TLS, ERIOP_MQTT_CA_FILE, ERIOP_MQTT_CLIENT_CERT_FILE/_KEY_FILE,
/// ERIOP_MQTT_USERNAME, ERIOP_MQTT_PASSWORD (or a JWT), ERIOP_MQTT_CLIENT_ID,
/// ERIOP_MQTT_SHARE_GROUP, ERIOP_MQTT_RECEIVE_MAXIMUM, ERIOP_MQTT_MAX_PAYLOAD_BYTES,
/// ERIOP_BRIDGE_BATCH_MAX_SAMPLES, ERIOP_BRIDGE_BATCH_MAX_DELAY_MS, ERIOP_DATABASE_URL (the
/// device registry), ERIOP_NATS_URL, ERIOP_REDIS_URL; see .env.example. Runs until SIGINT or
/// SIGTERM.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {}

// One thread: its work is I/O-bound waits (broker, JetStream, PostgreSQL) and takes a fraction
// of a core at saturation, while a multi-threaded runtime woke its other worker for nearly
// every message, a context switch each (docs/BENCHMARKS.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    Cli::parse();
    let Some(settings) = eriop_nats::start_service("eriop-bridge") else {
        return ExitCode::FAILURE;
    };
    match eriop_bridge::Bridge::build(&settings).await {
        Ok(bridge) => {
            bridge.run_until(eriop_nats::shutdown_signal()).await;
            eriop_nats::stop_service();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eriop-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}
