//! Signing with keys that live in a PKCS#11 token (SoftHSM2 by default).
//!
//! - [`init_token`] creates a token (idempotent), [`Token::open`] logs in to it.
//! - [`Token::generate_ec_key`] makes a P-256 key pair inside the token: the private key is
//!   `CKA_SENSITIVE` and not `CKA_EXTRACTABLE`, so its value never leaves the token.
//! - [`Pkcs11Key`] is the [`Signer`](crate::Signer): SHA-256 in software, `CKM_ECDSA` on the digest in the
//!   token, the raw `r||s` turned into a DER `Ecdsa-Sig-Value`. Every signature is verified
//!   against the key's public key before it is returned.
//!
//! The module is loaded and `C_Initialize`d once per process per module path. A [`Token`] keeps
//! one "login" session open (PKCS#11 login state belongs to the application and the token, and
//! ends when its last session closes) and a pool of sessions for signing, so that many threads
//! can sign at once.
//!
//! When a token operation fails in a way a reconnect can cure (session closed, user logged out,
//! object handle gone, device removed, token not present, a general error, ...), the token
//! drops its sessions, finds the slot again by token label, logs in again, finds the key again
//! by label and ID — checked against the public key it knew — and retries a bounded number of
//! times. When even the new login cannot reach the token (it was removed, or its module only
//! sees tokens at `C_Initialize`, as SoftHSM2 does), the module is finalised and initialised
//! again, with backoff ([`module`]): a token that comes back is used again without a restart.
//! Until then the error is [`Error::TokenUnavailable`]: nothing here ever falls back to a
//! software key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use module::module;

use cryptoki::context::{Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};

use crate::Error;

mod module;
mod token;

pub use module::reinitialisations;
pub use token::{Pkcs11Key, Pkcs11Secret, PrivateKeyAttributes, SecretKind, Token};

/// Where Debian and Ubuntu install the SoftHSM2 module.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Other places SoftHSM2 is commonly installed, probed by [`default_module`].
const SOFTHSM2_MODULE_CANDIDATES: &[&str] = &[
    SOFTHSM2_MODULE,
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
];

/// How many bytes of SHA-256(public point) become the key's `CKA_ID`.
const KEY_ID_LEN: usize = 20;

/// Waits before each retry after a recoverable token failure.
const BACKOFF_MS: [u64; 3] = [10, 50, 200];

/// The first SoftHSM2 module found in the usual places, else [`SOFTHSM2_MODULE`].
pub fn default_module() -> PathBuf {
    SOFTHSM2_MODULE_CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .unwrap_or(Path::new(SOFTHSM2_MODULE))
        .to_path_buf()
}

/// Creates `dir/tokens/` and writes `dir/softhsm2.conf` pointing SoftHSM2 at it.
///
/// Returns the path of the configuration file. The caller sets the `SOFTHSM2_CONF` environment
/// variable to it before the module is first used in the process (SoftHSM2 reads it once, in
/// `C_Initialize`).
pub fn softhsm_conf(dir: &Path) -> std::io::Result<PathBuf> {
    let dir = std::path::absolute(dir)?;
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let conf = dir.join("softhsm2.conf");
    let text = format!(
        "# Written by ecert.\n\
         directories.tokendir = {}\n\
         objectstore.backend = file\n\
         log.level = ERROR\n\
         slots.removable = false\n",
        tokens.display()
    );
    std::fs::write(&conf, text)?;
    Ok(conf)
}

