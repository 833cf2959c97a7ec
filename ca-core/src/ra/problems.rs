//! Certificate Problem Reports (TLS BR and S/MIME BR §4.9.3, §4.9.5; §1.5.2 names where they
//! go): anyone — a relying party, a subscriber, a researcher — may report at any hour that a
//! certificate's key is compromised, that it was misissued or is misused, or another problem.
//!
//! - **Intake** ([`report_problem`]): public (page and API, rate-limited per address by the
//!   web layer), the certificate named by its serial, a description and the reporter's mailbox
//!   (sealed: personal data). A key-compromise report may carry proof: a CSR signed by the
//!   certificate's private key whose subject is `CN=key compromise <serial>`
//!   ([`crate::csr::compromise_proof`]: a CSR made for anything else, such as the subscriber's
//!   issuance CSR, proves nothing). With verified proof the CA acts at once (as the BR's 24 hours
//!   allow no waiting for office hours): every certificate with the key is revoked for
//!   keyCompromise and the key is blocked ([`crate::revocation::Evidence::Verified`]); the report
//!   is closed with the outcome and the acknowledgement is its preliminary report.
//! - **Clocks** ([`super::rules::report_deadlines`]): a preliminary report to the reporter and
//!   the subscriber within 24 hours; revocation within 24 hours for key compromise and 5 days for
//!   the rest. [`report_clocks`] counts what is nearing or overdue, for `/healthz` (a fault)
//!   and `/metrics`.
//! - **Officers** (role `officer`): the queue with each report's time left
//!   ([`report_queue`]), the preliminary findings sent to both parties
//!   ([`report_preliminary`]), and the outcome — revoke, or reject with a reason
//!   ([`report_decide`]). Every step is audited (`ra.problem_report.*`, no personal data).

use serde_json::json;

use super::permissions::Action;
use super::record::not_open;
use super::rules::{clock, report_deadlines, Clock};
use super::session::StaffSession;
use super::support::{check_len, invalid, now, random_base32};
use crate::audit::Event;
use crate::authority::Authority;
use crate::error::{Error, Result};
use crate::pii::Field;
use crate::revocation::{Evidence, Reason};
use crate::row::row;
use crate::serial::SerialNumber;
use crate::store::{CertState, Store};

/// What a report says is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The private key is compromised (TLS BR §4.9.1.1 (3)).
    KeyCompromise,
    /// The certificate was not issued as the BRs and the CPS require.
    Misissuance,
    /// The certificate is used for fraud or against its terms.
    Misuse,
    /// Anything else.
    Other,
}

impl ProblemKind {
    /// The form/API value.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::KeyCompromise => "key_compromise",
            ProblemKind::Misissuance => "misissuance",
            ProblemKind::Misuse => "misuse",
            ProblemKind::Other => "other",
        }
    }

    /// Parses a form/API value.
    pub fn parse(s: &str) -> Result<ProblemKind> {
        Ok(match s.trim() {
            "key_compromise" => ProblemKind::KeyCompromise,
            "misissuance" => ProblemKind::Misissuance,
            "misuse" => ProblemKind::Misuse,
            "other" => ProblemKind::Other,
            _ => {
                return Err(invalid(
                    "kind",
                    "key_compromise, misissuance, misuse or other",
                ))
            }
        })
    }
}

/// A report as the public form or API gives it.
#[derive(Clone, Default)]
pub struct NewReport {
    /// `key_compromise`, `misissuance`, `misuse` or `other`.
    pub kind: String,
    /// The certificate's serial number, hex (colons and spaces allowed).
    pub serial: String,
    /// What is wrong.
    pub description: String,
    /// Where to send the acknowledgement and the preliminary report.
    pub reporter_email: String,
    /// Optional proof of a key compromise: a CSR (PEM or DER) signed by the certificate's key.
    pub proof_csr: Vec<u8>,
    /// The client's address (for the per-address rate limit; kept with the report).
    pub source: String,
}

// The reporter's mailbox and words: `Debug` names the type only.
impl std::fmt::Debug for NewReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewReport { .. }")
    }
}

/// A mail the web layer sends.
#[derive(Clone)]
pub struct Notice {
    /// The mailbox.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Body.
    pub body: String,
}

