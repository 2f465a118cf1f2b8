//! Password hashing: argon2id with OWASP's minimum (m = 19 MiB, t = 2, p = 1), in a PHC
//! string, always off the async runtime (a hash takes tens of milliseconds of CPU).
//!
//! The hashes are argon2's own: a PHC string any argon2 library reads, and a hash made by
//! any of them verifies here. Only the working memory is ours (see [`with_memory`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};

/// OWASP's minimum for argon2id: 19 MiB (in blocks of 1 KiB), two passes, one lane.
const M_COST: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

fn params() -> Params {
    // Fixed, valid parameters: Params::new cannot fail for them.
    Params::new(M_COST, T_COST, P_COST, Some(Params::DEFAULT_OUTPUT_LEN)).unwrap_or_default()
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

/// argon2id's working memory at our parameters (19 MiB), kept for the next hash instead of
/// handed back to the allocator, at most one a core.
///
/// Why: once glibc has freed one 19 MiB block it raises its mmap threshold, and from then on
/// each hash's block is carved from the arena of whichever blocking thread ran it, and stays
/// there. The gateway grew to 383 MiB after 50 logins (docs/BENCHMARKS.md). Kept here,
/// hashing holds one block per hash running at once (the permits above: one a core),
/// allocated on first use, and no hash pays again for fresh pages. argon2's first pass
/// writes every block before any is read, so a block's last contents do not matter.
static MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Runs `work` with `blocks` blocks of argon2 memory: a kept one at our parameters, or one of
/// its own for a stored hash made with others (an import), dropped after.
fn with_memory<T>(blocks: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
    let ours = params().block_count();
    let kept = if blocks == ours {
        MEMORY.lock().unwrap_or_else(PoisonError::into_inner).pop()
    } else {
        None
    };
    let mut memory = kept.unwrap_or_else(|| vec![Block::default(); blocks]);
    let done = work(&mut memory);
    if memory.len() == ours {
        let mut kept = MEMORY.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() < cores() {
            kept.push(memory);
        }
    }
    done
}

/// How many blocks of working memory are kept (for the tests of the bound).
#[cfg(test)]
fn kept_memory() -> usize {
    MEMORY.lock().unwrap_or_else(PoisonError::into_inner).len()
}

/// argon2 over `password` and `salt` with the given settings, into an output of `len` bytes.
fn digest(
    argon2: &Argon2<'_>,
    blocks: usize,
    password: &[u8],
    salt: Salt<'_>,
    len: usize,
) -> Result<Output, argon2::password_hash::Error> {
    let mut decoded = [0u8; Salt::MAX_LENGTH];
    let salt = salt.decode_b64(&mut decoded)?;
    with_memory(blocks, |memory| {
        Output::init_with(len, |out| {
            Ok(argon2.hash_password_into_with_memory(password, salt, out, memory)?)
        })
    })
}

fn hash_now(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let params = params();
    let salt = SaltString::generate(&mut OsRng);
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output = digest(
        &argon2,
        params.block_count(),
        password,
        salt.as_salt(),
        Params::DEFAULT_OUTPUT_LEN,
    )?;
    Ok(PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    }
    .to_string())
}

/// Does `password` give the hash in `phc`, with the algorithm, version and parameters `phc`
/// names (as argon2's own verifier does)? The outputs are compared in constant time
/// (`Output`'s equality).
fn matches(password: &[u8], phc: &str) -> bool {
    let Ok(phc) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (phc.hash, phc.salt) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm) else {
        return false;
    };
    let Ok(version) = phc
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let Ok(params) = Params::try_from(&phc) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    digest(
        &argon2,
        params.block_count(),
        password,
        salt,
        expected.len(),
    )
    .is_ok_and(|computed| computed == expected)
}

pub async fn hash(password: SecretString) -> Result<String, HashError> {
    let hashed = on_a_core(move || {
        hash_now(password.expose_secret().as_bytes()).map_err(|e| HashError(e.to_string()))
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
        matches(password.expose_secret().as_bytes(), phc)
    })
    .await?;
    Ok(checked.unwrap_or(false))
}

