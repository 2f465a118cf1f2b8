//! Password hashing: argon2id with OWASP's minimum (m = 19 MiB, t = 2, p = 1), in a PHC
//! string, always off the async runtime (a hash takes tens of milliseconds of CPU).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

fn argon2() -> Argon2<'static> {
    // Fixed, valid parameters: Params::new cannot fail for them.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// More password work waits than the queue holds: refused at once (429, Retry-After) rather
/// than piling up behind the cores.
#[derive(Debug, thiserror::Error)]
#[error("the server is busy checking passwords: send again in a second")]
pub struct Busy;

/// argon2id work at once (one per core) and how many may wait behind it: a flood of logins
/// or client-credential requests costs a bounded queue, not every core for ever.
struct Work {
    permits: tokio::sync::Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

static WORK: OnceLock<Work> = OnceLock::new();

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// Sets the queue (ERIOP_PASSWORD_HASH_QUEUE per core); the first call wins.
pub fn configure(queue_per_core: u32) {
    let _ = WORK.set(Work {
        permits: tokio::sync::Semaphore::new(cores()),
        waiting: AtomicUsize::new(0),
        max_waiting: cores() * usize::try_from(queue_per_core).unwrap_or(8).max(1),
    });
}

async fn on_a_core<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, Busy> {
    let work = WORK.get_or_init(|| Work {
        permits: tokio::sync::Semaphore::new(cores()),
        waiting: AtomicUsize::new(0),
        max_waiting: cores() * 8,
    });
    if work.waiting.fetch_add(1, Ordering::AcqRel) >= work.max_waiting {
        work.waiting.fetch_sub(1, Ordering::AcqRel);
        return Err(Busy);
    }
    let permit = work.permits.acquire().await;
    work.waiting.fetch_sub(1, Ordering::AcqRel);
    let Ok(_permit) = permit else {
        return Err(Busy);
    };
    Ok(tokio::task::spawn_blocking(job).await.ok())
}

pub async fn hash(password: SecretString) -> Result<String, HashError> {
    let hashed = on_a_core(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HashError(e.to_string()))
    })
    .await
    .map_err(|e| HashError(e.to_string()))?;
    hashed.unwrap_or_else(|| Err(HashError("the hashing task ended".into())))
}

/// Checks `password` against `phc`; with no hash (no such account) it checks against a
/// dummy hash instead, so the answer takes the same time either way.
pub async fn verify(password: SecretString, phc: Option<String>) -> Result<bool, Busy> {
    let checked = on_a_core(move || {
        let phc = phc.as_deref().unwrap_or_else(|| dummy_hash());
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        argon2()
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok()
    })
    .await?;
    Ok(checked.unwrap_or(false))
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(b"no account has this password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Computes the dummy hash once at start-up, so the first unknown login is not faster.
pub fn warm_up() {
    let _ = dummy_hash();
}
