//! [`Token`] (sessions, login, reconnects) and [`Pkcs11Key`] (the [`Signer`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, SessionState};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use p256::pkcs8::der::asn1::{ObjectIdentifier, OctetStringRef};
use p256::pkcs8::der::{Decode, Encode};
use sha2::{Digest, Sha256, Sha384};

use super::module::{module, Live, Module, OwnedSession};
use super::{
    auth_pin, canonical, check_label, error, failure, find_slot, lock, login_user, pin_digest,
    Failure, PinDigest, Pkcs11Config, BACKOFF_MS, KEY_ID_LEN,
};
use crate::keys::{ring_verifier, PublicKey};
use crate::{Algorithm, Error, KeySpec, Signer};

// ---------------------------------------------------------------------------------------------
// Token.

/// A logged-in token with a pool of sessions. Cheap to clone; clones share sessions.
#[derive(Clone)]
pub struct Token {
    inner: Arc<Inner>,
}

struct Inner {
    pkcs11: Arc<Module>,
    module: PathBuf,
    label: String,
    /// (canonical module path, token label): the key of the process-wide login record.
    token_key: (PathBuf, String),
    user_pin: AuthPin,
    pin_digest: PinDigest,
    pool_size: usize,
    /// Bumped whenever the sessions are thrown away; a session from an older generation is
    /// closed instead of reused.
    generation: AtomicU64,
    /// Lock order: the module's live lock, then `state`, then `pool`; never take `state` while
    /// holding `pool`.
    state: Mutex<State>,
    pool: Mutex<Vec<Pooled>>,
    /// Serialises key generation, so two threads cannot both pass the "label is free" check.
    keygen: Mutex<()>,
}

struct State {
    /// The slot the token was found in, in the login session's epoch (slot numbers may change
    /// when the module is initialised again).
    slot: Slot,
    /// The session that keeps the user logged in; `None` after [`Token::close_all_sessions`]
    /// or a failed reconnect, and dead if its epoch is not the module's.
    login: Option<OwnedSession>,
}

impl State {
    /// Whether the login session is there and of the module's current epoch.
    fn connected(&self, live: &Live) -> bool {
        self.login.as_ref().is_some_and(|l| l.epoch() == live.epoch)
    }
}

/// A session taken from (or opened for) the pool, with the key handles found in it.
struct Pooled {
    session: OwnedSession,
    generation: u64,
    read_write: bool,
    /// Key label -> (CKA_ID, private key handle).
    keys: HashMap<String, (Vec<u8>, ObjectHandle)>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("module", &self.inner.module)
            .field("label", &self.inner.label)
            .field("pool_size", &self.inner.pool_size)
            .finish_non_exhaustive()
    }
}

/// Security-relevant attributes of a private key object, as the token reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivateKeyAttributes {
    /// `CKA_TOKEN`: stored in the token (not a session object).
    pub token: bool,
    /// `CKA_PRIVATE`: visible only after login.
    pub private: bool,
    /// `CKA_SENSITIVE`: the value cannot be read.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`: the key could be wrapped out of the token.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: has been sensitive since it was made.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`: has never been extractable.
    pub never_extractable: bool,
    /// `CKA_SIGN`: may sign.
    pub sign: bool,
}

impl Token {
    /// Finds the token by label and logs in as user.
    pub fn open(cfg: &Pkcs11Config) -> Result<Token, Error> {
        check_label(&cfg.token_label)?;
        let pkcs11 = module(&cfg.module)?;
        let user_pin = auth_pin(&cfg.user_pin);
        let module_key = canonical(&cfg.module);
        let pin_digest = pin_digest(&module_key, &cfg.token_label, &cfg.user_pin);
        let token_key = (module_key, cfg.token_label.clone());
        let (slot, login, epoch) = {
            let live = pkcs11.live();
            let slot = find_slot(&live.ctx, &cfg.token_label)
                .map_err(|e| error("C_GetSlotList", e))?
                .ok_or_else(|| Error::TokenNotFound {
                    label: cfg.token_label.clone(),
                })?;
            let login = OwnedSession::open(&pkcs11, &live, slot, false)
                .map_err(|e| error("C_OpenSession", e))?;
            login_user(&login, &token_key, &user_pin, &pin_digest)
                .map_err(|e| error("C_Login", e))?;
            (slot, login, live.epoch)
        };
        // Reached and logged in: if this label was lost, it is back.
        pkcs11.note_ok(&cfg.token_label, epoch);
        tracing::debug!("PKCS#11 token opened and user logged in");
        Ok(Token {
            inner: Arc::new(Inner {
                pkcs11,
                module: cfg.module.clone(),
                label: cfg.token_label.clone(),
                token_key,
                user_pin,
                pin_digest,
                pool_size: cfg.pool_size,
                generation: AtomicU64::new(0),
                state: Mutex::new(State {
                    slot,
                    login: Some(login),
                }),
                pool: Mutex::new(Vec::new()),
                keygen: Mutex::new(()),
            }),
        })
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// Generates a P-256 key pair inside the token: [`Token::generate_key`] with
    /// [`KeySpec::P256`].
    pub fn generate_ec_key(&self, label: &str) -> Result<Pkcs11Key, Error> {
        self.generate_key(label, KeySpec::P256)
    }

    /// Generates a key pair of kind `spec` inside the token (`CKM_EC_KEY_PAIR_GEN` on the
    /// named curve, or `CKM_RSA_PKCS_KEY_PAIR_GEN` with exponent 65537).
    ///
    /// The private key is a token object, private, sensitive, not extractable and may only sign;
    /// the public key is a token object that may verify. Both carry `label` and a `CKA_ID` made
    /// of the first 20 bytes of SHA-256 of the public point (EC) or of the DER `RSAPublicKey`.
    /// Refuses with [`Error::KeyExists`] if a private key with that label exists.
    pub fn generate_key(&self, label: &str, spec: KeySpec) -> Result<Pkcs11Key, Error> {
        let _one_at_a_time = lock(&self.inner.keygen);
        let (id, public) = self.run(true, |p| {
            if !find_private(&p.session, label, None)?.is_empty() {
                return Err(Failure::Fatal(Error::KeyExists {
                    label: label.to_string(),
                }));
            }
            generate_in(&p.session, label, spec)
        })?;
        tracing::info!(label, key = %spec, "PKCS#11 key pair generated in the token");
        Ok(self.make_key(label, id, public))
    }

    /// Destroys the key pair labelled `label` (private and public objects; none found is not
    /// an error). For a key that was just generated and never certified, when what it was made
    /// for failed, and for an OCSP responder key whose certificate has expired; never for a key
    /// in use.
    pub fn destroy_key(&self, label: &str) -> Result<(), Error> {
        self.run(true, |p| {
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                let found = p
                    .session
                    .find_objects(&[
                        Attribute::Class(class),
                        Attribute::Label(label.as_bytes().to_vec()),
                    ])
                    .map_err(|e| failure("C_FindObjects", e))?;
                for h in found {
                    p.session
                        .destroy_object(h)
                        .map_err(|e| failure("C_DestroyObject", e))?;
                }
            }
            p.keys.remove(label);
            Ok(())
        })?;
        tracing::warn!(label, "PKCS#11 key pair destroyed");
        Ok(())
    }

