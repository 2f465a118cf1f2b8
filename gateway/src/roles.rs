//! `/api/v1/roles`: the built-in roles (in every agency, fixed) and the agency's own roles.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cqrs_es::AggregateError;
use eriop_domain::role::{RoleCommand, RoleError, RoleName, BUILT_IN};
use eriop_domain::{AgencyId, Permission};
use serde::Deserialize;
use uuid::Uuid;

use crate::audit::Audit;
use crate::auth::permission::RolesManage;
use crate::auth::{Allowed, Caller};
use crate::edge::RequestId;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::paging::{await_version, ReadModel};
use crate::state::AppState;
use crate::tenancy::{self, Scope};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    name: String,
    #[serde(default)]
    permissions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameRole {
    name: String,
}

#[derive(sqlx::FromRow, serde::Serialize)]
struct RoleRow {
    id: Uuid,
    name: String,
    permissions: Vec<String>,
}

fn built_in(name: &str) -> serde_json::Value {
    let permissions: Vec<&str> = Permission::of_builtin_role(name)
        .iter()
        .map(|p| p.as_str())
        .collect();
    serde_json::json!({ "id": name, "name": name, "permissions": permissions, "built_in": true })
}

fn custom(row: RoleRow) -> serde_json::Value {
    serde_json::json!({ "id": row.id, "name": row.name, "permissions": row.permissions, "built_in": false })
}

fn parse_permissions(raw: &[String]) -> Result<Vec<Permission>, ApiError> {
    raw.iter()
        .map(|p| {
            p.parse()
                .map_err(|e: eriop_domain::permission::UnknownPermission| {
                    ApiError::validation("permissions", e.to_string())
                })
        })
        .collect()
}

/// A role of the caller's agency (row-level security hides the others): 404 otherwise.
async fn find(state: &AppState, caller: &Caller, id: Uuid) -> Result<RoleRow, ApiError> {
    let mut tx = tenancy::begin(state.pool(), Scope::Agency(caller.agency_id())).await?;
    sqlx::query_as("SELECT id, name, permissions FROM roles WHERE id = $1 AND NOT deleted")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such role in your agency".into()))
}

/// A role named in a path: a built-in role's name, or the id of one of the agency's roles.
enum RoleRef {
    BuiltIn(&'static str),
    Custom(Uuid),
}

fn role_ref(raw: &str) -> Result<RoleRef, ApiError> {
    if let Some(name) = BUILT_IN.iter().find(|n| **n == raw) {
        return Ok(RoleRef::BuiltIn(name));
    }
    Uuid::parse_str(raw)
        .map(RoleRef::Custom)
        .map_err(|_| ApiError::NotFound(format!("no role {raw:?}")))
}

/// Checks that `raw` names a role the caller's agency may give: a built-in one, or one of its
/// own. Answers the value stored in the user's roles.
pub async fn assignable(state: &AppState, caller: &Caller, raw: &str) -> Result<String, ApiError> {
    match role_ref(raw)? {
        RoleRef::BuiltIn(name) => Ok(name.to_owned()),
        RoleRef::Custom(id) => find(state, caller, id).await.map(|r| r.id.to_string()),
    }
}

async fn execute(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    command: RoleCommand,
    request_id: &RequestId,
) -> Result<(), ApiError> {
    let audit = Audit::by(caller, &request_id.0);
    let metadata = audit.metadata(command.name());
    state
        .roles()
        .execute_with_metadata(&id.to_string(), command, metadata)
        .await
        .map_err(|e| match e {
            AggregateError::UserError(RoleError::NotFound) => {
                ApiError::NotFound("no such role in your agency".into())
            }
            AggregateError::UserError(other) => ApiError::Conflict(other.to_string()),
            AggregateError::AggregateConflict => {
                ApiError::Conflict("the role was changed at the same time; retry".into())
            }
            other => ApiError::Unavailable(other.to_string()),
        })?;
    let version: Option<i64> = sqlx::query_scalar(
        "SELECT max(sequence) FROM events WHERE aggregate_type = 'role' AND aggregate_id = $1",
    )
    .bind(id.to_string())
    .fetch_one(state.pool())
    .await?;
    await_version(
        state.pool(),
        ReadModel::Roles,
        id,
        version.unwrap_or(0),
        state.read_your_writes_timeout(),
    )
    .await?;
    Ok(())
}

pub async fn create(
    Allowed { caller, .. }: Allowed<RolesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<CreateRole>,
) -> Result<Response, ApiError> {
    let name =
        RoleName::parse(&body.name).map_err(|e| ApiError::validation("name", e.to_string()))?;
    let permissions = parse_permissions(&body.permissions)?;
    if permissions.contains(&Permission::AgenciesManage) {
        return Err(ApiError::validation(
            "permissions",
            "agencies:manage belongs to the platform",
        ));
    }
    let agency_id: AgencyId = caller
        .agency_id()
        .parse()
        .map_err(|_| ApiError::Unauthorized("the token names no agency"))?;
    let id = Uuid::now_v7();
    execute(
        &state,
        &caller,
        id,
        RoleCommand::Create {
            id,
            agency_id,
            name,
            permissions,
        },
        &request_id,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(custom(find(&state, &caller, id).await?)),
    )
        .into_response())
}

