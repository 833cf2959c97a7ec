//! Control of the mailbox (S/MIME BR §3.2.2.2): a Random Value of 128 bits sent to the mailbox
//! at application (or after a clerk changed the address, or before a renewal), entered on the
//! tracking page or confirmed from the link in the e-mail (a page whose one button POSTs: a
//! GET never confirms, so mail scanners that follow links confirm nothing). Wrong values and
//! new values are capped over the application's whole life; each refusal is audited.

use serde_json::json;

use super::record::owned;
use super::support::{citizen, ct_eq, now, random_base32, sha256};
use crate::audit::Event;
use crate::authority::Authority;
use crate::error::{Error, Result};
use crate::row::row;
use crate::store::Store;

/// Wrong values an application may receive over its whole life; then it can no longer be
/// confirmed online (the applicant applies again, or a clerk corrects the address).
pub const CODE_ATTEMPTS: u32 = 10;
/// Values that may be sent for one application over its whole life (the first included).
pub const CODES_SENT: i64 = 10;
/// Applications that may wait at once for the same mailbox to be confirmed.
pub const WAITING_PER_MAILBOX: i64 = 3;

/// A new Random Value: 128 bits from the OS (S/MIME BR §1.6.1 asks for at least 112), as 26
/// base32 characters.
pub(super) fn new_code() -> String {
    random_base32(16)
}

/// A value as typed or carried by the link: case, spaces and hyphens do not matter.
fn normalised(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect::<String>()
        .to_ascii_uppercase()
}

/// What is stored of application `id`'s value: its domain-separated SHA-256.
pub(super) fn code_hash(id: &str, code: &str) -> Vec<u8> {
    sha256(&[b"email-code", id.as_bytes(), code.as_bytes()])
}

/// When a value made now expires.
pub(super) fn code_expiry(auth: &Authority, t: i64) -> i64 {
    t + i64::from(auth.config().ra.email_code_minutes) * 60
}

/// How many applications wait for `email` to be confirmed (not counting `except`).
pub(super) async fn waiting_on<'e, E>(executor: E, email: &str, except: &str) -> Result<i64>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM applications WHERE lower(email) = lower($1) AND state = 'submitted' \
         AND email_confirmed_at IS NULL AND email_code_hash IS NOT NULL AND id <> $2",
    )
    .bind(email.trim())
    .bind(except)
    .fetch_one(executor)
    .await?)
}

row! {
    struct CodeRow {
        reference: String,
        email_code_hash: Option<Vec<u8>>,
        email_code_expires: i64,
        email_code_failures: i64,
    }
}

/// Confirms the mailbox with the value sent to it, from the tracking page (reference and
/// tracking secret). See [`confirm`].
pub async fn confirm_email(store: &Store, reference: &str, secret: &str, code: &str) -> Result<()> {
    let id = owned(store, reference, secret).await?;
    confirm(store, &id, code).await
}

/// Confirms the mailbox from the link in the e-mail: the reference and the value, no tracking
/// secret (the 128-bit value is the proof; the link's page POSTs it). An unknown reference is
/// [`Error::NotFound`], like a wrong value after the first.
pub async fn confirm_email_link(store: &Store, reference: &str, code: &str) -> Result<()> {
    let id = sqlx::query_scalar::<_, String>("SELECT id FROM applications WHERE reference = $1")
        .bind(reference.trim().to_uppercase())
        .fetch_optional(store.pool())
        .await?
        .ok_or(Error::NotFound)?;
    confirm(store, &id, code).await
}

