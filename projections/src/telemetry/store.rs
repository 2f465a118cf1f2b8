//! A group's rows into `telemetry`, in the group's transaction: the rows, the rollup's marks
//! of the minutes they touched ([`super::rollup`]), and each attribute's latest value. The
//! consumer calls it once a group; tests store rows the same way.

use std::collections::{HashMap, HashSet};

use sqlx::{Postgres, Transaction};

use super::{copy, rollup, Row};
use crate::consumer::ConsumerError;

/// How a group's rows go into `telemetry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// A plain insert: fails with a unique violation if any key is stored already.
    New,
    /// Skips every key stored already (a speculative insertion per row).
    SkippingStored,
}

/// The role that may `COPY` rows straight into a `telemetry` under row-level security
/// (migration 0034): it bypasses the policies, and may insert into `telemetry` and nothing
/// else, so it can read no agency's rows.
pub const WRITER: &str = "eriop_telemetry_writer";

/// How new rows ([`Insert::New`]) reach `telemetry`, found once by [`way_in`].
///
/// Why: a `COPY` straight into the table costs PostgreSQL about a fifth less a row than a
/// `COPY` into a staging table followed by `INSERT ... SELECT` (docs/BENCHMARKS.md), and the
/// insert is most of PostgreSQL's work at ingest. PostgreSQL refuses `COPY FROM` into a
/// table with row-level security ("use INSERT statements instead") unless the role bypasses
/// it; the policy lets the projector write every agency's rows anyway
/// (`eriop.all_agencies`), so a role that bypasses it for an insert only gives nothing away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WayIn {
    /// `COPY` as the pool's role: `telemetry` has no row-level security (a TimescaleDB
    /// hypertable, which refuses it; README, "Authorization").
    Copy,
    /// `SET LOCAL ROLE` [`WRITER`], `COPY`, then back to `back` (the role the pool acts
    /// as, quoted): plain PostgreSQL, whose `telemetry` is under row-level security.
    CopyAsWriter { back: String },
    /// A `COPY` into a staging table, then `INSERT ... SELECT`: when neither applies (the
    /// migration could not create [`WRITER`]: it takes a superuser).
    Staged,
}

/// Finds how this transaction's role may write new rows (one catalog query).
pub async fn way_in(tx: &mut Transaction<'static, Postgres>) -> Result<WayIn, sqlx::Error> {
    let (way, back): (String, String) = sqlx::query_as(
        "SELECT CASE
                  WHEN NOT c.relrowsecurity THEN 'copy'
                  WHEN w.rolbypassrls
                       AND pg_has_role(session_user, w.oid, 'MEMBER')
                       AND has_table_privilege(w.oid, c.oid, 'INSERT') THEN 'writer'
                  ELSE 'staged'
                END,
                quote_ident(current_user)
           FROM pg_class c
           LEFT JOIN pg_roles w ON w.rolname = $1
          WHERE c.oid = 'telemetry'::regclass",
    )
    .bind(WRITER)
    .fetch_one(&mut **tx)
    .await?;
    Ok(match way.as_str() {
        "copy" => WayIn::Copy,
        "writer" => WayIn::CopyAsWriter { back },
        _ => WayIn::Staged,
    })
}

