//! What a new password must be. The hash is made outside the domain (argon2id, off the
//! async runtime); the domain only ever sees hashes.

/// At least `min_chars` characters and a zxcvbn score of at least `min_score` (0-4), with
/// the user's own email and name counted as guessable.
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy {
    pub min_chars: usize,
    pub max_chars: usize,
    pub min_score: u8,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_chars: 12,
            max_chars: 256,
            min_score: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("must be at least {0} characters")]
    TooShort(usize),
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("is too easy to guess{0}")]
    TooWeak(String),
}

impl PasswordPolicy {
    pub fn check(&self, password: &str, personal: &[&str]) -> Result<(), PasswordError> {
        let chars = password.chars().count();
        if chars < self.min_chars {
            return Err(PasswordError::TooShort(self.min_chars));
        }
        if chars > self.max_chars {
            return Err(PasswordError::TooLong(self.max_chars));
        }
        let estimate = zxcvbn::zxcvbn(password, personal);
        if u8::from(estimate.score()) < self.min_score {
            let hint = estimate
                .feedback()
                .and_then(|f| f.warning())
                .map(|w| format!(": {w}"))
                .unwrap_or_default();
            return Err(PasswordError::TooWeak(hint));
        }
        Ok(())
    }
}
