//! The CA: initialises the hierarchy and runs the issuance cycle (docs/ISSUANCE-CYCLE.md).
//!
//! ```text
//! approved request ─► prepare(): key policy ─► reserve serial (commit) ─► build TBS ─►
//!   linting certificate (static signature value) ─► lint ─► store linting TBS, state `issuing` (commit) ─► IssuanceToken
//! IssuanceToken ─► sign(): HSM signs the linted TBS ─► verify signature, compare TBS ─►
//!   store certificate, state `issued`, audit (one commit)
//! ```
//!
//! [`IssuanceToken`] can only be made by `prepare` and is consumed by `sign`, so an unlinted or
//! unrecorded TBS cannot reach the HSM (Boulder's issuance token; TLS BR §4.3.1.2).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::Arc;

use der::asn1::{AnyRef, BitStringRef};
use der::{Decode, Encode};
use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose,
};
use serde_json::json;
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use crate::audit::{self, Event};
use crate::config::Config;
use crate::crl::{EntryList, Scope, TbsSpec};
use crate::csr::VerifiedCsr;
use crate::error::{Error, Result};
use crate::ext;
use crate::keys::SubscriberKey;
use crate::lint::{self, Expect, LintInput};
use crate::profile::{CaId, CaRole, CaStatus, IssueContext, Profile, SubjectData};
use crate::serial::SerialNumber;
use crate::store::{CertState, Store, WriteOp};

pub(crate) mod responder;
pub use responder::RESPONDER_PROFILE;

/// Group commit: state changes from concurrent issuances are written in one transaction (one
/// fsync) per batch. Each caller still waits for *its* change to be durable before going on,
/// so the cycle's order (nothing signed before its record is committed) holds per certificate.
#[derive(Debug, Clone)]
struct Committer {
    jobs: tokio::sync::mpsc::Sender<Job>,
    /// Batches refused as a whole and applied change by change instead (`/metrics`): a
    /// change that fails its own check does that; many would mean the set-based statements
    /// ([`Store::apply_batch`]) fail where the per-change ones pass.
    retried: Arc<std::sync::atomic::AtomicU64>,
}

type Job = (WriteOp, Event, tokio::sync::oneshot::Sender<Result<()>>);

/// The most changes one transaction carries.
const MAX_BATCH: usize = 128;

impl Committer {
    fn start(store: Store) -> Committer {
        let (jobs, rx) = tokio::sync::mpsc::channel(4 * MAX_BATCH);
        let retried = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(Self::run(store, rx, retried.clone()));
        Committer { jobs, retried }
    }

    async fn write(&self, op: WriteOp, event: Event) -> Result<()> {
        let stopped = || Error::Store("the database writer stopped".into());
        let (done, wait) = tokio::sync::oneshot::channel();
        self.jobs
            .send((op, event, done))
            .await
            .map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }

    async fn run(
        store: Store,
        mut rx: tokio::sync::mpsc::Receiver<Job>,
        retried: Arc<std::sync::atomic::AtomicU64>,
    ) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let ops: Vec<_> = batch.iter().map(|(op, ev, _)| (op, ev)).collect();
            match store.apply_batch(&ops).await {
                Ok(()) => {
                    for (_, _, done) in batch {
                        let _ = done.send(Ok(()));
                    }
                }
                Err(e) if batch.len() == 1 => {
                    if let Some((_, _, done)) = batch.into_iter().next() {
                        let _ = done.send(Err(e));
                    }
                }
                // One bad change must not fail its neighbours: retry each on its own.
                Err(_) => {
                    retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    for (op, ev, done) in batch {
                        let _ = done.send(store.apply_batch(&[(&op, &ev)]).await);
                    }
                }
            }
        }
    }
}

/// A request the RA (or an officer at the CLI) approved.
#[derive(Debug, Clone)]
pub struct ApprovedRequest {
    /// Profile id.
    pub profile: String,
    /// The subscriber key, from a CSR whose signature verified.
    pub csr: VerifiedCsr,
    /// Subject data from the approved application (never from the CSR).
    pub subject: SubjectData,
    /// Validity in days; the profile's default if `None`.
    pub days: Option<u32>,
    /// The certificate this one renews or re-keys.
    pub renews: Option<SerialNumber>,
    /// Who approved it (for the audit trail), e.g. `staff:alice`.
    pub actor: String,
}

/// A certificate that was issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Its serial.
    pub serial: SerialNumber,
    /// The CA that issued it.
    pub issuer: CaId,
    /// DER.
    pub cert_der: Vec<u8>,
}

/// Proof that a TBS was built, linted and recorded in state `issuing`. Only
/// [`Authority::prepare`] makes one; [`Authority::sign`] consumes it.
#[derive(Debug)]
#[must_use = "a prepared issuance must be signed (or it stays in state `issuing`)"]
pub struct IssuanceToken {
    serial: SerialNumber,
    issuer: CaId,
    tbs: Vec<u8>,
    signature_algorithm: Vec<u8>,
    renews: Option<String>,
    actor: String,
    profile: &'static str,
}

impl IssuanceToken {
    /// The serial being issued.
    pub fn serial(&self) -> SerialNumber {
        self.serial
    }
}

/// Signs linting certificates with a static signature value instead of a throwaway key
/// (TLS BR §4.3.1.2 allows either): the linting certificate is never verified, only linted, and
/// the HSM later signs its exact TBS. Saves one signature per issuance. The algorithm is the
/// issuing CA key's ([`crate::sigalg`]), so the TBS `signature` field is the final one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LintSigner(&'static rcgen::SignatureAlgorithm);

impl LintSigner {
    /// Stands in for `issuer` (its algorithm, never its key).
    pub(crate) fn of(issuer: &dyn hsm::Signer) -> Result<LintSigner> {
        Ok(LintSigner(crate::sigalg::rcgen_algorithm(
            issuer.algorithm(),
        )?))
    }
}

/// `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER 1, s INTEGER 1 }`: well-formed, obviously fake.
const STATIC_SIGNATURE: [u8; 8] = [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01];

impl rcgen::PublicKeyData for LintSigner {
    fn der_bytes(&self) -> &[u8] {
        // Never used: every issuer here has a pre-specified key identifier, and this key is
        // never a subject key.
        &[]
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0
    }
}

impl rcgen::SigningKey for LintSigner {
    fn sign(&self, _msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        Ok(STATIC_SIGNATURE.to_vec())
    }
}

/// A serial committed as `reserved`, with what the next step needs.
struct Reserved {
    issuer: CaId,
    profile: &'static Profile,
    key: SubscriberKey,
    subject: SubjectData,
    renews: Option<String>,
    serial: SerialNumber,
    crl_partition: Option<u16>,
}

struct CaState {
    cert_der: Vec<u8>,
    subject_der: Vec<u8>,
    /// The CA certificate's subjectKeyIdentifier (what its subscribers' AKI must carry).
    key_id: Option<Vec<u8>>,
    /// The CA certificate's notAfter: nothing it signs may outlive it.
    not_after: OffsetDateTime,
    signer: Arc<dyn hsm::Signer>,
    /// The CA certificate's issuer name (DER): for a root, its own subject.
    issuer_der: Vec<u8>,
    /// The CA certificate's name constraints (DNS names and mailboxes): permitted, excluded.
    constraints: NameConstraints,
    /// Revoked by the root (two officers' decision, `ra::officer`): it issues nothing more.
    revoked: std::sync::atomic::AtomicBool,
    /// Its subject's commonName (its responder is named after it).
    common_name: String,
    /// Where it is in its life: set at start, and `retired` by [`Authority::retire_finished`].
    status: std::sync::Mutex<CaStatus>,
}

/// How long after its last certificate expires a superseded CA keeps publishing: the longer of
/// the time a CRL keeps an expired certificate's entry ([`crate::crl::KEEP_AFTER_EXPIRY`]) and
/// the time its OCSP response stays fresh ([`crate::publication::OCSP_FRESH_AFTER_EXPIRY`]).
pub const RETIRE_AFTER_EXPIRY: i64 =
    if crate::crl::KEEP_AFTER_EXPIRY > crate::publication::OCSP_FRESH_AFTER_EXPIRY {
        crate::crl::KEEP_AFTER_EXPIRY
    } else {
        crate::publication::OCSP_FRESH_AFTER_EXPIRY
    };

/// A CRL that was published.
#[derive(Debug, Clone)]
pub struct PublishedCrl {
    /// Which CRL of the CA.
    pub scope: Scope,
    /// From the entries read to the signature checked: encoding, lint, HSM signature,
    /// self-check.
    pub build_and_sign: std::time::Duration,
    /// Its CRLNumber.
    pub number: i64,
    /// How many entries it lists.
    pub entries: usize,
    /// DER.
    pub der: Vec<u8>,
    /// Where it was written.
    pub path: std::path::PathBuf,
}

/// A ceremony file for [`Authority::init_with`].
#[derive(Debug)]
pub struct CeremonyRun {
    /// The parsed file.
    pub ceremony: crate::ceremony::Ceremony,
    /// Its text (its SHA-256 goes into the record).
    pub text: String,
    /// The custodians' shares, or where new ones go.
    pub access: crate::ceremony::Access,
    /// Where the signed record is written.
    pub record_out: Option<std::path::PathBuf>,
}

/// What `ecert init` did.
#[derive(Debug, Clone, Default)]
pub struct InitReport {
    /// CAs created in this run.
    pub created: Vec<CaId>,
    /// CAs that already existed.
    pub existing: Vec<CaId>,
    /// The signed record of the built-in ceremony, when it made something.
    pub ceremony: Option<String>,
}

/// The certificate authority: configuration, store, HSM keys, and the lock that makes this
/// process the only signer for its data directory.
pub struct Authority {
    config: Config,
    store: Store,
    policy_arc: String,
    cas: HashMap<CaId, CaState>,
    /// Each role's current CA (`cas.state = 'active'`): where new issuance goes.
    active: HashMap<CaRole, CaId>,
    writer: Committer,
    /// At most `hsm.pool_size` signatures in flight, so the token's session pool is not
    /// outrun (each extra request would open and close a session).
    hsm_slots: Arc<tokio::sync::Semaphore>,
    audit_key: Arc<dyn hsm::Signer>,
    /// The delegated OCSP responder of each issuing CA.
    responders: tokio::sync::RwLock<HashMap<CaId, Arc<responder::Responder>>>,
    /// The personal-data vault: `None` until the `pii` token's PIN is given (at start from
    /// [`Config::pii_pin`], or by the data owner's activation; see [`crate::custody`]).
    pii: std::sync::RwLock<Option<Arc<crate::pii::Vault>>>,
    /// Why the personal-data vault is not open (shown by `/healthz`: a fixed phrase; the
    /// details go to the log).
    pii_problem: std::sync::Mutex<Option<String>>,
    /// Wrong activation PINs in a row, and until when activation is refused.
    pii_failures: std::sync::Mutex<(u32, Option<std::time::Instant>)>,
    /// The staff-auth vault (the `ca` token): TOTP secrets and problem reports.
    staff_keys: Arc<crate::pii::Vault>,
    /// Each issuing CA's CRL entries, kept between publications (see [`crate::crl`]).
    crl_lists: tokio::sync::Mutex<HashMap<CaId, EntryList>>,
    /// CRL files (the copies in `<data_dir>/crl/` a web server in front may serve) that do not
    /// hold the newest stored CRL of their scope: the database stored it, the file write
    /// failed (a full disk). [`Authority::rewrite_crl_files`] writes them again.
    crl_files_behind: std::sync::Mutex<HashSet<(CaId, Scope)>>,
    /// The newest checkpoint known to be in the audit witness (`-1`: not read yet).
    witnessed: std::sync::atomic::AtomicI64,
    /// Why the last attempt to write the witness failed.
    witness_problem: std::sync::Mutex<Option<String>>,
    /// Citizens' refused requests this minute: (minute, recorded, counted only).
    citizen_refusals: std::sync::Mutex<(i64, u32, u32)>,
    /// Held while a CA retires and while responders are made, so no responder certificate is
    /// issued by a CA after its final CRL.
    lifecycle: tokio::sync::Mutex<()>,
    /// An HSM check is running ([`Authority::hsm_check`]).
    hsm_check_running: Arc<std::sync::atomic::AtomicBool>,
    /// The Debian weak-key lists of `[keys] debian_weak_dir` (empty when unset).
    debian_weak: crate::keys::debian::DebianWeakKeys,
    /// The clock check before anything is dated and signed ([`crate::clock`]).
    clock: crate::clock::ClockGuard,
    _lock: Option<File>,
    /// The PostgreSQL advisory lock lives as long as this connection;
    /// [`Authority::check_signer_lock`] asks on it whether it still does.
    db_lock: tokio::sync::Mutex<Option<sqlx::pool::PoolConnection<sqlx::Any>>>,
    /// The backend of the lock connection (PostgreSQL; 0: not known yet).
    lock_pid: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("engine", &self.store.engine())
            .finish_non_exhaustive()
    }
}

/// Writes `der` to `dir/file` through a temporary file and a rename, so a reader never sees
/// a partial CRL; a write that fails (a full disk) leaves no partial file behind (issue 13,
/// defect 3).
async fn write_crl_file(dir: std::path::PathBuf, file: String, der: Vec<u8>) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        let tmp = dir.join(format!(".{file}.tmp"));
        let path = dir.join(&file);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&tmp, &der))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Error::Io {
                    context: format!("writing {}", path.display()),
                    source: e,
                }
            })
    })
    .await
    .map_err(|e| Error::Encoding(format!("CRL file task failed: {e}")))?
}

/// An issuing CA's name constraints (RFC 5280 §4.2.1.10) for DNS names and mailboxes.
#[derive(Debug, Default, Clone)]
struct NameConstraints {
    permitted_dns: Vec<String>,
    excluded_dns: Vec<String>,
    permitted_mail: Vec<String>,
    excluded_mail: Vec<String>,
}

impl NameConstraints {
    fn of(cert: &x509_parser::certificate::X509Certificate<'_>) -> NameConstraints {
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        let mut out = NameConstraints::default();
        for e in cert.extensions() {
            if let ParsedExtension::NameConstraints(nc) = e.parsed_extension() {
                for (subtrees, permitted) in [
                    (&nc.permitted_subtrees, true),
                    (&nc.excluded_subtrees, false),
                ] {
                    for s in subtrees.iter().flatten() {
                        let (list, v) = match &s.base {
                            GeneralName::DNSName(d) => (
                                if permitted {
                                    &mut out.permitted_dns
                                } else {
                                    &mut out.excluded_dns
                                },
                                d,
                            ),
                            GeneralName::RFC822Name(m) => (
                                if permitted {
                                    &mut out.permitted_mail
                                } else {
                                    &mut out.excluded_mail
                                },
                                m,
                            ),
                            _ => continue,
                        };
                        list.push(v.to_ascii_lowercase());
                    }
                }
            }
        }
        out
    }

    /// Whether `name` (a DNS name, or a mailbox when `mail`) is inside the constraints.
    fn allows(&self, name: &str, mail: bool) -> bool {
        let name = name.to_ascii_lowercase();
        let (permitted, excluded) = if mail {
            (&self.permitted_mail, &self.excluded_mail)
        } else {
            (&self.permitted_dns, &self.excluded_dns)
        };
        let within = |c: &String| {
            if mail {
                let domain = name.rsplit_once('@').map_or("", |(_, d)| d);
                if c.contains('@') {
                    name == *c
                } else if let Some(sub) = c.strip_prefix('.') {
                    domain.ends_with(&format!(".{sub}"))
                } else {
                    domain == c
                }
            } else {
                name == *c || name.ends_with(&format!(".{c}"))
            }
        };
        (permitted.is_empty() || permitted.iter().any(within)) && !excluded.iter().any(within)
    }
}

/// A root's public half in the signer: `serve` and the other signer commands never open a root
/// key, so anything that would sign with one is refused by name (a root signs only in a key
/// ceremony, [`crate::ceremony`]).
#[derive(Debug)]
struct CeremonyOnly {
    spki: Vec<u8>,
    algorithm: hsm::Algorithm,
}

impl CeremonyOnly {
    fn new(spki: &[u8]) -> Result<CeremonyOnly> {
        Ok(CeremonyOnly {
            algorithm: crate::sigalg::of_spki(spki)?,
            spki: spki.to_vec(),
        })
    }
}

impl hsm::Signer for CeremonyOnly {
    fn algorithm(&self) -> hsm::Algorithm {
        self.algorithm
    }

    fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, _message: &[u8]) -> std::result::Result<Vec<u8>, hsm::Error> {
        Err(hsm::Error::Config(
            "a root key signs only in a key ceremony (ecert ceremony run)".into(),
        ))
    }
}

/// Wrong activation PINs in a row before activation is refused for a while.
pub const PII_ACTIVATION_FAILURES: u32 = 5;
/// How long activation is refused after [`PII_ACTIVATION_FAILURES`] wrong PINs.
pub const PII_ACTIVATION_LOCKOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// HSM label of the key that signs audit checkpoints.
pub const AUDIT_KEY_LABEL: &str = "ecert-audit";

/// What [`Authority::verify_audit`] found.
#[derive(Debug)]
pub struct AuditVerified {
    /// Records checked.
    pub records: usize,
    /// Signed checkpoints checked.
    pub checkpoints: usize,
    /// What is wrong.
    pub findings: Vec<audit::Finding>,
    /// Stretches declared lost by signed `audit.restored` records (not findings).
    pub gaps: Vec<audit::RestoredGap>,
}

/// What [`Authority::check_signer_lock`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// The lock is held and the signer epoch is this process's.
    Held,
    /// The lock connection had failed; the lock was taken again, the epoch unchanged.
    Regained,
    /// The database cannot be reached (why): the lock cannot be shown held or taken again.
    Unreachable(String),
}

