use std::fmt;

/// An email address, normalized (trimmed, lower case) so that uniqueness is
/// case-insensitive. Checked for shape only: the mailbox is the user's business.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("must be an email address such as name@agency.example")]
    Malformed,
    #[error("must be at most 254 characters")]
    TooLong,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let email = raw.trim().to_lowercase();
        if email.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err(EmailError::Malformed);
        };
        let valid = !local.is_empty()
            && local.len() <= 64
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if valid {
            Ok(Self(email))
        } else {
            Err(EmailError::Malformed)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Never printed: an email is personal data and must not reach a log by accident.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}
