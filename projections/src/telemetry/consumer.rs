//! The durable pull consumer of `TELEMETRY`, committing in groups, two at a time.
//!
//! Why pipelined: a group's transaction spends most of its time waiting (COPY round trips,
//! index inserts, the commit's fsync). While one commits, the next group is gathered and
//! decoded, and up to `in_flight` transactions run on their own connections. Each group is
//! acked only after its own commit; the checkpoint only moves forward (`greatest`), so the
//! order in which two groups commit does not matter. Locks are taken in the same order by
//! every group (latest values sorted by key, then the checkpoint row): two groups never
//! deadlock, the second waits for the first's commit at worst.
//!
//! Why a plain insert first: `INSERT ... ON CONFLICT DO NOTHING` is a speculative insertion
//! (a lock and an extra WAL record a row), about a third of PostgreSQL's time for the insert
//! (docs/BENCHMARKS.md). Almost every group holds only new keys: its repeats are dropped in
//! Rust, and the rows go in with a plain `INSERT`. A key already stored (a redelivery after a
//! crash, a device sending an old sample again, or a concurrent group holding the same key)
//! makes that insert fail with a unique violation: the transaction is rolled back and the
//! group is written again skipping stored keys, which stays the way for a while after
//! ([`CAREFUL_FOR`]), so a device that keeps resending old samples costs one failed insert
//! every ten seconds, not one a group.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use eriop_nats::streams::durable_messages;
use eriop_nats::traffic::TelemetryBatch;
use eriop_nats::NatsError;
use eriop_nats::{Stream, Topology};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use sqlx::PgPool;
use tokio::time::Instant;

use super::{copy, Row, NAME};
use crate::consumer::{nats, ConsumerError};

pub struct TelemetryConsumer {
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub topology: Topology,
    /// At most this many JetStream messages per database transaction.
    pub max_messages: usize,
    /// A group closes once it holds this many rows (a message is never split): a backlog
    /// makes more transactions, not longer ones.
    pub max_rows: usize,
    /// After the first message, gather more for at most this long.
    pub max_delay: Duration,
    /// Transactions in flight at once, each on its own connection.
    pub in_flight: usize,
    /// Rows committed (`eriop_projection_telemetry_rows_total`).
    pub rows: prometheus_client::metrics::counter::Counter,
    /// Whether groups skip stored keys for now (after a conflict).
    pub careful: Careful,
}

/// How long groups are written skipping stored keys after one met a key already stored.
pub const CAREFUL_FOR: Duration = Duration::from_secs(10);

/// Until when groups are written skipping stored keys (see the module's comment).
#[derive(Default)]
pub struct Careful(Mutex<Option<Instant>>);

impl Careful {
    fn until(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // A panic elsewhere cannot leave an Instant half-written: the value is still good.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now(&self) -> bool {
        self.until().is_some_and(|until| Instant::now() < until)
    }

    fn for_a_while(&self) {
        *self.until() = Some(Instant::now() + CAREFUL_FOR);
    }
}

/// How a group's rows go from the staging table into `telemetry`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Insert {
    /// A plain insert: fails with a unique violation if any key is stored already.
    New,
    /// Skips every key stored already (a speculative insertion per row).
    SkippingStored,
}

/// One transaction's worth: its messages (acked after the commit), their rows, and the
/// highest stream sequence among them.
#[derive(Default)]
struct Group {
    messages: Vec<jetstream::Message>,
    rows: Vec<Row>,
    last_sequence: u64,
}

