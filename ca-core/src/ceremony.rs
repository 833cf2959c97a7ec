//! Key ceremonies (issue 15; docs/CEREMONY.md): one declarative, reviewed file says what is
//! made — root keys and certificates, issuing-CA keys and certificates, roots' CRLs — and
//! `ecert ceremony run` does exactly that, with the root token opened only by a quorum of
//! custodians.
//!
//! - **Check first.** [`Ceremony::check`] validates the file against the configuration and the
//!   store without touching an HSM, and returns the plan the operator reads
//!   (`ecert ceremony check`): every name, validity, key type, path length, name constraint
//!   and policy OID of every certificate to be signed.
//! - **The root token.** Root keys live in their own token (`[hsm] root_token_label`), never
//!   opened by `serve`. The first ceremony that needs it initialises it with random user and
//!   SO PINs and splits each m of n among the file's custodians ([`crate::quorum`]); only the
//!   shares leave the ceremony. Later ceremonies rebuild the PIN from any m shares, check it
//!   against the MAC stored at creation before any `C_Login` (a real HSM locks after a few
//!   wrong PINs), and a refusal is audited (`ceremony.quorum_refused`).
//! - **The record.** Every ceremony ends with a human-readable record — who (custodians by
//!   name, witnesses), when, the file's SHA-256, each key's SPKI hash, each certificate's and
//!   CRL's hash — signed by the audit key, written to a file for the witnesses and into the
//!   audit trail (`ceremony.completed`). [`verify_record`] checks one (`ecert ceremony
//!   verify`).
//!
//! `ecert init` on the embedded default runs the built-in ceremony ([`Ceremony::built_in`]):
//! both hierarchies from `[ca]`, a 1-of-1 quorum whose one share is kept in the data
//! directory (so the demonstration service runs in one command; `config check --production`
//! refuses it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::audit::Event;
use crate::authority::{self, Authority};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::SubscriberKey;
use crate::lint::{self, Expect, LintInput};
use crate::profile::{CaId, CaRole, CaStatus};
use crate::quorum;
use crate::serial::SerialNumber;
use crate::store::Store;

/// The longest a root may last: websites trust ends 15 years after its key is made (Mozilla
/// Root Store Policy 3.1 §7.4).
pub const MAX_ROOT_DAYS: u32 = crate::config::MAX_ROOT_VALIDITY_DAYS;

/// Where the embedded default keeps its one root-token share (1-of-1; refused by
/// `config check --production`).
pub fn embedded_share_path(config: &Config) -> PathBuf {
    config.hsm_dir().join("root-shares").join("share-1.txt")
}

/// The embedded default's way into the root token: its one share from the data directory
/// when it exists, else new shares written there.
pub fn embedded_access(config: &Config) -> Result<Access> {
    let path = embedded_share_path(config);
    let mut access = Access::default();
    match std::fs::read_to_string(&path) {
        Ok(text) => access
            .shares
            .extend(user_share_of(&text).map(Zeroizing::new)),
        Err(_) => access.shares_out = path.parent().map(Path::to_path_buf),
    }
    Ok(access)
}

/// What the database says against production custody (`config check --production`): a root
/// whose key is in the online `ca` token (a data directory made before the root token), a
/// root token opened by fewer than two custodians.
pub async fn custody_problems(config: &Config, store: &Store) -> Result<Vec<String>> {
    let mut p = Vec::new();
    let mut tokens = BTreeSet::new();
    for root in CaRole::ROOTS {
        if store.ca(root.name()).await?.is_none() {
            continue;
        }
        match store.ca_token(root.name()).await? {
            None => p.push(format!(
                "the {} root's key is in the online ca token ({:?}), which the signer logs in \
                 to: a production root lives in an offline root token, made in a key ceremony",
                root.name(),
                config.hsm.token_label
            )),
            Some(t) => {
                tokens.insert(t);
            }
        }
    }
    for t in tokens {
        let m: u8 = store
            .meta(&meta_key(&t, "quorum"))
            .await?
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if m < 2 {
            p.push(format!(
                "the root token {t:?} opens with {m} custodian share(s): a production quorum is \
                 at least 2 (docs/CEREMONY.md)"
            ));
        }
    }
    Ok(p)
}

/// A ceremony file (`CEREMONY.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ceremony {
    /// What the ceremony is, as the record names it.
    pub name: String,
    /// The custodians of the root token's PIN shares, in share order (share 1 is the first).
    pub custodians: Vec<String>,
    /// How many of them open the root token (m of n, n = custodians).
    pub quorum: u8,
    /// The witnesses, as the record names them.
    #[serde(default)]
    pub witnesses: Vec<String>,
    /// The root token; defaults from `[hsm]`.
    #[serde(default)]
    pub root_token: RootToken,
    /// What is done, in order.
    #[serde(rename = "step")]
    pub steps: Vec<Step>,
}

/// The token root keys live in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootToken {
    /// Its label (default `[hsm] root_token_label`).
    pub label: Option<String>,
    /// The PKCS#11 module that reaches it (default `[hsm] module`).
    pub module: Option<PathBuf>,
}

/// One step of a ceremony.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// A root key in the root token and its self-signed certificate.
    Root {
        /// `root` (S/MIME) or `tls-root`.
        ca: String,
        /// `p256`, `p384`, `rsa2048`, `rsa3072`, `rsa4096`.
        key_type: String,
        /// The subject CN (C and O come from `[ca]`).
        common_name: String,
        /// At most 5478 (15 years).
        validity_days: u32,
        /// The key's label in the token (default `ecert-<ca>-ca`).
        key_label: Option<String>,
    },
    /// An issuing-CA key in the online `ca` token and its certificate, signed by a root.
    Issuing {
        /// `individual` or `server`.
        ca: String,
        /// The root that signs it.
        root: String,
        /// The key type.
        key_type: String,
        /// The subject CN.
        common_name: String,
        /// Must end before the root.
        validity_days: u32,
        /// The key's label (default `ecert-<ca>-ca`).
        key_label: Option<String>,
        /// basicConstraints pathLenConstraint (default and only value: 0, it issues leaves).
        path_length: Option<u8>,
        /// Name constraints (RFC 5280 §4.2.1.10): DNS names for the Server CA, mail domains or
        /// mailboxes for the Individual CA.
        #[serde(default)]
        permitted: Vec<String>,
        /// Excluded subtrees, likewise.
        #[serde(default)]
        excluded: Vec<String>,
    },
    /// A successor to the current issuing CA of a role (a CA rollover): a new key in the
    /// online token and its certificate under a root, named `<role>-<generation>`
    /// (`individual-2`) with its own URLs. With `activate`, new issuance goes to it when the
    /// ceremony ends; otherwise it waits, published, for an `activate` step.
    Rollover {
        /// `individual` or `server`: the role whose CA is succeeded.
        ca: String,
        /// The root that signs it (for a Server CA made under the S/MIME root before the TLS
        /// root existed, `tls-root`: the rollover moves the role to its own hierarchy).
        root: String,
        /// The key type.
        key_type: String,
        /// The subject CN: not any other CA's.
        common_name: String,
        /// Must end before the root.
        validity_days: u32,
        /// The key's label (default `ecert-<role>-<generation>-ca`).
        key_label: Option<String>,
        /// basicConstraints pathLenConstraint (0).
        path_length: Option<u8>,
        /// Name constraints, as for `issuing`.
        #[serde(default)]
        permitted: Vec<String>,
        /// Excluded subtrees, likewise.
        #[serde(default)]
        excluded: Vec<String>,
        /// Activate it when the ceremony ends (default `true`).
        activate: Option<bool>,
    },
    /// Activates a successor made pending by an earlier `rollover` step: new issuance goes to
    /// it; the CA it succeeds stops issuing and keeps publishing until its last certificate
    /// expires.
    Activate {
        /// The successor's id (`individual-2`).
        ca: String,
    },
    /// A cross-certificate (TLS BR §7.1.2.2): the `issuer` root certifies the `ca` root's name
    /// and key, so a relying party that trusts only `issuer` reaches what `ca` issued — the
    /// bridge from an old root to a new one (a data directory's first TLS root, certified by
    /// its old root while browsers take the new one in).
    Cross {
        /// The root certified (its subject name and key, unchanged).
        ca: String,
        /// The root that signs.
        issuer: String,
        /// Must end before both roots.
        validity_days: u32,
    },
    /// A root's CRL (its revoked issuing CAs), signed with the root key.
    RootCrl {
        /// The root.
        ca: String,
    },
}

