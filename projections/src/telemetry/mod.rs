//! The telemetry model: a durable consumer of `TELEMETRY` that writes the telemetry table in
//! batches with binary COPY (DESIGN.md, "Telemetry model"), and keeps each attribute's
//! latest value and a rollup by minute ([`rollup`]).
//!
//! Exactly once, by construction: rows go through a staging table and one insert that skips
//! every natural key (device, function, attribute, device time) already stored; rows and the
//! stream checkpoint commit in one transaction, and only then are the messages acked. A NATS
//! redelivery, or an MQTT redelivery that the bridge published twice, lands once.

mod consumer;
mod copy;
mod record;
pub mod rollup;
pub mod store;

pub use consumer::TelemetryConsumer;
pub use record::{Row, RowError};

/// The projection's name: its durable consumer and its checkpoint row.
pub const NAME: &str = "telemetry";