    /// Finds the key pair whose private key carries `label`.
    pub fn find_key(&self, label: &str) -> Result<Option<Pkcs11Key>, Error> {
        let found = self.run(false, |p| {
            let session = &p.session;
            let handles = find_private(session, label, None)?;
            let handle = match handles.as_slice() {
                // Looked for again after a reconnect before it counts as absent.
                [] => return Err(Failure::Missing(label.to_string())),
                [h] => *h,
                _ => return Err(ambiguous(label)),
            };
            let id = read_id(session, handle)?;
            let public = read_public_key(session, label, &id)?;
            p.keys.insert(label.to_string(), (id.clone(), handle));
            Ok(Some((id, public)))
        });
        let found = match found {
            Err(Error::KeyNotFound { .. }) => None,
            other => other?,
        };
        match found {
            None => Ok(None),
            Some((id, public)) => Ok(Some(self.make_key(label, id, public))),
        }
    }

    /// Like [`Token::find_key`], but a missing key is [`Error::KeyNotFound`].
    pub fn key(&self, label: &str) -> Result<Pkcs11Key, Error> {
        self.find_key(label)?.ok_or_else(|| Error::KeyNotFound {
            label: label.to_string(),
        })
    }

    /// Tries to read `CKA_VALUE` of the private key.
    ///
    /// For a key made by [`Token::generate_ec_key`] the token refuses
    /// (`CKR_ATTRIBUTE_SENSITIVE`), surfaced as [`Error::Pkcs11`]; this exists so tests and
    /// operators can prove that.
    pub fn read_private_value(&self, label: &str) -> Result<Vec<u8>, Error> {
        self.run(false, |p| {
            let handle = one_private(&p.session, label)?;
            read_value(&p.session, handle)
        })
    }

    /// Reads the security-relevant attributes of the private key labelled `label`.
    pub fn private_key_attributes(&self, label: &str) -> Result<PrivateKeyAttributes, Error> {
        self.run(false, |p| {
            let session = &p.session;
            let handle = one_private(session, label)?;
            let attrs = session
                .get_attributes(
                    handle,
                    &[
                        AttributeType::Token,
                        AttributeType::Private,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                        AttributeType::Sign,
                    ],
                )
                .map_err(|e| failure("C_GetAttributeValue", e))?;
            // Absent attributes read as the unsafe answer (not sensitive, extractable).
            let mut out = PrivateKeyAttributes {
                token: false,
                private: false,
                sensitive: false,
                extractable: true,
                always_sensitive: false,
                never_extractable: false,
                sign: false,
            };
            for a in attrs {
                match a {
                    Attribute::Token(v) => out.token = v,
                    Attribute::Private(v) => out.private = v,
                    Attribute::Sensitive(v) => out.sensitive = v,
                    Attribute::Extractable(v) => out.extractable = v,
                    Attribute::AlwaysSensitive(v) => out.always_sensitive = v,
                    Attribute::NeverExtractable(v) => out.never_extractable = v,
                    Attribute::Sign(v) => out.sign = v,
                    _ => {}
                }
            }
            Ok(out)
        })
    }

    /// Logs the process out of the token and closes every session this token holds: the idle
    /// pooled ones and the login session; sessions busy in another thread are closed when they
    /// come back.
    ///
    /// For tests and for operators forcing a reconnect: the next operation opens new sessions
    /// and logs in again. cryptoki 0.12 has no safe binding for `C_CloseAllSessions`, so this
    /// does what it amounts to with the calls that do have one: `C_Logout` (login state belongs
    /// to the application, so every session of this process on the token, including those of
    /// other [`Token`] values and those busy signing right now, loses its access to the keys and
    /// its key handles) and `C_CloseSession` for each session this token holds.
    pub fn close_all_sessions(&self) {
        let live = self.inner.pkcs11.live();
        let mut state = lock(&self.inner.state);
        // New generation first, so that operations the logout breaks see they were interrupted.
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        // Only through a session of this epoch: an older handle number may name another's.
        if state.connected(&live) {
            if let Some(login) = &state.login {
                // Errors (already logged out, session gone) do not matter here.
                let _ = login.logout();
            }
        }
        let stale = self.invalidate_locked(&mut state);
        drop(state);
        // Dropping closes them (those of the current epoch).
        drop(stale);
        tracing::info!("PKCS#11 sessions closed on request");
    }

