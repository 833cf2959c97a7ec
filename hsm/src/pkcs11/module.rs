//! One loaded PKCS#11 module per process, and its re-initialisation when a token is lost.
//!
//! SoftHSM2 — like many hardware modules after a device reset — learns which tokens exist only
//! in `C_Initialize`: a token that went away and came back stays invisible to a process until
//! the module is finalised and initialised again. So when a token cannot be reached even after
//! new sessions and a new login, [`Module::reinitialize`] quiesces every call into the module
//! (each holds [`Module::live`], a read lock; re-initialising takes it for writing), calls
//! `C_Finalize` and `C_Initialize` (one at a time: racing `C_Initialize` calls crashed
//! SoftHSM2), and starts a new *epoch*. Every session and object handle of an earlier epoch is
//! dead; [`OwnedSession`] never closes one (its handle number may name a new session by then),
//! and tokens reconnect and find their keys again by label, checked against the public key they
//! knew.
//!
//! Re-initialisation backs off (0.5 s doubling to [`REINIT_MAX_DELAY`]); while it waits, token
//! operations fail at once with [`Error::TokenUnavailable`] instead of sleeping. The outage is
//! logged when it starts, at most once a minute while it lasts, and when it ends.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use super::{canonical, lock};
use crate::Error;

/// The first wait between two re-initialisations of a module whose token is missing.
const REINIT_FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest wait between two re-initialisations: a token that comes back is in use again
/// within this long.
pub(crate) const REINIT_MAX_DELAY: Duration = Duration::from_secs(4);
/// While a token stays lost, a reminder is logged at most this often.
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(60);

/// What every call into the module needs: the context and the epoch it belongs to.
pub(crate) struct Live {
    pub(crate) ctx: Pkcs11,
    /// Bumped by each re-initialisation; sessions of an earlier epoch are dead.
    pub(crate) epoch: u64,
}

/// A loaded and initialised PKCS#11 module.
pub(crate) struct Module {
    path: PathBuf,
    /// Read-held across every call into the module; write-held only to re-initialise it.
    live: RwLock<Live>,
    /// Lock order: `recovery` before `live`; never take `recovery` while holding `live`.
    recovery: Mutex<Recovery>,
    /// Whether an outage is in progress (the fast path of [`Module::note_ok`]).
    down: AtomicBool,
}

#[derive(Default)]
struct Recovery {
    /// The labels of the tokens lost (a healthy token on the same module does not end the
    /// outage of another).
    lost: HashSet<String>,
    down_since: Option<Instant>,
    /// No re-initialisation before this.
    next_try: Option<Instant>,
    delay: Duration,
    reinits: u64,
    last_log: Option<Instant>,
}

/// Re-initialisations of every module since the process started (for metrics and tests).
static REINITIALISATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times a PKCS#11 module was finalised and initialised again in this process.
pub fn reinitialisations() -> u64 {
    REINITIALISATIONS.load(Ordering::Relaxed)
}

/// The process-wide module at `path`: loaded and `C_Initialize`d on first use.
pub(crate) fn module(path: &Path) -> Result<Arc<Module>, Error> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    let key = canonical(path);
    // The lock is held across load and initialise: two racing C_Initialize calls on one module
    // have crashed SoftHSM2.
    let mut modules = lock(MODULES.get_or_init(Default::default));
    if let Some(m) = modules.get(&key) {
        return Ok(m.clone());
    }
    let module_error = |detail: String| Error::Module {
        module: path.display().to_string(),
        detail,
    };
    let ctx = Pkcs11::new(&key).map_err(|e| module_error(e.to_string()))?;
    match initialize(&ctx) {
        // Someone else in this process (another library) initialised it already: fine.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(module_error(e.to_string())),
    }
    tracing::debug!("PKCS#11 module loaded and initialised");
    let m = Arc::new(Module {
        path: key.clone(),
        live: RwLock::new(Live { ctx, epoch: 0 }),
        recovery: Mutex::new(Recovery::default()),
        down: AtomicBool::new(false),
    });
    modules.insert(key, m.clone());
    Ok(m)
}

fn initialize(ctx: &Pkcs11) -> Result<(), CkError> {
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
}

impl Module {
    /// The context, held for the duration of one operation (re-initialisation waits for it).
    pub(crate) fn live(&self) -> RwLockReadGuard<'_, Live> {
        // A panic while holding the lock leaves nothing half-updated: the epoch is bumped
        // before C_Finalize, so at worst one extra reconnect happens.
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn epoch(&self) -> u64 {
        self.live().epoch
    }

