//! Answers kept for a moment: the hot reads (a device, the device list, a device's
//! telemetry series) are answered from the same agency's answer to the same request, made
//! at most `ERIOP_READ_CACHE_MS` ago (500 ms by default), instead of reading PostgreSQL again.
//!
//! Why: those reads are what dashboards poll, many operators of one agency at once, and a
//! read from PostgreSQL costs it and the gateway about a core for every 3,000-5,000 a second
//! (issue 13, docs/BENCHMARKS.md). What a user can tell:
//!
//! - **Nothing crosses agencies.** An answer is kept under its agency (the caller's active
//!   one, from the verified token) and the request's path and query, and looked up only by a
//!   handler that holds that agency's [`AgencyScope`]: after the token, its revocation, the
//!   caller's standing, the rate limits and the permission were all checked for this request.
//!   Only a complete `200` is kept.
//! - **A command's change is seen at once.** A projection's progress hint (a command's
//!   write reached a read model: `workers::progress`) about a device, a class or a registry
//!   (any aggregate whose rows an answer may show: [`Answers::shows`]), and this gateway's own
//!   command seeing such a write projected, forget every kept answer, before the command
//!   answers. An answer
//!   being read while that happens is not kept (a generation count, as for the standings).
//!   Another gateway forgets when the hint reaches it (milliseconds).
//! - **Measurements may be that old.** Latest values, activity and series change with
//!   telemetry, which sends no hints: an answer may miss the last `ERIOP_READ_CACHE_MS` of
//!   them (they already take tens of milliseconds from the device to the read model).
//! - **Nothing is kept while hints do not arrive** (NATS away): every read reads.
//!
//! Memory is bounded by `ERIOP_READ_CACHE_BYTES` (16 MiB by default) over the kept bodies
//! (`quick_cache`, S3-FIFO eviction): many distinct requests evict each other, costing reads,
//! never memory. These answers stay `Cache-Control: no-store` for the client.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::AgencyScope;
use crate::state::AppState;

/// One answer (its body and its request's path and query) takes at most this share of the
/// memory given, or is answered but not kept: a long series, or a hostile megabyte of query
/// string, never pushes out everything else.
const LARGEST_SHARE: u64 = 16;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    agency: Uuid,
    /// The path and query as the client sent them.
    target: String,
}

#[derive(Debug)]
struct Kept {
    headers: HeaderMap,
    body: Bytes,
    generation: u64,
    at: Instant,
}

#[derive(Clone)]
struct BodyWeight;

impl quick_cache::Weighter<Key, Arc<Kept>> for BodyWeight {
    fn weight(&self, key: &Key, kept: &Arc<Kept>) -> u64 {
        // Never zero: a zero-weight entry would never be evicted.
        (kept.body.len() + key.target.len() + 64) as u64
    }
}

/// The answers this gateway keeps (see the module's documentation).
pub struct Answers {
    max_age: Duration,
    max_body: u64,
    /// Counts what was forgotten: an answer read while something was is not kept.
    generation: AtomicU64,
    kept: quick_cache::sync::Cache<Key, Arc<Kept>, BodyWeight>,
}

/// A read to make: its answer goes back with [`Answers::keep`].
#[derive(Debug)]
pub struct Ticket {
    key: Key,
    generation: u64,
}

impl Answers {
    /// Keeps answers for `max_age`, in at most `max_bytes`; a zero keeps nothing.
    pub fn new(max_age: Duration, max_bytes: u64) -> Self {
        let max_bytes = if max_age.is_zero() { 0 } else { max_bytes };
        Self {
            max_age,
            max_body: max_bytes / LARGEST_SHARE,
            generation: AtomicU64::new(0),
            // The estimate sizes the first allocation only; a small one keeps an idle
            // gateway small.
            kept: quick_cache::sync::Cache::with_weighter(256, max_bytes.max(1), BodyWeight),
        }
    }

    fn off(&self) -> bool {
        self.max_age.is_zero() || self.max_body == 0
    }

    /// The kept answer to `target` in `agency`, if it is younger than the bound at `now` and
    /// nothing was forgotten since it was read; otherwise the ticket to keep the one about to
    /// be read.
    pub fn kept(&self, agency: Uuid, target: &str, now: Instant) -> Result<Response, Ticket> {
        // Read before the lookup: a forget that comes after it makes the ticket stale.
        let generation = self.generation.load(Ordering::Acquire);
        let key = Key {
            agency,
            target: target.to_owned(),
        };
        match self.kept.get(&key) {
            Some(kept)
                if kept.generation == generation
                    && now.saturating_duration_since(kept.at) < self.max_age =>
            {
                let mut response = Response::new(Body::from(kept.body.clone()));
                *response.headers_mut() = kept.headers.clone();
                Ok(response)
            }
            _ => Err(Ticket { key, generation }),
        }
    }

