//! The relay: publishes stored events to the JetStream `EVENTS` stream (DESIGN.md rule 4).
//!
//! * Every event gets a `relay_pending` row in the transaction that stores it (a trigger,
//!   migrations/sql/0002_relay.up.sql), so nothing committed can be missed.
//! * Pending events are published in sequence order per aggregate with
//!   `Nats-Msg-Id = {type}:{id}:{sequence}`, and their rows are deleted only after JetStream
//!   acked them. If an ack fails, later events of that aggregate wait for the next round, so
//!   the order per aggregate holds; a publish whose ack was lost is published again and
//!   JetStream's de-duplication stores it once.
//! * Any number of relays may run (one per gateway replica): a PostgreSQL advisory lock, held
//!   by a dedicated connection, elects one. If its process or connection dies the lock is
//!   released and a standby takes over within a second.
//! * Woken after a commit by the gateway that stored the events (`eriop.stored` on core NATS,
//!   [`crate::services::event_log::StoredSignal`]), with a slow poll as a safety net; while
//!   NATS is down it retries with backoff and catches up when NATS returns. (It was
//!   `NOTIFY` in the storing transaction until migration 0028: that serialized every
//!   command's commit behind the one before it, WAL flush included.)

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use eriop_nats::backoff::Backoff;
use eriop_nats::streams::ensure_streams;
use eriop_nats::NatsError;
use eriop_nats::{StoredEvent, Topology};
use futures::{FutureExt, StreamExt};
use sqlx::postgres::PgConnectOptions;
use sqlx::types::Json;
use sqlx::{Connection, PgPool};

/// The advisory lock key of the relay ("ERIOPRLY" as a big-endian i64).
const LOCK_KEY: i64 = 0x4552_494f_5052_4c59;
/// How often a standby asks for the lock, and how often the leader polls without a signal.
const POLL: Duration = Duration::from_secs(1);

/// What the relay is doing, for health and tests.
#[derive(Debug, Default)]
pub struct RelayStatus {
    leader: AtomicBool,
    published: AtomicU64,
}

impl RelayStatus {
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// Events this relay published and saw acknowledged since it started.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("event store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("NATS: {0}")]
    Nats(#[from] NatsError),
}

pub struct Relay {
    pool: PgPool,
    connect: PgConnectOptions,
    js: jetstream::Context,
    topology: Topology,
    batch_size: i64,
    status: Arc<RelayStatus>,
}

impl Relay {
    pub fn new(pool: PgPool, js: jetstream::Context, topology: Topology, batch_size: u32) -> Self {
        let connect = (*pool.connect_options()).clone();
        Self {
            pool,
            connect,
            js,
            topology,
            batch_size: i64::from(batch_size.max(1)),
            status: Arc::default(),
        }
    }

    pub fn status(&self) -> Arc<RelayStatus> {
        self.status.clone()
    }

