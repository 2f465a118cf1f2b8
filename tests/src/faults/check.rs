//! What a fault left: everything accepted in a phase, looked for where a user would look
//! (the telemetry table, the event store, the read models, the device itself), until all of
//! it shows or the wait is over.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::device::ATTRIBUTE;
use super::{traffic, Run};

/// Samples, API commands, device commands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub samples: u64,
    pub commands: u64,
    pub device_commands: u64,
}

impl Counts {
    fn total(self) -> u64 {
        self.samples + self.commands + self.device_commands
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.samples, self.commands, self.device_commands
        )
    }
}

#[derive(Debug, Default)]
pub struct Row {
    pub fault: String,
    pub sent: Counts,
    pub stored: Counts,
    /// What shows more than once: samples in the telemetry table, agencies in the read
    /// model, device commands at their light (outside `redelivered`).
    pub duplicates: Counts,
    /// Device commands the broker delivered again after its own crash. MQTT QoS 1 is at least
    /// once, and Mosquitto saves its sessions once a second: a broker killed between
    /// forwarding a command and saving that it did forwards it again on restart (or takes the
    /// bridge's resend as new). Commands set an absolute state (a level, on or off), so a
    /// second delivery leaves the light as the first did. Allowed only when the fault killed
    /// the broker; any other second delivery is ERIOP's and counts as a duplicate.
    pub redelivered: u64,
    pub lost: u64,
    pub recover_secs: f64,
    /// Samples the broker never acknowledged (the lights gave up on them: not sent).
    pub unconfirmed: u64,
    /// API requests refused (5xx, 429) or unanswered during the fault: not accepted.
    pub refused: u64,
    pub problems: Vec<String>,
}

impl Row {
    pub fn passed(&self) -> bool {
        self.duplicates.total() == 0 && self.lost == 0 && self.problems.is_empty()
    }
}

/// Prints the table: one row a fault.
pub fn print_table(rows: &[Row]) {
    println!();
    println!(
        "fault table (sent and stored: samples/API commands/device commands; recover s: from the"
    );
    println!(
        "restart to readiness, a command read back and a new sample stored; refused: API requests"
    );
    println!(
        "answered 5xx/429 or not at all during the fault; unacked: samples the broker never took;"
    );
    println!("redelivered: device commands a killed broker delivered twice, as MQTT QoS 1 may)");
    println!(
        "{:<30} {:>14} {:>14} {:>10} {:>5} {:>9}   {:>7} {:>7} {:>11}",
        "fault",
        "sent",
        "stored",
        "duplicates",
        "lost",
        "recover s",
        "refused",
        "unacked",
        "redelivered"
    );
    for row in rows {
        println!(
            "{:<30} {:>14} {:>14} {:>10} {:>5} {:>9.1}   {:>7} {:>7} {:>11}",
            row.fault,
            row.sent.to_string(),
            row.stored.to_string(),
            row.duplicates.to_string(),
            row.lost,
            row.recover_secs,
            row.refused,
            row.unconfirmed,
            row.redelivered,
        );
        for problem in &row.problems {
            println!("    problem: {problem}");
        }
    }
}

