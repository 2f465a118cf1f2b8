//! `POST /api/v1/devices/bulk`: thousands of devices in one request, as a JSON array or a
//! CSV file (`class_id,registry,serial,name[,offline_after_secs]` with a header row). Every
//! valid row is registered even when others fail; the answer reports each row.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

use super::registry::{register_one, Refusal, RegisterDevice, RowError};
use crate::http::edge::RequestId;
use crate::http::error::ApiError;
use crate::http::permission::DevicesWrite;
use crate::http::Allowed;
use crate::state::AppState;

pub const MAX_ROWS: usize = 10_000;
/// Rows registered at the same time (each is a few round trips to PostgreSQL).
const CONCURRENCY: usize = 8;

/// Row `n` (1-based, as a spreadsheet shows data rows) and what it holds, or why it cannot
/// be read at all.
type Parsed = Vec<(usize, Result<RegisterDevice, RowError>)>;

fn parse_json(body: &[u8]) -> Result<Parsed, ApiError> {
    let rows: Vec<Value> = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!("the body is not a JSON array of devices: {e}"))
    })?;
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            (
                i + 1,
                serde_json::from_value(row).map_err(|e| RowError {
                    field: "row",
                    message: e.to_string(),
                }),
            )
        })
        .collect())
}

fn parse_csv(body: &[u8]) -> Result<Parsed, ApiError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| ApiError::BadRequest(format!("the CSV header cannot be read: {e}")))?
        .clone();
    for required in ["class_id", "registry", "serial", "name"] {
        if !headers.iter().any(|h| h == required) {
            return Err(ApiError::BadRequest(format!(
                "the CSV header must name the columns class_id,registry,serial,name[,offline_after_secs]; `{required}` is missing"
            )));
        }
    }
    Ok(reader
        .records()
        .enumerate()
        .map(|(i, record)| {
            let row = record
                .map_err(|e| RowError {
                    field: "row",
                    message: e.to_string(),
                })
                .and_then(|record| {
                    let get = |name: &str| {
                        headers
                            .iter()
                            .position(|h| h == name)
                            .and_then(|p| record.get(p))
                            .unwrap_or("")
                            .to_owned()
                    };
                    let offline = get("offline_after_secs");
                    let offline_after_secs = if offline.is_empty() {
                        None
                    } else {
                        Some(offline.parse().map_err(|_| RowError {
                            field: "offline_after_secs",
                            message: "must be a whole number of seconds".into(),
                        })?)
                    };
                    Ok(RegisterDevice {
                        class_id: get("class_id"),
                        registry: get("registry"),
                        serial: get("serial"),
                        name: get("name"),
                        offline_after_secs: offline_after_secs.map(crate::http::whole::Whole),
                    })
                });
            (i + 1, row)
        })
        .collect())
}

