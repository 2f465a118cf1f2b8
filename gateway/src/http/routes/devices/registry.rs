//! `/api/v1/devices` and `/api/v1/devices/{id}`: register, list, look at, change and
//! decommission devices.

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use eriop_domain::device::{DeviceCommand, DeviceName, FundamentumId, OfflineAfter};
use eriop_nats::db::pipelined::Statement;
use serde::Deserialize;
use uuid::Uuid;

use super::view;
use crate::http::answers;
use crate::http::command::{self, Body, Done, Stored};
use crate::http::edge::RequestId;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::paging::page;
use crate::http::paging::PageParams;
use crate::http::paging::ReadModel;
use crate::http::permission::{DevicesRead, DevicesWrite};
use crate::http::{AgencyScope, Allowed};
use crate::services::audit::Audit;
use crate::services::auth::Caller;
use crate::state::AppState;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    pub class_id: String,
    pub registry: String,
    pub serial: String,
    pub name: String,
    pub offline_after_secs: Option<crate::http::whole::Whole<u32>>,
}

/// Why a registration was refused: the field and what to fix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RowError {
    pub field: &'static str,
    pub message: String,
}

impl RowError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

pub enum Refusal {
    Invalid(RowError),
    /// The Fundamentum identity belongs to another live device (409 alone, a failed row in bulk).
    Taken(RowError),
    Failed(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Self::Failed(e)
    }
}

/// Registers one device, without waiting for the read model: the one path of the single
/// and the bulk registration. Reserves the Fundamentum identity first (unique on the
/// platform), and gives it back if the registration fails.
pub async fn register_one(
    state: &AppState,
    caller: &Caller,
    scope: &AgencyScope,
    body: RegisterDevice,
    request_id: &RequestId,
) -> Result<Uuid, Refusal> {
    let invalid = |field: &'static str, e: &dyn std::fmt::Display| {
        Refusal::Invalid(RowError::new(field, e.to_string()))
    };
    let name = DeviceName::parse(&body.name).map_err(|e| invalid("name", &e))?;
    let fundamentum = FundamentumId::parse(&body.registry, &body.serial)
        .map_err(|e| invalid("registry/serial", &e))?;
    let offline_after = body
        .offline_after_secs
        .map(|w| OfflineAfter::seconds(w.0))
        .transpose()
        .map_err(|e| invalid("offline_after_secs", &e))?;
    let class_id =
        Uuid::parse_str(body.class_id.trim()).map_err(|_| invalid("class_id", &"is not a UUID"))?;
    let class = match super::classes::find(scope, class_id).await {
        Ok(class) => class,
        Err(ApiError::NotFound(_)) => {
            return Err(invalid("class_id", &"no such device class in your agency"))
        }
        Err(e) => return Err(e.into()),
    };
    let agency_id = scope.agency();
    // Only under a registry of the caller's agency; the same answer whether the registry is
    // another agency's or nobody's, so it tells nothing of other agencies.
    if !super::registries::belongs_to(scope, &fundamentum.registry).await? {
        return Err(invalid(
            "registry",
            &"is not a registry of your agency: a platform administrator assigns registries to agencies (POST /api/v1/registries)",
        ));
    }
    let id = Uuid::now_v7();
    // The agency's device quota and the reservation of the identity, in one transaction that
    // holds the agency's quota lock: concurrent registrations (a bulk file's rows, two
    // administrators) are counted one after the other, so none goes past the quota.
    let mut tx = scope.begin().await.map_err(Refusal::Failed)?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('eriop-device-quota:' || $1::text, 0))",
    )
    .bind(agency_id.as_uuid())
    .execute(&mut *tx)
    .await
    .map_err(ApiError::from)?;
    // Live devices: their identities are reserved until they are decommissioned; counted
    // through the registries the agency holds.
    let (live, quota): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM device_identities d JOIN registries r USING (registry)
                  WHERE r.agency_id = $1),
                coalesce((SELECT device_quota FROM agencies WHERE id = $1), $2)",
    )
    .bind(agency_id.as_uuid())
    .bind(i64::from(state.agency_device_quota()))
    .fetch_one(&mut *tx)
    .await
    .map_err(ApiError::from)?;
    if live >= quota {
        return Err(Refusal::Failed(ApiError::TooManyRequests {
            detail: format!(
                "over the agency's device quota of {quota} live devices (device_quota; the platform's default is ERIOP_AGENCY_DEVICE_QUOTA): decommission devices, or ask a platform administrator for a larger quota"
            ),
            retry_after_seconds: 3600,
        }));
    }
    let reserved = sqlx::query(
        "INSERT INTO device_identities (registry, serial, device_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(&fundamentum.registry)
    .bind(&fundamentum.serial)
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(ApiError::from)?
    .rows_affected();
    tx.commit().await.map_err(ApiError::from)?;
    if reserved == 0 {
        return Err(Refusal::Taken(RowError::new(
            "registry/serial",
            "a live device with this Fundamentum registry and serial is already registered",
        )));
    }
    let command = DeviceCommand::Register {
        id,
        agency_id,
        class_id,
        functions: class.functions.0,
        fundamentum,
        name,
        offline_after,
    };
    let audit = Audit::by(caller, &request_id.0);
    let metadata = audit.metadata(command.name());
    if let Err(e) = state
        .devices()
        .execute_with_metadata(&id.to_string(), command, metadata)
        .await
    {
        let _ = sqlx::query("DELETE FROM device_identities WHERE device_id = $1")
            .bind(id)
            .execute(state.pool())
            .await;
        return Err(super::device_error(e).into());
    }
    Ok(id)
}

