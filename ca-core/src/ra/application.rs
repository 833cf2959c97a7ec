//! Applications: the form's fields and their checks, submission (sealing the personal
//! fields), the certificate's subject data by profile, the citizen's tracking view and the
//! download of the issued certificate.

use serde_json::json;

use super::domains::{domain_status, DomainStatus};
use super::mailbox;
use super::permissions::Action;
use super::record::{
    key_certified_to_another, key_of_another, org_key, owned, valid_approvals, Application,
};
use super::rules::{minor_days, status_of, Status};
use super::session::StaffSession;
use super::support::{check_len, hash_password_async, invalid, now, random_base32, sha256};
use crate::audit::Event;
use crate::authority::Authority;
use crate::csr::VerifiedCsr;
use crate::error::{Error, Result};
use crate::hkid::Hkid;
use crate::pii::Field;
use crate::profile::{Profile, ProfileKind, SubjectData};
use crate::row::row;
use crate::store::Store;

/// Version of the value-added-notices consent wording shown on the form and the tracking page
/// (the texts `consent` and `notices_*`: a change of wording is a new version).
pub const CONSENT_WORDING: &str = "notices-v1";

/// Version of the directory-publication consent wording (the texts `publish_in_directory`
/// and `directory_*`).
pub const DIRECTORY_WORDING: &str = "directory-v1";

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
    /// Publish the certificate in the public directory (unticked by default; changeable on
    /// the tracking page: docs/DIRECTORY.md).
    pub publish_in_directory: bool,
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
    /// Which register the organisation is in: `ntr` (default: it has a Business Registration
    /// number) or `gov` (a government bureau, department or statutory body).
    pub org_register: String,
    /// Hong Kong Business Registration number, 8 digits (organisational, encipherment, server;
    /// empty for `gov`).
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

/// The country of every register an organisation is checked in here (the Business Registration
/// Office's, and the HKSAR Government's list of its bureaux, departments and statutory bodies):
/// an organisation's countryName and the country of its organizationIdentifier.
pub const REGISTER_COUNTRY: &str = "HK";

/// The country that issued an identity document the counter checks: a person's countryName
/// (S/MIME BR §7.1.4.2.2(n)). `HKID`, the Hong Kong Identity Card, is the document an
/// application is made with.
pub fn document_country(document: &str) -> Option<&'static str> {
    match document {
        "HKID" => Some("HK"),
        _ => None,
    }
}