/// A CA certificate to be made, as checked.
#[derive(Debug, Clone)]
pub struct CaSpec {
    /// Which CA.
    pub id: CaId,
    /// Its role (`id.role`).
    pub role: CaRole,
    /// Subject CN.
    pub common_name: String,
    /// Validity.
    pub validity_days: u32,
    /// Key type.
    pub key_type: hsm::KeySpec,
    /// Key label.
    pub key_label: String,
    /// pathLenConstraint (issuing CAs).
    pub path_length: u8,
    /// Permitted subtrees.
    pub permitted: Vec<String>,
    /// Excluded subtrees.
    pub excluded: Vec<String>,
}

/// A step as checked.
#[derive(Debug, Clone)]
enum Planned {
    Root(CaSpec),
    Issuing {
        spec: CaSpec,
        root: CaRole,
        /// A successor (rollover): `Some(activate)`.
        successor: Option<bool>,
    },
    Activate(CaId),
    Cross {
        subject: CaRole,
        issuer: CaRole,
        days: u32,
    },
    RootCrl(CaRole),
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Invalid {
        field: "ceremony",
        reason: reason.into(),
    }
}

fn key_type(s: &str) -> Result<hsm::KeySpec> {
    s.parse().map_err(|e: String| bad(e))
}

fn cn(s: &str) -> Result<String> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > 64 {
        return Err(bad(format!("common_name {s:?} must be 1 to 64 characters")));
    }
    Ok(t.to_string())
}

impl Ceremony {
    /// Parses a ceremony file's text.
    pub fn parse(text: &str) -> Result<Ceremony> {
        toml::from_str(text).map_err(|e| bad(format!("the file does not parse: {e}")))
    }

