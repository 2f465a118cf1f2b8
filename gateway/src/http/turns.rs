//! Commands to one aggregate take turns, and those that queued during a turn are decided
//! together in the next one (group commit, issue 13).
//!
//! With 16 renames of one agency at once, each command used to wait for the ones before it,
//! one load, one decision and one transaction (with its fsync) each: about 3.5 ms a turn, so
//! the 16th waited some 55 ms. Now the command that gets the turn takes every command queued
//! for its aggregate (at most [`MOST_AT_ONCE`]), loads the aggregate once, decides them in
//! the order they came, each on the state the ones before it left, and stores all their
//! events in one transaction, each event with its own command's audit metadata. A command
//! the domain refuses is answered its refusal and leaves the others as if it had never
//! been sent; a concurrent write elsewhere (another replica, the device supervisor) makes
//! the whole group decided again on fresh state.
//!
//! The group is carried out by a task of its own, so a client that hangs up cannot cancel
//! the others' commands half-way. A command whose client hung up while it waited in the
//! queue may still be stored, as one whose client hung up during its commit always could.
//! Turns are per gateway process: what another replica writes is met by the optimistic
//! check, as before.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use cqrs_es::{Aggregate, AggregateError};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::services::event_log::{decide, EventLog, Metadata};

/// How many commands one turn decides and stores at most: bounds a transaction and the time
/// a turn holds its stripe; the others wait for the next turn.
pub const MOST_AT_ONCE: usize = 64;
/// How often a group is decided again after a concurrent write to its aggregate.
const MAX_CONFLICT_RETRIES: u32 = 8;

type Answer<A> = Result<(), AggregateError<<A as Aggregate>::Error>>;

/// A command waiting for its aggregate's turn.
struct Queued<A: Aggregate> {
    command: A::Command,
    metadata: Metadata,
    answer: oneshot::Sender<Answer<A>>,
}

