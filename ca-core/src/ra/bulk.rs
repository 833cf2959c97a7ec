//! Bulk enrolment of an organisation's staff (issue 16, docs/BULK.md).
//!
//! 1. An officer registers an organisation from one of its issued organisational applications:
//!    its name and registration were checked at the counter, with its Authorised
//!    Representative's authorisation ([`register_organisation`]).
//! 2. The organisation proves control of its mail domains by DNS: a Random Value in a TXT
//!    record, checked from this host with DNSSEC and corroborated by the remote network
//!    perspectives (S/MIME BR §3.2.2.1 by TLS BR §3.2.2.4.7 and §3.2.2.9;
//!    [`add_domain`], [`validate_domain`]).
//! 3. The officer gives it a batch token, scoped to the organisation, its validated domains
//!    and the profiles named ([`batch_token`]); shown once, stored as a SHA-256.
//! 4. With the token the organisation submits batches of rows ([`submit_batch`]): each row is
//!    checked on arrival (a bad row gets a named error and never blocks the good ones); a
//!    client row id is issued once per organisation (a resubmission issues nothing twice).
//! 5. Two officers approve the batch (a two-officer proposal of kind `batch_approval`), and
//!    the signer issues every good row ([`issue_queued`]) concurrently through the issuance
//!    cycle, each with its OCSP response queued in the transaction that stores it.
//!
//! A row's serial is recorded (`issuing`) before the HSM signs, and `issued` once the
//! certificate is stored; a signer that dies in between resolves it at start
//! ([`resume_batches`]): issued if the certificate was stored, otherwise queued again (the
//! half-issued serial is abandoned by the issuance cycle's own rule, never reported good).

use std::sync::Arc;

use serde_json::json;

use super::permissions::Action;
use super::session::StaffSession;
use super::support::{check_len, invalid, now, random_base32, sha256};
use crate::audit::Event;
use crate::authority::{ApprovedRequest, Authority};
use crate::csr::VerifiedCsr;
use crate::error::{Error, Result};
use crate::profile::{Profile, ProfileKind, SubjectData};
use crate::row::row;
use crate::store::Store;

/// The profiles a batch may issue: sponsor-validated staff certificates.
pub const BATCH_PROFILES: [&str; 2] = ["organisational", "organisational-role"];

/// The most rows one batch carries.
pub const MAX_BATCH_ROWS: usize = 20_000;

/// How long a batch token lasts at most, in days.
pub const MAX_TOKEN_DAYS: u32 = 366;

/// S/MIME BR §4.2.1(2): the organisation's verification is reused for 825 days at most.
pub const ORGANISATION_REUSE_DAYS: i64 = 825;

/// S/MIME BR §4.2.1(1): a mail domain's validation (§3.2.2.1) is reused for 398 days at most.
pub const DOMAIN_REUSE_DAYS: i64 = 398;

/// Rows of an organisation waiting for approval, at most (unapproved batches hold personal
/// data and CSRs: not an unbounded store).
pub const MAX_PENDING_ROWS: i64 = 2 * MAX_BATCH_ROWS as i64;

/// A client row id as stored and echoed: at most 64 characters, no control characters.
fn client_id(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect()
}

fn actor(staff: &StaffSession) -> String {
    format!("staff:{}", staff.username)
}

row! {
    struct AppOrgRow {
        profile: String,
        state: String,
        organization: Option<String>,
        org_register: Option<String>,
        org_id: Option<String>,
        org_checked_at: Option<i64>,
    }
}

/// Registers the organisation of an issued organisational (or encipherment) application: its
/// name and registration as checked at the counter. Idempotent: the same organisation again
/// returns its id.
pub async fn register_organisation(
    auth: &Authority,
    staff: &StaffSession,
    application_id: &str,
) -> Result<String> {
    staff.authorize(Action::ManageOrganisations)?;
    let store = auth.store();
    let r = sqlx::query_as::<_, AppOrgRow>(
        "SELECT profile, state, organization, org_register, org_id, org_checked_at FROM applications WHERE id = $1",
    )
    .bind(application_id)
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::NotFound)?;
    let kind = Profile::get(&r.profile)?.kind;
    if !matches!(
        kind,
        ProfileKind::Organisational | ProfileKind::Encipherment
    ) || r.state != "issued"
    {
        return Err(Error::Conflict(
            "an organisation is registered from one of its issued organisational applications \
             (its registration and its representative were checked at the counter)"
                .into(),
        ));
    }
    // S/MIME BR §4.2.1(2): a verification older than 825 days is not reused.
    let verified_at = r
        .org_checked_at
        .filter(|t| now() - t < ORGANISATION_REUSE_DAYS * 86_400)
        .ok_or_else(|| {
            Error::Conflict(
                "the organisation was checked at the counter more than 825 days ago (S/MIME BR \
                 §4.2.1): register it from a newer application"
                    .into(),
            )
        })?;
    let name = r.organization.unwrap_or_default();
    let register = r.org_register.unwrap_or_else(|| "NTR".into());
    let existing = sqlx::query_scalar::<_, String>(
        "SELECT id FROM organisations WHERE register = $1 AND COALESCE(org_id, '') = $2 AND name = $3",
    )
    .bind(&register)
    .bind(r.org_id.clone().unwrap_or_default())
    .bind(&name)
    .fetch_optional(store.pool())
    .await?;
    if let Some(id) = existing {
        // A newer check at the counter renews the verification.
        sqlx::query("UPDATE organisations SET verified_at = $2 WHERE id = $1 AND verified_at < $2")
            .bind(&id)
            .bind(verified_at)
            .execute(store.pool())
            .await?;
        return Ok(id);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO organisations (id, name, register, org_id, application_id, verified_at, registered_by, registered_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(&name)
    .bind(&register)
    .bind(&r.org_id)
    .bind(application_id)
    .bind(verified_at)
    .bind(&staff.username)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "bulk.organisation.registered",
                actor: actor(staff),
                subject: Some(id.clone()),
                detail: json!({ "application": application_id, "register": register, "org_id": r.org_id }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(id)
}

row! {
    #[derive(Clone)]
    struct OrgRow {
        name: String,
        register: String,
        org_id: Option<String>,
        verified_at: i64,
    }
}

impl OrgRow {
    /// Its verification may still be reused (S/MIME BR §4.2.1(2)).
    fn current(&self) -> Result<()> {
        if now() - self.verified_at >= ORGANISATION_REUSE_DAYS * 86_400 {
            return Err(Error::Conflict(
                "the organisation's verification is older than 825 days (S/MIME BR §4.2.1): \
                 it is checked again at the counter"
                    .into(),
            ));
        }
        Ok(())
    }
}

async fn organisation(store: &Store, id: &str) -> Result<OrgRow> {
    sqlx::query_as::<_, OrgRow>(
        "SELECT name, register, org_id, verified_at FROM organisations WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::NotFound)
}

/// One mail domain of an organisation and where its validation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgDomain {
    /// The domain.
    pub domain: String,
    /// Where the organisation publishes the TXT record.
    pub record: String,
    /// The Random Value it publishes there.
    pub value: String,
    /// Validated, within the reuse period.
    pub validated: bool,
    /// Why the last check did not validate it.
    pub problem: Option<String>,
    /// When the Random Value was made (Unix seconds).
    pub value_made_at: i64,
}

/// A DNS name as a domain: lower case, letters, digits and inner hyphens in dot-separated
/// labels, at least two labels.
fn domain_name(d: &str) -> Result<String> {
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(d)
    } else {
        Err(invalid("domain", "a mail domain such as example.gov.hk"))
    }
}

row! {
    struct DomainRow {
        domain: String,
        dcv_token: String,
        token_at: i64,
        validated_at: Option<i64>,
    }
}

/// An organisation's domains.
pub async fn domains(store: &Store, organisation_id: &str) -> Result<Vec<OrgDomain>> {
    organisation(store, organisation_id).await?;
    let rows = sqlx::query_as::<_, DomainRow>(
        "SELECT domain, dcv_token, token_at, validated_at FROM organisation_domains WHERE organisation_id = $1 ORDER BY domain",
    )
    .bind(organisation_id)
    .fetch_all(store.pool())
    .await?;
    let fresh = now() - DOMAIN_REUSE_DAYS * 86_400;
    Ok(rows
        .into_iter()
        .map(|r| OrgDomain {
            record: crate::dcv::record_name(&r.domain),
            validated: r.validated_at.is_some_and(|t| t >= fresh),
            domain: r.domain,
            value: r.dcv_token,
            value_made_at: r.token_at,
            problem: None,
        })
        .collect())
}

/// Adds a mail domain to validate; returns where to publish which value. Adding it again
/// keeps its value.
pub async fn add_domain(
    auth: &Authority,
    staff: &StaffSession,
    organisation_id: &str,
    domain: &str,
) -> Result<OrgDomain> {
    staff.authorize(Action::ManageOrganisations)?;
    let store = auth.store();
    organisation(store, organisation_id).await?;
    let domain = domain_name(domain)?;
    let mut tx = store.begin().await?;
    let added = sqlx::query(
        "INSERT INTO organisation_domains (organisation_id, domain, dcv_token, token_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (organisation_id, domain) DO NOTHING",
    )
    .bind(organisation_id)
    .bind(&domain)
    .bind(super::domains::dcv_token())
    .bind(now())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if added == 1 {
        store
            .audit(
                &mut tx,
                &Event {
                    kind: "bulk.domain.added",
                    actor: actor(staff),
                    subject: Some(organisation_id.to_string()),
                    detail: json!({ "domain": domain }),
                },
            )
            .await?;
    }
    tx.commit().await?;
    domains(store, organisation_id)
        .await?
        .into_iter()
        .find(|d| d.domain == domain)
        .ok_or(Error::NotFound)
}

/// Checks the organisation's control of `domain` (the TXT record holds its Random Value, seen
/// from here with DNSSEC and corroborated by the remote perspectives) and records it.
pub async fn validate_domain(
    auth: &Authority,
    staff: &StaffSession,
    organisation_id: &str,
    domain: &str,
) -> Result<OrgDomain> {
    staff.authorize(Action::ManageOrganisations)?;
    let store = auth.store();
    let domain = domain_name(domain)?;
    let mut d = domains(store, organisation_id)
        .await?
        .into_iter()
        .find(|d| d.domain == domain)
        .ok_or(Error::NotFound)?;
    // A Random Value is used for 30 days at most (TLS BR §3.2.2.4.7, `dcv::TOKEN_DAYS`): an
    // older one is replaced, and the organisation publishes the new one.
    if now() - d.value_made_at > crate::dcv::TOKEN_DAYS * 86_400 {
        let fresh = super::domains::dcv_token();
        let mut tx = store.begin().await?;
        sqlx::query(
            "UPDATE organisation_domains SET dcv_token = $3, token_at = $4 WHERE organisation_id = $1 AND domain = $2 AND token_at = $5",
        )
        .bind(organisation_id)
        .bind(&domain)
        .bind(&fresh)
        .bind(now())
        .bind(d.value_made_at)
        .execute(&mut *tx)
        .await?;
        store
            .audit(
                &mut tx,
                &Event {
                    kind: "bulk.domain.new_value",
                    actor: actor(staff),
                    subject: Some(organisation_id.to_string()),
                    detail: json!({ "domain": domain, "reason": "the Random Value was older than 30 days" }),
                },
            )
            .await?;
        tx.commit().await?;
        let mut d = domains(store, organisation_id)
            .await?
            .into_iter()
            .find(|x| x.domain == domain)
            .ok_or(Error::NotFound)?;
        d.validated = false;
        d.problem = Some(format!(
            "a new Random Value (the old one was more than 30 days old): publish it at {}",
            d.record
        ));
        return Ok(d);
    }
    let names = [(d.domain.clone(), d.record.clone())];
    let (found, problems, perspectives) =
        super::domains::control_of(auth, &names, &d.value).await?;
    if !found.contains(&0) {
        d.problem = problems.into_iter().flatten().next();
        return Ok(d);
    }
    let mut tx = store.begin().await?;
    sqlx::query(
        "UPDATE organisation_domains SET validated_at = $3 WHERE organisation_id = $1 AND domain = $2",
    )
    .bind(organisation_id)
    .bind(&domain)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "bulk.domain.validated",
                actor: actor(staff),
                subject: Some(organisation_id.to_string()),
                detail: json!({ "domain": domain, "record": d.record, "method": crate::dcv::METHOD, "random_value": d.value, "perspectives": perspectives }),
            },
        )
        .await?;
    tx.commit().await?;
    d.validated = true;
    Ok(d)
}

