//! Rate limits at the edge: per user and per agency for calls with a token (checked once the
//! token is, in the `Caller` extractor), per client address for calls without one (here).
//! Counted by GCRA in Redis ([`Sessions::admit`]), so every gateway replica enforces one
//! combined limit (a user's and their agency's in one atomic call: a refused request counts
//! against neither); while Redis is unreachable each process enforces the same limits alone
//! (governor), and says so in its log. Every answer that a limit counted carries
//! `RateLimit-Policy` and `RateLimit` (the IETF httpapi draft's structured fields); a refusal
//! is a 429 problem naming the limit, with `Retry-After`.
//!
//! [`Sessions::admit`]: crate::services::auth::sessions::Sessions::admit

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::http::error::ApiError;
use crate::services::auth::sessions::Admission;
use crate::state::AppState;

/// Which limit, as the `RateLimit` headers and the 429 name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    User,
    Agency,
    Address,
    /// Device commands of one agency (its `command_quota`, a platform administrator's).
    Commands,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::User => "user",
            Policy::Agency => "agency",
            Policy::Address => "address",
            Policy::Commands => "agency-commands",
        }
    }

    fn setting(self) -> &'static str {
        match self {
            Policy::User => "ERIOP_RATE_LIMIT_PER_USER",
            Policy::Agency => "ERIOP_RATE_LIMIT_PER_AGENCY",
            Policy::Address => "ERIOP_RATE_LIMIT_PER_ADDRESS",
            Policy::Commands => {
                "the agency's command_quota, ERIOP_AGENCY_COMMANDS_PER_MINUTE by default"
            }
        }
    }
}

/// The limits of one gateway, and its own counters for when Redis is away.
pub struct Limits {
    per_user: u32,
    per_agency: u32,
    per_address: u32,
    local_user: DefaultKeyedRateLimiter<String>,
    local_agency: DefaultKeyedRateLimiter<String>,
    local_address: DefaultKeyedRateLimiter<String>,
    /// Per-agency quotas differ by agency: one keyed limiter per quota in use.
    local_commands: Mutex<HashMap<u32, DefaultKeyedRateLimiter<String>>>,
    /// When the fallback was last reported (Unix seconds), to log it once a minute.
    fallback_logged: AtomicI64,
    /// While Redis is failing, requests count locally without paying its timeout.
    redis: crate::http::breaker::Breaker,
}

fn keyed(per_minute: u32) -> DefaultKeyedRateLimiter<String> {
    let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_minute(n).allow_burst(n))
}

impl Limits {
    pub fn new(per_user: u32, per_agency: u32, per_address: u32) -> Self {
        Self {
            per_user: per_user.max(1),
            per_agency: per_agency.max(1),
            per_address: per_address.max(1),
            local_user: keyed(per_user),
            local_agency: keyed(per_agency),
            local_address: keyed(per_address),
            local_commands: Mutex::new(HashMap::new()),
            fallback_logged: AtomicI64::new(0),
            redis: crate::http::breaker::Breaker::default(),
        }
    }

    /// One request against each `(policy, key, per_minute)` (a user, an agency, an
    /// address): counted against all of them or, if one refuses, against none. One
    /// admission per check.
    async fn admit(&self, state: &AppState, checks: &[(Policy, &str, u32)]) -> Vec<Admission> {
        let limits: Vec<(String, u32)> = checks
            .iter()
            .map(|(policy, key, quota)| (format!("{}:{key}", policy.name()), *quota))
            .collect();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let asked = if self.redis.allows(now_ms) {
            Some(state.auth().sessions.admit(&limits).await)
        } else {
            None
        };
        match asked {
            Some(Ok(admissions)) => {
                self.redis.succeeded();
                admissions
            }
            failed => {
                if let Some(Err(e)) = failed {
                    self.redis.failed(now_ms);
                    let now = now_ms / 1000;
                    if now - self.fallback_logged.swap(now, Ordering::Relaxed) >= 60 {
                        tracing::warn!(error = %e, "rate limits: Redis unreachable, each gateway counts alone until it is back (asking again every 5 s)");
                    }
                }
                // Alone, in order, stopping at the first refusal (not counted further).
                let mut admissions = Vec::with_capacity(checks.len());
                for (policy, key, quota) in checks {
                    let admission = self.admit_locally(*policy, key, *quota);
                    admissions.push(admission);
                    if !admission.allowed {
                        break;
                    }
                }
                admissions
            }
        }
    }

    fn admit_locally(&self, policy: Policy, key: &str, quota: u32) -> Admission {
        let interval_ms = crate::services::auth::sessions::interval_ms(quota);
        let verdict = match policy {
            Policy::User => self.local_user.check_key(&key.to_owned()),
            Policy::Agency => self.local_agency.check_key(&key.to_owned()),
            Policy::Address => self.local_address.check_key(&key.to_owned()),
            Policy::Commands => match self.local_commands.lock() {
                Ok(mut by_quota) => by_quota
                    .entry(quota)
                    .or_insert_with(|| keyed(quota))
                    .check_key(&key.to_owned()),
                // A poisoned lock (a panic elsewhere): Redis is away too; let it through.
                Err(_) => Ok(()),
            },
        };
        match verdict {
            Ok(()) => Admission::new(true, 0, 0, interval_ms),
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                let ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                Admission::new(false, ms, 60_000, interval_ms)
            }
        }
    }
}

/// What a limit reported of this request, for the response's headers.
#[derive(Clone, Default)]
pub struct RateSlot(Arc<Mutex<Option<(Policy, u32, Admission)>>>);

