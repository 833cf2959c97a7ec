//! Online renewal and re-key (BR §3.3.1 routine re-key): a citizen replaces their certificate
//! in the window before it expires, proving possession of the current certificate's key; the
//! new certificate keeps the subject and is linked to the one it replaces.

use serde_json::json;

use super::application::minor_validity;
use super::record::{key_certified_to_another, key_of_another, owned};
use super::rules::{renewal_allowed, RenewalFacts};
use super::support::{invalid, now};
use crate::audit::Event;
use crate::authority::{ApprovedRequest, Authority};
use crate::csr::VerifiedCsr;
use crate::error::{Error, Result};
use crate::profile::{Profile, SubjectData};
use crate::row::row;
use crate::serial::SerialNumber;

row! {
    /// The current certificate of an application, as renewal reads it.
    struct Current {
        certificate: String,
        profile: String,
        email_confirmed_at: Option<i64>,
        dob_sealed: Vec<u8>,
        key_fp: Vec<u8>,
        revocation_reason: Option<i64>,
        not_after: Option<i64>,
        renewed_by: Option<String>,
        hkid_index: Vec<u8>,
        org_id: Option<String>,
        org_register: Option<String>,
        organization: Option<String>,
    }
}

/// What the current certificate's key signs to vouch for a new key at an online re-key: the
/// reference, the serial being replaced and the SHA-256 of the new key's SubjectPublicKeyInfo
/// (hex), one per line.
pub fn rekey_message(reference: &str, old_serial: &str, new_spki_sha256_hex: &str) -> String {
    format!(
        "ecert-rekey-v1\n{}\n{}\n{}",
        reference.trim().to_uppercase(),
        old_serial.to_ascii_lowercase(),
        new_spki_sha256_hex.to_ascii_lowercase()
    )
}

/// Online renewal (a CSR for the current certificate's key, signed by it) or re-key (a CSR for
/// a new key, plus `rekey_proof`: the current key's signature over [`rekey_message`]), in the
/// window before expiry, once per certificate ([`renewal_allowed`]: issued, not revoked or held,
/// not expired, within `ra.renewal_window_days` of expiry, not renewed already, mailbox
/// confirmed within 30 days). The renewal is an issuance linked to the certificate it replaces
/// (both ways), with the same subject data; a minor's ends before the 18th birthday.
pub async fn renew_online(
    auth: &Authority,
    reference: &str,
    secret: &str,
    csr: &[u8],
    rekey_proof: Option<&[u8]>,
) -> Result<String> {
    let store = auth.store();
    let id = owned(store, reference, secret).await?;
    let reference = reference.trim().to_uppercase();
    let r = sqlx::query_as::<_, Current>(
        "SELECT a.certificate AS certificate, a.profile AS profile, a.email_confirmed_at AS email_confirmed_at, \
         a.dob_sealed AS dob_sealed, c.key_fp AS key_fp, c.revocation_reason AS revocation_reason, \
         c.not_after AS not_after, c.renewed_by AS renewed_by, a.hkid_index AS hkid_index, a.org_id AS org_id, \
         a.org_register AS org_register, a.organization AS organization \
         FROM applications a JOIN certificates c ON c.serial = a.certificate WHERE a.id = $1",
    )
    .bind(&id)
    .fetch_optional(store.pool())
    .await?
    .ok_or_else(|| Error::Conflict("no certificate has been issued yet".into()))?;
    let old = r.certificate;
    let profile = r.profile;
    let profile_def = Profile::get(&profile)?;
    renewal_allowed(
        &RenewalFacts {
            kind: profile_def.kind,
            revoked_or_held: r.revocation_reason.is_some(),
            not_after: r.not_after.unwrap_or(0),
            renewed: r.renewed_by.is_some(),
            email_confirmed_at: r.email_confirmed_at,
        },
        now(),
        auth.config().ra.renewal_window_days,
    )?;
    let key_fp = r.key_fp;
    let csr = VerifiedCsr::parse(csr)?;
    auth.check_key(csr.key())?;
    let rekey = csr.key().fingerprint().as_slice() != key_fp.as_slice();
    if rekey
        && key_certified_to_another(
            store,
            &csr.key().fingerprint(),
            &r.hkid_index,
            &super::record::org_key(
                r.org_register.as_deref(),
                r.org_id.as_deref(),
                r.organization.as_deref(),
            ),
        )
        .await?
    {
        return Err(key_of_another());
    }
    if rekey {
        let Some(proof) = rekey_proof.filter(|p| !p.is_empty()) else {
            return Err(invalid(
                "csr",
                "sign the renewal request with the key of the current certificate, or prove the new key with a signature by the current one",
            ));
        };
        let der = store
            .certificate(&old)
            .await?
            .and_then(|c| c.cert_der)
            .ok_or(Error::NotFound)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| Error::Encoding(e.to_string()))?;
        let current = crate::keys::SubscriberKey::from_spki_der(cert.public_key().raw)?;
        let message = rekey_message(&reference, &old, &hex::encode(csr.key().fingerprint()));
        if !current.verifies(message.as_bytes(), proof) {
            return Err(invalid(
                "rekey_proof",
                "the signature by the current certificate's key does not verify",
            ));
        }
    }
    let old_serial = SerialNumber::from_hex(&old).ok_or(Error::NotFound)?;
    // A minor's renewal also ends before the 18th birthday.
    let days = if profile_def.minor {
        Some(minor_validity(auth, &id, profile_def, &r.dob_sealed)?)
    } else {
        None
    };
    let issued = auth
        .issue(ApprovedRequest {
            profile,
            csr,
            subject: SubjectData::default(),
            days,
            renews: Some(old_serial),
            actor: format!("citizen:{reference}"),
        })
        .await?;
    let serial = issued.serial.to_hex();
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE applications SET certificate = $2, updated_at = $3 WHERE id = $1")
        .bind(&id)
        .bind(&serial)
        .bind(now())
        .execute(&mut *tx)
        .await?;
    // The directory entry now holds the renewal (if the holder publishes).
    crate::ldap::queue_application(&mut tx, &id, false, now()).await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: if rekey { "ra.rekeyed" } else { "ra.renewed" },
                actor: format!("citizen:{reference}"),
                subject: Some(id),
                detail: json!({ "old": old, "new": serial, "new_key": rekey }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(serial)
}
