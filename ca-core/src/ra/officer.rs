//! Decisions two officers take together (issue 14; DESIGN.md "Custody and roles": "big ones by
//! two officers"): a mass revocation, blocking a key, revoking an issuing CA. One officer
//! proposes — exactly what: a query is resolved to its serials when proposed, so the second
//! officer confirms the list, not a query whose answer may change — and another officer
//! confirms within [`PROPOSAL_HOURS`]; only then is it carried out, as the confirming officer,
//! with both names in the audit trail (`officer.proposed`, `officer.confirmed`,
//! `officer.withdrawn`). The proposer can never confirm their own proposal, and a proposal is
//! carried out at most once (compare-and-set on its state).

use serde_json::json;

use super::permissions::Action;
use super::session::StaffSession;
use super::support::{check_len, invalid, now};
use crate::audit::Event;
use crate::authority::responder::RESPONDER_PROFILE;
use crate::authority::Authority;
use crate::error::{Error, Result};
use crate::profile::CaId;
use crate::revocation::Reason;
use crate::row::row;
use crate::serial::SerialNumber;

/// How long a proposal waits for its second officer.
pub const PROPOSAL_HOURS: i64 = 24;
/// The most serials one mass revocation carries.
pub const MAX_SERIALS: usize = 100_000;

/// What an officer proposes.
#[derive(Debug, Clone, Default)]
pub struct ProposalRequest {
    /// `mass_revocation`, `key_block` or `ca_revocation`.
    pub kind: String,
    /// RFC 5280 reason (revocations) or the reason recorded for a key block.
    pub reason: String,
    /// Mass revocation: these serials (hex) ...
    pub serials: Vec<String>,
    /// ... and/or every unrevoked certificate of this profile ...
    pub profile: Option<String>,
    /// ... with notBefore at or after this time (Unix seconds) ...
    pub issued_after: Option<i64>,
    /// ... and at or before this time.
    pub issued_before: Option<i64>,
    /// Key block: the key of this issued certificate (serial, hex) ...
    pub serial: Option<String>,
    /// ... or this SubjectPublicKeyInfo (PEM `PUBLIC KEY`).
    pub public_key: Option<String>,
    /// CA revocation: `individual` or `server`.
    pub ca: Option<String>,
    /// Batch approval: the batch's id ([`super::bulk`]).
    pub batch: Option<String>,
    /// Standing authorisation: the organisation's id ...
    pub organisation: Option<String>,
    /// ... the most good rows approved on arrival in any 24 hours ...
    pub max_rows: Option<i64>,
    /// ... for this many days (0 withdraws it).
    pub days: Option<u32>,
}

row! {
    /// A proposal as listed.
    #[derive(Debug, Clone)]
    pub struct ProposalView {
        /// Its id.
        pub id: String,
        /// `mass_revocation`, `key_block` or `ca_revocation`.
        pub kind: String,
        /// What it does, in one line.
        pub summary: String,
        /// Who proposed it (user name).
        pub proposed_by: String,
        /// When (Unix seconds).
        pub proposed_at: i64,
        /// Until when it may be confirmed.
        pub expires_at: i64,
        /// `pending`, `confirming`, `done`, `failed` or `withdrawn`.
        pub state: String,
        /// Who confirmed or withdrew it.
        pub decided_by: Option<String>,
        /// What happened.
        pub outcome: Option<String>,
        /// Exactly what it does (JSON: the serials and reason; the key's SHA-256 and reason;
        /// the CA and reason): what the second officer confirms.
        pub params: String,
    }
}

row! {
    struct ProposalRow {
        kind: String,
        params: String,
        proposed_by: String,
        expires_at: i64,
        state: String,
    }
}

const VIEW: &str = "SELECT p.id AS id, p.kind AS kind, p.summary AS summary, s.username AS proposed_by, \
     p.proposed_at AS proposed_at, p.expires_at AS expires_at, p.state AS state, d.username AS decided_by, \
     p.outcome AS outcome, p.params AS params FROM officer_proposals p JOIN staff s ON s.id = p.proposed_by \
     LEFT JOIN staff d ON d.id = p.decided_by";

/// The SHA-256 of what a proposal does, in both its audit records: what was confirmed is what
/// was proposed.
fn params_hash(params: &str) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(params.as_bytes()))
}

fn actor(staff: &StaffSession) -> String {
    format!("staff:{}", staff.username)
}

