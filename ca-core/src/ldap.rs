//! Publishing to an LDAP directory (issue 16, docs/DIRECTORY.md "LDAP"): mail clients find a
//! recipient's encryption certificate by address (Thunderbird's and Outlook's LDAP address books
//! read `userCertificate;binary` by `mail`), and relying parties read each CA's certificate and
//! newest full CRL from the CA's entry (`cACertificate;binary`,
//! `certificateRevocationList;binary`; RFC 4523 §2.1, §2.4 and its `pkiCA` class).
//!
//! **The queue.** Whatever changes what an entry should hold (a certificate issued, revoked,
//! held or released, the holder's choice, a CRL published) queues the entry in `ldap_pending` in
//! the same transaction as the change ([`queue_certificate`], [`queue_application`],
//! [`queue_ca`]). The publisher ([`Publisher::pass`], the signer's `ldap_publisher` task) rereads
//! what each queued entry should hold *now* and writes exactly that, so the order of changes
//! never matters and a write that is repeated after a crash is harmless. A row is deleted only if
//! its version did not move meanwhile. A directory that is down is retried with backoff, and
//! nothing is lost across restarts (the rows stay). An entry the directory refuses is retried
//! with a growing delay (one minute doubling to an hour); its error is kept without the entry's
//! name, which is an address.
//!
//! **What an entry holds.** A subscriber's entry `mail=<address>,<people>` (objectClass
//! `inetOrgPerson`, RFC 2798) holds the certificates of that address that
//! [`crate::ra::directory::lookup`] would return (published personal and encipherment certificates, issued,
//! unrevoked, unexpired) and nothing beyond what they already say: `mail`, `cn`, `sn` and
//! `givenName` are copied from the newest certificate's subject (`sn` is the common name when the
//! certificate has no surname: the class requires one). No certificate left: the entry is
//! deleted. Expiry changes nothing in the database, so `ldap_published` records what was written
//! and a certificate is taken out of its entry when it expires.
//!
//! **Against harvesting** (the directory server's part): docs/DIRECTORY.md and
//! `ops/slapd/` configure slapd so that anonymous clients may only search with an exact `mail`
//! equality (a search whose candidates are more than one entry is refused), never list, and
//! cannot read anything else.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{dn_escape, LdapConnAsync, LdapConnSettings, LdapError, Mod};
use sqlx::Row;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::config::LdapConfig;
use crate::crl::Scope;
use crate::error::{Error, Result};
use crate::store::{Store, Tx};

/// The most queued entries one pass writes.
pub const PASS_ENTRIES: i64 = 500;

/// LDAP result codes the publisher expects (RFC 4511 Appendix A).
const NO_SUCH_OBJECT: u32 = 32;
const ENTRY_ALREADY_EXISTS: u32 = 68;

/// The `meta` key recording which directory (URL and bases) holds what `ldap_published` says.
const META_TARGET: &str = "ldap.target";

/// A directory entry the publisher keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A subscriber's entry, by the address in their certificates.
    Mail(String),
    /// A CA's entry, by the CA's id.
    Ca(String),
}

impl Entry {
    fn parse(key: &str) -> Option<Entry> {
        if let Some(a) = key.strip_prefix("mail:") {
            Some(Entry::Mail(a.to_string()))
        } else {
            key.strip_prefix("ca:").map(|c| Entry::Ca(c.to_string()))
        }
    }
}

/// `INSERT INTO ldap_pending` of what `$rows` selects (entry, version 1, queued_at); an entry
/// already queued gets a new version and is due at once.
macro_rules! queue_sql {
    ($rows:literal) => {
        concat!(
            "INSERT INTO ldap_pending (entry, version, queued_at) ",
            $rows,
            " ON CONFLICT (entry) DO UPDATE SET version = ldap_pending.version + 1, next_at = 0, attempts = 0"
        )
    };
}

