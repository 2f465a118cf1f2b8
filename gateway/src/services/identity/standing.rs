//! Where a caller stands (its agency's suspension, its current roles there), as every
//! authenticated request asks it, and the gateway's short memory of the answer.
//!
//! Reading it was one PostgreSQL round trip on every request (migration 0024), the largest
//! share of a read's work after the read itself (issue 13). [`Standings`] keeps each answer
//! for at most `ERIOP_STANDING_CACHE_MS` (1 s by default), and forgets it as soon as the
//! read models show a change to the user or the agency: a projection's progress hint
//! (`workers::progress`) or this gateway's own command seeing its write projected. So a
//! suspension, a demotion or a revoked membership applies at the next request after the
//! read model shows it, as before; only a hint lost on the way (NATS restarting between a
//! projection's commit and its publish) leaves another gateway answering from the old
//! standing, for at most the bound. While this gateway follows no hints, nothing is kept.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Where a caller stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub suspended: bool,
    /// Its roles there now; `None` for a user the read models do not know yet (just
    /// registered), whose token is then taken at its word.
    pub roles: Option<Vec<String>>,
}

/// The standing as the read models say it now (one round trip, outside any transaction).
pub async fn caller_standing(
    pool: &sqlx::PgPool,
    user: Uuid,
    agency: Uuid,
) -> Result<Standing, sqlx::Error> {
    let (suspended, known, roles): (bool, bool, Option<Vec<String>>) =
        sqlx::query_as("SELECT suspended, known, roles FROM eriop_caller_standing($1, $2)")
            .bind(user)
            .bind(agency)
            .fetch_one(pool)
            .await?;
    Ok(Standing {
        suspended,
        // Known but with no roles here: none (not the token's).
        roles: roles.or_else(|| known.then(Vec::new)),
    })
}

/// Callers kept at most: past it, the expired go, and if none has, everything does (a
/// flood of distinct callers costs reads, never memory).
const MAX_KEPT: usize = 16_384;

/// The kept standings of (user, agency) pairs (see the module's documentation).
pub struct Standings {
    ttl: Duration,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// Counts what was forgotten: an answer read while something was is not kept, as it may
    /// have been read before the change.
    forgotten: u64,
    entries: HashMap<(Uuid, Uuid), (Standing, Instant)>,
}

/// A read to make: the answer goes back with [`Standings::keep`].
pub struct Ticket {
    key: (Uuid, Uuid),
    forgotten: u64,
}