// A mailbox: `Debug` names the subject only.
impl std::fmt::Debug for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notice")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// What the intake tells the reporter, and what to mail.
#[derive(Debug)]
pub struct ReportReceived {
    /// Internal id.
    pub id: String,
    /// The reference quoted in every mail.
    pub reference: String,
    /// The serials revoked at once (verified proof of key compromise).
    pub revoked: Vec<String>,
    /// When the preliminary report is due (Unix seconds).
    pub preliminary_due: i64,
    /// When the revocation is due.
    pub revocation_due: i64,
    /// The acknowledgement (and, with verified proof, the subscriber's revocation notice).
    pub notices: Vec<Notice>,
}

/// The most reports one client address may file in an hour (the web layer's limit is per
/// minute; this one holds across restarts and instances).
pub const REPORTS_PER_SOURCE_HOUR: i64 = 20;

/// Files a Certificate Problem Report (see the module documentation).
pub async fn report_problem(auth: &Authority, r: NewReport) -> Result<ReportReceived> {
    let store = auth.store();
    let vault = auth.staff_keys();
    let kind = ProblemKind::parse(&r.kind)?;
    check_len("description", &r.description, 1, 4000)?;
    let email = r.reporter_email.trim();
    check_len("reporter_email", email, 3, 254)?;
    if !email.contains('@') || email.chars().any(char::is_whitespace) {
        return Err(invalid("reporter_email", "an e-mail address"));
    }
    let serial_hex: String = r
        .serial
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_ascii_lowercase();
    let serial = SerialNumber::from_hex(&serial_hex).ok_or_else(|| {
        invalid(
            "serial",
            "the certificate's serial number in hexadecimal (as `openssl x509 -serial` prints it)",
        )
    })?;
    let hex = serial.to_hex();
    let cert = store
        .certificate(&hex)
        .await?
        .filter(|c| c.state == CertState::Issued && c.cert_der.is_some())
        .ok_or_else(|| {
            invalid(
                "serial",
                "no certificate with this serial was issued by this CA",
            )
        })?;
    let t = now();
    let recent: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM problem_reports WHERE source = $1 AND received_at > $2")
            .bind(&r.source)
            .bind(t - 3600)
            .fetch_one(store.pool())
            .await?,
        0,
    );
    if recent >= REPORTS_PER_SOURCE_HOUR {
        return Err(Error::TooManyAttempts(
            "too many reports from this address in the last hour: try again later, or write to the CA"
                .into(),
        ));
    }
    // Proof of a key compromise: a CSR whose signature verifies (possession) over the
    // certificate's own key.
    let proof_verified = if r.proof_csr.is_empty() {
        false
    } else {
        if kind != ProblemKind::KeyCompromise {
            return Err(invalid(
                "proof_csr",
                "a proof is for a key-compromise report",
            ));
        }
        let key_fp = crate::csr::compromise_proof(&r.proof_csr, &hex)
            .map_err(|e| invalid_owned("proof_csr", e))?;
        if key_fp.as_slice() != cert.key_fp.as_slice() {
            return Err(invalid(
                "proof_csr",
                "the CSR is signed by another key than the certificate's",
            ));
        }
        true
    };
    let (preliminary_due, revocation_due) = report_deadlines(kind == ProblemKind::KeyCompromise, t);
    let id = uuid::Uuid::new_v4().to_string();
    let reference = format!("PR-{}", &random_base32(5)[..8]);
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO problem_reports (id, reference, kind, serial, reporter_sealed, description_sealed, proof_verified, \
         source, received_at, preliminary_due, revocation_due) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id)
    .bind(&reference)
    .bind(kind.name())
    .bind(&hex)
    .bind(vault.seal(Field::Reporter, &id, email)?)
    .bind(vault.seal(Field::ReportText, &id, r.description.trim())?)
    .bind(i64::from(proof_verified))
    .bind(&r.source)
    .bind(t)
    .bind(preliminary_due)
    .bind(revocation_due)
    .execute(&mut *tx)
    .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.problem_report.received",
                actor: format!("reporter:{reference}"),
                subject: Some(hex.clone()),
                detail: json!({ "report": id, "reference": reference, "kind": kind.name(), "proof_verified": proof_verified, "preliminary_due": preliminary_due, "revocation_due": revocation_due }),
            },
        )
        .await?;
    tx.commit().await?;

    let mut revoked = Vec::new();
    let mut notices = vec![];
    if proof_verified {
        let outcome = auth
            .revoke_as(
                serial,
                Reason::KeyCompromise,
                &format!("reporter:{reference}"),
                Evidence::Verified,
            )
            .await;
        match outcome {
            Ok(list) => revoked = list.into_iter().map(|(s, _)| s).collect(),
            Err(Error::AlreadyRevoked { .. }) => {}
            Err(e) => return Err(e),
        }
        close(
            store,
            &id,
            "system:verified-proof",
            "revoked",
            "the report proved possession of the private key: every certificate with the key was revoked (keyCompromise) and the key is blocked",
            true,
        )
        .await?;
        for s in &revoked {
            notices.extend(
                subscriber_notice(
                    store,
                    s,
                    &format!("e-Cert {s} revoked: its key was reported compromised"),
                    &format!(
                    "Your certificate with serial {s} has been revoked (keyCompromise): a report \
                     ({reference}) proved that its private key is known to someone else. Its key \
                     can no longer be certified. Apply for a new certificate with a new key."
                ),
                )
                .await?,
            );
        }
    }
    notices.push(Notice {
        to: email.to_string(),
        subject: format!("Certificate problem report {reference} received"),
        body: if proof_verified {
            format!(
                "Your report {reference} about certificate {hex} was received. The proof you \
                 sent (a CSR signed by the certificate's key) verified: the certificate and \
                 every other one with that key have been revoked for key compromise, and the \
                 key is blocked. This is the CA's report on its findings; nothing more is \
                 needed from you."
            )
        } else {
            format!(
                "Your report {reference} about certificate {hex} ({}) was received. The CA will \
                 send you and the subscriber a preliminary report on its findings within 24 \
                 hours, and will decide on revocation within {}.",
                kind.name().replace('_', " "),
                if kind == ProblemKind::KeyCompromise {
                    "24 hours"
                } else {
                    "5 days"
                }
            )
        },
    });
    Ok(ReportReceived {
        id,
        reference,
        revoked,
        preliminary_due,
        revocation_due,
        notices,
    })
}

