//! Every parser of the domain that takes a client's text (names, emails, registries,
//! serials, roles, permissions, device requests) on arbitrary strings: an answer, never a
//! panic; what parses has no control character.
#![no_main]

use eriop_domain::agency::AgencyName;
use eriop_domain::device::{DeviceName, DeviceRequest, FundamentumId, RegistryName};
use eriop_domain::role::RoleName;
use eriop_domain::user::Email;
use eriop_domain::{BuiltInRole, Permission};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = AgencyName::parse(text) {
        assert!(!name.as_str().chars().any(char::is_control));
    }
    let _ = DeviceName::parse(text);
    let _ = RegistryName::parse(text);
    let _ = RoleName::parse(text);
    let _ = Email::parse(text);
    let _ = text.parse::<BuiltInRole>();
    let _ = text.parse::<Permission>();
    let (registry, serial) = text.split_once('/').unwrap_or((text, text));
    let _ = FundamentumId::parse(registry, serial);
    if let Ok(parameters) = serde_json::from_str(text) {
        let _ = DeviceRequest::fundamentum(registry, parameters);
    }
});