pub async fn register(
    Allowed { caller, scope, .. }: Allowed<DevicesWrite>,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let rows = if content_type.starts_with("application/json") {
        parse_json(&body)?
    } else if content_type.starts_with("text/csv") {
        parse_csv(&body)?
    } else {
        return Err(ApiError::UnsupportedMediaType(
            "send application/json (an array of devices) or text/csv".into(),
        ));
    };
    if rows.len() > MAX_ROWS {
        return Err(ApiError::validation(
            "rows",
            format!("at most {MAX_ROWS} rows per request; split the file"),
        ));
    }
    let (state_ref, caller_ref, scope_ref, request_ref) = (&state, &caller, &scope, &request_id);
    let mut results: Vec<(usize, Result<Uuid, Refusal>)> = futures::stream::iter(rows)
        .map(|(n, row)| async move {
            let outcome = match row {
                Ok(row) => register_one(state_ref, caller_ref, scope_ref, row, request_ref).await,
                Err(e) => Err(Refusal::Invalid(e)),
            };
            (n, outcome)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.sort_by_key(|(n, _)| *n);
    let registered: Vec<Uuid> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().copied())
        .collect();
    // Read your writes, as on the command path: 200 once the registry shows every device,
    // 202 with the same report if it lags (every device reported registered is stored).
    let status = if await_all(&state, &scope, &registered).await? {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let report: Vec<Value> = results
        .into_iter()
        .map(|(row, outcome)| match outcome {
            Ok(id) => json!({ "row": row, "status": "registered", "id": id }),
            Err(Refusal::Invalid(e) | Refusal::Taken(e)) => {
                json!({ "row": row, "status": "failed", "errors": [e] })
            }
            Err(Refusal::Failed(e)) => {
                json!({ "row": row, "status": "failed", "errors": [{ "field": "row", "message": e.to_string() }] })
            }
        })
        .collect();
    let failed = report.len() - registered.len();
    Ok((
        status,
        Json(json!({
            "registered": registered.len(),
            "failed": failed,
            "rows": report,
        })),
    )
        .into_response())
}

/// Read your writes for a whole import: waits (bounded) until the registry shows them all;
/// answers whether it did.
async fn await_all(
    state: &AppState,
    scope: &crate::http::AgencyScope,
    ids: &[Uuid],
) -> Result<bool, ApiError> {
    let deadline = Instant::now() + state.read_your_writes_timeout().max(Duration::from_secs(5));
    loop {
        let mut tx = scope.begin().await?;
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM devices WHERE id = ANY($1)")
            .bind(ids)
            .fetch_one(&mut *tx)
            .await?;
        drop(tx);
        if usize::try_from(seen).unwrap_or(0) >= ids.len() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{parse_csv, parse_json};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Any bytes as a CSV file: the whole file refused with a 400 (no usable header), or
        /// one result a record, each a device or the reason it is not one; never a panic.
        #[test]
        fn any_csv_file_is_rows_or_a_clear_refusal(
            header in prop::sample::select(vec![
                "class_id,registry,serial,name",
                "class_id,registry,serial,name,offline_after_secs",
                "name,serial,registry,class_id",
                "",
            ]),
            body in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut file = header.as_bytes().to_vec();
            file.push(b'\n');
            file.extend_from_slice(&body);
            match parse_csv(&file) {
                Ok(rows) => {
                    for (i, (n, _)) in rows.iter().enumerate() {
                        prop_assert_eq!(*n, i + 1);
                    }
                    prop_assert!(rows.len() <= file.iter().filter(|b| **b == b'\n' || **b == b'\r').count() + 1);
                }
                Err(e) => prop_assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST),
            }
        }

        /// Any JSON value as the body: a 400 unless it is an array, then one result per
        /// element (a device, or why the element is not one).
        #[test]
        fn any_json_body_is_rows_or_a_clear_refusal(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            match parse_json(&body) {
                Ok(rows) => {
                    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    prop_assert_eq!(rows.len(), value.as_array().map_or(0, Vec::len));
                }
                Err(e) => prop_assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST),
            }
        }

        #[test]
        fn an_array_of_arbitrary_rows_is_judged_row_by_row(
            rows in proptest::collection::vec(
                (any::<Option<String>>(), any::<Option<String>>(), any::<Option<i64>>(), any::<bool>()),
                0..20,
            ),
        ) {
            let body: Vec<serde_json::Value> = rows
                .iter()
                .map(|(registry, name, offline, extra)| {
                    let mut row = serde_json::json!({
                        "class_id": "01a2370e-35b4-717d-9e40-b329b50f4034",
                        "registry": registry, "serial": "SN-1", "name": name,
                        "offline_after_secs": offline,
                    });
                    if *extra {
                        row["unknown"] = serde_json::json!(1);
                    }
                    row
                })
                .collect();
            let parsed = parse_json(&serde_json::to_vec(&body).unwrap()).unwrap();
            prop_assert_eq!(parsed.len(), rows.len());
            for ((_, row), (registry, name, offline, extra)) in parsed.iter().zip(&rows) {
                let fits = offline.is_none_or(|o| u32::try_from(o).is_ok());
                prop_assert_eq!(row.is_ok(), registry.is_some() && name.is_some() && fits && !extra);
            }
        }
    }
}
