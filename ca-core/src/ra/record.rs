//! The application record, below every capability: finding an application by its owner (a
//! citizen's reference and tracking secret, or a staff member's outlet), reading it into a
//! typed row by column name, checking it is still open at the version a person saw, counting
//! its valid approvals, and settling what an interrupted decision or renewal left half-done.
//!
//! Capabilities ([`super::application`], [`super::counter`], [`super::decision`], ...) load
//! applications only through here, so none of them needs another to find one.

use super::permissions::Action;
use super::session::StaffSession;
use super::support::{ct_eq, now, sha256};
use crate::error::{Error, Result};
use crate::row::row;
use crate::store::Store;

/// The columns of an application that staff screens and decisions read ([`Application`]).
macro_rules! columns {
    () => {
        "id, reference, profile, version, state, surname, given_name, name_zh, email, \
     email_confirmed_at, hkid_sealed, dob_sealed, phone_sealed, address_sealed, identity_version, fee_amount, \
     fee_method, fee_receipt, hkid_index, certificate, rejected_reason, csr, organization, org_id, user_surname, \
     user_given_name, dns_names, org_checked_version, user_title, issue_error, entered_by, identity_by, fee_by, \
     org_register, identity_document, org_locality"
    };
}

row! {
    /// An application row (`columns!()`), read by column name. Personal fields are sealed
    /// ([`crate::pii`]); a purged application has them empty.
    #[derive(Clone)]
    pub(super) struct Application {
        pub id: String,
        pub reference: String,
        pub profile: String,
        /// Edits bump it; checks and approvals name it.
        pub version: i64,
        /// `submitted`, `approved`, `issued` or `rejected`.
        pub state: String,
        pub surname: String,
        pub given_name: String,
        pub name_zh: String,
        pub email: String,
        pub email_confirmed_at: Option<i64>,
        pub hkid_sealed: Vec<u8>,
        pub dob_sealed: Vec<u8>,
        pub phone_sealed: Vec<u8>,
        pub address_sealed: Vec<u8>,
        /// The version whose identity check matched.
        pub identity_version: Option<i64>,
        pub fee_amount: Option<i64>,
        pub fee_method: Option<String>,
        pub fee_receipt: Option<String>,
        pub hkid_index: Vec<u8>,
        /// The current certificate's serial (the newest renewal once settled).
        pub certificate: Option<String>,
        pub rejected_reason: Option<String>,
        pub csr: Vec<u8>,
        pub organization: Option<String>,
        pub org_id: Option<String>,
        pub user_surname: Option<String>,
        pub user_given_name: Option<String>,
        /// server: space-separated.
        pub dns_names: Option<String>,
        /// The version whose organisation documents were checked.
        pub org_checked_version: Option<i64>,
        pub user_title: Option<String>,
        /// Why the last issuance did not complete.
        pub issue_error: Option<String>,
        /// The staff id of who entered it (`None`: the citizen, online).
        pub entered_by: Option<String>,
        /// The staff id of who recorded the identity check.
        pub identity_by: Option<String>,
        /// The staff id of who recorded the fee.
        pub fee_by: Option<String>,
        /// The register the organisation is in: `NTR` or `GOV` (organisation profiles).
        pub org_register: Option<String>,
        /// The document a matched identity check saw (`HKID`).
        pub identity_document: Option<String>,
        /// The locality of the organisation's registration, verified at the counter (server).
        pub org_locality: Option<String>,
    }
}