/// The organisation's register and Business Registration number as applied for: `NTR` with
/// its 8 digits, or `GOV` without one (S/MIME BR §7.1.4.2.2(d) Note 2).
pub fn organisation_register(
    register: &str,
    org_id: &str,
) -> Result<(&'static str, Option<String>)> {
    match register.trim().to_ascii_lowercase().as_str() {
        "" | "ntr" => Ok(("NTR", Some(business_registration_number(org_id)?))),
        "gov" if org_id.trim().is_empty() => Ok(("GOV", None)),
        "gov" => Err(invalid(
            "org_id",
            "a government bureau, department or statutory body has no business registration number: leave it empty",
        )),
        _ => Err(invalid(
            "org_register",
            "ntr (a Business Registration number) or gov (a government bureau, department or statutory body)",
        )),
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
    // The organisation, its register (the organisation check confirms it) and that register's
    // country; [`subject_of_record`] keeps the country only once it was checked.
    let organisation = || -> Result<(String, Option<String>, bool)> {
        check_len("organization", &a.organization, 1, 64)?;
        let (register, br) = organisation_register(&a.org_register, &a.org_id)?;
        Ok((a.organization.trim().to_string(), br, register == "GOV"))
    };
    Ok(match profile.kind {
        ProfileKind::Personal => SubjectData {
            surname: Some(a.surname.trim().to_uppercase()),
            given_name: Some(a.given_name.trim().to_string()),
            emails: vec![a.email.trim().to_string()],
            ..Default::default()
        },
        ProfileKind::Organisational => {
            let (org, br, government) = organisation()?;
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
                org_id: br,
                government,
                country: Some(REGISTER_COUNTRY.into()),
                ..Default::default()
            }
        }
        ProfileKind::Encipherment => {
            let (org, br, government) = organisation()?;
            SubjectData {
                emails: vec![a.email.trim().to_string()],
                organization: Some(org),
                org_id: br,
                government,
                country: Some(REGISTER_COUNTRY.into()),
                ..Default::default()
            }
        }
        ProfileKind::Server => {
            let (org, _, _) = organisation()?;
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

/// An application entered by a member of staff for their outlet (a walk-in at the counter, or
/// through the API): their role must be allowed to enter one ([`Action::EnterApplication`]);
/// they are recorded as its enterer, who never approves it.
pub async fn enter(
    auth: &Authority,
    staff: &StaffSession,
    mut a: NewApplication,
) -> Result<Submitted> {
    staff.authorize(Action::EnterApplication)?;
    a.outlet = staff.outlet.clone();
    a.entered_by = Some(staff.username.clone());
    submit(auth, a).await
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
    auth.offers(profile)?;
    // The contact mailbox of a server application (not in the certificate) is checked too.
    if profile.kind == ProfileKind::Server {
        check_len("email", &a.email, 3, 254)?;
        if !a.email.contains('@') {
            return Err(invalid("email", "an e-mail address"));
        }
    }
    // A refused CSR or key is a rejected certificate request: audited (BR §5.4.1), as the
    // issuance core audits its own refusals.
    let csr = match VerifiedCsr::parse(&a.csr).and_then(|c| auth.check_key(c.key()).map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            let actor = a
                .entered_by
                .as_ref()
                .map_or_else(|| "citizen".to_string(), |u| format!("staff:{u}"));
            auth.record_refusal(&actor, &a.profile, &e).await;
            return Err(e);
        }
    };
    if !["en", "zh-HK"].contains(&a.language.as_str()) {
        return Err(invalid("language", "en or zh-HK"));
    }
    if !super::outlet::exists(store.pool(), &a.outlet).await? {
        return Err(invalid("outlet", "choose one of the listed outlets"));
    }
    // A mailbox cannot be flooded with applications waiting for it (S/MIME BR §3.2.2.2).
    if mailbox::waiting_on(store.pool(), &a.email, "").await? >= mailbox::WAITING_PER_MAILBOX {
        return Err(invalid(
            "email",
            format!(
                "{} applications are already waiting for this address to be confirmed: confirm one of them first",
                mailbox::WAITING_PER_MAILBOX
            ),
        ));
    }
    // Who entered it (by account id), so that person cannot approve it.
    let entered_by = match &a.entered_by {
        Some(username) => Some(
            sqlx::query_scalar::<_, String>("SELECT id FROM staff WHERE username = $1")
                .bind(username)
                .fetch_optional(store.pool())
                .await?
                .ok_or(Error::NotFound)?,
        ),
        None => None,
    };
    let id = uuid::Uuid::new_v4().to_string();
    let reference = format!("EC-{}", &random_base32(5)[..8]);
    let secret = random_base32(20);
    let code = mailbox::new_code();
    let revocation_hash = hash_password_async(&a.revocation_secret).await?;
    let t = now();
    let hkid_index = vault.blind_index(Field::Hkid, hkid.expose())?;
    let (org_register, org_id) = if profile.kind == ProfileKind::Personal {
        (None, None)
    } else {
        let (register, br) = organisation_register(&a.org_register, &a.org_id)?;
        (Some(register), br)
    };
    if key_certified_to_another(
        store,
        &csr.key().fingerprint(),
        &hkid_index,
        &org_key(
            org_register,
            org_id.as_deref(),
            subject.organization.as_deref(),
        ),
    )
    .await?
    {
        return Err(key_of_another());
    }
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO applications (id, reference, secret_hash, revocation_hash, profile, state, version, outlet, language, \
         surname, given_name, name_zh, email, hkid_sealed, hkid_index, dob_sealed, phone_sealed, address_sealed, \
         consent_notices, consent_wording, consent_at, csr, email_code_hash, email_code_expires, created_at, updated_at, entered_by) \
         VALUES ($1, $2, $3, $4, $5, 'submitted', 1, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $19, $19, $23)",
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
    // The domain in lower case, as the certificate carries it (the directory looks it up so).
    .bind(match a.email.trim().rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => a.email.trim().to_string(),
    })
    .bind(vault.seal(Field::Hkid, &id, hkid.expose())?)
    .bind(hkid_index.to_vec())
    .bind(vault.seal(Field::DateOfBirth, &id, &a.date_of_birth)?)
    .bind(vault.seal(Field::Phone, &id, a.phone.trim())?)
    .bind(vault.seal(Field::Address, &id, a.address.trim())?)
    .bind(i64::from(a.consent_notices))
    .bind(CONSENT_WORDING)
    .bind(t)
    .bind(a.csr.clone())
    .bind(mailbox::code_hash(&id, &code))
    .bind(mailbox::code_expiry(auth, t))
    .bind(entered_by)
    .execute(&mut *tx)
    .await?;
    if a.publish_in_directory {
        if !super::directory::publishable(&a.profile) {
            return Err(invalid(
                "publish_in_directory",
                super::directory::NOT_PUBLISHABLE,
            ));
        }
        sqlx::query(
            "UPDATE applications SET publish = 1, publish_wording = $2, publish_at = $3 WHERE id = $1",
        )
        .bind(&id)
        .bind(DIRECTORY_WORDING)
        .bind(t)
        .execute(&mut *tx)
        .await?;
    }
    if profile.kind != ProfileKind::Personal {
        let server = profile.kind == ProfileKind::Server;
        sqlx::query(
            "UPDATE applications SET organization = $2, org_id = $3, user_surname = $4, user_given_name = $5, \
             dns_names = $6, dcv_token = $7, dcv_token_at = $8, user_title = $9, org_register = $10 WHERE id = $1",
        )
        .bind(&id)
        .bind(subject.organization.clone())
        .bind(org_id.clone())
        .bind(if profile.kind == ProfileKind::Organisational { subject.surname.clone() } else { None })
        .bind(if profile.kind == ProfileKind::Organisational { subject.given_name.clone() } else { None })
        .bind(server.then(|| subject.dns_names.join(" ")))
        .bind(server.then(super::domains::dcv_token))
        .bind(server.then_some(t))
        .bind(subject.title.clone())
        .bind(org_register)
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
                detail: json!({ "reference": reference, "profile": a.profile, "outlet": a.outlet, "consent_notices": a.consent_notices, "consent_wording": CONSENT_WORDING, "published": a.publish_in_directory, "publish_wording": a.publish_in_directory.then_some(DIRECTORY_WORDING) }),
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

/// The certificate's subject data from a stored application (at approval): the same rules as
/// at submission ([`subject_of`]), from the application's columns; countryName and localityName
/// only as the counter verified them (S/MIME BR §7.1.4.2.2(k)(n), TLS BR §7.1.2.7.4): a
/// person's country is the issuer of the identity document a matched identity check saw, an
/// organisation's the country of the register its check confirmed, and a server's locality the
/// one the clerk read from the organisation's registration.
pub(super) fn subject_of_record(profile: &Profile, r: &Application) -> Result<SubjectData> {
    let mut s = subject_of(
        profile,
        &NewApplication {
            org_register: r.org_register.clone().unwrap_or_default(),
            surname: r.surname.clone(),
            given_name: r.given_name.clone(),
            email: r.email.clone(),
            organization: r.organization.clone().unwrap_or_default(),
            org_id: r.org_id.clone().unwrap_or_default(),
            user_surname: r.user_surname.clone().unwrap_or_default(),
            user_given_name: r.user_given_name.clone().unwrap_or_default(),
            user_title: r.user_title.clone().unwrap_or_default(),
            dns_names: r.dns_names(),
            ..Default::default()
        },
    )?;
    s.country = match profile.kind {
        ProfileKind::Personal => r.identity_document.as_deref().and_then(document_country),
        _ => r.org_checked_version.is_some().then_some(REGISTER_COUNTRY),
    }
    .map(str::to_string);
    if profile.kind == ProfileKind::Server {
        s.locality = r.org_locality.clone();
    }
    Ok(s)
}

/// [`minor_days`] now, from the application's sealed date of birth.
pub(super) fn minor_validity(
    auth: &Authority,
    id: &str,
    profile: &Profile,
    dob_sealed: &[u8],
) -> Result<u32> {
    let dob = auth.pii()?.open_field(Field::DateOfBirth, id, dob_sealed)?;
    minor_days(profile, &dob, time::OffsetDateTime::now_utc())
}

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
    /// Expiry reminders are on.
    pub reminders: bool,
    /// The certificate is published in the directory.
    pub published: bool,
    /// When publication was last chosen or withdrawn, Unix seconds (never: `None`).
    pub published_at: Option<i64>,
    /// The subscriber consents to value-added notices.
    pub notices: bool,
    /// When that consent was last given or withdrawn, Unix seconds.
    pub notices_at: i64,
}

row! {
    struct TrackRow {
        reference: String,
        profile: String,
        state: String,
        outlet: String,
        certificate: Option<String>,
        rejected_reason: Option<String>,
        email_confirmed_at: Option<i64>,
        version: i64,
        code_pending: i64,
        issue_failed: i64,
        reminders_off: i64,
        publish: i64,
        publish_at: Option<i64>,
        consent_notices: i64,
        consent_at: i64,
    }
}

/// The citizen's view of their application.
pub async fn track(store: &Store, reference: &str, secret: &str) -> Result<CitizenView> {
    let id = owned(store, reference, secret).await?;
    let r = sqlx::query_as::<_, TrackRow>(
        "SELECT reference, profile, state, outlet, certificate, rejected_reason, email_confirmed_at, version, \
         CAST(CASE WHEN email_code_hash IS NOT NULL THEN 1 ELSE 0 END AS BIGINT) AS code_pending, \
         CAST(CASE WHEN issue_error IS NOT NULL THEN 1 ELSE 0 END AS BIGINT) AS issue_failed, \
         reminders_off, publish, publish_at, consent_notices, consent_at \
         FROM applications WHERE id = $1",
    )
    .bind(&id)
    .fetch_one(store.pool())
    .await?;
    let approvals = valid_approvals(store, &id, r.version).await?;
    let (dcv_token, domains) = domain_status(store, &id).await?;
    Ok(CitizenView {
        dcv_token,
        domains,
        status: status_of(
            &r.state,
            r.email_confirmed_at.is_some(),
            approvals,
            r.issue_failed != 0,
        ),
        reference: r.reference,
        profile: r.profile,
        outlet: r.outlet,
        certificate: r.certificate,
        rejected_reason: r.rejected_reason,
        code_pending: r.code_pending != 0,
        reminders: r.reminders_off == 0,
        published: r.publish != 0,
        published_at: r.publish_at,
        notices: r.consent_notices != 0,
        notices_at: r.consent_at,
    })
}

/// What the subscriber decides on the tracking page ([`set_choice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Expiry reminders by mail ([`super::reminders`]).
    Reminders,
    /// Publication in the public directory ([`super::directory`]): a personal certificate
    /// only, by its holder. A consent: recorded with its time and wording version.
    Directory,
    /// Value-added notices about e-Cert services ([`super::notices`]): a consent, recorded
    /// with its time and wording version.
    Notices,
}

/// The subscriber turns a [`Choice`] on or off (the tracking page: reference and tracking
/// secret). A consent (directory, notices) is recorded with the time and the version of the
/// wording shown ([`DIRECTORY_WORDING`], [`CONSENT_WORDING`]). Audited
/// (`ra.reminders.changed`, `ra.directory.changed`, `ra.notices.changed`), with the wording
/// version for a consent.
pub async fn set_choice(
    store: &Store,
    reference: &str,
    secret: &str,
    choice: Choice,
    on: bool,
) -> Result<()> {
    let id = owned(store, reference, secret).await?;
    let (sql, kind, detail) = match choice {
        Choice::Reminders => (
            "UPDATE applications SET reminders_off = $2 WHERE id = $1",
            "ra.reminders.changed",
            json!({ "reminders": on }),
        ),
        Choice::Directory => (
            "UPDATE applications SET publish = $2, publish_wording = $3, publish_at = $4 WHERE id = $1",
            "ra.directory.changed",
            json!({ "published": on, "wording": DIRECTORY_WORDING }),
        ),
        Choice::Notices => (
            "UPDATE applications SET consent_notices = $2, consent_wording = $3, consent_at = $4 WHERE id = $1",
            "ra.notices.changed",
            json!({ "consent": on, "wording": CONSENT_WORDING }),
        ),
    };
    if choice == Choice::Directory && on {
        let profile: String = sqlx::query_scalar("SELECT profile FROM applications WHERE id = $1")
            .bind(&id)
            .fetch_one(store.pool())
            .await?;
        if !super::directory::publishable(&profile) {
            return Err(Error::Conflict(super::directory::NOT_PUBLISHABLE.into()));
        }
    }
    let (value, wording) = match choice {
        Choice::Reminders => (i64::from(!on), "not a consent"),
        Choice::Directory => (i64::from(on), DIRECTORY_WORDING),
        Choice::Notices => (i64::from(on), CONSENT_WORDING),
    };
    let mut tx = store.begin().await?;
    let mut update = sqlx::query(sql).bind(&id).bind(value);
    if choice != Choice::Reminders {
        update = update.bind(wording).bind(super::support::now());
    }
    update.execute(&mut *tx).await?;
    if choice == Choice::Directory {
        crate::ldap::queue_application(&mut tx, &id, true, super::support::now()).await?;
    }
    store
        .audit(
            &mut tx,
            &Event {
                kind,
                actor: super::support::citizen(reference),
                subject: Some(id),
                detail,
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The certificate (DER) of a citizen's application, once issued.
pub async fn certificate(store: &Store, reference: &str, secret: &str) -> Result<Vec<u8>> {
    let id = owned(store, reference, secret).await?;
    sqlx::query_scalar::<_, Option<Vec<u8>>>(
        "SELECT c.cert_der FROM applications a JOIN certificates c ON c.serial = a.certificate WHERE a.id = $1",
    )
    .bind(&id)
    .fetch_optional(store.pool())
    .await?
    .flatten()
    .ok_or_else(|| Error::Conflict("the certificate has not been issued yet".into()))
}

row! {
    /// An issued certificate and the name of the CA that issued it.
    struct IssuedRow {
        cert_der: Option<Vec<u8>>,
        issuer: String,
    }
}

/// The certificate of a citizen's application with its chain, leaf first: the CA that issued
/// it (the certificate's own issuer: the Server CA for a server certificate, the Individual &
/// Organisational CA otherwise), then the root.
pub async fn certificate_chain(
    store: &Store,
    reference: &str,
    secret: &str,
) -> Result<Vec<Vec<u8>>> {
    let id = owned(store, reference, secret).await?;
    let not_yet = || Error::Conflict("the certificate has not been issued yet".into());
    let r = sqlx::query_as::<_, IssuedRow>(
        "SELECT c.cert_der AS cert_der, c.issuer AS issuer \
         FROM applications a JOIN certificates c ON c.serial = a.certificate WHERE a.id = $1",
    )
    .bind(&id)
    .fetch_optional(store.pool())
    .await?
    .ok_or_else(not_yet)?;
    let mut chain = vec![r.cert_der.ok_or_else(not_yet)?];
    let (_, issuing) = store
        .ca(&r.issuer)
        .await?
        .ok_or_else(|| Error::Store(format!("the {} CA's certificate is missing", r.issuer)))?;
    chain.push(issuing);
    chain.push(store.root_over(&r.issuer).await?.1);
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            publish_in_directory: false,
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
