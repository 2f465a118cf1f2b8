//! `eriop-bridge`: the Fundamentum MQTT bridge.

use std::process::ExitCode;

use clap::Parser;
use eriop_nats::Settings;

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
    eriop_nats::install_crypto_provider();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("eriop-bridge: {e}");
            return ExitCode::FAILURE;
        }
    };
    eriop_nats::logging::init(settings.log_format, &settings.log_level);
    match eriop_bridge::Bridge::build(&settings) {
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