fn invalid_owned(field: &'static str, e: Error) -> Error {
    Error::Invalid {
        field,
        reason: e.to_string(),
    }
}

/// The subscriber's mail about their certificate, when the RA knows their mailbox (every
/// certificate issued through an application; one issued by the former `ecert issue` has none).
async fn subscriber_notice(
    store: &Store,
    serial: &str,
    subject: &str,
    body: &str,
) -> Result<Option<Notice>> {
    let email: Option<String> =
        sqlx::query("SELECT email FROM applications WHERE certificate = $1 LIMIT 1")
            .bind(serial)
            .fetch_optional(store.pool())
            .await
            .ok()
            .flatten()
            .map(|r| sqlx::Row::get(&r, 0));
    Ok(email.filter(|e: &String| !e.is_empty()).map(|to| Notice {
        to,
        subject: subject.to_string(),
        body: body.to_string(),
    }))
}

/// Records the outcome (and, if `with_preliminary`, the preliminary report) of an open report.
async fn close(
    store: &Store,
    id: &str,
    by: &str,
    outcome: &str,
    note: &str,
    with_preliminary: bool,
) -> Result<()> {
    let t = now();
    let mut tx = store.begin().await?;
    let res = sqlx::query(
        "UPDATE problem_reports SET decided_at = $2, decided_by = $3, outcome = $4, outcome_note = $5, \
         preliminary_at = CASE WHEN $6 = 1 THEN COALESCE(preliminary_at, $2) ELSE preliminary_at END, \
         preliminary_by = CASE WHEN $6 = 1 THEN COALESCE(preliminary_by, $3) ELSE preliminary_by END, \
         findings = CASE WHEN $6 = 1 THEN COALESCE(findings, $5) ELSE findings END \
         WHERE id = $1 AND decided_at IS NULL",
    )
    .bind(id)
    .bind(t)
    .bind(by)
    .bind(outcome)
    .bind(note)
    .bind(i64::from(with_preliminary))
    .execute(&mut *tx)
    .await?;
    if res.rows_affected() != 1 {
        return Err(not_open());
    }
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.problem_report.decided",
                actor: by.to_string(),
                subject: Some(id.to_string()),
                detail: json!({ "outcome": outcome, "note": note }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Reopens a report whose claimed revocation failed (audited).
async fn reopen(store: &Store, id: &str, by: &str, why: &Error) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query(
        "UPDATE problem_reports SET decided_at = NULL, decided_by = NULL, outcome = NULL, outcome_note = NULL \
         WHERE id = $1 AND decided_by = $2",
    )
    .bind(id)
    .bind(by)
    .execute(&mut *tx)
    .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.problem_report.reopened",
                actor: by.to_string(),
                subject: Some(id.to_string()),
                detail: json!({ "why": why.to_string() }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

row! {
    struct ReportRow {
        id: String,
        reference: String,
        kind: String,
        serial: String,
        reporter_sealed: Vec<u8>,
        description_sealed: Vec<u8>,
        proof_verified: i64,
        received_at: i64,
        preliminary_due: i64,
        revocation_due: i64,
        preliminary_at: Option<i64>,
        findings: Option<String>,
        decided_at: Option<i64>,
        outcome: Option<String>,
        outcome_note: Option<String>,
    }
}

const REPORT_COLUMNS: &str = "id, reference, kind, serial, reporter_sealed, description_sealed, proof_verified, received_at, \
     preliminary_due, revocation_due, preliminary_at, findings, decided_at, outcome, outcome_note";

/// A report as an officer sees it.
#[derive(Clone)]
pub struct ReportView {
    /// Internal id.
    pub id: String,
    /// The reporter's reference.
    pub reference: String,
    /// What is wrong.
    pub kind: String,
    /// The certificate.
    pub serial: String,
    /// The reporter's mailbox (unsealed for the officer).
    pub reporter_email: String,
    /// The description (unsealed for the officer).
    pub description: String,
    /// A CSR signed by the certificate's key came with it.
    pub proof_verified: bool,
    /// When it arrived.
    pub received_at: i64,
    /// Preliminary report due, and sent.
    pub preliminary_due: i64,
    /// When the preliminary report was sent.
    pub preliminary_at: Option<i64>,
    /// The findings sent.
    pub findings: Option<String>,
    /// Revocation decision due.
    pub revocation_due: i64,
    /// When it was decided.
    pub decided_at: Option<i64>,
    /// `revoked` or `rejected`.
    pub outcome: Option<String>,
    /// Why.
    pub outcome_note: Option<String>,
    /// The preliminary report's clock at the time asked.
    pub preliminary_clock: Clock,
    /// The revocation clock at the time asked.
    pub revocation_clock: Clock,
}

// The reporter's mailbox and words: `Debug` names the report only.
impl std::fmt::Debug for ReportView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportView")
            .field("id", &self.id)
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

/// The per-address bucket a report's source is counted in: an IPv4 address, or an IPv6 /64
/// (one subscriber line has a whole /64 to rotate through).
pub fn source_bucket(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

fn view(auth: &Authority, r: ReportRow, at: i64) -> Result<ReportView> {
    let vault = auth.staff_keys();
    Ok(ReportView {
        reporter_email: vault
            .open_field(Field::Reporter, &r.id, &r.reporter_sealed)?
            .to_string(),
        description: vault
            .open_field(Field::ReportText, &r.id, &r.description_sealed)?
            .to_string(),
        preliminary_clock: clock(r.preliminary_due, r.preliminary_at, at),
        revocation_clock: clock(r.revocation_due, r.decided_at, at),
        id: r.id,
        reference: r.reference,
        kind: r.kind,
        serial: r.serial,
        proof_verified: r.proof_verified != 0,
        received_at: r.received_at,
        preliminary_due: r.preliminary_due,
        preliminary_at: r.preliminary_at,
        findings: r.findings,
        revocation_due: r.revocation_due,
        decided_at: r.decided_at,
        outcome: r.outcome,
        outcome_note: r.outcome_note,
    })
}

/// The officers' queue at `at`: open reports, the most urgent first, then the last 50 closed.
pub async fn report_queue(
    auth: &Authority,
    staff: &StaffSession,
    at: i64,
) -> Result<Vec<ReportView>> {
    staff.authorize(Action::ViewProblemReports)?;
    let open = sqlx::query_as::<_, ReportRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {REPORT_COLUMNS} FROM problem_reports WHERE decided_at IS NULL ORDER BY \
         CASE WHEN preliminary_at IS NULL AND preliminary_due < revocation_due \
         THEN preliminary_due ELSE revocation_due END LIMIT 500"
    )));
    let mut rows = open.fetch_all(auth.store().pool()).await?;
    rows.extend(
        sqlx::query_as::<_, ReportRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {REPORT_COLUMNS} FROM problem_reports WHERE decided_at IS NOT NULL \
             ORDER BY decided_at DESC LIMIT 50"
        )))
        .fetch_all(auth.store().pool())
        .await?,
    );
    rows.into_iter().map(|r| view(auth, r, at)).collect()
}

