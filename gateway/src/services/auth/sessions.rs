//! Sessions in Redis: refresh tokens (stored hashed, rotated on every use, single use by an
//! atomic script), their session families, the access-token denylist and per-user
//! not-before times.
//!
//! A refresh token belongs to a family (one login). Refreshing marks it rotated and creates
//! its successor in one Lua script, so two concurrent refreshes cannot both win. Presenting a
//! rotated token again within the grace window (several browser tabs) answers the same
//! successor; later, it means the token leaked, and the whole family is revoked.
//! The successor is kept sealed under a key derived from the old token itself: Redis never
//! holds a usable token.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use tokio::sync::Mutex;

use super::crypto::{derive, open, seal, sha256_hex};

#[derive(Debug, thiserror::Error)]
#[error("session store (Redis): {0}")]
pub struct SessionError(String);

impl From<redis::RedisError> for SessionError {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

/// Who a refresh token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshOwner {
    pub family: String,
    pub user_id: String,
    pub agency_id: String,
}

/// The outcome of presenting a refresh token.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// It was current: the caller's new pair is now the family's.
    Rotated,
    /// It was just rotated (grace window): here is the pair it was rotated to (sealed JSON).
    AlreadyRotated(Vec<u8>),
    /// Reused past the grace window: the family is now revoked.
    Reused,
    /// Unknown, expired, or its family was revoked.
    Invalid,
}

const ROTATE: &str = r#"
-- KEYS: old token, family, new token. ARGV: now ms, grace ms, sealed successor, ttl ms,
-- family id, user id, agency id
if redis.call('HGET', KEYS[2], 'revoked') ~= '0' then return {'invalid'} end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'active' then
  redis.call('HSET', KEYS[1], 'state', 'rotated', 'rotated_at', ARGV[1], 'successor', ARGV[3])
  redis.call('HSET', KEYS[3], 'state', 'active', 'family', ARGV[5], 'user', ARGV[6], 'agency', ARGV[7])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
  return {'rotated'}
elseif state == 'rotated' then
  if tonumber(ARGV[1]) - tonumber(redis.call('HGET', KEYS[1], 'rotated_at')) <= tonumber(ARGV[2]) then
    return {'grace', redis.call('HGET', KEYS[1], 'successor')}
  end
  redis.call('HSET', KEYS[2], 'revoked', '1')
  return {'reused'}
end
return {'invalid'}
"#;

/// How far ahead of its schedule a client may run: a minute's worth of requests.
const BURST_MS: f64 = 60_000.0;

/// GCRA: `tat` (the theoretical arrival time of the next request) moves one interval per
/// request; a request is allowed while it is at most a burst ahead of now. Several limits
/// (a user's and their agency's) are judged together, atomically: the request counts
/// against all of them or, if any refuses, against none (a user over their own limit does
/// not use up their agency's). KEYS: the limits; ARGV: the burst, then each key's interval.
/// Answers, per key, {allowed (1 or 0), retry after ms, how far tat is ahead of now in ms}.
fn gcra() -> &'static Script {
    static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| {
        Script::new(
            r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local burst = tonumber(ARGV[1])
local out, next_tats, all = {}, {}, true
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local next_tat = tat + tonumber(ARGV[i + 1])
  next_tats[i] = next_tat
  if next_tat - burst > now then
    all = false
    table.insert(out, 0); table.insert(out, math.ceil(next_tat - burst - now)); table.insert(out, math.ceil(tat - now))
  else
    table.insert(out, 1); table.insert(out, 0); table.insert(out, math.ceil(next_tat - now))
  end
end
if all then
  for i, key in ipairs(KEYS) do
    redis.call('SET', key, tostring(next_tats[i]), 'PX', math.ceil(next_tats[i] - now) + 1000)
  end
end
return out
",
        )
    })
}

/// What a limit said of one request, and what the `RateLimit` header reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admission {
    pub allowed: bool,
    pub retry_after_ms: u64,
    /// Requests left in the current burst.
    pub remaining: u64,
    /// Seconds until the whole burst is available again.
    pub reset_secs: u64,
}

impl Admission {
    pub fn new(allowed: bool, retry_after_ms: i64, busy_ms: i64, interval_ms: f64) -> Self {
        let busy = busy_ms.max(0) as f64;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let remaining = ((BURST_MS - busy) / interval_ms).floor().max(0.0) as u64;
        Self {
            allowed,
            retry_after_ms: u64::try_from(retry_after_ms).unwrap_or(0),
            remaining,
            reset_secs: u64::try_from(busy_ms.max(0)).unwrap_or(0).div_ceil(1000),
        }
    }
}

/// The spacing of requests under a limit of `per_minute` a minute.
pub fn interval_ms(per_minute: u32) -> f64 {
    60_000.0 / f64::from(per_minute.max(1))
}

pub struct Sessions {
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
    prefix: String,
    grace: Duration,
}

