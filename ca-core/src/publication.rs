//! The public repository's read side and its schedule: what every `ecert serve` instance
//! publishes (CA certificates, the newest CRL of each scope, OCSP responses), what its health
//! probe and metrics report (certificates by state, CRL heads, the OCSP signer's backlog), and
//! the rules that decide which CRLs and OCSP responses are due (docs/REVOCATION.md "When a CRL
//! is published", docs/OCSP.md "Pre-signed responses").
//!
//! What it never does: sign, or write to the store. [`Repository`] needs only a [`Store`], so a
//! `serve --no-signer` instance (no HSM, no [`Authority`]) has one too. The rules
//! ([`crls_due`], [`ocsp_batch`]) are pure functions of what was read and `now`; the signer
//! loads their inputs and acts on their answer through [`Authority::crls_due`] and
//! [`Authority::ocsp_due`].
//!
//! ```no_run
//! # async fn f(store: ca_core::store::Store) -> ca_core::Result<()> {
//! use ca_core::{crl::Scope, profile::{CaId, CaRole}, publication::Repository};
//! let repo = Repository::new(store);
//! if let Some(crl) = repo.latest_crl(CaId::first(CaRole::Server), Scope::Full).await? {
//!     println!("CRL number {} ({} bytes)", crl.number, crl.der.len());
//! }
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};

use crate::authority::Authority;
use crate::crl::Scope;
use crate::error::Result;
use crate::ocsp::Cache;
use crate::profile::{CaId, CaRole};
use crate::store::{CertState, CrlHead, OcspBacklog, OcspDue, Store};

/// OCSP responses are kept fresh until this long after their certificate expired (then they are
/// no longer refreshed, and no longer count as overdue).
pub const OCSP_FRESH_AFTER_EXPIRY: i64 = 7 * 86_400;

/// What the repository publishes, read from the store.
#[derive(Debug, Clone)]
pub struct Repository {
    store: Store,
}

/// [`Repository::queue_counts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Applications by state.
    pub applications: Vec<(String, i64)>,
    /// Batch rows queued for issuance.
    pub batch_rows_queued: i64,
    /// LDAP entries waiting to be written.
    pub ldap_pending: i64,
    /// OCSP changes waiting to be signed.
    pub ocsp_pending: i64,
}

/// How many serials are in one lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateCount {
    /// The state.
    pub state: CertState,
    /// How many serials are in it.
    pub count: i64,
}

/// The newest CRL of one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestCrl {
    /// Its CRLNumber.
    pub number: i64,
    /// The CRL, DER.
    pub der: Vec<u8>,
}

impl From<&Authority> for Repository {
    fn from(auth: &Authority) -> Repository {
        Repository::new(auth.store().clone())
    }
}

impl Repository {
    /// The repository of the CA whose database `store` is.
    pub fn new(store: Store) -> Repository {
        Repository { store }
    }

    /// The certificate of a CA (DER); `None` before `ecert init`.
    pub async fn ca_certificate(&self, id: CaId) -> Result<Option<Vec<u8>>> {
        Ok(self.store.ca(&id.name()).await?.map(|(_, der)| der))
    }

    /// Every cross-certificate, oldest first: (subject, issuer, DER).
    pub async fn cross_certificates(&self) -> Result<Vec<(String, String, Vec<u8>)>> {
        self.store.cross_certificates().await
    }

    /// Every CA (roots first) with where it is in its life.
    pub async fn cas(&self) -> Result<Vec<crate::store::CaRecord>> {
        self.store.cas().await
    }

