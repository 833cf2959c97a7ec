//! `ecert serve`: the relying-party face (CA certificates, CRLs, OCSP, health, metrics) and,
//! in the signing process, the background duties (CRL publication, OCSP response signing,
//! audit checkpoints).
//!
//! Two roles:
//! - **signer** (default): the one process that opens the HSM for its data directory or
//!   database. On a fresh data directory it initialises everything first (token, hierarchy,
//!   database). It republishes CRLs within `--crl-watch-seconds` of a status change and signs
//!   OCSP responses for every change as it is committed (queued in the same transaction).
//! - **`--no-signer`**: a stateless web/OCSP instance on the same database (DESIGN.md "Storage
//!   and scale"); it never opens the HSM.
//!
//! Every instance answers OCSP and CRL requests from memory, following the store every
//! [`SYNC_EVERY`]: a status change made by any process reaches every instance's answers within
//! about a second, and the answers go on while the database is down (docs/OCSP.md).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use ca_core::authority::Authority;
use ca_core::config::Config;
use ca_core::crl::Scope;
use ca_core::ocsp::{self, Cache, Refusal};
use ca_core::profile::{CaId, CaRole, CaStatus};
use ca_core::publication::{Repository, StateCount};
use ca_core::store::{CrlHead, OcspBacklog, Store};

/// Options of `ecert serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Republish every issuing CA's CRL at this interval (e-Cert publishes three times a day).
    #[arg(long, default_value_t = 8 * 3600)]
    pub crl_interval_seconds: u64,
    /// How often to look for revocations made by other processes and republish.
    #[arg(long, default_value_t = 30)]
    pub crl_watch_seconds: u64,
    /// Serve from the database only, without the HSM: CA certificates, CRLs and OCSP responses
    /// that the signing instance made. For extra instances on a shared PostgreSQL.
    #[arg(long)]
    pub no_signer: bool,
    /// A hot standby (docs/OPERATIONS.md "Standby"): serve CA certificates, CRLs and OCSP
    /// from the store at once, wait for the signer lock, and take over signing — CRLs, OCSP,
    /// the registration pages and queues — when the signer holding it dies or stops.
    #[arg(long, conflicts_with = "no_signer")]
    pub standby: bool,
    /// With `--no-signer`: forward the registration pages and API (`/`, `/apply`, `/track`,
    /// `/staff`, `/api/v1`) to the signing instance at this `http://HOST:PORT` (list this
    /// instance in the signer's `[ra] trusted_proxies`).
    #[arg(long, requires = "no_signer")]
    pub ra_upstream: Option<String>,
    /// With an `https://` `--ra-upstream`: the PEM certificates the signing instance's TLS
    /// certificate must chain to.
    #[arg(long, requires = "ra_upstream")]
    pub ra_upstream_ca: Option<std::path::PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first) instead of plain HTTP: for a
    /// signing instance that front instances reach over the network.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The TLS private key (PEM, PKCS#8).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

/// How often every instance reads new OCSP responses and CRLs from the store.
const SYNC_EVERY: Duration = Duration::from_millis(250);
/// How often the signer looks for serials whose OCSP response must be (re)signed.
const OCSP_SIGN_EVERY: Duration = Duration::from_millis(200);
/// How long a store probe waits for the database.
const DB_PROBE: Duration = Duration::from_secs(2);
/// How often every instance reads what `/healthz` and `/metrics` report from the store
/// (certificate counts, the OCSP backlog, CRL heads): those requests are answered from the
/// last probe, so clients cannot make the database count the certificates table.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// A probe older than this (the prober stuck) counts as a database fault.
const PROBE_STALE: i64 = 15;
/// Serials signed per batch (one transaction).
const OCSP_BATCH: i64 = 2048;

#[derive(Debug, Default)]
struct Counters {
    good: AtomicU64,
    malformed: AtomicU64,
    unauthorized: AtomicU64,
    not_modified: AtomicU64,
}

struct AppState {
    /// The signer, in the signing role: set at start, or when a standby takes over.
    auth: std::sync::OnceLock<Arc<Authority>>,
    /// Started with `--standby`: waits for the signer lock, then signs.
    standby: bool,
    /// Whether a stop was asked (`/readyz`).
    shutdown: crate::tls::Shutdown,
    /// Tells the batch issuer to stop after the pass it is in (a safe point: nothing left
    /// `issuing`), and its task, awaited at a stop before the others are aborted.
    stop_batches: tokio::sync::watch::Sender<bool>,
    batch_issuer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// How long a CRL may stay behind its revocations before `/healthz` faults: four
    /// `--crl-watch-seconds`, at least 10 s.
    crl_behind_limit: i64,
    /// What is published, read from the store.
    repo: Repository,
    config: Config,
    /// CA certificates (DER): every CA, retired ones too (their certificates still verify
    /// signatures made while they were valid).
    cas: HashMap<CaId, Bytes>,
    /// Cross-certificates by `<subject>-by-<issuer>` (the newest of each pair).
    cross: HashMap<String, Bytes>,
    ocsp: Cache,
    /// Newest CRL of each CA: (CRLNumber, nextUpdate, DER).
    crls: RwLock<CrlMap>,
    counters: Counters,
    /// The last HSM check ([`keep_checking_hsm`]), which `/healthz` and `/metrics` report.
    hsm: RwLock<HsmHealth>,
    /// The last store probe ([`probe`]), which `/healthz` and `/metrics` report.
    probe: RwLock<Probe>,
    /// Store probes made since start.
    probes: AtomicU64,
    /// This instance's name in the health-probe table: host, process and a random part.
    instance: String,
    /// The CRL publisher's failures, by CRL file name (and `schedule`), for `/healthz`.
    crl_outages: std::sync::Mutex<HashMap<String, Outage>>,
}

/// What a store probe read, and when.
#[derive(Debug, Clone, Default)]
struct Probe {
    /// When a probe last reached the database.
    ok_at: i64,
    /// Why the last probe failed.
    error: Option<String>,
    /// Serials by lifecycle state.
    counts: Vec<StateCount>,
    /// The OCSP signer's backlog (responses within 8 hours of nextUpdate count as overdue).
    backlog: Option<OcspBacklog>,
    /// Each CA's newest CRL heads.
    heads: Vec<(CaId, CrlHead)>,
    /// Each CA's state as last read (a superseded CA retires when its last certificate
    /// expires, while the service runs).
    states: HashMap<CaId, CaStatus>,
    /// The open Certificate Problem Reports' clocks (TLS BR §4.9.5).
    reports: Option<ca_core::ra::ReportClocks>,
    /// CRLs behind the revocations of their scope: since when (Unix seconds) each has been
    /// (a revocation a relying party would not find in the CRL its certificate names).
    crls_behind: HashMap<(CaId, Scope), i64>,
    /// Roots whose CRL does not list a CA they revoked yet, since the revocation (a key
    /// ceremony's root_crl step is due within 24 hours, TLS BR §4.9.7).
    root_crls_waiting: Vec<(CaRole, i64)>,
    /// Queues and applications by state (`/metrics`).
    queues: Option<ca_core::publication::QueueCounts>,
    /// The signer's write probes failed in a row, and the last one's error.
    write_failures: u32,
    write_error: Option<String>,
}
type Shared = Arc<AppState>;

/// What the last HSM check found.
#[derive(Debug, Clone, Default)]
struct HsmHealth {
    /// When the last check finished (Unix seconds); 0 before the first.
    checked_at: i64,
    /// Why the last check failed.
    error: Option<String>,
    /// Since when checks have been failing.
    fault_since: Option<i64>,
}

/// `/healthz` warns this long before a root's CRL must be signed again in a ceremony.
const ROOT_CRL_WARNING: i64 = 30 * 86_400;

/// How often the signer checks that the HSM signs (one signature with the audit key).
const HSM_CHECK_EVERY: Duration = Duration::from_secs(3);
/// How long one HSM check may take.
const HSM_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// An HSM check older than this (the checker stuck) counts as a fault.
const HSM_CHECK_STALE: i64 = 15;
/// While a background duty keeps failing, a reminder is logged at most this often.
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Logs a recurring failure of a background duty when it starts, at most once per
/// [`OUTAGE_LOG_EVERY`] while it lasts (with the count), and when it ends: a duty retried every
/// 200 ms must not write hundreds of lines a minute while, say, the HSM is away.
#[derive(Debug, Default)]
struct Outage {
    since: Option<std::time::Instant>,
    logged: Option<std::time::Instant>,
    failures: u64,
    /// Since when (Unix seconds) and why, for `/healthz`.
    failing_since: Option<i64>,
    last_error: Option<String>,
}

impl Outage {
    fn failed(&mut self, what: &str, error: &dyn std::fmt::Display) {
        let now = std::time::Instant::now();
        self.failures += 1;
        self.failing_since.get_or_insert_with(self::now);
        self.last_error = Some(error.to_string());
        match self.since {
            None => {
                self.since = Some(now);
                self.logged = Some(now);
                tracing::error!(%error, "{what} failed");
            }
            Some(since) if self.logged.is_none_or(|t| now - t >= OUTAGE_LOG_EVERY) => {
                self.logged = Some(now);
                tracing::error!(
                    %error,
                    failures = self.failures,
                    failing_seconds = (now - since).as_secs(),
                    "{what} still failing"
                );
            }
            Some(_) => {}
        }
    }

