//! Custody of the personal-data keys (issue 14; DESIGN.md "Custody and roles").
//!
//! Two tokens are online, each with its own user PIN and SO PIN:
//!
//! - `ca` ([`crate::config::HsmConfig::token_label`]): the CA, responder and audit keys, and the
//!   staff-auth key ([`crate::pii::STAFF_AUTH_KEY_LABEL`]) that seals staff TOTP secrets and
//!   problem reports — so sign-in, revocation and the 24×7 problem-report duty never wait for
//!   the data owner (TLS BR §4.9.3).
//! - `pii` ([`crate::config::HsmConfig::pii_token_label`]): the personal-data seal and
//!   blind-index keys. Its PIN comes from a secret the data owner controls, or from activation
//!   by the `data_owner` role ([`crate::authority::Authority::activate_pii`]); without it the
//!   service runs, and counter functions answer "personal-data keys not activated".
//!
//! Whoever holds the data directory and the `ca` PINs can neither unseal a personal field nor
//! compute a blind index: the data key is stored only sealed by the `pii` token's AES key, and
//! the index key never leaves that token.
//!
//! Data directories made before the `pii` token existed keep both personal-data keys in the
//! one token and seal TOTP secrets and problem reports under the personal-data key.
//! [`migrate`] moves them: HSM keys cannot move between tokens, and the old data key was sealed
//! by a key the operator opens (and old backups of the `ca` token keep), so every personal
//! field is sealed again under a *new* data key sealed only by the `pii` token, every blind
//! index is computed again under the new index key, TOTP secrets and problem reports are
//! sealed again under the staff-auth key, the old sealed data key is deleted, and the old key
//! objects are destroyed. Every database change commits in one transaction with its audit
//! record; a run that stops half-way is run again and finishes (keys made by the stopped run
//! are found by label and used).

use std::sync::Arc;

use serde_json::json;
use zeroize::Zeroizing;

use crate::audit::Event;
use crate::config::{Config, PiiPin};
use crate::error::{Error, Result};
use crate::pii::{Field, Purpose, Vault};
use crate::store::Store;

/// `meta` key naming the custody layout; [`LAYOUT_SEPARATED`] once the `pii` token holds the
/// personal-data keys.
pub const LAYOUT_META: &str = "custody_layout";
/// The layout with a separate `pii` token and a staff-auth key.
pub const LAYOUT_SEPARATED: &str = "2";

/// The environment variable that gives the `pii` token's SO PIN to `ecert init` when it makes
/// that token outside the embedded default (the data owner's, never written down by ecert).
pub const PII_SO_PIN_ENV: &str = "ECERT_PII_SO_PIN";

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Store(format!("HSM task failed: {e}")))?
}

fn pii_token_config(config: &Config, pin: &str) -> hsm::pkcs11::Pkcs11Config {
    hsm::pkcs11::Pkcs11Config {
        module: config.hsm.module.clone(),
        token_label: config.hsm.pii_token_label.clone(),
        user_pin: pin.to_string(),
        so_pin: None,
        pool_size: 2,
    }
}

/// The default PIN files of an embedded `pii` token, inside the data directory.
fn default_pin_files(config: &Config) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let user = config.hsm_dir().join("pii-user.pin");
    match config.pii_pin_source() {
        Ok(PiiPin::File(f)) if f == user => Some((user, config.hsm_dir().join("pii-so.pin"))),
        _ => None,
    }
}