/// Gives the organisation a batch token for `profiles` (of [`BATCH_PROFILES`]), valid `days`;
/// returns it (shown once). The organisation must have a validated domain.
pub async fn batch_token(
    auth: &Authority,
    staff: &StaffSession,
    organisation_id: &str,
    profiles: &[String],
    days: u32,
) -> Result<String> {
    staff.authorize(Action::ManageOrganisations)?;
    let store = auth.store();
    organisation(store, organisation_id).await?.current()?;
    if profiles.is_empty()
        || profiles
            .iter()
            .any(|p| !BATCH_PROFILES.contains(&p.as_str()))
    {
        return Err(invalid(
            "profiles",
            "organisational and/or organisational-role",
        ));
    }
    if days == 0 || days > MAX_TOKEN_DAYS {
        return Err(invalid("days", format!("1 to {MAX_TOKEN_DAYS}")));
    }
    if !domains(store, organisation_id)
        .await?
        .iter()
        .any(|d| d.validated)
    {
        return Err(Error::Conflict(
            "the organisation has no validated mail domain yet".into(),
        ));
    }
    let token = format!("ecb_{}", random_base32(32).to_ascii_lowercase());
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO batch_tokens (token_sha256, organisation_id, profiles, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(token_digest(&token))
    .bind(organisation_id)
    .bind(profiles.join(" "))
    .bind(&staff.username)
    .bind(now())
    .bind(now() + i64::from(days) * 86_400)
    .execute(&mut *tx)
    .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "bulk.token.issued",
                actor: actor(staff),
                subject: Some(organisation_id.to_string()),
                detail: json!({ "profiles": profiles, "days": days }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(token)
}

/// What [`revoke_batch_tokens`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokensRevoked {
    /// Tokens revoked (those in force).
    pub tokens: u64,
    /// Batches still waiting for approval, refused (their pending rows made `invalid`).
    pub batches_refused: u64,
}

/// Why the rows of a batch refused by a token revocation are invalid.
const REFUSED_BY_REVOCATION: &str =
    "refused: the organisation's batch tokens were revoked before the batch was approved";

/// Revokes every batch token of the organisation still in force (one leaked, or no longer
/// wanted: a token otherwise lasts until it expires), and refuses the organisation's batches
/// still waiting for approval — any of them may be the leaked token's, and nothing tells
/// them apart: their pending rows become `invalid` (their client row ids free again) and the
/// organisation resubmits with its new token. Audited (`bulk.token.revoked`, with both
/// counts) even when there was nothing. Approved batches go on issuing, as do the ones a
/// standing authorisation approved on arrival: withdraw it too when a token leaked.
pub async fn revoke_batch_tokens(
    auth: &Authority,
    staff: &StaffSession,
    organisation_id: &str,
) -> Result<TokensRevoked> {
    staff.authorize(Action::ManageOrganisations)?;
    let store = auth.store();
    // Any organisation on record, current or not (its tokens may outlive its record).
    organisation(store, organisation_id).await?;
    let at = now();
    let mut tx = store.begin().await?;
    let revoked = sqlx::query(
        "UPDATE batch_tokens SET revoked_at = $1 \
         WHERE organisation_id = $2 AND revoked_at IS NULL AND expires_at >= $1",
    )
    .bind(at)
    .bind(organisation_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "UPDATE batch_rows SET state = 'invalid', error = $1, updated_at = $2 WHERE state = 'pending' \
         AND batch_id IN (SELECT id FROM batches WHERE organisation_id = $3 AND state = 'submitted')",
    )
    .bind(REFUSED_BY_REVOCATION)
    .bind(at)
    .bind(organisation_id)
    .execute(&mut *tx)
    .await?;
    let batches_refused = sqlx::query(
        "UPDATE batches SET state = 'done' WHERE organisation_id = $1 AND state = 'submitted'",
    )
    .bind(organisation_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    store
        .audit(
            &mut tx,
            &Event {
                kind: "bulk.token.revoked",
                actor: actor(staff),
                subject: Some(organisation_id.to_string()),
                detail: json!({ "tokens": revoked, "batches_refused": batches_refused }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(TokensRevoked {
        tokens: revoked,
        batches_refused,
    })
}

/// What the store keeps of a batch token: its SHA-256 (length-prefixed, [`super::support`]).
pub fn token_digest(token: &str) -> Vec<u8> {
    sha256(&[token.as_bytes()])
}

/// Who a batch token acts for.
#[derive(Debug, Clone)]
pub struct BatchCaller {
    /// The organisation.
    pub organisation_id: String,
    /// The profiles its batches may issue.
    pub profiles: Vec<String>,
    /// The token's digest ([`token_digest`]): a submission checks again, in its own
    /// transaction, that the token is still in force.
    pub token: Vec<u8>,
}

row! {
    struct TokenRow {
        organisation_id: String,
        profiles: String,
        expires_at: i64,
        revoked_at: Option<i64>,
    }
}

/// The organisation behind a batch token (`ecb_…`); [`Error::SignInFailed`] for anything else.
pub async fn batch_caller(store: &Store, token: &str) -> Result<BatchCaller> {
    if !token.starts_with("ecb_") {
        return Err(Error::SignInFailed);
    }
    let digest = token_digest(token);
    let r = sqlx::query_as::<_, TokenRow>(
        "SELECT organisation_id, profiles, expires_at, revoked_at FROM batch_tokens WHERE token_sha256 = $1",
    )
    .bind(&digest)
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::SignInFailed)?;
    if r.revoked_at.is_some() || r.expires_at < now() {
        return Err(Error::SignInFailed);
    }
    Ok(BatchCaller {
        organisation_id: r.organisation_id,
        profiles: r.profiles.split(' ').map(str::to_string).collect(),
        token: digest,
    })
}

/// One row of a batch as submitted.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct BatchRowIn {
    /// The organisation's own id of the row (unique per organisation).
    #[serde(default)]
    pub client_row_id: String,
    /// Surname.
    #[serde(default)]
    pub surname: String,
    /// Given name.
    #[serde(default)]
    pub given_name: String,
    /// E-mail address, in a validated domain.
    #[serde(default)]
    pub email: String,
    /// Role title (organisational-role).
    #[serde(default)]
    pub title: Option<String>,
    /// `organisational` (default) or `organisational-role`.
    #[serde(default)]
    pub profile: Option<String>,
    /// The CSR (PEM).
    #[serde(default)]
    pub csr: String,
}

/// Parses a batch body: JSON lines (one object per line) or CSV with a header line naming
/// the columns (`client_row_id,surname,given_name,email,title,profile,csr`; the CSR's line
/// breaks as `\n`). A line that does not parse becomes a row with its error.
pub fn parse_rows(body: &str) -> Vec<std::result::Result<BatchRowIn, String>> {
    let mut lines = body.lines().filter(|l| !l.trim().is_empty()).peekable();
    let csv = lines
        .peek()
        .is_some_and(|l| !l.trim_start().starts_with('{'));
    if !csv {
        return lines
            .map(|l| {
                serde_json::from_str::<BatchRowIn>(l).map_err(|e| format!("not a JSON row: {e}"))
            })
            .collect();
    }
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
    lines
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            if fields.len() != columns.len() {
                return Err(format!(
                    "{} fields where the header names {}",
                    fields.len(),
                    columns.len()
                ));
            }
            let mut r = BatchRowIn::default();
            for (c, v) in columns.iter().zip(fields) {
                let v = v.trim().to_string();
                match c.as_str() {
                    "client_row_id" => r.client_row_id = v,
                    "surname" => r.surname = v,
                    "given_name" => r.given_name = v,
                    "email" => r.email = v,
                    "title" => r.title = Some(v).filter(|t| !t.is_empty()),
                    "profile" => r.profile = Some(v).filter(|p| !p.is_empty()),
                    "csr" => r.csr = v.replace("\\n", "\n"),
                    other => return Err(format!("unknown column {other:?}")),
                }
            }
            Ok(r)
        })
        .collect()
}

/// What a submission did.
#[derive(Debug, Clone)]
pub struct BatchReceipt {
    /// The batch.
    pub id: String,
    /// Rows received.
    pub rows: usize,
    /// Rows waiting for the batch's approval.
    pub accepted: usize,
    /// Rows whose client row id was submitted before (nothing issued again).
    pub duplicates: usize,
    /// Refused rows: (row number from 1, client row id, why).
    pub errors: Vec<(usize, String, String)>,
    /// Approved on arrival by the organisation's standing authorisation (else it waits for
    /// two officers).
    pub approved: bool,
}

/// A checked row: its profile and subject.
struct Checked {
    profile: &'static Profile,
    subject: SubjectData,
}

fn check_row(
    auth: &Authority,
    org: &OrgRow,
    caller: &BatchCaller,
    validated: &[String],
    r: &BatchRowIn,
) -> Result<Checked> {
    check_len("client_row_id", &r.client_row_id, 1, 64)?;
    let profile_id = r.profile.as_deref().unwrap_or("organisational");
    if !caller.profiles.iter().any(|p| p == profile_id) {
        return Err(invalid(
            "profile",
            format!("this batch token issues {}", caller.profiles.join(", ")),
        ));
    }
    let profile = Profile::get(profile_id)?;
    check_len("surname", &r.surname, 1, 40)?;
    check_len("given_name", &r.given_name, 1, 60)?;
    let email = r.email.trim().to_string();
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    if !validated
        .iter()
        .any(|v| domain == *v || domain.ends_with(&format!(".{v}")))
    {
        return Err(invalid(
            "email",
            "not in a mail domain the organisation has validated",
        ));
    }
    let title = if profile.role {
        let t = r.title.clone().unwrap_or_default();
        check_len("title", &t, 1, 64)?;
        Some(t.trim().to_string())
    } else if r.title.as_deref().is_some_and(|t| !t.trim().is_empty()) {
        return Err(invalid(
            "title",
            "only an organisational-role row carries a title",
        ));
    } else {
        None
    };
    let subject = SubjectData {
        title,
        surname: Some(r.surname.trim().to_uppercase()),
        given_name: Some(r.given_name.trim().to_string()),
        emails: vec![email],
        organization: Some(org.name.clone()),
        org_id: org.org_id.clone(),
        government: org.register == "GOV",
        country: Some(super::application::REGISTER_COUNTRY.into()),
        ..Default::default()
    };
    let subject = profile.check(&subject, None, crate::authority::now_secs())?;
    let csr = VerifiedCsr::parse(r.csr.as_bytes())?;
    auth.check_key(csr.key())?;
    Ok(Checked { profile, subject })
}

/// Receives a batch: every row checked (a bad one refused by name, the others kept), each
/// client row id issued once per organisation. The checks (CSR signatures, key policy) run on
/// the blocking pool before the transaction that records the batch, so a large batch holds no
/// database lock while it is checked. The batch then waits for two officers' approval.
pub async fn submit_batch(
    auth: &Arc<Authority>,
    caller: &BatchCaller,
    rows: Vec<std::result::Result<BatchRowIn, String>>,
) -> Result<BatchReceipt> {
    if rows.is_empty() || rows.len() > MAX_BATCH_ROWS {
        return Err(invalid("rows", format!("1 to {MAX_BATCH_ROWS} rows")));
    }
    let store = auth.store();
    let org = organisation(store, &caller.organisation_id).await?;
    org.current()?;
    let pending: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM batch_rows WHERE organisation_id = $1 AND state = 'pending'",
    )
    .bind(&caller.organisation_id)
    .fetch_one(store.pool())
    .await?;
    if pending + rows.len() as i64 > MAX_PENDING_ROWS {
        return Err(Error::Conflict(format!(
            "{pending} rows of this organisation already wait for approval: at most \
             {MAX_PENDING_ROWS} wait at a time"
        )));
    }
    let validated: Vec<String> = domains(store, &caller.organisation_id)
        .await?
        .into_iter()
        .filter(|d| d.validated)
        .map(|d| d.domain)
        .collect();
    let total = rows.len();
    // Checked on the blocking pool, in as many chunks as there are cores.
    let lanes = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = total.div_ceil(lanes).max(1);
    let mut rows = rows;
    let mut parts = Vec::new();
    while !rows.is_empty() {
        let rest = rows.split_off(chunk.min(rows.len()));
        parts.push(std::mem::replace(&mut rows, rest));
    }
    let mut tasks = Vec::new();
    for part in parts {
        let (auth, org, caller, validated) =
            (auth.clone(), org.clone(), caller.clone(), validated.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            part.into_iter()
                .map(|row| match row {
                    Err(e) => (String::new(), Err(e)),
                    Ok(r) => {
                        let c = check_row(&auth, &org, &caller, &validated, &r)
                            .map_err(|e| e.to_string());
                        (client_id(&r.client_row_id), c.map(|c| (c, r.csr)))
                    }
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut checked = Vec::with_capacity(total);
    for t in tasks {
        checked.extend(t.await.map_err(|e| Error::Store(e.to_string()))?);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let t = now();
    let mut receipt = BatchReceipt {
        id: id.clone(),
        rows: total,
        accepted: 0,
        duplicates: 0,
        errors: Vec::new(),
        approved: false,
    };
    let mut tx = store.begin().await?;
    // The token again, in this transaction: one revoked (or expired) while the rows were read
    // and checked submits nothing. A revocation's UPDATE and this read are ordered by the
    // writer lock (SQLite) or the row lock (PostgreSQL, FOR SHARE).
    let in_force = match store.engine() {
        crate::store::Engine::Postgres => {
            "SELECT 1 FROM batch_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL AND expires_at >= $2 FOR SHARE"
        }
        crate::store::Engine::Sqlite => {
            "SELECT 1 FROM batch_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL AND expires_at >= $2"
        }
    };
    if sqlx::query(in_force)
        .bind(&caller.token)
        .bind(now())
        .fetch_optional(&mut *tx)
        .await?
        .is_none()
    {
        return Err(Error::SignInFailed);
    }
    // The organisation's client row ids issued or on their way (read in the transaction that
    // adds the new ones: two submissions at once do not both take one). A failed row issued
    // nothing: its id is free for the row resubmitted once the cause is fixed (migration 0048).
    let taken: std::collections::HashSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT client_row_id FROM batch_rows WHERE organisation_id = $1 AND state NOT IN ('invalid', 'duplicate', 'failed')",
    )
    .bind(&caller.organisation_id)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let mut accepted_here = std::collections::HashSet::new();
    sqlx::query(
        "INSERT INTO batches (id, organisation_id, state, rows_total, created_at) VALUES ($1, $2, 'submitted', $3, $4)",
    )
    .bind(&id)
    .bind(&caller.organisation_id)
    .bind(total as i64)
    .bind(t)
    .execute(&mut *tx)
    .await?;
    for (i, (client, check)) in checked.into_iter().enumerate() {
        let n = i + 1;
        // Issued before, or accepted earlier in this batch: never issued twice. (A refused row
        // takes no id: its corrected row later in the batch is accepted.)
        let earlier =
            !client.is_empty() && (taken.contains(&client) || accepted_here.contains(&client));
        let (state, error, fields) = match (earlier, check) {
            (true, _) => {
                receipt.duplicates += 1;
                ("duplicate", None, None)
            }
            (false, Err(e)) => {
                receipt.errors.push((n, client.clone(), e.clone()));
                ("invalid", Some(e), None)
            }
            (false, Ok(c)) => {
                receipt.accepted += 1;
                accepted_here.insert(client.clone());
                ("pending", None, Some(c))
            }
        };
        let (profile, surname, given, email, title, csr) = match fields {
            Some((c, csr)) => (
                Some(c.profile.id),
                c.subject.surname,
                c.subject.given_name,
                c.subject.emails.into_iter().next(),
                c.subject.title,
                Some(csr.into_bytes()),
            ),
            None => (None, None, None, None, None, None),
        };
        sqlx::query(
            "INSERT INTO batch_rows (batch_id, row_no, organisation_id, client_row_id, state, error, profile, surname, \
             given_name, email, title, csr, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&id)
        .bind(n as i64)
        .bind(&caller.organisation_id)
        .bind(&client)
        .bind(state)
        .bind(&error)
        .bind(profile)
        .bind(surname)
        .bind(given)
        .bind(email)
        .bind(title)
        .bind(csr)
        .bind(t)
        .execute(&mut *tx)
        .await?;
    }
    if receipt.accepted == 0 {
        sqlx::query("UPDATE batches SET state = 'done' WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
    }
    store
        .audit(
            &mut tx,
            &Event {
                kind: "bulk.batch.submitted",
                actor: format!("organisation:{}", caller.organisation_id),
                subject: Some(id.clone()),
                detail: json!({ "rows": receipt.rows, "accepted": receipt.accepted, "duplicates": receipt.duplicates, "refused": receipt.errors.len() }),
            },
        )
        .await?;
    // The organisation's standing authorisation, where the policy allows one (read in this
    // transaction, so a withdrawal committed before it is seen).
    if receipt.accepted > 0 && auth.config().ra.standing_authorisation {
        let st = sqlx::query_as::<_, Standing>(
            "SELECT standing_until, standing_max_rows, standing_by FROM organisations WHERE id = $1",
        )
        .bind(&caller.organisation_id)
        .fetch_one(&mut *tx)
        .await?;
        if let (Some(until), Some(max), Some(by)) =
            (st.standing_until, st.standing_max_rows, st.standing_by)
        {
            // At most max_rows approved on arrival in any 24 hours, whatever the number of
            // batches: a leaked batch token cannot issue without limit. A failed row issued
            // nothing and does not count (it may be resubmitted).
            let approver = format!("standing-authorisation:{by}");
            let used: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM batch_rows r JOIN batches b ON b.id = r.batch_id \
                 WHERE b.organisation_id = $1 AND b.approved_by = $2 AND b.approved_at > $3 \
                 AND r.state NOT IN ('invalid', 'duplicate', 'failed')",
            )
            .bind(&caller.organisation_id)
            .bind(&approver)
            .bind(now() - 86_400)
            .fetch_one(&mut *tx)
            .await?;
            if until > now() && used + receipt.accepted as i64 <= max {
                approve_in(store, &mut tx, &id, &approver).await?;
                receipt.approved = true;
            }
        }
    }
    tx.commit().await?;
    Ok(receipt)
}

/// Approves a submitted batch (two officers' decision, [`super::officer`]): its pending rows
/// are queued for issuance.
pub async fn approve_batch(store: &Store, batch_id: &str, actor: &str) -> Result<usize> {
    let mut tx = store.begin().await?;
    if let Some(queued) = approve_in(store, &mut tx, batch_id, actor).await? {
        tx.commit().await?;
        return Ok(queued);
    }
    // Approved already (a decision carried out again after a crash between the approval and
    // the proposal's outcome): its rows were queued then.
    let approved: Option<i64> = sqlx::query_scalar(
        "SELECT approved_at FROM batches WHERE id = $1 AND approved_at IS NOT NULL",
    )
    .bind(batch_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.rollback().await?;
    match approved {
        Some(_) => Ok(0),
        None => Err(Error::Conflict(
            "the batch is not waiting for approval".into(),
        )),
    }
}

/// The approval inside `tx`: `None` if the batch was not waiting for it.
async fn approve_in(
    store: &Store,
    tx: &mut crate::store::Tx,
    batch_id: &str,
    actor: &str,
) -> Result<Option<usize>> {
    let changed = sqlx::query(
        "UPDATE batches SET state = 'approved', approved_at = $2, approved_by = $3 WHERE id = $1 AND state = 'submitted'",
    )
    .bind(batch_id)
    .bind(now())
    .bind(actor)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed != 1 {
        return Ok(None);
    }
    let queued = sqlx::query(
        "UPDATE batch_rows SET state = 'queued', updated_at = $2 WHERE batch_id = $1 AND state = 'pending'",
    )
    .bind(batch_id)
    .bind(now())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    store
        .audit(
            tx,
            &Event {
                kind: "bulk.batch.approved",
                actor: actor.to_string(),
                subject: Some(batch_id.to_string()),
                detail: json!({ "queued": queued }),
            },
        )
        .await?;
    Ok(Some(queued as usize))
}

/// A standing authorisation lasts a year at most; two officers grant it again.
pub const MAX_STANDING_DAYS: u32 = 365;

/// An organisation's name (404 if there is none with this id).
pub(crate) async fn organisation_name(store: &Store, id: &str) -> Result<String> {
    Ok(organisation(store, id).await?.name)
}

/// Carries out a `standing_authorisation` proposal (two officers): the organisation's batches
/// of at most `max_rows` good rows are approved on arrival for `days` days (0: withdrawn).
pub(crate) async fn set_standing(
    store: &Store,
    organisation_id: &str,
    max_rows: i64,
    days: i64,
    proposal: &str,
    actor: &str,
) -> Result<String> {
    let mut tx = store.begin().await?;
    let (until, max, by) = if days > 0 {
        (Some(now() + days * 86_400), Some(max_rows), Some(proposal))
    } else {
        (None, None, None)
    };
    let changed = sqlx::query(
        "UPDATE organisations SET standing_until = $2, standing_max_rows = $3, standing_by = $4 WHERE id = $1",
    )
    .bind(organisation_id)
    .bind(until)
    .bind(max)
    .bind(by)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed != 1 {
        return Err(Error::NotFound);
    }
    store
        .audit(
            &mut tx,
            &Event {
                kind: "bulk.standing_authorisation",
                actor: actor.to_string(),
                subject: Some(organisation_id.to_string()),
                detail: json!({ "proposal": proposal, "max_rows": max, "until": until }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(if days > 0 {
        format!(
            "batches approved on arrival, up to {max_rows} rows in any 24 hours, for {days} days"
        )
    } else {
        "standing authorisation withdrawn".to_string()
    })
}

row! {
    struct Standing {
        standing_until: Option<i64>,
        standing_max_rows: Option<i64>,
        standing_by: Option<String>,
    }
}

/// A batch as its proposal summary describes it: (organisation name, rows waiting).
pub(crate) async fn batch_summary(store: &Store, batch_id: &str) -> Result<(String, i64)> {
    let org: String = sqlx::query_scalar(
        "SELECT o.name FROM batches b JOIN organisations o ON o.id = b.organisation_id WHERE b.id = $1 AND b.state = 'submitted'",
    )
    .bind(batch_id)
    .fetch_optional(store.pool())
    .await?
    .ok_or_else(|| invalid("batch", "no batch waiting for approval has this id"))?;
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM batch_rows WHERE batch_id = $1 AND state = 'pending'",
    )
    .bind(batch_id)
    .fetch_one(store.pool())
    .await?;
    Ok((org, n))
}

row! {
    struct QueuedRow {
        batch_id: String,
        row_no: i64,
        organisation_id: String,
        profile: Option<String>,
        surname: Option<String>,
        given_name: Option<String>,
        email: Option<String>,
        title: Option<String>,
        csr: Option<Vec<u8>>,
        caa_tries: i64,
    }
}

/// Issues up to `limit` queued rows of approved batches, `lanes` at a time, through the
/// issuance cycle (group-committed like every issuance). Returns how many were issued.
pub async fn issue_queued(auth: &Arc<Authority>, limit: i64) -> Result<usize> {
    issue_queued_until(auth, limit, || false).await
}

/// [`issue_queued`], stopping between chunks once `stop` says so (a service stopping: each
/// chunk's rows are issued whole, none left `issuing`).
pub async fn issue_queued_until(
    auth: &Arc<Authority>,
    limit: i64,
    stop: impl Fn() -> bool,
) -> Result<usize> {
    let store = auth.store();
    // Rows whose mailbox domain's CAA could not be read lately wait ([`mailbox_caa`]): the
    // rows behind them are taken meanwhile.
    let rows = sqlx::query_as::<_, QueuedRow>(
        "SELECT r.batch_id, r.row_no, r.organisation_id, r.profile, r.surname, r.given_name, r.email, r.title, r.csr, \
         r.caa_tries FROM batch_rows r JOIN batches b ON b.id = r.batch_id \
         WHERE r.state = 'queued' AND b.state = 'approved' AND (r.caa_retry_at IS NULL OR r.caa_retry_at <= $2) \
         ORDER BY r.batch_id, r.row_no LIMIT $1",
    )
    .bind(limit)
    .bind(now())
    .fetch_all(store.pool())
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let (rows, caa_error) = mailbox_caa(auth, rows).await?;
    let lanes = (auth.config().hsm.pool_size * 16).clamp(4, 64);
    let permits = Arc::new(tokio::sync::Semaphore::new(lanes));
    // Every organisation's record and its domains still validated, read before any row is
    // started (an error here leaves nothing half-done).
    let mut orgs: std::collections::HashMap<String, Arc<(OrgRow, Vec<String>)>> =
        Default::default();
    for r in &rows {
        if !orgs.contains_key(&r.organisation_id) {
            let o = organisation(store, &r.organisation_id).await?;
            let d: Vec<String> = domains(store, &r.organisation_id)
                .await?
                .into_iter()
                .filter(|d| d.validated)
                .map(|d| d.domain)
                .collect();
            orgs.insert(r.organisation_id.clone(), Arc::new((o, d)));
        }
    }
    let mut issued = 0;
    let mut first_error = None;
    let mut rows = rows.into_iter();
    loop {
        if stop() {
            break;
        }
        let chunk: Vec<QueuedRow> = rows.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        match issue_chunk(auth, &orgs, &permits, chunk).await {
            Ok((n, e)) => {
                issued += n;
                first_error = first_error.or(e);
            }
            Err(e) => {
                first_error = first_error.or(Some(e));
                break;
            }
        }
    }
    // A row whose signing failed is left `issuing`: resolved now from its certificate's state
    // (queued again unless it was stored), so the next pass takes it.
    resume_batches(store).await?;
    match (issued, first_error.or(caa_error)) {
        (0, Some(e)) => Err(e),
        _ => Ok(issued),
    }
}

/// How long a permitting CAA check of a mailbox domain serves later passes: well within the
/// S/MIME BR's bound (issue within the record's TTL or 8 hours of the check, whichever is
/// greater, §4.2.2.1), and a record changed to refuse this CA is read within the hour.
const CAA_REUSE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The most mailbox domains one pass checks (each row's domain is its own: an organisation
/// may use many subdomains of a validated domain). The rows of the others wait for the next
/// pass, which finds these cached, failed or waiting.
const CAA_PER_PASS: usize = 32;

/// How many of a pass's checks run at once (each may wait for its resolver and the remote
/// perspectives).
const CAA_AT_ONCE: usize = 8;

/// After how many tries a row whose domain's CAA cannot be read fails: the waits double from
/// 30 s to an hour ([`caa_wait`]), so about a day.
const CAA_MAX_TRIES: i64 = 30;

/// The wait before the next try, after `tries` tries.
fn caa_wait(tries: i64) -> i64 {
    (30_i64 << tries.clamp(0, 7)).min(3600)
}

/// Mailbox domains whose CAA permitted this CA lately, by (organisation, domain), with when.
static CAA_PERMITTED: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<(String, String), std::time::Instant>>,
> = std::sync::LazyLock::new(Default::default);

/// The domain of a row's mailbox, lower-cased.
fn mail_domain(email: Option<&str>) -> Option<String> {
    email
        .and_then(|e| e.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase())
}

/// CAA before a pass issues (RFC 9495, S/MIME BR §4.2.2.1): each mailbox domain of `rows`,
/// per organisation, checked from this host and corroborated by the remote perspectives (the
/// domain was validated by DNS, §3.2.2.1 and §4.2.2.2), each check audited (subject the
/// organisation; [`super::domains::check_mailbox_caa`]); a permission serves for
/// [`CAA_REUSE`]. At most [`CAA_PER_PASS`] domains are checked, [`CAA_AT_ONCE`] at a time.
/// Returns the rows to issue now, and the first check that could not be made.
///
/// - Forbidden by the domain's records: its rows fail with the reason.
/// - Not known (a lookup failure, perspectives that did not corroborate): its rows stay queued
///   and wait ([`caa_wait`]); after [`CAA_MAX_TRIES`] they fail, saying why.
/// - Not checked in this pass: its rows stay queued for the next.
async fn mailbox_caa(
    auth: &Arc<Authority>,
    rows: Vec<QueuedRow>,
) -> Result<(Vec<QueuedRow>, Option<Error>)> {
    use super::domains::MailboxCaa;
    type Key = (String, String);
    let key = |r: &QueuedRow| {
        (
            r.organisation_id.clone(),
            mail_domain(r.email.as_deref()).unwrap_or_default(),
        )
    };
    let permitted = |k: &Key| {
        let mut p = CAA_PERMITTED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        p.retain(|_, at| at.elapsed() < CAA_REUSE);
        p.contains_key(k)
    };
    // The domains to check, in the rows' order (a row without a mailbox is failed by
    // prepare_row).
    let mut to_check: Vec<Key> = Vec::new();
    for r in &rows {
        let k = key(r);
        if !k.1.is_empty() && !permitted(&k) && !to_check.contains(&k) {
            to_check.push(k);
        }
    }
    to_check.truncate(CAA_PER_PASS);
    let gate = Arc::new(tokio::sync::Semaphore::new(CAA_AT_ONCE));
    let mut checks = tokio::task::JoinSet::new();
    for k in to_check.iter().cloned() {
        let (auth, gate) = (auth.clone(), gate.clone());
        checks.spawn(async move {
            let _slot = gate.acquire_owned().await;
            let found =
                super::domains::check_mailbox_caa(&auth, &k.0, &k.1, "system:batch-issuer").await;
            (k, found)
        });
    }
    let mut found: std::collections::HashMap<Key, MailboxCaa> = Default::default();
    let mut error = None;
    while let Some(done) = checks.join_next().await {
        match done {
            Ok((k, Ok(MailboxCaa::Permitted))) => {
                CAA_PERMITTED
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(k, std::time::Instant::now());
            }
            Ok((k, Ok(f))) => {
                found.insert(k, f);
            }
            // The audit record could not be written: nothing of the pass is issued.
            Ok((_, Err(e))) => error = error.or(Some(e)),
            Err(e) => error = error.or(Some(Error::Store(e.to_string()))),
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    // Every domain permitted (the usual pass): no row changes, no transaction.
    if found.is_empty() {
        let keep = rows
            .into_iter()
            .filter(|r| {
                let k = key(r);
                k.1.is_empty() || permitted(&k)
            })
            .collect();
        return Ok((keep, None));
    }
    let store = auth.store();
    let mut keep = Vec::with_capacity(rows.len());
    // Through a fenced transaction: a signer that lost the lock changes no row.
    let mut tx = store.begin().await?;
    let t = now();
    for r in rows {
        let k = key(&r);
        let fail = match found.get(&k) {
            None if k.1.is_empty() || permitted(&k) => {
                keep.push(r);
                continue;
            }
            Some(MailboxCaa::Permitted) => {
                keep.push(r);
                continue;
            }
            // Not checked in this pass.
            None => continue,
            Some(MailboxCaa::Forbidden(reason)) => reason.clone(),
            Some(MailboxCaa::Unavailable(e)) if r.caa_tries + 1 >= CAA_MAX_TRIES => format!(
                "the CAA records of {} could not be read or corroborated for a day ({e}): submit the row again",
                k.1
            ),
            Some(MailboxCaa::Unavailable(_)) => {
                sqlx::query(
                    "UPDATE batch_rows SET caa_tries = caa_tries + 1, caa_retry_at = $3, updated_at = $4 \
                     WHERE batch_id = $1 AND row_no = $2 AND state = 'queued'",
                )
                .bind(&r.batch_id)
                .bind(r.row_no)
                .bind(t + caa_wait(r.caa_tries))
                .bind(t)
                .execute(&mut *tx)
                .await?;
                continue;
            }
        };
        sqlx::query(
            "UPDATE batch_rows SET state = 'failed', error = $3, updated_at = $4 \
             WHERE batch_id = $1 AND row_no = $2 AND state = 'queued'",
        )
        .bind(&r.batch_id)
        .bind(r.row_no)
        .bind(fail)
        .bind(t)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let mut unavailable = None;
    for (k, f) in found {
        if let MailboxCaa::Unavailable(e) = f {
            tracing::warn!(domain = %k.1, error = %e, "a mailbox domain's CAA could not be read or corroborated; its batch rows wait");
            unavailable = unavailable.or(Some(e));
        }
    }
    Ok((keep, unavailable))
}

/// Rows issued together: their `issuing` marks are one transaction, and so are their `issued`
/// marks (two commits for the chunk, not two for each row; the certificates' own writes are
/// group-committed by the issuance cycle).
const CHUNK: usize = 256;

type Orgs = std::collections::HashMap<String, Arc<(OrgRow, Vec<String>)>>;

/// One chunk of queued rows, in three steps: (1) each row checked and prepared (serial
/// reserved, certificate built and linted), concurrently; (2) every prepared row marked
/// `issuing` with its serial in one transaction — before the HSM signs anything; (3) each
/// signed, concurrently, then every signed row marked `issued` in one transaction. Returns the
/// rows issued and the first outage met (the rows it touched stay queued, or `issuing` for
/// [`resume_batches`]).
async fn issue_chunk(
    auth: &Arc<Authority>,
    orgs: &Orgs,
    permits: &Arc<tokio::sync::Semaphore>,
    chunk: Vec<QueuedRow>,
) -> Result<(usize, Option<Error>)> {
    let store = auth.store();
    let mut first_error = None;
    // (1)
    let mut tasks = tokio::task::JoinSet::new();
    for r in chunk {
        let org = orgs[&r.organisation_id].clone();
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Store("the batch issuer is shutting down".into()))?;
        let auth = auth.clone();
        tasks.spawn(async move {
            let _permit = permit;
            prepare_row(&auth, &org.0, &org.1, r).await
        });
    }
    let mut prepared = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(Some(p))) => prepared.push(p),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(Error::Store(e.to_string()))),
        }
    }
    if prepared.is_empty() {
        return Ok((0, first_error));
    }
    // (2)
    let marked = async {
        let mut tx = store.begin().await?;
        let mut taken = Vec::with_capacity(prepared.len());
        for (batch_id, row_no, token) in &prepared {
            let m = sqlx::query(
                "UPDATE batch_rows SET state = 'issuing', serial = $3, updated_at = $4                  WHERE batch_id = $1 AND row_no = $2 AND state = 'queued'",
            )
            .bind(batch_id)
            .bind(*row_no)
            .bind(token.serial().to_hex())
            .bind(now())
            .execute(&mut *tx)
            .await?;
            taken.push(m.rows_affected() == 1);
        }
        tx.commit().await?;
        Ok::<_, Error>(taken)
    }
    .await;
    let taken = match marked {
        Ok(t) => t,
        Err(e) => {
            // Nothing is signed: every serial of the chunk is withdrawn, the rows stay queued.
            for (_, _, token) in prepared {
                auth.withdraw(token, "the batch rows could not be marked")
                    .await;
            }
            return Err(e);
        }
    };
    // (3)
    let mut tasks = tokio::task::JoinSet::new();
    for ((batch_id, row_no, token), taken) in prepared.into_iter().zip(taken) {
        let auth = auth.clone();
        if !taken {
            // Taken by another pass: this serial is not signed.
            auth.withdraw(token, "the batch row was taken by another pass")
                .await;
            continue;
        }
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Store("the batch issuer is shutting down".into()))?;
        tasks.spawn(async move {
            let _permit = permit;
            let serial = token.serial().to_hex();
            auth.sign(token).await.map(|_| (batch_id, row_no, serial))
        });
    }
    let mut signed = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(s)) => signed.push(s),
            // Resolved by resume_batches from the certificate's own state.
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(Error::Store(e.to_string()))),
        }
    }
    let mut tx = store.begin().await?;
    for (batch_id, row_no, serial) in &signed {
        sqlx::query(
            "UPDATE batch_rows SET state = 'issued', updated_at = $3 WHERE batch_id = $1 AND row_no = $2 \
             AND state = 'issuing' AND serial = $4",
        )
        .bind(batch_id)
        .bind(*row_no)
        .bind(now())
        .bind(serial)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((signed.len(), first_error))
}

/// Step (1) of [`issue_chunk`] for one row: the checks that must still hold at issuance, the
/// CSR, and the issuance cycle's preparation. A request the cycle refuses marks the row
/// `failed` with the reason (`None`); an outage (store or HSM) leaves it queued and is returned.
async fn prepare_row(
    auth: &Authority,
    org: &OrgRow,
    validated: &[String],
    r: QueuedRow,
) -> Result<Option<(String, i64, crate::authority::IssuanceToken)>> {
    let store = auth.store();
    let subject = SubjectData {
        title: r.title.clone(),
        surname: r.surname.clone(),
        given_name: r.given_name.clone(),
        emails: r.email.clone().into_iter().collect(),
        organization: Some(org.name.clone()),
        org_id: org.org_id.clone(),
        government: org.register == "GOV",
        country: Some(super::application::REGISTER_COUNTRY.into()),
        ..Default::default()
    };
    // Through a fenced transaction: a signer that lost the lock fails no row.
    let fail = |e: &Error| {
        let msg = e.to_string();
        let (batch, row) = (r.batch_id.clone(), r.row_no);
        async move {
            let mut tx = store.begin().await?;
            sqlx::query(
                "UPDATE batch_rows SET state = 'failed', error = $3, updated_at = $4 WHERE batch_id = $1 AND row_no = $2 \
                 AND state = 'queued'",
            )
            .bind(batch)
            .bind(row)
            .bind(msg)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, Error>(())
        }
    };
    // What was true at submission must still be at issuance (S/MIME BR §4.2.1): the
    // organisation's verification and its mail domain's validation within their reuse periods.
    let domain = mail_domain(r.email.as_deref()).unwrap_or_default();
    let still = org.current().and_then(|()| {
        if validated
            .iter()
            .any(|v| domain == *v || domain.ends_with(&format!(".{v}")))
        {
            Ok(())
        } else {
            Err(Error::Conflict(
                "the mail domain's validation has expired (S/MIME BR §4.2.1): validate it again and resubmit the row".into(),
            ))
        }
    });
    if let Err(e) = still {
        fail(&e).await?;
        return Ok(None);
    }
    let csr = match VerifiedCsr::parse(r.csr.as_deref().unwrap_or_default()) {
        Ok(c) => c,
        Err(e) => {
            fail(&e).await?;
            return Ok(None);
        }
    };
    let req = ApprovedRequest {
        profile: r.profile.clone().unwrap_or_else(|| "organisational".into()),
        csr,
        subject,
        days: None,
        renews: None,
        actor: format!("batch:{}", r.batch_id),
    };
    let token = match auth.prepare(req).await {
        Ok(t) => t,
        Err(e) if transient(&e) => return Err(e),
        Err(e) => {
            fail(&e).await?;
            return Ok(None);
        }
    };
    Ok(Some((r.batch_id, r.row_no, token)))
}

fn transient(e: &Error) -> bool {
    matches!(
        e,
        Error::Store(_)
            | Error::StoreUnavailable(_)
            | Error::StoreFull(_)
            | Error::Hsm(_)
            | Error::Clock(_)
            | Error::SignerBusy(_)
            | Error::SignerFenced { .. }
    )
}

/// Marks done each approved batch with no row left to issue.
async fn finish_batches(store: &Store) -> Result<()> {
    sqlx::query(
        "UPDATE batches SET state = 'done' WHERE state = 'approved' AND NOT EXISTS \
         (SELECT 1 FROM batch_rows r WHERE r.batch_id = batches.id AND r.state IN ('queued', 'issuing'))",
    )
    .execute(store.pool())
    .await?;
    Ok(())
}

row! {
    struct IssuingRow {
        batch_id: String,
        row_no: i64,
        serial: Option<String>,
        attempts: i64,
        cert_state: Option<String>,
    }
}

/// Issuances of one row that may fail (an HSM or store failure) before the row fails.
const MAX_ATTEMPTS: i64 = 5;

/// Start-up (and each pass): rows left `issuing` by a signer that stopped are resolved from
/// their certificate's state — `issued` if it was stored, queued again otherwise (that serial
/// is never reported good: the issuance cycle abandons it). Returns how many rows changed.
pub async fn resume_batches(store: &Store) -> Result<usize> {
    let rows = sqlx::query_as::<_, IssuingRow>(
        "SELECT r.batch_id, r.row_no, r.serial, r.attempts, c.state AS cert_state FROM batch_rows r \
         LEFT JOIN certificates c ON c.serial = r.serial WHERE r.state = 'issuing'",
    )
    .fetch_all(store.pool())
    .await?;
    let mut n = 0;
    for r in rows {
        let to = match r.cert_state.as_deref() {
            Some("issued") => "issued",
            // Still in flight in a live signer: left alone.
            Some("reserved") | Some("issuing") => continue,
            _ if r.attempts + 1 >= MAX_ATTEMPTS => "failed",
            _ => "queued",
        };
        let serial = (to == "issued").then_some(r.serial.clone()).flatten();
        let error = (to == "failed").then_some(
            "the issuance did not complete after 5 attempts (an HSM or database failure: see the service's log); submit the row again",
        );
        sqlx::query(
            "UPDATE batch_rows SET state = $3, serial = $4, updated_at = $5, error = $6, \
             attempts = attempts + (CASE WHEN $3 = 'issued' THEN 0 ELSE 1 END) \
             WHERE batch_id = $1 AND row_no = $2 AND state = 'issuing'",
        )
        .bind(&r.batch_id)
        .bind(r.row_no)
        .bind(to)
        .bind(serial)
        .bind(now())
        .bind(error)
        .execute(store.pool())
        .await?;
        n += 1;
    }
    finish_batches(store).await?;
    Ok(n)
}

/// One row's state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RowState {
    /// Its number in the batch, from 1.
    pub row: i64,
    /// The organisation's id of it.
    pub client_row_id: String,
    /// `invalid`, `duplicate`, `pending`, `queued`, `issuing`, `issued` or `failed`.
    pub state: String,
    /// Its certificate's serial, once issued.
    pub serial: Option<String>,
    /// Why it was refused or failed.
    pub error: Option<String>,
}

/// A batch: its state, counts by row state, and each row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchStatus {
    /// The batch.
    pub id: String,
    /// `submitted`, `approved` or `done`.
    pub state: String,
    /// Rows by state.
    pub counts: std::collections::BTreeMap<String, i64>,
    /// Every row.
    pub rows: Vec<RowState>,
}

row! {
    struct BatchRow {
        organisation_id: String,
        state: String,
    }
}

row! {
    struct StateRow {
        row_no: i64,
        client_row_id: String,
        state: String,
        serial: Option<String>,
        error: Option<String>,
    }
}

/// Who reads a batch: its organisation's token, or an officer.
#[derive(Debug, Clone)]
pub enum BatchReader<'a> {
    /// The organisation's batch token.
    Organisation(&'a BatchCaller),
    /// A staff member who may see every application (an officer).
    Staff(&'a StaffSession),
}

async fn readable(store: &Store, who: &BatchReader<'_>, id: &str) -> Result<BatchRow> {
    // The role first: a member who may not follow batches hears so, whichever id is asked.
    if let BatchReader::Staff(s) = who {
        s.authorize(Action::ManageOrganisations)?;
    }
    let b =
        sqlx::query_as::<_, BatchRow>("SELECT organisation_id, state FROM batches WHERE id = $1")
            .bind(id)
            .fetch_optional(store.pool())
            .await?
            .ok_or(Error::NotFound)?;
    match who {
        // Another organisation's batch does not exist for this one.
        BatchReader::Organisation(c) if c.organisation_id != b.organisation_id => {
            Err(Error::NotFound)
        }
        BatchReader::Organisation(_) | BatchReader::Staff(_) => Ok(b),
    }
}

/// A batch's state and rows.
pub async fn batch_status(store: &Store, who: BatchReader<'_>, id: &str) -> Result<BatchStatus> {
    let b = readable(store, &who, id).await?;
    let rows = sqlx::query_as::<_, StateRow>(
        "SELECT row_no, client_row_id, state, serial, error FROM batch_rows WHERE batch_id = $1 ORDER BY row_no",
    )
    .bind(id)
    .fetch_all(store.pool())
    .await?;
    let mut counts = std::collections::BTreeMap::new();
    for r in &rows {
        *counts.entry(r.state.clone()).or_insert(0) += 1;
    }
    Ok(BatchStatus {
        id: id.to_string(),
        state: b.state,
        counts,
        rows: rows
            .into_iter()
            .map(|r| RowState {
                row: r.row_no,
                client_row_id: r.client_row_id,
                serial: (r.state == "issued").then_some(r.serial).flatten(),
                state: r.state,
                error: r.error,
            })
            .collect(),
    })
}

/// The certificates a batch issued: (client row id, DER), in row order.
pub async fn batch_certificates(
    store: &Store,
    who: BatchReader<'_>,
    id: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    readable(store, &who, id).await?;
    let rows = sqlx::query_as::<_, CertOfRow>(
        "SELECT r.client_row_id, c.cert_der FROM batch_rows r JOIN certificates c ON c.serial = r.serial \
         WHERE r.batch_id = $1 AND r.state = 'issued' ORDER BY r.row_no",
    )
    .bind(id)
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.cert_der.map(|d| (r.client_row_id, d)))
        .collect())
}

