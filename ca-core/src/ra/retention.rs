//! Retention of personal data (docs/PRIVACY.md "Retention"), one schedule per record kind:
//!
//! - applications that ended without a certificate lose their personal fields
//!   `ra.retention_days` after their last change ([`retention_due`]);
//! - applications behind an issued certificate keep theirs — the verification record — for
//!   `ra.retention_after_expiry_days` after the certificate expires (TLS BR and S/MIME BR
//!   §5.5.2), then lose them;
//! - batch rows lose theirs `ra.retention_days` after their last change (an issued row's
//!   subject is in its certificate).
//!
//! The reference, state and audit trail stay; the audit records name no one in clear.

use serde_json::json;

use super::rules::retention_due;
use crate::audit::Event;
use crate::authority::Authority;
use crate::error::Result;
use crate::row::row;

row! {
    /// An application that may hold personal data it no longer needs.
    struct Candidate {
        id: String,
        state: String,
        updated_at: i64,
        holds_personal_data: i64,
    }
}

/// Purges the personal data that is due at `now` (the module's schedule; DESIGN.md "Custody
/// and roles"; PDPO DPP2(2): not kept longer than necessary): of applications that ended
/// without a certificate — rejected ones, and ones never completed — `ra.retention_days`
/// after their last change (an open one is closed as rejected), and of applications whose
/// certificate expired more than `ra.retention_after_expiry_days` ago. The sealed fields, the
/// blind index, the names, the mailbox and the CSR are emptied and publication ends; the
/// reference, state and audit trail stay. One `ra.purged` audit record gives the counts,
/// never whose. Returns how many applications were purged.
pub async fn purge(auth: &Authority, now: i64) -> Result<u64> {
    let store = auth.store();
    let days = auth.config().ra.retention_days;
    let mut tx = store.begin().await?;
    // The query narrows to the candidates; the rule decides.
    let candidates = sqlx::query_as::<_, Candidate>(
        "SELECT id, state, updated_at, \
         CAST(CASE WHEN length(hkid_sealed) > 0 THEN 1 ELSE 0 END AS BIGINT) AS holds_personal_data \
         FROM applications WHERE state IN ('rejected', 'submitted') AND length(hkid_sealed) > 0 \
         AND updated_at < $1",
    )
    .bind(now - i64::from(days) * 86_400)
    .fetch_all(&mut *tx)
    .await?;
    let mut n = 0;
    for c in candidates.iter().filter(|c| {
        retention_due(
            &c.state,
            c.holds_personal_data != 0,
            c.updated_at,
            now,
            days,
        )
    }) {
        // Compare-and-set on what the rule saw (the transaction holds the writer lock on
        // SQLite; on PostgreSQL a change in between leaves the row for the next run).
        n += sqlx::query(
            "UPDATE applications SET state = 'rejected', \
             rejected_reason = COALESCE(rejected_reason, $3), \
             hkid_sealed = $2, hkid_index = $2, dob_sealed = $2, phone_sealed = $2, address_sealed = $2, csr = $2, \
             surname = '', given_name = '', name_zh = '', email = '', user_surname = NULL, user_given_name = NULL, \
             user_title = NULL, email_code_hash = NULL, publish = 0, updated_at = $1 \
             WHERE id = $4 AND state = $5 AND updated_at = $6",
        )
        .bind(now)
        .bind(Vec::<u8>::new())
        .bind(format!("not completed within {days} days"))
        .bind(&c.id)
        .bind(&c.state)
        .bind(c.updated_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    // Behind an issued certificate: kept `retention_after_expiry_days` after it expires (the
    // application's certificate is its newest: a renewal moves it on), then purged the same way.
    let after = auth.config().ra.retention_after_expiry_days;
    let expired_long_ago = sqlx::query(
        "UPDATE applications SET \
         hkid_sealed = $2, hkid_index = $2, dob_sealed = $2, phone_sealed = $2, address_sealed = $2, csr = $2, \
         surname = '', given_name = '', name_zh = '', email = '', user_surname = NULL, user_given_name = NULL, \
         user_title = NULL, email_code_hash = NULL, publish = 0, updated_at = $1 \
         WHERE certificate IS NOT NULL AND length(hkid_sealed) > 0 \
         AND certificate IN (SELECT serial FROM certificates WHERE not_after < $3)",
    )
    .bind(now)
    .bind(Vec::<u8>::new())
    .bind(now - i64::from(after) * 86_400)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // The issuance records hold the subject too (the approved request, the linting TBS): an
    // attempt that never produced a certificate loses them after `retention_days`; a
    // certificate's (issued, or abandoned after a crash: a signature may exist) after the
    // period after it expires. The certificate itself stays, the record of issuance.
    let requests = sqlx::query(
        "UPDATE certificates SET request = '{}', linting_tbs = NULL \
         WHERE request <> '{}' AND ((state = 'failed' AND updated_at < $1) \
         OR (state IN ('issued', 'abandoned') AND not_after < $2))",
    )
    .bind(now - i64::from(days) * 86_400)
    .bind(now - i64::from(after) * 86_400)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Batch rows (docs/BULK.md) keep names, mailboxes and CSRs no longer than applications
    // do: a row never approved is refused, and every row's personal fields and CSR go (an
    // issued row's are in its certificate).
    let cutoff = now - i64::from(days) * 86_400;
    let expired = sqlx::query(
        "UPDATE batch_rows SET state = 'invalid', error = $2, updated_at = $3, \
         surname = NULL, given_name = NULL, email = NULL, title = NULL, csr = NULL \
         WHERE state = 'pending' AND updated_at < $1",
    )
    .bind(cutoff)
    .bind(format!("not approved within {days} days"))
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let rows = sqlx::query(
        "UPDATE batch_rows SET surname = NULL, given_name = NULL, email = NULL, title = NULL, csr = NULL \
         WHERE state IN ('invalid', 'duplicate', 'failed', 'issued') AND updated_at < $1 \
         AND (csr IS NOT NULL OR email IS NOT NULL)",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "UPDATE batches SET state = 'done' WHERE state = 'submitted' AND NOT EXISTS \
         (SELECT 1 FROM batch_rows r WHERE r.batch_id = batches.id AND r.state = 'pending')",
    )
    .execute(&mut *tx)
    .await?;
    if n > 0 || rows > 0 || expired > 0 || expired_long_ago > 0 || requests > 0 {
        store
            .audit(
                &mut tx,
                &Event {
                    kind: "ra.purged",
                    actor: "system:retention".into(),
                    subject: None,
                    detail: json!({
                        "applications": n,
                        "applications_after_expiry": expired_long_ago,
                        "issuance_requests": requests,
                        "batch_rows": rows,
                        "batch_rows_never_approved": expired,
                        "retention_days": days,
                        "retention_after_expiry_days": after,
                    }),
                },
            )
            .await?;
    }
    tx.commit().await?;
    Ok(n + expired_long_ago)
}