/// How to reach a token.
#[derive(Clone)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Label of the token (at most 32 bytes).
    pub token_label: String,
    /// The user PIN; keys are used after a `C_Login` as user.
    pub user_pin: String,
    /// The security officer PIN, needed only by [`init_token`] to create the token.
    pub so_pin: Option<String>,
    /// How many idle sessions a [`Token`] keeps for signing (busy ones are not counted).
    pub pool_size: usize,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("user_pin", &"<redacted>")
            .field("so_pin", &self.so_pin.as_ref().map(|_| "<redacted>"))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// The module, loaded and initialised once per process.

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind (a list of sessions,
    // the login session): nothing half-updated that would be unsafe to go on with.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn canonical(module: &Path) -> PathBuf {
    module
        .canonicalize()
        .unwrap_or_else(|_| module.to_path_buf())
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// Whether a PKCS#11 failure may be cured by reconnecting (new sessions, new login, keys found
/// again by label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Retry,
    Fatal,
}

fn classify(rv: &RvError) -> Class {
    match rv {
        RvError::SessionHandleInvalid
        | RvError::SessionClosed
        | RvError::UserNotLoggedIn
        | RvError::ObjectHandleInvalid
        | RvError::KeyHandleInvalid
        | RvError::DeviceRemoved
        | RvError::DeviceError
        | RvError::TokenNotPresent
        | RvError::TokenNotRecognized
        // Another thread re-initialised the module, or a re-initialisation failed.
        | RvError::CryptokiNotInitialized
        // What SoftHSM2 and some hardware modules answer when an established token's storage
        // goes away under them. (A failed AES-GCM tag check, which SoftHSM2 also reports so,
        // is recognised before this in Pkcs11Secret::open.)
        | RvError::GeneralError => Class::Retry,
        _ => Class::Fatal,
    }
}

/// The outcome of one failed attempt at a token operation.
#[derive(Debug)]
enum Failure {
    /// Reconnecting may help; the detail goes into [`Error::TokenUnavailable`] if it does not.
    Retry(String),
    /// A key this process knew is not visible (label given). A token whose storage went away
    /// can answer an empty search while still accepting a login: retried after a reconnect,
    /// and only then [`Error::KeyNotFound`].
    Missing(String),
    /// Reconnecting will not help.
    Fatal(Error),
}

fn function_name(f: Function) -> String {
    format!("C_{f:?}")
}

/// Maps a cryptoki error; `what` names the operation when cryptoki does not.
fn failure(what: &str, e: CkError) -> Failure {
    match e {
        CkError::Pkcs11(rv, f) => match classify(&rv) {
            Class::Retry => Failure::Retry(format!("{} returned {rv:?}", function_name(f))),
            Class::Fatal => Failure::Fatal(fatal_rv(rv, f)),
        },
        other => Failure::Fatal(Error::Pkcs11 {
            function: what.to_string(),
            detail: other.to_string(),
        }),
    }
}

fn fatal_rv(rv: RvError, f: Function) -> Error {
    match rv {
        RvError::PinIncorrect => Error::PinIncorrect,
        _ => Error::Pkcs11 {
            function: function_name(f),
            detail: format!("{rv:?}"),
        },
    }
}

