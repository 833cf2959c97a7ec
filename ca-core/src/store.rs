//! The database: SQLite (embedded default) or PostgreSQL, through `sqlx::Any`.
//!
//! Both engines run the same queries (`$1` placeholders work in both) on the types `Any` carries
//! well (i64, text, bytes); timestamps are Unix seconds.
//!
//! **Rows are read by column name.** A query of several columns is read into a struct declared
//! with `row!` ([`crate::row`]: each field from the column of its name; `AS` names an
//! expression, `COUNT(*) AS n`), then converted to the public type where a column needs
//! parsing (`CertRow` → [`CertRecord`]); a query of one value is read with
//! `sqlx::query_scalar`. Never by position (`row.try_get(index)`): a reordered SELECT fails
//! loudly (a missing column) instead of reading the wrong field (STYLE.md rule 17). A boolean
//! expression is a bool on PostgreSQL but an integer on SQLite, so it is selected as
//! `CAST(CASE WHEN .. THEN 1 ELSE 0 END AS BIGINT)` and read as i64.
//!
//! **Migrations.** Each engine has its own forward-only migrations under `migrations/<engine>/`,
//! embedded in the binary (the list below) and applied at open by sqlx's [`Migrator`], which
//! records them in `_sqlx_migrations` with a checksum, so an applied file that was edited
//! afterwards stops the store from opening. On SQLite the whole run is one `BEGIN IMMEDIATE`
//! transaction (sqlx's SQLite migrator takes no lock of its own: `lock()` is a no-op), so two
//! processes opening a fresh data directory at once cannot race; on PostgreSQL sqlx holds an
//! advisory lock for the run. Versions applied before sqlx's migrator was used, listed in
//! `ecert_migrations`, are adopted into `_sqlx_migrations` and never run again.
//!
//! Why a list and not `sqlx::migrate!("../migrations/<engine>")` (sqlx 0.9.0, read in its
//! sources): the `migrate!` macro is defined in sqlx's `macros` module, compiled only with the
//! `macros` feature (`sqlx/src/lib.rs`: `#[cfg(feature = "macros")] mod macros;`), which is not
//! enabled here. Turning it on compiles sqlx-macros and, through sqlx's feature forwarding
//! (`sqlx-macros?/sqlite`, `sqlx-macros?/postgres`), a second copy of both drivers, sqlx-core
//! and SQLite's C for the proc-macro host, plus the `offline` and `query!` machinery: well over
//! 100 s more CPU per clean build on the 2-core CI machine (measured with `cargo build
//! --timings`), and a build script would have to rerun the build when a file is
//! added. A [`Migrator`] made from the embedded files ([`Migrator::with_migrations`]) gives the
//! same bookkeeping without either; the cost is one line here per new file.
//!
//! Every state change of a certificate is one transaction that also appends its audit record
//! (see [`crate::audit`]); if the audit append fails, the change is rolled back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Transaction};

use crate::audit::{self, Event, Record};
use crate::crl::{EntryRow, Scope};
use crate::error::{Error, Result};
use crate::profile::{CaId, CaRole, CaStatus};
use crate::row::row;
use crate::serial::SerialNumber;

/// Which database engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// One engine's migrations in order, from `migrations/<engine>/NNNN_<description>.sql`:
/// (version, description, SQL).
type Embedded = &'static [(i64, &'static str, &'static str)];

#[rustfmt::skip]
const SQLITE_MIGRATIONS: Embedded = &[
    (1, "init", include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, "audit_checkpoints", include_str!("../../migrations/sqlite/0002_audit_checkpoints.sql")),
    (3, "revocation", include_str!("../../migrations/sqlite/0003_revocation.sql")),
    (4, "crls", include_str!("../../migrations/sqlite/0004_crls.sql")),
    (5, "status_changes", include_str!("../../migrations/sqlite/0005_status_changes.sql")),
    (6, "ocsp", include_str!("../../migrations/sqlite/0006_ocsp.sql")),
    (7, "crl_partitions", include_str!("../../migrations/sqlite/0007_crl_partitions.sql")),
    (8, "ra", include_str!("../../migrations/sqlite/0008_ra.sql")),
    (9, "api_tokens", include_str!("../../migrations/sqlite/0009_api_tokens.sql")),
    (10, "ocsp_writer", include_str!("../../migrations/sqlite/0010_ocsp_writer.sql")),
    (11, "org_applications", include_str!("../../migrations/sqlite/0011_org_applications.sql")),
    (12, "role_title", include_str!("../../migrations/sqlite/0012_role_title.sql")),
    (13, "responder_retirement", include_str!("../../migrations/sqlite/0013_responder_retirement.sql")),
    (14, "ca_revocation", include_str!("../../migrations/sqlite/0014_ca_revocation.sql")),
    (15, "entered_by", include_str!("../../migrations/sqlite/0015_entered_by.sql")),
    (16, "signin_window", include_str!("../../migrations/sqlite/0016_signin_window.sql")),
    (17, "token_scopes", include_str!("../../migrations/sqlite/0017_token_scopes.sql")),
    (18, "mailbox_caps", include_str!("../../migrations/sqlite/0018_mailbox_caps.sql")),
    (19, "signin_sources", include_str!("../../migrations/sqlite/0019_signin_sources.sql")),
    (20, "key_compromise_reports", include_str!("../../migrations/sqlite/0020_key_compromise_reports.sql")),
    (21, "verified_subject", include_str!("../../migrations/sqlite/0021_verified_subject.sql")),
    (22, "problem_reports", include_str!("../../migrations/sqlite/0022_problem_reports.sql")),
    (23, "health_probes", include_str!("../../migrations/sqlite/0023_health_probes.sql")),
    (24, "staff_roles", include_str!("../../migrations/sqlite/0024_staff_roles.sql")),
    (25, "staff_role_grants", include_str!("../../migrations/sqlite/0025_staff_role_grants.sql")),
    (26, "audit_log_at", include_str!("../../migrations/sqlite/0026_audit_log_at.sql")),
    (27, "held_by", include_str!("../../migrations/sqlite/0027_held_by.sql")),
    (28, "must_change_password", include_str!("../../migrations/sqlite/0028_must_change_password.sql")),
    (29, "outlet_closed", include_str!("../../migrations/sqlite/0029_outlet_closed.sql")),
    (30, "officer_proposals", include_str!("../../migrations/sqlite/0030_officer_proposals.sql")),
    (31, "api_token_last_used", include_str!("../../migrations/sqlite/0031_api_token_last_used.sql")),
    (32, "ca_token_label", include_str!("../../migrations/sqlite/0032_ca_token_label.sql")),
    (33, "ca_rollover", include_str!("../../migrations/sqlite/0033_ca_rollover.sql")),
    (34, "cross_certificates", include_str!("../../migrations/sqlite/0034_cross_certificates.sql")),
    (35, "bulk", include_str!("../../migrations/sqlite/0035_bulk.sql")),
    (36, "expiry_reminders", include_str!("../../migrations/sqlite/0036_expiry_reminders.sql")),
    (37, "directory", include_str!("../../migrations/sqlite/0037_directory.sql")),
    (38, "ldap", include_str!("../../migrations/sqlite/0038_ldap.sql")),
    (39, "standing_authorisation", include_str!("../../migrations/sqlite/0039_standing_authorisation.sql")),
    (40, "crl_cover", include_str!("../../migrations/sqlite/0040_crl_cover.sql")),
    (41, "applications_certificate", include_str!("../../migrations/sqlite/0041_applications_certificate.sql")),
    (42, "batch_approved_by", include_str!("../../migrations/sqlite/0042_batch_approved_by.sql")),
    (43, "published_email_lower", include_str!("../../migrations/sqlite/0043_published_email_lower.sql")),
    (44, "signer_epoch", include_str!("../../migrations/sqlite/0044_signer_epoch.sql")),
    (45, "signer_lease", include_str!("../../migrations/sqlite/0045_signer_lease.sql")),
    (46, "consent", include_str!("../../migrations/sqlite/0046_consent.sql")),
    (47, "audit_prune", include_str!("../../migrations/sqlite/0047_audit_prune.sql")),
    (48, "batch_rows_caa", include_str!("../../migrations/sqlite/0048_batch_rows_caa.sql")),
];
#[rustfmt::skip]
const POSTGRES_MIGRATIONS: Embedded = &[
    (1, "init", include_str!("../../migrations/postgres/0001_init.sql")),
    (2, "audit_checkpoints", include_str!("../../migrations/postgres/0002_audit_checkpoints.sql")),
    (3, "revocation", include_str!("../../migrations/postgres/0003_revocation.sql")),
    (4, "crls", include_str!("../../migrations/postgres/0004_crls.sql")),
    (5, "status_changes", include_str!("../../migrations/postgres/0005_status_changes.sql")),
    (6, "ocsp", include_str!("../../migrations/postgres/0006_ocsp.sql")),
    (7, "crl_partitions", include_str!("../../migrations/postgres/0007_crl_partitions.sql")),
    (8, "ra", include_str!("../../migrations/postgres/0008_ra.sql")),
    (9, "api_tokens", include_str!("../../migrations/postgres/0009_api_tokens.sql")),
    (10, "ocsp_writer", include_str!("../../migrations/postgres/0010_ocsp_writer.sql")),
    (11, "org_applications", include_str!("../../migrations/postgres/0011_org_applications.sql")),
    (12, "role_title", include_str!("../../migrations/postgres/0012_role_title.sql")),
    (13, "responder_retirement", include_str!("../../migrations/postgres/0013_responder_retirement.sql")),
    (14, "ca_revocation", include_str!("../../migrations/postgres/0014_ca_revocation.sql")),
    (15, "entered_by", include_str!("../../migrations/postgres/0015_entered_by.sql")),
    (16, "signin_window", include_str!("../../migrations/postgres/0016_signin_window.sql")),
    (17, "token_scopes", include_str!("../../migrations/postgres/0017_token_scopes.sql")),
    (18, "mailbox_caps", include_str!("../../migrations/postgres/0018_mailbox_caps.sql")),
    (19, "signin_sources", include_str!("../../migrations/postgres/0019_signin_sources.sql")),
    (20, "key_compromise_reports", include_str!("../../migrations/postgres/0020_key_compromise_reports.sql")),
    (21, "verified_subject", include_str!("../../migrations/postgres/0021_verified_subject.sql")),
    (22, "problem_reports", include_str!("../../migrations/postgres/0022_problem_reports.sql")),
    (23, "health_probes", include_str!("../../migrations/postgres/0023_health_probes.sql")),
    (24, "staff_roles", include_str!("../../migrations/postgres/0024_staff_roles.sql")),
    (25, "staff_role_grants", include_str!("../../migrations/postgres/0025_staff_role_grants.sql")),
    (26, "audit_log_at", include_str!("../../migrations/postgres/0026_audit_log_at.sql")),
    (27, "held_by", include_str!("../../migrations/postgres/0027_held_by.sql")),
    (28, "must_change_password", include_str!("../../migrations/postgres/0028_must_change_password.sql")),
    (29, "outlet_closed", include_str!("../../migrations/postgres/0029_outlet_closed.sql")),
    (30, "officer_proposals", include_str!("../../migrations/postgres/0030_officer_proposals.sql")),
    (31, "api_token_last_used", include_str!("../../migrations/postgres/0031_api_token_last_used.sql")),
    (32, "ca_token_label", include_str!("../../migrations/postgres/0032_ca_token_label.sql")),
    (33, "ca_rollover", include_str!("../../migrations/postgres/0033_ca_rollover.sql")),
    (34, "cross_certificates", include_str!("../../migrations/postgres/0034_cross_certificates.sql")),
    (35, "bulk", include_str!("../../migrations/postgres/0035_bulk.sql")),
    (36, "expiry_reminders", include_str!("../../migrations/postgres/0036_expiry_reminders.sql")),
    (37, "directory", include_str!("../../migrations/postgres/0037_directory.sql")),
    (38, "ldap", include_str!("../../migrations/postgres/0038_ldap.sql")),
    (39, "standing_authorisation", include_str!("../../migrations/postgres/0039_standing_authorisation.sql")),
    (40, "crl_cover", include_str!("../../migrations/postgres/0040_crl_cover.sql")),
    (41, "applications_certificate", include_str!("../../migrations/postgres/0041_applications_certificate.sql")),
    (42, "batch_approved_by", include_str!("../../migrations/postgres/0042_batch_approved_by.sql")),
    (43, "published_email_lower", include_str!("../../migrations/postgres/0043_published_email_lower.sql")),
    (44, "signer_epoch", include_str!("../../migrations/postgres/0044_signer_epoch.sql")),
    (45, "signer_lease", include_str!("../../migrations/postgres/0045_signer_lease.sql")),
    (46, "consent", include_str!("../../migrations/postgres/0046_consent.sql")),
    (47, "audit_prune", include_str!("../../migrations/postgres/0047_audit_prune.sql")),
    (48, "batch_rows_caa", include_str!("../../migrations/postgres/0048_batch_rows_caa.sql")),
];

row! {
    struct SeqBounds {
        first: Option<i64>,
        last: Option<i64>,
    }
}

/// A database connection pool plus the engine it talks to.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    /// The bound (milliseconds) within which this host's clock must agree with the database
    /// server's before a revocation is dated by it ([`crate::clock::revocation_time`]); `None`
    /// without a reference.
    clock_bound_ms: Option<i64>,
    /// The signer epoch this process holds, if it took the signer lock
    /// ([`Store::take_signer_epoch`]): every transaction it begins checks it.
    fence: Option<Arc<Fence>>,
}

/// The PostgreSQL advisory lock key of the signer lock (a session lock: `pg_locks` shows it
/// with `classid` its high 32 bits, `objid` its low 32 bits, `objsubid` 1).
pub const SIGNER_LOCK_KEY: i64 = 435_761_231_476;

/// Seconds after which a standby ends the session holding the signer lock if the signer has
/// not renewed its lease ([`Store::break_stale_signer_lock`]); the signer renews it every
/// second.
pub const SIGNER_LEASE_SECONDS: i64 = 10;

/// The signer epoch a signing process took with the signer lock (issue 17, hot standby).
///
/// Every process that takes the lock adds one to `signer_epoch.epoch` and keeps the value;
/// every transaction begun through its [`Store`] reads the row (`FOR SHARE` on PostgreSQL, so
/// that a standby's increment waits for the transactions in flight and none commits after it;
/// SQLite's `BEGIN IMMEDIATE` writer lock does the same) and refuses to go on if the value has
/// moved. A signer that lost the lock — its lock connection cut, a standby took over — can
/// then never write again: not a certificate, not a CRL, not a stale `good` OCSP response over
/// a fresher `revoked` one (the Boulder #2995 failure).
#[derive(Debug)]
pub struct Fence {
    epoch: i64,
    lost: std::sync::atomic::AtomicBool,
}

impl Fence {
    /// The epoch held.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Whether a transaction found that another process holds a newer epoch.
    pub fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A write transaction.
pub type Tx = Transaction<'static, sqlx::Any>;

/// The lifecycle state of a serial (DESIGN.md "Issuance cycle").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    /// Serial committed; nothing built or signed yet.
    Reserved,
    /// Linting TBS stored; the HSM may be signing. The certificate may exist.
    Issuing,
    /// Signed, verified, stored.
    Issued,
    /// Stopped before any valid signature could exist (error before or at the HSM, or the
    /// self-check refused the signed certificate, which was then discarded).
    Failed,
    /// Found in `issuing` after a crash: a signature may exist that nobody received. Never
    /// reported good; treated as revoked by status publication.
    Abandoned,
}

impl CertState {
    fn as_str(self) -> &'static str {
        match self {
            CertState::Reserved => "reserved",
            CertState::Issuing => "issuing",
            CertState::Issued => "issued",
            CertState::Failed => "failed",
            CertState::Abandoned => "abandoned",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "reserved" => CertState::Reserved,
            "issuing" => CertState::Issuing,
            "issued" => CertState::Issued,
            "failed" => CertState::Failed,
            "abandoned" => CertState::Abandoned,
            other => return Err(Error::Store(format!("unknown certificate state {other:?}"))),
        })
    }
}

