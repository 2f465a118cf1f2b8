//! One module per resource of `/api/v1`: each handler names its permission in its signature
//! (`Allowed<P>`), reads through the scope it is given and changes through the command path.

pub mod agencies;
pub mod audit;
pub mod auth;
pub mod devices;
pub mod roles;
pub mod telemetry;
pub mod users;
