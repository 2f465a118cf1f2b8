//! The read models this service keeps, each fed by the events of one aggregate type.

use eriop_nats::StoredEvent;
use sqlx::PgConnection;

use crate::{
    agencies, device_classes, devices, registries, roles, users, Outcome, ProjectionError,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadModel {
    Agencies,
    Users,
    Roles,
    DeviceClasses,
    Devices,
    Registries,
}

impl ReadModel {
    pub const ALL: [ReadModel; 6] = [
        ReadModel::Agencies,
        ReadModel::Users,
        ReadModel::Roles,
        ReadModel::DeviceClasses,
        ReadModel::Devices,
        ReadModel::Registries,
    ];

    /// The projection's name: its durable consumer and its checkpoint row.
    pub fn name(self) -> &'static str {
        match self {
            Self::Agencies => agencies::NAME,
            Self::Users => users::NAME,
            Self::Roles => roles::NAME,
            Self::DeviceClasses => device_classes::NAME,
            Self::Devices => devices::NAME,
            Self::Registries => registries::NAME,
        }
    }

    pub fn aggregate_type(self) -> &'static str {
        match self {
            Self::Agencies => agencies::AGGREGATE_TYPE,
            Self::Users => users::AGGREGATE_TYPE,
            Self::Roles => roles::AGGREGATE_TYPE,
            Self::DeviceClasses => device_classes::AGGREGATE_TYPE,
            Self::Devices => devices::AGGREGATE_TYPE,
            Self::Registries => registries::AGGREGATE_TYPE,
        }
    }

    /// The tables the read model consists of (the first is named after it).
    /// Every table the projection writes (a rebuild makes them anew).
    pub(crate) fn tables(self) -> &'static [&'static str] {
        match self {
            Self::Agencies => &["agencies"],
            Self::Users => &["users", "user_memberships"],
            Self::Roles => &["roles"],
            Self::DeviceClasses => &["device_classes"],
            Self::Devices => &["devices", "device_commands"],
            Self::Registries => &["registries"],
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
            Self::DeviceClasses => device_classes::apply(conn, event).await,
            Self::Devices => devices::apply(conn, event).await,
            Self::Registries => registries::apply(conn, event).await,
        }
    }

    /// Applies a page of this model's events (in store order); answers how many changed
    /// the read model. The same rows as [`ReadModel::apply`] one event at a time, with a
    /// statement per kind of change instead of per event where the model folds events
    /// ([`crate::page`]): devices, whose events are most of a store, and agencies.
    pub async fn apply_page(
        self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<u64, ProjectionError> {
        match self {
            Self::Agencies => agencies::apply_page(conn, events).await,
            Self::Devices => devices::apply_page(conn, events).await,
            _ => crate::page::one_by_one(self, conn, events).await,
        }
    }
}
