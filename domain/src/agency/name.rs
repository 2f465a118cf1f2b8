//! An agency's name, parsed once at the edge ("parse, don't validate").

use serde::Serialize;
use std::fmt;

/// A valid agency name: trimmed, 1 to [`AgencyName::MAX_CHARS`] characters, no control
/// characters (they break logs, CSV exports and terminals).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AgencyName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgencyNameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters, got {len}")]
    TooLong { max: usize, len: usize },
    #[error("must not contain control characters")]
    ControlCharacter,
}

impl AgencyName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, AgencyNameError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(AgencyNameError::Empty);
        }
        let len = trimmed.chars().count();
        if len > Self::MAX_CHARS {
            return Err(AgencyNameError::TooLong {
                max: Self::MAX_CHARS,
                len,
            });
        }
        if trimmed.chars().any(char::is_control) {
            return Err(AgencyNameError::ControlCharacter);
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgencyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
