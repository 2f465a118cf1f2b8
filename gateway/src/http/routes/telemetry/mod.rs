//! `GET /api/v1/devices/{id}/telemetry` (a bucketed series) and `.../telemetry/export` (raw
//! CSV, streamed). Both act for the caller's agency: the query filters by agency, and on
//! plain PostgreSQL row-level security filters again (DESIGN.md rule 7). A series whose
//! buckets are whole minutes is read through the rollup ([`rollup`]), any other from the raw
//! samples.

pub mod rollup;

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use futures::StreamExt;
use serde::Deserialize;
use uuid::Uuid;

use eriop_nats::db::pipelined::{Param, Statement};

use crate::http::error::ApiError;
use crate::http::extract::ApiPath;
use crate::http::permission::TelemetryRead;
use crate::http::routes::devices::registry_view;
use crate::http::{AgencyScope, Allowed};
use crate::state::AppState;
use axum::extract::Query;
use axum::http::Uri;

/// At most this many points per series: ask for a larger bucket or a shorter range.
pub const MAX_POINTS: i64 = 10_000;
const EXPORT_PAGE: i64 = 5_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    /// `functionId.attributeName` (e.g. `lampMonitor001.activePower`).
    attribute: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// `30s`, `5m`, `1h`, `1d` or a number of seconds.
    bucket: String,
    #[serde(default)]
    agg: Agg,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Agg {
    #[default]
    Avg,
    Min,
    Max,
    Last,
}

impl Agg {
    pub const ALL: [Agg; 4] = [Agg::Avg, Agg::Min, Agg::Max, Agg::Last];

    /// `exact`: the average over numeric, which cannot overflow (see [`series`]).
    fn sql(self, exact: bool) -> &'static str {
        match self {
            Agg::Avg if exact => "to_jsonb(avg(value_double::numeric)::float8)",
            Agg::Avg => "to_jsonb(avg(value_double))",
            Agg::Min => "to_jsonb(min(value_double))",
            Agg::Max => "to_jsonb(max(value_double))",
            // The value of the bucket's latest sample, whatever its type.
            Agg::Last => {
                "(array_agg(CASE WHEN jsonb_typeof(value_json) = 'boolean' THEN value_json
                                 ELSE coalesce(to_jsonb(value_double), to_jsonb(value_text), value_json) END
                            ORDER BY time DESC))[1]"
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Last => "last",
        }
    }
}

fn parse_bucket(raw: &str) -> Result<i64, ApiError> {
    let invalid = || {
        ApiError::validation(
            "bucket",
            "must be a duration such as 30s, 5m, 1h, 1d (at least 1s)",
        )
    };
    let (number, unit) = raw
        .find(|c: char| !c.is_ascii_digit())
        .map_or((raw, "s"), |i| raw.split_at(i));
    let n: i64 = number.parse().map_err(|_| invalid())?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    let secs = n
        .checked_mul(factor)
        .filter(|s| *s >= 1)
        .ok_or_else(invalid)?;
    Ok(secs)
}

fn split_attribute(raw: &str) -> (&str, &str) {
    raw.split_once('.').unwrap_or(("", raw))
}

/// Whether the telemetry database has TimescaleDB (asked once).
async fn timescale(state: &AppState) -> Result<bool, ApiError> {
    static FOUND: OnceLock<bool> = OnceLock::new();
    if let Some(found) = FOUND.get() {
        return Ok(*found);
    }
    let found: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
    )
    .fetch_one(state.telemetry_pool())
    .await?;
    Ok(*FOUND.get_or_init(|| found))
}

/// The series query: `$1` bucket seconds (float), `$2` agency id (text), `$3` device id,
/// `$4` function id, `$5` attribute, `$6` from (inclusive), `$7` to (exclusive). Answers
/// `bucket`, `value` (JSON) and `samples` per bucket, in time order.
///
/// Both databases bin from the same origin (a Monday, TimescaleDB's default), so both answer
/// the same buckets for any bucket size.
pub fn series_sql(timescale: bool, agg: Agg, exact: bool) -> String {
    let bin = if timescale {
        "time_bucket(make_interval(secs => $1), time, TIMESTAMPTZ '2000-01-03')"
    } else {
        "date_bin(make_interval(secs => $1), time, TIMESTAMPTZ '2000-01-03')"
    };
    format!(
        "SELECT {bin} AS bucket, {agg} AS value, count(*) AS samples
           FROM telemetry
          WHERE agency_id = $2::uuid AND device_id = $3 AND function_id = $4 AND attribute = $5
            AND time >= $6 AND time < $7
          GROUP BY 1 ORDER BY 1",
        agg = agg.sql(exact)
    )
}

