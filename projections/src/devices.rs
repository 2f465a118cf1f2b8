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
    // The same statements as a page's (with one row), so both paths write alike.
    let mut registered = Registered::default();
    if registered.push(id, &payload, at, event.sequence)? {
        let changed = registered.write(conn).await?.len() as u64;
        return version_outcome(conn, id, event.sequence, changed).await;
    }
    // Every other event moves the device's version, and may touch its commands.
    let mut change = Changed::default();
    change.push(id, Change::of(&payload), at, event.sequence, event.sequence);
    let changed = change.write(conn).await?.len() as u64;
    if changed == 1 {
        let mut commands = Commands::default();
        commands.push(&payload, id, at)?;
        commands.write(conn).await?;
    }
    version_outcome(conn, id, event.sequence, changed).await
}

/// What an event other than the registration changes in the device's row.
#[derive(Default)]
struct Change {
    name: Option<String>,
    /// `Some(None)`: back to the class's timeout.
    offline_after: Option<Option<i32>>,
    decommissioned: bool,
    online: Option<bool>,
    status_changed_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Change {
    fn of(event: &DeviceEvent) -> Self {
        match event {
            DeviceEvent::DeviceUpdated {
                name,
                offline_after,
            } => Change {
                name: name.clone(),
                offline_after: offline_after
                    .map(|t| t.seconds().and_then(|s| i32::try_from(s).ok())),
                ..Change::default()
            },
            DeviceEvent::DeviceDecommissioned => Change {
                decommissioned: true,
                ..Change::default()
            },
            DeviceEvent::DeviceCameOnline { at } => Change {
                online: Some(true),
                status_changed_at: millis(at.millis()),
                ..Change::default()
            },
            DeviceEvent::DeviceWentOffline { at, .. } => Change {
                online: Some(false),
                status_changed_at: millis(at.millis()),
                ..Change::default()
            },
            _ => Change::default(),
        }
    }

    /// This change followed by `later`, as the two updates leave the row. (Once
    /// decommissioned, a device is never online again: the update's `AND NOT` keeps that
    /// whether it sees the decommission first or in the same step.)
    fn then(self, later: Change) -> Change {
        Change {
            name: later.name.or(self.name),
            offline_after: later.offline_after.or(self.offline_after),
            decommissioned: self.decommissioned || later.decommissioned,
            online: later.online.or(self.online),
            status_changed_at: later.status_changed_at.or(self.status_changed_at),
        }
    }
}

/// Commands issued and their status changes, as columns. A command's status changes are
/// folded into its last (the message: its last given one), in the order they were pushed.
#[derive(Default)]
struct Commands {
    issued_ids: Vec<i64>,
    issued_devices: Vec<uuid::Uuid>,
    requests: Vec<serde_json::Value>,
    issued_ats: Vec<chrono::DateTime<chrono::Utc>>,
    changed: Vec<(
        i64,
        &'static str,
        Option<String>,
        chrono::DateTime<chrono::Utc>,
    )>,
    changed_index: std::collections::HashMap<i64, usize>,
}

impl Commands {
    fn push(
        &mut self,
        event: &DeviceEvent,
        device: uuid::Uuid,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ProjectionError> {
        match event {
            DeviceEvent::CommandIssued {
                command_id,
                request,
            } => {
                let request = serde_json::to_value(request)
                    .map_err(|e| ProjectionError::Undecodable(e.to_string()))?;
                self.issued_ids.push(*command_id);
                self.issued_devices.push(device);
                self.requests.push(request);
                self.issued_ats.push(at);
            }
            DeviceEvent::CommandStatusChanged {
                command_id,
                status,
                message,
            } => match self.changed_index.get(command_id) {
                Some(&i) => {
                    let before = &mut self.changed[i];
                    before.1 = status.as_str();
                    if message.is_some() {
                        before.2.clone_from(message);
                    }
                    before.3 = at;
                }
                None => {
                    self.changed_index.insert(*command_id, self.changed.len());
                    self.changed
                        .push((*command_id, status.as_str(), message.clone(), at));
                }
            },
            _ => {}
        }
        Ok(())
    }

    /// Issues first, then status changes: a command's changes always follow its issue
    /// (the aggregate refuses a status for a command it has not issued).
    async fn write(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if !self.issued_ids.is_empty() {
            sqlx::query(
                "INSERT INTO device_commands (command_id, device_id, agency_id, request, status, issued_at, updated_at)
                 SELECT c.command_id, d.id, d.agency_id, c.request, 'pending', c.at, c.at
                   FROM unnest($1::bigint[], $2::uuid[], $3::jsonb[], $4::timestamptz[])
                        WITH ORDINALITY AS c(command_id, device_id, request, at, n)
                   JOIN devices d ON d.id = c.device_id
                  ORDER BY c.n
                 ON CONFLICT (command_id) DO NOTHING",
            )
            .bind(self.issued_ids)
            .bind(self.issued_devices)
            .bind(self.requests)
            .bind(self.issued_ats)
            .execute(&mut *conn)
            .await?;
        }
        if !self.changed.is_empty() {
            let mut ids = Vec::with_capacity(self.changed.len());
            let mut statuses = Vec::with_capacity(self.changed.len());
            let mut messages = Vec::with_capacity(self.changed.len());
            let mut ats = Vec::with_capacity(self.changed.len());
            for (id, status, message, at) in self.changed {
                ids.push(id);
                statuses.push(status);
                messages.push(message);
                ats.push(at);
            }
            sqlx::query(
                "UPDATE device_commands k
                    SET status = c.status, message = coalesce(c.message, k.message), updated_at = c.at
                   FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[])
                        AS c(command_id, status, message, at)
                  WHERE k.command_id = c.command_id",
            )
            .bind(ids)
            .bind(statuses)
            .bind(messages)
            .bind(ats)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
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

/// Applies a page of the Device aggregate's events with one statement each for the
/// registrations, the changes, the commands issued and their status changes (see
/// [`crate::page`]); answers how many events changed the model.
pub async fn apply_page(
    conn: &mut PgConnection,
    events: &[&StoredEvent],
) -> Result<u64, ProjectionError> {
    let groups = crate::page::groups::<DeviceEvent>(events)?;
    let mut registered = Registered::default();
    let mut changed = Changed::default();
    // Per group: where its folded change starts (after its registration, if it has one),
    // or `None` when it must go one by one.
    let mut plans: Vec<Option<usize>> = Vec::with_capacity(groups.len());
    for group in &groups {
        if !foldable(group) {
            plans.push(None);
            continue;
        }
        let mut start = 0;
        if let Some(first) = group.events.first() {
            if registered.push(group.id, &first.payload, first.at, first.event.sequence)? {
                start = 1;
            }
        }
        let mut fold: Option<(Change, chrono::DateTime<chrono::Utc>, i64, i64)> = None;
        for d in &group.events[start..] {
            let change = Change::of(&d.payload);
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
    let inserted = registered.write(conn).await?;
    let updated = changed.write(conn).await?;

    // Commands move only with a device change that applied, as one by one.
    let mut commands = Commands::default();
    let mut applied = 0;
    let mut one_by_one: Vec<&StoredEvent> = Vec::new();
    for (group, plan) in groups.iter().zip(plans) {
        let Some(start) = plan else {
            one_by_one.extend(group.events.iter().map(|d| d.event));
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
            for d in rest {
                commands.push(&d.payload, group.id, d.at)?;
            }
        } else {
            one_by_one.extend(rest.iter().map(|d| d.event));
        }
    }
    commands.write(conn).await?;
    applied += crate::page::one_by_one(crate::ReadModel::Devices, conn, &one_by_one).await?;
    Ok(applied)
}

/// Whether a group's events can be folded: a registration only first, consecutive
/// sequences (a hole is a gap the one-by-one path reports), and no status change before
/// the issue of its command.
fn foldable(group: &crate::page::Group<'_, DeviceEvent>) -> bool {
    let consecutive = group
        .events
        .windows(2)
        .all(|w| w[1].event.sequence == w[0].event.sequence + 1);
    let registered_later = group
        .events
        .iter()
        .skip(1)
        .any(|d| matches!(d.payload, DeviceEvent::DeviceRegistered { .. }));
    // A status change is out of order when its command is issued later in the group: in
    // one pass, the commands issued so far and those the group issues at all.
    let issued_in_group: std::collections::HashSet<i64> = group
        .events
        .iter()
        .filter_map(|d| match &d.payload {
            DeviceEvent::CommandIssued { command_id, .. } => Some(*command_id),
            _ => None,
        })
        .collect();
    let mut issued = std::collections::HashSet::new();
    let mut changed_before_issue = false;
    for d in &group.events {
        match &d.payload {
            DeviceEvent::CommandIssued { command_id, .. } => {
                issued.insert(*command_id);
            }
            DeviceEvent::CommandStatusChanged { command_id, .. } => {
                changed_before_issue |=
                    issued_in_group.contains(command_id) && !issued.contains(command_id);
            }
            _ => {}
        }
    }
    consecutive && !registered_later && !changed_before_issue
}

/// The registrations of a page, as columns.
#[derive(Default)]
struct Registered {
    ids: Vec<uuid::Uuid>,
    agencies: Vec<uuid::Uuid>,
    classes: Vec<uuid::Uuid>,
    registries: Vec<String>,
    serials: Vec<String>,
    names: Vec<String>,
    functions: Vec<serde_json::Value>,
    offline_after: Vec<Option<i32>>,
    ats: Vec<chrono::DateTime<chrono::Utc>>,
    sequences: Vec<i64>,
}

impl Registered {
    /// Adds `event` if it is a registration; answers whether it was.
    fn push(
        &mut self,
        id: uuid::Uuid,
        event: &DeviceEvent,
        at: chrono::DateTime<chrono::Utc>,
        sequence: i64,
    ) -> Result<bool, ProjectionError> {
        let DeviceEvent::DeviceRegistered {
            agency_id,
            class_id,
            functions,
            fundamentum,
            name,
            offline_after_secs,
            ..
        } = event
        else {
            return Ok(false);
        };
        self.functions.push(
            serde_json::to_value(functions)
                .map_err(|e| ProjectionError::Undecodable(e.to_string()))?,
        );
        self.ids.push(id);
        self.agencies.push(agency_id.as_uuid());
        self.classes.push(*class_id);
        self.registries.push(fundamentum.registry.clone());
        self.serials.push(fundamentum.serial.clone());
        self.names.push(name.clone());
        self.offline_after
            .push(offline_after_secs.and_then(|s| i32::try_from(s).ok()));
        self.ats.push(at);
        self.sequences.push(sequence);
        Ok(true)
    }

    async fn write(self, conn: &mut PgConnection) -> Result<crate::page::Written, sqlx::Error> {
        if self.ids.is_empty() {
            return Ok(Default::default());
        }
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "INSERT INTO devices (id, agency_id, class_id, registry, serial, name, functions,
                                  offline_after_secs, created_at, updated_at, version)
             SELECT c.id, c.agency_id, c.class_id, c.registry, c.serial, c.name, c.functions,
                    c.offline_after, c.at, c.at, c.seq
               FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                           $7::jsonb[], $8::int[], $9::timestamptz[], $10::bigint[])
                    AS c(id, agency_id, class_id, registry, serial, name, functions,
                         offline_after, at, seq)
             ON CONFLICT (id) DO NOTHING
             RETURNING id",
        )
        .bind(self.ids)
        .bind(self.agencies)
        .bind(self.classes)
        .bind(self.registries)
        .bind(self.serials)
        .bind(self.names)
        .bind(self.functions)
        .bind(self.offline_after)
        .bind(self.ats)
        .bind(self.sequences)
        .fetch_all(&mut *conn)
        .await?;
        Ok(ids.into_iter().collect())
    }
}

/// Each device's folded changes of a page, as columns.
#[derive(Default)]
struct Changed {
    ids: Vec<uuid::Uuid>,
    names: Vec<Option<String>>,
    set_offline_after: Vec<bool>,
    offline_after: Vec<Option<i32>>,
    decommissioned: Vec<bool>,
    online: Vec<Option<bool>>,
    status_changed_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
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
        self.set_offline_after.push(change.offline_after.is_some());
        self.offline_after.push(change.offline_after.flatten());
        self.decommissioned.push(change.decommissioned);
        self.online.push(change.online);
        self.status_changed_at.push(change.status_changed_at);
        self.ats.push(at);
        self.firsts.push(first);
        self.lasts.push(last);
    }

    async fn write(self, conn: &mut PgConnection) -> Result<crate::page::Written, sqlx::Error> {
        if self.ids.is_empty() {
            return Ok(Default::default());
        }
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "UPDATE devices d
                SET name = coalesce(c.name, d.name),
                    offline_after_secs = CASE WHEN c.set_offline_after THEN c.offline_after
                                              ELSE d.offline_after_secs END,
                    decommissioned = d.decommissioned OR c.decommissioned,
                    online = coalesce(c.online, d.online) AND NOT (d.decommissioned OR c.decommissioned),
                    status_changed_at = coalesce(c.status_changed_at, d.status_changed_at),
                    updated_at = c.at, version = c.last
               FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::int[], $5::bool[], $6::bool[],
                           $7::timestamptz[], $8::timestamptz[], $9::bigint[], $10::bigint[])
                    AS c(id, name, set_offline_after, offline_after, decommissioned, online,
                         status_changed_at, at, first, last)
              WHERE d.id = c.id AND d.version = c.first - 1
             RETURNING d.id",
        )
        .bind(self.ids)
        .bind(self.names)
        .bind(self.set_offline_after)
        .bind(self.offline_after)
        .bind(self.decommissioned)
        .bind(self.online)
        .bind(self.status_changed_at)
        .bind(self.ats)
        .bind(self.firsts)
        .bind(self.lasts)
        .fetch_all(&mut *conn)
        .await?;
        Ok(ids.into_iter().collect())
    }
}
