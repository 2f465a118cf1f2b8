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

impl Change {
    /// The columns an event other than the creation changes.
    fn of(event: AgencyEvent) -> Self {
        let mut change = Change::default();
        match event {
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
        change
    }

    /// This change followed by `later`: what the two `coalesce` updates leave, in one.
    fn then(self, later: Change) -> Change {
        Change {
            name: later.name.or(self.name),
            status: later.status.or(self.status),
            mfa_required: later.mfa_required.or(self.mfa_required),
            device_quota: later.device_quota.or(self.device_quota),
            command_quota: later.command_quota.or(self.command_quota),
            telemetry_quota: later.telemetry_quota.or(self.telemetry_quota),
            telemetry_retention_days: later
                .telemetry_retention_days
                .or(self.telemetry_retention_days),
        }
    }
}

/// Applies one stored event of the Agency aggregate.
pub async fn apply(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<Outcome, ProjectionError> {
    let (id, payload, at) = crate::decode::<AgencyEvent>(event)?;
    // The same statements as a page's (with one row), so both paths write alike.
    let written = match payload {
        AgencyEvent::AgencyCreated { name, .. } => {
            let mut created = Created::default();
            created.push(id, name, at, event.sequence);
            created.write(conn).await?
        }
        other => {
            let mut changed = Changed::default();
            changed.push(id, Change::of(other), at, event.sequence, event.sequence);
            changed.write(conn).await?
        }
    };
    let changed = written.len() as u64;
    crate::outcome(
        conn,
        "SELECT version FROM agencies WHERE id = $1",
        id,
        event.sequence,
        changed,
    )
    .await
}

/// Applies a page of the Agency aggregate's events with one statement for the creations and
/// one for the changes (see [`crate::page`]); answers how many events changed the model.
pub async fn apply_page(
    conn: &mut PgConnection,
    events: &[&StoredEvent],
) -> Result<u64, ProjectionError> {
    let groups = crate::page::groups::<AgencyEvent>(events)?;
    let mut created = Created::default();
    let mut changed = Changed::default();
    // Per group: where its folded change starts (after its creation, if it has one), or
    // `None` when it must go one by one (a creation that is not its first event, or
    // sequences with a hole: what the one-by-one path reports as a gap).
    let mut plans: Vec<Option<usize>> = Vec::with_capacity(groups.len());
    for group in &groups {
        let creations = group
            .events
            .iter()
            .filter(|d| matches!(d.payload, AgencyEvent::AgencyCreated { .. }))
            .count();
        let starts_created = matches!(
            group.events.first().map(|d| &d.payload),
            Some(AgencyEvent::AgencyCreated { .. })
        );
        let consecutive = group
            .events
            .windows(2)
            .all(|w| w[1].event.sequence == w[0].event.sequence + 1);
        if creations > usize::from(starts_created) || !consecutive {
            plans.push(None);
            continue;
        }
        let mut rest = group.events.iter();
        if starts_created {
            if let Some(first) = rest.next() {
                if let AgencyEvent::AgencyCreated { name, .. } = &first.payload {
                    created.push(group.id, name.clone(), first.at, first.event.sequence);
                }
            }
        }
        let start = usize::from(starts_created);
        let mut fold: Option<(Change, chrono::DateTime<chrono::Utc>, i64, i64)> = None;
        for d in rest {
            let change = Change::of(d.payload.clone());
            fold = Some(match fold {
                None => (change, d.at, d.event.sequence, d.event.sequence),
                Some((before, _, first, _)) => (before.then(change), d.at, first, d.event.sequence),
            });
        }
        if let Some((change, at, first, last)) = fold {
            changed.push(group.id, change, at, first, last);
        }
        plans.push(Some(start));
    }
    let inserted = created.write(conn).await?;
    let updated = changed.write(conn).await?;

    let mut applied = 0;
    for (group, plan) in groups.iter().zip(plans) {
        let Some(start) = plan else {
            let each: Vec<&StoredEvent> = group.events.iter().map(|d| d.event).collect();
            applied += crate::page::one_by_one(crate::ReadModel::Agencies, conn, &each).await?;
            continue;
        };
        if start == 1 && inserted.contains(&group.id) {
            applied += 1;
        }
        let rest = &group.events[start..];
        if rest.is_empty() {
            continue;
        }
        if updated.contains(&group.id) {
            applied += rest.len() as u64;
        } else {
            let each: Vec<&StoredEvent> = rest.iter().map(|d| d.event).collect();
            applied += crate::page::one_by_one(crate::ReadModel::Agencies, conn, &each).await?;
        }
    }
    Ok(applied)
}

/// The creations of a page, as columns.
#[derive(Default)]
struct Created {
    ids: Vec<uuid::Uuid>,
    names: Vec<String>,
    ats: Vec<chrono::DateTime<chrono::Utc>>,
    sequences: Vec<i64>,
}

impl Created {
    fn push(&mut self, id: uuid::Uuid, name: String, at: chrono::DateTime<chrono::Utc>, seq: i64) {
        self.ids.push(id);
        self.names.push(name);
        self.ats.push(at);
        self.sequences.push(seq);
    }

    async fn write(self, conn: &mut PgConnection) -> Result<crate::page::Written, sqlx::Error> {
        if self.ids.is_empty() {
            return Ok(Default::default());
        }
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "INSERT INTO agencies (id, name, status, created_at, updated_at, version)
             SELECT c.id, c.name, 'active', c.at, c.at, c.seq
               FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::bigint[]) AS c(id, name, at, seq)
             ON CONFLICT (id) DO NOTHING
             RETURNING id",
        )
        .bind(self.ids)
        .bind(self.names)
        .bind(self.ats)
        .bind(self.sequences)
        .fetch_all(&mut *conn)
        .await?;
        Ok(ids.into_iter().collect())
    }
}

