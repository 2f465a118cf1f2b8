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

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use eriop_nats::backoff::Backoff;
use eriop_nats::db::{begin, Scope};

/// Rows deleted per transaction.
pub const BATCH: i64 = 10_000;

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
        let mut deleted = 0u64;
        loop {
            let mut tx = begin(telemetry, Scope::Agency(agency)).await?;
            let batch = sqlx::query(
                "DELETE FROM telemetry t
                  USING (SELECT device_id, function_id, attribute, time FROM telemetry
                          WHERE agency_id = $1 AND time < $2 LIMIT $3) old
                  WHERE t.device_id = old.device_id AND t.function_id = old.function_id
                    AND t.attribute = old.attribute AND t.time = old.time",
            )
            .bind(agency)
            .bind(cutoff)
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
