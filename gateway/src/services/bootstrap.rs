//! The first platform administrator, created by a command (`make bootstrap-admin`): there
//! are no default credentials anywhere.

use std::sync::Arc;

use eriop_domain::agency::{AgencyCommand, AgencyName};
use eriop_domain::user::Email;
use eriop_domain::{AgencyId, UserId};
use eriop_nats::Settings;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use uuid::Uuid;

use crate::services::audit::Audit;
use crate::services::auth::{Auth, SystemClock};
use crate::services::event_log::EventLog;
use eriop_domain::BuiltInRole;

const PLATFORM_ADMIN: &str = BuiltInRole::PlatformAdmin.as_str();
use crate::services::identity::{one_time_password, Identity};

pub struct Bootstrapped {
    pub user_id: UserId,
    pub agency_id: AgencyId,
    /// The generated one-time password, when none was given.
    pub one_time_password: Option<SecretString>,
}

/// Creates the platform agency and its first administrator. Refused once one exists.
pub async fn bootstrap_admin(
    settings: &Settings,
    email: &str,
    password: Option<SecretString>,
) -> Result<Bootstrapped, String> {
    let email = Email::parse(email).map_err(|e| format!("EMAIL {e}"))?;
    let pool = PgPool::connect(settings.database_url.expose_secret())
        .await
        .map_err(|e| {
            format!("cannot reach the database ({e}); run `make services migrate` first")
        })?;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = 'user'
            AND payload->'UserRegistered'->'roles' ? $1)",
    )
    .bind(PLATFORM_ADMIN)
    .fetch_one(&pool)
    .await
    .map_err(|e| format!("cannot read the event store ({e}); run `make migrate` first"))?;
    if exists {
        return Err("a platform administrator already exists; it can create others".into());
    }
    let redis =
        redis::Client::open(settings.redis_url.expose_secret()).map_err(|e| e.to_string())?;
    let auth =
        Auth::from_settings(settings, redis, Arc::new(SystemClock)).map_err(|e| e.to_string())?;
    let agency_id = AgencyId::from_uuid(Uuid::now_v7());
    let agency_text = agency_id.to_string();
    let audit = Audit {
        actor: "bootstrap",
        agency_id: &agency_text,
        request_id: "bootstrap",
    };
    let agencies: crate::state::AgencyCqrs =
        EventLog::with_snapshots(pool.clone(), crate::app::AGENCY_SNAPSHOT_EVERY);
    let name = AgencyName::parse("Platform operations").map_err(|e| e.to_string())?;
    let create = AgencyCommand::Create {
        id: agency_id,
        name,
    };
    agencies
        .execute_with_metadata(&agency_text, create.clone(), audit.metadata(create.name()))
        .await
        .map_err(|e| format!("cannot create the platform agency: {e}"))?;
    let users = EventLog::with_snapshots(pool.clone(), crate::app::USER_SNAPSHOT_EVERY);
    let store = users.clone();
    let identity = Identity {
        pool: &pool,
        users: &users,
        store: &store,
        auth: &auth,
    };
    let (password, generated) = match password {
        Some(p) => {
            // The same policy as every password a person chooses (length, zxcvbn, not the
            // email): the first administrator holds every power on the platform.
            eriop_domain::user::PasswordPolicy::default()
                .check(secrecy::ExposeSecret::expose_secret(&p), &[email.as_str()])
                .map_err(|e| format!("the password in --password-file is refused: {e}"))?;
            (p, None)
        }
        None => {
            let p = one_time_password();
            (p.clone(), Some(p))
        }
    };
    let user_id = identity
        .register(
            &audit,
            agency_id,
            &email,
            "Platform administrator",
            password,
            generated.is_some(),
            vec![PLATFORM_ADMIN.to_owned()],
        )
        .await
        .map_err(|e| format!("cannot register the administrator: {e}"))?;
    Ok(Bootstrapped {
        user_id,
        agency_id,
        one_time_password: generated,
    })
}
