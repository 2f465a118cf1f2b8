//! `/api/v1/audit`: the event store as an audit trail. Auditors find the events of their
//! agency ([`trail`]) and verify an aggregate's hash chain (DESIGN.md rule 1): any altered,
//! removed or reordered event breaks it.

use std::collections::HashSet;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::http::permission::AuditRead;
use crate::http::Allowed;
use crate::state::AppState;
use eriop_domain::user::{User, UserEvent};
use eriop_domain::BuiltInRole;
use eriop_nats::StoredEvent;

mod export;
mod stream;
mod trail;
pub use export::export;
pub use stream::stream;
pub use trail::events;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    aggregate_type: String,
    aggregate_id: String,
}

/// An aggregate type or id as a filter: at most 200 characters, no control characters
/// (aggregate types and ids are names and UUIDs; a NUL would reach PostgreSQL, which refuses it).
pub(super) fn stream_key(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(v) if v.chars().count() > 200 || v.chars().any(char::is_control) => {
            Err(ApiError::validation(
                field,
                "must be at most 200 characters, no control characters",
            ))
        }
        _ => Ok(()),
    }
}

/// What an auditor sees of a stored event: everything, but the secrets' hashes and sealed
/// forms ([`UserEvent::SECRET_FIELDS`]), which read `[redacted]`, and, once the person was
/// erased, their sealed personal data ([`User::PERSONAL_FIELDS`]), which reads `[erased]`.
pub fn redacted(mut event: StoredEvent, erased: &HashSet<String>) -> StoredEvent {
    if event.aggregate_type == <User as cqrs_es::Aggregate>::TYPE {
        redact(&mut event.payload, &UserEvent::SECRET_FIELDS, REDACTED);
        if erased.contains(&event.aggregate_id) {
            redact(&mut event.payload, &User::PERSONAL_FIELDS, ERASED);
        }
    }
    event
}

pub(super) const REDACTED: &str = "[redacted]";
pub(super) use crate::http::routes::users::ERASED;

/// Which of these users were erased: their data key is gone (the key, not the read model,
/// is what erasure deletes, so this holds the moment the erasure returns).
pub(super) async fn erased_users(
    pool: &sqlx::PgPool,
    user_ids: Vec<String>,
) -> Result<HashSet<String>, sqlx::Error> {
    if user_ids.is_empty() {
        return Ok(HashSet::new());
    }
    let erased: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM unnest($1::text[]) AS id
          WHERE NOT EXISTS (SELECT 1 FROM user_data_keys k WHERE k.user_id::text = id)",
    )
    .bind(user_ids)
    .fetch_all(pool)
    .await?;
    Ok(erased.into_iter().collect())
}

/// The user aggregates among `events`.
pub(super) fn user_ids<'a>(events: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut ids: Vec<String> = events
        .filter(|(aggregate_type, _)| *aggregate_type == <User as cqrs_es::Aggregate>::TYPE)
        .map(|(_, id)| id.to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

pub(super) fn redact(value: &mut serde_json::Value, fields: &[&str], shown: &str) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if fields.contains(&key.as_str()) {
                    *inner = serde_json::Value::String(shown.into());
                } else {
                    redact(inner, fields, shown);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| redact(v, fields, shown)),
        _ => {}
    }
}

#[derive(sqlx::FromRow)]
struct Link {
    sequence: i64,
    intact: bool,
    agency_id: Option<String>,
}

/// Recomputes every hash of one aggregate's chain, in the database that computed them.
pub async fn verify(
    Allowed { caller, .. }: Allowed<AuditRead>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<VerifyQuery>,
) -> Result<Response, ApiError> {
    stream_key("aggregate_type", Some(&query.aggregate_type))?;
    stream_key("aggregate_id", Some(&query.aggregate_id))?;
    let links: Vec<Link> = sqlx::query_as(
        r"SELECT sequence,
                 hash = sha256(convert_to(concat_ws(E'\x1f',
                            coalesce(encode(previous_hash, 'hex'), ''),
                            aggregate_type, aggregate_id, sequence::text,
                            event_type, event_version, payload::text, metadata::text), 'UTF8'))
                 AND previous_hash IS NOT DISTINCT FROM lag(hash) OVER w
                 AND metadata->>'previous_hash' = coalesce(encode(lag(hash) OVER w, 'hex'), '')
                 AND sequence = row_number() OVER w AS intact,
                 metadata->>'agency_id' AS agency_id
            FROM events
           WHERE aggregate_type = $1 AND aggregate_id = $2
          WINDOW w AS (ORDER BY sequence)
           ORDER BY sequence",
    )
    .bind(&query.aggregate_type)
    .bind(&query.aggregate_id)
    .fetch_all(state.pool())
    .await?;
    let visible = caller.has_role(BuiltInRole::PlatformAdmin)
        || links.first().is_some_and(|l| {
            l.agency_id.as_deref() == Some(caller.agency_id().to_string().as_str())
        });
    if links.is_empty() || !visible {
        return Err(ApiError::NotFound(
            "no such aggregate in your agency".into(),
        ));
    }
    let broken = links.iter().find(|l| !l.intact).map(|l| l.sequence);
    Ok(Json(serde_json::json!({
        "aggregate_type": query.aggregate_type,
        "aggregate_id": query.aggregate_id,
        "events": links.len(),
        "verified": broken.is_none(),
        "first_broken_sequence": broken,
    }))
    .into_response())
}
