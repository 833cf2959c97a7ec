//! Backup and restore (issue 17; docs/OPERATIONS.md "Backup and restore").
//!
//! `ecert backup --out FILE` runs beside a live service. The archive is a tar file holding:
//! - `database.age`: a consistent snapshot of the database (SQLite `VACUUM INTO`; PostgreSQL
//!   `pg_dump --format=custom` inside the repeatable-read snapshot the manifest's numbers were
//!   read in) and the configuration file, encrypted to the **operator**;
//! - `ca-token.age`: the embedded SoftHSM2 token holding the CA, responder and audit keys, with
//!   its PIN files, encrypted to every **key custodian** in turn (one age layer each, so all of
//!   them must take part to open it: key backups are dual-controlled, TLS BR §5.2.2, §6.2.4);
//! - `pii-token.age`: the `pii` token (the personal-data keys) and its PIN files, encrypted to
//!   the **data owner**;
//! - `manifest.json` (what is in it: the SHA-256 of each part, the audit head and the CRL
//!   numbers at the snapshot) and `manifest.sig`, its signature by the audit key.
//!
//! The root token is never in it (roots sign only in ceremonies, from their own offline
//! token). Each part is a standard age file: `age -d -i KEY` opens it (the custodians' part
//! once per custodian, outermost first), and inside is a tar file.
//!
//! `ecert restore FILE` refuses an archive whose manifest signature does not verify under the
//! audit public key the restorer trusts (from `ecert audit key`, kept apart), or whose parts do
//! not match the manifest; it writes into an empty data directory and an empty database only,
//! and removes what it wrote if it fails after the first write. Then it moves every CRLNumber
//! past anything the lost machine could have issued after the backup (to the restore time in
//! Unix milliseconds: CRLNumbers never repeat or go back), appends a signed `audit.restored`
//! record that names the range of audit records lost, taken from the witness copy — the
//! restored chain continues after the witness's last checkpoint, from its hash, so `audit
//! verify` and `audit verify --witness` both pass and show the gap — and makes again the
//! revocations the last published CRLs list ([`reapply_crls`]).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::{Engine, Store};

/// The archive format.
pub const FORMAT: &str = "ecert-backup-v1";
/// What the audit key signs: this, then the manifest's bytes.
const MANIFEST_DOMAIN: &[u8] = b"ecert-backup-manifest-v1\n";
/// What the audit key signs for an `audit.restored` record: this, then
/// [`restored_message`]'s fields.
const RESTORED_DOMAIN: &[u8] = b"ecert-audit-restored-v1";

/// The manifest: what the archive holds, signed by the audit key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// When the snapshot was taken, Unix seconds.
    pub created_at: i64,
    /// `sqlite` or `postgres`.
    pub engine: String,
    /// The CA's policy arc (which installation this is).
    pub policy_arc: String,
    /// The audit chain's last record in the snapshot.
    pub audit_seq: i64,
    /// Its hash, hex.
    pub audit_hash: String,
    /// The last CRLNumber handed out per issuer in the snapshot.
    pub crl_numbers: BTreeMap<String, i64>,
    /// The parts, in archive order.
    pub parts: Vec<Part>,
    /// Where the HSM keys are: `embedded` (the SoftHSM2 tokens are parts) or `external` (back
    /// them up by the module's own procedure).
    pub hsm: String,
}

/// One encrypted part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Part {
    /// `database`, `ca-token` or `pii-token`; the archive entry is `<name>.age`.
    pub name: String,
    /// Who can open it: `operator`, `key_custodians` or `data_owner`.
    pub holder: String,
    /// age layers (one per custodian for `ca-token`, else one).
    pub layers: usize,
    /// SHA-256 of the encrypted bytes, hex.
    pub sha256: String,
}

/// What [`make`] wrote.
#[derive(Debug)]
pub struct Made {
    /// The manifest.
    pub manifest: Manifest,
    /// SHA-256 of the manifest's bytes, hex (named in the `backup.made` audit record).
    pub manifest_sha256: String,
    /// The archive's size in bytes.
    pub bytes: u64,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

fn refused(why: impl Into<String>) -> Error {
    Error::Backup(why.into())
}

/// Parses `age1…` recipients.
pub fn recipients(list: &[String], what: &str) -> Result<Vec<age::x25519::Recipient>> {
    list.iter()
        .map(|r| {
            r.trim().parse::<age::x25519::Recipient>().map_err(|e| {
                Error::Config(format!("backup.{what}: {r:?} is not an age recipient: {e}"))
            })
        })
        .collect()
}

/// Encrypts `plain` to any one of `to` (one age layer).
fn seal(plain: &[u8], to: &[age::x25519::Recipient]) -> Result<Vec<u8>> {
    let encryptor = age::Encryptor::with_recipients(to.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|e| refused(format!("age: {e}")))?;
    let mut out = Vec::with_capacity(plain.len() + 512);
    let mut w = encryptor
        .wrap_output(&mut out)
        .map_err(io("encrypting a backup part"))?;
    w.write_all(plain).map_err(io("encrypting a backup part"))?;
    w.finish().map_err(io("encrypting a backup part"))?;
    Ok(out)
}

/// Removes one age layer with any of `ids`; `None` if none of them is a recipient.
fn open_layer(sealed: &[u8], ids: &[age::x25519::Identity]) -> Result<Option<Vec<u8>>> {
    let d = age::Decryptor::new(sealed).map_err(|e| refused(format!("not an age file: {e}")))?;
    match d.decrypt(ids.iter().map(|i| i as &dyn age::Identity)) {
        Ok(mut r) => {
            let mut out = Vec::new();
            r.read_to_end(&mut out)
                .map_err(|e| refused(format!("a backup part does not decrypt whole: {e}")))?;
            Ok(Some(out))
        }
        Err(age::DecryptError::NoMatchingKeys) => Ok(None),
        Err(e) => Err(refused(format!("a backup part does not decrypt: {e}"))),
    }
}

/// Reads age identity files (`AGE-SECRET-KEY-1…` lines; `#` comments, as age-keygen writes).
pub fn identities(files: &[PathBuf]) -> Result<Vec<age::x25519::Identity>> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(io(format!("reading {}", f.display())))?;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(line.parse::<age::x25519::Identity>().map_err(|e| {
                Error::Config(format!("{}: not an age identity: {e}", f.display()))
            })?);
        }
    }
    Ok(out)
}

