//! What the supervisor knows of each device, and its timer.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use eriop_domain::device::FunctionDesc;
use eriop_domain::Timestamp;
use sqlx::types::Json;
use tokio_util::time::{delay_queue, DelayQueue};
use uuid::Uuid;

/// What the supervisor knows of one device.
pub(super) struct Watch {
    pub(super) agency_id: Uuid,
    pub(super) class_id: Uuid,
    pub(super) registry: String,
    pub(super) serial: String,
    pub(super) functions: Vec<FunctionDesc>,
    pub(super) timeout_ms: i64,
    pub(super) last_activity: Option<Timestamp>,
    pub(super) online: bool,
    pub(super) timer: Option<delay_queue::Key>,
}

#[derive(sqlx::FromRow)]
pub(super) struct WatchRow {
    pub(super) id: Uuid,
    pub(super) agency_id: Uuid,
    pub(super) class_id: Uuid,
    pub(super) registry: String,
    pub(super) serial: String,
    pub(super) functions: Json<Vec<FunctionDesc>>,
    pub(super) timeout_secs: i32,
    pub(super) online: bool,
    pub(super) last_activity: Option<chrono::DateTime<Utc>>,
}

pub(super) const WATCH_SELECT: &str = "SELECT d.id, d.agency_id, d.class_id, d.registry, d.serial, d.functions,
        coalesce(d.offline_after_secs, c.offline_after_secs) AS timeout_secs, d.online, a.last_activity
   FROM devices d JOIN device_classes c ON c.id = d.class_id
   LEFT JOIN device_activity a ON a.device_id = d.id
  WHERE NOT d.decommissioned";

pub(super) struct Run {
    pub(super) watches: HashMap<Uuid, Watch>,
    pub(super) timers: DelayQueue<Uuid>,
}

pub(super) fn watch_of(row: WatchRow) -> Watch {
    Watch {
        agency_id: row.agency_id,
        class_id: row.class_id,
        registry: row.registry,
        serial: row.serial,
        functions: row.functions.0,
        timeout_ms: i64::from(row.timeout_secs) * 1000,
        last_activity: row
            .last_activity
            .map(|t| Timestamp::from_millis(t.timestamp_millis())),
        online: row.online,
        timer: None,
    }
}

/// (Re)arms the device's timer at last activity + timeout.
pub(super) fn schedule(run: &mut Run, id: Uuid, now: Timestamp) {
    let Some(watch) = run.watches.get_mut(&id) else {
        return;
    };
    let due_ms = watch
        .last_activity
        .map_or(0, |t| t.millis() + watch.timeout_ms)
        - now.millis();
    let delay = Duration::from_millis(u64::try_from(due_ms.max(0)).unwrap_or(0));
    match watch.timer {
        Some(ref key) => run.timers.reset(key, delay),
        None => watch.timer = Some(run.timers.insert(id, delay)),
    }
}
