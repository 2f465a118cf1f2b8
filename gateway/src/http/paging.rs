//! Pages of a list (`?limit=&offset=`), and waiting for a read model to show a write.

use std::time::{Duration, Instant};

use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::http::error::ApiError;

const MAX_PAGE: i64 = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    limit: Option<i64>,
    offset: Option<i64>,
}

impl PageParams {
    pub fn new(limit: Option<i64>, offset: Option<i64>) -> Self {
        Self { limit, offset }
    }

    /// `(limit, offset)`: limit 1 to 1,000 (default 100), offset 0 or more.
    pub fn checked(&self) -> Result<(i64, i64), ApiError> {
        let limit = self.limit.unwrap_or(100);
        let offset = self.offset.unwrap_or(0);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::validation(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        if offset < 0 {
            return Err(ApiError::validation("offset", "must not be negative"));
        }
        Ok((limit, offset))
    }
}

/// A page of a list, as every list answers it: `{items, limit, offset}`.
pub fn page(items: &impl serde::Serialize, limit: i64, offset: i64) -> axum::response::Response {
    use axum::response::IntoResponse;
    /// Serialized straight to the body: no JSON tree built in between (issue 13).
    #[derive(serde::Serialize)]
    struct Page<'a, T: serde::Serialize> {
        items: &'a T,
        limit: i64,
        offset: i64,
    }
    axum::Json(Page {
        items,
        limit,
        offset,
    })
    .into_response()
}

/// The read models a command's answer may wait for.
#[derive(Debug, Clone, Copy)]
pub enum ReadModel {
    Agencies,
    Users,
    Roles,
    DeviceClasses,
    Devices,
    Registries,
}

impl ReadModel {
    /// The aggregate whose events this read model shows (cqrs-es `Aggregate::TYPE`).
    pub fn aggregate_type(self) -> &'static str {
        match self {
            Self::Agencies => "agency",
            Self::Users => "user",
            Self::Roles => "role",
            Self::DeviceClasses => "device_class",
            Self::Devices => "device",
            Self::Registries => "registry",
        }
    }
}

/// Read your writes (DESIGN.md rule 3): waits, at most `timeout`, until the read model
/// shows row `id` at `version` or later. Polls with a short, growing pause.
pub async fn await_version(
    pool: &PgPool,
    model: ReadModel,
    id: Uuid,
    version: i64,
    timeout: Duration,
) -> Result<bool, ApiError> {
    let deadline = Instant::now() + timeout;
    // Short pauses, capped low: the read model is usually there within tens of milliseconds,
    // and a pause that doubles up to 50 ms answered up to 50 ms after it was (the command
    // path's p99 was these pauses; docs/BENCHMARKS.md). Each look is one indexed read.
    let mut pause = Duration::from_millis(1);
    loop {
        // The row the caller just wrote, found by its id: its version only, in one
        // statement (migration 0027), not a transaction acting for every agency.
        let current: Option<i64> = sqlx::query_scalar("SELECT eriop_read_model_version($1, $2)")
            .bind(model.aggregate_type())
            .bind(id)
            .fetch_one(pool)
            .await?;
        if current.is_some_and(|v| v >= version) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(8));
    }
}
