//! The ecert certification authority.
//!
//! What it does: turns an approved request (subject data from the RA, a public key from a CSR
//! whose signature verified) into a certificate signed in the HSM, through a cycle that records
//! everything before anything is signed ([`authority`], docs/ISSUANCE-CYCLE.md); keeps the
//! hierarchy, the profiles ([`profile`]), the key policy ([`keys`]), the pre-issuance lints
//! ([`lint`]), the hash-chained audit trail ([`audit`]) and the store ([`store`]); reads what the
//! public repository publishes and decides which CRLs and OCSP responses are due
//! ([`publication`]).
//!
//! What it never does: sign without a stored linting TBS; take a subject field from a CSR; fall
//! back to a software key when the HSM fails; write personal identity numbers anywhere.
//!
//! ```no_run
//! # async fn f() -> ca_core::Result<()> {
//! use ca_core::{authority::{ApprovedRequest, Authority}, config::Config, csr::VerifiedCsr, profile::SubjectData};
//! let config = Config::load("ecert-data".as_ref(), None)?;
//! let ca = Authority::open(config).await?;
//! let csr = VerifiedCsr::parse(&std::fs::read("req.pem").unwrap())?;
//! let subject = SubjectData { name: Some("CHAN Tai Man".into()), emails: vec!["tm@example.hk".into()], ..Default::default() };
//! let issued = ca.issue(ApprovedRequest { profile: "personal".into(), csr, subject, days: None, renews: None, actor: "staff:super1".into() }).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

/// A failpoint in async code (`FAILPOINTS=name=sleep(ms)|panic`, builds with the `failpoints`
/// feature only): evaluated on a blocking thread, so a `sleep` holds this task and not one of
/// the runtime's workers — the service goes on answering other requests, as it does while a
/// real HSM call is slow — and a `panic` unwinds here as it would inline.
macro_rules! async_fail_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        if let Err(e) = tokio::task::spawn_blocking(|| fail::fail_point!($name)).await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    };
}

pub mod audit;
pub mod authority;
pub mod backup;
pub mod ceremony;
pub mod clock;
pub mod config;
pub mod crl;
pub mod csr;
pub mod custody;
pub mod dcv;
pub mod error;
pub mod ext;
pub mod hkid;
pub mod keys;
pub mod ldap;
pub mod lint;
pub mod mpic;
pub mod ocsp;
pub mod pii;
pub mod pkcs7;
pub mod profile;
pub mod publication;
pub mod quorum;
pub mod ra;
pub mod revocation;
mod row;
pub mod serial;
pub mod sigalg;
pub mod store;
pub mod totp;

pub use error::{Error, Result};