/// A hash at our parameters that no password gives: a random salt and a random output
/// (a preimage of 256 random bits). Checking a password against it costs a real hash, so
/// an unknown account answers in the time a known one does.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
        OsRng.fill_bytes(&mut output);
        let hash = ParamsString::try_from(&params()).and_then(|params| {
            Ok(PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params,
                salt: Some(salt.as_salt()),
                hash: Some(Output::new(&output)?),
            }
            .to_string())
        });
        hash.unwrap_or_default()
    })
}

/// Makes the dummy hash at start-up (no hashing: it is random), so no request pays for it.
pub fn warm_up() {
    let _ = dummy_hash();
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    fn stock(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    #[test]
    fn hashes_made_here_and_by_argon2_itself_verify_both_ways() {
        // Twice, so the second round runs in the memory the first left behind.
        for password in ["correct horse battery staple", "Tr0ub4dor&3"] {
            let ours = hash_now(password.as_bytes()).unwrap();
            let parsed = PasswordHash::new(&ours).unwrap();
            assert!(stock(params())
                .verify_password(password.as_bytes(), &parsed)
                .is_ok());
            assert!(stock(params()).verify_password(b"wrong", &parsed).is_err());
            assert!(
                ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
                "{ours}"
            );

            let salt = SaltString::generate(&mut OsRng);
            let theirs = stock(params())
                .hash_password(password.as_bytes(), &salt)
                .unwrap();
            assert!(matches(password.as_bytes(), &theirs.to_string()));
            assert!(!matches(b"wrong", &theirs.to_string()));
        }
    }

    #[test]
    fn a_stored_hash_with_other_parameters_verifies_in_memory_of_its_own() {
        let salt = SaltString::generate(&mut OsRng);
        let small = Params::new(64, 1, 1, Some(24)).unwrap();
        let theirs = stock(small)
            .hash_password(b"imported", &salt)
            .unwrap()
            .to_string();
        assert!(matches(b"imported", &theirs));
        assert!(!matches(b"imported!", &theirs));
        let ours = params().block_count();
        let kept = MEMORY.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            kept.iter().all(|memory| memory.len() == ours),
            "only our size is kept"
        );
    }

    #[test]
    fn anything_but_an_argon2_hash_matches_nothing() {
        for phc in ["", "$argon2id$", "$2b$12$abcdefghijklmnopqrstuv", "plain"] {
            assert!(!matches(b"", phc), "{phc:?}");
        }
    }

    #[test]
    fn working_memory_is_kept_at_most_one_a_core() {
        let blocks = params().block_count();
        let at_once = cores() + 2;
        let all_in = std::sync::Barrier::new(at_once);
        std::thread::scope(|threads| {
            for _ in 0..at_once {
                threads.spawn(|| with_memory(blocks, |_| all_in.wait()));
            }
        });
        assert_eq!(kept_memory(), cores());
        hash_now(b"one more").unwrap();
        assert_eq!(kept_memory(), cores(), "a hash reuses kept memory");
    }

    #[test]
    fn the_dummy_hash_costs_a_real_hash_and_no_password_gives_it() {
        let dummy = PasswordHash::new(dummy_hash()).unwrap();
        assert_eq!(
            Params::try_from(&dummy).unwrap().block_count(),
            params().block_count()
        );
        assert_eq!(dummy.algorithm, Algorithm::Argon2id.ident());
        assert_eq!(dummy.params, ParamsString::try_from(&params()).unwrap());
        for password in ["", "no account has this password", "password"] {
            assert!(!matches(password.as_bytes(), dummy_hash()));
        }
    }

    #[tokio::test]
    async fn an_unknown_account_is_refused() {
        let password = SecretString::from("whatever".to_owned());
        assert!(!verify(password, None).await.unwrap());
        let phc = hash(SecretString::from("right".to_owned())).await.unwrap();
        assert!(
            verify(SecretString::from("right".to_owned()), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(!verify(SecretString::from("left".to_owned()), Some(phc))
            .await
            .unwrap());
    }
}
