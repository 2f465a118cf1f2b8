//! `/api/v1/users`: the users of the caller's agency, managed by its administrators.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use eriop_domain::builtin_role::UnknownRole;
use eriop_domain::user::{Email, PasswordPolicy};
use eriop_domain::{AgencyId, BuiltInRole};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use uuid::Uuid;

use crate::http::command::{self, Body, Done, Stored};
use crate::http::edge::RequestId;
use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::paging::page;
use crate::http::paging::{PageParams, ReadModel};
use crate::http::permission::{AgenciesManage, RolesManage, UsersRead, UsersWrite};
use crate::http::{AgencyScope, Allowed};
use crate::services::audit::Audit;
use crate::services::identity::one_time_password;
use crate::state::AppState;

/// A built-in role named in a request, or a 422 naming the known ones.
fn built_in(raw: &str) -> Result<BuiltInRole, ApiError> {
    raw.parse()
        .map_err(|e: UnknownRole| ApiError::validation("roles", e.to_string()))
}

/// The roles an agency gives within itself (a service account's, a membership's): every
/// built-in role but the platform's.
fn agency_roles(roles: &[String], what: &str) -> Result<(), ApiError> {
    for role in roles {
        if !role
            .parse::<BuiltInRole>()
            .is_ok_and(BuiltInRole::is_agency_role)
        {
            return Err(ApiError::validation(
                "roles",
                format!("not a role {what}: {role:?}"),
            ));
        }
    }
    Ok(())
}

/// A person's or an account's name: 1 to 200 characters, no control characters.
fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::validation(
            field,
            "must be 1 to 200 characters, no control characters",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    email: String,
    display_name: String,
    /// Omitted: a one-time password is made, answered once, and must be changed at first login.
    #[serde(default)]
    password: Option<SecretString>,
    #[serde(default)]
    roles: Vec<String>,
    /// Another agency than the caller's: platform administrators only (an agency onboarded
    /// in one call, with its first `agency-admin`). Any other caller gets 404.
    #[serde(default)]
    agency_id: Option<Uuid>,
}