    // ---- internals ----------------------------------------------------------------------

    fn make_key(&self, label: &str, id: Vec<u8>, public: PublicKey) -> Pkcs11Key {
        Pkcs11Key {
            token: self.clone(),
            label: label.into(),
            id: id.into(),
            public: public.into(),
            release_check: true,
        }
    }

    /// Throws away every session (pool and login) and starts a new generation. Returns the
    /// pooled sessions so the caller can drop (close) them outside the locks.
    fn invalidate_locked(&self, state: &mut State) -> Vec<Pooled> {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        let pooled = std::mem::take(&mut *lock(&self.inner.pool));
        state.login = None;
        pooled
    }

    /// Re-finds the slot by label, opens a new login session and logs in. All old sessions are
    /// dropped first.
    fn reconnect_locked(&self, live: &Live, state: &mut State) -> Result<(), Failure> {
        let stale = self.invalidate_locked(state);
        drop(stale);
        let inner = &self.inner;
        let slot = find_slot(&live.ctx, &inner.label)
            .map_err(|e| failure("C_GetSlotList", e))?
            .ok_or_else(|| {
                Failure::Retry(format!("no token labelled {:?} is present", inner.label))
            })?;
        state.slot = slot;
        let login = OwnedSession::open(&inner.pkcs11, live, slot, false)
            .map_err(|e| failure("C_OpenSession", e))?;
        // A wrong PIN is fatal (never retried: tokens lock the PIN after a few failures).
        login_user(&login, &inner.token_key, &inner.user_pin, &inner.pin_digest)
            .map_err(|e| failure("C_Login", e))?;
        state.login = Some(login);
        tracing::debug!("PKCS#11 token reconnected and user logged in again");
        Ok(())
    }

    /// Reconnects unless another thread did so since `seen_generation`.
    fn reconnect(&self, live: &Live, seen_generation: u64) -> Result<(), Failure> {
        let mut state = lock(&self.inner.state);
        if self.inner.generation.load(Ordering::SeqCst) != seen_generation && state.connected(live)
        {
            return Ok(());
        }
        self.reconnect_locked(live, &mut state)
    }

    /// A session for one operation: an idle pooled one (read-only work) or a new one.
    fn checkout(&self, live: &Live, read_write: bool) -> Result<Pooled, Failure> {
        if !read_write {
            let current = self.inner.generation.load(Ordering::SeqCst);
            loop {
                let Some(p) = lock(&self.inner.pool).pop() else {
                    break;
                };
                if p.generation == current && p.session.epoch() == live.epoch {
                    return Ok(p);
                }
                // Stale: dropping it closes it (if it is of this epoch).
            }
        }
        let mut state = lock(&self.inner.state);
        if !state.connected(live) {
            self.reconnect_locked(live, &mut state)?;
        }
        let generation = self.inner.generation.load(Ordering::SeqCst);
        let session = OwnedSession::open(&self.inner.pkcs11, live, state.slot, read_write)
            .map_err(|e| failure("C_OpenSession", e))?;
        Ok(Pooled {
            session,
            generation,
            read_write,
            keys: HashMap::new(),
        })
    }

    /// Returns a healthy session to the pool (or closes it if the pool is full or it is stale).
    fn checkin(&self, live: &Live, p: Pooled) {
        if p.read_write
            || p.generation != self.inner.generation.load(Ordering::SeqCst)
            || p.session.epoch() != live.epoch
        {
            return;
        }
        let mut pool = lock(&self.inner.pool);
        if pool.len() < self.inner.pool_size {
            pool.push(p);
        }
    }

