//! Domain control for server applications: the Random Value the applicant publishes in DNS
//! (TLS BR §3.2.2.4.7), its validation from this host and the remote network perspectives
//! (§3.2.2.9), and the CAA check just before issuance (§3.2.2.8).

use serde_json::json;

use super::permissions::Action;
use super::record::{not_open, owned, staff_owned};
use super::session::StaffSession;
use super::support::{citizen, now, random_base32};
use crate::audit::Event;
use crate::authority::Authority;
use crate::dcv::CaaFor;
use crate::error::{Error, Result};
use crate::row::row;
use crate::store::Store;

/// A Random Value for domain validation: 128 bits (TLS BR §1.6.1 asks for at least 112).
pub(super) fn dcv_token() -> String {
    random_base32(16).to_ascii_lowercase()
}

row! {
    struct NamesRow {
        dns_names: Option<String>,
        dcv_token: Option<String>,
    }
}

row! {
    struct TokenRow {
        state: String,
        dcv_token: Option<String>,
        dcv_token_at: Option<i64>,
    }
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
pub(super) async fn domain_status(
    store: &Store,
    id: &str,
) -> Result<(Option<String>, Vec<DomainStatus>)> {
    let r = sqlx::query_as::<_, NamesRow>(
        "SELECT dns_names, dcv_token FROM applications WHERE id = $1",
    )
    .bind(id)
    .fetch_one(store.pool())
    .await?;
    let (names, token) = (r.dns_names, r.dcv_token);
    let since = now() - crate::dcv::reuse_days(time::OffsetDateTime::now_utc()) * 86_400;
    let done: Vec<String> = sqlx::query_scalar::<_, String>(
        "SELECT domain FROM domain_validations WHERE application = $1 AND token = $2 AND validated_at > $3",
    )
    .bind(id)
    .bind(token.clone().unwrap_or_default())
    .bind(since)
    .fetch_all(store.pool())
    .await?;
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
    let r = sqlx::query_as::<_, TokenRow>(
        "SELECT state, dcv_token, dcv_token_at FROM applications WHERE id = $1",
    )
    .bind(id)
    .fetch_one(store.pool())
    .await?;
    if r.state != "submitted" {
        return Err(not_open());
    }
    let (Some(mut token), Some(made)) = (r.dcv_token, r.dcv_token_at) else {
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
    let pending: Vec<usize> = (0..list.len()).filter(|&i| !list[i].validated).collect();
    let names: Vec<(String, String)> = pending
        .iter()
        .map(|&i| (list[i].domain.clone(), list[i].record.clone()))
        .collect();
    let (found_in, problems, perspectives) = control_of(auth, &names, &token).await?;
    for (k, problem) in problems.into_iter().enumerate() {
        list[pending[k]].problem = problem;
    }
    let found: Vec<usize> = found_in.into_iter().map(|k| pending[k]).collect();
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

/// Domain control by DNS change (TLS BR §3.2.2.4.7) for `names` ((domain, TXT record name)),
/// all with the Random Value `token`: checked from this host's resolver (DNSSEC), then
/// corroborated by the remote network perspectives (§3.2.2.9). Returns the indexes of the
/// names validated, each name's problem, and what the perspectives answered (for the audit).
pub(super) async fn control_of(
    auth: &Authority,
    names: &[(String, String)],
    token: &str,
) -> Result<(Vec<usize>, Vec<Option<String>>, serde_json::Value)> {
    let dcv = &auth.config().dcv;
    let checker = crate::dcv::Checker::new(dcv)?;
    let mut problems: Vec<Option<String>> = vec![None; names.len()];
    // The primary perspective (this host's resolver) first.
    let mut found = Vec::new();
    for (i, (domain, record)) in names.iter().enumerate() {
        match checker.domain_control(domain, token).await {
            Ok(true) => found.push(i),
            Ok(false) => {
                problems[i] = Some(format!("no TXT record at {record} holds the value"));
            }
            Err(e) => problems[i] = Some(e.to_string()),
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
                            name: names[i].1.clone(),
                            value: token.to_string(),
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
                    problems[i] = Some(
                        "the remote network perspectives did not corroborate the record (TLS BR §3.2.2.9): check that it is published on every name server".into(),
                    );
                }
            }
            Err(e) => {
                for &i in &found {
                    problems[i] = Some(e.to_string());
                }
                found.clear();
            }
        }
    }
    Ok((found, problems, perspectives))
}

/// [`validate_domains`] for the applicant (reference and tracking secret).
pub async fn validate_domains_online(
    auth: &Authority,
    reference: &str,
    secret: &str,
) -> Result<(String, Vec<DomainStatus>)> {
    let id = owned(auth.store(), reference, secret).await?;
    validate_domains(auth, &id, &citizen(reference)).await
}

/// [`validate_domains`] for a member of staff of the application's outlet.
pub async fn validate_domains_at_counter(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
) -> Result<(String, Vec<DomainStatus>)> {
    staff_owned(auth.store(), staff, id, Action::RecordChecks).await?;
    validate_domains(auth, id, &format!("staff:{}", staff.username)).await
}

/// CAA for every name just before issuance; each outcome is an audit event.
pub(super) async fn check_caa(
    auth: &Authority,
    id: &str,
    names: &[String],
    actor: &str,
) -> Result<()> {
    match check_caa_for(auth, id, names, actor, CaaFor::DomainName).await? {
        Ok(()) => Ok(()),
        Err((e, _)) => Err(e),
    }
}

/// What a mailbox domain's CAA check found ([`check_mailbox_caa`]).
#[derive(Debug)]
pub(crate) enum MailboxCaa {
    /// CAA permits this CA, as corroborated.
    Permitted,
    /// The domain's own CAA records do not permit this CA: the reason.
    Forbidden(String),
    /// Not known now: a lookup failed, or the remote perspectives did not corroborate the
    /// permission (some may be away). Asked again later.
    Unavailable(Error),
}

/// [`check_caa`] for a mailbox domain (RFC 9495's `issuemail`, S/MIME BR §4.2.2.1), before a
/// certificate naming a mailbox at it is issued; `subject` names what is issued (an
/// organisation's batch rows). The remote perspectives corroborate it as they do a server
/// name's, as the BR asks where the domain was validated by DNS (§3.2.2.1, §4.2.2.2). Audited
/// `ra.caa.checked`, `ra.caa.refused` (prevented by the records, which the BR asks CAs to
/// document) or `ra.caa.unavailable`; `Err` only when the audit record cannot be written.
pub(crate) async fn check_mailbox_caa(
    auth: &Authority,
    subject: &str,
    domain: &str,
    actor: &str,
) -> Result<MailboxCaa> {
    Ok(
        match check_caa_for(auth, subject, &[domain.to_string()], actor, CaaFor::Mailbox).await? {
            Ok(()) => MailboxCaa::Permitted,
            Err((e, true)) => MailboxCaa::Forbidden(e.to_string()),
            Err((e, false)) => MailboxCaa::Unavailable(e),
        },
    )
}

/// The CAA check of `names` from this host and the remote perspectives, audited. The inner
/// error says whether the names' own records refused (`true`) or the answer is not known
/// (a lookup failure, a configuration that cannot check, perspectives that did not
/// corroborate: `false`); the outer one that the audit record could not be written.
async fn check_caa_for(
    auth: &Authority,
    id: &str,
    names: &[String],
    actor: &str,
    what: CaaFor,
) -> Result<std::result::Result<(), (Error, bool)>> {
    let dcv = &auth.config().dcv;
    let mut outcome = Ok(());
    match crate::dcv::Checker::new(dcv) {
        Err(e) => outcome = Err((e, false)),
        Ok(checker) => {
            for n in names {
                if let Err(e) = checker.caa_for(n, what).await {
                    let refused = matches!(e, Error::CaaForbids { .. });
                    outcome = Err((e, refused));
                    break;
                }
            }
        }
    }
    // The remote perspectives must also find that CAA permits this CA (TLS BR §3.2.2.9).
    let mut perspectives = serde_json::Value::Null;
    if outcome.is_ok() {
        outcome = match crate::mpic::required(dcv) {
            Ok(false) => Ok(()),
            Err(e) => Err((e, false)),
            Ok(true) => {
                let mut req = crate::mpic::CheckRequest {
                    identities: dcv.caa_identities.clone(),
                    ..Default::default()
                };
                match what {
                    CaaFor::DomainName => req.caa = names.to_vec(),
                    CaaFor::Mailbox => req.caa_mail = names.to_vec(),
                }
                let answers = crate::mpic::ask(dcv, &req).await;
                perspectives = json!(answers
                    .iter()
                    .map(|(name, a)| json!({
                        "perspective": name,
                        "answered": a.is_some(),
                        "caa": a.as_ref().map(|a| match what {
                            CaaFor::DomainName => a.caa.clone(),
                            CaaFor::Mailbox => a.caa_mail.clone(),
                        }),
                    }))
                    .collect::<Vec<_>>());
                // Only CAA items are asked: an item's index is its name's.
                match crate::mpic::uncorroborated(&req, &answers, &dcv.perspectives, time::OffsetDateTime::now_utc()).first() {
                    None => Ok(()),
                    Some(&i) => Err((Error::CaaForbids {
                        domain: names[i].clone(),
                        reason: "the remote network perspectives did not corroborate that CAA permits this CA (TLS BR §3.2.2.9)".into(),
                    }, false)),
                }
            }
        };
    }
    let kind = match (&outcome, what) {
        (Ok(()), _) => "ra.caa.checked",
        // A server certificate's check records every failure as a refusal (the issuance
        // stops; staff retry).
        (Err(_), CaaFor::DomainName) | (Err((_, true)), CaaFor::Mailbox) => "ra.caa.refused",
        (Err((_, false)), CaaFor::Mailbox) => "ra.caa.unavailable",
    };
    let store = auth.store();
    let mut tx = store.begin().await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind,
                actor: actor.to_string(),
                subject: Some(id.to_string()),
                detail: json!({
                    "names": names,
                    "property": match what {
                        CaaFor::DomainName => "issue",
                        CaaFor::Mailbox => "issuemail",
                    },
                    "error": outcome.as_ref().err().map(|(e, _)| e.to_string()),
                    "perspectives": perspectives,
                }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(outcome)
}
