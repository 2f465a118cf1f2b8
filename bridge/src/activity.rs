//! Device activity, coalesced: at most one `DEVICE` activity message per device per
//! interval (`ERIOP_BRIDGE_ACTIVITY_INTERVAL_MS`, one second by default).
//!
//! Every group of MQTT messages used to publish one activity message per device heard in
//! it, and the supervisor stores each in its own transaction: at thousands of messages a
//! second from a few hundred devices, that was most of the bridge's JetStream writes (each
//! on disk before its ack) and most of the gateway's commits, for a liveness that is judged
//! in minutes. Now a device heard again within the interval has its activity kept here
//! (the latest time wins) and published once the interval since its last one has passed.
//! Heartbeats (which carry the uptime) always go at once.
//!
//! What a crash loses: the kept activity of at most one interval, never a sample (the
//! telemetry travels apart, and is acked to the broker only once JetStream has it). Time
//! is a parameter, so the rules are tested without a clock.

use std::collections::HashMap;

use eriop_nats::traffic::DeviceActivity;
use uuid::Uuid;

#[derive(Debug)]
struct Device {
    /// When this device's activity was last let through (ms, the caller's clock).
    sent_ms: i64,
    /// What came since, not yet let through.
    kept: Option<DeviceActivity>,
}

#[derive(Debug)]
pub struct Coalescer {
    interval_ms: i64,
    devices: HashMap<Uuid, Device>,
}

fn merge(into: &mut DeviceActivity, next: DeviceActivity) {
    into.at_ms = into.at_ms.max(next.at_ms);
    if next.heartbeat_at_ms >= into.heartbeat_at_ms {
        into.heartbeat_at_ms = next.heartbeat_at_ms;
        into.uptime_secs = next.uptime_secs.or(into.uptime_secs);
    }
}

impl Coalescer {
    /// `interval_ms` 0 lets everything through (the behaviour before coalescing).
    pub fn new(interval_ms: u64) -> Self {
        Self {
            interval_ms: i64::try_from(interval_ms).unwrap_or(i64::MAX),
            devices: HashMap::new(),
        }
    }

    /// The activity to publish now for `activity`, if any (else it is kept for later).
    pub fn offer(&mut self, activity: DeviceActivity, now_ms: i64) -> Option<DeviceActivity> {
        let heartbeat = activity.heartbeat_at_ms.is_some();
        match self.devices.get_mut(&activity.device_id) {
            Some(device) if !heartbeat && now_ms - device.sent_ms < self.interval_ms => {
                match device.kept.as_mut() {
                    Some(kept) => merge(kept, activity),
                    None => device.kept = Some(activity),
                }
                None
            }
            Some(device) => {
                device.sent_ms = now_ms;
                let mut out = activity;
                if let Some(kept) = device.kept.take() {
                    let mut kept = kept;
                    merge(&mut kept, out);
                    out = kept;
                }
                Some(out)
            }
            None => {
                self.devices.insert(
                    activity.device_id,
                    Device {
                        sent_ms: now_ms,
                        kept: None,
                    },
                );
                Some(activity)
            }
        }
    }

    /// Kept activity whose interval has passed: to publish now. Devices quiet for ten
    /// intervals are forgotten, so memory follows the active devices.
    pub fn due(&mut self, now_ms: i64) -> Vec<DeviceActivity> {
        let interval = self.interval_ms;
        let mut out = Vec::new();
        self.devices.retain(|_, device| {
            if now_ms - device.sent_ms >= interval {
                if let Some(kept) = device.kept.take() {
                    device.sent_ms = now_ms;
                    out.push(kept);
                }
            }
            device.kept.is_some() || now_ms - device.sent_ms < interval.saturating_mul(10)
        });
        out
    }

    /// Whether activity waits to be published.
    pub fn keeps(&self) -> bool {
        self.devices.values().any(|d| d.kept.is_some())
    }

    /// Gives back activity that could not be published (JetStream unreachable): kept again,
    /// to go with the next due activity.
    pub fn restore(&mut self, activity: DeviceActivity) {
        let device = self.devices.entry(activity.device_id).or_insert(Device {
            sent_ms: i64::MIN / 2,
            kept: None,
        });
        device.sent_ms = i64::MIN / 2;
        match device.kept.as_mut() {
            Some(kept) => merge(kept, activity),
            None => device.kept = Some(activity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(device: Uuid, at_ms: i64) -> DeviceActivity {
        DeviceActivity {
            agency_id: Uuid::nil(),
            device_id: device,
            at_ms,
            heartbeat_at_ms: None,
            uptime_secs: None,
        }
    }

    #[test]
    fn a_device_heard_often_is_published_once_an_interval_with_its_latest_time() {
        let d = Uuid::new_v4();
        let mut c = Coalescer::new(1_000);
        assert_eq!(c.offer(seen(d, 10), 10).map(|a| a.at_ms), Some(10));
        assert_eq!(c.offer(seen(d, 20), 20), None);
        assert_eq!(c.offer(seen(d, 30), 30), None);
        assert!(c.keeps());
        assert!(c.due(500).is_empty(), "not before the interval");
        let due = c.due(1_010);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].at_ms, 30, "the latest time wins");
        assert!(!c.keeps());
    }

    #[test]
    fn a_heartbeat_goes_at_once_with_what_was_kept() {
        let d = Uuid::new_v4();
        let mut c = Coalescer::new(1_000);
        c.offer(seen(d, 10), 10);
        c.offer(seen(d, 50), 50);
        let mut beat = seen(d, 40);
        beat.heartbeat_at_ms = Some(40);
        beat.uptime_secs = Some(7);
        let out = c.offer(beat, 60).unwrap();
        assert_eq!(
            (out.at_ms, out.heartbeat_at_ms, out.uptime_secs),
            (50, Some(40), Some(7))
        );
        assert!(!c.keeps());
    }

    #[test]
    fn devices_are_coalesced_apart_and_quiet_ones_forgotten() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut c = Coalescer::new(100);
        assert!(c.offer(seen(a, 1), 1).is_some());
        assert!(
            c.offer(seen(b, 2), 2).is_some(),
            "another device is not held back"
        );
        c.due(5_000);
        assert!(c.devices.is_empty(), "forgotten after ten quiet intervals");
        assert!(c.offer(seen(a, 5_001), 5_001).is_some());
    }

    #[test]
    fn zero_lets_everything_through() {
        let d = Uuid::new_v4();
        let mut c = Coalescer::new(0);
        assert!(c.offer(seen(d, 1), 1).is_some());
        assert!(c.offer(seen(d, 1), 1).is_some());
    }

    #[test]
    fn what_could_not_be_published_is_due_again() {
        let d = Uuid::new_v4();
        let mut c = Coalescer::new(1_000);
        let first = c.offer(seen(d, 10), 10).unwrap();
        c.restore(first);
        let due = c.due(11);
        assert_eq!(due.iter().map(|a| a.at_ms).collect::<Vec<_>>(), vec![10]);
    }
}
