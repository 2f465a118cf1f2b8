//! The telemetry rollup: one row per agency, device, attribute and minute
//! (`telemetry_minutes`, migration 0030), kept apart from ingest.
//!
//! Ingest only marks which devices' minutes a group touched ([`mark`], a few rows a group,
//! plain inserts in the group's transaction). The worker ([`run`]) reads the marks of closed
//! minutes, recomputes those minutes from the raw rows in steps of a few devices (each its
//! own transaction, the steps spread over the minute by [`Pace`]), and deletes the marks it
//! read with the minute's last step (see [`step`]). A minute is then either rolled up from
//! every raw row committed with the marks it read, or still marked, and a series reads a
//! marked minute from the raw rows. Why not in ingest's transaction: an upsert a sample
//! costs ingest 60-80% more database time (docs/BENCHMARKS.md), and ingest is what agencies
//! cannot lose.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use eriop_domain::telemetry::minute_start;
use eriop_nats::backoff::Backoff;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::Row;

mod pace;
pub use pace::Pace;

/// A minute is rolled up once it has been closed this long: most of its samples are
/// committed by then, and the rest (late ones) mark it again.
pub const GRACE: Duration = Duration::from_secs(3);

/// How often the worker looks for marks.
pub const EVERY: Duration = Duration::from_secs(1);

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

/// The marks of the oldest closed minutes (before `$1`, at most `$2` of them), every mark of
/// each, with the transaction that wrote it: a mark is deleted once its minute is rolled up
/// ([`FORGET`]), and only a mark read here (one written since stays, and brings its minute
/// back).
const MARKED: &str = "
SELECT agency_id, minute, device_ids, xmin::text
  FROM telemetry_touched
 WHERE minute IN (SELECT DISTINCT minute FROM telemetry_touched WHERE minute < $1
                   ORDER BY minute LIMIT $2)";

/// Deletes the marks of an agency's minute (`$1`, `$2`) written by the transactions `$3`.
/// Every mark a transaction wrote was read together (a transaction's rows are seen at once,
/// and [`MARKED`] reads every mark of a minute), so this deletes exactly the marks read.
const FORGET: &str = "
DELETE FROM telemetry_touched WHERE agency_id = $1 AND minute = $2 AND xmin::text = ANY ($3)";

/// Rolls up one agency's minute (`$1` agency, `$2` minute start, `$3` its end) for the
/// devices `$4`, from the raw rows, key by key: each attribute a device ever reported is in
/// `device_latest` (written with its rows, [`super::store::rows`]), and each key's minute is
/// one range of the natural key's index. So a step of a few devices reads only their rows;
/// the index by agency and time would read the agency's whole minute at every step.
/// Planned with the values (see [`step`]): only that day's partition.
const ROLL_MINUTE: &str = "
INSERT INTO telemetry_minutes (agency_id, device_id, function_id, attribute, minute, samples,
                               numeric_samples, sum_value, min_value, max_value, last_time, last_value)
SELECT $1::uuid, k.device_id, k.function_id, k.attribute, $2::timestamptz, m.samples,
       m.numeric_samples, m.sum_value, m.min_value, m.max_value, m.last_time,
       -- The latest sample's value, whatever its type (the series' `last`), by its key.
       (SELECT CASE WHEN jsonb_typeof(l.value_json) = 'boolean' THEN l.value_json
                    ELSE coalesce(to_jsonb(l.value_double), to_jsonb(l.value_text), l.value_json) END
          FROM telemetry l
         WHERE l.device_id = k.device_id AND l.function_id = k.function_id
           AND l.attribute = k.attribute AND l.time = m.last_time AND l.agency_id = $1)
  FROM device_latest k
 CROSS JOIN LATERAL
       (SELECT count(*) AS samples, count(t.value_double) AS numeric_samples,
               sum(t.value_double::numeric) AS sum_value,
               min(t.value_double) AS min_value, max(t.value_double) AS max_value,
               max(t.time) AS last_time
          FROM telemetry t
         WHERE t.device_id = k.device_id AND t.function_id = k.function_id
           AND t.attribute = k.attribute AND t.time >= $2 AND t.time < $3
           AND t.agency_id = $1) m
 WHERE k.device_id = ANY ($4) AND m.samples > 0
ON CONFLICT (agency_id, device_id, function_id, attribute, minute) DO UPDATE
   SET samples = excluded.samples, numeric_samples = excluded.numeric_samples,
       sum_value = excluded.sum_value, min_value = excluded.min_value,
       max_value = excluded.max_value, last_time = excluded.last_time,
       last_value = excluded.last_value";

