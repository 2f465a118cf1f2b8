//! `/api/v1/audit`: the event store as an audit trail. Auditors list the events of their
//! agency and verify an aggregate's hash chain (DESIGN.md rule 1): any altered, removed or
//! reordered event breaks it.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use sqlx::types::Json as SqlJson;

use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::http::paging::page;
use crate::http::paging::PageParams;
use crate::http::permission::AuditRead;
use crate::http::Allowed;
use crate::state::AppState;
use eriop_domain::user::{User, UserEvent};
use eriop_domain::BuiltInRole;
use eriop_nats::StoredEvent;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    aggregate_type: String,
    aggregate_id: String,
}

/// An aggregate type or id as a filter: at most 200 characters, no control characters
/// (aggregate types and ids are names and UUIDs; a NUL would reach PostgreSQL, which refuses it).
fn stream_key(field: &str, value: Option<&str>) -> Result<(), ApiError> {
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

/// The events of the caller's agency (every agency for a platform admin), oldest first.
pub async fn events(
    Allowed { caller, .. }: Allowed<AuditRead>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let (limit, offset) = PageParams::new(query.limit, query.offset).checked()?;
    stream_key("aggregate_type", query.aggregate_type.as_deref())?;
    stream_key("aggregate_id", query.aggregate_id.as_deref())?;
    let all_agencies = caller.has_role(BuiltInRole::PlatformAdmin);
    let events: Vec<SqlJson<StoredEvent>> = sqlx::query_scalar(
        "SELECT s.envelope
           FROM events e JOIN stored_events s USING (aggregate_type, aggregate_id, sequence)
          WHERE ($1 OR e.metadata->>'agency_id' = $2)
            AND ($3::text IS NULL OR e.aggregate_type = $3)
            AND ($4::text IS NULL OR e.aggregate_id = $4)
          ORDER BY e.recorded_at, e.aggregate_type, e.aggregate_id, e.sequence
          LIMIT $5 OFFSET $6",
    )
    .bind(all_agencies)
    .bind(caller.agency_id().to_string())
    .bind(&query.aggregate_type)
    .bind(&query.aggregate_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(state.pool())
    .await?;
    let items: Vec<StoredEvent> = events.into_iter().map(|SqlJson(e)| redacted(e)).collect();
    Ok(page(&items, limit, offset))
}

/// What an auditor sees of a stored event: everything, but the secrets' hashes and sealed
/// forms ([`UserEvent::SECRET_FIELDS`]), which read `[redacted]`.
pub fn redacted(mut event: StoredEvent) -> StoredEvent {
    if event.aggregate_type == <User as cqrs_es::Aggregate>::TYPE {
        redact(&mut event.payload, &UserEvent::SECRET_FIELDS);
    }
    event
}

fn redact(value: &mut serde_json::Value, fields: &[&str]) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if fields.contains(&key.as_str()) {
                    *inner = serde_json::Value::String("[redacted]".into());
                } else {
                    redact(inner, fields);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| redact(v, fields)),
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
