//! Pages of a list (`?limit=&offset=`), and waiting for a read model to show a write.

use std::time::{Duration, Instant};

use serde::Deserialize;
use uuid::Uuid;

use crate::http::answers::Answers;
use crate::http::error::ApiError;
use crate::services::identity::Standings;
use crate::state::AppState;

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
/// shows row `id` at `version` or later.
///
/// The read model is the only judge: the version is read from it, at once, then whenever a
/// projection's hint says the row reached `version` (`workers::progress`), and otherwise
/// after a fallback pause. While hints arrive the fallback is long (it only covers a hint
/// lost between a projection's commit and its publish); while they do not (NATS
/// reconnecting), it is the short, growing pause of before (1, 2, 4, then every 8 ms).
pub async fn await_version(
    state: &AppState,
    model: ReadModel,
    id: Uuid,
    version: i64,
    timeout: Duration,
) -> Result<bool, ApiError> {
    let (pool, progress, metrics) = (state.pool(), state.progress(), state.metrics());
    let deadline = Instant::now() + timeout;
    let mut watch = progress.watch(model.aggregate_type(), id);
    let mut woken_by = "first";
    let mut polls = Duration::from_millis(1);
    // A hint that said `version` while the read model did not (a forged one, say) is not
    // waited on again: only the pauses are.
    let mut hinted = false;
    loop {
        // The row the caller just wrote, found by its id: its version only, in one
        // statement (migration 0027), not a transaction acting for every agency.
        let current: Option<i64> = sqlx::query_scalar("SELECT eriop_read_model_version($1, $2)")
            .bind(model.aggregate_type())
            .bind(id)
            .fetch_one(pool)
            .await?;
        metrics.looked(woken_by);
        if current.is_some_and(|v| v >= version) {
            // This gateway's own write is shown: its caller's next request must see it,
            // even if the hint has not come (or never will).
            if Answers::shows(model.aggregate_type()) {
                progress.answers().forget_all();
            }
            if Standings::depends_on(model.aggregate_type()) {
                progress.standings().forget(id);
            }
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let pause = if progress.live() {
            HINTED_FALLBACK
        } else {
            let pause = polls;
            polls = (polls * 2).min(Duration::from_millis(8));
            pause
        };
        let wake = deadline.min(now + pause);
        tokio::select! {
            () = watch.reached(version), if !hinted => {
                hinted = true;
                woken_by = "hint";
            }
            () = tokio::time::sleep_until(wake.into()) => woken_by = "pause",
        }
    }
}

/// How long a waiter goes without looking while hints arrive: a lost hint costs this much.
const HINTED_FALLBACK: Duration = Duration::from_millis(50);
