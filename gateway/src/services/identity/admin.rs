//! Administration of users: registration (people and service accounts), lock, activity,
//! MFA reset, roles and memberships, and who may see whom.

use cqrs_es::AggregateError;
use eriop_domain::user::{Email, Sealed, User, UserCommand, UserError};
use eriop_domain::{AgencyId, BuiltInRole, UserId};
use secrecy::SecretString;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::services::audit::Audit;
use crate::services::auth::{crypto, passwords, Caller};

use super::*;

impl Identity<'_> {
    /// Registers a user. The email is reserved first, in the write side's own table, so two
    /// registrations of one address cannot both succeed.
    #[allow(clippy::too_many_arguments)]
    pub async fn register(
        &self,
        audit: &Audit<'_>,
        agency_id: AgencyId,
        email: &Email,
        display_name: &str,
        password: SecretString,
        must_change_password: bool,
        roles: Vec<String>,
    ) -> Result<UserId, ApiError> {
        let user_id = UserId::from_uuid(Uuid::now_v7());
        let id = user_id.to_string();
        // Taken under a previous key too (a rotation not re-indexed yet).
        if self.user_by_email(email).await?.is_some() {
            return Err(ApiError::Conflict(EMAIL_TAKEN.into()));
        }
        let reserved = sqlx::query(
            "INSERT INTO user_emails (email_index, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(self.auth.email_index(email))
        .bind(user_id.as_uuid())
        .execute(self.pool)
        .await?;
        if reserved.rows_affected() == 0 {
            return Err(ApiError::Conflict(EMAIL_TAKEN.into()));
        }
        let data_key = self.new_data_key(user_id).await?;
        let password_hash = passwords::hash(password)
            .await
            .map_err(ApiError::internal)?;
        let command = UserCommand::Register {
            id: user_id,
            agency_id,
            email: Sealed(crypto::seal(
                &data_key,
                &format!("email:{id}"),
                email.as_str().as_bytes(),
            )),
            display_name: Sealed(crypto::seal(
                &data_key,
                &format!("name:{id}"),
                display_name.as_bytes(),
            )),
            password_hash,
            must_change_password,
            roles,
            service_account: false,
        };
        if let Err(e) = self.execute(&id, command, audit).await {
            // Release the reservation so the address can be registered again.
            let _ = sqlx::query("DELETE FROM user_emails WHERE user_id = $1")
                .bind(user_id.as_uuid())
                .execute(self.pool)
                .await;
            return Err(user_error(e));
        }
        Ok(user_id)
    }

    pub async fn unlock(
        &self,
        admin: &Caller,
        user_id: &str,
        request_id: &str,
    ) -> Result<(), ApiError> {
        self.as_admin(admin, user_id, UserCommand::Unlock, request_id)
            .await
    }

    /// An administrator's MFA reset of another user: its own audited event.
    pub async fn reset_mfa(
        &self,
        admin: &Caller,
        user_id: &str,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let command = UserCommand::DisableMfa { by_admin: true };
        self.as_admin(admin, user_id, command, request_id).await
    }

    /// Runs an administrator's `command` on a user the administrator may see (404 otherwise).
    async fn as_admin(
        &self,
        admin: &Caller,
        user_id: &str,
        command: UserCommand,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let user = self.load(user_id).await?;
        self.visible_to(admin, &user)?;
        let audit = Audit::by(admin, request_id);
        self.execute(user_id, command, &audit)
            .await
            .map_err(user_error)
    }

    /// Deactivates (the history stays; the account can be reactivated) and ends its sessions.
    pub async fn set_active(
        &self,
        admin: &Caller,
        user_id: &str,
        active: bool,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let user = self.load(user_id).await?;
        self.visible_to(admin, &user)?;
        let audit = Audit::by(admin, request_id);
        let command = if active {
            UserCommand::Reactivate
        } else {
            UserCommand::Deactivate
        };
        match self.execute(user_id, command, &audit).await {
            Ok(()) | Err(AggregateError::UserError(UserError::Unchanged)) => {}
            Err(e) => return Err(user_error(e)),
        }
        if !active {
            self.end_sessions(user_id).await?;
        }
        Ok(())
    }

    /// Registers a service account (integrations, auditors): no email, a random secret shown
    /// once, the client-credentials grant only.
    pub async fn register_service_account(
        &self,
        audit: &Audit<'_>,
        agency_id: AgencyId,
        name: &str,
        roles: Vec<String>,
    ) -> Result<(UserId, SecretString), ApiError> {
        let user_id = UserId::from_uuid(Uuid::now_v7());
        let id = user_id.to_string();
        let data_key = self.new_data_key(user_id).await?;
        let secret = SecretString::from(crypto::random_token());
        let password_hash = passwords::hash(secret.clone())
            .await
            .map_err(ApiError::internal)?;
        let command = UserCommand::Register {
            id: user_id,
            agency_id,
            email: Sealed(crypto::seal(&data_key, &format!("email:{id}"), b"")),
            display_name: Sealed(crypto::seal(
                &data_key,
                &format!("name:{id}"),
                name.as_bytes(),
            )),
            password_hash,
            must_change_password: false,
            roles,
            service_account: true,
        };
        self.execute(&id, command, audit)
            .await
            .map_err(user_error)?;
        Ok((user_id, secret))
    }

    /// Grants (`Some(roles)`) or revokes a membership in `agency`; answers the user's version.
    pub async fn set_membership(
        &self,
        admin: &Caller,
        user_id: &str,
        agency: AgencyId,
        roles: Option<Vec<String>>,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let audit = Audit {
            actor: admin.claims.sub.as_str(),
            agency_id: &agency.to_string(),
            request_id,
        };
        let command = match roles {
            Some(roles) => UserCommand::GrantMembership {
                agency_id: agency,
                roles,
            },
            None => UserCommand::RevokeMembership { agency_id: agency },
        };
        self.execute(user_id, command, &audit)
            .await
            .map_err(user_error)
    }

    /// Gives (`assign`) or takes a role.
    pub async fn set_role(
        &self,
        admin: &Caller,
        user_id: &str,
        role: &str,
        assign: bool,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let role = role.to_owned();
        let command = if assign {
            UserCommand::AssignRole { role }
        } else {
            UserCommand::UnassignRole { role }
        };
        self.as_admin(admin, user_id, command, request_id).await
    }

    /// Another agency's user does not exist for the caller (404, never 403).
    pub fn visible_to(&self, caller: &Caller, user: &User) -> Result<(), ApiError> {
        // No agency: no such user (an id nobody has; found by schemathesis: a platform
        // administrator got 200 and an empty user for any UUID).
        let Some(home) = user.agency_id() else {
            return Err(ApiError::NotFound("no such user".into()));
        };
        let same_agency = home.to_string() == caller.claims.agency.as_str();
        if same_agency {
            Ok(())
        } else if caller.has_role(BuiltInRole::PlatformAdmin) {
            // Only the platform role crosses agencies, and that is logged (DESIGN.md rule 7).
            tracing::info!(
                target: "authz",
                user_id = %caller.claims.sub.as_str(),
                agency_id = %caller.claims.agency.as_str(),
                target_agency_id = %user.agency_id().map(|a| a.to_string()).unwrap_or_default(),
                outcome = "cross-agency",
                "platform admin acts in another agency"
            );
            Ok(())
        } else {
            Err(ApiError::NotFound("no such user".into()))
        }
    }
}