/// One report, for an officer.
pub async fn report(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
    at: i64,
) -> Result<ReportView> {
    staff.authorize(Action::ViewProblemReports)?;
    let r = sqlx::query_as::<_, ReportRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {REPORT_COLUMNS} FROM problem_reports WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(auth.store().pool())
    .await?
    .ok_or(Error::NotFound)?;
    view(auth, r, at)
}

/// Records the preliminary report on the findings (TLS BR §4.9.5) and returns the mails to
/// the reporter and the subscriber. Once only.
pub async fn report_preliminary(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
    findings: &str,
) -> Result<Vec<Notice>> {
    staff.authorize(Action::AnswerProblemReports)?;
    check_len("findings", findings, 5, 4000)?;
    let r = report(auth, staff, id, now()).await?;
    let t = now();
    let mut tx = auth.store().begin().await?;
    let res = sqlx::query(
        "UPDATE problem_reports SET preliminary_at = $2, preliminary_by = $3, findings = $4 \
         WHERE id = $1 AND preliminary_at IS NULL AND decided_at IS NULL",
    )
    .bind(id)
    .bind(t)
    .bind(&staff.staff)
    .bind(findings.trim())
    .execute(&mut *tx)
    .await?;
    if res.rows_affected() != 1 {
        return Err(Error::Conflict(
            "the preliminary report was sent already, or the report is decided".into(),
        ));
    }
    auth.store()
        .audit(
            &mut tx,
            &Event {
                kind: "ra.problem_report.preliminary",
                actor: format!("staff:{}", staff.username),
                subject: Some(id.to_string()),
                detail: json!({ "reference": r.reference, "serial": r.serial, "on_time": t <= r.preliminary_due }),
            },
        )
        .await?;
    tx.commit().await?;
    let body = format!(
        "Preliminary report on certificate problem report {} about certificate {}:\n\n{}\n",
        r.reference,
        r.serial,
        findings.trim()
    );
    let subject = format!(
        "Certificate problem report {}: preliminary report",
        r.reference
    );
    let mut out = vec![Notice {
        to: r.reporter_email,
        subject: subject.clone(),
        body: body.clone(),
    }];
    out.extend(subscriber_notice(auth.store(), &r.serial, &subject, &body).await?);
    Ok(out)
}

