//! A circuit breaker for the rate limits' Redis: once a call to Redis fails, requests stop
//! asking it (and stop paying its timeout) for [`OPEN_FOR_MS`]; then one request tries again
//! (half-open) and, if Redis answers, every request does. Time is a parameter, so the states
//! are tested without waiting.

use std::sync::atomic::{AtomicI64, Ordering};

/// How long requests skip Redis after a failure (milliseconds).
pub const OPEN_FOR_MS: i64 = 5_000;

#[derive(Default)]
pub struct Breaker {
    /// Until when (Unix milliseconds) Redis is not asked; 0: closed, ask.
    open_until: AtomicI64,
}

impl Breaker {
    /// Whether to ask Redis at `now_ms`. Past the open period exactly one caller is let
    /// through to probe; the others keep counting locally until it reports.
    pub fn allows(&self, now_ms: i64) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        if now_ms < until {
            return false;
        }
        // Half-open: the caller that moves the deadline on is the one that probes.
        self.open_until
            .compare_exchange(
                until,
                now_ms + OPEN_FOR_MS,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Redis failed at `now_ms`: skip it for a while.
    pub fn failed(&self, now_ms: i64) {
        self.open_until
            .store(now_ms + OPEN_FOR_MS, Ordering::Release);
    }

    /// Redis answered: ask it again on every request. Called on every admitted request, so
    /// it writes the shared word only when the breaker was open.
    pub fn succeeded(&self) {
        if self.open_until.load(Ordering::Acquire) != 0 {
            self.open_until.store(0, Ordering::Release);
        }
    }

    pub fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_opens_it_and_one_probe_closes_it() {
        let breaker = Breaker::default();
        assert!(breaker.allows(0), "closed: ask Redis");
        breaker.failed(1_000);
        assert!(!breaker.allows(1_001), "open: skip Redis");
        assert!(!breaker.allows(1_000 + OPEN_FOR_MS - 1));
        // Half-open: one probe, not two.
        assert!(breaker.allows(1_000 + OPEN_FOR_MS));
        assert!(!breaker.allows(1_000 + OPEN_FOR_MS));
        // The probe failed: open again from then.
        breaker.failed(1_000 + OPEN_FOR_MS);
        assert!(!breaker.allows(1_000 + 2 * OPEN_FOR_MS - 1));
        // The next probe succeeds: closed.
        assert!(breaker.allows(1_000 + 2 * OPEN_FOR_MS));
        breaker.succeeded();
        assert!(breaker.allows(1_000 + 2 * OPEN_FOR_MS + 1));
        assert!(breaker.allows(1_000 + 2 * OPEN_FOR_MS + 2));
        assert!(!breaker.is_open());
    }
}