/// Each aggregate's folded changes of a page, as columns.
#[derive(Default)]
struct Changed {
    ids: Vec<uuid::Uuid>,
    names: Vec<Option<String>>,
    statuses: Vec<Option<&'static str>>,
    mfa: Vec<Option<bool>>,
    device_quotas: Vec<Option<i64>>,
    command_quotas: Vec<Option<i64>>,
    telemetry_quotas: Vec<Option<i64>>,
    retention_days: Vec<Option<i64>>,
    ats: Vec<chrono::DateTime<chrono::Utc>>,
    firsts: Vec<i64>,
    lasts: Vec<i64>,
}

impl Changed {
    fn push(
        &mut self,
        id: uuid::Uuid,
        change: Change,
        at: chrono::DateTime<chrono::Utc>,
        first: i64,
        last: i64,
    ) {
        self.ids.push(id);
        self.names.push(change.name);
        self.statuses.push(change.status);
        self.mfa.push(change.mfa_required);
        self.device_quotas.push(change.device_quota);
        self.command_quotas.push(change.command_quota);
        self.telemetry_quotas.push(change.telemetry_quota);
        self.retention_days.push(change.telemetry_retention_days);
        self.ats.push(at);
        self.firsts.push(first);
        self.lasts.push(last);
    }

    async fn write(self, conn: &mut PgConnection) -> Result<crate::page::Written, sqlx::Error> {
        if self.ids.is_empty() {
            return Ok(Default::default());
        }
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "UPDATE agencies a
                SET name = coalesce(c.name, a.name), status = coalesce(c.status, a.status),
                    mfa_required = coalesce(c.mfa, a.mfa_required),
                    device_quota = coalesce(c.device_quota, a.device_quota),
                    command_quota = coalesce(c.command_quota, a.command_quota),
                    telemetry_quota = coalesce(c.telemetry_quota, a.telemetry_quota),
                    telemetry_retention_days = coalesce(c.retention_days, a.telemetry_retention_days),
                    updated_at = c.at, version = c.last
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::bigint[],
                           $6::bigint[], $7::bigint[], $8::bigint[], $9::timestamptz[],
                           $10::bigint[], $11::bigint[])
                    AS c(id, name, status, mfa, device_quota, command_quota, telemetry_quota,
                         retention_days, at, first, last)
              WHERE a.id = c.id AND a.version = c.first - 1
             RETURNING a.id",
        )
        .bind(self.ids)
        .bind(self.names)
        .bind(self.statuses)
        .bind(self.mfa)
        .bind(self.device_quotas)
        .bind(self.command_quotas)
        .bind(self.telemetry_quotas)
        .bind(self.retention_days)
        .bind(self.ats)
        .bind(self.firsts)
        .bind(self.lasts)
        .fetch_all(&mut *conn)
        .await?;
        Ok(ids.into_iter().collect())
    }
}