impl std::fmt::Display for CertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A certificate row.
#[derive(Debug, Clone)]
pub struct CertRecord {
    /// Hex serial.
    pub serial: String,
    /// Issuing CA name.
    pub issuer: String,
    /// State.
    pub state: CertState,
    /// Profile id.
    pub profile: String,
    /// Profile version.
    pub profile_version: i64,
    /// SHA-256 of the subject SPKI.
    pub key_fp: Vec<u8>,
    /// The approved request's subject data, JSON.
    pub request: String,
    /// Serial this one renews.
    pub renews: Option<String>,
    /// Serial that renewed this one.
    pub renewed_by: Option<String>,
    /// The linting TBS (from state `issuing` on).
    pub linting_tbs: Option<Vec<u8>>,
    /// The certificate (state `issued`).
    pub cert_der: Option<Vec<u8>>,
    /// notAfter, Unix seconds.
    pub not_after: Option<i64>,
    /// Why it failed.
    pub failure: Option<String>,
    /// RFC 5280 reason code if revoked or on hold.
    pub revocation_reason: Option<i64>,
    /// When it was revoked, Unix seconds.
    pub revoked_at: Option<i64>,
}

/// A new reservation.
#[derive(Debug, Clone)]
pub struct Reservation<'a> {
    /// Hex serial.
    pub serial: &'a str,
    /// Issuing CA name.
    pub issuer: &'a str,
    /// Profile id.
    pub profile: &'a str,
    /// Profile version.
    pub profile_version: i64,
    /// SHA-256 of the subject SPKI.
    pub key_fp: &'a [u8],
    /// Subject data, JSON.
    pub request: &'a str,
    /// Serial renewed.
    pub renews: Option<&'a str>,
    /// The CRL partition its distribution point names (`None`: the full CRL).
    pub crl_partition: Option<u16>,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// sqlx's migrator over one engine's embedded migrations.
fn migrator(embedded: Embedded) -> Migrator {
    let mut migrator = Migrator::with_migrations(
        embedded
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    // As sqlx's own file resolver names it.
                    description.replace('_', " ").into(),
                    MigrationType::Simple,
                    sqlx::SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    );
    // A version applied by a newer binary is no reason to refuse to start (as before sqlx's
    // migrator was used).
    migrator.set_ignore_missing(true);
    migrator
}

