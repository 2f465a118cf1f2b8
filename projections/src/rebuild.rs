//! Rebuild: empty read models and replay the event store into them, in one transaction,
//! while the platform runs. The tables are locked in EXCLUSIVE mode, which lets readers in:
//! until the rebuild commits they read the old rows (PostgreSQL keeps them for their
//! snapshots), and at its commit the new rows replace them all at once, so no reader sees an
//! empty or partial read model. Writers wait: the live consumers resume after the commit and
//! find their events already applied (per-aggregate versions); a command meanwhile answers
//! 202 (its read model is late) rather than wait.

use eriop_nats::StoredEvent;
use sqlx::types::Json;
use sqlx::PgPool;

use crate::{Outcome, ProjectionError, ReadModel};

const PAGE: i64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RebuildReport {
    pub events: u64,
    pub applied: u64,
}

/// Replays the events of `models` (every read model: [`ReadModel::ALL`]) into them.
/// `progress(done, total)` after each page.
pub async fn rebuild(
    pool: &PgPool,
    models: &[ReadModel],
    mut progress: impl FnMut(u64, u64),
) -> Result<RebuildReport, ProjectionError> {
    let mut tx = crate::begin_all_agencies(pool).await?;
    let types: Vec<&str> = models.iter().map(|m| m.aggregate_type()).collect();
    for model in models {
        model.reset(&mut tx).await?;
    }
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = ANY($1)")
            .bind(&types)
            .fetch_one(&mut *tx)
            .await?;
    let total = u64::try_from(total).unwrap_or(0);
    let mut report = RebuildReport::default();
    for &model in models {
        let mut after = (String::new(), 0_i64);
        loop {
            // Keyset pagination in the aggregates' own order.
            let page: Vec<Json<StoredEvent>> = sqlx::query_scalar(
                "SELECT envelope FROM stored_events
                  WHERE aggregate_type = $1 AND (aggregate_id, sequence) > ($2, $3)
                  ORDER BY aggregate_id, sequence
                  LIMIT $4",
            )
            .bind(model.aggregate_type())
            .bind(&after.0)
            .bind(after.1)
            .bind(PAGE)
            .fetch_all(&mut *tx)
            .await?;
            let Some(Json(last)) = page.last() else { break };
            after = (last.aggregate_id.clone(), last.sequence);
            for Json(event) in &page {
                report.events += 1;
                if model.apply(&mut tx, event).await? == Outcome::Applied {
                    report.applied += 1;
                }
            }
            progress(report.events, total);
        }
    }
    tx.commit().await?;
    Ok(report)
}
