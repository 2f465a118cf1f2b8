//! `eriop-gateway`: the REST API. Configuration comes from ERIOP_* variables (see
//! .env.example); `--help` says so too.

use std::process::ExitCode;

use clap::Parser;

/// ERIOP's REST API gateway.
///
/// Configured by ERIOP_* environment variables and an optional TOML file named by
/// ERIOP_CONFIG_FILE (see .env.example for every setting). Serves until SIGINT or SIGTERM.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {}

#[tokio::main]
async fn main() -> ExitCode {
    Cli::parse();
    let Some(settings) = eriop_nats::start_service("eriop-gateway") else {
        return ExitCode::FAILURE;
    };
    let addr = settings.http_addr;
    let app = match eriop_gateway::App::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("eriop-gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%addr, "ERIOP API listening on http://{addr}");
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eriop-gateway: server error: {e}");
            ExitCode::FAILURE
        }
    }
}
