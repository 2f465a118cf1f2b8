//! `/api/v1/agencies`: commands go through the Agency aggregate (and so into the event
//! store), queries read the `agencies` read model that the projections service maintains.

use axum::extract::State;
use axum::response::Response;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use eriop_domain::agency::{AgencyCommand, AgencyName, AgencyStatus};
use eriop_domain::AgencyId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::http::command::{self, Body, Done, Stored};
use crate::http::edge::RequestId;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::paging::{PageParams, ReadModel};
use crate::http::permission::AgenciesManage;
use crate::http::{Allowed, PlatformScope};
use crate::services::audit::Audit;
use crate::services::auth::Caller;
use crate::state::AppState;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AgencyView {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    /// Every user of the agency must use MFA.
    pub mfa_required: bool,
    /// The most live devices the agency may have; null: the platform's default.
    pub device_quota: Option<i64>,
    /// The most device commands the agency may send a minute; null: the platform's default.
    pub command_quota: Option<i64>,
    /// The most telemetry messages its devices may send a second; null: the platform's default.
    pub telemetry_quota: Option<i64>,
    /// Days its telemetry is kept; null: the platform's retention.
    pub telemetry_retention_days: Option<i64>,
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
    /// Set by whoever may manage agencies (platform administrators).
    #[serde(default)]
    device_quota: Option<crate::http::whole::Whole<u32>>,
    #[serde(default)]
    command_quota: Option<crate::http::whole::Whole<u32>>,
    #[serde(default)]
    telemetry_quota: Option<crate::http::whole::Whole<u32>>,
    #[serde(default)]
    telemetry_retention_days: Option<crate::http::whole::Whole<u32>>,
}

#[derive(Serialize)]
struct Page {
    items: Vec<AgencyView>,
    limit: i64,
    offset: i64,
}

/// Larger than any agency's fleet or traffic: a typo (an extra zero or three) is refused,
/// not stored. The same bound for each quota (devices; commands a minute; messages a second).
const MAX_QUOTA: u32 = 10_000_000;

/// The columns every read of an agency selects.
const COLUMNS: &str = "id, name, status, mfa_required, device_quota, command_quota, telemetry_quota, telemetry_retention_days, created_at, updated_at, version";

/// Ten years: longer retention is a typo, not a policy.
const MAX_RETENTION_DAYS: u32 = 3_650;

/// A quota as asked: a JSON number with no fraction (`1231.0` is an integer to JSON Schema,
/// as documented), from `min` to [`MAX_QUOTA`]. A rate quota is at least 1: to stop an
/// agency's traffic, suspend the agency (which says why), rather than starve it silently.
fn quota(
    field: &str,
    min: u32,
    asked: Option<crate::http::whole::Whole<u32>>,
) -> Result<Option<u32>, ApiError> {
    match asked.map(|q| q.0) {
        Some(q) if q > MAX_QUOTA || q < min => Err(ApiError::validation(
            field,
            format!("from {min} to {MAX_QUOTA}"),
        )),
        other => Ok(other),
    }
}

fn parse_name(raw: &str) -> Result<AgencyName, ApiError> {
    AgencyName::parse(raw).map_err(|e| ApiError::validation("name", e.to_string()))
}

pub async fn create(
    allowed: Allowed<AgenciesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<CreateAgency>,
) -> Result<Response, ApiError> {
    let name = parse_name(&body.name)?;
    let id = AgencyId::from_uuid(body.id.unwrap_or_else(Uuid::now_v7));
    let stored = execute(
        &state,
        &allowed.caller,
        id,
        AgencyCommand::Create { id, name },
        &request_id,
    )
    .await?;
    let location = format!("agencies/{id}");
    let platform = allowed.platform();
    command::respond(
        &state,
        stored,
        Done::Created { location },
        view(&platform, id),
    )
    .await
}