/// An officer's outcome of a report.
#[derive(Debug, Clone, Copy)]
pub enum ReportOutcome {
    /// Revoke the certificate for this reason (keyCompromise confirmed by the officer blocks the
    /// key and revokes every certificate with it).
    Revoke(Reason),
    /// No revocation.
    Reject,
}

/// Decides an open report: revokes, or rejects with the reason in `note`. Returns the serials
/// revoked and the mails (the outcome to the reporter and, for a revocation, the subscriber).
pub async fn report_decide(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
    outcome: ReportOutcome,
    note: &str,
) -> Result<(Vec<String>, Vec<Notice>)> {
    staff.authorize(Action::AnswerProblemReports)?;
    check_len("note", note, 5, 2000)?;
    let r = report(auth, staff, id, now()).await?;
    if r.decided_at.is_some() {
        return Err(Error::Conflict("the report was decided already".into()));
    }
    let actor = format!("staff:{}", staff.username);
    let (word, reason) = match outcome {
        ReportOutcome::Revoke(reason) => {
            if matches!(reason, Reason::CertificateHold | Reason::Unspecified) {
                return Err(invalid(
                    "reason",
                    "a problem report ends in a revocation with its reason, not a hold",
                ));
            }
            ("revoked", Some(reason))
        }
        ReportOutcome::Reject => ("rejected", None),
    };
    // The decision is claimed first: of two officers deciding at once, one is told the report
    // is decided and nothing of theirs is done.
    close(auth.store(), id, &actor, word, note.trim(), false)
        .await
        .map_err(|e| match e {
            Error::Conflict(_) => Error::Conflict("the report was decided already".into()),
            other => other,
        })?;
    let mut revoked = Vec::new();
    if let Some(reason) = reason {
        let serial = SerialNumber::from_hex(&r.serial).ok_or(Error::NotFound)?;
        match auth
            .revoke_as(serial, reason, &actor, Evidence::Verified)
            .await
        {
            Ok(list) => revoked = list.into_iter().map(|(s, _)| s).collect(),
            Err(Error::AlreadyRevoked { .. }) => {}
            Err(e) => {
                // Not revoked: the report is open again for another try.
                reopen(auth.store(), id, &actor, &e).await?;
                return Err(e);
            }
        }
    }
    let subject = format!("Certificate problem report {}: {word}", r.reference);
    let body = format!(
        "Certificate problem report {} about certificate {}: {word}.\n\n{}\n",
        r.reference,
        r.serial,
        note.trim()
    );
    let mut notices = vec![Notice {
        to: r.reporter_email,
        subject: subject.clone(),
        body: body.clone(),
    }];
    if word == "revoked" {
        for s in &revoked {
            notices.extend(subscriber_notice(auth.store(), s, &subject, &body).await?);
        }
    }
    Ok((revoked, notices))
}