/// Whoever holds this (transaction-scoped) advisory lock rolls up; another projections
/// replica skips its turn. One step at a time, so that a minute rolled up from an older
/// snapshot never overwrites one rolled up from a newer.
pub const LOCK: i64 = 0x6572_696f_705f_726f; // "eriop_ro"

/// Minutes read a round: a backlog (after an outage) is rolled up in bounded rounds.
const MINUTES_A_ROUND: i64 = 10;

/// A round's minutes should be rolled up this long before the next minute is due, so that
/// rounds do not overlap however the steps' costs vary.
const SLACK: Duration = Duration::from_secs(10);

/// An agency's closed minute, the devices marked in it, and the marks read.
#[derive(Debug)]
struct Marked {
    agency: Uuid,
    minute: DateTime<Utc>,
    /// In order, each once.
    devices: Vec<Uuid>,
    /// The transactions that wrote the marks read.
    writers: Vec<String>,
}

async fn marked(pool: &PgPool, closed: DateTime<Utc>) -> Result<Vec<Marked>, sqlx::Error> {
    let mut tx = eriop_nats::db::begin(pool, eriop_nats::db::Scope::All).await?;
    let marks: Vec<(Uuid, DateTime<Utc>, Vec<Uuid>, String)> = sqlx::query_as(MARKED)
        .bind(closed)
        .bind(MINUTES_A_ROUND)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    // By minute, then agency: the oldest first. Each: its devices, and the marks' writers.
    type Devices = BTreeSet<Uuid>;
    type Writers = BTreeSet<String>;
    let mut minutes: BTreeMap<(DateTime<Utc>, Uuid), (Devices, Writers)> = BTreeMap::new();
    for (agency, minute, devices, writer) in marks {
        let (all, writers) = minutes.entry((minute, agency)).or_default();
        all.extend(devices);
        writers.insert(writer);
    }
    Ok(minutes
        .into_iter()
        .map(|((minute, agency), (devices, writers))| Marked {
            agency,
            minute,
            devices: devices.into_iter().collect(),
            writers: writers.into_iter().collect(),
        })
        .collect())
}

