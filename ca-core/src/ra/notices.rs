//! Value-added notices about e-Cert services (issue 18, docs/PRIVACY.md "Consent"): the
//! e-Cert scheme promised they go only to subscribers who consented. No mailer sends them yet;
//! this is the one selection any sender must use, so nobody who did not consent — or who
//! withdrew consent on the tracking page ([`super::set_choice`] with
//! [`super::Choice::Notices`]) — is ever selected.

use crate::error::Result;
use crate::row::row;
use crate::store::Store;

row! {
    /// A subscriber who may be sent a value-added notice.
    #[derive(Debug, Clone)]
    pub struct Recipient {
        /// The application's reference (for the notice's own record, never a log).
        pub reference: String,
        /// The subscriber's mailbox (validated at application).
        pub email: String,
        /// The language the subscriber chose.
        pub language: String,
    }
}

/// The subscribers a value-added notice may go to at `now`: applications whose subscriber
/// consents now (the latest choice, whatever the wording version they agreed to) and holds a
/// certificate issued to them that is unrevoked, not on hold and unexpired. Applications
/// without a certificate, or whose personal data was purged, are not subscribers. Ordered by
/// reference, at most `limit`, after `after` (a cursor: the last reference of the page before).
pub async fn recipients(
    store: &Store,
    now: i64,
    after: &str,
    limit: i64,
) -> Result<Vec<Recipient>> {
    Ok(sqlx::query_as::<_, Recipient>(
        "SELECT a.reference, a.email, a.language FROM applications a \
         JOIN certificates c ON c.serial = a.certificate \
         WHERE a.consent_notices = 1 AND a.state = 'issued' \
         AND c.state = 'issued' AND c.revocation_reason IS NULL AND c.not_after > $1 \
         AND a.reference > $2 ORDER BY a.reference LIMIT $3",
    )
    .bind(now)
    .bind(after)
    .bind(limit)
    .fetch_all(store.pool())
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::test_ca_with;
    use crate::ra::{set_choice, Choice};

    /// Issue 18: a value-added notice goes only to subscribers who consent now — never to one
    /// who did not consent, withdrew consent on the tracking page, or is not a subscriber (no
    /// certificate, revoked, on hold, expired) — and a consent given again counts. Every change
    /// is recorded with its time and wording version, and audited.
    #[tokio::test]
    async fn notices_select_only_subscribers_who_consent_now() {
        let (_dir, auth) = test_ca_with(|_| {}).await;
        let store = auth.store();
        crate::ra::ensure_outlet(store, "o", "O", "O", "test")
            .await
            .unwrap();
        let now = crate::ra::support::now();
        // (reference, consented at application, application state, certificate: (revocation reason, expired))
        // A certificate: (revocation reason, expired).
        type Cert = Option<(Option<i64>, bool)>;
        let cases: [(&str, i64, &str, Cert); 7] = [
            ("EC-00000001", 1, "issued", Some((None, false))), // consents
            ("EC-00000002", 0, "issued", Some((None, false))), // never consented
            ("EC-00000003", 1, "issued", Some((None, false))), // withdraws below
            ("EC-00000004", 0, "issued", Some((None, false))), // consents below
            ("EC-00000005", 1, "issued", Some((Some(1), false))), // revoked
            ("EC-00000006", 1, "issued", Some((Some(6), false))), // on hold
            ("EC-00000007", 1, "issued", Some((None, true))),  // expired
        ];
        for (i, (reference, consent, state, cert)) in cases.iter().enumerate() {
            let serial = format!("{i:032x}");
            if let Some((reason, expired)) = cert {
                sqlx::query(
                    "INSERT INTO certificates (serial, issuer, state, profile, profile_version, key_fp, request, reserved_at, \
                     updated_at, not_after, revocation_reason, revoked_at) \
                     VALUES ($1, 'individual', 'issued', 'personal', 2, $2, '{}', $3, $3, $4, $5, $6)",
                )
                .bind(&serial)
                .bind(serial.as_bytes().to_vec())
                .bind(now - 100)
                .bind(if *expired { now - 1 } else { now + 86_400 })
                .bind(*reason)
                .bind(reason.map(|_| now - 10))
                .execute(store.pool())
                .await
                .unwrap();
            }
            sqlx::query(
                "INSERT INTO applications (id, reference, secret_hash, revocation_hash, profile, state, version, outlet, language, \
                 surname, given_name, name_zh, email, hkid_sealed, hkid_index, dob_sealed, phone_sealed, address_sealed, \
                 consent_notices, consent_wording, consent_at, csr, created_at, updated_at, certificate) \
                 VALUES ($1, $2, $3, 'x', 'personal', $4, 1, 'o', 'en', 'CHAN', 'Tai Man', '', $5, $6, $6, $6, $6, $6, $7, 'notices-v1', $8, $6, $8, $8, $9)",
            )
            .bind(format!("app-{i}"))
            .bind(reference)
            .bind(crate::ra::support::sha256(&[b"tracking", b"secret words"]))
            .bind(state)
            .bind(format!("user{i}@example.hk"))
            .bind(vec![0u8])
            .bind(consent)
            .bind(now - 1_000)
            .bind(cert.map(|_| serial))
            .execute(store.pool())
            .await
            .unwrap();
        }
        // An application without a certificate is no subscriber, whatever it consented to.
        sqlx::query(
            "INSERT INTO applications (id, reference, secret_hash, revocation_hash, profile, state, version, outlet, language, \
             surname, given_name, name_zh, email, hkid_sealed, hkid_index, dob_sealed, phone_sealed, address_sealed, \
             consent_notices, consent_wording, consent_at, csr, created_at, updated_at) \
             VALUES ('app-8', 'EC-00000008', $1, 'x', 'personal', 'submitted', 1, 'o', 'en', 'CHAN', 'Tai Man', '', 'u8@example.hk', \
             $2, $2, $2, $2, $2, 1, 'notices-v1', $3, $2, $3, $3)",
        )
        .bind(crate::ra::support::sha256(&[b"tracking", b"secret words"]))
        .bind(vec![0u8])
        .bind(now - 1_000)
        .execute(store.pool())
        .await
        .unwrap();
        let selected = || async {
            recipients(store, now, "", 100)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.reference)
                .collect::<Vec<_>>()
        };
        assert_eq!(selected().await, ["EC-00000001", "EC-00000003"]);
        // The wrong secret changes nothing.
        assert!(matches!(
            set_choice(store, "EC-00000003", "guess", Choice::Notices, false).await,
            Err(crate::error::Error::NotFound)
        ));
        set_choice(store, "EC-00000003", "secret words", Choice::Notices, false)
            .await
            .unwrap();
        set_choice(store, "EC-00000004", "secret words", Choice::Notices, true)
            .await
            .unwrap();
        assert_eq!(selected().await, ["EC-00000001", "EC-00000004"]);
        // Paged by reference.
        let first = recipients(store, now, "", 1).await.unwrap();
        assert_eq!(first.len(), 1);
        let rest = recipients(store, now, &first[0].reference, 100)
            .await
            .unwrap();
        assert_eq!(
            rest.iter()
                .map(|r| r.reference.as_str())
                .collect::<Vec<_>>(),
            ["EC-00000004"]
        );
        // Recorded with the time and wording version, and audited.
        let (consent, wording, at): (i64, String, i64) = sqlx::query_as(
            "SELECT consent_notices, consent_wording, consent_at FROM applications WHERE reference = 'EC-00000003'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!((consent, wording.as_str()), (0, crate::ra::CONSENT_WORDING));
        assert!(at >= now, "the withdrawal's time was not recorded");
        let audited: Vec<String> = sqlx::query_scalar(
            "SELECT detail FROM audit_log WHERE kind = 'ra.notices.changed' ORDER BY seq",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(audited.len(), 2);
        assert!(
            audited[0].contains("\"consent\":false") && audited[0].contains("notices-v1"),
            "{}",
            audited[0]
        );
        assert!(audited[1].contains("\"consent\":true"), "{}", audited[1]);
    }
}