impl TelemetryConsumer {
    /// Consumes until an error; the caller retries with backoff. Transactions in flight when
    /// an error stops the loop are finished (committed and acked, or nakked) first.
    pub async fn consume(&self) -> Result<(), ConsumerError> {
        let mut messages = durable_messages(
            &self.js,
            &self.topology,
            Stream::Telemetry,
            pull::Config {
                durable_name: Some(NAME.to_owned()),
                description: Some("telemetry table".to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                ..Default::default()
            },
            self.max_messages,
        )
        .await
        .map_err(nats)?;
        tracing::info!(projection = NAME, "consuming");
        let mut writes = FuturesUnordered::new();
        let result = self.pump(&mut messages, &mut writes).await;
        while let Some(finished) = writes.next().await {
            if let Err(e) = finished {
                tracing::warn!(projection = NAME, error = %e, "a group in flight was not committed (nakked, will be redelivered)");
            }
        }
        result
    }

    async fn pump<'a>(
        &'a self,
        messages: &mut pull::Stream,
        writes: &mut FuturesUnordered<BoxFuture<'a, Result<(), ConsumerError>>>,
    ) -> Result<(), ConsumerError> {
        let mut group = Group::default();
        // Set by the group's first message; `due` once it has passed.
        let mut deadline: Option<Instant> = None;
        let mut due = false;
        loop {
            let full =
                group.messages.len() >= self.max_messages || group.rows.len() >= self.max_rows;
            if !group.messages.is_empty() && (full || due) && writes.len() < self.in_flight.max(1) {
                writes.push(Box::pin(self.commit(std::mem::take(&mut group))));
                deadline = None;
                due = false;
                continue;
            }
            tokio::select! {
                Some(finished) = writes.next(), if !writes.is_empty() => finished?,
                next = messages.next(), if !full => match next {
                    Some(message) => {
                        self.add(&mut group, message.map_err(nats)?).await?;
                        deadline.get_or_insert_with(|| Instant::now() + self.max_delay);
                    }
                    None => return Err(NatsError::Ended("the TELEMETRY message stream").into()),
                },
                _ = sleep_until(deadline), if deadline.is_some() && !due => due = true,
            }
        }
    }

    /// Decodes a message into the group's rows; what can never become a row goes to `DLQ`.
    async fn add(
        &self,
        group: &mut Group,
        message: jetstream::Message,
    ) -> Result<(), ConsumerError> {
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        group.last_sequence = group.last_sequence.max(sequence);
        match serde_json::from_slice::<TelemetryBatch>(&message.payload) {
            Ok(decoded) => {
                for record in &decoded.records {
                    match Row::from_record(decoded.agency_id, record) {
                        Ok(row) => group.rows.push(row),
                        Err(e) => {
                            self.dead_letter(
                                &message,
                                serde_json::to_vec(record).unwrap_or_default(),
                                e.to_string(),
                            )
                            .await?
                        }
                    }
                }
            }
            Err(e) => {
                self.dead_letter(
                    &message,
                    message.payload.to_vec(),
                    format!("not a telemetry batch: {e}"),
                )
                .await?
            }
        }
        group.messages.push(message);
        Ok(())
    }

