//! `/api/v1/device-classes`: the kinds of devices an agency has (TALQ `DeviceClass`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use eriop_domain::device::{DeviceClassCommand, DeviceName, FunctionDesc, OfflineAfter};
use serde::Deserialize;
use uuid::Uuid;

use crate::http::command::{self, Body, Done};
use crate::http::edge::RequestId;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::paging::ReadModel;
use crate::http::permission::{DevicesRead, DevicesWrite};
use crate::http::{AgencyScope, Allowed};
use crate::services::audit::Audit;
use crate::state::AppState;

/// Fundamentum's default heartbeat is every 15 minutes: offline after two missed ones.
const DEFAULT_OFFLINE_AFTER_SECS: u32 = 1_800;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateClass {
    name: String,
    functions: Vec<FunctionBody>,
    offline_after_secs: Option<crate::http::whole::Whole<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionBody {
    id: String,
    #[serde(rename = "type")]
    function_type: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct ClassRow {
    pub id: Uuid,
    pub name: String,
    pub functions: sqlx::types::Json<Vec<FunctionDesc>>,
    pub offline_after_secs: i32,
}

impl ClassRow {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "functions": self.functions.0,
            "offline_after_secs": self.offline_after_secs,
        })
    }
}

/// A class of the caller's agency, or 404.
pub(crate) async fn find(scope: &AgencyScope, id: Uuid) -> Result<ClassRow, ApiError> {
    let mut tx = scope.begin().await?;
    sqlx::query_as(
        "SELECT id, name, functions, offline_after_secs FROM device_classes
          WHERE id = $1 AND agency_id = $2::uuid",
    )
    .bind(id)
    .bind(scope.agency().as_uuid())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::NotFound("no such device class in your agency".into()))
}

pub async fn create(
    Allowed { caller, scope, .. }: Allowed<DevicesWrite>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<CreateClass>,
) -> Result<Response, ApiError> {
    let name =
        DeviceName::parse(&body.name).map_err(|e| ApiError::validation("name", e.to_string()))?;
    let raw: Vec<(String, String)> = body
        .functions
        .into_iter()
        .map(|f| (f.id, f.function_type))
        .collect();
    let functions = FunctionDesc::parse_all(&raw)
        .map_err(|e| ApiError::validation("functions", e.to_string()))?;
    let offline_after = OfflineAfter::seconds(
        body.offline_after_secs
            .map_or(DEFAULT_OFFLINE_AFTER_SECS, |w| w.0),
    )
    .map_err(|e| ApiError::validation("offline_after_secs", e.to_string()))?;
    let agency_id = scope.agency();
    let id = Uuid::now_v7();
    let command = DeviceClassCommand::Create {
        id,
        agency_id,
        name,
        functions,
        offline_after,
    };
    let audit = Audit::by(&caller, &request_id.0);
    let stored = command::execute(
        &state,
        state.device_classes(),
        ReadModel::DeviceClasses,
        id,
        command,
        &audit,
        "device class in your agency",
    )
    .await?;
    let body = Body::Read(Box::pin(async {
        match find(&scope, id).await {
            Ok(row) => Ok(Some(row.json())),
            Err(ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }));
    let location = format!("device-classes/{id}");
    command::respond(&state, stored, Done::Created { location }, body).await
}

pub async fn list(Allowed { scope, .. }: Allowed<DevicesRead>) -> Result<Response, ApiError> {
    let mut tx = scope.begin().await?;
    let rows: Vec<ClassRow> = sqlx::query_as(
        "SELECT id, name, functions, offline_after_secs FROM device_classes
          WHERE agency_id = $1::uuid ORDER BY name",
    )
    .bind(scope.agency().as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    let items: Vec<serde_json::Value> = rows.iter().map(ClassRow::json).collect();
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}

/// One device class of the caller's agency (another agency's: 404).
pub async fn get(
    Allowed { scope, .. }: Allowed<DevicesRead>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    Ok(Json(find(&scope, id).await?.json()).into_response())
}
