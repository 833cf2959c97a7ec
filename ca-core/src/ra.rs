//! The registration authority: citizens' applications, counter staff, identity checks, fees and
//! approvals, ending in an issuance by [`Authority`] (docs/RA.md; DESIGN.md "Who uses it").
//!
//! Ownership is part of every query: a citizen's application is found by reference *and* its
//! tracking secret, a clerk's by id *and* the clerk's outlet. A mismatch is [`Error::NotFound`],
//! the same answer as for an id that does not exist.
//!
//! Personal fields (HKID, date of birth, phone, address) are stored sealed ([`crate::pii`]);
//! staff screens get them masked, and a reveal is an audit event. Audit records name
//! applications by id and reference, never by personal data.

use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;
use zeroize::Zeroizing;

use crate::audit::Event;
use crate::authority::{ApprovedRequest, Authority};
use crate::csr::VerifiedCsr;
use crate::error::{Error, Result};
use crate::hkid::Hkid;
use crate::pii::Field;
use crate::profile::{Profile, ProfileKind, SubjectData};
use crate::serial::SerialNumber;
use crate::store::Store;

/// Version of the value-added-notices consent wording shown on the form.
pub const CONSENT_WORDING: &str = "notices-v1";
/// Attempts at an e-mail code before it is void.
pub const CODE_ATTEMPTS: u32 = 5;
/// Failed sign-ins before an account is locked for [`LOCK_SECONDS`].
pub const SIGN_IN_ATTEMPTS: i64 = 5;
/// How long a locked account stays locked.
pub const LOCK_SECONDS: i64 = 15 * 60;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().to_vec()
}

/// A Random Value for domain validation: 128 bits (TLS BR §1.6.1 asks for at least 112).
fn dcv_token() -> String {
    random_base32(16).to_ascii_lowercase()
}

fn random_base32(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    data_encoding::BASE32_NOPAD.encode(&b)
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Encoding(format!("argon2: {e}")))
}

fn password_matches(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field,
        reason: reason.into(),
    }
}