/// A tar file in memory from (name, bytes, mode).
fn tar_of(files: &[(String, Vec<u8>, u32)]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice())
            .map_err(io("building a backup part"))?;
    }
    b.into_inner().map_err(io("building a backup part"))
}

/// The files of a tar file in memory, by name. Only plain files with relative, `..`-free names.
fn untar(data: &[u8]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(data);
    for e in a
        .entries()
        .map_err(|e| refused(format!("not a tar file: {e}")))?
    {
        let mut e = e.map_err(|e| refused(format!("not a tar file: {e}")))?;
        let name = e
            .path()
            .map_err(|e| refused(format!("bad entry name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let safe = !name.starts_with('/')
            && Path::new(&name)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe || e.header().entry_type() != tar::EntryType::Regular {
            return Err(refused(format!(
                "the archive holds an unsafe entry {name:?}"
            )));
        }
        let mut buf = Vec::new();
        e.read_to_end(&mut buf)
            .map_err(|e| refused(format!("a truncated entry {name:?}: {e}")))?;
        out.insert(name, buf);
    }
    Ok(out)
}

/// The embedded SoftHSM2 token directory whose token has `label` (its `token.object` holds
/// the label padded to 32 bytes with spaces, as PKCS#11 labels are).
fn token_dir(config: &Config, label: &str) -> Result<Option<PathBuf>> {
    let tokens = config.hsm_dir().join("tokens");
    let Ok(entries) = std::fs::read_dir(&tokens) else {
        return Ok(None);
    };
    let mut padded = label.as_bytes().to_vec();
    padded.resize(32, b' ');
    for e in entries {
        let dir = e
            .map_err(io(format!("reading {}", tokens.display())))?
            .path();
        if let Ok(obj) = std::fs::read(dir.join("token.object")) {
            if obj.windows(32).any(|w| w == padded.as_slice()) {
                return Ok(Some(dir));
            }
        }
    }
    Ok(None)
}

/// The token directory `label`'s files (object files, token.object, generation; not the lock
/// files SoftHSM2 makes again) under `tokens/<dir>/`, plus the PIN files named.
fn token_files(config: &Config, label: &str, pins: &[&str]) -> Result<Vec<(String, Vec<u8>, u32)>> {
    let dir = token_dir(config, label)?
        .ok_or_else(|| refused(format!("the embedded token {label:?} was not found")))?;
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut files = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(io(format!("reading {}", dir.display())))? {
        let p = e.map_err(io(format!("reading {}", dir.display())))?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".lock") || !p.is_file() {
            continue;
        }
        let data = std::fs::read(&p).map_err(io(format!("reading {}", p.display())))?;
        files.push((format!("tokens/{dir_name}/{name}"), data, 0o600));
    }
    for pin in pins {
        let p = config.hsm_dir().join(pin);
        if p.is_file() {
            let data = std::fs::read(&p).map_err(io(format!("reading {}", p.display())))?;
            files.push(((*pin).to_string(), data, 0o600));
        }
    }
    files.sort();
    Ok(files)
}

/// A consistent snapshot of the database as (file name, bytes) and the manifest's numbers
/// read in that same snapshot: (audit seq, audit hash, CRL numbers).
async fn snapshot(
    config: &Config,
    store: &Store,
    scratch: &Path,
) -> Result<((String, Vec<u8>), i64, Vec<u8>, BTreeMap<String, i64>)> {
    use sqlx::Row;
    match store.engine() {
        Engine::Sqlite => {
            let file = scratch.join("snapshot.sqlite");
            // One statement, one read transaction: the copy is of one instant.
            sqlx::query("VACUUM INTO $1")
                .bind(file.to_string_lossy().into_owned())
                .execute(store.pool())
                .await?;
            let (seq, hash, crls) = {
                use sqlx::Connection;
                let mut c =
                    sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=ro", file.display()))
                        .await?;
                let n = numbers(&mut c).await?;
                let _ = c.close().await;
                n
            };
            let bytes = std::fs::read(&file).map_err(io("reading the snapshot"))?;
            Ok((("database.sqlite".into(), bytes), seq, hash, crls))
        }
        Engine::Postgres => {
            // The numbers are read in a repeatable-read transaction whose snapshot pg_dump
            // then uses (--snapshot), held open until it is done.
            let mut conn = store.pool().acquire().await?;
            sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *conn)
                .await?;
            let id: String = sqlx::query("SELECT pg_export_snapshot() AS id")
                .fetch_one(&mut *conn)
                .await?
                .try_get("id")?;
            let (seq, hash, crls) = numbers(&mut conn).await?;
            let file = scratch.join("snapshot.pgdump");
            let mut c = std::process::Command::new("pg_dump");
            c.arg("--format=custom")
                .arg("--no-owner")
                .arg("--no-privileges")
                .arg(format!("--snapshot={id}"))
                .arg("--file")
                .arg(&file)
                .arg(config.database_url());
            let out = run_tool(c, "pg_dump").await?;
            let _ = sqlx::query("COMMIT").execute(&mut *conn).await;
            if !out.status.success() {
                return Err(refused(format!(
                    "pg_dump failed: {}",
                    crate::store::redact_url(
                        &String::from_utf8_lossy(&out.stderr),
                        &config.database_url()
                    )
                )));
            }
            let bytes = std::fs::read(&file).map_err(io("reading the dump"))?;
            Ok((("database.pgdump".into(), bytes), seq, hash, crls))
        }
    }
}

async fn numbers(conn: &mut sqlx::AnyConnection) -> Result<(i64, Vec<u8>, BTreeMap<String, i64>)> {
    use sqlx::Row;
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let crls = sqlx::query("SELECT issuer, last FROM crl_numbers")
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| {
            Ok((
                r.try_get::<String, _>("issuer")?,
                r.try_get::<i64, _>("last")?,
            ))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    Ok((head.try_get("seq")?, head.try_get("hash")?, crls))
}

/// Signs `message` (with its domain prefix) with the audit key, opening the token without the
/// signer lock (a backup runs beside the live service).
async fn sign_with_audit_key(config: &Config, message: Vec<u8>) -> Result<Vec<u8>> {
    let cfg = config.clone();
    tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let token = crate::authority::open_token(&cfg)?;
        let key = token.key(crate::authority::AUDIT_KEY_LABEL)?;
        Ok(hsm::Signer::sign(&key, &message)?)
    })
    .await
    .map_err(|e| Error::Store(e.to_string()))?
}

