//! ERIOP's schema: reversible SQL migrations in `migrations/sql/` (`NNNN_name.up.sql` and
//! `NNNN_name.down.sql`), embedded in the binary at compile time, applied by sqlx 0.8's
//! migrator (which records them in `_sqlx_migrations` and holds an advisory lock, so two
//! services starting together do not both migrate).

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::PgPool;

pub static MIGRATOR: Migrator = sqlx::migrate!("./sql");

/// Applies every pending migration.
pub async fn up(pool: &PgPool) -> Result<(), MigrateError> {
    ensure_app_role(pool).await?;
    MIGRATOR.run(pool).await
}

/// The role the services act as (migration 0008 grants it its rights) belongs to the whole
/// PostgreSQL cluster, not to one database, and sqlx's migration lock is per database: two
/// databases migrated at once (parallel tests, two deployments on one cluster) both found it
/// missing and both created it, and one failed on `pg_authid`'s unique key. So it is created
/// here first, and a concurrent creation is taken for what it is: the role exists. Migration
/// 0008 then finds it (its own check stays, unchanged: applied migrations are not edited).
async fn ensure_app_role(pool: &PgPool) -> Result<(), MigrateError> {
    sqlx::query(
        "DO $$
         BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'eriop_app') THEN
                 CREATE ROLE eriop_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
             END IF;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN
             NULL; -- created by a concurrent migration: what we wanted
         END
         $$",
    )
    .execute(pool)
    .await
    .map_err(MigrateError::from)?;
    Ok(())
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
