//! `eriop-projections`: keeps the read models up to date, or rebuilds them.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use eriop_nats::Settings;
use secrecy::ExposeSecret;

/// ERIOP's projections: consume the EVENTS stream into the read models (default), or
/// rebuild the read models from the event store.
///
/// Configured by ERIOP_* environment variables (see .env.example).
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume EVENTS into the read models until SIGINT/SIGTERM (the default).
    Run,
    /// Empty the read models (or one, by name) and replay the event store into them, in one
    /// transaction, while the platform runs: readers see the old rows until the new ones
    /// replace them at once.
    Rebuild {
        /// One read model: agencies, users, roles, device_classes, devices or registries.
        name: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(settings) = eriop_nats::start_service("eriop-projections") else {
        return ExitCode::FAILURE;
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => match eriop_projections::App::build(settings).await {
            Ok(app) => {
                app.run_until_stopped().await;
                eriop_nats::stop_service();
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("eriop-projections: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Rebuild { name } => rebuild(&settings, name.as_deref()).await,
    }
}

async fn rebuild(settings: &Settings, name: Option<&str>) -> ExitCode {
    use eriop_projections::ReadModel;
    let models: Vec<ReadModel> = match name {
        None => ReadModel::ALL.to_vec(),
        Some(name) => match ReadModel::ALL.into_iter().find(|m| m.name() == name) {
            Some(model) => vec![model],
            None => {
                let names: Vec<&str> = ReadModel::ALL.iter().map(|m| m.name()).collect();
                eprintln!(
                    "eriop-projections: no read model {name:?}: give one of {}, or none for all",
                    names.join(", ")
                );
                return ExitCode::from(2);
            }
        },
    };
    let pool = match sqlx::PgPool::connect(settings.database_url.expose_secret()).await {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("eriop-projections: cannot reach the database ({e}); is PostgreSQL up and ERIOP_DATABASE_URL right?");
            return ExitCode::FAILURE;
        }
    };
    let result = eriop_projections::rebuild::rebuild(&pool, &models, |done, total| {
        eprint!("\rrebuilding the read models: {done}/{total} events");
        let _ = std::io::stderr().flush();
    })
    .await;
    eprintln!();
    match result {
        Ok(report) => {
            eprintln!(
                "rebuilt: {} events replayed, {} applied",
                report.events, report.applied
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eriop-projections: rebuild failed, nothing was changed: {e}");
            ExitCode::FAILURE
        }
    }
}
