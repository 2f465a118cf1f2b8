//! Field devices: the classes an agency defines (TALQ `DeviceClass`: which functions a kind
//! of device has) and the devices themselves, each a TALQ device (address = its id) mapped to
//! its Fundamentum identity `(registry, serial)`.

mod aggregate;
mod class;
mod command;
mod names;
mod registry;
pub mod talq;
#[cfg(test)]
mod tests;

pub use aggregate::{Device, DeviceCommand, DeviceError, DeviceEvent, Timeout};
pub use class::{DeviceClass, DeviceClassCommand, DeviceClassError, DeviceClassEvent};
pub use command::{CommandStatus, DeviceRequest, RequestError};
pub use names::{
    DeviceName, FunctionDesc, FunctionId, FundamentumId, NameError, OfflineAfter, RegistryName,
    FUNCTION_TYPES,
};
pub use registry::{Registry, RegistryCommand, RegistryError, RegistryEvent};
