//! Revocation by the subscriber: online with the revocation secret chosen at application, and
//! in person at the counter (revoke, hold, release). The status change itself is
//! [`Authority::revoke`]'s, the one path of every channel, which also reaches the certificates
//! the revoked one renewed (docs/REVOCATION.md).

use super::record::{owned, staff_owned};
use super::session::StaffSession;
use super::support::{citizen, invalid, password_matches_async};
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
    if !password_matches_async(revocation_secret, &r.revocation_hash).await? {
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
    let s = SerialNumber::from_hex(&serial).ok_or(Error::NotFound)?;
    auth.revoke(s, reason, &citizen(reference)).await?;
    Ok(serial)
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
