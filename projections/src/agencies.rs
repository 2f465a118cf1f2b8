//! The `agencies` read model, from the Agency aggregate's events.
//!
//! Idempotent by the aggregate's sequence: each row stores the sequence of the last event
//! applied, an event at or below it changes nothing, and one beyond the next is a gap that
//! is reported (the caller redelivers later) rather than applied out of order.

use cqrs_es::Aggregate;
use eriop_domain::agency::{Agency, AgencyEvent};
use eriop_nats::StoredEvent;
use sqlx::PgConnection;

use crate::{Outcome, ProjectionError};

pub const NAME: &str = "agencies";
pub const AGGREGATE_TYPE: &str = <Agency as Aggregate>::TYPE;

/// Applies one stored event of the Agency aggregate.
pub async fn apply(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<Outcome, ProjectionError> {
    let (id, payload, at) = crate::decode::<AgencyEvent>(event)?;
    let changed = match payload {
        AgencyEvent::AgencyCreated { name, .. } => sqlx::query(
            "INSERT INTO agencies (id, name, status, created_at, updated_at, version)
                 VALUES ($1, $2, 'active', $3, $3, $4)
                 ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .bind(at)
        .bind(event.sequence)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        other => {
            let (name, status, mfa_required, device_quota) = match other {
                AgencyEvent::AgencyRenamed { name } => (Some(name), None, None, None),
                AgencyEvent::AgencySuspended => (None, Some("suspended"), None, None),
                AgencyEvent::AgencyReactivated => (None, Some("active"), None, None),
                AgencyEvent::AgencyMfaRequirementChanged { required } => {
                    (None, None, Some(required), None)
                }
                AgencyEvent::AgencyDeviceQuotaSet { devices } => {
                    (None, None, None, Some(i64::from(devices)))
                }
                AgencyEvent::AgencyCreated { .. } => (None, None, None, None),
            };
            sqlx::query(
                "UPDATE agencies
                    SET name = coalesce($2, name), status = coalesce($3, status),
                        mfa_required = coalesce($6, mfa_required),
                        device_quota = coalesce($7, device_quota),
                        updated_at = $4, version = $5
                  WHERE id = $1 AND version = $5 - 1",
            )
            .bind(id)
            .bind(name)
            .bind(status)
            .bind(at)
            .bind(event.sequence)
            .bind(mfa_required)
            .bind(device_quota)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
    };
    crate::outcome(
        conn,
        "SELECT version FROM agencies WHERE id = $1",
        id,
        event.sequence,
        changed,
    )
    .await
}
