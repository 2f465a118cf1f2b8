//! Rebuild, while the platform runs (issue 15, item 7).
//!
//! 1. **Shadow tables.** Each table of the rebuilt read models is made anew, empty, in the
//!    schema `eriop_rebuild` (migration 0022), shaped like the real one, with half of each
//!    page left free (`fillfactor`): a replay mostly updates rows it has just inserted, and
//!    an update that finds room on its row's page is a heap-only tuple, which adds no entry
//!    to any index. On full pages every update wrote each index again and PostgreSQL spent
//!    a fifth of its time there and in cleaning the entries up. (Unlogged shadows with
//!    asynchronous commits were tried: no difference measurable on a million events, so
//!    they stay ordinary tables.)
//! 2. **Replay into them**, in store order and in short transactions (pages of [`PAGE`]
//!    events, dealt out by aggregate to [`LANES`] connections that apply them at once, each
//!    part with a few statements per model, [`ReadModel::apply_page`]) whose `search_path`
//!    puts `eriop_rebuild` first, so the projections' own code (unqualified table names)
//!    writes the shadows. Only events below the store-order horizon are read
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
    #[error("a replay lane stopped: {0}")]
    Lane(#[from] tokio::task::JoinError),
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
            "DROP TABLE IF EXISTS {SHADOW}.{table}; CREATE TABLE {SHADOW}.{table} (LIKE public.{table} INCLUDING ALL) WITH (fillfactor = 50)"
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

    let (mut report, mut after) =
        replay_in_lanes(pool, models, &types, total, &mut progress).await?;

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

/// A page of events: each with its place in store order.
type Page = Vec<(StoredEvent, i64, i64)>;

/// Connections applying pages at once, each to its own share of the aggregates.
pub const LANES: usize = 4;

/// Replays into the shadows every event below the store-order horizon; answers what it
/// counted and where it stopped.
///
/// One reader reads the pages in store order and deals each page's events out to [`LANES`]
/// lanes by aggregate ([`parts`]); each lane applies its parts in their order, one
/// transaction each, on a connection of its own. Applying is PostgreSQL's work, one backend
/// a connection: a lane waiting on its commit's flush or on the next page leaves the
/// cores to the others, and no lane waits for another's part of the same page (a join per
/// page left both cores idle while the slower half finished). Each lane holds at most two
/// parts not yet applied, so the reader runs a few pages ahead and no further.
///
/// Why lanes may commit apart: every aggregate's events are in one lane, in store order, and
/// a model reads and writes only its own aggregate's rows (`page.rs`); every key of a rebuilt
/// table is its aggregate's (the reservations of serials and registry names are not read
/// models, and are not rebuilt). The shadows are invisible until the swap, and a rebuild
/// that stops starts again from nothing, so how the pages were committed changes nothing a
/// reader or a restart sees.
async fn replay_in_lanes(
    pool: &PgPool,
    models: &[ReadModel],
    types: &[&str],
    total: u64,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(RebuildReport, (i64, i64)), RebuildError> {
    use tokio::sync::mpsc;

    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..LANES).map(|_| mpsc::channel::<Page>(2)).unzip();
    let (applied, mut counted) = mpsc::unbounded_channel::<RebuildReport>();
    let reader = async move {
        let mut after = (-1_i64, -1_i64);
        loop {
            let page = next_page(pool, types, after).await?;
            if let Some((_, transaction_id, position)) = page.last() {
                after = (*transaction_id, *position);
            }
            let full = page.len() as u64 == PAGE as u64;
            for (lane, part) in senders.iter().zip(parts(page, LANES)) {
                // A lane stops taking parts only when it failed: its error ends the replay.
                if !part.is_empty() && lane.send(part).await.is_err() {
                    return Ok(after);
                }
            }
            if !full {
                // Dropping the senders tells each lane that no part is coming.
                return Ok::<_, RebuildError>(after);
            }
        }
    };
    // Each lane a task of its own, so that lanes decode and encode on every core; dropped
    // on an early return, the set stops them.
    let mut lanes = tokio::task::JoinSet::new();
    for mut parts in receivers {
        let (pool, models, applied) = (pool.clone(), models.to_vec(), applied.clone());
        lanes.spawn(async move {
            while let Some(part) = parts.recv().await {
                let report = apply_apart(&pool, &models, &part).await?;
                // The tally below outlives every lane.
                let _ = applied.send(report);
            }
            Ok::<_, RebuildError>(())
        });
    }
    drop(applied);
    let tally = async {
        let mut report = RebuildReport::default();
        while let Some(part) = counted.recv().await {
            report.events += part.events;
            report.applied += part.applied;
            progress(report.events, total);
        }
        Ok::<_, RebuildError>(report)
    };
    let lanes = async {
        while let Some(lane) = lanes.join_next().await {
            lane??;
        }
        Ok::<_, RebuildError>(())
    };
    let (after, (), report) = tokio::try_join!(reader, lanes, tally)?;
    Ok((report, after))
}

/// A page dealt out to `lanes` lanes by aggregate, each part in store order: every
/// aggregate's events are in one part, the same part for every page.
fn parts(page: Page, lanes: usize) -> Vec<Page> {
    let mut parts: Vec<Page> = (0..lanes)
        .map(|_| Vec::with_capacity(page.len() / lanes + 1))
        .collect();
    for entry in page {
        let lane = lane_of(&entry.0.aggregate_id, lanes);
        parts[lane].push(entry);
    }
    parts
}

/// Which lane an aggregate's events go to: a stable hash of its id (FNV-1a).
fn lane_of(aggregate_id: &str, lanes: usize) -> usize {
    let hash = aggregate_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    // Below `lanes`, so it fits a usize.
    usize::try_from(hash % lanes.max(1) as u64).unwrap_or(0)
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
    let rows: Vec<StoreRow> = sqlx::query_as(
        // Straight off the store-order index (migration 0023). The store's columns, not the
        // `stored_events` view's envelope: building and sending a JSON document a row was a
        // fifth of PostgreSQL's time in a rebuild, which is PostgreSQL-bound.
        "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                metadata, recorded_at, hash, transaction_id, position
           FROM public.events
          WHERE aggregate_type = ANY($1) AND (transaction_id, position) > ($2, $3)
            AND ($4::bigint IS NULL OR transaction_id < $4)
          ORDER BY transaction_id, position
          LIMIT $5",
    )
    .bind(types)
    .bind(after.0)
    .bind(after.1)
    .bind(horizon)
    .bind(PAGE)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(StoreRow::into_entry).collect())
}

