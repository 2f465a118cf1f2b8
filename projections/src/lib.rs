//! ERIOP's projectors: durable JetStream consumers that keep the read models, and the
//! rebuild that replays the event store into them (DESIGN.md rule 2).

pub mod agencies;
pub mod app;
pub mod checkpoint;
pub mod consumer;
pub mod device_classes;
pub mod devices;
pub mod metrics;
mod page;
pub mod read_model;
pub mod rebuild;
pub mod registries;
pub mod retention;
pub mod roles;
pub mod telemetry;
pub mod users;

pub use app::App;
pub use read_model::ReadModel;

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Seen before (a redelivery, or the rebuild got there first): nothing changed.
    AlreadyApplied,
    /// An earlier event of the aggregate has not been applied yet: try again later.
    Gap {
        have: i64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The message can never be applied: it goes to the dead-letter stream.
    #[error("undecodable event: {0}")]
    Undecodable(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// An event's aggregate id, typed payload and time, or why it cannot be applied.
pub(crate) fn decode<E: serde::de::DeserializeOwned>(
    event: &eriop_nats::StoredEvent,
) -> Result<(uuid::Uuid, E, chrono::DateTime<chrono::Utc>), ProjectionError> {
    let id = event
        .aggregate_id
        .parse()
        .map_err(|_| ProjectionError::Undecodable("aggregate id is not a UUID".into()))?;
    let payload = serde_json::from_value(event.payload.clone())
        .map_err(|e| ProjectionError::Undecodable(format!("{} payload: {e}", event.event_type)))?;
    Ok((id, payload, event_time(event)?))
}

/// The time of the command (its metadata), which is what a user means by "created at".
pub(crate) fn event_time(
    event: &eriop_nats::StoredEvent,
) -> Result<chrono::DateTime<chrono::Utc>, ProjectionError> {
    let raw = event
        .metadata
        .get(eriop_domain::metadata::TIME)
        .unwrap_or(&event.recorded_at);
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| ProjectionError::Undecodable("event time is not RFC 3339".into()))
}

/// After a write guarded by `version = sequence - 1`: applied when a row `changed`,
/// otherwise already applied (a redelivery) or a gap (an earlier event is missing).
pub(crate) async fn outcome(
    conn: &mut sqlx::PgConnection,
    version_query: &'static str,
    id: uuid::Uuid,
    sequence: i64,
    changed: u64,
) -> Result<Outcome, ProjectionError> {
    if changed == 1 {
        return Ok(Outcome::Applied);
    }
    let current: Option<i64> = sqlx::query_scalar(version_query)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match current {
        Some(version) if version >= sequence => Ok(Outcome::AlreadyApplied),
        current => Ok(Outcome::Gap {
            have: current.unwrap_or(0),
        }),
    }
}

/// Begins a transaction that acts for every agency: projections write the rows of all of
/// them (row-level security, migration 0008, otherwise shows a transaction none).
pub async fn begin_all_agencies(
    pool: &sqlx::PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    eriop_nats::db::begin(pool, eriop_nats::db::Scope::All).await
}