pub async fn list(
    allowed: Allowed<AgenciesManage>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<impl Serialize>, ApiError> {
    let (limit, offset) = params.checked()?;
    // Agencies are the platform's: a caller with agencies:manage sees them all.
    let mut tx = allowed.platform().begin().await?;
    let items = sqlx::query_as::<_, AgencyView>(&format!(
        "SELECT {COLUMNS} FROM agencies ORDER BY created_at, id LIMIT $1 OFFSET $2"
    ))
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
    allowed: Allowed<AgenciesManage>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<AgencyView>, ApiError> {
    fetch(&allowed.platform(), id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

pub async fn patch(
    allowed: Allowed<AgenciesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PatchAgency>,
) -> Result<Response, ApiError> {
    if body.name.is_none()
        && body.status.is_none()
        && body.mfa_required.is_none()
        && body.device_quota.is_none()
        && body.command_quota.is_none()
        && body.telemetry_quota.is_none()
        && body.telemetry_retention_days.is_none()
    {
        return Err(ApiError::Validation {
            detail: "nothing to change: give `name`, `status`, `mfa_required`, `device_quota`, `command_quota`, `telemetry_quota`, `telemetry_retention_days`"
                .into(),
            errors: Vec::new(),
        });
    }
    let name = body.name.as_deref().map(parse_name).transpose()?;
    let device_quota = quota("device_quota", 0, body.device_quota)?;
    let command_quota = quota("command_quota", 1, body.command_quota)?;
    let telemetry_quota = quota("telemetry_quota", 1, body.telemetry_quota)?;
    let telemetry_retention_days = match body.telemetry_retention_days.map(|d| d.0) {
        Some(days) if !(1..=MAX_RETENTION_DAYS).contains(&days) => {
            return Err(ApiError::validation(
                "telemetry_retention_days",
                format!("from 1 to {MAX_RETENTION_DAYS}"),
            ))
        }
        days => days,
    };
    let id = AgencyId::from_uuid(id);
    // Suspending the agency one is signed in to would lock out the caller (and, for the
    // platform agency, every platform administrator) with no one left to reactivate it.
    if body.status == Some(AgencyStatus::Suspended) && allowed.caller.agency_id() == id {
        return Err(ApiError::Conflict(
            "you cannot suspend the agency your session is in: switch to another agency first (POST /auth/switch-agency)".into(),
        ));
    }
    let command = AgencyCommand::Amend {
        name,
        status: body.status,
        mfa_required: body.mfa_required,
        device_quota,
        command_quota,
        telemetry_quota,
        telemetry_retention_days,
    };
    let stored = execute(&state, &allowed.caller, id, command, &request_id).await?;
    let platform = allowed.platform();
    command::respond(&state, stored, Done::Changed, view(&platform, id)).await
}

/// Runs `command` on the agency `id` through the command path, as `actor` asks.
async fn execute(
    state: &AppState,
    actor: &Caller,
    id: AgencyId,
    command: AgencyCommand,
    request_id: &RequestId,
) -> Result<Stored, ApiError> {
    let agency = id.to_string();
    // The agency acted on is the audit's agency (an agency's history is its own).
    let audit = Audit {
        actor: &actor.claims.sub,
        agency_id: &agency,
        request_id: &request_id.0,
    };
    command::execute(
        state,
        state.agencies(),
        ReadModel::Agencies,
        id.as_uuid(),
        command,
        &audit,
        "agency",
    )
    .await
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("no such agency: {id}"))
}

async fn fetch(platform: &PlatformScope, id: Uuid) -> Result<Option<AgencyView>, ApiError> {
    let mut tx = platform.begin().await?;
    Ok(
        sqlx::query_as::<_, AgencyView>(&format!("SELECT {COLUMNS} FROM agencies WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?,
    )
}

/// The agency as the read model shows it, for a command's answer.
fn view(platform: &PlatformScope, id: AgencyId) -> Body<'_> {
    Body::Read(Box::pin(async move {
        fetch(platform, id.as_uuid())
            .await?
            .map(serde_json::to_value)
            .transpose()
            .map_err(ApiError::internal)
    }))
}