/// `ecert backup --out FILE`: see the module documentation. Audited (`backup.made`).
pub async fn make(config: &Config, out: &Path, actor: &str) -> Result<Made> {
    let b = &config.backup;
    let operator = recipients(&b.operator, "operator")?;
    let custodians = recipients(&b.key_custodians, "key_custodians")?;
    let owner = recipients(&b.data_owner, "data_owner")?;
    // Dual control needs different people: no custodian twice, none also the operator.
    let distinct: std::collections::HashSet<String> =
        custodians.iter().map(ToString::to_string).collect();
    if distinct.len() != custodians.len()
        || operator.iter().any(|o| distinct.contains(&o.to_string()))
    {
        return Err(Error::Config(
            "[backup] key_custodians must be different people: no recipient twice, none also an operator"
                .into(),
        ));
    }
    if operator.is_empty() || owner.is_empty() || custodians.len() < 2 {
        return Err(Error::Config(
            "[backup] needs operator and data_owner recipients and at least two key_custodians \
             (key backups are dual-controlled: TLS BR §5.2.2, §6.2.4)"
                .into(),
        ));
    }
    let store = Store::open(&config.database_url()).await?;
    let policy_arc = store
        .meta("policy_arc")
        .await?
        .ok_or(Error::NotInitialised)?;
    // The plaintext snapshot never leaves the data directory (owner only).
    let scratch = tempfile::Builder::new()
        .prefix(".ecert-backup.")
        .tempdir_in(&config.data_dir)
        .map_err(io("making a scratch directory in the data directory"))?;
    set_mode(scratch.path(), 0o700)?;
    let created_at = time::OffsetDateTime::now_utc().unix_timestamp();
    let ((db_name, db_bytes), audit_seq, audit_hash, crl_numbers) =
        snapshot(config, &store, scratch.path()).await?;
    let mut db_files = vec![(db_name, db_bytes, 0o600)];
    let toml = config.data_dir.join("ecert.toml");
    if toml.is_file() {
        db_files.push((
            "ecert.toml".into(),
            std::fs::read(&toml).map_err(io("reading ecert.toml"))?,
            0o600,
        ));
    }
    let mut parts = vec![(
        "database",
        "operator",
        1,
        seal(&tar_of(&db_files)?, &operator)?,
    )];
    let embedded = config.embedded_softhsm();
    if embedded {
        let mut ca = tar_of(&token_files(
            config,
            &config.hsm.token_label,
            &["user.pin", "so.pin"],
        )?)?;
        // One layer per custodian, the last one's outermost: every one of them must open it.
        for c in &custodians {
            ca = seal(&ca, std::slice::from_ref(c))?;
        }
        parts.push(("ca-token", "key_custodians", custodians.len(), ca));
        if token_dir(config, &config.hsm.pii_token_label)?.is_some() {
            let pii = token_files(
                config,
                &config.hsm.pii_token_label,
                &["pii-user.pin", "pii-so.pin"],
            )?;
            parts.push(("pii-token", "data_owner", 1, seal(&tar_of(&pii)?, &owner)?));
        }
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at,
        engine: match store.engine() {
            Engine::Sqlite => "sqlite".into(),
            Engine::Postgres => "postgres".into(),
        },
        policy_arc,
        audit_seq,
        audit_hash: hex::encode(&audit_hash),
        crl_numbers,
        parts: parts
            .iter()
            .map(|(name, holder, layers, bytes)| Part {
                name: (*name).into(),
                holder: (*holder).into(),
                layers: *layers,
                sha256: hex::encode(Sha256::digest(bytes)),
            })
            .collect(),
        hsm: if embedded { "embedded" } else { "external" }.into(),
    };
    let manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Encoding(e.to_string()))?;
    let mut message = MANIFEST_DOMAIN.to_vec();
    message.extend_from_slice(&manifest_bytes);
    let signature = sign_with_audit_key(config, message).await?;
    let mut archive = vec![
        ("manifest.json".to_string(), manifest_bytes.clone(), 0o600),
        ("manifest.sig".to_string(), signature, 0o600),
    ];
    for (name, _, _, bytes) in parts {
        archive.push((format!("{name}.age"), bytes, 0o600));
    }
    let bytes = tar_of(&archive)?;
    // Written whole or not at all, beside its destination (0600 from the start).
    let tmp = {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "backup".into());
        out.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
    };
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("writing the archive"))?;
        f.write_all(&bytes).map_err(io("writing the archive"))?;
        f.sync_all().map_err(io("writing the archive"))?;
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(format!("writing {}", out.display()))(e));
    }
    let manifest_sha256 = hex::encode(Sha256::digest(&manifest_bytes));
    store
        .audit_now(&crate::audit::Event {
            kind: "backup.made",
            actor: actor.into(),
            subject: None,
            detail: serde_json::json!({
                "manifest_sha256": manifest_sha256,
                "audit_seq": manifest.audit_seq,
                "parts": manifest.parts.iter().map(|p| &p.name).collect::<Vec<_>>(),
                "hsm": manifest.hsm,
            }),
        })
        .await?;
    Ok(Made {
        manifest,
        manifest_sha256,
        bytes: bytes.len() as u64,
    })
}