fn revocation_reason(reason: &str) -> Result<Reason> {
    let r = Reason::parse(reason)?;
    if r == Reason::CertificateHold {
        return Err(invalid(
            "reason",
            "a hold is placed at the counter, one certificate at a time",
        ));
    }
    Ok(r)
}

/// The key's SHA-256 (of its SubjectPublicKeyInfo) from a PEM public key.
fn key_of_pem(text: &str) -> Result<[u8; 32]> {
    let block = pem::parse(text.trim()).map_err(|_| invalid("public_key", "a PEM PUBLIC KEY"))?;
    if block.tag() != "PUBLIC KEY" {
        return Err(invalid("public_key", "a PEM PUBLIC KEY"));
    }
    // The fingerprint the issuance checks compare: of the key as the key policy reads it.
    Ok(
        crate::keys::SubscriberKey::from_spki_der(&block.into_contents())
            .map_err(|e| invalid("public_key", e.to_string()))?
            .fingerprint(),
    )
}

/// Records a proposal (audited); nothing is done until another officer confirms it.
pub async fn propose(
    auth: &Authority,
    staff: &StaffSession,
    r: &ProposalRequest,
) -> Result<ProposalView> {
    staff.authorize(Action::TwoOfficerDecisions)?;
    let store = auth.store();
    let (params, summary) = match r.kind.as_str() {
        "mass_revocation" => {
            let reason = revocation_reason(&r.reason)?;
            let mut listed = Vec::new();
            for s in &r.serials {
                let serial = SerialNumber::from_hex(s.trim())
                    .ok_or_else(|| invalid("serials", "serial numbers in hex"))?
                    .to_hex();
                match store.certificate(&serial).await? {
                    Some(c) if c.profile == RESPONDER_PROFILE => {
                        return Err(invalid(
                            "serials",
                            format!("{serial} is an OCSP responder's certificate: responders are rotated, not revoked here"),
                        ))
                    }
                    Some(_) => listed.push(serial),
                    None => return Err(invalid("serials", format!("no certificate {serial}"))),
                }
            }
            let query =
                r.profile.is_some() || r.issued_after.is_some() || r.issued_before.is_some();
            let mut matched = Vec::new();
            if query {
                // A query names a real profile (a free text would become the summary the second
                // officer reads); responders' certificates are never swept up.
                if let Some(p) = &r.profile {
                    let known = crate::profile::Profile::get(p.trim())
                        .map_err(|_| invalid("profile", "a certificate profile, e.g. personal"))?;
                    if known.id == RESPONDER_PROFILE {
                        return Err(invalid(
                            "profile",
                            "responders are rotated, not revoked here",
                        ));
                    }
                }
                for s in store
                    .serials_matching(
                        r.profile.as_deref().map(str::trim),
                        r.issued_after,
                        r.issued_before,
                    )
                    .await?
                {
                    let responder = store
                        .certificate(&s)
                        .await?
                        .is_some_and(|c| c.profile == RESPONDER_PROFILE);
                    if !responder {
                        matched.push(s);
                    }
                }
            }
            let mut serials: Vec<String> = listed.iter().chain(&matched).cloned().collect();
            serials.sort();
            serials.dedup();
            if serials.is_empty() {
                return Err(invalid(
                    "serials",
                    "nothing to revoke: give serials or a query that matches unrevoked certificates",
                ));
            }
            if serials.len() > MAX_SERIALS {
                return Err(invalid(
                    "serials",
                    format!("at most {MAX_SERIALS} certificates in one proposal"),
                ));
            }
            let mut parts = Vec::new();
            if !listed.is_empty() {
                parts.push(format!("{} listed", listed.len()));
            }
            if query {
                let time = |t: Option<i64>| {
                    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
                        .and_then(|t| {
                            t.format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        })
                        .unwrap_or_else(|| "-".into())
                };
                parts.push(format!(
                    "{} matching profile {} issued {} to {}",
                    matched.len(),
                    r.profile.as_deref().map(str::trim).unwrap_or("(any)"),
                    time(r.issued_after),
                    time(r.issued_before)
                ));
            }
            let compromise = if reason == Reason::KeyCompromise {
                "; each key is blocked and every certificate with it revoked"
            } else {
                ""
            };
            (
                json!({ "serials": serials, "reason": reason.name() }),
                format!(
                    "revoke {} certificate(s) ({}) for {}{compromise}",
                    serials.len(),
                    parts.join(", "),
                    reason.name()
                ),
            )
        }
        "key_block" => {
            check_len("reason", &r.reason, 1, 500)?;
            let (fp, source): (Vec<u8>, String) = match (&r.serial, &r.public_key) {
                (Some(s), None) => {
                    let serial = SerialNumber::from_hex(s.trim())
                        .ok_or_else(|| invalid("serial", "a serial number in hex"))?;
                    let fp = store
                        .certificate(&serial.to_hex())
                        .await?
                        .ok_or(Error::NotFound)?
                        .key_fp;
                    (fp, format!("of certificate {}", serial.to_hex()))
                }
                (None, Some(pem)) => (key_of_pem(pem)?.to_vec(), "given as a public key".into()),
                _ => {
                    return Err(invalid(
                        "serial",
                        "name the key: a certificate's serial or a public key (one of them)",
                    ))
                }
            };
            let fp = hex::encode(fp);
            (
                json!({ "key_sha256": fp, "reason": r.reason.trim() }),
                format!("block the key {fp} ({source}): {}", r.reason.trim()),
            )
        }
        "ca_revocation" => {
            let ca = CaId::from_name(r.ca.as_deref().unwrap_or_default()).map_err(|_| {
                invalid(
                    "ca",
                    "an issuing CA: individual, server or a successor such as individual-2",
                )
            })?;
            if ca.is_root() {
                return Err(invalid(
                    "ca",
                    "a root is not revoked: it is withdrawn from the trust stores",
                ));
            }
            // Refused now, not after two officers agreed on a CA that does not exist.
            if store.ca(&ca.name()).await?.is_none() {
                return Err(invalid("ca", "no such CA: `ecert ca list` names them"));
            }
            let reason = revocation_reason(&r.reason)?;
            if reason == Reason::Unspecified {
                return Err(invalid(
                    "reason",
                    "a CA certificate is revoked with a reason (TLS BR §7.2.2)",
                ));
            }
            (
                json!({ "ca": ca.name(), "reason": reason.name() }),
                format!("revoke the {} CA for {}", ca.name(), reason.name()),
            )
        }
        "batch_approval" => {
            let batch = r.batch.as_deref().unwrap_or_default().trim().to_string();
            let (org, rows) = super::bulk::batch_summary(store, &batch).await?;
            (
                json!({ "batch": batch }),
                format!("approve batch {batch} of {org}: issue its {rows} good rows"),
            )
        }
        "standing_authorisation" => {
            if !auth.config().ra.standing_authorisation {
                return Err(invalid(
                    "kind",
                    "the CA's policy does not allow standing authorisations ([ra] standing_authorisation): each batch is approved by two officers",
                ));
            }
            let org = r
                .organisation
                .as_deref()
                .unwrap_or_default()
                .trim()
                .to_string();
            let days = r
                .days
                .ok_or_else(|| invalid("days", "1 to 365, or 0 to withdraw it"))?;
            if days > super::bulk::MAX_STANDING_DAYS {
                return Err(invalid("days", "1 to 365, or 0 to withdraw it"));
            }
            let name = super::bulk::organisation_name(store, &org).await?;
            if days == 0 {
                (
                    json!({ "organisation": org, "days": 0, "max_rows": 0 }),
                    format!("withdraw the standing authorisation of {name}"),
                )
            } else {
                let max_rows = r.max_rows.unwrap_or(0);
                let most = super::bulk::MAX_BATCH_ROWS as i64;
                if !(1..=most).contains(&max_rows) {
                    return Err(invalid("max_rows", format!("1 to {most}")));
                }
                (
                    json!({ "organisation": org, "days": days, "max_rows": max_rows }),
                    format!(
                        "let {name}'s batches be approved on arrival, up to {max_rows} rows in any 24 hours, for {days} days"
                    ),
                )
            }
        }
        _ => return Err(invalid(
            "kind",
            "mass_revocation, key_block, ca_revocation, batch_approval or standing_authorisation",
        )),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let at = now();
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO officer_proposals (id, kind, params, summary, proposed_by, proposed_at, expires_at, state) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')",
    )
    .bind(&id)
    .bind(&r.kind)
    .bind(params.to_string())
    .bind(&summary)
    .bind(&staff.staff)
    .bind(at)
    .bind(at + PROPOSAL_HOURS * 3600)
    .execute(&mut *tx)
    .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "officer.proposed",
                actor: actor(staff),
                subject: Some(id.clone()),
                detail: json!({ "kind": r.kind, "summary": summary, "params_sha256": params_hash(&params.to_string()) }),
            },
        )
        .await?;
    tx.commit().await?;
    view(auth, &id).await
}

