//! Rebuild, while the platform runs (issue 15, item 7).
//!
//! 1. **Shadow tables.** Each table of the rebuilt read models is made anew, empty, in the
//!    schema `eriop_rebuild` (migration 0022), shaped like the real one.
//! 2. **Replay into them**, in store order and in short transactions of [`PAGE`] events (each
//!    page applied with a few statements per model, [`ReadModel::apply_page`]) whose
//!    `search_path` puts `eriop_rebuild` first, so the projections' own code (unqualified table
//!    names) writes the shadows. Only events below the store-order horizon are read
//!    (`eriop_nats::db::store_horizon`), so every event left for later sorts after the cursor.
//!    Readers and the live consumers keep using the real tables meanwhile; no lock is held.
//! 3. **Swap**, in one transaction: lock the real tables in EXCLUSIVE mode (readers go on
//!    reading the old rows; the live consumers' writes wait), replay into the shadows the
//!    events stored since step 2 (each projection skips what it already applied), then
//!    replace the real tables' rows with the shadows'. At the commit readers see the rebuilt
//!    rows all at once: never an empty or partial read model. Every event the live consumers
//!    applied before the lock committed before it, so the catch-up sees it; later ones reach
//!    the live consumers after the swap, which apply them on the rebuilt rows.
//! 4. The shadows are dropped.

use eriop_nats::StoredEvent;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use crate::{ProjectionError, ReadModel};

/// Events per transaction while replaying into the shadows.
pub const PAGE: i64 = 1_000;
const SHADOW: &str = "eriop_rebuild";

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("another rebuild is running: wait for it to finish")]
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RebuildReport {
    pub events: u64,
    pub applied: u64,
}

/// Rebuilds `models` (every read model: [`ReadModel::ALL`]) from the event store.
/// `progress(done, total)` after each page.
pub async fn rebuild(
    pool: &PgPool,
    models: &[ReadModel],
    mut progress: impl FnMut(u64, u64),
) -> Result<RebuildReport, RebuildError> {
    let tables: Vec<&str> = models
        .iter()
        .flat_map(|m| m.tables().iter().copied())
        .collect();
    let types: Vec<&str> = models.iter().map(|m| m.aggregate_type()).collect();
    let mut tx = pool.begin().await?;
    for table in &tables {
        sqlx::raw_sql(&format!(
            "DROP TABLE IF EXISTS {SHADOW}.{table}; CREATE TABLE {SHADOW}.{table} (LIKE public.{table} INCLUDING ALL)"
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = ANY($1)")
            .bind(&types)
            .fetch_one(pool)
            .await?;
    let total = u64::try_from(total).unwrap_or(0);

    let mut report = RebuildReport::default();
    let mut after = (-1_i64, -1_i64);
    loop {
        let horizon = eriop_nats::db::store_horizon(pool).await?;
        let mut tx = shadowed(pool).await?;
        let applied = replay(
            &mut tx,
            models,
            &types,
            &mut after,
            Some(horizon),
            &mut report,
        )
        .await?;
        tx.commit().await?;
        progress(report.events, total);
        if applied < PAGE as u64 {
            break;
        }
    }

    let mut tx = shadowed(pool).await?;
    for table in &tables {
        sqlx::query(&format!("LOCK TABLE public.{table} IN EXCLUSIVE MODE"))
            .execute(&mut *tx)
            .await?;
    }
    while replay(&mut tx, models, &types, &mut after, None, &mut report).await? == PAGE as u64 {}
    for table in &tables {
        sqlx::raw_sql(&format!(
            "DELETE FROM public.{table}; INSERT INTO public.{table} SELECT * FROM {SHADOW}.{table}"
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    progress(report.events, total.max(report.events));
    for table in &tables {
        sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {SHADOW}.{table}"))
            .execute(pool)
            .await?;
    }
    Ok(report)
}

/// A transaction acting for every agency whose unqualified table names are the shadows.
async fn shadowed(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = crate::begin_all_agencies(pool).await?;
    sqlx::query(&format!("SET LOCAL search_path TO {SHADOW}, public"))
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Applies the next page of events after `after` in store order (below `horizon` if given)
/// to the models they belong to; answers how many it read.
async fn replay(
    conn: &mut PgConnection,
    models: &[ReadModel],
    types: &[&str],
    after: &mut (i64, i64),
    horizon: Option<i64>,
    report: &mut RebuildReport,
) -> Result<u64, ProjectionError> {
    let page: Vec<(Json<StoredEvent>, i64, i64)> = sqlx::query_as(
        "SELECT s.envelope, e.transaction_id, e.position
           FROM public.events e
           JOIN public.stored_events s USING (aggregate_type, aggregate_id, sequence)
          WHERE e.aggregate_type = ANY($1) AND (e.transaction_id, e.position) > ($2, $3)
            AND ($4::bigint IS NULL OR e.transaction_id < $4)
          ORDER BY e.transaction_id, e.position
          LIMIT $5",
    )
    .bind(types)
    .bind(after.0)
    .bind(after.1)
    .bind(horizon)
    .bind(PAGE)
    .fetch_all(&mut *conn)
    .await?;
    if let Some((_, transaction_id, position)) = page.last() {
        *after = (*transaction_id, *position);
    }
    report.events += page.len() as u64;
    // Model by model: each writes only its own tables, keyed by its own aggregates.
    for model in models {
        let events: Vec<&StoredEvent> = page
            .iter()
            .map(|(Json(event), _, _)| event)
            .filter(|event| event.aggregate_type == model.aggregate_type())
            .collect();
        if !events.is_empty() {
            report.applied += model.apply_page(&mut *conn, &events).await?;
        }
    }
    Ok(page.len() as u64)
}
