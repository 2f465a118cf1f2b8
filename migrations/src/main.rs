//! `eriop-migrate`: applies or reverts ERIOP's schema. See `eriop-migrate --help`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgPoolOptions;
use sqlx::Postgres;

use eriop_nats::Settings;

/// Applies or reverts ERIOP's database migrations.
///
/// The database is ERIOP_DATABASE_URL (and ERIOP_TIMESCALE_URL too when it names another
/// database); every other setting is ignored.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database if needed and apply every pending migration.
    Up,
    /// Revert migrations: all of them, or those newer than --target.
    Down {
        /// Keep migrations up to this version (e.g. 3 keeps 0001..0003). Default: revert all.
        #[arg(long, default_value_t = 0)]
        target: i64,
    },
    /// List the known migrations and whether each is applied.
    Status,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    eriop_nats::install_crypto_provider();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("eriop-migrate: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let settings = Settings::load().map_err(|e| e.to_string())?;
    let mut urls = vec![settings.database_url.expose_secret().to_owned()];
    let telemetry = settings.telemetry_database_url().expose_secret().to_owned();
    if !urls.contains(&telemetry) {
        urls.push(telemetry);
    }
    for (index, url) in urls.iter().enumerate() {
        let which = if index == 0 {
            "database"
        } else {
            "telemetry database"
        };
        migrate(&cli.command, url, which).await?;
    }
    Ok(())
}

async fn migrate(command: &Command, url: &str, which: &str) -> Result<(), String> {
    let unreachable = |e: sqlx::Error| {
        format!("cannot reach the {which} ({e}). Is PostgreSQL running (`make services`) and ERIOP_DATABASE_URL right?")
    };
    if matches!(command, Command::Up)
        && !Postgres::database_exists(url).await.map_err(unreachable)?
    {
        Postgres::create_database(url).await.map_err(unreachable)?;
        eprintln!("created the {which}");
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(unreachable)?;
    match command {
        Command::Up => {
            let before = eriop_migrations::applied(&pool)
                .await
                .map_err(unreachable)?;
            eriop_migrations::up(&pool)
                .await
                .map_err(|e| format!("migration failed: {e}"))?;
            let after = eriop_migrations::applied(&pool)
                .await
                .map_err(unreachable)?;
            eprintln!(
                "{which}: {} migration(s) applied, now at version {}",
                after.len().saturating_sub(before.len()),
                after.last().copied().unwrap_or(0)
            );
        }
        Command::Down { target } => {
            eriop_migrations::down(&pool, *target)
                .await
                .map_err(|e| format!("revert failed: {e}"))?;
            let after = eriop_migrations::applied(&pool)
                .await
                .map_err(unreachable)?;
            eprintln!(
                "{which}: now at version {}",
                after.last().copied().unwrap_or(0)
            );
        }
        Command::Status => {
            let applied = eriop_migrations::applied(&pool)
                .await
                .map_err(unreachable)?;
            for m in eriop_migrations::MIGRATOR
                .iter()
                .filter(|m| m.migration_type.is_up_migration())
            {
                let state = if applied.contains(&m.version) {
                    "applied"
                } else {
                    "pending"
                };
                println!("{which}\t{:04}\t{}\t{state}", m.version, m.description);
            }
        }
    }
    Ok(())
}