async fn view(auth: &Authority, id: &str) -> Result<ProposalView> {
    // VIEW is a constant: no input is formatted into the statement.
    sqlx::query_as::<_, ProposalView>(sqlx::AssertSqlSafe(format!("{VIEW} WHERE p.id = $1")))
        .bind(id)
        .fetch_optional(auth.store().pool())
        .await?
        .ok_or(Error::NotFound)
}

/// Pending proposals and the last 50 decided ones, newest first.
pub async fn proposals(auth: &Authority, staff: &StaffSession) -> Result<Vec<ProposalView>> {
    staff.authorize(Action::TwoOfficerDecisions)?;
    Ok(
        sqlx::query_as::<_, ProposalView>(sqlx::AssertSqlSafe(format!(
            "{VIEW} ORDER BY CASE WHEN p.state = 'pending' THEN 0 ELSE 1 END, p.proposed_at DESC LIMIT 100"
        )))
        .fetch_all(auth.store().pool())
        .await?,
    )
}

/// Takes a pending proposal for `staff` (compare-and-set), refusing the proposer and an
/// expired one.
async fn take(auth: &Authority, staff: &StaffSession, id: &str, to: &str) -> Result<ProposalRow> {
    let store = auth.store();
    let p = sqlx::query_as::<_, ProposalRow>(
        "SELECT kind, params, proposed_by, expires_at, state FROM officer_proposals WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::NotFound)?;
    if p.state != "pending" {
        return Err(Error::Conflict(format!("this proposal is {}", p.state)));
    }
    if to == "confirming" {
        if p.proposed_by == staff.staff {
            return Err(Error::Forbidden(
                "a second officer confirms: you proposed this".into(),
            ));
        }
        if now() > p.expires_at {
            return Err(Error::Expired(
                "the proposal waited too long: propose it again".into(),
            ));
        }
    }
    let n = sqlx::query(
        "UPDATE officer_proposals SET state = $1, decided_by = $2, decided_at = $3 WHERE id = $4 AND state = 'pending'",
    )
    .bind(to)
    .bind(&staff.staff)
    .bind(now())
    .bind(id)
    .execute(store.pool())
    .await?
    .rows_affected();
    if n != 1 {
        return Err(Error::Conflict(
            "another officer decided this proposal meanwhile".into(),
        ));
    }
    Ok(p)
}

/// Withdraws a pending proposal (any officer; audited).
pub async fn withdraw(auth: &Authority, staff: &StaffSession, id: &str) -> Result<ProposalView> {
    staff.authorize(Action::TwoOfficerDecisions)?;
    take(auth, staff, id, "withdrawn").await?;
    auth.store()
        .audit_now(&Event {
            kind: "officer.withdrawn",
            actor: actor(staff),
            subject: Some(id.to_string()),
            detail: json!({}),
        })
        .await?;
    view(auth, id).await
}

/// How long a confirmation waits for its proposal to be carried out before answering with the
/// state `confirming` (a long mass revocation goes on in the background).
pub const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A second officer confirms a proposal, and it is carried out now, as them — in a task of its
/// own, so that neither a client that goes away nor the request time limit stops it half-way;
/// the answer waits up to [`CONFIRM_WAIT`] for it. A proposal left `confirming` by a process
/// that died is finished by [`resume`] when the next one starts.
pub async fn confirm(
    auth: &std::sync::Arc<Authority>,
    staff: &StaffSession,
    id: &str,
) -> Result<ProposalView> {
    staff.authorize(Action::TwoOfficerDecisions)?;
    let p = take(auth, staff, id, "confirming").await?;
    let store = auth.store();
    let proposer: String = sqlx::query_scalar("SELECT username FROM staff WHERE id = $1")
        .bind(&p.proposed_by)
        .fetch_one(store.pool())
        .await?;
    store
        .audit_now(&Event {
            kind: "officer.confirmed",
            actor: actor(staff),
            subject: Some(id.to_string()),
            detail: json!({ "kind": p.kind, "proposed_by": format!("staff:{proposer}"), "params_sha256": params_hash(&p.params) }),
        })
        .await?;
    let (a, i, who) = (auth.clone(), id.to_string(), actor(staff));
    let task = tokio::spawn(async move { carry_out(&a, &i, &who).await });
    if let Ok(joined) = tokio::time::timeout(CONFIRM_WAIT, task).await {
        joined.map_err(|e| Error::Store(format!("proposal {id}: {e}")))??;
    }
    view(auth, id).await
}

/// Finishes the proposals a dead process left `confirming` (as their confirming officer);
/// returns how many. Carrying out again is safe: a certificate revoked already is counted as
/// such, a blocked key stays blocked, a revoked CA is found revoked.
pub async fn resume(auth: &std::sync::Arc<Authority>) -> Result<usize> {
    row! {
        struct Stuck {
            id: String,
            username: String,
        }
    }
    let stuck = sqlx::query_as::<_, Stuck>(
        "SELECT p.id AS id, s.username AS username FROM officer_proposals p JOIN staff s ON s.id = p.decided_by \
         WHERE p.state = 'confirming'",
    )
    .fetch_all(auth.store().pool())
    .await?;
    let n = stuck.len();
    for p in stuck {
        tracing::warn!(proposal = %p.id, "finishing a two-officer decision a stopped process left");
        if let Err(e) = carry_out(auth, &p.id, &format!("staff:{}", p.username)).await {
            tracing::error!(proposal = %p.id, error = %e, "a two-officer decision failed");
        }
    }
    Ok(n)
}

/// Carries out a `confirming` proposal as `who` and records the outcome (`done` or `failed`).
async fn carry_out(auth: &Authority, id: &str, who: &str) -> Result<()> {
    let store = auth.store();
    let p = sqlx::query_as::<_, ProposalRow>(
        "SELECT kind, params, proposed_by, expires_at, state FROM officer_proposals WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::NotFound)?;
    if p.state != "confirming" {
        return Ok(());
    }
    let params: serde_json::Value =
        serde_json::from_str(&p.params).map_err(|e| Error::Store(format!("proposal {id}: {e}")))?;
    let text = |k: &str| params[k].as_str().unwrap_or_default().to_string();
    let result: Result<String> = async {
        match p.kind.as_str() {
            "mass_revocation" => {
                let reason = Reason::parse(&text("reason"))?;
                let mut serials = Vec::new();
                let mut unreadable = 0usize;
                for s in params["serials"].as_array().into_iter().flatten() {
                    match s.as_str().and_then(SerialNumber::from_hex) {
                        Some(serial) => serials.push(serial),
                        None => unreadable += 1,
                    }
                }
                // Hundreds to a transaction, each certificate as `ecert revoke` does it.
                let (done, already, failed) =
                    crate::revocation::revoke_many(store, &serials, reason, who).await?;
                let failed = failed + unreadable;
                Ok(format!(
                    "{done} revoked, {already} already revoked, {failed} failed"
                ))
            }
            "key_block" => {
                let fp: [u8; 32] = hex::decode(text("key_sha256"))
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| Error::Store(format!("proposal {id}: key")))?;
                auth.block_key(&fp, &text("reason"), who).await?;
                Ok("key blocked".to_string())
            }
            "ca_revocation" => {
                let role = CaId::from_name(&text("ca"))?;
                let reason = Reason::parse(&text("reason"))?;
                if store.ca_revocation(&role.name()).await?.is_some() {
                    return Ok(format!("the {} CA was revoked already", role.name()));
                }
                let root = auth.revoke_ca(role, reason, who).await?;
                Ok(format!(
                    "the {} CA revoked; the {} CRL that lists it is signed in a key ceremony \
                     (a root_crl step) within 24 hours",
                    role.name(),
                    root.name()
                ))
            }
            "batch_approval" => {
                let queued = super::bulk::approve_batch(store, &text("batch"), who).await?;
                Ok(format!("batch approved: {queued} rows queued for issuance"))
            }
            "standing_authorisation" => {
                let number = |k: &str| params[k].as_i64().unwrap_or(0);
                super::bulk::set_standing(
                    store,
                    &text("organisation"),
                    number("max_rows"),
                    number("days"),
                    id,
                    who,
                )
                .await
            }
            other => Err(Error::Store(format!("proposal {id}: unknown kind {other}"))),
        }
    }
    .await;
    let (state, outcome) = match &result {
        Ok(o) => ("done", o.clone()),
        // A signer that lost the lock records nothing: the decision stays to be carried out
        // by the signer that holds it (`resume`), not marked failed over its work.
        Err(Error::SignerFenced { held, current }) => {
            return Err(Error::SignerFenced {
                held: *held,
                current: *current,
            })
        }
        Err(e) => ("failed", e.to_string()),
    };
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE officer_proposals SET state = $1, outcome = $2 WHERE id = $3")
        .bind(state)
        .bind(&outcome)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    result.map(|_| ())
}