#[derive(sqlx::FromRow)]
struct Point {
    bucket: DateTime<Utc>,
    value: Option<serde_json::Value>,
    samples: i64,
}

/// A device's series; kept for a moment (`http::answers`).
pub async fn series(
    Allowed { scope, .. }: Allowed<TelemetryRead>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let read = read_series(&scope, &state, id, &uri);
    crate::http::answers::kept_or_read(&state, &scope, &uri, read).await
}

async fn read_series(
    scope: &AgencyScope,
    state: &AppState,
    id: Uuid,
    uri: &Uri,
) -> Result<Response, ApiError> {
    // The device first: another agency's device is 404 whatever the query says.
    registry_view(scope, id).await?;
    let Query(params) = Query::<SeriesParams>::try_from_uri(uri)?;
    if params.to <= params.from {
        return Err(ApiError::validation("to", "must be after from"));
    }
    let bucket = parse_bucket(&params.bucket)?;
    let points = (params.to - params.from).num_seconds() / bucket + 1;
    if points > MAX_POINTS {
        return Err(ApiError::validation(
            "bucket",
            format!("{points} buckets in this range; at most {MAX_POINTS}: choose a larger bucket or a shorter range"),
        ));
    }
    let timescale = timescale(state).await?;
    if eriop_domain::telemetry::whole_minutes(bucket) {
        let (start, end) = rollup::split(params.from, params.to, Utc::now());
        let sql = rollup::series_sql(timescale, params.agg);
        let rows = series_rows(scope, &sql, &params, id, bucket, Some((start, end))).await?;
        return Ok(answer(id, &params, bucket, rows));
    }
    // The average in float8 first (fast); a device's hostile values (1e308 twice) overflow
    // its sum, which PostgreSQL answers with an error (22003), not a value: that series is
    // then averaged over numeric, slower but exact, rather than answered with a 500.
    let rows = match series_rows(
        scope,
        &series_sql(timescale, params.agg, false),
        &params,
        id,
        bucket,
        None,
    )
    .await
    {
        Err(e) if overflowed(&e) => {
            tracing::info!(device_id = %id, "a series' float8 average overflowed: averaged over numeric");
            series_rows(
                scope,
                &series_sql(timescale, params.agg, true),
                &params,
                id,
                bucket,
                None,
            )
            .await?
        }
        rows => rows?,
    };
    Ok(answer(id, &params, bucket, rows))
}

fn answer(device: Uuid, params: &SeriesParams, bucket: i64, rows: Vec<Point>) -> Response {
    let points: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|p| serde_json::json!({ "time": p.bucket, "value": p.value, "samples": p.samples }))
        .collect();
    Json(serde_json::json!({
        "device_id": device,
        "attribute": params.attribute,
        "agg": params.agg.name(),
        "bucket_seconds": bucket,
        "points": points,
    }))
    .into_response()
}

/// Planned once a connection, not once a request: the query through the rollup reads a few
/// keyed rows, and planning it (its parts over every partition) was more than half of
/// PostgreSQL's work for a day's read (issue 13, docs/BENCHMARKS.md). Its generic plan
/// prunes the partitions when it starts, from the bound range.
const GENERIC_PLAN: &str = "SET LOCAL plan_cache_mode = force_generic_plan";

impl Point {
    fn from_pg(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            bucket: row.try_get("bucket")?,
            value: row.try_get("value")?,
            samples: row.try_get("samples")?,
        })
    }
}

