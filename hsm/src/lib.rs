//! Signing backends for ecert.
//!
//! This crate knows one thing: how to sign bytes with a private key that lives somewhere the
//! caller cannot read it. It knows nothing of certificates, CRLs or OCSP.
//!
//! - [`Signer`] is the narrow trait every backend implements: the key's algorithm, its public
//!   key (DER `SubjectPublicKeyInfo`) and `sign(bytes) -> DER signature`.
//! - [`pkcs11`] talks to any PKCS#11 module (SoftHSM2 by default) through `cryptoki`. Keys are
//!   generated inside the token, sensitive and not extractable.
//! - [`software::SoftwareSigner`] keeps a key in memory, for unit tests; it MUST NOT be used
//!   for a CA key. Nothing in this crate ever falls back to it when a token fails.
//!
//! ```
//! use hsm::{Signer, software::SoftwareSigner};
//! let signer = SoftwareSigner::generate_p256();
//! let sig = signer.sign(b"tbs bytes").unwrap();
//! assert!(hsm::verify(signer.algorithm(), signer.public_key_spki(), b"tbs bytes", &sig).is_ok());
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod keys;
pub mod pkcs11;
pub mod software;

/// What the HSM did in this process, for `/metrics` (issue 17): `C_Sign` calls, failures and
/// their latency. Counts only.
pub mod metrics {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// Upper bounds of the latency buckets, seconds (Prometheus `le`).
    pub const BUCKETS: [f64; 10] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
    ];

    /// Calls of one operation: how many, how many failed, and a latency histogram.
    #[derive(Debug)]
    pub struct Calls {
        /// Calls made.
        pub total: AtomicU64,
        /// Calls that failed.
        pub errors: AtomicU64,
        /// Sum of their latencies, microseconds.
        pub sum_micros: AtomicU64,
        /// Calls at or under each of [`BUCKETS`] (cumulative when read out).
        pub buckets: [AtomicU64; 10],
    }

    impl Calls {
        const fn new() -> Calls {
            Calls {
                total: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                sum_micros: AtomicU64::new(0),
                buckets: [const { AtomicU64::new(0) }; 10],
            }
        }

        /// Records one call.
        pub fn record(&self, took: Duration, ok: bool) {
            self.total.fetch_add(1, Ordering::Relaxed);
            if !ok {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            self.sum_micros
                .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
            let secs = took.as_secs_f64();
            if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `C_Sign` calls of every key of every token.
    pub static SIGNS: Calls = Calls::new();
}

pub use keys::KeySpec;

/// The signature algorithms a [`Signer`] can produce.
///
/// ECDSA signatures are returned DER-encoded (`Ecdsa-Sig-Value`, RFC 3279 §2.2.3), the form
/// X.509 certificates, CRLs and OCSP responses carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256 (RFC 5758 §3.2, `ecdsa-with-SHA256`).
    EcdsaP256Sha256,
    /// ECDSA on P-384 with SHA-384 (RFC 5758 §3.2, `ecdsa-with-SHA384`).
    EcdsaP384Sha384,
    /// RSA PKCS#1 v1.5 with SHA-256 (RFC 8017 §8.2, `sha256WithRSAEncryption`, RFC 4055 §5);
    /// the signature is the bare octet string, as long as the modulus.
    RsaPkcs1Sha256,
}

/// Something that can sign with a private key the caller cannot see.
///
/// Implementations are blocking; async callers run them in `spawn_blocking`.
pub trait Signer: Send + Sync + std::fmt::Debug {
    /// The algorithm of every signature this signer makes.
    fn algorithm(&self) -> Algorithm;
    /// The public key as a DER `SubjectPublicKeyInfo` (RFC 5280 §4.1.2.7).
    fn public_key_spki(&self) -> &[u8];
    /// Hashes `message` as [`Signer::algorithm`] says and signs it; returns the DER signature.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error>;
}

/// A symmetric key that never leaves the HSM and seals small secrets (data keys) with
/// AES-256-GCM (NIST SP 800-38D). Sealed form: 12-byte nonce ‖ ciphertext ‖ 16-byte tag; the
/// additional data binds a sealed value to its purpose.
pub trait Sealer: Send + Sync + std::fmt::Debug {
    /// Encrypts and authenticates `plaintext` under a fresh random nonce.
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error>;
    /// Checks and decrypts what [`Sealer::seal`] made with the same `aad`; anything else is
    /// [`Error::Unseal`].
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error>;
}

/// An HMAC-SHA-256 key (RFC 2104) that never leaves the HSM.
pub trait Mac: Send + Sync + std::fmt::Debug {
    /// HMAC-SHA-256 of `message`.
    fn mac(&self, message: &[u8]) -> Result<[u8; 32], Error>;
}

/// GCM nonce and tag sizes used by every [`Sealer`].
pub const GCM_NONCE_LEN: usize = 12;
/// See [`GCM_NONCE_LEN`].
pub const GCM_TAG_LEN: usize = 16;

/// Verifies a signature made by a [`Signer`] (DER for ECDSA, bare for RSA) with the given
/// public key (DER SPKI), with ring. A key whose kind does not sign with `algorithm` is
/// [`Error::BadSignature`].
pub fn verify(
    algorithm: Algorithm,
    spki_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let key = keys::PublicKey::from_spki(spki_der)?;
    if key.spec.algorithm() != algorithm {
        return Err(Error::BadSignature);
    }
    key.verify(message, signature)
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("PKCS#11 module {module} could not be loaded: {detail}")]
    Module { module: String, detail: String },
    /// No token with this label is present in any slot.
    #[error("no token labelled {label:?} is present")]
    TokenNotFound { label: String },
    /// The user PIN was refused.
    #[error("the token refused the PIN")]
    PinIncorrect,
    /// No key with this label exists in the token.
    #[error("no key labelled {label:?} in the token")]
    KeyNotFound { label: String },
    /// A key with this label already exists.
    #[error("a key labelled {label:?} already exists in the token")]
    KeyExists { label: String },
    /// The token (or its session) went away and could not be recovered within the retry budget.
    #[error("the token is unavailable: {detail}")]
    TokenUnavailable { detail: String },
    /// Any other PKCS#11 failure, with the function and return value it came from.
    #[error("PKCS#11 {function} failed: {detail}")]
    Pkcs11 { function: String, detail: String },
    /// The public key could not be read or has an unsupported form.
    #[error("unsupported or malformed public key: {0}")]
    PublicKey(String),
    /// The configuration cannot work (a bad token label, no SO PIN to create a token, no free
    /// slot).
    #[error("PKCS#11 configuration: {0}")]
    Config(String),
    /// A signature did not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// Sealed data failed authentication (wrong key, wrong purpose or altered bytes).
    #[error("sealed data does not authenticate under this key")]
    Unseal,
}
