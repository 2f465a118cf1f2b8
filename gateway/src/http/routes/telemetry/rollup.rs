//! A series read through the telemetry rollup (`telemetry_minutes`, migration 0030; kept by
//! the projections, `projections/src/telemetry/rollup/`).
//!
//! When buckets are whole minutes, a series is the sum of three parts: the raw samples of the
//! range's partial first minute and of its recent end (not rolled up yet), and the rollup's
//! minutes in between, except the minutes still marked for the rollup (samples stored since
//! that minute was rolled up, a device's late ones), which are read raw too. Marks and raw
//! rows commit together, and the rollup takes marks and recomputes their minutes in one
//! transaction, so every minute is read from exactly one place, whatever the rollup's progress.

use chrono::{DateTime, Duration, Utc};
use eriop_domain::telemetry::minute_start;

use super::Agg;

/// Minutes that ended at least this long ago are read from the rollup: the projections roll
/// a minute up 3 s after its end and look every second (`rollup::GRACE`, `rollup::EVERY`),
/// so by then it is usually done; if not, its marks send it to the raw rows. Why not read
/// every closed minute's marks: a minute being rolled up has one mark per group of ingest
/// (hundreds, each listing the devices of that group), which a read would scan.
pub const ROLLED_AFTER: Duration = Duration::seconds(10);

/// The range `[from, to)` cut at `(start, end)`: `[from, start)` and `[end, to)` are read
/// raw, `[start, end)` (whole minutes, maybe none) from the rollup. Always
/// `from <= start <= end <= to`.
pub fn split(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let floor = |t: DateTime<Utc>| DateTime::from_timestamp(minute_start(t.timestamp()), 0);
    let ceil = |t: DateTime<Utc>| {
        floor(t).and_then(|m| {
            if m == t {
                Some(m)
            } else {
                m.checked_add_signed(Duration::seconds(60))
            }
        })
    };
    let start = ceil(from).map_or(to, |s| s.max(from).min(to));
    let rolled = now
        .checked_sub_signed(ROLLED_AFTER)
        .and_then(floor)
        .unwrap_or(start);
    let end = floor(to).unwrap_or(start).min(rolled).max(start).min(to);
    (start, end)
}

/// What each aggregate makes of the parts (see [`series_sql`]).
fn aggregate(agg: Agg) -> &'static str {
    match agg {
        // Over numeric: exact, and no hostile value overflows it.
        Agg::Avg => "to_jsonb((sum(sum_value) / nullif(sum(numeric_samples), 0))::float8)",
        Agg::Min => "to_jsonb(min(min_value))",
        Agg::Max => "to_jsonb(max(max_value))",
        Agg::Last => "(array_agg(last_value ORDER BY last_time DESC))[1]",
    }
}

/// A raw sample as a part: a minute of one sample. The `last` value is the raw series'.
const RAW_PART: &str = "t.time, 1::bigint, (t.value_double IS NOT NULL)::int::bigint,
       t.value_double::numeric, t.value_double, t.value_double, t.time,
       CASE WHEN jsonb_typeof(t.value_json) = 'boolean' THEN t.value_json
            ELSE coalesce(to_jsonb(t.value_double), to_jsonb(t.value_text), t.value_json) END";

const KEY: &str =
    "t.agency_id = $2::uuid AND t.device_id = $3 AND t.function_id = $4 AND t.attribute = $5";

/// The series query through the rollup. Parameters as the raw query's
/// ([`super::series_sql`]: `$1` bucket seconds, a whole number of minutes, `$2` agency,
/// `$3` device, `$4` function, `$5` attribute, `$6` from, `$7` to), and `$8`, `$9` the
/// rollup's part from [`split`]. Answers the same columns.
pub fn series_sql(timescale: bool, agg: Agg) -> String {
    let bin = if timescale {
        "time_bucket(make_interval(secs => $1), time, TIMESTAMPTZ '2000-01-03')"
    } else {
        "date_bin(make_interval(secs => $1), time, TIMESTAMPTZ '2000-01-03')"
    };
    format!(
        "WITH marked AS MATERIALIZED (
             SELECT DISTINCT minute FROM telemetry_touched
              WHERE agency_id = $2::uuid AND minute >= $8 AND minute < $9 AND $3 = ANY (device_ids)
         ), parts (time, samples, numeric_samples, sum_value, min_value, max_value, last_time, last_value) AS (
             SELECT minute, samples, numeric_samples, sum_value, min_value, max_value, last_time, last_value
               FROM telemetry_minutes t
              WHERE {KEY} AND minute >= $8 AND minute < $9
                AND minute NOT IN (SELECT minute FROM marked)
             UNION ALL
             SELECT {RAW_PART} FROM telemetry t WHERE {KEY} AND t.time >= $6 AND t.time < $8
             UNION ALL
             SELECT {RAW_PART} FROM telemetry t WHERE {KEY} AND t.time >= $9 AND t.time < $7
             UNION ALL
             SELECT {RAW_PART} FROM marked m
               JOIN telemetry t ON {KEY} AND t.time >= m.minute AND t.time < m.minute + INTERVAL '1 minute'
         )
         SELECT {bin} AS bucket, {agg} AS value, sum(samples)::bigint AS samples
           FROM parts GROUP BY 1 ORDER BY 1",
        agg = aggregate(agg)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_day_is_cut_at_whole_minutes_and_its_recent_end_is_raw() {
        let now = at("2026-12-06T12:00:30Z");
        let (start, end) = split(at("2026-12-05T12:00:15Z"), at("2026-12-06T12:10:00Z"), now);
        assert_eq!(start, at("2026-12-05T12:01:00Z"));
        assert_eq!(
            end,
            at("2026-12-06T12:00:00Z"),
            "10 s before now, to the minute"
        );
    }

    #[test]
    fn a_range_within_a_minute_is_all_raw() {
        let now = at("2026-12-06T12:00:00Z");
        let (from, to) = (at("2026-01-01T00:00:10Z"), at("2026-01-01T00:00:50Z"));
        assert_eq!(split(from, to, now), (to, to));
    }

    proptest! {
        /// The parts always tile the range, and the rollup's is whole minutes, none recent.
        #[test]
        fn the_parts_tile_the_range(
            from in -5_000_000_000i64..5_000_000_000,
            length in 1i64..10_000_000,
            now in -5_000_000_000i64..5_000_000_000,
            micros in 0u32..1_000_000,
        ) {
            let from = DateTime::from_timestamp(from, micros * 1000).unwrap();
            let to = from + Duration::seconds(length);
            let now = DateTime::from_timestamp(now, 0).unwrap();
            let (start, end) = split(from, to, now);
            prop_assert!(from <= start && start <= end && end <= to);
            if start < end {
                prop_assert_eq!(start.timestamp() % 60, 0);
                prop_assert_eq!(start.timestamp_subsec_micros(), 0);
                prop_assert_eq!(end.timestamp() % 60, 0);
                prop_assert!(end <= now - ROLLED_AFTER);
            }
        }
    }
}