/// How long a signer waits for another signing process to finish before giving up.
const SIGNER_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Takes the signer lock of the data directory: one signing process at a time, so that
/// leftovers in `reserved`/`issuing` found at start-up are known to belong to a dead process.
/// Waits up to [`SIGNER_LOCK_WAIT`] for another signer, then fails with [`Error::SignerBusy`].
async fn signer_lock(config: &Config) -> Result<File> {
    signer_lock_waiting(config, Some(SIGNER_LOCK_WAIT)).await
}

/// [`signer_lock`], waiting up to `wait`, or for as long as it takes with `None` (a standby).
async fn signer_lock_waiting(config: &Config, wait: Option<std::time::Duration>) -> Result<File> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::Io {
        context: format!("creating {}", config.data_dir.display()),
        source: e,
    })?;
    {
        // The directory holds the database and the token: owner only.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700));
    }
    let path = config.data_dir.join("signer.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::Io {
            context: format!("opening {}", path.display()),
            source: e,
        })?;
    let deadline = wait.map(|w| tokio::time::Instant::now() + w);
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock)
                if deadline.is_none_or(|d| tokio::time::Instant::now() < d) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::SignerBusy(config.data_dir.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::Io {
                    context: format!("locking {}", path.display()),
                    source: e,
                })
            }
        }
    }
}

/// Opens the HSM token (blocking).
pub(crate) fn open_token(config: &Config) -> Result<hsm::pkcs11::Token> {
    let cfg = hsm_config(config)?;
    Ok(hsm::pkcs11::Token::open(&cfg)?)
}

fn hsm_config(config: &Config) -> Result<hsm::pkcs11::Pkcs11Config> {
    Ok(hsm::pkcs11::Pkcs11Config {
        module: config.hsm.module.clone(),
        token_label: config.hsm.token_label.clone(),
        user_pin: config.user_pin()?,
        so_pin: None,
        pool_size: config.hsm.pool_size,
    })
}

/// This host's name and this process's id, as recorded beside a signer epoch.
fn process_name() -> String {
    format!(
        "{}:{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        std::process::id()
    )
}

pub(crate) fn random_secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

pub(crate) fn write_secret(path: &std::path::Path, value: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| Error::Io {
        context: format!("writing {}", path.display()),
        source: e,
    };
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(value.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Prepares the embedded SoftHSM2 token in the data directory: config file, PINs (0600), token.
/// Idempotent. The caller MUST have set `SOFTHSM2_CONF` to [`softhsm_conf_path`] before the
/// first PKCS#11 call of the process.
pub fn init_embedded_token(config: &Config) -> Result<()> {
    let dir = config.hsm_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
        context: format!("creating {}", dir.display()),
        source: e,
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    hsm::pkcs11::softhsm_conf(&dir).map_err(|e| Error::Io {
        context: "writing softhsm2.conf".into(),
        source: e,
    })?;
    for name in ["user.pin", "so.pin"] {
        let p = dir.join(name);
        if !p.exists() {
            write_secret(&p, &random_secret())?;
        }
    }
    let so_pin = std::fs::read_to_string(dir.join("so.pin")).map_err(|e| Error::Io {
        context: "reading so.pin".into(),
        source: e,
    })?;
    let mut cfg = hsm_config(config)?;
    cfg.so_pin = Some(so_pin.trim().to_string());
    hsm::pkcs11::init_token(&cfg)?;
    Ok(())
}

/// Where the embedded SoftHSM2 configuration lives.
pub fn softhsm_conf_path(config: &Config) -> std::path::PathBuf {
    config.hsm_dir().join("softhsm2.conf")
}

fn dn(country: &str, org: &str, cn: &str) -> Result<DistinguishedName> {
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CountryName,
        DnValue::PrintableString(
            country
                .try_into()
                .map_err(|_| Error::Config("country".into()))?,
        ),
    );
    dn.push(DnType::OrganizationName, DnValue::Utf8String(org.into()));
    dn.push(DnType::CommonName, DnValue::Utf8String(cn.into()));
    Ok(dn)
}

/// Parameters of a CA certificate (pure). Root: TLS BR §7.1.2.1; issuing CAs: TLS BR §7.1.2.10
/// and S/MIME BR §7.1.2.2. Names, validity, path length and name constraints come from the
/// ceremony's [`CaSpec`](crate::ceremony::CaSpec) (for `init`, from `[ca]`); an issuing CA must
/// end before its root (`root_not_after`), or it is refused with a named error rather than cut
/// short. An issuing CA's CRL distribution point and caIssuers name its root (`parent`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn ca_params(
    config: &Config,
    policy_arc: &str,
    spec: &crate::ceremony::CaSpec,
    parent: Option<CaRole>,
    subject_spki: &[u8],
    serial: SerialNumber,
    now: OffsetDateTime,
    root_not_after: Option<OffsetDateTime>,
) -> Result<CertificateParams> {
    let c = &config.ca;
    let role = spec.role;
    let mut p = CertificateParams::default();
    p.serial_number = Some(rcgen::SerialNumber::from_slice(serial.as_bytes()));
    p.not_before = now;
    let days = spec.validity_days;
    p.not_after = now + time::Duration::days(i64::from(days)) - time::Duration::seconds(1);
    if let Some(root_end) = root_not_after.filter(|end| p.not_after >= *end) {
        return Err(Error::Config(format!(
            "validity {days} days: the {} CA would end {}, not before its root ({}); \
             shorten it or make a new root",
            role.name(),
            p.not_after.date(),
            root_end.date()
        )));
    }
    // SKI by RFC 5280 §4.2.1.2 method 1. Pre-computed, because the linting certificate is made
    // without the subject's (HSM) key. Certificates below copy it into their AKI (rcgen's
    // `Issuer::from_ca_cert_der` takes the issuer's SKI as it is, never recomputes it).
    p.key_identifier_method = KeyIdMethod::PreSpecified(key_id(subject_spki)?);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let base = config.base_url();
    match role {
        CaRole::Root | CaRole::TlsRoot => {
            p.distinguished_name = dn(&c.country, &c.organization, &spec.common_name)?;
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            // The root's AKI repeats its own SKI (TLS BR §7.1.2.1.3 wants it present).
            p.use_authority_key_identifier_extension = true;
        }
        CaRole::Individual | CaRole::Server => {
            let parent = parent
                .filter(|r| r.is_root())
                .ok_or_else(|| Error::Config(format!("the {} CA needs a root", role.name())))?
                .name();
            p.distinguished_name = dn(&c.country, &c.organization, &spec.common_name)?;
            p.is_ca = IsCa::Ca(BasicConstraints::Constrained(spec.path_length));
            if !spec.permitted.is_empty() || !spec.excluded.is_empty() {
                // RFC 5280 §4.2.1.10: mailbox constraints for the S/MIME CA, DNS for the TLS CA.
                let subtree = |name: &str| {
                    if role == CaRole::Individual {
                        rcgen::GeneralSubtree::Rfc822Name(name.to_string())
                    } else {
                        rcgen::GeneralSubtree::DnsName(name.to_string())
                    }
                };
                p.name_constraints = Some(rcgen::NameConstraints {
                    permitted_subtrees: spec.permitted.iter().map(|n| subtree(n)).collect(),
                    excluded_subtrees: spec.excluded.iter().map(|n| subtree(n)).collect(),
                });
            }
            p.use_authority_key_identifier_extension = true;
            p.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![format!("{base}/crl/{parent}.crl")],
            }];
            if role == CaRole::Server {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            } else {
                p.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::EmailProtection,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
            }
            // The same list `ceremony check` shows the operator.
            let policies = crate::ceremony::policy_oids(role, policy_arc)
                .iter()
                .map(|p| ext::PolicyOid::parse(p))
                .collect::<Result<Vec<_>>>()?;
            p.custom_extensions = vec![
                ext::certificate_policies(&policies)?,
                ext::authority_info_access(None, &format!("{base}/ca/{parent}.crt"))?,
            ];
        }
    }
    Ok(p)
}

/// The parts of a signed X.509 structure (RFC 5280 §4.1.1): the TBS and the algorithm as
/// encoded, plus the signature.
#[derive(der::Sequence)]
struct Signed<'a> {
    tbs: AnyRef<'a>,
    algorithm: AnyRef<'a>,
    signature: BitStringRef<'a>,
}

/// Splits a linting certificate into its TBS and signatureAlgorithm bytes.
pub(crate) fn split_signed(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let s = Signed::from_der(der)?;
    Ok((s.tbs.to_der()?, s.algorithm.to_der()?))
}

/// Builds `Certificate ::= SEQUENCE { tbs, algorithm, BIT STRING signature }` (and the same
/// shape of CertificateList) around the exact bytes that were linted and signed, copying the
/// TBS once.
fn assemble(tbs: &[u8], algorithm: &[u8], signature: &[u8]) -> Result<Vec<u8>> {
    // Both are whole TLVs; the signature becomes a BIT STRING with no unused bits.
    AnyRef::from_der(tbs)?;
    AnyRef::from_der(algorithm)?;
    let bits = BitStringRef::from_bytes(signature)?.to_der()?;
    let body = tbs.len() + algorithm.len() + bits.len();
    let mut out = Vec::with_capacity(body + 8);
    der::Header::new(der::Tag::Sequence, der::Length::try_from(body)?)?.encode_to_vec(&mut out)?;
    out.extend_from_slice(tbs);
    out.extend_from_slice(algorithm);
    out.extend_from_slice(&bits);
    Ok(out)
}

/// Signs `tbs` in the HSM and checks the result: the signature verifies under the issuer's
/// public key (with ring, not the signer's own code) and the TBS is byte-identical.
pub(crate) async fn hsm_sign_checked(
    signer: Arc<dyn hsm::Signer>,
    tbs: Vec<u8>,
    algorithm: Vec<u8>,
    issuer_spki: Vec<u8>,
) -> Result<Vec<u8>> {
    hsm_sign_checked_as(signer, tbs, algorithm, issuer_spki, SignedKind::Certificate).await
}

/// What was signed, for the self-check's parser.
#[derive(Debug, Clone, Copy)]
enum SignedKind {
    Certificate,
    Crl,
}

async fn hsm_sign_checked_as(
    signer: Arc<dyn hsm::Signer>,
    tbs: Vec<u8>,
    algorithm: Vec<u8>,
    issuer_spki: Vec<u8>,
    kind: SignedKind,
) -> Result<Vec<u8>> {
    // Signing (a blocking PKCS#11 call) and the self-check (parsing, ECDSA verification) run
    // on the blocking pool, not on the async workers.
    tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let signature = signer.sign(&tbs)?;
        let signed = assemble(&tbs, &algorithm, &signature)?;
        match kind {
            SignedKind::Certificate => self_check(&signed, &tbs, &issuer_spki)?,
            SignedKind::Crl => self_check_crl(&signed, &tbs, &issuer_spki)?,
        }
        Ok(signed)
    })
    .await
    .map_err(|e| {
        Error::Hsm(hsm::Error::TokenUnavailable {
            detail: format!("signing task failed: {e}"),
        })
    })?
}

/// Checks a signed CRL without parsing its (possibly million) entries or copying it: the
/// outer structure carries exactly the TBSCertList that was linted, and the signature
/// verifies under the CA's key (with ring, not the signer's own code).
fn self_check_crl(crl: &[u8], tbs: &[u8], issuer_spki: &[u8]) -> Result<()> {
    let bad = |m: String| Error::SignatureCheck(format!("signed CRL: {m}"));
    use der::Reader as _;
    let (signed_tbs, signature) = (|| -> der::Result<(&[u8], BitStringRef<'_>)> {
        let mut outer = der::SliceReader::new(crl)?;
        let header = der::Header::decode(&mut outer)?;
        header.tag.assert_eq(der::Tag::Sequence)?;
        let mut inner = der::SliceReader::new(outer.read_slice(header.length)?)?;
        outer.finish(())?;
        let signed_tbs = inner.tlv_bytes()?;
        AnyRef::decode(&mut inner)?;
        let signature = BitStringRef::decode(&mut inner)?;
        inner.finish((signed_tbs, signature))
    })()
    .map_err(|e| bad(e.to_string()))?;
    if signed_tbs != tbs {
        return Err(bad("TBSCertList differs from the linted one".into()));
    }
    let signature = signature
        .as_bytes()
        .ok_or_else(|| bad("signature has unused bits".into()))?;
    crate::sigalg::verify(issuer_spki, tbs, signature)
        .map_err(|_| bad("signature does not verify under the issuer's public key".into()))
}

fn self_check(cert: &[u8], tbs: &[u8], issuer_spki: &[u8]) -> Result<()> {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert)
        .map_err(|e| Error::SignatureCheck(format!("signed certificate does not parse: {e}")))?;
    if parsed.tbs_certificate.as_ref() != tbs {
        return Err(Error::SignatureCheck(
            "signed TBS differs from the linted TBS".into(),
        ));
    }
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(issuer_spki)
        .map_err(|e| Error::SignatureCheck(format!("issuer key: {e}")))?;
    parsed.verify_signature(Some(&spki)).map_err(|_| {
        Error::SignatureCheck("signature does not verify under the issuer's public key".into())
    })
}

/// A certificate's notAfter.
pub(crate) fn not_after_of(der: &[u8]) -> Result<OffsetDateTime> {
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| Error::Store(format!("a stored CA certificate does not parse: {e}")))?;
    Ok(c.validity().not_after.to_datetime())
}

