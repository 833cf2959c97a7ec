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
    let email = address(email)?;
    let rows = sqlx::query_as::<_, Published>(
        "SELECT c.serial, c.cert_der, c.not_after FROM applications a JOIN certificates c ON c.serial = a.certificate \
         WHERE a.publish = 1 AND a.profile IN ('personal', 'encipherment') AND a.state = 'issued' AND a.email = $1 AND c.state = 'issued' \
         AND c.revocation_reason IS NULL AND c.not_after > $2 AND c.cert_der IS NOT NULL \
         ORDER BY c.not_after DESC LIMIT $3",
    )
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
