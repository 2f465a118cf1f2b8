//! Telemetry retention per agency (issue 15, item 8). A platform administrator sets an
//! agency's `telemetry_retention_days` (the event AgencyTelemetryRetentionSet, so each change
//! is in the trail); this job deletes the agency's samples older than that, every
//! `ERIOP_TELEMETRY_RETENTION_INTERVAL_SECS`. Agencies without one keep the platform's
//! retention (on TimescaleDB, the hypertable's 400-day policy). The cutoff is a whole minute:
//! the rollup's minutes before it (`telemetry_minutes`, and their marks) go with the samples,
//! and none stays rolled up from samples half deleted. (TimescaleDB's own policy drops raw
//! chunks only: their minutes stay in the rollup, as a continuous aggregate's would.)
//!
//! Each agency's deletion runs in transactions scoped to that agency (row-level security
//! lets it touch nothing else), in batches of [`BATCH`] rows so no transaction grows with the
//! backlog, and by the natural key (a row's `ctid` is not unique across partitions). Time is
//! a parameter ([`purge`]), so tests decide what "old" is.
//!
//! Telemetry has one index, its natural key (device, function, attribute, time): a second
//! one by agency and time cost ingest a third of its insert time, for this job alone
//! (migration 0032). So the job goes key by key: the agency's keys come from
//! `device_latest`, which the ingest writes in the same transaction as the rows (every
//! stored key has its row there, as the rollup also relies on; migration 0033 gave samples
//! stored before 0012 theirs), [`KEYS`] at a time, and each
//! key's old samples are one range of the natural key's index.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use eriop_nats::backoff::Backoff;
use eriop_nats::db::{begin, Scope};

/// Rows deleted per transaction.
pub const BATCH: i64 = 10_000;

/// An agency's telemetry keys (device, function, attribute) taken at a time.
pub const KEYS: i64 = 1_000;

/// The first page of an agency's keys, in key order (`device_latest`'s primary key).
const FIRST_KEYS: &str = "
SELECT device_id, function_id, attribute FROM device_latest
 WHERE agency_id = $1
 ORDER BY device_id, function_id, attribute LIMIT $2";

/// The next page of an agency's keys, after the key `$2..$4`: one pass over the primary
/// key's index for all the pages together.
const NEXT_KEYS: &str = "
SELECT device_id, function_id, attribute FROM device_latest
 WHERE agency_id = $1 AND (device_id, function_id, attribute) > ($2, $3, $4)
 ORDER BY device_id, function_id, attribute LIMIT $5";

/// Deletes at most `$6` samples of the agency `$1` older than `$2`, of the keys `$3..$5`:
/// for each key, one range of the natural key's index.
const DELETE_OLD: &str = "
DELETE FROM telemetry t
 USING (SELECT o.device_id, o.function_id, o.attribute, o.time
          FROM unnest($3::uuid[], $4::text[], $5::text[]) AS k(device_id, function_id, attribute)
         CROSS JOIN LATERAL
               (SELECT x.device_id, x.function_id, x.attribute, x.time FROM telemetry x
                 WHERE x.device_id = k.device_id AND x.function_id = k.function_id
                   AND x.attribute = k.attribute AND x.time < $2 AND x.agency_id = $1
                 LIMIT $6) o
         LIMIT $6) old
 WHERE t.device_id = old.device_id AND t.function_id = old.function_id
   AND t.attribute = old.attribute AND t.time = old.time";

/// Deletes, for every agency with a retention, its telemetry recorded before `now` minus
/// that many days. Answers the rows deleted per agency (those with any).
pub async fn purge(
    pool: &PgPool,
    telemetry: &PgPool,
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, u64)>, sqlx::Error> {
    let mut tx = begin(pool, Scope::All).await?;
    let agencies: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT id, telemetry_retention_days FROM agencies
          WHERE telemetry_retention_days IS NOT NULL ORDER BY id",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut purged = Vec::new();
    for (agency, days) in agencies {
        // A whole minute: the rollup's minutes before it go with their raw rows, and none
        // is left rolled up from rows half deleted.
        let cutoff = crate::telemetry::rollup::minute_of(now - chrono::Duration::days(days));
        let deleted = purge_samples(telemetry, agency, cutoff).await?;
        let mut tx = begin(telemetry, Scope::Agency(agency)).await?;
        for table in ["telemetry_minutes", "telemetry_touched"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE agency_id = $1 AND minute < $2"
            ))
            .bind(agency)
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if deleted > 0 {
            tracing::info!(agency_id = %agency, deleted, retention_days = days, "telemetry past its agency's retention deleted");
            purged.push((agency, deleted));
        }
    }
    Ok(purged)
}

/// Deletes the agency's samples older than `cutoff`, key page by key page, [`BATCH`] rows a
/// transaction; answers how many.
async fn purge_samples(
    telemetry: &PgPool,
    agency: Uuid,
    cutoff: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let mut deleted = 0u64;
    let mut after: Option<(Uuid, String, String)> = None;
    loop {
        let mut tx = begin(telemetry, Scope::Agency(agency)).await?;
        let page = match &after {
            None => sqlx::query_as(FIRST_KEYS).bind(agency).bind(KEYS),
            Some((device, function, attribute)) => sqlx::query_as(NEXT_KEYS)
                .bind(agency)
                .bind(*device)
                .bind(function.as_str())
                .bind(attribute.as_str())
                .bind(KEYS),
        };
        let keys: Vec<(Uuid, String, String)> = page.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let Some(last) = keys.last().cloned() else {
            return Ok(deleted);
        };
        let (mut devices, mut functions, mut attributes) = (Vec::new(), Vec::new(), Vec::new());
        for (device, function, attribute) in keys.iter().cloned() {
            devices.push(device);
            functions.push(function);
            attributes.push(attribute);
        }
        loop {
            let mut tx = begin(telemetry, Scope::Agency(agency)).await?;
            let batch = sqlx::query(DELETE_OLD)
                .bind(agency)
                .bind(cutoff)
                .bind(&devices)
                .bind(&functions)
                .bind(&attributes)
                .bind(BATCH)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            deleted += batch;
            if batch < BATCH as u64 {
                break;
            }
        }
        if keys.len() < KEYS as usize {
            return Ok(deleted);
        }
        after = Some(last);
    }
}

/// Applies the retention every `interval`, from start-up; a failure (a database away) is
/// retried with backoff and never stops the service.
pub async fn run(pool: PgPool, telemetry: PgPool, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        while let Err(e) = purge(&pool, &telemetry, Utc::now()).await {
            tracing::warn!(error = %e, attempt = backoff.attempts(), "telemetry retention interrupted, will retry");
            if backoff.attempts() >= 10 {
                break;
            }
            backoff.wait().await;
        }
    }
}