    /// Writes a group in one transaction, then acks its messages (or nakks them all).
    async fn commit(&self, group: Group) -> Result<(), ConsumerError> {
        let started = Instant::now();
        let written = match self.write(&group.rows, group.last_sequence).await {
            Ok(written) => written,
            Err(e) => {
                // Ask for them again in a second rather than after the ack wait: the database is
                // usually back soon, and nothing was committed.
                for message in &group.messages {
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
                return Err(e);
            }
        };
        self.rows.inc_by(written);
        for message in &group.messages {
            message.ack().await.map_err(nats)?;
        }
        tracing::debug!(
            projection = NAME,
            messages = group.messages.len(),
            rows = group.rows.len(),
            ms = started.elapsed().as_millis() as u64,
            "committed"
        );
        Ok(())
    }

    /// Rows, latest values and checkpoint, in one transaction; answers the rows that were new.
    async fn write(&self, rows: &[Row], last_sequence: u64) -> Result<u64, ConsumerError> {
        if !self.careful.now() {
            match self.write_as(rows, last_sequence, Insert::New).await {
                Err(ConsumerError::Database(e)) if unique_violation(&e) => {
                    tracing::info!(
                        projection = NAME,
                        rows = rows.len(),
                        "a group held samples already stored (a redelivery): written again skipping them"
                    );
                    self.careful.for_a_while();
                }
                done => return done,
            }
        }
        self.write_as(rows, last_sequence, Insert::SkippingStored)
            .await
    }

    async fn write_as(
        &self,
        rows: &[Row],
        last_sequence: u64,
        insert: Insert,
    ) -> Result<u64, ConsumerError> {
        let mut tx = crate::begin_all_agencies(&self.pool).await?;
        let mut written = 0;
        if !rows.is_empty() {
            // Temporary tables live as long as the pooled connection; their rows as long as
            // the transaction. Not WAL-logged: staging costs no disk write.
            for table in ["telemetry_staging", "telemetry_latest_staging"] {
                sqlx::query(&format!(
                    "CREATE TEMP TABLE IF NOT EXISTS {table}
                       (time timestamptz, agency_id uuid, device_id uuid, function_id text,
                        attribute text, value_double double precision, value_text text, value_json jsonb)
                       ON COMMIT DELETE ROWS"
                ))
                .execute(&mut *tx)
                .await?;
            }
            // A key repeated within the group (an MQTT redelivery in the same group) is
            // written once, the first time, as ON CONFLICT DO NOTHING would keep it.
            let firsts = first_of_each_key(rows);
            copy_into(&mut tx, "telemetry_staging", &firsts).await?;
            written = sqlx::query(&format!(
                "INSERT INTO telemetry ({cols}) SELECT {cols} FROM telemetry_staging{skip}",
                cols = copy::COLUMNS,
                skip = match insert {
                    Insert::New => "",
                    Insert::SkippingStored =>
                        " ON CONFLICT (device_id, function_id, attribute, time) DO NOTHING",
                }
            ))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // Which minutes the rollup must take again, committed with the rows.
            super::rollup::mark(&mut tx, &firsts).await?;
            // The latest value only moves forward in device time: a late sample is stored
            // above, but does not replace a newer value here. The latest of each attribute
            // is picked here (a few hundred rows for a group of many thousands), in key order
            // so that concurrent groups lock rows in the same order.
            copy_into(&mut tx, "telemetry_latest_staging", &latest(rows)).await?;
            sqlx::query(
                "INSERT INTO device_latest (device_id, function_id, attribute, agency_id, time,
                                            value_double, value_text, value_json)
                 SELECT device_id, function_id, attribute, agency_id, time, value_double, value_text, value_json
                   FROM telemetry_latest_staging
                  ORDER BY device_id, function_id, attribute
                 ON CONFLICT (device_id, function_id, attribute) DO UPDATE
                    SET time = excluded.time, value_double = excluded.value_double,
                        value_text = excluded.value_text, value_json = excluded.value_json
                  WHERE excluded.time > device_latest.time",
            )
            .execute(&mut *tx)
            .await?;
        }
        crate::checkpoint::save(&mut tx, NAME, last_sequence).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// A record (or message) that can never become a row: to `DLQ` with the reason. The
    /// message's other records are still written.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        payload: Vec<u8>,
        reason: String,
    ) -> Result<(), ConsumerError> {
        tracing::error!(projection = NAME, %reason, subject = %message.subject, "dead-lettered");
        let letter = eriop_nats::dlq::DeadLetter::new(reason, message.subject.as_str(), payload);
        eriop_nats::dlq::publish(
            &self.js,
            self.topology.dlq_subject(&format!("projections.{NAME}")),
            letter,
        )
        .await
        .map_err(nats)?;
        Ok(())
    }
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// The rows in their order, each natural key (device, function, attribute, time) once: the
/// first row of a key is kept. Times are compared to the microsecond, as PostgreSQL stores
/// them; a key that still meets itself there (sub-microsecond times before 2000, which it
/// rounds the other way) only sends its group down the skipping path.
fn first_of_each_key(rows: &[Row]) -> Vec<&Row> {
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
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
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
fn latest(rows: &[Row]) -> Vec<&Row> {
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