/// A row of the store, as [`read`] selects it.
#[derive(sqlx::FromRow)]
struct StoreRow {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Json<serde_json::Value>,
    metadata: Json<std::collections::HashMap<String, String>>,
    recorded_at: chrono::DateTime<chrono::Utc>,
    hash: Vec<u8>,
    transaction_id: i64,
    position: i64,
}

impl StoreRow {
    /// The event as the `stored_events` view's envelope has it (migration 0023: the time in
    /// UTC to the microsecond, the hash in hex), with its place in store order.
    fn into_entry(self) -> (StoredEvent, i64, i64) {
        let event = StoredEvent {
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
            event_version: self.event_version,
            payload: self.payload.0,
            metadata: self.metadata.0,
            recorded_at: self
                .recorded_at
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string(),
            hash: hex::encode(self.hash),
        };
        (event, self.transaction_id, self.position)
    }
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
            .map(|(event, _, _)| event)
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

    #[test]
    fn a_store_row_reads_as_the_envelope_of_the_view() {
        let at = chrono::DateTime::from_timestamp(1_796_636_288, 123_456_000).unwrap();
        let row = |recorded_at| StoreRow {
            aggregate_type: "agency".to_owned(),
            aggregate_id: "a".to_owned(),
            sequence: 3,
            event_type: "AgencyRenamed".to_owned(),
            event_version: "1.0".to_owned(),
            payload: Json(serde_json::json!({"AgencyRenamed": {"name": "b"}})),
            metadata: Json([("request_id".to_owned(), "r".to_owned())].into()),
            recorded_at,
            hash: vec![0x0a, 0xff, 0x00],
            transaction_id: 7,
            position: 2,
        };
        let (event, transaction_id, position) = row(at).into_entry();
        assert_eq!((transaction_id, position), (7, 2));
        // As `to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')` and
        // `encode(hash, 'hex')` write them.
        assert_eq!(event.recorded_at, "2026-12-07T09:38:08.123456Z");
        assert_eq!(event.hash, "0aff00");
        assert_eq!(event.sequence, 3);
        assert_eq!(event.metadata["request_id"], "r");
        let whole = chrono::DateTime::from_timestamp(1_796_636_288, 0).unwrap();
        assert_eq!(
            row(whole).into_entry().0.recorded_at,
            "2026-12-07T09:38:08.000000Z"
        );
    }

    proptest! {
        /// Whatever the page and the number of lanes, its parts hold every event once, each
        /// aggregate's events in one part only, and each part in store order.
        #[test]
        fn parts_keep_every_event_and_each_aggregate_whole(
            aggregates in proptest::collection::vec(0_u8..40, 0..300),
            lanes in 1_usize..6,
        ) {
            let page: Page = aggregates
                .iter()
                .enumerate()
                .map(|(i, a)| (event(*a, i as i64), 1, i as i64))
                .collect();
            let parts = parts(page.clone(), lanes);
            prop_assert_eq!(parts.len(), lanes);
            prop_assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), page.len());
            for part in &parts {
                prop_assert!(part.windows(2).all(|w| w[0].2 < w[1].2));
            }
            let ids = |part: &Page| -> std::collections::HashSet<String> {
                part.iter().map(|e| e.0.aggregate_id.clone()).collect()
            };
            for (i, one) in parts.iter().enumerate() {
                for other in &parts[i + 1..] {
                    prop_assert!(ids(one).is_disjoint(&ids(other)));
                }
            }
        }
    }
}