    /// The built-in ceremony of `ecert init` on the embedded default: each root and issuing CA
    /// that does not exist yet, from `[ca]`, with a 1-of-1 quorum, then the new roots' CRLs.
    pub async fn built_in(config: &Config, store: &Store) -> Result<Ceremony> {
        let c = &config.ca;
        let mut steps = Vec::new();
        let exists = |role: CaRole| async move { store.ca(role.name()).await.map(|r| r.is_some()) };
        // A data directory made before the TLS root keeps its Server CA under the S/MIME root;
        // its TLS root comes with that CA's rollover.
        let legacy = exists(CaRole::Server).await? && !exists(CaRole::TlsRoot).await?;
        for role in CaRole::ROOTS {
            if exists(role).await? || (role == CaRole::TlsRoot && legacy) {
                continue;
            }
            steps.push(Step::Root {
                ca: role.name().into(),
                key_type: config.ca_key_type(role)?.name().into(),
                common_name: if role == CaRole::TlsRoot {
                    c.tls_root_common_name.clone()
                } else {
                    c.root_common_name.clone()
                },
                validity_days: c.root_validity_days,
                key_label: None,
            });
        }
        for role in [CaRole::Individual, CaRole::Server] {
            if exists(role).await? {
                continue;
            }
            steps.push(Step::Issuing {
                ca: role.name().into(),
                root: role.intended_root().unwrap_or(CaRole::Root).name().into(),
                key_type: config.ca_key_type(role)?.name().into(),
                common_name: if role == CaRole::Server {
                    c.server_common_name.clone()
                } else {
                    c.individual_common_name.clone()
                },
                validity_days: c.issuing_validity_days,
                key_label: None,
                path_length: None,
                permitted: Vec::new(),
                excluded: Vec::new(),
            });
        }
        // Every root made now, and every root without a CRL yet (a built-in ceremony that
        // stopped after making its roots).
        let mut crls: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Root { ca, .. } => Some(ca.clone()),
                _ => None,
            })
            .collect();
        for role in CaRole::ROOTS {
            if exists(role).await?
                && store.crl_heads(role.name()).await?.is_empty()
                && !crls.iter().any(|c| c == role.name())
            {
                crls.push(role.name().into());
            }
        }
        for ca in crls {
            steps.push(Step::RootCrl { ca });
        }
        Ok(Ceremony {
            name: "built-in ceremony of `ecert init` (embedded default, 1-of-1 quorum)".into(),
            custodians: vec!["the operator of the embedded default".into()],
            quorum: 1,
            witnesses: Vec::new(),
            root_token: RootToken::default(),
            steps,
        })
    }

    /// Whether the root token this file names was made already (its custodians and quorum are
    /// on record).
    pub async fn root_token_made(&self, config: &Config, store: &Store) -> Result<bool> {
        let (label, _) = self.root_token(config);
        Ok(store.meta(&meta_key(&label, "custodians")).await?.is_some())
    }

    /// The root token's label and module.
    pub fn root_token(&self, config: &Config) -> (String, PathBuf) {
        (
            self.root_token
                .label
                .clone()
                .unwrap_or_else(|| config.hsm.root_token_label.clone()),
            self.root_token
                .module
                .clone()
                .unwrap_or_else(|| config.hsm.module.clone()),
        )
    }

    /// Validates the file against the configuration and the store, without an HSM; returns
    /// the plan, one line per certificate or CRL to be signed.
    pub async fn check(&self, config: &Config, store: &Store) -> Result<Vec<String>> {
        Ok(self.plan(config, store).await?.1)
    }

    async fn plan(&self, config: &Config, store: &Store) -> Result<(Vec<Planned>, Vec<String>)> {
        one_line("name", &self.name, false)?;
        for c in &self.custodians {
            one_line("custodian", c, true)?;
        }
        for w in &self.witnesses {
            one_line("witness", w, true)?;
        }
        let n = self.custodians.len();
        if n == 0 || n > 16 {
            return Err(bad("custodians: 1 to 16 names"));
        }
        let unique: BTreeSet<&str> = self.custodians.iter().map(|c| c.trim()).collect();
        if unique.len() != n || unique.contains("") {
            return Err(bad("custodians: each named once, none empty"));
        }
        if self.quorum == 0 || usize::from(self.quorum) > n {
            return Err(bad(format!(
                "quorum {} of {n} custodians: it must be 1 to {n}",
                self.quorum
            )));
        }
        if self.steps.is_empty() {
            return Err(bad("no step"));
        }
        let (label, module) = self.root_token(config);
        hsm::pkcs11::check_label(&label).map_err(|e| bad(e.to_string()))?;
        if label == config.hsm.token_label || label == config.hsm.pii_token_label {
            return Err(bad(format!(
                "the root token {label:?} must not be the online `ca` or the `pii` token"
            )));
        }
        // A root token that exists has its custodians and quorum: the file must name them as
        // they are (the record says who holds which share).
        if let Some(j) = store.meta(&meta_key(&label, "custodians")).await? {
            let stored: Vec<String> = serde_json::from_str(&j).unwrap_or_default();
            let m = store
                .meta(&meta_key(&label, "quorum"))
                .await?
                .unwrap_or_else(|| "?".into());
            if stored != self.custodians || m != self.quorum.to_string() {
                return Err(bad(format!(
                    "the root token {label:?} is held by {} with a quorum of {m}: name them, in \
                     share order, and that quorum",
                    stored.join(", "),
                )));
            }
        }
        let arc = match store.meta("policy_arc").await? {
            Some(a) => a,
            None => config
                .ca
                .policy_arc
                .clone()
                .unwrap_or_else(|| "2.25.<made by init>".into()),
        };
        let mut lines = vec![format!(
            "ceremony {:?}: quorum {} of {} ({}); root token {label:?} via {}",
            self.name,
            self.quorum,
            n,
            self.custodians.join(", "),
            module.display()
        )];
        // Each CA's name and key label is its own: a chain is built and a root's CRL filtered
        // by issuer name, so two CAs with one name would be confused.
        let mut names: Vec<String> = Vec::new();
        let mut labels: Vec<String> = Vec::new();
        let existing = store.cas().await?;
        for ca in &existing {
            let (_, c) = x509_parser::parse_x509_certificate(&ca.cert_der)
                .map_err(|e| Error::Store(format!("stored CA certificate: {e}")))?;
            names.extend(
                c.subject()
                    .iter_common_name()
                    .filter_map(|a| a.as_str().ok())
                    .map(str::to_string),
            );
            labels.push(ca.key_label.clone());
        }
        let mut unique = |k: usize, spec: &CaSpec| -> Result<()> {
            if names.contains(&spec.common_name) {
                return Err(bad(format!(
                    "step {k}: another CA is named {:?}: each CA has its own name",
                    spec.common_name
                )));
            }
            if labels.contains(&spec.key_label) {
                return Err(bad(format!(
                    "step {k}: the key label {:?} is taken",
                    spec.key_label
                )));
            }
            names.push(spec.common_name.clone());
            labels.push(spec.key_label.clone());
            Ok(())
        };
        let mut made: Vec<(CaId, u32)> = Vec::new();
        // Successors made pending in this file (an `activate` step may name them).
        let mut pending: Vec<CaId> = existing
            .iter()
            .filter(|c| c.state == CaStatus::Pending)
            .map(|c| c.id)
            .collect();
        let mut planned = Vec::new();
        let mut crls_started = false;
        for (i, step) in self.steps.iter().enumerate() {
            let k = i + 1;
            let role_of = |name: &str| {
                CaRole::from_name(name).map_err(|_| bad(format!("step {k}: no CA named {name:?}")))
            };
            match step {
                Step::Root {
                    ca,
                    key_type: kt,
                    common_name,
                    validity_days,
                    key_label,
                } => {
                    let role = role_of(ca)?;
                    if !role.is_root() {
                        return Err(bad(format!("step {k}: {ca} is not a root")));
                    }
                    let kt = key_type(kt)?;
                    if crls_started {
                        return Err(bad(format!(
                            "step {k}: keys and certificates come before CRLs"
                        )));
                    }
                    fresh(store, k, role, &made).await?;
                    if *validity_days == 0 || *validity_days > MAX_ROOT_DAYS {
                        return Err(bad(format!(
                            "step {k}: validity_days {validity_days}: a root lasts 1 to {MAX_ROOT_DAYS} days (websites trust ends 15 years after its key is made, Mozilla Root Store Policy 3.1 §7.4)"
                        )));
                    }
                    let spec = CaSpec {
                        id: CaId::first(role),
                        role,
                        common_name: cn(common_name)?,
                        validity_days: *validity_days,
                        key_type: kt,
                        key_label: key_label.clone().unwrap_or_else(|| role.key_label()),
                        path_length: 0,
                        permitted: Vec::new(),
                        excluded: Vec::new(),
                    };
                    lines.push(format!(
                        "step {k}: root {}: key {} ({}) in the root token; self-signed \"C={}, O={}, CN={}\"; {} days; keyCertSign, cRLSign, digitalSignature; cA, no path length",
                        role.name(), spec.key_label, spec.key_type, config.ca.country, config.ca.organization, spec.common_name, spec.validity_days
                    ));
                    unique(k, &spec)?;
                    made.push((spec.id, *validity_days));
                    planned.push(Planned::Root(spec));
                }
                Step::Issuing {
                    ca,
                    root,
                    key_type: kt,
                    common_name,
                    validity_days,
                    key_label,
                    path_length,
                    permitted,
                    excluded,
                }
                | Step::Rollover {
                    ca,
                    root,
                    key_type: kt,
                    common_name,
                    validity_days,
                    key_label,
                    path_length,
                    permitted,
                    excluded,
                    ..
                } => {
                    let successor = match step {
                        Step::Rollover { activate, .. } => Some(activate.unwrap_or(true)),
                        _ => None,
                    };
                    let role = role_of(ca)?;
                    let root = role_of(root)?;
                    let kt = key_type(kt)?;
                    if role.is_root() || !root.is_root() {
                        return Err(bad(format!(
                            "step {k}: an issuing or rollover step makes individual or server under root or tls-root"
                        )));
                    }
                    if role.intended_root() != Some(root) {
                        return Err(bad(format!(
                            "step {k}: the {} CA belongs under {} (one purpose per hierarchy, Mozilla Root Store Policy 3.1 §7.5)",
                            role.name(),
                            role.intended_root().map_or("?", CaRole::name)
                        )));
                    }
                    if crls_started {
                        return Err(bad(format!(
                            "step {k}: keys and certificates come before CRLs"
                        )));
                    }
                    let id = match successor {
                        None => {
                            fresh(store, k, role, &made).await?;
                            CaId::first(role)
                        }
                        Some(_) => {
                            // The next generation of the role: after every CA of it that
                            // exists or is made earlier in this file.
                            let last = existing
                                .iter()
                                .map(|c| c.id)
                                .chain(made.iter().map(|(id, _)| *id))
                                .filter(|id| id.role == role)
                                .map(|id| id.generation)
                                .max()
                                .ok_or_else(|| {
                                    bad(format!(
                                        "step {k}: there is no {} CA to succeed: make it with an issuing step",
                                        role.name()
                                    ))
                                })?;
                            if pending.iter().any(|p| p.role == role) {
                                return Err(bad(format!(
                                    "step {k}: a successor of the {} CA waits for activation already",
                                    role.name()
                                )));
                            }
                            let generation = last
                                .checked_add(1)
                                .ok_or_else(|| bad("too many generations"))?;
                            CaId { role, generation }
                        }
                    };
                    let root_days = match made.iter().find(|(r, _)| *r == CaId::first(root)) {
                        Some((_, d)) => i64::from(*d),
                        // An existing root: the days it has left.
                        None => match store.ca(root.name()).await? {
                            Some((_, der)) => {
                                let end = authority::not_after_of(&der)?;
                                (end - authority::now_secs()).whole_days()
                            }
                            None => {
                                return Err(bad(format!(
                                    "step {k}: the root {} neither exists nor is made earlier in this file",
                                    root.name()
                                )))
                            }
                        },
                    };
                    if *validity_days == 0
                        || *validity_days > MAX_ROOT_DAYS
                        || i64::from(*validity_days) >= root_days
                    {
                        return Err(bad(format!(
                            "step {k}: validity_days {validity_days}: an issuing CA ends before its root"
                        )));
                    }
                    let path_length = path_length.unwrap_or(0);
                    if path_length != 0 {
                        return Err(bad(format!(
                            "step {k}: path_length {path_length}: ecert's issuing CAs issue end-entity certificates only (0)"
                        )));
                    }
                    for n in permitted.iter().chain(excluded) {
                        let ok = constraint_ok(n, role == CaRole::Individual);
                        if !ok {
                            return Err(bad(format!(
                                "step {k}: name constraint {n:?} is not a {}",
                                if role == CaRole::Server {
                                    "DNS name"
                                } else {
                                    "mail domain or mailbox"
                                }
                            )));
                        }
                    }
                    let spec = CaSpec {
                        id,
                        role,
                        common_name: cn(common_name)?,
                        validity_days: *validity_days,
                        key_type: kt,
                        key_label: key_label.clone().unwrap_or_else(|| id.key_label()),
                        path_length,
                        permitted: permitted.clone(),
                        excluded: excluded.clone(),
                    };
                    let policies: Vec<String> = policy_oids(role, &arc);
                    let eku = if role == CaRole::Server {
                        "serverAuth"
                    } else {
                        "emailProtection, clientAuth"
                    };
                    let base = config.base_url();
                    lines.push(format!(
                        "step {k}: {} {}: key {} ({}) in the online token; \"C={}, O={}, CN={}\" signed by {}; {} days; pathLen {}; EKU {eku}; policies {}; CDP {base}/crl/{}.crl; caIssuers {base}/ca/{}.crt{}{}",
                        if successor.is_some() { "rollover" } else { "issuing" }, id, spec.key_label, spec.key_type, config.ca.country, config.ca.organization, spec.common_name, root.name(), spec.validity_days, spec.path_length, policies.join(", "), root.name(), root.name(),
                        if spec.permitted.is_empty() && spec.excluded.is_empty() { String::new() } else { format!("; name constraints permitted [{}] excluded [{}]", spec.permitted.join(", "), spec.excluded.join(", ")) },
                        match successor {
                            None => String::new(),
                            Some(true) => format!("; its certificates name {base}/ca/{id}.crt and {base}/crl/{id}.crl; activated when the ceremony ends (the current {} CA stops issuing and publishes until its last certificate expires)", role.name()),
                            Some(false) => format!("; its certificates will name {base}/ca/{id}.crt and {base}/crl/{id}.crl; pending until an activate step"),
                        }
                    ));
                    unique(k, &spec)?;
                    made.push((id, *validity_days));
                    if successor == Some(false) {
                        pending.push(id);
                    }
                    planned.push(Planned::Issuing {
                        spec,
                        root,
                        successor,
                    });
                }
                Step::Activate { ca } => {
                    let id = CaId::from_name(ca)
                        .map_err(|_| bad(format!("step {k}: no CA named {ca:?}")))?;
                    if !pending.contains(&id) {
                        return Err(bad(format!(
                            "step {k}: {ca} is not a successor waiting for activation"
                        )));
                    }
                    if store.ca_revocation(&id.name()).await?.is_some() {
                        return Err(bad(format!("step {k}: {ca} is revoked")));
                    }
                    pending.retain(|p| *p != id);
                    lines.push(format!(
                        "step {k}: activate {id}: new {} issuance goes to it; the current {} CA stops issuing and publishes CRLs and OCSP until its last certificate expires",
                        id.role.name(), id.role.name()
                    ));
                    planned.push(Planned::Activate(id));
                }
                Step::Cross {
                    ca,
                    issuer,
                    validity_days,
                } => {
                    let subject = role_of(ca)?;
                    let by = role_of(issuer)?;
                    if !subject.is_root() || !by.is_root() || subject == by {
                        return Err(bad(format!(
                            "step {k}: a cross-certificate certifies one root by the other (root, tls-root)"
                        )));
                    }
                    if crls_started {
                        return Err(bad(format!(
                            "step {k}: keys and certificates come before CRLs"
                        )));
                    }
                    let mut left = i64::MAX;
                    for r in [subject, by] {
                        let days = match made.iter().find(|(m, _)| *m == CaId::first(r)) {
                            Some((_, d)) => i64::from(*d),
                            None => match store.ca(r.name()).await? {
                                Some((_, der)) => {
                                    (authority::not_after_of(&der)? - authority::now_secs())
                                        .whole_days()
                                }
                                None => {
                                    return Err(bad(format!(
                                        "step {k}: the root {} neither exists nor is made earlier in this file",
                                        r.name()
                                    )))
                                }
                            },
                        };
                        left = left.min(days);
                    }
                    if *validity_days == 0 || i64::from(*validity_days) >= left {
                        return Err(bad(format!(
                            "step {k}: validity_days {validity_days}: a cross-certificate ends before both roots ({left} days left)"
                        )));
                    }
                    let child = if subject == CaRole::TlsRoot {
                        CaRole::Server
                    } else {
                        CaRole::Individual
                    };
                    let base = config.base_url();
                    lines.push(format!(
                        "step {k}: cross-certificate of {} by {}: {}'s name and key, signed by {}; {validity_days} days; pathLen 1; EKU {}; policies {}; CDP {base}/crl/{}.crl; caIssuers {base}/ca/{}.crt; served at {base}/ca/{}-by-{}.crt",
                        subject.name(), by.name(), subject.name(), by.name(),
                        if child == CaRole::Server { "serverAuth" } else { "emailProtection, clientAuth" },
                        policy_oids(child, &arc).join(", "), by.name(), by.name(), subject.name(), by.name()
                    ));
                    planned.push(Planned::Cross {
                        subject,
                        issuer: by,
                        days: *validity_days,
                    });
                }
                Step::RootCrl { ca } => {
                    let role = role_of(ca)?;
                    if !role.is_root() {
                        return Err(bad(format!(
                            "step {k}: {ca} is not a root: its CRLs are the signer's"
                        )));
                    }
                    if !made.iter().any(|(r, _)| *r == CaId::first(role))
                        && store.ca(role.name()).await?.is_none()
                    {
                        return Err(bad(format!("step {k}: the root {ca} does not exist")));
                    }
                    crls_started = true;
                    lines.push(format!(
                        "step {k}: CRL of {}: the issuing CAs it revoked; nextUpdate in 365 days",
                        role.name()
                    ));
                    planned.push(Planned::RootCrl(role));
                }
            }
        }
        Ok((planned, lines))
    }
}

