//! Who is calling: the principal an access token names, once verified (the HTTP extractor
//! that makes one is `http::caller`; holding a [`Caller`] proves a valid, unrevoked access
//! token was sent and that any restriction on it allows the route).

use eriop_domain::{AgencyId, BuiltInRole, UserId};

use super::tokens::Claims;

#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
    /// `sub` and `agency`, parsed once: every token we sign names them by UUID.
    user: UserId,
    agency: AgencyId,
    /// The caller's roles in the token's agency now (read models, as the extractor read
    /// them); never the token's `roles` claim, which may be stale (a demoted platform
    /// admin's token keeps saying platform-admin until it expires). Only a user the read
    /// models do not know yet (just registered) is taken at its token.
    current_roles: Vec<String>,
}

impl Caller {
    pub fn user_id(&self) -> UserId {
        self.user
    }

    /// The agency the token acts for (its active agency).
    pub fn agency_id(&self) -> AgencyId {
        self.agency
    }

    /// Whether the caller holds `role` now (powers are never decided from the token's
    /// claim).
    pub fn has_role(&self, role: BuiltInRole) -> bool {
        self.current_roles.iter().any(|r| r == role.as_str())
    }

    /// The caller's roles in its agency now.
    pub fn current_roles(&self) -> &[String] {
        &self.current_roles
    }

    /// A caller for `claims`, as the extractor makes it (ids already parsed, current roles
    /// read).
    pub(crate) fn new(claims: Claims, user: UserId, agency: AgencyId, roles: Vec<String>) -> Self {
        Self {
            claims,
            user,
            agency,
            current_roles: roles,
        }
    }
}