    /// Keeps `response` for `ticket` if it is a `200` and nothing was forgotten since the
    /// ticket was taken (the answer may predate that change); answers it either way.
    pub async fn keep(
        &self,
        ticket: Ticket,
        response: Response,
        now: Instant,
    ) -> Result<Response, ApiError> {
        if response.status() != StatusCode::OK {
            return Ok(response);
        }
        let (parts, body) = response.into_parts();
        // The body is in memory already (JSON written by the handler).
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(ApiError::internal)?;
        if ((body.len() + ticket.key.target.len()) as u64) <= self.max_body
            && self.generation.load(Ordering::Acquire) == ticket.generation
        {
            self.kept.insert(
                ticket.key,
                Arc::new(Kept {
                    headers: parts.headers.clone(),
                    body: body.clone(),
                    generation: ticket.generation,
                    at: now,
                }),
            );
        }
        Ok(Response::from_parts(parts, Body::from(body)))
    }

    /// Whether a change to an aggregate of this type may show in a kept answer. Users,
    /// roles and agencies do not (who may read is checked at every request, before any
    /// answer is looked up): logins and role changes leave the answers kept. Any other type,
    /// one added later included, may.
    pub fn shows(aggregate_type: &str) -> bool {
        !matches!(aggregate_type, "user" | "role" | "agency")
    }

    /// The read models show a change: no answer kept so far is given again.
    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The answer to this request in `scope`'s agency: a kept one, or `read`'s, kept when
    /// `hints_live` (this gateway follows the projections' hints, so it hears of changes).
    /// `Ok` says whether it was kept.
    pub async fn answer<F>(
        &self,
        scope: &AgencyScope,
        uri: &Uri,
        hints_live: bool,
        read: F,
    ) -> Result<(Response, bool), ApiError>
    where
        F: Future<Output = Result<Response, ApiError>>,
    {
        if self.off() || !hints_live {
            return Ok((read.await?, false));
        }
        let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        match self.kept(scope.agency().as_uuid(), target, Instant::now()) {
            Ok(kept) => Ok((kept, true)),
            Err(ticket) => {
                let response = read.await?;
                Ok((self.keep(ticket, response, Instant::now()).await?, false))
            }
        }
    }
}