/// A name constraint (RFC 5280 §4.2.1.10): DNS labels (letters, digits, inner hyphens) joined
/// by single dots; for the S/MIME CA also a leading dot (any subdomain) or one `local@` part.
fn constraint_ok(n: &str, mail: bool) -> bool {
    let domain = match (mail, n.split_once('@')) {
        (true, Some((local, d))) => {
            if local.is_empty()
                || !local
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
            {
                return false;
            }
            d
        }
        (false, Some(_)) => return false,
        (true, None) => n.strip_prefix('.').unwrap_or(n),
        (false, None) => n,
    };
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Free text that goes into the record and the share sheets: one line, no control
/// characters; names (custodians, witnesses) without commas, which separate them there.
fn one_line(what: &str, s: &str, name: bool) -> Result<()> {
    if s.chars().any(char::is_control) || (name && s.contains(',')) || s.trim().is_empty() {
        return Err(bad(format!(
            "{what} {s:?}: one line of text{}",
            if name { ", no commas" } else { "" }
        )));
    }
    Ok(())
}

/// Refuses a CA the file makes twice or that exists (a successor needs a rollover).
async fn fresh(store: &Store, k: usize, role: CaRole, made: &[(CaId, u32)]) -> Result<()> {
    if made.iter().any(|(r, _)| r.role == role) {
        return Err(bad(format!(
            "step {k}: the {} CA is made twice",
            role.name()
        )));
    }
    if store.ca(role.name()).await?.is_some() {
        return Err(bad(format!(
            "step {k}: the {} CA exists already (a successor needs a rollover)",
            role.name()
        )));
    }
    Ok(())
}

/// The policy OIDs an issuing CA's certificate asserts: the CA/B Forum's reserved ones of its
/// profiles first (TLS BR §7.1.2.10.5), each once (RFC 5280 §4.2.1.4: several profiles share
/// one), then this CA's own under the arc.
pub(crate) fn policy_oids(role: CaRole, arc: &str) -> Vec<String> {
    let profiles: Vec<_> = crate::profile::PROFILES
        .iter()
        .filter(|p| p.issuer == role)
        .collect();
    let mut out: Vec<String> = Vec::new();
    for p in &profiles {
        if !out.iter().any(|o| o == p.cabf_policy) {
            out.push(p.cabf_policy.to_string());
        }
    }
    for p in &profiles {
        out.push(format!("{arc}.2.{}", p.local_policy));
    }
    out
}

/// What a step did, for the record.
#[derive(Debug, Clone)]
struct Done {
    line: String,
    detail: serde_json::Value,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A custodian's share file, as [`Ceremony`] writes it at the root token's creation.
#[allow(clippy::too_many_arguments)]
fn share_file(
    ceremony: &str,
    token: &str,
    custodian: &str,
    i: usize,
    m: u8,
    n: usize,
    user: &str,
    so: &str,
) -> String {
    format!(
        "ecert custodian share\n\
         ceremony: {ceremony}\n\
         custodian: {custodian} (share {i} of {n}; any {m} open the root token)\n\
         token: {token}\n\
         user PIN share: {user}\n\
         SO PIN share: {so}\n\
         Keep this sheet sealed. A share is useless alone; {m} of them open every root key.\n"
    )
}

/// The user-PIN share in a share file (or a bare share on one line).
pub fn user_share_of(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("user PIN share: "))
        .or_else(|| {
            let t = text.trim();
            (t.starts_with("ecert-share-v1.") && !t.contains('\n')).then_some(t)
        })
        .map(|s| s.trim().to_string())
}

fn meta_key(token: &str, what: &str) -> String {
    format!("quorum.{token}.{what}")
}

/// How the ceremony gets into the root token.
#[derive(Default)]
pub struct Access {
    /// Custodians' user-PIN shares (texts).
    pub shares: Vec<Zeroizing<String>>,
    /// Where new share files go when the ceremony creates the root token (one per custodian).
    pub shares_out: Option<PathBuf>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the shares themselves.
        f.debug_struct("Access")
            .field("shares", &self.shares.len())
            .field("shares_out", &self.shares_out)
            .finish()
    }
}

