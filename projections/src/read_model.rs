//! The read models this service keeps, each fed by the events of one aggregate type.

use eriop_nats::StoredEvent;
use sqlx::PgConnection;

use crate::{agencies, roles, users, Outcome, ProjectionError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadModel {
    Agencies,
    Users,
    Roles,
}

impl ReadModel {
    pub const ALL: [ReadModel; 3] = [ReadModel::Agencies, ReadModel::Users, ReadModel::Roles];

    /// The projection's name: its durable consumer and its checkpoint row.
    pub fn name(self) -> &'static str {
        match self {
            Self::Agencies => agencies::NAME,
            Self::Users => users::NAME,
            Self::Roles => roles::NAME,
        }
    }

    pub fn aggregate_type(self) -> &'static str {
        match self {
            Self::Agencies => agencies::AGGREGATE_TYPE,
            Self::Users => users::AGGREGATE_TYPE,
            Self::Roles => roles::AGGREGATE_TYPE,
        }
    }

    pub async fn apply(
        self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<Outcome, ProjectionError> {
        match self {
            Self::Agencies => agencies::apply(conn, event).await,
            Self::Users => users::apply(conn, event).await,
            Self::Roles => roles::apply(conn, event).await,
        }
    }

    /// Empties the read model (rebuild), holding its lock until the transaction ends.
    pub async fn reset(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let table = self.name();
        sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            .execute(&mut *conn)
            .await?;
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}
