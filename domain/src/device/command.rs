//! What an operator can ask of a device, and where the request stands.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("level must be between 0 and 100 (percent)")]
    Level,
    #[error("ramp time must be at most 3600 seconds")]
    Ramp,
    #[error("expiration must be after now")]
    Expiration,
    #[error("command name must be 1 to 64 lower-case letters, digits, '_' or '-'")]
    CommandName,
    #[error("parameters must be a JSON object")]
    Parameters,
}

/// A request to a device: a TALQ override of its light level, or a Fundamentum command
/// (`reboot`, ...) passed through with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeviceRequest {
    /// TALQ `OverrideCommand` on the device's lamp actuators. No level: end the override,
    /// the device resumes its program.
    Override {
        level: Option<u8>,
        expiration: Option<Timestamp>,
        ramp_seconds: Option<u32>,
    },
    Fundamentum {
        name: String,
        parameters: serde_json::Value,
    },
}

impl DeviceRequest {
    pub fn light_override(
        level: Option<i64>,
        expiration: Option<Timestamp>,
        ramp_seconds: Option<i64>,
        now: Timestamp,
    ) -> Result<Self, RequestError> {
        let level = level
            .map(|l| {
                u8::try_from(l)
                    .ok()
                    .filter(|l| *l <= 100)
                    .ok_or(RequestError::Level)
            })
            .transpose()?;
        let ramp_seconds = ramp_seconds
            .map(|r| {
                u32::try_from(r)
                    .ok()
                    .filter(|r| *r <= 3600)
                    .ok_or(RequestError::Ramp)
            })
            .transpose()?;
        if expiration.is_some_and(|e| e <= now) {
            return Err(RequestError::Expiration);
        }
        Ok(Self::Override {
            level,
            expiration,
            ramp_seconds,
        })
    }

    pub fn fundamentum(name: &str, parameters: serde_json::Value) -> Result<Self, RequestError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !ok {
            return Err(RequestError::CommandName);
        }
        if !parameters.is_object() {
            return Err(RequestError::Parameters);
        }
        Ok(Self::Fundamentum {
            name: name.to_owned(),
            parameters,
        })
    }
}

/// Where a command stands. `pending` until the device first answers; Fundamentum's replies
/// (`commands/{id}`) move it to `ongoing`, `retry`, and finally `success` or `failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Pending,
    Ongoing,
    Retry,
    Success,
    Failure,
}

impl CommandStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ongoing => "ongoing",
            Self::Retry => "retry",
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Success | Self::Failure)
    }
}