/// The root token, logged in, and who opened it.
struct Opened {
    token: hsm::pkcs11::Token,
    present: String,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Store(format!("HSM task failed: {e}")))?
}

/// Opens the root token with the custodians' shares, or creates it (first ceremony).
async fn open_root_token(
    config: &Config,
    store: &Store,
    ceremony: &Ceremony,
    access: &mut Access,
    actor: &str,
) -> Result<Opened> {
    let (label, module) = ceremony.root_token(config);
    let stored = store.meta(&meta_key(&label, "user")).await?;
    let n = ceremony.custodians.len();
    let Some(stored) = stored else {
        // First use: a new token, random PINs, shared m of n.
        let out = access.shares_out.clone().ok_or_else(|| {
            bad("this ceremony creates the root token: give --shares-out DIR for the custodians' shares")
        })?;
        let user_pin = Zeroizing::new(authority::random_secret());
        let so_pin = Zeroizing::new(authority::random_secret());
        let (user_shares, user_check) =
            quorum::split(user_pin.as_bytes(), ceremony.quorum, n as u8)?;
        let (so_shares, so_check) = quorum::split(so_pin.as_bytes(), ceremony.quorum, n as u8)?;
        let cfg = hsm::pkcs11::Pkcs11Config {
            module,
            token_label: label.clone(),
            user_pin: user_pin.to_string(),
            so_pin: Some(so_pin.to_string()),
            pool_size: 2,
        };
        std::fs::create_dir_all(&out).map_err(|e| Error::Io {
            context: format!("creating {}", out.display()),
            source: e,
        })?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700));
        }
        // Before the token is made: every sheet can be written (a sheet that cannot would
        // leave a token whose PIN nobody holds).
        for i in 1..=n {
            let path = out.join(format!("share-{i}.txt"));
            if path.exists() {
                return Err(bad(format!(
                    "{} exists: new shares go to an empty directory",
                    path.display()
                )));
            }
        }
        let token = blocking(move || {
            // Asked without a login: a login with a guessed PIN would count against a real
            // token's retry limit.
            if hsm::pkcs11::token_present(&cfg.module, &cfg.token_label)? {
                return Err(bad(format!(
                    "a token {:?} exists but this database holds no quorum for it: refusing to guess its PIN",
                    cfg.token_label
                )));
            }
            hsm::pkcs11::init_token(&cfg)?;
            Ok(hsm::pkcs11::Token::open(&cfg)?)
        })
        .await?;
        for (i, name) in ceremony.custodians.iter().enumerate() {
            let text = share_file(
                &ceremony.name,
                &label,
                name,
                i + 1,
                ceremony.quorum,
                n,
                &user_shares[i],
                &so_shares[i],
            );
            let path = out.join(format!("share-{}.txt", i + 1));
            authority::write_secret(&path, &text)?;
        }
        let mut tx = store.begin().await?;
        store
            .meta_init(&mut tx, &meta_key(&label, "user"), user_check.as_str())
            .await?;
        store
            .meta_init(&mut tx, &meta_key(&label, "so"), so_check.as_str())
            .await?;
        store
            .meta_init(
                &mut tx,
                &meta_key(&label, "custodians"),
                &serde_json::to_string(&ceremony.custodians).unwrap_or_default(),
            )
            .await?;
        store
            .meta_init(
                &mut tx,
                &meta_key(&label, "quorum"),
                &ceremony.quorum.to_string(),
            )
            .await?;
        store
            .audit(
                &mut tx,
                &Event {
                    kind: "ceremony.root_token_created",
                    actor: actor.to_string(),
                    subject: Some(label.clone()),
                    detail: json!({ "quorum": ceremony.quorum, "custodians": ceremony.custodians, "user_pin_check": user_check.as_str(), "so_pin_check": so_check.as_str() }),
                },
            )
            .await?;
        tx.commit().await?;
        return Ok(Opened {
            token,
            present: format!(
                "new root token {label:?}: user and SO PINs shared {} of {n}, one sheet per custodian ({}) written to {}",
                ceremony.quorum,
                ceremony.custodians.join(", "),
                out.display()
            ),
        });
    };
    let check = quorum::Check::parse(&stored)?;
    let names: Vec<String> = store
        .meta(&meta_key(&label, "custodians"))
        .await?
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    let texts: Vec<&str> = access.shares.iter().map(|s| s.as_str()).collect();
    let pin = match quorum::combine(&texts, &check) {
        Ok(pin) => pin,
        Err(e) => {
            // Audited: who tried, how many shares, why (never a share's text).
            store
                .audit_now(&Event {
                    kind: "ceremony.quorum_refused",
                    actor: actor.to_string(),
                    subject: Some(label.clone()),
                    detail: json!({ "ceremony": ceremony.name, "shares_given": texts.len(), "reason": e.to_string() }),
                })
                .await?;
            return Err(e);
        }
    };
    let present: Vec<String> = texts
        .iter()
        .filter_map(|t| quorum::index_of(t))
        .map(|i| {
            let name = names
                .get(usize::from(i) - 1)
                .cloned()
                .unwrap_or_else(|| "?".into());
            format!("{name} (share {i})")
        })
        .collect();
    let cfg = hsm::pkcs11::Pkcs11Config {
        module,
        token_label: label.clone(),
        user_pin: String::from_utf8_lossy(&pin).into_owned(),
        so_pin: None,
        pool_size: 2,
    };
    let token = blocking(move || Ok(hsm::pkcs11::Token::open(&cfg)?)).await?;
    Ok(Opened {
        token,
        present: format!("root token {label:?} opened by {}", present.join(", ")),
    })
}