/// Embedded mode: makes the `pii` token (idempotent). With the default PIN source its PINs
/// are random files in `DIR/hsm` (custody not separated; `config check` says so); otherwise the
/// user PIN comes from [`Config::pii_pin`] and, to create the token, the SO PIN from
/// [`PII_SO_PIN_ENV`]. Returns `false` when the PIN waits for activation (nothing made).
pub(crate) fn init_embedded_pii_token(config: &Config) -> Result<bool> {
    if let Some((user, so)) = default_pin_files(config) {
        for p in [&user, &so] {
            if !p.exists() {
                crate::authority::write_secret(p, &crate::authority::random_secret())?;
            }
        }
    }
    let pin = match config.pii_pin() {
        Ok(Some(pin)) => pin,
        Ok(None) => return Ok(false),
        // The PIN is not here (the data owner is not present): the service starts without the
        // personal-data keys, and says so; init never stops for it.
        Err(e) => {
            tracing::warn!(error = %e, "the pii token's PIN is not available: its token is not made or checked now");
            return Ok(false);
        }
    };
    let so_pin = match default_pin_files(config) {
        Some((_, so)) => Some(
            std::fs::read_to_string(&so)
                .map_err(|e| Error::Io {
                    context: format!("reading {}", so.display()),
                    source: e,
                })?
                .trim()
                .to_string(),
        ),
        None => std::env::var(PII_SO_PIN_ENV).ok().filter(|p| !p.is_empty()),
    };
    let mut cfg = pii_token_config(config, &pin);
    cfg.so_pin = so_pin;
    hsm::pkcs11::init_token(&cfg).map_err(|e| match e {
        hsm::Error::Config(m) if m.contains("SO PIN") => Error::Config(format!(
            "the pii token {:?} does not exist yet: set {PII_SO_PIN_ENV} to the SO PIN the data \
             owner chose for it",
            config.hsm.pii_token_label
        )),
        e => e.into(),
    })?;
    Ok(true)
}

/// The `pii` token's seal and index keys, made if missing and `may_create` (audited). Keys are
/// made only for a database with no personal-data key and no sealed personal data (or by the
/// migration): a token without them is otherwise the wrong token, not a new one.
async fn pii_keys(
    config: &Config,
    store: &Store,
    pin: &str,
    actor: &str,
    may_create: bool,
) -> Result<(hsm::pkcs11::Pkcs11Secret, hsm::pkcs11::Pkcs11Secret)> {
    let label = config.hsm.pii_token_label.clone();
    let cfg = pii_token_config(config, pin);
    let (seal, index, made) = blocking(move || {
        let token = hsm::pkcs11::Token::open(&cfg)?;
        let mut made = Vec::new();
        let mut get = |key_label: &'static str, kind| -> Result<hsm::pkcs11::Pkcs11Secret> {
            Ok(match token.find_secret(key_label, kind)? {
                Some(k) => k,
                None if may_create => {
                    made.push(key_label);
                    token.generate_secret(key_label, kind)?
                }
                None => {
                    return Err(Error::Conflict(format!(
                        "the {label} token has no {key_label} key, but the database holds \
                         personal data sealed under it: wrong token (hsm.pii_token_label, \
                         hsm.module); no new key is made"
                    )))
                }
            })
        };
        let seal = get(
            crate::pii::SEAL_KEY_LABEL,
            hsm::pkcs11::SecretKind::Aes256Gcm,
        )?;
        let index = get(
            crate::pii::INDEX_KEY_LABEL,
            hsm::pkcs11::SecretKind::HmacSha256,
        )?;
        Ok((seal, index, made))
    })
    .await?;
    for label in made {
        store
            .audit_now(&Event {
                kind: "pii.key_created",
                actor: actor.to_string(),
                subject: None,
                detail: json!({ "key_label": label, "token": config.hsm.pii_token_label }),
            })
            .await?;
    }
    Ok((seal, index))
}

/// Whether the database holds data sealed under `purpose`'s data key (then a missing key is
/// never replaced by a new one: that would orphan the data, or — made by whoever holds the
/// database and a token of their own — seal what comes next under keys they hold).
async fn sealed_data_exists(store: &Store, purpose: Purpose) -> Result<bool> {
    let sql = match purpose {
        Purpose::PersonalData => "SELECT COUNT(*) FROM applications WHERE length(hkid_sealed) > 0",
        Purpose::StaffAuth => {
            "SELECT (SELECT COUNT(*) FROM staff) + (SELECT COUNT(*) FROM problem_reports)"
        }
    };
    let n: i64 = sqlx::query_scalar(sql).fetch_one(store.pool()).await?;
    Ok(n > 0)
}

