//! The background workers a gateway runs beside its API: the relay (event store to NATS) and
//! the device supervisor (liveness, command forwarding), each leading through an advisory
//! lock so one runs at a time however many gateways there are; and, in every gateway, the
//! follower of the read models' progress (read your writes without polling).

pub mod progress;
pub mod relay;
pub mod supervisor;