    /// How many serials are in each lifecycle state (states with none left out), in the order
    /// of the states' names.
    /// What waits in the service's queues and where the applications stand (`/metrics`):
    /// applications by state, batch rows queued for issuance, LDAP entries waiting to be
    /// written, OCSP changes waiting to be signed. Counts only: no personal data.
    pub async fn queue_counts(&self) -> Result<QueueCounts> {
        use sqlx::Row;
        let applications = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM applications GROUP BY state ORDER BY state",
        )
        .fetch_all(self.store.pool())
        .await?
        .into_iter()
        .map(|r| Ok((r.try_get::<String, _>("state")?, r.try_get::<i64, _>("n")?)))
        .collect::<Result<Vec<_>>>()?;
        let count = |sql: &'static str| async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(self.store.pool())
                .await
        };
        Ok(QueueCounts {
            applications,
            batch_rows_queued: count("SELECT COUNT(*) FROM batch_rows WHERE state = 'queued'")
                .await?,
            ldap_pending: count("SELECT COUNT(*) FROM ldap_pending").await?,
            ocsp_pending: count("SELECT COUNT(*) FROM ocsp_pending").await?,
        })
    }

    pub async fn certificate_counts(&self) -> Result<Vec<StateCount>> {
        self.store
            .count_by_state()
            .await?
            .into_iter()
            .map(|(state, count)| {
                Ok(StateCount {
                    state: CertState::parse(&state)?,
                    count,
                })
            })
            .collect()
    }

    /// Proves the database accepts writes: this instance's health-probe row, written now.
    pub async fn write_health_probe(&self, instance: &str, now: i64) -> Result<()> {
        self.store.write_health_probe(instance, now).await
    }

    /// The newest CRL of every scope of a CA published so far.
    pub async fn crl_heads(&self, id: CaId) -> Result<Vec<CrlHead>> {
        self.store.crl_heads(&id.name()).await
    }

    /// Roots whose CRL does not yet list a CA they revoked, and since when (the revocation's
    /// time): the CRL is due in a key ceremony within 24 hours (TLS BR §4.9.7).
    pub async fn root_crls_waiting(&self) -> Result<Vec<(CaRole, i64)>> {
        let mut out: Vec<(CaRole, i64)> = Vec::new();
        let revoked = self.store.revoked_cas().await?;
        for root in CaRole::ROOTS {
            let Some((_, root_der)) = self.store.ca(root.name()).await? else {
                continue;
            };
            let subject = x509_parser::parse_x509_certificate(&root_der)
                .map_err(|e| crate::Error::Store(format!("stored CA certificate: {e}")))?
                .1
                .tbs_certificate
                .subject
                .as_raw()
                .to_vec();
            // The serials the root's newest CRL lists (a root's CRL is small).
            let listed: Vec<Vec<u8>> = match self.store.latest_crl(root.name(), Scope::Full).await?
            {
                Some((_, der)) => {
                    let (_, crl) = x509_parser::parse_x509_crl(&der)
                        .map_err(|e| crate::Error::Store(format!("stored CRL: {e}")))?;
                    crl.iter_revoked_certificates()
                        .map(|r| r.raw_serial().to_vec())
                        .collect()
                }
                None => Vec::new(),
            };
            for (der, revoked_at, _) in &revoked {
                let (_, cert) = x509_parser::parse_x509_certificate(der)
                    .map_err(|e| crate::Error::Store(format!("stored CA certificate: {e}")))?;
                let issuer = cert.tbs_certificate.issuer.as_raw();
                if issuer == subject && !listed.iter().any(|s| s == cert.raw_serial()) {
                    match out.iter_mut().find(|(r, _)| *r == root) {
                        Some((_, since)) => *since = (*since).min(*revoked_at),
                        None => out.push((root, *revoked_at)),
                    }
                }
            }
        }
        Ok(out)
    }

    /// The newest CRL of one scope of a CA.
    pub async fn latest_crl(&self, id: CaId, scope: Scope) -> Result<Option<LatestCrl>> {
        Ok(self
            .store
            .latest_crl(&id.name(), scope)
            .await?
            .map(|(number, der)| LatestCrl { number, der }))
    }

    /// Each scope's status version (the revocations it has seen) of `role`'s CRLs.
    pub async fn status_versions(
        &self,
        id: CaId,
    ) -> Result<std::collections::HashMap<crate::crl::Scope, i64>> {
        self.store.status_versions(&id.name()).await
    }

    /// How the open Certificate Problem Reports' clocks stand at `now`
    /// ([`crate::ra::report_clocks`]).
    pub async fn problem_report_clocks(&self, now: i64) -> Result<crate::ra::ReportClocks> {
        crate::ra::report_clocks(&self.store, now).await
    }

    /// The OCSP signer's backlog at `now`; responses within `margin` seconds of their
    /// nextUpdate count as overdue (see [`Store::ocsp_backlog`]).
    pub async fn ocsp_backlog(&self, now: i64, margin: i64) -> Result<OcspBacklog> {
        self.store
            .ocsp_backlog(now, margin, OCSP_FRESH_AFTER_EXPIRY)
            .await
    }

    /// Reads the OCSP responses written since `cache` last synced into it; returns how many.
    pub async fn sync_ocsp(&self, cache: &Cache) -> Result<usize> {
        cache.sync(&self.store).await
    }
}

