//! Rebuild, while the platform runs (issue 15, item 7).
//!
//! 1. **Shadow tables.** Each table of the rebuilt read models is made anew, empty, in the
//!    schema `eriop_rebuild` (migration 0022), shaped like the real one. (Unlogged shadows
//!    with asynchronous commits were tried: no difference measurable on a million events,
//!    so they stay ordinary tables.)
//! 2. **Replay into them**, in store order and in short transactions of [`PAGE`] events (each
//!    page applied with a few statements per model, [`ReadModel::apply_page`], while the
//!    next page is read on another connection) whose
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
    // While a page is applied, the next is read on another connection: the read (about a
    // third of a page's time) does not depend on the shadows.
    let mut page = next_page(pool, &types, after).await?;
    loop {
        if let Some((_, transaction_id, position)) = page.last() {
            after = (*transaction_id, *position);
        }
        let full = page.len() as u64 == PAGE as u64;
        let following = async {
            if full {
                next_page(pool, &types, after).await
            } else {
                Ok(Vec::new())
            }
        };
        let [one, other] = halves(page);
        let (one, other, following) = tokio::join!(
            apply_apart(pool, models, &one),
            apply_apart(pool, models, &other),
            following
        );
        for half in [one?, other?] {
            report.events += half.events;
            report.applied += half.applied;
        }
        progress(report.events, total);
        if !full {
            break;
        }
        page = following?;
    }

    let mut tx = shadowed(pool).await?;
    for table in &tables {
        sqlx::query(&format!("LOCK TABLE public.{table} IN EXCLUSIVE MODE"))
            .execute(&mut *tx)
            .await?;
    }
    while replay(&mut tx, models, &types, &mut after, &mut report).await? == PAGE as u64 {}
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

/// A page of events: each envelope with its place in store order.
type Page = Vec<(Json<StoredEvent>, i64, i64)>;

/// A page split in two by aggregate, each half in store order: every aggregate's events
/// are in one half.
///
/// Why: applying a page is PostgreSQL's work, one backend per connection, so one
/// connection used one of the two cores. The halves are applied on two connections at once
/// and each commits on its own. They cannot see each other's rows, and need not: a model
/// reads and writes only its own aggregate's rows (`page.rs`), and every key of a rebuilt
/// table is its aggregate's (the reservations of serials and registry names are not read
/// models, and are not rebuilt). The shadows are invisible until the swap, and a rebuild
/// that stops starts again from nothing, so two commits per page instead of one change
/// nothing a reader or a restart sees.
fn halves(page: Page) -> [Page; 2] {
    let mut halves = [Vec::with_capacity(page.len() / 2 + 1), Vec::new()];
    for entry in page {
        let half = usize::from(aggregate_half(&entry.0.aggregate_id));
        halves[half].push(entry);
    }
    halves
}

/// Which half an aggregate's events go to: a stable hash of its id (FNV-1a).
fn aggregate_half(aggregate_id: &str) -> bool {
    let hash = aggregate_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    hash & 1 == 1
}

/// Applies (part of) a page in a transaction of its own, committed at once; answers what it
/// counted.
async fn apply_apart(
    pool: &PgPool,
    models: &[ReadModel],
    page: &Page,
) -> Result<RebuildReport, RebuildError> {
    let mut report = RebuildReport::default();
    if page.is_empty() {
        return Ok(report);
    }
    let mut tx = shadowed(pool).await?;
    apply(&mut tx, models, page, &mut report).await?;
    tx.commit().await?;
    Ok(report)
}

/// The next page after `after`, below the store-order horizon as it is now.
async fn next_page(pool: &PgPool, types: &[&str], after: (i64, i64)) -> Result<Page, RebuildError> {
    let horizon = eriop_nats::db::store_horizon(pool).await?;
    let mut conn = pool.acquire().await?;
    Ok(read(&mut conn, types, after, Some(horizon)).await?)
}

/// The next page of events after `after` in store order (below `horizon` if given).
async fn read(
    conn: &mut PgConnection,
    types: &[&str],
    after: (i64, i64),
    horizon: Option<i64>,
) -> Result<Page, sqlx::Error> {
    sqlx::query_as(
        // Straight off the store-order index (migration 0023), no join back to `events`.
        "SELECT s.envelope, s.transaction_id, s.position
           FROM public.stored_events s
          WHERE s.aggregate_type = ANY($1) AND (s.transaction_id, s.position) > ($2, $3)
            AND ($4::bigint IS NULL OR s.transaction_id < $4)
          ORDER BY s.transaction_id, s.position
          LIMIT $5",
    )
    .bind(types)
    .bind(after.0)
    .bind(after.1)
    .bind(horizon)
    .bind(PAGE)
    .fetch_all(&mut *conn)
    .await
}

/// Applies a page to the models its events belong to.
async fn apply(
    conn: &mut PgConnection,
    models: &[ReadModel],
    page: &Page,
    report: &mut RebuildReport,
) -> Result<(), ProjectionError> {
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
    Ok(())
}

/// Reads and applies the next page after `after` on `conn` (the swap's catch-up, in its
/// transaction); answers how many events it read.
async fn replay(
    conn: &mut PgConnection,
    models: &[ReadModel],
    types: &[&str],
    after: &mut (i64, i64),
    report: &mut RebuildReport,
) -> Result<u64, RebuildError> {
    let page = read(&mut *conn, types, *after, None).await?;
    if let Some((_, transaction_id, position)) = page.last() {
        *after = (*transaction_id, *position);
    }
    apply(conn, models, &page, report).await?;
    Ok(page.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(aggregate: u8, sequence: i64) -> StoredEvent {
        StoredEvent {
            aggregate_type: "Agency".to_owned(),
            aggregate_id: uuid::Uuid::from_u128(u128::from(aggregate)).to_string(),
            sequence,
            event_type: "AgencyRenamed".to_owned(),
            event_version: "1".to_owned(),
            payload: serde_json::Value::Null,
            metadata: Default::default(),
            recorded_at: String::new(),
            hash: String::new(),
        }
    }

    proptest! {
        /// Whatever the page, its halves hold every event once, each aggregate's events in
        /// one half only, and each half in store order.
        #[test]
        fn halves_keep_every_event_and_each_aggregate_whole(
            aggregates in proptest::collection::vec(0_u8..40, 0..300)
        ) {
            let page: Page = aggregates
                .iter()
                .enumerate()
                .map(|(i, a)| (Json(event(*a, i as i64)), 1, i as i64))
                .collect();
            let [one, other] = halves(page.clone());
            prop_assert_eq!(one.len() + other.len(), page.len());
            for half in [&one, &other] {
                prop_assert!(half.windows(2).all(|w| w[0].2 < w[1].2));
            }
            let ids = |half: &Page| -> std::collections::HashSet<String> {
                half.iter().map(|e| e.0.aggregate_id.clone()).collect()
            };
            prop_assert!(ids(&one).is_disjoint(&ids(&other)));
        }
    }
}
