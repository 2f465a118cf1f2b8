//! The one command path (DESIGN.md rules 1 and 3). Every route that changes something runs
//! its command here and answers here:
//!
//! 1. [`execute`]: the command on its aggregate, with the audit metadata, in its turn and
//!    together with the commands queued for the same aggregate ([`crate::http::turns`]),
//!    decided again on fresh state after a concurrent write (optimistic concurrency), each
//!    refusal mapped to HTTP in [`refusal`]; it returns what was [`Stored`].
//! 2. [`respond`]: waits (bounded) until the read model shows the stored version, then
//!    answers `201 Created` (with `Location`), `200 OK` with the resource, or `204`; if the
//!    read model lags past `ERIOP_READ_YOUR_WRITES_TIMEOUT_MS`, the write is stored all the
//!    same and the answer is `202 Accepted` with [`Accepted`] (and the `Location` to poll).
//!
//! So a stored write never answers `404` (the read model has not caught up) or `503`.

use std::future::Future;
use std::pin::Pin;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cqrs_es::{Aggregate, AggregateError};
use eriop_domain::{Named, Refusal};
use serde::Serialize;
use uuid::Uuid;

use crate::http::error::{database_unreachable, ApiError};
use crate::http::paging::{await_version, ReadModel};
use crate::http::turns;
use crate::services::audit::Audit;
use crate::services::event_log::EventLog;
use crate::state::AppState;

/// A write in the event store: the read model that will show it, the row, the version.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    pub model: ReadModel,
    pub id: Uuid,
    pub version: i64,
}

impl Stored {
    /// The aggregate's last stored version (after a write made elsewhere, as by `Identity`).
    pub async fn latest(state: &AppState, model: ReadModel, id: Uuid) -> Result<Self, ApiError> {
        // The last entry of the aggregate's key, read backwards: one index page whatever
        // the aggregate's length. `max(sequence)` was planned from the statistics, and with
        // one event an aggregate on average it read every event of a hot one (6,000 heap
        // fetches, 2.5 ms, for the agency of the command benchmark).
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT sequence FROM events WHERE aggregate_type = $1 AND aggregate_id = $2
              ORDER BY sequence DESC LIMIT 1",
        )
        .bind(model.aggregate_type())
        .bind(id.to_string())
        .fetch_optional(state.pool())
        .await?;
        Ok(Self {
            model,
            id,
            version: version.unwrap_or(0),
        })
    }
}

/// Runs `command` on aggregate `id` through `cqrs`, as `audit` says, and answers what it
/// stored. `what` names the aggregate in a `404` ("device in your agency").
pub async fn execute<A>(
    state: &AppState,
    cqrs: &EventLog<A>,
    model: ReadModel,
    id: Uuid,
    command: A::Command,
    audit: &Audit<'_>,
    what: &str,
) -> Result<Stored, ApiError>
where
    A: Aggregate<Services = ()> + Clone + 'static,
    A::Command: Clone + Named + Send + Sync + 'static,
    A::Error: Refusal + Send,
{
    // Decided with the commands queued for the same aggregate, on one load and in one
    // transaction (`http::turns`); the version is read after the turn (issue 13: one round
    // trip less in what serializes a hot aggregate). It may then be a later command's
    // already; a read model showing that one shows this one too.
    let metadata = audit.metadata(command.name());
    turns::run(cqrs, id, command, metadata)
        .await
        .map_err(|e| refusal(e, what))?;
    Stored::latest(state, model, id).await
}

