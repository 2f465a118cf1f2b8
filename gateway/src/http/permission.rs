//! Permissions as types (after lldap's access-control): a handler names the permission it
//! needs in its signature, `Allowed<UsersWrite>`, and code that did not pass the check never
//! holds the value that lets it act. Every decision, allowed or denied, is one log line with
//! target `authz`: request id, user id, agency id, permission, resource id, outcome; never
//! personal data.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use eriop_domain::Permission;

use super::scope::{AgencyScope, PlatformScope};
use crate::http::edge::RequestId;
use crate::http::error::ApiError;
use crate::services::auth::Caller;
use crate::state::AppState;

/// A permission, as a type a handler can name.
pub trait Required: Send + Sync + 'static {
    const PERMISSION: Permission;
}

macro_rules! permissions {
    ($($name:ident),* $(,)?) => {
        $(
            #[doc = concat!("The `", stringify!($name), "` permission, as a type.")]
            pub struct $name;
            impl Required for $name {
                const PERMISSION: Permission = Permission::$name;
            }
        )*
    };
}

permissions!(
    AgenciesManage,
    UsersRead,
    UsersWrite,
    RolesManage,
    DevicesRead,
    DevicesWrite,
    DevicesCommand,
    TelemetryRead,
    AuditRead,
);

/// A caller that holds the permission `P` in its active agency, and the handle that opens
/// that agency's data (and nothing else).
pub struct Allowed<P: Required> {
    pub caller: Caller,
    pub scope: AgencyScope,
    _permission: PhantomData<P>,
}

impl<P: Required> Allowed<P> {
    pub fn permission(&self) -> Permission {
        P::PERMISSION
    }
}

impl Allowed<AgenciesManage> {
    /// Every agency's data: only a caller with `agencies:manage` (the platform's) gets it.
    pub fn platform(&self) -> PlatformScope {
        PlatformScope::of(&self.scope)
    }
}

/// Whether `roles` give `permission`.
pub fn grants(roles: &[String], permission: Permission) -> bool {
    roles
        .iter()
        .any(|role| Permission::of_builtin_role(role).contains(&permission))
}

async fn agency_roles_grant(
    scope: &AgencyScope,
    roles: &[String],
    permission: Permission,
) -> Result<bool, ApiError> {
    let ids: Vec<uuid::Uuid> = roles
        .iter()
        .filter_map(|r| uuid::Uuid::parse_str(r).ok())
        .collect();
    if ids.is_empty() {
        return Ok(false);
    }
    let mut tx = scope.begin().await?;
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM roles WHERE id = ANY($1) AND NOT deleted AND $2 = ANY(permissions))",
    )
    .bind(&ids)
    .bind(permission.as_str())
    .fetch_one(&mut *tx)
    .await?)
}

/// The id of the resource a request is about: the last path segment that is a UUID.
fn resource_id(parts: &Parts) -> String {
    parts
        .uri
        .path()
        .rsplit('/')
        .find(|segment| uuid::Uuid::parse_str(segment).is_ok())
        .unwrap_or("")
        .to_owned()
}

impl<P: Required> FromRequestParts<AppState> for Allowed<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let scope = AgencyScope::new(state, caller.agency_id());
        let roles = caller.current_roles();
        let allowed = grants(roles, P::PERMISSION)
            || agency_roles_grant(&scope, roles, P::PERMISSION).await?;
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        tracing::info!(
            target: "authz",
            request_id = %request_id,
            user_id = %caller.user_id(),
            agency_id = %caller.agency_id(),
            permission = %P::PERMISSION,
            resource_id = %resource_id(parts),
            outcome = if allowed { "allow" } else { "deny" },
            "authorization decision"
        );
        if allowed {
            Ok(Self {
                caller,
                scope,
                _permission: PhantomData,
            })
        } else {
            Err(ApiError::Forbidden(forbidden_detail(P::PERMISSION)))
        }
    }
}

fn forbidden_detail(permission: Permission) -> &'static str {
    match permission {
        Permission::AgenciesManage => "this needs the permission agencies:manage",
        Permission::UsersRead => "this needs the permission users:read",
        Permission::UsersWrite => "this needs the permission users:write",
        Permission::RolesManage => "this needs the permission roles:manage",
        Permission::DevicesRead => "this needs the permission devices:read",
        Permission::DevicesWrite => "this needs the permission devices:write",
        Permission::DevicesCommand => "this needs the permission devices:command",
        Permission::TelemetryRead => "this needs the permission telemetry:read",
        Permission::AuditRead => "this needs the permission audit:read",
    }
}
