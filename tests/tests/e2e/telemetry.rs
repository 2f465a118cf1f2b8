//! The telemetry query: the right buckets on plain PostgreSQL and on TimescaleDB, and never
//! another agency's data.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use eriop_domain::device::talq;
use eriop_gateway::telemetry::{series_sql, Agg};
use eriop_nats::traffic::TelemetryBatch;
use eriop_projections::telemetry::store::{self, Insert};
use eriop_projections::telemetry::{rollup, Row};
use eriop_tests::{wait, TestApp, TestDb};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use uuid::Uuid;

const BUCKET_SECS: i64 = 300;

/// 30 samples, 40 s apart, values 0..30 with a twist so min/max/last differ from the order.
fn samples(start: DateTime<Utc>) -> Vec<(DateTime<Utc>, f64)> {
    (0..30)
        .map(|i: i64| {
            (
                start + chrono::Duration::seconds(40 * i),
                ((i * 7) % 30) as f64,
            )
        })
        .collect()
}

/// What a bucketed series must be, computed from the samples (origin 2000-01-03, the
/// query's): (bucket start, value, samples).
fn expected(samples: &[(DateTime<Utc>, f64)], agg: Agg) -> Vec<(DateTime<Utc>, f64, i64)> {
    let origin = Utc.with_ymd_and_hms(2000, 1, 3, 0, 0, 0).unwrap();
    let mut buckets: std::collections::BTreeMap<DateTime<Utc>, Vec<(DateTime<Utc>, f64)>> =
        Default::default();
    for (t, v) in samples {
        let offset = (*t - origin).num_seconds().div_euclid(BUCKET_SECS) * BUCKET_SECS;
        buckets
            .entry(origin + chrono::Duration::seconds(offset))
            .or_default()
            .push((*t, *v));
    }
    buckets
        .into_iter()
        .map(|(start, values)| {
            let vs: Vec<f64> = values.iter().map(|(_, v)| *v).collect();
            let value = match agg {
                Agg::Avg => vs.iter().sum::<f64>() / vs.len() as f64,
                Agg::Min => vs.iter().copied().fold(f64::INFINITY, f64::min),
                Agg::Max => vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                Agg::Last => values.iter().max_by_key(|(t, _)| *t).unwrap().1,
            };
            (start, value, values.len() as i64)
        })
        .collect()
}

fn assert_series(
    seen: &[(DateTime<Utc>, f64, i64)],
    expected: &[(DateTime<Utc>, f64, i64)],
    what: &str,
) {
    assert_eq!(seen.len(), expected.len(), "{what}: {seen:?}");
    for (s, e) in seen.iter().zip(expected) {
        assert_eq!((s.0, s.2), (e.0, e.2), "{what}");
        assert!((s.1 - e.1).abs() < 1e-9, "{what}: {} vs {}", s.1, e.1);
    }
}

#[allow(clippy::too_many_arguments)]
async fn query(
    pool: &PgPool,
    timescale: bool,
    agg: Agg,
    exact: bool,
    agency: Uuid,
    device: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, f64, i64)> {
    let key = (agency, device, "activePower");
    let sql = series_sql(timescale, agg, exact);
    numbers(series_rows(pool, &sql, BUCKET_SECS, key, (from, to), None).await)
}

/// A series' points as numbers (each value a number).
fn numbers(rows: Vec<(DateTime<Utc>, Option<Value>, i64)>) -> Vec<(DateTime<Utc>, f64, i64)> {
    rows.into_iter()
        .map(|(b, v, n)| (b, v.and_then(|v| v.as_f64()).unwrap(), n))
        .collect()
}

async fn insert(pool: &PgPool, agency: Uuid, device: Uuid, samples: &[(DateTime<Utc>, f64)]) {
    let rows: Vec<Row> = samples
        .iter()
        .map(|(t, v)| row(agency, device, "activePower", *t, Some(*v), None, None))
        .collect();
    insert_and_mark(pool, &rows).await;
}

fn row(
    agency: Uuid,
    device: Uuid,
    attribute: &str,
    time: DateTime<Utc>,
    value_double: Option<f64>,
    value_text: Option<&str>,
    value_json: Option<Value>,
) -> Row {
    Row {
        time,
        agency_id: agency,
        device_id: device,
        function_id: "lampMonitor001".into(),
        attribute: attribute.into(),
        value_double,
        value_text: value_text.map(str::to_owned),
        value_json,
    }
}

