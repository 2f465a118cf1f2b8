//! Reads in one round trip (issue 13). A read of agency data is a transaction: `BEGIN`, the
//! agency's setting (row-level security, migration 0008), its statements, and the end of the
//! transaction. sqlx sends them one at a time and pings every connection it takes back: four
//! round trips, each a message PostgreSQL wakes up for, for a read of one row (a profile of
//! `GET /api/v1/devices/{id}` at saturation: half of PostgreSQL's CPU was that per-message
//! work, docs/BENCHMARKS.md). rust-postgres pipelines: every statement below is written to
//! the connection before any answer is awaited, so a read costs one round trip.
//!
//! The agency binds as it does in [`super::begin`]: the setting is local to the transaction,
//! which is read-only and always rolled back, in the same write, so no connection carries an
//! agency from one read to the next, and a read whose setting failed runs nothing (the
//! transaction is aborted). The statements are prepared once per connection.

use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, Runtime};
use futures::future::join_all;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::{Scope, PING_WHEN_IDLE};

/// A statement's parameter.
pub type Param<'a> = &'a (dyn ToSql + Sync);

/// One statement of a read, and its parameters.
pub struct Statement<'a> {
    pub sql: &'a str,
    pub params: &'a [Param<'a>],
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// PostgreSQL cannot be reached (down, restarting, every connection busy for too long):
    /// the client may retry.
    #[error("database unreachable: {0}")]
    Unreachable(String),
    /// PostgreSQL refused a statement.
    #[error("database: {0}")]
    Refused(#[source] tokio_postgres::Error),
}

impl ReadError {
    /// The SQLSTATE of a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused(e) => e.code().map(|c| c.code()),
            Self::Unreachable(_) => None,
        }
    }
}

impl From<tokio_postgres::Error> for ReadError {
    fn from(e: tokio_postgres::Error) -> Self {
        // A refusal carries PostgreSQL's own error; anything else is the connection's.
        if e.as_db_error().is_some() {
            Self::Refused(e)
        } else {
            Self::Unreachable(e.to_string())
        }
    }
}

/// A pool of connections for pipelined reads.
#[derive(Clone)]
pub struct Reads {
    pool: Pool,
}

/// Why a database URL gets no pipelined reads (they go through sqlx then).
#[derive(Debug, thiserror::Error)]
pub enum NotPipelined {
    #[error("the URL asks for TLS (sslmode=require); pipelined reads connect in plain text")]
    Tls,
    #[error("rust-postgres does not read this URL: {0}")]
    Url(String),
    #[error("{0}")]
    Pool(String),
}

impl Reads {
    /// A pool of at most `max` connections, acting as `role` (`SET ROLE`; empty: the login
    /// role), connecting on first use and waiting at most `wait` for a connection. The
    /// connection is plain text: a URL that requires TLS, or that rust-postgres cannot read
    /// (`sslmode=verify-full`, sqlx's own options), gets none.
    pub fn new(url: &str, role: &str, max: usize, wait: Duration) -> Result<Self, NotPipelined> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| NotPipelined::Url(e.to_string()))?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(NotPipelined::Tls);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(wait);
        }
        let set_role =
            (!role.is_empty()).then(|| format!("SET ROLE \"{}\"", role.replace('"', "\"\"")));
        let manager = Manager::from_config(config, NoTls, ManagerConfig::default());
        let pool = Pool::builder(manager)
            .max_size(max)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(wait))
            .create_timeout(Some(wait))
            .recycle_timeout(Some(wait))
            .post_create(Hook::async_fn(move |client, _| {
                let set_role = set_role.clone();
                Box::pin(async move {
                    if let Some(statement) = set_role {
                        client
                            .batch_execute(&statement)
                            .await
                            .map_err(HookError::Backend)?;
                    }
                    Ok(())
                })
            }))
            // As sqlx's pools here (`super::lazy_pool`): a connection idle long enough to
            // have been cut (the database restarted) is pinged before it is used.
            .pre_recycle(Hook::async_fn(|client, metrics| {
                Box::pin(async move {
                    if metrics.last_used() >= PING_WHEN_IDLE {
                        client.simple_query("").await.map_err(HookError::Backend)?;
                    }
                    Ok(())
                })
            }))
            .build()
            .map_err(|e| NotPipelined::Pool(e.to_string()))?;
        Ok(Self { pool })
    }

    /// Runs `statements` in one read-only transaction acting for `scope`, in one round trip,
    /// and answers each statement's rows.
    pub async fn read(
        &self,
        scope: Scope,
        statements: &[Statement<'_>],
    ) -> Result<Vec<Vec<Row>>, ReadError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| ReadError::Unreachable(e.to_string()))?;
        let begin = client.prepare_cached("BEGIN READ ONLY").await?;
        let set = client
            .prepare_cached("SELECT set_config($1, $2, true)")
            .await?;
        let rollback = client.prepare_cached("ROLLBACK").await?;
        let mut prepared = Vec::with_capacity(statements.len());
        for statement in statements {
            prepared.push(client.prepare_cached(statement.sql).await?);
        }
        let (name, value) = match scope {
            Scope::Agency(agency) => ("eriop.agency_id", agency.to_string()),
            Scope::All => ("eriop.all_agencies", "on".to_owned()),
        };
        let setting: [Param<'_>; 2] = [&name, &value];
        // Polled together, in this order: each future writes its messages at its first
        // poll, so all of them leave before any answer is awaited (rust-postgres'
        // pipelining), and the rollback is on its way whatever happens to this future.
        let (began, bound, rows, ended) = futures::join!(
            client.execute(&begin, &[]),
            client.execute(&set, &setting),
            join_all(
                prepared
                    .iter()
                    .zip(statements)
                    .map(|(p, s)| client.query(p, s.params))
            ),
            client.execute(&rollback, &[]),
        );
        began?;
        bound?;
        let rows = rows.into_iter().collect::<Result<Vec<_>, _>>()?;
        ended?;
        Ok(rows)
    }
}
