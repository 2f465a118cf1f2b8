//! The `device_classes` read model, from the DeviceClass aggregate's events.

use cqrs_es::Aggregate;
use eriop_domain::device::{DeviceClass, DeviceClassEvent};
use eriop_nats::StoredEvent;
use sqlx::PgConnection;

use crate::{Outcome, ProjectionError};

pub const NAME: &str = "device_classes";
pub const AGGREGATE_TYPE: &str = <DeviceClass as Aggregate>::TYPE;

pub async fn apply(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<Outcome, ProjectionError> {
    let (id, payload, at) = crate::decode::<DeviceClassEvent>(event)?;
    let DeviceClassEvent::DeviceClassCreated {
        agency_id,
        name,
        functions,
        offline_after_secs,
        ..
    } = payload;
    let functions =
        serde_json::to_value(functions).map_err(|e| ProjectionError::Undecodable(e.to_string()))?;
    let changed = sqlx::query(
        "INSERT INTO device_classes (id, agency_id, name, functions, offline_after_secs, created_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(agency_id.as_uuid())
    .bind(name)
    .bind(functions)
    .bind(i32::try_from(offline_after_secs).unwrap_or(i32::MAX))
    .bind(at)
    .bind(event.sequence)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    crate::outcome(
        conn,
        "SELECT version FROM device_classes WHERE id = $1",
        id,
        event.sequence,
        changed,
    )
    .await
}