/// An archive read and checked: its manifest's signature verifies under `audit_spki` and every
/// part is the one the manifest names.
pub struct Checked {
    /// The manifest.
    pub manifest: Manifest,
    /// SHA-256 of its bytes, hex.
    pub manifest_sha256: String,
    parts: BTreeMap<String, Vec<u8>>,
}

/// Reads `archive` and checks it; [`Error::Backup`] names what is wrong.
pub fn check(archive: &[u8], audit_spki: &[u8]) -> Result<Checked> {
    let files = untar(archive)?;
    let manifest_bytes = files
        .get("manifest.json")
        .ok_or_else(|| refused("the archive has no manifest.json"))?;
    let signature = files
        .get("manifest.sig")
        .ok_or_else(|| refused("the archive has no manifest.sig"))?;
    let mut message = MANIFEST_DOMAIN.to_vec();
    message.extend_from_slice(manifest_bytes);
    hsm::verify(hsm::Algorithm::EcdsaP256Sha256, audit_spki, &message, signature).map_err(|_| {
        refused("the archive's signature does not verify under the audit key given: it was not made by this CA, or it was altered")
    })?;
    let manifest: Manifest = serde_json::from_slice(manifest_bytes)
        .map_err(|e| refused(format!("manifest.json: {e}")))?;
    if manifest.format != FORMAT {
        return Err(refused(format!(
            "unknown archive format {:?}",
            manifest.format
        )));
    }
    let mut parts = BTreeMap::new();
    for p in &manifest.parts {
        let bytes = files
            .get(&format!("{}.age", p.name))
            .ok_or_else(|| refused(format!("the part {} is missing", p.name)))?;
        if hex::encode(Sha256::digest(bytes)) != p.sha256 {
            return Err(refused(format!(
                "the part {} is not the one the manifest names",
                p.name
            )));
        }
        parts.insert(p.name.clone(), bytes.clone());
    }
    Ok(Checked {
        manifest_sha256: hex::encode(Sha256::digest(manifest_bytes)),
        manifest,
        parts,
    })
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("manifest", &self.manifest)
            .field("manifest_sha256", &self.manifest_sha256)
            .finish_non_exhaustive()
    }
}

impl Checked {
    /// The files of part `name`, its layers removed with `ids`; `None` if the archive has no
    /// such part. [`Error::Backup`] names the holder whose key is missing.
    pub fn open(
        &self,
        name: &str,
        ids: &[age::x25519::Identity],
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        let Some(part) = self.manifest.parts.iter().find(|p| p.name == name) else {
            return Ok(None);
        };
        let mut data = self.parts.get(name).cloned().unwrap_or_default();
        for layer in 0..part.layers {
            data = open_layer(&data, ids)?.ok_or_else(|| {
                refused(format!(
                    "no identity given opens the part {name} (layer {} of {}): it is for the {}",
                    layer + 1,
                    part.layers,
                    part.holder.replace('_', " ")
                ))
            })?;
        }
        untar(&data).map(Some)
    }
}

/// The bytes the audit key signs for an `audit.restored` record.
pub fn restored_message(
    lost_from: i64,
    lost_to: i64,
    resumed_after: &[u8],
    manifest_sha256: &str,
) -> Vec<u8> {
    let mut m = RESTORED_DOMAIN.to_vec();
    m.extend_from_slice(&lost_from.to_be_bytes());
    m.extend_from_slice(&lost_to.to_be_bytes());
    m.extend_from_slice(resumed_after);
    m.extend_from_slice(manifest_sha256.as_bytes());
    m
}

