//! The HTTP surface: routes, the extractors that authenticate and authorize a request (and
//! hand out the agency scope), the one command path, errors as problem+json, the edge
//! (request ids, access log, CORS, limits) and health.

pub mod answers;
pub mod breaker;
pub mod caller;
pub mod command;
pub mod edge;
pub mod error;
pub mod extract;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod paging;
pub mod permission;
pub mod router;
pub mod routes;
pub mod scope;
pub mod turns;
pub mod whole;

pub use permission::Allowed;
pub use scope::{AgencyScope, PlatformScope};
