//! Control of the mailbox (S/MIME BR §3.2.2): the e-mail code sent at application (or after a
//! clerk changed the address), its confirmation with a bounded number of attempts, and a new
//! code on request.

use serde_json::json;

use super::record::owned;
use super::support::{citizen, ct_eq, now, sha256};
use crate::audit::Event;
use crate::authority::Authority;
use crate::error::{Error, Result};
use crate::row::row;
use crate::store::Store;

/// Attempts at an e-mail code before it is void.
pub const CODE_ATTEMPTS: u32 = 5;

/// A new e-mail code: six random digits.
pub(super) fn new_code() -> String {
    format!(
        "{:06}",
        rand::Rng::gen_range(&mut rand::rngs::OsRng, 0..1_000_000u32)
    )
}

/// What is stored of application `id`'s code: its domain-separated SHA-256.
pub(super) fn code_hash(id: &str, code: &str) -> Vec<u8> {
    sha256(&[b"email-code", id.as_bytes(), code.as_bytes()])
}

/// When a code made now expires.
pub(super) fn code_expiry(auth: &Authority, t: i64) -> i64 {
    t + i64::from(auth.config().ra.email_code_minutes) * 60
}

row! {
    struct CodeRow {
        email_code_hash: Option<Vec<u8>>,
        email_code_expires: i64,
        email_code_attempts: i64,
    }
}

/// Confirms the e-mail address with the code that was sent to it (S/MIME BR §3.2.2: control
/// of the mailbox). At most [`CODE_ATTEMPTS`] tries; the code expires.
pub async fn confirm_email(store: &Store, reference: &str, secret: &str, code: &str) -> Result<()> {
    let id = owned(store, reference, secret).await?;
    // Count the attempt first, atomically: parallel guesses cannot exceed the limit.
    let counted = sqlx::query(
        "UPDATE applications SET email_code_attempts = email_code_attempts + 1 \
         WHERE id = $1 AND email_code_hash IS NOT NULL AND email_code_attempts < $2",
    )
    .bind(&id)
    .bind(i64::from(CODE_ATTEMPTS))
    .execute(store.pool())
    .await?;
    let mut tx = store.begin().await?;
    let r = sqlx::query_as::<_, CodeRow>(
        "SELECT email_code_hash, email_code_expires, email_code_attempts FROM applications WHERE id = $1",
    )
    .bind(&id)
    .fetch_one(&mut *tx)
    .await?;
    let Some(hash) = r.email_code_hash else {
        return Err(Error::Expired("ask for a new code".into()));
    };
    if counted.rows_affected() != 1 {
        return Err(Error::TooManyAttempts("ask for a new code".into()));
    }
    if now() > r.email_code_expires {
        return Err(Error::Expired(
            "the code has expired: ask for a new one".into(),
        ));
    }
    if !ct_eq(&hash, &code_hash(&id, code.trim())) {
        return Err(Error::CodeRejected {
            attempts_left: (i64::from(CODE_ATTEMPTS) - r.email_code_attempts).max(0) as u32,
        });
    }
    let t = now();
    sqlx::query(
        "UPDATE applications SET email_confirmed_at = $2, email_code_hash = NULL, updated_at = $2 WHERE id = $1",
    )
    .bind(&id)
    .bind(t)
    .execute(&mut *tx)
    .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.email.confirmed",
                actor: citizen(reference),
                subject: Some(id),
                detail: json!({}),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A new e-mail code for an application (the first was lost, expired or used up, or the
/// mailbox must be confirmed again before a renewal): returns (code, mailbox). At most one per
/// minute per application.
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
    // The previous code was made at expires - validity: one new code per minute.
    let res = sqlx::query(
        "UPDATE applications SET email_code_hash = $2, email_code_expires = $3, email_code_attempts = 0, updated_at = $4 \
         WHERE id = $1 AND state IN ('submitted', 'issued') AND email_code_expires <= $5",
    )
    .bind(&id)
    .bind(code_hash(&id, &code))
    .bind(expires)
    .bind(t)
    .bind(expires - 60)
    .execute(store.pool())
    .await?;
    if res.rows_affected() != 1 {
        return Err(Error::TooManyAttempts(
            "a code was sent less than a minute ago".into(),
        ));
    }
    let email = sqlx::query_scalar::<_, String>("SELECT email FROM applications WHERE id = $1")
        .bind(&id)
        .fetch_one(store.pool())
        .await?;
    Ok((code, email))
}
