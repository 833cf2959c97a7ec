//! Revocation by the subscriber: online with the revocation secret chosen at application, and
//! in person at the counter (revoke, hold, release). The status change itself is
//! [`Authority::revoke`]'s, the one path of every channel, which also reaches the certificates
//! the revoked one renewed (docs/REVOCATION.md).

use super::permissions::Action;
use super::record::{owned, staff_owned};
use super::session::StaffSession;
use super::staff::Role;
use super::support::{citizen, invalid, now, password_matches_async, random_base32};
use crate::authority::Authority;
use crate::error::{Error, Result};
use crate::revocation::Evidence;
use crate::row::row;
use crate::serial::SerialNumber;

row! {
    struct Secret {
        revocation_hash: String,
        certificate: Option<String>,
    }
}

/// How long a key-compromise challenge is good for.
pub const KEY_CHALLENGE_SECONDS: i64 = 600;

/// What the certificate's key signs to prove its possession when its compromise is reported
/// online: the reference, the serial and a fresh challenge from [`key_compromise_challenge`],
/// one per line.
pub fn key_compromise_message(reference: &str, serial: &str, challenge: &str) -> String {
    format!(
        "ecert-key-compromise-v1\n{}\n{}\n{}",
        reference.trim().to_uppercase(),
        serial.to_ascii_lowercase(),
        challenge.trim()
    )
}

/// A fresh challenge (128 bits, ten minutes, one at a time) for a key-compromise report with
/// proof of possession; returns it and the serial of the certificate whose key signs
/// [`key_compromise_message`].
pub async fn key_compromise_challenge(
    auth: &Authority,
    reference: &str,
    tracking_secret: &str,
) -> Result<(String, String)> {
    let store = auth.store();
    let id = owned(store, reference, tracking_secret).await?;
    let challenge = random_base32(16);
    let serial = sqlx::query_scalar::<_, Option<String>>(
        "SELECT certificate FROM applications WHERE id = $1",
    )
    .bind(&id)
    .fetch_one(store.pool())
    .await?
    .ok_or_else(|| Error::Conflict("no certificate has been issued".into()))?;
    sqlx::query(
        "UPDATE applications SET kc_challenge = $2, kc_challenge_expires = $3 WHERE id = $1",
    )
    .bind(&id)
    .bind(&challenge)
    .bind(now() + KEY_CHALLENGE_SECONDS)
    .execute(store.pool())
    .await?;
    Ok((challenge, serial))
}

/// Revokes the certificate of an application online with the revocation secret chosen at
/// application time (BR §4.9.3: the subscriber may request revocation), and the certificates
/// it renewed. For keyCompromise, `key_proof` — the certificate key's signature over
/// [`key_compromise_message`] with the current challenge — is the verified evidence (TLS BR and
/// S/MIME BR §4.9.1.1) that blocks the key and revokes every certificate carrying it; without
/// it the subscriber's own certificates are revoked and the report waits for an officer
/// ([`crate::revocation::Evidence::Reported`]). A wrong or stale proof is refused.
pub async fn revoke_online(
    auth: &Authority,
    reference: &str,
    tracking_secret: &str,
    revocation_secret: &str,
    reason: crate::revocation::Reason,
    key_proof: Option<&[u8]>,
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
    let evidence = match (reason, key_proof.filter(|p| !p.is_empty())) {
        (Reason::KeyCompromise, Some(proof)) => {
            verify_key_proof(auth, &id, reference, &serial, proof).await?;
            Evidence::Verified
        }
        (Reason::KeyCompromise, None) => Evidence::Reported,
        _ => Evidence::Verified,
    };
    auth.revoke_as(s, reason, &citizen(reference), evidence)
        .await?;
    Ok(serial)
}

row! {
    struct Challenge {
        kc_challenge: Option<String>,
        kc_challenge_expires: i64,
    }
}

