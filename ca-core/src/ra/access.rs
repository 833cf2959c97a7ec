//! The applicant's access to the data held about them (PDPO DPP6; issue 18, docs/PRIVACY.md
//! "Seeing what is held"): with the reference and tracking secret, what the application holds
//! — masked as on staff screens, so the page is no better to someone who looks over the
//! applicant's shoulder than a clerk's screen — why each item is held, and until when.

use serde_json::json;

use super::counter::{mask_address, mask_phone, DOB_MASKED};
use super::record::owned;
use super::rules::{status_of, Status};
use crate::audit::Event;
use crate::authority::Authority;
use crate::error::Result;
use crate::hkid::Hkid;
use crate::pii::Field;
use crate::row::row;

/// Why an item is held (each has its text on the page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Names and mailbox: they are what the certificate certifies; the mailbox also receives
    /// the confirmation codes and notices about the certificate.
    Certificate,
    /// HKID number and date of birth: the identity check at the counter, and (the number's
    /// blind index) one subscriber's applications recognised as theirs.
    Identity,
    /// Phone and address: reaching the applicant about the application.
    Contact,
    /// The organisation and the person it authorises: what an organisational certificate
    /// certifies.
    Organisation,
}

/// One item held, as shown.
#[derive(Debug, Clone)]
pub struct Item {
    /// Which field: `surname`, `given_name`, `name_zh`, `email`, `hkid`, `date_of_birth`,
    /// `phone`, `address`, `organization`, `authorised_user`, `role_title`.
    pub field: &'static str,
    /// The value, masked where staff screens mask it.
    pub shown: String,
    /// Why it is held.
    pub purpose: Purpose,
}

/// Which rule keeps the data, and so until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// No certificate (yet): `ra.retention_days` after the application's last change.
    Unfinished,
    /// Behind a certificate: `ra.retention_after_expiry_days` after it expires.
    AfterExpiry,
    /// Purged already: nothing personal is held.
    Purged,
}

/// A consent as recorded.
#[derive(Debug, Clone)]
pub struct Consent {
    /// Given (true) or not / withdrawn (false).
    pub given: bool,
    /// The version of the wording shown when it was last changed.
    pub wording: Option<String>,
    /// When it was last changed, Unix seconds.
    pub at: Option<i64>,
}

/// What the data-access page shows.
#[derive(Debug, Clone)]
pub struct DataHeld {
    /// The application's reference.
    pub reference: String,
    /// Its profile.
    pub profile: String,
    /// Where it stands.
    pub status: Status,
    /// The outlet chosen.
    pub outlet: String,
    /// When it was made and last changed, Unix seconds.
    pub created_at: i64,
    /// Its last change.
    pub updated_at: i64,
    /// The items held (empty once purged).
    pub items: Vec<Item>,
    /// Whether the identity check at the counter was recorded (not what was seen).
    pub identity_checked: bool,
    /// The fee recorded: amount in cents, method, receipt.
    pub fee: Option<(i64, String, String)>,
    /// The certificate: serial, notAfter, revoked (or on hold).
    pub certificate: Option<(String, i64, bool)>,
    /// Value-added notices.
    pub notices: Consent,
    /// Publication in the directory.
    pub directory: Consent,
    /// Expiry reminders on.
    pub reminders: bool,
    /// Which rule keeps the data.
    pub kept: Kept,
    /// Until when, by that rule (Unix seconds; `None` once purged).
    pub kept_until: Option<i64>,
}

row! {
    struct Extra {
        outlet: String,
        created_at: i64,
        updated_at: i64,
        consent_notices: i64,
        consent_wording: String,
        consent_at: i64,
        publish: i64,
        publish_wording: Option<String>,
        publish_at: Option<i64>,
        reminders_off: i64,
        not_after: Option<i64>,
        revoked: i64,
    }
}

