//! Staff administration for admins (`/staff/admin`): the accounts, a new account with its
//! TOTP enrolment shown once (text and QR code), disabling and enabling, a new TOTP secret, and
//! a second admin's approval of a privileged role grant (ca_core::ra::admin).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use ca_core::ra;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::i18n::{Lang, Texts};
use super::{html, staff_session, AppError, CsrfField, PageLang, Shared, SignedInForm, StaffPost};

#[derive(Template)]
#[template(path = "staff_admin.html")]
struct AdminPage {
    t: &'static Texts,
    lang: Lang,
    csrf: String,
    me: String,
    accounts: Vec<ra::Account>,
    outlets: Vec<(String, String)>,
    /// Every outlet: id, English name, Chinese name, closed.
    all_outlets: Vec<(String, String, String, bool)>,
    roles: Vec<&'static str>,
    message: String,
}

#[derive(Template)]
#[template(path = "staff_enrol.html")]
struct EnrolPage {
    t: &'static Texts,
    lang: Lang,
    username: String,
    secret: String,
    uri: String,
    qr_svg: String,
    pending: bool,
}

async fn render(s: &Shared, lang: PageLang, staff: &ra::StaffSession, message: String) -> Response {
    let accounts = match ra::accounts(s.auth.store(), staff).await {
        Ok(a) => a,
        Err(e) => return AppError::new(e, lang.0).into_response(),
    };
    let outlets = match ra::outlets(s.auth.store()).await {
        Ok(o) => o.into_iter().map(|(id, en, _)| (id, en)).collect(),
        Err(e) => return AppError::new(e, lang.0).into_response(),
    };
    // Outlets are shown to those who manage them.
    let all_outlets = ra::all_outlets(s.auth.store(), staff)
        .await
        .unwrap_or_default();
    html(
        AdminPage {
            t: lang.0.texts(),
            lang: lang.0,
            csrf: staff.csrf.clone(),
            me: staff.username.clone(),
            accounts,
            outlets,
            all_outlets,
            roles: ra::Role::ALL.iter().map(|r| r.name()).collect(),
            message,
        },
        lang,
    )
    .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /staff/admin`.
pub(super) async fn staff_admin(
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

/// The new account's fields.
#[derive(Deserialize)]
pub struct AddForm {
    csrf: String,
    username: String,
    display_name: String,
    outlet: String,
    role: String,
    /// The initial password, given to the member with their enrolment (wiped when dropped).
    password: String,
}

impl CsrfField for AddForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /staff/admin/add`: the account, and its TOTP enrolment shown once.
pub(super) async fn staff_admin_add(State(s): State<Shared>, p: SignedInForm<AddForm>) -> Response {
    let SignedInForm { staff, lang, mut f } = p;
    let password = Zeroizing::new(std::mem::take(&mut f.password));
    let result = async {
        let role = ra::Role::parse(&f.role)?;
        let vault = s.auth.staff_keys();
        let new = ra::NewStaff {
            username: f.username.trim(),
            display_name: f.display_name.trim(),
            outlet: &f.outlet,
            role,
            password: &password,
        };
        ra::add_account(s.auth.store(), &vault, &staff, &new).await
    }
    .await;
    match result {
        Ok((_, secret, pending)) => enrol(lang, f.username.trim(), &secret, pending),
        Err(e) => AppError::new(e, lang.0).into_response(),
    }
}

/// The enrolment page: the secret as text, as an otpauth URI and as a QR code (RFC 6238 via
/// the Key Uri Format authenticators read).
fn enrol(lang: PageLang, username: &str, secret: &[u8], pending: bool) -> Response {
    let uri = ca_core::totp::otpauth_uri("ecert", username, secret);
    let qr_svg = qrcode::QrCode::new(uri.as_bytes())
        .map(|q| {
            q.render::<qrcode::render::svg::Color>()
                .min_dimensions(200, 200)
                .build()
        })
        .unwrap_or_default();
    html(
        EnrolPage {
            t: lang.0.texts(),
            lang: lang.0,
            username: username.to_string(),
            secret: ca_core::totp::secret_base32(secret),
            uri,
            qr_svg,
            pending,
        },
        lang,
    )
    .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /staff/admin/{username}/{disable,enable,totp,approve,role,password}`.
pub(super) async fn staff_admin_action(
    State(s): State<Shared>,
    Path((username, action)): Path<(String, String)>,
    p: StaffPost,
) -> Response {
    let store = s.auth.store();
    let done = match action.as_str() {
        "disable" => ra::set_disabled(store, &p.staff, &username, true)
            .await
            .map(|()| format!("{username} disabled")),
        "enable" => ra::set_disabled(store, &p.staff, &username, false)
            .await
            .map(|()| format!("{username} enabled")),
        "approve" => ra::approve_grant(store, &p.staff, &username)
            .await
            .map(|()| format!("{username}'s role granted")),
        "password" => ra::reset_password(store, &p.staff, &username, &p.f.password)
            .await
            .map(|()| {
                format!("{username}'s password reset: they choose a new one at their next sign-in")
            }),
        "role" => ra::change_role(store, &p.staff, &username, &p.f.role)
            .await
            .map(|waits| {
                if waits {
                    format!(
                        "{username} becomes {} once a second admin approves",
                        p.f.role
                    )
                } else {
                    format!("{username} is now {}", p.f.role)
                }
            }),
        "totp" => {
            let result = async {
                let vault = s.auth.staff_keys();
                ra::new_totp(store, &vault, &p.staff, &username).await
            }
            .await;
            return match result {
                Ok(secret) => enrol(p.lang, &username, &secret, false),
                Err(e) => AppError::new(e, p.lang.0).into_response(),
            };
        }
        _ => Err(ca_core::Error::NotFound),
    };
    match done {
        Ok(message) => render(&s, p.lang, &p.staff, message).await,
        Err(e) => AppError::new(e, p.lang.0).into_response(),
    }
}

/// A new outlet's fields.
#[derive(Deserialize)]
pub struct OutletForm {
    csrf: String,
    id: String,
    name_en: String,
    name_zh: String,
}

impl CsrfField for OutletForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /staff/admin/outlets`: a new outlet.
pub(super) async fn staff_outlet_add(
    State(s): State<Shared>,
    p: SignedInForm<OutletForm>,
) -> Response {
    let SignedInForm { staff, lang, f } = p;
    let id = f.id.trim();
    match ra::add_outlet(
        s.auth.store(),
        &staff,
        id,
        f.name_en.trim(),
        f.name_zh.trim(),
    )
    .await
    {
        Ok(()) => render(&s, lang, &staff, format!("outlet {id} added")).await,
        Err(e) => AppError::new(e, lang.0).into_response(),
    }
}

/// `POST /staff/admin/outlet/{id}/{rename,close}`.
pub(super) async fn staff_outlet_action(
    State(s): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    p: StaffPost,
) -> Response {
    let store = s.auth.store();
    let done = match action.as_str() {
        "rename" => ra::change_outlet(
            store,
            &p.staff,
            &id,
            Some((p.f.name_en.trim(), p.f.name_zh.trim())),
        )
        .await
        .map(|()| format!("outlet {id} renamed")),
        "close" => ra::change_outlet(store, &p.staff, &id, None)
            .await
            .map(|()| format!("outlet {id} closed: it takes no new applications")),
        _ => Err(ca_core::Error::NotFound),
    };
    match done {
        Ok(message) => render(&s, p.lang, &p.staff, message).await,
        Err(e) => AppError::new(e, p.lang.0).into_response(),
    }
}