/// Maps a cryptoki error where no retry happens.
fn error(what: &str, e: CkError) -> Error {
    failure(what, e).into()
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::Retry(detail) => Error::TokenUnavailable { detail },
            Failure::Missing(label) => Error::KeyNotFound { label },
            Failure::Fatal(e) => e,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Slots and tokens.

fn auth_pin(pin: &str) -> AuthPin {
    AuthPin::new(pin.into())
}

/// The slot holding an initialised token with this label, if any.
fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Option<Slot>, CkError> {
    for slot in ctx.get_slots_with_token()? {
        // A slot that fails to answer is not the one we look for.
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        if info.token_initialized() && info.label() == label {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

/// Whether a token with this label is present through `module` (no login): for checking that
/// a token that must stay offline (a root token) is not reachable where it should not be.
pub fn token_present(module_path: &Path, label: &str) -> Result<bool, Error> {
    check_label(label)?;
    let module = module(module_path)?;
    let live = module.live();
    Ok(find_slot(&live.ctx, label)
        .map_err(|e| error("C_GetSlotList", e))?
        .is_some())
}

/// Refuses a token label PKCS#11 cannot carry (empty, or longer than 32 bytes).
pub fn check_label(label: &str) -> Result<(), Error> {
    if label.is_empty() || label.len() > 32 {
        return Err(Error::Config(
            "a PKCS#11 token label is 1 to 32 bytes long".into(),
        ));
    }
    Ok(())
}

/// Creates the token `cfg.token_label` unless it exists: initialises the first free slot with
/// the SO PIN and the label, then sets the user PIN.
///
/// Idempotent: if a token with that label exists and its user PIN is set, nothing happens (the
/// SO PIN is then not needed). If it exists without a user PIN (an earlier run stopped half-way),
/// the user PIN is set.
pub fn init_token(cfg: &Pkcs11Config) -> Result<(), Error> {
    check_label(&cfg.token_label)?;
    let module = module(&cfg.module)?;
    let live = module.live();
    let ctx = &live.ctx;
    let label = cfg.token_label.as_str();
    let slot = match find_slot(ctx, label).map_err(|e| error("C_GetSlotList", e))? {
        Some(slot) => {
            let info = ctx
                .get_token_info(slot)
                .map_err(|e| error("C_GetTokenInfo", e))?;
            if info.user_pin_initialized() {
                tracing::debug!("PKCS#11 token already initialised");
                return Ok(());
            }
            slot
        }
        None => {
            let so_pin = so_pin(cfg)?;
            let free = ctx
                .get_slots_with_token()
                .map_err(|e| error("C_GetSlotList", e))?
                .into_iter()
                .find(|s| {
                    ctx.get_token_info(*s)
                        .map(|i| !i.token_initialized())
                        .unwrap_or(false)
                })
                .ok_or_else(|| Error::Config("no free (uninitialised) PKCS#11 slot".into()))?;
            ctx.init_token(free, &so_pin, label)
                .map_err(|e| error("C_InitToken", e))?;
            tracing::info!("PKCS#11 token initialised");
            // SoftHSM2 renumbers slots after C_InitToken (the token moves to a new slot id and a
            // fresh empty slot appears): look the token up again by label.
            find_slot(ctx, label)
                .map_err(|e| error("C_GetSlotList", e))?
                .ok_or_else(|| Error::TokenNotFound {
                    label: label.to_string(),
                })?
        }
    };
    let so_pin = so_pin(cfg)?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| error("C_OpenSession", e))?;
    session
        .login(UserType::So, Some(&so_pin))
        .map_err(|e| error("C_Login", e))?;
    session
        .init_pin(&auth_pin(&cfg.user_pin))
        .map_err(|e| error("C_InitPIN", e))?;
    // Closing the (only) session logs the SO out.
    session.close().map_err(|e| error("C_CloseSession", e))?;
    tracing::info!("PKCS#11 user PIN set");
    Ok(())
}

fn so_pin(cfg: &Pkcs11Config) -> Result<AuthPin, Error> {
    cfg.so_pin
        .as_deref()
        .map(auth_pin)
        .ok_or_else(|| Error::Config("the SO PIN is needed to initialise a token".into()))
}

/// Identifies the user PIN of one token in this process without keeping a second copy of it.
type PinDigest = [u8; 32];

fn pin_digest(module: &Path, label: &str, pin: &str) -> PinDigest {
    let mut h = Sha256::new();
    for part in [
        module.as_os_str().as_encoded_bytes(),
        label.as_bytes(),
        pin.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// Logs `session` in as user.
///
/// PKCS#11 login state belongs to the application and the token: while another session of this
/// process is logged in, `C_Login` answers `CKR_USER_ALREADY_LOGGED_IN` without checking the
/// PIN. So the digest of the PIN that last logged in successfully is remembered per token, and a
/// different PIN is refused as [`Error::PinIncorrect`] even then.
fn login_user(
    session: &Session,
    token: &(PathBuf, String),
    pin: &AuthPin,
    digest: &PinDigest,
) -> Result<(), CkError> {
    static LOGGED_IN_WITH: OnceLock<Mutex<HashMap<(PathBuf, String), PinDigest>>> = OnceLock::new();
    let known = LOGGED_IN_WITH.get_or_init(Default::default);
    match session.login(UserType::User, Some(pin)) {
        Ok(()) => {
            lock(known).insert(token.clone(), *digest);
            Ok(())
        }
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, f)) => match lock(known).get(token) {
            Some(d) if d != digest => Err(CkError::Pkcs11(RvError::PinIncorrect, f)),
            // Same PIN, or logged in by someone else in this process: accept.
            _ => Ok(()),
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::token::{p256_ec_params, unwrap_ec_point};
    use super::*;
    use crate::KeySpec;

    #[test]
    fn classify_each_listed_code() {
        for rv in [
            RvError::SessionHandleInvalid,
            RvError::SessionClosed,
            RvError::UserNotLoggedIn,
            RvError::ObjectHandleInvalid,
            RvError::KeyHandleInvalid,
            RvError::DeviceRemoved,
            RvError::DeviceError,
            RvError::TokenNotPresent,
            RvError::TokenNotRecognized,
            RvError::CryptokiNotInitialized,
            RvError::GeneralError,
        ] {
            assert_eq!(classify(&rv), Class::Retry, "{rv:?}");
        }
        for rv in [
            RvError::PinIncorrect,
            RvError::PinLocked,
            RvError::AttributeSensitive,
            RvError::KeyFunctionNotPermitted,
            RvError::MechanismInvalid,
            RvError::UserAlreadyLoggedIn,
        ] {
            assert_eq!(classify(&rv), Class::Fatal, "{rv:?}");
        }
    }

    #[test]
    fn errors_map() {
        assert!(matches!(
            error("x", CkError::Pkcs11(RvError::PinIncorrect, Function::Login)),
            Error::PinIncorrect
        ));
        assert!(matches!(
            error("x", CkError::Pkcs11(RvError::DeviceRemoved, Function::Sign)),
            Error::TokenUnavailable { .. }
        ));
        match error(
            "x",
            CkError::Pkcs11(RvError::MechanismInvalid, Function::SignInit),
        ) {
            Error::Pkcs11 { function, detail } => {
                assert_eq!(function, "C_SignInit");
                assert_eq!(detail, "MechanismInvalid");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn config_debug_hides_pins() {
        let cfg = Pkcs11Config {
            module: SOFTHSM2_MODULE.into(),
            token_label: "ecert".into(),
            user_pin: "user-secret-1234".into(),
            so_pin: Some("so-secret-5678".into()),
            pool_size: 4,
        };
        let s = format!("{cfg:?}");
        assert!(!s.contains("user-secret-1234"), "{s}");
        assert!(!s.contains("so-secret-5678"), "{s}");
        assert!(s.contains("ecert"));
    }

    #[test]
    fn ec_point_unwrapping() {
        let mut point = vec![0x04];
        point.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&point);
        assert_eq!(
            unwrap_ec_point(&wrapped, KeySpec::P256),
            Some(point.clone())
        );
        assert_eq!(unwrap_ec_point(&point, KeySpec::P256), Some(point.clone()));
        assert_eq!(unwrap_ec_point(&point, KeySpec::P384), None);
        assert_eq!(unwrap_ec_point(&[0x04, 0x01, 0x02], KeySpec::P256), None);
        assert_eq!(
            p256_ec_params(),
            [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
        );
    }

    #[test]
    fn conf_file() {
        let dir = tempfile::tempdir().unwrap();
        let conf = softhsm_conf(dir.path()).unwrap();
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(dir.path().join("tokens").is_dir());
        assert!(text.contains("objectstore.backend = file"));
        assert!(text.contains(&format!(
            "directories.tokendir = {}",
            dir.path().join("tokens").display()
        )));
    }
}