impl Store {
    /// Connects, applies pending migrations and returns the store.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Engine::Postgres
        } else {
            return Err(Error::Config(
                "database URL must start with sqlite: or postgres://".into(),
            ));
        };
        // A connection that comes back to the pool still inside a transaction — a COMMIT that
        // failed (disk full) after which the ROLLBACK failed too, leaving the driver's
        // transaction depth above zero — is closed, never handed out again: reused, every
        // later BEGIN on it would fail ("begin_with at non-zero transaction depth") until a
        // restart (issue 13, defect 3). The pool opens a fresh one.
        let mut opts = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(30))
            .after_release(|conn, _| {
                Box::pin(async move {
                    let clean = !sqlx::Connection::is_in_transaction(conn);
                    if !clean {
                        tracing::warn!(
                            "a database connection came back inside a transaction: closed"
                        );
                    }
                    Ok(clean)
                })
            });
        if engine == Engine::Sqlite {
            opts = opts.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; synchronous=FULL fsyncs every
                    // commit; busy_timeout waits for another process's write lock.
                    sqlx::raw_sql(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 30000;",
                    )
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            });
        } else {
            opts = opts.max_connections(16);
        }
        let pool = opts
            .connect(url)
            .await
            .map_err(|e| Error::Store(redact_url(&e.to_string(), url)))?;
        let store = Store {
            pool,
            engine,
            clock_bound_ms: None,
            fence: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// On PostgreSQL, takes the session advisory lock that makes this process the only signer
    /// for the database (other hosts included), waiting for it if another holds it — up to
    /// `wait`, or for as long as it takes with `None` (a standby). The lock lives as long as
    /// the returned connection. On SQLite the data-directory file lock does this job and
    /// `None` is returned.
    pub async fn signer_lock(
        &self,
        wait: Option<Duration>,
    ) -> Result<Option<sqlx::pool::PoolConnection<sqlx::Any>>> {
        if self.engine != Engine::Postgres {
            return Ok(None);
        }
        let mut conn = self.pool.acquire().await?;
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let mut tries = 0u64;
        loop {
            tries += 1;
            // A standby (waiting for as long as it takes) frees a lock whose holder's lease is
            // stale, once a second.
            if wait.is_none() && tries.is_multiple_of(10) {
                self.break_stale_signer_lock().await?;
            }
            // SIGNER_LOCK_KEY: one key for every host and process of this database.
            // One column (a PostgreSQL bool: this branch runs on PostgreSQL only).
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(SIGNER_LOCK_KEY)
                .fetch_one(&mut *conn)
                .await?;
            if got {
                return Ok(Some(conn));
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Err(Error::SignerBusy("this database".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The database server's clock, Unix milliseconds (PostgreSQL's `clock_timestamp()`; on
    /// SQLite, which runs in this process, this host's own clock).
    pub async fn reference_time_ms(&self) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        self.reference_time_ms_on(&mut conn).await
    }

    /// [`Store::reference_time_ms`] on a connection the caller holds (so that a measured round
    /// trip does not include waiting for one).
    pub async fn reference_time_ms_on(
        &self,
        conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
    ) -> Result<i64> {
        match self.engine {
            Engine::Postgres => Ok(sqlx::query_scalar::<_, i64>(
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            )
            .fetch_one(&mut **conn)
            .await?),
            Engine::Sqlite => Ok(sqlx::query_scalar::<_, i64>(
                "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
            )
            .fetch_one(&mut **conn)
            .await?),
        }
    }

    /// Writes this instance's health-probe row (and removes those of instances silent for a
    /// day), in one transaction: the proof that the database accepts writes now.
    pub async fn write_health_probe(&self, instance: &str, now: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO health_probes (instance, written_at) VALUES ($1, $2) \
             ON CONFLICT (instance) DO UPDATE SET written_at = excluded.written_at",
        )
        .bind(instance)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM health_probes WHERE written_at < $1")
            .bind(now - 86_400)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// This store with the clock check of `config` ([`crate::config::ClockConfig`]): with the
    /// database server's clock as the reference, revocations are dated only while this
    /// host's clock agrees with it.
    pub fn with_clock_check(mut self, config: &crate::config::ClockConfig) -> Store {
        self.clock_bound_ms = crate::clock::uses_database(config, self.engine)
            .then(|| i64::from(config.max_skew_seconds) * 1000);
        self
    }

    /// See [`Store::with_clock_check`].
    pub fn clock_bound_ms(&self) -> Option<i64> {
        self.clock_bound_ms
    }

    /// The pool, for tests and tools that need a raw query.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Applies the pending migrations of this engine (see the module documentation).
    async fn migrate(&self) -> Result<()> {
        let migrator = migrator(match self.engine {
            Engine::Sqlite => SQLITE_MIGRATIONS,
            Engine::Postgres => POSTGRES_MIGRATIONS,
        });
        match self.engine {
            Engine::Sqlite => {
                // sqlx's SQLite migrator takes no lock and commits each file on its own, so it
                // runs inside one write transaction: two processes opening a fresh data
                // directory at once cannot both apply a file (its transactions nest as
                // savepoints).
                let mut tx = self.begin().await?;
                self.adopt_legacy_versions(&migrator, &mut tx).await?;
                migrator.run(&mut *tx).await?;
                tx.commit().await?;
            }
            Engine::Postgres => {
                // sqlx's PostgreSQL migrator holds an advisory lock while it runs and commits
                // each file as it applies it, so a second process waits, then finds it applied.
                let mut conn = self.pool.acquire().await?;
                self.adopt_legacy_versions(&migrator, &mut conn).await?;
                migrator.run(&mut *conn).await?;
            }
        }
        Ok(())
    }

    /// A database migrated before ecert used sqlx's migrator lists its versions in
    /// `ecert_migrations`: they are recorded as applied in `_sqlx_migrations` (with the
    /// checksums of the embedded files), never run again. Idempotent.
    async fn adopt_legacy_versions(
        &self,
        migrator: &Migrator,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<()> {
        let exists = match self.engine {
            Engine::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'ecert_migrations'"
            }
            Engine::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = 'ecert_migrations'"
            }
        };
        let tables: i64 = sqlx::query_scalar(exists).fetch_one(&mut *conn).await?;
        if tables == 0 {
            return Ok(());
        }
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM ecert_migrations")
            .fetch_one(&mut *conn)
            .await?;
        if let Some(last) = last {
            migrator.skip(&mut *conn, Some(last)).await?;
        }
        Ok(())
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so two writers never deadlock upgrading a read lock.
    pub async fn begin(&self) -> Result<Tx> {
        let mut tx = self.begin_unfenced().await?;
        if let Some(fence) = &self.fence {
            let sql = match self.engine {
                Engine::Postgres => "SELECT epoch FROM signer_epoch WHERE id = 1 FOR SHARE",
                Engine::Sqlite => "SELECT epoch FROM signer_epoch WHERE id = 1",
            };
            let current: i64 = sqlx::query_scalar(sql).fetch_one(&mut *tx).await?;
            Self::still_held(fence, current)?;
        }
        Ok(tx)
    }

    async fn begin_unfenced(&self) -> Result<Tx> {
        Ok(match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Engine::Postgres => self.pool.begin().await?,
        })
    }

    fn still_held(fence: &Fence, current: i64) -> Result<()> {
        if current == fence.epoch {
            return Ok(());
        }
        fence.lost.store(true, std::sync::atomic::Ordering::SeqCst);
        Err(Error::SignerFenced {
            held: fence.epoch,
            current,
        })
    }

    /// Ends the session holding the signer's advisory lock if its lease
    /// ([`Store::renew_signer_lease`]) is older than [`SIGNER_LEASE_SECONDS`] by the database
    /// server's clock — the signer's host lost without a word, or its process wedged (issue
    /// 17). A lock held by a session that never renewed a lease (a CLI command) is left alone.
    /// Returns whether a session was ended. PostgreSQL only.
    pub async fn break_stale_signer_lock(&self) -> Result<bool> {
        if self.engine != Engine::Postgres {
            return Ok(false);
        }
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(l.pid) FROM signer_lease s \
             JOIN pg_locks l ON l.pid = s.pid AND l.locktype = 'advisory' AND l.granted \
             AND l.classid = CAST($2 AS oid) AND l.objid = CAST($3 AS oid) AND l.objsubid = 1 \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             WHERE s.id = 1 AND CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT) - s.renewed_at > $1",
        )
        .bind(SIGNER_LEASE_SECONDS)
        .bind(SIGNER_LOCK_KEY >> 32)
        .bind(SIGNER_LOCK_KEY & 0xffff_ffff)
        .fetch_all(&self.pool)
        .await?;
        let ended = ended.into_iter().any(|b| b);
        if ended {
            tracing::warn!(
                lease_seconds = SIGNER_LEASE_SECONDS,
                "the signer's lease is stale: its lock session was ended"
            );
        }
        Ok(ended)
    }

    /// Renews the signer's lease on `conn`, the connection holding the advisory lock: this
    /// session's backend and the database server's time. PostgreSQL only.
    pub async fn renew_signer_lease(
        &self,
        conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
    ) -> Result<()> {
        if self.engine != Engine::Postgres {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO signer_lease (id, pid, renewed_at) \
             VALUES (1, pg_backend_pid(), CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)) \
             ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, renewed_at = excluded.renewed_at",
        )
        .execute(&mut **conn)
        .await?;
        Ok(())
    }

    /// Takes the next signer epoch for a process that holds the signer lock and returns this
    /// store fenced by it ([`Fence`]); `holder` (host and process) is recorded beside it.
    ///
    /// On PostgreSQL a stale signer's transaction still holding the epoch row `FOR SHARE` (its
    /// process frozen mid-transaction) would hold the increment back for as long as it lives:
    /// after two seconds the sessions blocking it are ended (only another signer's fenced
    /// transactions take that row, and this process holds the lock).
    pub async fn take_signer_epoch(mut self, holder: &str) -> Result<Store> {
        let mut tx = self.begin_unfenced().await?;
        let unblocker = if self.engine == Engine::Postgres {
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut *tx)
                .await?;
            let pool = self.pool.clone();
            Some(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                loop {
                    let ended: std::result::Result<Vec<bool>, _> = sqlx::query_scalar(
                        "SELECT pg_terminate_backend(b) FROM unnest(pg_blocking_pids($1)) AS b",
                    )
                    .bind(pid)
                    .fetch_all(&pool)
                    .await;
                    if let Ok(e) = ended {
                        if !e.is_empty() {
                            tracing::warn!(
                                sessions = e.len(),
                                "ended the sessions holding the signer epoch back"
                            );
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }))
        } else {
            None
        };
        let bumped = sqlx::query(
            "UPDATE signer_epoch SET epoch = epoch + 1, holder = $1, taken_at = $2 WHERE id = 1",
        )
        .bind(holder)
        .bind(time::OffsetDateTime::now_utc().unix_timestamp())
        .execute(&mut *tx)
        .await;
        if let Some(u) = unblocker {
            u.abort();
        }
        bumped?;
        let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM signer_epoch WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        self.fence = Some(Arc::new(Fence {
            epoch,
            lost: std::sync::atomic::AtomicBool::new(false),
        }));
        Ok(self)
    }

    /// The signer epoch this store is fenced by (`None` outside a signing process).
    pub fn fence(&self) -> Option<&Arc<Fence>> {
        self.fence.as_ref()
    }

    /// Checks that the epoch is still this store's, on `conn` (the signer-lock connection,
    /// whose loss means the lock may be gone) or on a pooled connection; `Ok` outside a
    /// signing process.
    pub async fn check_fence(
        &self,
        conn: Option<&mut sqlx::pool::PoolConnection<sqlx::Any>>,
    ) -> Result<()> {
        let Some(fence) = &self.fence else {
            return Ok(());
        };
        let q = sqlx::query_scalar::<_, i64>("SELECT epoch FROM signer_epoch WHERE id = 1");
        let current = match conn {
            Some(c) => q.fetch_one(&mut **c).await?,
            None => q.fetch_one(&self.pool).await?,
        };
        Self::still_held(fence, current)
    }

    /// Appends an audit record inside `tx`.
    pub async fn audit(&self, tx: &mut Tx, event: &Event) -> Result<()> {
        self.audit_many(tx, &[event]).await
    }

    /// Appends one audit record in its own transaction.
    pub async fn audit_now(&self, event: &Event) -> Result<()> {
        let mut tx = self.begin().await?;
        self.audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Reads the whole audit log and the head, for verification.
    pub async fn audit_records(&self) -> Result<(Vec<Record>, i64, Vec<u8>)> {
        let records = sqlx::query_as::<_, Record>(
            "SELECT seq, at, kind, actor, subject, detail, prev_hash, hash FROM audit_log ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        let (seq, hash) = self.audit_head().await?;
        Ok((records, seq, hash))
    }

    /// The audit head: last sequence number and hash.
    pub async fn audit_head(&self) -> Result<(i64, Vec<u8>)> {
        let head =
            sqlx::query_as::<_, AuditHeadRow>("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        Ok((head.seq, head.hash))
    }

    /// Stores a signed checkpoint (idempotent per sequence number).
    pub async fn insert_checkpoint(&self, c: &audit::Checkpoint) -> Result<()> {
        sqlx::query("INSERT INTO audit_checkpoints (seq, at, hash, signature) VALUES ($1, $2, $3, $4) ON CONFLICT (seq) DO NOTHING")
            .bind(c.seq)
            .bind(c.at)
            .bind(c.hash.clone())
            .bind(c.signature.clone())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The sequence number the newest checkpoint covers (0 if none).
    pub async fn checkpoints_last_seq(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The audit records with `from <= seq <= to`, in sequence order.
    pub async fn audit_range(&self, from: i64, to: i64) -> Result<Vec<Record>> {
        Ok(sqlx::query_as::<_, Record>(
            "SELECT seq, at, kind, actor, subject, detail, prev_hash, hash FROM audit_log \
             WHERE seq >= $1 AND seq <= $2 ORDER BY seq",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The first and last sequence numbers of the records made at or after `since` and at or
    /// before `until` (Unix seconds; `None`: unbounded); `None` when there is none.
    pub async fn audit_seq_bounds(
        &self,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<Option<(i64, i64)>> {
        let row = sqlx::query_as::<_, SeqBounds>(
            "SELECT MIN(seq) AS first, MAX(seq) AS last FROM audit_log WHERE at >= $1 AND at <= $2",
        )
        .bind(since.unwrap_or(i64::MIN))
        .bind(until.unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.first.zip(row.last))
    }

    /// The first checkpoint at or after `seq`, else the newest one before it.
    pub async fn checkpoint_covering(&self, seq: i64) -> Result<Option<audit::Checkpoint>> {
        let after = sqlx::query_as::<_, audit::Checkpoint>(
            "SELECT seq, at, hash, signature FROM audit_checkpoints WHERE seq >= $1 ORDER BY seq LIMIT 1",
        )
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?;
        if after.is_some() {
            return Ok(after);
        }
        Ok(sqlx::query_as::<_, audit::Checkpoint>(
            "SELECT seq, at, hash, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The newest checkpoint before record `seq`.
    pub async fn checkpoint_before(&self, seq: i64) -> Result<Option<audit::Checkpoint>> {
        Ok(sqlx::query_as::<_, audit::Checkpoint>(
            "SELECT seq, at, hash, signature FROM audit_checkpoints WHERE seq < $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The ids of the applications with this reference (any case; at most one).
    pub async fn application_ids_by_reference(&self, reference: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM applications WHERE reference = $1")
                .bind(reference.trim().to_ascii_uppercase())
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The checkpoints after `seq`, in sequence order.
    pub async fn checkpoints_after(&self, seq: i64) -> Result<Vec<audit::Checkpoint>> {
        Ok(sqlx::query_as::<_, audit::Checkpoint>(
            "SELECT seq, at, hash, signature FROM audit_checkpoints WHERE seq > $1 ORDER BY seq",
        )
        .bind(seq)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every checkpoint, in sequence order.
    pub async fn checkpoints(&self) -> Result<Vec<audit::Checkpoint>> {
        Ok(sqlx::query_as::<_, audit::Checkpoint>(
            "SELECT seq, at, hash, signature FROM audit_checkpoints ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Sets a meta value (insert or replace).
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Reads a meta value.
    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Sets a meta value once; returns the value in force (an existing one wins).
    pub async fn meta_init(&self, tx: &mut Tx, key: &str, value: &str) -> Result<String> {
        let existing: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(existing) = existing {
            return Ok(existing);
        }
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2)")
            .bind(key)
            .bind(value)
            .execute(&mut **tx)
            .await?;
        Ok(value.to_string())
    }

    /// The stored certificate of a CA, with its key label.
    pub async fn ca(&self, name: &str) -> Result<Option<(String, Vec<u8>)>> {
        let row = sqlx::query_as::<_, CaRow>("SELECT key_label, cert_der FROM cas WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.key_label, r.cert_der)))
    }

    /// The root over the issuing CA `name` (found by the issuer name of its certificate): the
    /// root's name and certificate.
    pub async fn root_over(&self, name: &str) -> Result<(String, Vec<u8>)> {
        let missing = |what: &str| Error::Store(format!("the {what} CA's certificate is missing"));
        let (_, der) = self.ca(name).await?.ok_or_else(|| missing(name))?;
        let issuer = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| Error::Store(format!("stored CA certificate {name}: {e}")))?
            .1
            .tbs_certificate
            .issuer
            .as_raw()
            .to_vec();
        for root in CaRole::ROOTS {
            if let Some((_, root_der)) = self.ca(root.name()).await? {
                let (_, cert) = x509_parser::parse_x509_certificate(&root_der)
                    .map_err(|e| Error::Store(format!("stored CA certificate: {e}")))?;
                if cert.tbs_certificate.subject.as_raw() == issuer {
                    return Ok((root.name().to_string(), root_der));
                }
            }
        }
        Err(missing(&format!("root of the {name}")))
    }

    /// The token of CA `name`'s key when it is not the online `ca` token (a root token).
    pub async fn ca_token(&self, name: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar::<_, Option<String>>("SELECT token_label FROM cas WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    /// The revocation of CA `name`, if it is revoked: (revoked at, RFC 5280 reason code).
    pub async fn ca_revocation(&self, name: &str) -> Result<Option<(i64, i64)>> {
        let row = sqlx::query_as::<_, CaRevocationRow>(
            "SELECT revoked_at, revocation_reason FROM cas WHERE name = $1 AND revoked_at IS NOT NULL",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.revoked_at, r.revocation_reason)))
    }

    /// Every revoked CA: (certificate DER, revoked at, reason code).
    pub async fn revoked_cas(&self) -> Result<Vec<(Vec<u8>, i64, i64)>> {
        let rows = sqlx::query_as::<_, RevokedCaRow>(
            "SELECT cert_der, revoked_at, revocation_reason FROM cas WHERE revoked_at IS NOT NULL ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.cert_der,
                    r.revocation.revoked_at,
                    r.revocation.revocation_reason,
                )
            })
            .collect())
    }

    /// Marks CA `name` revoked inside `tx`; false if it already was.
    pub async fn revoke_ca(&self, tx: &mut Tx, name: &str, at: i64, reason: i64) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE cas SET revoked_at = $2, revocation_reason = $3 WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(name)
        .bind(at)
        .bind(reason)
        .execute(&mut **tx)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Stores a CA certificate; `token_label` names the token of its key when it is not the
    /// online `ca` token (a root token).
    pub async fn insert_ca(
        &self,
        tx: &mut Tx,
        id: CaId,
        key_label: &str,
        token_label: Option<&str>,
        cert_der: &[u8],
        state: CaStatus,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO cas (name, key_label, cert_der, created_at, token_label, role, generation, state, state_changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $4)",
        )
        .bind(id.name())
        .bind(key_label)
        .bind(cert_der.to_vec())
        .bind(now())
        .bind(token_label)
        .bind(id.role.name())
        .bind(i64::from(id.generation))
        .bind(state.as_str())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Records a cross-certificate (`subject` root certified by `issuer` root).
    pub async fn insert_cross(
        &self,
        tx: &mut Tx,
        serial: &str,
        subject: &str,
        issuer: &str,
        cert_der: &[u8],
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO cross_certificates (serial, subject, issuer, cert_der, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(serial)
        .bind(subject)
        .bind(issuer)
        .bind(cert_der.to_vec())
        .bind(now())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Every cross-certificate, oldest first: (subject, issuer, DER).
    pub async fn cross_certificates(&self) -> Result<Vec<(String, String, Vec<u8>)>> {
        let rows = sqlx::query_as::<_, CrossRow>(
            "SELECT subject, issuer, cert_der FROM cross_certificates ORDER BY created_at, serial",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.subject, r.issuer, r.cert_der))
            .collect())
    }

    /// Every CA, roots first, each role's generations in order.
    pub async fn cas(&self) -> Result<Vec<CaRecord>> {
        let rows = sqlx::query_as::<_, CaListRow>(
            "SELECT name, key_label, cert_der, token_label, state FROM cas",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .into_iter()
            .map(|r| {
                Ok(CaRecord {
                    id: CaId::from_name(&r.name)?,
                    key_label: r.key_label,
                    cert_der: r.cert_der,
                    token_label: r.token_label,
                    state: CaStatus::parse(&r.state)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|c| (!c.id.is_root(), c.id));
        Ok(out)
    }

    /// Where CA `name` is in its life (`None`: no such CA), read inside `tx`.
    pub async fn ca_state_in(&self, tx: &mut Tx, name: &str) -> Result<Option<CaStatus>> {
        let state = sqlx::query_scalar::<_, String>("SELECT state FROM cas WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?;
        state.map(|s| CaStatus::parse(&s)).transpose()
    }

    /// Takes queued OCSP work off the queue unsigned: serials of a retired CA, which signs
    /// nothing more (each at the version read, so a newer change stays queued).
    pub async fn drop_ocsp_pending(&self, due: &[(String, i64)]) -> Result<()> {
        let mut tx = self.begin().await?;
        for (serial, version) in due {
            sqlx::query("DELETE FROM ocsp_pending WHERE serial = $1 AND version = $2")
                .bind(serial)
                .bind(*version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The current CA of `role` (the one `active`), if any.
    pub async fn active_ca(&self, role: CaRole) -> Result<Option<CaId>> {
        let name = sqlx::query_scalar::<_, String>(
            "SELECT name FROM cas WHERE role = $1 AND state = 'active'",
        )
        .bind(role.name())
        .fetch_optional(&self.pool)
        .await?;
        name.map(|n| CaId::from_name(&n)).transpose()
    }

    /// Moves CA `id` from `from` to `to`; false when it was not in `from` (compare-and-set).
    pub async fn set_ca_state(
        &self,
        tx: &mut Tx,
        id: CaId,
        from: CaStatus,
        to: CaStatus,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE cas SET state = $1, state_changed_at = $2 WHERE name = $3 AND state = $4",
        )
        .bind(to.as_str())
        .bind(now())
        .bind(id.name())
        .bind(from.as_str())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// The latest notAfter of the certificates CA `issuer` issued (its own OCSP responders'
    /// aside), and whether it has any issuance still in flight (`reserved` or `issuing`).
    pub async fn last_expiry(&self, issuer: &str) -> Result<(Option<i64>, bool)> {
        let last = sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MAX(not_after) FROM certificates WHERE issuer = $1 AND profile <> 'ocsp-responder' AND state IN ('issued', 'abandoned')",
        )
        .bind(issuer)
        .fetch_one(&self.pool)
        .await?;
        let in_flight = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM certificates WHERE issuer = $1 AND state IN ('reserved', 'issuing')",
        )
        .bind(issuer)
        .fetch_one(&self.pool)
        .await?;
        Ok((last, in_flight > 0))
    }

    /// Adds a key to the blocked list (idempotent).
    pub async fn block_key(&self, tx: &mut Tx, key_fp: &[u8], reason: &str) -> Result<bool> {
        let added = sqlx::query("INSERT INTO blocked_keys (key_fp, reason, added_at) VALUES ($1, $2, $3) ON CONFLICT (key_fp) DO NOTHING")
            .bind(key_fp.to_vec())
            .bind(reason)
            .bind(now())
            .execute(&mut **tx)
            .await?;
        Ok(added.rows_affected() == 1)
    }

    /// Step 3: commits a serial in state `reserved`. A duplicate serial fails on the primary key;
    /// a blocked key is refused inside the same transaction, so a key blocked a moment ago
    /// cannot slip through.
    pub async fn reserve(&self, tx: &mut Tx, r: &Reservation<'_>) -> Result<()> {
        let blocked = sqlx::query("SELECT 1 FROM blocked_keys WHERE key_fp = $1")
            .bind(r.key_fp.to_vec())
            .fetch_optional(&mut **tx)
            .await?;
        if blocked.is_some() {
            return Err(Error::KeyBlocked);
        }
        let t = now();
        sqlx::query(
            "INSERT INTO certificates (serial, issuer, state, profile, profile_version, key_fp, request, renews, reserved_at, updated_at, crl_partition) \
             VALUES ($1, $2, 'reserved', $3, $4, $5, $6, $7, $8, $8, $9)",
        )
        .bind(r.serial)
        .bind(r.issuer)
        .bind(r.profile)
        .bind(r.profile_version)
        .bind(r.key_fp.to_vec())
        .bind(r.request)
        .bind(r.renews)
        .bind(t)
        .bind(r.crl_partition.map(i64::from))
        .execute(&mut **tx)
        .await?;
        if let Some(old) = r.renews {
            // Claim the old certificate for this renewal in the same transaction, so two
            // concurrent renewals cannot both proceed, and a revoked (or held) certificate is
            // never renewed: the claim and a revocation's compare-and-set are ordered by the
            // row lock (PostgreSQL) or the writer lock (SQLite). A claim by an issuance that failed or was
            // abandoned may be taken over.
            let res = sqlx::query(
                "UPDATE certificates SET renewed_by = $1 WHERE serial = $2 AND state = 'issued' AND revocation_reason IS NULL AND \
                 (renewed_by IS NULL OR renewed_by IN (SELECT serial FROM certificates WHERE state IN ('failed', 'abandoned')))",
            )
            .bind(r.serial)
            .bind(old)
            .execute(&mut **tx)
            .await?;
            if res.rows_affected() != 1 {
                return Err(Error::NotRenewable {
                    serial: old.to_string(),
                    reason: "it was already renewed, is revoked or on hold, or is not issued"
                        .into(),
                });
            }
        }
        Ok(())
    }

    /// Moves `serial` from `from` to `to`, setting the given columns; fails if it was not in
    /// `from` (compare-and-set: no state is ever overwritten blindly).
    async fn transition(
        &self,
        tx: &mut Tx,
        serial: &str,
        from: CertState,
        to: CertState,
        set: Transition,
    ) -> Result<()> {
        let res = sqlx::query(
            "UPDATE certificates SET state = $1, updated_at = $2, \
               linting_tbs = COALESCE($3, linting_tbs), cert_der = COALESCE($4, cert_der), \
               not_before = COALESCE($5, not_before), not_after = COALESCE($6, not_after), \
               failure = COALESCE($7, failure) \
             WHERE serial = $8 AND state = $9",
        )
        .bind(to.as_str())
        .bind(now())
        .bind(set.linting_tbs)
        .bind(set.cert_der)
        .bind(set.not_before)
        .bind(set.not_after)
        .bind(set.failure)
        .bind(serial)
        .bind(from.as_str())
        .execute(&mut **tx)
        .await?;
        if res.rows_affected() != 1 {
            return Err(Error::Store(format!(
                "serial {serial} was not in state {from}"
            )));
        }
        Ok(())
    }

    /// Step 4: stores the linting TBS and moves `reserved` → `issuing`.
    pub async fn mark_issuing(
        &self,
        tx: &mut Tx,
        serial: &str,
        linting_tbs: &[u8],
        not_before: i64,
        not_after: i64,
    ) -> Result<()> {
        self.refuse_blocked(tx, serial).await?;
        self.transition(
            tx,
            serial,
            CertState::Reserved,
            CertState::Issuing,
            Transition {
                linting_tbs: Some(linting_tbs.to_vec()),
                not_before: Some(not_before),
                not_after: Some(not_after),
                ..Default::default()
            },
        )
        .await
    }

    /// Step 6: stores the certificate, `issuing` → `issued`. (A renewal's link to the old
    /// certificate was made when the serial was reserved.)
    pub async fn mark_issued(&self, tx: &mut Tx, serial: &str, cert_der: &[u8]) -> Result<()> {
        // The row is changed (and so locked) before the blocked-key check, not after: a
        // keyCompromise sweep that commits in between would otherwise miss this certificate
        // (it was not `issued` yet) while the check missed the block (not committed yet). In
        // this order the sweep's row lock waits for this transaction and then revokes the
        // certificate, or this check sees the committed block and the transaction rolls back.
        self.transition(
            tx,
            serial,
            CertState::Issuing,
            CertState::Issued,
            Transition {
                cert_der: Some(cert_der.to_vec()),
                ..Default::default()
            },
        )
        .await?;
        async_fail_point!("store::mark_issued_before_block_check");
        self.refuse_blocked(tx, serial).await?;
        self.queue_ocsp(tx, serial).await
    }

    /// Refuses to go on with a serial whose key was blocked after it was reserved (a
    /// keyCompromise revocation racing an issuance): checked before the HSM signs and again
    /// before the certificate is stored.
    async fn refuse_blocked(&self, tx: &mut Tx, serial: &str) -> Result<()> {
        let blocked = sqlx::query(
            "SELECT 1 FROM blocked_keys b JOIN certificates c ON c.key_fp = b.key_fp WHERE c.serial = $1",
        )
        .bind(serial)
        .fetch_optional(&mut **tx)
        .await?;
        if blocked.is_some() {
            return Err(Error::KeyBlocked);
        }
        Ok(())
    }

    /// Marks a serial `failed` from `from`; a renewal claim it held is released.
    pub async fn mark_failed(
        &self,
        tx: &mut Tx,
        serial: &str,
        from: CertState,
        reason: &str,
    ) -> Result<()> {
        self.end_issuance(tx, serial, from, CertState::Failed, reason)
            .await
    }

    /// Marks a serial `abandoned` from `issuing`; a renewal claim it held is released. (It
    /// joins the CRL: a status change.)
    pub async fn mark_abandoned(&self, tx: &mut Tx, serial: &str, reason: &str) -> Result<()> {
        self.note_status_change(tx, serial).await?;
        self.end_issuance(tx, serial, CertState::Issuing, CertState::Abandoned, reason)
            .await
    }

    async fn end_issuance(
        &self,
        tx: &mut Tx,
        serial: &str,
        from: CertState,
        to: CertState,
        reason: &str,
    ) -> Result<()> {
        let failure = Transition {
            failure: Some(reason.to_string()),
            ..Default::default()
        };
        self.transition(tx, serial, from, to, failure).await?;
        self.release_renewal_claim(tx, serial).await
    }

    async fn release_renewal_claim(&self, tx: &mut Tx, serial: &str) -> Result<()> {
        sqlx::query("UPDATE certificates SET renewed_by = NULL WHERE renewed_by = $1")
            .bind(serial)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Serials in a state.
    pub async fn serials_in(&self, state: CertState) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT serial FROM certificates WHERE state = $1 ORDER BY serial")
                .bind(state.as_str())
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Every serial with its state and profile, oldest first.
    pub async fn list_certificates(&self) -> Result<Vec<(String, CertState, String)>> {
        let rows = sqlx::query_as::<_, CertListRow>(
            "SELECT serial, state, profile FROM certificates ORDER BY reserved_at, serial",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.serial, CertState::parse(&r.state)?, r.profile)))
            .collect()
    }

    /// Counts rows per state.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query_as::<_, StateCountRow>(
            "SELECT state, COUNT(*) AS n FROM certificates GROUP BY state ORDER BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.state, r.n)).collect())
    }

    /// Reads one certificate row.
    pub async fn certificate(&self, serial: &str) -> Result<Option<CertRecord>> {
        let row = sqlx::query_as::<_, CertRow>(
            "SELECT serial, issuer, state, profile, profile_version, key_fp, request, renews, renewed_by, linting_tbs, cert_der, not_after, failure, \
             revocation_reason, revoked_at FROM certificates WHERE serial = $1",
        )
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?;
        row.map(CertRecord::try_from).transpose()
    }
}

impl Store {
    /// The revocation status of a serial, read inside `tx` (locked for update on PostgreSQL).
    pub async fn status_in(
        &self,
        tx: &mut Tx,
        serial: &str,
    ) -> Result<Option<crate::revocation::Status>> {
        let sql = match self.engine {
            Engine::Sqlite => "SELECT issuer, state, revocation_reason, revoked_at, key_fp, profile FROM certificates WHERE serial = $1",
            Engine::Postgres => "SELECT issuer, state, revocation_reason, revoked_at, key_fp, profile FROM certificates WHERE serial = $1 FOR UPDATE",
        };
        let row = sqlx::query_as::<_, StatusRow>(sql)
            .bind(serial)
            .fetch_optional(&mut **tx)
            .await?;
        row.map(crate::revocation::Status::try_from).transpose()
    }

    /// Compare-and-set of the revocation columns: succeeds only if the reason is still
    /// `expected` (so no concurrent change is overwritten).
    pub async fn set_revocation(
        &self,
        tx: &mut Tx,
        serial: &str,
        expected: Option<crate::revocation::Reason>,
        new: Option<(crate::revocation::Reason, i64)>,
    ) -> Result<()> {
        let res = sqlx::query(
            "UPDATE certificates SET revocation_reason = $1, revoked_at = $2, updated_at = $3 \
             WHERE serial = $4 AND COALESCE(revocation_reason, -1) = $5",
        )
        .bind(new.map(|(r, _)| r.code()))
        .bind(new.map(|(_, at)| at))
        .bind(now())
        .bind(serial)
        .bind(expected.map_or(-1, |r| r.code()))
        .execute(&mut **tx)
        .await?;
        if res.rows_affected() != 1 {
            return Err(Error::Revocation(format!(
                "the status of {serial} changed concurrently; try again"
            )));
        }
        self.note_status_change(tx, serial).await
    }

    /// Records who placed `serial` on hold (`None`: the hold ended).
    pub async fn set_held_by(&self, tx: &mut Tx, serial: &str, actor: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE certificates SET held_by = $2 WHERE serial = $1")
            .bind(serial)
            .bind(actor)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Who placed `serial` on hold, if it is held and that was recorded.
    pub async fn held_by(&self, serial: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar::<_, Option<String>>(
            "SELECT held_by FROM certificates WHERE serial = $1",
        )
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    /// Records that `serial`'s CA changed revocation status now (same transaction), and queues
    /// a new OCSP response for it.
    /// Moves every CA's CRLNumber (also one that has published no CRL yet: a missing row would
    /// start at 1) to at least `floor`, inside `tx`.
    pub async fn raise_crl_number_floor_in(&self, tx: &mut Tx, floor: i64) -> Result<()> {
        sqlx::query(
            // (`WHERE true`: SQLite's parser needs it between a SELECT and ON CONFLICT.)
            "INSERT INTO crl_numbers (issuer, last) SELECT name, $1 FROM cas WHERE true \
             ON CONFLICT (issuer) DO UPDATE SET last = CASE WHEN crl_numbers.last < excluded.last \
             THEN excluded.last ELSE crl_numbers.last END",
        )
        .bind(floor)
        .execute(&mut **tx)
        .await?;
        sqlx::query("UPDATE crl_numbers SET last = $1 WHERE last < $1")
            .bind(floor)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Records a serial this CA is known to have revoked but holds no certificate of — one a
    /// CRL of the lost machine lists that was issued after the backup a restore came from
    /// ([`crate::backup::reapply_crls`]), or one that surfaced later
    /// ([`crate::ra::revoke_surfaced`]): an `abandoned` row (a certificate may exist; never
    /// `good`) with the reason and date, kept on the CRLs until `not_after` (the certificate's,
    /// or the issuing CA's as a bound on an unknown one's), its OCSP response and CRLs queued
    /// like any status change.
    ///
    /// `key_fp` is the certificate's key when it is at hand (so a keyCompromise can block it);
    /// without it, a fingerprint no key has.
    ///
    /// A row the backup holds that the lost machine went on to sign — `reserved`, `issuing` or
    /// `failed` here, since the restored database never saw the signature — becomes the same
    /// revoked `abandoned` row, keeping its own key, profile and dates. A row recorded before
    /// without its key (profile `unknown`) takes the key now given (once: a key is never
    /// replaced by none); its revocation date and reason stay. Returns false, changing
    /// nothing, for any other known serial (an issued certificate is revoked by serial), one
    /// of another issuer, or one recorded already with this key.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_revoked_unknown(
        &self,
        serial: &str,
        issuer: &str,
        partition: Option<u16>,
        not_after: i64,
        reason: i64,
        revoked_at: i64,
        key_fp: Option<&[u8; 32]>,
        event: &Event,
    ) -> Result<bool> {
        use sha2::Digest;
        let mut tx = self.begin().await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let has_key = i64::from(key_fp.is_some());
        let key_fp = key_fp.map_or_else(
            // A key fingerprint no key has: this row blocks and matches no key.
            || sha2::Sha256::digest(format!("ecert-unknown-serial:{serial}")).to_vec(),
            |k| k.to_vec(),
        );
        let changed = sqlx::query(
            "INSERT INTO certificates (serial, issuer, state, profile, profile_version, key_fp, request, \
             reserved_at, updated_at, not_after, revoked_at, revocation_reason, crl_partition, failure) \
             VALUES ($1, $2, 'abandoned', 'unknown', 0, $3, '{}', $4, $4, $5, $6, $7, $8, \
             'revoked by the lost machine after the backup this CA was restored from') \
             ON CONFLICT (serial) DO UPDATE SET state = 'abandoned', updated_at = excluded.updated_at, \
             revoked_at = COALESCE(certificates.revoked_at, excluded.revoked_at), \
             revocation_reason = COALESCE(certificates.revocation_reason, excluded.revocation_reason), \
             not_after = COALESCE(certificates.not_after, excluded.not_after), \
             crl_partition = COALESCE(certificates.crl_partition, excluded.crl_partition), \
             key_fp = CASE WHEN certificates.profile = 'unknown' AND $9 = 1 THEN excluded.key_fp ELSE certificates.key_fp END, \
             failure = excluded.failure \
             WHERE certificates.issuer = excluded.issuer \
             AND (certificates.state IN ('reserved', 'issuing', 'failed') \
                  OR (certificates.profile = 'unknown' AND $9 = 1 AND certificates.key_fp <> excluded.key_fp))",
        )
        .bind(serial)
        .bind(issuer)
        .bind(key_fp)
        .bind(now)
        .bind(not_after)
        .bind(revoked_at)
        .bind(reason)
        .bind(partition.map(i64::from))
        .bind(has_key)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        self.note_status_change(&mut tx, serial).await?;
        self.audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn note_status_change(&self, tx: &mut Tx, serial: &str) -> Result<()> {
        // The CA's counter, and its partition's own, so only changed partitions are republished
        // (one statement: a mass revocation makes this change a hundred thousand times).
        sqlx::query(
            "INSERT INTO status_changes (issuer, version) \
             SELECT issuer, 1 FROM certificates WHERE serial = $1 \
             UNION ALL SELECT issuer || '/p' || CAST(crl_partition AS TEXT), 1 FROM certificates \
             WHERE serial = $1 AND crl_partition IS NOT NULL \
             ON CONFLICT (issuer) DO UPDATE SET version = status_changes.version + 1",
        )
        .bind(serial)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO crl_pending (serial, issuer, version) SELECT serial, issuer, 1 FROM certificates WHERE serial = $1 \
             ON CONFLICT (serial) DO UPDATE SET version = crl_pending.version + 1",
        )
        .bind(serial)
        .execute(&mut **tx)
        .await?;
        crate::ldap::queue_certificate(tx, serial, now()).await?;
        self.queue_ocsp(tx, serial).await
    }

    /// Revokes, inside `tx`, those of `serials` that are issued, neither revoked nor held,
    /// renew nothing and belong to a CA not retired (the set-based half of
    /// [`crate::revocation::revoke_many`]), with [`Store::note_status_change`]'s queue entries
    /// for each, in a handful of statements. Returns the serials revoked.
    pub async fn revoke_plain_in(
        &self,
        tx: &mut Tx,
        serials: &[String],
        reason: i64,
        at: i64,
    ) -> Result<Vec<String>> {
        if serials.is_empty() {
            return Ok(Vec::new());
        }
        let list = |from: usize| numbered(serials.len(), from);
        let sql = format!(
            "UPDATE certificates SET revocation_reason = $1, revoked_at = $2, updated_at = $3 \
             WHERE serial IN ({}) AND revocation_reason IS NULL AND state = 'issued' AND renews IS NULL \
             AND issuer NOT IN (SELECT name FROM cas WHERE state = 'retired') RETURNING serial",
            list(4)
        );
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
            .bind(reason)
            .bind(at)
            .bind(now());
        for s in serials {
            q = q.bind(s.clone());
        }
        let changed = q.fetch_all(&mut **tx).await?;
        if changed.is_empty() {
            return Ok(changed);
        }
        self.note_status_changes(tx, &changed).await?;
        Ok(changed)
    }

    /// [`Store::note_status_change`] for many serials at once (distinct, at most a few hundred).
    async fn note_status_changes(&self, tx: &mut Tx, serials: &[String]) -> Result<()> {
        let list = numbered(serials.len(), 2);
        let statements = [
            // The CAs' and partitions' counters go up by as many changes as they had.
            format!(
                "INSERT INTO status_changes (issuer, version) \
                 SELECT issuer, COUNT(*) FROM certificates WHERE serial IN ({list}) AND $1 = $1 GROUP BY issuer \
                 UNION ALL SELECT issuer || '/p' || CAST(crl_partition AS TEXT), COUNT(*) FROM certificates \
                 WHERE serial IN ({list}) AND crl_partition IS NOT NULL GROUP BY issuer, crl_partition \
                 ON CONFLICT (issuer) DO UPDATE SET version = status_changes.version + excluded.version"
            ),
            format!(
                "INSERT INTO crl_pending (serial, issuer, version) SELECT serial, issuer, 1 FROM certificates \
                 WHERE serial IN ({list}) AND $1 = $1 ON CONFLICT (serial) DO UPDATE SET version = crl_pending.version + 1"
            ),
            format!(
                "INSERT INTO ldap_pending (entry, version, queued_at) SELECT DISTINCT 'mail:' || email, 1, $1 \
                 FROM applications WHERE certificate IN ({list}) AND publish = 1 AND email IS NOT NULL \
                 ON CONFLICT (entry) DO UPDATE SET version = ldap_pending.version + 1, next_at = 0"
            ),
            format!(
                "INSERT INTO ocsp_pending (serial, version, queued_at) SELECT serial, 1, $1 FROM certificates \
                 WHERE serial IN ({list}) ON CONFLICT (serial) DO UPDATE SET version = ocsp_pending.version + 1"
            ),
        ];
        let at = now();
        for sql in statements {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at);
            for s in serials {
                q = q.bind(s.clone());
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Queues `serial` for a freshly signed OCSP response (same transaction as the change).
    async fn queue_ocsp(&self, tx: &mut Tx, serial: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO ocsp_pending (serial, version, queued_at) VALUES ($1, 1, $2) \
             ON CONFLICT (serial) DO UPDATE SET version = ocsp_pending.version + 1",
        )
        .bind(serial)
        .bind(now())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// How many times `issuer`'s revocation status has changed (0: never).
    pub async fn status_version(&self, issuer: &str) -> Result<i64> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM status_changes WHERE issuer = $1")
                .bind(issuer)
                .fetch_optional(&self.pool)
                .await?;
        Ok(version.unwrap_or(0))
    }

    /// Records inside `tx` a subscriber's unverified report that the key of `serial` is
    /// compromised, for an officer to confirm.
    pub async fn report_key_compromise(
        &self,
        tx: &mut Tx,
        key_fp: &[u8],
        serial: &str,
        reporter: &str,
        at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO key_compromise_reports (key_fp, serial, reporter, reported_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key_fp.to_vec())
        .bind(serial)
        .bind(reporter)
        .bind(at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The certificates `serial` renewed, newest first, back along the renewal chain (each
    /// certificate's `renews`), that had not expired at `now`: read inside `tx`.
    pub async fn renewed_in(&self, tx: &mut Tx, serial: &str, now: i64) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut current = serial.to_string();
        // A chain is short; the bound guards against a cycle in damaged data.
        for _ in 0..64 {
            let Some(previous) = sqlx::query_scalar::<_, Option<String>>(
                "SELECT renews FROM certificates WHERE serial = $1",
            )
            .bind(&current)
            .fetch_optional(&mut **tx)
            .await?
            .flatten() else {
                break;
            };
            let not_after = sqlx::query_scalar::<_, Option<i64>>(
                "SELECT not_after FROM certificates WHERE serial = $1",
            )
            .bind(&previous)
            .fetch_optional(&mut **tx)
            .await?
            .flatten();
            if not_after.is_some_and(|na| na >= now) {
                out.push(previous.clone());
            }
            current = previous;
        }
        Ok(out)
    }

    /// PostgreSQL: locks a serial's row and every row sharing its key, in serial order, before a
    /// keyCompromise sweep changes any of them — one lock order for every sweep, so two sweeps
    /// (or a sweep and a single revocation) cannot deadlock. SQLite's writer lock makes this moot.
    pub async fn lock_key_family(&self, tx: &mut Tx, serial: &str) -> Result<()> {
        if self.engine == Engine::Postgres {
            sqlx::query(
                "SELECT serial FROM certificates WHERE serial = $1 \
                 OR key_fp = (SELECT key_fp FROM certificates WHERE serial = $1) ORDER BY serial FOR UPDATE",
            )
            .bind(serial)
            .fetch_all(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Issued (or abandoned) serials carrying a key, inside `tx`.
    pub async fn serials_with_key_in(&self, tx: &mut Tx, key_fp: &[u8]) -> Result<Vec<String>> {
        // A retired CA's certificates have all expired and nothing of it is published again:
        // a status change there would reach no relying party.
        Ok(sqlx::query_scalar("SELECT serial FROM certificates WHERE key_fp = $1 AND state IN ('issued', 'abandoned') \
             AND issuer NOT IN (SELECT name FROM cas WHERE state = 'retired') ORDER BY serial")
            .bind(key_fp.to_vec())
            .fetch_all(&mut **tx)
            .await?)
    }

    /// Unrevoked issued serials matching a mass-revocation query: a profile and/or a window on
    /// notBefore (Unix seconds, inclusive).
    pub async fn serials_matching(
        &self,
        profile: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT serial FROM certificates WHERE state = 'issued' AND (revocation_reason IS NULL OR revocation_reason = 6) \
             AND ($1 = '' OR profile = $1) AND not_before >= $2 AND not_before <= $3 \
             AND issuer NOT IN (SELECT name FROM cas WHERE state = 'retired') ORDER BY not_before, serial",
        )
        .bind(profile.unwrap_or(""))
        .bind(from.unwrap_or(i64::MIN))
        .bind(to.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Store {
    /// Hands out the next CRLNumber for `issuer` and commits it before anything is signed.
    pub async fn next_crl_number(&self, issuer: &str) -> Result<i64> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO crl_numbers (issuer, last) VALUES ($1, 0) ON CONFLICT (issuer) DO NOTHING",
        )
        .bind(issuer)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE crl_numbers SET last = last + 1 WHERE issuer = $1")
            .bind(issuer)
            .execute(&mut *tx)
            .await?;
        let n: i64 = sqlx::query_scalar("SELECT last FROM crl_numbers WHERE issuer = $1")
            .bind(issuer)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Every entry of `issuer`'s CRLs at `now`: each revoked or held certificate, and each
    /// abandoned serial that reached `issuing` (a signature may exist), kept until
    /// [`crate::crl::KEEP_AFTER_EXPIRY`] after the certificate expires (BR §4.10.1: never
    /// removed before it expires): one chunk of them after `after`, as lines for
    /// [`crl_entry_line`], and where the next chunk starts (`None`: no more). Served by the
    /// covering partial index `certificates_crl_cover` (migration 0040).
    pub async fn crl_entries_chunk(
        &self,
        issuer: &str,
        now: i64,
        after: &CrlCursor,
        chunk: i64,
    ) -> Result<Option<(String, CrlCursor)>> {
        // A million rows decoded one by one through the `Any` driver take seconds; as a few
        // text chunks (one line per entry, built by the database from its covering index) they
        // take a fraction of that, and the caller parses one chunk while the next is read.
        let sql = match self.engine {
            Engine::Sqlite => {
                "SELECT group_concat(serial || ',' || COALESCE(revocation_reason, -1) || ',' || COALESCE(revoked_at, updated_at) \
                 || ',' || not_after || ',' || COALESCE(crl_partition, -1) || ',' || profile, char(10)) AS lines, \
                 COUNT(*) AS n FROM (SELECT serial, revocation_reason, revoked_at, updated_at, not_after, crl_partition, profile FROM certificates \
                 WHERE issuer = $1 AND (revocation_reason IS NOT NULL OR state = 'abandoned') AND not_after >= $2 \
                 AND (not_after > $3 OR (not_after = $3 AND serial > $4)) ORDER BY not_after, serial LIMIT $5)"
            }
            Engine::Postgres => {
                "SELECT string_agg(serial || ',' || COALESCE(revocation_reason, -1)::text || ',' || COALESCE(revoked_at, updated_at)::text \
                 || ',' || not_after::text || ',' || COALESCE(crl_partition, -1)::text || ',' || profile, E'\\n') AS lines, \
                 COUNT(*) AS n FROM (SELECT serial, revocation_reason, revoked_at, updated_at, not_after, crl_partition, profile FROM certificates \
                 WHERE issuer = $1 AND (revocation_reason IS NOT NULL OR state = 'abandoned') AND not_after >= $2 \
                 AND (not_after > $3 OR (not_after = $3 AND serial > $4)) ORDER BY not_after, serial LIMIT $5) AS chunk"
            }
        };
        if after.done {
            return Ok(None);
        }
        let cutoff = now - crate::crl::KEEP_AFTER_EXPIRY;
        let (after_time, after_serial) = match &after.last {
            Some((t, s)) => (*t, s.as_str()),
            None => (cutoff - 1, ""),
        };
        let (lines, n): (Option<String>, i64) = sqlx::query_as(sql)
            .bind(issuer)
            .bind(cutoff)
            .bind(after_time)
            .bind(after_serial)
            .bind(chunk)
            .fetch_one(&self.pool)
            .await?;
        let Some(lines) = lines.filter(|l| !l.is_empty()) else {
            return Ok(None);
        };
        // The chunk is the first rows in key order, but aggregated in no promised order: the
        // next one starts after its greatest key.
        let mut last: Option<(i64, &str)> = None;
        for line in lines.split('\n') {
            let mut f = line.split(',');
            let serial = f.next().unwrap_or_default();
            let t = f
                .nth(2)
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| Error::Store(format!("a CRL entry did not read back: {line:?}")))?;
            if last.is_none_or(|k| (t, serial) > k) {
                last = Some((t, serial));
            }
        }
        let last = last.map(|(t, s)| (t, s.to_string()));
        Ok(Some((
            lines,
            CrlCursor {
                last,
                done: n < chunk,
            },
        )))
    }

    /// Serials of `issuer` whose CRL entry changed and that the publisher has not taken in
    /// yet, with the queue version read (at most `limit`).
    pub async fn crl_pending(&self, issuer: &str, limit: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query_as::<_, CrlPendingRow>(
            "SELECT serial, version FROM crl_pending WHERE issuer = $1 ORDER BY serial LIMIT $2",
        )
        .bind(issuer)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.serial, r.version)).collect())
    }

    /// The CRL entries of `serials` now: `Some` for a serial that belongs on its CA's CRLs,
    /// `None` for one that does not (released from hold, or never signed).
    pub async fn crl_rows(&self, serials: &[String]) -> Result<Vec<(String, Option<EntryRow>)>> {
        let mut out = Vec::with_capacity(serials.len());
        for chunk in serials.chunks(500) {
            let placeholders = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(",");
            // `listed` is computed as an integer: a boolean expression is a bool on PostgreSQL
            // but an integer on SQLite.
            let sql = format!(
                "SELECT serial, revocation_reason, COALESCE(revoked_at, updated_at) AS revoked_at, not_after, crl_partition, profile, \
                 CAST(CASE WHEN (revocation_reason IS NOT NULL OR state = 'abandoned') AND not_after IS NOT NULL \
                 THEN 1 ELSE 0 END AS BIGINT) AS listed \
                 FROM certificates WHERE serial IN ({placeholders})"
            );
            let mut q = sqlx::query_as::<_, CrlListedRow>(sqlx::AssertSqlSafe(sql));
            for s in chunk {
                q = q.bind(s);
            }
            let rows = q.fetch_all(&self.pool).await?;
            let mut found = std::collections::HashMap::new();
            for r in rows {
                let serial = r.entry.serial.clone();
                let entry = if r.listed != 0 {
                    Some(EntryRow::try_from(r.entry)?)
                } else {
                    None
                };
                found.insert(serial, entry);
            }
            for s in chunk {
                out.push((s.clone(), found.remove(s).flatten()));
            }
        }
        Ok(out)
    }

    /// Removes taken-in queue entries, unless they changed again since they were read.
    pub async fn crl_pending_done(&self, done: &[(String, i64)]) -> Result<()> {
        let mut tx = self.begin().await?;
        for (serial, version) in done {
            sqlx::query("DELETE FROM crl_pending WHERE serial = $1 AND version = $2")
                .bind(serial)
                .bind(version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores a published CRL with its audit record, and drops the DER of the scope's CRLs
    /// older than the previous one (a full CRL of a million entries is 49 MB; the audit
    /// record keeps every CRL's SHA-256).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_crl(
        &self,
        issuer: &str,
        scope: Scope,
        number: i64,
        this_update: i64,
        next_update: i64,
        entries: i64,
        status_version: i64,
        der: &[u8],
        event: &Event,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let previous: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(number) FROM crls WHERE issuer = $1 AND partition_no = $2",
        )
        .bind(issuer)
        .bind(scope.code())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO crls (issuer, partition_no, number, this_update, next_update, entries, status_version, der) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(issuer)
            .bind(scope.code())
            .bind(number)
            .bind(this_update)
            .bind(next_update)
            .bind(entries)
            .bind(status_version)
            .bind(der.to_vec())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO crl_latest (issuer, partition_no, number, this_update, next_update, status_version) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (issuer, partition_no) DO UPDATE SET \
             number = excluded.number, this_update = excluded.this_update, \
             next_update = excluded.next_update, status_version = excluded.status_version \
             WHERE crl_latest.number < excluded.number",
        )
        .bind(issuer)
        .bind(scope.code())
        .bind(number)
        .bind(this_update)
        .bind(next_update)
        .bind(status_version)
        .execute(&mut *tx)
        .await?;
        if let Some(previous) = previous {
            sqlx::query(
                "UPDATE crls SET der = $4 WHERE issuer = $1 AND partition_no = $2 AND number < $3 AND length(der) > 0",
            )
            .bind(issuer)
            .bind(scope.code())
            .bind(previous)
            .bind(Vec::<u8>::new())
            .execute(&mut *tx)
            .await?;
        }
        if scope == Scope::Full {
            crate::ldap::queue_ca(&mut tx, issuer, now()).await?;
        }
        self.audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest CRL of one scope of `issuer`: (number, DER).
    pub async fn latest_crl(&self, issuer: &str, scope: Scope) -> Result<Option<(i64, Vec<u8>)>> {
        let row = sqlx::query_as::<_, CrlDerRow>(
            "SELECT number, der FROM crls WHERE issuer = $1 AND partition_no = $2 ORDER BY number DESC LIMIT 1",
        )
        .bind(issuer)
        .bind(scope.code())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.number, r.der)))
    }

    /// The CRL of `issuer` with this CRLNumber.
    pub async fn crl_der(&self, issuer: &str, number: i64) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT der FROM crls WHERE issuer = $1 AND number = $2")
                .bind(issuer)
                .bind(number)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Whether the audit trail holds a record of `kind` whose detail contains `needle` (a
    /// hash: hex, so no LIKE wildcard can be in it).
    pub async fn audit_mentions(&self, kind: &str, needle: &str) -> Result<bool> {
        if needle.len() < 32 || !needle.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let n: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_log WHERE kind = $1 AND detail LIKE $2",
        )
        .bind(kind)
        .bind(format!("%{needle}%"))
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// The newest CRL of every scope of `issuer` published so far: (scope, number, thisUpdate,
    /// nextUpdate, status version it covers).
    pub async fn crl_heads(&self, issuer: &str) -> Result<Vec<CrlHead>> {
        let rows = sqlx::query_as::<_, CrlHeadRow>(
            "SELECT partition_no, number, this_update, next_update, status_version FROM crl_latest WHERE issuer = $1",
        )
        .bind(issuer)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(CrlHead::try_from).collect()
    }

    /// The status versions of `issuer`'s scopes: the full CRL's under the CA's name, a
    /// partition's under `<ca>/p<k>` (see [`Store::note_status_change`]).
    pub async fn status_versions(&self, issuer: &str) -> Result<HashMap<Scope, i64>> {
        let rows = sqlx::query_as::<_, StatusVersionRow>(
            "SELECT issuer, version FROM status_changes WHERE issuer = $1 OR issuer LIKE $2",
        )
        .bind(issuer)
        .bind(format!("{issuer}/p%"))
        .fetch_all(&self.pool)
        .await?;
        let mut out = HashMap::new();
        for row in rows {
            let scope = match row.issuer.strip_prefix(issuer) {
                Some("") => Scope::Full,
                Some(rest) => match rest.strip_prefix("/p").and_then(|k| k.parse().ok()) {
                    Some(k) => Scope::Partition(k),
                    None => continue,
                },
                None => continue,
            };
            out.insert(scope, row.version);
        }
        Ok(out)
    }
}

row! {
    /// A CRL entry as read (`revoked_at` is `COALESCE(revoked_at, updated_at)`: an abandoned
    /// serial is dated when it was given up).
    struct CrlEntryRow {
        serial: String,
        revocation_reason: Option<i64>,
        revoked_at: i64,
        not_after: Option<i64>,
        crl_partition: Option<i64>,
        profile: String,
    }
}

/// Where [`Store::crl_entries_chunk`] goes on from: after this (notAfter, serial); `done` when the
/// last chunk was short.
#[derive(Debug, Clone, Default)]
pub struct CrlCursor {
    last: Option<(i64, String)>,
    done: bool,
}

/// One line of [`Store::crl_entries_chunk`]'s chunks: `serial,reason,revoked_at,not_after,
/// partition,profile` (-1 for an absent reason or partition).
pub fn crl_entry_line(line: &str) -> Result<EntryRow> {
    let bad = || Error::Store(format!("a CRL entry did not read back: {line:?}"));
    let mut f = line.splitn(6, ',');
    let mut next = || f.next().ok_or_else(bad);
    let serial = SerialNumber::from_hex(next()?).ok_or_else(bad)?;
    let int = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let reason = int(next()?)?;
    let revoked_at = int(next()?)?;
    let not_after = int(next()?)?;
    let partition = int(next()?)?;
    let profile = next()?;
    Ok(EntryRow {
        serial,
        reason: (reason >= 0).then_some(reason),
        revoked_at,
        not_after: Some(not_after),
        partition: u16::try_from(partition).ok(),
        hold_allowed: crate::profile::Profile::hold_allowed_for(profile),
    })
}

impl TryFrom<CrlEntryRow> for EntryRow {
    type Error = Error;

    fn try_from(r: CrlEntryRow) -> Result<EntryRow> {
        Ok(EntryRow {
            serial: SerialNumber::from_hex(&r.serial)
                .ok_or_else(|| Error::Store(format!("bad serial {}", r.serial)))?,
            reason: r.revocation_reason,
            revoked_at: r.revoked_at,
            not_after: r.not_after,
            partition: r.crl_partition.and_then(|k| u16::try_from(k).ok()),
            hold_allowed: crate::profile::Profile::hold_allowed_for(&r.profile),
        })
    }
}

/// A serial's CRL entry and whether it belongs on the CRLs now (0 or 1).
struct CrlListedRow {
    entry: CrlEntryRow,
    listed: i64,
}

impl<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> for CrlListedRow {
    fn from_row(row: &'r sqlx::any::AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(CrlListedRow {
            entry: CrlEntryRow::from_row(row)?,
            listed: sqlx::Row::try_get(row, "listed")?,
        })
    }
}

row! {
    struct CrlPendingRow {
        serial: String,
        version: i64,
    }
}

row! {
    struct CrlDerRow {
        number: i64,
        der: Vec<u8>,
    }
}

row! {
    struct CrlHeadRow {
        partition_no: i64,
        number: i64,
        this_update: i64,
        next_update: i64,
        status_version: i64,
    }
}

impl TryFrom<CrlHeadRow> for CrlHead {
    type Error = Error;

    fn try_from(r: CrlHeadRow) -> Result<CrlHead> {
        let scope = Scope::from_code(r.partition_no)
            .ok_or_else(|| Error::Store(format!("bad CRL partition {}", r.partition_no)))?;
        Ok(CrlHead {
            scope,
            number: r.number,
            this_update: r.this_update,
            next_update: r.next_update,
            status_version: r.status_version,
        })
    }
}

row! {
    struct StatusVersionRow {
        issuer: String,
        version: i64,
    }
}

/// The newest CRL of one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrlHead {
    /// Which CRL.
    pub scope: Scope,
    /// Its CRLNumber.
    pub number: i64,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// The scope's status version it was built after.
    pub status_version: i64,
}

/// What the OCSP signer needs to know of a serial: its status now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspDue {
    /// Hex serial.
    pub serial: String,
    /// The `ocsp_pending` version read (`None`: a refresh of a response that is not pending).
    pub version: Option<i64>,
    /// Issuing CA name.
    pub issuer: String,
    /// Lifecycle state (`issued` or `abandoned`).
    pub state: CertState,
    /// RFC 5280 reason code if revoked or held.
    pub reason: Option<i64>,
    /// When it was revoked (or, for an abandoned serial, given up), Unix seconds.
    pub revoked_at: Option<i64>,
    /// Whether its profile allows certificateHold ([`crate::profile::Profile::hold_allowed_for`]).
    pub hold_allowed: bool,
}

/// A serial's signed responses, ready to store: (status read, thisUpdate, nextUpdate, the
/// response for a SHA-1 CertID, the response for a SHA-256 CertID).
pub type SignedOcsp = (OcspDue, i64, i64, Vec<u8>, Vec<u8>);

row! {
    /// A pre-signed OCSP response as stored.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct OcspRow {
        /// Hex serial.
        pub serial: String,
        /// Issuing CA name.
        pub issuer: String,
        /// thisUpdate, Unix seconds.
        pub this_update: i64,
        /// nextUpdate, Unix seconds.
        pub next_update: i64,
        /// Write order.
        pub seq: i64,
        /// The OCSPResponse for a SHA-1 CertID, DER.
        pub der_sha1: Vec<u8>,
        /// The OCSPResponse for a SHA-256 CertID, DER.
        pub der_sha256: Vec<u8>,
    }
}

/// The OCSP signer's backlog ([`Store::ocsp_backlog`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OcspBacklog {
    /// Serials waiting for a response (issued or abandoned ones: the others never get one).
    pub pending: i64,
    /// The oldest thisUpdate of a stored response, Unix seconds (`None`: no response yet).
    pub oldest_this_update: Option<i64>,
    /// Responses still kept fresh that are within the margin of their nextUpdate.
    pub overdue: i64,
    /// When the oldest change still waiting was queued, Unix seconds (`None`: none waits).
    pub oldest_queued: Option<i64>,
}

row! {
    /// A delegated OCSP responder as stored.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ResponderRow {
        /// Hex serial of its certificate.
        pub serial: String,
        /// The CA it answers for.
        pub issuer: String,
        /// HSM key label.
        pub key_label: String,
        /// Its certificate, DER.
        pub cert_der: Vec<u8>,
        /// notAfter, Unix seconds.
        pub not_after: i64,
    }
}

row! {
    /// A serial due for an OCSP response, as read.
    struct OcspDueRow {
        serial: String,
        version: Option<i64>,
        issuer: String,
        state: String,
        revocation_reason: Option<i64>,
        revoked_at: Option<i64>,
        updated_at: i64,
        profile: String,
    }
}

impl TryFrom<OcspDueRow> for OcspDue {
    type Error = Error;

    fn try_from(r: OcspDueRow) -> Result<OcspDue> {
        let state = CertState::parse(&r.state)?;
        Ok(OcspDue {
            serial: r.serial,
            version: r.version,
            issuer: r.issuer,
            state,
            reason: r.revocation_reason,
            revoked_at: match state {
                CertState::Abandoned => Some(r.revoked_at.unwrap_or(r.updated_at)),
                _ => r.revoked_at,
            },
            hold_allowed: crate::profile::Profile::hold_allowed_for(&r.profile),
        })
    }
}

row! {
    /// The signer's queue: how many serials wait and since when.
    struct OcspQueueRow {
        pending: i64,
        oldest_queued: Option<i64>,
    }
}

row! {
    struct ExpiredResponderRow {
        serial: String,
        issuer: String,
        key_label: String,
    }
}

impl Store {
    /// Serials queued for a new OCSP response, at most `limit`, with their current status.
    /// Serials that are not (yet) `issued` or `abandoned` are skipped: they never get one.
    pub async fn ocsp_pending(&self, limit: i64) -> Result<Vec<OcspDue>> {
        let rows = sqlx::query_as::<_, OcspDueRow>(
            "SELECT p.serial AS serial, p.version AS version, c.issuer AS issuer, c.state AS state, \
             c.revocation_reason AS revocation_reason, c.revoked_at AS revoked_at, c.updated_at AS updated_at, c.profile AS profile \
             FROM ocsp_pending p JOIN certificates c ON c.serial = p.serial \
             WHERE c.state IN ('issued', 'abandoned') ORDER BY p.serial LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(OcspDue::try_from).collect()
    }

    /// Responses made at or before `made_before` (Unix seconds) for certificates that expired
    /// no earlier than `expired_after`: due for a refresh. Oldest first, at most `limit`.
    pub async fn ocsp_stale(
        &self,
        made_before: i64,
        expired_after: i64,
        limit: i64,
    ) -> Result<Vec<OcspDue>> {
        let rows = sqlx::query_as::<_, OcspDueRow>(
            "SELECT c.serial AS serial, CAST(NULL AS BIGINT) AS version, c.issuer AS issuer, c.state AS state, \
             c.revocation_reason AS revocation_reason, c.revoked_at AS revoked_at, c.updated_at AS updated_at, c.profile AS profile \
             FROM ocsp_responses o JOIN certificates c ON c.serial = o.serial \
             WHERE o.this_update <= $1 AND COALESCE(c.not_after, 0) >= $2 ORDER BY o.this_update LIMIT $3",
        )
        .bind(made_before)
        .bind(expired_after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(OcspDue::try_from).collect()
    }

    /// Stores signed responses (replacing older ones), takes their serials off the queue if no
    /// newer change arrived meanwhile, and appends `event`: one transaction.
    pub async fn store_ocsp(&self, rows: &[SignedOcsp], event: &Event) -> Result<()> {
        let mut tx = self.begin().await?;
        // One writer of seq at a time, whatever happened to the signer lock (PostgreSQL; on
        // SQLite the writer lock of BEGIN IMMEDIATE does this). The unique index on seq is the
        // backstop.
        if self.engine == Engine::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7365063)")
                .execute(&mut *tx)
                .await?;
        }
        let mut seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM ocsp_responses")
            .fetch_one(&mut *tx)
            .await?;
        // Many rows to a statement (7 parameters a row: far below both engines' limits).
        for chunk in rows.chunks(200) {
            let mut sql = String::from(
                "INSERT INTO ocsp_responses (serial, issuer, this_update, next_update, seq, der_sha1, der_sha256) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 7;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7
                ));
            }
            sql.push_str(
                " ON CONFLICT (serial) DO UPDATE SET issuer = excluded.issuer, this_update = excluded.this_update, \
                 next_update = excluded.next_update, seq = excluded.seq, der_sha1 = excluded.der_sha1, der_sha256 = excluded.der_sha256",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (due, this_update, next_update, sha1, sha256) in chunk {
                seq += 1;
                q = q
                    .bind(due.serial.clone())
                    .bind(due.issuer.clone())
                    .bind(*this_update)
                    .bind(*next_update)
                    .bind(seq)
                    .bind(sha1.clone())
                    .bind(sha256.clone());
            }
            q.execute(&mut *tx).await?;
            // The queued changes these answer, unless they changed again meanwhile.
            let done: Vec<_> = chunk
                .iter()
                .filter_map(|(due, ..)| due.version.map(|v| (due.serial.clone(), v)))
                .collect();
            if !done.is_empty() {
                let mut sql =
                    String::from("DELETE FROM ocsp_pending WHERE (serial, version) IN (VALUES ");
                for i in 0..done.len() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("(${}, ${})", 2 * i + 1, 2 * i + 2));
                }
                sql.push(')');
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (serial, version) in done {
                    q = q.bind(serial).bind(version);
                }
                q.execute(&mut *tx).await?;
            }
        }
        self.audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Responses written after `seq`, in write order, at most `limit`.
    pub async fn ocsp_since(&self, seq: i64, limit: i64) -> Result<Vec<OcspRow>> {
        Ok(sqlx::query_as::<_, OcspRow>(
            "SELECT serial, issuer, this_update, next_update, seq, der_sha1, der_sha256 FROM ocsp_responses \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The signer's backlog at `now`: serials waiting for a response, the oldest thisUpdate of
    /// a stored response, and how many responses still meant to be kept fresh (certificate not
    /// expired for more than `keep_after_expiry` seconds) are within `margin` seconds of their
    /// nextUpdate — a stalled signer — and when the oldest change still waiting was queued.
    pub async fn ocsp_backlog(
        &self,
        now: i64,
        margin: i64,
        keep_after_expiry: i64,
    ) -> Result<OcspBacklog> {
        let queue = sqlx::query_as::<_, OcspQueueRow>(
            "SELECT COUNT(*) AS pending, MIN(p.queued_at) AS oldest_queued \
             FROM ocsp_pending p JOIN certificates c ON c.serial = p.serial \
             WHERE c.state IN ('issued', 'abandoned')",
        )
        .fetch_one(&self.pool)
        .await?;
        let oldest_this_update: Option<i64> =
            sqlx::query_scalar("SELECT MIN(this_update) FROM ocsp_responses")
                .fetch_one(&self.pool)
                .await?;
        let overdue: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM ocsp_responses o JOIN certificates c ON c.serial = o.serial \
             WHERE o.next_update <= $1 AND COALESCE(c.not_after, 0) >= $2",
        )
        .bind(now + margin)
        .bind(now - keep_after_expiry)
        .fetch_one(&self.pool)
        .await?;
        Ok(OcspBacklog {
            pending: queue.pending,
            oldest_this_update,
            overdue,
            oldest_queued: queue.oldest_queued,
        })
    }

    /// The responder of each CA that lives longest (the newest).
    pub async fn responders(&self) -> Result<Vec<ResponderRow>> {
        let rows = sqlx::query_as::<_, ResponderRow>(
            "SELECT serial, issuer, key_label, cert_der, not_after FROM ocsp_responders \
             ORDER BY issuer, not_after DESC, serial",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut seen = std::collections::HashSet::new();
        Ok(rows
            .into_iter()
            .filter(|r| seen.insert(r.issuer.clone()))
            .collect())
    }

    /// Responders whose certificate expired before `before`, or whose CA has retired, and whose
    /// key is still in the HSM: (serial, issuer, key label).
    pub async fn expired_responders(&self, before: i64) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query_as::<_, ExpiredResponderRow>(
            "SELECT serial, issuer, key_label FROM ocsp_responders \
             WHERE (not_after < $1 OR issuer IN (SELECT name FROM cas WHERE state = 'retired')) \
             AND key_destroyed_at IS NULL ORDER BY not_after",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.serial, r.issuer, r.key_label))
            .collect())
    }

    /// Records inside `tx` that a responder's key was destroyed.
    pub async fn mark_responder_key_destroyed(&self, tx: &mut Tx, serial: &str) -> Result<()> {
        sqlx::query("UPDATE ocsp_responders SET key_destroyed_at = $2 WHERE serial = $1")
            .bind(serial)
            .bind(now())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Records a new responder inside `tx` (with its certificate's `issued` transition).
    pub async fn insert_responder(&self, tx: &mut Tx, r: &ResponderRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO ocsp_responders (serial, issuer, key_label, cert_der, not_after, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&r.serial)
        .bind(&r.issuer)
        .bind(&r.key_label)
        .bind(r.cert_der.clone())
        .bind(r.not_after)
        .bind(now())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// The most changes [`Store::apply_set`] writes with one statement (a reservation binds 7
/// values: far below both engines' limits on parameters).
const SET_CHUNK: usize = 128;

/// A set's compare-and-set: every one of its `n` rows must have moved from `from`.
fn all_moved(moved: u64, n: usize, from: &str) -> Result<()> {
    if moved == n as u64 {
        return Ok(());
    }
    Err(Error::Store(format!(
        "{} of {n} serials were not in state {from}",
        (n as u64).saturating_sub(moved)
    )))
}

/// `$from, $from+1, …` (`count` placeholders), for an `IN (…)` list.
fn numbered(count: usize, from: usize) -> String {
    (0..count)
        .map(|i| format!("${}", from + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `(…), (…), …`: `count` rows of `row`'s columns, each `?` numbered in turn from `from`, any
/// other text (a literal, a shared `$1`) kept as it is.
fn rows(count: usize, row: &[&str], from: usize) -> String {
    let mut next = from;
    (0..count)
        .map(|_| {
            let cols: Vec<String> = row
                .iter()
                .map(|c| {
                    if *c == "?" {
                        next += 1;
                        format!("${}", next - 1)
                    } else {
                        (*c).to_string()
                    }
                })
                .collect();
            format!("({})", cols.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One state change of the issuance cycle together with its audit record: the unit the group
/// committer batches (see [`crate::authority`]).
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Step 3: commit a serial as `reserved`.
    Reserve {
        /// Hex serial.
        serial: String,
        /// Issuing CA id.
        issuer: String,
        /// Profile id.
        profile: &'static str,
        /// Profile version.
        profile_version: i64,
        /// SHA-256 of the subject SPKI.
        key_fp: Vec<u8>,
        /// Subject data, JSON.
        request: String,
        /// Serial renewed.
        renews: Option<String>,
        /// The CRL partition its distribution point names.
        crl_partition: Option<u16>,
    },
    /// Step 4: store the linting TBS, `reserved` → `issuing`.
    Issuing {
        /// Hex serial.
        serial: String,
        /// The linted TBSCertificate.
        tbs: Vec<u8>,
        /// notBefore, Unix seconds.
        not_before: i64,
        /// notAfter, Unix seconds.
        not_after: i64,
    },
    /// Step 6: store the certificate, `issuing` → `issued`.
    Issued {
        /// Hex serial.
        serial: String,
        /// The certificate.
        cert_der: Vec<u8>,
    },
    /// `issuing` → `abandoned`: signed, but the certificate could not be stored.
    Abandoned {
        /// Hex serial.
        serial: String,
        /// Why.
        reason: String,
    },
    /// `from` → `failed`.
    Failed {
        /// Hex serial.
        serial: String,
        /// The state it must be in.
        from: CertState,
        /// Why.
        reason: String,
    },
}

impl WriteOp {
    /// The serial it changes.
    pub fn serial(&self) -> &str {
        match self {
            WriteOp::Reserve { serial, .. }
            | WriteOp::Issuing { serial, .. }
            | WriteOp::Issued { serial, .. }
            | WriteOp::Abandoned { serial, .. }
            | WriteOp::Failed { serial, .. } => serial,
        }
    }
}

impl Store {
    /// Applies a batch of operations and their audit events in one transaction: one commit
    /// (one fsync) for the lot. The audit records are chained in batch order and written with
    /// one multi-row INSERT; the head is read and updated once.
    ///
    /// Several changes of one kind — reservations (not renewals), `issuing` and `issued` —
    /// go in a few set-based statements each ([`Store::apply_set`]) rather than a few per
    /// change, kind after kind; the others one by one after them. That reorders the batch, so
    /// it is done only when no two changes name the same serial (else all go one by one, in
    /// batch order). Either way the checks are the same: if any fails, the batch is rolled back
    /// and the committer applies each change on its own, so the one that fails gets its own
    /// error and its neighbours go through.
    pub async fn apply_batch(&self, ops: &[(&WriteOp, &Event)]) -> Result<()> {
        let mut tx = self.begin().await?;
        // Sets change the order of the batch's changes: that is only done when no serial (nor
        // a renewal's old serial) is named twice, so that no change can depend on another.
        let mut named = std::collections::HashSet::new();
        let independent = ops.iter().all(|(op, _)| {
            let renews = match op {
                WriteOp::Reserve { renews, .. } => renews.as_deref(),
                _ => None,
            };
            named.insert(op.serial()) && renews.is_none_or(|old| named.insert(old))
        });
        if !independent {
            for (op, _) in ops {
                self.apply_op(&mut tx, op).await?;
            }
            let events: Vec<&Event> = ops.iter().map(|(_, e)| *e).collect();
            self.audit_many(&mut tx, &events).await?;
            tx.commit().await?;
            return Ok(());
        }
        let (mut reserves, mut issuing, mut issued, mut single) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (op, _) in ops {
            match op {
                WriteOp::Reserve { renews: None, .. } => reserves.push(*op),
                WriteOp::Issuing { .. } => issuing.push(*op),
                WriteOp::Issued { .. } => issued.push(*op),
                _ => single.push(*op),
            }
        }
        for set in [reserves, issuing, issued] {
            match set.as_slice() {
                [] => {}
                [op] => self.apply_op(&mut tx, op).await?,
                _ => {
                    for chunk in set.chunks(SET_CHUNK) {
                        self.apply_set(&mut tx, chunk).await?;
                    }
                }
            }
        }
        for op in single {
            self.apply_op(&mut tx, op).await?;
        }
        let events: Vec<&Event> = ops.iter().map(|(_, e)| *e).collect();
        self.audit_many(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends several audit records inside `tx`, chained in order.
    pub async fn audit_many(&self, tx: &mut Tx, events: &[&Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let lock = match self.engine {
            Engine::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
            Engine::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        };
        let head = sqlx::query_as::<_, AuditHeadRow>(lock)
            .fetch_one(&mut **tx)
            .await?;
        let (mut seq, mut prev) = (head.seq, head.hash);
        let at = now();
        // 8 parameters a row; stay far below both engines' parameter limits.
        for chunk in events.chunks(256) {
            let sql = format!(
                "INSERT INTO audit_log (seq, at, kind, actor, subject, detail, prev_hash, hash) VALUES {}",
                rows(chunk.len(), &["?"; 8], 1)
            );
            let mut records = Vec::with_capacity(chunk.len());
            for event in chunk {
                seq += 1;
                let detail = event.detail.to_string();
                let hash = audit::chain_hash(
                    &prev,
                    seq,
                    at,
                    event.kind,
                    &event.actor,
                    event.subject.as_deref(),
                    &detail,
                );
                records.push((
                    seq,
                    event,
                    detail,
                    std::mem::replace(&mut prev, hash.clone()),
                    hash,
                ));
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (seq, event, detail, prev_hash, hash) in records {
                q = q
                    .bind(seq)
                    .bind(at)
                    .bind(event.kind)
                    .bind(event.actor.clone())
                    .bind(event.subject.clone())
                    .bind(detail)
                    .bind(prev_hash)
                    .bind(hash);
            }
            q.execute(&mut **tx).await?;
        }
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(prev)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Applies changes that are all of one kind (all [`WriteOp::Reserve`] without a renewal,
    /// all [`WriteOp::Issuing`] or all [`WriteOp::Issued`]; at most [`SET_CHUNK`]) with the
    /// same checks [`Store::apply_op`] makes for each: the blocked-key check, and a
    /// compare-and-set on the state that must move every row or fails the lot (a serial named
    /// twice moves one row, so it fails too; a reservation's is refused by the primary key).
    async fn apply_set(&self, tx: &mut Tx, ops: &[&WriteOp]) -> Result<()> {
        let n = ops.len();
        let serials: Vec<String> = ops.iter().map(|op| op.serial().to_string()).collect();
        let t = now();
        match ops.first() {
            Some(WriteOp::Reserve { .. }) => {
                // The keys' block check, then one INSERT ($1 the time, 7 values a row).
                let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT 1 FROM blocked_keys WHERE key_fp IN ({}) LIMIT 1",
                    numbered(n, 1)
                )))
                .persistent(false);
                let mut insert = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO certificates (serial, issuer, state, profile, profile_version, key_fp, request, renews, reserved_at, updated_at, crl_partition) VALUES {}",
                    rows(n, &["?", "?", "'reserved'", "?", "?", "?", "?", "NULL", "$1", "$1", "?"], 2)
                )))
                .persistent(false)
                .bind(t);
                for op in ops {
                    let WriteOp::Reserve {
                        serial,
                        issuer,
                        profile,
                        profile_version,
                        key_fp,
                        request,
                        renews: None,
                        crl_partition,
                    } = op
                    else {
                        return Err(Error::Store("a set of changes of mixed kinds".into()));
                    };
                    q = q.bind(key_fp.clone());
                    insert = insert
                        .bind(serial.clone())
                        .bind(issuer.clone())
                        .bind(*profile)
                        .bind(*profile_version)
                        .bind(key_fp.clone())
                        .bind(request.clone())
                        .bind(crl_partition.map(i64::from));
                }
                if q.fetch_optional(&mut **tx).await?.is_some() {
                    return Err(Error::KeyBlocked);
                }
                insert.execute(&mut **tx).await?;
            }
            Some(WriteOp::Issuing { .. }) => {
                self.refuse_blocked_any(tx, &serials).await?;
                let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "WITH v (serial, tbs, nb, na) AS (VALUES {}) \
                     UPDATE certificates SET state = 'issuing', updated_at = $1, linting_tbs = v.tbs, \
                       not_before = v.nb, not_after = v.na \
                     FROM v WHERE certificates.serial = v.serial AND certificates.state = 'reserved'",
                    rows(n, &["?", "?", "?", "?"], 2)
                )))
                .persistent(false)
                .bind(t);
                for op in ops {
                    let WriteOp::Issuing {
                        serial,
                        tbs,
                        not_before,
                        not_after,
                    } = op
                    else {
                        return Err(Error::Store("a set of changes of mixed kinds".into()));
                    };
                    q = q
                        .bind(serial.clone())
                        .bind(tbs.clone())
                        .bind(*not_before)
                        .bind(*not_after);
                }
                all_moved(q.execute(&mut **tx).await?.rows_affected(), n, "reserved")?;
            }
            Some(WriteOp::Issued { .. }) => {
                // As in [`Store::mark_issued`]: the rows change (and lock) before the
                // blocked-key check.
                let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "WITH v (serial, der) AS (VALUES {}) \
                     UPDATE certificates SET state = 'issued', updated_at = $1, cert_der = v.der \
                     FROM v WHERE certificates.serial = v.serial AND certificates.state = 'issuing'",
                    rows(n, &["?", "?"], 2)
                )))
                .persistent(false)
                .bind(t);
                for op in ops {
                    let WriteOp::Issued { serial, cert_der } = op else {
                        return Err(Error::Store("a set of changes of mixed kinds".into()));
                    };
                    q = q.bind(serial.clone()).bind(cert_der.clone());
                }
                all_moved(q.execute(&mut **tx).await?.rows_affected(), n, "issuing")?;
                async_fail_point!("store::mark_issued_before_block_check");
                self.refuse_blocked_any(tx, &serials).await?;
                let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO ocsp_pending (serial, version, queued_at) SELECT serial, 1, $1 FROM certificates \
                     WHERE serial IN ({}) ON CONFLICT (serial) DO UPDATE SET version = ocsp_pending.version + 1",
                    numbered(n, 2)
                )))
                .persistent(false)
                .bind(t);
                for s in &serials {
                    q = q.bind(s.clone());
                }
                q.execute(&mut **tx).await?;
            }
            _ => return Err(Error::Store("not a change that applies as a set".into())),
        }
        Ok(())
    }

    /// [`Store::refuse_blocked`] for many serials: refuses them all if any one's key is blocked.
    async fn refuse_blocked_any(&self, tx: &mut Tx, serials: &[String]) -> Result<()> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM blocked_keys b JOIN certificates c ON c.key_fp = b.key_fp WHERE c.serial IN ({}) LIMIT 1",
            numbered(serials.len(), 1)
        )))
        .persistent(false);
        for s in serials {
            q = q.bind(s.clone());
        }
        if q.fetch_optional(&mut **tx).await?.is_some() {
            return Err(Error::KeyBlocked);
        }
        Ok(())
    }

    async fn apply_op(&self, tx: &mut Tx, op: &WriteOp) -> Result<()> {
        match op {
            WriteOp::Reserve {
                serial,
                issuer,
                profile,
                profile_version,
                key_fp,
                request,
                renews,
                crl_partition,
            } => {
                self.reserve(
                    tx,
                    &Reservation {
                        serial,
                        issuer,
                        profile,
                        profile_version: *profile_version,
                        key_fp,
                        request,
                        renews: renews.as_deref(),
                        crl_partition: *crl_partition,
                    },
                )
                .await?
            }
            WriteOp::Issuing {
                serial,
                tbs,
                not_before,
                not_after,
            } => {
                self.mark_issuing(tx, serial, tbs, *not_before, *not_after)
                    .await?
            }
            WriteOp::Issued { serial, cert_der } => self.mark_issued(tx, serial, cert_der).await?,
            WriteOp::Failed {
                serial,
                from,
                reason,
            } => self.mark_failed(tx, serial, *from, reason).await?,
            WriteOp::Abandoned { serial, reason } => {
                self.mark_abandoned(tx, serial, reason).await?
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Transition {
    linting_tbs: Option<Vec<u8>>,
    cert_der: Option<Vec<u8>>,
    not_before: Option<i64>,
    not_after: Option<i64>,
    failure: Option<String>,
}

row! {
    /// A certificate row as read: [`CertRecord`] with the state still text.
    struct CertRow {
        serial: String,
        issuer: String,
        state: String,
        profile: String,
        profile_version: i64,
        key_fp: Vec<u8>,
        request: String,
        renews: Option<String>,
        renewed_by: Option<String>,
        linting_tbs: Option<Vec<u8>>,
        cert_der: Option<Vec<u8>>,
        not_after: Option<i64>,
        failure: Option<String>,
        revocation_reason: Option<i64>,
        revoked_at: Option<i64>,
    }
}

impl TryFrom<CertRow> for CertRecord {
    type Error = Error;

    fn try_from(r: CertRow) -> Result<CertRecord> {
        Ok(CertRecord {
            serial: r.serial,
            issuer: r.issuer,
            state: CertState::parse(&r.state)?,
            profile: r.profile,
            profile_version: r.profile_version,
            key_fp: r.key_fp,
            request: r.request,
            renews: r.renews,
            renewed_by: r.renewed_by,
            linting_tbs: r.linting_tbs,
            cert_der: r.cert_der,
            not_after: r.not_after,
            failure: r.failure,
            revocation_reason: r.revocation_reason,
            revoked_at: r.revoked_at,
        })
    }
}

row! {
    struct CertListRow {
        serial: String,
        state: String,
        profile: String,
    }
}

row! {
    struct StateCountRow {
        state: String,
        n: i64,
    }
}

row! {
    /// The revocation columns of a serial, read to check and change them.
    struct StatusRow {
        issuer: String,
        state: String,
        revocation_reason: Option<i64>,
        revoked_at: Option<i64>,
        key_fp: Vec<u8>,
        profile: String,
    }
}

impl TryFrom<StatusRow> for crate::revocation::Status {
    type Error = Error;

    fn try_from(r: StatusRow) -> Result<Self> {
        Ok(crate::revocation::Status {
            issuer: r.issuer,
            state: CertState::parse(&r.state)?,
            reason: match r.revocation_reason {
                None => None,
                Some(code) => Some(
                    crate::revocation::Reason::from_code(code)
                        .ok_or_else(|| Error::Store(format!("unknown reason code {code}")))?,
                ),
            },
            revoked_at: r.revoked_at,
            key_fp: r.key_fp,
            profile: r.profile,
        })
    }
}

row! {
    struct AuditHeadRow {
        seq: i64,
        hash: Vec<u8>,
    }
}

row! {
    struct CaRow {
        key_label: String,
        cert_der: Vec<u8>,
    }
}

row! {
    struct CrossRow {
        subject: String,
        issuer: String,
        cert_der: Vec<u8>,
    }
}

row! {
    struct CaListRow {
        name: String,
        key_label: String,
        cert_der: Vec<u8>,
        token_label: Option<String>,
        state: String,
    }
}

/// A CA as stored ([`Store::cas`]).
#[derive(Debug, Clone)]
pub struct CaRecord {
    /// Its id.
    pub id: CaId,
    /// Its key's label.
    pub key_label: String,
    /// Its certificate.
    pub cert_der: Vec<u8>,
    /// The token of its key when not the online `ca` token (a root token).
    pub token_label: Option<String>,
    /// Where it is in its life.
    pub state: CaStatus,
}

row! {
    struct CaRevocationRow {
        revoked_at: i64,
        revocation_reason: i64,
    }
}

struct RevokedCaRow {
    cert_der: Vec<u8>,
    revocation: CaRevocationRow,
}

impl<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> for RevokedCaRow {
    fn from_row(row: &'r sqlx::any::AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(RevokedCaRow {
            cert_der: sqlx::Row::try_get(row, "cert_der")?,
            revocation: CaRevocationRow::from_row(row)?,
        })
    }
}

/// Keeps passwords in a database URL out of error messages.
pub(crate) fn redact_url(msg: &str, url: &str) -> String {
    match url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
    {
        Some((userinfo, _)) if userinfo.contains(':') => msg.replace(userinfo, "***"),
        _ => msg.to_string(),
    }
}

/// A fresh SQLite store in a temporary directory, for unit tests (keep the directory alive).
#[cfg(test)]
pub(crate) async fn test_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("ecert.db").display()
    ))
    .await
    .unwrap();
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: changes of one kind in a batch go as a set, with each one's checks — a state
    /// that has moved, or a blocked key, refuses the whole set and writes nothing (the
    /// committer then applies each on its own, see `authority::Committer`).
    ///
    /// On SQLite, and on PostgreSQL too where `ECERT_TEST_PG_URL` names a server (`ops/test`
    /// starts one before its first run): the set statements are written for both engines.
    #[tokio::test]
    async fn changes_of_one_kind_apply_as_a_set_with_each_ones_checks() {
        let (_dir, store) = test_store().await;
        sets_with_each_ones_checks(store).await;
        if let Ok(url) = std::env::var("ECERT_TEST_PG_URL") {
            use sqlx::Connection;
            sqlx::any::install_default_drivers();
            let name = format!(
                "ecert_unit_{}",
                crate::serial::SerialNumber::random().to_hex()
            );
            let mut admin = sqlx::AnyConnection::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .unwrap();
            let base = url.rsplit_once('/').unwrap().0;
            let store = Store::open(&format!("{base}/{name}")).await.unwrap();
            assert_eq!(store.engine, Engine::Postgres);
            sets_with_each_ones_checks(store).await;
        }
    }

    async fn sets_with_each_ones_checks(store: Store) {
        let event = |kind: &'static str, serial: &str| Event {
            kind,
            actor: "test".into(),
            subject: Some(serial.into()),
            detail: serde_json::json!({}),
        };
        let reserve = |serial: &str| WriteOp::Reserve {
            serial: serial.into(),
            issuer: "individual".into(),
            profile: "personal",
            profile_version: 2,
            key_fp: format!("key of {serial}").into_bytes(),
            request: "{}".into(),
            renews: None,
            crl_partition: Some(1),
        };
        let issuing = |serial: &str| WriteOp::Issuing {
            serial: serial.into(),
            tbs: serial.as_bytes().to_vec(),
            not_before: 100,
            not_after: 200,
        };
        let issued = |serial: &str| WriteOp::Issued {
            serial: serial.into(),
            cert_der: format!("certificate {serial}").into_bytes(),
        };
        let apply = |ops: Vec<WriteOp>| {
            let store = store.clone();
            async move {
                let events: Vec<Event> = ops
                    .iter()
                    .map(|op| event("test.change", op.serial()))
                    .collect();
                let batch: Vec<(&WriteOp, &Event)> = ops.iter().zip(events.iter()).collect();
                store.apply_batch(&batch).await
            }
        };
        let states = || {
            let store = store.clone();
            async move {
                sqlx::query_as::<_, (String, String)>(
                    "SELECT serial, state FROM certificates ORDER BY serial",
                )
                .fetch_all(store.pool())
                .await
                .unwrap()
            }
        };
        let audit_count = || {
            let store = store.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM audit_log WHERE kind = 'test.change'",
                )
                .fetch_one(store.pool())
                .await
                .unwrap()
            }
        };
        let state_list = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };

        apply(["a1", "a2", "a3"].map(reserve).to_vec())
            .await
            .unwrap();
        assert_eq!(
            states().await,
            state_list(&[("a1", "reserved"), ("a2", "reserved"), ("a3", "reserved")])
        );
        assert_eq!(audit_count().await, 3);

        // One serial not reserved: nothing moves.
        let e = apply(["a1", "a2", "zz"].map(issuing).to_vec())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Store(_)), "{e}");
        assert_eq!(states().await[0].1, "reserved");
        assert_eq!(audit_count().await, 3);

        apply(["a1", "a2", "a3"].map(issuing).to_vec())
            .await
            .unwrap();
        let (tbs, nb, na): (Vec<u8>, i64, i64) = sqlx::query_as(
            "SELECT linting_tbs, not_before, not_after FROM certificates WHERE serial = 'a2'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!((tbs.as_slice(), nb, na), (b"a2".as_slice(), 100, 200));

        // a3's key is blocked meanwhile: the set is refused and a1, a2 stay `issuing`.
        let mut tx = store.begin().await.unwrap();
        store
            .block_key(&mut tx, b"key of a3", "test")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let e = apply(["a1", "a2", "a3"].map(issued).to_vec())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::KeyBlocked), "{e}");
        assert_eq!(
            states().await,
            state_list(&[("a1", "issuing"), ("a2", "issuing"), ("a3", "issuing")])
        );
        apply(["a1", "a2"].map(issued).to_vec()).await.unwrap();
        assert_eq!(
            states().await,
            state_list(&[("a1", "issued"), ("a2", "issued"), ("a3", "issuing")])
        );
        let der: Vec<u8> =
            sqlx::query_scalar("SELECT cert_der FROM certificates WHERE serial = 'a1'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(der, b"certificate a1");
        let queued: Vec<String> =
            sqlx::query_scalar("SELECT serial FROM ocsp_pending ORDER BY serial")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(queued, ["a1", "a2"]);

        // A reservation whose key is blocked refuses its set; a serial taken refuses its set.
        let mut blocked = reserve("b2");
        if let WriteOp::Reserve { key_fp, .. } = &mut blocked {
            *key_fp = b"key of a3".to_vec();
        }
        let e = apply(vec![reserve("b1"), blocked]).await.unwrap_err();
        assert!(matches!(e, Error::KeyBlocked), "{e}");
        assert!(apply(vec![reserve("b1"), reserve("a1")]).await.is_err());
        assert_eq!(states().await.len(), 3);
        assert_eq!(audit_count().await, 3 + 3 + 2);

        // A batch naming a serial twice goes in its own order: `issuing` before the serial is
        // reserved fails (sets would have reserved it first), in order it goes through.
        assert!(apply(vec![issuing("c1"), reserve("c1")]).await.is_err());
        assert_eq!(states().await.len(), 3);
        apply(vec![
            reserve("c1"),
            issuing("c1"),
            reserve("c2"),
            reserve("c3"),
        ])
        .await
        .unwrap();
        assert_eq!(
            states().await[3..],
            state_list(&[("c1", "issuing"), ("c2", "reserved"), ("c3", "reserved")])
        );
    }

    /// Issue 17: a serial the lost machine revoked after the backup is recorded revoked whatever
    /// the backup left it as — unknown, or reserved / issuing / failed (the restore aborted on
    /// those before) — while an issued certificate is left to the revocation path; a row
    /// recorded without its key takes the key of the certificate when it surfaces.
    #[tokio::test]
    async fn a_serial_revoked_after_the_backup_is_recorded_whatever_the_backup_left() {
        let (_dir, store) = test_store().await;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for (serial, state) in [
            ("0b", "reserved"),
            ("0c", "issuing"),
            ("0d", "failed"),
            ("0e", "issued"),
        ] {
            sqlx::query(
                "INSERT INTO certificates (serial, issuer, state, profile, profile_version, key_fp, request, reserved_at, \
                 updated_at, not_after, crl_partition) VALUES ($1, 'individual', $2, 'personal', 2, $3, '{}', $4, $4, $5, 1)",
            )
            .bind(serial)
            .bind(state)
            .bind(serial.as_bytes().to_vec())
            .bind(now - 100)
            .bind((state != "reserved").then_some(now + 86_400))
            .execute(store.pool())
            .await
            .unwrap();
        }
        let event = |serial: &str| Event {
            kind: "certificate.revoked_unknown",
            actor: "test".into(),
            subject: Some(serial.into()),
            detail: serde_json::json!({}),
        };
        let record = |serial: &'static str, issuer: &'static str, key: Option<[u8; 32]>| {
            let store = store.clone();
            async move {
                store
                    .record_revoked_unknown(
                        serial,
                        issuer,
                        Some(3),
                        now + 999,
                        1,
                        now - 50,
                        key.as_ref(),
                        &event(serial),
                    )
                    .await
                    .unwrap()
            }
        };
        for serial in ["0a", "0b", "0c", "0d"] {
            assert!(record(serial, "individual", None).await, "{serial}");
        }
        // An issued certificate is revoked by serial; another issuer's row is not this one.
        assert!(!record("0e", "individual", None).await);
        assert!(!record("0a", "organisational", None).await);
        let row = |serial: &'static str| {
            let store = store.clone();
            async move {
                sqlx::query_as::<_, (String, String, Option<i64>, Option<i64>, Option<i64>, Option<i64>, Vec<u8>)>(
                    "SELECT state, profile, revocation_reason, revoked_at, not_after, crl_partition, key_fp \
                     FROM certificates WHERE serial = $1",
                )
                .bind(serial)
                .fetch_one(store.pool())
                .await
                .unwrap()
            }
        };
        for serial in ["0b", "0c", "0d"] {
            let (state, profile, reason, at, not_after, partition, key) = row(serial).await;
            assert_eq!(
                (state.as_str(), profile.as_str(), reason, at),
                ("abandoned", "personal", Some(1), Some(now - 50)),
                "{serial}"
            );
            // Its own dates, partition and key stay; a reserved row had no notAfter yet.
            let want_after = if serial == "0b" {
                now + 999
            } else {
                now + 86_400
            };
            assert_eq!(
                (not_after, partition, key),
                (Some(want_after), Some(1), serial.as_bytes().to_vec()),
                "{serial}"
            );
        }
        let (state, _, reason, _, _, _, _) = row("0e").await;
        assert_eq!((state.as_str(), reason), ("issued", None));
        // Every change reaches OCSP and the CRLs.
        let queued: Vec<String> =
            sqlx::query_scalar("SELECT serial FROM ocsp_pending ORDER BY serial")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(queued, ["0a", "0b", "0c", "0d"]);
        // The unknown one surfaces: its key is recorded, its revocation unchanged.
        let key = [7u8; 32];
        assert!(record("0a", "individual", Some(key)).await);
        let (state, profile, reason, at, _, partition, fp) = row("0a").await;
        assert_eq!(
            (state.as_str(), profile.as_str(), reason, at, partition, fp),
            (
                "abandoned",
                "unknown",
                Some(1),
                Some(now - 50),
                Some(3),
                key.to_vec()
            )
        );
        // Once: the same key again, or no key, changes nothing (the real key stays).
        assert!(!record("0a", "individual", Some(key)).await);
        assert!(!record("0a", "individual", None).await);
        assert_eq!(row("0a").await.6, key.to_vec());
    }

    /// Issue 17: a signer that lost the lock to a standby writes nothing more — in particular
    /// not a `good` OCSP response it signed before the revocation over the new signer's
    /// `revoked` one (Boulder #2995).
    #[tokio::test]
    async fn a_signer_whose_epoch_moved_on_writes_nothing() {
        let (dir, plain) = test_store().await;
        let url = sqlite_url(&dir);
        let stale = Store::open(&url)
            .await
            .unwrap()
            .take_signer_epoch("host-a:1")
            .await
            .unwrap();
        let held = stale.fence().unwrap().epoch();
        let response = |status: &[u8]| -> SignedOcsp {
            (
                OcspDue {
                    serial: "0a".into(),
                    version: None,
                    issuer: "individual".into(),
                    state: CertState::Issued,
                    reason: None,
                    revoked_at: None,
                    hold_allowed: false,
                },
                100,
                200,
                status.to_vec(),
                status.to_vec(),
            )
        };
        let event = |kind| Event {
            kind,
            actor: "test".into(),
            subject: None,
            detail: serde_json::json!({}),
        };
        // Before the takeover the signer writes.
        stale
            .store_ocsp(&[response(b"good")], &event("ocsp.signed"))
            .await
            .unwrap();
        stale.check_fence(None).await.unwrap();
        // A standby takes over and writes the revocation's response.
        let fresh = Store::open(&url)
            .await
            .unwrap()
            .take_signer_epoch("host-b:2")
            .await
            .unwrap();
        assert_eq!(fresh.fence().unwrap().epoch(), held + 1);
        fresh
            .store_ocsp(&[response(b"revoked")], &event("ocsp.signed"))
            .await
            .unwrap();
        // The old signer wakes up with its `good` response: refused, by name.
        match stale
            .store_ocsp(&[response(b"good")], &event("ocsp.signed"))
            .await
        {
            Err(Error::SignerFenced { held: h, current }) => {
                assert_eq!((h, current), (held, held + 1))
            }
            other => panic!("a stale signer wrote: {other:?}"),
        }
        assert!(stale.fence().unwrap().lost());
        assert!(matches!(
            stale.check_fence(None).await,
            Err(Error::SignerFenced { .. })
        ));
        assert!(matches!(
            stale.begin().await,
            Err(Error::SignerFenced { .. })
        ));
        let der: Vec<u8> =
            sqlx::query_scalar("SELECT der_sha256 FROM ocsp_responses WHERE serial = '0a'")
                .fetch_one(plain.pool())
                .await
                .unwrap();
        assert_eq!(der, b"revoked");
        // The new signer and unfenced processes (the CLI, front instances) go on writing.
        assert!(!fresh.fence().unwrap().lost());
        fresh.begin().await.unwrap().commit().await.unwrap();
        plain.begin().await.unwrap().commit().await.unwrap();
        // Only the two writes that were allowed are in the audit chain.
        let signed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE kind = 'ocsp.signed'")
                .fetch_one(plain.pool())
                .await
                .unwrap();
        assert_eq!(signed, 2);
    }

    fn sqlite_url(dir: &tempfile::TempDir) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("ecert.db").display()
        )
    }

    async fn applied(store: &Store) -> Vec<i64> {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap()
    }

    /// The first read of a CA's CRL entries comes in chunks (issue 16): every entry exactly
    /// once, however the chunk boundaries fall (many entries share a notAfter), expired ones
    /// and other CAs' left out, every field read back.
    #[tokio::test]
    async fn crl_entries_come_in_chunks_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&sqlite_url(&dir)).await.unwrap();
        let now = 1_900_000_000;
        let mut want = std::collections::BTreeSet::new();
        for i in 0..23i64 {
            let serial = format!("{:032x}", 0x1000 + i);
            // Three notAfter values, so most boundaries fall inside a run of equal keys.
            let not_after = now + 86_400 * (1 + i % 3);
            let (issuer, reason) = match i {
                20 => ("server", Some(1)),
                21 => ("individual", None), // not revoked
                _ => ("individual", Some(i % 6)),
            };
            let expired = i == 22;
            sqlx::query(
                "INSERT INTO certificates (serial, issuer, state, profile, profile_version, key_fp, request, reserved_at, updated_at, \
                 not_after, revocation_reason, revoked_at, crl_partition) VALUES ($1, $2, 'issued', 'personal', 2, $3, '{}', $4, $4, $5, $6, $7, $8)",
            )
            .bind(&serial)
            .bind(issuer)
            .bind(serial.as_bytes().to_vec())
            .bind(now - 100)
            .bind(if expired { now - 30 * 86_400 } else { not_after })
            .bind(reason)
            .bind(now - 50 + i)
            .bind((i % 2 == 0).then_some(i % 4))
            .execute(store.pool())
            .await
            .unwrap();
            if issuer == "individual" && reason.is_some() && !expired {
                want.insert((
                    serial,
                    reason.filter(|r| *r > 0).or(reason),
                    now - 50 + i,
                    (i % 2 == 0).then_some((i % 4) as u16),
                ));
            }
        }
        for chunk in [1, 4, 7, 100] {
            let mut cursor = CrlCursor::default();
            let mut got = std::collections::BTreeSet::new();
            let mut n = 0;
            while let Some((lines, next)) = store
                .crl_entries_chunk("individual", now, &cursor, chunk)
                .await
                .unwrap()
            {
                for line in lines.split('\n') {
                    let e = crl_entry_line(line).unwrap();
                    assert!(e.hold_allowed, "a personal certificate may be held");
                    got.insert((e.serial.to_hex(), e.reason, e.revoked_at, e.partition));
                    n += 1;
                }
                cursor = next;
            }
            assert_eq!(n, want.len(), "chunks of {chunk}: an entry read twice");
            assert_eq!(got, want, "chunks of {chunk}");
        }
    }

    /// Issue 13, defect 3: a connection returned to the pool inside a transaction (its
    /// transaction never committed nor rolled back, as after a failed COMMIT and ROLLBACK) is
    /// not handed out again; every later transaction begins on a clean connection.
    #[tokio::test]
    async fn a_connection_left_in_a_transaction_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&sqlite_url(&dir)).await.unwrap();
        for _ in 0..4 {
            let mut conn = store.pool().acquire().await.unwrap();
            let tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
            // Neither committed nor rolled back: the depth stays above zero.
            std::mem::forget(tx);
            assert!(sqlx::Connection::is_in_transaction(&*conn));
        }
        for _ in 0..20 {
            let mut tx = store.begin().await.expect("a clean connection");
            sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
        }
    }

    /// A write that finds the database's storage full is `Error::StoreFull` (the RA answers
    /// 503), not a bare database error: SQLite's own SQLITE_FULL, made by a page limit.
    #[tokio::test]
    async fn a_full_database_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&sqlite_url(&dir)).await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        sqlx::query("CREATE TABLE filler (b BLOB)")
            .execute(&mut *conn)
            .await
            .unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {}",
            pages + 2
        )))
        .execute(&mut *conn)
        .await
        .unwrap();
        let e = sqlx::query("INSERT INTO filler VALUES (zeroblob(1000000))")
            .execute(&mut *conn)
            .await
            .unwrap_err();
        let e = Error::from(e);
        assert!(matches!(e, Error::StoreFull(_)), "{e:?}");
        assert!(e.to_string().contains("disk is full"), "{e}");
    }

    fn all_versions() -> Vec<i64> {
        SQLITE_MIGRATIONS.iter().map(|m| m.0).collect()
    }

    /// A database made by a build that listed its migrations in `ecert_migrations` (all but the
    /// last applied) opens: the versions it lists are adopted, not run again (version 1 would
    /// fail on its existing tables), its data stays, and only the missing version runs.
    #[tokio::test]
    async fn versions_of_the_legacy_table_are_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir);
        sqlx::any::install_default_drivers();
        let pool = AnyPool::connect(&url).await.unwrap();
        let (old, new) = SQLITE_MIGRATIONS.split_at(SQLITE_MIGRATIONS.len() - 1);
        sqlx::raw_sql(
            "CREATE TABLE ecert_migrations (version BIGINT PRIMARY KEY NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        for &(version, _, sql) in old {
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            sqlx::query("INSERT INTO ecert_migrations (version, applied_at) VALUES ($1, 0)")
                .bind(version)
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query("INSERT INTO meta (key, value) VALUES ('probe', 'kept')")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let store = Store::open(&url).await.unwrap();
        assert_eq!(applied(&store).await, all_versions());
        assert_eq!(store.meta("probe").await.unwrap().as_deref(), Some("kept"));
        // The last file ran (it adds this column).
        sqlx::query("SELECT revoked_at FROM cas")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(new.len(), 1);
        drop(store);

        // Opening again changes nothing.
        let store = Store::open(&url).await.unwrap();
        assert_eq!(applied(&store).await, all_versions());
    }

    /// An applied migration whose file changed afterwards (forward-only: a change is a new
    /// file) stops the store from opening, naming the version.
    #[tokio::test]
    async fn an_edited_applied_migration_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir);
        let store = Store::open(&url).await.unwrap();
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 3")
            .bind(vec![0u8; 48])
            .execute(store.pool())
            .await
            .unwrap();
        drop(store);
        let err = Store::open(&url).await.unwrap_err().to_string();
        assert!(err.contains('3'), "{err}");
    }

    /// Two processes opening a fresh data directory at once: one applies the migrations, the
    /// other waits for its write lock and then finds them applied (sqlx's SQLite migrator alone
    /// takes no lock).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_opens_of_a_fresh_database_both_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir);
        let (a, b) = tokio::join!(Store::open(&url), Store::open(&url));
        let (a, _b) = (a.unwrap(), b.unwrap());
        assert_eq!(applied(&a).await, all_versions());
    }
}