pub async fn create(
    Allowed {
        caller: admin,
        scope,
        ..
    }: Allowed<UsersWrite>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<Response, ApiError> {
    let email =
        Email::parse(&body.email).map_err(|e| ApiError::validation("email", e.to_string()))?;
    let display_name = body.display_name.trim();
    check_name("display_name", display_name)?;
    for role in &body.roles {
        let role = built_in(role)?;
        if role == BuiltInRole::PlatformAdmin && !admin.has_role(BuiltInRole::PlatformAdmin) {
            return Err(ApiError::Forbidden(
                "only a platform admin may give the platform-admin role",
            ));
        }
    }
    let (password, generated) = match body.password {
        Some(password) => {
            PasswordPolicy::default()
                .check(password.expose_secret(), &[email.as_str(), display_name])
                .map_err(|e| ApiError::validation("password", e.to_string()))?;
            (password, None)
        }
        None => {
            let password = one_time_password();
            (password.clone(), Some(password))
        }
    };
    // Another agency: platform administrators only (404 for anyone else), logged.
    let agency_id = match body.agency_id {
        Some(other) => scope
            .other(&admin, AgencyId::from_uuid(other))
            .await?
            .agency(),
        None => scope.agency(),
    };
    let audit = Audit::by(&admin, &request_id.0);
    let user_id = state
        .identity()
        .register(
            &audit,
            agency_id,
            &email,
            display_name,
            password,
            generated.is_some(),
            body.roles.clone(),
        )
        .await?;
    let stored = Stored::latest(&state, ReadModel::Users, user_id.as_uuid()).await?;
    let mut body = serde_json::json!({
        "id": user_id,
        "agency_id": agency_id,
        "roles": body.roles,
        "password_change_required": generated.is_some(),
    });
    if let Some(password) = generated {
        body["one_time_password"] = password.expose_secret().into();
    }
    // The one-time password is answered once: the same body, 201 or 202.
    let location = format!("users/{user_id}");
    command::respond(
        &state,
        stored,
        Done::Created { location },
        Body::Known(body),
    )
    .await
}

pub async fn get(
    Allowed { caller: admin, .. }: Allowed<UsersRead>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let identity = state.identity();
    let user = identity.load(&id.to_string()).await?;
    identity.visible_to(&admin, &user)?;
    let lockout = user.lockout();
    Ok(Json(serde_json::json!({
        "id": id,
        "agency_id": user.agency_id(),
        "status": if user.is_erased() { serde_json::json!("erased") } else { serde_json::json!(user.status()) },
        "roles": user.roles(),
        "mfa_enabled": user.mfa_enabled(),
        "locked": lockout.is_locked(state.auth().now()),
        "consecutive_failures": lockout.consecutive_failures,
    }))
    .into_response())
}

pub async fn unlock(
    Allowed { caller: admin, .. }: Allowed<UsersWrite>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    state
        .identity()
        .unlock(&admin, &id.to_string(), &request_id.0)
        .await?;
    done(&state, id).await
}

/// The answer of a change to user `id`: `204` once the read model shows it, `202` if it lags.
async fn done(state: &AppState, id: Uuid) -> Result<Response, ApiError> {
    let stored = Stored::latest(state, ReadModel::Users, id).await?;
    command::respond(state, stored, Done::NoContent, Body::None).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    display_name: String,
}

pub async fn update(
    Allowed { caller: admin, .. }: Allowed<UsersWrite>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Response, ApiError> {
    let display_name = body.display_name.trim();
    check_name("display_name", display_name)?;
    state
        .identity()
        .update_profile(&admin, &id.to_string(), display_name, &request_id.0)
        .await?;
    done(&state, id).await
}

/// DELETE means deactivate: the history stays, the sessions end, an admin may reactivate.
/// An administrator cannot take away their own access (deactivate themselves, drop one of
/// their roles or memberships): the last platform administrator doing so would leave nobody
/// able to give it back. Another administrator can.
fn not_oneself(
    admin: &crate::services::auth::Caller,
    id: Uuid,
    what: &str,
) -> Result<(), ApiError> {
    if admin.user_id().as_uuid() == id {
        return Err(ApiError::Conflict(format!(
            "you cannot {what} yourself: ask another administrator"
        )));
    }
    Ok(())
}

pub async fn deactivate(
    Allowed { caller: admin, .. }: Allowed<UsersWrite>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    not_oneself(&admin, id, "deactivate")?;
    state
        .identity()
        .set_active(&admin, &id.to_string(), false, &request_id.0)
        .await?;
    done(&state, id).await
}

pub async fn reactivate(
    Allowed { caller: admin, .. }: Allowed<UsersWrite>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    state
        .identity()
        .set_active(&admin, &id.to_string(), true, &request_id.0)
        .await?;
    done(&state, id).await
}

/// Erases a person's personal data (crypto-shredding): audited, for good. Not oneself.
pub async fn erase(
    Allowed { caller: admin, .. }: Allowed<UsersWrite>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    not_oneself(&admin, id, "erase")?;
    state
        .identity()
        .erase(&admin, &id.to_string(), &request_id.0)
        .await?;
    done(&state, id).await
}

/// An administrator's reset of another user's MFA (a lost phone): its own audited event.
pub async fn reset_mfa(
    Allowed { caller: admin, .. }: Allowed<UsersWrite>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    state
        .identity()
        .reset_mfa(&admin, &id.to_string(), &request_id.0)
        .await?;
    done(&state, id).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceAccount {
    name: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// A service account for an integration or an auditor: its secret is answered once.
pub async fn create_service_account(
    Allowed {
        caller: admin,
        scope,
        ..
    }: Allowed<UsersWrite>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<CreateServiceAccount>,
) -> Result<Response, ApiError> {
    let name = body.name.trim();
    check_name("name", name)?;
    agency_roles(&body.roles, "for a service account")?;
    let agency_id = scope.agency();
    let audit = Audit::by(&admin, &request_id.0);
    let (id, secret) = state
        .identity()
        .register_service_account(&audit, agency_id, name, body.roles.clone())
        .await?;
    // The secret is answered once: the same body, 201 or 202.
    let stored = Stored::latest(&state, ReadModel::Users, id.as_uuid()).await?;
    let body = serde_json::json!({
        "client_id": id,
        "client_secret": secret.expose_secret(),
        "roles": body.roles,
    });
    let location = format!("users/{id}");
    command::respond(
        &state,
        stored,
        Done::Created { location },
        Body::Known(body),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    /// Another agency's users: platform admins only.
    agency_id: Option<Uuid>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    agency_id: Uuid,
    email_sealed: String,
    display_name_sealed: String,
    roles: Vec<String>,
    status: String,
    mfa_enabled: bool,
    service_account: bool,
    locked_until: Option<chrono::DateTime<chrono::Utc>>,
    created_at: chrono::DateTime<chrono::Utc>,
    wrapped_key: Option<String>,
}

/// What every read shows where an erased person's data was.
pub const ERASED: &str = "[erased]";

/// The users of the caller's agency, oldest first. Email and name are opened here, per
/// row, with each person's key: `null` for a person who was erased.
pub async fn list(
    Allowed {
        caller: admin,
        scope,
        ..
    }: Allowed<UsersRead>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<UsersQuery>,
) -> Result<Response, ApiError> {
    let (limit, offset) = PageParams::new(params.limit, params.offset).checked()?;
    // Another agency only for the platform, only by naming it, and logged.
    let scope = match params.agency_id {
        Some(other) => scope.other(&admin, AgencyId::from_uuid(other)).await?,
        None => scope,
    };
    let rows: Vec<UserRow> = sqlx::query_as(
        "SELECT u.id, u.agency_id, u.email_sealed, u.display_name_sealed, u.roles, u.status,
                u.mfa_enabled, u.service_account, u.locked_until, u.created_at, k.wrapped_key
           FROM users u LEFT JOIN user_data_keys k ON k.user_id = u.id
          WHERE u.agency_id = $1
          ORDER BY u.created_at, u.id
          LIMIT $2 OFFSET $3",
    )
    .bind(scope.agency().as_uuid())
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *scope.begin().await?)
    .await?;
    let identity = state.identity();
    let items: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|row| {
            let id = row.id.to_string();
            // An erased person's key is gone: what was theirs reads `[erased]`.
            let erased = row.status == "erased" || row.wrapped_key.is_none();
            let key = row.wrapped_key.as_deref();
            let personal = |value: Option<String>| {
                if erased {
                    Some(ERASED.to_owned())
                } else {
                    value
                }
            };
            serde_json::json!({
                "id": row.id,
                "agency_id": row.agency_id,
                "email": personal(identity.open_personal(&id, key, "email", &row.email_sealed).filter(|e| !e.is_empty())),
                "display_name": personal(identity.open_personal(&id, key, "name", &row.display_name_sealed)),
                "roles": row.roles,
                "status": row.status,
                "mfa_enabled": row.mfa_enabled,
                "service_account": row.service_account,
                "locked_until": row.locked_until,
                "created_at": row.created_at,
            })
        })
        .collect();
    Ok(page(&items, limit, offset))
}

/// `PUT` gives a role to a user of the caller's agency, `DELETE` takes it; either takes
/// effect at the user's next request (the answer waits until it does).
pub async fn assign_role(
    Allowed {
        caller: admin,
        scope,
        ..
    }: Allowed<RolesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath((id, role)): ApiPath<(Uuid, String)>,
) -> Result<Response, ApiError> {
    change_role(&state, &admin, &scope, id, &role, true, &request_id).await
}

pub async fn unassign_role(
    Allowed {
        caller: admin,
        scope,
        ..
    }: Allowed<RolesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath((id, role)): ApiPath<(Uuid, String)>,
) -> Result<Response, ApiError> {
    not_oneself(&admin, id, "take a role from")?;
    change_role(&state, &admin, &scope, id, &role, false, &request_id).await
}

async fn change_role(
    state: &AppState,
    admin: &crate::services::auth::Caller,
    scope: &AgencyScope,
    id: Uuid,
    role: &str,
    assign: bool,
    request_id: &RequestId,
) -> Result<Response, ApiError> {
    // A built-in role, or one of the caller's agency (another agency's role: 404).
    let role = crate::http::routes::roles::assignable(scope, role).await?;
    let role = role.as_str();
    let platform = BuiltInRole::PlatformAdmin;
    if role == platform.as_str() && !admin.has_role(platform) {
        return Err(ApiError::Forbidden(
            "only a platform admin may give or take the platform-admin role",
        ));
    }
    state
        .identity()
        .set_role(admin, &id.to_string(), role, assign, &request_id.0)
        .await?;
    done(state, id).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    roles: Vec<String>,
}

/// Membership of a user in another agency, with roles there. Crosses agencies, so it needs
/// agencies:manage (the platform's).
pub async fn grant_membership(
    Allowed { caller: admin, .. }: Allowed<AgenciesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath((id, agency)): ApiPath<(Uuid, Uuid)>,
    ApiJson(body): ApiJson<Membership>,
) -> Result<Response, ApiError> {
    agency_roles(&body.roles, "of an agency")?;
    state
        .identity()
        .set_membership(
            &admin,
            &id.to_string(),
            AgencyId::from_uuid(agency),
            Some(body.roles),
            &request_id.0,
        )
        .await?;
    done(&state, id).await
}

pub async fn revoke_membership(
    Allowed { caller: admin, .. }: Allowed<AgenciesManage>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath((id, agency)): ApiPath<(Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    not_oneself(&admin, id, "take a membership from")?;
    state
        .identity()
        .set_membership(
            &admin,
            &id.to_string(),
            AgencyId::from_uuid(agency),
            None,
            &request_id.0,
        )
        .await?;
    done(&state, id).await
}