/// An aggregate: its type and id.
type Key = (&'static str, Uuid);

/// Runs `command` on aggregate `id`, with the commands queued with it.
pub async fn run<A>(
    log: &EventLog<A>,
    id: Uuid,
    command: A::Command,
    metadata: Metadata,
) -> Answer<A>
where
    A: Aggregate<Services = ()> + Clone + 'static,
    A::Command: Clone + Send + Sync + 'static,
    A::Error: Send,
{
    let key: Key = (A::TYPE, id);
    let (answer, mut answered) = oneshot::channel();
    queue(
        key,
        Box::new(Queued::<A> {
            command,
            metadata,
            answer,
        }),
    );
    loop {
        let turn = stripe(key).lock().await;
        // Decided in an earlier turn (its group took this command): answered before that
        // turn ended, so the answer is here now.
        match answered.try_recv() {
            Ok(done) => return done,
            Err(oneshot::error::TryRecvError::Closed) => return Err(lost()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        // This command's group, or the commands queued before it if more than a group's
        // worth came first (then the next turn again).
        let group = take::<A>(key);
        let log = log.clone();
        // Awaited, not cancelled with this request: dropping the handle leaves it running.
        let _ = tokio::spawn(async move {
            decide_and_store(&log, id, group).await;
            // Every command of the group is answered before the next turn starts.
            drop(turn);
        })
        .await;
    }
}

/// Decides `group` on one load of aggregate `id`, stores what was accepted in one
/// transaction, and answers each command.
async fn decide_and_store<A>(log: &EventLog<A>, id: Uuid, group: Vec<Queued<A>>)
where
    A: Aggregate<Services = ()> + Clone,
    A::Command: Clone,
{
    let id = id.to_string();
    let mut attempts = 0;
    loop {
        let mut context = match log.load_aggregate(&id).await {
            Ok(context) => context,
            Err(e) => return answer_all(group, &e),
        };
        let mut decided = Vec::with_capacity(group.len());
        let mut refusals = Vec::with_capacity(group.len());
        for queued in &group {
            let before = context.aggregate.clone();
            match decide(&mut context.aggregate, queued.command.clone()).await {
                Ok(events) => {
                    decided.push((events, queued.metadata.clone()));
                    refusals.push(None);
                }
                Err(refused) => {
                    // As if never sent: the next command is decided on the state before it.
                    context.aggregate = before;
                    refusals.push(Some(refused));
                }
            }
        }
        match log.commit(context, decided).await {
            Ok(()) => {
                for (queued, refusal) in group.into_iter().zip(refusals) {
                    let _ = queued
                        .answer
                        .send(refusal.map_or(Ok(()), |r| Err(AggregateError::UserError(r))));
                }
                return;
            }
            Err(AggregateError::AggregateConflict) if attempts < MAX_CONFLICT_RETRIES => {
                attempts += 1;
            }
            Err(e) => return answer_all(group, &e),
        }
    }
}

/// Answers every command of a group that could not be stored with the same failure.
fn answer_all<A: Aggregate>(group: Vec<Queued<A>>, failure: &AggregateError<A::Error>) {
    for queued in group {
        let _ = queued.answer.send(Err(copy_of(failure)));
    }
}

/// The same failure for another command of the group (errors are not `Clone`): its kind
/// (what HTTP answer it becomes) and its message.
fn copy_of<E: std::error::Error>(failure: &AggregateError<E>) -> AggregateError<E> {
    let message = || Box::new(std::io::Error::other(failure.to_string()));
    match failure {
        AggregateError::AggregateConflict => AggregateError::AggregateConflict,
        AggregateError::DatabaseConnectionError(_) => {
            AggregateError::DatabaseConnectionError(message())
        }
        AggregateError::UnexpectedError(cause)
            if cause
                .downcast_ref::<sqlx::Error>()
                .is_some_and(crate::http::error::database_unreachable) =>
        {
            AggregateError::DatabaseConnectionError(message())
        }
        AggregateError::DeserializationError(_) => AggregateError::DeserializationError(message()),
        AggregateError::UserError(_) | AggregateError::UnexpectedError(_) => {
            AggregateError::UnexpectedError(message())
        }
    }
}

/// A command's group ended without answering it (its task panicked).
fn lost<E: std::error::Error>() -> AggregateError<E> {
    AggregateError::UnexpectedError(Box::new(std::io::Error::other(
        "the command's group ended without an answer",
    )))
}

/// The commands waiting for their aggregate's turn, by aggregate (each a `Queued<A>` of that
/// aggregate's type, erased: one map serves every aggregate type).
type Waiting = Mutex<HashMap<Key, Vec<Box<dyn Any + Send>>>>;

fn waiting() -> &'static Waiting {
    static WAITING: OnceLock<Waiting> = OnceLock::new();
    WAITING.get_or_init(Mutex::default)
}

fn queue(key: Key, queued: Box<dyn Any + Send>) {
    let mut waiting = waiting()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    waiting.entry(key).or_default().push(queued);
}

/// The first [`MOST_AT_ONCE`] commands queued for `key`, in the order they came.
fn take<A: Aggregate + 'static>(key: Key) -> Vec<Queued<A>>
where
    A::Command: 'static,
{
    let mut waiting = waiting()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(queued) = waiting.get_mut(&key) else {
        return Vec::new();
    };
    let group: Vec<_> = queued.drain(..queued.len().min(MOST_AT_ONCE)).collect();
    if queued.is_empty() {
        waiting.remove(&key);
    }
    drop(waiting);
    // Keyed by the aggregate's type: every entry under `key` is a `Queued<A>`.
    group
        .into_iter()
        .filter_map(|q| q.downcast::<Queued<A>>().ok().map(|q| *q))
        .collect()
}

/// The turn of aggregate `key`: striped (a fixed set of locks, chosen by a hash of the
/// aggregate), so there is nothing to clean up and two aggregates rarely share a turn.
fn stripe(key: Key) -> &'static tokio::sync::Mutex<()> {
    use std::hash::{Hash, Hasher};
    const STRIPES: usize = 1024;
    static TURNS: OnceLock<Vec<tokio::sync::Mutex<()>>> = OnceLock::new();
    let turns = TURNS.get_or_init(|| (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    #[allow(clippy::cast_possible_truncation)]
    &turns[(hasher.finish() % STRIPES as u64) as usize]
}
