//! Which agency a database transaction acts for. Row-level security (migration 0008) shows
//! a transaction only the rows of its agency, or of all agencies when it says so: a query
//! that forgets its agency filter still cannot see another agency's rows.

use sqlx::{PgPool, Postgres, Transaction};

pub enum Scope<'a> {
    Agency(&'a str),
    /// The platform's own views (platform admins, read-your-writes checks by id).
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

/// Makes every connection of a pool act as `role` (empty: as the login role).
pub fn act_as(options: sqlx::postgres::PgPoolOptions, role: &str) -> sqlx::postgres::PgPoolOptions {
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