/// What [`restore`] did.
#[derive(Debug)]
pub struct Restored {
    /// The archive's manifest.
    pub manifest: Manifest,
    /// Audit records lost (in the witness, not in the backup): first and last, if any.
    pub lost: Option<(i64, i64)>,
    /// Every CRLNumber now starts after this.
    pub crl_number_floor: i64,
    /// Certificates in the restored database.
    pub certificates: i64,
    /// What the CRLs given (`--crl`) revoked again.
    pub reapplied: Reapplied,
}

/// Whether `dir` is absent or empty.
fn empty_dir(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io(format!("reading {}", dir.display()))(e)),
    }
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    f.write_all(data)
        .map_err(io(format!("writing {}", path.display())))?;
    f.sync_all()
        .map_err(io(format!("writing {}", path.display())))
}

/// The archive's `ecert.toml` with what would reach the live CA's outside services turned
/// off — the witness copy, the LDAP directory, the mail relay — so that a restore (a drill, or
/// a rebuild not yet put in service) writes nothing where the live CA does: the operator turns
/// them on again when this copy is the CA. Returns the text and whether a witness was named.
fn quiet_config(text: &[u8]) -> Result<(String, bool)> {
    let text = std::str::from_utf8(text).map_err(|_| refused("ecert.toml is not UTF-8"))?;
    let mut v: toml::Table =
        toml::from_str(text).map_err(|e| refused(format!("the archive's ecert.toml: {e}")))?;
    let mut had_witness = false;
    if let Some(toml::Value::Table(audit)) = v.get_mut("audit") {
        had_witness |= audit.remove("witness").is_some();
        had_witness |= audit.remove("witness_url").is_some();
        audit.remove("witness_ca");
        audit.remove("witness_token_file");
    }
    if let Some(toml::Value::Table(ldap)) = v.get_mut("ldap") {
        ldap.remove("url");
    }
    if let Some(toml::Value::Table(ra)) = v.get_mut("ra") {
        ra.remove("smtp");
    }
    let out = format!(
        "# Restored by `ecert restore` from a backup. The audit witness, the LDAP directory and\n\
         # the mail relay of the original are off: set them again when this copy is the live CA\n\
         # (docs/OPERATIONS.md \"Backup and restore\").\n{}",
        toml::to_string(&v).map_err(|e| refused(format!("ecert.toml: {e}")))?
    );
    Ok((out, had_witness))
}

/// What a restore may have written, removed again if it fails (the data directory was absent
/// or empty and the database empty when it started: nothing else is touched).
struct Undo<'a> {
    data_dir: &'a Path,
    pg_url: Option<String>,
    done: bool,
}

impl Undo<'_> {
    async fn run(&mut self) {
        if self.done {
            return;
        }
        if let Ok(entries) = std::fs::read_dir(self.data_dir) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
        if let Some(url) = &self.pg_url {
            use sqlx::Connection;
            if let Ok(mut c) = sqlx::AnyConnection::connect(url).await {
                let _ = sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
                    .execute(&mut c)
                    .await;
                let _ = c.close().await;
            }
        }
    }
}

