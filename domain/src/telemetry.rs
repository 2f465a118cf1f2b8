//! The unit of the telemetry rollup: a UTC minute. The projections roll samples up by it,
//! and the gateway reads a series from the rollup only when its buckets are whole minutes.

/// The rollup's unit, in seconds.
pub const MINUTE_SECONDS: i64 = 60;

/// The start of the minute holding `unix_seconds` (seconds since the Unix epoch, UTC).
/// Times before 1970 round down too. Defined for any time a timestamp can hold (PostgreSQL's
/// are within ±300,000 years, chrono's ±262,143): far from where `i64` seconds overflow.
pub const fn minute_start(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(MINUTE_SECONDS) * MINUTE_SECONDS
}

/// Whether buckets of `seconds` hold whole minutes (and so can be summed from the rollup;
/// series bin from a minute boundary, 2000-01-03T00:00:00Z).
pub const fn whole_minutes(seconds: i64) -> bool {
    seconds > 0 && seconds % MINUTE_SECONDS == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_starts_at_or_before_its_times() {
        assert_eq!(minute_start(0), 0);
        assert_eq!(minute_start(59), 0);
        assert_eq!(minute_start(60), 60);
        assert_eq!(minute_start(-1), -60);
        let far_future = 8_205_948_057_600; // a minute start, some 260,000 years ahead
        assert_eq!(minute_start(far_future + 59), far_future);
    }

    #[test]
    fn only_whole_minute_buckets_use_the_rollup() {
        assert!(whole_minutes(60) && whole_minutes(300) && whole_minutes(86_400));
        assert!(!whole_minutes(30) && !whole_minutes(90) && !whole_minutes(0));
    }
}
