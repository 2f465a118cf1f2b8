//! ERIOP's gateway. Its folders are its roles:
//!
//! - `http/`: the REST API (routes, extractors, the command path, errors, edge, health);
//! - `services/`: what the API calls (identity, authentication, audit metadata, operator
//!   commands);
//! - `workers/`: what runs beside it (the relay to NATS, the device supervisor);
//!
//! and `app.rs` puts them together (`App::build`, used by `main.rs` and the tests).

pub mod app;
pub mod http;
pub mod services;
mod state;
pub mod tenancy;
pub mod workers;

pub use app::{App, StartupError};
pub use http::edge::REQUEST_ID_HEADER;
// The paths operators' tools and the tests know.
pub use http::openapi;
pub use http::routes::telemetry;
pub use services::{auth, bootstrap, rotation};
pub use workers::relay;
