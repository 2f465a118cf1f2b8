//! `/api/v1/roles`: the built-in roles (in every agency, fixed) and the agency's own roles.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use eriop_domain::role::{RoleCommand, RoleName};
use eriop_domain::BuiltInRole;
use eriop_domain::Permission;
use serde::Deserialize;
use uuid::Uuid;

use crate::http::command::{self, Body, Done, Stored};
use crate::http::edge::RequestId;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::paging::ReadModel;
use crate::http::permission::RolesManage;
use crate::http::{AgencyScope, Allowed};
use crate::services::audit::Audit;
use crate::services::auth::Caller;
use crate::state::AppState;

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
async fn find(scope: &AgencyScope, id: Uuid) -> Result<RoleRow, ApiError> {
    fetch(scope, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such role in your agency".into()))
}

async fn fetch(scope: &AgencyScope, id: Uuid) -> Result<Option<RoleRow>, ApiError> {
    let mut tx = scope.begin().await?;
    Ok(
        sqlx::query_as("SELECT id, name, permissions FROM roles WHERE id = $1 AND NOT deleted")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?,
    )
}

/// The role as the read model shows it, for a command's answer.
fn view(scope: &AgencyScope, id: Uuid) -> Body<'_> {
    Body::Read(Box::pin(
        async move { Ok(fetch(scope, id).await?.map(custom)) },
    ))
}

/// A role named in a path: a built-in role's name, or the id of one of the agency's roles.
enum RoleRef {
    BuiltIn(&'static str),
    Custom(Uuid),
}

fn role_ref(raw: &str) -> Result<RoleRef, ApiError> {
    if let Ok(role) = raw.parse::<BuiltInRole>() {
        return Ok(RoleRef::BuiltIn(role.as_str()));
    }
    Uuid::parse_str(raw)
        .map(RoleRef::Custom)
        .map_err(|_| ApiError::NotFound(format!("no role {raw:?}")))
}

/// Checks that `raw` names a role the caller's agency may give: a built-in one, or one of its
/// own. Answers the value stored in the user's roles.
pub async fn assignable(scope: &AgencyScope, raw: &str) -> Result<String, ApiError> {
    match role_ref(raw)? {
        RoleRef::BuiltIn(name) => Ok(name.to_owned()),
        RoleRef::Custom(id) => find(scope, id).await.map(|r| r.id.to_string()),
    }
}

async fn execute(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    command: RoleCommand,
    request_id: &RequestId,
) -> Result<Stored, ApiError> {
    let audit = Audit::by(caller, &request_id.0);
    command::execute(
        state,
        state.roles(),
        ReadModel::Roles,
        id,
        command,
        &audit,
        "role in your agency",
    )
    .await
}

pub async fn create(
    Allowed { caller, scope, .. }: Allowed<RolesManage>,
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
    let agency_id = scope.agency();
    let id = Uuid::now_v7();
    let stored = execute(
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
    let location = format!("roles/{id}");
    command::respond(&state, stored, Done::Created { location }, view(&scope, id)).await
}

pub async fn list(Allowed { scope, .. }: Allowed<RolesManage>) -> Result<Response, ApiError> {
    let mut tx = scope.begin().await?;
    let rows: Vec<RoleRow> =
        sqlx::query_as("SELECT id, name, permissions FROM roles WHERE NOT deleted ORDER BY name")
            .fetch_all(&mut *tx)
            .await?;
    let items: Vec<serde_json::Value> = BuiltInRole::ALL
        .iter()
        .map(|r| built_in(r.as_str()))
        .chain(rows.into_iter().map(custom))
        .collect();
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}

pub async fn get(
    Allowed { scope, .. }: Allowed<RolesManage>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(match role_ref(&id)? {
        RoleRef::BuiltIn(name) => built_in(name),
        RoleRef::Custom(id) => custom(find(&scope, id).await?),
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
    Allowed { caller, scope, .. }: Allowed<RolesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RenameRole>,
) -> Result<Response, ApiError> {
    let id = custom_only(&id)?;
    find(&scope, id).await?;
    let name =
        RoleName::parse(&body.name).map_err(|e| ApiError::validation("name", e.to_string()))?;
    let stored = execute(
        &state,
        &caller,
        id,
        RoleCommand::Rename { name },
        &request_id,
    )
    .await?;
    command::respond(&state, stored, Done::Changed, view(&scope, id)).await
}

pub async fn delete(
    Allowed { caller, scope, .. }: Allowed<RolesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = custom_only(&id)?;
    find(&scope, id).await?;
    let stored = execute(&state, &caller, id, RoleCommand::Delete, &request_id).await?;
    command::respond(&state, stored, Done::NoContent, Body::None).await
}

pub async fn grant(
    Allowed { caller, scope, .. }: Allowed<RolesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath((id, permission)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    change_permission(&state, &caller, &scope, &id, &permission, true, &request_id).await
}

pub async fn revoke(
    Allowed { caller, scope, .. }: Allowed<RolesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath((id, permission)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    change_permission(
        &state,
        &caller,
        &scope,
        &id,
        &permission,
        false,
        &request_id,
    )
    .await
}

async fn change_permission(
    state: &AppState,
    caller: &Caller,
    scope: &AgencyScope,
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
    find(scope, id).await?;
    let command = if grant {
        RoleCommand::Grant { permission }
    } else {
        RoleCommand::Revoke { permission }
    };
    let stored = execute(state, caller, id, command, request_id).await?;
    command::respond(state, stored, Done::Changed, view(scope, id)).await
}