    /// Runs `op` on a session, reconnecting and retrying (bounded, with backoff) on failures a
    /// reconnect may cure. When a reconnect itself cannot reach the token, the module is
    /// initialised again ([`Module::reinitialize`], which backs off: while it waits this fails
    /// at once). The module's live lock is held across each attempt, so no re-initialisation
    /// happens under an operation.
    fn run<T>(
        &self,
        read_write: bool,
        mut op: impl FnMut(&mut Pooled) -> Result<T, Failure>,
    ) -> Result<T, Error> {
        let pkcs11 = &self.inner.pkcs11;
        let label = self.inner.label.as_str();
        // While this token is lost and the backoff runs, fail at once (no reconnect attempt
        // per call, which on a network HSM would cost a timeout each).
        if let Some(wait) = pkcs11.backoff_remaining(label) {
            return Err(Error::TokenUnavailable {
                detail: format!(
                    "the token {label:?} is lost; the PKCS#11 module is re-initialised again in {} ms",
                    wait.as_millis()
                ),
            });
        }
        let mut seen_generation = self.inner.generation.load(Ordering::SeqCst);
        let mut last = String::new();
        // Set to the epoch in which a reconnect could not reach the token.
        let mut unreachable_in: Option<u64> = None;
        for attempt in 0..=BACKOFF_MS.len() {
            if attempt > 0 {
                match unreachable_in.take() {
                    Some(epoch) => {
                        if let Err(detail) = pkcs11.reinitialize(epoch, label, &last) {
                            return Err(Error::TokenUnavailable { detail });
                        }
                    }
                    None => std::thread::sleep(Duration::from_millis(BACKOFF_MS[attempt - 1])),
                }
            }
            let live = pkcs11.live();
            if attempt > 0 {
                match self.reconnect(&live, seen_generation) {
                    Ok(()) => {}
                    Err(Failure::Retry(detail)) => {
                        tracing::debug!(attempt, %detail, "PKCS#11 reconnect failed");
                        last = detail;
                        unreachable_in = Some(live.epoch);
                        seen_generation = self.inner.generation.load(Ordering::SeqCst);
                        continue;
                    }
                    Err(f @ (Failure::Fatal(_) | Failure::Missing(_))) => return Err(f.into()),
                }
            }
            let mut p = match self.checkout(&live, read_write) {
                Ok(p) => p,
                Err(Failure::Retry(detail)) => {
                    // The checkout reconnects when it has no login session: the same case.
                    last = detail;
                    unreachable_in = Some(live.epoch);
                    seen_generation = self.inner.generation.load(Ordering::SeqCst);
                    continue;
                }
                Err(f @ (Failure::Fatal(_) | Failure::Missing(_))) => return Err(f.into()),
            };
            seen_generation = p.generation;
            match op(&mut p) {
                Ok(v) => {
                    let epoch = live.epoch;
                    self.checkin(&live, p);
                    drop(live);
                    pkcs11.note_ok(label, epoch);
                    return Ok(v);
                }
                Err(Failure::Missing(key)) => {
                    // Seen again after a reconnect in this call: the key really is not there.
                    if attempt > 0 {
                        return Err(Error::KeyNotFound { label: key });
                    }
                    tracing::debug!(attempt, key, "PKCS#11 key not visible; reconnecting");
                    last = format!("the key labelled {key:?} is not visible in the token");
                }
                Err(Failure::Retry(detail)) => {
                    tracing::debug!(attempt, %detail, "PKCS#11 operation failed; reconnecting");
                    last = detail;
                    // The session is suspect: drop (close) it.
                }
                Err(Failure::Fatal(e)) => {
                    // The sessions were thrown away (logout, reconnect) while this operation ran:
                    // whatever it failed with may be a symptom of that (SoftHSM2 answers
                    // CKR_GENERAL_ERROR to a search that a logout interrupts). Try again.
                    if p.generation != self.inner.generation.load(Ordering::SeqCst) {
                        tracing::debug!(attempt, "PKCS#11 operation failed during a reconnect");
                        last = e.to_string();
                        continue;
                    }
                    // An operation that failed may leave state in the session: do not reuse it.
                    return Err(e);
                }
            }
        }
        // Logged by the module when the token is lost for good; a one-off failure is logged by
        // whoever asked.
        Err(Error::TokenUnavailable { detail: last })
    }
}

// ---- session helpers ------------------------------------------------------------------------

fn ambiguous(label: &str) -> Failure {
    Failure::Fatal(Error::Pkcs11 {
        function: "C_FindObjects".into(),
        detail: format!("more than one private key is labelled {label:?}"),
    })
}

/// Whether the session can see private objects (a user is logged in).
fn logged_in(session: &Session) -> Result<bool, Failure> {
    let info = session
        .get_session_info()
        .map_err(|e| failure("C_GetSessionInfo", e))?;
    Ok(matches!(
        info.session_state(),
        SessionState::RoUser | SessionState::RwUser
    ))
}

/// Private keys with this label (and ID, if given). An empty answer from a session that is not
/// logged in means "cannot see", not "absent", and is reported as a retryable failure.
fn find_private(
    session: &Session,
    label: &str,
    id: Option<&[u8]>,
) -> Result<Vec<ObjectHandle>, Failure> {
    let mut template = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    if let Some(id) = id {
        template.push(Attribute::Id(id.to_vec()));
    }
    let found = session
        .find_objects(&template)
        .map_err(|e| failure("C_FindObjects", e))?;
    if found.is_empty() && !logged_in(session)? {
        return Err(Failure::Retry(
            "the session is not logged in (UserNotLoggedIn)".into(),
        ));
    }
    Ok(found)
}

fn one_private(session: &Session, label: &str) -> Result<ObjectHandle, Failure> {
    match find_private(session, label, None)?.as_slice() {
        [] => Err(Failure::Missing(label.to_string())),
        [h] => Ok(*h),
        _ => Err(ambiguous(label)),
    }
}

fn read_id(session: &Session, handle: ObjectHandle) -> Result<Vec<u8>, Failure> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::Id])
        .map_err(|e| failure("C_GetAttributeValue", e))?;
    Ok(attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Id(id) => Some(id),
            _ => None,
        })
        .unwrap_or_default())
}

/// The DER `DigestInfo` for SHA-256 up to the digest (RFC 8017 §9.2, note 1).
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// The DER encoding of the prime256v1 OID, as `CKA_EC_PARAMS` carries it.
#[cfg(test)]
pub(super) fn p256_ec_params() -> Vec<u8> {
    use p256::pkcs8::AssociatedOid;
    match p256::NistP256::OID.to_der() {
        Ok(der) => der,
        // INVARIANT: a fixed, valid OID always encodes.
        Err(e) => unreachable!("encoding the P-256 OID failed: {e}"),
    }
}

