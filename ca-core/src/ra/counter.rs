//! The counter: an outlet's queue, an application as the clerk's screen shows it (personal
//! fields masked, a reveal audited), the identity and organisation checks against the
//! documents in hand, corrections of contact details, and the issued certificate.

use serde_json::json;
use zeroize::Zeroizing;

use super::application::business_registration_number;
use super::domains::{domain_status, DomainStatus};
use super::mailbox;
use super::permissions::Action;
use super::record::{changed, in_outlet, staff_owned, valid_approvals};
use super::rules::{status_of, ApprovalPolicy, Status};
use super::session::StaffSession;
use super::support::{check_len, ct_eq, invalid, now};
use crate::audit::Event;
use crate::authority::Authority;
use crate::error::{Error, Result};
use crate::hkid::Hkid;
use crate::pii::Field;
use crate::profile::{Profile, ProfileKind, SubjectData};
use crate::row::row;
use crate::store::Store;

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

row! {
    struct QueueLine {
        id: String,
        reference: String,
        profile: String,
        surname: String,
        given_name: String,
        state: String,
        email_confirmed_at: Option<i64>,
        version: i64,
        created_at: i64,
        issue_failed: i64,
    }
}

/// The open applications within the member's reach (their outlet's; every outlet's for an
/// officer), oldest first; or the one with this reference (still only within reach).
pub async fn queue(
    store: &Store,
    staff: &StaffSession,
    reference: Option<&str>,
) -> Result<Vec<QueueRow>> {
    let outlet = staff.outlet_limit(Action::ViewApplications)?;
    let rows = sqlx::query_as::<_, QueueLine>(
        "SELECT id, reference, profile, surname, given_name, state, email_confirmed_at, version, created_at, \
         CAST(CASE WHEN issue_error IS NOT NULL THEN 1 ELSE 0 END AS BIGINT) AS issue_failed FROM applications \
         WHERE ($1 = '' OR outlet = $1) AND (($2 = '' AND state IN ('submitted', 'approved')) OR reference = $2) ORDER BY created_at LIMIT 200",
    )
    .bind(outlet.unwrap_or_default())
    .bind(reference.map(|r| r.trim().to_uppercase()).unwrap_or_default())
    .fetch_all(store.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let approvals = valid_approvals(store, &r.id, r.version).await?;
        out.push(QueueRow {
            status: status_of(
                &r.state,
                r.email_confirmed_at.is_some(),
                approvals,
                r.issue_failed != 0,
            ),
            name: format!("{} {}", r.surname, r.given_name),
            reference: r.reference,
            profile: r.profile,
            created_at: r.created_at,
            id: r.id,
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
    /// The organisation and its business registration number (empty for a government
    /// entity) (not personal).
    pub organization: Option<(String, String)>,
    /// The register the organisation is in: `NTR` (Business Registration) or `GOV` (a
    /// government bureau, department or statutory body).
    pub org_register: Option<String>,
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

/// A date of birth as staff screens (and the applicant's data-access page) show it.
pub(super) const DOB_MASKED: &str = "****-**-**";

/// A phone number as staff screens show it: its last two digits.
pub(super) fn mask_phone(phone: &str) -> String {
    let n = phone.chars().count();
    let shown: String = phone.chars().skip(n.saturating_sub(2)).collect();
    format!("{}{shown}", "*".repeat(n.saturating_sub(2)))
}

/// An address as staff screens show it: its first four characters.
pub(super) fn mask_address(address: &str) -> String {
    format!("{}…", address.chars().take(4).collect::<String>())
}

/// An application as the staff member's screen shows it (only in their outlet).
pub async fn staff_view(auth: &Authority, staff: &StaffSession, id: &str) -> Result<StaffView> {
    let store = auth.store();
    let vault = auth.pii()?;
    let r = staff_owned(store, staff, id, Action::ViewApplications).await?;
    let version = r.version;
    // A purged application has empty sealed fields.
    let open = |sealed: &[u8], f: Field| -> Result<Option<Zeroizing<String>>> {
        if sealed.is_empty() {
            return Ok(None);
        }
        vault.open_field(f, id, sealed).map(Some)
    };
    let purged = "(purged)".to_string();
    let hkid_masked = match open(&r.hkid_sealed, Field::Hkid)? {
        Some(h) => Hkid::parse(&h)?.masked(),
        None => purged.clone(),
    };
    let phone =
        open(&r.phone_sealed, Field::Phone)?.unwrap_or_else(|| Zeroizing::new(purged.clone()));
    let address =
        open(&r.address_sealed, Field::Address)?.unwrap_or_else(|| Zeroizing::new(purged.clone()));
    let same = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM applications WHERE hkid_index = $1 AND id <> $2 AND state <> 'rejected'",
    )
    .bind(&r.hkid_index)
    .bind(id)
    .fetch_one(store.pool())
    .await?;
    let approvals = sqlx::query_scalar::<_, String>(
        "SELECT st.display_name FROM approvals a JOIN staff st ON st.id = a.staff \
         WHERE a.application = $1 AND a.version = $2 AND a.decision = 'approve' AND a.expires_at > $3 ORDER BY a.at",
    )
    .bind(id)
    .bind(version)
    .bind(now())
    .fetch_all(store.pool())
    .await?;
    let (dcv_token, domains) = domain_status(store, id).await?;
    let ra = &auth.config().ra;
    Ok(StaffView {
        id: id.to_string(),
        version,
        status: status_of(
            &r.state,
            r.email_confirmed_at.is_some(),
            approvals.len(),
            r.issue_error.is_some(),
        ),
        hkid_masked,
        dob_masked: DOB_MASKED.into(),
        phone_masked: mask_phone(&phone),
        address_masked: mask_address(&address),
        identity_checked: r.identity_version == Some(version),
        fee: r.fee_amount.map(|a| {
            (
                a,
                r.fee_method.clone().unwrap_or_default(),
                r.fee_receipt.clone().unwrap_or_default(),
            )
        }),
        fee_due: super::fee::fee_due(ra, &r.profile),
        same_hkid: same,
        dual_control: ApprovalPolicy::of(ra, &r.profile, r.org_register.as_deref()).dual_control,
        approvals,
        organization: r
            .organization
            .clone()
            .map(|o| (o, r.org_id.clone().unwrap_or_default())),
        org_register: r.org_register.clone(),
        authorised_user: match (&r.user_surname, &r.user_given_name) {
            (Some(s), Some(g)) => Some(match &r.user_title {
                Some(title) => format!("{s} {g} ({title})"),
                None => format!("{s} {g}"),
            }),
            _ => None,
        },
        organisation_checked: r.org_checked_version == Some(version),
        dcv_token,
        domains,
        reference: r.reference,
        surname: r.surname,
        given_name: r.given_name,
        name_zh: r.name_zh,
        email: r.email,
        email_confirmed: r.email_confirmed_at.is_some(),
        certificate: r.certificate,
        rejected_reason: r.rejected_reason,
        issue_error: r.issue_error,
        profile: r.profile,
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
    // A read only (no settling): revealing a field changes nothing.
    let r = in_outlet(store, staff, id, Action::RevealPersonalData).await?;
    let (sealed, f) = match field {
        Revealable::Hkid => (&r.hkid_sealed, Field::Hkid),
        Revealable::DateOfBirth => (&r.dob_sealed, Field::DateOfBirth),
        Revealable::Phone => (&r.phone_sealed, Field::Phone),
        Revealable::Address => (&r.address_sealed, Field::Address),
    };
    if sealed.is_empty() {
        return Err(Error::Conflict(
            "the personal data of this application was purged".into(),
        ));
    }
    let value = vault.open_field(f, id, sealed)?;
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
    let r = staff_owned(store, staff, id, Action::RecordChecks).await?;
    r.open_at(Some(version))?;
    if !card_sighted {
        return Err(invalid(
            "card_sighted",
            "confirm that you have seen the original identity card",
        ));
    }
    let minor = Profile::get(&r.profile)?.minor;
    if minor && !guardian_consent {
        return Err(invalid(
            "guardian_consent",
            "a minor's application needs a parent or guardian present who consents",
        ));
    }
    let typed = Hkid::parse(typed_hkid)?;
    let typed_index = vault.blind_index(Field::Hkid, typed.expose())?;
    let matched = ct_eq(&r.hkid_index, &typed_index);
    // The document is the HKID card the application was made with: its issuer is the
    // certificate's countryName (`application::document_country`).
    record_check(
        store,
        staff,
        id,
        version,
        CounterCheck::Identity,
        matched,
        Some("HKID"),
        json!({ "version": version, "document": "HKID", "card_sighted": card_sighted, "guardian_consent": minor.then_some(guardian_consent) }),
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
/// only) and what it verified (`verified`: the identity document, or the organisation's
/// locality); a mismatch withdraws any earlier check, so approval waits for a clerk to check
/// again. Audited as `ra.<what>.checked` or `ra.<what>.mismatch` with `detail`.
#[allow(clippy::too_many_arguments)]
async fn record_check(
    store: &Store,
    staff: &StaffSession,
    id: &str,
    version: i64,
    check: CounterCheck,
    matched: bool,
    verified: Option<&str>,
    detail: serde_json::Value,
) -> Result<()> {
    let (set, clear, checked, mismatch) = match check {
        CounterCheck::Identity => (
            "UPDATE applications SET identity_by = $2, identity_at = $3, identity_version = $4, identity_document = $5, updated_at = $3 \
             WHERE id = $1 AND version = $4 AND state = 'submitted'",
            "UPDATE applications SET identity_by = NULL, identity_at = NULL, identity_version = NULL, identity_document = NULL, updated_at = $2 WHERE id = $1",
            "ra.identity.checked",
            "ra.identity.mismatch",
        ),
        CounterCheck::Organisation => (
            "UPDATE applications SET org_checked_by = $2, org_checked_at = $3, org_checked_version = $4, org_locality = $5, updated_at = $3 \
             WHERE id = $1 AND version = $4 AND state = 'submitted'",
            "UPDATE applications SET org_checked_by = NULL, org_checked_at = NULL, org_checked_version = NULL, org_locality = NULL, updated_at = $2 WHERE id = $1",
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
            .bind(verified)
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
    let r = staff_owned(store, staff, id, Action::RecordChecks).await?;
    r.open_at(None)?;
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
        let profile = Profile::get(&r.profile)?;
        let subject = SubjectData {
            surname: Some(r.surname.clone()),
            given_name: Some(r.given_name.clone()),
            emails: vec![email.trim().to_string()],
            ..Default::default()
        };
        let subject = profile
            .check(&subject, None, time::OffsetDateTime::now_utc())
            .map_err(|e| match e {
                Error::Profile { reason, .. } => invalid("email", reason),
                other => other,
            })?;
        let c = mailbox::new_code();
        sqlx::query(
            // In person at the counter: the lifetime counts of values and wrong values start
            // again with the corrected address.
            "UPDATE applications SET email = $2, email_confirmed_at = NULL, email_code_hash = $3, email_code_expires = $4, \
             email_code_attempts = 0, email_codes_sent = 1, email_code_failures = 0 WHERE id = $1",
        )
        .bind(id)
        .bind(subject.emails.first().cloned().unwrap_or_default())
        .bind(mailbox::code_hash(id, &c))
        .bind(mailbox::code_expiry(auth, t))
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

/// The clerk's check of the organisation for this version (S/MIME BR §3.2.3, TLS BR §3.2.2.1
/// and §3.2.5), in the register the application names:
/// - `NTR`: the Business Registration Certificate sighted and its number typed (it must match
///   the application's);
/// - `GOV`: a government bureau, department or statutory body, on the Government's own list,
///   with no number (`typed_br` empty);
///
/// and in both the organisation's written authorisation of its representative sighted. A
/// server application also records the locality of the registered address, typed from the
/// registration: the certificate's localityName (TLS BR §7.1.2.7.4). A mismatch withdraws an
/// earlier check.
pub async fn check_organisation(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
    version: i64,
    typed_br: &str,
    documents_sighted: bool,
    locality: Option<&str>,
) -> Result<()> {
    let store = auth.store();
    let r = staff_owned(store, staff, id, Action::RecordChecks).await?;
    r.open_at(Some(version))?;
    let profile = Profile::get(&r.profile)?;
    if profile.kind == ProfileKind::Personal {
        return Err(Error::Conflict(
            "a personal application has no organisation to check".into(),
        ));
    }
    if !documents_sighted {
        return Err(invalid(
            "documents_sighted",
            "confirm that you have seen the registration document and the authorisation",
        ));
    }
    let locality = locality.map(str::trim).filter(|l| !l.is_empty());
    match (profile.kind == ProfileKind::Server, locality) {
        (true, Some(l)) => {
            check_len("locality", l, 1, 64)?;
            if l.chars().any(char::is_control) || l.contains("  ") {
                return Err(invalid("locality", "the locality as on the registration"));
            }
        }
        (true, None) => {
            return Err(invalid(
                "locality",
                "type the locality of the organisation's registered address (e.g. Kowloon)",
            ))
        }
        (false, Some(_)) => {
            return Err(invalid(
                "locality",
                "only a server application records a locality",
            ))
        }
        (false, None) => {}
    }
    let register = r.org_register.as_deref().unwrap_or("NTR");
    let matched = match (register, r.org_id.as_deref()) {
        ("GOV", _) => {
            if !typed_br.trim().is_empty() {
                return Err(invalid(
                    "org_id",
                    "a government bureau, department or statutory body has no business registration number: leave it empty",
                ));
            }
            true
        }
        (_, Some(stored)) => business_registration_number(typed_br)? == stored,
        (_, None) => false,
    };
    record_check(
        store,
        staff,
        id,
        version,
        CounterCheck::Organisation,
        matched,
        locality,
        json!({ "version": version, "register": register, "documents_sighted": documents_sighted, "locality": locality }),
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

/// The certificate (DER) of an application of the staff member's outlet.
pub async fn staff_certificate(store: &Store, staff: &StaffSession, id: &str) -> Result<Vec<u8>> {
    let r = staff_owned(store, staff, id, Action::ViewApplications).await?;
    let serial = r
        .certificate
        .ok_or_else(|| Error::Conflict("the certificate has not been issued yet".into()))?;
    store
        .certificate(&serial)
        .await?
        .and_then(|c| c.cert_der)
        .ok_or_else(|| Error::Conflict("the certificate has not been issued yet".into()))
}