/// A hot read's handler: its answer kept a moment ago by this gateway, or `read` now (and
/// counted either way, `eriop_gateway_hot_read_answers_total`).
pub async fn kept_or_read<F>(
    state: &AppState,
    scope: &AgencyScope,
    uri: &Uri,
    read: F,
) -> Result<Response, ApiError>
where
    F: Future<Output = Result<Response, ApiError>>,
{
    let progress = state.progress();
    let (response, kept) = progress
        .answers()
        .answer(scope, uri, progress.live(), read)
        .await?;
    state.metrics().answered(if kept { "kept" } else { "read" });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    fn json(body: &'static str) -> Response {
        let mut response = Response::new(Body::from(body));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        response
    }

    async fn body_of(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Reads `body` for `target` in `agency` at `now` unless an answer is kept: the answer and
    /// whether it was kept.
    async fn ask(
        answers: &Answers,
        agency: Uuid,
        target: &str,
        now: Instant,
        body: &'static str,
    ) -> (String, bool) {
        match answers.kept(agency, target, now) {
            Ok(kept) => (body_of(kept).await, true),
            Err(ticket) => {
                let read = answers.keep(ticket, json(body), now).await.unwrap();
                (body_of(read).await, false)
            }
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn an_answer_is_kept_for_its_agency_and_target_until_its_age_is_reached() {
        let answers = Answers::new(SECOND, 1 << 20);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let t0 = Instant::now();
        assert_eq!(ask(&answers, a, "/d", t0, "a1").await, ("a1".into(), false));
        assert_eq!(
            ask(&answers, a, "/d", t0 + SECOND / 2, "a2").await,
            ("a1".into(), true)
        );
        // Another agency, or another target, reads its own.
        assert_eq!(ask(&answers, b, "/d", t0, "b1").await, ("b1".into(), false));
        assert_eq!(
            ask(&answers, a, "/d?x=1", t0, "x1").await,
            ("x1".into(), false)
        );
        assert_eq!(ask(&answers, b, "/d", t0, "b2").await, ("b1".into(), true));
        // Its age reached: read again, and that answer is kept from then.
        assert_eq!(
            ask(&answers, a, "/d", t0 + SECOND, "a3").await,
            ("a3".into(), false)
        );
        assert_eq!(
            ask(&answers, a, "/d", t0 + SECOND, "a4").await,
            ("a3".into(), true)
        );
    }

    #[tokio::test]
    async fn a_kept_answer_keeps_its_headers() {
        let answers = Answers::new(SECOND, 1 << 20);
        let agency = Uuid::now_v7();
        let now = Instant::now();
        let Err(ticket) = answers.kept(agency, "/d", now) else {
            panic!("nothing was kept yet")
        };
        answers.keep(ticket, json("{}"), now).await.unwrap();
        let kept = answers.kept(agency, "/d", now).unwrap();
        assert_eq!(kept.status(), StatusCode::OK);
        assert_eq!(kept.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[tokio::test]
    async fn a_forget_ends_what_was_kept_and_what_was_being_read() {
        let answers = Answers::new(SECOND, 1 << 20);
        let agency = Uuid::now_v7();
        let now = Instant::now();
        ask(&answers, agency, "/d", now, "old").await;
        // A read began (its ticket taken), then the read models changed.
        let Err(ticket) = answers.kept(agency, "/e", now) else {
            panic!("nothing was kept for /e")
        };
        answers.forget_all();
        assert_eq!(
            ask(&answers, agency, "/d", now, "new").await,
            ("new".into(), false)
        );
        // The read begun before the change is answered, but not kept: it may predate it.
        let answered = answers.keep(ticket, json("maybe old"), now).await.unwrap();
        assert_eq!(body_of(answered).await, "maybe old");
        assert_eq!(
            ask(&answers, agency, "/e", now, "fresh").await,
            ("fresh".into(), false)
        );
        assert_eq!(
            ask(&answers, agency, "/e", now, "later").await,
            ("fresh".into(), true)
        );
    }

    #[tokio::test]
    async fn only_a_whole_ok_answer_of_its_share_of_memory_is_kept() {
        let answers = Answers::new(SECOND, 16 * 100);
        let agency = Uuid::now_v7();
        let now = Instant::now();
        let Err(ticket) = answers.kept(agency, "/missing", now) else {
            panic!("nothing was kept yet")
        };
        let mut not_found = json("{}");
        *not_found.status_mut() = StatusCode::NOT_FOUND;
        let answered = answers.keep(ticket, not_found, now).await.unwrap();
        assert_eq!(answered.status(), StatusCode::NOT_FOUND);
        assert!(answers.kept(agency, "/missing", now).is_err());
        // A sixteenth of the memory at most (100 bytes here), body and target together.
        let body: &'static str = Box::leak("x".repeat(95).into_boxed_str());
        assert!(!ask(&answers, agency, "/large", now, body).await.1);
        assert!(!ask(&answers, agency, "/large", now, body).await.1);
        assert!(!ask(&answers, agency, "/fits", now, body).await.1);
        assert!(ask(&answers, agency, "/fits", now, body).await.1);
    }

    #[tokio::test]
    async fn a_megabyte_of_query_string_is_answered_and_not_kept() {
        let answers = Answers::new(SECOND, 1 << 20);
        let agency = Uuid::now_v7();
        let now = Instant::now();
        let hostile = format!("/d?q={}", "%00\r\n".repeat(1 << 18));
        assert_eq!(
            ask(&answers, agency, &hostile, now, "a").await,
            ("a".into(), false)
        );
        assert_eq!(
            ask(&answers, agency, &hostile, now, "b").await,
            ("b".into(), false)
        );
        assert_eq!(answers.kept.weight(), 0);
    }

    #[tokio::test]
    async fn many_answers_stay_within_the_memory_given() {
        let answers = Answers::new(SECOND, 64 * 1024);
        let agency = Uuid::now_v7();
        let now = Instant::now();
        let body: &'static str = Box::leak("x".repeat(1000).into_boxed_str());
        for i in 0..1_000 {
            ask(&answers, agency, &format!("/d/{i}"), now, body).await;
        }
        assert!(
            answers.kept.weight() <= 64 * 1024,
            "{}",
            answers.kept.weight()
        );
        assert!(answers.kept.len() < 100, "{}", answers.kept.len());
    }

    #[test]
    fn only_changes_an_answer_may_show_end_what_is_kept() {
        for shown in ["device", "device_class", "registry", "a type added later"] {
            assert!(Answers::shows(shown), "{shown}");
        }
        // Who may read is checked at every request: logins and role changes keep answers.
        for checked in ["user", "role", "agency"] {
            assert!(!Answers::shows(checked), "{checked}");
        }
    }

    #[tokio::test]
    async fn a_zero_age_keeps_nothing() {
        let answers = Answers::new(Duration::ZERO, 1 << 20);
        let agency = Uuid::now_v7();
        let now = Instant::now();
        assert!(answers.off());
        ask(&answers, agency, "/d", now, "a").await;
        assert!(answers.kept(agency, "/d", now).is_err());
    }
}