fn check_len(field: &'static str, v: &str, min: usize, max: usize) -> Result<()> {
    let n = v.chars().count();
    if n < min || n > max {
        return Err(invalid(field, format!("must be {min} to {max} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Citizens.

/// An application as typed into the form (or by a clerk from a paper form).
///
/// The personal fields (names, HKID, date of birth, phone, address) are those of the person who
/// proves their identity at the counter: the citizen for `personal`; the organisation's
/// Authorised Representative for `organisational`, `encipherment` and `server`.
#[derive(Clone, Default)]
pub struct NewApplication {
    /// Profile id: `personal`, `organisational`, `encipherment` or `server`.
    pub profile: String,
    /// Surname as on the identity card (Latin letters).
    pub surname: String,
    /// Given names as on the identity card.
    pub given_name: String,
    /// Chinese name, if any.
    pub name_zh: String,
    /// Mailbox put in the certificate.
    pub email: String,
    /// HKID number as typed.
    pub hkid: String,
    /// Date of birth, `YYYY-MM-DD`.
    pub date_of_birth: String,
    /// Telephone.
    pub phone: String,
    /// Correspondence address.
    pub address: String,
    /// Outlet chosen for the identity check.
    pub outlet: String,
    /// Consent to value-added notices (unticked by default).
    pub consent_notices: bool,
    /// A secret for revoking online later.
    pub revocation_secret: String,
    /// The CSR (PEM or DER), made on the applicant's device.
    pub csr: Vec<u8>,
    /// `en` or `zh-HK`.
    pub language: String,
    /// The member of staff who entered it (a walk-in or bulk application), for the audit
    /// trail; `None` when the citizen applied online.
    pub entered_by: Option<String>,
    /// Organisation name as registered (organisational, encipherment, server).
    pub organization: String,
    /// Hong Kong Business Registration number, 8 digits (organisational, encipherment, server).
    pub org_id: String,
    /// organisational: the Authorised User's surname, put in the certificate.
    pub user_surname: String,
    /// organisational: the Authorised User's given names.
    pub user_given_name: String,
    /// server: the DNS names (at most 50, no wildcards).
    pub dns_names: Vec<String>,
    /// organisational-role: the Authorised User's role (subject title).
    pub user_title: String,
}

/// The profiles an application may be made for (online or at the counter).
pub const APPLICATION_PROFILES: &[&str] = &[
    "personal",
    "personal-minor",
    "organisational",
    "organisational-role",
    "encipherment",
    "server",
];

/// Checks a Hong Kong Business Registration number: the 8 digits that begin a Business
/// Registration Certificate number (spaces and hyphens allowed as typed). No check digit is
/// published, so only the form is checked; the clerk compares it with the certificate.
pub fn business_registration_number(typed: &str) -> Result<String> {
    let digits: String = typed.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits)
    } else {
        Err(invalid(
            "org_id",
            "the business registration number has 8 digits",
        ))
    }
}

/// Normalises the DNS names of a server application: trimmed, lower case, no trailing dot,
/// each once, in the order given.
fn dns_names(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
        if !n.is_empty() && !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

// Personal data: `Debug` names the type only.
impl std::fmt::Debug for NewApplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewApplication { .. }")
    }
}

/// What the applicant is told once: the reference, the tracking secret and (to be mailed, not
/// shown) the e-mail code.
#[derive(Debug)]
pub struct Submitted {
    /// Internal id.
    pub id: String,
    /// The reference shown to the applicant.
    pub reference: String,
    /// The tracking secret shown once.
    pub secret: String,
    /// The e-mail confirmation code, to be sent to [`Submitted::email`].
    pub email_code: String,
    /// Where the code goes.
    pub email: String,
}

fn validate(
    a: &NewApplication,
    today: time::Date,
) -> Result<(Hkid, SubjectData, &'static Profile)> {
    let profile = Profile::get(&a.profile)?;
    check_len("surname", &a.surname, 1, 40)?;
    check_len("given_name", &a.given_name, 1, 60)?;
    check_len("name_zh", &a.name_zh, 0, 20)?;
    check_len("address", &a.address, 5, 300)?;
    check_len("revocation_secret", &a.revocation_secret, 8, 128)?;
    let hkid = Hkid::parse(&a.hkid)?;
    let dob = time::Date::parse(
        &a.date_of_birth,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| invalid("date_of_birth", "use the form YYYY-MM-DD"))?;
    let age = today.year()
        - dob.year()
        - i32::from((today.month() as u8, today.day()) < (dob.month() as u8, dob.day()));
    if profile.minor {
        if !(0..18).contains(&age) {
            return Err(invalid(
                "date_of_birth",
                "e-Cert (Personal/Minor) is for applicants under 18: apply for e-Cert (Personal)",
            ));
        }
    } else if !(18..=130).contains(&age) {
        return Err(invalid(
            "date_of_birth",
            "the applicant (or the organisation's representative) must be aged 18 or over",
        ));
    }
    let digits = a.phone.chars().filter(char::is_ascii_digit).count();
    if !(8..=15).contains(&digits)
        || !a
            .phone
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '+' || c == '-')
    {
        return Err(invalid("phone", "8 to 15 digits"));
    }
    let subject = subject_of(profile, a)?;
    // The same checks as at issuance, now, so the applicant can fix the form.
    let field = match profile.kind {
        ProfileKind::Personal | ProfileKind::Encipherment => "email",
        ProfileKind::Organisational => "user_surname",
        ProfileKind::Server => "dns_names",
    };
    let subject = profile
        .check(&subject, None, time::OffsetDateTime::now_utc())
        .map_err(|e| match e {
            Error::Profile { reason, .. } => invalid(field, reason),
            other => other,
        })?;
    Ok((hkid, subject, profile))
}

/// The certificate's subject data from an application, by profile: the citizen
/// (personal); the Authorised User and the organisation (organisational); the organisation and
/// its mailbox (encipherment); the organisation and the DNS names (server; the e-mail there is
/// only for contact).
fn subject_of(profile: &Profile, a: &NewApplication) -> Result<SubjectData> {
    let organisation = || -> Result<(String, String)> {
        check_len("organization", &a.organization, 1, 64)?;
        Ok((
            a.organization.trim().to_string(),
            business_registration_number(&a.org_id)?,
        ))
    };
    Ok(match profile.kind {
        ProfileKind::Personal => SubjectData {
            surname: Some(a.surname.trim().to_uppercase()),
            given_name: Some(a.given_name.trim().to_string()),
            emails: vec![a.email.trim().to_string()],
            ..Default::default()
        },
        ProfileKind::Organisational => {
            let (org, br) = organisation()?;
            check_len("user_surname", &a.user_surname, 1, 40)?;
            check_len("user_given_name", &a.user_given_name, 1, 60)?;
            let title = if profile.role {
                check_len("user_title", &a.user_title, 1, 64)?;
                Some(a.user_title.trim().to_string())
            } else {
                None
            };
            SubjectData {
                title,
                surname: Some(a.user_surname.trim().to_uppercase()),
                given_name: Some(a.user_given_name.trim().to_string()),
                emails: vec![a.email.trim().to_string()],
                organization: Some(org),
                org_id: Some(br),
                ..Default::default()
            }
        }
        ProfileKind::Encipherment => {
            let (org, br) = organisation()?;
            SubjectData {
                emails: vec![a.email.trim().to_string()],
                organization: Some(org),
                org_id: Some(br),
                ..Default::default()
            }
        }
        ProfileKind::Server => {
            let (org, _) = organisation()?;
            let names = dns_names(&a.dns_names);
            if names.iter().any(|n| n.starts_with("*.")) {
                return Err(invalid("dns_names", "wildcard names are not issued"));
            }
            SubjectData {
                organization: Some(org),
                dns_names: names,
                ..Default::default()
            }
        }
    })
}

/// Accepts an application: validates every field, checks the CSR's proof of possession and key
/// policy, seals the personal fields, and returns the reference, tracking secret and the
/// e-mail code to send. Only profiles a citizen may start online are accepted.
pub async fn submit(auth: &Authority, a: NewApplication) -> Result<Submitted> {
    let vault = auth.pii()?;
    let store = auth.store();
    if !APPLICATION_PROFILES.contains(&a.profile.as_str()) {
        return Err(invalid(
            "profile",
            "personal, organisational, encipherment or server",
        ));
    }
    let (hkid, subject, profile) = validate(&a, time::OffsetDateTime::now_utc().date())?;
    // The contact mailbox of a server application (not in the certificate) is checked too.
    if profile.kind == ProfileKind::Server {
        check_len("email", &a.email, 3, 254)?;
        if !a.email.contains('@') {
            return Err(invalid("email", "an e-mail address"));
        }
    }
    let csr = VerifiedCsr::parse(&a.csr)?;
    let _ = csr;
    if !["en", "zh-HK"].contains(&a.language.as_str()) {
        return Err(invalid("language", "en or zh-HK"));
    }
    let outlet_exists = sqlx::query("SELECT 1 FROM outlets WHERE id = $1")
        .bind(&a.outlet)
        .fetch_optional(store.pool())
        .await?
        .is_some();
    if !outlet_exists {
        return Err(invalid("outlet", "choose one of the listed outlets"));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let reference = format!("EC-{}", &random_base32(5)[..8]);
    let secret = random_base32(20);
    let code = format!(
        "{:06}",
        rand::Rng::gen_range(&mut rand::rngs::OsRng, 0..1_000_000u32)
    );
    let revocation_hash = hash_password(&a.revocation_secret)?;
    let t = now();
    let hkid_index = vault.blind_index(Field::Hkid, hkid.expose())?;
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO applications (id, reference, secret_hash, revocation_hash, profile, state, version, outlet, language, \
         surname, given_name, name_zh, email, hkid_sealed, hkid_index, dob_sealed, phone_sealed, address_sealed, \
         consent_notices, consent_wording, consent_at, csr, email_code_hash, email_code_expires, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'submitted', 1, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $19, $19)",
    )
    .bind(&id)
    .bind(&reference)
    .bind(sha256(&[b"tracking", secret.as_bytes()]))
    .bind(revocation_hash)
    .bind(&a.profile)
    .bind(&a.outlet)
    .bind(&a.language)
    .bind(a.surname.trim().to_uppercase())
    .bind(a.given_name.trim())
    .bind(a.name_zh.trim())
    .bind(a.email.trim())
    .bind(vault.seal(Field::Hkid, &id, hkid.expose())?)
    .bind(hkid_index.to_vec())
    .bind(vault.seal(Field::DateOfBirth, &id, &a.date_of_birth)?)
    .bind(vault.seal(Field::Phone, &id, a.phone.trim())?)
    .bind(vault.seal(Field::Address, &id, a.address.trim())?)
    .bind(i64::from(a.consent_notices))
    .bind(CONSENT_WORDING)
    .bind(t)
    .bind(a.csr.clone())
    .bind(sha256(&[b"email-code", id.as_bytes(), code.as_bytes()]))
    .bind(t + i64::from(auth.config().ra.email_code_minutes) * 60)
    .execute(&mut *tx)
    .await?;
    if profile.kind != ProfileKind::Personal {
        let server = profile.kind == ProfileKind::Server;
        sqlx::query(
            "UPDATE applications SET organization = $2, org_id = $3, user_surname = $4, user_given_name = $5, \
             dns_names = $6, dcv_token = $7, dcv_token_at = $8, user_title = $9 WHERE id = $1",
        )
        .bind(&id)
        .bind(subject.organization.clone())
        .bind(business_registration_number(&a.org_id)?)
        .bind(if profile.kind == ProfileKind::Organisational { subject.surname.clone() } else { None })
        .bind(if profile.kind == ProfileKind::Organisational { subject.given_name.clone() } else { None })
        .bind(server.then(|| subject.dns_names.join(" ")))
        .bind(server.then(dcv_token))
        .bind(server.then_some(t))
        .bind(subject.title.clone())
        .execute(&mut *tx)
        .await?;
    }
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.application.submitted",
                actor: a
                    .entered_by
                    .as_ref()
                    .map_or_else(|| format!("citizen:{reference}"), |u| format!("staff:{u}")),
                subject: Some(id.clone()),
                detail: json!({ "reference": reference, "profile": a.profile, "outlet": a.outlet, "consent_notices": a.consent_notices, "consent_wording": CONSENT_WORDING }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(Submitted {
        id,
        reference,
        secret,
        email_code: code,
        email: a.email.trim().to_string(),
    })
}

/// Finds a citizen's application by reference and tracking secret; anything else is
/// [`Error::NotFound`].
async fn owned(store: &Store, reference: &str, secret: &str) -> Result<String> {
    let row = sqlx::query("SELECT id, secret_hash FROM applications WHERE reference = $1")
        .bind(reference.trim().to_uppercase())
        .fetch_optional(store.pool())
        .await?;
    let presented = sha256(&[b"tracking", secret.trim().as_bytes()]);
    match row {
        Some(r) => {
            let stored: Vec<u8> = r.try_get(1)?;
            if ct_eq(&stored, &presented) {
                let id: String = r.try_get(0)?;
                settle(store, &id).await?;
                Ok(id)
            } else {
                Err(Error::NotFound)
            }
        }
        None => Err(Error::NotFound),
    }
}

/// Confirms the e-mail address with the code that was sent to it (S/MIME BR §3.2.2: control
/// of the mailbox). At most [`CODE_ATTEMPTS`] tries; the code expires.
pub async fn confirm_email(store: &Store, reference: &str, secret: &str, code: &str) -> Result<()> {
    let id = owned(store, reference, secret).await?;
    // Count the attempt first, atomically: parallel guesses cannot exceed the limit.
    let counted = sqlx::query(
        "UPDATE applications SET email_code_attempts = email_code_attempts + 1 \
         WHERE id = $1 AND email_code_hash IS NOT NULL AND email_code_attempts < $2",
    )
    .bind(&id)
    .bind(i64::from(CODE_ATTEMPTS))
    .execute(store.pool())
    .await?;
    let mut tx = store.begin().await?;
    let r = sqlx::query(
        "SELECT email_code_hash, email_code_expires, email_code_attempts FROM applications WHERE id = $1",
    )
    .bind(&id)
    .fetch_one(&mut *tx)
    .await?;
    let hash: Option<Vec<u8>> = r.try_get(0)?;
    let expires: i64 = r.try_get(1)?;
    let attempts: i64 = r.try_get(2)?;
    let Some(hash) = hash else {
        return Err(Error::Expired("ask for a new code".into()));
    };
    if counted.rows_affected() != 1 {
        return Err(Error::TooManyAttempts("ask for a new code".into()));
    }
    if now() > expires {
        return Err(Error::Expired(
            "the code has expired: ask for a new one".into(),
        ));
    }
    let given = sha256(&[b"email-code", id.as_bytes(), code.trim().as_bytes()]);
    if !ct_eq(&hash, &given) {
        return Err(Error::CodeRejected {
            attempts_left: (i64::from(CODE_ATTEMPTS) - attempts).max(0) as u32,
        });
    }
    let t = now();
    sqlx::query(
        "UPDATE applications SET email_confirmed_at = $2, email_code_hash = NULL, updated_at = $2 WHERE id = $1",
    )
    .bind(&id)
    .bind(t)
    .execute(&mut *tx)
    .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.email.confirmed",
                actor: format!("citizen:{}", reference.trim().to_uppercase()),
                subject: Some(id),
                detail: json!({}),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A new e-mail code for an application (the first was lost, expired or used up, or the
/// mailbox must be confirmed again before a renewal): returns (code, mailbox). At most one per
/// minute per application.
pub async fn new_email_code(
    auth: &Authority,
    reference: &str,
    secret: &str,
) -> Result<(String, String)> {
    let store = auth.store();
    let id = owned(store, reference, secret).await?;
    let t = now();
    let code = format!(
        "{:06}",
        rand::Rng::gen_range(&mut rand::rngs::OsRng, 0..1_000_000u32)
    );
    let expires = t + i64::from(auth.config().ra.email_code_minutes) * 60;
    // The previous code was made at expires - validity: one new code per minute.
    let res = sqlx::query(
        "UPDATE applications SET email_code_hash = $2, email_code_expires = $3, email_code_attempts = 0, updated_at = $4 \
         WHERE id = $1 AND state IN ('submitted', 'issued') AND email_code_expires <= $5",
    )
    .bind(&id)
    .bind(sha256(&[b"email-code", id.as_bytes(), code.as_bytes()]))
    .bind(expires)
    .bind(t)
    .bind(expires - 60)
    .execute(store.pool())
    .await?;
    if res.rows_affected() != 1 {
        return Err(Error::TooManyAttempts(
            "a code was sent less than a minute ago".into(),
        ));
    }
    let email: String = sqlx::query("SELECT email FROM applications WHERE id = $1")
        .bind(&id)
        .fetch_one(store.pool())
        .await?
        .try_get(0)?;
    Ok((code, email))
}

/// S/MIME BR §4.2.1: control of the mailbox is validated no more than 30 days before issuance.
pub const MAILBOX_VALIDATION_DAYS: i64 = 30;

/// What a citizen's tracking page shows.
#[derive(Debug, Clone)]
pub struct CitizenView {
    /// Reference.
    pub reference: String,
    /// Profile.
    pub profile: String,
    /// Where it stands.
    pub status: Status,
    /// The outlet chosen.
    pub outlet: String,
    /// The certificate, once issued.
    pub certificate: Option<String>,
    /// Why it was rejected.
    pub rejected_reason: Option<String>,
    /// A code has been sent and not yet entered.
    pub code_pending: bool,
    /// server: the Random Value to publish, and each DNS name's validation.
    pub dcv_token: Option<String>,
    /// server: each DNS name and its validation.
    pub domains: Vec<DomainStatus>,
}

/// Where an application stands, as the citizen and staff see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The e-mail code has not been entered yet.
    AwaitingEmail,
    /// Waiting for the visit to the outlet (identity check, fee, approval).
    AwaitingVisit,
    /// Approved by one member of staff; a second, different one must approve.
    AwaitingSecondApproval,
    /// Being issued.
    Approved,
    /// Approved, but the issuance did not complete (e.g. CAA forbade it): staff retry.
    IssuanceFailed,
    /// The certificate is ready.
    Issued,
    /// Rejected.
    Rejected,
}

impl Status {
    /// A stable key for templates and the API.
    pub fn key(self) -> &'static str {
        match self {
            Status::AwaitingEmail => "awaiting_email",
            Status::AwaitingVisit => "awaiting_visit",
            Status::AwaitingSecondApproval => "awaiting_second_approval",
            Status::Approved => "approved",
            Status::IssuanceFailed => "issuance_failed",
            Status::Issued => "issued",
            Status::Rejected => "rejected",
        }
    }
}

/// The citizen's view of their application.
pub async fn track(store: &Store, reference: &str, secret: &str) -> Result<CitizenView> {
    let id = owned(store, reference, secret).await?;
    let r = sqlx::query(
        "SELECT reference, profile, state, outlet, certificate, rejected_reason, email_confirmed_at, version, \
         email_code_hash IS NOT NULL, issue_error IS NOT NULL FROM applications WHERE id = $1",
    )
    .bind(&id)
    .fetch_one(store.pool())
    .await?;
    let approvals = valid_approvals(store, &id, r.try_get(7)?).await?;
    let (dcv_token, domains) = domain_status(store, &id).await?;
    Ok(CitizenView {
        dcv_token,
        domains,
        reference: r.try_get(0)?,
        profile: r.try_get(1)?,
        status: status_of(
            &r.try_get::<String, _>(2)?,
            r.try_get::<Option<i64>, _>(6)?.is_some(),
            approvals,
            any_bool(&r, 9)?,
        ),
        outlet: r.try_get(3)?,
        certificate: r.try_get(4)?,
        rejected_reason: r.try_get(5)?,
        code_pending: any_bool(&r, 8)?,
    })
}

/// A boolean expression's column: PostgreSQL gives a bool, SQLite an integer.
fn any_bool(r: &sqlx::any::AnyRow, i: usize) -> Result<bool> {
    Ok(match r.try_get::<bool, _>(i) {
        Ok(b) => b,
        Err(_) => r.try_get::<i64, _>(i)? != 0,
    })
}

fn status_of(state: &str, email_confirmed: bool, approvals: usize, issue_failed: bool) -> Status {
    match state {
        "issued" => Status::Issued,
        "rejected" => Status::Rejected,
        "approved" => Status::Approved,
        _ if !email_confirmed => Status::AwaitingEmail,
        // The approvals that led to the failed issuance still count.
        _ if approvals > 0 && issue_failed => Status::IssuanceFailed,
        _ if approvals > 0 => Status::AwaitingSecondApproval,
        _ => Status::AwaitingVisit,
    }
}

async fn valid_approvals(store: &Store, id: &str, version: i64) -> Result<usize> {
    let r = sqlx::query(
        "SELECT COUNT(*) FROM approvals WHERE application = $1 AND version = $2 AND decision = 'approve' AND expires_at > $3",
    )
    .bind(id)
    .bind(version)
    .bind(now())
    .fetch_one(store.pool())
    .await?;
    Ok(r.try_get::<i64, _>(0)? as usize)
}

/// Revokes the certificate of an application online with the revocation secret chosen at
/// application time (BR §4.9.3: the subscriber may request revocation).
pub async fn revoke_online(
    auth: &Authority,
    reference: &str,
    tracking_secret: &str,
    revocation_secret: &str,
    reason: crate::revocation::Reason,
) -> Result<String> {
    let store = auth.store();
    let id = owned(store, reference, tracking_secret).await?;
    let r = sqlx::query("SELECT revocation_hash, certificate FROM applications WHERE id = $1")
        .bind(&id)
        .fetch_one(store.pool())
        .await?;
    let hash: String = r.try_get(0)?;
    let serial: Option<String> = r.try_get(1)?;
    if !password_matches(revocation_secret, &hash) {
        return Err(invalid("revocation_secret", "not correct"));
    }
    let serial = serial.ok_or_else(|| Error::Conflict("no certificate has been issued".into()))?;
    // The reasons a subscriber may choose (TLS BR §7.2.2: privilegeWithdrawn is the CA's; a
    // hold is requested at the counter).
    use crate::revocation::Reason;
    if !matches!(
        reason,
        Reason::Unspecified
            | Reason::KeyCompromise
            | Reason::AffiliationChanged
            | Reason::Superseded
            | Reason::CessationOfOperation
    ) {
        return Err(invalid(
            "reason",
            "keyCompromise, affiliationChanged, superseded, cessationOfOperation or none",
        ));
    }
    revoke_with_predecessors(
        auth,
        &serial,
        reason,
        &format!("citizen:{}", reference.trim().to_uppercase()),
    )
    .await?;
    Ok(serial)
}

/// Revokes a certificate and the still-valid certificates it renewed (a renewal leaves its
/// predecessor valid until it expires; revoking the subscriber's certificate revokes both).
async fn revoke_with_predecessors(
    auth: &Authority,
    serial: &str,
    reason: crate::revocation::Reason,
    actor: &str,
) -> Result<()> {
    let s = SerialNumber::from_hex(serial).ok_or(Error::NotFound)?;
    auth.revoke(s, reason, actor).await?;
    let mut current = serial.to_string();
    for _ in 0..16 {
        let Some(rec) = auth.store().certificate(&current).await? else {
            break;
        };
        let Some(previous) = rec.renews else { break };
        if let Some(p) = auth.store().certificate(&previous).await? {
            let live = p.revocation_reason.is_none() && p.not_after.is_some_and(|na| na >= now());
            if live {
                if let Some(ps) = SerialNumber::from_hex(&previous) {
                    match auth.revoke(ps, reason, actor).await {
                        Ok(_) | Err(Error::AlreadyRevoked { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        current = previous;
    }
    Ok(())
}

/// Renews a citizen's certificate online, without a counter visit (BR §3.3.1 routine
/// re-key/renewal): the request must be a CSR for the *same* key as the current certificate, so
/// its signature proves possession of the current certificate's private key. The certificate
/// must be issued, not revoked or held, not expired, within `ra.renewal_window_days` of its
/// expiry, and not renewed already. The renewal is an issuance linked to
/// the certificate it replaces (both ways), with the same subject data.
/// What the current certificate's key signs to vouch for a new key at an online re-key: the
/// reference, the serial being replaced and the SHA-256 of the new key's SubjectPublicKeyInfo
/// (hex), one per line.
pub fn rekey_message(reference: &str, old_serial: &str, new_spki_sha256_hex: &str) -> String {
    format!(
        "ecert-rekey-v1\n{}\n{}\n{}",
        reference.trim().to_uppercase(),
        old_serial.to_ascii_lowercase(),
        new_spki_sha256_hex.to_ascii_lowercase()
    )
}

/// Online renewal (a CSR for the current certificate's key, signed by it) or re-key (a CSR for
/// a new key, plus `rekey_proof`: the current key's signature over [`rekey_message`]), in the
/// window before expiry, once per certificate. The new certificate keeps the subject and is
/// linked to the one it replaces.
pub async fn renew_online(
    auth: &Authority,
    reference: &str,
    secret: &str,
    csr: &[u8],
    rekey_proof: Option<&[u8]>,
) -> Result<String> {
    let store = auth.store();
    let id = owned(store, reference, secret).await?;
    let reference = reference.trim().to_uppercase();
    let r = sqlx::query(
        "SELECT a.certificate, a.profile, c.key_fp, c.state, c.revocation_reason, c.not_after, c.renewed_by \
         FROM applications a JOIN certificates c ON c.serial = a.certificate WHERE a.id = $1",
    )
    .bind(&id)
    .fetch_optional(store.pool())
    .await?
    .ok_or_else(|| Error::Conflict("no certificate has been issued yet".into()))?;
    let old: String = r.try_get(0)?;
    let profile: String = r.try_get(1)?;
    if Profile::get(&profile)?.kind == ProfileKind::Server {
        return Err(Error::Conflict(
            "a server certificate is renewed by a new application: its domains are validated again"
                .into(),
        ));
    }
    let key_fp: Vec<u8> = r.try_get(2)?;
    if r.try_get::<Option<i64>, _>(4)?.is_some() {
        return Err(Error::Conflict(
            "the certificate is revoked or on hold: apply again".into(),
        ));
    }
    let not_after = r.try_get::<Option<i64>, _>(5)?.unwrap_or(0);
    if not_after < now() {
        return Err(Error::Conflict(
            "the certificate has expired: apply again".into(),
        ));
    }
    let window = i64::from(auth.config().ra.renewal_window_days);
    if not_after - now() > window * 86_400 {
        return Err(Error::Conflict(format!(
            "online renewal opens {window} days before the certificate expires"
        )));
    }
    if r.try_get::<Option<String>, _>(6)?.is_some() {
        return Err(Error::Conflict(
            "the certificate has been renewed already".into(),
        ));
    }
    let confirmed: Option<i64> =
        sqlx::query("SELECT email_confirmed_at FROM applications WHERE id = $1")
            .bind(&id)
            .fetch_one(store.pool())
            .await?
            .try_get(0)?;
    if confirmed.is_none_or(|at| now() - at > MAILBOX_VALIDATION_DAYS * 86_400) {
        return Err(Error::Conflict(format!(
            "confirm your e-mail address again first (it was confirmed more than {MAILBOX_VALIDATION_DAYS} days ago): ask for a new code"
        )));
    }
    let csr = VerifiedCsr::parse(csr)?;
    let rekey = csr.key().fingerprint().as_slice() != key_fp.as_slice();
    if rekey {
        let Some(proof) = rekey_proof.filter(|p| !p.is_empty()) else {
            return Err(invalid(
                "csr",
                "sign the renewal request with the key of the current certificate, or prove the new key with a signature by the current one",
            ));
        };
        let der = store
            .certificate(&old)
            .await?
            .and_then(|c| c.cert_der)
            .ok_or(Error::NotFound)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| Error::Encoding(e.to_string()))?;
        let current = crate::keys::SubscriberKey::from_spki_der(cert.public_key().raw)?;
        let message = rekey_message(&reference, &old, &hex::encode(csr.key().fingerprint()));
        if !current.verifies(message.as_bytes(), proof) {
            return Err(invalid(
                "rekey_proof",
                "the signature by the current certificate's key does not verify",
            ));
        }
    }
    let old_serial = SerialNumber::from_hex(&old).ok_or(Error::NotFound)?;
    // A minor's renewal also ends before the 18th birthday.
    let days = if Profile::get(&profile)?.minor {
        let sealed: Vec<u8> = sqlx::query("SELECT dob_sealed FROM applications WHERE id = $1")
            .bind(&id)
            .fetch_one(store.pool())
            .await?
            .try_get(0)?;
        Some(minor_validity(auth, &id, Profile::get(&profile)?, &sealed)?)
    } else {
        None
    };
    let issued = auth
        .issue(ApprovedRequest {
            profile,
            csr,
            subject: SubjectData::default(),
            days,
            renews: Some(old_serial),
            actor: format!("citizen:{reference}"),
        })
        .await?;
    let serial = issued.serial.to_hex();
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE applications SET certificate = $2, updated_at = $3 WHERE id = $1")
        .bind(&id)
        .bind(&serial)
        .bind(now())
        .execute(&mut *tx)
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: if rekey { "ra.rekeyed" } else { "ra.renewed" },
                actor: format!("citizen:{reference}"),
                subject: Some(id),
                detail: json!({ "old": old, "new": serial, "new_key": rekey }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(serial)
}

// ---------------------------------------------------------------------------------------------
// Staff.

/// A staff role (DESIGN.md "Personal data and trust").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Counter clerk: identity check, fee, first approval, rejection.
    Clerk,
    /// Outlet supervisor: also the second approval of dual-control profiles.
    Supervisor,
    /// CA officer.
    Officer,
    /// Staff accounts.
    Admin,
}

impl Role {
    /// Its name in the database and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Clerk => "clerk",
            Role::Supervisor => "supervisor",
            Role::Officer => "officer",
            Role::Admin => "admin",
        }
    }

    /// Parses [`Role::name`].
    pub fn parse(s: &str) -> Result<Role> {
        Ok(match s {
            "clerk" => Role::Clerk,
            "supervisor" => Role::Supervisor,
            "officer" => Role::Officer,
            "admin" => Role::Admin,
            _ => return Err(invalid("role", "clerk, supervisor, officer or admin")),
        })
    }
}

/// Adds an outlet (idempotent).
pub async fn ensure_outlet(store: &Store, id: &str, name_en: &str, name_zh: &str) -> Result<()> {
    check_len("outlet", id, 1, 40)?;
    sqlx::query("INSERT INTO outlets (id, name_en, name_zh, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING")
        .bind(id)
        .bind(name_en)
        .bind(name_zh)
        .bind(now())
        .execute(store.pool())
        .await?;
    Ok(())
}

/// The outlets: (id, English name, Chinese name).
pub async fn outlets(store: &Store) -> Result<Vec<(String, String, String)>> {
    let rows = sqlx::query("SELECT id, name_en, name_zh FROM outlets ORDER BY id")
        .fetch_all(store.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// A staff account to make.
#[derive(Debug, Clone, Copy)]
pub struct NewStaff<'a> {
    /// Sign-in name.
    pub username: &'a str,
    /// Name shown on screens.
    pub display_name: &'a str,
    /// Outlet id.
    pub outlet: &'a str,
    /// Role.
    pub role: Role,
    /// Password (argon2id-hashed; at least 12 characters).
    pub password: &'a str,
}

/// A new staff account: returns its id and the TOTP secret to enrol in an authenticator (shown
/// once).
pub async fn create_staff(
    store: &Store,
    vault: &crate::pii::Vault,
    new: &NewStaff<'_>,
    actor: &str,
) -> Result<(String, Zeroizing<Vec<u8>>)> {
    let NewStaff {
        username,
        display_name,
        outlet,
        role,
        password,
    } = *new;
    check_len("username", username, 3, 40)?;
    if !username
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
    {
        return Err(invalid("username", "letters, digits and . _ - @ only"));
    }
    check_len("display_name", display_name, 1, 80)?;
    check_len("password", password, 12, 256)?;
    let id = uuid::Uuid::new_v4().to_string();
    let secret = Zeroizing::new(crate::totp::new_secret().to_vec());
    let sealed = vault.seal(
        Field::TotpSecret,
        &id,
        &data_encoding::BASE32_NOPAD.encode(&secret),
    )?;
    let mut tx = store.begin().await?;
    let outlet_exists = sqlx::query("SELECT 1 FROM outlets WHERE id = $1")
        .bind(outlet)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    if !outlet_exists {
        return Err(invalid("outlet", "no such outlet"));
    }
    let taken = sqlx::query("SELECT 1 FROM staff WHERE username = $1")
        .bind(username)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    if taken {
        return Err(Error::Conflict(format!(
            "the user name {username} is taken"
        )));
    }
    sqlx::query(
        "INSERT INTO staff (id, username, display_name, outlet, role, password_hash, totp_sealed, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(username)
    .bind(display_name)
    .bind(outlet)
    .bind(role.name())
    .bind(hash_password(password)?)
    .bind(sealed)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.staff.created",
                actor: actor.to_string(),
                subject: Some(id.clone()),
                detail: json!({ "username": username, "outlet": outlet, "role": role.name() }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok((id, secret))
}

/// A signed-in member of staff.
#[derive(Debug, Clone)]
pub struct StaffSession {
    /// Staff id.
    pub staff: String,
    /// User name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Outlet.
    pub outlet: String,
    /// Role.
    pub role: Role,
    /// The session's CSRF token (a hidden field of every form).
    pub csrf: String,
}

/// A new session: the cookie token (shown once) and who it is.
#[derive(Debug)]
pub struct SignedIn {
    /// Random session token for the cookie; only its SHA-256 is stored.
    pub token: String,
    /// The session.
    pub session: StaffSession,
}

/// Signs a member of staff in with password and TOTP code. Every failure gives the same
/// answer; [`SIGN_IN_ATTEMPTS`] failures lock the account for [`LOCK_SECONDS`]. A new session
/// token is made at every sign-in (no fixation).
pub async fn sign_in(
    auth: &Authority,
    username: &str,
    password: &str,
    code: &str,
) -> Result<SignedIn> {
    let store = auth.store();
    let t = now();
    let row = sqlx::query(
        "SELECT id, password_hash, totp_sealed, totp_last_step, failed_logins, locked_until, disabled, display_name, outlet, role \
         FROM staff WHERE username = $1",
    )
    .bind(username)
    .fetch_optional(store.pool())
    .await?;
    // Only a plausible user name goes into the audit trail (a password typed into the wrong
    // field must not).
    let shown_name = if (3..=40).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
    {
        username.to_string()
    } else {
        "(not a user name)".to_string()
    };
    // `count`: whether this failure counts towards the lock (not while already locked, so
    // nobody can keep an account locked by failing on purpose).
    let fail = |kind: &'static str, staff: Option<String>, count: bool| async move {
        if let (Some(id), true) = (&staff, count) {
            let _ = sqlx::query(
                "UPDATE staff SET failed_logins = failed_logins + 1, \
                 locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END WHERE id = $1",
            )
            .bind(id)
            .bind(SIGN_IN_ATTEMPTS)
            .bind(t + LOCK_SECONDS)
            .execute(store.pool())
            .await;
        }
        let _ = store
            .audit_now(&Event {
                kind: "ra.staff.signin_failed",
                actor: format!("staff-login:{shown_name}"),
                subject: staff,
                detail: json!({ "why": kind }),
            })
            .await;
        Err(Error::SignInFailed)
    };
    // Every refusal spends the time of a password check, so absent, disabled and locked
    // accounts do not answer faster than a wrong password.
    let dummy = || {
        let _ = password_matches(password, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    };
    let Some(r) = row else {
        dummy();
        return fail("unknown user", None, false).await;
    };
    let id: String = r.try_get(0)?;
    let hash: String = r.try_get(1)?;
    let sealed: Vec<u8> = r.try_get(2)?;
    let last_step: i64 = r.try_get(3)?;
    let locked_until: i64 = r.try_get(5)?;
    let disabled: i64 = r.try_get(6)?;
    if disabled != 0 {
        dummy();
        return fail("disabled", Some(id), false).await;
    }
    if locked_until > t {
        dummy();
        return fail("locked", Some(id), false).await;
    }
    if !password_matches(password, &hash) {
        return fail("password", Some(id), true).await;
    }
    let vault = auth.pii()?;
    let secret_b32 = vault.open_field(Field::TotpSecret, &id, &sealed)?;
    let secret = Zeroizing::new(
        data_encoding::BASE32_NOPAD
            .decode(secret_b32.as_bytes())
            .map_err(|_| Error::Store("stored TOTP secret is not base32".into()))?,
    );
    let Some(step) = crate::totp::verify(&secret, code, t, last_step) else {
        return fail("code", Some(id), true).await;
    };
    let token = random_base32(32);
    let csrf = random_base32(20);
    let mut tx = store.begin().await?;
    // Compare-and-set on the step: the same code cannot sign in twice, even concurrently.
    let res = sqlx::query(
        "UPDATE staff SET totp_last_step = $2, failed_logins = 0, locked_until = 0 WHERE id = $1 AND totp_last_step < $2",
    )
    .bind(&id)
    .bind(step)
    .execute(&mut *tx)
    .await?;
    if res.rows_affected() != 1 {
        drop(tx);
        return fail("code reused", Some(id), true).await;
    }
    sqlx::query("INSERT INTO staff_sessions (token_hash, staff, csrf, created_at, last_seen) VALUES ($1, $2, $3, $4, $4)")
        .bind(sha256(&[b"session", token.as_bytes()]))
        .bind(&id)
        .bind(&csrf)
        .bind(t)
        .execute(&mut *tx)
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.staff.signin",
                actor: format!("staff:{username}"),
                subject: Some(id.clone()),
                detail: json!({}),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(SignedIn {
        token,
        session: StaffSession {
            staff: id,
            username: username.to_string(),
            display_name: r.try_get(7)?,
            outlet: r.try_get(8)?,
            role: Role::parse(&r.try_get::<String, _>(9)?)?,
            csrf,
        },
    })
}

/// The session of a cookie token; expired (idle or too old) sessions are ended.
pub async fn session(
    store: &Store,
    ra: &crate::config::RaConfig,
    token: &str,
) -> Result<StaffSession> {
    let hash = sha256(&[b"session", token.as_bytes()]);
    let r = sqlx::query(
        "SELECT s.staff, s.csrf, s.created_at, s.last_seen, st.username, st.display_name, st.outlet, st.role, st.disabled \
         FROM staff_sessions s JOIN staff st ON st.id = s.staff WHERE s.token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::NotFound)?;
    let t = now();
    let created: i64 = r.try_get(2)?;
    let last_seen: i64 = r.try_get(3)?;
    let disabled: i64 = r.try_get(8)?;
    if disabled != 0
        || t - last_seen > i64::from(ra.session_idle_minutes) * 60
        || t - created > i64::from(ra.session_max_hours) * 3600
    {
        sqlx::query("DELETE FROM staff_sessions WHERE token_hash = $1")
            .bind(&hash)
            .execute(store.pool())
            .await?;
        return Err(Error::Expired(
            "the session has ended: sign in again".into(),
        ));
    }
    sqlx::query("UPDATE staff_sessions SET last_seen = $2 WHERE token_hash = $1")
        .bind(&hash)
        .bind(t)
        .execute(store.pool())
        .await?;
    Ok(StaffSession {
        staff: r.try_get(0)?,
        csrf: r.try_get(1)?,
        username: r.try_get(4)?,
        display_name: r.try_get(5)?,
        outlet: r.try_get(6)?,
        role: Role::parse(&r.try_get::<String, _>(7)?)?,
    })
}

/// Ends a session.
pub async fn sign_out(store: &Store, token: &str) -> Result<()> {
    sqlx::query("DELETE FROM staff_sessions WHERE token_hash = $1")
        .bind(sha256(&[b"session", token.as_bytes()]))
        .execute(store.pool())
        .await?;
    Ok(())
}

/// One line of an outlet's queue.
#[derive(Debug, Clone)]
pub struct QueueRow {
    /// Application id.
    pub id: String,
    /// Reference.
    pub reference: String,
    /// Profile.
    pub profile: String,
    /// Surname and given name.
    pub name: String,
    /// Status.
    pub status: Status,
    /// Submitted at (Unix seconds).
    pub created_at: i64,
}

/// The open applications of the staff member's outlet, oldest first; or the one with this
/// reference (still only in the outlet).
pub async fn queue(
    store: &Store,
    staff: &StaffSession,
    reference: Option<&str>,
) -> Result<Vec<QueueRow>> {
    let rows = sqlx::query(
        "SELECT id, reference, profile, surname, given_name, state, email_confirmed_at, version, created_at, issue_error IS NOT NULL FROM applications \
         WHERE outlet = $1 AND (($2 = '' AND state IN ('submitted', 'approved')) OR reference = $2) ORDER BY created_at LIMIT 200",
    )
    .bind(&staff.outlet)
    .bind(reference.map(|r| r.trim().to_uppercase()).unwrap_or_default())
    .fetch_all(store.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get(0)?;
        let approvals = valid_approvals(store, &id, r.try_get(7)?).await?;
        out.push(QueueRow {
            reference: r.try_get(1)?,
            profile: r.try_get(2)?,
            name: format!(
                "{} {}",
                r.try_get::<String, _>(3)?,
                r.try_get::<String, _>(4)?
            ),
            status: status_of(
                &r.try_get::<String, _>(5)?,
                r.try_get::<Option<i64>, _>(6)?.is_some(),
                approvals,
                any_bool(r, 9)?,
            ),
            created_at: r.try_get(8)?,
            id,
        });
    }
    Ok(out)
}

/// A personal field a clerk may reveal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revealable {
    /// HKID number.
    Hkid,
    /// Date of birth.
    DateOfBirth,
    /// Telephone.
    Phone,
    /// Address.
    Address,
}

impl Revealable {
    /// Parses the form value.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "hkid" => Revealable::Hkid,
            "date_of_birth" => Revealable::DateOfBirth,
            "phone" => Revealable::Phone,
            "address" => Revealable::Address,
            _ => return Err(invalid("field", "hkid, date_of_birth, phone or address")),
        })
    }

    fn column(self) -> (&'static str, Field) {
        match self {
            Revealable::Hkid => ("hkid_sealed", Field::Hkid),
            Revealable::DateOfBirth => ("dob_sealed", Field::DateOfBirth),
            Revealable::Phone => ("phone_sealed", Field::Phone),
            Revealable::Address => ("address_sealed", Field::Address),
        }
    }

    /// The form value.
    pub fn name(self) -> &'static str {
        match self {
            Revealable::Hkid => "hkid",
            Revealable::DateOfBirth => "date_of_birth",
            Revealable::Phone => "phone",
            Revealable::Address => "address",
        }
    }
}

/// What a clerk's screen shows of an application: personal fields masked.
#[derive(Debug, Clone)]
pub struct StaffView {
    /// Id.
    pub id: String,
    /// Reference.
    pub reference: String,
    /// Profile.
    pub profile: String,
    /// Version (edits bump it; approvals name it).
    pub version: i64,
    /// Status.
    pub status: Status,
    /// Surname.
    pub surname: String,
    /// Given name.
    pub given_name: String,
    /// Chinese name.
    pub name_zh: String,
    /// E-mail.
    pub email: String,
    /// Whether the e-mail is confirmed.
    pub email_confirmed: bool,
    /// HKID, masked (`A******(3)`).
    pub hkid_masked: String,
    /// Date of birth, masked.
    pub dob_masked: String,
    /// Phone, masked (last two digits).
    pub phone_masked: String,
    /// Address, masked.
    pub address_masked: String,
    /// Whether identity was checked for this version (card sighted, number matched).
    pub identity_checked: bool,
    /// Fee recorded: (amount in cents, method, receipt).
    pub fee: Option<(i64, String, String)>,
    /// The fee due for the profile, in cents.
    pub fee_due: u32,
    /// Other open or issued applications with the same HKID number.
    pub same_hkid: i64,
    /// Valid approvals of this version: (staff display name).
    pub approvals: Vec<String>,
    /// Whether the profile needs two approvals.
    pub dual_control: bool,
    /// The certificate, once issued.
    pub certificate: Option<String>,
    /// Why it was rejected.
    pub rejected_reason: Option<String>,
    /// The organisation and its business registration number (not personal).
    pub organization: Option<(String, String)>,
    /// organisational: the Authorised User named in the certificate.
    pub authorised_user: Option<String>,
    /// Whether the organisation's documents were checked for this version.
    pub organisation_checked: bool,
    /// server: the Random Value the applicant publishes.
    pub dcv_token: Option<String>,
    /// server: each DNS name and its validation.
    pub domains: Vec<DomainStatus>,
    /// Why the last issuance did not complete, if it did not.
    pub issue_error: Option<String>,
}

fn not_open() -> Error {
    Error::Conflict("the application is no longer open".into())
}

fn changed() -> Error {
    Error::Conflict("the application changed since you opened it: reload".into())
}

/// A row from [`staff_owned`] is still open (`submitted`) and, if `version` is given, at that
/// version.
fn open_at(r: &sqlx::any::AnyRow, version: Option<i64>) -> Result<()> {
    if r.try_get::<String, _>(4)? != "submitted" {
        return Err(not_open());
    }
    if version.is_some_and(|v| r.try_get::<i64, _>(3).ok() != Some(v)) {
        return Err(changed());
    }
    Ok(())
}

async fn staff_owned(store: &Store, staff: &StaffSession, id: &str) -> Result<sqlx::any::AnyRow> {
    settle(store, id).await?;
    sqlx::query(
        "SELECT id, reference, profile, version, state, surname, given_name, name_zh, email, email_confirmed_at, \
         hkid_sealed, dob_sealed, phone_sealed, address_sealed, identity_version, fee_amount, fee_method, fee_receipt, \
         hkid_index, certificate, rejected_reason, csr, organization, org_id, user_surname, user_given_name, \
         dns_names, dcv_token, dcv_token_at, org_checked_version, user_title, issue_error FROM applications WHERE id = $1 AND outlet = $2",
    )
    .bind(id)
    .bind(&staff.outlet)
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::NotFound)
}

/// An application as the staff member's screen shows it (only in their outlet).
pub async fn staff_view(auth: &Authority, staff: &StaffSession, id: &str) -> Result<StaffView> {
    let store = auth.store();
    let vault = auth.pii()?;
    let r = staff_owned(store, staff, id).await?;
    let version: i64 = r.try_get(3)?;
    // A purged application has empty sealed fields.
    let open = |i: usize, f: Field| -> Result<Option<Zeroizing<String>>> {
        let sealed: Vec<u8> = r.try_get(i)?;
        if sealed.is_empty() {
            return Ok(None);
        }
        vault.open_field(f, id, &sealed).map(Some)
    };
    let purged = "(purged)".to_string();
    let hkid_masked = match open(10, Field::Hkid)? {
        Some(h) => Hkid::parse(&h)?.masked(),
        None => purged.clone(),
    };
    let phone = open(12, Field::Phone)?.unwrap_or_else(|| Zeroizing::new(purged.clone()));
    let address = open(13, Field::Address)?.unwrap_or_else(|| Zeroizing::new(purged.clone()));
    let index: Vec<u8> = r.try_get(18)?;
    let same = sqlx::query(
        "SELECT COUNT(*) FROM applications WHERE hkid_index = $1 AND id <> $2 AND state <> 'rejected'",
    )
    .bind(&index)
    .bind(id)
    .fetch_one(store.pool())
    .await?
    .try_get::<i64, _>(0)?;
    let approvals = sqlx::query(
        "SELECT st.display_name FROM approvals a JOIN staff st ON st.id = a.staff \
         WHERE a.application = $1 AND a.version = $2 AND a.decision = 'approve' AND a.expires_at > $3 ORDER BY a.at",
    )
    .bind(id)
    .bind(version)
    .bind(now())
    .fetch_all(store.pool())
    .await?
    .iter()
    .map(|r| r.try_get::<String, _>(0))
    .collect::<std::result::Result<Vec<_>, _>>()?;
    let profile: String = r.try_get(2)?;
    let amount: Option<i64> = r.try_get(15)?;
    let (dcv_token, domains) = domain_status(store, id).await?;
    Ok(StaffView {
        id: id.to_string(),
        reference: r.try_get(1)?,
        version,
        status: status_of(
            &r.try_get::<String, _>(4)?,
            r.try_get::<Option<i64>, _>(9)?.is_some(),
            approvals.len(),
            r.try_get::<Option<String>, _>(31)?.is_some(),
        ),
        issue_error: r.try_get(31)?,
        surname: r.try_get(5)?,
        given_name: r.try_get(6)?,
        name_zh: r.try_get(7)?,
        email: r.try_get(8)?,
        email_confirmed: r.try_get::<Option<i64>, _>(9)?.is_some(),
        hkid_masked,
        dob_masked: "****-**-**".into(),
        phone_masked: format!(
            "{}{}",
            "*".repeat(phone.chars().count().saturating_sub(2)),
            phone
                .chars()
                .rev()
                .take(2)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        ),
        address_masked: format!("{}…", address.chars().take(4).collect::<String>()),
        identity_checked: r.try_get::<Option<i64>, _>(14)? == Some(version),
        fee: match amount {
            Some(a) => Some((a, r.try_get(16)?, r.try_get(17)?)),
            None => None,
        },
        fee_due: auth.config().ra.fees.get(&profile).copied().unwrap_or(0),
        same_hkid: same,
        dual_control: auth.config().ra.dual_control.contains(&profile),
        approvals,
        certificate: r.try_get(19)?,
        rejected_reason: r.try_get(20)?,
        organization: match (
            r.try_get::<Option<String>, _>(22)?,
            r.try_get::<Option<String>, _>(23)?,
        ) {
            (Some(o), Some(br)) => Some((o, br)),
            _ => None,
        },
        authorised_user: match (
            r.try_get::<Option<String>, _>(24)?,
            r.try_get::<Option<String>, _>(25)?,
        ) {
            (Some(s), Some(g)) => Some(match r.try_get::<Option<String>, _>(30)? {
                Some(title) => format!("{s} {g} ({title})"),
                None => format!("{s} {g}"),
            }),
            _ => None,
        },
        organisation_checked: r.try_get::<Option<i64>, _>(29)? == Some(version),
        dcv_token,
        domains,
        profile,
    })
}

/// Reveals one personal field to the staff member (audited with who and which field).
pub async fn reveal(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
    field: Revealable,
) -> Result<Zeroizing<String>> {
    let store = auth.store();
    let vault = auth.pii()?;
    let (column, f) = field.column();
    // The column name comes from a fixed list, never from input.
    let sql = format!("SELECT {column} FROM applications WHERE id = $1 AND outlet = $2");
    let r = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(&staff.outlet)
        .fetch_optional(store.pool())
        .await?
        .ok_or(Error::NotFound)?;
    let sealed: Vec<u8> = r.try_get(0)?;
    if sealed.is_empty() {
        return Err(Error::Conflict(
            "the personal data of this application was purged".into(),
        ));
    }
    let value = vault.open_field(f, id, &sealed)?;
    store
        .audit_now(&Event {
            kind: "ra.pii.revealed",
            actor: format!("staff:{}", staff.username),
            subject: Some(id.to_string()),
            detail: json!({ "field": field.name() }),
        })
        .await?;
    Ok(if field == Revealable::Hkid {
        Zeroizing::new(Hkid::parse(&value)?.expose().to_string())
    } else {
        value
    })
}

/// The counter identity check: the clerk types the number from the original card and attests
/// that the card was sighted — and, for a minor's application, that a parent or guardian came
/// and consents (`guardian_consent`, recorded in the audit record). The number is compared by
/// blind index, never shown; a mismatch is audited and blocks approval.
pub async fn check_identity(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
    version: i64,
    typed_hkid: &str,
    card_sighted: bool,
    guardian_consent: bool,
) -> Result<()> {
    let store = auth.store();
    let vault = auth.pii()?;
    let r = staff_owned(store, staff, id).await?;
    open_at(&r, Some(version))?;
    if !card_sighted {
        return Err(invalid(
            "card_sighted",
            "confirm that you have seen the original identity card",
        ));
    }
    let minor = Profile::get(&r.try_get::<String, _>(2)?)?.minor;
    if minor && !guardian_consent {
        return Err(invalid(
            "guardian_consent",
            "a minor's application needs a parent or guardian present who consents",
        ));
    }
    let typed = Hkid::parse(typed_hkid)?;
    let typed_index = vault.blind_index(Field::Hkid, typed.expose())?;
    let stored: Vec<u8> = r.try_get(18)?;
    let matched = ct_eq(&stored, &typed_index);
    record_check(
        store,
        staff,
        id,
        version,
        CounterCheck::Identity,
        matched,
        json!({ "version": version, "card_sighted": card_sighted, "guardian_consent": minor.then_some(guardian_consent) }),
    )
    .await?;
    if matched {
        Ok(())
    } else {
        Err(invalid(
            "hkid",
            "the number on the card does not match the application: do not approve",
        ))
    }
}

/// The two checks a clerk records against an application version.
#[derive(Debug, Clone, Copy)]
enum CounterCheck {
    /// The identity card (`identity_*` columns).
    Identity,
    /// The organisation's documents (`org_checked_*` columns).
    Organisation,
}

/// Records a counter check of `version`: a match records who and when (for that version
/// only); a mismatch withdraws any earlier check, so approval waits for a clerk to check again.
/// Audited as `ra.<what>.checked` or `ra.<what>.mismatch` with `detail`.
async fn record_check(
    store: &Store,
    staff: &StaffSession,
    id: &str,
    version: i64,
    check: CounterCheck,
    matched: bool,
    detail: serde_json::Value,
) -> Result<()> {
    let (set, clear, checked, mismatch) = match check {
        CounterCheck::Identity => (
            "UPDATE applications SET identity_by = $2, identity_at = $3, identity_version = $4, updated_at = $3 \
             WHERE id = $1 AND version = $4 AND state = 'submitted'",
            "UPDATE applications SET identity_by = NULL, identity_at = NULL, identity_version = NULL, updated_at = $2 WHERE id = $1",
            "ra.identity.checked",
            "ra.identity.mismatch",
        ),
        CounterCheck::Organisation => (
            "UPDATE applications SET org_checked_by = $2, org_checked_at = $3, org_checked_version = $4, updated_at = $3 \
             WHERE id = $1 AND version = $4 AND state = 'submitted'",
            "UPDATE applications SET org_checked_by = NULL, org_checked_at = NULL, org_checked_version = NULL, updated_at = $2 WHERE id = $1",
            "ra.organisation.checked",
            "ra.organisation.mismatch",
        ),
    };
    let t = now();
    let mut tx = store.begin().await?;
    let res = if matched {
        sqlx::query(set)
            .bind(id)
            .bind(&staff.staff)
            .bind(t)
            .bind(version)
            .execute(&mut *tx)
            .await?
    } else {
        sqlx::query(clear)
            .bind(id)
            .bind(t)
            .execute(&mut *tx)
            .await?
    };
    if res.rows_affected() != 1 {
        return Err(changed());
    }
    store
        .audit(
            &mut tx,
            &Event {
                kind: if matched { checked } else { mismatch },
                actor: format!("staff:{}", staff.username),
                subject: Some(id.to_string()),
                detail,
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Records the fee paid at the counter (the amount must be the profile's fee).
pub async fn record_fee(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
    amount_cents: i64,
    method: &str,
    receipt: &str,
) -> Result<()> {
    let store = auth.store();
    let r = staff_owned(store, staff, id).await?;
    open_at(&r, None)?;
    let profile: String = r.try_get(2)?;
    let due = auth.config().ra.fees.get(&profile).copied().unwrap_or(0);
    if amount_cents != i64::from(due) {
        return Err(invalid(
            "amount",
            format!("the fee for {profile} is HK${}.{:02}", due / 100, due % 100),
        ));
    }
    if !["cash", "octopus", "card", "cheque"].contains(&method) {
        return Err(invalid("method", "cash, octopus, card or cheque"));
    }
    check_len("receipt", receipt, 1, 40)?;
    let mut tx = store.begin().await?;
    sqlx::query(
        "UPDATE applications SET fee_amount = $2, fee_method = $3, fee_receipt = $4, fee_by = $5, fee_at = $6, updated_at = $6 WHERE id = $1",
    )
    .bind(id)
    .bind(amount_cents)
    .bind(method)
    .bind(receipt.trim())
    .bind(&staff.staff)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.fee.recorded",
                actor: format!("staff:{}", staff.username),
                subject: Some(id.to_string()),
                detail: json!({ "amount_cents": amount_cents, "method": method, "receipt": receipt.trim() }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A clerk's correction of contact details from the paper form or the applicant: a new version
/// (approvals of the old one stop counting); a changed e-mail must be confirmed again, and the
/// new code is returned to be sent.
pub async fn amend_contact(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
    version: i64,
    email: Option<&str>,
    phone: Option<&str>,
    address: Option<&str>,
) -> Result<Option<String>> {
    let store = auth.store();
    let vault = auth.pii()?;
    let r = staff_owned(store, staff, id).await?;
    open_at(&r, None)?;
    let mut tx = store.begin().await?;
    let t = now();
    let res = sqlx::query("UPDATE applications SET version = version + 1, updated_at = $3 WHERE id = $1 AND version = $2 AND state = 'submitted'")
        .bind(id)
        .bind(version)
        .bind(t)
        .execute(&mut *tx)
        .await?;
    if res.rows_affected() != 1 {
        return Err(changed());
    }
    let mut code = None;
    if let Some(email) = email {
        let profile = Profile::get(&r.try_get::<String, _>(2)?)?;
        let subject = SubjectData {
            surname: Some(r.try_get(5)?),
            given_name: Some(r.try_get(6)?),
            emails: vec![email.trim().to_string()],
            ..Default::default()
        };
        let subject = profile
            .check(&subject, None, time::OffsetDateTime::now_utc())
            .map_err(|e| match e {
                Error::Profile { reason, .. } => invalid("email", reason),
                other => other,
            })?;
        let c = format!(
            "{:06}",
            rand::Rng::gen_range(&mut rand::rngs::OsRng, 0..1_000_000u32)
        );
        sqlx::query(
            "UPDATE applications SET email = $2, email_confirmed_at = NULL, email_code_hash = $3, email_code_expires = $4, email_code_attempts = 0 WHERE id = $1",
        )
        .bind(id)
        .bind(subject.emails.first().cloned().unwrap_or_default())
        .bind(sha256(&[b"email-code", id.as_bytes(), c.as_bytes()]))
        .bind(t + i64::from(auth.config().ra.email_code_minutes) * 60)
        .execute(&mut *tx)
        .await?;
        code = Some(c);
    }
    if let Some(phone) = phone {
        sqlx::query("UPDATE applications SET phone_sealed = $2 WHERE id = $1")
            .bind(id)
            .bind(vault.seal(Field::Phone, id, phone.trim())?)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(address) = address {
        check_len("address", address, 5, 300)?;
        sqlx::query("UPDATE applications SET address_sealed = $2 WHERE id = $1")
            .bind(id)
            .bind(vault.seal(Field::Address, id, address.trim())?)
            .execute(&mut *tx)
            .await?;
    }
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.application.amended",
                actor: format!("staff:{}", staff.username),
                subject: Some(id.to_string()),
                detail: json!({ "new_version": version + 1, "email": email.is_some(), "phone": phone.is_some(), "address": address.is_some() }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(code)
}

/// The clerk's check of the organisation for this version: the Business Registration
/// Certificate sighted and its number typed (it must match the application's), and the
/// organisation's written authorisation of the Authorised Representative sighted (S/MIME BR
/// §3.2.3, TLS BR §3.2.2.1 and §3.2.5). A mismatch withdraws an earlier check.
pub async fn check_organisation(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
    version: i64,
    typed_br: &str,
    documents_sighted: bool,
) -> Result<()> {
    let store = auth.store();
    let r = staff_owned(store, staff, id).await?;
    open_at(&r, Some(version))?;
    let Some(stored) = r.try_get::<Option<String>, _>(23)? else {
        return Err(Error::Conflict(
            "a personal application has no organisation to check".into(),
        ));
    };
    if !documents_sighted {
        return Err(invalid(
            "documents_sighted",
            "confirm that you have seen the business registration certificate and the authorisation",
        ));
    }
    let matched = business_registration_number(typed_br)? == stored;
    record_check(
        store,
        staff,
        id,
        version,
        CounterCheck::Organisation,
        matched,
        json!({ "version": version, "documents_sighted": documents_sighted }),
    )
    .await?;
    if matched {
        Ok(())
    } else {
        Err(invalid(
            "org_id",
            "the number on the business registration certificate does not match the application: do not approve",
        ))
    }
}

/// [`minor_days`] now, from the application's sealed date of birth.
fn minor_validity(auth: &Authority, id: &str, profile: &Profile, dob_sealed: &[u8]) -> Result<u32> {
    let dob = auth.pii()?.open_field(Field::DateOfBirth, id, dob_sealed)?;
    minor_days(profile, &dob, time::OffsetDateTime::now_utc())
}

/// The validity of a minor's certificate: the profile's default, but ending before the
/// holder's 18th birthday (e-Cert (Personal/Minor) holders move to e-Cert (Personal) at 18).
fn minor_days(profile: &Profile, dob: &str, now: time::OffsetDateTime) -> Result<u32> {
    let dob = time::Date::parse(
        dob,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| Error::Conflict("the stored date of birth is not readable".into()))?;
    let year = dob.year() + 18;
    // Born on 29 February: the 18th birthday is 1 March in a common year.
    let eighteen = time::Date::from_calendar_date(year, dob.month(), dob.day())
        .or_else(|_| time::Date::from_calendar_date(year, time::Month::March, 1))
        .map_err(|_| Error::Conflict("the stored date of birth is not readable".into()))?;
    let left = (eighteen - now.date()).whole_days() - 1;
    if left < 1 {
        return Err(Error::Conflict(
            "the applicant is 18 or about to be: apply for e-Cert (Personal) instead".into(),
        ));
    }
    Ok(u32::try_from(left)
        .unwrap_or(u32::MAX)
        .min(profile.days_for(None, now)))
}

/// One DNS name of a server application and where its validation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainStatus {
    /// The name applied for.
    pub domain: String,
    /// Where the applicant publishes the TXT record.
    pub record: String,
    /// Validated with the current Random Value, within the reuse period.
    pub validated: bool,
    /// Why the last check did not validate it (set only by [`validate_domains`]).
    pub problem: Option<String>,
}

/// The Random Value and the state of each name (an application without DNS names: `None` and
/// nothing).
async fn domain_status(store: &Store, id: &str) -> Result<(Option<String>, Vec<DomainStatus>)> {
    let r = sqlx::query("SELECT dns_names, dcv_token FROM applications WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await?;
    let names: Option<String> = r.try_get(0)?;
    let token: Option<String> = r.try_get(1)?;
    let since = now() - crate::dcv::reuse_days(time::OffsetDateTime::now_utc()) * 86_400;
    let done: Vec<String> = sqlx::query(
        "SELECT domain FROM domain_validations WHERE application = $1 AND token = $2 AND validated_at > $3",
    )
    .bind(id)
    .bind(token.clone().unwrap_or_default())
    .bind(since)
    .fetch_all(store.pool())
    .await?
    .iter()
    .map(|r| r.try_get::<String, _>(0))
    .collect::<std::result::Result<_, _>>()?;
    let list = names
        .unwrap_or_default()
        .split_whitespace()
        .map(|d| DomainStatus {
            domain: d.to_string(),
            record: crate::dcv::record_name(d),
            validated: done.iter().any(|v| v == d),
            problem: None,
        })
        .collect();
    Ok((token, list))
}

/// Checks domain control (TLS BR §3.2.2.4.7) for every name of an open server application not
/// yet validated, and records each success with its method and Random Value. A Random Value
/// older than [`crate::dcv::TOKEN_DAYS`] is replaced first (and earlier validations with it no
/// longer count): the applicant must publish the new one. Returns the Random Value and each
/// name's state.
pub async fn validate_domains(
    auth: &Authority,
    id: &str,
    actor: &str,
) -> Result<(String, Vec<DomainStatus>)> {
    let store = auth.store();
    let r = sqlx::query("SELECT state, dcv_token, dcv_token_at FROM applications WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await?;
    if r.try_get::<String, _>(0)? != "submitted" {
        return Err(not_open());
    }
    let (Some(mut token), Some(made)) = (
        r.try_get::<Option<String>, _>(1)?,
        r.try_get::<Option<i64>, _>(2)?,
    ) else {
        return Err(Error::Conflict(
            "only server applications have domains to validate".into(),
        ));
    };
    if now() - made > crate::dcv::TOKEN_DAYS * 86_400 {
        let fresh = dcv_token();
        let mut tx = store.begin().await?;
        // Compare-and-set: of two checks at once, one makes the new value; the other uses it.
        let res = sqlx::query(
            "UPDATE applications SET dcv_token = $2, dcv_token_at = $3, updated_at = $3 WHERE id = $1 AND dcv_token_at = $4",
        )
        .bind(id)
        .bind(&fresh)
        .bind(now())
        .bind(made)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() != 1 {
            tx.rollback().await?;
            return Box::pin(validate_domains(auth, id, actor)).await;
        }
        token = fresh;
        store
            .audit(
                &mut tx,
                &Event {
                    kind: "ra.domain.new_value",
                    actor: actor.to_string(),
                    subject: Some(id.to_string()),
                    detail: json!({ "reason": "the Random Value was older than 30 days" }),
                },
            )
            .await?;
        tx.commit().await?;
    }
    let (_, mut list) = domain_status(store, id).await?;
    let dcv = &auth.config().dcv;
    let checker = crate::dcv::Checker::new(dcv)?;
    // The primary perspective (this host's resolver) first.
    let mut found = Vec::new();
    for (i, d) in list.iter_mut().enumerate().filter(|(_, d)| !d.validated) {
        match checker.domain_control(&d.domain, &token).await {
            Ok(true) => found.push(i),
            Ok(false) => {
                d.problem = Some(format!("no TXT record at {} holds the value", d.record));
            }
            Err(e) => d.problem = Some(e.to_string()),
        }
    }
    // Then the remote perspectives must see the same value (TLS BR §3.2.2.9).
    let mut perspectives = serde_json::Value::Null;
    if !found.is_empty() {
        match crate::mpic::required(dcv) {
            Ok(false) => {}
            Ok(true) => {
                let req = crate::mpic::CheckRequest {
                    txt: found
                        .iter()
                        .map(|&i| crate::mpic::TxtCheck {
                            name: list[i].record.clone(),
                            value: token.clone(),
                        })
                        .collect(),
                    ..Default::default()
                };
                let answers = crate::mpic::ask(dcv, &req).await;
                let failed = crate::mpic::uncorroborated(
                    &req,
                    &answers,
                    &dcv.perspectives,
                    time::OffsetDateTime::now_utc(),
                );
                perspectives = json!(answers
                    .iter()
                    .map(|(name, a)| json!({ "perspective": name, "answered": a.is_some(), "txt": a.as_ref().map(|a| a.txt.clone()) }))
                    .collect::<Vec<_>>());
                for k in failed.into_iter().rev() {
                    let i = found.remove(k);
                    list[i].problem = Some(
                        "the remote network perspectives did not corroborate the record (TLS BR §3.2.2.9): check that it is published on every name server".into(),
                    );
                }
            }
            Err(e) => {
                for &i in &found {
                    list[i].problem = Some(e.to_string());
                }
                found.clear();
            }
        }
    }
    for i in found {
        let d = &mut list[i];
        let t = now();
        let mut tx = store.begin().await?;
        // An upsert: two checks at once both succeed.
        sqlx::query(
            "INSERT INTO domain_validations (application, domain, token, method, validated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (application, domain) DO UPDATE SET token = excluded.token, method = excluded.method, \
             validated_at = excluded.validated_at",
        )
        .bind(id)
        .bind(&d.domain)
        .bind(&token)
        .bind(crate::dcv::METHOD)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        store
            .audit(
                &mut tx,
                &Event {
                    kind: "ra.domain.validated",
                    actor: actor.to_string(),
                    subject: Some(id.to_string()),
                    detail: json!({ "domain": d.domain, "record": d.record, "method": crate::dcv::METHOD, "random_value": token, "perspectives": perspectives }),
                },
            )
            .await?;
        tx.commit().await?;
        d.validated = true;
    }
    Ok((token, list))
}

/// [`validate_domains`] for the applicant (reference and tracking secret).
pub async fn validate_domains_online(
    auth: &Authority,
    reference: &str,
    secret: &str,
) -> Result<(String, Vec<DomainStatus>)> {
    let id = owned(auth.store(), reference, secret).await?;
    validate_domains(
        auth,
        &id,
        &format!("citizen:{}", reference.trim().to_uppercase()),
    )
    .await
}

/// [`validate_domains`] for a member of staff of the application's outlet.
pub async fn validate_domains_at_counter(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
) -> Result<(String, Vec<DomainStatus>)> {
    staff_owned(auth.store(), staff, id).await?;
    validate_domains(auth, id, &format!("staff:{}", staff.username)).await
}

/// CAA for every name just before issuance; each outcome is an audit event.
async fn check_caa(auth: &Authority, id: &str, names: &[String], actor: &str) -> Result<()> {
    let dcv = &auth.config().dcv;
    let checker = crate::dcv::Checker::new(dcv)?;
    let mut outcome = Ok(());
    for n in names {
        if let Err(e) = checker.caa(n).await {
            outcome = Err(e);
            break;
        }
    }
    // The remote perspectives must also find that CAA permits this CA (TLS BR §3.2.2.9).
    let mut perspectives = serde_json::Value::Null;
    if outcome.is_ok() {
        outcome = match crate::mpic::required(dcv) {
            Ok(false) => Ok(()),
            Err(e) => Err(e),
            Ok(true) => {
                let req = crate::mpic::CheckRequest {
                    caa: names.to_vec(),
                    identities: dcv.caa_identities.clone(),
                    ..Default::default()
                };
                let answers = crate::mpic::ask(dcv, &req).await;
                perspectives = json!(answers
                    .iter()
                    .map(|(name, a)| json!({ "perspective": name, "answered": a.is_some(), "caa": a.as_ref().map(|a| a.caa.clone()) }))
                    .collect::<Vec<_>>());
                match crate::mpic::uncorroborated(&req, &answers, &dcv.perspectives, time::OffsetDateTime::now_utc()).first() {
                    None => Ok(()),
                    Some(&i) => Err(Error::CaaForbids {
                        domain: names[i].clone(),
                        reason: "the remote network perspectives did not corroborate that CAA permits this CA (TLS BR §3.2.2.9)".into(),
                    }),
                }
            }
        };
    }
    let store = auth.store();
    let mut tx = store.begin().await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: if outcome.is_ok() {
                    "ra.caa.checked"
                } else {
                    "ra.caa.refused"
                },
                actor: actor.to_string(),
                subject: Some(id.to_string()),
                detail: json!({ "names": names, "error": outcome.as_ref().err().map(ToString::to_string), "perspectives": perspectives }),
            },
        )
        .await?;
    tx.commit().await?;
    outcome
}

/// A decision on an application.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Approve (the first or the second of dual control).
    Approve,
    /// Reject, with the reason told to the applicant.
    Reject(String),
}

/// What a decision led to.
#[derive(Debug, Clone)]
pub enum Decided {
    /// Issued: the serial, and where to tell the applicant.
    Issued {
        /// The certificate's serial.
        serial: String,
        /// The applicant's e-mail.
        email: String,
        /// Reference.
        reference: String,
    },
    /// One approval recorded; a second member of staff must approve.
    AwaitingSecond,
    /// Rejected.
    Rejected {
        /// The applicant's e-mail.
        email: String,
        /// Reference.
        reference: String,
    },
}

/// Approves or rejects `version` of an application. Approval needs the e-mail confirmed, the
/// identity checked for this version and the fee recorded; a dual-control profile needs
/// approvals from two different members of staff within `ra.approval_hours`; one rejection
/// rejects. The approval that completes the set claims the application (compare-and-set to
/// `approved`) and issues through the issuance core.
pub async fn decide(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
    version: i64,
    decision: Decision,
) -> Result<Decided> {
    let store = auth.store();
    let r = staff_owned(store, staff, id).await?;
    open_at(&r, Some(version))?;
    let profile: String = r.try_get(2)?;
    let email: String = r.try_get(8)?;
    let reference: String = r.try_get(1)?;
    let t = now();
    let expires = t + i64::from(auth.config().ra.approval_hours) * 3600;
    let actor = format!("staff:{}", staff.username);
    if let Decision::Reject(reason) = &decision {
        check_len("reason", reason, 3, 500)?;
    } else {
        match r.try_get::<Option<i64>, _>(9)? {
            None => {
                return Err(Error::Conflict(
                    "the e-mail address is not confirmed yet".into(),
                ))
            }
            Some(at) if now() - at > MAILBOX_VALIDATION_DAYS * 86_400 => {
                return Err(Error::Conflict(format!(
                    "the e-mail address was confirmed more than {MAILBOX_VALIDATION_DAYS} days ago: send the applicant a new code (S/MIME BR §4.2.1)"
                )))
            }
            Some(_) => {}
        }
        if r.try_get::<Option<i64>, _>(14)? != Some(version) {
            return Err(Error::Conflict(
                "the identity check has not been done for this version".into(),
            ));
        }
        if r.try_get::<Option<i64>, _>(15)?.is_none() {
            return Err(Error::Conflict("the fee has not been recorded".into()));
        }
        let kind = Profile::get(&profile)?.kind;
        if kind != ProfileKind::Personal && r.try_get::<Option<i64>, _>(29)? != Some(version) {
            return Err(Error::Conflict(
                "the organisation's documents have not been checked for this version".into(),
            ));
        }
        if kind == ProfileKind::Server {
            let pending: Vec<String> = domain_status(store, id)
                .await?
                .1
                .into_iter()
                .filter(|d| !d.validated)
                .map(|d| d.domain)
                .collect();
            if !pending.is_empty() {
                return Err(Error::Conflict(format!(
                    "domain control is not validated for {}",
                    pending.join(", ")
                )));
            }
        }
    }
    let mut tx = store.begin().await?;
    // One decision at a time per application (PostgreSQL; SQLite's writer lock does this).
    if store.engine() == crate::store::Engine::Postgres {
        sqlx::query("SELECT id FROM applications WHERE id = $1 FOR UPDATE")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    if matches!(decision, Decision::Approve)
        && staff.role == Role::Clerk
        && auth.config().ra.dual_control.contains(&profile)
    {
        // Dual control: two different people, at least one of them a supervisor or officer.
        let r = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN st.role IN ('supervisor', 'officer') THEN 1 ELSE 0 END), 0) \
             FROM approvals a JOIN staff st ON st.id = a.staff \
             WHERE a.application = $1 AND a.version = $2 AND a.decision = 'approve' AND a.expires_at > $3 AND a.staff <> $4",
        )
        .bind(id)
        .bind(version)
        .bind(t)
        .bind(&staff.staff)
        .fetch_one(&mut *tx)
        .await?;
        let (others, senior): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
        if others > 0 && senior == 0 {
            return Err(Error::Forbidden(
                "the second approval of this profile must come from a supervisor".into(),
            ));
        }
    }
    let earlier = sqlx::query("SELECT decision, expires_at FROM approvals WHERE application = $1 AND version = $2 AND staff = $3")
        .bind(id)
        .bind(version)
        .bind(&staff.staff)
        .fetch_optional(&mut *tx)
        .await?;
    let needed = if auth.config().ra.dual_control.contains(&profile) {
        2
    } else {
        1
    };
    let count_approvals = || {
        sqlx::query(
            "SELECT COUNT(DISTINCT staff) FROM approvals WHERE application = $1 AND version = $2 AND decision = 'approve' AND expires_at > $3",
        )
        .bind(id)
        .bind(version)
        .bind(t)
    };
    // An approval of one's own that still counts: if the set is complete, the issuance it
    // started failed (e.g. CAA forbade it, or the HSM was down) and this approval retries it;
    // otherwise someone else must approve.
    let mut retry = false;
    if let Some(e) = earlier {
        if e.try_get::<i64, _>(1)? > t {
            let complete = count_approvals()
                .fetch_one(&mut *tx)
                .await?
                .try_get::<i64, _>(0)?
                >= needed;
            if !(matches!(decision, Decision::Approve)
                && e.try_get::<String, _>(0)? == "approve"
                && complete)
            {
                return Err(Error::Conflict(
                    "you have already decided on this application: a second approval must come from someone else".into(),
                ));
            }
            retry = true;
        } else {
            // An expired approval of one's own may be renewed.
            sqlx::query(
                "DELETE FROM approvals WHERE application = $1 AND version = $2 AND staff = $3",
            )
            .bind(id)
            .bind(version)
            .bind(&staff.staff)
            .execute(&mut *tx)
            .await?;
        }
    }
    let (kind, word) = match &decision {
        Decision::Approve if retry => ("ra.issuance.retried", "approve"),
        Decision::Approve => ("ra.approval", "approve"),
        Decision::Reject(_) => ("ra.rejection", "reject"),
    };
    if !retry {
        sqlx::query("INSERT INTO approvals (application, version, staff, decision, at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id)
            .bind(version)
            .bind(&staff.staff)
            .bind(word)
            .bind(t)
            .bind(expires)
            .execute(&mut *tx)
            .await?;
    }
    let reason = match &decision {
        Decision::Reject(reason) => Some(reason.trim().to_string()),
        Decision::Approve => None,
    };
    store
        .audit(
            &mut tx,
            &Event {
                kind,
                actor: actor.clone(),
                subject: Some(id.to_string()),
                detail: json!({ "version": version, "reason": reason }),
            },
        )
        .await?;
    if let Some(reason) = reason {
        let res = sqlx::query("UPDATE applications SET state = 'rejected', rejected_reason = $2, updated_at = $3 WHERE id = $1 AND state = 'submitted' AND version = $4")
            .bind(id)
            .bind(&reason)
            .bind(t)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() != 1 {
            return Err(changed());
        }
        tx.commit().await?;
        return Ok(Decided::Rejected { email, reference });
    }
    let approvals: i64 = count_approvals().fetch_one(&mut *tx).await?.try_get(0)?;
    if approvals < needed {
        tx.commit().await?;
        return Ok(Decided::AwaitingSecond);
    }
    // Claim: exactly one decision issues.
    let res = sqlx::query("UPDATE applications SET state = 'approved', issue_error = NULL, updated_at = $2 WHERE id = $1 AND state = 'submitted' AND version = $3")
        .bind(id)
        .bind(t)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    if res.rows_affected() != 1 {
        return Err(changed());
    }
    tx.commit().await?;
    let csr_bytes: Vec<u8> = r.try_get(21)?;
    let profile_def = Profile::get(&profile)?;
    let kind = profile_def.kind;
    // Back to open: the approvals stay; staff see why (a staff member whose approval still
    // counts retries by approving again).
    let back_to_open = |e: Error| async move {
        sqlx::query(
            "UPDATE applications SET state = 'submitted', certificate = NULL, issue_error = $3, updated_at = $2 \
             WHERE id = $1 AND state = 'approved'",
        )
        .bind(id)
        .bind(now())
        .bind(e.to_string())
        .execute(store.pool())
        .await?;
        Err::<Decided, Error>(e)
    };
    let prepared = (|| -> Result<(SubjectData, Option<u32>)> {
        let dns: Option<String> = r.try_get(26)?;
        let subject = subject_of(
            profile_def,
            &NewApplication {
                surname: r.try_get(5)?,
                given_name: r.try_get(6)?,
                email: email.clone(),
                organization: r.try_get::<Option<String>, _>(22)?.unwrap_or_default(),
                org_id: r.try_get::<Option<String>, _>(23)?.unwrap_or_default(),
                user_surname: r.try_get::<Option<String>, _>(24)?.unwrap_or_default(),
                user_given_name: r.try_get::<Option<String>, _>(25)?.unwrap_or_default(),
                user_title: r.try_get::<Option<String>, _>(30)?.unwrap_or_default(),
                dns_names: dns
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                ..Default::default()
            },
        )?;
        let days = if profile_def.minor {
            Some(minor_validity(
                auth,
                id,
                profile_def,
                &r.try_get::<Vec<u8>, _>(11)?,
            )?)
        } else {
            None
        };
        Ok((subject, days))
    })();
    let (subject, days) = match prepared {
        Ok(v) => v,
        Err(e) => {
            return back_to_open(e).await;
        }
    };
    // CAA just before issuance (TLS BR §3.2.2.8), for every name; a refusal is recorded (the BR
    // asks CAs to document prevented issuances) and the application opens again.
    if kind == ProfileKind::Server {
        if let Err(e) = check_caa(auth, id, &subject.dns_names, &actor).await {
            return back_to_open(e).await;
        }
    }
    let request = ApprovedRequest {
        profile: profile.clone(),
        csr: VerifiedCsr::parse(&csr_bytes)?,
        subject,
        days,
        renews: None,
        actor: actor.clone(),
    };
    // The serial is recorded on the application before the HSM signs, so a crash or a failed
    // write afterwards leaves a trail that `settle` follows (never an orphan certificate).
    let token = match auth.prepare(request).await {
        Ok(t) => t,
        Err(e) => {
            return back_to_open(e).await;
        }
    };
    let serial = token.serial().to_hex();
    // Still as this decision claimed it (nothing touched it since: a very slow CAA check could
    // have let `settle` reopen it)? Otherwise nothing is signed.
    let recorded = sqlx::query(
        "UPDATE applications SET certificate = $2, updated_at = $3 \
         WHERE id = $1 AND state = 'approved' AND certificate IS NULL AND updated_at = $4",
    )
    .bind(id)
    .bind(&serial)
    .bind(now())
    .bind(t)
    .execute(store.pool())
    .await?;
    if recorded.rows_affected() != 1 {
        auth.withdraw(token, "the application changed while it was being issued")
            .await;
        return Err(changed());
    }
    if let Err(e) = auth.sign(token).await {
        // The serial stays on the application: `settle` follows the certificate's own state
        // (issued after all if only the last write failed; open again if it failed or was
        // abandoned), so a retry can never issue a second certificate beside a first.
        sqlx::query("UPDATE applications SET issue_error = $2 WHERE id = $1")
            .bind(id)
            .bind(e.to_string())
            .execute(store.pool())
            .await?;
        settle(store, id).await?;
        return Err(e);
    }
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE applications SET state = 'issued', updated_at = $2 WHERE id = $1 AND state = 'approved'")
        .bind(id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.issued",
                actor,
                subject: Some(id.to_string()),
                detail: json!({ "serial": serial, "version": version }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(Decided::Issued {
        serial,
        email,
        reference,
    })
}

/// Finishes what an interrupted decision or renewal left half-done (a crash or a failed write
/// after the certificate was signed): an `approved` application whose certificate was issued
/// becomes `issued`; one whose issuance failed or was abandoned, or that has no serial ten
/// minutes after its claim, is open again; an application whose certificate was renewed points
/// at the renewal. Run before every read of an application.
async fn settle(store: &Store, id: &str) -> Result<()> {
    // One read; a write only when something is half-done (reads are the common case, and on
    // SQLite every UPDATE takes the writer lock even when it changes nothing).
    let Some(r) = sqlx::query(
        "SELECT a.state, c.state, n.state, a.updated_at FROM applications a \
         LEFT JOIN certificates c ON c.serial = a.certificate \
         LEFT JOIN certificates n ON n.serial = c.renewed_by WHERE a.id = $1",
    )
    .bind(id)
    .fetch_optional(store.pool())
    .await?
    else {
        return Ok(());
    };
    let state: String = r.try_get(0)?;
    let cert_state: Option<String> = r.try_get(1)?;
    let renewal_state: Option<String> = r.try_get(2)?;
    let updated_at: i64 = r.try_get(3)?;
    let t = now();
    let sql = match (state.as_str(), cert_state.as_deref(), renewal_state.as_deref()) {
        ("approved", Some("issued"), _) => {
            "UPDATE applications SET state = 'issued', updated_at = $2 WHERE id = $1 AND state = 'approved'"
        }
        ("approved", Some("failed" | "abandoned"), _) => {
            "UPDATE applications SET state = 'submitted', certificate = NULL, \
             issue_error = COALESCE(issue_error, 'the issuance did not complete'), updated_at = $2 WHERE id = $1 AND state = 'approved'"
        }
        ("approved", None, _) if updated_at < t - 600 => {
            "UPDATE applications SET state = 'submitted', issue_error = 'the issuance did not complete', updated_at = $2 \
             WHERE id = $1 AND state = 'approved' AND certificate IS NULL"
        }
        ("issued", _, Some("issued")) => {
            "UPDATE applications SET certificate = (SELECT c.renewed_by FROM certificates c WHERE c.serial = applications.certificate), \
             updated_at = $2 WHERE id = $1 AND state = 'issued'"
        }
        _ => return Ok(()),
    };
    sqlx::query(sql)
        .bind(id)
        .bind(t)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// The certificate (DER) of a citizen's application, once issued.
pub async fn certificate(store: &Store, reference: &str, secret: &str) -> Result<Vec<u8>> {
    let id = owned(store, reference, secret).await?;
    let r = sqlx::query("SELECT c.cert_der FROM applications a JOIN certificates c ON c.serial = a.certificate WHERE a.id = $1")
        .bind(&id)
        .fetch_optional(store.pool())
        .await?
        .ok_or_else(|| Error::Conflict("the certificate has not been issued yet".into()))?;
    r.try_get::<Option<Vec<u8>>, _>(0)?
        .ok_or_else(|| Error::Conflict("the certificate has not been issued yet".into()))
}

/// In-person revocation (or hold, on the Individual & Organisational CA) of the certificate of
/// an application of the staff member's outlet, after the clerk checked the subscriber's
/// identity at the counter (BR §4.9.3).
pub async fn revoke_at_counter(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
    reason: crate::revocation::Reason,
) -> Result<String> {
    let r = staff_owned(auth.store(), staff, id).await?;
    let serial: Option<String> = r.try_get(19)?;
    let serial = serial.ok_or_else(|| Error::Conflict("no certificate has been issued".into()))?;
    let s = SerialNumber::from_hex(&serial).ok_or(Error::NotFound)?;
    auth.revoke(s, reason, &format!("staff:{}", staff.username))
        .await?;
    Ok(serial)
}

/// Purges the personal data of applications that ended without a certificate — rejected
/// ones, and ones never completed — `ra.retention_days` after their last change (DESIGN.md
/// "Personal data and trust"; PDPO DPP2(2): not kept longer than necessary). The sealed fields,
/// the blind index and the CSR are emptied and an open application is closed as rejected; the
/// reference, state and audit trail stay. Returns how many were purged.
pub async fn purge(auth: &Authority, now: i64) -> Result<u64> {
    let store = auth.store();
    let days = i64::from(auth.config().ra.retention_days);
    let cut = now - days * 86_400;
    let empty: Vec<u8> = Vec::new();
    let mut tx = store.begin().await?;
    let res = sqlx::query(
        "UPDATE applications SET state = 'rejected', \
         rejected_reason = COALESCE(rejected_reason, $3), \
         hkid_sealed = $2, hkid_index = $2, dob_sealed = $2, phone_sealed = $2, address_sealed = $2, csr = $2, \
         email_code_hash = NULL, updated_at = $1 \
         WHERE length(hkid_sealed) > 0 AND state IN ('rejected', 'submitted') AND updated_at < $4",
    )
    .bind(now)
    .bind(empty)
    .bind(format!("not completed within {days} days"))
    .bind(cut)
    .execute(&mut *tx)
    .await?;
    let n = res.rows_affected();
    if n > 0 {
        store
            .audit(
                &mut tx,
                &Event {
                    kind: "ra.purged",
                    actor: "system:retention".into(),
                    subject: None,
                    detail: json!({ "applications": n, "retention_days": days }),
                },
            )
            .await?;
    }
    tx.commit().await?;
    Ok(n)
}

/// Releases a hold at the counter (Individual & Organisational CA; RFC 5280 §5.3.1
/// certificateHold is the only reversible status).
pub async fn release_at_counter(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
) -> Result<String> {
    let r = staff_owned(auth.store(), staff, id).await?;
    let serial: Option<String> = r.try_get(19)?;
    let serial = serial.ok_or_else(|| Error::Conflict("no certificate has been issued".into()))?;
    let s = SerialNumber::from_hex(&serial).ok_or(Error::NotFound)?;
    auth.release(s, &format!("staff:{}", staff.username))
        .await?;
    Ok(serial)
}

// ---------------------------------------------------------------------------------------------
// Staff administration.

/// One staff account as `ecert staff list` shows it.
#[derive(Debug, Clone)]
pub struct StaffRow {
    /// User name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Outlet.
    pub outlet: String,
    /// Role.
    pub role: String,
    /// Whether the account is disabled.
    pub disabled: bool,
}

/// Every staff account.
pub async fn list_staff(store: &Store) -> Result<Vec<StaffRow>> {
    let rows = sqlx::query(
        "SELECT username, display_name, outlet, role, disabled FROM staff ORDER BY username",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(StaffRow {
                username: r.try_get(0)?,
                display_name: r.try_get(1)?,
                outlet: r.try_get(2)?,
                role: r.try_get(3)?,
                disabled: r.try_get::<i64, _>(4)? != 0,
            })
        })
        .collect()
}

async fn staff_id(tx: &mut crate::store::Tx, username: &str) -> Result<String> {
    Ok(sqlx::query("SELECT id FROM staff WHERE username = $1")
        .bind(username)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(Error::NotFound)?
        .try_get(0)?)
}

/// Disables (or enables again) a staff account. Disabling ends its sessions; its API tokens
/// stop working while it is disabled.
pub async fn set_staff_disabled(
    store: &Store,
    username: &str,
    disabled: bool,
    actor: &str,
) -> Result<()> {
    let mut tx = store.begin().await?;
    let id = staff_id(&mut tx, username).await?;
    sqlx::query("UPDATE staff SET disabled = $2 WHERE id = $1")
        .bind(&id)
        .bind(i64::from(disabled))
        .execute(&mut *tx)
        .await?;
    if disabled {
        sqlx::query("DELETE FROM staff_sessions WHERE staff = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
    }
    store
        .audit(
            &mut tx,
            &Event {
                kind: if disabled {
                    "ra.staff.disabled"
                } else {
                    "ra.staff.enabled"
                },
                actor: actor.to_string(),
                subject: Some(id),
                detail: json!({ "username": username }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A new TOTP secret for a staff member (a lost phone); ends their sessions. Returns the secret
/// to enrol (shown once).
pub async fn reset_totp(
    store: &Store,
    vault: &crate::pii::Vault,
    username: &str,
    actor: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut tx = store.begin().await?;
    let id = staff_id(&mut tx, username).await?;
    let secret = Zeroizing::new(crate::totp::new_secret().to_vec());
    let sealed = vault.seal(
        Field::TotpSecret,
        &id,
        &data_encoding::BASE32_NOPAD.encode(&secret),
    )?;
    sqlx::query("UPDATE staff SET totp_sealed = $2, totp_last_step = 0 WHERE id = $1")
        .bind(&id)
        .bind(sealed)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM staff_sessions WHERE staff = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.staff.totp_reset",
                actor: actor.to_string(),
                subject: Some(id),
                detail: json!({ "username": username }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(secret)
}

/// Revokes every API token of a staff member; returns how many were live.
pub async fn revoke_api_tokens(store: &Store, username: &str, actor: &str) -> Result<u64> {
    let mut tx = store.begin().await?;
    let id = staff_id(&mut tx, username).await?;
    let n = sqlx::query("UPDATE api_tokens SET revoked = 1 WHERE staff = $1 AND revoked = 0")
        .bind(&id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.api_token.revoked",
                actor: actor.to_string(),
                subject: Some(id),
                detail: json!({ "username": username, "tokens": n }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// API tokens.

/// Makes an API token for a staff member (printed once; only its SHA-256 is stored). The token
/// acts as that member: same outlet, same role, until it expires or the account is disabled.
pub async fn create_api_token(
    store: &Store,
    username: &str,
    label: &str,
    days: u32,
    actor: &str,
) -> Result<String> {
    check_len("label", label, 1, 80)?;
    if !(1..=366).contains(&days) {
        return Err(invalid("days", "1 to 366"));
    }
    let staff: String = sqlx::query("SELECT id FROM staff WHERE username = $1 AND disabled = 0")
        .bind(username)
        .fetch_optional(store.pool())
        .await?
        .ok_or(Error::NotFound)?
        .try_get(0)?;
    let token = format!("ecert_{}", random_base32(32));
    let t = now();
    let mut tx = store.begin().await?;
    sqlx::query("INSERT INTO api_tokens (token_hash, staff, label, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(sha256(&[b"api-token", token.as_bytes()]))
        .bind(&staff)
        .bind(label)
        .bind(t)
        .bind(t + i64::from(days) * 86_400)
        .execute(&mut *tx)
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.api_token.created",
                actor: actor.to_string(),
                subject: Some(staff),
                detail: json!({ "username": username, "label": label, "days": days }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(token)
}

/// The staff member behind an API token ([`Error::NotFound`] or [`Error::Expired`] otherwise).
pub async fn api_session(store: &Store, token: &str) -> Result<StaffSession> {
    let r = sqlx::query(
        "SELECT st.id, st.username, st.display_name, st.outlet, st.role, t.expires_at, t.revoked, st.disabled \
         FROM api_tokens t JOIN staff st ON st.id = t.staff WHERE t.token_hash = $1",
    )
    .bind(sha256(&[b"api-token", token.as_bytes()]))
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::NotFound)?;
    if r.try_get::<i64, _>(5)? < now()
        || r.try_get::<i64, _>(6)? != 0
        || r.try_get::<i64, _>(7)? != 0
    {
        return Err(Error::Expired("the API token is no longer valid".into()));
    }
    Ok(StaffSession {
        staff: r.try_get(0)?,
        username: r.try_get(1)?,
        display_name: r.try_get(2)?,
        outlet: r.try_get(3)?,
        role: Role::parse(&r.try_get::<String, _>(4)?)?,
        csrf: String::new(),
    })
}

/// The certificate (DER) of an application of the staff member's outlet.
pub async fn staff_certificate(store: &Store, staff: &StaffSession, id: &str) -> Result<Vec<u8>> {
    let r = staff_owned(store, staff, id).await?;
    let serial: Option<String> = r.try_get(19)?;
    let serial =
        serial.ok_or_else(|| Error::Conflict("the certificate has not been issued yet".into()))?;
    store
        .certificate(&serial)
        .await?
        .and_then(|c| c.cert_der)
        .ok_or_else(|| Error::Conflict("the certificate has not been issued yet".into()))
}

/// Shared handle for the web layer.
pub type Shared = Arc<Authority>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_facts() {
        assert_eq!(
            status_of("submitted", false, 0, false),
            Status::AwaitingEmail
        );
        assert_eq!(
            status_of("submitted", true, 0, false),
            Status::AwaitingVisit
        );
        assert_eq!(
            status_of("submitted", true, 1, false),
            Status::AwaitingSecondApproval
        );
        assert_eq!(
            status_of("submitted", true, 1, true),
            Status::IssuanceFailed
        );
        // A new version: the old approvals do not count, nor does the old failure.
        assert_eq!(status_of("submitted", true, 0, true), Status::AwaitingVisit);
        assert_eq!(status_of("issued", true, 2, false), Status::Issued);
        assert_eq!(status_of("rejected", true, 0, false), Status::Rejected);
    }

    #[test]
    fn passwords_hash_with_argon2id() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(password_matches("correct horse battery", &h));
        assert!(!password_matches("correct horse batterz", &h));
        assert!(!password_matches("x", "not a hash"));
    }

    fn form() -> NewApplication {
        NewApplication {
            profile: "personal".into(),
            surname: "Chan".into(),
            given_name: "Tai Man".into(),
            name_zh: "陳大文".into(),
            email: "tm.chan@example.hk".into(),
            hkid: crate::hkid::synthetic("Z", 683_451).expose().to_string(),
            date_of_birth: "1980-02-29".into(),
            phone: "+852 2921 2222".into(),
            address: "1 Connaught Place, Central".into(),
            outlet: "gpo".into(),
            consent_notices: false,
            revocation_secret: "a long secret".into(),
            csr: Vec::new(),
            language: "en".into(),
            entered_by: None,
            ..Default::default()
        }
    }

    #[test]
    fn form_validation_names_the_field_without_the_value() {
        let today = time::macros::date!(2026 - 11 - 23);
        assert!(validate(&form(), today).is_ok());
        type Mutation = Box<dyn Fn(&mut NewApplication)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("HKID", Box::new(|a| a.hkid = "Z683451(0)".into())),
            (
                "date_of_birth",
                Box::new(|a| a.date_of_birth = "2010-01-01".into()),
            ),
            (
                "date_of_birth",
                Box::new(|a| a.date_of_birth = "29/02/1980".into()),
            ),
            ("phone", Box::new(|a| a.phone = "123".into())),
            ("surname", Box::new(|a| a.surname = String::new())),
            ("address", Box::new(|a| a.address = "x".into())),
            (
                "revocation_secret",
                Box::new(|a| a.revocation_secret = "short".into()),
            ),
            ("email", Box::new(|a| a.email = "not an address".into())),
        ];
        for (field, mutate) in cases {
            let mut a = form();
            let original = a.clone();
            mutate(&mut a);
            let e = validate(&a, today)
                .err()
                .unwrap_or_else(|| panic!("{field} accepted"));
            let text = e.to_string();
            assert!(text.contains(field), "{field}: {text}");
            for secret in [&original.hkid, &a.phone, &a.date_of_birth] {
                assert!(!text.contains(secret.as_str()), "{text}");
            }
        }
    }
}

#[cfg(test)]
mod journey {
    use super::*;
    use crate::authority::test_ca_with;

    /// A CSR for `key`.
    pub(super) fn csr_for(key: &rcgen::KeyPair) -> Vec<u8> {
        rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(key)
            .unwrap()
            .der()
            .to_vec()
    }

    fn csr() -> Vec<u8> {
        csr_for(&rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap())
    }

    /// An application for `hkid` with `key`'s CSR, e-mail confirmed, identity checked and fee
    /// recorded by `clerk`: ready for a decision.
    pub(super) async fn ready_for_approval(
        auth: &Authority,
        clerk: &StaffSession,
        hkid: &Hkid,
        key: &rcgen::KeyPair,
    ) -> Submitted {
        let mut form = application(hkid);
        form.csr = csr_for(key);
        let sub = submit(auth, form).await.unwrap();
        confirm_email(auth.store(), &sub.reference, &sub.secret, &sub.email_code)
            .await
            .unwrap();
        check_identity(auth, clerk, &sub.id, 1, hkid.expose(), true, false)
            .await
            .unwrap();
        record_fee(auth, clerk, &sub.id, 5_000, "cash", "R")
            .await
            .unwrap();
        sub
    }

    /// The General Post Office with a clerk ("clerk1") and a supervisor ("super1"), both
    /// signed in.
    pub(super) async fn gpo_with_staff(auth: &Authority) -> (StaffSession, StaffSession) {
        ensure_outlet(auth.store(), "gpo", "General Post Office", "郵政總局")
            .await
            .unwrap();
        let (_, s1) = staff(auth, "clerk1", "gpo", Role::Clerk).await;
        let (_, s2) = staff(auth, "super1", "gpo", Role::Supervisor).await;
        (
            signed_in(auth, "clerk1", &s1, 0).await,
            signed_in(auth, "super1", &s2, 0).await,
        )
    }

    pub(super) async fn staff(
        auth: &Authority,
        name: &str,
        outlet: &str,
        role: Role,
    ) -> (String, Zeroizing<Vec<u8>>) {
        create_staff(
            auth.store(),
            &auth.pii().unwrap(),
            &NewStaff {
                username: name,
                display_name: name,
                outlet,
                role,
                password: "a password of some length",
            },
            "test",
        )
        .await
        .unwrap()
    }

    /// Signs in at a given step, so several sign-ins in one test each use a fresh code.
    pub(super) async fn signed_in(
        auth: &Authority,
        name: &str,
        secret: &[u8],
        step: i64,
    ) -> StaffSession {
        sqlx::query("UPDATE staff SET totp_last_step = $2 WHERE username = $1")
            .bind(name)
            .bind(now() / crate::totp::STEP - 2 + step)
            .execute(auth.store().pool())
            .await
            .unwrap();
        let code = crate::totp::code_at(secret, now());
        sign_in(auth, name, "a password of some length", &code)
            .await
            .unwrap()
            .session
    }

    pub(super) fn application(hkid: &Hkid) -> NewApplication {
        NewApplication {
            profile: "personal".into(),
            surname: "Chan".into(),
            given_name: "Tai Man".into(),
            name_zh: "陳大文".into(),
            email: "tm.chan@example.hk".into(),
            hkid: format!(
                "{}({})",
                &hkid.expose()[..hkid.expose().len() - 1],
                &hkid.expose()[hkid.expose().len() - 1..]
            ),
            date_of_birth: "1980-02-29".into(),
            phone: "+852 2921 2222".into(),
            address: "1 Connaught Place, Central".into(),
            outlet: "gpo".into(),
            consent_notices: false,
            revocation_secret: "my revocation words".into(),
            csr: csr(),
            language: "en".into(),
            entered_by: None,
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn citizen_to_certificate_with_every_refusal_on_the_way() {
        let (_dir, auth) = test_ca_with(|_| {}).await;
        let store = auth.store().clone();
        ensure_outlet(&store, "gpo", "General Post Office", "郵政總局")
            .await
            .unwrap();
        ensure_outlet(&store, "tst", "Tsim Sha Tsui", "尖沙咀")
            .await
            .unwrap();
        let (_, s1) = staff(&auth, "clerk1", "gpo", Role::Clerk).await;
        let (_, s3) = staff(&auth, "clerk3", "tst", Role::Clerk).await;
        let hkid = crate::hkid::synthetic("Z", 683_451);
        let sub = submit(&auth, application(&hkid)).await.unwrap();
        assert!(sub.reference.starts_with("EC-"));

        // Nothing personal in clear anywhere in the tables.
        let dump: Vec<String> = sqlx::query("SELECT * FROM applications")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (0..sqlx::Row::len(r))
                    .map(|i| {
                        r.try_get::<Option<String>, _>(i)
                            .ok()
                            .flatten()
                            .or_else(|| {
                                r.try_get::<Option<Vec<u8>>, _>(i)
                                    .ok()
                                    .flatten()
                                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                            })
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        for needle in [
            hkid.expose(),
            "683451",
            "2921 2222",
            "1980-02-29",
            "Connaught",
        ] {
            assert!(!dump.concat().contains(needle), "{needle} in clear");
        }

        // E-mail code: wrong, then right; tracking needs the secret.
        assert!(matches!(
            track(&store, &sub.reference, "wrong").await,
            Err(Error::NotFound)
        ));
        assert_eq!(
            track(&store, &sub.reference, &sub.secret)
                .await
                .unwrap()
                .status,
            Status::AwaitingEmail
        );
        let wrong = if sub.email_code == "000000" {
            "000001"
        } else {
            "000000"
        };
        assert!(matches!(
            confirm_email(&store, &sub.reference, &sub.secret, wrong).await,
            Err(Error::CodeRejected { attempts_left: 4 })
        ));
        confirm_email(&store, &sub.reference, &sub.secret, &sub.email_code)
            .await
            .unwrap();
        assert_eq!(
            track(&store, &sub.reference, &sub.secret)
                .await
                .unwrap()
                .status,
            Status::AwaitingVisit
        );

        // Staff: another outlet cannot see it.
        let other = signed_in(&auth, "clerk3", &s3, 0).await;
        assert!(matches!(
            staff_view(&auth, &other, &sub.id).await,
            Err(Error::NotFound)
        ));
        assert!(queue(&store, &other, None).await.unwrap().is_empty());
        let clerk = signed_in(&auth, "clerk1", &s1, 0).await;
        let q = queue(&store, &clerk, None).await.unwrap();
        assert_eq!(q.len(), 1);
        let view = staff_view(&auth, &clerk, &sub.id).await.unwrap();
        assert_eq!(view.hkid_masked, hkid.masked());
        assert!(!view.phone_masked.contains("2921"));

        // Approval before the counter steps is refused, then each step's refusals.
        assert!(matches!(
            decide(&auth, &clerk, &sub.id, 1, Decision::Approve).await,
            Err(Error::Conflict(_))
        ));
        let stranger = crate::hkid::synthetic("Z", 683_452);
        assert!(matches!(
            check_identity(&auth, &clerk, &sub.id, 1, stranger.expose(), true, false).await,
            Err(Error::Invalid { field: "hkid", .. })
        ));
        assert!(matches!(
            check_identity(&auth, &clerk, &sub.id, 1, hkid.expose(), false, false).await,
            Err(Error::Invalid {
                field: "card_sighted",
                ..
            })
        ));
        assert!(matches!(
            check_identity(&auth, &clerk, &sub.id, 1, "Z683451(0)", true, false).await,
            Err(Error::Hkid(_))
        ));
        check_identity(
            &auth,
            &clerk,
            &sub.id,
            1,
            &hkid.expose().to_lowercase(),
            true,
            false,
        )
        .await
        .unwrap();
        assert!(matches!(
            decide(&auth, &clerk, &sub.id, 1, Decision::Approve).await,
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            record_fee(&auth, &clerk, &sub.id, 4_800, "cash", "R-1").await,
            Err(Error::Invalid {
                field: "amount",
                ..
            })
        ));
        record_fee(&auth, &clerk, &sub.id, 5_000, "octopus", "R-1")
            .await
            .unwrap();
        assert!(matches!(
            decide(&auth, &clerk, &sub.id, 2, Decision::Approve).await,
            Err(Error::Conflict(_))
        ));
        let revealed = reveal(&auth, &clerk, &sub.id, Revealable::Hkid)
            .await
            .unwrap();
        assert_eq!(&*revealed, hkid.expose());

        // Approve: issued through the core.
        let Decided::Issued { serial, .. } = decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
            .await
            .unwrap()
        else {
            panic!("not issued");
        };
        let v = track(&store, &sub.reference, &sub.secret).await.unwrap();
        assert_eq!(
            (v.status, v.certificate.as_deref()),
            (Status::Issued, Some(serial.as_str()))
        );
        let der = certificate(&store, &sub.reference, &sub.secret)
            .await
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            SerialNumber::from_be_bytes(cert.raw_serial()),
            SerialNumber::from_hex(&serial)
        );
        assert!(matches!(
            decide(&auth, &clerk, &sub.id, 1, Decision::Approve).await,
            Err(Error::Conflict(_))
        ));

        // Online revocation with the revocation secret.
        assert!(matches!(
            revoke_online(
                &auth,
                &sub.reference,
                &sub.secret,
                "not it",
                crate::revocation::Reason::KeyCompromise
            )
            .await,
            Err(Error::Invalid { .. })
        ));
        revoke_online(
            &auth,
            &sub.reference,
            &sub.secret,
            "my revocation words",
            crate::revocation::Reason::KeyCompromise,
        )
        .await
        .unwrap();
        let status = store.certificate(&serial).await.unwrap().unwrap();
        assert_eq!(status.revocation_reason, Some(1));

        // Every step left an audit record, and none names the HKID.
        let log = store.audit_records().await.unwrap().0;
        for kind in [
            "ra.application.submitted",
            "ra.email.confirmed",
            "ra.staff.signin",
            "ra.identity.mismatch",
            "ra.identity.checked",
            "ra.fee.recorded",
            "ra.pii.revealed",
            "ra.approval",
            "ra.issued",
        ] {
            assert!(log.iter().any(|r| r.kind == kind), "no {kind} event");
        }
        assert!(!format!("{log:?}").contains(hkid.expose()));
    }

    /// Organisational and server applications: the Authorised Representative's identity and the
    /// organisation's documents are checked at the counter (a mismatch withdraws the check);
    /// the organisational certificate names the Authorised User and the organisation; a server
    /// application cannot be approved before its domains are validated, and never with a
    /// wildcard.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn organisation_applications_need_their_documents_and_domains() {
        let (_dir, auth) = test_ca_with(|_| {}).await;
        let store = auth.store().clone();
        let (clerk, sup) = gpo_with_staff(&auth).await;
        let at_counter = |sub: &Submitted, hkid: &Hkid, fee: i64| {
            let (auth, clerk) = (&auth, &clerk);
            let (id, reference, secret, code, hkid) = (
                sub.id.clone(),
                sub.reference.clone(),
                sub.secret.clone(),
                sub.email_code.clone(),
                hkid.expose().to_string(),
            );
            async move {
                confirm_email(auth.store(), &reference, &secret, &code)
                    .await
                    .unwrap();
                check_identity(auth, clerk, &id, 1, &hkid, true, false)
                    .await
                    .unwrap();
                record_fee(auth, clerk, &id, fee, "cheque", "R-1")
                    .await
                    .unwrap();
            }
        };

        let hkid = crate::hkid::synthetic("K", 220_011);
        let mut form = application(&hkid);
        form.profile = "organisational".into();
        form.organization = "Example Trading Limited".into();
        form.org_id = "1234-5678".into();
        form.user_surname = "Wong".into();
        form.user_given_name = "Siu Ming".into();
        form.email = "sm.wong@example.hk".into();
        let sub = submit(&auth, form.clone()).await.unwrap();
        at_counter(&sub, &hkid, 15_000).await;
        let e = decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("organisation"), "{e}");
        check_organisation(&auth, &clerk, &sub.id, 1, "12345678", true)
            .await
            .unwrap();
        let e = check_organisation(&auth, &clerk, &sub.id, 1, "87654321", true)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Invalid {
                    field: "org_id",
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            !staff_view(&auth, &clerk, &sub.id)
                .await
                .unwrap()
                .organisation_checked
        );
        let e = check_organisation(&auth, &clerk, &sub.id, 1, "12345678", false)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Invalid {
                    field: "documents_sighted",
                    ..
                }
            ),
            "{e}"
        );
        check_organisation(&auth, &clerk, &sub.id, 1, "1234 5678", true)
            .await
            .unwrap();
        let view = staff_view(&auth, &clerk, &sub.id).await.unwrap();
        assert!(view.organisation_checked && view.dual_control);
        assert_eq!(
            view.organization,
            Some(("Example Trading Limited".into(), "12345678".into()))
        );
        assert_eq!(view.authorised_user.as_deref(), Some("WONG Siu Ming"));
        assert!(matches!(
            decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
                .await
                .unwrap(),
            Decided::AwaitingSecond
        ));
        assert!(matches!(
            decide(&auth, &sup, &sub.id, 1, Decision::Approve)
                .await
                .unwrap(),
            Decided::Issued { .. }
        ));
        let der = staff_certificate(&store, &clerk, &sub.id).await.unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let subject = cert.subject().to_string();
        for part in [
            "O=Example Trading Limited",
            "NTRHK-12345678",
            "WONG",
            "Siu Ming",
        ] {
            assert!(subject.contains(part), "{part} not in {subject}");
        }
        assert!(
            !subject.contains("CHAN"),
            "the representative is not in the certificate: {subject}"
        );

        // A personal application has no organisation to check.
        let hkid_p = crate::hkid::synthetic("K", 220_013);
        let personal = submit(&auth, application(&hkid_p)).await.unwrap();
        assert!(matches!(
            check_organisation(&auth, &clerk, &personal.id, 1, "12345678", true).await,
            Err(Error::Conflict(_))
        ));

        // Server: the names are normalised; approval waits for domain control.
        let hkid2 = crate::hkid::synthetic("K", 220_012);
        let mut server = form.clone();
        server.profile = "server".into();
        server.hkid = hkid2.expose().to_string();
        server.email = "it@example.hk".into();
        server.dns_names = vec![
            "www.example.hk".into(),
            " WWW.Example.hk. ".into(),
            "api.example.hk".into(),
        ];
        let mut wild = server.clone();
        wild.dns_names.push("*.example.hk".into());
        assert!(matches!(
            submit(&auth, wild).await,
            Err(Error::Invalid {
                field: "dns_names",
                ..
            })
        ));
        let sub2 = submit(&auth, server).await.unwrap();
        at_counter(&sub2, &hkid2, 50_000).await;
        check_organisation(&auth, &clerk, &sub2.id, 1, "12345678", true)
            .await
            .unwrap();
        let view = staff_view(&auth, &clerk, &sub2.id).await.unwrap();
        assert_eq!(view.authorised_user, None);
        let token = view.dcv_token.clone().unwrap();
        assert_eq!(token.len(), 26, "128 bits in base32");
        assert_eq!(
            view.domains
                .iter()
                .map(|d| (d.domain.as_str(), d.record.as_str(), d.validated))
                .collect::<Vec<_>>(),
            vec![
                ("www.example.hk", "_ecert-challenge.www.example.hk", false),
                ("api.example.hk", "_ecert-challenge.api.example.hk", false),
            ]
        );
        let e = decide(&auth, &clerk, &sub2.id, 1, Decision::Approve)
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("not validated for www.example.hk, api.example.hk"),
            "{e}"
        );
        // The applicant sees the same value and names on the tracking page.
        let t = track(&store, &sub2.reference, &sub2.secret).await.unwrap();
        assert_eq!(t.domains.len(), 2);
        assert_eq!(t.dcv_token.as_deref(), Some(token.as_str()));
    }

    /// e-Cert (Personal/Minor) is for applicants under 18 (and personal for 18 and over); its
    /// validity ends before the 18th birthday, and one who is about to turn 18 is refused at
    /// approval (the application stays open). organisational-role puts the role in the
    /// certificate's title.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn minors_and_roles() {
        let (_dir, auth) = test_ca_with(|c| c.ra.renewal_window_days = 400).await;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let store = auth.store().clone();
        let (clerk, sup) = gpo_with_staff(&auth).await;
        let today = time::OffsetDateTime::now_utc().date();
        let born = |years: i32, plus_days: i64| {
            let d = time::Date::from_calendar_date(today.year() - years, today.month(), 1).unwrap()
                + time::Duration::days(i64::from(today.day()) - 1 + plus_days);
            d.format(time::macros::format_description!("[year]-[month]-[day]"))
                .unwrap()
        };
        let ready = |profile: &'static str, dob: String, n: u32| {
            let (auth, clerk, key) = (&auth, &clerk, &key);
            async move {
                let hkid = crate::hkid::synthetic("M", n);
                let mut a = application(&hkid);
                a.profile = profile.into();
                a.date_of_birth = dob;
                a.csr = csr_for(key);
                let sub = submit(auth, a).await?;
                confirm_email(auth.store(), &sub.reference, &sub.secret, &sub.email_code)
                    .await
                    .unwrap();
                if profile == "personal-minor" {
                    assert!(matches!(
                        check_identity(auth, clerk, &sub.id, 1, hkid.expose(), true, false).await,
                        Err(Error::Invalid {
                            field: "guardian_consent",
                            ..
                        })
                    ));
                }
                check_identity(auth, clerk, &sub.id, 1, hkid.expose(), true, true)
                    .await
                    .unwrap();
                record_fee(auth, clerk, &sub.id, 5_000, "cash", "R")
                    .await
                    .unwrap();
                Ok::<_, Error>(sub)
            }
        };
        // Ages and profiles.
        assert!(matches!(
            ready("personal-minor", born(30, 0), 1).await,
            Err(Error::Invalid {
                field: "date_of_birth",
                ..
            })
        ));
        assert!(matches!(
            ready("personal", born(16, 0), 2).await,
            Err(Error::Invalid {
                field: "date_of_birth",
                ..
            })
        ));
        // Sixteen: a full year's certificate (it ends well before 18).
        let sub = ready("personal-minor", born(16, 0), 3).await.unwrap();
        let Decided::Issued { serial, .. } = decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
            .await
            .unwrap()
        else {
            panic!("not issued")
        };
        let days = |serial: String| {
            let store = store.clone();
            async move {
                let der = store
                    .certificate(&serial)
                    .await
                    .unwrap()
                    .unwrap()
                    .cert_der
                    .unwrap();
                let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
                (c.validity().not_after.timestamp() - c.validity().not_before.timestamp() + 1)
                    / 86_400
            }
        };
        assert_eq!(days(serial).await, 365);
        // Eighteen in 20 days: the certificate ends before the birthday.
        let sub = ready("personal-minor", born(18, 20), 4).await.unwrap();
        let Decided::Issued { serial, .. } = decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
            .await
            .unwrap()
        else {
            panic!("not issued")
        };
        let d = days(serial).await;
        assert!((18..=19).contains(&d), "{d}");
        // Its online renewal ends before the birthday too.
        let renewed = renew_online(&auth, &sub.reference, &sub.secret, &csr_for(&key), None)
            .await
            .unwrap();
        let d = days(renewed).await;
        assert!((18..=19).contains(&d), "renewal: {d}");
        // Eighteen tomorrow: refused at approval, the application open again.
        let sub = ready("personal-minor", born(18, 1), 5).await.unwrap();
        assert!(matches!(
            decide(&auth, &clerk, &sub.id, 1, Decision::Approve).await,
            Err(Error::Conflict(_))
        ));
        assert_eq!(
            track(&store, &sub.reference, &sub.secret)
                .await
                .unwrap()
                .status,
            Status::IssuanceFailed
        );
        let view = staff_view(&auth, &clerk, &sub.id).await.unwrap();
        assert!(
            view.issue_error
                .as_deref()
                .is_some_and(|e| e.contains("18")),
            "{view:?}"
        );

        // organisational-role: the role is required and goes into the title.
        let hkid = crate::hkid::synthetic("M", 6);
        let mut a = application(&hkid);
        a.profile = "organisational-role".into();
        a.organization = "Example Hospital Authority".into();
        a.org_id = "12345678".into();
        a.user_surname = "Lee".into();
        a.user_given_name = "Mei".into();
        assert!(matches!(
            submit(&auth, a.clone()).await,
            Err(Error::Invalid {
                field: "user_title",
                ..
            })
        ));
        a.user_title = "Ward Manager".into();
        a.csr = csr_for(&key);
        let sub = submit(&auth, a).await.unwrap();
        confirm_email(&store, &sub.reference, &sub.secret, &sub.email_code)
            .await
            .unwrap();
        check_identity(&auth, &clerk, &sub.id, 1, hkid.expose(), true, false)
            .await
            .unwrap();
        check_organisation(&auth, &clerk, &sub.id, 1, "12345678", true)
            .await
            .unwrap();
        record_fee(&auth, &clerk, &sub.id, 15_000, "cash", "R")
            .await
            .unwrap();
        let view = staff_view(&auth, &clerk, &sub.id).await.unwrap();
        assert_eq!(
            view.authorised_user.as_deref(),
            Some("LEE Mei (Ward Manager)")
        );
        assert!(view.dual_control);
        decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
            .await
            .unwrap();
        decide(&auth, &sup, &sub.id, 1, Decision::Approve)
            .await
            .unwrap();
        let der = staff_certificate(&store, &clerk, &sub.id).await.unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let title = cert
            .subject()
            .iter_attributes()
            .find(|a| a.attr_type().to_id_string() == "2.5.4.12")
            .and_then(|a| a.as_str().ok().map(str::to_string));
        assert_eq!(title.as_deref(), Some("Ward Manager"));
        // Renewal keeps the role.
        let renewed = renew_online(&auth, &sub.reference, &sub.secret, &csr_for(&key), None)
            .await
            .unwrap();
        let der = store
            .certificate(&renewed)
            .await
            .unwrap()
            .unwrap()
            .cert_der
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(
            cert.subject().to_string().contains("Ward Manager"),
            "{}",
            cert.subject()
        );
    }

    /// The HSM fails after the serial was recorded on the application: the serial's own state
    /// decides (nothing was signed: it is not `issued`), the application opens again without a
    /// certificate, with the error for staff and the `issuance_failed` status — never an
    /// orphan certificate, never a second one beside a first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_signature_leaves_no_orphan_and_says_why() {
        let (_dir, auth) = test_ca_with(|_| {}).await;
        let store = auth.store().clone();
        let (clerk, _) = gpo_with_staff(&auth).await;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sub = ready_for_approval(&auth, &clerk, &crate::hkid::synthetic("H", 404), &key).await;
        // The Individual CA's key disappears from the token.
        crate::authority::open_token(auth.config())
            .unwrap()
            .destroy_key(&crate::profile::CaRole::Individual.key_label())
            .unwrap();
        assert!(decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
            .await
            .is_err());
        let v = staff_view(&auth, &clerk, &sub.id).await.unwrap();
        assert_eq!(v.status, Status::IssuanceFailed, "{v:?}");
        assert!(v.certificate.is_none(), "{v:?}");
        let why = v.issue_error.clone().unwrap_or_default();
        assert!(why.starts_with("HSM"), "the signing step failed: {why}");
        let states: Vec<String> =
            sqlx::query("SELECT state FROM certificates WHERE profile = 'personal'")
                .fetch_all(store.pool())
                .await
                .unwrap()
                .iter()
                .map(|r| r.try_get(0).unwrap())
                .collect();
        assert_eq!(states.len(), 1, "{states:?}");
        assert!(
            matches!(states[0].as_str(), "failed" | "abandoned"),
            "{states:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dual_control_needs_two_people_and_the_same_version() {
        let (_dir, auth) = test_ca_with(|c| c.ra.dual_control.push("personal".into())).await;
        let store = auth.store().clone();
        let (clerk, sup) = gpo_with_staff(&auth).await;
        let hkid = crate::hkid::synthetic("XA", 120_394);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sub = ready_for_approval(&auth, &clerk, &hkid, &key).await;
        assert!(matches!(
            decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
                .await
                .unwrap(),
            Decided::AwaitingSecond
        ));
        assert!(
            matches!(
                decide(&auth, &clerk, &sub.id, 1, Decision::Approve).await,
                Err(Error::Conflict(_))
            ),
            "same person twice"
        );
        // An edit makes a new version: the first approval no longer counts.
        let code = amend_contact(
            &auth,
            &clerk,
            &sub.id,
            1,
            None,
            Some("+852 3111 1111"),
            None,
        )
        .await
        .unwrap();
        assert!(code.is_none());
        assert!(
            matches!(
                decide(&auth, &sup, &sub.id, 1, Decision::Approve).await,
                Err(Error::Conflict(_))
            ),
            "stale version"
        );
        assert!(
            matches!(
                decide(&auth, &sup, &sub.id, 2, Decision::Approve).await,
                Err(Error::Conflict(_))
            ),
            "identity not checked for v2"
        );
        check_identity(&auth, &clerk, &sub.id, 2, hkid.expose(), true, false)
            .await
            .unwrap();
        assert!(matches!(
            decide(&auth, &sup, &sub.id, 2, Decision::Approve)
                .await
                .unwrap(),
            Decided::AwaitingSecond
        ));
        assert_eq!(
            track(&store, &sub.reference, &sub.secret)
                .await
                .unwrap()
                .status,
            Status::AwaitingSecondApproval
        );
        assert!(matches!(
            decide(&auth, &clerk, &sub.id, 2, Decision::Approve)
                .await
                .unwrap(),
            Decided::Issued { .. }
        ));

        // One rejection rejects.
        let hkid2 = crate::hkid::synthetic("Y", 555_001);
        let sub2 = submit(&auth, application(&hkid2)).await.unwrap();
        assert!(matches!(
            decide(
                &auth,
                &clerk,
                &sub2.id,
                1,
                Decision::Reject("the applicant did not come".into())
            )
            .await
            .unwrap(),
            Decided::Rejected { .. }
        ));
        let v = track(&store, &sub2.reference, &sub2.secret).await.unwrap();
        assert_eq!(
            (v.status, v.rejected_reason.as_deref()),
            (Status::Rejected, Some("the applicant did not come"))
        );
    }

    /// Online re-key: a CSR for a new key is accepted only with the current key's signature
    /// over the message naming this reference, the serial replaced and the new key (WebCrypto's
    /// `r||s` and OpenSSL's DER signatures both verify); the new certificate carries the new key
    /// and is linked to the old one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn online_rekey_needs_the_current_keys_signature() {
        let (_dir, auth) = test_ca_with(|c| c.ra.renewal_window_days = 400).await;
        let store = auth.store().clone();
        let (clerk, _) = gpo_with_staff(&auth).await;
        let current = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let hkid = crate::hkid::synthetic("Z", 41_414);
        let sub = ready_for_approval(&auth, &clerk, &hkid, &current).await;
        let Decided::Issued { serial: old, .. } =
            decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
                .await
                .unwrap()
        else {
            panic!("not issued")
        };
        let new = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let new_fp = hex::encode(Sha256::digest(
            rcgen::PublicKeyData::subject_public_key_info(&new),
        ));
        let message = rekey_message(&sub.reference, &old, &new_fp);
        // r||s, as WebCrypto signs.
        let fixed = |key: &rcgen::KeyPair, msg: &str| {
            let rng = ring::rand::SystemRandom::new();
            ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &key.serialize_der(),
                &rng,
            )
            .unwrap()
            .sign(&rng, msg.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
        };
        let refused = |r: Result<String>| {
            matches!(
                r,
                Err(Error::Invalid {
                    field: "rekey_proof",
                    ..
                })
            )
        };
        // Signed by the new key, not the current one.
        assert!(refused(
            renew_online(
                &auth,
                &sub.reference,
                &sub.secret,
                &csr_for(&new),
                Some(&fixed(&new, &message))
            )
            .await
        ));
        // Signed by the current key, but for another new key.
        let other_fp = hex::encode(Sha256::digest(
            rcgen::PublicKeyData::subject_public_key_info(&current),
        ));
        let wrong = rekey_message(&sub.reference, &old, &other_fp);
        assert!(refused(
            renew_online(
                &auth,
                &sub.reference,
                &sub.secret,
                &csr_for(&new),
                Some(&fixed(&current, &wrong))
            )
            .await
        ));
        // No proof at all: the plain renewal's error.
        assert!(matches!(
            renew_online(&auth, &sub.reference, &sub.secret, &csr_for(&new), None).await,
            Err(Error::Invalid { field: "csr", .. })
        ));
        // The DER signature OpenSSL would make (rcgen signs ECDSA as DER) verifies too.
        let der_sig = rcgen::SigningKey::sign(&current, message.as_bytes()).unwrap();
        let serial = renew_online(
            &auth,
            &sub.reference,
            &sub.secret,
            &csr_for(&new),
            Some(&der_sig),
        )
        .await
        .unwrap();
        let rec = store.certificate(&serial).await.unwrap().unwrap();
        assert_eq!(rec.renews.as_deref(), Some(old.as_str()));
        let (_, cert) =
            x509_parser::parse_x509_certificate(rec.cert_der.as_deref().unwrap()).unwrap();
        assert_eq!(
            cert.public_key().raw,
            rcgen::PublicKeyData::subject_public_key_info(&new).as_slice()
        );
        assert!(store
            .audit_records()
            .await
            .unwrap()
            .0
            .iter()
            .any(|r| r.kind == "ra.rekeyed"));
    }

    /// Online renewal: only with the current key, only in the window before expiry, once; the
    /// new certificate is linked to the old one and keeps its subject (and SRN).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn online_renewal_needs_the_current_key_and_the_window() {
        let (_dir, auth) = test_ca_with(|c| c.ra.renewal_window_days = 400).await;
        let store = auth.store().clone();
        ensure_outlet(&store, "gpo", "GPO", "郵政總局")
            .await
            .unwrap();
        let (_, s1) = staff(&auth, "clerk1", "gpo", Role::Clerk).await;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let hkid = crate::hkid::synthetic("Z", 31_337);
        let mut form = application(&hkid);
        form.csr = csr_for(&key);
        let sub = submit(&auth, form).await.unwrap();
        assert!(
            matches!(
                renew_online(&auth, &sub.reference, &sub.secret, &csr_for(&key), None).await,
                Err(Error::Conflict(_))
            ),
            "nothing issued yet"
        );
        confirm_email(&store, &sub.reference, &sub.secret, &sub.email_code)
            .await
            .unwrap();
        let clerk = signed_in(&auth, "clerk1", &s1, 0).await;
        check_identity(&auth, &clerk, &sub.id, 1, hkid.expose(), true, false)
            .await
            .unwrap();
        record_fee(&auth, &clerk, &sub.id, 5_000, "cash", "R-9")
            .await
            .unwrap();
        let Decided::Issued { serial: first, .. } =
            decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
                .await
                .unwrap()
        else {
            panic!("not issued")
        };
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(matches!(
            renew_online(&auth, &sub.reference, &sub.secret, &csr_for(&other), None).await,
            Err(Error::Invalid { field: "csr", .. })
        ));
        assert!(matches!(
            renew_online(&auth, &sub.reference, "wrong", &csr_for(&key), None).await,
            Err(Error::NotFound)
        ));
        let second = renew_online(&auth, &sub.reference, &sub.secret, &csr_for(&key), None)
            .await
            .unwrap();
        assert_ne!(first, second);
        let old = store.certificate(&first).await.unwrap().unwrap();
        let new = store.certificate(&second).await.unwrap().unwrap();
        assert_eq!(old.renewed_by.as_deref(), Some(second.as_str()));
        assert_eq!(new.renews.as_deref(), Some(first.as_str()));
        let srn = |r: &crate::store::CertRecord| {
            serde_json::from_str::<SubjectData>(&r.request).unwrap().srn
        };
        assert_eq!(srn(&old), srn(&new));
        assert!(srn(&new).is_some());
        assert_eq!(
            track(&store, &sub.reference, &sub.secret)
                .await
                .unwrap()
                .certificate
                .as_deref(),
            Some(second.as_str())
        );
        assert!(store
            .audit_records()
            .await
            .unwrap()
            .0
            .iter()
            .any(|r| r.kind == "ra.renewed"));
        // A crash between the renewal's signature and the application's update: the next read
        // points the application at the renewal.
        sqlx::query("UPDATE applications SET certificate = $2 WHERE id = $1")
            .bind(&sub.id)
            .bind(&first)
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(
            track(&store, &sub.reference, &sub.secret)
                .await
                .unwrap()
                .certificate
                .as_deref(),
            Some(second.as_str())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn renewal_window_is_enforced() {
        let (_dir, auth) = test_ca_with(|_| {}).await;
        let (clerk, _) = gpo_with_staff(&auth).await;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = csr_for(&key);
        let hkid = crate::hkid::synthetic("Z", 4_242);
        let sub = ready_for_approval(&auth, &clerk, &hkid, &key).await;
        decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
            .await
            .unwrap();
        let e = renew_online(&auth, &sub.reference, &sub.secret, &csr, None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("opens 90 days before"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_approvals_do_not_count() {
        let (_dir, auth) = test_ca_with(|c| {
            c.ra.dual_control.push("personal".into());
            c.ra.approval_hours = 0;
        })
        .await;
        let (clerk, sup) = gpo_with_staff(&auth).await;
        let hkid = crate::hkid::synthetic("Z", 1);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sub = ready_for_approval(&auth, &clerk, &hkid, &key).await;
        assert!(matches!(
            decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
                .await
                .unwrap(),
            Decided::AwaitingSecond
        ));
        assert!(
            matches!(
                decide(&auth, &sup, &sub.id, 1, Decision::Approve)
                    .await
                    .unwrap(),
                Decided::AwaitingSecond
            ),
            "the first approval had expired"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sign_in_refuses_reuse_and_locks_after_failures() {
        let (_dir, auth) = test_ca_with(|_| {}).await;
        let store = auth.store().clone();
        ensure_outlet(&store, "gpo", "GPO", "郵政總局")
            .await
            .unwrap();
        let (_, secret) = staff(&auth, "clerk1", "gpo", Role::Clerk).await;
        let code = crate::totp::code_at(&secret, now());
        let first = sign_in(&auth, "clerk1", "a password of some length", &code)
            .await
            .unwrap();
        assert!(
            matches!(
                sign_in(&auth, "clerk1", "a password of some length", &code).await,
                Err(Error::SignInFailed)
            ),
            "code reused"
        );
        assert!(matches!(
            sign_in(&auth, "nobody", "x", "000000").await,
            Err(Error::SignInFailed)
        ));
        let s = session(&store, &auth.config().ra, &first.token)
            .await
            .unwrap();
        assert_eq!(s.username, "clerk1");
        sign_out(&store, &first.token).await.unwrap();
        assert!(session(&store, &auth.config().ra, &first.token)
            .await
            .is_err());
        for _ in 0..SIGN_IN_ATTEMPTS {
            assert!(sign_in(&auth, "clerk1", "wrong password!!", "000000")
                .await
                .is_err());
        }
        // Locked: even the right password and a fresh code are refused.
        sqlx::query("UPDATE staff SET totp_last_step = 0 WHERE username = 'clerk1'")
            .execute(store.pool())
            .await
            .unwrap();
        let code = crate::totp::code_at(&secret, now());
        assert!(matches!(
            sign_in(&auth, "clerk1", "a password of some length", &code).await,
            Err(Error::SignInFailed)
        ));
        let log = store.audit_records().await.unwrap().0;
        assert!(
            log.iter()
                .filter(|r| r.kind == "ra.staff.signin_failed")
                .count()
                >= 6
        );
    }
}

#[cfg(test)]
mod review_fixes {
    use super::journey::{ready_for_approval, signed_in, staff};
    use super::*;
    use crate::authority::test_ca_with;

    async fn issued_app(
        auth: &Authority,
        clerk: &StaffSession,
        key: &rcgen::KeyPair,
        n: u32,
    ) -> (Submitted, String) {
        let hkid = crate::hkid::synthetic("Y", n);
        let sub = ready_for_approval(auth, clerk, &hkid, key).await;
        let Decided::Issued { serial, .. } = decide(auth, clerk, &sub.id, 1, Decision::Approve)
            .await
            .unwrap()
        else {
            panic!("not issued")
        };
        (sub, serial)
    }

    async fn session_of(auth: &Authority, name: &str, role: Role) -> StaffSession {
        let (_, secret) = staff(auth, name, "gpo", role).await;
        signed_in(auth, name, &secret, 0).await
    }

    /// A mismatch after a match withdraws the identity check; two clerks are not dual control;
    /// code guesses stop at the limit; a new code is rate-limited and re-confirms the mailbox;
    /// renewal needs a mailbox confirmed within 30 days; revoking revokes the predecessor too;
    /// a citizen cannot choose privilegeWithdrawn; a locked account stays locked for its time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn review_findings_stay_fixed() {
        let (_dir, auth) = test_ca_with(|c| {
            c.ra.dual_control.push("organisational".into());
            c.ra.renewal_window_days = 400;
        })
        .await;
        let store = auth.store().clone();
        ensure_outlet(&store, "gpo", "GPO", "郵政總局")
            .await
            .unwrap();
        let clerk = session_of(&auth, "clerk1", Role::Clerk).await;

        // Identity: match, then mismatch → approval blocked again.
        let hkid = crate::hkid::synthetic("X", 1);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = super::journey::csr_for(&key);
        let sub = submit(
            &auth,
            NewApplication {
                profile: "personal".into(),
                surname: "Ho".into(),
                given_name: "Ka Ming".into(),
                email: "km.ho@example.hk".into(),
                hkid: hkid.expose().into(),
                date_of_birth: "1970-01-01".into(),
                phone: "+852 2100 0000".into(),
                address: "4 Des Voeux Road".into(),
                outlet: "gpo".into(),
                revocation_secret: "my revocation words".into(),
                csr,
                language: "en".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        // Five wrong codes, then even the right one is refused.
        for _ in 0..CODE_ATTEMPTS {
            assert!(matches!(
                confirm_email(&store, &sub.reference, &sub.secret, "999999x").await,
                Err(Error::CodeRejected { .. })
            ));
        }
        assert!(matches!(
            confirm_email(&store, &sub.reference, &sub.secret, &sub.email_code).await,
            Err(Error::TooManyAttempts(_))
        ));
        // A new code: not within the minute, then it works.
        assert!(matches!(
            new_email_code(&auth, &sub.reference, &sub.secret).await,
            Err(Error::TooManyAttempts(_))
        ));
        sqlx::query(
            "UPDATE applications SET email_code_expires = email_code_expires - 120 WHERE id = $1",
        )
        .bind(&sub.id)
        .execute(store.pool())
        .await
        .unwrap();
        let (code, _) = new_email_code(&auth, &sub.reference, &sub.secret)
            .await
            .unwrap();
        confirm_email(&store, &sub.reference, &sub.secret, &code)
            .await
            .unwrap();
        check_identity(&auth, &clerk, &sub.id, 1, hkid.expose(), true, false)
            .await
            .unwrap();
        let other = crate::hkid::synthetic("X", 2);
        assert!(
            check_identity(&auth, &clerk, &sub.id, 1, other.expose(), true, false)
                .await
                .is_err()
        );
        record_fee(&auth, &clerk, &sub.id, 5_000, "cash", "R")
            .await
            .unwrap();
        let e = decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("identity check"), "{e}");
        // A mailbox confirmed over 30 days ago must be confirmed again before approval.
        check_identity(&auth, &clerk, &sub.id, 1, hkid.expose(), true, false)
            .await
            .unwrap();
        sqlx::query("UPDATE applications SET email_confirmed_at = email_confirmed_at - 31 * 86400 WHERE id = $1").bind(&sub.id).execute(store.pool()).await.unwrap();
        let e = decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("30 days"), "{e}");

        // Renewal with a stale mailbox: refused until a new code is confirmed; revoking the
        // renewal revokes its predecessor; privilegeWithdrawn is the CA's.
        let (sub2, first) = issued_app(&auth, &clerk, &key, 3).await;
        let csr = super::journey::csr_for(&key);
        sqlx::query("UPDATE applications SET email_confirmed_at = email_confirmed_at - 31 * 86400, email_code_expires = 0 WHERE id = $1").bind(&sub2.id).execute(store.pool()).await.unwrap();
        let e = renew_online(&auth, &sub2.reference, &sub2.secret, &csr, None)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("confirm your e-mail address again"),
            "{e}"
        );
        let (code, _) = new_email_code(&auth, &sub2.reference, &sub2.secret)
            .await
            .unwrap();
        confirm_email(&store, &sub2.reference, &sub2.secret, &code)
            .await
            .unwrap();
        let second = renew_online(&auth, &sub2.reference, &sub2.secret, &csr, None)
            .await
            .unwrap();
        assert!(matches!(
            revoke_online(
                &auth,
                &sub2.reference,
                &sub2.secret,
                "my revocation words",
                crate::revocation::Reason::PrivilegeWithdrawn
            )
            .await,
            Err(Error::Invalid {
                field: "reason",
                ..
            })
        ));
        revoke_online(
            &auth,
            &sub2.reference,
            &sub2.secret,
            "my revocation words",
            crate::revocation::Reason::Superseded,
        )
        .await
        .unwrap();
        for serial in [&first, &second] {
            assert_eq!(
                store
                    .certificate(serial)
                    .await
                    .unwrap()
                    .unwrap()
                    .revocation_reason,
                Some(4),
                "{serial} not revoked"
            );
        }

        // Two clerks are not dual control.
        let clerk2 = session_of(&auth, "clerk2", Role::Clerk).await;
        sqlx::query(
            "UPDATE applications SET profile = 'organisational', organization = 'Example Limited', \
             org_id = '12345678', user_surname = 'WONG', user_given_name = 'Siu Ming', org_checked_version = 1 WHERE id = $1",
        )
            .bind(&sub.id)
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("UPDATE applications SET email_confirmed_at = $2 WHERE id = $1")
            .bind(&sub.id)
            .bind(now())
            .execute(store.pool())
            .await
            .unwrap();
        assert!(matches!(
            decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
                .await
                .unwrap(),
            Decided::AwaitingSecond
        ));
        assert!(matches!(
            decide(&auth, &clerk2, &sub.id, 1, Decision::Approve).await,
            Err(Error::Forbidden(_))
        ));

        // A locked account: failures while locked do not extend the lock.
        for _ in 0..SIGN_IN_ATTEMPTS {
            let _ = sign_in(&auth, "clerk2", "wrong password!!", "000000").await;
        }
        let locked: i64 = sqlx::query("SELECT locked_until FROM staff WHERE username = 'clerk2'")
            .fetch_one(store.pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert!(locked > now());
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let _ = sign_in(&auth, "clerk2", "wrong password!!", "000000").await;
        let after: i64 = sqlx::query("SELECT locked_until FROM staff WHERE username = 'clerk2'")
            .fetch_one(store.pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(locked, after, "a failure while locked extended the lock");
    }

    /// An application left `approved` with its certificate issued (a crash after signing) is
    /// settled to `issued` on the next read; one whose issuance failed is open again.
    /// Rejected and never-completed applications lose their personal data after the retention
    /// period; issued ones keep it; the staff view still opens.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_purges_only_ended_applications() {
        let (_dir, auth) = test_ca_with(|_| {}).await;
        let store = auth.store().clone();
        ensure_outlet(&store, "gpo", "GPO", "郵政總局")
            .await
            .unwrap();
        let clerk = session_of(&auth, "clerk1", Role::Clerk).await;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let (issued, _) = issued_app(&auth, &clerk, &key, 11).await;
        let (stale, _) = issued_app(&auth, &clerk, &key, 12).await;
        // Make the second one an old, never-completed application.
        sqlx::query(
            "UPDATE applications SET state = 'submitted', certificate = NULL WHERE id = $1",
        )
        .bind(&stale.id)
        .execute(store.pool())
        .await
        .unwrap();
        assert_eq!(purge(&auth, now()).await.unwrap(), 0, "nothing is old yet");
        let later = now() + 91 * 86_400;
        assert_eq!(purge(&auth, later).await.unwrap(), 1);
        let dump = format!(
            "{:?}",
            sqlx::query("SELECT hkid_sealed, csr, state FROM applications WHERE id = $1")
                .bind(&stale.id)
                .fetch_one(store.pool())
                .await
                .unwrap()
                .try_get::<Vec<u8>, _>(0)
                .unwrap()
        );
        assert_eq!(dump, "[]");
        let v = staff_view(&auth, &clerk, &stale.id).await.unwrap();
        assert_eq!(
            (v.hkid_masked.as_str(), v.status),
            ("(purged)", Status::Rejected)
        );
        assert!(matches!(
            reveal(&auth, &clerk, &stale.id, Revealable::Hkid).await,
            Err(Error::Conflict(_))
        ));
        let v = staff_view(&auth, &clerk, &issued.id).await.unwrap();
        assert_ne!(v.hkid_masked, "(purged)");
        assert!(store
            .audit_records()
            .await
            .unwrap()
            .0
            .iter()
            .any(|r| r.kind == "ra.purged"));
    }

    /// Disabling ends sessions and stops sign-in and API tokens; enabling restores sign-in; a
    /// TOTP reset voids the old secret; revoked tokens stop working.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn staff_administration() {
        let (_dir, auth) = test_ca_with(|_| {}).await;
        let store = auth.store().clone();
        ensure_outlet(&store, "gpo", "GPO", "郵政總局")
            .await
            .unwrap();
        let (_, secret) = staff(&auth, "clerk1", "gpo", Role::Clerk).await;
        let signed = sign_in(
            &auth,
            "clerk1",
            "a password of some length",
            &crate::totp::code_at(&secret, now()),
        )
        .await
        .unwrap();
        let token = create_api_token(&store, "clerk1", "t", 1, "t")
            .await
            .unwrap();
        assert!(api_session(&store, &token).await.is_ok());
        set_staff_disabled(&store, "clerk1", true, "admin")
            .await
            .unwrap();
        assert!(
            session(&store, &auth.config().ra, &signed.token)
                .await
                .is_err(),
            "session survived"
        );
        assert!(
            api_session(&store, &token).await.is_err(),
            "token works while disabled"
        );
        sqlx::query("UPDATE staff SET totp_last_step = 0")
            .execute(store.pool())
            .await
            .unwrap();
        assert!(matches!(
            sign_in(
                &auth,
                "clerk1",
                "a password of some length",
                &crate::totp::code_at(&secret, now())
            )
            .await,
            Err(Error::SignInFailed)
        ));
        set_staff_disabled(&store, "clerk1", false, "admin")
            .await
            .unwrap();
        assert!(api_session(&store, &token).await.is_ok());
        let fresh = reset_totp(&store, &auth.pii().unwrap(), "clerk1", "admin")
            .await
            .unwrap();
        assert!(
            matches!(
                sign_in(
                    &auth,
                    "clerk1",
                    "a password of some length",
                    &crate::totp::code_at(&secret, now())
                )
                .await,
                Err(Error::SignInFailed)
            ),
            "old secret"
        );
        sign_in(
            &auth,
            "clerk1",
            "a password of some length",
            &crate::totp::code_at(&fresh, now()),
        )
        .await
        .unwrap();
        assert_eq!(
            revoke_api_tokens(&store, "clerk1", "admin").await.unwrap(),
            1
        );
        assert!(api_session(&store, &token).await.is_err());
        let list = list_staff(&store).await.unwrap();
        assert_eq!(
            (list.len(), list[0].username.as_str(), list[0].disabled),
            (1, "clerk1", false)
        );
        assert!(matches!(
            set_staff_disabled(&store, "nobody", true, "admin").await,
            Err(Error::NotFound)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interrupted_decisions_are_settled() {
        let (_dir, auth) = test_ca_with(|_| {}).await;
        let store = auth.store().clone();
        ensure_outlet(&store, "gpo", "GPO", "郵政總局")
            .await
            .unwrap();
        let clerk = session_of(&auth, "clerk1", Role::Clerk).await;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let (sub, serial) = issued_app(&auth, &clerk, &key, 7).await;
        sqlx::query("UPDATE applications SET state = 'approved' WHERE id = $1")
            .bind(&sub.id)
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(
            track(&store, &sub.reference, &sub.secret)
                .await
                .unwrap()
                .status,
            Status::Issued
        );
        let (sub2, serial2) = issued_app(&auth, &clerk, &key, 8).await;
        let _ = serial;
        sqlx::query("UPDATE certificates SET state = 'failed' WHERE serial = $1")
            .bind(&serial2)
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("UPDATE applications SET state = 'approved' WHERE id = $1")
            .bind(&sub2.id)
            .execute(store.pool())
            .await
            .unwrap();
        let v = track(&store, &sub2.reference, &sub2.secret).await.unwrap();
        // Open again (its approval still counts), no certificate.
        assert!(
            v.status != Status::Issued && v.status != Status::Approved && v.certificate.is_none(),
            "{v:?}"
        );
    }
}