    fn ok(&mut self, what: &str) {
        if let Some(since) = self.since {
            tracing::warn!(
                failures = self.failures,
                failing_seconds = since.elapsed().as_secs(),
                "{what} works again"
            );
            *self = Outage::default();
        }
    }
}

/// The newest CRL of each CA and scope: (CRLNumber, nextUpdate, DER).
type CrlMap = HashMap<(CaId, Scope), (i64, i64, Bytes)>;

pub async fn serve(config: Config, a: ServeArgs) -> anyhow::Result<()> {
    // Checked before anything is opened: a bad URL is a one-line error.
    let front = a
        .ra_upstream
        .as_deref()
        .map(|u| crate::front::router(u, a.ra_upstream_ca.as_deref()))
        .transpose()?;
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some(crate::tls::server_config(c, k)?),
        _ => None,
    };
    crate::metrics::set_access_log(config.http.access_log);
    let (auth, repo) = if a.no_signer || a.standby {
        let store = Store::open(&config.database_url())
            .await?
            .with_clock_check(&config.clock);
        (None, Repository::new(store))
    } else {
        let (auth, _) = Authority::init(config.clone()).await?;
        let repo = Repository::from(&auth);
        (Some(Arc::new(auth)), repo)
    };
    // The service's start and stop are audited, with a fingerprint of the effective
    // configuration (its Debug form, which redacts PINs and database passwords).
    let audit_store = match &auth {
        Some(a) => a.store().clone(),
        None => Store::open(&config.database_url()).await?,
    };
    let service_event = |kind: &'static str| ca_core::audit::Event {
        kind,
        actor: crate::actor(),
        subject: None,
        detail: serde_json::json!({
            "role": if a.no_signer { "no-signer" } else if a.standby { "standby" } else { "signer" },
            "listen": a.listen.to_string(),
            "version": env!("CARGO_PKG_VERSION"),
            "config_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!("{config:?}").as_bytes())),
        }),
    };
    if let Err(e) = audit_store
        .audit_now(&service_event("service.started"))
        .await
    {
        tracing::error!(error = %e, "could not record the service's start");
    }
    let stopped = service_event("service.stopped");
    // Every CA: a data directory made before the TLS root has none until its Server CA's
    // rollover; a successor made by a rollover has its own id.
    let stored = repo.cas().await?;
    for role in [CaRole::Root, CaRole::Individual, CaRole::Server] {
        if !stored.iter().any(|c| c.id.role == role) {
            anyhow::bail!(
                "the {} CA does not exist: run `ecert init` (or a signing `ecert serve`) first",
                role.name()
            );
        }
    }
    let cas: HashMap<CaId, Bytes> = stored
        .iter()
        .map(|c| (c.id, Bytes::from(c.cert_der.clone())))
        .collect();
    let cross: HashMap<String, Bytes> = repo
        .cross_certificates()
        .await?
        .into_iter()
        .map(|(subject, issuer, der)| (format!("{subject}-by-{issuer}"), Bytes::from(der)))
        .collect();
    // OCSP answers for every issuing CA: a superseded one's certificates are still valid.
    let issuing: Vec<_> = stored
        .iter()
        .filter(|c| !c.id.is_root())
        .map(|c| (c.id, c.cert_der.clone()))
        .collect();
    let state: Shared = Arc::new(AppState {
        crl_behind_limit: (4 * a.crl_watch_seconds as i64).max(10),
        auth: auth.map(std::sync::OnceLock::from).unwrap_or_default(),
        standby: a.standby,
        shutdown: crate::tls::Shutdown::default(),
        stop_batches: tokio::sync::watch::channel(false).0,
        batch_issuer: std::sync::Mutex::new(None),
        repo,
        config,
        cas,
        cross,
        ocsp: Cache::new(&issuing)?,
        crls: RwLock::new(HashMap::new()),
        counters: Counters::default(),
        hsm: RwLock::new(HsmHealth::default()),
        probe: RwLock::new(Probe {
            states: stored.iter().map(|c| (c.id, c.state)).collect(),
            ..Probe::default()
        }),
        probes: AtomicU64::new(0),
        crl_outages: std::sync::Mutex::new(HashMap::new()),
        instance: format!(
            "{}:{}:{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
    });
    let mut background = Vec::new();
    let ra = Arc::new(std::sync::OnceLock::new());
    if state.auth().is_some() {
        let (tasks, ra_router) = start_signing(&state, &a).await?;
        background.extend(tasks);
        let _ = ra.set(ra_router);
    }
    sync(&state)
        .await
        .context("loading OCSP responses and CRLs")?;
    background.push(tokio::spawn(follow_store(state.clone())));
    probe(&state).await;
    background.push(tokio::spawn(keep_probing(state.clone())));
    let taken_over = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut app = router(state.clone());
    if let Some(front) = front {
        app = app.merge(front);
    } else if !a.no_signer {
        // The registration pages need the personal-data keys in the HSM: signer role only
        // (a standby's answer 503 until it takes over).
        let ra = ra.clone();
        app = app.fallback(move |req: axum::extract::Request| {
            let ra = ra.clone();
            async move {
                use tower::ServiceExt;
                match ra.get() {
                    Some(r) => r.clone().oneshot(req).await.into_response(),
                    None => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, "5")],
                        "this instance is a standby: it serves registration once it takes over signing\n",
                    )
                        .into_response(),
                }
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let addr = listener.local_addr()?;
    println!(
        "listening on {}://{addr}",
        if tls.is_some() { "https" } else { "http" }
    );
    let serving = crate::tls::serve(
        listener,
        tls,
        app,
        crate::tls::Limits::from_config(&state.config.http),
        state.shutdown.clone(),
        Some(ocsp_fast(state.clone())),
    );
    // A standby waits for the signer lock beside serving (in this task: opening the CA is not
    // a future that can move between threads).
    let served = if a.standby {
        tokio::pin!(serving);
        tokio::select! {
            r = &mut serving => r,
            () = take_over(state.clone(), a.clone(), ra.clone(), taken_over.clone()) => serving.await,
        }
    } else {
        serving.await
    };
    served.context("serving")?;
    // The batch issuer stops at the end of the pass it is in, so no issuance is cut between
    // the HSM's signature and the store (which the next signer would mark abandoned).
    let _ = state.stop_batches.send(true);
    let batches = state
        .batch_issuer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(mut b) = batches {
        if tokio::time::timeout(BATCH_STOP_WAIT, &mut b).await.is_err() {
            b.abort();
            tracing::warn!(
                seconds = BATCH_STOP_WAIT.as_secs(),
                "the batch issuer's chunk did not end in time: cut off"
            );
        }
    }
    // Queues flushed: the OCSP changes waiting are signed before the signer lets go.
    if let Some(auth) = state.auth() {
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            sign_ocsp_due(auth, &mut Outage::default()),
        )
        .await;
    }
    for b in background {
        b.abort();
    }
    for b in taken_over
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .drain(..)
    {
        b.abort();
    }
    if let Err(e) = audit_store.audit_now(&stopped).await {
        eprintln!("warning: could not record the service's stop: {e}");
    }
    if let Some(auth) = state.auth() {
        if let Err(e) = auth.checkpoint().await {
            eprintln!("warning: could not sign the audit checkpoint: {e}");
        }
    }
    Ok(())
}

/// Starts what only the signer does (CRL and OCSP duties, the batch issuer, the LDAP
/// publisher, HSM checks, expiry reminders, the watch on its lock) and returns their tasks and
/// the registration pages: at start for a signer, at takeover for a standby.
async fn start_signing(
    state: &Shared,
    a: &ServeArgs,
) -> anyhow::Result<(Vec<tokio::task::JoinHandle<()>>, Router)> {
    let auth = state
        .auth()
        .context("start_signing without the signer")?
        .clone();
    let auth = &auth;
    let mut background = Vec::new();
    // Publish at once where a CRL is missing; make the responders and sign what is due.
    publish_due(auth, a.crl_interval_seconds as i64, &state.crl_outages).await;
    // CRL files a crash or a full disk left behind the database are written again.
    match auth.check_crl_files().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            files = n,
            "CRL files behind the database; writing them again"
        ),
        Err(e) => {
            tracing::error!(error = %e, "could not compare the CRL files with the database")
        }
    }
    // A responder that cannot be made now (a clock off its reference, an HSM away) is
    // retried by the OCSP signer on every pass; the service starts and says why in
    // /healthz rather than exiting.
    if let Err(e) = auth.ensure_responders().await {
        tracing::error!(error = %e, "could not make the OCSP responders; retrying");
    }
    sign_ocsp_due(auth, &mut Outage::default()).await;
    // Two-officer decisions a stopped process left half-carried-out.
    match ca_core::ra::officer::resume(auth).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            proposals = n,
            "finished two-officer decisions left by a stopped process"
        ),
        Err(e) => {
            tracing::error!(error = %e, "could not finish the two-officer decisions left by a stopped process")
        }
    }
    background.push(tokio::spawn(crl_duties(
        state.clone(),
        a.crl_interval_seconds,
        a.crl_watch_seconds,
    )));
    background.push(tokio::spawn(ocsp_signer(state.clone())));
    *state
        .batch_issuer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tokio::spawn(batch_issuer(
        auth.clone(),
        state.stop_batches.subscribe(),
    )));
    let publisher = ca_core::ldap::Publisher::new(&state.config.ldap, &state.config.data_dir)
        .context("[ldap]")?;
    background.push(tokio::spawn(ldap_publisher(
        auth.store().clone(),
        publisher,
    )));
    check_hsm(state).await;
    background.push(tokio::spawn(keep_checking_hsm(state.clone())));
    background.push(tokio::spawn(keep_signer_lock(auth.clone())));
    let mailer = crate::ra::Mailer::new(&state.config.ra.smtp, &state.config.ra.mail_from);
    let ra_state = Arc::new(crate::ra::RaState::new(auth.clone(), mailer));
    background.push(tokio::spawn(expiry_reminders(ra_state.clone())));
    Ok((background, crate::ra::router(ra_state)))
}