/// Queues the CA entry of `ca` (its certificate or its newest full CRL changed).
pub async fn queue_ca(tx: &mut Tx, ca: &str, now: i64) -> Result<()> {
    sqlx::query(queue_sql!("VALUES ($1, 1, $2)"))
        .bind(format!("ca:{ca}"))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Queues the subscriber entry of the application that holds `serial`, if its holder chose
/// publication, and any entry the directory holds `serial` in (an application renewed since
/// points at its new certificate; the old one must still leave the entry when revoked).
pub async fn queue_certificate(tx: &mut Tx, serial: &str, now: i64) -> Result<()> {
    sqlx::query(queue_sql!(
        "SELECT 'mail:' || email, 1, $2 FROM applications \
         WHERE certificate = $1 AND publish = 1 AND email IS NOT NULL \
         UNION SELECT entry, 1, $2 FROM ldap_published WHERE serial = $1"
    ))
    .bind(serial)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Queues the subscriber entry of application `id`: if its holder chose publication, or
/// whatever the choice when `choice_changed` (a withdrawn choice must reach the directory too).
pub async fn queue_application(
    tx: &mut Tx,
    id: &str,
    choice_changed: bool,
    now: i64,
) -> Result<()> {
    sqlx::query(queue_sql!(
        "SELECT 'mail:' || email, 1, $2 FROM applications \
         WHERE id = $1 AND (publish = 1 OR $3 = 1) AND email IS NOT NULL"
    ))
    .bind(id)
    .bind(now)
    .bind(i64::from(choice_changed))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Checks `[ldap]` without connecting (part of [`crate::config::Config::validate`]).
pub fn check_config(c: &LdapConfig) -> Result<()> {
    let Some(url) = &c.url else {
        return Ok(());
    };
    let bad = |why: &str| Err(Error::Config(format!("ldap.url {url:?}: {why}")));
    let (scheme, rest) = url.split_once("://").unwrap_or(("", ""));
    match scheme {
        "ldaps" | "ldapi" => {}
        "ldap" => {
            let host = rest.split('/').next().unwrap_or("");
            let host = match host.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or(""),
                None => host.rsplit_once(':').map_or(host, |(h, _)| h),
            };
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback && !c.starttls {
                return bad(
                    "a plain ldap:// connection to another host would send the bind password in \
                     clear; use ldaps://, ldap.starttls = true, or ldapi://",
                );
            }
        }
        _ => return bad("the scheme must be ldap://, ldaps:// or ldapi://"),
    }
    if c.starttls && scheme != "ldap" {
        return bad("ldap.starttls applies to ldap:// only");
    }
    match (&c.bind_dn, &c.password_file) {
        (Some(_), Some(_)) => {}
        (Some(_), None) => {
            return Err(Error::Config(
                "ldap.bind_dn needs ldap.password_file".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(Error::Config(
                "ldap.password_file needs ldap.bind_dn".into(),
            ))
        }
        (None, None) if scheme != "ldapi" => return Err(Error::Config(
            "ldap.bind_dn and ldap.password_file are required except over ldapi:// (SASL EXTERNAL)"
                .into(),
        )),
        (None, None) => {}
    }
    if c.people.trim().is_empty() || c.cas.trim().is_empty() {
        return Err(Error::Config(
            "ldap.people and ldap.cas must name the subtrees the publisher writes".into(),
        ));
    }
    if c.timeout_seconds == 0 || c.timeout_seconds > 120 {
        return Err(Error::Config(
            "ldap.timeout_seconds must be 1 to 120".into(),
        ));
    }
    Ok(())
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Entries written (or deleted) as they should be.
    pub written: usize,
    /// Entries the directory refused, queued again with a delay.
    pub refused: usize,
    /// Whether due entries are left (the pass stopped at [`PASS_ENTRIES`]).
    pub more: bool,
}

/// The publisher of one configured directory.
pub struct Publisher {
    config: LdapConfig,
    url: String,
    password: Option<Zeroizing<String>>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("url", &self.url).finish()
    }
}

/// An LDAP failure, without what the server echoed (it may name an entry, that is an address).
fn ldap_error(e: LdapError) -> Error {
    let what = match &e {
        LdapError::LdapResult { result } => format!("result code {}", result.rc),
        LdapError::Timeout { .. } => "timed out".to_string(),
        other => other.to_string(),
    };
    Error::Directory(what)
}

impl Publisher {
    /// The publisher `[ldap]` configures, or `None` when `url` is unset. Reads the password
    /// file (relative paths are in `data_dir`) and the CA file now, so a mistake shows at start.
    pub fn new(config: &LdapConfig, data_dir: &Path) -> Result<Option<Publisher>> {
        check_config(config)?;
        let Some(url) = config.url.clone() else {
            return Ok(None);
        };
        let read = |p: &Path| {
            let p = data_dir.join(p);
            std::fs::read(&p).map_err(|source| Error::Io {
                context: format!("reading {}", p.display()),
                source,
            })
        };
        let password = match &config.password_file {
            Some(p) => {
                let raw = Zeroizing::new(read(p)?);
                let s = std::str::from_utf8(&raw)
                    .map_err(|_| Error::Config("ldap.password_file is not UTF-8".into()))?;
                Some(Zeroizing::new(s.trim_end_matches(['\r', '\n']).to_string()))
            }
            None => None,
        };
        let tls = match &config.ca_file {
            Some(p) => {
                let pem = read(p)?;
                let mut roots = rustls::RootCertStore::empty();
                for der in ::pem::parse_many(&pem)
                    .map_err(|e| Error::Config(format!("ldap.ca_file: {e}")))?
                {
                    roots
                        .add(der.contents().to_vec().into())
                        .map_err(|e| Error::Config(format!("ldap.ca_file: {e}")))?;
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let cfg = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::Config(format!("ldap TLS: {e}")))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(Arc::new(cfg))
            }
            None => None,
        };
        Ok(Some(Publisher {
            config: config.clone(),
            url,
            password,
            tls,
        }))
    }

    /// The configured directory, for `meta` and the logs (no secret in it).
    pub fn target(&self) -> String {
        format!("{} {} {}", self.url, self.config.people, self.config.cas)
    }

    async fn connect(&self) -> Result<ldap3::Ldap> {
        let timeout = Duration::from_secs(u64::from(self.config.timeout_seconds));
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(timeout)
            .set_starttls(self.config.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(ldap_error)?;
        ldap3::drive!(conn);
        let bound = match (&self.config.bind_dn, &self.password) {
            (Some(dn), Some(pw)) => ldap.with_timeout(timeout).simple_bind(dn, pw).await,
            _ => ldap.with_timeout(timeout).sasl_external_bind().await,
        };
        bound.and_then(|r| r.success()).map_err(ldap_error)?;
        Ok(ldap)
    }

    /// One pass: queues expired certificates' entries (and everything, for a directory not
    /// written before), then writes up to [`PASS_ENTRIES`] due entries. `Err` when the directory
    /// cannot be reached or bound to: the rows stay queued for the next pass.
    pub async fn pass(&self, store: &Store, now: i64) -> Result<Pass> {
        self.queue_due(store, now).await?;
        let rows = sqlx::query(
            "SELECT entry, version, attempts FROM ldap_pending WHERE next_at <= $1 \
             ORDER BY queued_at, entry LIMIT $2",
        )
        .bind(now)
        .bind(PASS_ENTRIES)
        .fetch_all(store.pool())
        .await?;
        let mut pass = Pass {
            more: rows.len() as i64 == PASS_ENTRIES,
            ..Pass::default()
        };
        if rows.is_empty() {
            return Ok(pass);
        }
        let mut ldap = self.connect().await?;
        let timeout = Duration::from_secs(u64::from(self.config.timeout_seconds));
        for row in rows {
            let key: String = row.try_get("entry")?;
            let version: i64 = row.try_get("version")?;
            let attempts: i64 = row.try_get("attempts")?;
            let Some(entry) = Entry::parse(&key) else {
                finish(store, &key, version, None).await?;
                continue;
            };
            // A signer that lost the lock to a standby writes nothing more to the directory
            // either: what it read may be older than what the new signer wrote.
            store.check_fence(None).await?;
            let written = match &entry {
                Entry::Mail(address) => {
                    self.write_subscriber(&mut ldap, timeout, store, address, now)
                        .await
                }
                Entry::Ca(name) => self
                    .write_ca(&mut ldap, timeout, store, name)
                    .await
                    .map(|()| Vec::new()),
            };
            match written {
                Ok(published) => {
                    finish(store, &key, version, Some(&published)).await?;
                    pass.written += 1;
                }
                // The connection is gone: stop; what is left stays queued.
                Err(Written::Connection(e)) => return Err(e),
                Err(Written::Refused(e)) => {
                    let delay = 60i64 << attempts.clamp(0, 6);
                    let mut tx = store.begin().await?;
                    sqlx::query(
                        "UPDATE ldap_pending SET attempts = attempts + 1, next_at = $2, last_error = $3 \
                         WHERE entry = $1",
                    )
                    .bind(&key)
                    .bind(now + delay.min(3600))
                    .bind(e.to_string())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    tracing::warn!(error = %e, attempts = attempts + 1, "the directory refused an entry; it is retried later");
                    pass.refused += 1;
                }
            }
        }
        let _ = ldap.unbind().await;
        Ok(pass)
    }

    /// Queues the entries of certificates that expired since they were written, and — when the
    /// directory is not the one `ldap_published` describes (first use, or another server or
    /// base) — every published address and every CA.
    async fn queue_due(&self, store: &Store, now: i64) -> Result<()> {
        // This runs every pass: read first, and take the writer's transaction only when
        // something expired or the directory is new (on SQLite a write transaction every two
        // seconds would queue behind, and hold up, issuance).
        let expired: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM ldap_published WHERE not_after <= $1 LIMIT 1")
                .bind(now)
                .fetch_optional(store.pool())
                .await?;
        let target = self.target();
        if expired.is_none() && store.meta(META_TARGET).await?.as_deref() == Some(target.as_str()) {
            return Ok(());
        }
        let mut tx = store.begin().await?;
        // An entry already queued keeps its retry delay (this runs every pass).
        sqlx::query(
            "INSERT INTO ldap_pending (entry, version, queued_at) \
             SELECT DISTINCT entry, 1, $1 FROM ldap_published WHERE not_after <= $1 \
             ON CONFLICT (entry) DO NOTHING",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let known: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(META_TARGET)
            .fetch_optional(&mut *tx)
            .await?;
        if known.as_deref() != Some(target.as_str()) {
            sqlx::query("DELETE FROM ldap_published")
                .execute(&mut *tx)
                .await?;
            sqlx::query(queue_sql!(
                "SELECT DISTINCT 'mail:' || email, 1, $1 FROM applications \
                 WHERE publish = 1 AND state = 'issued' AND email IS NOT NULL"
            ))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(queue_sql!(
                "SELECT 'ca:' || name, 1, $1 FROM cas WHERE true"
            ))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(META_TARGET)
            .bind(&target)
            .execute(&mut *tx)
            .await?;
            tracing::info!(directory = %target, "publishing every published certificate and CA to a directory not written before");
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes the entry of `address` as [`crate::ra::directory::lookup`] says it should be;
    /// returns the serials it now holds with their notAfter.
    async fn write_subscriber(
        &self,
        ldap: &mut ldap3::Ldap,
        timeout: Duration,
        store: &Store,
        address: &str,
        now: i64,
    ) -> std::result::Result<Vec<(String, i64)>, Written> {
        let Ok(address) = crate::ra::directory::address(address) else {
            // Not an address a lookup could ask for: nothing to publish under it.
            return Ok(Vec::new());
        };
        // Every spelling of the address that differs only in case shares this entry.
        let certs = crate::ra::directory::lookup_any_case(store, &address, now)
            .await
            .map_err(Written::Connection)?;
        let dn = format!(
            "mail={},{}",
            dn_escape(address.as_str()),
            self.config.people
        );
        if certs.is_empty() {
            let r = ldap
                .with_timeout(timeout)
                .delete(&dn)
                .await
                .map_err(Written::from)?;
            return match r.rc {
                0 | NO_SUCH_OBJECT => Ok(Vec::new()),
                _ => Err(Written::from(LdapError::LdapResult { result: r })),
            };
        }
        // Names from the newest certificate's subject: nothing the certificates do not say.
        let names = subject_names(&certs[0].1);
        let cn = names.cn.clone().unwrap_or_else(|| address.clone());
        let sn = names.sn.clone().unwrap_or_else(|| cn.clone());
        let mut attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = vec![
            (b"cn".to_vec(), one(cn.as_bytes())),
            (b"sn".to_vec(), one(sn.as_bytes())),
            (
                b"userCertificate;binary".to_vec(),
                certs.iter().map(|(_, der, _)| der.clone()).collect(),
            ),
        ];
        if let Some(g) = &names.given {
            attrs.push((b"givenName".to_vec(), one(g.as_bytes())));
        }
        let published = certs.iter().map(|(s, _, na)| (s.clone(), *na)).collect();
        let mut mods: Vec<Mod<Vec<u8>>> = attrs
            .iter()
            .map(|(a, v)| Mod::Replace(a.clone(), v.clone()))
            .collect();
        if names.given.is_none() {
            mods.push(Mod::Replace(b"givenName".to_vec(), HashSet::new()));
        }
        let mut add = attrs;
        add.push((b"objectClass".to_vec(), one(b"inetOrgPerson")));
        add.push((b"mail".to_vec(), one(address.as_bytes())));
        self.replace_or_add(ldap, timeout, &dn, mods, add).await?;
        Ok(published)
    }

    /// Writes a CA's entry: its certificate and its newest full CRL.
    async fn write_ca(
        &self,
        ldap: &mut ldap3::Ldap,
        timeout: Duration,
        store: &Store,
        name: &str,
    ) -> std::result::Result<(), Written> {
        let Some((_, cert)) = store.ca(name).await.map_err(Written::Connection)? else {
            return Ok(());
        };
        let crl = store
            .latest_crl(name, Scope::Full)
            .await
            .map_err(Written::Connection)?;
        let dn = format!("cn={},{}", dn_escape(name), self.config.cas);
        let mut attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> =
            vec![(b"cACertificate;binary".to_vec(), one(&cert))];
        if let Some((_, der)) = &crl {
            attrs.push((b"certificateRevocationList;binary".to_vec(), one(der)));
        }
        let mods = attrs
            .iter()
            .map(|(a, v)| Mod::Replace(a.clone(), v.clone()))
            .collect();
        let mut add = attrs;
        add.push((
            b"objectClass".to_vec(),
            [b"applicationProcess".to_vec(), b"pkiCA".to_vec()]
                .into_iter()
                .collect(),
        ));
        add.push((b"cn".to_vec(), one(name.as_bytes())));
        self.replace_or_add(ldap, timeout, &dn, mods, add).await
    }

    /// Replaces the attributes of `dn`, or adds it when it does not exist yet.
    async fn replace_or_add(
        &self,
        ldap: &mut ldap3::Ldap,
        timeout: Duration,
        dn: &str,
        mods: Vec<Mod<Vec<u8>>>,
        add: Vec<(Vec<u8>, HashSet<Vec<u8>>)>,
    ) -> std::result::Result<(), Written> {
        let r = ldap
            .with_timeout(timeout)
            .modify(dn, mods.clone())
            .await
            .map_err(Written::from)?;
        if r.rc != NO_SUCH_OBJECT {
            return r.success().map(|_| ()).map_err(Written::from);
        }
        let r = ldap
            .with_timeout(timeout)
            .add(dn, add)
            .await
            .map_err(Written::from)?;
        if r.rc == ENTRY_ALREADY_EXISTS {
            // Added meanwhile by another writer: replace its content.
            return ldap
                .with_timeout(timeout)
                .modify(dn, mods)
                .await
                .and_then(|r| r.success())
                .map(|_| ())
                .map_err(Written::from);
        }
        r.success().map(|_| ()).map_err(Written::from)
    }
}

/// Why an entry was not written.
enum Written {
    /// The directory answered with an error: this entry is retried later.
    Refused(Error),
    /// The connection (or the store) failed: the pass stops.
    Connection(Error),
}

impl From<LdapError> for Written {
    fn from(e: LdapError) -> Written {
        match &e {
            // timeLimitExceeded, busy, unavailable, other (RFC 4511 Appendix A): the directory,
            // not this entry — the pass stops and is retried with the connection's backoff.
            LdapError::LdapResult { result } if matches!(result.rc, 3 | 51 | 52 | 80) => {
                Written::Connection(ldap_error(e))
            }
            LdapError::LdapResult { .. } => Written::Refused(ldap_error(e)),
            _ => Written::Connection(ldap_error(e)),
        }
    }
}

fn one(v: &[u8]) -> HashSet<Vec<u8>> {
    std::iter::once(v.to_vec()).collect()
}

/// Names a subscriber's entry copies from the certificate's subject.
#[derive(Debug, Default)]
struct Names {
    cn: Option<String>,
    sn: Option<String>,
    given: Option<String>,
}

fn subject_names(der: &[u8]) -> Names {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Names::default();
    };
    let subject = cert.subject();
    let first = |oid: &x509_parser::der_parser::Oid<'_>| {
        subject
            .iter_by_oid(oid)
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_string)
    };
    Names {
        // An encipherment certificate names its organisation, not a person.
        cn: first(&x509_parser::oid_registry::OID_X509_COMMON_NAME)
            .or_else(|| first(&x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME)),
        sn: first(&x509_parser::oid_registry::OID_X509_SURNAME),
        given: first(&x509_parser::oid_registry::OID_X509_GIVEN_NAME),
    }
}

/// Marks `key` written: deletes its queue row unless it changed meanwhile, and records what a
/// subscriber's entry now holds (`published`; `None`: nothing to record).
async fn finish(
    store: &Store,
    key: &str,
    version: i64,
    published: Option<&[(String, i64)]>,
) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query("DELETE FROM ldap_pending WHERE entry = $1 AND version = $2")
        .bind(key)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    if let (Some(published), true) = (published, key.starts_with("mail:")) {
        sqlx::query("DELETE FROM ldap_published WHERE entry = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        for (serial, not_after) in published {
            sqlx::query(
                "INSERT INTO ldap_published (serial, entry, not_after) VALUES ($1, $2, $3) \
                 ON CONFLICT (serial) DO UPDATE SET entry = excluded.entry, not_after = excluded.not_after",
            )
            .bind(serial)
            .bind(key)
            .bind(not_after)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// How many entries are queued (for `/healthz` and the tests).
pub async fn backlog(store: &Store) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM ldap_pending")
        .fetch_one(store.pool())
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> LdapConfig {
        LdapConfig {
            url: Some(url.into()),
            bind_dn: Some("cn=ecert,dc=example".into()),
            password_file: Some("/dev/null".into()),
            ..LdapConfig::default()
        }
    }

    #[test]
    fn a_password_never_crosses_a_network_in_clear() {
        assert!(check_config(&cfg("ldap://127.0.0.1:3389")).is_ok());
        assert!(check_config(&cfg("ldap://[::1]:3389")).is_ok());
        assert!(check_config(&cfg("ldap://localhost")).is_ok());
        assert!(check_config(&cfg("ldaps://directory.example:636")).is_ok());
        let err = check_config(&cfg("ldap://directory.example:389")).unwrap_err();
        assert!(err.to_string().contains("in clear"), "{err}");
        let mut tls = cfg("ldap://directory.example:389");
        tls.starttls = true;
        assert!(check_config(&tls).is_ok());
        assert!(check_config(&cfg("http://directory.example")).is_err());
        let mut anonymous = cfg("ldap://127.0.0.1:3389");
        anonymous.bind_dn = None;
        anonymous.password_file = None;
        assert!(check_config(&anonymous).is_err());
        anonymous.url = Some("ldapi://%2Frun%2Fslapd%2Fldapi".into());
        assert!(check_config(&anonymous).is_ok());
        assert!(check_config(&LdapConfig::default()).is_ok());
    }

    /// An expired certificate changes nothing in the database but must leave the directory:
    /// its entry is queued from what was written; another directory gets everything afresh.
    #[tokio::test]
    async fn expiry_and_a_new_directory_queue_entries() {
        let (dir, store) = crate::store::test_store().await;
        let publisher = Publisher::new(&cfg("ldap://127.0.0.1:1"), dir.path())
            .unwrap()
            .unwrap();
        store
            .set_meta(META_TARGET, &publisher.target())
            .await
            .unwrap();
        for (serial, entry, not_after) in [("01", "mail:a@x.hk", 100), ("02", "mail:b@x.hk", 200)] {
            sqlx::query(
                "INSERT INTO ldap_published (serial, entry, not_after) VALUES ($1, $2, $3)",
            )
            .bind(serial)
            .bind(entry)
            .bind(not_after)
            .execute(store.pool())
            .await
            .unwrap();
        }
        let queued = || async {
            sqlx::query_scalar::<_, String>("SELECT entry FROM ldap_pending ORDER BY entry")
                .fetch_all(store.pool())
                .await
                .unwrap()
        };
        publisher.queue_due(&store, 99).await.unwrap();
        assert!(queued().await.is_empty(), "nothing expired yet");
        publisher.queue_due(&store, 150).await.unwrap();
        assert_eq!(queued().await, vec!["mail:a@x.hk".to_string()]);
        // The publisher cannot reach its directory: the row stays for the next pass.
        assert!(publisher.pass(&store, 150).await.is_err());
        assert_eq!(backlog(&store).await.unwrap(), 1);
        // Another directory: what the old one held is forgotten, everything is queued again.
        let other = Publisher::new(&cfg("ldap://127.0.0.1:2"), dir.path())
            .unwrap()
            .unwrap();
        other.queue_due(&store, 150).await.unwrap();
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ldap_published")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(held, 0);
        assert_eq!(store.meta(META_TARGET).await.unwrap(), Some(other.target()));
    }

    /// Review finding: after a renewal the application points at the new certificate, so a
    /// revocation of the old one must find its entry through what the directory holds.
    #[tokio::test]
    async fn a_change_to_a_certificate_the_directory_holds_queues_its_entry() {
        let (dir, store) = crate::store::test_store().await;
        sqlx::query("INSERT INTO ldap_published (serial, entry, not_after) VALUES ('0a', 'mail:a@x.hk', 10)")
            .execute(store.pool())
            .await
            .unwrap();
        let mut tx = store.begin().await.unwrap();
        queue_certificate(&mut tx, "0a", 5).await.unwrap();
        queue_certificate(&mut tx, "0b", 5).await.unwrap();
        tx.commit().await.unwrap();
        let queued: Vec<String> = sqlx::query_scalar("SELECT entry FROM ldap_pending")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(queued, vec!["mail:a@x.hk".to_string()]);
        // A refused entry keeps its delay though its certificate expires meanwhile.
        sqlx::query("UPDATE ldap_pending SET next_at = 1000, attempts = 3")
            .execute(store.pool())
            .await
            .unwrap();
        let publisher = Publisher::new(&cfg("ldap://127.0.0.1:1"), dir.path())
            .unwrap()
            .unwrap();
        store
            .set_meta(META_TARGET, &publisher.target())
            .await
            .unwrap();
        publisher.queue_due(&store, 20).await.unwrap();
        let next: i64 = sqlx::query_scalar("SELECT next_at FROM ldap_pending")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(next, 1000);
    }

    #[test]
    fn queue_keys_round_trip() {
        assert_eq!(
            Entry::parse("mail:a@b.hk"),
            Some(Entry::Mail("a@b.hk".into()))
        );
        assert_eq!(
            Entry::parse("ca:individual-2"),
            Some(Entry::Ca("individual-2".into()))
        );
        assert_eq!(Entry::parse("other"), None);
    }
}
