//! Each agency's telemetry quota (issue 14): messages a second its devices may send, the
//! agency's own (`telemetry_quota`, set by a platform administrator) or the platform's
//! default (ERIOP_AGENCY_TELEMETRY_PER_SECOND), in bursts of up to a second's worth.
//!
//! Counted by GCRA (governor) in each bridge, after the registry told which agency the device
//! is (the per-device rate, before any lookup, has already stopped a single flooding device).
//! A message past the quota is dead-lettered with the reason, like any refused input: nothing
//! is silently dropped, and the other agencies' messages flow on. With several bridges on a
//! shared subscription each counts what the broker hands it, so the fleet-wide limit is up to
//! the quota times the replicas: the quota protects the pipeline from one agency's flood; it is
//! not a meter to bill by. Command replies are not counted: they answer the agency's own
//! commands, and refusing them would leave those commands pending.

use std::collections::HashMap;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use uuid::Uuid;

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

pub struct AgencyQuotas<C: Clock = DefaultClock> {
    default_per_second: u32,
    clock: C,
    /// One limiter per agency heard from, with the quota it was made for: a changed quota
    /// (seen when the registry's cache refreshes) starts a new one.
    limiters: HashMap<Uuid, (u32, Limiter<C>)>,
}

impl AgencyQuotas<DefaultClock> {
    pub fn new(default_per_second: u32) -> Self {
        Self::with_clock(default_per_second, DefaultClock::default())
    }
}

impl<C: Clock + Clone> AgencyQuotas<C> {
    /// Time is an input: tests pass a clock they turn by hand.
    pub fn with_clock(default_per_second: u32, clock: C) -> Self {
        Self {
            default_per_second: default_per_second.max(1),
            clock,
            limiters: HashMap::new(),
        }
    }

    /// Counts one message of `agency`, whose own quota is `own` (None: the default). Answers
    /// why it is refused, if it is over the quota.
    pub fn refusal(&mut self, agency: Uuid, own: Option<u32>) -> Option<String> {
        let per_second = own.unwrap_or(self.default_per_second).max(1);
        let slot = self
            .limiters
            .entry(agency)
            .or_insert_with(|| (per_second, limiter(per_second, &self.clock)));
        if slot.0 != per_second {
            *slot = (per_second, limiter(per_second, &self.clock));
        }
        slot.1.check().err().map(|_| {
            format!(
                "quota: the device's agency sent more than its telemetry quota of {per_second} messages a second (telemetry_quota; the platform's default is ERIOP_AGENCY_TELEMETRY_PER_SECOND)"
            )
        })
    }
}

fn limiter<C: Clock + Clone>(per_second: u32, clock: &C) -> Limiter<C> {
    let n = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct_with_clock(Quota::per_second(n).allow_burst(n), clock.clone())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn admitted(
        quotas: &mut AgencyQuotas<FakeRelativeClock>,
        agency: u128,
        own: Option<u32>,
        n: usize,
    ) -> usize {
        (0..n)
            .filter(|_| quotas.refusal(Uuid::from_u128(agency), own).is_none())
            .count()
    }

    #[test]
    fn an_agency_past_its_quota_is_refused_and_the_others_flow() {
        let clock = FakeRelativeClock::default();
        let mut quotas = AgencyQuotas::with_clock(10, clock.clone());
        assert_eq!(admitted(&mut quotas, 1, Some(3), 5), 3, "its own quota");
        assert_eq!(admitted(&mut quotas, 2, None, 12), 10, "the default");
        let reason = quotas.refusal(Uuid::from_u128(1), Some(3)).unwrap();
        assert!(
            reason.starts_with("quota:") && reason.contains("3 messages a second"),
            "{reason}"
        );
        // A second later the burst is back.
        clock.advance(Duration::from_secs(1));
        assert_eq!(admitted(&mut quotas, 1, Some(3), 5), 3);
    }

    #[test]
    fn a_changed_quota_applies_at_once() {
        let clock = FakeRelativeClock::default();
        let mut quotas = AgencyQuotas::with_clock(10, clock);
        assert_eq!(admitted(&mut quotas, 1, Some(2), 5), 2);
        assert_eq!(admitted(&mut quotas, 1, Some(4), 5), 4);
    }
}
