//! Small helpers every RA capability uses: the clock, domain-separated hashes, random values,
//! password hashing and field checks. No SQL and no policy here.

use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Now, Unix seconds.
pub(super) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// SHA-256 over length-prefixed parts (a domain label first), so no two inputs collide by
/// shifting bytes between parts.
pub(super) fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().to_vec()
}

/// `bytes` random bytes from the OS, base32 without padding.
pub(super) fn random_base32(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    data_encoding::BASE32_NOPAD.encode(&b)
}

/// Constant-time equality of two hashes.
pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// An argon2id hash (PHC string) of a password or revocation secret.
pub(super) fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Encoding(format!("argon2: {e}")))
}

/// Whether `password` matches a stored [`hash_password`] string (false for a malformed one).
pub(super) fn password_matches(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// How many argon2id hashes run at once. Each takes tens of milliseconds of CPU and 19 MiB;
/// they run on tokio's blocking pool, never on the async workers that answer OCSP and CRLs,
/// and at most this many at a time (others wait their turn), so a burst of sign-ins costs
/// bounded memory and leaves the workers free.
pub(super) const HASHES_AT_ONCE: usize = 2;

static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(HASHES_AT_ONCE);

/// Runs an argon2id computation on the blocking pool, at most [`HASHES_AT_ONCE`] at a time.
async fn hashing<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let permit = HASHING
        .acquire()
        .await
        .map_err(|_| Error::Store("the password hasher is closed".into()))?;
    // The permit goes with the hash: a request dropped while it runs (the client left, its
    // deadline passed) does not free the slot of a hash still running.
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(now, Ordering::SeqCst);
        let out = f();
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        out
    })
    .await
    .map_err(|e| Error::Store(format!("password hashing: {e}")))
}

/// Hashes running now, and the most that ever ran at once (never above [`HASHES_AT_ONCE`]).
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// [`hash_password`] off the async workers ([`HASHES_AT_ONCE`]).
pub(super) async fn hash_password_async(password: &str) -> Result<String> {
    let password = zeroize::Zeroizing::new(password.to_string());
    hashing(move || hash_password(&password)).await?
}

/// [`password_matches`] off the async workers ([`HASHES_AT_ONCE`]).
pub(super) async fn password_matches_async(password: &str, hash: &str) -> Result<bool> {
    let password = zeroize::Zeroizing::new(password.to_string());
    let hash = hash.to_string();
    hashing(move || password_matches(&password, &hash)).await
}

/// [`Error::Invalid`] naming the field (never its value).
pub(super) fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A typed field is `min..=max` characters with no control characters.
pub(super) fn check_len(field: &'static str, v: &str, min: usize, max: usize) -> Result<()> {
    let n = v.chars().count();
    if n < min || n > max {
        return Err(invalid(field, format!("must be {min} to {max} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// The audit actor of a citizen acting on their application.
pub(super) fn citizen(reference: &str) -> String {
    format!("citizen:{}", reference.trim().to_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11, defect 10: argon2 ran on the async worker threads, so a burst of sign-ins
    /// stalled every other task (OCSP answers among them). On a single-threaded runtime, a
    /// ticking task must keep running while eight hashes are computed.
    #[test]
    fn hashing_leaves_the_async_workers_free() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let hash = hash_password("correct horse battery").unwrap();
            let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
            let t = ticks.clone();
            let ticker = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    t.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            let mut checks = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let hash = hash.clone();
                checks.spawn(async move {
                    password_matches_async("correct horse battery", &hash).await
                });
            }
            while let Some(ok) = checks.join_next().await {
                assert!(ok.unwrap().unwrap());
            }
            ticker.abort();
            let n = ticks.load(std::sync::atomic::Ordering::Relaxed);
            assert!(n >= 10, "the runtime stalled while hashing: {n} ticks");
        });
    }

    /// Review finding (issue 11, defect 10): the permit was released when a waiting request was
    /// dropped, while its hash kept running; twenty requests dropped mid-hash ran twenty
    /// hashes (and their memory) at once.
    #[test]
    fn dropped_requests_do_not_escape_the_bound() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let hash = hash_password("correct horse battery").unwrap();
            let mut tasks = Vec::new();
            for _ in 0..20 {
                let hash = hash.clone();
                tasks.push(tokio::spawn(async move {
                    let _ = password_matches_async("correct horse battery", &hash).await;
                }));
            }
            // Drop them one by one while they hash or wait, as clients leave.
            for t in &tasks {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                t.abort();
            }
            while RUNNING.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        let peak = PEAK.load(Ordering::SeqCst);
        assert!(peak <= HASHES_AT_ONCE, "{peak} hashes ran at once");
    }

    #[test]
    fn passwords_hash_with_argon2id() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(password_matches("correct horse battery", &h));
        assert!(!password_matches("correct horse batterz", &h));
        assert!(!password_matches("x", "not a hash"));
    }
}
