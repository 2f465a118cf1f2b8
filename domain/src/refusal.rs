//! What kind of "no" an aggregate answered: the API maps a refusal to its answer in one
//! place (the gateway's command path) by this kind, not by each error's variants.

/// Implemented by every aggregate's error.
pub trait Refusal: std::error::Error {
    /// The aggregate does not exist (or is gone): the caller named nothing.
    fn is_not_found(&self) -> bool {
        false
    }
}

impl Refusal for crate::agency::AgencyError {
    fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound)
    }
}

impl Refusal for crate::device::DeviceError {
    fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound)
    }
}

impl Refusal for crate::role::RoleError {
    fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound)
    }
}

impl Refusal for crate::user::UserError {
    fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound)
    }
}

/// Refused only by a conflict with the current state.
impl Refusal for crate::device::DeviceClassError {}

impl Refusal for crate::device::RegistryError {
    fn is_not_found(&self) -> bool {
        matches!(self, Self::NotAssigned)
    }
}

/// A command's name, as recorded in its events' metadata (DESIGN.md rule 1).
pub trait Named {
    fn name(&self) -> &'static str;
}

macro_rules! named {
    ($($command:ty),*) => {$(
        impl Named for $command {
            fn name(&self) -> &'static str {
                <$command>::name(self)
            }
        }
    )*};
}

named!(
    crate::agency::AgencyCommand,
    crate::device::DeviceCommand,
    crate::device::DeviceClassCommand,
    crate::device::RegistryCommand,
    crate::role::RoleCommand,
    crate::user::UserCommand
);
