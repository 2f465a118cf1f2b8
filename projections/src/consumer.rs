//! The durable pull consumer that feeds a read model from `EVENTS`.
//!
//! For each message: apply it and advance the projection's checkpoint in one transaction,
//! commit, then ack (DESIGN.md rule 5). A crash between commit and ack means a redelivery,
//! which the per-aggregate version turns into a no-op. An undecodable message goes to the
//! dead-letter stream with its reason and is terminated, so it never blocks the others. A
//! lost database or NATS connection ends the round; the caller retries with backoff, and the
//! durable consumer resumes where the acks stopped.
//!
//! Events already delivered when one arrives (a burst of commands) are applied together in
//! one transaction, up to [`MAX_BATCH`], then acked together: one commit's wait for many
//! events, so a burst does not queue behind one fsync per event. Outside bursts a batch is
//! one event. A batch in which any event is undecodable or ahead of its predecessor is
//! rolled back and its events handled one by one, as above, so those cases behave exactly
//! as without batching.

use eriop_domain::trace::{TraceContext, TRACEPARENT};
use eriop_nats::NatsError;
use std::time::Duration;
use tracing::Instrument;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use eriop_nats::progress::Hint;
use eriop_nats::streams::durable_messages;
use eriop_nats::{StoredEvent, Stream, Topology};
use futures::{FutureExt, StreamExt};
use sqlx::PgPool;

use crate::{Outcome, ProjectionError, ReadModel};

/// When an event arrives before one it depends on, look again after this long.
const GAP_RETRY: Duration = Duration::from_millis(500);
/// At most this many events in one transaction.
pub const MAX_BATCH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("NATS: {0}")]
    Nats(#[from] NatsError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Rows that cannot be encoded for COPY (a bug: they came from typed records).
    #[error("encoding rows for COPY: {0}")]
    Encode(String),
}

