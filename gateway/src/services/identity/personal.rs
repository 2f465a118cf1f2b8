//! Personal data: the email blind index, each person's data key (wrapped under the server
//! key, deleted to erase the person), and sealing and opening what the events hold.

use eriop_domain::user::{Email, Sealed, UserCommand};
use eriop_domain::UserId;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::services::audit::Audit;
use crate::services::auth::{crypto, Caller};

use super::*;

impl Identity<'_> {
    pub(super) async fn user_by_email(&self, email: &Email) -> Result<Option<Uuid>, ApiError> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM user_emails WHERE email_index = ANY($1) LIMIT 1",
        )
        .bind(self.auth.email_indexes(email))
        .fetch_optional(self.pool)
        .await?)
    }

    /// Makes and stores the person's data key (wrapped), before any of their data is sealed.
    pub(super) async fn new_data_key(&self, user_id: UserId) -> Result<[u8; 32], ApiError> {
        let key = crypto::random_key();
        sqlx::query("INSERT INTO user_data_keys (user_id, wrapped_key) VALUES ($1, $2)")
            .bind(user_id.as_uuid())
            .bind(self.auth.wrap_data_key(&user_id.to_string(), &key))
            .execute(self.pool)
            .await?;
        Ok(key)
    }

    pub(super) async fn data_key(&self, user_id: &str) -> Result<[u8; 32], ApiError> {
        let wrapped: Option<String> =
            sqlx::query_scalar("SELECT wrapped_key FROM user_data_keys WHERE user_id = $1::uuid")
                .bind(user_id)
                .fetch_optional(self.pool)
                .await?;
        let wrapped = wrapped
            .ok_or_else(|| ApiError::NotFound("this user's personal data was erased".into()))?;
        self.auth
            .unwrap_data_key(user_id, &wrapped)
            .map_err(ApiError::internal)
    }

    pub async fn me(&self, caller: &Caller) -> Result<Me, ApiError> {
        let user = self.load(caller.claims.sub.as_str()).await?;
        let id = caller.claims.sub.as_str();
        let key = self.data_key(id).await?;
        let open = |context: String, sealed: Option<&Sealed>| -> String {
            sealed
                .and_then(|s| crypto::open(&key, &context, &s.0).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default()
        };
        Ok(Me {
            id: id.to_owned(),
            agency_id: caller.claims.agency.as_str().to_owned(),
            email: open(format!("email:{id}"), user.email()),
            display_name: open(format!("name:{id}"), user.display_name()),
            // The roles in the token's agency.
            roles: user
                .roles_in(caller.agency_id())
                .map(<[String]>::to_vec)
                .unwrap_or_default(),
            mfa_enabled: user.mfa_enabled(),
            password_change_required: user.must_change_password(),
        })
    }

    pub async fn update_profile(
        &self,
        admin: &Caller,
        user_id: &str,
        display_name: &str,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let user = self.load(user_id).await?;
        self.visible_to(admin, &user)?;
        let key = self.data_key(user_id).await?;
        let sealed = Sealed(crypto::seal(
            &key,
            &format!("name:{user_id}"),
            display_name.as_bytes(),
        ));
        let audit = Audit::by(admin, request_id);
        self.execute(
            user_id,
            UserCommand::UpdateProfile {
                display_name: sealed,
            },
            &audit,
        )
        .await
        .map_err(user_error)
    }

    /// Erases a person (DESIGN.md rule 10): the erasure is recorded first (PersonalDataErased,
    /// by the administrator), then the person's data key and the blind index of their
    /// address are deleted and their sessions end. A crash in between leaves an erasure in
    /// the trail whose key still exists: erasing again records nothing new and deletes it.
    pub async fn erase(
        &self,
        admin: &Caller,
        user_id: &str,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let user = self.load(user_id).await?;
        self.visible_to(admin, &user)?;
        let audit = Audit::by(admin, request_id);
        self.execute(user_id, UserCommand::ErasePersonalData, &audit)
            .await
            .map_err(user_error)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM user_data_keys WHERE user_id = $1::uuid")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM user_emails WHERE user_id = $1::uuid")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.end_sessions(user_id).await
    }

    /// Opens a user's sealed personal `field` (`email` or `name`) with the user's wrapped data
    /// key; `None` once the person was erased (no key) or the value was altered.
    pub fn open_personal(
        &self,
        user_id: &str,
        wrapped_key: Option<&str>,
        field: &str,
        sealed: &str,
    ) -> Option<String> {
        let key = self.auth.unwrap_data_key(user_id, wrapped_key?).ok()?;
        let plain = crypto::open(&key, &format!("{field}:{user_id}"), sealed).ok()?;
        String::from_utf8(plain).ok()
    }
}