/// `ecert restore FILE`: see the module documentation. `data_dir` must be absent or empty and
/// the database the configuration names empty. Every check that can be made first is made
/// before anything is written (the archive's signature and parts, every part opened, the
/// witness's signatures, the configuration's engine and database); a failure after the first
/// write removes what the restore wrote, so a retry starts clean.
#[allow(clippy::too_many_arguments)]
pub async fn restore(
    data_dir: &Path,
    config_file: Option<&Path>,
    archive: &Path,
    audit_spki: &[u8],
    ids: &[age::x25519::Identity],
    witness: Option<&Path>,
    no_witness: bool,
    crls: &[PathBuf],
    actor: &str,
) -> Result<Restored> {
    let bytes = std::fs::read(archive).map_err(io(format!("reading {}", archive.display())))?;
    let checked = check(&bytes, audit_spki)?;
    drop(bytes);
    if !empty_dir(data_dir)? {
        return Err(refused(format!(
            "{} is not empty: restore into a new data directory",
            data_dir.display()
        )));
    }
    // Every part opened before anything is written.
    let db = checked
        .open("database", ids)?
        .ok_or_else(|| refused("the archive has no database part"))?;
    let ca = checked.open("ca-token", ids)?;
    let pii = checked.open("pii-token", ids)?;
    let witnessed = match witness {
        Some(w) => crate::audit::witness::read(w)?,
        None => Vec::new(),
    };
    for c in &witnessed {
        hsm::verify(
            hsm::Algorithm::EcdsaP256Sha256,
            audit_spki,
            &crate::audit::checkpoint_message(c.seq, &c.hash),
            &c.signature,
        )
        .map_err(|_| {
            refused(format!(
                "the witness's checkpoint at record {} is not signed by the audit key",
                c.seq
            ))
        })?;
    }
    // The configuration it will run with: the archive's (quietened) or the one given.
    let scratch = tempfile::tempdir().map_err(io("making a scratch directory"))?;
    set_mode(scratch.path(), 0o700)?;
    let (toml_text, had_witness) = match db.get("ecert.toml") {
        Some(t) => {
            let (text, w) = quiet_config(t)?;
            (Some(text), w)
        }
        None => (None, false),
    };
    if had_witness && witness.is_none() && !no_witness {
        return Err(refused(
            "the backed-up configuration names an audit witness: give its copy with --witness \
             (the records lost after the backup are read from it), or --no-witness to restore \
             without declaring them",
        ));
    }
    let config = match (config_file, &toml_text) {
        (Some(f), _) => Config::load(data_dir, Some(f))?,
        (None, Some(t)) => {
            let f = scratch.path().join("ecert.toml");
            std::fs::write(&f, t).map_err(io("writing a scratch file"))?;
            Config::load(data_dir, Some(&f))?
        }
        (None, None) => Config::load(data_dir, None)?,
    };
    let url = config.database_url();
    let engine = if url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    };
    if engine != m_engine(&checked) {
        return Err(refused(format!(
            "the backup is of a {} database but the configuration names a {engine} one",
            checked.manifest.engine
        )));
    }
    let sqlite_file = data_dir.join("ecert.db");
    if engine == "sqlite"
        && url != format!("sqlite://{}?mode=rwc", sqlite_file.display())
        && url != format!("sqlite://{}", sqlite_file.display())
    {
        return Err(refused(
            "the configuration names a SQLite database outside the data directory: a restore \
             writes only into the new data directory (remove database_url, or set \
             ECERT_DATABASE_URL to the new directory's ecert.db)",
        ));
    }
    if engine == "postgres" {
        pg_must_be_empty(&url).await?;
    }

    let mut undo = Undo {
        data_dir,
        pg_url: None,
        done: false,
    };
    let result = restore_into(
        &checked,
        &config,
        config_file.is_none().then_some(toml_text).flatten(),
        &db,
        ca.as_ref(),
        pii.as_ref(),
        &witnessed,
        witness.is_some(),
        crls,
        &mut undo,
        scratch.path(),
        actor,
    )
    .await;
    match result {
        Ok(r) => {
            undo.done = true;
            Ok(r)
        }
        Err(e) => {
            undo.run().await;
            Err(e)
        }
    }
}

fn m_engine(checked: &Checked) -> &str {
    &checked.manifest.engine
}

/// The writing half of [`restore`].
#[allow(clippy::too_many_arguments)]
async fn restore_into(
    checked: &Checked,
    config: &Config,
    toml_text: Option<String>,
    db: &BTreeMap<String, Vec<u8>>,
    ca: Option<&BTreeMap<String, Vec<u8>>>,
    pii: Option<&BTreeMap<String, Vec<u8>>>,
    witnessed: &[crate::audit::Checkpoint],
    witness_given: bool,
    crls: &[PathBuf],
    undo: &mut Undo<'_>,
    scratch: &Path,
    actor: &str,
) -> Result<Restored> {
    let m = &checked.manifest;
    let data_dir = &config.data_dir;
    let url = config.database_url();
    std::fs::create_dir_all(data_dir).map_err(io(format!("creating {}", data_dir.display())))?;
    set_mode(data_dir, 0o700)?;
    if let Some(text) = toml_text {
        write_file(&data_dir.join("ecert.toml"), text.as_bytes())?;
    }
    if let Some(snapshot) = db.get("database.sqlite") {
        write_file(&data_dir.join("ecert.db"), snapshot)?;
    } else if let Some(dump) = db.get("database.pgdump") {
        undo.pg_url = Some(url.clone());
        pg_restore(&url, dump, scratch).await?;
    } else {
        return Err(refused("the database part holds no database"));
    }
    for files in [ca, pii].into_iter().flatten() {
        for (name, data) in files {
            write_file(&config.hsm_dir().join(name), data)?;
        }
    }
    if ca.is_some() {
        hsm::pkcs11::softhsm_conf(&config.hsm_dir()).map_err(io("writing softhsm2.conf"))?;
    }
    // The token directories as SoftHSM2 makes them: owner only.
    if config.hsm_dir().is_dir() {
        set_mode(&config.hsm_dir(), 0o700)?;
        if let Ok(entries) = std::fs::read_dir(config.hsm_dir().join("tokens")) {
            set_mode(&config.hsm_dir().join("tokens"), 0o700)?;
            for e in entries.flatten() {
                set_mode(&e.path(), 0o700)?;
            }
        }
    }

    let store = Store::open(&url).await?;
    let backup_hash =
        hex::decode(&m.audit_hash).map_err(|e| refused(format!("manifest audit_hash: {e}")))?;
    // The witness's stretch the backup has must be the backup's own history.
    let (records, _, _) = store.audit_records().await?;
    for c in witnessed.iter().filter(|c| c.seq <= m.audit_seq) {
        if records.iter().find(|r| r.seq == c.seq).map(|r| &r.hash) != Some(&c.hash) {
            return Err(refused(format!(
                "the witness disagrees with the backup at record {}: it is not this CA's witness, or the backup was rewritten",
                c.seq
            )));
        }
    }
    let junction = witnessed.last().filter(|w| w.seq > m.audit_seq);
    let (lost, resumed_after) = match junction {
        Some(w) => (Some((m.audit_seq + 1, w.seq)), w.hash.clone()),
        None => (None, backup_hash),
    };
    let (lost_from, lost_to) = lost.unwrap_or((m.audit_seq + 1, m.audit_seq));
    let message = restored_message(lost_from, lost_to, &resumed_after, &checked.manifest_sha256);
    let signature = sign_with_audit_key(config, message).await?;
    // CRLNumbers: past the restore time in milliseconds and past anything the backup holds;
    // refused when this host's clock is behind the backup's.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if now < m.created_at {
        return Err(refused(format!(
            "this host's clock ({now}) is behind the backup's time ({}): CRLNumbers are dated by it; set the clock first",
            m.created_at
        )));
    }
    let highest = m.crl_numbers.values().copied().max().unwrap_or(0);
    let floor = (now * 1000).max(highest + 1);
    let mut tx = store.begin().await?;
    if let Some(w) = junction {
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(lost_to)
            .bind(resumed_after.clone())
            .execute(&mut *tx)
            .await?;
        // The witness's checkpoint at the junction, so that an export of the restored stretch
        // starts from a signed checkpoint.
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, at, hash, signature) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (seq) DO NOTHING",
        )
        .bind(w.seq)
        .bind(w.at)
        .bind(w.hash.clone())
        .bind(w.signature.clone())
        .execute(&mut *tx)
        .await?;
    }
    store.raise_crl_number_floor_in(&mut tx, floor).await?;
    store
        .audit(
            &mut tx,
            &crate::audit::Event {
                kind: "audit.restored",
                actor: actor.into(),
                subject: None,
                detail: serde_json::json!({
                    "backup": checked.manifest_sha256,
                    "backup_created_at": m.created_at,
                    "lost_from": lost_from,
                    "lost_to": lost_to,
                    "resumed_after": hex::encode(&resumed_after),
                    "witness": witness_given,
                    "crl_number_floor": floor,
                    "signature": hex::encode(&signature),
                }),
            },
        )
        .await?;
    tx.commit().await?;
    let reapplied = reapply_crls(config, &store, crls, actor).await?;
    let certificates: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certificates")
        .fetch_one(store.pool())
        .await?;
    store.pool().close().await;
    Ok(Restored {
        manifest: m.clone(),
        lost,
        crl_number_floor: floor,
        certificates,
        reapplied,
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("setting the mode of {}", path.display())))
}

