//! How every service talks to PostgreSQL about agencies. Row-level security (migration 0008)
//! shows a transaction only the rows of the agency it says it acts for, or of all agencies
//! when it says so; a transaction that says neither sees nothing. And each service's pool acts
//! as the unprivileged role `eriop_app` (`ERIOP_DATABASE_ROLE`), which RLS binds.

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

pub mod pipelined;

pub enum Scope {
    /// One agency. Its id, not text: the id is written into the statement that begins the
    /// transaction, and a UUID formats as hex and hyphens only.
    Agency(Uuid),
    /// Every agency: projections, the bridge, the device supervisor, platform views.
    All,
}

/// Begins a transaction acting for `scope`, in one round trip: `BEGIN` and the setting go
/// as one simple query (issue 13: a read paid a round trip for each). Nothing from a client
/// reaches the statement: it holds a constant or a formatted UUID.
pub async fn begin(
    pool: &PgPool,
    scope: Scope,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let statement = match scope {
        Scope::Agency(agency) => {
            format!("BEGIN; SELECT set_config('eriop.agency_id', '{agency}', true)")
        }
        Scope::All => "BEGIN; SELECT set_config('eriop.all_agencies', 'on', true)".to_owned(),
    };
    pool.begin_with(statement).await
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

/// A pool that connects on first use (a service starts, and says it is not ready, while
/// its database is down), acting as `role`: the one way every service builds its pools.
pub fn lazy_pool(
    url: &str,
    role: &str,
    max_connections: u32,
    acquire_timeout: std::time::Duration,
) -> Result<PgPool, sqlx::Error> {
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    Ok(act_as(PgPoolOptions::new(), role)
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        // sqlx pings a connection when it goes back to the pool (so it was alive a moment
        // ago) and, by default, again when it is taken out: a round trip for every query
        // under load, a tenth of a read's (issue 13). Only a connection that sat idle long
        // enough to have been cut (a database restarted, an idle timeout) is pinged now.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// A pooled connection idle this long is pinged before it is used (see [`lazy_pool`]).
pub const PING_WHEN_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits until this process holds the session advisory lock `key`, on a connection of its
/// own, and answers that connection: whoever holds it leads (one relay, one device
/// supervisor, however many replicas); dropping it (or losing it) lets a standby take over.
/// Keep it alive with a query now and then, so a dead database is noticed.
pub async fn leader_lock(
    connect: &sqlx::postgres::PgConnectOptions,
    key: i64,
    poll: std::time::Duration,
) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::Connection;
    let mut lock = sqlx::PgConnection::connect_with(connect).await?;
    while !sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut lock)
        .await?
    {
        tokio::time::sleep(poll).await;
    }
    Ok(lock)
}

/// Store order's horizon (migrations/sql/0019_audit_store_order.up.sql): the id of the
/// oldest transaction of this database that may still store an event: every
/// transaction below it has committed or aborted, and every transaction to come gets a larger
/// id. Asked in a statement of its own, before the page's: the page's snapshot is then taken
/// after every transaction below the horizon had ended, so it sees all their events.
///
/// Transactions are counted in this database only (`pg_stat_activity`), not the whole
/// cluster's (`pg_snapshot_xmin`): another database's long transaction cannot hold the trail
/// back. `backend_xid` is 32 bits; it is widened with the epoch of the snapshot's xmin, below
/// which no running transaction's id lies.
pub async fn store_horizon(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "WITH snapshot AS (
             SELECT pg_snapshot_xmin(s)::text::bigint AS xmin,
                    pg_snapshot_xmax(s)::text::bigint AS xmax
               FROM pg_current_snapshot() s),
         running AS (
             SELECT backend_xid::text::bigint AS xid
               FROM pg_stat_activity
              WHERE datname = current_database() AND backend_xid IS NOT NULL)
         SELECT least(snapshot.xmax,
                      min(CASE WHEN (snapshot.xmin >> 32 << 32) + running.xid >= snapshot.xmin
                               THEN (snapshot.xmin >> 32 << 32) + running.xid
                               ELSE (snapshot.xmin >> 32 << 32) + running.xid + 4294967296 END))
           FROM snapshot LEFT JOIN running ON true
          GROUP BY snapshot.xmin, snapshot.xmax",
    )
    .fetch_one(pool)
    .await
}