    /// How long until the module is re-initialised again, while the token labelled `label` is
    /// lost and the backoff runs: its operations fail at once meanwhile, without a reconnect.
    pub(crate) fn backoff_remaining(&self, label: &str) -> Option<Duration> {
        if !self.down.load(Ordering::Relaxed) {
            return None;
        }
        let r = lock(&self.recovery);
        if !r.lost.contains(label) {
            return None;
        }
        r.next_try
            .and_then(|at| at.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// `C_Finalize` then `C_Initialize` because the token labelled `label` cannot be reached,
    /// unless another thread did so since `seen_epoch` or the backoff says wait (then the
    /// answer is a [`Error::TokenUnavailable`] detail, at once). `why` is the failure that led
    /// here, for the log.
    pub(crate) fn reinitialize(
        &self,
        seen_epoch: u64,
        label: &str,
        why: &str,
    ) -> Result<(), String> {
        let mut r = lock(&self.recovery);
        let now = Instant::now();
        if r.lost.insert(label.to_string()) {
            if r.down_since.is_none() {
                r.down_since = Some(now);
                r.delay = REINIT_FIRST_DELAY;
            }
            r.last_log = Some(now);
            self.down.store(true, Ordering::SeqCst);
            tracing::error!(
                module = %self.path.display(),
                token = label,
                reason = why,
                "PKCS#11 token lost; re-initialising the module until it is back"
            );
        }
        if self.epoch() != seen_epoch {
            return Ok(());
        }
        if let Some(at) = r.next_try {
            if now < at {
                return Err(format!(
                    "{why}; the PKCS#11 module is re-initialised again in {} ms",
                    (at - now).as_millis()
                ));
            }
        }
        if r.last_log.is_none_or(|t| now - t >= OUTAGE_LOG_EVERY) {
            r.last_log = Some(now);
            tracing::error!(
                module = %self.path.display(),
                tokens = ?r.lost,
                reason = why,
                down_seconds = r.down_since.map_or(0, |t| (now - t).as_secs()),
                reinitialisations = r.reinits,
                "PKCS#11 token still unavailable"
            );
        }
        r.next_try = Some(now + r.delay);
        r.delay = (r.delay * 2).min(REINIT_MAX_DELAY);
        let mut live = self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A C_Finalize that fails (other than "not initialised") leaves the sessions alive:
        // the epoch stays, so they are still closed when dropped, and nothing is rescanned.
        match live.ctx.clone().finalize() {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {}
            Err(e) => return Err(format!("{why}; C_Finalize failed: {e}")),
        }
        // Every session and handle died with C_Finalize.
        live.epoch += 1;
        r.reinits += 1;
        REINITIALISATIONS.fetch_add(1, Ordering::Relaxed);
        match initialize(&live.ctx) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                tracing::debug!("PKCS#11 module re-initialised");
                Ok(())
            }
            Err(e) => Err(format!("{why}; C_Initialize failed: {e}")),
        }
    }

    /// An operation on the token labelled `label` succeeded in `epoch`: ends that token's
    /// outage (logged once), and the backoff once no token of the module is lost. A success
    /// of another token, or from before the last re-initialisation, ends nothing.
    pub(crate) fn note_ok(&self, label: &str, epoch: u64) {
        if !self.down.load(Ordering::Relaxed) {
            return;
        }
        let mut r = lock(&self.recovery);
        if self.epoch() != epoch || !r.lost.remove(label) {
            return;
        }
        tracing::warn!(
            module = %self.path.display(),
            token = label,
            down_seconds = r.down_since.map_or(0, |t| t.elapsed().as_secs()),
            reinitialisations = r.reinits,
            "PKCS#11 token back; signing again"
        );
        if r.lost.is_empty() {
            *r = Recovery::default();
            self.down.store(false, Ordering::SeqCst);
        }
    }
}

/// A session that is closed when dropped only if it belongs to the module's current epoch: a
/// handle from before a re-initialisation is dead and its number may name someone else's
/// session now.
pub(crate) struct OwnedSession {
    /// `Some` until dropped.
    session: Option<Session>,
    epoch: u64,
    module: Arc<Module>,
}

impl OwnedSession {
    pub(crate) fn open(
        module: &Arc<Module>,
        live: &Live,
        slot: Slot,
        read_write: bool,
    ) -> Result<OwnedSession, CkError> {
        let session = if read_write {
            live.ctx.open_rw_session_no_drop(slot)?
        } else {
            live.ctx.open_ro_session_no_drop(slot)?
        };
        Ok(OwnedSession {
            session: Some(session),
            epoch: live.epoch,
            module: module.clone(),
        })
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl std::ops::Deref for OwnedSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        match &self.session {
            Some(s) => s,
            // INVARIANT: taken only in drop.
            None => unreachable!("a session used after it was dropped"),
        }
    }
}

impl Drop for OwnedSession {
    fn drop(&mut self) {
        // Never blocks: this may run inside an operation that holds the read lock. If a
        // re-initialisation holds or waits for the write lock, C_Finalize closes the session.
        let Ok(live) = self.module.live.try_read() else {
            return;
        };
        if live.epoch == self.epoch {
            if let Some(s) = self.session.take() {
                let _ = s.close();
            }
        }
    }
}