/// A key identifier by RFC 5280 §4.2.1.2 method 1: the SHA-1 of the subjectPublicKey BIT STRING's
/// value (without tag, length and unused-bits octet). It equals an OCSP ResponderID byKey (RFC
/// 6960 §4.2.2.3), so clients that find the responder by its key identifier (GnuPG's dirmngr)
/// find it. CAs made before this carry a truncated SHA-256 (RFC 7093): their SKI is kept as it
/// is, and everything they sign copies it into the AKI.
pub(crate) fn key_id(spki: &[u8]) -> Result<Vec<u8>> {
    let info = x509_cert::spki::SubjectPublicKeyInfoRef::from_der(spki)
        .map_err(|e| Error::SignatureCheck(format!("public key does not parse: {e}")))?;
    Ok(<sha1::Sha1 as sha2::Digest>::digest(info.subject_public_key.raw_bytes()).to_vec())
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

pub(crate) fn now_secs() -> OffsetDateTime {
    // Whole seconds: the certificate encodes seconds, and the stored times must match it.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

fn new_srn() -> String {
    use rand::Rng;
    format!(
        "{:016}",
        rand::rngs::OsRng.gen_range(0..10_000_000_000_000_000u64)
    )
}

impl Authority {
    /// Creates what is missing of the hierarchy: policy arc, CA keys in the token, CA
    /// certificates. Idempotent. In embedded mode it first makes the SoftHSM2 token (see
    /// [`init_embedded_token`]); otherwise the token MUST exist.
    pub async fn init(config: Config) -> Result<(Authority, InitReport)> {
        Self::init_with(config, None).await
    }

    /// [`Authority::open`] for a standby (`ecert serve --standby`, issue 17): waits for the
    /// signer lock for as long as another process holds it, then opens the CA as its signer
    /// — resolving what the previous signer left half-done by the recorded rule — under a new
    /// signer epoch ([`crate::store::Fence`]). Unlike `init` it makes nothing: a token that
    /// lacks a key is an error, never a new key.
    pub async fn open_standby(config: Config) -> Result<Authority> {
        let lock = signer_lock_waiting(&config, None).await?;
        let store = Store::open(&config.database_url())
            .await?
            .with_clock_check(&config.clock);
        let db_lock = store.signer_lock(None).await?;
        Self::open_with(config, store, Some(lock), db_lock).await
    }

    /// [`Authority::init`], with the hierarchy made by `ceremony` (a reviewed file, its text,
    /// the custodians' access and where its record goes) instead of the built-in one.
    pub async fn init_with(
        config: Config,
        ceremony: Option<CeremonyRun>,
    ) -> Result<(Authority, InitReport)> {
        let wait = Some(SIGNER_LOCK_WAIT);
        let lock = signer_lock_waiting(&config, wait).await?;
        if config.embedded_softhsm() {
            init_embedded_token(&config)?;
        }
        let store = Store::open(&config.database_url())
            .await?
            .with_clock_check(&config.clock);
        let mut tx = store.begin().await?;
        let arc = match &config.ca.policy_arc {
            Some(a) => a.clone(),
            None => format!("2.25.{}", uuid::Uuid::new_v4().as_u128()),
        };
        let arc = store.meta_init(&mut tx, "policy_arc", &arc).await?;
        tx.commit().await?;
        let db_lock = store.signer_lock(wait).await?;
        let cfg2 = config.clone();
        let token = tokio::task::spawn_blocking(move || open_token(&cfg2))
            .await
            .map_err(|e| Error::Store(e.to_string()))??;
        let _ = &arc;
        let mut report = InitReport {
            existing: store.cas().await?.into_iter().map(|c| c.id).collect(),
            ..Default::default()
        };
        // The audit key: signs checkpoints of the audit chain (DESIGN.md "Personal data and
        // trust"). Generated in the token like the CA keys.
        let t = token.clone();
        let created = tokio::task::spawn_blocking(move || -> Result<bool> {
            Ok(match t.find_key(AUDIT_KEY_LABEL)? {
                Some(_) => false,
                None => {
                    t.generate_ec_key(AUDIT_KEY_LABEL)?;
                    true
                }
            })
        })
        .await
        .map_err(|e| Error::Store(e.to_string()))??;
        if created {
            store
                .audit_now(&Event {
                    kind: "audit.key_created",
                    actor: "system:init".into(),
                    subject: None,
                    detail: json!({ "key_label": AUDIT_KEY_LABEL }),
                })
                .await?;
        }
        // Custody (crate::custody): a new data directory records the separated layout; the
        // staff-auth key goes in this token, the personal-data keys in the `pii` token (made
        // here in embedded mode; its keys are made when it is first opened with its PIN).
        crate::custody::mark_new_layout(&store).await?;
        if !crate::custody::is_legacy(&store).await? {
            crate::custody::staff_auth_key(&token, &store, "system:init", true).await?;
            if config.embedded_softhsm() {
                let cfg = config.clone();
                let made = tokio::task::spawn_blocking(move || {
                    crate::custody::init_embedded_pii_token(&cfg)
                })
                .await
                .map_err(|e| Error::Store(e.to_string()))??;
                if !made {
                    tracing::warn!("the pii token waits for its PIN: the data owner activates it");
                }
            }
        }
        // The hierarchy: on the embedded default, the built-in ceremony (1-of-1 quorum, its one
        // share kept in the data directory); with another HSM, a reviewed ceremony file.
        let built_in = crate::ceremony::Ceremony::built_in(&config, &store).await?;
        let mut record_out = None;
        let progress = if let Some(run) = ceremony {
            record_out = run.record_out;
            let p = crate::ceremony::run_creation(
                &config,
                &store,
                &token,
                run.ceremony,
                &run.text,
                run.access,
                "system:init",
            )
            .await?;
            report.created = p.made.clone();
            Some(p)
        } else if built_in.steps.is_empty() {
            None
        } else if config.embedded_softhsm() {
            let access = crate::ceremony::embedded_access(&config)?;
            let p = crate::ceremony::run_creation(
                &config,
                &store,
                &token,
                built_in,
                "built-in ceremony of ecert init",
                access,
                "system:init",
            )
            .await?;
            report.created = p.made.clone();
            Some(p)
        } else if store.ca(CaRole::Individual.name()).await?.is_none() {
            return Err(Error::Config(
                "no CA yet: with an external HSM the hierarchy is made in a key ceremony from a \
                 reviewed file: `ecert ceremony check CEREMONY.toml`, then `ecert ceremony run \
                 CEREMONY.toml` (docs/CEREMONY.md)"
                    .into(),
            ));
        } else {
            None
        };
        let auth = Self::open_with(config, store, Some(lock), db_lock).await?;
        if let Some(p) = progress {
            report.ceremony =
                Some(crate::ceremony::finish(&auth, &token, p, record_out.as_deref()).await?);
        }
        Ok((auth, report))
    }

    /// Runs a key ceremony (`ecert ceremony run`, [`crate::ceremony`]) as the signer: its CA
    /// steps first, then the roots' CRLs with the signer open; returns the signed record (also
    /// written to `record_out`). The database must be initialised (`ecert init`).
    pub async fn run_ceremony(
        config: Config,
        ceremony: crate::ceremony::Ceremony,
        file_text: &str,
        access: crate::ceremony::Access,
        record_out: Option<&std::path::Path>,
        actor: &str,
    ) -> Result<(Authority, String)> {
        // A ceremony that only signs roots' CRLs runs beside the signer (the CRL that lists a
        // revoked CA is due within 24 hours: the service is not stopped for it); one that makes
        // CAs is the signer while it runs.
        let makes_cas = ceremony
            .steps
            .iter()
            .any(|s| !matches!(s, crate::ceremony::Step::RootCrl { .. }));
        let lock = match makes_cas {
            true => Some(signer_lock(&config).await?),
            false => None,
        };
        let store = Store::open(&config.database_url())
            .await?
            .with_clock_check(&config.clock);
        store
            .meta("policy_arc")
            .await?
            .ok_or(Error::NotInitialised)?;
        let db_lock = match makes_cas {
            true => store.signer_lock(Some(SIGNER_LOCK_WAIT)).await?,
            false => None,
        };
        let cfg2 = config.clone();
        let token = tokio::task::spawn_blocking(move || open_token(&cfg2))
            .await
            .map_err(|e| Error::Store(e.to_string()))??;
        let progress = crate::ceremony::run_creation(
            &config, &store, &token, ceremony, file_text, access, actor,
        )
        .await?;
        let auth = Self::open_with(config, store, lock, db_lock).await?;
        let record = crate::ceremony::finish(&auth, &token, progress, record_out).await?;
        Ok((auth, record))
    }

    /// Opens an initialised CA: takes the signer lock, opens the store and the HSM keys, and
    /// resolves serials a dead process left in `reserved` or `issuing`.
    pub async fn open(config: Config) -> Result<Authority> {
        let lock = signer_lock(&config).await?;
        let store = Store::open(&config.database_url())
            .await?
            .with_clock_check(&config.clock);
        let db_lock = store.signer_lock(Some(SIGNER_LOCK_WAIT)).await?;
        Self::open_with(config, store, Some(lock), db_lock).await
    }

    /// `lock`: the signer lock, or `None` for a root-CRL ceremony beside a running signer (it
    /// signs only with the root key it was given and resolves no leftovers: they may be the
    /// live signer's).
    async fn open_with(
        config: Config,
        store: Store,
        lock: Option<File>,
        db_lock: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
    ) -> Result<Authority> {
        let policy_arc = store
            .meta("policy_arc")
            .await?
            .ok_or(Error::NotInitialised)?;
        let stored = store.cas().await?;
        for role in CaRole::ALL {
            // Data directories made before the TLS root have none until the rollover.
            if role != CaRole::TlsRoot && !stored.iter().any(|c| c.id.role == role) {
                return Err(Error::NotInitialised);
            }
        }
        // A retired CA signs nothing more: its key is not opened.
        let labels: Vec<_> = stored
            .iter()
            .map(|c| (c.id, c.key_label.clone(), c.cert_der.clone(), c.state))
            .collect();
        // A retired CA signs no OCSP response: its responders are not opened.
        let retired: Vec<String> = stored
            .iter()
            .filter(|c| c.state == CaStatus::Retired)
            .map(|c| c.id.name())
            .collect();
        let responder_rows: Vec<_> = store
            .responders()
            .await?
            .into_iter()
            .filter(|r| !retired.contains(&r.issuer))
            .collect();
        let cfg2 = config.clone();
        type Keys = (
            Vec<(CaId, Vec<u8>, CaStatus, Option<hsm::pkcs11::Pkcs11Key>)>,
            hsm::pkcs11::Pkcs11Key,
            Vec<(crate::store::ResponderRow, Option<hsm::pkcs11::Pkcs11Key>)>,
            hsm::pkcs11::Token,
        );
        crate::custody::require_separated(&store).await?;
        let (keys, audit_key, responder_keys, ca_token) =
            tokio::task::spawn_blocking(move || -> Result<Keys> {
                let token = open_token(&cfg2)?;
                // Roots' keys are never opened here: a root signs only in a key ceremony
                // (crate::ceremony), with its token opened by a quorum of custodians.
                let keys = labels
                    .into_iter()
                    .map(|(id, label, der, state)| {
                        let key = if id.is_root() || state == CaStatus::Retired {
                            None
                        } else {
                            Some(token.key(&label)?)
                        };
                        Ok((id, der, state, key))
                    })
                    .collect::<Result<_>>()?;
                let audit = token
                    .key(AUDIT_KEY_LABEL)
                    .map_err(|_| Error::NotInitialised)?;
                let responders = responder_rows
                    .into_iter()
                    .map(|row| {
                        let key = token.find_key(&row.key_label)?;
                        Ok((row, key))
                    })
                    .collect::<Result<_>>()?;
                Ok((keys, audit, responders, token))
            })
            .await
            .map_err(|e| Error::Store(e.to_string()))??;
        let mut responders = HashMap::new();
        for (row, key) in responder_keys {
            let role = CaId::from_name(&row.issuer)?;
            match key {
                Some(key) => {
                    responders.insert(role, Arc::new(responder::Responder::new(row, key)?));
                }
                // A new responder is made on first use.
                None => {
                    tracing::error!(ca = %row.issuer, key_label = %row.key_label, "the OCSP responder key is missing from the HSM")
                }
            }
        }
        let mut cas = HashMap::new();
        let mut active = HashMap::new();
        for (role, der, status, key) in keys {
            if status == CaStatus::Active {
                active.insert(role.role, role);
            }
            let revoked = store.ca_revocation(&role.name()).await?.is_some();
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
                .map_err(|e| Error::Store(format!("stored CA certificate {}: {e}", role.name())))?;
            let signer: Arc<dyn hsm::Signer> = match key {
                Some(key) => {
                    if cert.tbs_certificate.subject_pki.raw != hsm::Signer::public_key_spki(&key) {
                        return Err(Error::Config(format!(
                            "the HSM key of the {} CA does not match its certificate",
                            role.name()
                        )));
                    }
                    // `sign` verifies every assembled certificate under this CA's public key
                    // (self_check), so the token-level check would only repeat it.
                    Arc::new(key.without_release_check())
                }
                None => Arc::new(CeremonyOnly::new(cert.tbs_certificate.subject_pki.raw)?),
            };
            cas.insert(
                role,
                CaState {
                    subject_der: cert.tbs_certificate.subject.as_raw().to_vec(),
                    issuer_der: cert.tbs_certificate.issuer.as_raw().to_vec(),
                    constraints: NameConstraints::of(&cert),
                    key_id: lint::subject_key_id(cert.tbs_certificate.extensions()),
                    not_after: cert.validity().not_after.to_datetime(),
                    cert_der: der.clone(),
                    signer,
                    revoked: revoked.into(),
                    status: std::sync::Mutex::new(status),
                    common_name: cert
                        .subject()
                        .iter_common_name()
                        .find_map(|a| a.as_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                },
            );
        }
        // Everything that can fail is opened before the epoch is taken: a standby that cannot
        // open its keys or read its configuration does not depose a working signer.
        let debian_weak = match &config.keys.debian_weak_dir {
            Some(dir) => crate::keys::debian::DebianWeakKeys::load(dir)?,
            None => Default::default(),
        };
        // The staff-auth vault, read only when its data key exists (a standby's case)...
        let staff_ready = store.meta(crate::pii::STAFF_KEY_META).await?.is_some();
        let early_staff = if staff_ready {
            Some(crate::custody::open_staff_vault(&ca_token, &store, "system:start", false).await?)
        } else {
            None
        };
        // The signer (not a root-CRL ceremony beside it) takes the next epoch once its keys are
        // open — a standby that cannot open them does not depose a working signer — and before
        // its first write (the vaults below audit their opening): a deposed signer frozen in a
        // transaction holds rows this process would otherwise wait on for ever (the audit
        // head); the epoch's increment ends that transaction ([`Store::take_signer_epoch`]).
        // From here on, a process that signed before this one can write nothing more.
        let store = match lock {
            Some(_) => store.take_signer_epoch(&process_name()).await?,
            None => store,
        };
        // ... else made here, an audited write (data directories whose `init` predates the
        // staff-auth key).
        let staff_keys = Arc::new(match early_staff {
            Some(v) => v,
            None => {
                crate::custody::open_staff_vault(&ca_token, &store, "system:start", true).await?
            }
        });
        drop(ca_token);
        let (pii, pii_problem) = match config.pii_pin() {
            Ok(Some(pin)) => {
                let pin = zeroize::Zeroizing::new(pin);
                match crate::custody::open_pii_vault(&config, &store, &pin, "system:start").await {
                    Ok(v) => (Some(Arc::new(v)), None),
                    Err(e) => {
                        tracing::error!(error = %e, "the personal-data keys did not open");
                        (
                            None,
                            Some("the pii token did not open (see the service log)".to_string()),
                        )
                    }
                }
            }
            Ok(None) => (
                None,
                Some("waiting for activation by the data owner".to_string()),
            ),
            Err(e) => {
                tracing::error!(error = %e, "the pii token's PIN is not available");
                (
                    None,
                    Some("the pii token's PIN is not available (see the service log)".to_string()),
                )
            }
        };
        let writer = Committer::start(store.clone());
        let hsm_slots = Arc::new(tokio::sync::Semaphore::new(config.hsm.pool_size));
        let clock = crate::clock::ClockGuard::new(&config.clock, &store);
        let auth = Authority {
            clock,
            debian_weak,
            pii: std::sync::RwLock::new(pii),
            pii_problem: std::sync::Mutex::new(pii_problem),
            pii_failures: std::sync::Mutex::new((0, None)),
            staff_keys,
            config,
            store,
            policy_arc,
            cas,
            active,
            writer,
            hsm_slots,
            audit_key: Arc::new(audit_key),
            responders: tokio::sync::RwLock::new(responders),
            crl_lists: tokio::sync::Mutex::new(HashMap::new()),
            crl_files_behind: std::sync::Mutex::new(HashSet::new()),
            witnessed: std::sync::atomic::AtomicI64::new(-1),
            witness_problem: std::sync::Mutex::new(None),
            citizen_refusals: std::sync::Mutex::new((0, 0, 0)),
            hsm_check_running: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            lifecycle: tokio::sync::Mutex::new(()),
            _lock: lock,
            db_lock: tokio::sync::Mutex::new(db_lock),
            lock_pid: std::sync::atomic::AtomicI64::new(0),
        };
        if auth._lock.is_some() {
            auth.reconcile().await?;
        }
        Ok(auth)
    }

    /// Start-up rule for leftovers of a dead process (DESIGN.md step 7):
    /// - `reserved`: nothing was built or signed → `failed`.
    /// - `issuing`: the HSM may have signed, but the certificate never left the process →
    ///   `abandoned`: never reported good, listed as revoked by status publication.
    ///
    /// Each change is audited. Runs with the signer lock held, so no live process owns them.
    async fn reconcile(&self) -> Result<Vec<(String, CertState)>> {
        let mut out = Vec::new();
        for (from, to) in [
            (CertState::Reserved, CertState::Failed),
            (CertState::Issuing, CertState::Abandoned),
        ] {
            for serial in self.store.serials_in(from).await? {
                let mut tx = self.store.begin().await?;
                let reason = "process ended during issuance; resolved at start-up";
                match to {
                    CertState::Failed => {
                        self.store
                            .mark_failed(&mut tx, &serial, from, reason)
                            .await?
                    }
                    _ => self.store.mark_abandoned(&mut tx, &serial, reason).await?,
                }
                self.store
                    .audit(
                        &mut tx,
                        &Event {
                            kind: if to == CertState::Failed {
                                "issuance.failed"
                            } else {
                                "issuance.abandoned"
                            },
                            actor: "system:reconcile".into(),
                            subject: Some(serial.clone()),
                            detail: json!({ "from": from.to_string(), "rule": reason }),
                        },
                    )
                    .await?;
                tx.commit().await?;
                tracing::warn!(serial = %serial, from = %from, to = %to, "resolved interrupted issuance");
                out.push((serial, to));
            }
        }
        Ok(out)
    }

    /// Whether this process holds the signer lock (a root-CRL ceremony beside a running signer
    /// does not).
    pub fn is_signer(&self) -> bool {
        self._lock.is_some()
    }

    /// Whether this process still holds the signer lock (issue 17), asked once a second by
    /// `serve`. `Err` means it must stop signing at once — another process holds a newer
    /// signer epoch ([`crate::store::Fence`]: every write it tried would be refused anyway), or
    /// the lock it lost is now another's. On PostgreSQL the advisory lock lives only as long
    /// as its session: when the lock connection fails or is silent for `timeout`, the lock is
    /// taken again on a new connection if no one else has it and the epoch is still this
    /// process's ([`LockState::Regained`]); while the database cannot be reached the answer is
    /// [`LockState::Unreachable`] — nothing can be written or signed meanwhile (every signing
    /// path reads or writes the database first), and OCSP and CRLs are served from memory.
    pub async fn check_signer_lock(&self, timeout: std::time::Duration) -> Result<LockState> {
        if self.store.fence().is_none() {
            return Ok(LockState::Held);
        }
        let mut conn = self.db_lock.lock().await;
        if self.store.engine() != crate::store::Engine::Postgres {
            // SQLite: the file lock lives as long as this process.
            return match tokio::time::timeout(timeout, self.store.check_fence(None)).await {
                Ok(Ok(())) => Ok(LockState::Held),
                Ok(Err(e @ Error::SignerFenced { .. })) => Err(e),
                Ok(Err(e)) => Ok(LockState::Unreachable(e.to_string())),
                Err(_) => Ok(LockState::Unreachable("the database did not answer".into())),
            };
        }
        let asked = match conn.as_mut() {
            Some(c) => tokio::time::timeout(timeout, async {
                self.store.check_fence(Some(&mut *c)).await?;
                if self.lock_pid.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                        .fetch_one(&mut **c)
                        .await?;
                    self.lock_pid
                        .store(i64::from(pid), std::sync::atomic::Ordering::SeqCst);
                }
                self.store.renew_signer_lease(c).await
            })
            .await
            .unwrap_or_else(|_| Err(Error::Store("the lock connection did not answer".into()))),
            None => Err(Error::Store("no lock connection".into())),
        };
        match asked {
            Ok(()) => Ok(LockState::Held),
            Err(e @ Error::SignerFenced { .. }) => Err(e),
            Err(_) => {
                // The session, and the advisory lock with it, is gone or going: never reuse it.
                if let Some(c) = conn.take() {
                    drop(c.detach());
                }
                // If the server has not noticed yet (a stall, a partition now healed), our old
                // session still holds the lock: end it, so that we, or a standby, can take it.
                let old = self.lock_pid.swap(0, std::sync::atomic::Ordering::SeqCst);
                if old != 0 {
                    let _ = tokio::time::timeout(
                        timeout,
                        sqlx::query(
                            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE pid = $1 \
                             AND locktype = 'advisory' AND granted AND classid = CAST($2 AS oid) \
                             AND objid = CAST($3 AS oid) AND objsubid = 1",
                        )
                        .bind(i32::try_from(old).unwrap_or_default())
                        .bind(crate::store::SIGNER_LOCK_KEY >> 32)
                        .bind(crate::store::SIGNER_LOCK_KEY & 0xffff_ffff)
                        .execute(self.store.pool()),
                    )
                    .await;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                // Not under a timeout: a future dropped after the server granted the lock
                // would leave it on a pooled connection (the pool's own acquire timeout bounds
                // the wait).
                let retaken = self
                    .store
                    .signer_lock(Some(std::time::Duration::ZERO))
                    .await;
                match retaken {
                    Ok(Some(mut c)) => {
                        // Taken again; still this process's epoch, or it stops.
                        match tokio::time::timeout(timeout, self.store.check_fence(Some(&mut c)))
                            .await
                        {
                            Ok(Ok(())) => {}
                            // Never back to the pool holding the lock.
                            Ok(Err(e @ Error::SignerFenced { .. })) => {
                                drop(c.detach());
                                return Err(e);
                            }
                            Ok(Err(e)) => {
                                drop(c.detach());
                                return Ok(LockState::Unreachable(e.to_string()));
                            }
                            Err(_) => {
                                drop(c.detach());
                                return Ok(LockState::Unreachable(
                                    "the database did not answer".into(),
                                ));
                            }
                        }
                        *conn = Some(c);
                        Ok(LockState::Regained)
                    }
                    Ok(None) => Ok(LockState::Held),
                    Err(e @ Error::SignerBusy(_)) => Err(e),
                    Err(e) => Ok(LockState::Unreachable(e.to_string())),
                }
            }
        }
    }

    /// Signs `message` with the audit key (checkpoints, ceremony records).
    pub async fn sign_with_audit_key(&self, message: &[u8]) -> Result<Vec<u8>> {
        let key = self.audit_key.clone();
        let message = message.to_vec();
        tokio::task::spawn_blocking(move || key.sign(&message))
            .await
            .map_err(|e| Error::Store(format!("signing task failed: {e}")))?
            .map_err(Error::from)
    }

    /// Purges the audit records older than `ra.audit_retention_days` at `now` (issue 18,
    /// docs/AUDIT.md "Retention"): every record up to the newest signed checkpoint whose record
    /// was made before the cutoff, with the checkpoints before it. The purge is declared in the
    /// chain by an `audit.pruned` record whose detail — the last record purged, its hash (the
    /// anchor the first record kept chains to), the cutoff — is signed by the audit key, so
    /// `audit verify`, `audit verify --witness` and exports still verify, and a prefix removed
    /// any other way is a finding ([`audit::restored_gaps`]). The checkpoint at the anchor is
    /// kept (exports start at it). Returns the last record purged and how many went.
    pub async fn prune_audit(&self, now: i64) -> Result<Option<(i64, u64)>> {
        let before = now - i64::from(self.config.ra.audit_retention_days) * 86_400;
        // A record's time is what the database says: nothing from the first record made at or
        // after the cutoff on goes, whatever time a later record claims (a record appended
        // with an old time must not carry the chain before it away).
        let first_recent: Option<i64> =
            sqlx::query_scalar("SELECT MIN(seq) FROM audit_log WHERE at >= $1")
                .bind(before)
                .fetch_one(self.store.pool())
                .await?;
        // The anchor: a checkpoint before that, whose record and next record are here (after
        // a restore the checkpoint at the junction has no record; the next one is the
        // `audit.restored` record, which goes with a later purge).
        let anchor: Option<audit::Checkpoint> = sqlx::query_as(
            "SELECT c.seq, c.at, c.hash, c.signature FROM audit_checkpoints c \
             JOIN audit_log l ON l.seq = c.seq \
             WHERE c.seq < $1 AND EXISTS (SELECT 1 FROM audit_log n WHERE n.seq = c.seq + 1) \
             ORDER BY c.seq DESC LIMIT 1",
        )
        .bind(first_recent.unwrap_or(i64::MAX))
        .fetch_optional(self.store.pool())
        .await?;
        let Some(anchor) = anchor else {
            return Ok(None);
        };
        let (to, hash) = (anchor.seq, anchor.hash.clone());
        // What goes must be what the audit key signed: every record intact and linked to the
        // next (or across a signed restore gap), and the anchor a checkpoint signed over the
        // hash its record has. A database rewritten below the cutoff is refused, not purged.
        let first: i64 = sqlx::query_scalar("SELECT MIN(seq) FROM audit_log")
            .fetch_one(self.store.pool())
            .await?;
        let stretch = self.store.audit_range(first, to + 1).await?;
        let spki = self.audit_key.public_key_spki().to_vec();
        audit::check_stretch(&stretch, &anchor, &spki).map_err(|why| {
            Error::Conflict(format!(
                "the audit records before the retention cutoff do not verify ({why}): nothing purged; run `ecert audit verify`"
            ))
        })?;
        let signature = self
            .sign_with_audit_key(&audit::pruned_message(to, &hash, before))
            .await?;
        let mut tx = self.store.begin().await?;
        // The append-only trigger lets exactly these go (migration 0047).
        sqlx::query("UPDATE audit_prune SET upto = $1 WHERE id = 1")
            .bind(to)
            .execute(&mut *tx)
            .await?;
        let purged = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
            .bind(to)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Closed again at once: no other deletion passes the trigger.
        sqlx::query("UPDATE audit_prune SET upto = 0 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM audit_checkpoints WHERE seq < $1")
            .bind(to)
            .execute(&mut *tx)
            .await?;
        self.store
            .audit(
                &mut tx,
                &Event {
                    kind: "audit.pruned",
                    actor: "system:retention".into(),
                    subject: None,
                    detail: json!({
                        "pruned_to": to,
                        "anchor": hex::encode(&hash),
                        "before": before,
                        "records": purged,
                        "retention_days": self.config.ra.audit_retention_days,
                        "signature": hex::encode(signature),
                    }),
                },
            )
            .await?;
        tx.commit().await?;
        Ok((purged > 0).then_some((to, purged)))
    }

    /// The audit key's signature algorithm as a record names it.
    pub fn audit_key_algorithm_name(&self) -> &'static str {
        match self.audit_key.algorithm() {
            hsm::Algorithm::EcdsaP384Sha384 => "ecdsa-with-SHA384",
            hsm::Algorithm::RsaPkcs1Sha256 => "sha256WithRSAEncryption",
            _ => "ecdsa-with-SHA256",
        }
    }

    /// How many group-committed batches were refused as a whole and applied change by change
    /// since this signer started (`ecert_group_commit_retries_total`).
    pub fn group_commit_retries(&self) -> u64 {
        self.writer
            .retried
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The policy OID arc of this CA.
    pub fn policy_arc(&self) -> &str {
        &self.policy_arc
    }

    /// A CA's certificate (DER).
    pub fn ca_cert(&self, role: CaId) -> Result<&[u8]> {
        self.cas
            .get(&role)
            .map(|c| c.cert_der.as_slice())
            .ok_or(Error::NotInitialised)
    }

    /// Issues a certificate: [`Authority::prepare`] then [`Authority::sign`].
    pub async fn issue(&self, req: ApprovedRequest) -> Result<Issued> {
        let token = self.prepare(req).await?;
        self.sign(token).await
    }

    /// Steps 1–4 of the cycle: checks the request, reserves the serial, builds and lints the
    /// TBS, records it in state `issuing`. Returns the token that [`Authority::sign`] needs.
    pub async fn prepare(&self, req: ApprovedRequest) -> Result<IssuanceToken> {
        self.clock.check(&self.store).await?;
        match self.reserve(&req).await {
            Ok(v) => self.build_and_record(req, v).await,
            Err(e) => {
                self.record_refusal(&req.actor, &req.profile, &e).await;
                Err(e)
            }
        }
    }

    /// A root revokes an issuing CA's certificate (two officers' decision, `ra::officer`): the
    /// revocation is recorded and audited and the CA issues nothing more; the root's CRL that
    /// lists it is signed in a key ceremony (`serve` never opens a root key), due within 24
    /// hours (TLS BR §4.9.7) and alarmed by `/healthz` until then. Returns the root. TLS BR §7.2.2: a CA certificate's CRL entry carries a
    /// reasonCode — keyCompromise, affiliationChanged, superseded, cessationOfOperation or
    /// privilegeWithdrawn. The root itself is not revoked (it is withdrawn from trust stores).
    pub async fn revoke_ca(
        &self,
        role: CaId,
        reason: crate::revocation::Reason,
        actor: &str,
    ) -> Result<CaRole> {
        use crate::revocation::Reason;
        if role.is_root() {
            return Err(Error::Revocation(
                "a root is not revoked: it is withdrawn from the trust stores".into(),
            ));
        }
        let root = self.parent_of(role).ok_or(Error::NotInitialised)?;
        if matches!(reason, Reason::Unspecified | Reason::CertificateHold) {
            return Err(Error::Revocation(
                "a CA certificate is revoked with a reason (TLS BR §7.2.2): keyCompromise, affiliationChanged, superseded, cessationOfOperation or privilegeWithdrawn".into(),
            ));
        }
        let ca = self.cas.get(&role).ok_or(Error::NotInitialised)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&ca.cert_der)
            .map_err(|e| Error::Store(format!("stored CA certificate: {e}")))?;
        let serial = hex::encode(cert.raw_serial());
        let mut tx = self.store.begin().await?;
        if !self
            .store
            .revoke_ca(
                &mut tx,
                &role.name(),
                now_secs().unix_timestamp(),
                reason.code(),
            )
            .await?
        {
            let earlier = self.store.ca_revocation(&role.name()).await?;
            return Err(Error::AlreadyRevoked {
                serial,
                reason: earlier
                    .and_then(|(_, code)| Reason::from_code(code))
                    .map_or("?", Reason::name)
                    .into(),
            });
        }
        self.store
            .audit(
                &mut tx,
                &Event {
                    kind: "ca.revoked",
                    actor: actor.to_string(),
                    subject: Some(role.name()),
                    detail: json!({ "serial": serial, "reason": reason.name() }),
                },
            )
            .await?;
        tx.commit().await?;
        ca.revoked.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::warn!(ca = %role, root = root.name(), "CA revoked: its root's CRL must be signed in a key ceremony within 24 hours (TLS BR §4.9.7)");
        Ok(root)
    }

    /// The root whose certificate issued `role`'s (by issuer name): `None` for a root. A Server
    /// CA of a data directory made before the TLS root is under the S/MIME root.
    pub fn parent_of(&self, role: CaId) -> Option<CaRole> {
        let ca = self.cas.get(&role)?;
        if role.is_root() {
            return None;
        }
        CaRole::ROOTS.into_iter().find(|r| {
            self.cas
                .get(&CaId::first(*r))
                .is_some_and(|root| root.subject_der == ca.issuer_der)
        })
    }

    /// Whether the root has revoked this CA.
    pub fn ca_revoked(&self, role: CaId) -> bool {
        self.cas
            .get(&role)
            .is_some_and(|c| c.revoked.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// [`Authority::revoke`] with the evidence behind a keyCompromise reason; see
    /// [`crate::revocation::revoke_as`].
    pub async fn revoke_as(
        &self,
        serial: SerialNumber,
        reason: crate::revocation::Reason,
        actor: &str,
        evidence: crate::revocation::Evidence,
    ) -> Result<Vec<(String, crate::revocation::Outcome)>> {
        crate::revocation::revoke_as(&self.store, serial, reason, actor, evidence).await
    }

    /// Revokes or holds one certificate; see [`crate::revocation::revoke`].
    pub async fn revoke(
        &self,
        serial: SerialNumber,
        reason: crate::revocation::Reason,
        actor: &str,
    ) -> Result<Vec<(String, crate::revocation::Outcome)>> {
        crate::revocation::revoke(&self.store, serial, reason, actor).await
    }

    /// The CRLs a CA publishes: its full CRL and, for an issuing CA, partitions `0..n` where n
    /// is the larger of its configured partitions ([`crate::config::CrlConfig::partitions_of`]) and the partitions it published before (certificates
    /// keep the partition they were issued with when the setting changes).
    pub async fn crl_scopes(&self, role: CaId) -> Result<Vec<Scope>> {
        if role.is_root() {
            return Ok(vec![Scope::Full]);
        }
        let heads = self.store.crl_heads(&role.name()).await?;
        Ok(self.crl_scopes_from(role, &heads))
    }

    /// [`Authority::crl_scopes`] from heads already read.
    pub fn crl_scopes_from(&self, role: CaId, heads: &[crate::store::CrlHead]) -> Vec<Scope> {
        let mut scopes = vec![Scope::Full];
        if role.is_root() {
            return scopes;
        }
        let published = heads
            .iter()
            .filter_map(|h| match h.scope {
                Scope::Partition(k) => Some(k + 1),
                Scope::Full => None,
            })
            .max()
            .unwrap_or(0);
        let n = published.max(self.config.crl.partitions_of(role.role));
        scopes.extend((0..n).map(Scope::Partition));
        scopes
    }

    /// The CRLs of `role` due for publication at `now` ([`crate::publication::crls_due`]):
    /// reads the newest CRL of each scope and the scopes' status versions.
    pub async fn crls_due(&self, role: CaId, now: i64, interval: i64) -> Result<Vec<Scope>> {
        let heads = self.store.crl_heads(&role.name()).await?;
        let versions = self.store.status_versions(&role.name()).await?;
        // One read of the heads serves both the scopes and their freshness.
        let scopes = self.crl_scopes_from(role, &heads);
        Ok(crate::publication::crls_due(
            role.role, scopes, &heads, &versions, now, interval,
        ))
    }

    /// Brings the in-memory CRL entries of `role` up to date: the first time, every entry is
    /// read; afterwards only the serials queued in `crl_pending` by status changes.
    async fn refresh_crl_entries(
        &self,
        lists: &mut HashMap<CaId, EntryList>,
        role: CaId,
        now: i64,
    ) -> Result<()> {
        const BATCH: i64 = 20_000;
        loop {
            // The queue is read before the rows: a change committed after this point stays
            // queued (or bumps the version read), so it is applied on the next run.
            let pending = self.store.crl_pending(&role.name(), BATCH).await?;
            match lists.get_mut(&role) {
                None => {
                    // Each chunk is parsed into the list on the blocking pool while the next
                    // is read from the database.
                    let mut list = EntryList::default();
                    let mut cursor = crate::store::CrlCursor::default();
                    let mut parsing: Option<tokio::task::JoinHandle<Result<EntryList>>> = None;
                    loop {
                        let chunk = self
                            .store
                            .crl_entries_chunk(&role.name(), now, &cursor, 100_000)
                            .await?;
                        if let Some(task) = parsing.take() {
                            list = task.await.map_err(|e| {
                                Error::Encoding(format!("CRL entry task failed: {e}"))
                            })??;
                        }
                        let Some((lines, next)) = chunk else {
                            break;
                        };
                        cursor = next;
                        let mut taken = std::mem::take(&mut list);
                        parsing = Some(tokio::task::spawn_blocking(move || {
                            for line in lines.split('\n') {
                                let mut row = crate::store::crl_entry_line(line)?;
                                // A revocation recorded by a host whose clock runs ahead is
                                // dated now.
                                row.revoked_at = row.revoked_at.min(now);
                                taken.insert(&row)?;
                            }
                            Ok(taken)
                        }));
                    }
                    lists.insert(role, list);
                }
                Some(list) => {
                    let serials: Vec<String> = pending.iter().map(|(s, _)| s.clone()).collect();
                    for (serial, row) in self.store.crl_rows(&serials).await? {
                        match row {
                            Some(mut row) => {
                                row.revoked_at = row.revoked_at.min(now);
                                list.insert(&row)?;
                            }
                            None => {
                                if let Some(s) = SerialNumber::from_hex(&serial) {
                                    list.remove(&s);
                                }
                            }
                        }
                    }
                }
            }
            self.store.crl_pending_done(&pending).await?;
            if (pending.len() as i64) < BATCH {
                return Ok(());
            }
        }
    }

    /// Builds, lints, signs (in the HSM) and stores one CRL of a CA (its full CRL or one
    /// partition, see [`crate::crl`]), and writes it to `<data-dir>/crl/<file>` (DER). The
    /// CRLNumber is committed before signing, so it never repeats or goes back, even across
    /// crashes (RFC 5280 §5.2.3); all of a CA's CRLs draw from one sequence. nextUpdate: 7
    /// days for the issuing CAs (TLS BR §4.9.7: at most 10), 365 days for the root's CRL of CA
    /// certificates (at most 12 months). Entries: revoked and held certificates and abandoned
    /// serials, kept until 7 days after they expire (BR §4.10.1).
    pub async fn publish_crl(&self, role: CaId, scope: Scope, actor: &str) -> Result<PublishedCrl> {
        if role.is_root() {
            return Err(Error::Config(format!(
                "the {} CRL is signed with the root key, in a key ceremony: `ecert ceremony run` \
                 with a root_crl step (docs/CEREMONY.md)",
                role.name()
            )));
        }
        match self.status_of(role) {
            Some(CaStatus::Retired) => {
                return Err(Error::Config(format!(
                "the {role} CA is retired (its last certificate has expired): its final CRL stands"
            )))
            }
            Some(CaStatus::Pending) => {
                return Err(Error::Config(format!(
                    "the {role} CA waits for activation: it has issued nothing to publish"
                )))
            }
            _ => {}
        }
        self.publish_crl_with(role, scope, actor, None).await
    }

    /// Where CA `id` is in its life (`None`: no such CA).
    pub fn status_of(&self, id: CaId) -> Option<CaStatus> {
        self.cas
            .get(&id)
            .map(|c| *c.status.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Retires each superseded CA that owes nothing more at `now`: none of its certificates is
    /// in issuance, and the last expired more than [`RETIRE_AFTER_EXPIRY`] ago (a CRL lists a
    /// revoked certificate, and OCSP answers for it, that long after it expires). Its final
    /// CRLs (every scope) are published, then it is marked `retired` (audited `ca.retired`) and
    /// signs nothing more — no CRL, no OCSP response, no responder. Its final CRLs and its
    /// certificate stay published. Returns the CAs retired.
    pub async fn retire_finished(&self, now: i64, actor: &str) -> Result<Vec<CaId>> {
        // No responder is made meanwhile ([`Authority::ensure_responders`]).
        let _lifecycle = self.lifecycle.lock().await;
        let mut retired = Vec::new();
        for (id, status) in self.cas() {
            if status != CaStatus::Superseded {
                continue;
            }
            let (last, in_flight) = self.store.last_expiry(&id.name()).await?;
            // A CA's certificates end with it: within a day of its own notAfter it retires
            // whatever the keep period says, so its final CRL is signed while it is valid.
            let ca_end = self
                .cas
                .get(&id)
                .map_or(i64::MAX, |c| c.not_after.unix_timestamp());
            let owed = last.is_some_and(|t| t.saturating_add(RETIRE_AFTER_EXPIRY) >= now);
            if in_flight || (owed && now < ca_end - 86_400) {
                continue;
            }
            // The final CRLs: every scope, so each URL in its certificates answers with a CRL
            // made after the last of them expired.
            let mut finals = Vec::new();
            for scope in self.crl_scopes(id).await? {
                let crl = self.publish_crl_with(id, scope, actor, None).await?;
                finals.push(json!({ "crl": scope.file_name(id), "number": crl.number }));
            }
            let mut tx = self.store.begin().await?;
            if !self
                .store
                .set_ca_state(&mut tx, id, CaStatus::Superseded, CaStatus::Retired)
                .await?
            {
                continue;
            }
            self.store
                .audit(
                    &mut tx,
                    &Event {
                        kind: "ca.retired",
                        actor: actor.to_string(),
                        subject: Some(id.name()),
                        detail: json!({ "last_not_after": last, "final_crls": finals }),
                    },
                )
                .await?;
            tx.commit().await?;
            if let Some(ca) = self.cas.get(&id) {
                *ca.status.lock().unwrap_or_else(|p| p.into_inner()) = CaStatus::Retired;
            }
            self.responders.write().await.remove(&id);
            tracing::info!(ca = %id, "CA retired: its last certificate has expired; its final CRLs stand");
            retired.push(id);
        }
        if !retired.is_empty() {
            // Its responders' keys can sign nothing anyone should accept any more.
            self.retire_responders().await?;
        }
        Ok(retired)
    }

    /// A root's CRL, signed by `signer` (the root key, opened in a key ceremony: see
    /// [`crate::ceremony`]); checked to be the key of the root's certificate.
    pub async fn publish_root_crl(
        &self,
        role: CaId,
        signer: Arc<dyn hsm::Signer>,
        actor: &str,
    ) -> Result<PublishedCrl> {
        let ca = self.cas.get(&role).ok_or(Error::NotInitialised)?;
        if !role.is_root() || ca.signer.public_key_spki() != signer.public_key_spki() {
            return Err(Error::Config(format!(
                "the key given is not the {} root's",
                role.name()
            )));
        }
        self.publish_crl_with(role, Scope::Full, actor, Some(signer))
            .await
    }

    async fn publish_crl_with(
        &self,
        role: CaId,
        scope: Scope,
        actor: &str,
        root_signer: Option<Arc<dyn hsm::Signer>>,
    ) -> Result<PublishedCrl> {
        const DAY: i64 = 86_400;
        let ca = self.cas.get(&role).ok_or(Error::NotInitialised)?;
        let signer = root_signer.unwrap_or_else(|| ca.signer.clone());
        if role.is_root() && scope != Scope::Full {
            return Err(Error::Config("a root publishes only a full CRL".into()));
        }
        self.clock.check(&self.store).await?;
        fail::fail_point!("crl::publish", |_| Err(Error::Store(
            "failpoint crl::publish".into()
        )));
        // One publication at a time in this process: the entry lists are shared.
        let mut lists = self.crl_lists.lock().await;
        let started = std::time::Instant::now();
        let now = now_secs();
        // Never backwards: a CRL dated before its predecessor (a clock set back, with or
        // without a reference) is not published (issue 13, defect 2; RFC 5280 §5.1.2.4).
        if let Some(prev) = self
            .store
            .crl_heads(&role.name())
            .await?
            .into_iter()
            .find(|h| h.scope == scope)
        {
            if unix(now) < prev.this_update {
                return Err(Error::Clock(format!(
                    "this host's clock reads {}, before the thisUpdate of the last {} CRL ({}): \
                     the clock was set back; nothing is published until it passes that time",
                    unix(now),
                    role.name(),
                    prev.this_update
                )));
            }
        }
        let validity = if role.is_root() { 365 * DAY } else { 7 * DAY };
        // The status version is read before the entries: a change after this point bumps it
        // again, so the publisher notices and republishes.
        let status_version = self
            .store
            .status_versions(&role.name())
            .await?
            .get(&scope)
            .copied()
            .unwrap_or(0);
        // A root's CRL lists the issuing CAs it issued and revoked (`revoke_ca`).
        let list = if role.is_root() {
            let mut list = EntryList::default();
            for (der, revoked_at, reason) in self.store.revoked_cas().await? {
                let (_, cert) = x509_parser::parse_x509_certificate(&der)
                    .map_err(|e| Error::Store(format!("stored CA certificate: {e}")))?;
                if cert.tbs_certificate.issuer.as_raw() != ca.subject_der {
                    continue;
                }
                let serial = SerialNumber::from_be_bytes(cert.raw_serial())
                    .ok_or_else(|| Error::Store("stored CA certificate serial".into()))?;
                list.insert(&crate::crl::EntryRow {
                    serial,
                    reason: Some(reason),
                    revoked_at,
                    not_after: Some(cert.validity().not_after.timestamp()),
                    partition: None,
                    hold_allowed: false,
                })?;
            }
            list
        } else {
            self.refresh_crl_entries(&mut lists, role, unix(now))
                .await?;
            lists.remove(&role).unwrap_or_default()
        };
        let query_ms = started.elapsed().as_millis();
        let number = match self.store.next_crl_number(&role.name()).await {
            Ok(n) => n,
            Err(e) => {
                lists.insert(role, list);
                return Err(e);
            }
        };
        async_fail_point!("crl::after_number");
        let key_id = ca
            .key_id
            .clone()
            .ok_or_else(|| Error::Store("CA certificate without SKI".into()))?;
        let idp_uri = match scope {
            Scope::Full => None,
            Scope::Partition(_) => Some(scope.url(self.config.base_url(), role)),
        };
        let algorithm = crate::sigalg::algorithm_identifier(ca.signer.algorithm())?;
        let subject_der = ca.subject_der.clone();
        let this_update = unix(now);
        // Concatenating and linting a million entries takes a moment: off the async workers.
        // The entry list goes along and comes back, whatever the outcome.
        let (list, built) = tokio::task::spawn_blocking(move || {
            let mut list = list;
            list.expire(this_update);
            let built = (|| -> Result<(Vec<u8>, usize)> {
                let entries = list.select(scope);
                let spec = TbsSpec {
                    algorithm: &algorithm,
                    issuer: &subject_der,
                    this_update,
                    next_update: this_update + validity,
                    number,
                    key_id: &key_id,
                    idp_uri: idp_uri.as_deref(),
                };
                let tbs = crate::crl::encode_tbs(&spec, &entries)?;
                let findings = crate::crl::lint(&crate::crl::LintInput {
                    tbs: &tbs,
                    algorithm: &algorithm,
                    issuer_subject_der: &subject_der,
                    issuer_key_id: &key_id,
                    max_validity_secs: validity,
                    hold_allowed: role.role == CaRole::Individual,
                    idp_uri: idp_uri.as_deref(),
                });
                if !findings.is_empty() {
                    return Err(Error::Lint(findings));
                }
                Ok((tbs, entries.len()))
            })();
            (list, built)
        })
        .await
        .map_err(|e| Error::Encoding(format!("CRL build task failed: {e}")))?;
        if !role.is_root() {
            lists.insert(role, list);
        }
        drop(lists);
        let (tbs, entries) = built?;
        let build_ms = started.elapsed().as_millis() - query_ms;
        let file = scope.file_name(role);
        self.store
            .audit_now(&Event {
                kind: "crl.signing",
                actor: actor.to_string(),
                subject: Some(role.name()),
                detail: json!({ "crl": file, "number": number, "entries": entries, "tbs_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tbs)) }),
            })
            .await?;
        let issuer_spki = signer.public_key_spki().to_vec();
        let alg = crate::sigalg::algorithm_identifier(signer.algorithm())?;
        let der = match self.hsm_slots.acquire().await {
            Ok(_permit) => {
                hsm_sign_checked_as(signer, tbs, alg, issuer_spki, SignedKind::Crl).await?
            }
            Err(_) => {
                return Err(Error::Hsm(hsm::Error::TokenUnavailable {
                    detail: "the signer is shutting down".into(),
                }))
            }
        };
        let sign_ms = started.elapsed().as_millis() - query_ms - build_ms;
        let event = Event {
            kind: "crl.published",
            actor: actor.to_string(),
            subject: Some(role.name()),
            detail: json!({ "crl": file, "number": number, "entries": entries, "this_update": this_update, "next_update": this_update + validity, "crl_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der)) }),
        };
        // The database stores the CRL that every instance serves; then the file (a
        // convenience copy for a web server in front) is written — never before, so a file
        // never holds a CRL the database lacks (and a newer file is never rolled back).
        let dir = self.config.data_dir.join("crl");
        let path = dir.join(&file);
        self.store
            .insert_crl(
                &role.name(),
                scope,
                number,
                this_update,
                this_update + validity,
                entries as i64,
                status_version,
                &der,
                &event,
            )
            .await?;
        // Published: a file that cannot be written (a full disk) is noted behind, reported by
        // /healthz (`crl_files`) and written again by rewrite_crl_files; it does not make the
        // publication fail.
        let written = write_crl_file(dir, file.clone(), der.clone()).await;
        if let Err(e) = &written {
            tracing::warn!(crl = file, error = %e, "CRL stored and served; its file could not be written");
        }
        self.note_crl_file(role, scope, written.is_ok());
        tracing::info!(
            crl = file,
            number,
            entries,
            query_ms,
            build_ms,
            sign_ms,
            total_ms = started.elapsed().as_millis(),
            "CRL published"
        );
        Ok(PublishedCrl {
            scope,
            build_and_sign: std::time::Duration::from_millis((build_ms + sign_ms) as u64),
            number,
            entries,
            der,
            path,
        })
    }

    fn note_crl_file(&self, role: CaId, scope: Scope, current: bool) {
        let mut behind = self
            .crl_files_behind
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current {
            behind.remove(&(role, scope));
        } else {
            behind.insert((role, scope));
        }
    }

    /// The CRL files that do not hold their scope's newest stored CRL (by file name).
    pub fn crl_files_behind(&self) -> Vec<String> {
        self.crl_files_behind
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(role, scope)| scope.file_name(*role))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Compares every CRL file with its scope's newest stored CRL and notes those that differ
    /// or are missing (a crash or a full disk between the two writes), for
    /// [`Authority::rewrite_crl_files`]. Run when a signer starts.
    pub async fn check_crl_files(&self) -> Result<usize> {
        let dir = self.config.data_dir.join("crl");
        let mut n = 0;
        for (role, _) in self.cas() {
            for head in self.store.crl_heads(&role.name()).await? {
                let Some((_, der)) = self.store.latest_crl(&role.name(), head.scope).await? else {
                    continue;
                };
                let on_disk = std::fs::read(dir.join(head.scope.file_name(role))).ok();
                let current = on_disk.as_deref() == Some(der.as_slice());
                self.note_crl_file(role, head.scope, current);
                n += usize::from(!current);
            }
        }
        Ok(n)
    }

    /// Writes again each CRL file noted behind, from the newest stored CRL of its scope.
    /// Returns how many were written; the first failure stops the pass.
    pub async fn rewrite_crl_files(&self) -> Result<usize> {
        let behind: Vec<(CaId, Scope)> = self
            .crl_files_behind
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        let dir = self.config.data_dir.join("crl");
        let mut n = 0;
        for (role, scope) in behind {
            if let Some((_, der)) = self.store.latest_crl(&role.name(), scope).await? {
                write_crl_file(dir.clone(), scope.file_name(role), der).await?;
                n += 1;
            }
            // A publication may have written a newer one meanwhile: it wrote that file too.
            self.note_crl_file(role, scope, true);
        }
        if n > 0 {
            tracing::info!(files = n, "CRL files written again");
        }
        Ok(n)
    }

    /// Opens only the store and the staff-auth vault, without the signer lock: what staff
    /// administration needs, so it works while a signer (`ecert serve`) runs. The HSM (the
    /// `ca` token) is used for the staff-auth key only.
    pub async fn open_staff_keys(config: &Config) -> Result<(Store, Arc<crate::pii::Vault>)> {
        let store = Store::open(&config.database_url())
            .await?
            .with_clock_check(&config.clock);
        crate::custody::require_separated(&store).await?;
        let cfg = config.clone();
        let token = tokio::task::spawn_blocking(move || open_token(&cfg))
            .await
            .map_err(|e| Error::Store(e.to_string()))??;
        let vault = crate::custody::open_staff_vault(&token, &store, "system:cli", false).await?;
        Ok((store, Arc::new(vault)))
    }

    /// Runs the custody migration ([`crate::custody::migrate`]) with the signer lock held, so no
    /// `serve` runs meanwhile.
    pub async fn migrate_custody(
        config: &Config,
        actor: &str,
    ) -> Result<crate::custody::MigrationReport> {
        let _lock = signer_lock(config).await?;
        let store = Store::open(&config.database_url())
            .await?
            .with_clock_check(&config.clock);
        let _db_lock = store.signer_lock(Some(SIGNER_LOCK_WAIT)).await?;
        crate::custody::migrate(config, &store, actor).await
    }

    /// The personal-data vault; [`Error::PersonalDataLocked`] until the `pii` token is open.
    pub fn pii(&self) -> Result<Arc<crate::pii::Vault>> {
        self.pii
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(Error::PersonalDataLocked)
    }

    /// The staff-auth vault (TOTP secrets, problem reports): always open.
    pub fn staff_keys(&self) -> Arc<crate::pii::Vault> {
        self.staff_keys.clone()
    }

    /// `None` when the personal-data keys are activated; otherwise why not (for `/healthz`).
    pub fn personal_data_problem(&self) -> Option<String> {
        if self.pii().is_ok() {
            return None;
        }
        self.pii_problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .or_else(|| Some("not activated".into()))
    }

    /// Activates the personal-data keys with the `pii` token's PIN (the `data_owner` role's
    /// action, on each instance; see [`crate::custody`]). Audited either way, never with the
    /// PIN; a wrong PIN is [`Error::Invalid`]. After [`PII_ACTIVATION_FAILURES`] wrong PINs in
    /// a row every attempt is refused for [`PII_ACTIVATION_LOCKOUT`] ([`Error::TooManyAttempts`],
    /// whatever the PIN): guessing is slow, and a real HSM's own lockout — which would stop the
    /// counter — is not reached by guesses through the service. Activating again is harmless.
    pub async fn activate_pii(&self, pin: &str, actor: &str) -> Result<()> {
        {
            let f = self
                .pii_failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(until) = f.1 {
                if std::time::Instant::now() < until {
                    return Err(Error::TooManyAttempts(
                        "too many wrong PINs: activation is refused for a while".into(),
                    ));
                }
            }
        }
        // PKCS#11 tokens take 4 to 255 bytes (SoftHSM2's range; HSMs are narrower).
        if !(4..=255).contains(&pin.len()) {
            return Err(Error::Invalid {
                field: "pin",
                reason: "give the pii token's user PIN (4 to 255 characters)".into(),
            });
        }
        let opened = crate::custody::open_pii_vault(&self.config, &self.store, pin, actor).await;
        {
            let mut f = self
                .pii_failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &opened {
                Ok(_) => *f = (0, None),
                Err(Error::Hsm(hsm::Error::PinIncorrect)) => {
                    f.0 += 1;
                    if f.0 >= PII_ACTIVATION_FAILURES {
                        f.0 = 0;
                        f.1 = Some(std::time::Instant::now() + PII_ACTIVATION_LOCKOUT);
                        tracing::error!("personal-data key activation locked after wrong PINs");
                    }
                }
                Err(_) => {}
            }
        }
        match opened {
            Ok(v) => {
                *self
                    .pii
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(v));
                *self
                    .pii_problem
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                self.store
                    .audit_now(&Event {
                        kind: "pii.activated",
                        actor: actor.to_string(),
                        subject: None,
                        detail: json!({ "token": self.config.hsm.pii_token_label }),
                    })
                    .await?;
                tracing::info!("personal-data keys activated");
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                if let Err(a) = self
                    .store
                    .audit_now(&Event {
                        kind: "pii.activation_refused",
                        actor: actor.to_string(),
                        subject: None,
                        detail: json!({ "token": self.config.hsm.pii_token_label, "reason": reason }),
                    })
                    .await
                {
                    tracing::error!(error = %a, "could not audit a refused activation");
                }
                tracing::warn!(error = %e, "personal-data key activation refused");
                Err(match e {
                    Error::Hsm(hsm::Error::PinIncorrect) => Error::Invalid {
                        field: "pin",
                        reason: "the pii token did not open with that PIN".into(),
                    },
                    Error::Hsm(hsm::Error::TokenNotFound { label }) => Error::Conflict(format!(
                        "there is no {label} token: it is made once by `ecert init` with the data \
                         owner's PINs (ECERT_PII_PIN, ECERT_PII_SO_PIN)"
                    )),
                    e => e,
                })
            }
        }
    }

    /// Releases a hold; see [`crate::revocation::release`].
    pub async fn release(&self, serial: SerialNumber, actor: &str) -> Result<()> {
        crate::revocation::release(&self.store, serial, actor).await
    }

    /// Blocks a key; see [`crate::revocation::block_key`].
    pub async fn block_key(&self, key_fp: &[u8; 32], reason: &str, actor: &str) -> Result<()> {
        crate::revocation::block_key(&self.store, key_fp, reason, actor).await
    }

    /// Audits a request refused before a serial was reserved (BR §5.4.1: rejections of
    /// certificate requests are recorded). A failure to write it is logged; the refusal stands.
    ///
    /// The profile and the reason are cut to a bounded length: a refused request's text can
    /// carry what its sender chose (a PEM label), and the audit trail keeps it for good.
    pub async fn record_refusal(&self, actor: &str, profile: &str, error: &Error) {
        let minute = time::OffsetDateTime::now_utc().unix_timestamp() / 60;
        self.record_refusal_in(actor, profile, error, minute).await
    }

    /// [`Authority::record_refusal`] in `minute` (Unix minutes). Citizens' refusals (the public
    /// form: anyone can send them) are recorded one by one up to
    /// [`CITIZEN_REFUSALS_PER_MINUTE`] a minute; past that, the minute's further ones are
    /// counted, and recorded as one `issuance.refusals_counted` with their number when the next
    /// minute's first refusal comes — so a flood cannot swamp the audit trail, and is still in it.
    pub(crate) async fn record_refusal_in(
        &self,
        actor: &str,
        profile: &str,
        error: &Error,
        minute: i64,
    ) {
        if actor == "citizen" {
            let (record, counted_before) = {
                let mut w = self
                    .citizen_refusals
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut counted_before = None;
                if w.0 != minute {
                    if w.2 > 0 {
                        counted_before = Some((w.0, w.2));
                    }
                    *w = (minute, 0, 0);
                }
                if w.1 < CITIZEN_REFUSALS_PER_MINUTE {
                    w.1 += 1;
                    (true, counted_before)
                } else {
                    if w.2 == 0 {
                        tracing::warn!("more than {CITIZEN_REFUSALS_PER_MINUTE} refused requests from citizens this minute: counting the rest");
                    }
                    w.2 += 1;
                    (false, counted_before)
                }
            };
            if let Some((at_minute, count)) = counted_before {
                let summary = Event {
                    kind: "issuance.refusals_counted",
                    actor: "citizen".into(),
                    subject: None,
                    detail: json!({ "minute": at_minute, "count": count }),
                };
                if let Err(e) = self.store.audit_now(&summary).await {
                    tracing::error!(error = %e, "could not audit counted refusals");
                }
            }
            if !record {
                return;
            }
        }
        let event = Event {
            kind: "issuance.refused",
            actor: actor.to_string(),
            subject: None,
            detail: json!({
                "profile": bounded(profile, 40),
                "reason": bounded(&error.to_string(), 200),
            }),
        };
        if let Err(e) = self.store.audit_now(&event).await {
            tracing::error!(error = %e, "could not audit a refused request");
        }
    }

    /// Whether this CA issues under `profile` at all now: not when its issuing CA is revoked,
    /// and not a TLS BR certificate (the Server CA asserts the OV policy 2.23.140.1.2.2) while
    /// `dcv.mpic = "off"`: TLS BR §3.2.2.9 makes corroboration by remote perspectives a
    /// condition of every BR domain validation and CAA check, so without it nothing may carry
    /// the policy. Every issuance checks it; the RA checks it at submission too.
    pub fn offers(&self, profile: &Profile) -> Result<()> {
        let issuer = self.issuer_for(profile)?;
        if self.ca_revoked(issuer) {
            return Err(Error::Revocation(format!(
                "the {issuer} CA is revoked: it issues nothing more"
            )));
        }
        if profile.kind == crate::profile::ProfileKind::Server
            && self.config.dcv.mpic == crate::config::Mpic::Off
        {
            return Err(Error::Profile {
                profile: profile.id.into(),
                reason: "dcv.mpic is \"off\": the Server CA asserts the TLS BR OV policy, which \
                         needs corroboration by remote network perspectives (TLS BR §3.2.2.9); \
                         no server certificate is issued until dcv.mpic is \"required\""
                    .into(),
            });
        }
        Ok(())
    }

    /// The CA that issues under `profile` now: its role's active CA (DESIGN.md "each CA has an
    /// id; a role names its current CA").
    pub fn issuer_for(&self, profile: &Profile) -> Result<CaId> {
        self.active.get(&profile.issuer).copied().ok_or_else(|| {
            Error::Config(format!(
                "no {} CA is active: activate one in a key ceremony (docs/CEREMONY.md)",
                profile.issuer.name()
            ))
        })
    }

    /// Each role's current CA.
    pub fn active_cas(&self) -> Vec<CaId> {
        let mut v: Vec<CaId> = self.active.values().copied().collect();
        v.sort();
        v
    }

    /// Every CA this signer knows, roots first, with where it is in its life.
    pub fn cas(&self) -> Vec<(CaId, CaStatus)> {
        let mut v: Vec<(CaId, CaStatus)> = self
            .cas
            .iter()
            .map(|(id, c)| (*id, *c.status.lock().unwrap_or_else(|p| p.into_inner())))
            .collect();
        v.sort_by_key(|(id, _)| (!id.is_root(), *id));
        v
    }

    /// The issuing CAs that publish CRLs and sign OCSP responses: active and superseded ones
    /// (a superseded CA answers for its certificates until the last one expires).
    pub fn publishing_cas(&self) -> Vec<CaId> {
        self.cas()
            .into_iter()
            .filter(|(id, st)| !id.is_root() && st.publishes())
            .map(|(id, _)| id)
            .collect()
    }

    /// The signer's clock check ([`crate::clock`]): `/healthz` and `/metrics` read it.
    pub fn clock(&self) -> &crate::clock::ClockGuard {
        &self.clock
    }

    /// The checks on a subscriber key that need this CA's data, beyond the CSR's own
    /// ([`crate::keys`]): the Debian weak-key lists. Every issuance runs it (step 1); the RA
    /// runs it at submission too, so a citizen hears at once.
    pub fn check_key(&self, key: &SubscriberKey) -> Result<()> {
        self.debian_weak.check(key)
    }

    /// Steps 1–3: request checks, then the serial committed as `reserved` (with the blocked-key
    /// check and the renewal claim in the same transaction).
    async fn reserve(&self, req: &ApprovedRequest) -> Result<Reserved> {
        let profile = Profile::get(&req.profile)?;
        self.offers(profile)?;
        let key = req.csr.key().clone();
        self.check_key(&key)?;
        let mut subject = req.subject.clone();
        let renews = match req.renews {
            Some(old) => Some(self.renewal_base(profile, old, &mut subject).await?),
            None => None,
        };
        if matches!(
            profile.kind,
            crate::profile::ProfileKind::Personal | crate::profile::ProfileKind::Organisational
        ) && subject.srn.is_none()
        {
            subject.srn = Some(new_srn());
        }
        let subject = profile.check(&subject, req.days, now_secs())?;
        let issuer = self.issuer_for(profile)?;
        let serial = SerialNumber::random();
        let serial_hex = serial.to_hex();
        let crl_partition =
            crate::crl::partition_of(&serial, self.config.crl.partitions_of(profile.issuer));
        let request_json =
            serde_json::to_string(&subject).map_err(|e| Error::Encoding(e.to_string()))?;
        let op = WriteOp::Reserve {
            serial: serial_hex.clone(),
            issuer: issuer.name(),
            profile: profile.id,
            profile_version: i64::from(profile.version),
            key_fp: key.fingerprint().to_vec(),
            request: request_json,
            renews: renews.clone(),
            crl_partition,
        };
        let event = Event {
            kind: "issuance.requested",
            actor: req.actor.clone(),
            subject: Some(serial_hex.clone()),
            detail: json!({ "profile": profile.id, "profile_version": profile.version, "issuer": issuer.name(), "key": key.kind().name(), "renews": renews }),
        };
        self.writer.write(op, event).await?;
        Ok(Reserved {
            issuer,
            profile,
            key,
            subject,
            renews,
            serial,
            crl_partition,
        })
    }

    /// Step 4: build the linting certificate (static signature value), lint; store the linting TBS as `issuing`.
    async fn build_and_record(&self, req: ApprovedRequest, r: Reserved) -> Result<IssuanceToken> {
        let Reserved {
            issuer,
            profile,
            key,
            subject,
            renews,
            serial,
            crl_partition,
        } = r;
        let serial_hex = serial.to_hex();
        let ca = self.cas.get(&issuer).ok_or(Error::NotInitialised)?;
        async_fail_point!("ca::after_reserve");
        // Step 4: build the linting certificate, lint.
        let built = self.build_linting(
            profile,
            &subject,
            &key,
            serial,
            crl_partition,
            issuer,
            ca,
            req.days,
        );
        let (tbs, alg, nb, na) = match built {
            Ok(v) => v,
            Err(e) => {
                self.fail(&serial_hex, CertState::Reserved, &req.actor, &e)
                    .await;
                return Err(e);
            }
        };
        async_fail_point!("ca::after_lint");
        let event = Event {
            kind: "issuance.linted",
            actor: req.actor.clone(),
            subject: Some(serial_hex.clone()),
            detail: json!({ "tbs_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tbs)) }),
        };
        let recorded = self
            .writer
            .write(
                WriteOp::Issuing {
                    serial: serial_hex.clone(),
                    tbs: tbs.clone(),
                    not_before: nb,
                    not_after: na,
                },
                event,
            )
            .await;
        if let Err(e) = recorded {
            self.fail(&serial_hex, CertState::Reserved, &req.actor, &e)
                .await;
            return Err(e);
        }
        async_fail_point!("ca::after_issuing");
        Ok(IssuanceToken {
            serial,
            issuer,
            tbs,
            signature_algorithm: alg,
            renews,
            actor: req.actor,
            profile: profile.id,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn build_linting(
        &self,
        profile: &'static Profile,
        subject: &SubjectData,
        key: &SubscriberKey,
        serial: SerialNumber,
        crl_partition: Option<u16>,
        issuer: CaId,
        ca: &CaState,
        days: Option<u32>,
    ) -> Result<(Vec<u8>, Vec<u8>, i64, i64)> {
        let ctx = IssueContext {
            issuer,
            crl_partition,
            base_url: self.config.base_url(),
            policy_arc: &self.policy_arc,
        };
        let params = profile.params(&ctx, subject, key, serial, now_secs(), days)?;
        // A certificate never outlives its issuing CA (RFC 5280 §6.1 would reject the chain
        // after the CA expires): refused by name, not cut short, so the CA is renewed in time.
        if params.not_after > ca.not_after {
            return Err(Error::Profile {
                profile: profile.id.into(),
                reason: format!(
                    "the certificate would end {}, after its issuing CA ({}): the CA must be \
                     renewed first, or ask for fewer days",
                    params.not_after.date(),
                    ca.not_after.date()
                ),
            });
        }
        // A name outside the issuing CA's name constraints would make relying parties reject
        // the certificate (RFC 5280 §4.2.1.10): refused by name before anything is signed.
        for name in subject
            .dns_names
            .iter()
            .map(|d| (d, false))
            .chain(subject.emails.iter().map(|e| (e, true)))
        {
            if !ca.constraints.allows(name.0, name.1) {
                return Err(Error::Profile {
                    profile: profile.id.into(),
                    reason: format!(
                        "{} is outside the name constraints of the {} CA",
                        name.0,
                        profile.issuer.name()
                    ),
                });
            }
        }
        let issuer = rcgen::Issuer::from_ca_cert_der(
            &ca.cert_der.clone().into(),
            LintSigner::of(&*ca.signer)?,
        )?;
        let linting = params.signed_by(key, &issuer)?;
        let findings = lint::lint(&LintInput {
            cert_der: linting.der(),
            issuer_subject_der: &ca.subject_der,
            expected_spki: key.spki_der(),
            issuer_key_id: ca.key_id.as_deref(),
            issuer_algorithm: ca.signer.algorithm(),
            expect: Expect::Leaf(profile),
        });
        if !findings.is_empty() {
            return Err(Error::Lint(findings));
        }
        let (tbs, alg) = split_signed(linting.der())?;
        Ok((tbs, alg, unix(params.not_before), unix(params.not_after)))
    }

    /// Records `from` → `failed`. If that write fails too, the row stays where it is until the
    /// start-up reconciliation resolves it; the error is logged and the original one returned.
    async fn fail(&self, serial: &str, from: CertState, actor: &str, e: &Error) {
        let event = Event {
            kind: "issuance.failed",
            actor: actor.to_string(),
            subject: Some(serial.into()),
            detail: json!({ "error": e.to_string() }),
        };
        let op = WriteOp::Failed {
            serial: serial.into(),
            from,
            reason: e.to_string(),
        };
        if let Err(write) = self.writer.write(op, event).await {
            tracing::error!(serial = %serial, error = %write, "could not record a failed issuance");
        }
    }

    /// Gives up a prepared issuance that will not be signed, because the caller's own record
    /// changed meanwhile: nothing was signed, so the serial goes from `issuing` to `failed`.
    pub async fn withdraw(&self, token: IssuanceToken, why: &str) {
        let e = Error::Conflict(why.to_string());
        self.fail(&token.serial.to_hex(), CertState::Issuing, &token.actor, &e)
            .await;
    }

    /// Steps 5–6: the HSM signs the linted TBS; the result is verified and compared, then stored
    /// `issued` with its audit record in one transaction.
    pub async fn sign(&self, token: IssuanceToken) -> Result<Issued> {
        let ca = self.cas.get(&token.issuer).ok_or(Error::NotInitialised)?;
        let serial_hex = token.serial.to_hex();
        let issuer_spki = ca.signer.public_key_spki().to_vec();
        // The HSM is asked from here on (tests show an issuance whose audit record could not
        // be written never gets here).
        async_fail_point!("ca::before_hsm_sign");
        let signed = match self.hsm_slots.acquire().await {
            Ok(_permit) => {
                hsm_sign_checked(
                    ca.signer.clone(),
                    token.tbs,
                    token.signature_algorithm,
                    issuer_spki,
                )
                .await
            }
            Err(_) => Err(Error::Hsm(hsm::Error::TokenUnavailable {
                detail: "the signer is shutting down".into(),
            })),
        };
        async_fail_point!("ca::after_hsm_sign");
        let cert = match signed {
            Ok(c) => c,
            Err(e) => {
                // An HSM error means no signature exists; a failed self-check means a bad one
                // exists only in this process's memory and is dropped here.
                if matches!(e, Error::SignatureCheck(_)) {
                    tracing::error!(serial = %serial_hex, "signed certificate failed its self-check; discarded");
                }
                self.fail(&serial_hex, CertState::Issuing, &token.actor, &e)
                    .await;
                return Err(e);
            }
        };
        let event = Event {
            kind: "certificate.issued",
            actor: token.actor.clone(),
            subject: Some(serial_hex.clone()),
            detail: json!({ "profile": token.profile, "issuer": token.issuer.name(), "renews": token.renews, "cert_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&cert)) }),
        };
        let stored = self
            .writer
            .write(
                WriteOp::Issued {
                    serial: serial_hex.clone(),
                    cert_der: cert.clone(),
                },
                event,
            )
            .await;
        if let Err(e) = stored {
            // Signed but not stored: the certificate is dropped here and never delivered. Mark
            // the serial `abandoned` now (never good, listed as revoked) rather than leave it
            // `issuing` until the next start.
            let event = Event {
                kind: "issuance.abandoned",
                actor: token.actor.clone(),
                subject: Some(serial_hex.clone()),
                detail: json!({ "error": e.to_string() }),
            };
            let op = WriteOp::Abandoned {
                serial: serial_hex.clone(),
                reason: e.to_string(),
            };
            if let Err(again) = self.writer.write(op, event).await {
                tracing::error!(serial = %serial_hex, error = %again, "could not record an abandoned issuance; start-up will");
            }
            return Err(e);
        }
        async_fail_point!("ca::after_store");
        tracing::info!(serial = %serial_hex, profile = token.profile, "certificate issued");
        Ok(Issued {
            serial: token.serial,
            issuer: token.issuer,
            cert_der: cert,
        })
    }

    /// For a renewal: the old certificate must be issued, of the same profile, not expired and
    /// not already renewed. Subject fields the new request leaves empty are taken from it.
    async fn renewal_base(
        &self,
        profile: &Profile,
        old: SerialNumber,
        subject: &mut SubjectData,
    ) -> Result<String> {
        let hex = old.to_hex();
        let rec = self
            .store
            .certificate(&hex)
            .await?
            .ok_or_else(|| Error::UnknownSerial(hex.clone()))?;
        let refuse = |reason: &str| Error::NotRenewable {
            serial: hex.clone(),
            reason: reason.into(),
        };
        if rec.state != CertState::Issued {
            return Err(refuse(&format!("it is in state {}", rec.state)));
        }
        if rec.profile != profile.id {
            return Err(refuse(&format!(
                "it is a {} certificate, not {}",
                rec.profile, profile.id
            )));
        }
        if let Some(by) = &rec.renewed_by {
            let by_state = self.store.certificate(by).await?.map(|r| r.state);
            if !matches!(by_state, Some(CertState::Failed | CertState::Abandoned)) {
                return Err(refuse(&format!("it was already renewed by {by}")));
            }
        }
        if rec.not_after.is_some_and(|na| na < unix(now_secs())) {
            return Err(refuse("it has expired; apply for a new certificate"));
        }
        let prev: SubjectData =
            serde_json::from_str(&rec.request).map_err(|e| Error::Store(e.to_string()))?;
        let keep = |new: &mut Option<String>, old: Option<String>| {
            if new.is_none() {
                *new = old;
            }
        };
        // A request stored before countries were verified (2026-12) has none; its organisation
        // identifier was from a Hong Kong register, so that register's country is the verified
        // one. A person's certificate without one renews without countryName.
        let prev_country = prev.country.or_else(|| {
            (prev.org_id.is_some() || prev.government)
                .then(|| crate::ra::REGISTER_COUNTRY.to_string())
        });
        keep(&mut subject.country, prev_country);
        keep(&mut subject.name, prev.name);
        keep(&mut subject.given_name, prev.given_name);
        keep(&mut subject.surname, prev.surname);
        keep(&mut subject.organization, prev.organization);
        keep(&mut subject.org_id, prev.org_id);

        keep(&mut subject.locality, prev.locality);
        subject.government |= prev.government;
        keep(&mut subject.srn, prev.srn);
        keep(&mut subject.title, prev.title);
        if subject.emails.is_empty() {
            subject.emails = prev.emails;
        }
        if subject.dns_names.is_empty() {
            subject.dns_names = prev.dns_names;
        }
        Ok(hex)
    }

    /// Verifies the audit trail; returns the number of records and the findings.
    /// Checks the chain against the head and the signed checkpoints against the audit public
    /// key (DER SPKI). Returns the number of records and checkpoints, and the findings.
    pub async fn verify_audit(store: &Store, audit_spki: &[u8]) -> Result<AuditVerified> {
        let (records, head_seq, head_hash) = store.audit_records().await?;
        let checkpoints = store.checkpoints().await?;
        let gaps = audit::restored_gaps(&records, audit_spki);
        let mut findings = audit::verify(&records, head_seq, &head_hash, &gaps);
        findings.extend(audit::verify_checkpoints(
            &records,
            &checkpoints,
            audit_spki,
            &gaps,
        ));
        Ok(AuditVerified {
            records: records.len(),
            checkpoints: checkpoints.len(),
            findings,
            gaps,
        })
    }

    /// Signs a checkpoint of the audit chain's head with the audit key, if the head moved since
    /// the last one. Signer commands call it when they finish; a long-running signer calls it
    /// periodically. Returns the sequence number covered.
    pub async fn checkpoint(&self) -> Result<Option<i64>> {
        let signed = self.sign_checkpoint().await?;
        // The witness gets every checkpoint it does not hold yet (also those an earlier
        // failure to reach it left behind).
        if let Some(path) = self.config.audit_witness() {
            self.sync_witness(path).await?;
        }
        if let Some(url) = self.config.audit.witness_url.clone() {
            self.sync_witness_service(&url).await?;
        }
        Ok(signed)
    }

    /// Sends the witness service the checkpoints it lacks ([`audit::witness::post`]). The
    /// newest one it acknowledged is kept in `meta` (`audit_witness_url_seq`); a service that
    /// answers with less than it acknowledged before — a witness reset or replaced — is an
    /// error ([`Authority::witness_problem`], `/healthz`), never quietly fed again from the
    /// start.
    async fn sync_witness_service(&self, url: &str) -> Result<()> {
        let result = async {
            let newest = self.store.checkpoints_last_seq().await?;
            let recorded: i64 = self
                .store
                .meta("audit_witness_url_seq")
                .await?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if recorded >= newest {
                return Ok(());
            }
            let ca = self
                .config
                .audit
                .witness_ca
                .clone()
                .ok_or_else(|| Error::Config("audit.witness_url needs audit.witness_ca".into()))?;
            let token = match &self.config.audit.witness_token_file {
                Some(f) => Some(std::fs::read_to_string(f).map_err(|e| Error::Io {
                    context: format!("reading {}", f.display()),
                    source: e,
                })?),
                None => None,
            };
            // What the service holds first: it may hold more than recorded here (an answer
            // lost on the way back), never less.
            let held = audit::witness::post(url, &ca, token.as_deref(), &[]).await?;
            if held < recorded {
                return Err(Error::Audit(format!(
                    "the audit witness service {url} holds less than it acknowledged (record {held}, not {recorded}): restore it; nothing more is sent until then"
                )));
            }
            if held > newest {
                return Err(Error::Audit(format!(
                    "the audit witness service {url} holds record {held}, past the database's newest checkpoint ({newest})"
                )));
            }
            let mut last = held;
            if held < newest {
                let missing = self.store.checkpoints_after(held).await?;
                last = audit::witness::post(url, &ca, token.as_deref(), &missing).await?;
                if last < newest {
                    return Err(Error::Audit(format!(
                        "the audit witness service {url} acknowledged record {last}, not {newest}"
                    )));
                }
            }
            self.store
                .set_meta("audit_witness_url_seq", &last.to_string())
                .await?;
            Ok(())
        }
        .await;
        if let Ok(mut p) = self.witness_problem.lock() {
            // A file witness's problem is not hidden by the service's success.
            match (&result, p.as_ref()) {
                (Err(e), _) => *p = Some(e.to_string()),
                (Ok(()), Some(old)) if old.contains(url) => *p = None,
                _ => {}
            }
        }
        result
    }

    /// Appends to the witness file the checkpoints it lacks ([`audit::witness`]). The newest
    /// checkpoint witnessed is also kept in the database (`meta` `audit_witness_seq`): a
    /// witness that went missing, or holds less than was written to it, is an error reported
    /// by [`Authority::witness_problem`] (and `/healthz`), never quietly started again.
    async fn sync_witness(&self, path: std::path::PathBuf) -> Result<()> {
        use std::sync::atomic::Ordering;
        let result = async {
            let newest = self.store.checkpoints_last_seq().await?;
            let known = self.witnessed.load(Ordering::SeqCst);
            if known >= 0 && known >= newest {
                return Ok(());
            }
            let recorded: i64 = self
                .store
                .meta("audit_witness_seq")
                .await?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let p = path.clone();
            let exists = path.exists();
            let witnessed = tokio::task::spawn_blocking(move || audit::witness::last_seq(&p))
                .await
                .map_err(|e| Error::Audit(format!("witness task: {e}")))??;
            if (recorded > 0 && !exists) || witnessed < recorded {
                return Err(Error::Audit(format!(
                    "the audit witness {} holds less than was written to it (record {witnessed}, not {recorded}): restore it; nothing more is appended until then",
                    path.display()
                )));
            }
            if witnessed > newest {
                return Err(Error::Audit(format!(
                    "the audit witness {} ends at record {witnessed}, past the database's newest checkpoint ({newest})",
                    path.display()
                )));
            }
            if witnessed < newest {
                let missing = self.store.checkpoints_after(witnessed).await?;
                let p = path.clone();
                let create = recorded == 0 && !exists;
                tokio::task::spawn_blocking(move || audit::witness::append(&p, &missing, create))
                    .await
                    .map_err(|e| Error::Audit(format!("witness task: {e}")))??;
                self.store
                    .set_meta("audit_witness_seq", &newest.to_string())
                    .await?;
            }
            self.witnessed.store(newest, Ordering::SeqCst);
            Ok(())
        }
        .await;
        if let Ok(mut p) = self.witness_problem.lock() {
            *p = result.as_ref().err().map(ToString::to_string);
        }
        result
    }

    /// Why the audit witness is not being written, if it is not.
    pub fn witness_problem(&self) -> Option<String> {
        self.witness_problem.lock().ok().and_then(|p| p.clone())
    }

    async fn sign_checkpoint(&self) -> Result<Option<i64>> {
        let (seq, hash) = self.store.audit_head().await?;
        if seq == 0 || self.store.checkpoints_last_seq().await? >= seq {
            return Ok(None);
        }
        let msg = audit::checkpoint_message(seq, &hash);
        let key = self.audit_key.clone();
        let signature = tokio::task::spawn_blocking(move || key.sign(&msg))
            .await
            .map_err(|e| {
                Error::Hsm(hsm::Error::TokenUnavailable {
                    detail: format!("signing task failed: {e}"),
                })
            })??;
        self.store
            .insert_checkpoint(&audit::Checkpoint {
                seq,
                at: unix(now_secs()),
                hash,
                signature,
            })
            .await?;
        Ok(Some(seq))
    }

    /// Whether the HSM signs right now: one signature with the audit key over a fixed message,
    /// verified. For health checks; it costs one HSM signature. The error says why not.
    pub async fn hsm_check(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        // One check at a time, whoever asks (the background monitor, the operator's page): a
        // hung module never gets a pile of stuck threads.
        if self.hsm_check_running.swap(true, Ordering::SeqCst) {
            return Err(Error::Hsm(hsm::Error::TokenUnavailable {
                detail: "an earlier HSM check has not finished".into(),
            }));
        }
        let running = self.hsm_check_running.clone();
        let key = self.audit_key.clone();
        const MSG: &[u8] = b"ecert-health-check";
        let (key, sig) = tokio::task::spawn_blocking(move || {
            let r = key.sign(MSG).map(|sig| (key, sig));
            running.store(false, Ordering::SeqCst);
            r
        })
        .await
        .map_err(|e| {
            Error::Hsm(hsm::Error::TokenUnavailable {
                detail: format!("the HSM check did not finish: {e}"),
            })
        })??;
        hsm::verify(key.algorithm(), key.public_key_spki(), MSG, &sig)?;
        Ok(())
    }

    /// The audit key's public key (DER SPKI), for auditors who verify without the HSM.
    pub fn audit_public_key(&self) -> &[u8] {
        self.audit_key.public_key_spki()
    }

    /// Reads the audit key's public key from the HSM without taking the signer lock.
    pub async fn audit_public_key_from_hsm(config: &Config) -> Result<Vec<u8>> {
        let cfg = config.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let token = open_token(&cfg)?;
            Ok(hsm::Signer::public_key_spki(&token.key(AUDIT_KEY_LABEL)?).to_vec())
        })
        .await
        .map_err(|e| Error::Store(e.to_string()))?
    }
}

pub(crate) fn subject_der_of(cert_der: &[u8]) -> Result<Vec<u8>> {
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|e| Error::Encoding(e.to_string()))?;
    Ok(c.tbs_certificate.subject.as_raw().to_vec())
}

/// A CA on a real SoftHSM2 token and SQLite in a temporary directory, for unit tests. nextest
/// runs each test in its own process, so pointing SOFTHSM2_CONF at this directory is safe.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) async fn test_ca_with(edit: impl FnOnce(&mut Config)) -> (tempfile::TempDir, Authority) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::load(dir.path(), None).unwrap();
    config.ca.policy_arc = Some("1.3.6.1.4.1.32473.1".into());
    config.ca.base_url = "http://pki.example.hk".into();
    edit(&mut config);
    std::env::set_var("SOFTHSM2_CONF", softhsm_conf_path(&config));
    let (auth, _) = Authority::init(config).await.unwrap();
    (dir, auth)
}

/// Citizens' refused requests recorded one by one in a minute; see
/// [`Authority::record_refusal`].
pub const CITIZEN_REFUSALS_PER_MINUTE: u32 = 60;

/// `text` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

#[cfg(test)]
mod tests {
    #[test]
    fn bounded_cuts_at_a_character_boundary() {
        assert_eq!(super::bounded("short", 40), "short");
        assert_eq!(super::bounded("abcdef", 3), "abc…");
        // "é" is two bytes: a cut inside it moves back before it.
        assert_eq!(super::bounded("aéb", 2), "a…");
    }

    use super::*;
    use rcgen::KeyPair;

    /// A CA on a real SoftHSM2 token and SQLite in a temporary directory. nextest runs each test
    /// in its own process, so pointing SOFTHSM2_CONF at this directory is safe.
    async fn test_ca() -> (tempfile::TempDir, Authority) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load(dir.path(), None).unwrap();
        config.ca.policy_arc = Some("1.3.6.1.4.1.32473.1".into());
        config.ca.base_url = "http://pki.example.hk".into();
        std::env::set_var("SOFTHSM2_CONF", softhsm_conf_path(&config));
        let (auth, report) = Authority::init(config).await.unwrap();
        assert_eq!(report.created.len(), 4, "two roots and two issuing CAs");
        (dir, auth)
    }

    /// `init` makes the personal-data keys in the token; the data key is stored only sealed,
    /// and a field sealed before a restart opens after it (the same data key, unsealed by the
    /// HSM again). The HSM keys cannot be read out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn personal_data_vault_survives_a_restart() {
        let (dir, auth) = test_ca().await;
        let vault = auth.pii().unwrap();
        let sealed = vault
            .seal(crate::pii::Field::Hkid, "app-1", "A1234563")
            .unwrap();
        let index = vault
            .blind_index(crate::pii::Field::Hkid, "A1234563")
            .unwrap();
        let stored = auth
            .store()
            .meta(crate::pii::DATA_KEY_META)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            hex::decode(&stored).unwrap().len(),
            12 + 32 + 16,
            "sealed, not raw"
        );
        let config = auth.config().clone();
        drop(vault);
        drop(auth);
        let (auth, _) = Authority::init(config.clone()).await.unwrap();
        let vault = auth.pii().unwrap();
        assert_eq!(
            &*vault
                .open_field(crate::pii::Field::Hkid, "app-1", &sealed)
                .unwrap(),
            "A1234563"
        );
        assert_eq!(
            vault
                .blind_index(crate::pii::Field::Hkid, "A1234563")
                .unwrap(),
            index
        );
        assert_eq!(
            auth.store().meta(crate::pii::DATA_KEY_META).await.unwrap(),
            Some(stored)
        );
        drop(auth);
        // Custody (issue 14): the personal-data keys are in the pii token, not the CA token,
        // and cannot be read out of it.
        let token = open_token(&config).unwrap();
        let pii = hsm::pkcs11::Token::open(&hsm::pkcs11::Pkcs11Config {
            module: config.hsm.module.clone(),
            token_label: config.hsm.pii_token_label.clone(),
            user_pin: config.pii_pin().unwrap().unwrap(),
            so_pin: None,
            pool_size: 1,
        })
        .unwrap();
        for (label, kind) in [
            (
                crate::pii::SEAL_KEY_LABEL,
                hsm::pkcs11::SecretKind::Aes256Gcm,
            ),
            (
                crate::pii::INDEX_KEY_LABEL,
                hsm::pkcs11::SecretKind::HmacSha256,
            ),
        ] {
            assert!(
                token.find_secret(label, kind).unwrap().is_none(),
                "{label} in ca"
            );
            assert!(
                pii.find_secret(label, kind).unwrap().is_some(),
                "{label} not in pii"
            );
            assert!(pii.read_secret_value(label).is_err(), "{label} readable");
        }
        assert!(token
            .read_secret_value(crate::pii::STAFF_AUTH_KEY_LABEL)
            .is_err());
        drop(dir);
    }

    /// Issue 14 (custody, from the attack on it): wrong activation PINs lock activation for a
    /// while, even for the right PIN; the lock is per process and says why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_activation_pins_lock_activation() {
        let (dir, auth) = test_ca().await;
        let pin = auth.config().pii_pin().unwrap().unwrap();
        auth.activate_pii(&pin, "staff:owner").await.unwrap();
        for _ in 0..PII_ACTIVATION_FAILURES {
            let e = auth
                .activate_pii("not-the-pin", "staff:owner")
                .await
                .unwrap_err();
            assert!(matches!(e, Error::Invalid { field: "pin", .. }), "{e}");
        }
        let e = auth.activate_pii(&pin, "staff:owner").await.unwrap_err();
        assert!(matches!(e, Error::TooManyAttempts(_)), "{e}");
        let e = auth.activate_pii("abc", "staff:owner").await.unwrap_err();
        assert!(matches!(e, Error::TooManyAttempts(_)), "{e}");
        assert!(auth.pii().is_ok(), "the keys opened before stay open");
        drop(auth);
        drop(dir);
    }

    fn request(i: usize, renews: Option<SerialNumber>) -> ApprovedRequest {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap();
        ApprovedRequest {
            profile: "personal".into(),
            csr: VerifiedCsr::parse(csr.der()).unwrap(),
            subject: SubjectData {
                surname: Some("CHAN".into()),
                given_name: Some("Tai Man".into()),
                emails: vec![format!("user{i}@example.hk")],
                ..Default::default()
            },
            days: None,
            renews,
            actor: "test".into(),
        }
    }

    /// CA rollover (issue 15): a successor made and activated in a ceremony takes new issuance
    /// and renewals; the superseded CA keeps its responder and CRLs while a certificate of its
    /// is unexpired, then publishes final CRLs and retires — after a restart too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_superseded_ca_answers_until_its_last_certificate_expires() {
        let (_dir, auth) = test_ca().await;
        let first = CaId::first(CaRole::Individual);
        let second = CaId {
            role: CaRole::Individual,
            generation: 2,
        };
        let old = auth.issue(request(0, None)).await.unwrap();
        assert_eq!(old.issuer, first);
        let config = auth.config().clone();
        drop(auth);
        let text = "name = \"rollover\"\ncustodians = [\"the operator of the embedded default\"]\n\
                    quorum = 1\n[[step]]\nkind = \"rollover\"\nca = \"individual\"\nroot = \"root\"\n\
                    key_type = \"p384\"\ncommon_name = \"Test Individual CA G2\"\nvalidity_days = 1000\n";
        let ceremony = crate::ceremony::Ceremony::parse(text).unwrap();
        let access = crate::ceremony::embedded_access(&config).unwrap();
        let (auth, record) = Authority::run_ceremony(config, ceremony, text, access, None, "test")
            .await
            .unwrap();
        assert!(record.contains("activate individual-2"), "{record}");
        assert_eq!(
            auth.issuer_for(Profile::get("personal").unwrap()).unwrap(),
            second
        );
        assert_eq!(auth.status_of(first), Some(CaStatus::Superseded));
        // New issuance, and the renewal of the old CA's certificate, go to the successor.
        let new = auth.issue(request(1, None)).await.unwrap();
        let renewed = auth.issue(request(0, Some(old.serial))).await.unwrap();
        for c in [&new, &renewed] {
            assert_eq!(c.issuer, second);
            let (_, cert) = x509_parser::parse_x509_certificate(&c.cert_der).unwrap();
            let (_, ca) =
                x509_parser::parse_x509_certificate(auth.ca_cert(second).unwrap()).unwrap();
            assert_eq!(cert.issuer(), ca.subject());
        }
        // Both CAs have a responder; both publish.
        auth.ensure_responders().await.unwrap();
        assert!(auth.responder_cert(first).await.is_some());
        assert!(auth.responder_cert(second).await.is_some());
        assert_eq!(
            auth.publishing_cas(),
            vec![first, second, CaId::first(CaRole::Server)]
        );
        let old_end = not_after_of(&old.cert_der).unwrap().unix_timestamp();
        // While the old certificate is valid, and while its CRL entry and OCSP response are
        // still owed after it expires, nothing retires.
        assert!(auth
            .retire_finished(old_end, "test")
            .await
            .unwrap()
            .is_empty());
        assert!(auth
            .retire_finished(old_end + RETIRE_AFTER_EXPIRY, "test")
            .await
            .unwrap()
            .is_empty());
        let heads_before = auth.store().crl_heads("individual").await.unwrap();
        let retired = auth
            .retire_finished(old_end + RETIRE_AFTER_EXPIRY + 1, "test")
            .await
            .unwrap();
        assert_eq!(retired, vec![first]);
        assert_eq!(auth.status_of(first), Some(CaStatus::Retired));
        assert!(auth.responder_cert(first).await.is_none());
        assert!(!auth.publishing_cas().contains(&first));
        // Its final CRL was published, and nothing more is.
        let heads = auth.store().crl_heads("individual").await.unwrap();
        let full = |h: &[crate::store::CrlHead]| {
            h.iter()
                .find(|h| h.scope == Scope::Full)
                .map_or(0, |h| h.number)
        };
        assert!(full(&heads) > full(&heads_before), "{heads:?}");
        assert!(matches!(
            auth.publish_crl(first, Scope::Full, "test").await,
            Err(Error::Config(e)) if e.contains("retired")
        ));
        // Its certificates' status no longer changes: a revocation is refused by name, the
        // sweeps of a mass revocation pass them by, and work queued before it retired is
        // dropped rather than left waiting for a responder that will never sign.
        assert!(matches!(
            auth.revoke(old.serial, crate::revocation::Reason::Superseded, "test").await,
            Err(Error::Revocation(e)) if e.contains("retired")
        ));
        let swept = auth
            .store()
            .serials_matching(Some("personal"), None, None)
            .await
            .unwrap();
        assert!(!swept.contains(&old.serial.to_hex()), "{swept:?}");
        assert!(swept.contains(&new.serial.to_hex()), "{swept:?}");
        sqlx::query("INSERT INTO ocsp_pending (serial, version, queued_at) VALUES ($1, 1, 0) ON CONFLICT (serial) DO NOTHING")
            .bind(old.serial.to_hex())
            .execute(auth.store().pool())
            .await
            .unwrap();
        let due = auth.store().ocsp_pending(100).await.unwrap();
        assert!(due.iter().any(|d| d.serial == old.serial.to_hex()));
        auth.sign_ocsp(due).await.unwrap();
        assert!(auth
            .store()
            .ocsp_pending(100)
            .await
            .unwrap()
            .iter()
            .all(|d| d.serial != old.serial.to_hex()));
        // Its responders' keys are gone from the HSM.
        let destroyed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM ocsp_responders WHERE issuer = 'individual' AND key_destroyed_at IS NULL",
        )
        .fetch_one(auth.store().pool())
        .await
        .unwrap();
        assert_eq!(destroyed, 0);
        // The successor never retires this way (it is active), and a second pass does nothing.
        assert!(auth
            .retire_finished(i64::MAX, "test")
            .await
            .unwrap()
            .is_empty());
        let config = auth.config().clone();
        drop(auth);
        let auth = Authority::open(config).await.unwrap();
        assert_eq!(auth.status_of(first), Some(CaStatus::Retired));
        assert_eq!(auth.status_of(second), Some(CaStatus::Active));
        auth.ensure_responders().await.unwrap();
        assert!(auth.responder_cert(first).await.is_none());
    }

    /// RFC 5280 §4.2.1.10 matching of the name constraints an issuing CA's certificate carries.
    #[test]
    fn name_constraints_match_as_rfc_5280_says() {
        let nc = NameConstraints {
            permitted_dns: vec!["example.hk".into()],
            excluded_dns: vec!["secret.example.hk".into()],
            permitted_mail: vec![".gov.hk".into(), "post.hk".into(), "boss@other.hk".into()],
            excluded_mail: vec![],
        };
        for (name, ok) in [
            ("example.hk", true),
            ("www.Example.HK", true),
            ("badexample.hk", false),
            ("example.hk.evil", false),
            ("secret.example.hk", false),
            ("a.secret.example.hk", false),
        ] {
            assert_eq!(nc.allows(name, false), ok, "{name}");
        }
        for (name, ok) in [
            ("a@dept.gov.hk", true),
            ("a@gov.hk", false),
            ("a@post.hk", true),
            ("a@x.post.hk", false),
            ("boss@other.hk", true),
            ("staff@other.hk", false),
        ] {
            assert_eq!(nc.allows(name, true), ok, "{name}");
        }
        assert!(NameConstraints::default().allows("anything.hk", false));
    }

    /// Key identifiers (issue 12, defect 9): every CA's and responder's SKI is RFC 5280
    /// §4.2.1.2 method 1 (SHA-1 of the subjectPublicKey bits, what an OCSP ResponderID byKey
    /// carries), and every certificate's AKI is its issuer's SKI byte for byte.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn key_identifiers_are_method_1_and_akis_copy_the_issuer() {
        use sha1::Digest as _;
        let (_dir, auth) = test_ca().await;
        fn ids(der: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>, Vec<u8>) {
            let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
            let exts = c.tbs_certificate.extensions();
            let aki = exts.iter().find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            });
            let bits = sha1::Sha1::digest(&*c.tbs_certificate.subject_pki.subject_public_key.data);
            (lint::subject_key_id(exts), aki, bits.to_vec())
        }
        let mut root_skis = HashMap::new();
        for root in CaRole::ROOTS {
            let (root_ski, root_aki, root_bits) = ids(auth.ca_cert(CaId::first(root)).unwrap());
            assert_eq!(root_ski.as_deref(), Some(&root_bits[..]), "{root:?} SKI");
            assert_eq!(root_aki, root_ski, "{root:?} AKI");
            root_skis.insert(root, root_ski);
        }
        assert_ne!(root_skis[&CaRole::Root], root_skis[&CaRole::TlsRoot]);
        auth.ensure_responders().await.unwrap();
        for (role, root) in [
            (CaRole::Individual, CaRole::Root),
            (CaRole::Server, CaRole::TlsRoot),
        ] {
            let role = CaId::first(role);
            assert_eq!(auth.parent_of(role), Some(root), "{role:?}");
            let (ski, aki, bits) = ids(auth.ca_cert(role).unwrap());
            assert_eq!(ski.as_deref(), Some(&bits[..]), "{role:?} SKI");
            assert_eq!(aki, root_skis[&root], "{role:?} AKI");
            let responder = auth.responder_cert(role).await.unwrap();
            let (r_ski, r_aki, r_bits) = ids(&responder);
            assert_eq!(
                r_ski.as_deref(),
                Some(&r_bits[..]),
                "{role:?} responder SKI"
            );
            assert_eq!(r_aki, ski, "{role:?} responder AKI");
        }
        let leaf = auth.issue(request(0, None)).await.unwrap();
        let (ski, aki, bits) = ids(&leaf.cert_der);
        assert_eq!(ski.as_deref(), Some(&bits[..]), "S/MIME leaf SKI");
        assert_eq!(aki, ids(auth.ca_cert(leaf.issuer).unwrap()).0, "leaf AKI");
    }

    /// Issue 12, defect 7: an issuing CA that would outlive its root is refused (not cut
    /// short), and so is a certificate that would outlive its issuing CA.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_outlives_its_issuer() {
        let config = Config::default();
        let now = now_secs();
        let spki = rcgen::PublicKeyData::subject_public_key_info(
            &KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        );
        let root_end = now + time::Duration::days(365);
        let spec = crate::ceremony::CaSpec {
            id: CaId::first(CaRole::Individual),
            role: CaRole::Individual,
            common_name: "Test CA".into(),
            validity_days: config.ca.issuing_validity_days,
            key_type: hsm::KeySpec::P256,
            key_label: "k".into(),
            path_length: 0,
            permitted: Vec::new(),
            excluded: Vec::new(),
        };
        let e = ca_params(
            &config,
            "1.3.6.1.4.1.32473.1",
            &spec,
            Some(CaRole::Root),
            &spki,
            SerialNumber::random(),
            now,
            Some(root_end),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not before its root"), "{e}");
        let fits = now + time::Duration::days(i64::from(config.ca.issuing_validity_days) + 1);
        ca_params(
            &config,
            "1.3.6.1.4.1.32473.1",
            &spec,
            Some(CaRole::Root),
            &spki,
            SerialNumber::random(),
            now,
            Some(fits),
        )
        .unwrap();

        let (_dir, auth) = test_ca_with(|c| c.ca.issuing_validity_days = 30).await;
        match auth.issue(request(0, None)).await {
            Err(Error::Profile { reason, .. }) => {
                assert!(reason.contains("after its issuing CA"), "{reason}")
            }
            other => panic!("a certificate outliving its CA: {other:?}"),
        }
    }

    /// Issue 12, defect 1: a Strict S/MIME certificate found on hold (data from before the
    /// revoke paths refused it) reaches neither a CRL nor an OCSP response: the CRL lint refuses
    /// to publish, and its OCSP response is not signed; a personal certificate's hold is
    /// published as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_strict_certificate_on_hold_is_never_published_as_held() {
        let (_dir, auth) = test_ca().await;
        let mut strict = request(1, None);
        strict.profile = "encipherment".into();
        strict.subject = SubjectData {
            organization: Some("Example Trading Limited".into()),
            org_id: Some("12345678".into()),
            country: Some("HK".into()),
            emails: vec!["secure@example.hk".into()],
            ..Default::default()
        };
        let strict = auth.issue(strict).await.unwrap();
        let personal = auth.issue(request(2, None)).await.unwrap();
        // The revoke paths refuse the Strict hold, so make it as old data would have it.
        assert!(auth
            .revoke(
                strict.serial,
                crate::revocation::Reason::CertificateHold,
                "test"
            )
            .await
            .is_err());
        auth.revoke(
            personal.serial,
            crate::revocation::Reason::CertificateHold,
            "test",
        )
        .await
        .unwrap();
        sqlx::query("UPDATE certificates SET revocation_reason = 6, revoked_at = updated_at WHERE serial = $1")
            .bind(strict.serial.to_hex())
            .execute(auth.store().pool())
            .await
            .unwrap();
        match auth
            .publish_crl(CaId::first(CaRole::Individual), Scope::Full, "test")
            .await
        {
            Err(Error::Lint(f)) => assert!(f[0].contains(&strict.serial.to_hex()), "{f:?}"),
            other => panic!("a CRL was published with a Strict hold: {other:?}"),
        }
        sqlx::query("INSERT INTO ocsp_pending (serial, version) VALUES ($1, 99) ON CONFLICT (serial) DO UPDATE SET version = 99")
            .bind(strict.serial.to_hex())
            .execute(auth.store().pool())
            .await
            .unwrap();
        let due = auth.ocsp_due(1000).await.unwrap();
        let queued = |serial: SerialNumber| due.iter().any(|d| d.serial == serial.to_hex());
        assert!(queued(strict.serial) && queued(personal.serial), "{due:?}");
        auth.sign_ocsp(due).await.unwrap();
        let signed = |serial: SerialNumber| {
            let store = auth.store().clone();
            async move {
                sqlx::query("SELECT COUNT(*) FROM ocsp_responses WHERE serial = $1")
                    .bind(serial.to_hex())
                    .fetch_one(store.pool())
                    .await
                    .map(|r| sqlx::Row::get::<i64, _>(&r, 0))
                    .unwrap()
            }
        };
        assert_eq!(
            signed(strict.serial).await,
            0,
            "a held Strict response was signed"
        );
        assert_eq!(signed(personal.serial).await, 1);
    }

    /// Many issuances in flight share group-committed transactions; every one ends `issued`
    /// with its own certificate, and the audit chain is intact. Two renewals of the same
    /// certificate race inside one batch: exactly one wins, the loser's failure (a renewal
    /// conflict) does not fail its neighbours in the batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_issuance_and_racing_renewals() {
        let (_dir, auth) = test_ca().await;
        let auth = Arc::new(auth);
        let first = auth.issue(request(0, None)).await.unwrap();
        let mut tasks = Vec::new();
        for i in 1..=60 {
            let auth = auth.clone();
            // Two of them renew the same certificate.
            let renews = (i == 10 || i == 11).then_some(first.serial);
            tasks.push(tokio::spawn(async move {
                (i, auth.issue(request(i, renews)).await)
            }));
        }
        let mut ok = 0;
        let mut renewal_losses = 0;
        let mut serials = std::collections::HashSet::new();
        for t in tasks {
            let (i, r) = t.await.unwrap();
            match r {
                Ok(issued) => {
                    ok += 1;
                    assert!(serials.insert(issued.serial), "serial issued twice");
                }
                Err(Error::NotRenewable { .. }) if i == 10 || i == 11 => renewal_losses += 1,
                Err(e) => panic!("issuance {i} failed: {e}"),
            }
        }
        assert_eq!((ok, renewal_losses), (59, 1));
        let counts = auth.store().count_by_state().await.unwrap();
        assert_eq!(counts, vec![("issued".to_string(), 60)]);
        let old = auth
            .store()
            .certificate(&first.serial.to_hex())
            .await
            .unwrap()
            .unwrap();
        let by = old.renewed_by.expect("renewed_by set");
        let new = auth.store().certificate(&by).await.unwrap().unwrap();
        assert_eq!(new.renews.as_deref(), Some(first.serial.to_hex().as_str()));
        auth.checkpoint().await.unwrap();
        let crate::authority::AuditVerified {
            records: n,
            checkpoints,
            findings,
            ..
        } = Authority::verify_audit(auth.store(), auth.audit_public_key())
            .await
            .unwrap();
        assert!(findings.is_empty(), "{findings:?}");
        assert!(
            n > 180 && checkpoints == 1,
            "{n} records, {checkpoints} checkpoints"
        );
    }

    /// Many concurrent status changes of the same certificates (reference checklist #21–#23):
    /// each certificate is revoked exactly once, every other attempt is answered "already
    /// revoked" (or, for keyCompromise, updates the reason once), and nothing is lost or
    /// overwritten — the final state is keyCompromise everywhere it was requested.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_revocations_are_compare_and_set() {
        use crate::revocation::{Outcome, Reason};
        let (_dir, auth) = test_ca().await;
        let auth = Arc::new(auth);
        let mut serials = Vec::new();
        for i in 0..5 {
            serials.push(auth.issue(request(i, None)).await.unwrap().serial);
        }
        let mut tasks = Vec::new();
        for round in 0..8 {
            for serial in &serials {
                let (auth, serial) = (auth.clone(), *serial);
                let reason = if round % 4 == 3 {
                    Reason::KeyCompromise
                } else {
                    Reason::Superseded
                };
                tasks.push(tokio::spawn(async move {
                    (serial, reason, auth.revoke(serial, reason, "test").await)
                }));
            }
        }
        let mut revoked = std::collections::HashMap::new();
        for t in tasks {
            let (serial, reason, r) = t.await.unwrap();
            match r {
                Ok(changed) => {
                    for (s, o) in changed.iter().filter(|(s, _)| *s == serial.to_hex()) {
                        if *o == Outcome::Revoked {
                            *revoked.entry(s.clone()).or_insert(0) += 1;
                        }
                    }
                }
                Err(Error::AlreadyRevoked { .. }) => {}
                // SQLite serialises writers; a compare-and-set loser on PostgreSQL would say so.
                Err(Error::Revocation(m)) if m.contains("concurrently") => {}
                Err(e) => panic!("{serial} {reason:?}: {e}"),
            }
        }
        for serial in &serials {
            assert_eq!(
                revoked.get(&serial.to_hex()),
                Some(&1),
                "{serial} revoked {:?} times",
                revoked.get(&serial.to_hex())
            );
            let rec = auth
                .store()
                .certificate(&serial.to_hex())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                rec.revocation_reason,
                Some(1),
                "{serial}: keyCompromise was requested and must win"
            );
        }
    }

    /// A token session invalidated under a running CA (operator reset, token hiccup) is
    /// recovered without a restart; no software key is ever used.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn issuance_survives_invalidated_token_sessions() {
        let (_dir, auth) = test_ca().await;
        auth.issue(request(1, None)).await.unwrap();
        let cfg = auth.config().clone();
        tokio::task::spawn_blocking(move || open_token(&cfg).unwrap().close_all_sessions())
            .await
            .unwrap();
        let issued = auth.issue(request(2, None)).await.unwrap();
        let ca = auth.ca_cert(CaId::first(CaRole::Individual)).unwrap();
        let (_, ca) = x509_parser::certificate::X509Certificate::from_der(ca).unwrap();
        let (_, cert) =
            x509_parser::certificate::X509Certificate::from_der(&issued.cert_der).unwrap();
        cert.verify_signature(Some(&ca.tbs_certificate.subject_pki))
            .unwrap();
    }

    #[test]
    fn assemble_round_trips_and_self_check_catches_tampering() {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["a.example".into()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[1, 2, 3]));
        let cert = params.self_signed(&ca_key).unwrap();
        let (tbs, alg) = split_signed(cert.der()).unwrap();
        let s = Signed::from_der(cert.der()).unwrap();
        let rebuilt = assemble(&tbs, &alg, s.signature.raw_bytes()).unwrap();
        assert_eq!(rebuilt, cert.der().to_vec());
        let spki = rcgen::PublicKeyData::subject_public_key_info(&ca_key);
        self_check(&rebuilt, &tbs, &spki).unwrap();
        // Reference checklist #4: a TBS changed after linting is caught.
        let mut other = tbs.clone();
        let n = other.len() - 5;
        other[n] ^= 1;
        assert!(matches!(
            self_check(&rebuilt, &other, &spki),
            Err(Error::SignatureCheck(_))
        ));
        // Reference checklist #9: a corrupted signature is caught.
        let mut sig = s.signature.raw_bytes().to_vec();
        let n = sig.len() - 2;
        sig[n] ^= 1;
        let bad = assemble(&tbs, &alg, &sig).unwrap();
        assert!(matches!(
            self_check(&bad, &tbs, &spki),
            Err(Error::SignatureCheck(_))
        ));
    }
}
