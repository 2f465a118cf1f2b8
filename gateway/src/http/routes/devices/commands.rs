//! `/api/v1/devices/{id}/commands`: send a command to a device and follow its status.
//!
//! The command is recorded on the device (an event); the device supervisor forwards it from
//! `EVENTS` to `COMMANDS`, the bridge publishes it on the device's Fundamentum `commands`
//! topic, and the device's replies on `commands/{id}` come back as status changes.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use eriop_domain::device::{DeviceCommand, DeviceRequest};
use eriop_domain::Timestamp;
use serde::Deserialize;
use uuid::Uuid;

use super::view;
use crate::http::command::{self, Body, Done};
use crate::http::edge::RequestId;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::limits::RateSlot;
use crate::http::paging::page;
use crate::http::paging::PageParams;
use crate::http::permission::{DevicesCommand, DevicesRead};
use crate::http::{AgencyScope, Allowed};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommandBody {
    /// TALQ override of the light level (0-100 %); no level ends the override.
    Override {
        level: Option<crate::http::whole::Whole<i64>>,
        expiration: Option<DateTime<Utc>>,
        ramp_seconds: Option<crate::http::whole::Whole<i64>>,
    },
    /// A Fundamentum command (`reboot`, ...) with its parameters.
    Fundamentum {
        name: String,
        #[serde(default = "empty_object")]
        parameters: serde_json::Value,
    },
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

#[derive(sqlx::FromRow)]
struct CommandRow {
    command_id: i64,
    device_id: Uuid,
    request: serde_json::Value,
    status: String,
    message: Option<String>,
    issued_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl CommandRow {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.command_id,
            "device_id": self.device_id,
            "request": self.request,
            "status": self.status,
            "message": self.message,
            "issued_at": self.issued_at,
            "updated_at": self.updated_at,
        })
    }
}

async fn find(scope: &AgencyScope, device: Uuid, command: i64) -> Result<CommandRow, ApiError> {
    let mut tx = scope.begin().await?;
    sqlx::query_as(
        "SELECT command_id, device_id, request, status, message, issued_at, updated_at
           FROM device_commands WHERE command_id = $1 AND device_id = $2 AND agency_id = $3::uuid",
    )
    .bind(command)
    .bind(device)
    .bind(scope.agency().as_uuid())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::NotFound("no such command for this device".into()))
}

/// The agency's command quota: its own, or the platform's default.
async fn command_quota(state: &AppState, scope: &AgencyScope) -> Result<u32, ApiError> {
    let mut tx = scope.begin().await?;
    let own: Option<i64> =
        sqlx::query_scalar("SELECT command_quota FROM agencies WHERE id = $1::uuid")
            .bind(scope.agency().as_uuid())
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
    Ok(own
        .and_then(|q| u32::try_from(q).ok())
        .unwrap_or(state.agency_commands_per_minute()))
}

pub async fn issue(
    Allowed { caller, scope, .. }: Allowed<DevicesCommand>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    slot: Option<Extension<RateSlot>>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CommandBody>,
) -> Result<Response, ApiError> {
    view::find(&scope, id).await?;
    // Counted once the command is known to be the agency's own device's: a refused command
    // records nothing and reaches no device.
    let quota = command_quota(&state, &scope).await?;
    crate::http::limits::admit_command(
        &state,
        slot.as_ref().map(|s| &s.0),
        &scope.agency().to_string(),
        quota,
    )
    .await?;
    // Time is an input: the gateway's clock (tests turn it by hand).
    let now = state.auth().now();
    let request = match body {
        CommandBody::Override {
            level,
            expiration,
            ramp_seconds,
        } => DeviceRequest::light_override(
            level.map(|w| w.0),
            expiration.map(|e| Timestamp::from_millis(e.timestamp_millis())),
            ramp_seconds.map(|w| w.0),
            now,
        ),
        CommandBody::Fundamentum { name, parameters } => {
            DeviceRequest::fundamentum(&name, parameters)
        }
    }
    .map_err(|e| ApiError::validation("command", e.to_string()))?;
    let command_id: i64 = sqlx::query_scalar("SELECT nextval('device_command_ids')")
        .fetch_one(state.pool())
        .await?;
    // The command as it is recorded, for the answer while the read model lags.
    let issued = chrono::DateTime::from_timestamp_millis(now.millis()).unwrap_or_default();
    let pending = serde_json::json!({
        "id": command_id,
        "device_id": id,
        "request": serde_json::to_value(&request).map_err(ApiError::internal)?,
        "status": "pending",
        "message": null,
        "issued_at": issued,
        "updated_at": issued,
    });
    let stored = super::execute(
        &state,
        &caller,
        id,
        DeviceCommand::IssueCommand {
            command_id,
            request,
        },
        &request_id,
    )
    .await?;
    // Always 202: the device carries the command out later; follow it at `Location`.
    let location = format!("devices/{id}/commands/{command_id}");
    let read = Box::pin(async {
        match find(&scope, id, command_id).await {
            Ok(row) => Ok(Some(row.json())),
            Err(ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    });
    command::respond(
        &state,
        stored,
        Done::Pending { location },
        Body::ReadOr(read, pending),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<i64>,
    offset: Option<i64>,
}

/// The device's commands, newest first.
pub async fn list(
    Allowed { scope, .. }: Allowed<DevicesRead>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    view::find(&scope, id).await?;
    let (limit, offset) = PageParams::new(params.limit, params.offset).checked()?;
    let mut tx = scope.begin().await?;
    let rows: Vec<CommandRow> = sqlx::query_as(
        "SELECT command_id, device_id, request, status, message, issued_at, updated_at
           FROM device_commands WHERE device_id = $1 AND agency_id = $2::uuid
          ORDER BY command_id DESC LIMIT $3 OFFSET $4",
    )
    .bind(id)
    .bind(scope.agency().as_uuid())
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *tx)
    .await?;
    let items: Vec<serde_json::Value> = rows.iter().map(CommandRow::json).collect();
    Ok(page(&items, limit, offset))
}

pub async fn get(
    Allowed { scope, .. }: Allowed<DevicesRead>,
    ApiPath((id, command_id)): ApiPath<(Uuid, i64)>,
) -> Result<Response, ApiError> {
    Ok(Json(find(&scope, id, command_id).await?.json()).into_response())
}
