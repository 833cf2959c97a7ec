//! Retention of personal data: applications that ended without a certificate are purged of
//! their personal fields `ra.retention_days` after their last change ([`retention_due`]); the
//! reference, state and audit trail stay.

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

/// Purges the personal data of applications that ended without a certificate — rejected
/// ones, and ones never completed — `ra.retention_days` after their last change (DESIGN.md
/// "Custody and roles"; PDPO DPP2(2): not kept longer than necessary). The sealed fields,
/// the blind index and the CSR are emptied and an open application is closed as rejected; the
/// reference, state and audit trail stay. Returns how many were purged.
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
             email_code_hash = NULL, updated_at = $1 \
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
    if n > 0 || rows > 0 || expired > 0 {
        store
            .audit(
                &mut tx,
                &Event {
                    kind: "ra.purged",
                    actor: "system:retention".into(),
                    subject: None,
                    detail: json!({ "applications": n, "batch_rows": rows, "batch_rows_never_approved": expired, "retention_days": days }),
                },
            )
            .await?;
    }
    tx.commit().await?;
    Ok(n)
}
