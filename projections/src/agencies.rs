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

/// The columns one event changes (the others keep their value).
#[derive(Default)]
struct Change {
    name: Option<String>,
    status: Option<&'static str>,
    mfa_required: Option<bool>,
    device_quota: Option<i64>,
    command_quota: Option<i64>,
    telemetry_quota: Option<i64>,
    telemetry_retention_days: Option<i64>,
}

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
            let mut change = Change::default();
            match other {
                AgencyEvent::AgencyRenamed { name } => change.name = Some(name),
                AgencyEvent::AgencySuspended => change.status = Some("suspended"),
                AgencyEvent::AgencyReactivated => change.status = Some("active"),
                AgencyEvent::AgencyMfaRequirementChanged { required } => {
                    change.mfa_required = Some(required)
                }
                AgencyEvent::AgencyDeviceQuotaSet { devices } => {
                    change.device_quota = Some(i64::from(devices))
                }
                AgencyEvent::AgencyCommandQuotaSet { per_minute } => {
                    change.command_quota = Some(i64::from(per_minute))
                }
                AgencyEvent::AgencyTelemetryQuotaSet { per_second } => {
                    change.telemetry_quota = Some(i64::from(per_second))
                }
                AgencyEvent::AgencyTelemetryRetentionSet { days } => {
                    change.telemetry_retention_days = Some(i64::from(days))
                }
                AgencyEvent::AgencyCreated { .. } => {}
            }
            sqlx::query(
                "UPDATE agencies
                    SET name = coalesce($2, name), status = coalesce($3, status),
                        mfa_required = coalesce($6, mfa_required),
                        device_quota = coalesce($7, device_quota),
                        command_quota = coalesce($8, command_quota),
                        telemetry_quota = coalesce($9, telemetry_quota),
                        telemetry_retention_days = coalesce($10, telemetry_retention_days),
                        updated_at = $4, version = $5
                  WHERE id = $1 AND version = $5 - 1",
            )
            .bind(id)
            .bind(change.name)
            .bind(change.status)
            .bind(at)
            .bind(event.sequence)
            .bind(change.mfa_required)
            .bind(change.device_quota)
            .bind(change.command_quota)
            .bind(change.telemetry_quota)
            .bind(change.telemetry_retention_days)
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
