//! A person (or a service account) who acts on the platform, within one agency.
//!
//! What the domain keeps of a user is what its rules need: the password hash (never the
//! password), the lockout state, the MFA state. Personal data (email, display name) arrives
//! already sealed by the caller with the user's own data key ([`Sealed`]), so that erasing
//! the key erases the person while the history stays whole (DESIGN.md rule 10).

mod aggregate;
mod command;
mod email;
mod event;
mod lockout;
mod password;

pub use aggregate::{User, UserError, UserStatus};
pub use command::{LoginCheck, MfaProof, UserCommand};
pub use email::{Email, EmailError};
pub use event::UserEvent;
pub use lockout::{Lockout, LockoutPolicy};
pub use password::{PasswordError, PasswordPolicy};

use serde::{Deserialize, Serialize};

/// Data encrypted by the caller (base64 of nonce and ciphertext). Opaque to the domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(pub String);

#[cfg(test)]
mod tests;
