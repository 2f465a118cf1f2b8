//! The application services behind the HTTP surface: identity (login, sessions, MFA,
//! administration, personal data), the authentication mechanics, the audit metadata and the
//! audit export, and the operators' one-off commands (bootstrap, key rotation).

pub mod audit;
pub mod audit_cli;
pub mod auth;
pub mod bootstrap;
pub mod event_log;
pub mod export;
pub mod identity;
pub mod rotation;
