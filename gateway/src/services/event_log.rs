//! Where every aggregate is loaded from and written to: postgres-es's `events` and
//! `snapshots` tables and queries, driven here rather than through cqrs-es's
//! `CqrsFramework`, for two reasons.
//!
//! 1. **A snapshot is the aggregate after its commit.** cqrs-es 0.5 applies a command's
//!    events to the aggregate while deciding it (`EventSink::write`), and its
//!    `PersistedEventStore::commit` applies them once more before writing the snapshot. An
//!    event whose application is not idempotent was then in the snapshot twice:
//!    `MfaEnabled` takes the pending secret, so twice left no secret (a user who turned MFA
//!    on as their 20th event logged in with a password alone), and `RoleAssigned` pushes a
//!    role (twice: a duplicate). Here the snapshot is the aggregate as the decision left it.
//! 2. **Several commands in one transaction, each with its own audit metadata.**
//!    [`EventLog::commit`] takes the metadata per command (cqrs-es takes one map for all
//!    the events of a commit), so the command path can store together the commands that
//!    queued for one hot aggregate (`http::command`, issue 13).
//!
//! Loading is cqrs-es's own (`PersistedEventStore::load_aggregate`: the snapshot, then the
//! events after it), so the stored format is unchanged and the projections, the relay and
//! the audit export read it as before.

use std::collections::HashMap;
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{
    EventStoreAggregateContext, PersistedEventRepository, PersistedEventStore, SerializedEvent,
};
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;

/// The audit metadata of one command (actor, agency, request id, command name).
pub type Metadata = HashMap<String, String>;

/// The event store of aggregate `A`. Cheap to clone (one shared handle).
pub struct EventLog<A: Aggregate> {
    inner: Arc<Inner<A>>,
}

/// Tells the relay, in whichever gateway it runs, that events were stored: an empty core
/// NATS message on `eriop.stored`, sent after the commit. Not `NOTIFY` in the storing
/// transaction (as before, migration 0028): PostgreSQL holds a database-wide lock from a
/// notifying transaction's commit until its WAL is on disk, so every command's commit
/// waited for the one before it. A lost signal costs the relay's poll (a second), nothing
/// more: what to publish is in `relay_pending`, written in the same transaction.
#[derive(Clone)]
pub struct StoredSignal {
    client: async_nats::Client,
    subject: String,
}

impl StoredSignal {
    pub fn new(client: async_nats::Client, topology: &eriop_nats::Topology) -> Self {
        Self {
            client,
            subject: topology.stored_subject(),
        }
    }

    async fn send(&self) {
        if let Err(e) = self
            .client
            .publish(self.subject.clone(), bytes::Bytes::new())
            .await
        {
            tracing::debug!(error = %e, "the relay was not signalled (it polls)");
        }
    }
}

struct Inner<A: Aggregate> {
    /// Whom to tell that events were stored (the relay); no one if never set (tools that
    /// store an event or two leave it to the relay's poll).
    stored: std::sync::OnceLock<StoredSignal>,
    /// Reads: cqrs-es's loading from the snapshot and the events after it.
    loads: PersistedEventStore<PostgresEventRepository, A>,
    /// Writes: the events and the snapshot in one transaction (postgres-es).
    writes: PostgresEventRepository,
    /// A snapshot each time the sequence reaches a multiple of this; none if `None`.
    snapshot_every: Option<usize>,
}

