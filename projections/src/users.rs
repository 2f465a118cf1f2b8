//! The `users` read model, from the User aggregate's events.
//!
//! Personal data stays sealed here, as in the events: the gateway opens it with the
//! person's data key when it answers. So no read model holds an email or a name in clear,
//! and erasing a person (deleting the key) needs no rebuild.

use cqrs_es::Aggregate;
use eriop_domain::user::{User, UserEvent};
use eriop_nats::StoredEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Outcome, ProjectionError};

pub const NAME: &str = "users";
pub const AGGREGATE_TYPE: &str = <User as Aggregate>::TYPE;

/// What an event changes in a row (`None`: unchanged).
#[derive(Default)]
struct Change {
    /// The sealed email (blanked when the person is erased).
    email: Option<String>,
    name: Option<String>,
    status: Option<&'static str>,
    mfa: Option<bool>,
    /// `Some(Some(until))` locks, `Some(None)` unlocks.
    locked: Option<Option<i64>>,
    role_added: Option<String>,
    role_removed: Option<String>,
}

pub async fn apply(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<Outcome, ProjectionError> {
    let (id, payload, at) = crate::decode::<UserEvent>(event)?;
    let changed = if let UserEvent::UserRegistered {
        agency_id,
        email,
        display_name,
        roles,
        service_account,
        ..
    } = payload
    {
        sqlx::query(
            "INSERT INTO users (id, agency_id, email_sealed, display_name_sealed, roles, status,
                                mfa_enabled, service_account, created_at, updated_at, version)
             VALUES ($1, $2, $3, $4, $5, 'active', false, $6, $7, $7, $8)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(agency_id.as_uuid())
        .bind(email.0)
        .bind(display_name.0)
        .bind(roles)
        .bind(service_account)
        .bind(at)
        .bind(event.sequence)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    } else {
        let membership = match &payload {
            UserEvent::MembershipGranted { agency_id, roles } => {
                Some((*agency_id, Some(roles.clone())))
            }
            UserEvent::MembershipRevoked { agency_id } => Some((*agency_id, None)),
            _ => None,
        };
        let change = match payload {
            UserEvent::ProfileUpdated { display_name } => Change {
                name: Some(display_name.0),
                ..Change::default()
            },
            UserEvent::UserDeactivated => Change {
                status: Some("deactivated"),
                ..Change::default()
            },
            UserEvent::UserReactivated => Change {
                status: Some("active"),
                ..Change::default()
            },
            // The key is gone: nothing sealed for this person stays in the read model.
            UserEvent::PersonalDataErased => Change {
                status: Some("erased"),
                email: Some(String::new()),
                name: Some(String::new()),
                ..Change::default()
            },
            UserEvent::MfaEnabled { .. } => Change {
                mfa: Some(true),
                ..Change::default()
            },
            UserEvent::MfaDisabled { .. } => Change {
                mfa: Some(false),
                ..Change::default()
            },
            UserEvent::UserLocked { until } => Change {
                locked: Some(Some(until.millis())),
                ..Change::default()
            },
            UserEvent::UserUnlocked { .. } => Change {
                locked: Some(None),
                ..Change::default()
            },
            UserEvent::RoleAssigned { role } => Change {
                role_added: Some(role),
                ..Change::default()
            },
            UserEvent::RoleUnassigned { role } => Change {
                role_removed: Some(role),
                ..Change::default()
            },
            _ => Change::default(),
        };
        let changed = sqlx::query(
            "UPDATE users
                SET display_name_sealed = coalesce($2, display_name_sealed),
                    email_sealed = coalesce($11, email_sealed),
                    status = coalesce($3, status),
                    mfa_enabled = coalesce($4, mfa_enabled),
                    locked_until = CASE WHEN $5 THEN to_timestamp($6::double precision / 1000) ELSE locked_until END,
                    roles = array_remove(
                        CASE WHEN $9::text IS NULL THEN roles ELSE array_append(roles, $9) END, $10),
                    updated_at = $7, version = $8
              WHERE id = $1 AND version = $8 - 1",
        )
        .bind(id)
        .bind(change.name)
        .bind(change.status)
        .bind(change.mfa)
        .bind(change.locked.is_some())
        .bind(change.locked.flatten())
        .bind(at)
        .bind(event.sequence)
        .bind(change.role_added)
        .bind(change.role_removed)
        .bind(change.email)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        // Only with the version guard passed: a redelivered grant must not undo a later revoke.
        if changed == 1 {
            if let Some((agency_id, roles)) = membership {
                write_membership(conn, id, agency_id.as_uuid(), roles).await?;
            }
        }
        changed
    };
    crate::outcome(
        conn,
        "SELECT version FROM users WHERE id = $1",
        id,
        event.sequence,
        changed,
    )
    .await
}

async fn write_membership(
    conn: &mut PgConnection,
    user: Uuid,
    agency: Uuid,
    roles: Option<Vec<String>>,
) -> Result<(), sqlx::Error> {
    match roles {
        Some(roles) => sqlx::query(
            "INSERT INTO user_memberships (user_id, agency_id, roles) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, agency_id) DO UPDATE SET roles = excluded.roles",
        )
        .bind(user)
        .bind(agency)
        .bind(roles),
        None => sqlx::query("DELETE FROM user_memberships WHERE user_id = $1 AND agency_id = $2")
            .bind(user)
            .bind(agency),
    }
    .execute(&mut *conn)
    .await?;
    Ok(())
}