/// Confirms the mailbox of application `id` with `code` (S/MIME BR §3.2.2.2: control of the
/// mailbox). Refused, with an audit record `ra.email.refused` naming why, when no value is
/// pending, the value expired, [`CODE_ATTEMPTS`] wrong values were entered over the
/// application's life, or the value is wrong (counted first, atomically, so parallel guesses
/// cannot exceed the cap).
async fn confirm(store: &Store, id: &str, code: &str) -> Result<()> {
    let given = code_hash(id, &normalised(code));
    let r = sqlx::query_as::<_, CodeRow>(
        "SELECT reference, email_code_hash, email_code_expires, email_code_failures FROM applications WHERE id = $1",
    )
    .bind(id)
    .fetch_one(store.pool())
    .await?;
    let actor = citizen(&r.reference);
    let refuse = |why: &'static str, e: Error| async move {
        let _ = store
            .audit_now(&Event {
                kind: "ra.email.refused",
                actor: actor.clone(),
                subject: Some(id.to_string()),
                detail: json!({ "why": why }),
            })
            .await;
        Err(e)
    };
    let Some(hash) = r.email_code_hash.clone() else {
        return refuse(
            "no value pending",
            Error::Expired("no confirmation is pending: ask for a new e-mail".into()),
        )
        .await;
    };
    if r.email_code_failures >= i64::from(CODE_ATTEMPTS) {
        return refuse(
            "too many wrong values",
            Error::TooManyAttempts(
                "too many wrong values were entered: apply again, or ask at the counter".into(),
            ),
        )
        .await;
    }
    if now() > r.email_code_expires {
        return refuse(
            "expired",
            Error::Expired("the confirmation has expired: ask for a new e-mail".into()),
        )
        .await;
    }
    if !ct_eq(&hash, &given) {
        // Counted only below the cap, atomically.
        let counted = sqlx::query(
            "UPDATE applications SET email_code_failures = email_code_failures + 1 \
             WHERE id = $1 AND email_code_failures < $2",
        )
        .bind(id)
        .bind(i64::from(CODE_ATTEMPTS))
        .execute(store.pool())
        .await?
        .rows_affected();
        let left = (i64::from(CODE_ATTEMPTS) - r.email_code_failures - 1).max(0);
        return refuse(
            "wrong value",
            if counted == 1 {
                Error::CodeRejected {
                    attempts_left: u32::try_from(left).unwrap_or(0),
                }
            } else {
                Error::TooManyAttempts(
                    "too many wrong values were entered: apply again, or ask at the counter".into(),
                )
            },
        )
        .await;
    }
    let t = now();
    let mut tx = store.begin().await?;
    // Compare-and-set on the value confirmed: used once.
    let done = sqlx::query(
        "UPDATE applications SET email_confirmed_at = $2, email_code_hash = NULL, updated_at = $2 \
         WHERE id = $1 AND email_code_hash = $3",
    )
    .bind(id)
    .bind(t)
    .bind(hash)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if done != 1 {
        return Err(Error::Expired("this confirmation was used already".into()));
    }
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.email.confirmed",
                actor: citizen(&r.reference),
                subject: Some(id.to_string()),
                detail: json!({}),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A new value for an application (the first was lost or expired, or the mailbox must be
/// confirmed again before a renewal): returns (value, mailbox). At most one a minute, and
/// [`CODES_SENT`] over the application's life; a new value does not reset the count of wrong
/// ones.
pub async fn new_email_code(
    auth: &Authority,
    reference: &str,
    secret: &str,
) -> Result<(String, String)> {
    let store = auth.store();
    let id = owned(store, reference, secret).await?;
    let t = now();
    let code = new_code();
    let expires = code_expiry(auth, t);
    // The previous value was made at expires - validity: one new value per minute.
    let res = sqlx::query(
        "UPDATE applications SET email_code_hash = $2, email_code_expires = $3, updated_at = $4, \
         email_codes_sent = email_codes_sent + 1 \
         WHERE id = $1 AND state IN ('submitted', 'issued') AND email_code_expires <= $5 AND email_codes_sent < $6",
    )
    .bind(&id)
    .bind(code_hash(&id, &code))
    .bind(expires)
    .bind(t)
    .bind(expires - 60)
    .bind(CODES_SENT)
    .execute(store.pool())
    .await?;
    if res.rows_affected() != 1 {
        let sent =
            sqlx::query_scalar::<_, i64>("SELECT email_codes_sent FROM applications WHERE id = $1")
                .bind(&id)
                .fetch_one(store.pool())
                .await?;
        return Err(Error::TooManyAttempts(if sent >= CODES_SENT {
            "no more confirmation e-mails can be sent for this application: ask at the counter"
                .into()
        } else {
            "an e-mail was sent less than a minute ago".into()
        }));
    }
    let email = sqlx::query_scalar::<_, String>("SELECT email FROM applications WHERE id = $1")
        .bind(&id)
        .fetch_one(store.pool())
        .await?;
    Ok((code, email))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_128_bits_and_are_read_as_typed() {
        let a = new_code();
        assert_eq!(a.len(), 26, "{a}");
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_ne!(a, new_code());
        let typed = format!(" {}-{} ", &a[..13].to_lowercase(), &a[13..]);
        assert_eq!(normalised(&typed), a);
    }
}