    /// Runs forever: standby, leader, and back to standby after losing the database.
    pub async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            if let Err(e) = self.lead().await {
                if self.status.leader.swap(false, Ordering::SeqCst) {
                    tracing::warn!(error = %e, "relay: lost leadership, will retry");
                } else {
                    tracing::warn!(error = %e, "relay: cannot reach the event store, will retry");
                }
                backoff.wait().await;
            } else {
                backoff.reset();
            }
        }
    }

    async fn lead(&self) -> Result<(), RelayError> {
        let mut lock = eriop_nats::db::leader_lock(&self.connect, LOCK_KEY, POLL).await?;
        self.status.leader.store(true, Ordering::SeqCst);
        tracing::info!("relay: active (holds the relay lock)");

        let mut stored = self
            .js
            .client()
            .subscribe(self.topology.stored_subject())
            .await
            .map_err(NatsError::client)?;
        let mut nats_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut streams_ready = false;
        loop {
            let round = async {
                if !streams_ready {
                    ensure_streams(&self.js, &self.topology)
                        .await
                        .map_err(NatsError::client)?;
                    streams_ready = true;
                }
                self.drain().await
            };
            match round.await {
                Ok(_) => nats_backoff.reset(),
                Err(RelayError::Nats(e)) => {
                    // Keep the lock: the store is fine, only NATS is away. Retry with backoff.
                    tracing::warn!(error = %e, attempt = nats_backoff.attempts(), "relay: publishing failed, will retry");
                    nats_backoff.wait().await;
                    continue;
                }
                Err(e) => return Err(e),
            }
            tokio::select! {
                signal = stored.next() => {
                    if signal.is_none() {
                        return Err(NatsError::Ended("the stored-events signal").into());
                    }
                    // One drain answers every signal already here.
                    while let Some(Some(_)) = stored.next().now_or_never() {}
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            // The lock lives exactly as long as this connection: check it is still there.
            lock.ping().await?;
        }
    }

    /// Publishes every pending event; answers how many.
    async fn drain(&self) -> Result<u64, RelayError> {
        let mut total = 0;
        loop {
            // The pending keys first, then each one's envelope by its key (a `LIMIT 1`
            // subquery is not pulled up into a join): a plain join was planned as a merge
            // join that walked the whole event store in key order to find the few pending
            // events (4.7 ms a drain at 9,000 events, 2 ms in the command benchmark, and
            // growing with the store). Now it reads the pending rows and one index entry each.
            let rows: Vec<Json<StoredEvent>> = sqlx::query_scalar(
                "SELECT e.envelope
                   FROM (SELECT aggregate_type, aggregate_id, sequence
                           FROM relay_pending
                          ORDER BY aggregate_type, aggregate_id, sequence
                          LIMIT $1) p
                  CROSS JOIN LATERAL
                        (SELECT s.envelope
                           FROM stored_events s
                          WHERE s.aggregate_type = p.aggregate_type
                            AND s.aggregate_id = p.aggregate_id
                            AND s.sequence = p.sequence
                          LIMIT 1) e
                  ORDER BY p.aggregate_type, p.aggregate_id, p.sequence",
            )
            .bind(self.batch_size)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(total);
            }
            let (published, failure) = self.publish(rows).await;
            if !published.is_empty() {
                let (types, ids, sequences): (Vec<_>, Vec<_>, Vec<_>) = published.into_iter().fold(
                    (Vec::new(), Vec::new(), Vec::new()),
                    |(mut t, mut i, mut s), (ty, id, seq)| {
                        t.push(ty);
                        i.push(id);
                        s.push(seq);
                        (t, i, s)
                    },
                );
                let done = sqlx::query(
                    "DELETE FROM relay_pending
                      WHERE (aggregate_type, aggregate_id, sequence) IN
                            (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]))",
                )
                .bind(&types)
                .bind(&ids)
                .bind(&sequences)
                .execute(&self.pool)
                .await?;
                total += done.rows_affected();
                self.status
                    .published
                    .fetch_add(done.rows_affected(), Ordering::SeqCst);
            }
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }

    /// Publishes a batch, pipelined, and waits for the acks in order. Answers the keys that
    /// were acked, stopping per aggregate at its first failure, and that failure.
    async fn publish(
        &self,
        rows: Vec<Json<StoredEvent>>,
    ) -> (Vec<(String, String, i64)>, Option<RelayError>) {
        let mut in_flight = Vec::with_capacity(rows.len());
        for Json(event) in rows {
            let key = (
                event.aggregate_type.clone(),
                event.aggregate_id.clone(),
                event.sequence,
            );
            let sent = match serde_json::to_vec(&event) {
                Ok(body) => {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(
                        async_nats::header::NATS_MESSAGE_ID,
                        event.message_id().as_str(),
                    );
                    headers.insert("Eriop-Event-Type", event.event_type.as_str());
                    if let Some(trace) = event.metadata.get(eriop_domain::trace::TRACEPARENT) {
                        headers.insert(eriop_domain::trace::TRACEPARENT, trace.as_str());
                    }
                    let subject = self
                        .topology
                        .event_subject(&event.aggregate_type, &event.aggregate_id);
                    self.js
                        .publish_with_headers(subject, headers, body.into())
                        .await
                        .map_err(NatsError::client)
                }
                Err(e) => Err(NatsError::client(e)),
            };
            in_flight.push((key, sent));
        }
        let mut acked = Vec::new();
        let mut blocked: HashSet<(String, String)> = HashSet::new();
        let mut failure = None;
        for (key, sent) in in_flight {
            let aggregate = (key.0.clone(), key.1.clone());
            if blocked.contains(&aggregate) {
                continue;
            }
            let outcome = match sent {
                Ok(ack) => ack.await.map(drop).map_err(NatsError::client),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => acked.push(key),
                Err(e) => {
                    blocked.insert(aggregate);
                    failure.get_or_insert(RelayError::Nats(e));
                }
            }
        }
        (acked, failure)
    }
}
