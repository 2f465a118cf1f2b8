//! ERIOP's domain: the aggregates, their commands and events, and the value types they are
//! made of. Pure by design: no I/O, no clock, no randomness. Whatever changes over time
//! (the current time, new ids) is passed in by the caller, so every rule here is testable
//! with plain values.

pub mod agency;
pub mod builtin_role;
pub mod device;
pub mod ids;
pub mod metadata;
pub mod permission;
pub mod refusal;
pub mod role;
pub mod telemetry;
pub mod time;
pub mod trace;
pub mod user;

pub use builtin_role::BuiltInRole;
pub use ids::{AgencyId, UserId};
pub use permission::Permission;
pub use refusal::{Named, Refusal};
pub use time::Timestamp;
