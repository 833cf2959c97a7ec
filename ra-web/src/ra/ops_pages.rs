//! The operator's page (`/staff/ops`) and its triggers: health, status publication, queues and
//! counts, never a personal field (ca_core::ra::operations).

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use ca_core::ra;

use super::i18n::{Lang, Texts};
use super::{html, rfc3339, staff_session, AppError, PageLang, Shared, StaffPost};

#[derive(Template)]
#[template(path = "staff_ops.html")]
struct OpsPage {
    t: &'static Texts,
    lang: Lang,
    csrf: String,
    v: ra::OpsView,
    hsm: String,
    clock: String,
    message: String,
}

impl OpsPage {
    fn crl_rows(&self) -> Vec<(String, i64, String, String)> {
        self.v
            .crls
            .iter()
            .map(|(f, n, t, nu)| (f.clone(), *n, rfc3339(*t), rfc3339(*nu)))
            .collect()
    }
}

async fn render(s: &Shared, lang: PageLang, staff: &ra::StaffSession, message: String) -> Response {
    let v = match ra::operations(&s.auth, staff).await {
        Ok(v) => v,
        Err(e) => return AppError::new(e, lang.0).into_response(),
    };
    let hsm = match &v.hsm {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("fault: {e}"),
    };
    let clock = match &v.clock {
        None => "unchecked".to_string(),
        Some((reference, skew, fault)) => match fault {
            Some(f) => format!("fault ({reference}): {f}"),
            None => format!(
                "ok ({reference}{})",
                skew.map(|ms| format!(", {:.1} s", ms as f64 / 1000.0))
                    .unwrap_or_default()
            ),
        },
    };
    html(
        OpsPage {
            t: lang.0.texts(),
            lang: lang.0,
            csrf: staff.csrf.clone(),
            v,
            hsm,
            clock,
            message,
        },
        lang,
    )
    .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /staff/ops`.
pub(super) async fn staff_ops(
    State(s): State<Shared>,
    lang: PageLang,
    headers: HeaderMap,
) -> Response {
    let staff = match staff_session(&s, &headers, lang.0).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    render(&s, lang, &staff, String::new()).await
}

/// `POST /staff/ops/publish-crls`: every issuing CA's CRL, now.
pub(super) async fn staff_publish_crls(State(s): State<Shared>, p: StaffPost) -> Response {
    match ra::publish_all_crls(&s.auth, &p.staff).await {
        Ok(n) => render(&s, p.lang, &p.staff, format!("{n} CRLs published")).await,
        Err(e) => AppError::new(e, p.lang.0).into_response(),
    }
}

/// `POST /staff/ops/sign-ocsp`: the OCSP responses that are due, now.
pub(super) async fn staff_sign_ocsp(State(s): State<Shared>, p: StaffPost) -> Response {
    match ra::sign_ocsp_now(&s.auth, &p.staff).await {
        Ok(n) => render(&s, p.lang, &p.staff, format!("{n} OCSP responses signed")).await,
        Err(e) => AppError::new(e, p.lang.0).into_response(),
    }
}