/// What is held about the applicant of `reference` who knows `secret`, masked; audited as
/// `ra.data_viewed` (who and when, never what). Needs the personal-data keys open (else
/// [`crate::error::Error::PersonalDataLocked`]); a wrong secret is [`crate::error::Error::NotFound`].
pub async fn personal_data(auth: &Authority, reference: &str, secret: &str) -> Result<DataHeld> {
    let store = auth.store();
    let id = owned(store, reference, secret).await?;
    let r = super::record::by_id(store, &id).await?;
    let x = sqlx::query_as::<_, Extra>(
        "SELECT a.outlet, a.created_at, a.updated_at, a.consent_notices, a.consent_wording, a.consent_at, \
         a.publish, a.publish_wording, a.publish_at, a.reminders_off, c.not_after, \
         CAST(CASE WHEN c.revocation_reason IS NOT NULL THEN 1 ELSE 0 END AS BIGINT) AS revoked \
         FROM applications a LEFT JOIN certificates c ON c.serial = a.certificate WHERE a.id = $1",
    )
    .bind(&id)
    .fetch_one(store.pool())
    .await?;
    let purged = r.hkid_sealed.is_empty();
    let mut items = Vec::new();
    if !purged {
        let vault = auth.pii()?;
        let open = |sealed: &[u8], f: Field| vault.open_field(f, &id, sealed);
        let mut push = |field, shown: String, purpose| {
            if !shown.trim().is_empty() {
                items.push(Item {
                    field,
                    shown,
                    purpose,
                })
            }
        };
        push("surname", r.surname.clone(), Purpose::Certificate);
        push("given_name", r.given_name.clone(), Purpose::Certificate);
        push("name_zh", r.name_zh.clone(), Purpose::Certificate);
        push("email", r.email.clone(), Purpose::Certificate);
        let hkid = open(&r.hkid_sealed, Field::Hkid)?;
        push("hkid", Hkid::parse(&hkid)?.masked(), Purpose::Identity);
        push("date_of_birth", DOB_MASKED.into(), Purpose::Identity);
        push(
            "phone",
            mask_phone(&open(&r.phone_sealed, Field::Phone)?),
            Purpose::Contact,
        );
        push(
            "address",
            mask_address(&open(&r.address_sealed, Field::Address)?),
            Purpose::Contact,
        );
        if let Some(org) = &r.organization {
            push("organization", org.clone(), Purpose::Organisation);
        }
        let user = [r.user_given_name.as_deref(), r.user_surname.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        push("authorised_user", user, Purpose::Organisation);
        push(
            "role_title",
            r.user_title.clone().unwrap_or_default(),
            Purpose::Organisation,
        );
    }
    let ra = &auth.config().ra;
    let (kept, kept_until) = match (purged, x.not_after) {
        (true, _) => (Kept::Purged, None),
        (false, Some(not_after)) => (
            Kept::AfterExpiry,
            Some(not_after + i64::from(ra.retention_after_expiry_days) * 86_400),
        ),
        (false, None) => (
            Kept::Unfinished,
            Some(x.updated_at + i64::from(ra.retention_days) * 86_400),
        ),
    };
    let approvals = super::record::valid_approvals(store, &id, r.version).await?;
    store
        .audit_now(&Event {
            kind: "ra.data_viewed",
            actor: super::support::citizen(reference),
            subject: Some(id.clone()),
            detail: json!({}),
        })
        .await?;
    Ok(DataHeld {
        status: status_of(
            &r.state,
            r.email_confirmed_at.is_some(),
            approvals,
            r.issue_error.is_some(),
        ),
        // As staff screens say it: for the application as it stands (an edit asks again).
        identity_checked: r.identity_version == Some(r.version),
        fee: r.fee_amount.map(|a| {
            (
                a,
                r.fee_method.clone().unwrap_or_default(),
                r.fee_receipt.clone().unwrap_or_default(),
            )
        }),
        certificate: r
            .certificate
            .clone()
            .zip(x.not_after)
            .map(|(s, n)| (s, n, x.revoked != 0)),
        notices: Consent {
            given: x.consent_notices != 0,
            wording: Some(x.consent_wording).filter(|w| !w.is_empty()),
            at: Some(x.consent_at),
        },
        directory: Consent {
            given: x.publish != 0,
            wording: x.publish_wording,
            at: x.publish_at,
        },
        reminders: x.reminders_off == 0,
        reference: r.reference,
        profile: r.profile,
        outlet: x.outlet,
        created_at: x.created_at,
        updated_at: x.updated_at,
        items,
        kept,
        kept_until,
    })
}
