//! How every service talks to PostgreSQL about agencies. Row-level security (migration 0008)
//! shows a transaction only the rows of the agency it says it acts for, or of all agencies
//! when it says so; a transaction that says neither sees nothing. And each service's pool acts
//! as the unprivileged role `eriop_app` (`ERIOP_DATABASE_ROLE`), which RLS binds.

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};

pub enum Scope<'a> {
    Agency(&'a str),
    /// Every agency: projections, the bridge, the device supervisor, platform views.
    All,
}

/// Begins a transaction acting for `scope`.
pub async fn begin(
    pool: &PgPool,
    scope: Scope<'_>,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (setting, value) = match scope {
        Scope::Agency(agency) => ("eriop.agency_id", agency),
        Scope::All => ("eriop.all_agencies", "on"),
    };
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(setting)
        .bind(value)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Makes every connection of a pool act as `role` (`SET ROLE`; empty: the login role).
pub fn act_as(options: PgPoolOptions, role: &str) -> PgPoolOptions {
    if role.is_empty() {
        return options;
    }
    let statement = format!("SET ROLE \"{}\"", role.replace('"', "\"\""));
    options.after_connect(move |conn, _| {
        let statement = statement.clone();
        Box::pin(async move {
            sqlx::Executor::execute(conn, statement.as_str()).await?;
            Ok(())
        })
    })
}
