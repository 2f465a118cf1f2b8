//! The `roles` read model, from the Role aggregate's events.

use cqrs_es::Aggregate;
use eriop_domain::role::{Role, RoleEvent};
use eriop_nats::StoredEvent;
use sqlx::PgConnection;

use crate::{Outcome, ProjectionError};

pub const NAME: &str = "roles";
pub const AGGREGATE_TYPE: &str = <Role as Aggregate>::TYPE;

pub async fn apply(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<Outcome, ProjectionError> {
    let (id, payload, at) = crate::decode::<RoleEvent>(event)?;
    let changed = if let RoleEvent::RoleCreated {
        agency_id,
        name,
        permissions,
        ..
    } = payload
    {
        let permissions: Vec<&str> = permissions.iter().map(|p| p.as_str()).collect();
        sqlx::query(
            "INSERT INTO roles (id, agency_id, name, permissions, created_at, updated_at, version)
             VALUES ($1, $2, $3, $4, $5, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(agency_id.as_uuid())
        .bind(name)
        .bind(permissions)
        .bind(at)
        .bind(event.sequence)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    } else {
        let (name, added, removed, deleted) = match payload {
            RoleEvent::RoleRenamed { name } => (Some(name), None, None, false),
            RoleEvent::PermissionGranted { permission } => {
                (None, Some(permission.as_str()), None, false)
            }
            RoleEvent::PermissionRevoked { permission } => {
                (None, None, Some(permission.as_str()), false)
            }
            RoleEvent::RoleDeleted => (None, None, None, true),
            RoleEvent::RoleCreated { .. } => (None, None, None, false),
        };
        sqlx::query(
            "UPDATE roles
                SET name = coalesce($2, name),
                    permissions = array_remove(
                        CASE WHEN $3::text IS NULL THEN permissions ELSE array_append(permissions, $3) END, $4),
                    deleted = deleted OR $5,
                    updated_at = $6, version = $7
              WHERE id = $1 AND version = $7 - 1",
        )
        .bind(id)
        .bind(name)
        .bind(added)
        .bind(removed)
        .bind(deleted)
        .bind(at)
        .bind(event.sequence)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    };
    crate::outcome(
        conn,
        "SELECT version FROM roles WHERE id = $1",
        id,
        event.sequence,
        changed,
    )
    .await
}