/// Makes one CA: key in `key_token`, certificate linted then signed by the issuer (itself for
/// a root), stored with its audit records. Returns the record's line and detail.
#[allow(clippy::too_many_arguments)]
async fn make_ca(
    config: &Config,
    store: &Store,
    arc: &str,
    spec: &CaSpec,
    parent: Option<CaRole>,
    key_token: &hsm::pkcs11::Token,
    key_token_label: Option<&str>,
    issuer: Option<(Vec<u8>, Arc<dyn hsm::Signer>)>,
    state: CaStatus,
    actor: &str,
) -> Result<Done> {
    let t = key_token.clone();
    let (label, kt) = (spec.key_label.clone(), spec.key_type);
    let key = blocking(move || {
        if t.find_key(&label)?.is_some() {
            return Err(bad(format!(
                "a key labelled {label:?} exists already in the token"
            )));
        }
        Ok(t.generate_key(&label, kt)?)
    })
    .await?;
    let signer: Arc<dyn hsm::Signer> = Arc::new(key);
    let subject_key = SubscriberKey::from_spki_der(signer.public_key_spki())?;
    let serial = SerialNumber::random();
    let (issuer_der, issuer_signer) = match issuer {
        None => (None, signer.clone()),
        Some((der, s)) => (Some(der), s),
    };
    let root_not_after = issuer_der
        .as_deref()
        .map(authority::not_after_of)
        .transpose()?;
    let params = authority::ca_params(
        config,
        arc,
        spec,
        parent,
        signer.public_key_spki(),
        serial,
        authority::now_secs(),
        root_not_after,
    )?;
    let lint_signer = authority::LintSigner::of(&*issuer_signer)?;
    let linting = match &issuer_der {
        None => params.signed_by(
            &subject_key,
            &rcgen::Issuer::from_params(&params, lint_signer),
        )?,
        Some(der) => params.signed_by(
            &subject_key,
            &rcgen::Issuer::from_ca_cert_der(&der.clone().into(), lint_signer)?,
        )?,
    };
    let issuer_subject = match &issuer_der {
        None => authority::subject_der_of(linting.der())?,
        Some(der) => authority::subject_der_of(der)?,
    };
    let findings = lint::lint(&LintInput {
        cert_der: linting.der(),
        issuer_subject_der: &issuer_subject,
        expected_spki: signer.public_key_spki(),
        issuer_key_id: None,
        issuer_algorithm: issuer_signer.algorithm(),
        expect: Expect::Ca,
    });
    if !findings.is_empty() {
        return Err(Error::Lint(findings));
    }
    let (tbs, alg) = authority::split_signed(linting.der())?;
    let id = spec.id;
    // Recorded before the HSM signs (nothing is signed without a record).
    store
        .audit_now(&Event {
            kind: "ca.signing",
            actor: actor.to_string(),
            subject: Some(id.name()),
            detail: json!({ "serial": serial.to_hex(), "tbs_sha256": sha256_hex(&tbs) }),
        })
        .await?;
    let cert = authority::hsm_sign_checked(
        issuer_signer.clone(),
        tbs,
        alg,
        issuer_signer.public_key_spki().to_vec(),
    )
    .await?;
    let spki_sha256 = sha256_hex(signer.public_key_spki());
    let cert_sha256 = sha256_hex(&cert);
    let mut tx = store.begin().await?;
    store
        .insert_ca(&mut tx, id, &spec.key_label, key_token_label, &cert, state)
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ca.created",
                actor: actor.to_string(),
                subject: Some(id.name()),
                detail: json!({ "serial": serial.to_hex(), "key_label": spec.key_label, "key_type": spec.key_type.name(), "token": key_token_label, "spki_sha256": spki_sha256, "cert_sha256": cert_sha256, "issuer": parent.map(CaRole::name), "state": state.as_str() }),
            },
        )
        .await?;
    tx.commit().await?;
    tracing::info!(ca = %id, serial = %serial, "CA certificate created");
    Ok(Done {
        line: format!(
            "{} {}: key {} ({}) spki_sha256={spki_sha256}; certificate serial {} sha256={cert_sha256}{}",
            if id.is_root() { "root" } else if id.generation > 1 { "rollover" } else { "issuing" },
            id,
            spec.key_label,
            spec.key_type,
            serial.to_hex(),
            parent.map(|p| format!("; signed by {}", p.name())).unwrap_or_default()
        ),
        detail: json!({ "ca": id.name(), "serial": serial.to_hex(), "spki_sha256": spki_sha256, "cert_sha256": cert_sha256 }),
    })
}

/// Makes `id` the current CA of its role: the CA active until now is superseded (it issues
/// nothing more, and publishes CRLs and OCSP until its last certificate expires). One
/// transaction, audited as `ca.activated`.
async fn activate(store: &Store, id: CaId, actor: &str) -> Result<Done> {
    let before = store.active_ca(id.role).await?;
    let mut tx = store.begin().await?;
    if let Some(old) = before {
        if !store
            .set_ca_state(&mut tx, old, CaStatus::Active, CaStatus::Superseded)
            .await?
        {
            return Err(Error::Conflict(format!(
                "the {old} CA changed state meanwhile"
            )));
        }
    }
    if !store
        .set_ca_state(&mut tx, id, CaStatus::Pending, CaStatus::Active)
        .await?
    {
        return Err(Error::Conflict(format!(
            "the {id} CA is not waiting for activation"
        )));
    }
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ca.activated",
                actor: actor.to_string(),
                subject: Some(id.name()),
                detail: json!({ "role": id.role.name(), "superseded": before.map(CaId::name) }),
            },
        )
        .await?;
    tx.commit().await?;
    tracing::info!(ca = %id, superseded = ?before.map(CaId::name), "CA activated");
    Ok(Done {
        line: format!(
            "activate {id}: new {} issuance goes to it{}",
            id.role.name(),
            before
                .map(|b| format!("; {b} superseded (publishes until its last certificate expires)"))
                .unwrap_or_default()
        ),
        detail: json!({ "activated": id.name(), "superseded": before.map(CaId::name) }),
    })
}

/// A cross-certificate (TLS BR §7.1.2.2): `issuer` certifies `subject`'s name (byte for byte,
/// §7.1.2.2.2) and key. Restricted EKU and policies (§7.1.2.2.5, §7.1.2.2.6) of the hierarchy
/// below `subject`: serverAuth and the TLS policies for the TLS root, emailProtection and
/// clientAuth and the S/MIME policies for the S/MIME root; pathLen 1 (root → issuing CA →
/// subscriber); CDP and caIssuers of `issuer`. Linted, then signed with `issuer`'s key.
#[allow(clippy::too_many_arguments)]
async fn make_cross(
    config: &Config,
    store: &Store,
    arc: &str,
    subject: CaRole,
    issuer: CaRole,
    days: u32,
    (issuer_der, signer): (Vec<u8>, Arc<dyn hsm::Signer>),
    actor: &str,
) -> Result<Done> {
    let (_, subject_der) = store
        .ca(subject.name())
        .await?
        .ok_or(Error::NotInitialised)?;
    let (_, existing) = x509_parser::parse_x509_certificate(&subject_der)
        .map_err(|e| Error::Store(format!("stored CA certificate: {e}")))?;
    let subject_spki = existing.tbs_certificate.subject_pki.raw.to_vec();
    let subject_name = existing.tbs_certificate.subject.as_raw().to_vec();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = dn_of(existing.subject())?;
    let now = authority::now_secs();
    let serial = SerialNumber::random();
    p.serial_number = Some(rcgen::SerialNumber::from_slice(serial.as_bytes()));
    p.not_before = now;
    p.not_after = now + time::Duration::days(i64::from(days)) - time::Duration::seconds(1);
    for end in [
        authority::not_after_of(&issuer_der)?,
        authority::not_after_of(&subject_der)?,
    ] {
        if p.not_after >= end {
            return Err(bad(format!(
                "the cross-certificate would end {}, not before both roots ({})",
                p.not_after.date(),
                end.date()
            )));
        }
    }
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(1));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(authority::key_id(&subject_spki)?);
    p.use_authority_key_identifier_extension = true;
    p.name_constraints = None;
    let child = if subject == CaRole::TlsRoot {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        CaRole::Server
    } else {
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::EmailProtection,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        CaRole::Individual
    };
    let base = config.base_url();
    p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
        uris: vec![format!("{base}/crl/{}.crl", issuer.name())],
    }];
    let policies = policy_oids(child, arc)
        .iter()
        .map(|o| crate::ext::PolicyOid::parse(o))
        .collect::<Result<Vec<_>>>()?;
    p.custom_extensions = vec![
        crate::ext::certificate_policies(&policies)?,
        crate::ext::authority_info_access(None, &format!("{base}/ca/{}.crt", issuer.name()))?,
    ];
    let subject_key = SubscriberKey::from_spki_der(&subject_spki)?;
    let lint_signer = authority::LintSigner::of(&*signer)?;
    let linting = p.signed_by(
        &subject_key,
        &rcgen::Issuer::from_ca_cert_der(&issuer_der.clone().into(), lint_signer)?,
    )?;
    let (_, built) = x509_parser::parse_x509_certificate(linting.der())
        .map_err(|e| Error::Encoding(e.to_string()))?;
    if built.tbs_certificate.subject.as_raw() != subject_name.as_slice() {
        return Err(bad(format!(
            "the cross-certificate's subject would not be the {} root's byte for byte (TLS BR §7.1.2.2.2)",
            subject.name()
        )));
    }
    let findings = lint::lint(&LintInput {
        cert_der: linting.der(),
        issuer_subject_der: &authority::subject_der_of(&issuer_der)?,
        expected_spki: &subject_spki,
        issuer_key_id: None,
        issuer_algorithm: signer.algorithm(),
        expect: Expect::Ca,
    });
    if !findings.is_empty() {
        return Err(Error::Lint(findings));
    }
    let (tbs, alg) = authority::split_signed(linting.der())?;
    let name = format!("{}-by-{}", subject.name(), issuer.name());
    store
        .audit_now(&Event {
            kind: "ca.signing",
            actor: actor.to_string(),
            subject: Some(name.clone()),
            detail: json!({ "serial": serial.to_hex(), "tbs_sha256": sha256_hex(&tbs), "cross": true }),
        })
        .await?;
    let cert =
        authority::hsm_sign_checked(signer.clone(), tbs, alg, signer.public_key_spki().to_vec())
            .await?;
    let cert_sha256 = sha256_hex(&cert);
    let mut tx = store.begin().await?;
    store
        .insert_cross(
            &mut tx,
            &serial.to_hex(),
            subject.name(),
            issuer.name(),
            &cert,
        )
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ca.cross_certified",
                actor: actor.to_string(),
                subject: Some(name.clone()),
                detail: json!({ "serial": serial.to_hex(), "subject": subject.name(), "issuer": issuer.name(), "cert_sha256": cert_sha256 }),
            },
        )
        .await?;
    tx.commit().await?;
    tracing::info!(subject = subject.name(), issuer = issuer.name(), serial = %serial, "cross-certificate created");
    Ok(Done {
        line: format!(
            "cross-certificate {name}: {} certified by {}; certificate serial {} sha256={cert_sha256}",
            subject.name(),
            issuer.name(),
            serial.to_hex()
        ),
        detail: json!({ "cross": name, "serial": serial.to_hex(), "cert_sha256": cert_sha256 }),
    })
}