/// How often a signer asks whether it still holds the signer lock, and how long it waits for
/// an answer.
const LOCK_CHECK_EVERY: Duration = Duration::from_secs(1);
const LOCK_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// The exit status of a signer that lost its lock (EX_TEMPFAIL): its supervisor starts it
/// again, and it waits as a standby.
const LOST_LOCK_EXIT: i32 = 75;

/// A signer that finds another process holds a newer signer epoch, or that the lock its
/// failed connection held is now another's, stops at once (issue 17): it is no longer the
/// signer, and every write it tried would be refused anyway ([`ca_core::store::Fence`]). It
/// exits rather than lingering half-alive; its supervisor starts it again as a standby. While
/// the database cannot be reached it keeps serving OCSP and CRLs from memory (nothing can be
/// signed meanwhile) and takes the lock again when the database is back, if no standby has.
async fn keep_signer_lock(auth: Arc<Authority>) {
    let mut unreachable = false;
    loop {
        // Any transaction that found the epoch moved stops the process within 100 ms; the
        // lock itself is asked about once a second.
        let next = tokio::time::Instant::now() + LOCK_CHECK_EVERY;
        while tokio::time::Instant::now() < next {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if auth.store().fence().is_some_and(|f| f.lost()) {
                tracing::error!("a transaction found another signer's epoch: this process stops signing and exits");
                eprintln!("error: another process took the signer lock; exiting so that only one process signs");
                std::process::exit(LOST_LOCK_EXIT);
            }
        }
        match auth.check_signer_lock(LOCK_CHECK_TIMEOUT).await {
            Ok(ca_core::authority::LockState::Held) => unreachable = false,
            Ok(ca_core::authority::LockState::Regained) => {
                unreachable = false;
                tracing::warn!("the signer lock was taken again after its connection failed");
            }
            Ok(ca_core::authority::LockState::Unreachable(why)) => {
                if !unreachable {
                    tracing::error!(%why, "the signer lock cannot be checked: the database is unreachable");
                }
                unreachable = true;
            }
            Err(e) => {
                tracing::error!(error = %e, "lost the signer lock: this process stops signing and exits");
                eprintln!("error: {e}; exiting so that only one process signs");
                std::process::exit(LOST_LOCK_EXIT);
            }
        }
    }
}

/// A standby (`serve --standby`): serves the public face from the store while it waits for
/// the signer lock; once it has it (the signer died or stopped), opens the CA — resolving the
/// previous signer's leftovers by the recorded rule, under a new signer epoch — and starts
/// everything a signer does, registration pages included.
async fn take_over(
    state: Shared,
    a: ServeArgs,
    ra: Arc<std::sync::OnceLock<Router>>,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
) {
    let mut delay = Duration::from_secs(1);
    let auth = loop {
        match Authority::open_standby(state.config.clone()).await {
            Ok(auth) => break auth,
            // The database away, the HSM away: try again, as a signer start would be retried.
            Err(e) => {
                tracing::error!(error = %e, "the standby could not take over; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let took = std::time::Instant::now();
    let epoch = auth.store().fence().map(|f| f.epoch());
    let auth = Arc::new(auth);
    let _ = state.auth.set(auth.clone());
    match start_signing(&state, &a).await {
        Ok((started, router)) => {
            tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend(started);
            let _ = ra.set(router);
        }
        Err(e) => {
            // Without its duties this process would hold the lock and do nothing: let the
            // supervisor start it again.
            eprintln!("error: the standby took the signer lock but could not start signing: {e:#}");
            std::process::exit(LOST_LOCK_EXIT);
        }
    }
    let event = ca_core::audit::Event {
        kind: "service.took_over",
        actor: crate::actor(),
        subject: None,
        detail: serde_json::json!({
            "listen": a.listen.to_string(),
            "epoch": epoch,
            "start_ms": took.elapsed().as_millis() as u64,
        }),
    };
    if let Err(e) = auth.store().audit_now(&event).await {
        tracing::error!(error = %e, "could not record the takeover");
    }
    tracing::warn!(?epoch, "this standby took over as the signer");
    eprintln!("took over as the signer (epoch {epoch:?})");
}

/// What this instance is: `signer`, `standby` (waiting for the lock) or `no-signer`.
fn role(s: &AppState) -> &'static str {
    match (s.auth().is_some(), s.standby) {
        (true, _) => "signer",
        (false, true) => "standby",
        (false, false) => "no-signer",
    }
}

impl AppState {
    fn auth(&self) -> Option<&Arc<Authority>> {
        self.auth.get()
    }
}

/// The routes. Public, read-only.
fn router(state: Shared) -> Router {
    Router::new()
        .route("/ca/{file}", get(ca_cert))
        .route("/crl/{file}", get(crl))
        .route("/ocsp", post(ocsp_routed))
        .route("/ocsp/{*request}", get(ocsp_routed))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/readyz/signer", get(readyz_signer))
        .route("/metrics", get(metrics))
        // An OCSP request is a few hundred bytes; nothing here takes a large body.
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(state)
}

/// `GET /readyz`: whether a load balancer should send this instance traffic — 200 `ready`
/// while it serves, 503 `draining` from the moment a stop is asked (SIGTERM or SIGINT) until
/// the listener closes `[http] drain_seconds` later. Liveness and faults are `/healthz`'s.
async fn readyz(State(s): State<Shared>) -> Response {
    if s.shutdown.draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CACHE_CONTROL, "no-store")],
            "draining\n",
        )
            .into_response()
    } else {
        (
            [(header::CACHE_CONTROL, "no-store")],
            format!("ready ({})\n", role(&s)),
        )
            .into_response()
    }
}

