//! `eriop-bridge`: the Fundamentum MQTT bridge.

use std::process::ExitCode;

use clap::Parser;

/// ERIOP's Fundamentum MQTT bridge.
///
/// Configured by ERIOP_* environment variables (ERIOP_MQTT_BROKER_HOST, ERIOP_MQTT_BROKER_PORT,
/// ERIOP_MQTT_USE_TLS, ERIOP_MQTT_CA_FILE, ERIOP_MQTT_USERNAME, ERIOP_MQTT_PASSWORD, ...; see
/// .env.example). Runs until SIGINT or SIGTERM.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {}

#[tokio::main]
async fn main() -> ExitCode {
    Cli::parse();
    let Some(settings) = eriop_nats::start_service("eriop-bridge") else {
        return ExitCode::FAILURE;
    };
    match eriop_bridge::Bridge::build(&settings).await {
        Ok(bridge) => {
            bridge.run_until(eriop_nats::shutdown_signal()).await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eriop-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}
