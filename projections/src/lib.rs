//! ERIOP's projectors: durable JetStream consumers that keep the read models, and the
//! rebuild that replays the event store into them (DESIGN.md rule 2).

pub mod agencies;
pub mod app;
pub mod consumer;
pub mod read_model;
pub mod rebuild;
pub mod users;

pub use app::App;
pub use read_model::ReadModel;

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Seen before (a redelivery, or the rebuild got there first): nothing changed.
    AlreadyApplied,
    /// An earlier event of the aggregate has not been applied yet: try again later.
    Gap {
        have: i64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The message can never be applied: it goes to the dead-letter stream.
    #[error("undecodable event: {0}")]
    Undecodable(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}
