//! How fast the rollup goes: in steps of a few devices, spread over the time until the next
//! minute is due, so that the rollup of a busy minute never takes the cores from ingest all
//! at once. Rolled up at once, a saturated minute took 11 s of PostgreSQL's statement time
//! in one go, and ingest's commits queued behind it (docs/BENCHMARKS.md). The work is the
//! same paced or not; paced, it is spread over the minute.
//!
//! Time is a parameter: the worker passes the clock, tests pass what they need.

use std::time::Duration;

/// A step should hold PostgreSQL's core about this long: ingest's commits interleave with
/// steps this short, and a step's own cost (a transaction, the advisory lock) stays small.
pub const STEP: Duration = Duration::from_millis(100);

/// The longest pause between steps: a minute of few steps is spread no thinner, and a
/// clock set back while a round runs (a longer time left) never stalls the rollup.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The first step's size, in devices; later ones adapt to [`STEP`].
const FIRST_DEVICES: usize = 32;

/// A step never names more devices than this (a bound array of 16 bytes each).
const MAX_DEVICES: usize = 65_536;

/// The pace of the rollup worker, carried from step to step.
#[derive(Debug, Clone)]
pub struct Pace {
    devices: usize,
    spread: bool,
}

impl Pace {
    /// Steps of about [`STEP`], spread over the time left.
    pub fn spread() -> Self {
        Self {
            devices: FIRST_DEVICES,
            spread: true,
        }
    }

    /// As fast as it can: every device of a minute in one step, no pause (a test's, or a
    /// tool's, `roll`).
    pub fn flat_out() -> Self {
        Self {
            devices: usize::MAX,
            spread: false,
        }
    }

    /// How many devices the next step takes.
    pub fn devices(&self) -> usize {
        self.devices
    }

    /// After a step of `devices` that took `took`: adapts the step's size, and answers the
    /// pause before the next, spreading the `steps_left` (at the current size) evenly over
    /// `time_left` (until the round should be done; none left when it is late: no pause).
    pub fn after(
        &mut self,
        devices: usize,
        took: Duration,
        steps_left: usize,
        time_left: Duration,
    ) -> Duration {
        if !self.spread {
            return Duration::ZERO;
        }
        // Only a full step says what a step of this size costs.
        if devices >= self.devices {
            if took < STEP / 2 {
                self.devices = (self.devices.saturating_mul(2)).min(MAX_DEVICES);
            } else if took > STEP * 2 {
                self.devices = (self.devices / 2).max(1);
            }
        }
        if steps_left == 0 {
            return Duration::ZERO;
        }
        let share = time_left / u32::try_from(steps_left).unwrap_or(u32::MAX);
        share.saturating_sub(took).min(MAX_PAUSE)
    }

    /// The number of steps `devices` take at the current size.
    pub fn steps(&self, devices: usize) -> usize {
        devices.div_ceil(self.devices.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn the_steps_left_are_spread_over_the_time_left() {
        let mut pace = Pace::spread();
        let n = pace.devices();
        // 10 steps of 100 ms left in 10 s: a second each, the step's own time included.
        assert_eq!(pace.after(n, ms(100), 10, ms(10_000)), ms(900));
        // Late (no time left), or done: no pause.
        assert_eq!(pace.after(n, ms(100), 10, Duration::ZERO), Duration::ZERO);
        assert_eq!(pace.after(n, ms(100), 0, ms(10_000)), Duration::ZERO);
        // A step longer than its share: no pause either.
        assert_eq!(pace.after(n, ms(150), 100, ms(10_000)), Duration::ZERO);
        // Few steps, or a clock set back by an hour: never more than MAX_PAUSE.
        assert_eq!(pace.after(n, ms(100), 1, ms(3_600_000)), MAX_PAUSE);
    }

    #[test]
    fn a_step_grows_while_cheap_and_shrinks_while_long_never_to_nothing() {
        let mut pace = Pace::spread();
        let first = pace.devices();
        pace.after(first, ms(10), 1, ms(1_000));
        assert_eq!(pace.devices(), first * 2);
        pace.after(first * 2, ms(100), 1, ms(1_000));
        assert_eq!(pace.devices(), first * 2, "about a step's time: kept");
        // A partial step (the end of a minute) says nothing of a full one's cost.
        pace.after(3, ms(1), 1, ms(1_000));
        assert_eq!(pace.devices(), first * 2);
        for _ in 0..100 {
            pace.after(pace.devices(), ms(5_000), 1, ms(1_000));
        }
        assert_eq!(pace.devices(), 1);
        for _ in 0..100 {
            pace.after(pace.devices(), Duration::ZERO, 1, ms(1_000));
        }
        assert_eq!(pace.devices(), MAX_DEVICES);
        assert_eq!(pace.steps(MAX_DEVICES + 1), 2);
        assert_eq!(pace.steps(0), 0);
    }

    #[test]
    fn flat_out_takes_every_device_at_once_without_a_pause() {
        let mut pace = Pace::flat_out();
        assert_eq!(pace.steps(1_000_000), 1);
        assert_eq!(
            pace.after(1_000_000, ms(10_000), 5, ms(60_000)),
            Duration::ZERO
        );
        assert_eq!(pace.devices(), usize::MAX);
    }
}
