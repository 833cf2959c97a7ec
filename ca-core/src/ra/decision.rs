//! Decisions on an application: approval or rejection of the version a member of staff saw,
//! by the approval rule ([`super::rules::approval_outcome`]); the approval that completes the
//! set claims the application and issues its certificate through the issuance core.

use serde_json::json;

use super::application::{minor_validity, subject_of_record};
use super::domains::{check_caa, domain_status};
use super::permissions::Action;
use super::record::{
    changed, key_certified_to_another, key_of_another, org_key, settle, staff_owned, Application,
};
use super::rules::{
    approval_outcome, approval_readiness, Approval, ApprovalPolicy, Handling, Outcome, Readiness,
};
use super::session::StaffSession;
use super::staff::Role;
use super::support::{check_len, now};
use crate::audit::Event;
use crate::authority::{ApprovedRequest, Authority};
use crate::csr::VerifiedCsr;
use crate::error::{Error, Result};
use crate::profile::{Profile, ProfileKind, SubjectData};
use crate::row::row;
use crate::store::{Store, Tx};

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
/// identity checked for this version and the fee recorded ([`approval_readiness`]); what the
/// decision leads to is [`approval_outcome`]'s: a dual-control profile needs approvals from two
/// different members of staff within `ra.approval_hours`; one rejection rejects. The approval
/// that completes the set claims the application (compare-and-set to `approved`) and issues
/// through the issuance core.
pub async fn decide(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
    version: i64,
    decision: Decision,
) -> Result<Decided> {
    let store = auth.store();
    let r = staff_owned(store, staff, id, Action::Decide).await?;
    r.open_at(Some(version))?;
    let t = now();
    let actor = format!("staff:{}", staff.username);
    match &decision {
        Decision::Reject(reason) => check_len("reason", reason, 3, 500)?,
        Decision::Approve => approval_readiness(&readiness(store, &r, version).await?, t)?,
    }
    let policy = ApprovalPolicy::of(&auth.config().ra, &r.profile, r.org_register.as_deref());
    let new = Approval {
        staff: staff.staff.clone(),
        role: staff.role,
        approve: matches!(decision, Decision::Approve),
        expires_at: t + i64::from(auth.config().ra.approval_hours) * 3600,
        via_token: staff.scopes.is_some(),
    };
    let mut tx = store.begin().await?;
    // One decision at a time per application (PostgreSQL; SQLite's writer lock does this).
    if store.engine() == crate::store::Engine::Postgres {
        sqlx::query("SELECT id FROM applications WHERE id = $1 FOR UPDATE")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let recorded = recorded(&mut tx, id, version).await?;
    let handling = Handling {
        entered_by: r.entered_by.as_deref(),
        identity_by: r.identity_by.as_deref(),
        fee_by: r.fee_by.as_deref(),
    };
    let outcome = approval_outcome(policy, &recorded, &new, handling, t);
    let kind = match outcome {
        Outcome::Refused(refusal) => return Err(refusal.error()),
        Outcome::Retry => "ra.issuance.retried",
        Outcome::Reject => "ra.rejection",
        Outcome::Await | Outcome::Issue => "ra.approval",
    };
    if outcome != Outcome::Retry {
        record(
            &mut tx,
            id,
            version,
            &new,
            t,
            recorded.iter().any(|a| a.staff == new.staff),
        )
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
    match outcome {
        Outcome::Reject => {
            let res = sqlx::query("UPDATE applications SET state = 'rejected', rejected_reason = $2, updated_at = $3 WHERE id = $1 AND state = 'submitted' AND version = $4")
                .bind(id)
                .bind(reason.unwrap_or_default())
                .bind(t)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            if res.rows_affected() != 1 {
                return Err(changed());
            }
            tx.commit().await?;
            return Ok(Decided::Rejected {
                email: r.email,
                reference: r.reference,
            });
        }
        Outcome::Await => {
            tx.commit().await?;
            return Ok(Decided::AwaitingSecond);
        }
        Outcome::Issue | Outcome::Retry | Outcome::Refused(_) => {}
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
    issue(auth, &r, version, t, actor).await
}

/// What the counter has established for `version`, for [`approval_readiness`].
async fn readiness(store: &Store, r: &Application, version: i64) -> Result<Readiness> {
    let kind = Profile::get(&r.profile)?.kind;
    let unvalidated_domains = if kind == ProfileKind::Server {
        domain_status(store, &r.id)
            .await?
            .1
            .into_iter()
            .filter(|d| !d.validated)
            .map(|d| d.domain)
            .collect()
    } else {
        Vec::new()
    };
    Ok(Readiness {
        version,
        kind: Some(kind),
        email_confirmed_at: r.email_confirmed_at,
        identity_version: r.identity_version,
        fee_recorded: r.fee_amount.is_some(),
        org_checked_version: r.org_checked_version,
        unvalidated_domains,
    })
}

row! {
    /// A recorded decision and its maker's role now.
    struct ApprovalRow {
        staff: String,
        role: String,
        decision: String,
        expires_at: i64,
    }
}

/// The decisions recorded on `version` by members whose accounts are enabled (a disabled
/// member's approval no longer counts), inside `tx`.
async fn recorded(tx: &mut Tx, id: &str, version: i64) -> Result<Vec<Approval>> {
    sqlx::query_as::<_, ApprovalRow>(
        "SELECT a.staff AS staff, st.role AS role, a.decision AS decision, a.expires_at AS expires_at \
         FROM approvals a JOIN staff st ON st.id = a.staff WHERE a.application = $1 AND a.version = $2 \
         AND st.disabled = 0",
    )
    .bind(id)
    .bind(version)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|a| {
        Ok(Approval {
            role: Role::parse(&a.role)?,
            approve: a.decision == "approve",
            staff: a.staff,
            expires_at: a.expires_at,
            // How it was made is not recorded; it matters only for the decision being made.
            via_token: false,
        })
    })
    .collect()
}

/// Records `new` on `version` inside `tx`, replacing the maker's own earlier (expired)
/// decision if `replaces` (the rule allows that only for an expired one).
async fn record(
    tx: &mut Tx,
    id: &str,
    version: i64,
    new: &Approval,
    t: i64,
    replaces: bool,
) -> Result<()> {
    if replaces {
        sqlx::query("DELETE FROM approvals WHERE application = $1 AND version = $2 AND staff = $3")
            .bind(id)
            .bind(version)
            .bind(&new.staff)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("INSERT INTO approvals (application, version, staff, decision, at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(version)
        .bind(&new.staff)
        .bind(if new.approve { "approve" } else { "reject" })
        .bind(t)
        .bind(new.expires_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Issues the certificate of an application this decision claimed (state `approved` at
/// `t`): subject data from the record, CAA for a server, then prepare, record the serial on the
/// application, sign and mark it issued. A failure before the serial is recorded opens the
/// application again with the reason; after, [`settle`] follows the certificate's own state.
async fn issue(
    auth: &Authority,
    r: &Application,
    version: i64,
    t: i64,
    actor: String,
) -> Result<Decided> {
    let store = auth.store();
    let id = r.id.as_str();
    let profile_def = Profile::get(&r.profile)?;
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
        let subject = subject_of_record(profile_def, r)?;
        let days = if profile_def.minor {
            Some(minor_validity(auth, id, profile_def, &r.dob_sealed)?)
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
    let csr = VerifiedCsr::parse(&r.csr)?;
    // Checked again here: another subscriber's certificate for the key may have been issued
    // since this application was made.
    match key_certified_to_another(
        store,
        &csr.key().fingerprint(),
        &r.hkid_index,
        &org_key(
            r.org_register.as_deref(),
            r.org_id.as_deref(),
            r.organization.as_deref(),
        ),
    )
    .await
    {
        Ok(false) => {}
        Ok(true) => return back_to_open(key_of_another()).await,
        Err(e) => return back_to_open(e).await,
    }
    let request = ApprovedRequest {
        profile: r.profile.clone(),
        csr,
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
    crate::ldap::queue_application(&mut tx, id, false, now()).await?;
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
        email: r.email.clone(),
        reference: r.reference.clone(),
    })
}