/// Checks a proof of possession of the key of `serial` over the application's current
/// challenge, then spends the challenge (used once).
async fn verify_key_proof(
    auth: &Authority,
    id: &str,
    reference: &str,
    serial: &str,
    proof: &[u8],
) -> Result<()> {
    let store = auth.store();
    let c = sqlx::query_as::<_, Challenge>(
        "SELECT kc_challenge, kc_challenge_expires FROM applications WHERE id = $1",
    )
    .bind(id)
    .fetch_one(store.pool())
    .await?;
    let Some(challenge) = c.kc_challenge.filter(|_| c.kc_challenge_expires >= now()) else {
        return Err(invalid(
            "key_proof",
            "ask for a new challenge: there is none, or it expired",
        ));
    };
    let spent = sqlx::query(
        "UPDATE applications SET kc_challenge = NULL WHERE id = $1 AND kc_challenge = $2",
    )
    .bind(id)
    .bind(&challenge)
    .execute(store.pool())
    .await?
    .rows_affected();
    if spent != 1 {
        return Err(invalid("key_proof", "the challenge was used already"));
    }
    let der = store
        .certificate(serial)
        .await?
        .and_then(|c| c.cert_der)
        .ok_or(Error::NotFound)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| Error::Encoding(e.to_string()))?;
    let key = crate::keys::SubscriberKey::from_spki_der(cert.public_key().raw)?;
    if !key.verifies(
        key_compromise_message(reference, serial, &challenge).as_bytes(),
        proof,
    ) {
        return Err(invalid(
            "key_proof",
            "the signature does not verify with the certificate's key",
        ));
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
    let r = staff_owned(auth.store(), staff, id, Action::Revoke).await?;
    let serial = r
        .certificate
        .ok_or_else(|| Error::Conflict("no certificate has been issued".into()))?;
    let s = SerialNumber::from_hex(&serial).ok_or(Error::NotFound)?;
    within_revocation_budget(auth, staff).await?;
    auth.revoke_as(
        s,
        reason,
        &format!("staff:{}", staff.username),
        evidence_of(staff),
    )
    .await?;
    Ok(serial)
}

/// How far a member's keyCompromise reaches: an officer's blocks the key and revokes every
/// certificate carrying it; counter staff take the subscriber's word, which reaches the
/// subscriber's own certificates and records a report for an officer to confirm
/// ([`crate::revocation::Evidence`]) — a clerk never revokes another subscriber's certificate.
fn evidence_of(staff: &StaffSession) -> Evidence {
    if staff.role == Role::Officer {
        Evidence::Verified
    } else {
        Evidence::Reported
    }
}

/// Revocations one member may make in an hour, one certificate at a time: more is a mass
/// revocation, which two officers decide ([`super::officer`]).
pub const REVOCATIONS_PER_HOUR: i64 = 30;

/// Refuses a member's revocation past [`REVOCATIONS_PER_HOUR`] (counted from the audit trail,
/// so every instance and channel counts alike).
async fn within_revocation_budget(auth: &Authority, staff: &StaffSession) -> Result<()> {
    let made: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE at >= $1 AND actor = $2 \
         AND kind IN ('certificate.revoked', 'certificate.held', 'certificate.revocation_reason_updated', \
         'certificate.revoked_unknown')",
    )
    .bind(now() - 3600)
    .bind(format!("staff:{}", staff.username))
    .fetch_one(auth.store().pool())
    .await?;
    if made >= REVOCATIONS_PER_HOUR {
        return Err(Error::TooManyAttempts(format!(
            "{made} certificates revoked or held by you in the last hour: a revocation of many is two officers' decision (a mass_revocation proposal)"
        )));
    }
    Ok(())
}

/// Releases a hold at the counter (Individual & Organisational CA; RFC 5280 §5.3.1
/// certificateHold is the only reversible status).
pub async fn release_at_counter(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
) -> Result<String> {
    let r = staff_owned(auth.store(), staff, id, Action::Revoke).await?;
    let serial = r
        .certificate
        .ok_or_else(|| Error::Conflict("no certificate has been issued".into()))?;
    let s = SerialNumber::from_hex(&serial).ok_or(Error::NotFound)?;
    // A hold an officer placed — or the command line, or the service itself — is an officer's
    // to release, not any clerk's of the outlet.
    may_release(auth, staff, &serial).await?;
    auth.release(s, &format!("staff:{}", staff.username))
        .await?;
    Ok(serial)
}

/// Only a counter hold — placed by a member of counter staff — is the counter's to release; any
/// other (an officer's, the former command line's, the service's, or one whose holder's
/// account is gone) is an officer's.
async fn may_release(auth: &Authority, staff: &StaffSession, serial: &str) -> Result<()> {
    let holder = auth.store().held_by(serial).await?;
    let counter_hold = match holder.as_deref().and_then(|a| a.strip_prefix("staff:")) {
        Some(username) => {
            let role =
                sqlx::query_scalar::<_, String>("SELECT role FROM staff WHERE username = $1")
                    .bind(username)
                    .fetch_optional(auth.store().pool())
                    .await?;
            matches!(role.as_deref(), Some(r) if r == Role::Clerk.name() || r == Role::Supervisor.name())
        }
        // Not held (the release answers "not on hold"), or held by no member of staff.
        None => holder.is_none(),
    };
    let officers_hold = !counter_hold;
    if officers_hold && staff.role != Role::Officer {
        return Err(Error::Forbidden(
            "this hold was placed by an officer: an officer releases it".into(),
        ));
    }
    Ok(())
}

