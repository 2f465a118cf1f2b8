//! Sessions: opening one (a token pair in an agency), refresh rotation with reuse
//! detection, logout, ending every session of a user, switching agency.

use eriop_domain::user::{User, UserCommand, UserStatus};
use eriop_domain::AgencyId;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::services::audit::Audit;
use crate::services::auth::sessions::{RefreshOwner, Rotation};
use crate::services::auth::{Caller, TokenPair};

use super::*;

impl Identity<'_> {
    /// A new session in the user's own agency.
    pub(super) async fn open_session(
        &self,
        user_id: &str,
        user: &User,
    ) -> Result<TokenPair, ApiError> {
        let agency = user
            .agency_id()
            .ok_or_else(|| ApiError::NotFound("no such user".into()))?;
        self.open_session_in(user_id, user, agency).await
    }

    /// A new session scoped to `agency`, with the roles the user holds there.
    pub(super) async fn open_session_in(
        &self,
        user_id: &str,
        user: &User,
        agency: AgencyId,
    ) -> Result<TokenPair, ApiError> {
        let roles = user
            .roles_in(agency)
            .ok_or_else(|| ApiError::NotFound("you are not a member of this agency".into()))?;
        let agency_id = agency.to_string();
        if agency_suspended(self.pool, &agency_id).await? {
            return Err(ApiError::Forbidden(AGENCY_SUSPENDED));
        }
        let restriction = self.restriction_for(user, agency).await?;
        let family = Uuid::new_v4().to_string();
        let pair = self
            .auth
            .new_pair(user_id, &agency_id, roles, &family, restriction)
            .map_err(ApiError::internal)?;
        let owner = RefreshOwner {
            family,
            user_id: user_id.to_owned(),
            agency_id,
        };
        self.auth
            .sessions
            .open_family(&owner, &pair.refresh_token, self.auth.refresh_ttl)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok(pair)
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, OAuthError> {
        let unavailable = |_| OAuthError {
            error: "temporarily_unavailable",
            error_description: "retry later",
        };
        let owner = self
            .auth
            .sessions
            .owner(refresh_token)
            .await
            .map_err(unavailable)?
            .ok_or_else(invalid_grant)?;
        let user = self
            .load(&owner.user_id)
            .await
            .map_err(|_| invalid_grant())?;
        if user.status() != Some(UserStatus::Active) {
            return Err(invalid_grant());
        }
        // The roles held now in the session's agency (a revoked membership ends the session).
        let agency: AgencyId = owner.agency_id.parse().map_err(|_| invalid_grant())?;
        let roles = user.roles_in(agency).ok_or_else(invalid_grant)?;
        if agency_suspended(self.pool, &owner.agency_id)
            .await
            .map_err(|_| OAuthError {
                error: "temporarily_unavailable",
                error_description: "retry later",
            })?
        {
            return Err(OAuthError {
                error: "invalid_grant",
                error_description: AGENCY_SUSPENDED,
            });
        }
        let pair = self
            .auth
            .new_pair(
                &owner.user_id,
                &owner.agency_id,
                roles,
                &owner.family,
                // Decided again: a refresh never lifts a restriction.
                self.restriction_for(&user, agency)
                    .await
                    .map_err(|_| invalid_grant())?,
            )
            .map_err(|_| OAuthError {
                error: "server_error",
                error_description: "cannot sign the token",
            })?;
        let successor = serde_json::to_vec(&pair).unwrap_or_default();
        let rotation = self
            .auth
            .sessions
            .rotate(
                &owner,
                refresh_token,
                &pair.refresh_token,
                &successor,
                self.auth.now().millis(),
            )
            .await
            .map_err(unavailable)?;
        match rotation {
            Rotation::Rotated => Ok(pair),
            Rotation::AlreadyRotated(earlier) => {
                serde_json::from_slice(&earlier).map_err(|_| invalid_grant())
            }
            Rotation::Reused => {
                tracing::warn!(user_id = %owner.user_id, family = %owner.family, "refresh token reused: session family revoked");
                Err(invalid_grant())
            }
            Rotation::Invalid => Err(invalid_grant()),
        }
    }

    pub async fn logout(&self, caller: &Caller, request_id: &str) -> Result<(), ApiError> {
        let sessions = &self.auth.sessions;
        let now = self.auth.now().millis();
        let unavailable =
            |e: crate::services::auth::sessions::SessionError| ApiError::Unavailable(e.to_string());
        sessions
            .revoke_family(&caller.claims.sid)
            .await
            .map_err(unavailable)?;
        sessions
            .deny(&caller.claims.jti, caller.claims.exp * 1000, now)
            .await
            .map_err(unavailable)?;
        let audit = Audit::by(caller, request_id);
        self.execute(
            caller.claims.sub.as_str(),
            UserCommand::LogOut {
                now: self.auth.now(),
            },
            &audit,
        )
        .await
        .map_err(user_error)
    }

    /// Every access token issued until now stops working, every session family is revoked.
    pub(super) async fn end_sessions(&self, user_id: &str) -> Result<(), ApiError> {
        let unavailable =
            |e: crate::services::auth::sessions::SessionError| ApiError::Unavailable(e.to_string());
        let sessions = &self.auth.sessions;
        sessions
            .set_not_before(user_id, self.auth.now().millis(), self.auth.access_ttl)
            .await
            .map_err(unavailable)?;
        sessions
            .revoke_user_families(user_id, None)
            .await
            .map_err(unavailable)
    }

    /// Tokens for another agency the caller belongs to (a new session there), recorded as
    /// AgencyEntered once the session is open: tokens of a session whose event could not be
    /// stored are never handed out.
    pub async fn switch_agency(
        &self,
        caller: &Caller,
        agency: AgencyId,
        request_id: &str,
    ) -> Result<TokenPair, ApiError> {
        let user = self.load(caller.claims.sub.as_str()).await?;
        let tokens = self
            .open_session_in(caller.claims.sub.as_str(), &user, agency)
            .await?;
        let audit = Audit::by(caller, request_id);
        self.execute(
            caller.claims.sub.as_str(),
            UserCommand::EnterAgency {
                agency_id: agency,
                now: self.auth.now(),
            },
            &audit,
        )
        .await
        .map_err(user_error)?;
        Ok(tokens)
    }
}
