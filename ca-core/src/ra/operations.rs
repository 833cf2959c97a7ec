//! The operator's view (issue 14, "The operator sees no personal data"): the service's health,
//! status publication, queues and counts — numbers, CRL numbers, serial counts, never a name,
//! an e-mail address, an identity number or any other personal field — and the triggers an
//! operator pulls: publish every CRL now, sign the OCSP responses that are due now. Roles: the
//! matrix's `ViewOperations` and `RunOperations` (the operator).

use serde_json::json;

use super::permissions::Action;
use super::session::StaffSession;
use super::support::now;
use crate::audit::Event;
use crate::authority::Authority;
use crate::error::Result;
use crate::row::row;

/// What the operator's page shows.
#[derive(Debug, Clone)]
pub struct OpsView {
    /// Certificates by lifecycle state and profile: (state, profile, count).
    pub certificates: Vec<(String, String, i64)>,
    /// Serials waiting for an OCSP response, and since when the oldest waits (seconds).
    pub ocsp_pending: i64,
    pub ocsp_oldest_waiting: Option<i64>,
    /// Kept-fresh responses within 8 hours of their nextUpdate (TLS BR §4.9.10).
    pub ocsp_overdue: i64,
    /// Each CRL: (file, CRLNumber, thisUpdate, nextUpdate), Unix seconds.
    pub crls: Vec<(String, i64, i64, i64)>,
    /// CRL files behind the database (a full disk).
    pub crl_files_behind: Vec<String>,
    /// The clock against its reference: (reference, skew in ms, fault).
    pub clock: Option<(String, Option<i64>, Option<String>)>,
    /// Whether the HSM signs now (one signature with the audit key), or why not.
    pub hsm: std::result::Result<(), String>,
    /// Open applications, and open certificate problem reports (counts only).
    pub applications_open: i64,
    pub problem_reports_open: i64,
    /// Failures of the last 24 hours by audit event kind (issuance refused or failed, CAA
    /// refusals): counts, no details.
    pub recent_failures: Vec<(String, i64)>,
}

row! {
    struct CountRow {
        state: String,
        profile: String,
        n: i64,
    }
}

row! {
    struct KindCount {
        kind: String,
        n: i64,
    }
}

/// The operator's view, for a member whose role may see the operation.
pub async fn operations(auth: &Authority, staff: &StaffSession) -> Result<OpsView> {
    staff.authorize(Action::ViewOperations)?;
    let store = auth.store();
    let at = now();
    let certificates = sqlx::query_as::<_, CountRow>(
        "SELECT state, profile, CAST(COUNT(*) AS BIGINT) AS n FROM certificates GROUP BY state, profile ORDER BY state, profile",
    )
    .fetch_all(store.pool())
    .await?
    .into_iter()
    .map(|r| (r.state, r.profile, r.n))
    .collect();
    let backlog = store
        .ocsp_backlog(at, 8 * 3600, crate::publication::OCSP_FRESH_AFTER_EXPIRY)
        .await?;
    let mut crls = Vec::new();
    for ca in store.cas().await? {
        let role = ca.id;
        for h in store.crl_heads(&role.name()).await? {
            crls.push((
                h.scope.file_name(role),
                h.number,
                h.this_update,
                h.next_update,
            ));
        }
    }
    crls.sort();
    let applications_open: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM applications WHERE state IN ('submitted', 'approved')",
    )
    .fetch_one(store.pool())
    .await?;
    let problem_reports_open = super::problems::report_clocks(store, at).await?.open;
    let recent_failures = sqlx::query_as::<_, KindCount>(
        "SELECT kind, CAST(COUNT(*) AS BIGINT) AS n FROM audit_log \
         WHERE at >= $1 AND kind IN ('issuance.refused', 'issuance.failed', 'issuance.abandoned', 'ra.caa.refused') \
         GROUP BY kind ORDER BY kind",
    )
    .bind(at - 86_400)
    .fetch_all(store.pool())
    .await?
    .into_iter()
    .map(|r| (r.kind, r.n))
    .collect();
    Ok(OpsView {
        certificates,
        ocsp_pending: backlog.pending,
        ocsp_oldest_waiting: backlog.oldest_queued.map(|q| at - q),
        ocsp_overdue: backlog.overdue,
        crls,
        crl_files_behind: auth.crl_files_behind(),
        clock: auth
            .clock()
            .status()
            .map(|c| (c.reference.to_string(), c.skew_ms, c.fault)),
        hsm: auth.hsm_check().await.map_err(|e| e.to_string()),
        applications_open,
        problem_reports_open,
        recent_failures,
    })
}

/// Publishes every CRL of the issuing CAs (full and partitions) now; returns how many. Audited as the operator's
/// action (each publication is audited too).
pub async fn publish_all_crls(auth: &Authority, staff: &StaffSession) -> Result<usize> {
    staff.authorize(Action::RunOperations)?;
    // At most once a minute (each run signs every CRL of both issuing CAs): repeated clicks
    // load the HSM and grow the database and the audit trail for nothing.
    {
        use std::sync::{Mutex, OnceLock};
        static LAST: OnceLock<Mutex<Option<std::time::Instant>>> = OnceLock::new();
        let mut last = LAST
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(60)) {
            return Err(crate::error::Error::TooManyAttempts(
                "the CRLs were published on request less than a minute ago".into(),
            ));
        }
        *last = Some(std::time::Instant::now());
    }
    let actor = format!("staff:{}", staff.username);
    let mut n = 0;
    // The issuing CAs' CRLs, every scope (as `ecert crl publish`); the root's is a ceremony.
    for role in auth.publishing_cas() {
        for scope in auth.crl_scopes(role).await? {
            auth.publish_crl(role, scope, &actor).await?;
            n += 1;
        }
    }
    auth.store()
        .audit_now(&Event {
            kind: "ops.crls_published",
            actor,
            subject: None,
            detail: json!({ "crls": n }),
        })
        .await?;
    Ok(n)
}

/// Signs the OCSP responses that are due now (queued changes first), one batch; returns how
/// many serials were signed.
pub async fn sign_ocsp_now(auth: &Authority, staff: &StaffSession) -> Result<usize> {
    staff.authorize(Action::RunOperations)?;
    let due = auth.ocsp_due(512).await?;
    let n = if due.is_empty() {
        0
    } else {
        auth.sign_ocsp(due).await?
    };
    auth.store()
        .audit_now(&Event {
            kind: "ops.ocsp_signed",
            actor: format!("staff:{}", staff.username),
            subject: None,
            detail: json!({ "serials": n }),
        })
        .await?;
    Ok(n)
}

/// Whether this process holds the personal-data keys, and why not (the data owner's page).
pub fn personal_data_status(auth: &Authority, staff: &StaffSession) -> Result<Option<String>> {
    staff.authorize(Action::ActivatePersonalDataKeys)?;
    Ok(auth.personal_data_problem())
}

/// The data owner activates the personal-data keys in this process with the `pii` token's
/// PIN (issue 14, custody; see [`crate::custody`]). Audited (`pii.activated`, or
/// `pii.activation_refused`), never with the PIN.
pub async fn activate_personal_data(
    auth: &Authority,
    staff: &StaffSession,
    pin: &str,
) -> Result<()> {
    staff.authorize(Action::ActivatePersonalDataKeys)?;
    auth.activate_pii(pin, &format!("staff:{}", staff.username))
        .await
}