/// An existing certificate's subject as rcgen names it: each attribute with its type and its
/// string kind (PrintableString or UTF8String, as ecert makes them), so it encodes the same.
fn dn_of(name: &x509_parser::x509::X509Name<'_>) -> Result<rcgen::DistinguishedName> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let mut dn = rcgen::DistinguishedName::new();
    for attr in name.iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| bad("a name attribute's OID does not fit"))?
            .collect();
        let text = attr
            .as_str()
            .map_err(|_| bad("a name attribute is not a string"))?
            .to_string();
        let value = match attr.attr_value().header.tag() {
            Tag::PrintableString => rcgen::DnValue::PrintableString(
                text.try_into()
                    .map_err(|_| bad("a PrintableString name attribute does not parse"))?,
            ),
            Tag::Utf8String => rcgen::DnValue::Utf8String(text),
            other => {
                return Err(bad(format!(
                    "a name attribute of type {other:?}: not one ecert makes"
                )))
            }
        };
        dn.push(rcgen::DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// What [`run_creation`] leaves for [`finish`].
#[derive(Debug)]
pub struct Progress {
    ceremony: Ceremony,
    file_sha256: String,
    started: time::OffsetDateTime,
    root_token: Option<hsm::pkcs11::Token>,
    present: String,
    done: Vec<Done>,
    pending_crls: Vec<CaRole>,
    actor: String,
    /// The CAs made.
    pub made: Vec<CaId>,
}

impl Progress {
    /// Whether the ceremony made any CA (the signer must then be opened again to use them).
    pub fn made_cas(&self) -> bool {
        !self.done.is_empty()
    }
}

/// Runs the steps that make CAs (before the signer can open: it needs every CA). `ca_token`
/// is the online token (issuing-CA keys).
pub async fn run_creation(
    config: &Config,
    store: &Store,
    ca_token: &hsm::pkcs11::Token,
    ceremony: Ceremony,
    file_text: &str,
    mut access: Access,
    actor: &str,
) -> Result<Progress> {
    let (planned, _) = ceremony.plan(config, store).await?;
    let started = authority::now_secs();
    let arc = store
        .meta("policy_arc")
        .await?
        .ok_or(Error::NotInitialised)?;
    store
        .audit_now(&Event {
            kind: "ceremony.started",
            actor: actor.to_string(),
            subject: None,
            detail: json!({ "ceremony": ceremony.name, "file_sha256": sha256_hex(file_text.as_bytes()), "custodians": ceremony.custodians, "witnesses": ceremony.witnesses }),
        })
        .await?;
    // The root token is opened (or made) only when a step uses a key in it: a root made now,
    // or an existing root whose key is there. A root of a data directory made before the root
    // token has its key in the online token (docs/CEREMONY.md).
    let mut needs_root = false;
    for p in &planned {
        needs_root |= match p {
            Planned::Root(_) => true,
            Planned::Issuing { root, .. } | Planned::RootCrl(root) => {
                store.ca(root.name()).await?.is_none()
                    || store.ca_token(root.name()).await?.is_some()
            }
            Planned::Activate(_) => false,
            Planned::Cross { issuer, .. } => {
                store.ca(issuer.name()).await?.is_none()
                    || store.ca_token(issuer.name()).await?.is_some()
            }
        };
    }
    let (root_token, present) = if needs_root {
        let o = open_root_token(config, store, &ceremony, &mut access, actor).await?;
        (Some(o.token), o.present)
    } else {
        (None, String::new())
    };
    let (root_label, _) = ceremony.root_token(config);
    let mut done = Vec::new();
    let mut made = Vec::new();
    let mut pending_crls = Vec::new();
    for p in planned {
        match p {
            Planned::Root(spec) => {
                made.push(spec.id);
                let t = root_token.as_ref().ok_or_else(|| bad("no root token"))?;
                done.push(
                    make_ca(
                        config,
                        store,
                        &arc,
                        &spec,
                        None,
                        t,
                        Some(&root_label),
                        None,
                        CaStatus::Active,
                        actor,
                    )
                    .await?,
                );
            }
            Planned::Issuing {
                spec,
                root,
                successor,
            } => {
                made.push(spec.id);
                let root_signer = root_key(store, root_token.as_ref(), root, ca_token).await?;
                done.push(
                    make_ca(
                        config,
                        store,
                        &arc,
                        &spec,
                        Some(root),
                        ca_token,
                        None,
                        Some(root_signer),
                        successor.map_or(CaStatus::Active, |_| CaStatus::Pending),
                        actor,
                    )
                    .await?,
                );
                if successor == Some(true) {
                    done.push(activate(store, spec.id, actor).await?);
                }
            }
            Planned::Activate(id) => done.push(activate(store, id, actor).await?),
            Planned::Cross {
                subject,
                issuer,
                days,
            } => {
                let key = root_key(store, root_token.as_ref(), issuer, ca_token).await?;
                done.push(
                    make_cross(config, store, &arc, subject, issuer, days, key, actor).await?,
                );
            }
            Planned::RootCrl(role) => pending_crls.push(role),
        }
    }
    Ok(Progress {
        file_sha256: sha256_hex(file_text.as_bytes()),
        ceremony,
        started,
        root_token,
        present,
        done,
        pending_crls,
        actor: actor.to_string(),
        made,
    })
}

/// A root's certificate and key: from the root token, or — for a root made before the root
/// token existed — from the online token where it was made.
async fn root_key(
    store: &Store,
    root_token: Option<&hsm::pkcs11::Token>,
    root: CaRole,
    ca_token: &hsm::pkcs11::Token,
) -> Result<(Vec<u8>, Arc<dyn hsm::Signer>)> {
    let (label, der) = store.ca(root.name()).await?.ok_or(Error::NotInitialised)?;
    let t = match store.ca_token(root.name()).await? {
        Some(held_in) => {
            let t = root_token.ok_or_else(|| bad("the root token is not open"))?;
            // The token opened must be the one that holds this root.
            if t.label() != held_in {
                return Err(bad(format!(
                    "the {} root's key is in the token {held_in:?}, not {:?}: name it in [root_token]",
                    root.name(),
                    t.label()
                )));
            }
            t.clone()
        }
        None => ca_token.clone(),
    };
    let key = blocking(move || Ok(t.key(&label)?)).await?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| Error::Store(format!("stored CA certificate: {e}")))?;
    if cert.tbs_certificate.subject_pki.raw != hsm::Signer::public_key_spki(&key) {
        return Err(Error::Config(format!(
            "the key of the {} root does not match its certificate",
            root.name()
        )));
    }
    Ok((der, Arc::new(key)))
}

