//! The `registries` read model, from the Registry aggregate's events: which agency each
//! Fundamentum registry belongs to (the gateway checks it at registration, the bridge joins
//! it to every device lookup).

use cqrs_es::Aggregate;
use eriop_domain::device::{Registry, RegistryEvent};
use eriop_nats::StoredEvent;
use sqlx::PgConnection;

use crate::{Outcome, ProjectionError};

pub const NAME: &str = "registries";
pub const AGGREGATE_TYPE: &str = <Registry as Aggregate>::TYPE;

pub async fn apply(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<Outcome, ProjectionError> {
    let (id, payload, at) = crate::decode::<RegistryEvent>(event)?;
    let (registry, agency) = match payload {
        RegistryEvent::RegistryAssigned {
            registry,
            agency_id,
        } => (registry, Some(agency_id.as_uuid())),
        RegistryEvent::RegistryUnassigned { registry, .. } => (registry, None),
    };
    // The first event makes the row; each later one moves it on by exactly one version.
    let assigned_at = agency.map(|_| at);
    let changed = if event.sequence == 1 {
        sqlx::query(
            "INSERT INTO registries (registry, id, agency_id, assigned_at, version)
             VALUES ($1, $2, $3, $4, 1) ON CONFLICT DO NOTHING",
        )
        .bind(&registry)
        .bind(id)
        .bind(agency)
        .bind(assigned_at)
        .execute(&mut *conn)
        .await?
    } else {
        sqlx::query(
            "UPDATE registries SET agency_id = $2, assigned_at = $3, version = $4
              WHERE id = $1 AND version = $4 - 1",
        )
        .bind(id)
        .bind(agency)
        .bind(assigned_at)
        .bind(event.sequence)
        .execute(&mut *conn)
        .await?
    }
    .rows_affected();
    crate::outcome(
        conn,
        "SELECT version FROM registries WHERE id = $1",
        id,
        event.sequence,
        changed,
    )
    .await
}