/// One step: rolls up `devices` of a marked minute in a transaction and, when they are the
/// minute's `last`, deletes its marks read in the same transaction. None: another replica
/// holds the turn.
///
/// Why it is exact: the marks were read before this step, and the step's statement runs
/// after, so its snapshot holds every row committed with them (and maybe rows committed
/// since, whose own marks stay and bring the minute back). A minute's marks go only with
/// its last step, so until then a series reads the minute from the raw rows, and a process
/// that dies between steps leaves the minute marked, to be rolled up again whole.
async fn step(
    pool: &PgPool,
    marked: &Marked,
    devices: &[Uuid],
    last: bool,
) -> Result<Option<u64>, sqlx::Error> {
    let mut tx = eriop_nats::db::begin(pool, eriop_nats::db::Scope::All).await?;
    let turn: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !turn {
        return Ok(None);
    }
    // Planned with its values: a generic plan would keep every partition. And planned the
    // same way whatever the statistics say: a day's partition is new each day, and until
    // autovacuum analyzes it the planner expects a few rows; it then sorted a minute of
    // saturated ingest on disk (126 MB) and compiled it (JIT, 2.9 s): 8-10 s of a core
    // instead of 2-4, while ingest waited for the core (issue 13, docs/BENCHMARKS.md).
    sqlx::query(
        "SELECT set_config('plan_cache_mode', 'force_custom_plan', true),
                set_config('enable_sort', 'off', true),
                set_config('jit', 'off', true),
                set_config('work_mem', '64MB', true)",
    )
    .execute(&mut *tx)
    .await?;
    let mut written = 0;
    if !devices.is_empty() {
        written = sqlx::query(ROLL_MINUTE)
            .bind(marked.agency)
            .bind(marked.minute)
            .bind(marked.minute + chrono::Duration::seconds(60))
            .bind(devices)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    if last {
        sqlx::query(FORGET)
            .bind(marked.agency)
            .bind(marked.minute)
            .bind(&marked.writers)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Some(written))
}

/// Marks of minutes before this one are rolled up at `now`: minutes that ended at least
/// [`GRACE`] before.
fn closed(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::seconds(60) - grace()
}

/// When the rollup takes `minute` ([`closed`]'s inverse).
fn closed_at(minute: DateTime<Utc>) -> DateTime<Utc> {
    minute + chrono::Duration::seconds(60) + grace()
}

fn grace() -> chrono::Duration {
    chrono::Duration::from_std(GRACE).unwrap_or_default()
}

/// A round: the marked minutes closed at a time (at most [`MINUTES_A_ROUND`]), rolled up
/// step by step ([`Round::step`]). Dropped between steps (a process that dies), it leaves
/// the minute it was in marked, to be rolled up again whole by the next round.
#[derive(Debug)]
pub struct Round {
    minutes: Vec<Marked>,
    /// The minute being rolled up, and how many of its devices are done.
    at: usize,
    done: usize,
}

impl Round {
    /// Reads the marked minutes closed at `now`.
    pub async fn read(pool: &PgPool, now: DateTime<Utc>) -> Result<Self, sqlx::Error> {
        Ok(Self {
            minutes: marked(pool, closed(now)).await?,
            at: 0,
            done: 0,
        })
    }

    /// Whether every minute read is rolled up.
    pub fn is_done(&self) -> bool {
        self.at >= self.minutes.len()
    }

    /// Whether the round read as many minutes as a round takes (more may wait).
    fn full(&self) -> bool {
        self.minutes.len() as i64 >= MINUTES_A_ROUND
    }

    /// When the round should be done: before the minute after its newest is due, less
    /// [`SLACK`].
    fn deadline(&self) -> Option<DateTime<Utc>> {
        let newest = self.minutes.iter().map(|m| m.minute).max()?;
        Some(
            closed_at(newest + chrono::Duration::seconds(60))
                - chrono::Duration::from_std(SLACK).unwrap_or_default(),
        )
    }

    /// The steps left at `pace` (a minute of no device still takes one, for its marks).
    fn steps_left(&self, pace: &Pace) -> usize {
        self.minutes
            .iter()
            .enumerate()
            .skip(self.at)
            .map(|(i, m)| {
                let left = m.devices.len() - if i == self.at { self.done } else { 0 };
                pace.steps(left).max(1)
            })
            .sum()
    }

    /// How many devices the next step takes when asked for `devices`.
    fn next_step(&self, devices: usize) -> usize {
        self.minutes
            .get(self.at)
            .map_or(0, |m| devices.max(1).min(m.devices.len() - self.done))
    }

    /// Rolls up the next (at most) `devices` devices of the current minute, and its marks
    /// with its last: answers the minutes written (one device attribute's each), or None
    /// when another replica holds the turn (nothing done).
    pub async fn step(
        &mut self,
        pool: &PgPool,
        devices: usize,
    ) -> Result<Option<u64>, sqlx::Error> {
        let Some(marked) = self.minutes.get(self.at) else {
            return Ok(Some(0));
        };
        let end = self.done + self.next_step(devices);
        let last = end == marked.devices.len();
        let written = step(pool, marked, &marked.devices[self.done..end], last).await?;
        if written.is_some() {
            if last {
                (self.at, self.done) = (self.at + 1, 0);
            } else {
                self.done = end;
            }
        }
        Ok(written)
    }
}

/// One round at `pace`: rolls up the marked minutes closed at `now`, step by step. Answers
/// the minutes written, and whether the round was full (more may wait); stops early, with
/// what it wrote, when another replica holds the turn.
async fn round(
    pool: &PgPool,
    now: DateTime<Utc>,
    pace: &mut Pace,
) -> Result<(u64, bool), sqlx::Error> {
    let mut round = Round::read(pool, now).await?;
    let deadline = round.deadline();
    let mut written = 0;
    while !round.is_done() {
        let devices = round.next_step(pace.devices());
        let started = std::time::Instant::now();
        match round.step(pool, devices).await? {
            Some(rows) => written += rows,
            None => return Ok((written, false)),
        }
        let time_left = deadline
            .and_then(|d| (d - Utc::now()).to_std().ok())
            .unwrap_or_default();
        let pause = pace.after(
            devices,
            started.elapsed(),
            round.steps_left(pace),
            time_left,
        );
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok((written, round.full()))
}

/// Rolls up every minute marked and closed at `now` (less [`GRACE`]), as fast as it can.
/// Answers the minutes written; 0 also when another replica holds the turn.
pub async fn roll(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let mut pace = Pace::flat_out();
    let mut written = 0;
    loop {
        let (rows, full) = round(pool, now, &mut pace).await?;
        written += rows;
        if !full {
            return Ok(written);
        }
    }
}

/// Rolls up every [`EVERY`], from start-up, at a [`Pace`] spread over the minute; a failure
/// (a database away) is retried with backoff and never stops the service. Marks wait
/// meanwhile, and series read their minutes from the raw rows.
pub async fn run(pool: PgPool, minutes: prometheus_client::metrics::counter::Counter) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut pace = Pace::spread();
    loop {
        tick.tick().await;
        match round(&pool, Utc::now(), &mut pace).await {
            Ok((written, _)) => {
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