/// Which of a CA's CRLs (`scopes`, from [`Authority::crl_scopes`]) are due at `now`: one never
/// published, or whose newest (its head) is older than `interval` seconds, was built before the
/// scope's status last changed (`versions`, from [`Store::status_versions`]), or has its
/// nextUpdate less than a day away. A revocation so republishes the CA's full CRL and the one
/// partition that holds the serial. The root's CRL changes only by ceremony (which publishes it
/// at once): it is due only when missing or when its nextUpdate is near.
pub fn crls_due(
    role: CaRole,
    scopes: Vec<Scope>,
    heads: &[CrlHead],
    versions: &HashMap<Scope, i64>,
    now: i64,
    interval: i64,
) -> Vec<Scope> {
    const DAY: i64 = 86_400;
    scopes
        .into_iter()
        .filter(|scope| match heads.iter().find(|h| h.scope == *scope) {
            None => true,
            Some(h) => {
                let version = versions.get(scope).copied().unwrap_or(0);
                let stale = now - h.this_update >= interval || version > h.status_version;
                (!role.is_root() && stale) || h.next_update - now < DAY
            }
        })
        .collect()
}

/// How many refreshes (responses due again, [`Store::ocsp_stale`]) one batch of `batch` serials
/// takes beside `queued` changes: the rest of the batch, or an eighth of it while the changes
/// fill it, so a steady stream of changes cannot starve refreshes past nextUpdate.
pub fn refresh_room(queued: usize, batch: i64) -> i64 {
    let queued = i64::try_from(queued).unwrap_or(i64::MAX);
    if queued >= batch {
        batch / 8
    } else {
        batch - queued
    }
}

