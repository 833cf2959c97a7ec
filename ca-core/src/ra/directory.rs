//! The public directory over HTTP (issue 16, docs/DIRECTORY.md): a sender looks up a
//! recipient's encryption certificate by exact mail address. Only personal certificates their
//! holder chose to publish, and encipherment certificates their organisation chose to publish
//! (at application, or later on the tracking page), issued, unrevoked and unexpired; exact address only (no prefix, wildcard or listing); nothing beyond the
//! certificates themselves.

use crate::error::{Error, Result};
use crate::row::row;
use crate::store::Store;

/// Whether certificates of `profile` may be published: a personal certificate by its holder's
/// choice, an encipherment certificate (an organisation's mailbox) by its organisation's — the
/// Authorised Representative who applies for it. Never an organisational certificate (its
/// Authorised User did not choose) or a server certificate (its address is a contact).
pub fn publishable(profile: &str) -> bool {
    matches!(profile, "personal" | "encipherment")
}

/// What a refusal to publish says.
pub const NOT_PUBLISHABLE: &str = "only a personal certificate (by its holder's choice) or an encipherment certificate (by its organisation's) is published";

/// The most certificates one lookup returns.
pub const MAX_RESULTS: i64 = 10;

row! {
    struct Published {
        serial: String,
        cert_der: Vec<u8>,
        not_after: i64,
    }
}

/// A published certificate: serial, DER, notAfter.
pub type Entry = (String, Vec<u8>, i64);

/// A mail address as looked up: trimmed; the domain in lower case (RFC 5321 §2.4: the local
/// part may be case-sensitive, so it is kept). Refused unless it is one plain address: no
/// wildcard, no list, no control character.
pub fn address(s: &str) -> Result<String> {
    let s = s.trim();
    let bad = || Error::Invalid {
        field: "email",
        reason: "one mail address, exactly as in the certificate".into(),
    };
    if s.len() > 254
        || s.chars()
            // Compared for equality: a `*` or `%` is just a character; a list or a name with
            // its address is refused.
            .any(|c| c.is_control() || c.is_whitespace() || ",;<>()\\\"".contains(c))
    {
        return Err(bad());
    }
    let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty() || domain.is_empty() || local.contains('@') || !domain.contains('.') {
        return Err(bad());
    }
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// The published certificates for `email` valid at `now`, newest first.
pub async fn lookup(store: &Store, email: &str, now: i64) -> Result<Vec<Entry>> {
    published(
        store,
        "SELECT c.serial, c.cert_der, c.not_after FROM applications a JOIN certificates c ON c.serial = a.certificate \
         WHERE a.publish = 1 AND a.profile IN ('personal', 'encipherment') AND a.state = 'issued' AND a.email = $1 AND c.state = 'issued' \
         AND c.revocation_reason IS NULL AND c.not_after > $2 AND c.cert_der IS NOT NULL \
         ORDER BY c.not_after DESC LIMIT $3",
        email,
        now,
    )
    .await
}

/// [`lookup`] for every spelling of `email` that differs only in case: what one LDAP entry
/// holds, since the directory's `mail` matches without regard to case (RFC 4519 §2.16), so
/// `Tai.Man@x.hk` and `tai.man@x.hk` are one entry there.
pub async fn lookup_any_case(store: &Store, email: &str, now: i64) -> Result<Vec<Entry>> {
    published(
        store,
        "SELECT c.serial, c.cert_der, c.not_after FROM applications a JOIN certificates c ON c.serial = a.certificate \
         WHERE a.publish = 1 AND a.profile IN ('personal', 'encipherment') AND a.state = 'issued' AND LOWER(a.email) = LOWER($1) \
         AND c.state = 'issued' AND c.revocation_reason IS NULL AND c.not_after > $2 AND c.cert_der IS NOT NULL \
         ORDER BY c.not_after DESC LIMIT $3",
        email,
        now,
    )
    .await
}

/// Runs one of the two lookups (`sql` takes the address, `now` and the limit).
async fn published(store: &Store, sql: &'static str, email: &str, now: i64) -> Result<Vec<Entry>> {
    let email = address(email)?;
    let rows = sqlx::query_as::<_, Published>(sql)
        .bind(&email)
        .bind(now)
        .bind(MAX_RESULTS)
        .fetch_all(store.pool())
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.serial, r.cert_der, r.not_after))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review finding: two spellings of an address that differ only in case are one LDAP entry,
    /// so the entry is written from the certificates of both; the HTTP lookup stays exact.
    #[tokio::test]
    async fn one_ldap_entry_holds_every_spelling_of_an_address() {
        let (_dir, store) = crate::store::test_store().await;
        crate::ra::ensure_outlet(&store, "o", "O", "O", "test")
            .await
            .unwrap();
        let now = 1_900_000_000;
        for (i, email) in [
            "Tai.Man@example.hk",
            "tai.man@example.hk",
            "other@example.hk",
        ]
        .into_iter()
        .enumerate()
        {
            let serial = format!("{i:032x}");
            sqlx::query(
                "INSERT INTO certificates (serial, issuer, state, profile, profile_version, key_fp, request, reserved_at, updated_at, not_after, cert_der) \
                 VALUES ($1, 'individual', 'issued', 'personal', 2, $2, '{}', $3, $3, $4, $2)",
            )
            .bind(&serial)
            .bind(serial.as_bytes().to_vec())
            .bind(now)
            .bind(now + 86_400 + i as i64)
            .execute(store.pool())
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO applications (id, reference, secret_hash, revocation_hash, profile, state, version, outlet, language, \
                 surname, given_name, name_zh, email, hkid_sealed, hkid_index, dob_sealed, phone_sealed, address_sealed, \
                 consent_notices, consent_wording, consent_at, csr, created_at, updated_at, certificate, publish) \
                 VALUES ($1, $2, $3, 'x', 'personal', 'issued', 1, 'o', 'en', 'CHAN', 'Tai Man', '', $4, $3, $3, $3, $3, $3, 0, '', $5, $3, $5, $5, $6, 1)",
            )
            .bind(format!("app-{i}"))
            .bind(format!("EC-{i:08}"))
            .bind(vec![0u8])
            .bind(email)
            .bind(now)
            .bind(&serial)
            .execute(store.pool())
            .await
            .unwrap();
        }
        let serials = |v: Vec<Entry>| v.into_iter().map(|e| e.0).collect::<Vec<_>>();
        let both = vec![format!("{:032x}", 1), format!("{:032x}", 0)];
        assert_eq!(
            serials(
                lookup_any_case(&store, "TAI.MAN@example.hk", now)
                    .await
                    .unwrap()
            ),
            both
        );
        assert_eq!(
            serials(lookup(&store, "tai.man@example.hk", now).await.unwrap()),
            vec![format!("{:032x}", 1)]
        );
    }
}