/// An aggregate's refusal as HTTP, for every aggregate: not found `404`, a rule of the
/// domain `409` (its message says which), a race lost too often `409` (retry), the event
/// store unreachable `503`, anything else `500` (logged, not answered).
pub fn refusal<E: Refusal>(e: AggregateError<E>, what: &str) -> ApiError {
    match e {
        AggregateError::UserError(refused) if refused.is_not_found() => {
            ApiError::NotFound(format!("no such {what}"))
        }
        AggregateError::UserError(refused) => ApiError::Conflict(refused.to_string()),
        AggregateError::AggregateConflict => ApiError::Conflict(format!(
            "the {what} was changed by other requests at the same time; retry"
        )),
        AggregateError::DatabaseConnectionError(cause) => {
            ApiError::Unavailable(format!("event store: {cause}"))
        }
        // postgres-es reports a pool that cannot reach the database as "unexpected".
        AggregateError::UnexpectedError(cause)
            if cause
                .downcast_ref::<sqlx::Error>()
                .is_some_and(database_unreachable) =>
        {
            ApiError::Unavailable(format!("event store: {cause}"))
        }
        AggregateError::DeserializationError(cause) | AggregateError::UnexpectedError(cause) => {
            ApiError::Internal(cause)
        }
    }
}

/// What a command answers when it is done.
pub enum Done {
    /// `201 Created`, `Location` relative to the API root (`devices/{id}`).
    Created { location: String },
    /// `200 OK` with the resource.
    Changed,
    /// `204 No Content`.
    NoContent,
    /// `202 Accepted` with `Location` even once the read model shows it: the command is
    /// recorded, and something else (a device) carries it out later.
    Pending { location: String },
}

/// The answer's body, read once the read model shows the write.
pub type Read<'a> =
    Pin<Box<dyn Future<Output = Result<Option<serde_json::Value>, ApiError>> + Send + 'a>>;

/// Where a command's answer body comes from.
pub enum Body<'a> {
    /// Read from the read model once it shows the write (`None` from the read: gone
    /// since, answered as `202` too).
    Read(Read<'a>),
    /// Known without the read model (a one-time password, a secret answered once): the
    /// same body whether the read model shows the write yet or not.
    Known(serde_json::Value),
    /// Read from the read model once it shows the write; until then (or if the read finds
    /// nothing) the resource as the command made it, in the same shape.
    ReadOr(Read<'a>, serde_json::Value),
    None,
}

/// The body of every `202 Accepted`: the write is stored; the read model will show it.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub id: Uuid,
    pub version: i64,
    pub status: &'static str,
    pub detail: &'static str,
}

/// Answers a stored write (see the module's documentation).
pub async fn respond(
    state: &AppState,
    stored: Stored,
    done: Done,
    body: Body<'_>,
) -> Result<Response, ApiError> {
    let shown = await_version(
        state,
        stored.model,
        stored.id,
        stored.version,
        state.read_your_writes_timeout(),
    )
    .await?;
    let (status, location) = match &done {
        Done::Created { location } => (StatusCode::CREATED, Some(location.as_str())),
        Done::Changed => (StatusCode::OK, None),
        Done::NoContent => (StatusCode::NO_CONTENT, None),
        Done::Pending { location } => (StatusCode::ACCEPTED, Some(location.as_str())),
    };
    let mut response = match (shown, body) {
        (_, Body::Known(body)) => {
            let status = if shown { status } else { StatusCode::ACCEPTED };
            (status, Json(body)).into_response()
        }
        (true, Body::None) => status.into_response(),
        (true, Body::Read(read)) => match read.await? {
            Some(body) => (status, Json(body)).into_response(),
            None => accepted(stored),
        },
        (true, Body::ReadOr(read, otherwise)) => {
            let body = read.await?;
            match body {
                Some(body) => (status, Json(body)).into_response(),
                None => (StatusCode::ACCEPTED, Json(otherwise)).into_response(),
            }
        }
        (false, Body::ReadOr(_, otherwise)) => {
            (StatusCode::ACCEPTED, Json(otherwise)).into_response()
        }
        (false, _) => accepted(stored),
    };
    if let Some(location) = location {
        let location = format!("{}/{location}", state.api_prefix());
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
    }
    Ok(response)
}

fn accepted(stored: Stored) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: stored.id,
            version: stored.version,
            status: "accepted",
            detail:
                "the change is stored; the read model has not shown it yet, GET it again shortly",
        }),
    )
        .into_response()
}
