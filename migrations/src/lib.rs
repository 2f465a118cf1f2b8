//! ERIOP's schema: reversible SQL migrations in `migrations/sql/` (`NNNN_name.up.sql` and
//! `NNNN_name.down.sql`), embedded in the binary at compile time, applied by sqlx 0.8's
//! migrator (which records them in `_sqlx_migrations` and holds an advisory lock, so two
//! services starting together do not both migrate).

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::PgPool;

pub static MIGRATOR: Migrator = sqlx::migrate!("./sql");

/// Applies every pending migration.
pub async fn up(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// Reverts every applied migration newer than `target` (0: all of them).
pub async fn down(pool: &PgPool, target: i64) -> Result<(), MigrateError> {
    MIGRATOR.undo(pool, target).await
}

/// The versions applied in the database, oldest first.
pub async fn applied(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
}
