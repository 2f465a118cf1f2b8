//! A failure talking to NATS, kept typed: the client's own error (its source chain intact, for
//! the logs and for callers that look at it), or a subscription that ended. Every service's
//! NATS failures travel as this, never as a string.

use std::error::Error as StdError;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server or the client refused or failed an operation (publish, ack, stream or
    /// consumer calls, fetching messages).
    #[error(transparent)]
    Client(Box<dyn StdError + Send + Sync>),
    /// A message stream or subscription ended: the connection is gone, start again.
    #[error("{0} ended")]
    Ended(&'static str),
}

impl NatsError {
    /// The client's error (async-nats answers some as boxed errors already).
    pub fn client(e: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Client(e.into())
    }
}