pub async fn list(
    Allowed { caller, .. }: Allowed<RolesManage>,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let mut tx = tenancy::begin(state.pool(), Scope::Agency(caller.agency_id())).await?;
    let rows: Vec<RoleRow> =
        sqlx::query_as("SELECT id, name, permissions FROM roles WHERE NOT deleted ORDER BY name")
            .fetch_all(&mut *tx)
            .await?;
    let items: Vec<serde_json::Value> = BUILT_IN
        .iter()
        .map(|n| built_in(n))
        .chain(rows.into_iter().map(custom))
        .collect();
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}

pub async fn get(
    Allowed { caller, .. }: Allowed<RolesManage>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(match role_ref(&id)? {
        RoleRef::BuiltIn(name) => built_in(name),
        RoleRef::Custom(id) => custom(find(&state, &caller, id).await?),
    })
    .into_response())
}

fn custom_only(raw: &str) -> Result<Uuid, ApiError> {
    match role_ref(raw)? {
        RoleRef::BuiltIn(_) => Err(ApiError::Conflict(
            "built-in roles cannot be changed or deleted".into(),
        )),
        RoleRef::Custom(id) => Ok(id),
    }
}

pub async fn rename(
    Allowed { caller, .. }: Allowed<RolesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RenameRole>,
) -> Result<Response, ApiError> {
    let id = custom_only(&id)?;
    find(&state, &caller, id).await?;
    let name =
        RoleName::parse(&body.name).map_err(|e| ApiError::validation("name", e.to_string()))?;
    execute(
        &state,
        &caller,
        id,
        RoleCommand::Rename { name },
        &request_id,
    )
    .await?;
    Ok(Json(custom(find(&state, &caller, id).await?)).into_response())
}

pub async fn delete(
    Allowed { caller, .. }: Allowed<RolesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = custom_only(&id)?;
    find(&state, &caller, id).await?;
    execute(&state, &caller, id, RoleCommand::Delete, &request_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn grant(
    Allowed { caller, .. }: Allowed<RolesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath((id, permission)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    change_permission(&state, &caller, &id, &permission, true, &request_id).await
}

pub async fn revoke(
    Allowed { caller, .. }: Allowed<RolesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath((id, permission)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    change_permission(&state, &caller, &id, &permission, false, &request_id).await
}

async fn change_permission(
    state: &AppState,
    caller: &Caller,
    id: &str,
    permission: &str,
    grant: bool,
    request_id: &RequestId,
) -> Result<Response, ApiError> {
    let id = custom_only(id)?;
    let permission: Permission = permission
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no permission {permission:?}")))?;
    if permission == Permission::AgenciesManage {
        return Err(ApiError::validation(
            "permission",
            "agencies:manage belongs to the platform",
        ));
    }
    find(state, caller, id).await?;
    let command = if grant {
        RoleCommand::Grant { permission }
    } else {
        RoleCommand::Revoke { permission }
    };
    execute(state, caller, id, command, request_id).await?;
    Ok(Json(custom(find(state, caller, id).await?)).into_response())
}
