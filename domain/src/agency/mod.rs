//! The agency: a public body (city, utility, emergency service) that operates devices on the
//! platform. It is the tenant boundary of everything else.

mod aggregate;
mod command;
mod event;
mod name;

pub use aggregate::{Agency, AgencyError, AgencyStatus};
pub use command::AgencyCommand;
pub use event::AgencyEvent;
pub use name::{AgencyName, AgencyNameError};

#[cfg(test)]
mod tests;