/// Opens the data key of `purpose` sealed by `seal`; on first use (no key stored and nothing
/// sealed yet) makes and stores one, audited. A key missing while sealed data exists is an
/// error naming the problem, never a new key.
async fn open_sealed(
    store: &Store,
    purpose: Purpose,
    meta: &'static str,
    seal: hsm::pkcs11::Pkcs11Secret,
    index: Option<Arc<dyn hsm::Mac>>,
    actor: &str,
) -> Result<Vault> {
    if store.meta(meta).await?.is_none() {
        if sealed_data_exists(store, purpose).await? {
            return Err(Error::Conflict(format!(
                "the database holds data sealed under the {} data key, but the key ({meta}) is \
                 missing: restore the database; no new key is made",
                purpose_name(purpose)
            )));
        }
        make_data_key(store, purpose, meta, &seal, index.clone(), actor).await?;
    }
    let stored = store.meta(meta).await?.ok_or(Error::NotInitialised)?;
    let sealed =
        hex::decode(stored).map_err(|_| Error::Store(format!("the stored {meta} is not hex")))?;
    blocking(move || Vault::open(purpose, &seal, &sealed, index)).await
}

fn purpose_name(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::PersonalData => "personal-data",
        Purpose::StaffAuth => "staff-auth",
    }
}

