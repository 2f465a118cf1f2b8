//! The telemetry model: a durable consumer of `TELEMETRY` that writes the telemetry table in
//! batches with binary COPY (DESIGN.md, "Telemetry model"), and keeps each attribute's
//! latest value and a rollup by minute ([`rollup`]).
//!
//! Exactly once, by construction: the natural key (device, function, attribute, device
//! time) is unique, new rows are copied in and a stored key fails the copy, and the group is
//! then written again skipping stored keys ([`store`]); rows and the stream checkpoint commit
//! in one transaction, and only then are the messages acked. A NATS redelivery, or an MQTT
//! redelivery that the bridge published twice, lands once.

mod consumer;
mod copy;
mod record;
pub mod rollup;
pub mod store;

pub use consumer::TelemetryConsumer;
pub use record::{Row, RowError};

/// The projection's name: its durable consumer and its checkpoint row.
pub const NAME: &str = "telemetry";