/// `GET /readyz/signer`: 200 only on the instance that signs (and is not draining) — the check
/// for a balancer in front of the registration pages, which only the signer serves: after a
/// takeover it sends them to the standby that took over.
async fn readyz_signer(State(s): State<Shared>) -> Response {
    if s.auth().is_some() && !s.shutdown.draining() {
        ([(header::CACHE_CONTROL, "no-store")], "ready (signer)\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CACHE_CONTROL, "no-store")],
            format!("not signing ({})\n", role(&s)),
        )
            .into_response()
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `GET /ca/{ca}.crt`: DER, `application/pkix-cert` (RFC 2585 §4.1), the URL in caIssuers.
/// A cross-certificate is served at `/ca/{subject}-by-{issuer}.crt`.
async fn ca_cert(State(s): State<Shared>, Path(file): Path<String>) -> Response {
    let Some(stem) = file.strip_suffix(".crt") else {
        return not_found();
    };
    let der = match CaId::from_name(stem) {
        Ok(id) => s.cas.get(&id),
        Err(_) => s.cross.get(stem),
    };
    match der {
        Some(der) => (
            [
                (header::CONTENT_TYPE, "application/pkix-cert"),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            der.clone(),
        )
            .into_response(),
        None => not_found(),
    }
}

/// `GET /crl/{ca}.crl` (full CRL) and `GET /crl/{ca}-p{k}.crl` (partition k): DER,
/// `application/pkix-crl` (RFC 2585 §4.2), the URLs in CRL distribution points. Served from
/// memory (kept current by [`follow_store`]).
async fn crl(State(s): State<Shared>, Path(file): Path<String>) -> Response {
    let Some(key) = Scope::parse_file(&file) else {
        return not_found();
    };
    let found = s.crls.read().ok().and_then(|m| m.get(&key).cloned());
    match found {
        Some((_, _, der)) => (
            [
                (header::CONTENT_TYPE, "application/pkix-crl"),
                (header::CACHE_CONTROL, "public, max-age=60"),
            ],
            der,
        )
            .into_response(),
        None => not_found(),
    }
}

/// An HTTP-date (RFC 9110 §5.6.7, IMF-fixdate).
fn http_date(unix: i64) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// `http_date` as a header value, remembered per thread for the last few instants asked (a
/// GET answer needs Expires, which changes once a second, and Last-Modified, which most
/// responses share because they are signed in batches): formatting a date per request cost
/// more than the rest of the answer.
fn http_date_value(unix: i64) -> HeaderValue {
    thread_local! {
        static DATES: std::cell::RefCell<[(i64, Option<HeaderValue>); 4]> =
            const { std::cell::RefCell::new([(0, None), (0, None), (0, None), (0, None)]) };
    }
    DATES.with(|d| {
        let mut d = d.borrow_mut();
        if let Some((_, Some(v))) = d.iter().find(|(t, v)| *t == unix && v.is_some()) {
            return v.clone();
        }
        let v = HeaderValue::from_str(&http_date(unix)).unwrap_or(HeaderValue::from_static(""));
        // Replace the slot of the oldest instant.
        let slot = d
            .iter()
            .enumerate()
            .min_by_key(|(_, (t, _))| *t)
            .map_or(0, |(i, _)| i);
        d[slot] = (unix, Some(v.clone()));
        v
    })
}

/// The Cache-Control of a GET answer, remembered per thread for the last max-age (nearly always
/// `[ocsp] cache_max_age_seconds`).
fn cache_control_value(max_age: i64) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(i64, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with(|l| {
        let mut l = l.borrow_mut();
        match &*l {
            Some((m, v)) if *m == max_age => v.clone(),
            _ => {
                let v = HeaderValue::from_str(&format!(
                    "public, no-transform, must-revalidate, max-age={max_age}"
                ))
                .unwrap_or(HeaderValue::from_static("no-cache"));
                *l = Some((max_age, v.clone()));
                v
            }
        }
    })
}

fn ocsp_body(body: Bytes) -> Response {
    let mut r = Response::new(axum::body::Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/ocsp-response"),
    );
    r
}

/// Answers one DER OCSPRequest. `get`: add the caching headers of RFC 5019 §6.2 (max-age
/// capped by nextUpdate, Expires, Last-Modified = thisUpdate, a strong ETag) and honour
/// If-None-Match. Error responses are never cached.
fn answer(s: &AppState, request: &[u8], get: Option<Option<&HeaderValue>>) -> Response {
    // Unix seconds straight from the clock (no calendar date is needed per request).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (entry, alg) = match s.ocsp.answer(request, now) {
        Ok(v) => v,
        Err(refusal) => {
            let c = match refusal {
                Refusal::Malformed => &s.counters.malformed,
                Refusal::Unauthorized => &s.counters.unauthorized,
            };
            c.fetch_add(1, Ordering::Relaxed);
            let mut r = ocsp_body(Bytes::from_static(refusal.body()));
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return r;
        }
    };
    let (der, etag) = entry.for_alg(alg);
    let Some(if_none_match) = get else {
        s.counters.good.fetch_add(1, Ordering::Relaxed);
        return ocsp_body(der.clone());
    };
    let max_age = i64::from(s.config.ocsp.cache_max_age_seconds)
        .min(entry.next_update - now)
        .max(0);
    let matches = if_none_match
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().as_bytes() == etag.as_ref() || t.trim() == "*")
        });
    let mut r = if matches {
        s.counters.not_modified.fetch_add(1, Ordering::Relaxed);
        let mut r = Response::new(axum::body::Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        s.counters.good.fetch_add(1, Ordering::Relaxed);
        ocsp_body(der.clone())
    };
    let h = r.headers_mut();
    h.reserve(5);
    h.insert(header::CACHE_CONTROL, cache_control_value(max_age));
    h.insert(header::EXPIRES, http_date_value(now + max_age));
    h.insert(header::LAST_MODIFIED, http_date_value(entry.this_update));
    h.insert(
        header::ETAG,
        HeaderValue::from_maybe_shared(etag.clone()).unwrap_or(HeaderValue::from_static("\"\"")),
    );
    r
}

/// The OCSP requests [`crate::tls::serve`] answers before the router (issue 16: relying
/// parties' hot path, served at the rate of a bare server): `POST /ocsp` and `GET /ocsp/…`.
/// The rest goes to the router: HEAD to its OCSP routes, which answer with the same code,
/// other methods to their 405; `GET /ocsp/` (no request) matches no OCSP route.
fn ocsp_fast(state: Shared) -> crate::tls::Fast {
    crate::tls::Fast {
        takes: |method, path| match *method {
            axum::http::Method::POST => path == "/ocsp",
            axum::http::Method::GET => path.len() > "/ocsp/".len() && path.starts_with("/ocsp/"),
            _ => false,
        },
        answer: Arc::new(move |req| {
            let state = state.clone();
            Box::pin(async move { ocsp_http(&state, req).await })
        }),
    }
}

/// The router's OCSP routes (`POST /ocsp`, `GET` and `HEAD /ocsp/{request}`): what
/// [`ocsp_fast`] answers before the router, for the requests it leaves.
async fn ocsp_routed(State(s): State<Shared>, req: axum::extract::Request) -> Response {
    ocsp_http(&s, req).await
}

/// Answers an OCSP request over HTTP: `POST /ocsp` with an `application/ocsp-request` body of
/// at most 16 KiB read within `[http] request_timeout_seconds` (RFC 6960 §A.1), or `GET
/// /ocsp/{base64 of the DER request}` (RFC 6960 §A.1, RFC 5019 §5): the base64 may be
/// URL-encoded and is accepted with or without padding, in the standard or URL-safe alphabet.
async fn ocsp_http<B>(s: &AppState, req: axum::http::Request<B>) -> Response
where
    B: axum::body::HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    /// An OCSP request is a few hundred bytes.
    const BODY_LIMIT: usize = 16 * 1024;
    let (parts, body) = req.into_parts();
    if parts.method == axum::http::Method::POST {
        let limit = crate::tls::Limits::from_config(&s.config.http).request;
        let mut read = std::pin::pin!(small_body(body, BODY_LIMIT));
        // A body that came with its head needs no timer: one poll first, the clock only if
        // the body is still on its way.
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(read.as_mut(), cx))
        });
        let read = match first.await {
            std::task::Poll::Ready(r) => Ok(r),
            std::task::Poll::Pending => tokio::time::timeout(limit, read).await,
        };
        return match read {
            Ok(Ok(body)) => answer(s, &body, None),
            Ok(Err(SmallBody::TooLarge)) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "an OCSP request is at most 16 KiB\n",
            )
                .into_response(),
            Ok(Err(SmallBody::Broken)) => (
                StatusCode::BAD_REQUEST,
                "the request body could not be read\n",
            )
                .into_response(),
            Err(_) => (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
                "the request took too long\n",
            )
                .into_response(),
        };
    }
    let Some(encoded) = parts.uri.path().strip_prefix("/ocsp/") else {
        return not_found();
    };
    let Ok(request) = percent_encoding::percent_decode_str(encoded).decode_utf8() else {
        return (StatusCode::BAD_REQUEST, "the request path is not UTF-8\n").into_response();
    };
    ocsp_get(s, &request, parts.headers.get(header::IF_NONE_MATCH))
}

/// Why [`small_body`] read no body.
enum SmallBody {
    /// It is over the limit.
    TooLarge,
    /// The connection failed while it was read.
    Broken,
}