/// The serial issued for the organisation's row `client_row_id` (404 for another's row, or a
/// row not issued).
async fn row_serial(
    store: &Store,
    caller: &BatchCaller,
    client_row_id: &str,
) -> Result<(String, crate::serial::SerialNumber)> {
    let serial: String = sqlx::query_scalar(
        "SELECT serial FROM batch_rows WHERE organisation_id = $1 AND client_row_id = $2 AND state = 'issued'",
    )
    .bind(&caller.organisation_id)
    .bind(client_id(client_row_id))
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::NotFound)?;
    let s = crate::serial::SerialNumber::from_hex(&serial).ok_or(Error::NotFound)?;
    Ok((serial, s))
}

/// The organisation releases the hold it placed on one of its rows' certificates (RFC 5280
/// §5.3.1 certificateHold; Individual & Organisational CA). A hold placed by an officer (or by
/// the service) is an officer's to release. Returns the serial released.
pub async fn release_row(
    auth: &Authority,
    caller: &BatchCaller,
    client_row_id: &str,
) -> Result<String> {
    let (serial, s) = row_serial(auth.store(), caller, client_row_id).await?;
    let actor = format!("organisation:{}", caller.organisation_id);
    let holder = auth.store().held_by(&serial).await?;
    let held = auth.store().certificate(&serial).await?.is_some_and(|c| {
        c.revocation_reason == Some(crate::revocation::Reason::CertificateHold.code())
    });
    // A hold placed by anyone else — or by no one recorded — is an officer's to release (as at
    // the counter); not held at all, the release says so.
    if held && holder.as_deref() != Some(actor.as_str()) {
        return Err(Error::Forbidden(
            "this hold was placed by an officer: an officer releases it".into(),
        ));
    }
    auth.release(s, &actor).await?;
    Ok(serial)
}

