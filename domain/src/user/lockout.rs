//! Lockout as a state machine with time as an input (after kanidm's softlock): consecutive
//! failures count up, the threshold locks until a time, a success resets the count, and a
//! lock lifts by itself once its time has passed.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub threshold: u32,
    pub lock_millis: i64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            threshold: 5,
            lock_millis: 15 * 60 * 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockout {
    pub consecutive_failures: u32,
    pub locked_until: Option<Timestamp>,
}

impl Lockout {
    pub fn is_locked(&self, now: Timestamp) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    /// A lock whose time has passed: it lifts (an event) at the next attempt.
    pub fn expired(&self, now: Timestamp) -> bool {
        self.locked_until.is_some_and(|until| now >= until)
    }

    /// After one more failure: the new count, and the lock's end if it reaches the threshold.
    pub fn after_failure(&self, now: Timestamp, policy: LockoutPolicy) -> (u32, Option<Timestamp>) {
        let failures = self.consecutive_failures.saturating_add(1);
        let lock = (failures >= policy.threshold).then(|| now.plus_millis(policy.lock_millis));
        (failures, lock)
    }
}