/// Rows stored as SQL written by hand must store them (README, "Telemetry rollup"): the
/// rows, the rollup's marks of the minutes they touched, and each attribute's key in
/// `device_latest`, in one transaction. Row by row:
/// the TimescaleDB served for tests does not take COPY.
async fn insert_and_mark(pool: &PgPool, rows: &[Row]) {
    let mut tx = pool.begin().await.unwrap();
    for r in rows {
        sqlx::query(
            "INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute,
                                    value_double, value_text, value_json)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(r.time)
        .bind(r.agency_id)
        .bind(r.device_id)
        .bind(&r.function_id)
        .bind(&r.attribute)
        .bind(r.value_double)
        .bind(&r.value_text)
        .bind(&r.value_json)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    rollup::mark(&mut tx, &rows.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    // Each attribute's key, as `store::rows` writes it with the latest value: the rollup
    // finds a device's attributes there.
    for r in rows {
        sqlx::query(
            "INSERT INTO device_latest (device_id, function_id, attribute, agency_id, time)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(r.device_id)
        .bind(&r.function_id)
        .bind(&r.attribute)
        .bind(r.agency_id)
        .bind(r.time)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

/// Rows stored as the projector stores a group (`store::rows`): the rows, the rollup's marks,
/// the latest values, in one transaction.
async fn store(pool: &PgPool, rows: &[Row]) {
    store_as(pool, rows, Insert::New).await;
}

async fn store_as(pool: &PgPool, rows: &[Row], insert: Insert) {
    let mut tx = eriop_projections::begin_all_agencies(pool).await.unwrap();
    let way = store::way_in(&mut tx).await.unwrap();
    store::rows(&mut tx, rows, insert, &way).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn telemetry_buckets_are_the_same_on_postgresql_and_timescaledb() {
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 10, 2, 30).unwrap();
    let data = samples(start);
    let (from, to) = (
        start - chrono::Duration::hours(1),
        start + chrono::Duration::hours(1),
    );
    let (agency, other, device) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    let pg = TestDb::migrated().await;
    insert(&pg.pool, agency, device, &data).await;
    // Another agency's row under the same device id: never in this agency's series.
    insert(
        &pg.pool,
        other,
        device,
        &[(start + chrono::Duration::seconds(1), 1e6)],
    )
    .await;

    let timescale = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move { conn.execute("DEALLOCATE ALL").await.map(drop) })
        })
        .connect(&crate::migrations::timescale_url())
        .await
        .expect("TimescaleDB on loopback (../shared/timescaledb/start.sh) answers");
    eriop_migrations::down(&timescale, 0).await.unwrap();
    eriop_migrations::up(&timescale).await.unwrap();
    insert(&timescale, agency, device, &data).await;
    insert(
        &timescale,
        other,
        device,
        &[(start + chrono::Duration::seconds(1), 1e6)],
    )
    .await;

    // Each aggregate, and each also as answered when a float8 average overflowed (exact).
    for (agg, exact) in Agg::ALL.into_iter().flat_map(|a| [(a, false), (a, true)]) {
        let want = expected(&data, agg);
        assert_series(
            &query(&pg.pool, false, agg, exact, agency, device, from, to).await,
            &want,
            &format!("PostgreSQL {agg:?} exact={exact}"),
        );
        assert_series(
            &query(&timescale, true, agg, exact, agency, device, from, to).await,
            &want,
            &format!("TimescaleDB {agg:?} exact={exact}"),
        );
    }
    // Through the rollup: first with every minute still marked (read raw), then rolled up.
    let now = start + chrono::Duration::days(1);
    for rolled_up in [false, true] {
        if rolled_up {
            for pool in [&pg.pool, &timescale] {
                assert!(rollup::roll(pool, now).await.unwrap() > 0);
            }
        }
        for agg in Agg::ALL {
            let want = expected(&data, agg);
            for (pool, timescale, name) in [
                (&pg.pool, false, "PostgreSQL"),
                (&timescale, true, "TimescaleDB"),
            ] {
                let what = format!("{name} {agg:?} through the rollup (rolled up: {rolled_up})");
                let (start, end) = eriop_gateway::telemetry::rollup::split(from, to, now);
                let seen = query_rolled(
                    pool,
                    timescale,
                    agg,
                    agency,
                    device,
                    (from, to),
                    (start, end),
                )
                .await;
                assert_series(&seen, &want, &what);
            }
        }
    }
    eriop_migrations::down(&timescale, 0).await.unwrap();
}

/// The series through the rollup ([`eriop_gateway::telemetry::rollup::series_sql`]).
async fn query_rolled(
    pool: &PgPool,
    timescale: bool,
    agg: Agg,
    agency: Uuid,
    device: Uuid,
    range: (DateTime<Utc>, DateTime<Utc>),
    cut: (DateTime<Utc>, DateTime<Utc>),
) -> Vec<(DateTime<Utc>, f64, i64)> {
    let key = (agency, device, "activePower");
    let sql = eriop_gateway::telemetry::rollup::series_sql(timescale, agg);
    numbers(series_rows(pool, &sql, BUCKET_SECS, key, range, Some(cut)).await)
}

/// A small deterministic generator (xorshift64*): the same samples on every run.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A sample of any kind (numbers, huge ones, texts, booleans, JSON, none) on one of two
/// attributes.
fn any_sample(rng: &mut Xorshift, agency: Uuid, device: Uuid, at: DateTime<Utc>) -> Row {
    let attribute = ["activePower", "lampOn"][rng.below(2) as usize];
    match rng.below(8) {
        0 => row(agency, device, attribute, at, None, Some("=text"), None),
        kind @ (1 | 2) => {
            let value = if kind == 1 {
                json!(rng.below(2) == 0)
            } else {
                json!({"k": rng.below(9)})
            };
            row(agency, device, attribute, at, None, None, Some(value))
        }
        3 => row(agency, device, attribute, at, Some(1.7e308), None, None),
        4 => row(agency, device, attribute, at, None, None, None),
        _ => {
            let v = (rng.below(2_000_001) as f64 - 1_000_000.0) / 1_000.0;
            row(agency, device, attribute, at, Some(v), None, None)
        }
    }
}

/// The rollup answers what the raw samples answer. Samples of every kind, at random times
/// over six hours, beside another agency's under the same device id, stored as ingest
/// stores them: sparse ones and bursts of a sample a second. Then part of them rolled up;
/// then late samples, a burst over rolled-up and open minutes, and a redelivery (written
/// skipping stored keys, as the projector does after a conflict). Every aggregate, bucket sizes of 1 min to 1 day, ranges cut
/// anywhere, before and after each roll: the series through the rollup is the series of the
/// raw rows (the exact one, whose average is over numeric as the rollup's is).
#[tokio::test]
async fn a_series_through_the_rollup_is_the_series_of_its_raw_samples() {
    let db = TestDb::migrated().await;
    let (agency, other, device) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap();
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let at = |micros: i64| start + chrono::Duration::microseconds(micros);
    const HOUR: i64 = 3_600_000_000;
    // Distinct times (the natural key), at the microsecond: sparse ones anywhere, and the
    // bursts' (a sample a second, off the whole second) where no sparse one is.
    let mut times: Vec<i64> = (0..600)
        .map(|_| rng.below(6 * HOUR as u64) as i64)
        .collect();
    times.sort_unstable();
    times.dedup();
    let sparse: std::collections::HashSet<i64> = times.iter().copied().collect();
    let burst = |rng: &mut Xorshift, from: i64, minutes: i64| -> Vec<Row> {
        let times: Vec<i64> = (0..minutes * 60)
            .map(|s| from + s * 1_000_000 + 1 + rng.below(999_998) as i64)
            .filter(|t| !sparse.contains(t))
            .collect();
        times
            .into_iter()
            .map(|t| {
                let owner = if rng.below(10) == 0 { other } else { agency };
                any_sample(rng, owner, device, at(t))
            })
            .collect()
    };
    let (first, late): (Vec<i64>, Vec<i64>) =
        times.iter().copied().partition(|_| rng.below(5) != 0);
    let rows: Vec<Row> = first
        .iter()
        .map(|t| {
            let owner = if rng.below(10) == 0 { other } else { agency };
            any_sample(&mut rng, owner, device, at(*t))
        })
        .collect();
    store(&db.pool, &rows).await;
    // A burst from 1:00 to 1:20, in groups of five minutes.
    for group in 0..4 {
        store(&db.pool, &burst(&mut rng, HOUR + group * 300_000_000, 5)).await;
    }
    assert!(db.count("SELECT count(*) FROM telemetry_touched").await > 0);
    let mut compared = compare_with_raw(&db.pool, (agency, device), start, &mut rng).await;

    // The first four hours rolled up; the rest still marked.
    let rolled = rollup::roll(&db.pool, start + chrono::Duration::hours(4))
        .await
        .unwrap();
    assert!(rolled > 0);
    compared += compare_with_raw(&db.pool, (agency, device), start, &mut rng).await;

    // Late samples into rolled-up minutes; a burst from 3:50 to 4:10 (over rolled-up minutes
    // and open ones); a redelivery of part of it with new samples beside (written skipping
    // stored keys, as the projector does after a conflict).
    let late: Vec<Row> = late
        .iter()
        .map(|t| any_sample(&mut rng, agency, device, at(*t)))
        .collect();
    store(&db.pool, &late).await;
    let second = burst(&mut rng, 4 * HOUR - 600_000_000, 20);
    store(&db.pool, &second).await;
    let mut again: Vec<Row> = second.iter().step_by(3).cloned().collect();
    again.extend(burst(&mut rng, 4 * HOUR - 300_000_000, 1));
    let mut tx = eriop_projections::begin_all_agencies(&db.pool)
        .await
        .unwrap();
    let way = store::way_in(&mut tx).await.unwrap();
    assert!(
        store::rows(&mut tx, &again, Insert::New, &way)
            .await
            .is_err(),
        "a plain insert of stored keys fails (and the projector writes the group again)"
    );
    drop(tx);
    store_as(&db.pool, &again, Insert::SkippingStored).await;
    assert!(db.count("SELECT count(*) FROM telemetry_touched").await > 0);
    compared += compare_with_raw(&db.pool, (agency, device), start, &mut rng).await;
    for hours in [4, 7] {
        rollup::roll(
            &db.pool,
            start + chrono::Duration::hours(hours) + chrono::Duration::minutes(5),
        )
        .await
        .unwrap();
        compared += compare_with_raw(&db.pool, (agency, device), start, &mut rng).await;
    }
    assert_eq!(
        db.count("SELECT count(*) FROM telemetry_touched").await,
        0,
        "everything rolled up"
    );
    assert!(
        compared > 2_500,
        "the ranges held data: {compared} buckets compared"
    );
}

/// Random ranges, bucket sizes and "now"s: every aggregate of each attribute through the
/// rollup equals the raw series. Answers the buckets compared.
async fn compare_with_raw(
    pool: &PgPool,
    (agency, device): (Uuid, Uuid),
    start: DateTime<Utc>,
    rng: &mut Xorshift,
) -> usize {
    let at = |micros: i64| start + chrono::Duration::microseconds(micros);
    let mut compared = 0;
    for round in 0..60 {
        let bucket = [60, 120, 300, 900, 3_600, 86_400][round % 6];
        let from = at(rng.below(5 * 3_600_000_000) as i64 - 1_800_000_000);
        let to = from + chrono::Duration::seconds(rng.below(5 * 3_600) as i64 + 1);
        // "Now" anywhere from the data's start to after its end: the recent end read raw.
        let now = start + chrono::Duration::seconds(rng.below(8 * 3_600) as i64);
        let (cut_start, cut_end) = eriop_gateway::telemetry::rollup::split(from, to, now);
        for attribute in ["activePower", "lampOn"] {
            for agg in Agg::ALL {
                let through_rollup = series_rows(
                    pool,
                    &eriop_gateway::telemetry::rollup::series_sql(false, agg),
                    bucket,
                    (agency, device, attribute),
                    (from, to),
                    Some((cut_start, cut_end)),
                )
                .await;
                let raw = series_rows(
                    pool,
                    &series_sql(false, agg, true),
                    bucket,
                    (agency, device, attribute),
                    (from, to),
                    None,
                )
                .await;
                assert_eq!(
                    through_rollup.len(),
                    raw.len(),
                    "{agg:?} {bucket}s {from}..{to} now {now}"
                );
                for (r, w) in through_rollup.iter().zip(&raw) {
                    assert_eq!((r.0, r.2), (w.0, w.2), "{agg:?} {bucket}s {from}..{to}");
                    match (&r.1, &w.1) {
                        (Some(Value::Number(a)), Some(Value::Number(b))) => {
                            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                            assert!(
                                (a - b).abs() <= 1e-12 * a.abs().max(b.abs()),
                                "{agg:?}: {a} vs {b}"
                            );
                        }
                        (a, b) => assert_eq!(a, b, "{agg:?} {bucket}s {from}..{to}"),
                    }
                    compared += 1;
                }
            }
        }
    }
    compared
}

/// The worker rolls a busy minute up in steps of a few devices, each its own transaction.
/// Here steps of one device: until a minute's last step its marks stay (a series reads it
/// from the raw rows, whatever is rolled up already), and a round dropped between steps (a
/// process that dies) leaves the minute whole to the next round, late samples included.
/// Whatever the steps, the rollup holds each device attribute's minute as the raw rows
/// aggregate it.
#[tokio::test]
async fn a_minute_rolled_up_in_steps_stays_marked_until_its_last_step_and_survives_a_death() {
    let db = TestDb::migrated().await;
    let agency = Uuid::new_v4();
    let mut devices: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    devices.sort();
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap();
    let mut rng = Xorshift(0x5DEE_CE66_D1CE_4E5B);
    // Two minutes of samples from each device, at distinct times.
    let mut rows = Vec::new();
    for (d, device) in devices.iter().enumerate() {
        for i in 0..40_i64 {
            let at = start + chrono::Duration::milliseconds(3_000 * i + 7 * d as i64);
            rows.push(any_sample(&mut rng, agency, *device, at));
        }
    }
    store(&db.pool, &rows).await;
    let now = start + chrono::Duration::minutes(10);
    let marks = "SELECT count(*) FROM telemetry_touched";
    let rolled = "SELECT count(*) FROM telemetry_minutes";

    let mut round = rollup::Round::read(&db.pool, now).await.unwrap();
    let first = round
        .step(&db.pool, 1)
        .await
        .unwrap()
        .expect("the turn is free");
    assert!(
        first > 0,
        "the first device's attributes of the first minute"
    );
    assert_eq!(db.count(rolled).await, first as i64);
    assert!(
        db.count(marks).await > 0,
        "marks stay until the minute's last step"
    );
    for device in &devices {
        assert!(compare_with_raw(&db.pool, (agency, *device), start, &mut rng).await > 0);
    }
    // The process dies here; meanwhile a late sample into the minute being rolled up.
    drop(round);
    let late = any_sample(
        &mut rng,
        agency,
        devices[0],
        start + chrono::Duration::milliseconds(1),
    );
    store(&db.pool, std::slice::from_ref(&late)).await;

    // The next round, in steps of one device too, to its end.
    let mut round = rollup::Round::read(&db.pool, now).await.unwrap();
    let mut steps = 0;
    while !round.is_done() {
        round
            .step(&db.pool, 1)
            .await
            .unwrap()
            .expect("the turn is free");
        steps += 1;
    }
    assert!(
        steps >= 2 * devices.len(),
        "a step a device a minute: {steps}"
    );
    assert_eq!(
        db.count(marks).await,
        0,
        "every mark read went with its minute"
    );
    for device in &devices {
        assert!(compare_with_raw(&db.pool, (agency, *device), start, &mut rng).await > 0);
    }
    // Each device attribute's minute, as the raw rows aggregate it.
    let differing = db
        .count(
            "SELECT count(*) FROM (
                 (SELECT device_id, function_id, attribute, date_trunc('minute', time), count(*),
                         count(value_double), min(value_double), max(value_double), max(time)
                    FROM telemetry GROUP BY 1, 2, 3, 4
                  EXCEPT
                  SELECT device_id, function_id, attribute, minute, samples, numeric_samples,
                         min_value, max_value, last_time FROM telemetry_minutes)
                 UNION ALL
                 (SELECT device_id, function_id, attribute, minute, samples, numeric_samples,
                         min_value, max_value, last_time FROM telemetry_minutes
                  EXCEPT
                  SELECT device_id, function_id, attribute, date_trunc('minute', time), count(*),
                         count(value_double), min(value_double), max(value_double), max(time)
                    FROM telemetry GROUP BY 1, 2, 3, 4)) d",
        )
        .await;
    assert_eq!(differing, 0);
    assert!(db.count(rolled).await >= 2 * devices.len() as i64);
}

/// (bucket, value, samples) of a series query, either kind.
async fn series_rows(
    pool: &PgPool,
    sql: &str,
    bucket: i64,
    (agency, device, attribute): (Uuid, Uuid, &str),
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    cut: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Vec<(DateTime<Utc>, Option<Value>, i64)> {
    let mut query = sqlx::query_as(sql)
        .bind(bucket as f64)
        .bind(agency.to_string())
        .bind(device)
        .bind("lampMonitor001")
        .bind(attribute)
        .bind(from)
        .bind(to);
    if let Some((start, end)) = cut {
        query = query.bind(start).bind(end);
    }
    query.fetch_all(pool).await.unwrap()
}

/// A light's `activePower` samples as TALQ records.
fn active_power(device_id: Uuid, samples: &[(DateTime<Utc>, f64)]) -> Vec<talq::AttributeLogData> {
    samples
        .iter()
        .map(|(t, v)| {
            let value = talq::typed_value(
                talq::attribute_type("LampMonitorFunction", "activePower"),
                &json!(v),
            );
            talq::attribute_log_data(
                device_id,
                "lampMonitor001",
                "activePower",
                &value,
                &t.to_rfc3339(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_telemetry_api_answers_buckets_and_export_for_the_agency_only() {
    // Each series is compared with what is stored at that moment: no answer kept from a
    // moment ago (`ERIOP_READ_CACHE_MS`, README "Performance").
    let app = TestApp::spawn_with(TestDb::migrated().await, |s| s.read_cache_ms = 0).await;
    let (device_id, agency) = registered_device(&app).await;

    // Through the real path: a TELEMETRY batch of TALQ records, projected into the table.
    let start = Utc::now() - chrono::Duration::hours(2);
    let data = samples(start);
    publish(&app, agency, active_power(device_id, &data)).await;
    wait::until_eq("the samples", Duration::from_secs(30), 30, || {
        app.db
            .count("SELECT count(*) FROM telemetry WHERE attribute = 'activePower'")
    })
    .await;
    // A row of another agency under this device id (as a faulty writer could leave).
    sqlx::query("INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double) VALUES ($1, $2, $3, 'lampMonitor001', 'activePower', 1e6)")
        .bind(start + chrono::Duration::seconds(1)).bind(Uuid::new_v4()).bind(device_id).execute(&app.db.pool).await.unwrap();

    let (from, to) = (
        (start - chrono::Duration::hours(1)).to_rfc3339(),
        (start + chrono::Duration::hours(1)).to_rfc3339(),
    );
    // Rolled up (the samples are two hours old: their minutes closed long ago), then a
    // late sample into a rolled-up minute: in the series at once (its minute marked, so read
    // raw), and still once rolled up again. Then a burst into another: 30 samples of two
    // minutes in one message, as a device's buffer after a power cut arrives.
    let mut data = data;
    for phase in ["rolled up", "late", "burst"] {
        if phase == "burst" {
            let burst: Vec<(DateTime<Utc>, f64)> = (0..30)
                .map(|i| {
                    (
                        start + chrono::Duration::milliseconds(300_250 + 1_500 * i),
                        (i * 13 % 7) as f64,
                    )
                })
                .collect();
            publish(&app, agency, active_power(device_id, &burst)).await;
            data.extend(burst);
            let stored = format!("SELECT count(*) FROM telemetry WHERE agency_id = '{agency}'");
            wait::until_eq(
                "the burst",
                Duration::from_secs(30),
                data.len() as i64,
                || app.db.count(&stored),
            )
            .await;
            assert_api_series(&app, device_id, &data, &from, &to).await;
        }
        if phase == "late" {
            let at = start + chrono::Duration::seconds(41);
            publish(&app, agency, active_power(device_id, &[(at, 1000.0)])).await;
            let stored = format!("SELECT count(*) FROM telemetry WHERE value_double = 1000 AND device_id = '{device_id}'");
            wait::until_eq("the late sample", Duration::from_secs(30), 1, || {
                app.db.count(&stored)
            })
            .await;
            data.push((at, 1000.0));
            assert_api_series(&app, device_id, &data, &from, &to).await;
        }
        let marks = format!("SELECT count(*) FROM telemetry_touched WHERE agency_id = '{agency}'");
        wait::until_eq("the rollup", Duration::from_secs(30), 0, || {
            app.db.count(&marks)
        })
        .await;
        assert_eq!(
            app.db.count(&format!("SELECT sum(samples)::bigint FROM telemetry_minutes WHERE device_id = '{device_id}'")).await,
            data.len() as i64
        );
        assert_api_series(&app, device_id, &data, &from, &to).await;
    }
    let csv = app
        .http
        .get(app.api(&format!("/devices/{device_id}/telemetry/export")))
        .query(&[("from", &from), ("to", &to)])
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + data.len(),
        "header and this agency's {} samples",
        data.len()
    );
    assert!(!csv.contains("1000000"));

    // A device-chosen text is a cell, never a formula for whoever opens the export.
    sqlx::query("INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_text) VALUES ($1, $2, $3, '', 'note', '=HYPERLINK(\"http://evil.example\",\"x\")')")
        .bind(start + chrono::Duration::seconds(2)).bind(agency).bind(device_id).execute(&app.db.pool).await.unwrap();
    let csv = app
        .http
        .get(app.api(&format!("/devices/{device_id}/telemetry/export")))
        .query(&[("from", &from), ("to", &to)])
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = csv.lines().find(|l| l.contains("HYPERLINK")).unwrap();
    assert!(line.contains(",\"'=HYPERLINK("), "{line}");

    // Too many points: a clear 422, not a huge answer.
    let response = app
        .http
        .get(app.api(&format!("/devices/{device_id}/telemetry")))
        .query(&[
            ("attribute", "lampMonitor001.activePower"),
            ("from", "2020-01-01T00:00:00Z"),
            ("to", "2026-01-01T00:00:00Z"),
            ("bucket", "1m"),
        ])
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);

    // Another agency's administrator: the device does not exist for them.
    let (_, token_b) = app.admin_of_new_agency("Agency B", "admin@b.example").await;
    let token_b = token_b.as_str();
    for path in ["telemetry?attribute=lampMonitor001.activePower&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&bucket=1h", "telemetry/export?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"] {
        let r = app.get_as(token_b, &format!("/devices/{device_id}/{path}")).await;
        assert_eq!(r.status(), 404, "{path}");
    }
}

/// A sample repeated within a batch is stored once (the first value, also the latest value
/// shown), and a batch delivered
/// again beside a new sample stores the new one: the projector's plain insert meets the
/// stored key, and the group is written again skipping it. Nothing is dead-lettered and
/// nothing stays unacked.
#[tokio::test]
async fn repeated_and_redelivered_samples_are_stored_once_and_new_ones_beside_them_too() {
    let (captured, _guard) = eriop_tests::capture::Captured::start("info");
    let app = TestApp::spawn().await;
    let agency = class_agency(&app).await;
    let device = Uuid::new_v4();
    let start = Utc::now() - chrono::Duration::hours(1);
    let record = |second: i64, value: f64| {
        let typed = talq::typed_value(
            talq::attribute_type("LampMonitorFunction", "activePower"),
            &json!(value),
        );
        let time = (start + chrono::Duration::seconds(second)).to_rfc3339();
        talq::attribute_log_data(device, "lampMonitor001", "activePower", &typed, &time)
    };
    let js = app.jetstream().await;
    let stored = || stored_values(&app, device);
    for (records, expected, latest) in [
        // Second 1 twice in one batch: the first value is kept, in the history and as the
        // latest value.
        (
            vec![record(0, 1.0), record(1, 2.0), record(1, 3.0)],
            vec![1.0, 2.0],
            2.0,
        ),
        // Second 1 again (a redelivery), beside a new second 2.
        (
            vec![record(1, 2.0), record(2, 4.0)],
            vec![1.0, 2.0, 4.0],
            4.0,
        ),
    ] {
        publish(&app, agency, records).await;
        wait::until_eq(
            "the stored samples",
            Duration::from_secs(30),
            expected,
            stored,
        )
        .await;
        let shown: f64 =
            sqlx::query_scalar("SELECT value_double FROM device_latest WHERE device_id = $1")
                .bind(device)
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        assert_eq!(shown, latest, "the latest value is the history's last");
    }
    let rewritten = captured
        .lines_of("eriop_projections::telemetry::consumer")
        .into_iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("written again skipping them"))
        })
        .count();
    assert_eq!(rewritten, 1, "only the redelivered group met a stored key");
    // On plain PostgreSQL the projector copies new rows in as the telemetry writer.
    let ways: Vec<String> = captured
        .lines_of("eriop_projections::telemetry::consumer")
        .into_iter()
        .filter(|l| l["message"] == "how new telemetry rows are written")
        .map(|l| l["way"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        !ways.is_empty() && ways.iter().all(|w| w.starts_with("CopyAsWriter")),
        "{ways:?}"
    );
    assert!(app.dead_letter_reasons().await.is_empty());
    let stream = js
        .get_stream(app.topology.stream_name(eriop_nats::Stream::Telemetry))
        .await
        .unwrap();
    wait::until_eq(
        "every message acked",
        Duration::from_secs(30),
        (0, 0),
        || async {
            let info = stream
                .consumer_info(eriop_projections::telemetry::NAME)
                .await
                .unwrap();
            (info.num_pending, info.num_ack_pending)
        },
    )
    .await;
}

/// New rows go in by `COPY` as `eriop_telemetry_writer` on plain PostgreSQL (whose
/// `telemetry` is under row-level security), and through the staging table where that role
/// is missing or may not insert; either way a stored key fails the plain insert, and the
/// group goes in skipping it. The writer can read nothing, and the services' role still
/// cannot `COPY` past the policies.
#[tokio::test]
async fn new_rows_are_copied_in_by_a_writer_that_reads_nothing_or_staged_without_it() {
    let db = TestDb::migrated().await;
    // As the services connect (docker-compose.yml): a login role that is neither superuser
    // nor the owner, a member of eriop_app, acting as eriop_app.
    let login = format!("eriop_test_login_{}", Uuid::new_v4().simple());
    db.pool
        .execute(
            format!("CREATE ROLE {login} LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE eriop_app").as_str(),
        )
        .await
        .unwrap();
    let app_pool = eriop_nats::db::act_as(PgPoolOptions::new().max_connections(2), "eriop_app")
        .connect_with(
            db.url
                .parse::<sqlx::postgres::PgConnectOptions>()
                .unwrap()
                .username(&login),
        )
        .await
        .unwrap();
    let agency = Uuid::new_v4();
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
    let rows_of = |device: Uuid, seconds: std::ops::Range<i64>| -> Vec<Row> {
        seconds
            .map(|s| {
                let time = at + chrono::Duration::seconds(s);
                row(
                    agency,
                    device,
                    "activePower",
                    time,
                    Some(s as f64),
                    None,
                    None,
                )
            })
            .collect()
    };
    let way_of = |pool: PgPool| async move {
        let mut tx = eriop_projections::begin_all_agencies(&pool).await.unwrap();
        store::way_in(&mut tx).await.unwrap()
    };
    let copied = way_of(app_pool.clone()).await;
    assert_eq!(
        copied,
        store::WayIn::CopyAsWriter {
            back: "eriop_app".to_owned()
        }
    );
    for (n, way) in [copied, store::WayIn::Staged].into_iter().enumerate() {
        let device = Uuid::new_v4();
        let write = |rows: Vec<Row>, insert: Insert| {
            let (pool, way) = (app_pool.clone(), way.clone());
            async move {
                let mut tx = eriop_projections::begin_all_agencies(&pool).await.unwrap();
                let written = store::rows(&mut tx, &rows, insert, &way).await?;
                // Back to the services' role for the rest of the transaction.
                let role: String = sqlx::query_scalar("SELECT current_user::text")
                    .fetch_one(&mut *tx)
                    .await?;
                assert_eq!(role, "eriop_app", "{way:?}");
                tx.commit().await?;
                Ok::<u64, eriop_projections::consumer::ConsumerError>(written)
            }
        };
        assert_eq!(
            write(rows_of(device, 0..10), Insert::New).await.unwrap(),
            10
        );
        let refused = write(rows_of(device, 5..15), Insert::New).await;
        assert!(
            matches!(&refused, Err(eriop_projections::consumer::ConsumerError::Database(sqlx::Error::Database(e))) if e.code().as_deref() == Some("23505")),
            "way {n}: {refused:?}"
        );
        assert_eq!(
            write(rows_of(device, 5..15), Insert::SkippingStored)
                .await
                .unwrap(),
            5
        );
        let stored: Vec<f64> = sqlx::query_scalar(
            "SELECT value_double FROM telemetry WHERE device_id = $1 ORDER BY time",
        )
        .bind(device)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            stored,
            (0..15).map(|s| s as f64).collect::<Vec<_>>(),
            "way {n}"
        );
    }
    // The writer reads nothing, not even through the table's parent.
    let mut conn = app_pool.acquire().await.unwrap();
    conn.execute(format!("SET ROLE {}", store::WRITER).as_str())
        .await
        .unwrap();
    let read = conn.execute("SELECT count(*) FROM telemetry").await;
    assert!(
        matches!(&read, Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501")),
        "{read:?}"
    );
    conn.execute("SET ROLE eriop_app").await.unwrap();
    // The services' role is still bound by the policies: no COPY past them.
    let copy = conn
        .execute("BEGIN; SELECT set_config('eriop.all_agencies', 'on', true); COPY telemetry (time) FROM STDIN")
        .await;
    assert!(
        matches!(&copy, Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("0A000")),
        "{copy:?}"
    );
    conn.execute("ROLLBACK").await.unwrap();
    drop(conn);
    // Without the writer's grant the staging table is the way, found again.
    sqlx::query(&format!(
        "REVOKE INSERT ON telemetry FROM {}",
        store::WRITER
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(way_of(app_pool.clone()).await, store::WayIn::Staged);
    app_pool.close().await;
    db.pool
        .execute(format!("DROP ROLE {login}").as_str())
        .await
        .unwrap();
}

/// A device's hostile values (near float8's largest, twice in a bucket) overflow a float8
/// average's sum: the series is still answered, averaged exactly, never a 500.
#[tokio::test]
async fn a_series_of_values_near_the_largest_float_is_averaged_not_a_server_error() {
    let app = TestApp::spawn().await;
    let (device, agency) = registered_device(&app).await;
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
    insert(
        &app.db.pool,
        agency,
        device,
        &[
            (start, 1.7e308),
            (start + chrono::Duration::seconds(10), 1.7e308),
        ],
    )
    .await;
    let series = |agg: Agg, bucket: &'static str| {
        app.http
            .get(app.api(&format!("/devices/{device}/telemetry")))
            .query(&[
                ("attribute", "lampMonitor001.activePower"),
                ("from", "2026-03-01T09:00:00Z"),
                ("to", "2026-03-01T11:00:00Z"),
                ("bucket", bucket),
                ("agg", agg.name()),
            ])
            .bearer_auth(&app.token)
            .send()
    };
    // Whole minutes (through the rollup, its sums exact) and 30 s (the raw samples, whose
    // float8 average overflows and is taken again over numeric).
    for (agg, bucket) in [Agg::Avg, Agg::Max]
        .into_iter()
        .flat_map(|agg| [(agg, "1h"), (agg, "30s")])
    {
        let response = series(agg, bucket).await.unwrap();
        assert_eq!(response.status(), 200, "{agg:?} {bucket}");
        let body: Value = response.json().await.unwrap();
        let points = body["points"].as_array().unwrap();
        assert_eq!(points.len(), 1, "{agg:?}: {body}");
        assert_eq!(points[0]["samples"], 2);
        let value = points[0]["value"].as_f64().unwrap();
        assert!((value / 1.7e308 - 1.0).abs() < 1e-12, "{agg:?}: {value}");
    }
}

/// The API's series of the device's `lampMonitor001.activePower`, in 5 min buckets, for
/// each aggregate, is the one computed from `data`.
async fn assert_api_series(
    app: &TestApp,
    device_id: Uuid,
    data: &[(DateTime<Utc>, f64)],
    from: &str,
    to: &str,
) {
    for agg in Agg::ALL {
        let body: Value = app
            .http
            .get(app.api(&format!("/devices/{device_id}/telemetry")))
            .query(&[
                ("attribute", "lampMonitor001.activePower"),
                ("from", from),
                ("to", to),
                ("bucket", "5m"),
                ("agg", agg.name()),
            ])
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let seen: Vec<(DateTime<Utc>, f64, i64)> = body["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["time"].as_str().unwrap().parse().unwrap(),
                    p["value"].as_f64().unwrap(),
                    p["samples"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_series(&seen, &expected(data, agg), agg.name());
    }
}

/// A device of a new class, registered in the admin's agency: (device, agency).
async fn registered_device(app: &TestApp) -> (Uuid, Uuid) {
    let class: Value = app
        .request(Method::POST, "/device-classes")
        .json(&json!({"name": "Light", "functions": [{"id": "lampMonitor001", "type": "LampMonitorFunction"}]}))
        .send().await.unwrap().json().await.unwrap();
    app.own_registry(&app.settings.nats_prefix).await;
    let device: Value = app
        .request(Method::POST, "/devices")
        .json(&json!({"class_id": class["id"], "registry": app.settings.nats_prefix, "serial": "SN-1", "name": "Pole 1"}))
        .send().await.unwrap().json().await.unwrap();
    let device_id: Uuid = device["id"].as_str().unwrap().parse().unwrap();
    (device_id, class_agency(app).await)
}

/// The numbers stored for `device`, in device time.
async fn stored_values(app: &TestApp, device: Uuid) -> Vec<f64> {
    sqlx::query_scalar("SELECT value_double FROM telemetry WHERE device_id = $1 ORDER BY time")
        .bind(device)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

/// A batch of records on `TELEMETRY`, as the bridge publishes it, once JetStream has it.
async fn publish(app: &TestApp, agency: Uuid, records: Vec<talq::AttributeLogData>) {
    let batch = TelemetryBatch {
        agency_id: agency,
        records,
    };
    app.jetstream()
        .await
        .publish(
            app.topology.telemetry_subject(&agency.to_string()),
            serde_json::to_vec(&batch).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// The admin's agency (the platform agency), where the test's device lives.
async fn class_agency(app: &TestApp) -> Uuid {
    let me: Value = app
        .request(Method::GET, "/auth/me")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    me["agency_id"]
        .as_str()
        .or(me["agency"].as_str())
        .unwrap()
        .parse()
        .unwrap()
}

/// A batch on `TELEMETRY` holding a NUL (which PostgreSQL refuses in `text` and `jsonb`), from
/// any publisher, not only the bridge (which refuses it at the edge): the record goes to the
/// dead-letter stream with its reason, the batch's other records are stored, and so is
/// everything after it. Before, the group's transaction failed at each redelivery and the
/// projection stopped there.
#[tokio::test]
async fn a_nul_in_a_telemetry_batch_is_dead_lettered_and_ingestion_goes_on() {
    let app = TestApp::spawn().await;
    let agency = class_agency(&app).await;
    let device = Uuid::new_v4();
    let start = Utc::now() - chrono::Duration::hours(1);
    let record = |second: i64, attribute: &str, value: talq::TypedValue| {
        let time = (start + chrono::Duration::seconds(second)).to_rfc3339();
        talq::attribute_log_data(device, "lampMonitor001", attribute, &value, &time)
    };
    let power = |v: f64| {
        talq::typed_value(
            talq::attribute_type("LampMonitorFunction", "activePower"),
            &json!(v),
        )
    };
    let text = |s: &str| talq::typed_value(None, &json!(s));
    publish(
        &app,
        agency,
        vec![
            record(0, "activePower", power(1.0)),
            record(1, "lampState", text("on\0off")),
            record(2, "active\0Power", power(2.0)),
        ],
    )
    .await;
    publish(&app, agency, vec![record(3, "activePower", power(3.0))]).await;
    wait::until_eq(
        "the samples without a NUL",
        Duration::from_secs(30),
        vec![1.0, 3.0],
        || stored_values(&app, device),
    )
    .await;
    // Each refused record on its own, with the reason (the row's rule).
    wait::until(
        "both records dead-lettered",
        Duration::from_secs(30),
        || async {
            let reasons: Vec<String> = app
                .dead_letter_reasons()
                .await
                .into_iter()
                .filter(|r| r.contains("NUL"))
                .collect();
            (reasons.len() == 2).then_some(())
        },
    )
    .await;
}
