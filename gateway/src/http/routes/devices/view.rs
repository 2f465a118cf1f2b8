//! What a device looks like through the API: registry data, liveness, latest values, and
//! its TALQ `Device` object.

use chrono::{DateTime, Utc};
use eriop_domain::device::{talq, FunctionDesc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use eriop_nats::db::pipelined::Statement;

use crate::http::command::Body;
use crate::http::error::ApiError;
use crate::http::AgencyScope;

#[derive(sqlx::FromRow)]
pub(crate) struct DeviceRow {
    pub id: Uuid,
    pub class_id: Uuid,
    pub class_name: String,
    pub registry: String,
    pub serial: String,
    pub name: String,
    pub functions: Json<Vec<FunctionDesc>>,
    pub offline_after_secs: Option<i32>,
    pub class_offline_after_secs: i32,
    pub online: bool,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub last_activity: Option<DateTime<Utc>>,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub uptime_secs: Option<i64>,
}

/// A device's joins, over devices aliased `d`: its class `c` and its activity `a`. `$from` is
/// `devices` or a subquery of it (a page, `registry::list`).
macro_rules! joined {
    ($from:literal) => {
        concat!(
            " FROM ",
            $from,
            " d
   JOIN device_classes c ON c.id = d.class_id
   LEFT JOIN device_activity a ON a.device_id = d.id"
        )
    };
}
pub(crate) use joined;

pub(crate) const SELECT: &str = concat!(
    "SELECT d.id, d.class_id, c.name AS class_name, d.registry, d.serial, d.name,
        d.functions, d.offline_after_secs, c.offline_after_secs AS class_offline_after_secs,
        d.online, d.status_changed_at, d.created_at,
        a.last_activity, a.last_heartbeat, a.uptime_secs",
    joined!("devices")
);

/// A live device by its id (`$1`) and agency (`$2`).
static FIND: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("{SELECT} WHERE d.id = $1 AND d.agency_id = $2::uuid AND NOT d.decommissioned")
});

/// A device's latest value of each attribute, by its id (`$1`) and agency (`$2`).
const LATEST: &str = "SELECT function_id, attribute, time, value_double, value_text, value_json
   FROM device_latest WHERE device_id = $1 AND agency_id = $2::uuid
  ORDER BY function_id, attribute";

fn not_found() -> ApiError {
    ApiError::NotFound("no such device in your agency".into())
}

/// A live device of the caller's agency, or 404 (another agency's device is not found).
pub(crate) async fn find(scope: &AgencyScope, id: Uuid) -> Result<DeviceRow, ApiError> {
    if let Some(reads) = scope.pipelined() {
        let agency = scope.agency().as_uuid();
        let rows = reads
            .read(&[Statement {
                sql: &FIND,
                params: &[&id, &agency],
            }])
            .await?;
        let row = rows.first().and_then(|r| r.first()).ok_or_else(not_found)?;
        return DeviceRow::from_pg(row).map_err(ApiError::internal);
    }
    find_in(&mut scope.begin().await?, scope, id).await
}

async fn find_in(
    tx: &mut Transaction<'static, Postgres>,
    scope: &AgencyScope,
    id: Uuid,
) -> Result<DeviceRow, ApiError> {
    sqlx::query_as(&FIND)
        .bind(id)
        .bind(scope.agency().as_uuid())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(not_found)
}

impl DeviceRow {
    /// The row as rust-postgres reads it (pipelined reads).
    fn from_pg(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            class_id: row.try_get("class_id")?,
            class_name: row.try_get("class_name")?,
            registry: row.try_get("registry")?,
            serial: row.try_get("serial")?,
            name: row.try_get("name")?,
            functions: Json(
                row.try_get::<_, tokio_postgres::types::Json<Vec<FunctionDesc>>>("functions")?
                    .0,
            ),
            offline_after_secs: row.try_get("offline_after_secs")?,
            class_offline_after_secs: row.try_get("class_offline_after_secs")?,
            online: row.try_get("online")?,
            status_changed_at: row.try_get("status_changed_at")?,
            created_at: row.try_get("created_at")?,
            last_activity: row.try_get("last_activity")?,
            last_heartbeat: row.try_get("last_heartbeat")?,
            uptime_secs: row.try_get("uptime_secs")?,
        })
    }
}

/// A live device's full view (registry data, liveness, latest values, TALQ), or 404. Where
/// telemetry shares the registry's database (no `ERIOP_TIMESCALE_URL`, as deployed by
/// default), one transaction reads both: a transaction's begin and release were a third of
/// this read's round trips (issue 13).
pub(crate) async fn read(scope: &AgencyScope, id: Uuid) -> Result<Value, ApiError> {
    if let (Some(reads), false) = (scope.pipelined(), scope.telemetry_apart()) {
        let agency = scope.agency().as_uuid();
        let params: &[eriop_nats::db::pipelined::Param<'_>] = &[&id, &agency];
        let rows = reads
            .read(&[
                Statement { sql: &FIND, params },
                Statement {
                    sql: LATEST,
                    params,
                },
            ])
            .await?;
        let (Some(device), Some(latest)) = (rows.first(), rows.get(1)) else {
            return Err(ApiError::internal(std::io::Error::other(
                "a pipelined read answered fewer statements than it sent",
            )));
        };
        let row = DeviceRow::from_pg(device.first().ok_or_else(not_found)?)
            .map_err(ApiError::internal)?;
        let latest = latest
            .iter()
            .map(LatestRow::from_pg)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApiError::internal)?;
        return Ok(view_of(&row, latest_values(latest)));
    }
    if scope.telemetry_apart() {
        let row = find(scope, id).await?;
        return full(scope, &row).await;
    }
    let mut tx = scope.begin().await?;
    let row = find_in(&mut tx, scope, id).await?;
    let latest = latest_in(&mut tx, scope, id).await?;
    Ok(view_of(&row, latest))
}