/// One OCSP signing batch of `batch` serials: the queued changes first, then at most
/// [`refresh_room`] refreshes, leaving out those already queued (one response per serial).
pub fn ocsp_batch(queued: Vec<OcspDue>, refreshes: Vec<OcspDue>, batch: i64) -> Vec<OcspDue> {
    let room = usize::try_from(refresh_room(queued.len(), batch)).unwrap_or(0);
    let seen: HashSet<String> = queued.iter().map(|d| d.serial.clone()).collect();
    let mut due = queued;
    due.extend(
        refreshes
            .into_iter()
            .take(room)
            .filter(|d| !seen.contains(&d.serial)),
    );
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const HOUR: i64 = 3600;
    const DAY: i64 = 86_400;
    const INTERVAL: i64 = 8 * HOUR;

    /// `publish_due`'s rule, one CRL at a time: (case, CA, scope, its head as (age, nextUpdate
    /// from now, status version built after), the scope's status version now, due?).
    #[test]
    fn crls_due_table() {
        type Head = Option<(i64, i64, i64)>;
        let p = Scope::Partition(3);
        let full = Scope::Full;
        #[rustfmt::skip]
        let cases: &[(&str, CaRole, Scope, Head, i64, bool)] = &[
            ("never published", CaRole::Server, p, None, 0, true),
            ("fresh, unchanged", CaRole::Server, p, Some((HOUR, 7 * DAY, 2)), 2, false),
            ("older than the interval", CaRole::Server, p, Some((INTERVAL, 7 * DAY, 2)), 2, true),
            ("inside the interval", CaRole::Server, p, Some((INTERVAL - 1, 7 * DAY, 2)), 2, false),
            ("status changed since", CaRole::Server, p, Some((HOUR, 7 * DAY, 2)), 3, true),
            ("status never changed", CaRole::Server, full, Some((HOUR, 7 * DAY, 0)), 0, false),
            ("nextUpdate within a day", CaRole::Server, p, Some((HOUR, DAY - 1, 2)), 2, true),
            ("nextUpdate a day away", CaRole::Server, p, Some((HOUR, DAY, 2)), 2, false),
            ("root never published", CaRole::Root, full, None, 0, true),
            ("root past the interval", CaRole::Root, full, Some((30 * DAY, 300 * DAY, 0)), 0, false),
            ("root status changed", CaRole::Root, full, Some((HOUR, 300 * DAY, 0)), 1, false),
            ("root nextUpdate near", CaRole::Root, full, Some((364 * DAY, DAY - 1, 0)), 0, true),
        ];
        for &(case, role, scope, head, version, due) in cases {
            let heads: Vec<CrlHead> = head
                .map(|(age, next_in, status_version)| CrlHead {
                    scope,
                    number: 7,
                    this_update: NOW - age,
                    next_update: NOW + next_in,
                    status_version,
                })
                .into_iter()
                .collect();
            let versions = HashMap::from([(scope, version)]);
            let got = crls_due(role, vec![scope], &heads, &versions, NOW, INTERVAL);
            let want = if due { vec![scope] } else { vec![] };
            assert_eq!(got, want, "{case}");
        }
    }

    /// Only the due scopes come back, in the order given; a head of another scope does not
    /// count for this one.
    #[test]
    fn crls_due_keeps_the_order_of_the_scopes() {
        let head = |scope, status_version| CrlHead {
            scope,
            number: 7,
            this_update: NOW - HOUR,
            next_update: NOW + 7 * DAY,
            status_version,
        };
        let heads = [head(Scope::Full, 5), head(Scope::Partition(0), 1)];
        let versions = HashMap::from([(Scope::Full, 6), (Scope::Partition(0), 1)]);
        let scopes = vec![Scope::Full, Scope::Partition(0), Scope::Partition(1)];
        assert_eq!(
            crls_due(CaRole::Individual, scopes, &heads, &versions, NOW, INTERVAL),
            vec![Scope::Full, Scope::Partition(1)]
        );
    }

    fn due(serial: &str, version: Option<i64>) -> OcspDue {
        OcspDue {
            serial: serial.into(),
            version,
            issuer: "server".into(),
            state: CertState::Issued,
            reason: None,
            revoked_at: None,
            hold_allowed: false,
        }
    }

    fn serials(n: usize, prefix: &str) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:02}")).collect()
    }

    fn queued(serials: &[String]) -> Vec<OcspDue> {
        serials.iter().map(|s| due(s, Some(1))).collect()
    }

    fn refreshes(serials: &[String]) -> Vec<OcspDue> {
        serials.iter().map(|s| due(s, None)).collect()
    }

    /// (case, queued, batch, room for refreshes).
    #[test]
    fn refresh_room_table() {
        #[rustfmt::skip]
        let cases: &[(&str, usize, i64, i64)] = &[
            ("empty queue: the whole batch", 0, 512, 512),
            ("some queued: the rest", 500, 512, 12),
            ("one short of full", 511, 512, 1),
            ("queue fills the batch: an eighth", 512, 512, 64),
            ("queue over the batch: an eighth", 9000, 512, 64),
            ("small batch", 16, 16, 2),
        ];
        for (case, queued, batch, room) in cases {
            assert_eq!(refresh_room(*queued, *batch), *room, "{case}");
        }
    }

    /// Queued changes first, then refreshes up to the room, without a serial twice:
    /// (case, queued, refreshes read, batch, the batch's serials).
    #[test]
    fn ocsp_batch_table() {
        let (q, r) = (serials(16, "q"), serials(5, "r"));
        let q1_r0 = [q[1].clone(), r[0].clone()];
        type Case<'a> = (&'a str, &'a [String], &'a [String], i64, Vec<String>);
        #[rustfmt::skip]
        let cases: Vec<Case<'_>> = vec![
            ("nothing due", &[], &[], 8, vec![]),
            ("refreshes only", &[], &r[..3], 8, r[..3].to_vec()),
            ("queued first", &q[..2], &r[..2], 8, [&q[..2], &r[..2]].concat()),
            (
                "a refresh already queued is left out",
                &q[..2],
                &q1_r0,
                8,
                vec![q[0].clone(), q[1].clone(), r[0].clone()],
            ),
            ("refreshes past the room are left", &q[..6], &r, 8, [&q[..6], &r[..2]].concat()),
            ("a full queue leaves an eighth", &q, &r, 16, [&q[..], &r[..2]].concat()),
        ];
        for (case, queued_now, read, batch, want) in cases {
            let got = ocsp_batch(queued(queued_now), refreshes(read), batch);
            let got: Vec<String> = got.into_iter().map(|d| d.serial).collect();
            assert_eq!(got, want, "{case}");
        }
        // The queued entry (with its version: the signer takes a serial off the queue only if
        // the version still matches) wins over the refresh of the same serial.
        let got = ocsp_batch(vec![due("a", Some(4))], vec![due("a", None)], 8);
        assert_eq!(got, vec![due("a", Some(4))]);
    }
}