/// Looks until every accepted item of `phase` shows, or `within` has passed.
/// `broker_killed`: the fault killed the MQTT broker (see [`Row::redelivered`]).
pub async fn settle(
    run: &Run,
    phase: u32,
    since: DateTime<Utc>,
    within: Duration,
    broker_killed: bool,
) -> Row {
    let deadline = Instant::now() + within;
    loop {
        match look(run, phase, since, broker_killed).await {
            Ok(row) if row.lost == 0 || Instant::now() > deadline => return row,
            Err(e) if Instant::now() > deadline => {
                return Row {
                    problems: vec![format!("cannot read the results: {e}")],
                    ..Row::default()
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn look(
    run: &Run,
    phase: u32,
    since: DateTime<Utc>,
    broker_killed: bool,
) -> Result<Row, sqlx::Error> {
    let db = &run.stack.db;
    let since = since - chrono::Duration::seconds(5);
    let mut row = Row::default();

    // Samples: each one the broker acknowledged is a row of the telemetry table, once.
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT device_id::text, (extract(epoch FROM time) * 1000)::bigint FROM telemetry \
         WHERE attribute = $1 AND time >= $2",
    )
    .bind(ATTRIBUTE)
    .bind(since)
    .fetch_all(db)
    .await?;
    let stored: HashSet<(String, i64)> = stored.into_iter().collect();
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) - count(DISTINCT (device_id, function_id, attribute, time)) \
         FROM telemetry WHERE attribute = $1 AND time >= $2",
    )
    .bind(ATTRIBUTE)
    .bind(since)
    .fetch_one(db)
    .await?;
    row.duplicates.samples += u64::try_from(twice).unwrap_or(0);
    for light in &run.lights {
        row.unconfirmed += light.unconfirmed(phase);
        for ts in light.acked(phase) {
            row.sent.samples += 1;
            if stored.contains(&(light.device_id.clone(), ts)) {
                row.stored.samples += 1;
            }
        }
    }

    let (agencies, device_commands) = {
        let accepted = traffic::lock(&run.accepted);
        row.problems.extend(accepted.anomalies.iter().cloned());
        row.refused = accepted.refused.get(&phase).copied().unwrap_or(0);
        let agencies: Vec<(String, String)> = accepted
            .agencies
            .iter()
            .filter(|(p, ..)| *p == phase)
            .map(|(_, id, name)| (id.clone(), name.clone()))
            .collect();
        let commands: Vec<(usize, i64)> = accepted
            .device_commands
            .iter()
            .filter(|(p, ..)| *p == phase)
            .map(|(_, light, id)| (*light, *id))
            .collect();
        (agencies, commands)
    };

    // API commands: each accepted agency is in the event store and in the read model, once.
    let in_store: BTreeSet<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM events WHERE aggregate_type = 'agency' AND sequence = 1",
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .collect();
    let read_model: Vec<(String, String)> =
        sqlx::query_as("SELECT id::text, name FROM agencies WHERE name LIKE 'Faults %'")
            .fetch_all(db)
            .await?;
    let mut per_name: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, name) in &read_model {
        *per_name.entry(name.as_str()).or_default() += 1;
    }
    let shown: HashSet<&str> = read_model.iter().map(|(id, _)| id.as_str()).collect();
    for (id, name) in &agencies {
        row.sent.commands += 1;
        if in_store.contains(id) && shown.contains(id.as_str()) {
            row.stored.commands += 1;
        }
        row.duplicates.commands += per_name
            .get(name.as_str())
            .copied()
            .unwrap_or(0)
            .saturating_sub(1);
    }

    // Device commands: issued in the event store, received by the light exactly once, and
    // its answer (`success`) in the read model.
    let issued: HashSet<i64> = sqlx::query_scalar::<_, Option<String>>(
        "SELECT payload -> 'CommandIssued' ->> 'command_id' FROM events \
         WHERE aggregate_type = 'device' AND event_type = 'CommandIssued'",
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .flatten()
    .filter_map(|id| id.parse().ok())
    .collect();
    let settled: HashSet<i64> =
        sqlx::query_scalar("SELECT command_id FROM device_commands WHERE status = 'success'")
            .fetch_all(db)
            .await?
            .into_iter()
            .collect();
    // Where the missing ones stopped: not in the store, stored but never at the light
    // (relay, supervisor, COMMANDS or the bridge's downlink), or answered but not settled.
    let (mut not_issued, mut not_received, mut not_settled) = (0, 0, 0);
    for (light, id) in &device_commands {
        row.sent.device_commands += 1;
        let receipts = run.lights[*light].receipts(*id);
        if !issued.contains(id) {
            not_issued += 1;
        } else if receipts == 0 {
            not_received += 1;
        } else if !settled.contains(id) {
            not_settled += 1;
        } else {
            row.stored.device_commands += 1;
        }
        count_deliveries(&mut row, receipts, broker_killed);
    }
    if not_issued + not_received + not_settled > 0 {
        row.problems.push(format!(
            "device commands missing: {not_issued} not in the event store, {not_received} stored but not received by the light, {not_settled} received but not settled"
        ));
    }

    row.lost = row.sent.total() - row.stored.total();
    Ok(row)
}

/// Counts a device command's deliveries beyond the first: redelivered when the fault killed
/// the broker (MQTT QoS 1, see [`Row::redelivered`]), duplicated otherwise.
fn count_deliveries(row: &mut Row, receipts: u32, broker_killed: bool) {
    let again = u64::from(receipts.saturating_sub(1));
    if broker_killed {
        row.redelivered += again;
    } else {
        row.duplicates.device_commands += again;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_delivery_fails_the_row_unless_the_broker_itself_was_killed() {
        let mut bridge_killed = Row::default();
        count_deliveries(&mut bridge_killed, 1, false);
        assert!(bridge_killed.passed(), "one delivery is what is expected");
        count_deliveries(&mut bridge_killed, 2, false);
        assert_eq!(bridge_killed.duplicates.device_commands, 1);
        assert!(!bridge_killed.passed(), "ERIOP sent a command twice");

        let mut broker_killed = Row::default();
        count_deliveries(&mut broker_killed, 3, true);
        assert_eq!(broker_killed.redelivered, 2);
        assert!(
            broker_killed.passed(),
            "QoS 1 redelivery after the broker's crash"
        );
    }
}
