//! `GET /api/v1/audit/streams/{aggregate_type}/{id}`: how an object came to be. Each event of
//! the stream with the aggregate's state after it, folded by the domain's own `apply` (the
//! code that decides commands), secrets redacted.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cqrs_es::Aggregate;
use serde::Deserialize;
use sqlx::types::Json as SqlJson;

use super::{erased_users, redact, redacted, stream_key, ERASED, REDACTED};
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, ApiQuery};
use crate::http::permission::AuditRead;
use crate::http::Allowed;
use crate::state::AppState;
use eriop_domain::agency::Agency;
use eriop_domain::device::{Device, DeviceClass, Registry};
use eriop_domain::role::Role;
use eriop_domain::user::User;
use eriop_domain::BuiltInRole;
use eriop_nats::StoredEvent;

const MAX_PAGE: i64 = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// The first sequence to show (default 1); the state is folded from the start anyway.
    from_sequence: Option<i64>,
    limit: Option<i64>,
}

/// The stream's events from `from_sequence`, each with the state after it.
pub async fn stream(
    Allowed { caller, .. }: Allowed<AuditRead>,
    State(state): State<AppState>,
    ApiPath((aggregate_type, aggregate_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    stream_key("aggregate_id", Some(&aggregate_id))?;
    let from = query.from_sequence.unwrap_or(1);
    if from < 1 {
        return Err(ApiError::validation("from_sequence", "must be at least 1"));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::validation(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    let fold = folder(&aggregate_type).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no aggregate type {:?}: one of {}",
            aggregate_type.chars().take(50).collect::<String>(),
            TYPES.join(", ")
        ))
    })?;
    let events: Vec<SqlJson<StoredEvent>> = sqlx::query_scalar(
        "SELECT envelope FROM stored_events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence < $3
          ORDER BY sequence",
    )
    .bind(&aggregate_type)
    .bind(&aggregate_id)
    .bind(from.saturating_add(limit))
    .fetch_all(state.pool())
    .await?;
    let events: Vec<StoredEvent> = events.into_iter().map(|SqlJson(e)| e).collect();
    // The stream belongs to the agency of its first event, as for /audit/verify.
    let visible = caller.has_role(BuiltInRole::PlatformAdmin)
        || events.first().is_some_and(|e| {
            e.metadata.get(eriop_domain::metadata::AGENCY_ID)
                == Some(&caller.agency_id().to_string())
        });
    if events.is_empty() || !visible {
        return Err(ApiError::NotFound(
            "no such aggregate in your agency".into(),
        ));
    }
    let erased = erased_users(
        state.pool(),
        super::user_ids(std::iter::once((
            aggregate_type.as_str(),
            aggregate_id.as_str(),
        ))),
    )
    .await?;
    let steps = fold(&events, !erased.is_empty()).map_err(|sequence| {
        ApiError::Internal(
            format!("event {sequence} of a {aggregate_type} stream does not decode").into(),
        )
    })?;
    let last = events.last().map_or(0, |e| e.sequence);
    let more: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events
                         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3)",
    )
    .bind(&aggregate_type)
    .bind(&aggregate_id)
    .bind(last)
    .fetch_one(state.pool())
    .await?;
    let items: Vec<serde_json::Value> = events
        .into_iter()
        .zip(steps)
        .filter(|(event, _)| event.sequence >= from)
        .map(|(event, state)| serde_json::json!({ "event": redacted(event, &erased), "state": state }))
        .collect();
    Ok(Json(serde_json::json!({
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "items": items,
        "has_more": more,
        "next_sequence": more.then_some(last + 1),
    }))
    .into_response())
}

/// The aggregate types that have streams.
const TYPES: [&str; 6] = [
    Agency::TYPE,
    User::TYPE,
    Role::TYPE,
    DeviceClass::TYPE,
    Device::TYPE,
    Registry::TYPE,
];

/// Folds a stream into the state after each event (`true`: the person was erased); on
/// failure, the sequence that did not decode.
type Fold = fn(&[StoredEvent], bool) -> Result<Vec<serde_json::Value>, i64>;

fn folder(aggregate_type: &str) -> Option<Fold> {
    let fold: Fold = match aggregate_type {
        t if t == Agency::TYPE => states::<Agency>,
        t if t == User::TYPE => states::<User>,
        t if t == Role::TYPE => states::<Role>,
        t if t == DeviceClass::TYPE => states::<DeviceClass>,
        t if t == Device::TYPE => states::<Device>,
        t if t == Registry::TYPE => states::<Registry>,
        _ => return None,
    };
    Some(fold)
}

/// The state after each event, by the aggregate's own `apply`, with its secrets redacted.
fn states<A: Aggregate>(
    events: &[StoredEvent],
    erased: bool,
) -> Result<Vec<serde_json::Value>, i64> {
    let mut aggregate = A::default();
    events
        .iter()
        .map(|stored| {
            let event: A::Event =
                serde_json::from_value(stored.payload.clone()).map_err(|_| stored.sequence)?;
            aggregate.apply(event);
            let mut state = serde_json::to_value(&aggregate).map_err(|_| stored.sequence)?;
            if A::TYPE == User::TYPE {
                redact(&mut state, &User::SECRET_STATE_FIELDS, REDACTED);
                if erased {
                    redact(&mut state, &User::PERSONAL_FIELDS, ERASED);
                }
            }
            Ok(state)
        })
        .collect()
}
