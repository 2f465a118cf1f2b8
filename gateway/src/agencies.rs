//! `/api/v1/agencies`: commands go through the Agency aggregate (and so into the event
//! store), queries read the `agencies` read model that the projections service maintains.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use eriop_domain::agency::{AgencyCommand, AgencyError, AgencyName, AgencyStatus};
use eriop_domain::AgencyId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audit::Audit;
use crate::auth::permission::AgenciesManage;
use crate::auth::{Allowed, Caller};
use crate::edge::RequestId;
use crate::error::{database_unreachable, ApiError};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::paging::{await_version, PageParams, ReadModel};
use crate::state::AppState;
use crate::tenancy::{self, Scope};

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AgencyView {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    /// Every user of the agency must use MFA.
    pub mfa_required: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The number of events applied; a client may compare it to detect changes.
    pub version: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAgency {
    /// Optional client-chosen id: retrying a create with the same id cannot make a second
    /// agency (the retry answers 409).
    #[serde(default)]
    id: Option<Uuid>,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchAgency {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: Option<AgencyStatus>,
    #[serde(default)]
    mfa_required: Option<bool>,
}

#[derive(Serialize)]
struct Page {
    items: Vec<AgencyView>,
    limit: i64,
    offset: i64,
}

fn parse_name(raw: &str) -> Result<AgencyName, ApiError> {
    AgencyName::parse(raw).map_err(|e| ApiError::validation("name", e.to_string()))
}

pub async fn create(
    Allowed { caller: admin, .. }: Allowed<AgenciesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<CreateAgency>,
) -> Result<Response, ApiError> {
    let name = parse_name(&body.name)?;
    let id = AgencyId::from_uuid(body.id.unwrap_or_else(Uuid::now_v7));
    let version = execute(
        &state,
        &admin,
        id,
        AgencyCommand::Create { id, name },
        &request_id,
    )
    .await?;
    let location = format!("{}", id);
    respond_after_projection(&state, id, version, StatusCode::CREATED, Some(location)).await
}

pub async fn list(
    _admin: Allowed<AgenciesManage>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<impl Serialize>, ApiError> {
    let (limit, offset) = params.checked()?;
    // Agencies are the platform's: a caller with agencies:manage sees them all.
    let mut tx = tenancy::begin(state.pool(), Scope::All).await?;
    let items = sqlx::query_as::<_, AgencyView>(
        "SELECT id, name, status, mfa_required, created_at, updated_at, version
           FROM agencies ORDER BY created_at, id LIMIT $1 OFFSET $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *tx)
    .await?;
    Ok(Json(Page {
        items,
        limit,
        offset,
    }))
}

pub async fn get(
    _admin: Allowed<AgenciesManage>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<AgencyView>, ApiError> {
    fetch(&state, id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

pub async fn patch(
    Allowed { caller: admin, .. }: Allowed<AgenciesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PatchAgency>,
) -> Result<Response, ApiError> {
    if body.name.is_none() && body.status.is_none() && body.mfa_required.is_none() {
        return Err(ApiError::Validation {
            detail: "nothing to change: give `name`, `status`, `mfa_required`".into(),
            errors: Vec::new(),
        });
    }
    let name = body.name.as_deref().map(parse_name).transpose()?;
    let id = AgencyId::from_uuid(id);
    let command = AgencyCommand::Amend {
        name,
        status: body.status,
        mfa_required: body.mfa_required,
    };
    let version = execute(&state, &admin, id, command, &request_id).await?;
    respond_after_projection(&state, id, version, StatusCode::OK, None).await
}

/// Runs `command` on the agency `id` with the audit metadata of DESIGN.md rule 1, and
/// answers the aggregate's version afterwards.
async fn execute(
    state: &AppState,
    actor: &Caller,
    id: AgencyId,
    command: AgencyCommand,
    request_id: &RequestId,
) -> Result<i64, ApiError> {
    let agency = id.to_string();
    let audit = Audit {
        actor: actor.user_id(),
        agency_id: &agency,
        request_id: &request_id.0,
    };
    let meta = audit.metadata(command.name());
    state
        .agencies()
        .execute_with_metadata(&id.to_string(), command, meta)
        .await
        .map_err(|e| command_error(id, e))?;
    let version: Option<i64> = sqlx::query_scalar(
        "SELECT max(sequence) FROM events WHERE aggregate_type = 'agency' AND aggregate_id = $1",
    )
    .bind(id.to_string())
    .fetch_one(state.pool())
    .await?;
    version.ok_or_else(|| not_found(id.as_uuid()))
}

fn command_error(id: AgencyId, e: AggregateError<AgencyError>) -> ApiError {
    match e {
        AggregateError::UserError(AgencyError::NotFound) => not_found(id.as_uuid()),
        AggregateError::UserError(other) => ApiError::Conflict(other.to_string()),
        AggregateError::AggregateConflict => ApiError::Conflict(
            "the agency was changed by another request at the same time; retry".into(),
        ),
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

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("no agency {id}"))
}

async fn fetch(state: &AppState, id: Uuid) -> Result<Option<AgencyView>, ApiError> {
    let mut tx = tenancy::begin(state.pool(), Scope::All).await?;
    Ok(sqlx::query_as::<_, AgencyView>(
        "SELECT id, name, status, mfa_required, created_at, updated_at, version FROM agencies WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?)
}

/// Read your writes (DESIGN.md rule 3): answer once the read model shows `version`, so the
/// caller's next GET sees its change. If the projection lags past the configured bound, the
/// command is still stored and will be projected: answer 202 and say so.
async fn respond_after_projection(
    state: &AppState,
    id: AgencyId,
    version: i64,
    done: StatusCode,
    location: Option<String>,
) -> Result<Response, ApiError> {
    let shown = await_version(
        state.pool(),
        ReadModel::Agencies,
        id.as_uuid(),
        version,
        state.read_your_writes_timeout(),
    )
    .await?;
    let view = if shown {
        fetch(state, id.as_uuid()).await?
    } else {
        None
    };
    let mut response = match view {
        Some(view) => (done, Json(view)).into_response(),
        None => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "id": id,
                "version": version,
                "status": "accepted",
                "detail": "the change is stored; the read model has not shown it yet, GET it again shortly",
            })),
        )
            .into_response(),
    };
    if let Some(location) = location {
        if let Ok(value) = header::HeaderValue::from_str(&format!("agencies/{location}")) {
            response.headers_mut().insert(header::LOCATION, value);
        }
    }
    Ok(response)
}