impl Sessions {
    pub fn new(client: redis::Client, prefix: &str, grace: Duration) -> Self {
        Self {
            client,
            connection: Mutex::new(None),
            prefix: prefix.to_owned(),
            grace,
        }
    }

    /// A connection that reconnects by itself, made at first use (the gateway starts, and
    /// reports not ready, while Redis is down).
    async fn conn(&self) -> Result<ConnectionManager, SessionError> {
        let mut guard = self.connection.lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(conn.clone());
        }
        // Bounded everywhere: a Redis that stops answering (a dropped link, a full backlog)
        // must fail a call within a second, so that the gateway falls back to its own limits
        // and readiness says so, instead of holding every request.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(1))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            Duration::from_secs(2),
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| SessionError("no answer within 2 s".into()))??;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    fn token_key(&self, token: &str) -> String {
        format!("{}rt:{}", self.prefix, sha256_hex(token))
    }

    fn family_key(&self, family: &str) -> String {
        format!("{}family:{family}", self.prefix)
    }

    fn user_families_key(&self, user_id: &str) -> String {
        format!("{}user-families:{user_id}", self.prefix)
    }

    /// Opens a family with its first refresh token, alive for `lifetime` (absolute).
    pub async fn open_family(
        &self,
        owner: &RefreshOwner,
        token: &str,
        lifetime: Duration,
    ) -> Result<(), SessionError> {
        let ttl = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn().await?;
        redis::pipe()
            .atomic()
            .hset_multiple(
                self.family_key(&owner.family),
                &[("revoked", "0"), ("user", &owner.user_id)],
            )
            .pexpire(self.family_key(&owner.family), ttl as i64)
            .hset_multiple(
                self.token_key(token),
                &[
                    ("state", "active"),
                    ("family", &owner.family),
                    ("user", &owner.user_id),
                    ("agency", &owner.agency_id),
                ],
            )
            .pexpire(self.token_key(token), ttl as i64)
            .sadd(self.user_families_key(&owner.user_id), &owner.family)
            .pexpire(self.user_families_key(&owner.user_id), ttl as i64)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Who `token` belongs to, if it is known (current or recently rotated).
    pub async fn owner(&self, token: &str) -> Result<Option<RefreshOwner>, SessionError> {
        let mut conn = self.conn().await?;
        let (family, user_id, agency_id): (Option<String>, Option<String>, Option<String>) = conn
            .hget(self.token_key(token), &["family", "user", "agency"])
            .await?;
        Ok(match (family, user_id, agency_id) {
            (Some(family), Some(user_id), Some(agency_id)) => Some(RefreshOwner {
                family,
                user_id,
                agency_id,
            }),
            _ => None,
        })
    }

    /// Replaces `old` by `new` (see the module's comment); `successor` is the new pair as
    /// the client receives it, kept sealed for the grace window.
    pub async fn rotate(
        &self,
        owner: &RefreshOwner,
        old: &str,
        new: &str,
        successor: &[u8],
        now_millis: i64,
    ) -> Result<Rotation, SessionError> {
        let mut conn = self.conn().await?;
        let ttl: i64 = conn.pttl(self.family_key(&owner.family)).await?;
        if ttl <= 0 {
            return Ok(Rotation::Invalid);
        }
        let sealed = seal(&successor_key(old), "refresh-successor", successor);
        let answer: Vec<String> = Script::new(ROTATE)
            .key(self.token_key(old))
            .key(self.family_key(&owner.family))
            .key(self.token_key(new))
            .arg(now_millis)
            .arg(i64::try_from(self.grace.as_millis()).unwrap_or(i64::MAX))
            .arg(sealed)
            .arg(ttl)
            .arg(&owner.family)
            .arg(&owner.user_id)
            .arg(&owner.agency_id)
            .invoke_async(&mut conn)
            .await?;
        Ok(match answer.first().map(String::as_str) {
            Some("rotated") => Rotation::Rotated,
            Some("grace") => match answer
                .get(1)
                .map(|s| open(&successor_key(old), "refresh-successor", s))
            {
                Some(Ok(pair)) => Rotation::AlreadyRotated(pair),
                _ => Rotation::Invalid,
            },
            Some("reused") => Rotation::Reused,
            _ => Rotation::Invalid,
        })
    }

    pub async fn family_revoked(&self, family: &str) -> Result<bool, SessionError> {
        let mut conn = self.conn().await?;
        let revoked: Option<String> = conn.hget(self.family_key(family), "revoked").await?;
        Ok(revoked.as_deref() != Some("0"))
    }

    pub async fn revoke_family(&self, family: &str) -> Result<(), SessionError> {
        let mut conn = self.conn().await?;
        let _: () = conn.hset(self.family_key(family), "revoked", "1").await?;
        Ok(())
    }

    /// Revokes every session of a user but `keep` (password change, deactivation).
    pub async fn revoke_user_families(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<(), SessionError> {
        let mut conn = self.conn().await?;
        let families: Vec<String> = conn.smembers(self.user_families_key(user_id)).await?;
        for family in families.iter().filter(|f| Some(f.as_str()) != keep) {
            let _: () = conn.hset(self.family_key(family), "revoked", "1").await?;
        }
        Ok(())
    }

    /// Refuses the access token `jti` until `until_millis` (its expiry).
    pub async fn deny(
        &self,
        jti: &str,
        until_millis: i64,
        now_millis: i64,
    ) -> Result<(), SessionError> {
        let ttl = (until_millis - now_millis).max(1);
        let mut conn = self.conn().await?;
        let _: () = conn
            .pset_ex(format!("{}deny:{jti}", self.prefix), "1", ttl as u64)
            .await?;
        Ok(())
    }

    /// Access tokens of `user_id` issued before `iat_seconds` stop working.
    pub async fn set_not_before(
        &self,
        user_id: &str,
        iat_ms: i64,
        ttl: Duration,
    ) -> Result<(), SessionError> {
        let mut conn = self.conn().await?;
        let _: () = conn
            .pset_ex(
                format!("{}not-before:{user_id}", self.prefix),
                iat_ms,
                u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            )
            .await?;
        Ok(())
    }

    /// Whether the access token `jti` of `user_id`, issued at `iat` in session `sid`, was
    /// revoked: itself (logout), every token of the user before a time (password change), or
    /// its whole session (logout, a refresh token reused past the grace window), so that a
    /// session's other access tokens die with it too.
    pub async fn access_revoked(
        &self,
        jti: &str,
        user_id: &str,
        iat_ms: i64,
        sid: &str,
    ) -> Result<bool, SessionError> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.get(format!("{}deny:{jti}", self.prefix))
            .get(format!("{}not-before:{user_id}", self.prefix));
        // No session (a client-credentials token): nothing more to ask.
        let family = (!sid.is_empty()).then(|| self.family_key(sid));
        if let Some(key) = &family {
            pipe.hget(key, "revoked");
        }
        let (denied, not_before, session): (Option<String>, Option<i64>, Option<String>) =
            if family.is_some() {
                pipe.query_async(&mut conn).await?
            } else {
                let (d, n): (Option<String>, Option<i64>) = pipe.query_async(&mut conn).await?;
                (d, n, None)
            };
        Ok(denied.is_some()
            || not_before.is_some_and(|nbf| iat_ms < nbf)
            || session.as_deref() == Some("1"))
    }

    /// One request against the limits `(key, per_minute)`, each allowing `per_minute`
    /// requests a minute in bursts of up to a minute's worth: GCRA (the generic cell rate
    /// algorithm) in one Lua script, atomic and on Redis's clock, so every gateway replica
    /// counts the same requests; one round trip however many limits. Answers one admission
    /// per limit, in order. (One Redis, not a cluster: the keys share no hash slot.)
    pub async fn admit(&self, limits: &[(String, u32)]) -> Result<Vec<Admission>, SessionError> {
        let mut conn = self.conn().await?;
        let mut invocation = gcra().prepare_invoke();
        invocation.arg(BURST_MS);
        for (key, per_minute) in limits {
            invocation
                .key(format!("{}rate:{key}", self.prefix))
                .arg(interval_ms(*per_minute));
        }
        let answer: Vec<i64> = invocation.invoke_async(&mut conn).await?;
        if answer.len() != limits.len() * 3 {
            return Err(SessionError(format!(
                "the rate-limit script answered {} numbers for {} limits",
                answer.len(),
                limits.len()
            )));
        }
        Ok(answer
            .chunks_exact(3)
            .zip(limits)
            .map(|(a, (_, per_minute))| {
                Admission::new(a[0] == 1, a[1], a[2], interval_ms(*per_minute))
            })
            .collect())
    }

    /// Counts an event in a one-minute window; answers the count so far.
    pub async fn count_per_minute(&self, what: &str) -> Result<u64, SessionError> {
        let key = format!("{}throttle:{what}", self.prefix);
        let mut conn = self.conn().await?;
        let (count, _): (u64, bool) = redis::pipe()
            .incr(&key, 1)
            .expire(&key, 60)
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        Ok(count)
    }

    /// The count of the current window of `what`, without counting.
    pub async fn count_so_far(&self, what: &str) -> Result<u64, SessionError> {
        let mut conn = self.conn().await?;
        let count: Option<u64> = conn.get(format!("{}throttle:{what}", self.prefix)).await?;
        Ok(count.unwrap_or(0))
    }

    /// Stores a short-lived value (an MFA challenge's state).
    pub async fn put(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SessionError> {
        let mut conn = self.conn().await?;
        let _: () = conn
            .pset_ex(
                format!("{}{key}", self.prefix),
                value,
                u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            )
            .await?;
        Ok(())
    }

    pub async fn take(&self, key: &str) -> Result<Option<String>, SessionError> {
        let mut conn = self.conn().await?;
        Ok(conn.get_del(format!("{}{key}", self.prefix)).await?)
    }
}

fn successor_key(old_token: &str) -> [u8; 32] {
    derive(old_token.as_bytes(), "refresh/successor")
}
