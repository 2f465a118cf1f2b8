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
    /// The caller's roles in the token's agency now (read models), once a permission
    /// extractor (`Allowed`) resolved them; never the token's `roles` claim, which may be
    /// stale (a demoted platform admin's token keeps saying platform-admin until it expires).
    current_roles: Option<Vec<String>>,
}

impl Caller {
    pub fn user_id(&self) -> UserId {
        self.user
    }

    /// The agency the token acts for (its active agency).
    pub fn agency_id(&self) -> AgencyId {
        self.agency
    }

    /// Whether the caller holds `role` now. False until a permission extractor resolved the
    /// current roles: powers are never decided from the token's claim.
    pub fn has_role(&self, role: BuiltInRole) -> bool {
        self.current_roles
            .as_ref()
            .is_some_and(|roles| roles.iter().any(|r| r == role.as_str()))
    }

    /// A caller for `claims`, as the extractor makes it (ids already parsed).
    pub(crate) fn new(claims: Claims, user: UserId, agency: AgencyId) -> Self {
        Self {
            claims,
            user,
            agency,
            current_roles: None,
        }
    }

    pub(crate) fn with_current_roles(mut self, roles: Vec<String>) -> Self {
        self.current_roles = Some(roles);
        self
    }
}