/// The public key object with this label and ID, after checking it is one of the
/// [`KeySpec`]s.
fn read_public_key(session: &Session, label: &str, id: &[u8]) -> Result<PublicKey, Failure> {
    let template = [
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let handles = session
        .find_objects(&template)
        .map_err(|e| failure("C_FindObjects", e))?;
    let handle = match handles.as_slice() {
        [h] => *h,
        [] => {
            return Err(Failure::Fatal(Error::PublicKey(format!(
                "no public key object labelled {label:?} with the private key's ID"
            ))))
        }
        _ => {
            return Err(Failure::Fatal(Error::PublicKey(format!(
                "more than one public key object labelled {label:?}"
            ))))
        }
    };
    public_key_of(session, handle)
}

fn public_key_of(session: &Session, handle: ObjectHandle) -> Result<PublicKey, Failure> {
    let bad = |m: &str| Failure::Fatal(Error::PublicKey(m.to_string()));
    let attrs = session
        .get_attributes(handle, &[AttributeType::KeyType])
        .map_err(|e| failure("C_GetAttributeValue", e))?;
    let key_type = attrs.into_iter().find_map(|a| match a {
        Attribute::KeyType(t) => Some(t),
        _ => None,
    });
    if key_type == Some(KeyType::RSA) {
        let attrs = session
            .get_attributes(
                handle,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
            .map_err(|e| failure("C_GetAttributeValue", e))?;
        let (mut n, mut e) = (None, None);
        for a in attrs {
            match a {
                Attribute::Modulus(v) => n = Some(v),
                Attribute::PublicExponent(v) => e = Some(v),
                _ => {}
            }
        }
        let n = n.ok_or_else(|| bad("the RSA public key has no CKA_MODULUS"))?;
        let e = e.ok_or_else(|| bad("the RSA public key has no CKA_PUBLIC_EXPONENT"))?;
        return PublicKey::rsa(&n, &e).map_err(Failure::Fatal);
    }
    if key_type != Some(KeyType::EC) {
        return Err(bad("the key is neither an EC nor an RSA key"));
    }
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(|e| failure("C_GetAttributeValue", e))?;
    let mut params = None;
    let mut point = None;
    for a in attrs {
        match a {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    let params = params.ok_or_else(|| bad("the public key has no CKA_EC_PARAMS"))?;
    let spec = match ObjectIdentifier::from_der(&params) {
        Ok(oid) => [KeySpec::P256, KeySpec::P384]
            .into_iter()
            .find(|s| s.curve_oid() == Some(oid))
            .ok_or_else(|| bad("the EC key is not on P-256 or P-384"))?,
        Err(_) => return Err(bad("CKA_EC_PARAMS is not a named-curve OID")),
    };
    let point = point.ok_or_else(|| bad("the public key has no CKA_EC_POINT"))?;
    let point = unwrap_ec_point(&point, spec)
        .ok_or_else(|| bad("CKA_EC_POINT is not an uncompressed point of its curve"))?;
    PublicKey::ec(spec, &point).map_err(Failure::Fatal)
}

/// `CKA_EC_PARAMS` of an EC key spec: the DER named-curve OID.
fn ec_params(spec: KeySpec) -> Result<Vec<u8>, Failure> {
    spec.curve_oid()
        .and_then(|oid| oid.to_der().ok())
        .ok_or_else(|| Failure::Fatal(Error::Config(format!("{spec} is not an EC key type"))))
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the point (PKCS#11 2.40 §2.3.3); a few modules
/// return the bare point, which is accepted too.
pub(super) fn unwrap_ec_point(raw: &[u8], spec: KeySpec) -> Option<Vec<u8>> {
    let len = spec.point_len()?;
    let uncompressed = |p: &[u8]| p.len() == len && p[0] == 0x04;
    match OctetStringRef::from_der(raw) {
        Ok(os) if uncompressed(os.as_bytes()) => Some(os.as_bytes().to_vec()),
        _ if uncompressed(raw) => Some(raw.to_vec()),
        _ => None,
    }
}

/// Generates the key pair in `session`; returns (CKA_ID, public key).
fn generate_in(
    session: &Session,
    label: &str,
    spec: KeySpec,
) -> Result<(Vec<u8>, PublicKey), Failure> {
    let label_bytes = label.as_bytes().to_vec();
    let mut public_template = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        // A signing key and nothing else (least privilege).
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Label(label_bytes.clone()),
    ];
    let mechanism = match spec.rsa_bits() {
        Some(bits) => {
            public_template.push(Attribute::ModulusBits(u64::from(bits).into()));
            public_template.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
        None => {
            public_template.push(Attribute::EcParams(ec_params(spec)?));
            Mechanism::EccKeyPairGen
        }
    };
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label_bytes),
    ];
    let (public, private) = session
        .generate_key_pair(&mechanism, &public_template, &private_template)
        .map_err(|e| failure("C_GenerateKeyPair", e))?;
    // The ID is derived from the public point, known only now: set it on both objects. On any
    // failure, remove the half-made pair so the label stays free.
    let finish = || -> Result<(Vec<u8>, PublicKey), Failure> {
        let point = public_key_of(session, public)?;
        if point.spec != spec {
            return Err(Failure::Fatal(Error::PublicKey(format!(
                "asked the token for a {spec} key, it made a {} key",
                point.spec
            ))));
        }
        let id = Sha256::digest(&point.raw)[..KEY_ID_LEN].to_vec();
        for handle in [public, private] {
            session
                .update_attributes(handle, &[Attribute::Id(id.clone())])
                .map_err(|e| failure("C_SetAttributeValue", e))?;
        }
        Ok((id, point))
    };
    finish().inspect_err(|_| {
        let _ = session.destroy_object(private);
        let _ = session.destroy_object(public);
        tracing::warn!("PKCS#11 key generation failed after the pair was made; pair destroyed");
    })
}

// ---------------------------------------------------------------------------------------------
// Pkcs11Key.

/// A key pair of one of the [`KeySpec`]s in a token, usable as a [`Signer`]. Cheap to clone;
/// `Send + Sync`.
#[derive(Clone)]
pub struct Pkcs11Key {
    token: Token,
    label: Arc<str>,
    id: Arc<[u8]>,
    /// The public key: its SPKI, and the raw form ring verifies with before a signature is
    /// released (several times faster than the pure-Rust verifiers on this hot path).
    public: Arc<PublicKey>,
    /// Verify each signature before returning it (default). See
    /// [`Pkcs11Key::without_release_check`].
    release_check: bool,
}

impl std::fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id: String = self.id.iter().map(|b| format!("{b:02x}")).collect();
        f.debug_struct("Pkcs11Key")
            .field("token", &self.token.inner.label)
            .field("label", &self.label)
            .field("id", &id)
            .field("key", &self.public.spec)
            .finish()
    }
}

impl Pkcs11Key {
    /// The kind of key.
    pub fn spec(&self) -> KeySpec {
        self.public.spec
    }

    /// The key's `CKA_LABEL`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The key's `CKA_ID`.
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// The token the key lives in.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The private key's handle in this session: cached, or found by label and ID and checked
    /// against the public key this `Pkcs11Key` was made with.
    fn handle_in(&self, p: &mut Pooled) -> Result<ObjectHandle, Failure> {
        if let Some((id, handle)) = p.keys.get(&*self.label) {
            if **id == *self.id {
                return Ok(*handle);
            }
        }
        let not_found = || {
            Failure::Fatal(Error::KeyNotFound {
                label: self.label.to_string(),
            })
        };
        let handle = match find_private(&p.session, &self.label, Some(&self.id))?.as_slice() {
            // Not visible: a token whose storage went away answers so; retried after a
            // reconnect, and only then "not found".
            [] => return Err(Failure::Missing(self.label.to_string())),
            [h] => *h,
            _ => return Err(ambiguous(&self.label)),
        };
        // Same label and ID but another public key: the key we knew is gone.
        let public = match read_public_key(&p.session, &self.label, &self.id) {
            Ok(public) => public,
            Err(Failure::Fatal(Error::PublicKey(_))) => return Err(not_found()),
            Err(e) => return Err(e),
        };
        if public.spki != self.public.spki {
            tracing::error!("PKCS#11 key with the same label and ID has another public key");
            return Err(not_found());
        }
        p.keys
            .insert(self.label.to_string(), (self.id.to_vec(), handle));
        Ok(handle)
    }
}

impl Pkcs11Key {
    /// `C_Sign` over what the mechanism takes: the digest (`CKM_ECDSA`), or the DER
    /// `DigestInfo` around it (`CKM_RSA_PKCS`, RFC 8017 §9.2). Hashing here rather than with
    /// `CKM_ECDSA_SHA256` / `CKM_SHA256_RSA_PKCS` keeps a large CRL off the token's channel and
    /// works on modules (SoftHSM2 for ECDSA) that lack the combined mechanisms.
    fn c_sign(&self, p: &mut Pooled, input: &[u8]) -> Result<Vec<u8>, Failure> {
        let handle = self.handle_in(p)?;
        let mechanism = match self.public.spec {
            KeySpec::P256 | KeySpec::P384 => Mechanism::Ecdsa,
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => Mechanism::RsaPkcs,
        };
        let started = std::time::Instant::now();
        let signed = p.session.sign(&mechanism, handle, input);
        crate::metrics::SIGNS.record(started.elapsed(), signed.is_ok());
        signed.map_err(|e| failure("C_Sign", e))
    }

    /// What [`Pkcs11Key::c_sign`] is given for `message`.
    fn sign_input(&self, message: &[u8]) -> Vec<u8> {
        match self.public.spec {
            KeySpec::P256 => Sha256::digest(message).to_vec(),
            KeySpec::P384 => Sha384::digest(message).to_vec(),
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                let mut info = SHA256_DIGEST_INFO_PREFIX.to_vec();
                info.extend_from_slice(&Sha256::digest(message));
                info
            }
        }
    }

    /// The token's raw signature in the form [`Signer::sign`] returns: ECDSA `r||s` as a DER
    /// `Ecdsa-Sig-Value`, RSA as it is (checked to be as long as the modulus).
    fn encode_signature(&self, raw: &[u8]) -> Result<Vec<u8>, Failure> {
        let wrong = |want: &str| {
            Failure::Fatal(Error::Pkcs11 {
                function: "C_Sign".into(),
                detail: format!("expected {want}, got {} bytes", raw.len()),
            })
        };
        match self.public.spec {
            KeySpec::P256 => p256::ecdsa::Signature::from_slice(raw)
                .map(|s| s.to_der().as_bytes().to_vec())
                .map_err(|_| wrong("a 64-byte r||s signature")),
            KeySpec::P384 => p384::ecdsa::Signature::from_slice(raw)
                .map(|s| s.to_der().as_bytes().to_vec())
                .map_err(|_| wrong("a 96-byte r||s signature")),
            spec => {
                let len = spec.rsa_bits().unwrap_or_default() as usize / 8;
                if raw.len() == len {
                    Ok(raw.to_vec())
                } else {
                    Err(wrong(&format!("a {len}-byte RSA signature")))
                }
            }
        }
    }

    /// The same key without the verify-before-release check. For a caller that verifies every
    /// signed object itself under the same public key before using it (the CA does, on the
    /// assembled certificate): one ECDSA verification per signature instead of two. A wrong
    /// signature then surfaces as the caller's verification error instead of a retry here.
    pub fn without_release_check(mut self) -> Self {
        self.release_check = false;
        self
    }

    /// One bare `C_Sign` (CKM_ECDSA) over a caller-made SHA-256 digest, returning raw r||s,
    /// with the same session pool and recovery as [`Signer::sign`] but no verification. For
    /// measuring the token (`ops/bench`); certificate signing goes through [`Signer::sign`].
    pub fn sign_digest_raw(&self, digest: &[u8; 32]) -> Result<Vec<u8>, Error> {
        if self.public.spec != KeySpec::P256 {
            return Err(Error::Config("sign_digest_raw is for P-256 keys".into()));
        }
        self.token.run(false, |p| self.c_sign(p, digest))
    }
}

impl Signer for Pkcs11Key {
    fn algorithm(&self) -> Algorithm {
        self.public.spec.algorithm()
    }

    fn public_key_spki(&self) -> &[u8] {
        &self.public.spki
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let input = self.sign_input(message);
        self.token.run(false, |p| {
            let raw = self.c_sign(p, &input)?;
            // Verify before release: a signature that does not verify under our public key
            // (a stale handle now naming another object, a faulty token) is never returned.
            // Skipped only for callers that verify the signed object themselves.
            let key = ring::signature::UnparsedPublicKey::new(
                ring_verifier(self.public.spec, true),
                &self.public.raw,
            );
            if self.release_check && key.verify(message, &raw).is_err() {
                p.keys.clear();
                return Err(Failure::Retry(
                    "the token's signature does not verify under the key's public key".into(),
                ));
            }
            self.encode_signature(&raw)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Secret keys: AES-256-GCM sealing and HMAC-SHA-256, for personal-data protection.

/// What a secret key in the token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// AES-256, encrypt/decrypt with `CKM_AES_GCM` only: a [`crate::Sealer`].
    Aes256Gcm,
    /// A 256-bit generic secret, sign/verify with `CKM_SHA256_HMAC` only: a [`crate::Mac`].
    HmacSha256,
}

/// A secret key in the token (private, sensitive, never extractable), used by label.
#[derive(Clone)]
pub struct Pkcs11Secret {
    token: Token,
    label: Arc<str>,
    kind: SecretKind,
}

impl std::fmt::Debug for Pkcs11Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Secret")
            .field("label", &self.label)
            .field("kind", &self.kind)
            .finish()
    }
}

/// `CKA_VALUE` of an object; [`Error::Pkcs11`] naming `AttributeSensitive` when the token
/// refuses to reveal it (as it must for every key ecert makes).
fn read_value(session: &Session, handle: ObjectHandle) -> Result<Vec<u8>, Failure> {
    let info = session
        .get_attribute_info(handle, &[AttributeType::Value])
        .map_err(|e| failure("C_GetAttributeValue", e))?;
    match info.first() {
        Some(AttributeInfo::Available(_)) => {}
        Some(AttributeInfo::Sensitive) => {
            return Err(Failure::Fatal(Error::Pkcs11 {
                function: "C_GetAttributeValue".into(),
                detail: "AttributeSensitive: the token refuses to reveal CKA_VALUE".into(),
            }))
        }
        other => {
            return Err(Failure::Fatal(Error::Pkcs11 {
                function: "C_GetAttributeValue".into(),
                detail: format!("CKA_VALUE is not available: {other:?}"),
            }))
        }
    }
    let attrs = session
        .get_attributes(handle, &[AttributeType::Value])
        .map_err(|e| failure("C_GetAttributeValue", e))?;
    attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Value(v) => Some(v),
            _ => None,
        })
        .ok_or_else(|| {
            Failure::Fatal(Error::Pkcs11 {
                function: "C_GetAttributeValue".into(),
                detail: "the token returned no CKA_VALUE".into(),
            })
        })
}