/// Refuses a database that holds tables already.
async fn pg_must_be_empty(url: &str) -> Result<()> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(url)
        .await
        .map_err(|e| Error::Store(crate::store::redact_url(&e.to_string(), url)))?;
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut c)
    .await?;
    let _ = c.close().await;
    if tables > 0 {
        return Err(refused(
            "the database the configuration names is not empty: restore into a new database",
        ));
    }
    Ok(())
}

/// Restores a `pg_dump --format=custom` file into the (empty) database at `url`.
async fn pg_restore(url: &str, dump: &[u8], scratch_parent: &Path) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix(".ecert-restore.")
        .tempdir_in(scratch_parent)
        .map_err(io("making a scratch directory"))?;
    set_mode(scratch.path(), 0o700)?;
    let file = scratch.path().join("database.pgdump");
    write_file(&file, dump)?;
    let mut c = std::process::Command::new("pg_restore");
    c.args([
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        "--dbname",
    ])
    .arg(url)
    .arg(&file);
    let out = run_tool(c, "pg_restore").await?;
    if !out.status.success() {
        return Err(refused(format!(
            "pg_restore failed: {}",
            crate::store::redact_url(&String::from_utf8_lossy(&out.stderr), url)
        )));
    }
    Ok(())
}

/// Runs a PostgreSQL client tool (Debian package postgresql-client) off the runtime's threads.
async fn run_tool(
    mut c: std::process::Command,
    name: &'static str,
) -> Result<std::process::Output> {
    c.stdin(std::process::Stdio::null());
    tokio::task::spawn_blocking(move || c.output())
        .await
        .map_err(|e| Error::Store(e.to_string()))?
        .map_err(io(format!(
            "running {name} (Debian package postgresql-client)"
        )))
}