impl Standings {
    /// Keeps answers for `ttl`; zero keeps nothing.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            kept: Mutex::new(Kept::default()),
        }
    }

    /// The standing of `user` in `agency`: the kept one, or read now and kept when
    /// `hints_live` (this gateway follows the projections' hints, so it would hear of a
    /// change).
    pub async fn of(
        &self,
        pool: &sqlx::PgPool,
        user: Uuid,
        agency: Uuid,
        hints_live: bool,
    ) -> Result<Standing, sqlx::Error> {
        if self.ttl.is_zero() || !hints_live {
            return caller_standing(pool, user, agency).await;
        }
        let ticket = match self.kept(user, agency, Instant::now()) {
            Ok(standing) => return Ok(standing),
            Err(ticket) => ticket,
        };
        let standing = caller_standing(pool, user, agency).await?;
        self.keep(ticket, standing.clone(), Instant::now());
        Ok(standing)
    }

    /// The kept standing, if it is younger than the bound at `now`; otherwise the ticket to
    /// keep the one about to be read.
    pub fn kept(&self, user: Uuid, agency: Uuid, now: Instant) -> Result<Standing, Ticket> {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (user, agency);
        match kept.entries.get(&key) {
            Some((standing, until)) if now < *until => Ok(standing.clone()),
            _ => Err(Ticket {
                key,
                forgotten: kept.forgotten,
            }),
        }
    }

    /// Keeps what was read for `ticket`, unless something was forgotten since the ticket
    /// was taken (the answer may predate that change).
    pub fn keep(&self, ticket: Ticket, standing: Standing, now: Instant) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.forgotten != ticket.forgotten {
            return;
        }
        if kept.entries.len() >= MAX_KEPT {
            kept.entries.retain(|_, (_, until)| now < *until);
            if kept.entries.len() >= MAX_KEPT {
                kept.entries.clear();
            }
        }
        kept.entries.insert(ticket.key, (standing, now + self.ttl));
    }

    /// The read models show a change to this user or agency: every standing naming it goes.
    pub fn forget(&self, id: Uuid) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.forgotten = kept.forgotten.wrapping_add(1);
        kept.entries
            .retain(|(user, agency), _| *user != id && *agency != id);
    }

    /// Whether a change to rows of `aggregate_type` changes standings.
    pub fn depends_on(aggregate_type: &str) -> bool {
        matches!(aggregate_type, "agency" | "user")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(suspended: bool, role: &str) -> Standing {
        Standing {
            suspended,
            roles: Some(vec![role.to_owned()]),
        }
    }

    #[test]
    fn an_answer_is_kept_for_its_bound_and_no_longer() {
        let standings = Standings::new(Duration::from_secs(1));
        let (user, agency, t0) = (Uuid::now_v7(), Uuid::now_v7(), Instant::now());
        let ticket = standings.kept(user, agency, t0).unwrap_err();
        standings.keep(ticket, standing(false, "viewer"), t0);
        assert_eq!(
            standings
                .kept(user, agency, t0 + Duration::from_millis(999))
                .ok(),
            Some(standing(false, "viewer"))
        );
        assert!(standings
            .kept(user, agency, t0 + Duration::from_secs(1))
            .is_err());
        // Kept per agency: the same user elsewhere is read.
        assert!(standings.kept(user, Uuid::now_v7(), t0).is_err());
    }

    #[test]
    fn a_change_to_the_user_or_the_agency_forgets_it_at_once() {
        let standings = Standings::new(Duration::from_secs(60));
        let (user, other_user, agency, t0) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Instant::now(),
        );
        for who in [user, other_user] {
            let ticket = standings.kept(who, agency, t0).unwrap_err();
            standings.keep(ticket, standing(false, "operator"), t0);
        }
        standings.forget(user);
        assert!(
            standings.kept(user, agency, t0).is_err(),
            "the user changed"
        );
        assert!(standings.kept(other_user, agency, t0).is_ok());
        standings.forget(agency);
        assert!(
            standings.kept(other_user, agency, t0).is_err(),
            "the agency changed"
        );
    }

    #[test]
    fn an_answer_read_across_a_change_is_not_kept() {
        let standings = Standings::new(Duration::from_secs(60));
        let (user, agency, t0) = (Uuid::now_v7(), Uuid::now_v7(), Instant::now());
        let ticket = standings.kept(user, agency, t0).unwrap_err();
        // The suspension is projected (and forgotten) while the old answer is on its way.
        standings.forget(agency);
        standings.keep(ticket, standing(false, "admin"), t0);
        assert!(standings.kept(user, agency, t0).is_err());
    }

    #[test]
    fn many_callers_cost_reads_not_memory() {
        let standings = Standings::new(Duration::from_secs(60));
        let (agency, t0) = (Uuid::now_v7(), Instant::now());
        for _ in 0..MAX_KEPT + 10 {
            let ticket = standings.kept(Uuid::now_v7(), agency, t0).unwrap_err();
            standings.keep(ticket, standing(false, "viewer"), t0);
        }
        let kept = standings.kept.lock().unwrap().entries.len();
        assert!(kept <= MAX_KEPT, "{kept} kept");
    }

    #[test]
    fn only_users_and_agencies_change_standings() {
        assert!(Standings::depends_on("agency") && Standings::depends_on("user"));
        assert!(!Standings::depends_on("device") && !Standings::depends_on("role"));
    }
}
