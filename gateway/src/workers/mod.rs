//! The background workers a gateway runs beside its API: the relay (event store to NATS) and
//! the device supervisor (liveness, command forwarding). Each leads through an advisory lock,
//! so one runs at a time however many gateways there are.

pub mod relay;
pub mod supervisor;
