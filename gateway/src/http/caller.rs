//! The extractor that turns a request's bearer token into a [`Caller`]: signature, expiry,
//! restriction, revocation and suspension checked, and the current roles read, every time
//! (the standing from the read models, or as this gateway keeps it until they change).
//! `permission::Allowed` adds the permission.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::http::error::ApiError;
use crate::services::auth::{Caller, Restriction};
use crate::state::AppState;

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
            let allowed = Restriction::parse(raw).is_some_and(|r| r.allows(parts.uri.path()));
            if !allowed {
                return Err(ApiError::Forbidden(match raw.as_str() {
                    "password-change" => "change your password first: POST /api/v1/auth/password",
                    _ => "your agency requires MFA: enrol first with POST /api/v1/auth/mfa/totp",
                }));
            }
        }
        let (Ok(user), Ok(agency)) = (
            claims.sub.parse::<eriop_domain::UserId>(),
            claims.agency.parse::<eriop_domain::AgencyId>(),
        ) else {
            return Err(ApiError::Unauthorized("the access token is not valid"));
        };
        // Revocation (Redis), standing (PostgreSQL: suspension and current roles) and the
        // rate limits (Redis) are independent round trips: asked at once, a request waits
        // for the slowest only.
        let (revoked, standing, admitted) = tokio::join!(
            auth.sessions
                .access_revoked(&claims.jti, &claims.sub, claims.iat_ms, &claims.sid),
            // Suspension applies at the next request, to tokens already issued too; so do
            // roles given or taken.
            // Kept for a moment while hints say when it changes (`identity::Standings`).
            state.progress().standings().of(
                state.pool(),
                user.as_uuid(),
                agency.as_uuid(),
                state.progress().live(),
            ),
            crate::http::limits::admit_caller(
                state,
                parts.extensions.get::<crate::http::limits::RateSlot>(),
                &claims.sub,
                &claims.agency,
            ),
        );
        if revoked.map_err(|e| ApiError::Unavailable(e.to_string()))? {
            return Err(ApiError::Unauthorized("the access token was revoked"));
        }
        let standing = standing?;
        if standing.suspended {
            return Err(ApiError::Unauthorized(
                crate::services::identity::AGENCY_SUSPENDED,
            ));
        }
        admitted?;
        // A user the read models do not know yet (just registered) is taken at its token.
        let roles = standing.roles.unwrap_or_else(|| claims.roles.clone());
        Ok(Caller::new(claims, user, agency, roles))
    }
}