/// Stores `rows` (any order, repeats allowed) in `tx`, new rows the `way` [`way_in`] found;
/// answers how many were new. With [`Insert::New`], a key already stored fails the
/// statement with a unique violation.
pub async fn rows(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[Row],
    insert: Insert,
    way: &WayIn,
) -> Result<u64, ConsumerError> {
    if rows.is_empty() {
        return Ok(0);
    }
    // A key repeated within the group (an MQTT redelivery in the same group) is written
    // once, the first time, as ON CONFLICT DO NOTHING would keep it.
    let mut firsts = first_of_each_key(rows);
    // In the natural key's order, so that consecutive insertions land on the same pages of
    // its index (a group holds a few rows of each of many keys, interleaved as the devices
    // sent them), and two groups meet each other's keys in the same order.
    firsts.sort_unstable_by(|a, b| {
        (a.device_id, &a.function_id, &a.attribute, a.time).cmp(&(
            b.device_id,
            &b.function_id,
            &b.attribute,
            b.time,
        ))
    });
    // The telemetry rows first, whatever the way: every group takes its locks in the same
    // order (the rows' keys, then the latest values', then the checkpoint's).
    let written = match (insert, way) {
        (Insert::New, WayIn::Copy) => {
            copy_into(tx, "telemetry", &firsts).await?;
            firsts.len() as u64
        }
        (Insert::New, WayIn::CopyAsWriter { back }) => {
            sqlx::query(&format!("SET LOCAL ROLE {WRITER}"))
                .execute(&mut **tx)
                .await?;
            copy_into(tx, "telemetry", &firsts).await?;
            sqlx::query(&format!("SET LOCAL ROLE {back}"))
                .execute(&mut **tx)
                .await?;
            firsts.len() as u64
        }
        (Insert::New, WayIn::Staged) | (Insert::SkippingStored, _) => {
            staged(tx, &firsts, insert).await?
        }
    };
    // Which minutes the rollup must take again, committed with the rows.
    rollup::mark(tx, &firsts).await?;
    // The latest value only moves forward in device time: a late sample is stored above,
    // but does not replace a newer value here. The latest of each attribute is picked here
    // (a few hundred rows for a group of many thousands), and sorted by key in the statement
    // so that concurrent groups lock rows in the same order. Bound as arrays, not staged:
    // at moderate rates a group holds about one row per key, and a staging table cost a
    // round trip to create, a COPY and a truncation at every commit.
    let latest = latest(rows);
    sqlx::query(
        "INSERT INTO device_latest (device_id, function_id, attribute, agency_id, time,
                                    value_double, value_text, value_json)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[],
                              $5::timestamptz[], $6::float8[], $7::text[], $8::jsonb[])
          ORDER BY 1, 2, 3
         ON CONFLICT (device_id, function_id, attribute) DO UPDATE
            SET time = excluded.time, value_double = excluded.value_double,
                value_text = excluded.value_text, value_json = excluded.value_json
          WHERE excluded.time > device_latest.time",
    )
    .bind(latest.iter().map(|r| r.device_id).collect::<Vec<_>>())
    .bind(
        latest
            .iter()
            .map(|r| r.function_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        latest
            .iter()
            .map(|r| r.attribute.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(latest.iter().map(|r| r.agency_id).collect::<Vec<_>>())
    .bind(latest.iter().map(|r| r.time).collect::<Vec<_>>())
    .bind(latest.iter().map(|r| r.value_double).collect::<Vec<_>>())
    .bind(
        latest
            .iter()
            .map(|r| r.value_text.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        latest
            .iter()
            .map(|r| r.value_json.clone())
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(written)
}

/// Through a staging table: `COPY` it in, then `INSERT ... SELECT`, skipping stored keys or
/// not. Temporary tables live as long as the pooled connection, their rows as long as the
/// transaction; not WAL-logged, staging costs no disk write.
async fn staged(
    tx: &mut Transaction<'static, Postgres>,
    firsts: &[&Row],
    insert: Insert,
) -> Result<u64, ConsumerError> {
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS telemetry_staging
           (time timestamptz, agency_id uuid, device_id uuid, function_id text,
            attribute text, value_double double precision, value_text text, value_json jsonb)
           ON COMMIT DELETE ROWS",
    )
    .execute(&mut **tx)
    .await?;
    copy_into(tx, "telemetry_staging", firsts).await?;
    Ok(sqlx::query(&format!(
        "INSERT INTO telemetry ({cols}) SELECT {cols} FROM telemetry_staging{skip}",
        cols = copy::COLUMNS,
        skip = match insert {
            Insert::New => "",
            Insert::SkippingStored =>
                " ON CONFLICT (device_id, function_id, attribute, time) DO NOTHING",
        }
    ))
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// The rows in their order, each natural key (device, function, attribute, time) once: the
/// first row of a key is kept. Times are compared to the microsecond, as PostgreSQL stores
/// them; a key that still meets itself there (sub-microsecond times before 2000, which it
/// rounds the other way) only sends its group down the skipping path.
pub(super) fn first_of_each_key(rows: &[Row]) -> Vec<&Row> {
    let mut seen = HashSet::with_capacity(rows.len());
    rows.iter()
        .filter(|row| {
            seen.insert((
                row.device_id,
                row.function_id.as_str(),
                row.attribute.as_str(),
                row.time.timestamp_micros(),
            ))
        })
        .collect()
}

async fn copy_into(
    tx: &mut Transaction<'static, Postgres>,
    table: &str,
    rows: &[&Row],
) -> Result<(), ConsumerError> {
    let data = copy::encode(rows).map_err(|e| ConsumerError::Encode(e.to_string()))?;
    let mut sink = tx
        .copy_in_raw(&format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            copy::COLUMNS
        ))
        .await?;
    sink.send(data.freeze()).await?;
    sink.finish().await?;
    Ok(())
}

/// The newest row of each (device, function, attribute), in key order. Of two rows at the
/// same device time, the first in the stream wins: the one `telemetry` keeps (see
/// [`first_of_each_key`]), as `device_latest` keeps the first across groups (`time >`).
pub(super) fn latest(rows: &[Row]) -> Vec<&Row> {
    let mut newest: HashMap<(uuid::Uuid, &str, &str), &Row> = HashMap::new();
    for row in rows {
        let key = (
            row.device_id,
            row.function_id.as_str(),
            row.attribute.as_str(),
        );
        match newest.get(&key) {
            Some(kept) if kept.time >= row.time => {}
            _ => {
                newest.insert(key, row);
            }
        }
    }
    let mut latest: Vec<&Row> = newest.into_values().collect();
    latest.sort_by(|a, b| {
        (a.device_id, &a.function_id, &a.attribute).cmp(&(
            b.device_id,
            &b.function_id,
            &b.attribute,
        ))
    });
    latest
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn row(device: u128, attribute: &str, second: i64, value: f64) -> Row {
        Row {
            time: Utc.timestamp_opt(1_795_600_800 + second, 0).unwrap(),
            agency_id: uuid::Uuid::from_u128(1),
            device_id: uuid::Uuid::from_u128(device),
            function_id: "lampMonitor001".to_owned(),
            attribute: attribute.to_owned(),
            value_double: Some(value),
            value_text: None,
            value_json: None,
        }
    }

    #[test]
    fn the_latest_of_each_attribute_in_key_order_late_and_repeated_samples_do_not_win() {
        let rows = vec![
            row(2, "activePower", 10, 1.0),
            row(1, "activePower", 5, 2.0),
            row(2, "activePower", 3, 3.0), // late: older than the first row
            row(2, "lampVoltage", 7, 4.0),
            row(1, "activePower", 9, 5.0),
            row(2, "activePower", 10, 6.0), // same time: the first one stays, as in telemetry
        ];
        let latest = latest(&rows);
        let got: Vec<_> = latest
            .iter()
            .map(|r| (r.device_id.as_u128(), r.attribute.as_str(), r.value_double))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "activePower", Some(5.0)),
                (2, "activePower", Some(1.0)),
                (2, "lampVoltage", Some(4.0)),
            ]
        );
    }

    #[test]
    fn a_key_repeated_in_a_group_is_kept_once_the_first_time() {
        let rows = vec![
            row(1, "activePower", 5, 1.0),
            row(2, "activePower", 5, 2.0),
            row(1, "activePower", 5, 3.0), // the same key again (a redelivery)
            row(1, "lampVoltage", 5, 4.0),
            row(1, "activePower", 6, 5.0),
        ];
        let kept: Vec<_> = first_of_each_key(&rows)
            .iter()
            .map(|r| r.value_double)
            .collect();
        assert_eq!(kept, vec![Some(1.0), Some(2.0), Some(4.0), Some(5.0)]);
    }

    proptest::proptest! {
        /// Whatever the repeats, the rows kept are the input's first row of each key, in the
        /// input's order: nothing new is dropped, nothing is written twice.
        #[test]
        fn each_key_is_kept_once_in_order(
            picks in proptest::collection::vec((0u128..4, 0usize..3, 0i64..4), 0..200)
        ) {
            let rows: Vec<Row> = picks
                .iter()
                .enumerate()
                .map(|(i, &(device, attribute, second))| {
                    row(device, ["a", "b", "c"][attribute], second, i as f64)
                })
                .collect();
            let kept: Vec<usize> = first_of_each_key(&rows)
                .iter()
                .map(|r| r.value_double.unwrap_or(-1.0) as usize)
                .collect();
            let key = |i: usize| (rows[i].device_id, &rows[i].attribute, rows[i].time);
            // In the input's order, each one the first of its key...
            proptest::prop_assert!(kept.windows(2).all(|w| w[0] < w[1]));
            for &i in &kept {
                proptest::prop_assert!((0..i).all(|j| key(j) != key(i)));
            }
            // ...and no key left out.
            for i in 0..rows.len() {
                proptest::prop_assert!(kept.iter().any(|&k| key(k) == key(i)));
            }
        }
    }
}
