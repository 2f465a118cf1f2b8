//! `eriop-gateway rotate-keys`: after the server key changed (the new one in
//! `ERIOP_SECRET_KEY`, the old ones in `ERIOP_SECRET_KEY_PREVIOUS`), re-wraps every person's
//! data key and re-indexes every email under the new key, so that the old key is needed only
//! for what immutable events keep (sealed TOTP secrets, recovery-code hashes) and for access
//! tokens signed before (until they expire). Idempotent: what is already under the new key
//! is left alone, so it may run again, or be interrupted and resumed.

use std::sync::Arc;

use eriop_domain::user::Email;
use eriop_nats::Settings;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use uuid::Uuid;

use crate::services::auth::{crypto, Auth, SystemClock};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RotationReport {
    pub people: u64,
    pub rewrapped: u64,
    pub reindexed: u64,
    /// Data keys no configured key opens (a key missing from ERIOP_SECRET_KEY_PREVIOUS).
    pub unreadable: u64,
}

/// Re-wraps and re-indexes; `progress(done, total)` after each person.
pub async fn rotate_keys(
    settings: &Settings,
    mut progress: impl FnMut(u64, u64),
) -> Result<RotationReport, String> {
    let pool = PgPool::connect(settings.database_url.expose_secret())
        .await
        .map_err(|e| format!("cannot reach the database ({e}); run `make services` first"))?;
    let redis =
        redis::Client::open(settings.redis_url.expose_secret()).map_err(|e| e.to_string())?;
    let auth =
        Auth::from_settings(settings, redis, Arc::new(SystemClock)).map_err(|e| e.to_string())?;
    let db = |e: sqlx::Error| format!("database: {e}");
    // Erased people have no key (and no email row that matters): nothing to do for them.
    let people: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
        "SELECT k.user_id, k.wrapped_key, u.email_sealed
           FROM user_data_keys k LEFT JOIN users u ON u.id = k.user_id
          ORDER BY k.user_id",
    )
    .fetch_all(&pool)
    .await
    .map_err(db)?;
    let total = people.len() as u64;
    let mut report = RotationReport::default();
    for (user_id, wrapped, email_sealed) in people {
        let id = user_id.to_string();
        report.people += 1;
        let Ok(key) = auth.unwrap_data_key(&id, &wrapped) else {
            report.unreadable += 1;
            progress(report.people, total);
            continue;
        };
        if !auth.wrapped_with_current_key(&id, &wrapped) {
            sqlx::query("UPDATE user_data_keys SET wrapped_key = $2 WHERE user_id = $1")
                .bind(user_id)
                .bind(auth.wrap_data_key(&id, &key))
                .execute(&pool)
                .await
                .map_err(db)?;
            report.rewrapped += 1;
        }
        let email = email_sealed
            .and_then(|sealed| crypto::open(&key, &format!("email:{id}"), &sealed).ok())
            .and_then(|plain| String::from_utf8(plain).ok())
            .and_then(|raw| Email::parse(&raw).ok());
        if let Some(email) = email {
            let changed = sqlx::query(
                "UPDATE user_emails SET email_index = $2
                  WHERE user_id = $1 AND email_index <> $2",
            )
            .bind(user_id)
            .bind(auth.email_index(&email))
            .execute(&pool)
            .await
            .map_err(db)?
            .rows_affected();
            report.reindexed += changed;
        }
        progress(report.people, total);
    }
    Ok(report)
}