pub(crate) fn nats(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ConsumerError {
    ConsumerError::Nats(NatsError::client(e))
}

pub struct Consumer {
    pub model: ReadModel,
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub topology: Topology,
}

impl Consumer {
    /// Consumes until an error; the caller decides about retrying.
    pub async fn consume(&self) -> Result<(), ConsumerError> {
        let mut messages = durable_messages(
            &self.js,
            &self.topology,
            Stream::Events,
            pull::Config {
                durable_name: Some(self.model.name().to_owned()),
                description: Some(format!("{} read model", self.model.name())),
                filter_subject: self.topology.events_of(self.model.aggregate_type()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 1_000,
                ..Default::default()
            },
            200,
        )
        .await
        .map_err(nats)?;
        tracing::info!(projection = self.model.name(), "consuming");
        while let Some(message) = messages.next().await {
            let mut batch = vec![message.map_err(nats)?];
            // What has already arrived joins the batch; nothing is waited for.
            let mut stopped = None;
            while batch.len() < MAX_BATCH {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => batch.push(message),
                    Some(Some(Err(e))) => {
                        stopped = Some(nats(e));
                        break;
                    }
                    Some(None) => {
                        stopped = Some(NatsError::Ended("the message stream").into());
                        break;
                    }
                    None => break,
                }
            }
            self.handle_batch(batch).await?;
            if let Some(e) = stopped {
                return Err(e);
            }
        }
        Err(NatsError::Ended("the message stream").into())
    }

    /// Applies a batch in one transaction, or (one event, or a batch that cannot go
    /// together) each event on its own.
    async fn handle_batch(&self, mut batch: Vec<jetstream::Message>) -> Result<(), ConsumerError> {
        if batch.len() > 1 && self.apply_together(&batch).await? {
            return Ok(());
        }
        for message in batch.drain(..) {
            self.handle(message).await?;
        }
        Ok(())
    }

    /// Applies every event of `batch` and the checkpoint in one transaction, then acks them
    /// all. Answers false, with nothing written or acked, when an event is undecodable or
    /// ahead of its predecessor: the caller handles those one by one.
    async fn apply_together(&self, batch: &[jetstream::Message]) -> Result<bool, ConsumerError> {
        let mut events = Vec::with_capacity(batch.len());
        for message in batch {
            match serde_json::from_slice::<StoredEvent>(&message.payload) {
                Ok(event) => events.push(event),
                Err(_) => return Ok(false),
            }
        }
        let mut tx = crate::begin_all_agencies(&self.pool).await?;
        let mut last_sequence = 0;
        let mut applied = Vec::with_capacity(batch.len());
        for (message, event) in batch.iter().zip(&events) {
            let span = self.span(message);
            let outcome = match self
                .model
                .apply(&mut tx, event)
                .instrument(span.clone())
                .await
            {
                Ok(Outcome::Gap { .. }) | Err(ProjectionError::Undecodable(_)) => return Ok(false),
                Ok(outcome) => outcome,
                Err(ProjectionError::Database(e)) => return Err(e.into()),
            };
            let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            last_sequence = last_sequence.max(sequence);
            applied.push((span, outcome));
        }
        crate::checkpoint::save(&mut tx, self.model.name(), last_sequence).await?;
        tx.commit().await?;
        self.hint(&events).await;
        for ((message, event), (span, outcome)) in batch.iter().zip(&events).zip(applied) {
            message.ack().await.map_err(nats)?;
            span.in_scope(|| {
                tracing::info!(
                    event_type = %event.event_type,
                    aggregate_id = %event.aggregate_id,
                    sequence = event.sequence,
                    already = outcome == Outcome::AlreadyApplied,
                    batch = batch.len(),
                    "applied"
                );
            });
        }
        Ok(true)
    }

    async fn handle(&self, message: jetstream::Message) -> Result<(), ConsumerError> {
        let span = self.span(&message);
        self.apply(message).instrument(span).await
    }

    /// The span an event is applied in.
    fn span(&self, message: &jetstream::Message) -> tracing::Span {
        // The trace of the request that caused the event: from the NATS header the relay
        // set, else from the event's metadata (an event relayed before traces existed has
        // neither). Every line logged while applying it carries the trace id.
        let header = message
            .headers
            .as_ref()
            .and_then(|h| h.get(TRACEPARENT))
            .map(|v| v.as_str().to_owned());
        let from_metadata = || {
            serde_json::from_slice::<serde_json::Value>(&message.payload)
                .ok()
                .and_then(|e| e["metadata"][TRACEPARENT].as_str().map(str::to_owned))
        };
        let parent = header
            .or_else(from_metadata)
            .and_then(|t| TraceContext::parse(&t));
        let trace_id = parent.map(|t| t.trace_id()).unwrap_or_default();
        let span = tracing::info_span!(
            "event",
            projection = self.model.name(),
            trace_id,
            otel.name = %format_args!("project {}", self.model.name()),
            otel.kind = "consumer",
        );
        // Exported as the child of the request's span (an event without a trace is not
        // exported as a trace of its own: it would be a root with nothing to follow).
        if parent.is_some() {
            eriop_nats::otel::continue_trace(&span, parent);
        }
        span
    }

    async fn apply(&self, message: jetstream::Message) -> Result<(), ConsumerError> {
        let stream_sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let event: StoredEvent = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(e) => {
                return self
                    .dead_letter(message, format!("not a stored event: {e}"))
                    .await
            }
        };
        let mut tx = crate::begin_all_agencies(&self.pool).await?;
        let outcome = match self.model.apply(&mut tx, &event).await {
            Ok(outcome) => outcome,
            Err(ProjectionError::Undecodable(reason)) => {
                drop(tx);
                return self.dead_letter(message, reason).await;
            }
            Err(ProjectionError::Database(e)) => return Err(e.into()),
        };
        if let Outcome::Gap { have } = outcome {
            drop(tx);
            tracing::warn!(
                aggregate_id = %event.aggregate_id,
                sequence = event.sequence,
                have,
                "event ahead of its predecessor; will retry"
            );
            message
                .ack_with(AckKind::Nak(Some(GAP_RETRY)))
                .await
                .map_err(nats)?;
            return Ok(());
        }
        crate::checkpoint::save(&mut tx, self.model.name(), stream_sequence).await?;
        tx.commit().await?;
        self.hint(std::slice::from_ref(&event)).await;
        message.ack().await.map_err(nats)?;
        tracing::info!(
            event_type = %event.event_type,
            aggregate_id = %event.aggregate_id,
            sequence = event.sequence,
            already = outcome == Outcome::AlreadyApplied,
            "applied"
        );
        Ok(())
    }

    /// Says on core NATS that the read model shows `events` now, for a gateway waiting to
    /// answer their commands ([`eriop_nats::progress`]): one hint an aggregate, its last
    /// version. After the commit, fire and forget: a hint that is lost only makes a waiter
    /// look later, so a failure here is no reason to redeliver what is committed.
    async fn hint(&self, events: &[StoredEvent]) {
        let mut last: Vec<&StoredEvent> = Vec::with_capacity(events.len());
        for event in events {
            match last.iter_mut().find(|e| {
                e.aggregate_id == event.aggregate_id && e.aggregate_type == event.aggregate_type
            }) {
                Some(seen) if seen.sequence < event.sequence => *seen = event,
                Some(_) => {}
                None => last.push(event),
            }
        }
        let client = self.js.client();
        for event in last {
            let Some(hint) = Hint::of(&event.aggregate_type, &event.aggregate_id, event.sequence)
            else {
                continue;
            };
            if let Err(e) = client
                .publish(hint.subject(&self.topology), hint.payload())
                .await
            {
                tracing::debug!(error = %e, "progress hint not sent");
            }
        }
    }

    /// Publishes the message to `DLQ` with the reason, then terminates it.
    async fn dead_letter(
        &self,
        message: jetstream::Message,
        reason: String,
    ) -> Result<(), ConsumerError> {
        tracing::error!(projection = self.model.name(), %reason, subject = %message.subject, "dead-lettered");
        let subject = self
            .topology
            .dlq_subject(&format!("projections.{}", self.model.name()));
        let letter = eriop_nats::dlq::DeadLetter::new(
            reason,
            message.subject.as_str(),
            message.payload.to_vec(),
        );
        eriop_nats::dlq::publish(&self.js, subject, letter)
            .await
            .map_err(nats)?;
        message.ack_with(AckKind::Term).await.map_err(nats)?;
        Ok(())
    }
}