/// The rows of the series query `sql` (see [`series_sql`]), in a transaction of its own;
/// `rolled`: the rollup's part of the range ([`rollup::series_sql`]'s `$8` and `$9`).
async fn series_rows(
    scope: &crate::http::scope::AgencyScope,
    sql: &str,
    params: &SeriesParams,
    device: Uuid,
    bucket: i64,
    rolled: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Result<Vec<Point>, ApiError> {
    let (function_id, attribute) = split_attribute(&params.attribute);
    if let (Some(reads), false) = (scope.pipelined(), scope.telemetry_apart()) {
        let seconds = bucket as f64;
        let agency = scope.agency().as_uuid();
        let (start, end) = rolled.unzip();
        let mut values: Vec<Param<'_>> = vec![
            &seconds,
            &agency,
            &device,
            &function_id,
            &attribute,
            &params.from,
            &params.to,
        ];
        let mut statements = Vec::with_capacity(2);
        if let (Some(start), Some(end)) = (&start, &end) {
            values.extend([start as Param<'_>, end]);
            statements.push(Statement {
                sql: GENERIC_PLAN,
                params: &[],
            });
        }
        statements.push(Statement {
            sql,
            params: &values,
        });
        let rows = reads.read(&statements).await?;
        return rows
            .last()
            .into_iter()
            .flatten()
            .map(Point::from_pg)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApiError::internal);
    }
    let mut tx = scope.begin_telemetry().await?;
    if rolled.is_some() {
        sqlx::query(GENERIC_PLAN).execute(&mut *tx).await?;
    }
    let mut query = sqlx::query_as(sql)
        .bind(bucket as f64)
        .bind(scope.agency().to_string())
        .bind(device)
        .bind(function_id)
        .bind(attribute)
        .bind(params.from)
        .bind(params.to);
    if let Some((start, end)) = rolled {
        query = query.bind(start).bind(end);
    }
    Ok(query.fetch_all(&mut *tx).await?)
}

/// A value out of float8's range (SQLSTATE 22003), as an overflowing sum raises (read
/// through sqlx or pipelined).
fn overflowed(e: &ApiError) -> bool {
    const OUT_OF_RANGE: &str = "22003";
    let ApiError::Internal(cause) = e else {
        return false;
    };
    cause
        .downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|d| d.code())
        .is_some_and(|code| code == OUT_OF_RANGE)
        || cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
            .is_some_and(|code| code.code() == OUT_OF_RANGE)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct RawRow {
    time: DateTime<Utc>,
    function_id: String,
    attribute: String,
    value_double: Option<f64>,
    value_text: Option<String>,
    value_json: Option<serde_json::Value>,
}

/// A text cell: quoted when needed (RFC 4180), and never a formula: a device-chosen value
/// starting with `=`, `+`, `-`, `@`, a tab or a carriage return would be run by a
/// spreadsheet opening the export (OWASP "CSV injection"), so it gets a leading `'`.
fn csv_field(raw: &str) -> String {
    let raw = if raw.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{raw}")
    } else {
        raw.to_owned()
    };
    if raw.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", raw.replace('"', "\"\""))
    } else {
        raw
    }
}

pub async fn export(
    Allowed { scope, .. }: Allowed<TelemetryRead>,
    ApiPath(id): ApiPath<Uuid>,
    uri: Uri,
) -> Result<Response, ApiError> {
    registry_view(&scope, id).await?;
    let Query(params) = Query::<ExportParams>::try_from_uri(&uri)?;
    if params.to <= params.from {
        return Err(ApiError::validation("to", "must be after from"));
    }
    let agency = scope.agency().to_string();
    let header_line = "time,function_id,attribute,value_double,value_text,value_json\n".to_owned();
    // Keyset pages, each in its own short transaction: the response streams however long
    // the range, without holding a transaction open for the whole download.
    let cursor = (
        params.from - Duration::microseconds(1),
        String::new(),
        String::new(),
    );
    let pages = futures::stream::try_unfold(Some(cursor), move |cursor| {
        let scope = scope.clone();
        let agency = agency.clone();
        async move {
            let Some((after_time, after_function, after_attribute)) = cursor else {
                return Ok::<_, ApiError>(None);
            };
            let mut tx = scope.begin_telemetry().await?;
            let rows: Vec<RawRow> = sqlx::query_as(
                "SELECT time, function_id, attribute, value_double, value_text, value_json
                   FROM telemetry
                  WHERE agency_id = $1::uuid AND device_id = $2 AND time < $4
                    AND (time, function_id, attribute) > ($3, $5, $6)
                  ORDER BY time, function_id, attribute LIMIT $7",
            )
            .bind(&agency)
            .bind(id)
            .bind(after_time)
            .bind(params.to)
            .bind(&after_function)
            .bind(&after_attribute)
            .bind(EXPORT_PAGE)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                return Ok(None);
            }
            let mut chunk = String::with_capacity(rows.len() * 80);
            for r in &rows {
                chunk.push_str(&format!(
                    "{},{},{},{},{},{}\n",
                    r.time.to_rfc3339_opts(SecondsFormat::Millis, true),
                    csv_field(&r.function_id),
                    csv_field(&r.attribute),
                    r.value_double.map(|v| v.to_string()).unwrap_or_default(),
                    csv_field(r.value_text.as_deref().unwrap_or("")),
                    csv_field(
                        &r.value_json
                            .as_ref()
                            .map(|v| v.to_string())
                            .unwrap_or_default()
                    ),
                ));
            }
            let next = (rows.len() as i64 == EXPORT_PAGE).then(|| {
                let last = &rows[rows.len() - 1];
                (last.time, last.function_id.clone(), last.attribute.clone())
            });
            Ok(Some((chunk, next)))
        }
    });
    let body = futures::stream::once(async move { Ok::<_, ApiError>(header_line) })
        .chain(pages)
        .map(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"telemetry.csv\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn a_cell_is_never_a_formula() {
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("lampMonitor001"), "lampMonitor001");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