fn find_secret_in(session: &Session, label: &str) -> Result<Vec<ObjectHandle>, Failure> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| failure("C_FindObjects", e))?;
    if found.is_empty() && !logged_in(session)? {
        return Err(Failure::Retry(
            "the session is not logged in (UserNotLoggedIn)".into(),
        ));
    }
    Ok(found)
}

fn one_secret(session: &Session, label: &str) -> Result<ObjectHandle, Failure> {
    match find_secret_in(session, label)?.as_slice() {
        [] => Err(Failure::Missing(label.to_string())),
        [h] => Ok(*h),
        _ => Err(ambiguous(label)),
    }
}

impl Token {
    /// Generates a secret key inside the token: a token object, private, sensitive, never
    /// extractable, allowed only the operations of its `kind`. Refuses with
    /// [`Error::KeyExists`] if a secret key with that label exists.
    pub fn generate_secret(&self, label: &str, kind: SecretKind) -> Result<Pkcs11Secret, Error> {
        let _one_at_a_time = lock(&self.inner.keygen);
        self.run(true, |p| {
            if !find_secret_in(&p.session, label)?.is_empty() {
                return Err(Failure::Fatal(Error::KeyExists {
                    label: label.to_string(),
                }));
            }
            let aes = kind == SecretKind::Aes256Gcm;
            let (mechanism, key_type) = if aes {
                (Mechanism::AesKeyGen, KeyType::AES)
            } else {
                (Mechanism::GenericSecretKeyGen, KeyType::GENERIC_SECRET)
            };
            let template = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(key_type),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(aes),
                Attribute::Decrypt(aes),
                Attribute::Sign(!aes),
                Attribute::Verify(!aes),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
                Attribute::Derive(false),
                Attribute::Label(label.as_bytes().to_vec()),
            ];
            p.session
                .generate_key(&mechanism, &template)
                .map_err(|e| failure("C_GenerateKey", e))?;
            Ok(())
        })?;
        tracing::info!(label, ?kind, "PKCS#11 secret key generated in the token");
        Ok(self.secret_handle(label, kind))
    }

    /// Finds the secret key labelled `label`.
    pub fn find_secret(
        &self,
        label: &str,
        kind: SecretKind,
    ) -> Result<Option<Pkcs11Secret>, Error> {
        let n = self.run(false, |p| match find_secret_in(&p.session, label)?.len() {
            0 => Err(Failure::Missing(label.to_string())),
            n => Ok(n),
        });
        let n = match n {
            Err(Error::KeyNotFound { .. }) => 0,
            other => other?,
        };
        match n {
            0 => Ok(None),
            1 => Ok(Some(self.secret_handle(label, kind))),
            _ => Err(Error::Pkcs11 {
                function: "C_FindObjects".into(),
                detail: format!("{n} secret keys are labelled {label:?}"),
            }),
        }
    }

    /// Destroys every secret key labelled `label`; returns how many there were (none is not an
    /// error). For keys whose job has moved elsewhere (the custody migration), never for a
    /// key in use.
    pub fn destroy_secret(&self, label: &str) -> Result<usize, Error> {
        let n = self.run(true, |p| {
            let found = find_secret_in(&p.session, label)?;
            for h in &found {
                p.session
                    .destroy_object(*h)
                    .map_err(|e| failure("C_DestroyObject", e))?;
            }
            Ok(found.len())
        })?;
        if n > 0 {
            tracing::warn!(label, objects = n, "PKCS#11 secret key destroyed");
        }
        Ok(n)
    }

    /// Whether the secret key's value can be read out (it must not: tests prove it).
    pub fn read_secret_value(&self, label: &str) -> Result<Vec<u8>, Error> {
        self.run(false, |p| {
            let handle = one_secret(&p.session, label)?;
            read_value(&p.session, handle)
        })
    }

    fn secret_handle(&self, label: &str, kind: SecretKind) -> Pkcs11Secret {
        Pkcs11Secret {
            token: self.clone(),
            label: label.into(),
            kind,
        }
    }
}

