//! The data owner's page (`/staff/personal-data`): whether this instance holds the
//! personal-data keys, and their activation with the `pii` token's PIN (issue 14, custody;
//! ca_core::custody). The JSON API's `POST /api/v1/personal-data/activate` does the same.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use ca_core::ra;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::i18n::{Lang, Texts};
use super::{html, staff_session, AppError, CsrfField, PageLang, Shared, SignedInForm};

#[derive(Template)]
#[template(path = "staff_personal_data.html")]
struct PersonalDataPage {
    t: &'static Texts,
    lang: Lang,
    csrf: String,
    /// `None` when activated.
    problem: Option<String>,
    message: String,
}

fn render(s: &Shared, lang: PageLang, staff: &ra::StaffSession, message: String) -> Response {
    match ra::personal_data_status(&s.auth, staff) {
        Ok(problem) => html(
            PersonalDataPage {
                t: lang.0.texts(),
                lang: lang.0,
                csrf: staff.csrf.clone(),
                problem,
                message,
            },
            lang,
        )
        .unwrap_or_else(IntoResponse::into_response),
        Err(e) => AppError::new(e, lang.0).into_response(),
    }
}

/// `GET /staff/personal-data`.
pub(super) async fn personal_data(
    State(s): State<Shared>,
    lang: PageLang,
    headers: HeaderMap,
) -> Response {
    match staff_session(&s, &headers, lang.0).await {
        Ok(staff) => render(&s, lang, &staff, String::new()),
        Err(r) => r,
    }
}

/// The activation form.
#[derive(Deserialize)]
pub struct ActivateForm {
    csrf: String,
    pin: String,
}

impl CsrfField for ActivateForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /staff/personal-data/activate`.
pub(super) async fn activate(State(s): State<Shared>, p: SignedInForm<ActivateForm>) -> Response {
    let SignedInForm { staff, lang, mut f } = p;
    let pin = Zeroizing::new(std::mem::take(&mut f.pin));
    match ra::activate_personal_data(&s.auth, &staff, &pin).await {
        Ok(()) => render(&s, lang, &staff, lang.0.texts().pii_activated.to_string()),
        Err(e) => AppError::new(e, lang.0).into_response(),
    }
}
