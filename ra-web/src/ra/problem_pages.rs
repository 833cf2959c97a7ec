//! Certificate Problem Reports on the web (TLS BR and S/MIME BR §4.9.3): the public form at
//! `/report` (anyone, at any hour; CSRF-checked and rate-limited per address like the other
//! citizen forms) and the CA officers' queue at `/staff/problems`. The JSON equivalents are in
//! [`super::api`]; the rules are `ca_core::ra::problems`.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Form;
use ca_core::error::Error;
use ca_core::ra::{self, StaffSession};
use serde::Deserialize;

use super::i18n::{Lang, Texts};
use super::{
    citizen_post, csrf_page, html, staff_session, utc_minute, AppError, ClientIp, InLang, PageLang,
    Shared, StaffPost,
};

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage {
    t: &'static Texts,
    lang: Lang,
    csrf: String,
}

pub(super) async fn report_form(lang: PageLang, headers: HeaderMap) -> Result<Response, AppError> {
    csrf_page(lang, &headers, |t, lang, csrf| ReportPage { t, lang, csrf })
}

/// The public report form's fields.
#[derive(Deserialize)]
pub(super) struct ReportForm {
    csrf: String,
    kind: String,
    serial: String,
    description: String,
    reporter_email: String,
    #[serde(default)]
    proof_csr: String,
}

#[derive(Template)]
#[template(path = "reported.html")]
struct ReportedPage {
    t: &'static Texts,
    lang: Lang,
    reference: String,
    revoked: Vec<String>,
    preliminary_due: String,
}

pub(super) async fn report(
    State(s): State<Shared>,
    lang: PageLang,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(f): Form<ReportForm>,
) -> Result<Response, AppError> {
    citizen_post(&s, &headers, &f.csrf, lang.0, ip, "report", 5)?;
    let got = ra::report_problem(
        &s.auth,
        ra::NewReport {
            kind: f.kind,
            serial: f.serial,
            description: f.description,
            reporter_email: f.reporter_email,
            proof_csr: f.proof_csr.into_bytes(),
            source: ra::source_bucket(ip),
        },
    )
    .await
    .lang(lang.0)?;
    send_notices(&s, got.notices).await;
    html(
        ReportedPage {
            t: lang.0.texts(),
            lang: lang.0,
            reference: got.reference,
            revoked: got.revoked,
            preliminary_due: utc_minute(got.preliminary_due),
        },
        lang,
    )
}

/// Now, Unix seconds (the time the clocks are shown at).
pub(super) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[derive(Template)]
#[template(path = "staff_problems.html")]
struct ReportsPage {
    t: &'static Texts,
    lang: Lang,
    /// (id, reference, kind, serial, next deadline, its clock)
    rows: Vec<(String, String, String, String, String, &'static str)>,
}

pub(super) async fn staff_reports(
    State(s): State<Shared>,
    lang: PageLang,
    headers: HeaderMap,
) -> Response {
    let staff = match staff_session(&s, &headers, lang.0).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let rows = match ra::report_queue(&s.auth, &staff, now()).await {
        Ok(rows) => rows,
        Err(e) => return AppError::new(e, lang.0).into_response(),
    };
    let rows = rows
        .into_iter()
        .map(|v| {
            // The next deadline and its clock; a decided report shows its outcome.
            let (due, c) = match v.outcome.as_deref() {
                Some("revoked") => (String::new(), "revoked"),
                Some(_) => (String::new(), "rejected"),
                None if v.preliminary_at.is_none() && v.preliminary_due <= v.revocation_due => {
                    (utc_minute(v.preliminary_due), v.preliminary_clock.name())
                }
                None => (utc_minute(v.revocation_due), v.revocation_clock.name()),
            };
            (v.id, v.reference, v.kind, v.serial, due, c)
        })
        .collect();
    html(
        ReportsPage {
            t: lang.0.texts(),
            lang: lang.0,
            rows,
        },
        lang,
    )
    .unwrap_or_else(IntoResponse::into_response)
}

#[derive(Template)]
#[template(path = "staff_problem.html")]
struct ReportDetailPage {
    t: &'static Texts,
    lang: Lang,
    staff: StaffSession,
    v: ra::ReportView,
    preliminary_due: String,
    preliminary_clock: &'static str,
    revocation_due: String,
    revocation_clock: &'static str,
    message: String,
}

async fn render(
    s: &Shared,
    lang: PageLang,
    staff: StaffSession,
    id: &str,
    message: String,
) -> Response {
    let v = match ra::report(&s.auth, &staff, id, now()).await {
        Ok(v) => v,
        Err(e) => return AppError::new(e, lang.0).into_response(),
    };
    html(
        ReportDetailPage {
            t: lang.0.texts(),
            lang: lang.0,
            preliminary_due: utc_minute(v.preliminary_due),
            preliminary_clock: v.preliminary_clock.name(),
            revocation_due: utc_minute(v.revocation_due),
            revocation_clock: v.revocation_clock.name(),
            staff,
            v,
            message,
        },
        lang,
    )
    .unwrap_or_else(IntoResponse::into_response)
}

pub(super) async fn staff_report(
    State(s): State<Shared>,
    lang: PageLang,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match staff_session(&s, &headers, lang.0).await {
        Ok(staff) => render(&s, lang, staff, &id, String::new()).await,
        Err(r) => r,
    }
}

pub(super) async fn staff_preliminary(
    State(s): State<Shared>,
    Path(id): Path<String>,
    p: StaffPost,
) -> Response {
    match ra::report_preliminary(&s.auth, &p.staff, &id, &p.f.findings).await {
        Ok(notices) => {
            send_notices(&s, notices).await;
            let done = p.lang.0.texts().done.to_string();
            render(&s, p.lang, p.staff, &id, done).await
        }
        Err(e) => AppError::new(e, p.lang.0).into_response(),
    }
}

pub(super) async fn staff_decide(
    State(s): State<Shared>,
    Path(id): Path<String>,
    p: StaffPost,
) -> Response {
    let outcome = match p.f.decision.as_str() {
        "revoke" => match ca_core::revocation::Reason::parse(&p.f.reason) {
            Ok(r) => ra::ReportOutcome::Revoke(r),
            Err(e) => {
                let e = Error::Invalid {
                    field: "reason",
                    reason: e.to_string(),
                };
                return AppError::new(e, p.lang.0).into_response();
            }
        },
        "reject" => ra::ReportOutcome::Reject,
        _ => {
            return AppError::new(
                Error::Invalid {
                    field: "decision",
                    reason: "revoke or reject".into(),
                },
                p.lang.0,
            )
            .into_response()
        }
    };
    match ra::report_decide(&s.auth, &p.staff, &id, outcome, &p.f.note).await {
        Ok((_, notices)) => {
            send_notices(&s, notices).await;
            let done = p.lang.0.texts().done.to_string();
            render(&s, p.lang, p.staff, &id, done).await
        }
        Err(e) => AppError::new(e, p.lang.0).into_response(),
    }
}

/// Sends a report's mails; a failure is logged (the report stands), without the mailbox.
pub(super) async fn send_notices(s: &super::RaState, notices: Vec<ra::Notice>) {
    for n in notices {
        if let Err(e) = s.mailer.send(&n.to, &n.subject, &n.body).await {
            tracing::error!(error = %e, subject = n.subject, "could not send a problem-report mail");
        }
    }
}
