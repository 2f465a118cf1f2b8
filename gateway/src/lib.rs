//! ERIOP's gateway: the REST API (command and query side), its edge (request ids, access
//! log, problem+json errors, CORS, body limits, health) and the relay that publishes the
//! event store to NATS.

mod agencies;
pub mod app;
mod audit;
mod audit_routes;
pub mod auth;
mod auth_routes;
pub mod bootstrap;
mod command;
pub mod devices;
mod edge;
mod error;
mod extract;
mod health;
mod identity;
pub mod openapi;
mod paging;
pub mod relay;
mod roles;
pub mod rotation;
mod state;
pub mod telemetry;
pub mod tenancy;
mod users;

pub use app::{App, StartupError};
pub use edge::REQUEST_ID_HEADER;
