//! Who is calling. Holding a [`Caller`] proves a valid, unrevoked access token was sent
//! (and that any restriction on it allows this route); `permission::Allowed` adds the
//! permission.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use eriop_domain::{AgencyId, BuiltInRole, UserId};

use crate::error::ApiError;
use crate::state::AppState;

use super::tokens::Claims;

#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
    /// `sub` and `agency`, parsed once: every token we sign names them by UUID.
    user: UserId,
    agency: AgencyId,
    /// The caller's roles in the token's agency now (read models), once a permission
    /// extractor (`Allowed`) resolved them; never the token's `roles` claim, which may be
    /// stale (a demoted platform admin's token keeps saying platform-admin until it expires).
    current_roles: Option<Vec<String>>,
}

impl Caller {
    pub fn user_id(&self) -> UserId {
        self.user
    }

    /// The agency the token acts for (its active agency).
    pub fn agency_id(&self) -> AgencyId {
        self.agency
    }

    /// Whether the caller holds `role` now. False until a permission extractor resolved the
    /// current roles: powers are never decided from the token's claim.
    pub fn has_role(&self, role: BuiltInRole) -> bool {
        self.current_roles
            .as_ref()
            .is_some_and(|roles| roles.iter().any(|r| r == role.as_str()))
    }

    pub(crate) fn with_current_roles(mut self, roles: Vec<String>) -> Self {
        self.current_roles = Some(roles);
        self
    }
}

pub fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized(
            "send `Authorization: Bearer <access token>`",
        ))?;
        let auth = state.auth();
        let claims = auth.verify_access_token(token).map_err(|e| {
            tracing::info!(reason = %e, "access token refused");
            ApiError::Unauthorized("the access token is not valid")
        })?;
        if let Some(raw) = &claims.restriction {
            // Unknown restrictions restrict everything.
            let allowed =
                super::Restriction::parse(raw).is_some_and(|r| r.allows(parts.uri.path()));
            if !allowed {
                return Err(ApiError::Forbidden(match raw.as_str() {
                    "password-change" => "change your password first: POST /api/v1/auth/password",
                    _ => "your agency requires MFA: enrol first with POST /api/v1/auth/mfa/totp",
                }));
            }
        }
        let revoked = auth
            .sessions
            .access_revoked(&claims.jti, &claims.sub, claims.iat_ms, &claims.sid)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        if revoked {
            return Err(ApiError::Unauthorized("the access token was revoked"));
        }
        // Suspension applies at the next request, to tokens already issued too.
        if crate::identity::agency_suspended(state.pool(), &claims.agency).await? {
            return Err(ApiError::Unauthorized(crate::identity::AGENCY_SUSPENDED));
        }
        let (Ok(user), Ok(agency)) = (claims.sub.parse(), claims.agency.parse()) else {
            return Err(ApiError::Unauthorized("the access token is not valid"));
        };
        Ok(Self {
            claims,
            user,
            agency,
            current_roles: None,
        })
    }
}