impl<A: Aggregate> Clone for EventLog<A> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<A> EventLog<A>
where
    A: Aggregate<Services = ()>,
{
    /// An aggregate loaded from all its events (short-lived ones: roles, registries).
    pub fn new(pool: PgPool) -> Self {
        Self::of(
            pool.clone(),
            PersistedEventStore::new_event_store(repository(pool)),
            None,
        )
    }

    /// An aggregate loaded from its latest snapshot, made every `every` events.
    pub fn with_snapshots(pool: PgPool, every: usize) -> Self {
        let every = every.max(1);
        Self::of(
            pool.clone(),
            PersistedEventStore::new_snapshot_store(repository(pool), every),
            Some(every),
        )
    }

    fn of(
        pool: PgPool,
        loads: PersistedEventStore<PostgresEventRepository, A>,
        snapshot_every: Option<usize>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                stored: std::sync::OnceLock::new(),
                loads,
                writes: repository(pool),
                snapshot_every,
            }),
        }
    }

    /// Signals `signal` after each commit from now on (the first signal set stays).
    pub fn signal_stored(&self, signal: StoredSignal) {
        let _ = self.inner.stored.set(signal);
    }

    /// The aggregate as stored, with its sequence and snapshot version.
    pub async fn load_aggregate(
        &self,
        id: &str,
    ) -> Result<EventStoreAggregateContext<A>, AggregateError<A::Error>> {
        self.inner.loads.load_aggregate(id).await
    }

    /// Decides `command` on aggregate `id` and stores its events with `metadata`.
    pub async fn execute_with_metadata(
        &self,
        id: &str,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<(), AggregateError<A::Error>> {
        let mut context = self.load_aggregate(id).await?;
        let events = decide(&mut context.aggregate, command)
            .await
            .map_err(AggregateError::UserError)?;
        self.commit(context, vec![(events, metadata)]).await
    }

    /// Stores what each decided command wrote, in order, each event with its command's
    /// metadata, and the snapshot if these events reach its boundary, in one transaction.
    /// `context` is the aggregate as loaded with every one of these events applied (as
    /// [`decide`] leaves it). Someone else's write since the load is
    /// `AggregateConflict`, and nothing is stored.
    pub async fn commit(
        &self,
        context: EventStoreAggregateContext<A>,
        decided: Vec<(Vec<A::Event>, Metadata)>,
    ) -> Result<(), AggregateError<A::Error>> {
        let EventStoreAggregateContext {
            aggregate_id,
            aggregate,
            current_sequence,
            current_snapshot,
        } = context;
        let mut sequence = current_sequence;
        let mut events = Vec::new();
        for (payloads, metadata) in decided {
            for payload in payloads {
                sequence += 1;
                let envelope = EventEnvelope::<A> {
                    aggregate_id: aggregate_id.clone(),
                    sequence,
                    payload,
                    metadata: metadata.clone(),
                };
                events.push(SerializedEvent::try_from(&envelope)?);
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        let snapshot = match self.inner.snapshot_every {
            Some(every) if reaches_snapshot(current_sequence, sequence, every) => Some((
                aggregate_id,
                serde_json::to_value(&aggregate)?,
                current_snapshot.map_or(1, |version| version + 1),
            )),
            _ => None,
        };
        self.inner.writes.persist::<A>(&events, snapshot).await?;
        if let Some(signal) = self.inner.stored.get() {
            signal.send().await;
        }
        Ok(())
    }
}

/// Decides `command` on `aggregate`: its events, already applied to it (`EventSink`).
pub async fn decide<A>(aggregate: &mut A, command: A::Command) -> Result<Vec<A::Event>, A::Error>
where
    A: Aggregate<Services = ()>,
{
    let sink = EventSink::default();
    aggregate.handle(command, &(), &sink).await?;
    Ok(sink.collect().await)
}

fn repository(pool: PgPool) -> PostgresEventRepository {
    PostgresEventRepository::new(pool)
}

/// Whether going from sequence `before` to `after` reaches a multiple of `every` (cqrs-es's
/// rule for when a snapshot is written).
fn reaches_snapshot(before: usize, after: usize, every: usize) -> bool {
    before / every != after / every
}

#[cfg(test)]
mod tests {
    use super::reaches_snapshot;

    #[test]
    fn a_snapshot_is_written_when_the_sequence_reaches_a_multiple() {
        assert!(!reaches_snapshot(0, 19, 20));
        assert!(reaches_snapshot(19, 20, 20));
        assert!(reaches_snapshot(19, 21, 20));
        assert!(!reaches_snapshot(20, 39, 20));
        assert!(reaches_snapshot(18, 45, 20));
        assert!(reaches_snapshot(0, 1, 1));
    }
}
