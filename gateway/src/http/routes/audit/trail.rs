//! `GET /api/v1/audit/events`: the trail, filtered, a page at a time in store order.
//!
//! Store order is (transaction, position): see migrations/sql/0019_audit_store_order.up.sql.
//! A page shows only events of transactions older than the oldest one still running in this
//! database (`eriop_nats::db::store_horizon`), so an event that commits later always sorts after every cursor
//! already handed out: following `next_cursor` never skips an event, however many appends run
//! meanwhile. The price: an event shows once every older transaction of the database has
//! ended, a few milliseconds later in a healthy database (a transaction left open for minutes
//! holds the trail back that long, and is a fault of its own).

use std::fmt;
use std::str::FromStr;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::types::Json as SqlJson;
use sqlx::{Postgres, QueryBuilder};

use super::{erased_users, redacted, stream_key, user_ids};
use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::http::permission::AuditRead;
use crate::http::Allowed;
use crate::state::AppState;
use eriop_domain::BuiltInRole;
use eriop_nats::StoredEvent;

const MAX_PAGE: i64 = 1_000;

/// Where a page ends in store order: `{transaction}.{position}`, opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCursor {
    transaction_id: i64,
    position: i64,
}

impl fmt::Display for StoreCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.transaction_id, self.position)
    }
}

impl FromStr for StoreCursor {
    type Err = ApiError;

    fn from_str(raw: &str) -> Result<Self, ApiError> {
        let invalid = || {
            ApiError::validation(
                "cursor",
                "is not a cursor this API gave: pass a page's next_cursor unchanged",
            )
        };
        let (transaction, position) = raw.split_once('.').ok_or_else(invalid)?;
        // Digits only: i64's own parser also takes a sign.
        let number = |s: &str| {
            (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<i64>().ok())
                .flatten()
                .ok_or_else(invalid)
        };
        Ok(Self {
            transaction_id: number(transaction)?,
            position: number(position)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// The actor's id: a user, a service account or `bootstrap`.
    actor: Option<String>,
    request_id: Option<String>,
    event_type: Option<String>,
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    /// Recorded at or after (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Recorded before (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    limit: Option<i64>,
}

/// The events of the caller's agency (every agency for a platform admin) that match every
/// filter given, in store order, after `cursor`.
pub async fn events(
    Allowed { caller, .. }: Allowed<AuditRead>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::validation(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    let after: Option<StoreCursor> = query.cursor.as_deref().map(str::parse).transpose()?;
    // `to` at or before `from` is an empty range: an empty page, not an error.
    // Exact matches on the event's own columns and on the metadata every event carries
    // (eriop_domain::metadata).
    let exact = [
        ("actor", "e.metadata ->> 'actor'", &query.actor),
        (
            "request_id",
            "e.metadata ->> 'request_id'",
            &query.request_id,
        ),
        ("event_type", "e.event_type", &query.event_type),
        ("aggregate_type", "e.aggregate_type", &query.aggregate_type),
        ("aggregate_id", "e.aggregate_id", &query.aggregate_id),
    ];
    for (field, _, value) in &exact {
        stream_key(field, value.as_deref())?;
    }

    let horizon = eriop_nats::db::store_horizon(state.pool()).await?;
    let mut sql = QueryBuilder::<Postgres>::new(
        "SELECT s.envelope, e.transaction_id, e.position
           FROM events e JOIN stored_events s USING (aggregate_type, aggregate_id, sequence)
          WHERE e.transaction_id < ",
    );
    sql.push_bind(horizon);
    if !caller.has_role(BuiltInRole::PlatformAdmin) {
        sql.push(" AND e.metadata ->> 'agency_id' = ")
            .push_bind(caller.agency_id().to_string());
    }
    for (_, column, value) in exact {
        if let Some(value) = value {
            sql.push(format_args!(" AND {column} = "))
                .push_bind(value.clone());
        }
    }
    if let Some(from) = query.from {
        sql.push(" AND e.recorded_at >= ").push_bind(from);
    }
    if let Some(to) = query.to {
        sql.push(" AND e.recorded_at < ").push_bind(to);
    }
    if let Some(after) = after {
        sql.push(" AND (e.transaction_id, e.position) > (")
            .push_bind(after.transaction_id)
            .push(", ")
            .push_bind(after.position)
            .push(")");
    }
    // One more than a page: whether there is more.
    sql.push(" ORDER BY e.transaction_id, e.position LIMIT ")
        .push_bind(limit + 1);
    let mut rows: Vec<(SqlJson<StoredEvent>, i64, i64)> =
        sql.build_query_as().fetch_all(state.pool()).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = rows
        .last()
        .map(|(_, transaction_id, position)| StoreCursor {
            transaction_id: *transaction_id,
            position: *position,
        })
        .or(after);
    let erased = erased_users(
        state.pool(),
        user_ids(
            rows.iter()
                .map(|(SqlJson(e), _, _)| (e.aggregate_type.as_str(), e.aggregate_id.as_str())),
        ),
    )
    .await?;
    let items: Vec<StoredEvent> = rows
        .into_iter()
        .map(|(SqlJson(e), _, _)| redacted(e, &erased))
        .collect();
    Ok(Json(serde_json::json!({
        "items": items,
        "limit": limit,
        "has_more": has_more,
        // Where the next page starts; at the end, where new events will appear.
        "next_cursor": next.map(|c| c.to_string()),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::StoreCursor;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_cursor_reads_back_as_written(t in 0..=i64::MAX, p in 0..=i64::MAX) {
            let cursor = StoreCursor { transaction_id: t, position: p };
            prop_assert_eq!(cursor.to_string().parse::<StoreCursor>().ok(), Some(cursor));
        }

        #[test]
        fn anything_else_is_refused_not_misread(raw in ".{0,40}") {
            if let Ok(cursor) = raw.parse::<StoreCursor>() {
                prop_assert_eq!(cursor.to_string(), raw);
            }
        }
    }

    #[test]
    fn signs_overflow_and_missing_parts_are_refused() {
        for raw in [
            "",
            ".",
            "1.",
            ".1",
            "-1.2",
            "1.+2",
            "1.2.3",
            "99999999999999999999.1",
            "1 .2",
        ] {
            assert!(raw.parse::<StoreCursor>().is_err(), "{raw}");
        }
    }
}