impl Pkcs11Secret {
    fn expect_kind(&self, kind: SecretKind) -> Result<(), Error> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "key {:?} is a {:?} key, not {kind:?}",
                self.label, self.kind
            )))
        }
    }
}

impl crate::Sealer for Pkcs11Secret {
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        self.expect_kind(SecretKind::Aes256Gcm)?;
        let mut nonce = [0u8; crate::GCM_NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let ct = self.token.run(false, |p| {
            let handle = one_secret(&p.session, &self.label)?;
            let mut iv = nonce;
            let params = cryptoki::mechanism::aead::GcmParams::new(
                &mut iv,
                aad,
                ((crate::GCM_TAG_LEN * 8) as u64).into(),
            )
            .map_err(|e| failure("CK_GCM_PARAMS", e))?;
            p.session
                .encrypt(&Mechanism::AesGcm(params), handle, plaintext)
                .map_err(|e| failure("C_Encrypt", e))
        })?;
        Ok([nonce.as_slice(), &ct].concat())
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
        self.expect_kind(SecretKind::Aes256Gcm)?;
        if sealed.len() < crate::GCM_NONCE_LEN + crate::GCM_TAG_LEN {
            return Err(Error::Unseal);
        }
        let (nonce, ct) = sealed.split_at(crate::GCM_NONCE_LEN);
        let result = self.token.run(false, |p| {
            let handle = one_secret(&p.session, &self.label)?;
            let mut iv = [0u8; crate::GCM_NONCE_LEN];
            iv.copy_from_slice(nonce);
            let params = cryptoki::mechanism::aead::GcmParams::new(
                &mut iv,
                aad,
                ((crate::GCM_TAG_LEN * 8) as u64).into(),
            )
            .map_err(|e| failure("CK_GCM_PARAMS", e))?;
            match p.session.decrypt(&Mechanism::AesGcm(params), handle, ct) {
                Ok(v) => Ok(Ok(v)),
                // A failed tag check is an answer, not a token fault (and is not retried).
                // PKCS#11 3.0 §5.2 says CKR_ENCRYPTED_DATA_INVALID; SoftHSM2 2.6 reports
                // CKR_GENERAL_ERROR for it.
                Err(cryptoki::error::Error::Pkcs11(
                    cryptoki::error::RvError::EncryptedDataInvalid
                    | cryptoki::error::RvError::EncryptedDataLenRange
                    | cryptoki::error::RvError::GeneralError,
                    _,
                )) => Ok(Err(Error::Unseal)),
                Err(e) => Err(failure("C_Decrypt", e)),
            }
        })?;
        result
    }
}

impl crate::Mac for Pkcs11Secret {
    fn mac(&self, message: &[u8]) -> Result<[u8; 32], Error> {
        self.expect_kind(SecretKind::HmacSha256)?;
        let tag = self.token.run(false, |p| {
            let handle = one_secret(&p.session, &self.label)?;
            p.session
                .sign(&Mechanism::Sha256Hmac, handle, message)
                .map_err(|e| failure("C_Sign", e))
        })?;
        tag.as_slice().try_into().map_err(|_| Error::Pkcs11 {
            function: "C_Sign".into(),
            detail: format!("HMAC-SHA-256 of {} bytes", tag.len()),
        })
    }
}
