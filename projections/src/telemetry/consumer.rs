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

use super::store::{self, Insert, WayIn};
use super::{Row, NAME};
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
    /// How new rows reach the table, once found (see [`store::WayIn`]).
    pub way_in: Known<WayIn>,
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

/// A value found once and kept, until an error says it may have changed.
pub struct Known<T>(Mutex<Option<T>>);

impl<T> Default for Known<T> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<T: Clone> Known<T> {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<T>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self) -> Option<T> {
        self.slot().clone()
    }

    fn set(&self, value: T) {
        *self.slot() = Some(value);
    }

    fn forget(&self) {
        *self.slot() = None;
    }
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
        let way = match self.way_in.get() {
            Some(way) => way,
            None => {
                let way = store::way_in(&mut tx).await?;
                tracing::info!(projection = NAME, way = ?way, "how new telemetry rows are written");
                self.way_in.set(way.clone());
                way
            }
        };
        let written = match store::rows(&mut tx, rows, insert, &way).await {
            Ok(written) => written,
            Err(ConsumerError::Database(e)) if !unique_violation(&e) => {
                // A role or a grant taken away, row-level security turned on: the way is
                // found again for the next group (this one is nakked and comes back).
                self.way_in.forget();
                return Err(ConsumerError::Database(e));
            }
            Err(e) => return Err(e),
        };
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
