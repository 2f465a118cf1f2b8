//! The telemetry rollup: one row per agency, device, attribute and minute
//! (`telemetry_minutes`, migration 0030), kept apart from ingest.
//!
//! Ingest only marks which devices' minutes a group touched ([`mark`], a few rows a group,
//! plain inserts in the group's transaction). The worker ([`run`]) takes (deletes) the marks
//! of closed minutes and, in the same transaction, recomputes those minutes from the raw rows
//! with statements that run after the marks were taken (see [`roll`]). A minute is then either rolled up from every raw row committed with the
//! marks it took, or still marked, and a series reads a marked minute from the raw rows. Why
//! not in ingest's transaction: an upsert a sample costs ingest 60-80% more database time
//! (docs/BENCHMARKS.md), and ingest is what agencies cannot lose.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use eriop_domain::telemetry::minute_start;
use eriop_nats::backoff::Backoff;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::Row;

/// A minute is rolled up once it has been closed this long: most of its samples are
/// committed by then, and the rest (late ones) mark it again.
pub const GRACE: Duration = Duration::from_secs(3);

/// How often the worker looks for marks.
pub const EVERY: Duration = Duration::from_secs(1);

/// Marks taken a statement: a backlog (after an outage) is rolled up in bounded steps. A
/// minute of saturated ingest leaves a few hundred (one per group), taken in one step.
const MARKS_A_STEP: i64 = 5_000;

/// The minute (UTC, whole) of a time ([`eriop_domain::telemetry::minute_start`]).
pub fn minute_of(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(minute_start(time.timestamp()), 0).unwrap_or(time)
}

/// Records, in the group's transaction, which devices' minutes its rows touched: one row
/// per agency and minute, with the devices. Plain inserts: a concurrent group touching the
/// same minute does not wait for this one.
pub async fn mark(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[&Row],
) -> Result<(), sqlx::Error> {
    let mut touched: BTreeMap<(Uuid, DateTime<Utc>), Vec<Uuid>> = BTreeMap::new();
    for row in rows {
        let devices = touched
            .entry((row.agency_id, minute_of(row.time)))
            .or_default();
        if !devices.contains(&row.device_id) {
            devices.push(row.device_id);
        }
    }
    if touched.is_empty() {
        return Ok(());
    }
    let (mut agencies, mut minutes, mut devices) = (Vec::new(), Vec::new(), Vec::new());
    for ((agency, minute), ids) in touched {
        for id in ids {
            agencies.push(agency);
            minutes.push(minute);
            devices.push(id);
        }
    }
    sqlx::query(
        "INSERT INTO telemetry_touched (agency_id, minute, device_ids)
         SELECT agency_id, minute, array_agg(device_id)
           FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[]) AS u(agency_id, minute, device_id)
          GROUP BY agency_id, minute",
    )
    .bind(agencies)
    .bind(minutes)
    .bind(devices)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes (deletes and answers) up to `$2` marks of minutes before `$1`, oldest first.
const TAKE: &str = "
DELETE FROM telemetry_touched
 WHERE ctid = ANY (ARRAY(SELECT ctid FROM telemetry_touched WHERE minute < $1
                          ORDER BY minute LIMIT $2))
RETURNING agency_id, minute, device_ids";

/// Rolls up one agency's minute (`$1` agency, `$2` minute) for the devices `$3`, from the
/// raw rows: read once, from `telemetry_agency_time_idx`, for all those devices together (at
/// the end of a minute, every device reporting). Planned with the values (see [`roll`]):
/// only that day's partition, and the devices looked up in a hash.
const ROLL_MINUTE: &str = "
INSERT INTO telemetry_minutes (agency_id, device_id, function_id, attribute, minute, samples,
                               numeric_samples, sum_value, min_value, max_value, last_time, last_value)
-- The latest sample's value, whatever its type (the series' `last`), by its key: one index
-- lookup a rolled-up row, not a sort of the minute's samples.
SELECT m.*, (SELECT CASE WHEN jsonb_typeof(l.value_json) = 'boolean' THEN l.value_json
                         ELSE coalesce(to_jsonb(l.value_double), to_jsonb(l.value_text), l.value_json) END
               FROM telemetry l
              WHERE l.device_id = m.device_id AND l.function_id = m.function_id
                AND l.attribute = m.attribute AND l.time = m.last_time AND l.agency_id = m.agency_id)
  FROM (SELECT t.agency_id, t.device_id, t.function_id, t.attribute, $2::timestamptz AS minute,
               count(*) AS samples, count(t.value_double) AS numeric_samples,
               sum(t.value_double::numeric) AS sum_value,
               min(t.value_double) AS min_value, max(t.value_double) AS max_value,
               max(t.time) AS last_time
          FROM telemetry t
         WHERE t.agency_id = $1 AND t.time >= $2 AND t.time < $2 + INTERVAL '1 minute'
           AND t.device_id = ANY ($3)
         GROUP BY t.agency_id, t.device_id, t.function_id, t.attribute) m