impl RateSlot {
    fn set(&self, policy: Policy, quota: u32, admission: Admission) {
        if let Ok(mut slot) = self.0.lock() {
            // The tightest limit is the one to report.
            let tighter = slot
                .as_ref()
                .is_none_or(|(_, _, a)| admission.remaining <= a.remaining || !admission.allowed);
            if tighter {
                *slot = Some((policy, quota, admission));
            }
        }
    }

    fn get(&self) -> Option<(Policy, u32, Admission)> {
        self.0.lock().ok().and_then(|s| *s)
    }
}

fn refusal(policy: Policy, quota: u32, admission: &Admission) -> ApiError {
    let what = match policy {
        Policy::Commands => "device commands",
        _ => "requests",
    };
    ApiError::TooManyRequests {
        detail: format!(
            "over the {} limit of {quota} {what} a minute ({}); wait and send again",
            policy.name(),
            policy.setting()
        ),
        retry_after_seconds: admission.retry_after_ms.div_ceil(1000).max(1),
    }
}

/// Checks the user and agency limits of an authenticated caller (from the `Caller`
/// extractor); the tighter one goes into the response's headers.
pub async fn admit_caller(
    state: &AppState,
    slot: Option<&RateSlot>,
    user: &str,
    agency: &str,
) -> Result<(), ApiError> {
    let limits = state.limits();
    let checks = [
        (Policy::User, user, limits.per_user),
        (Policy::Agency, agency, limits.per_agency),
    ];
    judge(state, slot, &checks).await
}

/// Checks one device command against its agency's command quota (`per_minute`, the agency's
/// own or the platform's default), after the caller's own limits.
pub async fn admit_command(
    state: &AppState,
    slot: Option<&RateSlot>,
    agency: &str,
    per_minute: u32,
) -> Result<(), ApiError> {
    judge(
        state,
        slot,
        &[(Policy::Commands, agency, per_minute.max(1))],
    )
    .await
}

async fn judge(
    state: &AppState,
    slot: Option<&RateSlot>,
    checks: &[(Policy, &str, u32)],
) -> Result<(), ApiError> {
    let admissions = state.limits().admit(state, checks).await;
    for ((policy, _, quota), admission) in checks.iter().zip(admissions) {
        let quota = *quota;
        if let Some(slot) = slot {
            slot.set(*policy, quota, admission);
        }
        if !admission.allowed {
            state.metrics().refused(policy.name());
            return Err(refusal(*policy, quota, &admission));
        }
    }
    Ok(())
}

/// The client's address: the peer's, or `X-Real-IP` when the gateway sits behind a proxy
/// that sets it (`ERIOP_TRUST_PROXY_HEADERS`); never taken from a client otherwise. A key
/// of limits only: it is never logged.
pub fn client_address(state: &AppState, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
    let from_proxy = state
        .auth()
        .trust_proxy_headers
        .then(|| {
            headers
                .get("x-real-ip")?
                .to_str()
                .ok()?
                .parse::<IpAddr>()
                .ok()
        })
        .flatten();
    from_proxy
        .or(peer.map(|p| p.ip()))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// The edge middleware: the per-address limit for calls without a token, then, on the way
/// out, the `RateLimit` headers of whichever limit counted the request.
pub async fn enforce(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let slot = RateSlot::default();
    request.extensions_mut().insert(slot.clone());
    let anonymous = !request
        .headers()
        .contains_key(axum::http::header::AUTHORIZATION);
    let mut response = if anonymous {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let address = client_address(&state, peer, request.headers()).to_string();
        let limits = state.limits();
        let quota = limits.per_address;
        let admission = limits
            .admit(&state, &[(Policy::Address, &address, quota)])
            .await
            .first()
            .copied()
            .unwrap_or(Admission::new(true, 0, 0, 1.0));
        slot.set(Policy::Address, quota, admission);
        if admission.allowed {
            next.run(request).await
        } else {
            state.metrics().refused(Policy::Address.name());
            refusal(Policy::Address, quota, &admission).into_response()
        }
    } else {
        next.run(request).await
    };
    if let Some((policy, quota, admission)) = slot.get() {
        let headers = response.headers_mut();
        let policy_value = format!("\"{}\";q={quota};w=60", policy.name());
        let value = format!(
            "\"{}\";r={};t={}",
            policy.name(),
            admission.remaining,
            admission.reset_secs
        );
        if let (Ok(p), Ok(v)) = (
            HeaderValue::from_str(&policy_value),
            HeaderValue::from_str(&value),
        ) {
            headers.insert("ratelimit-policy", p);
            headers.insert("ratelimit", v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_alone_holds_the_same_limit() {
        let limits = Limits::new(3, 100, 100);
        let verdicts: Vec<bool> = (0..5)
            .map(|_| limits.admit_locally(Policy::User, "u", 3).allowed)
            .collect();
        assert_eq!(verdicts, [true, true, true, false, false]);
        assert!(limits.admit_locally(Policy::User, "another", 3).allowed);
        let refused = limits.admit_locally(Policy::User, "u", 3);
        assert!(refused.retry_after_ms > 0 && refused.retry_after_ms <= 20_000);
    }

    #[test]
    fn each_agency_has_its_own_command_quota_while_redis_is_away() {
        let limits = Limits::new(100, 100, 100);
        let sent = |agency: &str, quota: u32| {
            (0..5)
                .filter(|_| {
                    limits
                        .admit_locally(Policy::Commands, agency, quota)
                        .allowed
                })
                .count()
        };
        assert_eq!(sent("a", 2), 2);
        assert_eq!(sent("b", 4), 4);
        assert_eq!(
            sent("c", 2),
            2,
            "another agency with the same quota counts alone"
        );
    }
}