/// A request body of at most `limit` bytes. Most are one data frame, returned as it is (no
/// copy); trailers are ignored.
async fn small_body<B>(body: B, limit: usize) -> Result<Bytes, SmallBody>
where
    B: axum::body::HttpBody<Data = Bytes>,
{
    use http_body_util::BodyExt;
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    while let Some(frame) = body.as_mut().frame().await {
        let Ok(data) = frame.map_err(|_| SmallBody::Broken)?.into_data() else {
            continue;
        };
        let had = first.as_ref().map_or(joined.len(), Bytes::len);
        if had + data.len() > limit {
            return Err(SmallBody::TooLarge);
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            earlier => {
                if let Some(earlier) = earlier {
                    joined.extend_from_slice(&earlier);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

/// `GET /ocsp/{base64 of the DER request}`, the base64 already percent-decoded.
fn ocsp_get(s: &AppState, request: &str, if_none_match: Option<&HeaderValue>) -> Response {
    use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: general_purpose::GeneralPurpose =
        general_purpose::GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: general_purpose::GeneralPurpose =
        general_purpose::GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    let trimmed = request.trim();
    match STANDARD
        .decode(trimmed)
        .or_else(|_| URL_SAFE.decode(trimmed))
    {
        Ok(der) => answer(s, &der, Some(if_none_match)),
        Err(_) => {
            s.counters.malformed.fetch_add(1, Ordering::Relaxed);
            let mut r = ocsp_body(Bytes::from_static(ocsp::MALFORMED_REQUEST));
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
    }
}

/// `GET /healthz`: 200 when the database answers, the HSM signs (signer role; checked in the
/// background every [`HSM_CHECK_EVERY`]), the clock is within bounds, every CRL is within its
/// validity and none is behind its revocations, and OCSP is current (synced with the store
/// within the last 10 s, no kept-fresh response within 8 hours of its nextUpdate — TLS BR
/// §4.9.10 — and no change waiting over a minute); 503 otherwise. The body says which part is
/// at fault. Answered from memory: never a database query or an HSM call per request.
async fn healthz(State(s): State<Shared>) -> Response {
    let now = now();
    let mut ok = true;
    let mut crls = serde_json::Map::new();
    // From the last store probe (every PROBE_EVERY), never a query per request.
    let probe = s.probe.read().map(|p| p.clone()).unwrap_or_default();
    let db = match (&probe.error, &probe.write_error) {
        (Some(e), _) => e.clone(),
        (None, _) if now - probe.ok_at > PROBE_STALE => {
            format!("error: no probe for {} s", now - probe.ok_at)
        }
        (None, Some(e)) if probe.write_failures >= 2 => {
            format!("error: the database accepts no writes: {e}")
        }
        (None, _) => "ok".to_string(),
    };
    ok &= db == "ok";
    // From the last background check (every HSM_CHECK_EVERY), never a signature per request.
    let hsm = match s.auth() {
        None => serde_json::json!({ "status": "not used (--no-signer)" }),
        Some(_) => {
            let h = s.hsm.read().map(|h| h.clone()).unwrap_or_default();
            let stale = now - h.checked_at > HSM_CHECK_STALE;
            let good = h.error.is_none() && !stale;
            ok &= good;
            serde_json::json!({
                "status": if good { "ok" } else { "fault" },
                "checked_seconds_ago": now - h.checked_at,
                "error": h.error.or_else(|| stale.then(|| format!("no HSM check for {} s", now - h.checked_at))),
                "fault_seconds": h.fault_since.map(|t| now - t),
            })
        }
    };
    let known = s.crls.read().map(|m| m.clone()).unwrap_or_default();
    let mut root_alarms = Vec::new();
    let mut ids: Vec<CaId> = s.cas.keys().copied().collect();
    ids.sort_by_key(|id| (!id.is_root(), *id));
    for role in ids {
        let state = probe.states.get(&role).copied();
        if state == Some(CaStatus::Pending) {
            // Made by a rollover, not yet issuing: it has nothing to publish until activated.
            crls.insert(role.name(), serde_json::json!({ "state": "pending" }));
            continue;
        }
        if state == Some(CaStatus::Retired) {
            // Its last certificate has expired: its final CRL stands, nothing is due.
            let v = match known.get(&(role, Scope::Full)) {
                Some((number, next_update, _)) => {
                    serde_json::json!({ "state": "retired", "final_number": number, "next_update": next_update })
                }
                None => serde_json::json!({ "state": "retired" }),
            };
            crls.insert(role.name(), v);
            continue;
        }
        let mut v = match known.get(&(role, Scope::Full)) {
            Some((number, next_update, _)) => {
                let fresh = now < *next_update;
                ok &= fresh;
                serde_json::json!({ "number": number, "fresh": fresh, "next_update": next_update })
            }
            None => {
                ok = false;
                serde_json::json!({ "missing": true })
            }
        };
        if role.is_root() {
            // A root's CRL is signed in a key ceremony, never here: warn 30 days before its
            // nextUpdate, and alarm while a CA revocation waits for it (due within 24 hours,
            // TLS BR §4.9.7; the 12-month limit otherwise).
            if let Some((_, next_update, _)) = known.get(&(role, Scope::Full)) {
                let days_left = (next_update - now) / 86_400;
                v["ceremony_due_in_days"] = serde_json::json!(days_left);
                let soon = next_update - now < ROOT_CRL_WARNING;
                v["ceremony_due_soon"] = serde_json::json!(soon);
                if soon {
                    root_alarms.push(format!(
                        "the {} CRL must be signed in a key ceremony within {days_left} days",
                        role.name()
                    ));
                }
            }
            if let Some((_, since)) = probe
                .root_crls_waiting
                .iter()
                .find(|(r, _)| *r == role.role)
            {
                ok = false;
                root_alarms.push(format!(
                    "a CA revocation waits for the {} CRL's key ceremony (due within 24 hours)",
                    role.name()
                ));
                v["revocation_waits_for_ceremony"] = serde_json::json!({
                    "since_seconds": now - since,
                    "overdue": now - since > 86_400,
                });
            }
        } else {
            // Every partition that certificates may name must be served and current.
            let expected = known
                .keys()
                .filter_map(|(r, scope)| match scope {
                    Scope::Partition(k) if *r == role => Some(k + 1),
                    _ => None,
                })
                .fold(s.config.crl.partitions_of(role.role), u16::max);
            let mut stale = Vec::new();
            for k in 0..expected {
                match known.get(&(role, Scope::Partition(k))) {
                    Some((_, next_update, _)) if now < *next_update => {}
                    _ => stale.push(k),
                }
            }
            ok &= stale.is_empty();
            v["partitions"] = serde_json::json!(expected);
            v["partitions_missing_or_stale"] = serde_json::json!(stale);
            // A revocation not yet in the CRL that names its certificate, past the time the
            // publisher should have taken (issue 13, defect 4): what a relying party checking
            // that CRL would be told is false.
            let mut behind = Vec::new();
            for ((r, scope), since) in &probe.crls_behind {
                if *r == role {
                    behind.push(
                        serde_json::json!({ "crl": scope.file_name(role), "seconds": now - since }),
                    );
                    ok &= now - since <= s.crl_behind_limit;
                }
            }
            v["behind_revocations"] = serde_json::json!(behind);
        }
        if let Some(state) = state {
            v["state"] = serde_json::json!(state.as_str());
        }
        crls.insert(role.name(), v);
    }
    // CRL publication failing (the HSM, the disk, the database, the clock), even with no
    // revocation waiting: a fault once it has lasted as long as a revocation may wait.
    let publication = {
        let o = s
            .crl_outages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut failing = Vec::new();
        for (crl, outage) in o.iter() {
            if let Some(since) = outage.failing_since {
                failing.push(serde_json::json!({ "crl": crl, "seconds": now - since, "error": outage.last_error }));
                ok &= now - since <= s.crl_behind_limit;
            }
        }
        failing.sort_by_key(|f| f["crl"].as_str().map(String::from));
        serde_json::json!({ "failing": failing })
    };
    // The CRL files in the data directory, for a web server in front (a full disk).
    let crl_files = match s.auth() {
        Some(auth) => {
            let behind = auth.crl_files_behind();
            ok &= behind.is_empty();
            serde_json::json!({ "status": if behind.is_empty() { "ok" } else { "fault" }, "behind": behind })
        }
        None => serde_json::json!({ "status": "not written (--no-signer)" }),
    };
    // The audit witness, when one is configured: a missing or cut-short witness is a fault.
    let witness = match s.auth() {
        Some(auth)
            if auth.config().audit_witness().is_some()
                || auth.config().audit.witness_url.is_some() =>
        {
            let problem = auth.witness_problem();
            ok &= problem.is_none();
            serde_json::json!({ "status": if problem.is_some() { "fault" } else { "ok" }, "error": problem })
        }
        _ => serde_json::json!({ "status": "not configured" }),
    };
    let sync_age = now - s.ocsp.synced_at();
    // Responses still refreshed (certificate not expired for over a week) that are within 8
    // hours of nextUpdate mean the signer stalled (TLS BR §4.9.10).
    // A status change waiting more than a minute for its response means the signer is stuck
    // (changes are meant to be answered within a second).
    let (queue, overdue, waiting) = match probe.backlog {
        Some(b) => {
            let waiting = b.oldest_queued.map_or(0, |q| now - q);
            (
                serde_json::json!({ "pending": b.pending, "oldest_this_update_age_seconds": b.oldest_this_update.map(|t| now - t), "oldest_change_waiting_seconds": waiting }),
                b.overdue,
                waiting,
            )
        }
        _ => (serde_json::json!({ "error": "database" }), 0, 0),
    };
    let ocsp_ok = sync_age <= 10 && overdue == 0 && waiting <= 60;
    ok &= ocsp_ok;
    // Certificate Problem Reports (TLS BR §4.9.5): an alarm for officers as a deadline nears or
    // passes. It does not fail the health check: a late answer to a report is no reason to
    // take status publication out of service.
    let (reports, alarms) = match probe.reports {
        Some(r) => {
            let mut alarms = Vec::new();
            for (n, what) in [
                (
                    r.preliminary_overdue,
                    "problem report: preliminary report overdue",
                ),
                (
                    r.revocation_overdue,
                    "problem report: revocation decision overdue",
                ),
                (
                    r.preliminary_nearing,
                    "problem report: preliminary report due within 6 h",
                ),
                (
                    r.revocation_nearing,
                    "problem report: revocation decision due within 6 h",
                ),
            ] {
                if n > 0 {
                    alarms.push(format!("{what} ({n})"));
                }
            }
            let status = if r.preliminary_overdue + r.revocation_overdue > 0 {
                "overdue"
            } else if r.preliminary_nearing + r.revocation_nearing > 0 {
                "nearing"
            } else {
                "ok"
            };
            (
                serde_json::json!({ "status": status, "open": r.open, "preliminary_nearing": r.preliminary_nearing, "preliminary_overdue": r.preliminary_overdue, "revocation_nearing": r.revocation_nearing, "revocation_overdue": r.revocation_overdue }),
                alarms,
            )
        }
        None => (
            serde_json::json!({ "error": "the clocks could not be read" }),
            vec!["problem report clocks unknown".to_string()],
        ),
    };
    // A clock off its reference signs nothing (and what it would sign relying parties reject):
    // a fault. Without a reference it is reported unchecked.
    let clock = match s.auth().and_then(|a| a.clock().status()) {
        Some(c) => {
            ok &= c.fault.is_none();
            serde_json::json!({
                "status": if c.fault.is_some() { "fault" } else if c.reference == "none" { "unchecked" } else { "ok" },
                "reference": c.reference,
                "skew_seconds": c.skew_ms.map(|m| m as f64 / 1000.0),
                "max_skew_seconds": c.max_skew_ms as f64 / 1000.0,
                "error": c.fault,
            })
        }
        None => serde_json::json!({ "status": "unchecked", "reference": "none" }),
    };
    // The personal-data keys (issue 14, custody): without them OCSP, CRLs, sign-in and
    // revocation go on, so it is not a fault, but counter functions answer 503: an alarm.
    let mut alarms = alarms;
    alarms.extend(root_alarms);
    let personal_data = match s.auth() {
        Some(auth) => match auth.personal_data_problem() {
            None => serde_json::json!({ "status": "activated" }),
            Some(why) => {
                alarms.push("personal-data keys not activated".to_string());
                serde_json::json!({ "status": "not activated", "reason": why })
            }
        },
        None => serde_json::json!({ "status": "not used (--no-signer)" }),
    };
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "fault" },
        "clock": clock,
        "personal_data": personal_data,
        "role": role(&s),
        "database": db,
        "hsm": hsm,
        "crl": crls,
        "crl_files": crl_files,
        "crl_publication": publication,
        "audit_witness": witness,
        "ocsp": {
            "status": if ocsp_ok { "ok" } else { "fault" },
            "responses": s.ocsp.len(),
            "sync_age_seconds": sync_age,
            "overdue_within_8h": overdue,
            "queue": queue,
        },
        "problem_reports": reports,
        "alarms": alarms,
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus text format 0.0.4.
async fn metrics(State(s): State<Shared>) -> Response {
    let mut out = String::new();
    let now = now();
    out.push_str(
        "# HELP ecert_certificates Serials by lifecycle state.\n# TYPE ecert_certificates gauge\n",
    );
    // From the last store probe (every PROBE_EVERY), never a query per request.
    let probe = s.probe.read().map(|p| p.clone()).unwrap_or_default();
    for c in &probe.counts {
        out.push_str(&format!(
            "ecert_certificates{{state=\"{}\"}} {}\n",
            c.state, c.count
        ));
    }
    // Each metric family is one group (Prometheus text format 0.0.4).
    let mut crls = Vec::new();
    // A retired CA's final CRL ages for ever by design: not a metric to alert on.
    for (role, h) in probe
        .heads
        .iter()
        .filter(|(r, _)| probe.states.get(r) != Some(&CaStatus::Retired))
    {
        let crl = match h.scope {
            Scope::Full => "full".to_string(),
            Scope::Partition(k) => format!("p{k}"),
        };
        crls.push((role.name(), crl, h.number, now - h.this_update));
    }
    out.push_str(
        "# HELP ecert_crl_number CRLNumber of the newest CRL.\n# TYPE ecert_crl_number gauge\n",
    );
    for (ca, crl, number, _) in &crls {
        out.push_str(&format!(
            "ecert_crl_number{{ca=\"{ca}\",crl=\"{crl}\"}} {number}\n"
        ));
    }
    out.push_str("# HELP ecert_crl_age_seconds Seconds since the newest CRL's thisUpdate.\n# TYPE ecert_crl_age_seconds gauge\n");
    for (ca, crl, _, age) in &crls {
        out.push_str(&format!(
            "ecert_crl_age_seconds{{ca=\"{ca}\",crl=\"{crl}\"}} {age}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP ecert_ocsp_responses Serials with a pre-signed OCSP response in memory.\n# TYPE ecert_ocsp_responses gauge\necert_ocsp_responses {}\n",
        s.ocsp.len()
    ));
    out.push_str(&format!(
        "# HELP ecert_ocsp_sync_age_seconds Seconds since OCSP responses were last read from the database.\n# TYPE ecert_ocsp_sync_age_seconds gauge\necert_ocsp_sync_age_seconds {}\n",
        now - s.ocsp.synced_at()
    ));
    out.push_str(&format!(
        "# HELP ecert_store_probes_total Reads of what /healthz and /metrics report (every {} s, not per request).\n# TYPE ecert_store_probes_total counter\necert_store_probes_total {}\n",
        PROBE_EVERY.as_secs(),
        s.probes.load(Ordering::Relaxed)
    ));
    out.push_str(&format!(
        "# HELP ecert_store_probe_age_seconds Seconds since the last store probe that reached the database (what the other store metrics show).\n# TYPE ecert_store_probe_age_seconds gauge\necert_store_probe_age_seconds {}\n",
        now - probe.ok_at
    ));
    out.push_str(&format!(
        "# HELP ecert_store_up Whether the last store probe reached the database.\n# TYPE ecert_store_up gauge\necert_store_up {}\n",
        u8::from(probe.error.is_none() && probe.ok_at > 0)
    ));
    if let Some(c) = s.auth().and_then(|a| a.clock().status()) {
        if let Some(skew) = c.skew_ms {
            out.push_str(&format!(
                "# HELP ecert_clock_skew_seconds This host's clock minus the reference's (the database server's).\n# TYPE ecert_clock_skew_seconds gauge\necert_clock_skew_seconds {}\n",
                skew as f64 / 1000.0
            ));
        }
        out.push_str(&format!(
            "# HELP ecert_clock_ok Whether the signer's clock may be used to sign (1) or is off or unchecked against its reference (0).\n# TYPE ecert_clock_ok gauge\necert_clock_ok {}\n",
            u8::from(c.fault.is_none())
        ));
    }
    if s.auth().is_some() {
        let h = s.hsm.read().map(|h| h.clone()).unwrap_or_default();
        let good = h.error.is_none() && now - h.checked_at <= HSM_CHECK_STALE;
        out.push_str(&format!(
            "# HELP ecert_hsm_ok Whether the last HSM check (one signature, verified) succeeded.\n# TYPE ecert_hsm_ok gauge\necert_hsm_ok {}\n",
            u8::from(good)
        ));
    }
    if let Some(auth) = s.auth() {
        out.push_str(&format!(
            "# HELP ecert_personal_data_activated Whether the personal-data keys (the pii token) are open in this process.\n# TYPE ecert_personal_data_activated gauge\necert_personal_data_activated {}\n",
            u8::from(auth.personal_data_problem().is_none())
        ));
    }
    if let Some(r) = probe.reports {
        out.push_str(&format!(
            "# HELP ecert_problem_reports_open Certificate Problem Reports not yet decided.\n# TYPE ecert_problem_reports_open gauge\necert_problem_reports_open {}\n",
            r.open
        ));
        out.push_str("# HELP ecert_problem_report_deadlines Open problem reports' deadlines (TLS BR 4.9.5) within 6 hours (nearing) or past (overdue).\n# TYPE ecert_problem_report_deadlines gauge\n");
        for (deadline, state, n) in [
            ("preliminary", "nearing", r.preliminary_nearing),
            ("preliminary", "overdue", r.preliminary_overdue),
            ("revocation", "nearing", r.revocation_nearing),
            ("revocation", "overdue", r.revocation_overdue),
        ] {
            out.push_str(&format!(
                "ecert_problem_report_deadlines{{deadline=\"{deadline}\",state=\"{state}\"}} {n}\n"
            ));
        }
    }
    out.push_str("# HELP ecert_ocsp_requests_total OCSP requests answered, by result.\n# TYPE ecert_ocsp_requests_total counter\n");
    for (result, c) in [
        ("successful", &s.counters.good),
        ("not_modified", &s.counters.not_modified),
        ("malformed_request", &s.counters.malformed),
        ("unauthorized", &s.counters.unauthorized),
    ] {
        out.push_str(&format!(
            "ecert_ocsp_requests_total{{result=\"{result}\"}} {}\n",
            c.load(Ordering::Relaxed)
        ));
    }
    if let Some(q) = &probe.queues {
        out.push_str(
            "# HELP ecert_applications Applications by state.\n# TYPE ecert_applications gauge\n",
        );
        for (state, n) in &q.applications {
            // States are the RA's fixed vocabulary; anything else is not printed.
            if state.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                out.push_str(&format!("ecert_applications{{state=\"{state}\"}} {n}\n"));
            }
        }
        out.push_str(&format!(
            "# HELP ecert_queue_length Work waiting, by queue.\n# TYPE ecert_queue_length gauge\n\
             ecert_queue_length{{queue=\"ocsp\"}} {}\necert_queue_length{{queue=\"batch_rows\"}} {}\necert_queue_length{{queue=\"ldap\"}} {}\n",
            q.ocsp_pending, q.batch_rows_queued, q.ldap_pending
        ));
    }
    if let Some(auth) = s.auth() {
        out.push_str(&format!(
            "# HELP ecert_group_commit_retries_total Batches of issuance changes refused as a whole and applied one by one.\n\
             # TYPE ecert_group_commit_retries_total counter\necert_group_commit_retries_total {}\n",
            auth.group_commit_retries()
        ));
    }
    crate::metrics::render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Reads what `/healthz` and `/metrics` report (certificate counts, the OCSP backlog, CRL
/// heads) into [`AppState::probe`], each read bounded by [`DB_PROBE`].
async fn probe(s: &AppState) {
    s.probes.fetch_add(1, Ordering::Relaxed);
    // The signer's clock against its reference (crate::clock), for /healthz and /metrics and
    // so that signing resumes as soon as the clock is right.
    if let Some(auth) = s.auth() {
        auth.clock().measure(auth.store()).await;
    }
    let now = now();
    let read = async {
        let counts = s.repo.certificate_counts().await?;
        let backlog = s.repo.ocsp_backlog(now, 8 * 3600).await?;
        let mut heads = Vec::new();
        let states: HashMap<CaId, CaStatus> = s
            .repo
            .cas()
            .await?
            .into_iter()
            .map(|c| (c.id, c.state))
            .collect();
        for role in s.cas.keys().copied() {
            heads.extend(s.repo.crl_heads(role).await?.into_iter().map(|h| (role, h)));
        }
        // Problem reports are an officers' alarm: a failure to count them is reported as
        // such and does not make the database (and so the health check) look down.
        let mut versions = Vec::new();
        for role in s.cas.keys().copied().filter(|id| !id.is_root()) {
            for (scope, v) in s.repo.status_versions(role).await? {
                versions.push((role, scope, v));
            }
        }
        let reports = s.repo.problem_report_clocks(now).await.map_err(|e| {
            tracing::warn!(error = %e, "could not count the problem reports' clocks");
        });
        let roots_waiting = s.repo.root_crls_waiting().await?;
        Ok::<_, ca_core::Error>((
            counts,
            backlog,
            heads,
            reports.ok(),
            versions,
            roots_waiting,
            states,
        ))
    };
    // The pool waits up to 30 s for a connection; the probe gives up sooner.
    let result = tokio::time::timeout(DB_PROBE, read).await;
    let queues = match tokio::time::timeout(DB_PROBE, s.repo.queue_counts()).await {
        Ok(Ok(q)) => Some(q),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not count the queues");
            None
        }
        Err(_) => None,
    };
    // Answering reads is not enough: a database that accepts no writes (a full disk, a lost
    // privilege) revokes nothing and issues nothing. The signer writes its row; a
    // `--no-signer` mirror may sit on a read replica and does not. One slow write (another
    // transaction holding SQLite's write lock) is not a fault: two in a row are.
    let wrote = match s.auth().is_some() {
        false => None,
        true => Some(
            match tokio::time::timeout(DB_PROBE, s.repo.write_health_probe(&s.instance, now)).await
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no write within {} s", DB_PROBE.as_secs())),
            },
        ),
    };
    let Ok(mut p) = s.probe.write() else { return };
    match wrote {
        Some(Err(e)) => {
            p.write_failures += 1;
            p.write_error = Some(e);
        }
        _ => {
            p.write_failures = 0;
            p.write_error = None;
        }
    }
    match result {
        Ok(Ok((counts, backlog, heads, reports, versions, roots_waiting, states))) => {
            p.root_crls_waiting = roots_waiting;
            p.states = states;
            // A scope whose revocations are newer than its newest CRL was built from is
            // behind; remember since when, forget once a CRL caught up.
            let mut behind = HashMap::new();
            for (role, scope, v) in versions {
                let built = heads
                    .iter()
                    .find(|(r, h)| *r == role && h.scope == scope)
                    .map_or(-1, |(_, h)| h.status_version);
                if v > built {
                    let since = p.crls_behind.get(&(role, scope)).copied().unwrap_or(now);
                    behind.insert((role, scope), since);
                }
            }
            p.crls_behind = behind;
            p.ok_at = now;
            p.error = None;
            p.queues = queues;
            p.counts = counts;
            p.backlog = Some(backlog);
            p.heads = heads;
            p.reports = reports;
        }
        Ok(Err(e)) => p.error = Some(format!("error: {e}")),
        Err(_) => p.error = Some(format!("error: no answer within {} s", DB_PROBE.as_secs())),
    }
}

/// Every instance: [`probe`] every [`PROBE_EVERY`].
async fn keep_probing(s: Shared) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        probe(&s).await;
    }
}

/// One HSM check into [`AppState::hsm`], bounded by [`HSM_CHECK_TIMEOUT`]. A hung PKCS#11 call
/// cannot be cancelled: [`Authority::hsm_check`] runs one check at a time and answers at once
/// while an earlier one is stuck, so hung checks never pile up threads.
async fn check_hsm(s: &AppState) {
    let Some(auth) = s.auth() else { return };
    let result = match tokio::time::timeout(HSM_CHECK_TIMEOUT, auth.hsm_check()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "no signature within {} s",
            HSM_CHECK_TIMEOUT.as_secs()
        )),
    };
    let now = now();
    if let Ok(mut h) = s.hsm.write() {
        h.checked_at = now;
        match result {
            Ok(()) => {
                h.error = None;
                h.fault_since = None;
            }
            Err(e) => {
                h.fault_since.get_or_insert(now);
                h.error = Some(e);
            }
        }
    }
}

/// The signer: [`check_hsm`] every [`HSM_CHECK_EVERY`]. While the token is lost these checks
/// also drive its recovery (the HSM layer initialises the module again, with backoff).
async fn keep_checking_hsm(s: Shared) {
    let mut tick = tokio::time::interval(HSM_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        check_hsm(&s).await;
    }
}

/// Reads new OCSP responses and any newer CRL into memory.
async fn sync(s: &AppState) -> ca_core::error::Result<()> {
    s.repo.sync_ocsp(&s.ocsp).await?;
    for role in s.cas.keys().copied() {
        for head in s.repo.crl_heads(role).await? {
            let key = (role, head.scope);
            let have = s.crls.read().ok().and_then(|m| m.get(&key).map(|c| c.0));
            if have == Some(head.number) {
                continue;
            }
            if let Some(crl) = s.repo.latest_crl(role, head.scope).await? {
                if let Ok(mut m) = s.crls.write() {
                    m.insert(key, (crl.number, head.next_update, Bytes::from(crl.der)));
                }
            }
        }
    }
    Ok(())
}

/// Every instance: follows the store. Errors (database down) are logged once per outage; the
/// answers in memory keep being served.
async fn follow_store(s: Shared) {
    let mut tick = tokio::time::interval(SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Consecutive failures: while the database is down, the next attempt waits longer (up to
    // SYNC_BACKOFF_MAX), so a recovering server is not hammered by every instance.
    let mut failures: u32 = 0;
    loop {
        tick.tick().await;
        match sync(&s).await {
            Ok(()) if failures > 0 => {
                tracing::info!("database reachable again");
                failures = 0;
            }
            Ok(()) => {}
            Err(e) => {
                if failures == 0 {
                    tracing::error!(error = %e, "cannot read OCSP responses and CRLs; serving from memory");
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }
}

/// The longest wait between two attempts to read a database that is down.
const SYNC_BACKOFF_MAX: Duration = Duration::from_secs(4);

/// The extra wait after `failures` consecutive failures: doubling from the sync interval, at
/// most [`SYNC_BACKOFF_MAX`].
fn backoff(failures: u32) -> Duration {
    SYNC_EVERY
        .saturating_mul(1u32 << failures.min(8))
        .min(SYNC_BACKOFF_MAX)
}

/// Signs what is due ([`Authority::ocsp_due`]: queued changes first, then responses due for a
/// refresh). Returns true when a full batch was done (more may be waiting). Failures are
/// logged through `outage` (once, then once a minute).
async fn sign_ocsp_due(auth: &Authority, outage: &mut Outage) -> bool {
    let due = match auth.ocsp_due(OCSP_BATCH).await {
        Ok(d) => d,
        Err(e) => {
            outage.failed("OCSP signing (reading what is due)", &e);
            return false;
        }
    };
    if due.is_empty() {
        outage.ok("OCSP signing");
        return false;
    }
    let full = due.len() as i64 >= OCSP_BATCH;
    match auth.sign_ocsp(due).await {
        Ok(n) if n > 0 => {
            outage.ok("OCSP signing");
            tracing::debug!(responses = n, "OCSP responses signed");
            full
        }
        Ok(_) => false,
        Err(e) => {
            outage.failed("OCSP signing", &e);
            false
        }
    }
}

/// Signs until nothing is due (`ecert ocsp sign`). Returns how many serials were signed.
pub async fn sign_all_due(auth: &Authority) -> ca_core::error::Result<usize> {
    let mut total = 0;
    loop {
        let due = auth.ocsp_due(OCSP_BATCH).await?;
        if due.is_empty() {
            return Ok(total);
        }
        match auth.sign_ocsp(due).await? {
            // Nothing could be signed (no responder for their CA): stop rather than spin.
            0 => return Ok(total),
            n => total += n,
        }
    }
}

/// The signer: keeps every issued serial's OCSP response current.
async fn ocsp_signer(s: Shared) {
    let Some(auth) = s.auth() else { return };
    let mut outage = Outage::default();
    loop {
        if !sign_ocsp_due(auth, &mut outage).await {
            // While signing keeps failing (a full disk, the database, the HSM), wait longer
            // between passes (up to 2 s) rather than sign batches that cannot be stored.
            let pause = OCSP_SIGN_EVERY
                .saturating_mul(1u32 << outage.failures.min(4))
                .min(Duration::from_secs(2));
            tokio::time::sleep(pause).await;
        }
    }
}

/// Publishes each CRL (full or partition) that is due ([`Authority::crls_due`]: never
/// published, older than `interval`, its status changed since, or its nextUpdate less than a day
/// away; the root's only when missing or near its nextUpdate).
async fn publish_due(
    auth: &Authority,
    interval: i64,
    outages: &std::sync::Mutex<HashMap<String, Outage>>,
) {
    let note = |key: &str, what: &str, result: Result<(), &ca_core::Error>| {
        let mut o = outages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outage = o.entry(key.to_string()).or_default();
        match result {
            Ok(()) => outage.ok(what),
            Err(e) => outage.failed(what, e),
        }
    };
    let now = now();
    // Roots' CRLs are signed in key ceremonies (the service never opens a root key).
    for role in auth.publishing_cas() {
        let due = match auth.crls_due(role, now, interval).await {
            Ok(d) => d,
            Err(e) => {
                note("schedule", "CRL schedule", Err(&e));
                continue;
            }
        };
        note("schedule", "CRL schedule", Ok(()));
        for scope in due {
            let file = scope.file_name(role);
            let what = format!("CRL publication ({file})");
            match auth.publish_crl(role, scope, "system:crl-publisher").await {
                Ok(_) => note(&file, &what, Ok(())),
                Err(e) => note(&file, &what, Err(&e)),
            }
        }
    }
    // A superseded CA whose last certificate has expired publishes its final CRLs and retires.
    match auth.retire_finished(now, "system:crl-publisher").await {
        Ok(_) => note("retirement", "CA retirement", Ok(())),
        Err(e) => note("retirement", "CA retirement", Err(&e)),
    }
}

async fn crl_duties(s: Shared, interval: u64, watch: u64) {
    let Some(auth) = s.auth() else { return };
    let mut tick = tokio::time::interval(Duration::from_secs(watch.max(1)));
    let mut last_purge = 0;
    let mut checkpoint = Outage::default();
    let mut files = Outage::default();
    loop {
        tick.tick().await;
        publish_due(auth, interval as i64, &s.crl_outages).await;
        if !auth.crl_files_behind().is_empty() {
            match auth.rewrite_crl_files().await {
                Ok(_) => files.ok("writing CRL files"),
                Err(e) => files.failed("writing CRL files", &e),
            }
        }
        // Retention of personal data (docs/RA.md), hourly.
        if now() - last_purge >= 3600 {
            last_purge = now();
            match ca_core::ra::purge(auth, now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    applications = n,
                    "personal data purged after the retention period"
                ),
                Err(e) => tracing::error!(error = %e, "retention purge failed"),
            }
            match auth.prune_audit(now()).await {
                Ok(None) => {}
                Ok(Some((to, n))) => tracing::info!(
                    records = n,
                    pruned_to = to,
                    "audit records purged after the retention period"
                ),
                Err(e) => tracing::error!(error = %e, "audit retention purge failed"),
            }
        }
        match auth.checkpoint().await {
            Ok(_) => checkpoint.ok("audit checkpoint"),
            Err(e) => checkpoint.failed("audit checkpoint", &e),
        }
    }
}

/// The signer: mails the expiry reminders due (docs/RA.md "Expiry reminders"), at start and
/// every 15 minutes. Each is claimed in the database before it is sent, so several instances
/// or a restart never send one twice.
async fn expiry_reminders(ra: Arc<crate::ra::RaState>) {
    let mut outage = Outage::default();
    let mut tick = tokio::time::interval(Duration::from_secs(15 * 60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match crate::ra::send_reminders(&ra, now()).await {
            Ok(n) => {
                outage.ok("expiry reminders");
                if n > 0 {
                    tracing::info!(sent = n, "expiry reminders mailed");
                }
            }
            Err(e) => outage.failed("expiry reminders", &e),
        }
    }
}

/// The signer: keeps the LDAP directory as the database says it should be (docs/DIRECTORY.md
/// "LDAP"): every 2 seconds, the entries queued by status changes, CRLs and holders' choices.
/// A directory that cannot be reached is retried with a delay doubling from 2 seconds to a
/// minute; the queue stays in the database meanwhile. With no `[ldap] url` nothing is
/// published, and the queue (one row per entry, however many changes) waits: withdrawals and
/// revocations made meanwhile reach the directory once it is configured again.
async fn ldap_publisher(store: ca_core::store::Store, publisher: Option<ca_core::ldap::Publisher>) {
    let Some(publisher) = publisher else {
        return;
    };
    tracing::info!(directory = %publisher.target(), "publishing to LDAP");
    let mut outage = Outage::default();
    let idle = Duration::from_secs(2);
    let mut delay = idle;
    loop {
        match publisher.pass(&store, now()).await {
            Ok(pass) => {
                outage.ok("LDAP publishing");
                delay = idle;
                if pass.written + pass.refused > 0 {
                    tracing::debug!(
                        written = pass.written,
                        refused = pass.refused,
                        "LDAP entries published"
                    );
                }
                // More due: go on at once, unless nothing could be written (then wait).
                if pass.more && pass.written > 0 {
                    continue;
                }
            }
            Err(e) => {
                outage.failed("LDAP publishing", &e);
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
        tokio::time::sleep(delay).await;
    }
}

/// The signer: issues the queued rows of approved batches (docs/BULK.md), after resolving the
/// rows a stopped process left `issuing`. A store or HSM outage is logged once and retried.
/// How long a stop waits for the batch issuer's pass to end.
const BATCH_STOP_WAIT: Duration = Duration::from_secs(20);

async fn batch_issuer(auth: Arc<Authority>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut outage = Outage::default();
    match ca_core::ra::bulk::resume_batches(auth.store()).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            rows = n,
            "resolved batch rows a stopped process left issuing"
        ),
        Err(e) => tracing::error!(error = %e, "could not resolve the batch rows left issuing"),
    }
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        loop {
            // Between chunks only: a chunk issues whole rows.
            if *stop.borrow() {
                return;
            }
            let stopping = stop.clone();
            match ca_core::ra::bulk::issue_queued_until(&auth, 2_000, || *stopping.borrow()).await {
                Ok(0) => break,
                Ok(n) => {
                    outage.ok("batch issuance");
                    tracing::info!(issued = n, "batch rows issued");
                }
                Err(e) => {
                    outage.failed("batch issuance", &e);
                    // What a failed pass left `issuing` is resolved before the next one.
                    let _ = ca_core::ra::bulk::resume_batches(auth.store()).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that arrives in the given frames.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }

    /// Issue 16: the OCSP POST body is read without a copy when it is one frame, joined when
    /// it is several, and refused past the limit however it is split.
    #[tokio::test]
    async fn a_small_body_is_read_whole_and_refused_past_its_limit() {
        let frames =
            |parts: &[&'static [u8]]| Frames(parts.iter().map(|p| Bytes::from_static(p)).collect());
        let one = Bytes::from_static(b"0123456789");
        let read = small_body(Frames([one.clone()].into()), 10)
            .await
            .ok()
            .unwrap();
        assert_eq!(read.as_ptr(), one.as_ptr(), "one frame is not copied");
        let read = small_body(frames(&[b"012", b"", b"3456", b"789"]), 10)
            .await
            .ok()
            .unwrap();
        assert_eq!(read.as_ref(), b"0123456789");
        assert!(small_body(frames(&[]), 10).await.ok().unwrap().is_empty());
        for split in [&[&b"0123456789a"[..]][..], &[b"01234", b"56789", b"a"]] {
            let body = Frames(split.iter().map(|p| Bytes::copy_from_slice(p)).collect());
            assert!(matches!(
                small_body(body, 10).await,
                Err(SmallBody::TooLarge)
            ));
        }
    }

    #[test]
    fn sync_backs_off_to_a_bound() {
        assert_eq!(backoff(1), SYNC_EVERY * 2);
        assert_eq!(backoff(2), SYNC_EVERY * 4);
        assert_eq!(backoff(5), SYNC_BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), SYNC_BACKOFF_MAX);
    }

    #[test]
    fn http_dates_are_imf_fixdate() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
