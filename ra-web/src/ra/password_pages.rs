//! A member's own password (`/staff/password`): after an admin's reset it is the only page a
//! member reaches until they choose a new one (ca_core::ra::change_password).

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
#[template(path = "staff_password.html")]
struct PasswordPage {
    t: &'static Texts,
    lang: Lang,
    csrf: String,
    must_change: bool,
    message: String,
}

fn page(lang: PageLang, staff: &ra::StaffSession, message: String) -> Response {
    html(
        PasswordPage {
            t: lang.0.texts(),
            lang: lang.0,
            csrf: staff.csrf.clone(),
            must_change: staff.must_change_password,
            message,
        },
        lang,
    )
    .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /staff/password`.
pub(super) async fn password_form(
    State(s): State<Shared>,
    lang: PageLang,
    headers: HeaderMap,
) -> Response {
    match staff_session(&s, &headers, lang.0).await {
        Ok(staff) => page(lang, &staff, String::new()),
        Err(r) => r,
    }
}

/// The form's fields.
#[derive(Deserialize)]
pub struct PasswordForm {
    csrf: String,
    current_password: String,
    new_password: String,
}

impl CsrfField for PasswordForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /staff/password`.
pub(super) async fn change_password(
    State(s): State<Shared>,
    p: SignedInForm<PasswordForm>,
) -> Response {
    let SignedInForm {
        mut staff,
        lang,
        mut f,
    } = p;
    let current = Zeroizing::new(std::mem::take(&mut f.current_password));
    let new = Zeroizing::new(std::mem::take(&mut f.new_password));
    match ra::change_password(s.auth.store(), &staff, &current, &new).await {
        Ok(()) => {
            staff.must_change_password = false;
            page(lang, &staff, lang.0.texts().password_changed.to_string())
        }
        Err(e) => AppError::new(e, lang.0).into_response(),
    }
}