/// `ecert crl floor`: moves every CA's next CRLNumber past the current time in milliseconds
/// (and past every number held), audited (`crl.number_floor_raised`). For a DR site after it
/// promoted an asynchronous replica, which may lack CRLs the lost primary published
/// (docs/OPERATIONS.md "Disaster recovery"). Returns the floor.
pub async fn raise_crl_number_floor(store: &Store, actor: &str) -> Result<i64> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let now_ms = now * 1000;
    let mut tx = store.begin().await?;
    // Dated by this host's clock: refused when it is behind the newest CRL the database holds.
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(this_update) FROM crls")
        .fetch_one(&mut *tx)
        .await?;
    if let Some(t) = newest.filter(|t| *t > now) {
        return Err(refused(format!(
            "this host's clock ({now}) is behind the newest CRL's thisUpdate ({t}): set the clock first"
        )));
    }
    let highest: Option<i64> = sqlx::query_scalar("SELECT MAX(last) FROM crl_numbers")
        .fetch_one(&mut *tx)
        .await?;
    let floor = now_ms.max(highest.unwrap_or(0) + 1);
    store.raise_crl_number_floor_in(&mut tx, floor).await?;
    store
        .audit(
            &mut tx,
            &crate::audit::Event {
                kind: "crl.number_floor_raised",
                actor: actor.into(),
                subject: None,
                detail: serde_json::json!({ "floor": floor }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(floor)
}

/// What [`reapply_crls`] did.
#[derive(Debug, Default)]
pub struct Reapplied {
    /// Certificates revoked again.
    pub revoked: usize,
    /// Entries the restored database already had revoked.
    pub already: usize,
    /// Serials (hex) a CRL lists that the backup does not hold (issued after it), recorded
    /// as revoked so that they stay on the CRLs and OCSP says `revoked`
    /// ([`Store::record_revoked_unknown`]).
    pub unknown: Vec<String>,
}

/// Revocations made after the backup are not in it: each CRL given (the last ones the lost
/// machine published — public documents, kept by relying parties and the CA's own web
/// servers) is verified under its issuer in the restored database, and each serial it lists
/// that the restored database holds unrevoked is revoked again, by `actor`, with the CRL's
/// reason (RFC 5280 §5.3.1: a revocation is never undone). Serials the database does not hold
/// — or holds only as a request the lost machine went on to sign (`reserved`, `issuing`,
/// `failed`) — are recorded as revoked unknown certificates, kept on the CRLs until the
/// issuing CA expires, and returned. A retired CA's or a root's CRL is refused.
pub async fn reapply_crls(
    config: &Config,
    store: &Store,
    files: &[PathBuf],
    actor: &str,
) -> Result<Reapplied> {
    use crate::revocation::Reason;
    use x509_parser::prelude::FromDer;
    let cas = store.cas().await?;
    let mut out = Reapplied::default();
    for f in files {
        let bytes = std::fs::read(f).map_err(io(format!("reading {}", f.display())))?;
        let der = if bytes.starts_with(b"-----BEGIN") {
            pem::parse(&bytes)
                .map_err(|e| refused(format!("{}: not a PEM CRL: {e}", f.display())))?
                .into_contents()
        } else {
            bytes
        };
        let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
            .map_err(|e| refused(format!("{}: not a CRL: {e}", f.display())))?;
        let issuer = cas
            .iter()
            .filter_map(|c| {
                x509_parser::certificate::X509Certificate::from_der(&c.cert_der)
                    .ok()
                    .map(|(_, cert)| (c, cert))
            })
            .find(|(_, cert)| {
                cert.subject().as_raw() == crl.issuer().as_raw()
                    && crl
                        .verify_signature(&cert.tbs_certificate.subject_pki)
                        .is_ok()
            });
        let Some((ca, ca_cert)) = issuer else {
            return Err(refused(format!(
                "{}: not a CRL signed by one of this CA's certificates",
                f.display()
            )));
        };
        if ca.state == crate::profile::CaStatus::Retired {
            return Err(refused(format!(
                "{}: the {} CA is retired: it publishes no more CRLs or OCSP answers",
                f.display(),
                ca.id.name()
            )));
        }
        if ca.id.is_root() {
            return Err(refused(format!(
                "{}: a root's CRL lists CA certificates, which are revoked in a key ceremony: give the issuing CAs' CRLs",
                f.display()
            )));
        }
        let ca_not_after = ca_cert.validity().not_after.timestamp();
        let partitions = config.crl.partitions_of(ca.id.role);
        for entry in crl.iter_revoked_certificates() {
            let serial = hex::encode(entry.raw_serial());
            let Some(s) = crate::serial::SerialNumber::from_hex(&serial) else {
                continue;
            };
            let reason = entry
                .reason_code()
                .and_then(|(_, r)| Reason::from_code(i64::from(r.0)))
                .unwrap_or(Reason::Unspecified);
            use crate::store::CertState;
            let known = store.certificate(&s.to_hex()).await?;
            match known.as_ref().map(|c| c.state) {
                // Unknown here, or known only as a request the lost machine went on to sign
                // after the backup (`reserved`, `issuing` or `failed` here): recorded revoked.
                None | Some(CertState::Reserved | CertState::Issuing | CertState::Failed) => {
                    // A hold on the lost machine cannot be released here (the certificate is
                    // unknown): it is recorded as a revocation, which never comes undone.
                    let held = reason == Reason::CertificateHold;
                    let reason = if held { Reason::Unspecified } else { reason };
                    let event = crate::audit::Event {
                        kind: "certificate.revoked_unknown",
                        actor: actor.into(),
                        subject: Some(s.to_hex()),
                        detail: serde_json::json!({
                            "issuer": ca.id.name(),
                            "reason": reason.code(),
                            "held_on_the_lost_machine": held,
                            "state_in_the_backup": known.as_ref().map(|c| c.state.to_string()),
                            "from_crl": hex::encode(Sha256::digest(&der)),
                        }),
                    };
                    store
                        .record_revoked_unknown(
                            &s.to_hex(),
                            &ca.id.name(),
                            crate::crl::partition_of(&s, partitions),
                            ca_not_after,
                            reason.code(),
                            entry.revocation_date.timestamp(),
                            None,
                            &event,
                        )
                        .await?;
                    out.unknown.push(s.to_hex());
                }
                Some(_)
                    if known.as_ref().is_some_and(|c| {
                        c.revocation_reason.is_some() || c.state == CertState::Abandoned
                    }) =>
                {
                    out.already += 1
                }
                Some(_) => {
                    crate::revocation::revoke(store, s, reason, actor).await?;
                    out.revoked += 1;
                }
            }
        }
    }
    out.unknown.sort();
    out.unknown.dedup();
    Ok(out)
}
