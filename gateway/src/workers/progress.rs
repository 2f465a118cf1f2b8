//! Which writes the read models show, as the projections say it on core NATS
//! ([`eriop_nats::progress`]): a command waiting to answer (DESIGN.md rule 3) is woken when
//! its row's version is projected, instead of looking every few milliseconds (issue 13:
//! those looks were a third of the command path's statements, and a look that came just
//! before the row added up to 8 ms to the answer).
//!
//! Every gateway subscribes (each may have waiters); unlike the relay and the supervisor it
//! needs no lead. Only rows someone waits for are tracked, so memory follows the commands in
//! flight, not the number of aggregates. A hint about a user or an agency also makes the
//! gateway forget the callers' standings that name it ([`Standings`]), and a hint about a row
//! a kept answer may show makes it forget those answers ([`Answers`]), before any waiter
//! wakes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use eriop_nats::backoff::Backoff;
use eriop_nats::progress::Hint;
use eriop_nats::Topology;
use futures::StreamExt;

use crate::http::answers::Answers;
use crate::services::identity::Standings;
use tokio::sync::watch;
use uuid::Uuid;

type Key = (String, Uuid);

/// The versions projected of the rows someone waits for.
pub struct Progress {
    topology: Topology,
    watched: Mutex<HashMap<Key, Watched>>,
    /// Subscribed (the client given to [`Progress::run`] follows the hints)...
    subscribed: AtomicBool,
    /// ... on this client, which must be connected for hints to arrive.
    client: std::sync::OnceLock<async_nats::Client>,
    /// Callers' standings, kept while hints arrive and forgotten by them.
    standings: Arc<Standings>,
    /// Answers to hot reads, kept while hints arrive and forgotten by any.
    answers: Arc<Answers>,
}

struct Watched {
    version: watch::Sender<i64>,
    watchers: usize,
}

impl Progress {
    pub fn new(topology: Topology, standings: Arc<Standings>, answers: Arc<Answers>) -> Arc<Self> {
        Arc::new(Self {
            topology,
            watched: Mutex::new(HashMap::new()),
            subscribed: AtomicBool::new(false),
            client: std::sync::OnceLock::new(),
            standings,
            answers,
        })
    }

    /// The callers' standings that this gateway's hints keep honest.
    pub fn standings(&self) -> &Standings {
        &self.standings
    }

    /// The answers to hot reads that this gateway's hints keep honest.
    pub fn answers(&self) -> &Answers {
        &self.answers
    }

    /// Whether hints are arriving, as far as this gateway can tell: it is subscribed, and
    /// its NATS connection is up now (asked at each wait, not at the last hint).
    pub fn live(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
            && self.client.get().is_some_and(|c| {
                matches!(
                    c.connection_state(),
                    async_nats::connection::State::Connected
                )
            })
    }

    /// Starts following one row; what is projected of it from now on wakes the watch.
    pub fn watch(self: &Arc<Self>, aggregate_type: &str, id: Uuid) -> Watch {
        let key = (aggregate_type.to_owned(), id);
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = watched.entry(key.clone()).or_insert_with(|| Watched {
            version: watch::channel(0).0,
            watchers: 0,
        });
        entry.watchers += 1;
        Watch {
            version: entry.version.subscribe(),
            progress: Arc::clone(self),
            key,
        }
    }

    /// A hint arrived: wakes whoever watches its row, if anyone does.
    pub fn saw(&self, hint: Hint) {
        // A kept answer may show the row the hint is about (a device, its class...): all go,
        // which costs reads only while such commands are being made.
        if Answers::shows(&hint.aggregate_type) {
            self.answers.forget_all();
        }
        if Standings::depends_on(&hint.aggregate_type) {
            self.standings.forget(hint.id);
        }
        let key = (hint.aggregate_type, hint.id);
        let watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = watched.get(&key) {
            entry.version.send_if_modified(|v| {
                let newer = hint.version > *v;
                if newer {
                    *v = hint.version;
                }
                newer
            });
        }
    }

    fn unwatch(&self, key: &Key) {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = watched.get_mut(key) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                watched.remove(key);
            }
        }
    }

    /// How many rows are watched now (for tests: none is left behind).
    pub fn watched(&self) -> usize {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Follows the hints until the task is aborted. A subscription that ends (the client
    /// closed) is made again after a backoff; while there is none, waiters look often.
    pub async fn run(self: Arc<Self>, client: async_nats::Client) {
        let client = self.client.get_or_init(|| client).clone();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match client.subscribe(self.topology.projected_all()).await {
                Ok(mut hints) => {
                    backoff.reset();
                    self.subscribed.store(true, Ordering::Relaxed);
                    while let Some(message) = hints.next().await {
                        if let Some(hint) =
                            Hint::parse(&self.topology, &message.subject, &message.payload)
                        {
                            self.saw(hint);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot follow the read models' progress"),
            }
            self.subscribed.store(false, Ordering::Relaxed);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// One waiter's view of one row; stops following it when dropped.
pub struct Watch {
    version: watch::Receiver<i64>,
    progress: Arc<Progress>,
    key: Key,
}

impl Watch {
    /// Resolves once a hint says the row is at `version` or later (never, if the row's
    /// entry went away, which a live `Watch` prevents).
    pub async fn reached(&mut self, version: i64) {
        if self.version.wait_for(|v| *v >= version).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.progress.unwatch(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn hint(id: Uuid, version: i64) -> Hint {
        Hint {
            aggregate_type: "agency".into(),
            id,
            version,
        }
    }

    #[tokio::test]
    async fn a_watch_wakes_at_its_version_and_not_before() {
        let progress = Progress::new(
            Topology::new("t"),
            Arc::new(Standings::new(Duration::ZERO)),
            Arc::new(Answers::new(Duration::ZERO, 0)),
        );
        let id = Uuid::now_v7();
        let mut watch = progress.watch("agency", id);
        progress.saw(hint(id, 2));
        progress.saw(hint(Uuid::now_v7(), 9));
        assert!(
            watch.reached(3).now_or_never().is_none(),
            "woken before version 3 was projected"
        );
        progress.saw(hint(id, 3));
        watch.reached(3).await;
        // An older hint after a newer one changes nothing.
        progress.saw(hint(id, 1));
        watch.reached(3).await;
    }

    #[tokio::test]
    async fn rows_nobody_watches_are_not_kept() {
        let progress = Progress::new(
            Topology::new("t"),
            Arc::new(Standings::new(Duration::ZERO)),
            Arc::new(Answers::new(Duration::ZERO, 0)),
        );
        assert!(
            !progress.live(),
            "not following anything: waiters must poll"
        );
        let id = Uuid::now_v7();
        progress.saw(hint(id, 1));
        assert_eq!(progress.watched(), 0);
        let first = progress.watch("agency", id);
        let second = progress.watch("agency", id);
        let other = progress.watch("user", id);
        assert_eq!(progress.watched(), 2);
        drop(first);
        assert_eq!(progress.watched(), 2);
        drop(second);
        drop(other);
        assert_eq!(progress.watched(), 0);
    }
}
