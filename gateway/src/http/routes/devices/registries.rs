//! `/api/v1/registries`: which agency each Fundamentum registry belongs to (DESIGN.md rule 7).
//! Platform administrators assign, list and remove them (`agencies:manage`); an agency
//! registers devices only under its own registries.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use eriop_domain::device::{RegistryCommand, RegistryName};
use eriop_domain::AgencyId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::http::command::{self, Body, Done, Stored};
use crate::http::edge::RequestId;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::paging::page;
use crate::http::paging::{PageParams, ReadModel};
use crate::http::permission::AgenciesManage;
use crate::http::{AgencyScope, Allowed, PlatformScope};
use crate::services::audit::Audit;
use crate::services::auth::Caller;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignRegistry {
    registry: String,
    agency_id: Uuid,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<i64>,
    offset: Option<i64>,
    agency_id: Option<Uuid>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct RegistryView {
    pub registry: String,
    pub agency_id: Option<Uuid>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub version: i64,
}

const SELECT: &str = "SELECT registry, agency_id, assigned_at, version FROM registries";

fn parse(raw: &str) -> Result<RegistryName, ApiError> {
    RegistryName::parse(raw).map_err(|e| ApiError::validation("registry", e.to_string()))
}

async fn fetch(
    platform: &PlatformScope,
    registry: &RegistryName,
) -> Result<Option<RegistryView>, ApiError> {
    let mut tx = platform.begin().await?;
    Ok(sqlx::query_as(&format!("{SELECT} WHERE registry = $1"))
        .bind(registry.as_str())
        .fetch_optional(&mut *tx)
        .await?)
}

/// The aggregate id of `registry`: reserved at its first assignment (one aggregate per name,
/// so two racing assignments meet in the event store), random (ids that cross NATS are
/// unique: DESIGN.md rule 11).
async fn aggregate_id(state: &AppState, registry: &RegistryName) -> Result<Uuid, ApiError> {
    sqlx::query("INSERT INTO registry_ids (registry, id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(registry.as_str())
        .bind(Uuid::now_v7())
        .execute(state.pool())
        .await?;
    Ok(
        sqlx::query_scalar("SELECT id FROM registry_ids WHERE registry = $1")
            .bind(registry.as_str())
            .fetch_one(state.pool())
            .await?,
    )
}

/// Runs a command on the registry as the platform administrator `admin`, on behalf of
/// `agency` (the audit trail's agency).
async fn execute(
    state: &AppState,
    admin: &Caller,
    registry: &RegistryName,
    agency: AgencyId,
    command: RegistryCommand,
    request_id: &RequestId,
) -> Result<Stored, ApiError> {
    let id = aggregate_id(state, registry).await?;
    let agency = agency.to_string();
    let audit = Audit {
        actor: &admin.claims.sub,
        agency_id: &agency,
        request_id: &request_id.0,
    };
    command::execute(
        state,
        state.registries(),
        ReadModel::Registries,
        id,
        command,
        &audit,
        "registry assigned to an agency",
    )
    .await
}

/// The registry as the read model shows it, for a command's answer.
fn view<'a>(platform: &'a PlatformScope, registry: &'a RegistryName) -> Body<'a> {
    Body::Read(Box::pin(async move {
        fetch(platform, registry)
            .await?
            .map(serde_json::to_value)
            .transpose()
            .map_err(ApiError::internal)
    }))
}

/// Assigns a registry to an agency: `201` once the read model shows it, `200` if it was the
/// agency's already (nothing recorded), `409` if another agency has it.
pub async fn assign(
    allowed: Allowed<AgenciesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<AssignRegistry>,
) -> Result<Response, ApiError> {
    let registry = parse(&body.registry)?;
    let agency = AgencyId::from_uuid(body.agency_id);
    // The event store, not the read model: an agency created a moment ago exists already.
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = 'agency' AND aggregate_id = $1)",
    )
    .bind(body.agency_id.to_string())
    .fetch_one(state.pool())
    .await?;
    if !exists {
        return Err(ApiError::validation("agency_id", "no such agency"));
    }
    let platform = allowed.platform();
    let before = fetch(&platform, &registry).await?;
    let already = before
        .as_ref()
        .is_some_and(|r| r.agency_id == Some(body.agency_id));
    let command = RegistryCommand::Assign {
        registry: registry.clone(),
        agency_id: agency,
    };
    let stored = execute(
        &state,
        &allowed.caller,
        &registry,
        agency,
        command,
        &request_id,
    )
    .await?;
    let done = if already {
        Done::Changed
    } else {
        Done::Created {
            location: format!("registries/{}", path_segment(registry.as_str())),
        }
    };
    command::respond(&state, stored, done, view(&platform, &registry)).await
}