/// Makes a data key, stores it sealed (the first stored key wins a race between processes)
/// and audits it.
async fn make_data_key(
    store: &Store,
    purpose: Purpose,
    meta: &'static str,
    seal: &hsm::pkcs11::Pkcs11Secret,
    index: Option<Arc<dyn hsm::Mac>>,
    actor: &str,
) -> Result<()> {
    let s2 = seal.clone();
    let (_, sealed) = blocking(move || Vault::create(purpose, &s2, index)).await?;
    let mut tx = store.begin().await?;
    let stored = store
        .meta_init(&mut tx, meta, &hex::encode(&sealed))
        .await?;
    if stored == hex::encode(&sealed) {
        store
            .audit(
                &mut tx,
                &Event {
                    kind: match purpose {
                        Purpose::PersonalData => "pii.data_key_created",
                        Purpose::StaffAuth => "staff_auth.data_key_created",
                    },
                    actor: actor.to_string(),
                    subject: None,
                    detail: json!({ "meta": meta }),
                },
            )
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// True when the data directory keeps the personal-data keys in the `ca` token (made before
/// custody was separated) and [`migrate`] has not run.
pub async fn is_legacy(store: &Store) -> Result<bool> {
    Ok(store
        .meta(crate::pii::LEGACY_DATA_KEY_META)
        .await?
        .is_some()
        && store.meta(LAYOUT_META).await?.as_deref() != Some(LAYOUT_SEPARATED))
}

/// Refuses to run on a legacy layout, naming the command that migrates it.
pub(crate) async fn require_separated(store: &Store) -> Result<()> {
    if is_legacy(store).await? {
        return Err(Error::Config(
            "this data directory keeps the personal-data keys in the CA token (made before \
             custody was separated): run `ecert custody migrate` once, with the pii token's PIN"
                .into(),
        ));
    }
    Ok(())
}

/// Records the separated layout for a new data directory (never over a legacy one).
pub(crate) async fn mark_new_layout(store: &Store) -> Result<()> {
    if store
        .meta(crate::pii::LEGACY_DATA_KEY_META)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    store
        .meta_init(&mut tx, LAYOUT_META, LAYOUT_SEPARATED)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The staff-auth key in the `ca` token, made if missing (audited).
pub(crate) async fn staff_auth_key(
    token: &hsm::pkcs11::Token,
    store: &Store,
    actor: &str,
    create: bool,
) -> Result<hsm::pkcs11::Pkcs11Secret> {
    let t = token.clone();
    let (key, made) = blocking(move || {
        let kind = hsm::pkcs11::SecretKind::Aes256Gcm;
        Ok(
            match t.find_secret(crate::pii::STAFF_AUTH_KEY_LABEL, kind)? {
                Some(k) => (k, false),
                None if create => (
                    t.generate_secret(crate::pii::STAFF_AUTH_KEY_LABEL, kind)?,
                    true,
                ),
                None => return Err(Error::NotInitialised),
            },
        )
    })
    .await?;
    if made {
        store
            .audit_now(&Event {
                kind: "staff_auth.key_created",
                actor: actor.to_string(),
                subject: None,
                detail: json!({ "key_label": crate::pii::STAFF_AUTH_KEY_LABEL }),
            })
            .await?;
    }
    Ok(key)
}

/// The staff-auth vault: its key in the `ca` token, its data key in `meta` (made on first use).
pub(crate) async fn open_staff_vault(
    token: &hsm::pkcs11::Token,
    store: &Store,
    actor: &str,
    create: bool,
) -> Result<Vault> {
    let key = staff_auth_key(token, store, actor, create).await?;
    open_sealed(
        store,
        Purpose::StaffAuth,
        crate::pii::STAFF_KEY_META,
        key,
        None,
        actor,
    )
    .await
}

/// Opens the personal-data vault with the `pii` token's PIN (keys and data key made on first
/// use). A wrong PIN or a missing token is an error naming the token, never the PIN.
pub(crate) async fn open_pii_vault(
    config: &Config,
    store: &Store,
    pin: &str,
    actor: &str,
) -> Result<Vault> {
    require_separated(store).await?;
    let may_create = store.meta(crate::pii::DATA_KEY_META).await?.is_none()
        && !sealed_data_exists(store, Purpose::PersonalData).await?;
    let (seal, index) = pii_keys(config, store, pin, actor, may_create).await?;
    let index: Arc<dyn hsm::Mac> = Arc::new(index);
    open_sealed(
        store,
        Purpose::PersonalData,
        crate::pii::DATA_KEY_META,
        seal,
        Some(index),
        actor,
    )
    .await
}

/// What [`migrate`] did.
#[derive(Debug, Default)]
pub struct MigrationReport {
    /// False when the data directory was separated already (only leftovers were cleared).
    pub migrated: bool,
    /// Staff TOTP secrets sealed again under the staff-auth key.
    pub totp_secrets: usize,
    /// Problem reports sealed again under the staff-auth key.
    pub problem_reports: usize,
    /// Applications whose personal fields were sealed again under the new data key, and whose
    /// blind index was computed again under the `pii` token's index key.
    pub applications: usize,
    /// Old key objects destroyed in the `ca` token.
    pub destroyed: usize,
}

crate::row::row! {
    struct StaffSealed {
        id: String,
        totp_sealed: Vec<u8>,
    }
}

crate::row::row! {
    struct ReportSealed {
        id: String,
        reporter_sealed: Vec<u8>,
        description_sealed: Vec<u8>,
    }
}

crate::row::row! {
    struct AppSealed {
        id: String,
        hkid_sealed: Vec<u8>,
        dob_sealed: Vec<u8>,
        phone_sealed: Vec<u8>,
        address_sealed: Vec<u8>,
    }
}

/// Moves a legacy data directory to separated custody (see the module documentation). Needs
/// the signer lock (no `serve` runs) and the `pii` token's PIN ([`Config::pii_pin`]).
pub async fn migrate(config: &Config, store: &Store, actor: &str) -> Result<MigrationReport> {
    let mut report = MigrationReport::default();
    let ca_token = {
        let cfg = config.clone();
        blocking(move || crate::authority::open_token(&cfg)).await?
    };
    if is_legacy(store).await? {
        // Embedded mode makes the pii token first (with the default PIN files, those too).
        if config.embedded_softhsm() {
            let cfg = config.clone();
            blocking(move || init_embedded_pii_token(&cfg).map(|_| ())).await?;
        }
        let pin = config.pii_pin()?.ok_or_else(|| {
            Error::Config(
                "the custody migration needs the pii token's PIN once: set ECERT_PII_PIN or \
                 hsm.pii_pin"
                    .into(),
            )
        })?;
        let pin = Zeroizing::new(pin);
        // The old keys, in the `ca` token.
        let t = ca_token.clone();
        let (old_seal, old_index) = blocking(move || {
            Ok((
                t.find_secret(
                    crate::pii::SEAL_KEY_LABEL,
                    hsm::pkcs11::SecretKind::Aes256Gcm,
                )?,
                t.find_secret(
                    crate::pii::INDEX_KEY_LABEL,
                    hsm::pkcs11::SecretKind::HmacSha256,
                )?,
            ))
        })
        .await?;
        let (Some(old_seal), Some(old_index)) = (old_seal, old_index) else {
            return Err(Error::Config(
                "the old personal-data keys are not in the CA token: this data directory cannot \
                 be migrated (restore the token from its backup)"
                    .into(),
            ));
        };
        // A data key left by a run that stopped before its commit is never stored (it is
        // stored in the transaction below), so the pii token's keys may be made here.
        let (new_seal, new_index) = pii_keys(config, store, &pin, actor, true).await?;
        if store.meta(crate::pii::STAFF_KEY_META).await?.is_none() {
            let key = staff_auth_key(&ca_token, store, actor, true).await?;
            make_data_key(
                store,
                Purpose::StaffAuth,
                crate::pii::STAFF_KEY_META,
                &key,
                None,
                actor,
            )
            .await?;
        }
        let staff = open_staff_vault(&ca_token, store, actor, true).await?;
        let legacy_sealed = hex::decode(
            store
                .meta(crate::pii::LEGACY_DATA_KEY_META)
                .await?
                .ok_or(Error::NotInitialised)?,
        )
        .map_err(|_| Error::Store("the stored personal-data key is not hex".into()))?;
        // The old data key was sealed by a key in the ca token, which the operator opens (and
        // old backups of that token keep): every personal field is sealed again under a NEW
        // data key, sealed only by the pii token.
        let new_index: Arc<dyn hsm::Mac> = Arc::new(new_index);
        let (raw, new, new_sealed) = {
            let i2 = new_index.clone();
            blocking(move || {
                let raw = Zeroizing::new(Vault::unseal_raw(
                    Purpose::PersonalData,
                    &old_seal,
                    &legacy_sealed,
                )?);
                let (new, sealed) = Vault::create(Purpose::PersonalData, &new_seal, Some(i2))?;
                Ok((raw, new, sealed))
            })
            .await?
        };
        let old_index: Arc<dyn hsm::Mac> = Arc::new(old_index);
        let old = Vault::from_raw(Purpose::PersonalData, &raw, Some(old_index))?;
        drop(raw);

        // Everything is computed before the transaction, which only writes.
        let staff_rows: Vec<StaffSealed> = sqlx::query_as("SELECT id, totp_sealed FROM staff")
            .fetch_all(store.pool())
            .await?;
        let mut totp = Vec::new();
        for r in staff_rows {
            let secret = old.open_legacy_field(Field::TotpSecret, &r.id, &r.totp_sealed)?;
            totp.push((r.id.clone(), staff.seal(Field::TotpSecret, &r.id, &secret)?));
        }
        let report_rows: Vec<ReportSealed> =
            sqlx::query_as("SELECT id, reporter_sealed, description_sealed FROM problem_reports")
                .fetch_all(store.pool())
                .await?;
        let mut reports = Vec::new();
        for r in report_rows {
            let who = old.open_legacy_field(Field::Reporter, &r.id, &r.reporter_sealed)?;
            let text = old.open_legacy_field(Field::ReportText, &r.id, &r.description_sealed)?;
            reports.push((
                r.id.clone(),
                staff.seal(Field::Reporter, &r.id, &who)?,
                staff.seal(Field::ReportText, &r.id, &text)?,
            ));
        }
        let app_rows: Vec<AppSealed> = sqlx::query_as(
            "SELECT id, hkid_sealed, dob_sealed, phone_sealed, address_sealed FROM applications \
             WHERE length(hkid_sealed) > 0",
        )
        .fetch_all(store.pool())
        .await?;
        let mut apps = Vec::new();
        let new = Arc::new(new);
        for r in app_rows {
            let again = |field: Field, sealed: &[u8]| -> Result<Vec<u8>> {
                if sealed.is_empty() {
                    return Ok(Vec::new());
                }
                let plain = old.open_field(field, &r.id, sealed)?;
                new.seal(field, &r.id, &plain)
            };
            let sealed = [
                again(Field::Hkid, &r.hkid_sealed)?,
                again(Field::DateOfBirth, &r.dob_sealed)?,
                again(Field::Phone, &r.phone_sealed)?,
                again(Field::Address, &r.address_sealed)?,
            ];
            let hkid = old.open_field(Field::Hkid, &r.id, &r.hkid_sealed)?;
            let v = new.clone();
            let index = blocking(move || v.blind_index(Field::Hkid, &hkid)).await?;
            apps.push((r.id, sealed, index));
        }

        let mut tx = store.begin().await?;
        for (id, sealed) in &totp {
            sqlx::query("UPDATE staff SET totp_sealed = $1 WHERE id = $2")
                .bind(sealed.clone())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for (id, who, text) in &reports {
            sqlx::query(
                "UPDATE problem_reports SET reporter_sealed = $1, description_sealed = $2 WHERE id = $3",
            )
            .bind(who.clone())
            .bind(text.clone())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        for (id, [hkid, dob, phone, address], index) in &apps {
            sqlx::query(
                "UPDATE applications SET hkid_sealed = $1, dob_sealed = $2, phone_sealed = $3, \
                 address_sealed = $4, hkid_index = $5 WHERE id = $6",
            )
            .bind(hkid.clone())
            .bind(dob.clone())
            .bind(phone.clone())
            .bind(address.clone())
            .bind(index.to_vec())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        store
            .meta_init(
                &mut tx,
                crate::pii::DATA_KEY_META,
                &hex::encode(&new_sealed),
            )
            .await?;
        // The old sealed key goes with the old seal key: nothing left opens under it.
        sqlx::query("DELETE FROM meta WHERE key = $1")
            .bind(crate::pii::LEGACY_DATA_KEY_META)
            .execute(&mut *tx)
            .await?;
        store
            .meta_init(&mut tx, LAYOUT_META, LAYOUT_SEPARATED)
            .await?;
        store
            .audit(
                &mut tx,
                &Event {
                    kind: "custody.migrated",
                    actor: actor.to_string(),
                    subject: None,
                    detail: json!({
                        "pii_token": config.hsm.pii_token_label,
                        "totp_secrets": totp.len(),
                        "problem_reports": reports.len(),
                        "applications": apps.len(),
                    }),
                },
            )
            .await?;
        tx.commit().await?;
        report.migrated = true;
        report.totp_secrets = totp.len();
        report.problem_reports = reports.len();
        report.applications = apps.len();
    }
    // The old key objects go (also when an earlier run stopped after its commit).
    let t = ca_token.clone();
    let destroyed = blocking(move || {
        let mut n = 0;
        for label in [crate::pii::SEAL_KEY_LABEL, crate::pii::INDEX_KEY_LABEL] {
            n += t.destroy_secret(label)?;
        }
        Ok(n)
    })
    .await?;
    if destroyed > 0 {
        store
            .audit_now(&Event {
                kind: "custody.old_keys_destroyed",
                actor: actor.to_string(),
                subject: None,
                detail: json!({
                    "token": config.hsm.token_label,
                    "key_labels": [crate::pii::SEAL_KEY_LABEL, crate::pii::INDEX_KEY_LABEL],
                    "objects": destroyed,
                }),
            })
            .await?;
    }
    report.destroyed = destroyed;
    Ok(report)
}
