//! The one error type of `ca-core`.

/// Everything the CA can refuse or fail at. Each variant names what went wrong so that the CLI
/// and the RA can show a person what to do about it; none carries personal data or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The CSR is larger than the intake budget allows (reference checklist #36).
    #[error("CSR too large: {len} bytes, the limit is {max}")]
    CsrTooLarge { len: usize, max: usize },
    /// The upload is not one PEM block or DER CSR.
    #[error("CSR is not a single PEM or DER certification request: {0}")]
    CsrEncoding(String),
    /// The CSR does not parse as an RFC 2986 CertificationRequest.
    #[error("CSR is malformed: {0}")]
    CsrMalformed(String),
    /// The CSR signature does not verify: no proof of possession (RFC 2986 §3).
    #[error("CSR signature does not verify (no proof of possession of the private key)")]
    CsrBadSignature,
    /// The key algorithm or size is not allowed (BR §6.1.5, S/MIME BR §6.1.5).
    #[error("key not allowed: {0}")]
    KeyNotAllowed(String),
    /// The key is weak (BR §6.1.1.3: small factors, ROCA, Fermat, off-curve points).
    #[error("weak key refused: {0}")]
    WeakKey(String),
    /// The key is on the blocked-key list (revoked for compromise, BR §4.9.1.1).
    #[error("key is blocked: it was reported compromised")]
    KeyBlocked,
    /// The approved request does not fit the profile.
    #[error("request does not fit profile {profile}: {reason}")]
    Profile { profile: String, reason: String },
    /// No such profile.
    #[error("unknown profile {0:?}")]
    UnknownProfile(String),
    /// A pre-issuance lint failed (BR §4.3.1.2): nothing was signed.
    #[error("pre-issuance lint failed: {}", .0.join("; "))]
    Lint(Vec<String>),
    /// The signed certificate does not match what was linted, or its signature does not verify.
    /// Issuance halts: nothing is stored as issued (reference checklist #4, #9).
    #[error("signed certificate failed its self-check: {0}")]
    SignatureCheck(String),
    /// The HSM refused or failed. Never followed by a software fallback.
    #[error("HSM: {0}")]
    Hsm(#[from] hsm::Error),

    /// The LDAP directory failed or refused a write (crate::ldap); never names the entry.
    #[error("LDAP directory: {0}")]
    Directory(String),
    /// The database failed.
    #[error("database: {0}")]
    Store(String),
    /// The database cannot be reached now (down, restarting, no connection in time): worth
    /// trying again shortly; the RA answers 503.
    /// (The detail is logged where it is met, not shown: it names hosts.)
    #[error("the database is unavailable: try again shortly")]
    StoreUnavailable(String),
    /// The database's storage is full (SQLite `SQLITE_FULL`, PostgreSQL `53100 disk_full`):
    /// the transaction was rolled back and nothing was written; it works again once space is
    /// freed (issue 13, defect 3). The RA answers 503 without the detail.
    #[error("the database cannot write, its disk is full: {0}")]
    StoreFull(String),
    /// A serial that should exist does not.
    #[error("no certificate with serial {0}")]
    UnknownSerial(String),
    /// A certificate cannot be renewed in its present state.
    #[error("certificate {serial} cannot be renewed: {reason}")]
    NotRenewable { serial: String, reason: String },
    /// A revocation request that cannot be applied (RFC 5280 §5.3.1; TLS BR §4.9).
    #[error("revocation refused: {0}")]
    Revocation(String),
    /// The certificate is revoked already; only a change to keyCompromise is allowed.
    #[error("certificate {serial} is already revoked ({reason})")]
    AlreadyRevoked { serial: String, reason: String },
    /// Another process is signing for this data directory or database.
    #[error("another ecert process is signing for {0}; only one signer runs at a time")]
    SignerBusy(String),
    /// A backup that cannot be made, or an archive that cannot be restored: what is wrong
    /// (issue 17, [`crate::backup`]).
    #[error("backup: {0}")]
    Backup(String),
    /// This process took the signer lock at epoch `held`, but another has taken it since
    /// (`current`): a standby took over. It must stop signing ([`crate::store::Fence`]).
    #[error("this process lost the signer lock (epoch {held}; another signer holds epoch {current}): it writes nothing more")]
    SignerFenced { held: i64, current: i64 },
    /// The personal-data keys (the `pii` token) are not activated in this process: counter
    /// functions that need personal data wait for the data owner (issue 14, custody).
    #[error(
        "personal-data keys not activated: the data owner activates them (/staff/personal-data)"
    )]
    PersonalDataLocked,
    /// The CA hierarchy has not been initialised (run `ecert init`).
    #[error("the CA is not initialised: run `ecert init`")]
    NotInitialised,
    /// No such CA.
    #[error("unknown CA {0:?}")]
    UnknownCa(String),
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The audit trail failed verification.
    #[error("audit trail: {0}")]
    Audit(String),
    /// Building a certificate failed in the encoder.
    #[error("certificate encoding: {0}")]
    Encoding(String),
    /// No such application, staff member or session — or one the caller may not see (ownership
    /// is checked by asking for the object *and* its owner: a swapped id finds nothing).
    #[error("not found")]
    NotFound,
    /// A field of a request is not acceptable; `field` names the form field.
    #[error("{field}: {reason}")]
    Invalid {
        /// The form field.
        field: &'static str,
        /// What to fix (never the value itself).
        reason: String,
    },
    /// A typed HKID number is malformed or fails its check digit.
    #[error("HKID number: {0}")]
    Hkid(#[from] crate::hkid::HkidError),
    /// The request does not fit the application's present state (e.g. approving before the
    /// e-mail address is confirmed).
    #[error("{0}")]
    Conflict(String),
    /// A one-time code was wrong.
    #[error("the code is not correct ({attempts_left} attempts left)")]
    CodeRejected {
        /// Attempts before the code is void.
        attempts_left: u32,
    },
    /// Too many attempts: wait or ask for a new code.
    #[error("too many attempts: {0}")]
    TooManyAttempts(String),
    /// A code, approval or session has expired.
    #[error("expired: {0}")]
    Expired(String),
    /// Sign-in refused; says nothing about which of user name, password or code was wrong.
    #[error("sign-in failed: the user name, password or code is not correct")]
    SignInFailed,
    /// The signed-in staff member's role does not allow this.
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// A DNS lookup for domain validation or CAA failed (not "no such record").
    #[error("DNS lookup failed: {0}")]
    Dns(String),
    /// The signer's clock is off its reference, or cannot be checked (crate::clock), or would
    /// date a CRL before its predecessor: nothing is signed.
    #[error("clock: {0}")]
    Clock(String),
    /// A DNS answer failed DNSSEC validation (bogus, signatures missing or expired), or the
    /// resolver does not validate (TLS BR §3.2.2.4, §3.2.2.8.1): nothing is concluded from it.
    #[error("DNSSEC validation failed: {0}")]
    Dnssec(String),
    /// CAA records forbid this CA to issue for a name (TLS BR §3.2.2.8).
    #[error("CAA forbids issuance for {domain}: {reason}")]
    CaaForbids { domain: String, reason: String },
    /// File or lock IO.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if store_full(&e) {
            // Debug only: callers log their failures (once per outage in the background duties).
            tracing::debug!(error = %e, "the database's disk is full");
            Error::StoreFull(e.to_string())
        } else if store_unreachable(&e) {
            tracing::debug!(error = %e, "the database is unreachable");
            Error::StoreUnavailable(e.to_string())
        } else {
            Error::Store(e.to_string())
        }
    }
}

/// Whether a database error means its storage is full: SQLite's primary result code 13
/// (`SQLITE_FULL`, <https://www.sqlite.org/rescode.html#full>; sqlx reports the extended
/// code, whose low byte is the primary one) or PostgreSQL's `53100` (disk_full, Appendix A).
fn store_full(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    let Some(code) = db.code() else {
        return false;
    };
    code == "53100" || code.parse::<u32>().is_ok_and(|c| c & 0xff == 13)
}

/// Whether a database error means the database cannot be reached now (down, restarting, no
/// connection within the pool's wait), rather than that the request was wrong: PostgreSQL's
/// connection-exception (08), operator-intervention (57P) and insufficient-resources (53)
/// classes, pool timeouts and I/O.
fn store_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            // 08: connection exception; 57P: operator intervention (shutdown, restart);
            // 53: insufficient resources (too many connections, out of memory).
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")),
        _ => false,
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::Store(e.to_string())
    }
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::Encoding(e.to_string())
    }
}

impl From<der::Error> for Error {
    fn from(e: der::Error) -> Self {
        Error::Encoding(e.to_string())
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