/// The device as the read model shows it (its full view), for a command's answer.
pub(crate) fn answer(scope: &AgencyScope, id: Uuid) -> Body<'_> {
    Body::Read(Box::pin(async move {
        match read(scope, id).await {
            Ok(view) => Ok(Some(view)),
            Err(ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }))
}

#[derive(sqlx::FromRow)]
struct LatestRow {
    function_id: String,
    attribute: String,
    time: DateTime<Utc>,
    value_double: Option<f64>,
    value_text: Option<String>,
    value_json: Option<Value>,
}

/// The device's latest value of each attribute, keyed `functionId.attributeName`.
async fn latest(scope: &AgencyScope, id: Uuid) -> Result<Value, ApiError> {
    latest_in(&mut scope.begin_telemetry().await?, scope, id).await
}

async fn latest_in(
    tx: &mut Transaction<'static, Postgres>,
    scope: &AgencyScope,
    id: Uuid,
) -> Result<Value, ApiError> {
    let rows: Vec<LatestRow> = sqlx::query_as(LATEST)
        .bind(id)
        .bind(scope.agency().as_uuid())
        .fetch_all(&mut **tx)
        .await?;
    Ok(latest_values(rows))
}

impl LatestRow {
    fn from_pg(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            function_id: row.try_get("function_id")?,
            attribute: row.try_get("attribute")?,
            time: row.try_get("time")?,
            value_double: row.try_get("value_double")?,
            value_text: row.try_get("value_text")?,
            value_json: row.try_get("value_json")?,
        })
    }
}

/// Latest values keyed `functionId.attributeName`, each with its time.
fn latest_values(rows: Vec<LatestRow>) -> Value {
    let mut out = Map::new();
    for row in rows {
        let value = match (&row.value_json, row.value_double, &row.value_text) {
            (Some(Value::Bool(b)), _, _) => json!(b),
            (_, Some(d), _) => json!(d),
            (_, _, Some(t)) => json!(t),
            (Some(v), _, _) => v.clone(),
            _ => Value::Null,
        };
        let key = if row.function_id.is_empty() {
            row.attribute
        } else {
            format!("{}.{}", row.function_id, row.attribute)
        };
        out.insert(key, json!({ "value": value, "time": row.time }));
    }
    Value::Object(out)
}

/// A device as lists show it, read with its own columns and nothing more: not the device's
/// functions (JSON, sent as text and decoded again for every row) nor its class's name
/// (issue 13: about a tenth of PostgreSQL's CPU on `GET /api/v1/devices`, docs/BENCHMARKS.md).
/// Serialized straight from its row.
#[derive(Serialize, sqlx::FromRow)]
pub(crate) struct Summary {
    id: Uuid,
    name: String,
    class_id: Uuid,
    registry: String,
    serial: String,
    offline_after_secs: i32,
    online: bool,
    status_changed_at: Option<DateTime<Utc>>,
    last_activity: Option<DateTime<Utc>>,
    last_heartbeat: Option<DateTime<Utc>>,
    uptime_secs: Option<i64>,
    created_at: DateTime<Utc>,
}

impl Summary {
    /// The row as rust-postgres reads it (pipelined reads).
    pub(crate) fn from_pg(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            class_id: row.try_get("class_id")?,
            registry: row.try_get("registry")?,
            serial: row.try_get("serial")?,
            offline_after_secs: row.try_get("offline_after_secs")?,
            online: row.try_get("online")?,
            status_changed_at: row.try_get("status_changed_at")?,
            last_activity: row.try_get("last_activity")?,
            last_heartbeat: row.try_get("last_heartbeat")?,
            uptime_secs: row.try_get("uptime_secs")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// The columns of a [`Summary`], over devices aliased `d` and their [`joined`] tables.
macro_rules! summary_columns {
    () => {
        "SELECT d.id, d.name, d.class_id, d.registry, d.serial,
        coalesce(d.offline_after_secs, c.offline_after_secs) AS offline_after_secs,
        d.online, d.status_changed_at, a.last_activity, a.last_heartbeat, a.uptime_secs,
        d.created_at"
    };
}
pub(crate) use summary_columns;

pub(crate) fn summary(row: &DeviceRow) -> Summary {
    Summary {
        id: row.id,
        name: row.name.clone(),
        class_id: row.class_id,
        registry: row.registry.clone(),
        serial: row.serial.clone(),
        offline_after_secs: row
            .offline_after_secs
            .unwrap_or(row.class_offline_after_secs),
        online: row.online,
        status_changed_at: row.status_changed_at,
        last_activity: row.last_activity,
        last_heartbeat: row.last_heartbeat,
        uptime_secs: row.uptime_secs,
        created_at: row.created_at,
    }
}

pub(crate) async fn full(scope: &AgencyScope, row: &DeviceRow) -> Result<Value, ApiError> {
    Ok(view_of(row, latest(scope, row.id).await?))
}

fn view_of(row: &DeviceRow, latest: Value) -> Value {
    let mut view = json!(summary(row));
    if let Some(map) = view.as_object_mut() {
        map.insert("latest".into(), latest);
        map.insert(
            "talq".into(),
            talq::device(row.id, &row.name, &row.class_name, &row.functions.0),
        );
    }
    view
}