ON CONFLICT (agency_id, device_id, function_id, attribute, minute) DO UPDATE
   SET samples = excluded.samples, numeric_samples = excluded.numeric_samples,
       sum_value = excluded.sum_value, min_value = excluded.min_value,
       max_value = excluded.max_value, last_time = excluded.last_time,
       last_value = excluded.last_value";

/// Whoever holds this (transaction-scoped) advisory lock rolls up; another projections
/// replica skips its turn. One at a time, so that a minute rolled up from an older snapshot
/// never overwrites one rolled up from a newer.
pub const LOCK: i64 = 0x6572_696f_705f_726f; // "eriop_ro"

/// Rolls up every minute marked and closed at `now` (less [`GRACE`]). Answers the minutes
/// written; 0 also when another replica holds the turn.
///
/// Why it is exact: the marks are taken (deleted) first, and each minute is then computed
/// by a later statement, whose snapshot holds every row committed with those marks (and
/// maybe rows committed since, whose own marks stay and bring the minute back). All of it
/// commits together: a minute is never unmarked and not yet recomputed.
pub async fn roll(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    // Marks of minutes that ended at least GRACE ago.
    let closed =
        now - chrono::Duration::seconds(60) - chrono::Duration::from_std(GRACE).unwrap_or_default();
    let mut written = 0;
    loop {
        let mut tx = eriop_nats::db::begin(pool, eriop_nats::db::Scope::All).await?;
        let turn: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !turn {
            return Ok(written);
        }
        // Each minute's statement planned with its values: a generic plan would keep every
        // partition and compare each row with every device of the list. And planned the
        // same way whatever the statistics say: a day's partition is new each day, and until
        // autovacuum analyzes it the planner expects a few rows; it then sorted a minute of
        // saturated ingest on disk (126 MB) and compiled it (JIT, 2.9 s): 8-10 s of a core
        // instead of 2-4, while ingest waited for the core (issue 13, docs/BENCHMARKS.md).
        // A hash of a minute's keys fits in memory.
        sqlx::query(
            "SELECT set_config('plan_cache_mode', 'force_custom_plan', true),
                    set_config('enable_sort', 'off', true),
                    set_config('jit', 'off', true),
                    set_config('work_mem', '64MB', true)",
        )
        .execute(&mut *tx)
        .await?;
        let marks: Vec<(Uuid, DateTime<Utc>, Vec<Uuid>)> = sqlx::query_as(TAKE)
            .bind(closed)
            .bind(MARKS_A_STEP)
            .fetch_all(&mut *tx)
            .await?;
        let taken = marks.len();
        let mut pending: BTreeMap<(Uuid, DateTime<Utc>), BTreeSet<Uuid>> = BTreeMap::new();
        for (agency, minute, devices) in marks {
            pending.entry((agency, minute)).or_default().extend(devices);
        }
        for ((agency, minute), devices) in pending {
            written += sqlx::query(ROLL_MINUTE)
                .bind(agency)
                .bind(minute)
                .bind(devices.into_iter().collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        if (taken as i64) < MARKS_A_STEP {
            return Ok(written);
        }
    }
}

/// Rolls up every [`EVERY`], from start-up; a failure (a database away) is retried with
/// backoff and never stops the service. Marks wait meanwhile, and series read their minutes
/// from the raw rows.
pub async fn run(pool: PgPool, minutes: prometheus_client::metrics::counter::Counter) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        tick.tick().await;
        match roll(&pool, Utc::now()).await {
            Ok(written) => {
                minutes.inc_by(written);
                backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt = backoff.attempts(), "telemetry rollup interrupted, will retry");
                backoff.wait().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::minute_of;
    use chrono::{DateTime, Utc};

    #[test]
    fn a_minute_is_the_utc_minute_that_holds_the_time() {
        let t: DateTime<Utc> = "2026-12-06T04:05:59.999999Z".parse().unwrap();
        assert_eq!(
            minute_of(t),
            "2026-12-06T04:05:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let before_1970: DateTime<Utc> = "1969-12-31T23:59:30Z".parse().unwrap();
        assert_eq!(
            minute_of(before_1970),
            "1969-12-31T23:59:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let far: DateTime<Utc> = "+262000-01-01T00:00:30Z".parse().unwrap();
        assert_eq!(minute_of(far).timestamp() % 60, 0);
    }
}