/// The outlet of the application a certificate belongs to: the application's current
/// certificate, or one that certificate renewed (followed forward by `renewed_by`).
async fn application_outlet(auth: &Authority, serial: &str) -> Result<Option<String>> {
    let mut current = serial.to_string();
    // A renewal chain is short (one link per renewal); the bound only stops a cycle.
    for _ in 0..100 {
        let outlet = sqlx::query_scalar::<_, String>(
            "SELECT outlet FROM applications WHERE certificate = $1",
        )
        .bind(&current)
        .fetch_optional(auth.store().pool())
        .await?;
        if outlet.is_some() {
            return Ok(outlet);
        }
        match auth
            .store()
            .certificate(&current)
            .await?
            .and_then(|c| c.renewed_by)
        {
            Some(next) => current = next,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// A status change asked for by serial (`POST /api/v1/certificates/{serial}/revocation`,
/// `ecert revoke`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    /// Revoke with this reason (certificateHold: put on hold).
    Revoke(crate::revocation::Reason),
    /// Release a hold.
    Release,
}

/// Revokes, holds or releases the subscriber certificate `serial` as `staff`
/// ([`Action::Revoke`]). Counter staff reach the current certificates of their outlet's
/// applications (what the application's page revokes; anything else is 404, as another
/// outlet's application is); an officer reaches every subscriber certificate, including one
/// issued before applications were the only way. The renewal chain is walked as in every
/// channel ([`Authority::revoke`]); audited with the member as actor. Returns each certificate
/// changed and how.
pub async fn change_certificate_status(
    auth: &Authority,
    staff: &StaffSession,
    serial: &str,
    change: StatusChange,
) -> Result<Vec<(String, crate::revocation::Outcome)>> {
    let reach = staff.authorize(Action::Revoke)?;
    let s = SerialNumber::from_hex(serial).ok_or(Error::NotFound)?;
    let hex = s.to_hex();
    let cert = auth
        .store()
        .certificate(&hex)
        .await?
        .ok_or(Error::NotFound)?;
    if crate::profile::Profile::get(&cert.profile).is_err() {
        // An OCSP responder's certificate: retired by `ecert ocsp rotate`, never revoked here.
        return Err(Error::NotFound);
    }
    if reach == super::permissions::Reach::OwnOutlet
        && application_outlet(auth, &hex).await?.as_deref() != Some(staff.outlet.as_str())
    {
        return Err(Error::NotFound);
    }
    let actor = format!("staff:{}", staff.username);
    match change {
        StatusChange::Revoke(reason) => {
            within_revocation_budget(auth, staff).await?;
            auth.revoke_as(s, reason, &actor, evidence_of(staff)).await
        }
        StatusChange::Release => {
            may_release(auth, staff, &hex).await?;
            auth.release(s, &actor).await?;
            Ok(vec![(hex, crate::revocation::Outcome::Released)])
        }
    }
}

/// Revokes a certificate this CA signed that its database does not hold — one issued after the
/// backup the CA was restored from (docs/OPERATIONS.md "Backup and restore"), surfacing later
/// in a subscriber's or relying party's hands. The member gives the certificate itself: it
/// must carry `serial` and be signed by one of this CA's certificates, and its serial must be
/// unknown here, known only as a request the lost machine went on to sign (`reserved`,
/// `issuing` or `failed` here; the certificate must then carry that request's key), or
/// recorded from the lost machine's CRL without the certificate. It is recorded revoked
/// ([`crate::store::Store::record_revoked_unknown`]) with its key, kept on the CRLs until it
/// expires, `revoked` in OCSP; keyCompromise blocks the key and revokes every other
/// certificate with it. CA-level staff who may revoke only (an outlet's member cannot: the
/// certificate belongs to no outlet's application); never a hold.
pub async fn revoke_surfaced(
    auth: &Authority,
    staff: &StaffSession,
    serial: &str,
    reason: crate::revocation::Reason,
    certificate_pem: &str,
) -> Result<Vec<(String, crate::revocation::Outcome)>> {
    use x509_parser::prelude::FromDer;
    if staff.authorize(Action::Revoke)? != super::permissions::Reach::All {
        return Err(Error::Forbidden(
            "a certificate the CA does not hold belongs to no outlet: an officer revokes it".into(),
        ));
    }
    if reason == crate::revocation::Reason::CertificateHold {
        return Err(invalid(
            "reason",
            "a certificate the CA does not hold is revoked, never held",
        ));
    }
    let s = SerialNumber::from_hex(serial).ok_or(Error::NotFound)?;
    let hex = s.to_hex();
    let der = pem::parse(certificate_pem)
        .ok()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .ok_or_else(|| invalid("certificate", "not a PEM certificate"))?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
        .map_err(|_| invalid("certificate", "not a certificate"))?;
    // A subscriber's certificate only: a CA certificate is revoked in a ceremony, on its
    // root's CRL (docs/CEREMONY.md), never here.
    if cert.is_ca() {
        return Err(invalid(
            "certificate",
            "a CA certificate: CAs are revoked in a key ceremony",
        ));
    }
    if SerialNumber::from_be_bytes(cert.raw_serial()).map(|c| c.to_hex()) != Some(hex.clone()) {
        return Err(invalid(
            "certificate",
            "the certificate does not carry this serial number",
        ));
    }
    let store = auth.store();
    // Known here only as a request the lost machine went on to sign, or as a serial recorded
    // from its CRL without the certificate: this is the certificate. Anything else known is
    // revoked by serial.
    let known = store.certificate(&hex).await?;
    let leftover = known.as_ref().is_some_and(|c| {
        use crate::store::CertState;
        matches!(
            c.state,
            CertState::Reserved | CertState::Issuing | CertState::Failed
        )
    });
    if known
        .as_ref()
        .is_some_and(|c| !leftover && c.profile != "unknown")
    {
        return Err(Error::Conflict(
            "the CA holds this serial: revoke it by serial without the certificate".into(),
        ));
    }
    let key_fp: [u8; 32] =
        <sha2::Sha256 as sha2::Digest>::digest(cert.tbs_certificate.subject_pki.raw).into();
    if leftover && known.as_ref().is_some_and(|c| c.key_fp != key_fp) {
        return Err(invalid(
            "certificate",
            "the certificate's key is not the key of the request this CA holds for its serial",
        ));
    }
    let cas = store.cas().await?;
    let issuer = cas.iter().filter(|c| !c.id.is_root()).find(|c| {
        x509_parser::certificate::X509Certificate::from_der(&c.cert_der).is_ok_and(|(_, ca)| {
            ca.subject().as_raw() == cert.issuer().as_raw()
                && cert
                    .verify_signature(Some(&ca.tbs_certificate.subject_pki))
                    .is_ok()
        })
    });
    let Some(ca) = issuer else {
        return Err(invalid("certificate", "not a certificate this CA signed"));
    };
    if known.as_ref().is_some_and(|c| c.issuer != ca.id.name()) {
        return Err(invalid(
            "certificate",
            "another of this CA's issuers holds this serial",
        ));
    }
    // A retired CA publishes nothing more: the revocation would reach no CRL or OCSP answer.
    if ca.state == crate::profile::CaStatus::Retired {
        return Err(Error::Conflict(format!(
            "the CA {} is retired: it publishes no more CRLs or OCSP answers",
            ca.id.name()
        )));
    }
    within_revocation_budget(auth, staff).await?;
    let partitions = auth.config().crl.partitions_of(ca.id.role);
    let event = crate::audit::Event {
        kind: "certificate.revoked_unknown",
        actor: format!("staff:{}", staff.username),
        subject: Some(hex.clone()),
        detail: serde_json::json!({
            "issuer": ca.id.name(),
            "reason": reason.code(),
            "certificate_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der)),
        }),
    };
    let recorded = store
        .record_revoked_unknown(
            &hex,
            &ca.id.name(),
            crate::crl::partition_of(&s, partitions),
            cert.validity().not_after.timestamp(),
            reason.code(),
            now(),
            Some(&key_fp),
            &event,
        )
        .await?;
    if !recorded {
        return Err(Error::Conflict(
            "the CA holds this serial: revoke it by serial without the certificate".into(),
        ));
    }
    tracing::info!(serial = %hex, "a certificate the CA did not hold was revoked");
    let mut changed = vec![(hex, crate::revocation::Outcome::Revoked)];
    // keyCompromise: the key is now known, so it is blocked and every other certificate with
    // it revoked (BR §4.9.12), as for any revocation by an officer; a reason recorded before
    // from the lost machine's CRL moves to keyCompromise (RFC 5280 §5.3.1).
    if reason == crate::revocation::Reason::KeyCompromise {
        match auth
            .revoke_as(
                s,
                reason,
                &format!("staff:{}", staff.username),
                evidence_of(staff),
            )
            .await
        {
            Ok(more) => changed.extend(more),
            Err(Error::AlreadyRevoked { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(changed)
}
