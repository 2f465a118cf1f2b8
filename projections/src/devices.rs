//! The `devices` and `device_commands` read models, from the Device aggregate's events.

use cqrs_es::Aggregate;
use eriop_domain::device::{Device, DeviceEvent};
use eriop_nats::StoredEvent;
use sqlx::PgConnection;

use crate::{Outcome, ProjectionError};

pub const NAME: &str = "devices";
pub const AGGREGATE_TYPE: &str = <Device as Aggregate>::TYPE;

fn millis(ms: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis(ms)
}

pub async fn apply(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<Outcome, ProjectionError> {
    let (id, payload, at) = crate::decode::<DeviceEvent>(event)?;
    if let DeviceEvent::DeviceRegistered {
        agency_id,
        class_id,
        functions,
        fundamentum,
        name,
        offline_after_secs,
        ..
    } = payload
    {
        let functions = serde_json::to_value(functions)
            .map_err(|e| ProjectionError::Undecodable(e.to_string()))?;
        let changed = sqlx::query(
            "INSERT INTO devices (id, agency_id, class_id, registry, serial, name, functions,
                                  offline_after_secs, created_at, updated_at, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(agency_id.as_uuid())
        .bind(class_id)
        .bind(fundamentum.registry)
        .bind(fundamentum.serial)
        .bind(name)
        .bind(functions)
        .bind(offline_after_secs.and_then(|s| i32::try_from(s).ok()))
        .bind(at)
        .bind(event.sequence)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        return version_outcome(conn, id, event.sequence, changed).await;
    }
    // Every other event moves the device's version, and may touch its commands.
    let mut name = None;
    let mut offline_after = None;
    let mut decommissioned = false;
    let mut online = None;
    match &payload {
        DeviceEvent::DeviceUpdated {
            name: n,
            offline_after: timeout,
        } => {
            name = n.clone();
            offline_after = timeout.map(|t| t.seconds());
        }
        DeviceEvent::DeviceDecommissioned => decommissioned = true,
        DeviceEvent::DeviceCameOnline { at } => online = Some((true, *at)),
        DeviceEvent::DeviceWentOffline { at, .. } => online = Some((false, *at)),
        _ => {}
    }
    let changed = sqlx::query(
        "UPDATE devices
            SET name = coalesce($2, name),
                offline_after_secs = CASE WHEN $3 THEN $4 ELSE offline_after_secs END,
                decommissioned = decommissioned OR $5,
                online = coalesce($6, online) AND NOT (decommissioned OR $5),
                status_changed_at = coalesce($7, status_changed_at),
                updated_at = $8, version = $9
          WHERE id = $1 AND version = $9 - 1",
    )
    .bind(id)
    .bind(name)
    .bind(offline_after.is_some())
    .bind(offline_after.flatten().and_then(|s| i32::try_from(s).ok()))
    .bind(decommissioned)
    .bind(online.map(|(o, _)| o))
    .bind(online.and_then(|(_, t)| millis(t.millis())))
    .bind(at)
    .bind(event.sequence)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if changed == 1 {
        match payload {
            DeviceEvent::CommandIssued {
                command_id,
                request,
            } => {
                let request = serde_json::to_value(request)
                    .map_err(|e| ProjectionError::Undecodable(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO device_commands (command_id, device_id, agency_id, request, status, issued_at, updated_at)
                     SELECT $1, id, agency_id, $3, 'pending', $4, $4 FROM devices WHERE id = $2
                     ON CONFLICT (command_id) DO NOTHING",
                )
                .bind(command_id)
                .bind(id)
                .bind(request)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            DeviceEvent::CommandStatusChanged {
                command_id,
                status,
                message,
            } => {
                sqlx::query(
                    "UPDATE device_commands SET status = $2, message = coalesce($3, message), updated_at = $4
                      WHERE command_id = $1",
                )
                .bind(command_id)
                .bind(status.as_str())
                .bind(message)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            _ => {}
        }
    }
    version_outcome(conn, id, event.sequence, changed).await
}

async fn version_outcome(
    conn: &mut PgConnection,
    id: uuid::Uuid,
    sequence: i64,
    changed: u64,
) -> Result<Outcome, ProjectionError> {
    crate::outcome(
        conn,
        "SELECT version FROM devices WHERE id = $1",
        id,
        sequence,
        changed,
    )
    .await
}