/// Signs the roots' CRLs the ceremony asked for (with the signer open), writes the signed
/// record to `record_out`, and records `ceremony.completed`. Returns the record's text.
pub async fn finish(
    auth: &Authority,
    ca_token: &hsm::pkcs11::Token,
    mut progress: Progress,
    record_out: Option<&Path>,
) -> Result<String> {
    for role in std::mem::take(&mut progress.pending_crls) {
        let (_, signer) =
            root_key(auth.store(), progress.root_token.as_ref(), role, ca_token).await?;
        let crl = auth
            .publish_root_crl(CaId::first(role), signer, &progress.actor)
            .await?;
        progress.done.push(Done {
            line: format!(
                "CRL of {}: number {}, {} entries, sha256={}",
                role.name(),
                crl.number,
                crl.entries,
                sha256_hex(&crl.der)
            ),
            detail: json!({ "crl": role.name(), "number": crl.number, "crl_sha256": sha256_hex(&crl.der) }),
        });
    }
    let finished = authority::now_secs();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let c = &progress.ceremony;
    let mut body = String::new();
    body.push_str("ecert ceremony record v1\n");
    body.push_str(&format!("name: {}\n", c.name));
    body.push_str(&format!("file_sha256: {}\n", progress.file_sha256));
    body.push_str(&format!("started: {}\n", fmt(progress.started)));
    body.push_str(&format!("finished: {}\n", fmt(finished)));
    body.push_str(&format!("quorum: {} of {}\n", c.quorum, c.custodians.len()));
    body.push_str(&format!("custodians: {}\n", c.custodians.join(", ")));
    if !progress.present.is_empty() {
        body.push_str(&format!("root token: {}\n", progress.present));
    }
    body.push_str(&format!(
        "witnesses: {}\n",
        if c.witnesses.is_empty() {
            "none named".to_string()
        } else {
            c.witnesses.join(", ")
        }
    ));
    body.push_str(&format!("operator: {}\n", progress.actor));
    for (i, d) in progress.done.iter().enumerate() {
        body.push_str(&format!("step {}: {}\n", i + 1, d.line));
    }
    let signature = auth.sign_with_audit_key(body.as_bytes()).await?;
    let record = format!(
        "{body}signature: {} {}\n",
        auth.audit_key_algorithm_name(),
        data_encoding::BASE64.encode(&signature)
    );
    // The witnesses' copy first (never over another file): a failure after it still leaves
    // the record, which cannot be signed again.
    if let Some(path) = record_out {
        use std::io::Write;
        std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut f| f.write_all(record.as_bytes()))
            .map_err(|e| Error::Io {
                context: format!("writing the ceremony record to {}", path.display()),
                source: e,
            })?;
    }
    auth.store()
        .audit_now(&Event {
            kind: "ceremony.completed",
            actor: progress.actor.clone(),
            subject: None,
            detail: json!({ "ceremony": c.name, "file_sha256": progress.file_sha256, "record_sha256": sha256_hex(record.as_bytes()), "steps": progress.done.iter().map(|d| d.detail.clone()).collect::<Vec<_>>() }),
        })
        .await?;
    Ok(record)
}

/// What [`verify_record`] found.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The record's `name:`.
    pub name: String,
    /// Its steps.
    pub steps: usize,
    /// Hashes in the record that were matched against the store (when one was given).
    pub matched: usize,
}

/// Checks a ceremony record: the audit key's signature over everything above the signature
/// line (`audit_key_spki`: the DER SPKI, e.g. from `ecert audit key`), and, with a store,
/// that every certificate and CRL hash names what the store holds and that the audit trail
/// holds the record's `ceremony.completed`.
pub async fn verify_record(
    record: &str,
    audit_key_spki: &[u8],
    store: Option<&Store>,
) -> Result<Verified> {
    let invalid = |r: &str| Error::Invalid {
        field: "record",
        reason: r.to_string(),
    };
    // The last line, exactly `signature: ALGORITHM BASE64`, and nothing after it: every other
    // byte is signed.
    let unsigned = record
        .strip_suffix('\n')
        .ok_or_else(|| invalid("the record does not end with its signature line"))?;
    let at = unsigned.rfind('\n').map_or(0, |i| i + 1);
    let (body, sig_line) = record.split_at(at);
    if !body.starts_with("ecert ceremony record v1\n") {
        return Err(invalid("not an ecert ceremony record"));
    }
    let sig_b64 = match sig_line
        .trim_end_matches('\n')
        .split(' ')
        .collect::<Vec<_>>()[..]
    {
        ["signature:", _algorithm, b64] => b64,
        _ => {
            return Err(invalid(
                "the last line is not `signature: ALGORITHM BASE64`",
            ))
        }
    };
    let signature = data_encoding::BASE64
        .decode(sig_b64.as_bytes())
        .map_err(|_| invalid("the signature is not base64"))?;
    crate::sigalg::verify(audit_key_spki, body.as_bytes(), &signature)
        .map_err(|_| invalid("the signature does not verify under the audit key: the record was altered or signed by another key"))?;
    let name = body
        .lines()
        .find_map(|l| l.strip_prefix("name: "))
        .unwrap_or_default()
        .to_string();
    let steps: Vec<&str> = body.lines().filter(|l| l.starts_with("step ")).collect();
    let mut matched = 0;
    if let Some(store) = store {
        let mut known = BTreeSet::new();
        for ca in store.cas().await? {
            known.insert(sha256_hex(&ca.cert_der));
        }
        for (_, _, der) in store.cross_certificates().await? {
            known.insert(sha256_hex(&der));
        }
        for step in &steps {
            // "step k: CRL of <root>: number N, ...": that CRL, as stored; an older CRL's body
            // is not kept, its publication record (`crl.published`, with its hash) is.
            let is_crl = step.contains(": CRL of ");
            if let Some(rest) = step.split_once(": CRL of ").map(|(_, r)| r) {
                let (root, rest) = rest.split_once(": number ").unwrap_or_default();
                let number: i64 = rest
                    .split(',')
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .unwrap_or(-1);
                if let Some(der) = store.crl_der(root, number).await? {
                    known.insert(sha256_hex(&der));
                }
            }
            for word in step.split([' ', ';', ',']) {
                if let Some(h) = word.strip_prefix("sha256=") {
                    let published =
                        is_crl && h.len() == 64 && store.audit_mentions("crl.published", h).await?;
                    if !known.contains(h) && !published {
                        return Err(invalid(&format!(
                            "{step}: the store holds no certificate or CRL with this hash"
                        )));
                    }
                    matched += 1;
                }
            }
        }
        let record_sha = sha256_hex(record.as_bytes());
        if !store
            .audit_mentions("ceremony.completed", &record_sha)
            .await?
        {
            return Err(invalid(
                "the audit trail holds no ceremony.completed for this record",
            ));
        }
    }
    Ok(Verified {
        name,
        steps: steps.len(),
        matched,
    })
}