/// One of the organisation's issued certificates, by client row id.
#[derive(Debug, Clone)]
pub struct RowCertificate {
    /// Hex serial.
    pub serial: String,
    /// `good`, `revoked` or `held`.
    pub status: &'static str,
    /// The revocation reason's name, when revoked or held.
    pub reason: Option<String>,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

/// The certificate issued for the organisation's row `client_row_id`, with its status.
pub async fn row_certificate(
    store: &Store,
    caller: &BatchCaller,
    client_row_id: &str,
) -> Result<RowCertificate> {
    let (serial, _) = row_serial(store, caller, client_row_id).await?;
    let c = store.certificate(&serial).await?.ok_or(Error::NotFound)?;
    let der = c.cert_der.clone().ok_or(Error::NotFound)?;
    let reason = c
        .revocation_reason
        .and_then(crate::revocation::Reason::from_code);
    let status = match reason {
        None => "good",
        Some(crate::revocation::Reason::CertificateHold) => "held",
        Some(_) => "revoked",
    };
    Ok(RowCertificate {
        serial,
        status,
        reason: reason.map(|r| r.name().to_string()),
        der,
    })
}

row! {
    struct CertOfRow {
        client_row_id: String,
        cert_der: Option<Vec<u8>>,
    }
}

/// The organisation revokes the certificate of one of its rows (a member of staff who left:
/// affiliationChanged; a lost key: keyCompromise, on its word — [`Evidence::Reported`], so
/// only this certificate, until an officer confirms), with the reasons a subscriber may give
/// (TLS BR §7.2.2: privilegeWithdrawn is the CA's). Returns the serial revoked.
///
/// [`Evidence::Reported`]: crate::revocation::Evidence::Reported
pub async fn revoke_row(
    auth: &Authority,
    caller: &BatchCaller,
    client_row_id: &str,
    reason: crate::revocation::Reason,
) -> Result<String> {
    use crate::revocation::{Evidence, Reason};
    if !matches!(
        reason,
        Reason::Unspecified
            | Reason::KeyCompromise
            | Reason::AffiliationChanged
            | Reason::Superseded
            | Reason::CessationOfOperation
            | Reason::CertificateHold
    ) {
        return Err(invalid(
            "reason",
            "keyCompromise, affiliationChanged, superseded, cessationOfOperation, unspecified, or certificateHold (a suspension it can release)",
        ));
    }
    let (serial, s) = row_serial(auth.store(), caller, client_row_id).await?;
    let evidence = if reason == Reason::KeyCompromise {
        Evidence::Reported
    } else {
        Evidence::Verified
    };
    auth.revoke_as(
        s,
        reason,
        &format!("organisation:{}", caller.organisation_id),
        evidence,
    )
    .await?;
    Ok(serial)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Issue 17, review finding: a signer that lost the lock to a standby (its epoch moved)
    /// must fail no batch row — its refused transactions are the lock's loss, not the row's —
    /// so the new signer issues every row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fenced_signer_fails_no_batch_row() {
        let rig = crate::dcv::rig::Rig::start();
        let (dir, auth) = crate::authority::test_ca_with(|c| rig.configure(c)).await;
        let auth = Arc::new(auth);
        let pool = auth.store().pool().clone();
        let t = now();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .der()
            .to_vec();
        for sql in [
            "INSERT INTO organisations (id, name, register, org_id, application_id, verified_at, registered_by, registered_at) \
             VALUES ('org', 'Example Department', 'GOV', NULL, 'app', $1, 'test', $1)",
            "INSERT INTO organisation_domains (organisation_id, domain, dcv_token, token_at, validated_at) \
             VALUES ('org', 'ourmail.example.test', 'x', $1, $1)",
            "INSERT INTO batches (id, organisation_id, state, rows_total, created_at, approved_at) \
             VALUES ('b1', 'org', 'approved', 3, $1, $1)",
        ] {
            sqlx::query(sql).bind(t).execute(&pool).await.unwrap();
        }
        for row in 1..=3i64 {
            sqlx::query(
                "INSERT INTO batch_rows (batch_id, row_no, organisation_id, client_row_id, state, profile, surname, given_name, email, csr, updated_at) \
                 VALUES ('b1', $1, 'org', $2, 'queued', 'organisational', 'Chan', 'Tai Man', $3, $4, $5)",
            )
            .bind(row)
            .bind(format!("r{row}"))
            .bind(format!("staff{row}@ourmail.example.test"))
            .bind(if row == 3 { b"not a CSR".to_vec() } else { csr.clone() })
            .bind(t)
            .execute(&pool)
            .await
            .unwrap();
        }
        // A standby takes the next epoch.
        let url = crate::config::Config::load(dir.path(), None)
            .unwrap()
            .database_url();
        let _standby = Store::open(&url)
            .await
            .unwrap()
            .take_signer_epoch("standby:1")
            .await
            .unwrap();
        let _ = issue_queued(&auth, 100).await;
        let states: Vec<String> = sqlx::query_scalar(
            "SELECT state FROM batch_rows WHERE batch_id = 'b1' ORDER BY row_no",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(states, vec!["queued", "queued", "queued"]);
        assert!(auth.store().fence().unwrap().lost());
    }
}
