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
use crate::tenancy::{self, Scope};

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

/// The caller's roles now, in the token's agency: from the read models, so that a role or a
/// membership given or taken applies at the next request, also to tokens already issued.
/// Only a user the read models do not know yet (just registered) is taken at its token.
async fn current_roles(state: &AppState, caller: &Caller) -> Result<Vec<String>, ApiError> {
    let (user_id, agency) = (caller.user_id().as_uuid(), caller.agency_id().as_uuid());
    // Keyed by the caller's own id: the one lookup that looks across agencies.
    let mut tx = tenancy::begin(state.pool(), Scope::All).await?;
    let (known, home, member): (bool, Option<Vec<String>>, Option<Vec<String>>) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1),
                (SELECT roles FROM users WHERE id = $1 AND agency_id = $2),
                (SELECT roles FROM user_memberships WHERE user_id = $1 AND agency_id = $2)",
    )
    .bind(user_id)
    .bind(agency)
    .fetch_one(&mut *tx)
    .await?;
    Ok(match (known, home.or(member)) {
        (_, Some(roles)) => roles,
        (true, None) => Vec::new(),
        (false, None) => caller.claims.roles.clone(),
    })
}

/// Whether one of the agency's own roles among `roles` (stored by id) gives `permission`.
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
        let roles = current_roles(state, &caller).await?;
        let scope = AgencyScope::new(state, caller.agency_id());
        let allowed = grants(&roles, P::PERMISSION)
            || agency_roles_grant(&scope, &roles, P::PERMISSION).await?;
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
                caller: caller.with_current_roles(roles),
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