pub(crate) fn refusal_to_api(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Taken(e) => ApiError::Conflict(e.message),
        Refusal::Invalid(e) => ApiError::validation(e.field, e.message),
        Refusal::Failed(e) => e,
    }
}

pub async fn create(
    Allowed { caller, scope, .. }: Allowed<DevicesWrite>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<RegisterDevice>,
) -> Result<Response, ApiError> {
    let id = register_one(&state, &caller, &scope, body, &request_id)
        .await
        .map_err(refusal_to_api)?;
    let stored = Stored::latest(&state, ReadModel::Devices, id).await?;
    let location = format!("devices/{id}");
    command::respond(
        &state,
        stored,
        Done::Created { location },
        view::answer(&scope, id),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<i64>,
    offset: Option<i64>,
    online: Option<bool>,
}

/// A page of the agency's live devices (`$1`), online or not or either (`$2`), `$3` from
/// `$4`. The page first, then its classes and activity: joined after the limit, a page costs
/// its own rows whatever the agency's size (joined before, every live device of the agency
/// was joined, then sorted, then all but a page thrown away: 3 ms for 200 devices,
/// docs/BENCHMARKS.md). Read in order from `devices_agency_page_idx` (0029).
const PAGE: &str = concat!(
    view::summary_columns!(),
    view::joined!(
        "(SELECT * FROM devices
           WHERE agency_id = $1::uuid AND NOT decommissioned
             AND ($2::boolean IS NULL OR online = $2)
           ORDER BY name, id LIMIT $3 OFFSET $4)"
    ),
    " ORDER BY d.name, d.id"
);

/// A page of the agency's devices; kept for a moment (`http::answers`).
pub async fn list(
    Allowed { scope, .. }: Allowed<DevicesRead>,
    State(state): State<AppState>,
    uri: Uri,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let read = read_page(&scope, params);
    answers::kept_or_read(&state, &scope, &uri, read).await
}

async fn read_page(scope: &AgencyScope, params: ListParams) -> Result<Response, ApiError> {
    let (limit, offset) = PageParams::new(params.limit, params.offset).checked()?;
    if let Some(reads) = scope.pipelined() {
        let agency = scope.agency().as_uuid();
        let rows = reads
            .read(&[Statement {
                sql: PAGE,
                params: &[&agency, &params.online, &limit, &offset],
            }])
            .await?;
        let items = rows
            .iter()
            .flatten()
            .map(view::Summary::from_pg)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApiError::internal)?;
        return Ok(page(&items, limit, offset));
    }
    let mut tx = scope.begin().await?;
    let items: Vec<view::Summary> = sqlx::query_as(PAGE)
        .bind(scope.agency().as_uuid())
        .bind(params.online)
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *tx)
        .await?;
    Ok(page(&items, limit, offset))
}

/// One device; kept for a moment (`http::answers`).
pub async fn get(
    Allowed { scope, .. }: Allowed<DevicesRead>,
    State(state): State<AppState>,
    uri: Uri,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let read = async { Ok(Json(view::read(&scope, id).await?).into_response()) };
    answers::kept_or_read(&state, &scope, &uri, read).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchDevice {
    name: Option<String>,
    /// `null`: back to the class's timeout.
    #[serde(default, with = "double_option")]
    offline_after_secs: Option<Option<crate::http::whole::Whole<u32>>>,
}

/// `absent` → None, `null` → Some(None), value → Some(Some(v)).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

pub async fn patch(
    Allowed { caller, scope, .. }: Allowed<DevicesWrite>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PatchDevice>,
) -> Result<Response, ApiError> {
    view::find(&scope, id).await?;
    let name = body
        .name
        .as_deref()
        .map(DeviceName::parse)
        .transpose()
        .map_err(|e| ApiError::validation("name", e.to_string()))?;
    let offline_after = body
        .offline_after_secs
        .map(|o| o.map(|w| OfflineAfter::seconds(w.0)).transpose())
        .transpose()
        .map_err(|e| ApiError::validation("offline_after_secs", e.to_string()))?;
    let stored = super::execute(
        &state,
        &caller,
        id,
        DeviceCommand::Update {
            name,
            offline_after,
        },
        &request_id,
    )
    .await?;
    command::respond(&state, stored, Done::Changed, view::answer(&scope, id)).await
}

pub async fn decommission(
    Allowed { caller, scope, .. }: Allowed<DevicesWrite>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    view::find(&scope, id).await?;
    let stored = super::execute(
        &state,
        &caller,
        id,
        DeviceCommand::Decommission,
        &request_id,
    )
    .await?;
    // The Fundamentum identity is free again for a replacement device.
    sqlx::query("DELETE FROM device_identities WHERE device_id = $1")
        .bind(id)
        .execute(state.pool())
        .await?;
    command::respond(&state, stored, Done::NoContent, Body::None).await
}
