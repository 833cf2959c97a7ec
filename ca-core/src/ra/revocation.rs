//! Revocation by the subscriber: online with the revocation secret chosen at application
//! (reaching the certificates it renewed), and in person at the counter (revoke, hold,
//! release). The status change itself is [`Authority::revoke`]'s (docs/REVOCATION.md).

use super::record::{owned, staff_owned};
use super::session::StaffSession;
use super::support::{citizen, invalid, now, password_matches};
use crate::authority::Authority;
use crate::error::{Error, Result};
use crate::row::row;
use crate::serial::SerialNumber;

row! {
    struct Secret {
        revocation_hash: String,
        certificate: Option<String>,
    }
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
    let r = sqlx::query_as::<_, Secret>(
        "SELECT revocation_hash, certificate FROM applications WHERE id = $1",
    )
    .bind(&id)
    .fetch_one(store.pool())
    .await?;
    let serial = r.certificate;
    if !password_matches(revocation_secret, &r.revocation_hash) {
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
    revoke_with_predecessors(auth, &serial, reason, &citizen(reference)).await?;
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
    let serial = r
        .certificate
        .ok_or_else(|| Error::Conflict("no certificate has been issued".into()))?;
    let s = SerialNumber::from_hex(&serial).ok_or(Error::NotFound)?;
    auth.revoke(s, reason, &format!("staff:{}", staff.username))
        .await?;
    Ok(serial)
}

/// Releases a hold at the counter (Individual & Organisational CA; RFC 5280 §5.3.1
/// certificateHold is the only reversible status).
pub async fn release_at_counter(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
) -> Result<String> {
    let r = staff_owned(auth.store(), staff, id).await?;
    let serial = r
        .certificate
        .ok_or_else(|| Error::Conflict("no certificate has been issued".into()))?;
    let s = SerialNumber::from_hex(&serial).ok_or(Error::NotFound)?;
    auth.release(s, &format!("staff:{}", staff.username))
        .await?;
    Ok(serial)
}