/// How the open reports' clocks stand at `at` (for `/healthz` and `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportClocks {
    /// Reports not yet decided.
    pub open: i64,
    /// Preliminary reports due within [`super::rules::REPORT_NEARING_SECS`].
    pub preliminary_nearing: i64,
    /// Preliminary reports past due.
    pub preliminary_overdue: i64,
    /// Revocation decisions due within [`super::rules::REPORT_NEARING_SECS`].
    pub revocation_nearing: i64,
    /// Revocation decisions past due.
    pub revocation_overdue: i64,
}

row! {
    struct ClockRow {
        open: i64,
        preliminary_nearing: i64,
        preliminary_overdue: i64,
        revocation_nearing: i64,
        revocation_overdue: i64,
    }
}

/// Counts the open reports' clocks at `at`, in one aggregate query (the health probe runs it
/// every few seconds, however many reports are open). The same rule as
/// [`super::rules::clock`]: overdue once past due, nearing within
/// [`super::rules::REPORT_NEARING_SECS`].
pub async fn report_clocks(store: &Store, at: i64) -> Result<ReportClocks> {
    let r = sqlx::query_as::<_, ClockRow>(
        "SELECT CAST(COUNT(*) AS BIGINT) AS open, \
         CAST(COALESCE(SUM(CASE WHEN preliminary_at IS NULL AND preliminary_due >= $1 AND preliminary_due - $1 <= $2 THEN 1 ELSE 0 END), 0) AS BIGINT) AS preliminary_nearing, \
         CAST(COALESCE(SUM(CASE WHEN preliminary_at IS NULL AND preliminary_due < $1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS preliminary_overdue, \
         CAST(COALESCE(SUM(CASE WHEN revocation_due >= $1 AND revocation_due - $1 <= $2 THEN 1 ELSE 0 END), 0) AS BIGINT) AS revocation_nearing, \
         CAST(COALESCE(SUM(CASE WHEN revocation_due < $1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS revocation_overdue \
         FROM problem_reports WHERE decided_at IS NULL",
    )
    .bind(at)
    .bind(super::rules::REPORT_NEARING_SECS)
    .fetch_one(store.pool())
    .await?;
    Ok(ReportClocks {
        open: r.open,
        preliminary_nearing: r.preliminary_nearing,
        preliminary_overdue: r.preliminary_overdue,
        revocation_nearing: r.revocation_nearing,
        revocation_overdue: r.revocation_overdue,
    })
}
