//! Decisions two officers take together (`/staff/officer`, issue 14): propose a mass
//! revocation, a key block or an issuing CA's revocation; another officer confirms it
//! (ca_core::ra::officer).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use ca_core::ra;
use serde::Deserialize;

use super::i18n::{Lang, Texts};
use super::{
    html, rfc3339, staff_session, AppError, CsrfField, PageLang, Shared, SignedInForm, StaffPost,
};

#[derive(Template)]
#[template(path = "staff_officer.html")]
struct OfficerPage {
    t: &'static Texts,
    lang: Lang,
    csrf: String,
    me: String,
    proposals: Vec<ra::ProposalView>,
    message: String,
}

impl OfficerPage {
    fn when(&self, t: &i64) -> String {
        rfc3339(*t)
    }
}

async fn render(s: &Shared, lang: PageLang, staff: &ra::StaffSession, message: String) -> Response {
    match ra::officer::proposals(&s.auth, staff).await {
        Ok(proposals) => html(
            OfficerPage {
                t: lang.0.texts(),
                lang: lang.0,
                csrf: staff.csrf.clone(),
                me: staff.username.clone(),
                proposals,
                message,
            },
            lang,
        )
        .unwrap_or_else(IntoResponse::into_response),
        Err(e) => AppError::new(e, lang.0).into_response(),
    }
}

/// `GET /staff/officer`.
pub(super) async fn officer_page(
    State(s): State<Shared>,
    lang: PageLang,
    headers: HeaderMap,
) -> Response {
    match staff_session(&s, &headers, lang.0).await {
        Ok(staff) => render(&s, lang, &staff, String::new()).await,
        Err(r) => r,
    }
}

/// The proposal form (one form per kind; unused fields empty).
#[derive(Deserialize)]
pub struct ProposeForm {
    csrf: String,
    kind: String,
    #[serde(default)]
    reason: String,
    /// Serials, one per line or separated by spaces or commas.
    #[serde(default)]
    serials: String,
    #[serde(default)]
    profile: String,
    #[serde(default)]
    serial: String,
    #[serde(default)]
    public_key: String,
    #[serde(default)]
    ca: String,
}

impl CsrfField for ProposeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// `POST /staff/officer/propose`.
pub(super) async fn propose(State(s): State<Shared>, p: SignedInForm<ProposeForm>) -> Response {
    let SignedInForm { staff, lang, f } = p;
    let r = ra::ProposalRequest {
        kind: f.kind,
        reason: f.reason.trim().to_string(),
        serials: f
            .serials
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect(),
        profile: some(&f.profile),
        issued_after: None,
        issued_before: None,
        serial: some(&f.serial),
        public_key: some(&f.public_key),
        ca: some(&f.ca),
        // Batches and standing authorisations are proposed through the API and the command
        // line (docs/BULK.md).
        batch: None,
        organisation: None,
        max_rows: None,
        days: None,
    };
    match ra::officer::propose(&s.auth, &staff, &r).await {
        Ok(v) => render(&s, lang, &staff, v.summary).await,
        Err(e) => AppError::new(e, lang.0).into_response(),
    }
}

/// `POST /staff/officer/{id}/confirm`.
pub(super) async fn confirm(
    State(s): State<Shared>,
    Path(id): Path<String>,
    p: StaffPost,
) -> Response {
    match ra::officer::confirm(&s.auth, &p.staff, &id).await {
        Ok(v) => {
            let m = v.outcome.unwrap_or_default();
            render(&s, p.lang, &p.staff, m).await
        }
        Err(e) => AppError::new(e, p.lang.0).into_response(),
    }
}

/// `POST /staff/officer/{id}/withdraw`.
pub(super) async fn withdraw(
    State(s): State<Shared>,
    Path(id): Path<String>,
    p: StaffPost,
) -> Response {
    match ra::officer::withdraw(&s.auth, &p.staff, &id).await {
        Ok(v) => render(&s, p.lang, &p.staff, format!("{}: {}", v.summary, v.state)).await,
        Err(e) => AppError::new(e, p.lang.0).into_response(),
    }
}
