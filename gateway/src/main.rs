//! `eriop-gateway`: the REST API, and the creation of the first platform administrator.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};

/// ERIOP's REST API gateway.
///
/// Configured by ERIOP_* environment variables and an optional TOML file named by
/// ERIOP_CONFIG_FILE (see .env.example for every setting). Serves until SIGINT or SIGTERM.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Create the platform agency and its first administrator. Prints a one-time password
    /// (to be changed at first login) unless --password-file gives one.
    BootstrapAdmin {
        /// The administrator's email address.
        #[arg(long)]
        email: String,
        /// A file holding the password, taken as is (no trailing newline is removed but one).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// After a server-key rotation (the new key in ERIOP_SECRET_KEY, the old ones in
    /// ERIOP_SECRET_KEY_PREVIOUS): re-wrap every person's data key and re-index every email
    /// under the new key. Safe to run again; shows its progress.
    RotateKeys,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(settings) = eriop_nats::start_service("eriop-gateway") else {
        return ExitCode::FAILURE;
    };
    match cli.command {
        Some(Command::BootstrapAdmin {
            email,
            password_file,
        }) => return bootstrap(&settings, &email, password_file).await,
        Some(Command::RotateKeys) => return rotate_keys(&settings).await,
        Some(Command::Serve) | None => {}
    }
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
    let stopped = app.run_until_stopped().await;
    eriop_nats::stop_service();
    match stopped {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eriop-gateway: server error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn rotate_keys(settings: &eriop_nats::Settings) -> ExitCode {
    let result = eriop_gateway::rotation::rotate_keys(settings, |done, total| {
        if done == total || done % 500 == 0 {
            eprintln!("eriop-gateway: rotate-keys: {done} of {total} people");
        }
    })
    .await;
    match result {
        Ok(report) => {
            eprintln!(
                "eriop-gateway: rotate-keys: {} data keys re-wrapped, {} emails re-indexed, {} unreadable (a key missing from ERIOP_SECRET_KEY_PREVIOUS?)",
                report.rewrapped, report.reindexed, report.unreadable
            );
            if report.unreadable > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("eriop-gateway: rotate-keys: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bootstrap(
    settings: &eriop_nats::Settings,
    email: &str,
    password_file: Option<PathBuf>,
) -> ExitCode {
    let password = match password_file {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(p) => Some(SecretString::from(
                p.strip_suffix('\n').unwrap_or(&p).to_owned(),
            )),
            Err(e) => {
                eprintln!("eriop-gateway: cannot read {} ({e})", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    match eriop_gateway::bootstrap::bootstrap_admin(settings, email, password).await {
        Ok(done) => {
            eprintln!(
                "platform administrator {} created in agency {}",
                done.user_id, done.agency_id
            );
            if let Some(password) = done.one_time_password {
                eprintln!("one-time password (shown once; it must be changed at first login):");
                println!("{}", password.expose_secret());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eriop-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