// Personal data (sealed, but still): `Debug` names the row only.
impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Still open (`submitted`) and, if `version` is given, at that version.
    pub fn open_at(&self, version: Option<i64>) -> Result<()> {
        if self.state != "submitted" {
            return Err(not_open());
        }
        if version.is_some_and(|v| self.version != v) {
            return Err(changed());
        }
        Ok(())
    }

    /// The server names (empty for other profiles).
    pub fn dns_names(&self) -> Vec<String> {
        self.dns_names
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

/// The application is no longer open.
pub(super) fn not_open() -> Error {
    Error::Conflict("the application is no longer open".into())
}

/// The application changed since the person opened it.
pub(super) fn changed() -> Error {
    Error::Conflict("the application changed since you opened it: reload".into())
}

row! {
    struct Tracking {
        id: String,
        secret_hash: Vec<u8>,
    }
}

/// Finds a citizen's application by reference and tracking secret (settled first); anything
/// else is [`Error::NotFound`]. Returns its id.
pub(super) async fn owned(store: &Store, reference: &str, secret: &str) -> Result<String> {
    let row = sqlx::query_as::<_, Tracking>(
        "SELECT id, secret_hash FROM applications WHERE reference = $1",
    )
    .bind(reference.trim().to_uppercase())
    .fetch_optional(store.pool())
    .await?;
    let presented = sha256(&[b"tracking", secret.trim().as_bytes()]);
    match row {
        Some(r) if ct_eq(&r.secret_hash, &presented) => {
            settle(store, &r.id).await?;
            Ok(r.id)
        }
        _ => Err(Error::NotFound),
    }
}

/// An application within reach of the staff member for `action` (settled first): the role
/// must be allowed the action ([`StaffSession::authorize`], else [`Error::Forbidden`]), and an
/// application of another outlet than theirs, where the reach is their own outlet, is
/// [`Error::NotFound`] like one that does not exist.
pub(super) async fn staff_owned(
    store: &Store,
    staff: &StaffSession,
    id: &str,
    action: Action,
) -> Result<Application> {
    let outlet = staff.outlet_limit(action)?;
    settle(store, id).await?;
    find_in(store, id, outlet).await
}

/// [`staff_owned`] without settling first: a pure read, for callers that change nothing.
pub(super) async fn in_outlet(
    store: &Store,
    staff: &StaffSession,
    id: &str,
    action: Action,
) -> Result<Application> {
    let outlet = staff.outlet_limit(action)?;
    find_in(store, id, outlet).await
}

/// An application by id, whoever may see it: for callers that found it by its owner first
/// ([`owned`]).
pub(super) async fn by_id(store: &Store, id: &str) -> Result<Application> {
    find_in(store, id, None).await
}

async fn find_in(store: &Store, id: &str, outlet: Option<&str>) -> Result<Application> {
    sqlx::query_as::<_, Application>(concat!(
        "SELECT ",
        columns!(),
        " FROM applications WHERE id = $1 AND ($2 = '' OR outlet = $2)"
    ))
    .bind(id)
    .bind(outlet.unwrap_or_default())
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::NotFound)
}

/// Whether the key `key_fp` (SHA-256 of its SubjectPublicKeyInfo) is on a valid certificate
/// of another subscriber: an application's current certificate, issued and not expired, whose
/// applicant (HKID blind index) or organisation differs from `hkid_index` and `org_id`. A key
/// is certified to one subscriber only, so one subscriber's report of its compromise never
/// concerns another's certificate (issue 11, defect 5).
pub(super) async fn key_certified_to_another(
    store: &Store,
    key_fp: &[u8],
    hkid_index: &[u8],
    org: &str,
) -> Result<bool> {
    let n = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM certificates c JOIN applications a ON a.certificate = c.serial \
         WHERE c.key_fp = $1 AND c.state = 'issued' AND c.revocation_reason IS NULL AND c.not_after >= $2 \
         AND NOT (a.hkid_index = $3 AND COALESCE(a.org_id, CASE WHEN a.org_register = 'GOV' THEN 'GOV:' || a.organization END, '') = $4)",
    )
    .bind(key_fp.to_vec())
    .bind(now())
    .bind(hkid_index.to_vec())
    .bind(org)
    .fetch_one(store.pool())
    .await?;
    Ok(n > 0)
}