/// Every assigned registry (of one agency with `agency_id`), by name.
pub async fn list(
    allowed: Allowed<AgenciesManage>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let (limit, offset) = PageParams::new(params.limit, params.offset).checked()?;
    // Registries are the platform's: a caller with agencies:manage sees them all.
    let mut tx = allowed.platform().begin().await?;
    let items: Vec<RegistryView> = sqlx::query_as(&format!(
        "{SELECT} WHERE agency_id IS NOT NULL AND ($1::uuid IS NULL OR agency_id = $1)
          ORDER BY registry LIMIT $2 OFFSET $3"
    ))
    .bind(params.agency_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *tx)
    .await?;
    Ok(page(&items, limit, offset))
}

/// One registry and its agency (`404` when it is assigned to none).
pub async fn get(
    allowed: Allowed<AgenciesManage>,
    ApiPath(registry): ApiPath<String>,
) -> Result<Response, ApiError> {
    let registry = parse(&registry)?;
    match fetch(&allowed.platform(), &registry).await? {
        Some(view) if view.agency_id.is_some() => Ok(Json(view).into_response()),
        _ => Err(ApiError::NotFound(
            "this registry is assigned to no agency".into(),
        )),
    }
}

/// Takes a registry back from its agency: refused (`409`) while live devices are registered
/// under it, so that no device is silently cut off.
pub async fn remove(
    allowed: Allowed<AgenciesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(registry): ApiPath<String>,
) -> Result<Response, ApiError> {
    let registry = parse(&registry)?;
    let platform = allowed.platform();
    let Some(agency) = fetch(&platform, &registry).await?.and_then(|v| v.agency_id) else {
        return Err(ApiError::NotFound(
            "this registry is assigned to no agency".into(),
        ));
    };
    let live: i64 = {
        let mut tx = platform.begin().await?;
        sqlx::query_scalar(
            "SELECT count(*) FROM devices WHERE registry = $1 AND NOT decommissioned",
        )
        .bind(registry.as_str())
        .fetch_one(&mut *tx)
        .await?
    };
    if live > 0 {
        return Err(ApiError::Conflict(format!(
            "{live} live devices are registered under this registry: decommission them first"
        )));
    }
    let stored = execute(
        &state,
        &allowed.caller,
        &registry,
        AgencyId::from_uuid(agency),
        RegistryCommand::Unassign,
        &request_id,
    )
    .await?;
    command::respond(&state, stored, Done::NoContent, Body::None).await
}

/// Whether `registry` belongs to `agency` now (the check of every device registration).
pub(crate) async fn belongs_to(scope: &AgencyScope, registry: &str) -> Result<bool, ApiError> {
    let mut tx = scope.begin().await?;
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM registries WHERE registry = $1 AND agency_id = $2)",
    )
    .bind(registry)
    .bind(scope.agency().as_uuid())
    .fetch_one(&mut *tx)
    .await?)
}

/// A registry name as one segment of a URL path: a Location header is ASCII, and a registry
/// may be any printable Unicode (found by schemathesis: raw UTF-8 in Location came back to
/// clients as mojibake).
fn path_segment(name: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(name, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_registry_in_a_location_is_percent_encoded() {
        assert_eq!(super::path_segment("city-lights_2.0"), "city-lights_2.0");
        assert_eq!(super::path_segment("Ç7 ok?"), "%C3%877%20ok%3F");
    }
}