/// Who the organisation of an application is, for [`key_certified_to_another`]: its Business
/// Registration number, or for a government entity (no number) `GOV:` and its name; empty for
/// a person. The same expression as the query's.
pub(super) fn org_key(
    register: Option<&str>,
    org_id: Option<&str>,
    organization: Option<&str>,
) -> String {
    match (register, org_id) {
        (_, Some(br)) => br.to_string(),
        (Some("GOV"), None) => format!("GOV:{}", organization.unwrap_or_default()),
        _ => String::new(),
    }
}

/// The refusal of a key certified to another subscriber.
pub(super) fn key_of_another() -> Error {
    Error::Invalid {
        field: "csr",
        reason: "this key is already certified to another subscriber (a key is certified to one subscriber only): make a new key".into(),
    }
}

/// How many approvals of `version` count now.
pub(super) async fn valid_approvals(store: &Store, id: &str, version: i64) -> Result<usize> {
    let n = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM approvals WHERE application = $1 AND version = $2 AND decision = 'approve' AND expires_at > $3",
    )
    .bind(id)
    .bind(version)
    .bind(now())
    .fetch_one(store.pool())
    .await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

row! {
    /// An application's state beside its certificate's and that certificate's renewal's.
    struct Settling {
        state: String,
        cert_state: Option<String>,
        renewal_state: Option<String>,
        updated_at: i64,
    }
}

/// Finishes what an interrupted decision or renewal left half-done (a crash or a failed write
/// after the certificate was signed): an `approved` application whose certificate was issued
/// becomes `issued`; one whose issuance failed or was abandoned, or that has no serial ten
/// minutes after its claim, is open again; an application whose certificate was renewed points
/// at the renewal. Run before every read of an application.
pub(super) async fn settle(store: &Store, id: &str) -> Result<()> {
    // One read; a write only when something is half-done (reads are the common case, and on
    // SQLite every UPDATE takes the writer lock even when it changes nothing).
    let Some(r) = sqlx::query_as::<_, Settling>(
        "SELECT a.state AS state, c.state AS cert_state, n.state AS renewal_state, a.updated_at AS updated_at \
         FROM applications a \
         LEFT JOIN certificates c ON c.serial = a.certificate \
         LEFT JOIN certificates n ON n.serial = c.renewed_by WHERE a.id = $1",
    )
    .bind(id)
    .fetch_optional(store.pool())
    .await?
    else {
        return Ok(());
    };
    let t = now();
    let sql = match (
        r.state.as_str(),
        r.cert_state.as_deref(),
        r.renewal_state.as_deref(),
    ) {
        ("approved", Some("issued"), _) => {
            "UPDATE applications SET state = 'issued', updated_at = $2 WHERE id = $1 AND state = 'approved'"
        }
        ("approved", Some("failed" | "abandoned"), _) => {
            "UPDATE applications SET state = 'submitted', certificate = NULL, \
             issue_error = COALESCE(issue_error, 'the issuance did not complete'), updated_at = $2 WHERE id = $1 AND state = 'approved'"
        }
        ("approved", None, _) if r.updated_at < t - 600 => {
            "UPDATE applications SET state = 'submitted', issue_error = 'the issuance did not complete', updated_at = $2 \
             WHERE id = $1 AND state = 'approved' AND certificate IS NULL"
        }
        ("issued", _, Some("issued")) => {
            "UPDATE applications SET certificate = (SELECT c.renewed_by FROM certificates c WHERE c.serial = applications.certificate), \
             updated_at = $2 WHERE id = $1 AND state = 'issued'"
        }
        _ => return Ok(()),
    };
    let mut tx = store.begin().await?;
    let changed = sqlx::query(sql)
        .bind(id)
        .bind(t)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if changed > 0 {
        // Issued, or now pointing at its renewal: the directory entry follows (if published).
        crate::ldap::queue_application(&mut tx, id, false, t).await?;
    }
    tx.commit().await?;
    Ok(())
}
