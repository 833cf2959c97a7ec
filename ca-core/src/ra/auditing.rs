//! The auditor's view of the audit trail (issue 14, "Independent audit"): records by filter
//! and exports for offline verification ([`crate::audit::export`]), for the roles the matrix
//! allows [`Action::ViewAudit`] (auditor, data owner). Audit records hold no personal data, so
//! nothing here is masked; every export is itself an audit event.

use serde_json::json;

use super::permissions::Action;
use super::session::StaffSession;
use crate::audit::export::{self, Export, Filter};
use crate::audit::{Event, Record};
use crate::error::Result;
use crate::store::Store;

/// At most this many records on one page.
pub const PAGE: usize = 200;

/// [`PAGE`], for the pages that say how many they show at most.
pub fn auditing_page() -> usize {
    PAGE
}

/// The newest records the filter selects (at most [`PAGE`]), newest first.
pub async fn audit_records(
    store: &Store,
    staff: &StaffSession,
    filter: &Filter,
) -> Result<Vec<Record>> {
    staff.authorize(Action::ViewAudit)?;
    let mut filter = filter.clone();
    if let Some(reference) = &filter.reference {
        filter.application_ids = store.application_ids_by_reference(reference).await?;
    }
    // Every filter narrows the scan in SQL (so the newest PAGE matches are found however old
    // they are); the exact match is then checked here.
    let kind = filter.kind.clone().unwrap_or_default();
    let serial = filter
        .serial
        .as_deref()
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let reference = filter
        .reference
        .as_deref()
        .map(|r| r.trim().to_ascii_uppercase())
        .unwrap_or_default();
    let application = filter.application_ids.first().cloned().unwrap_or_default();
    let rows = sqlx::query_as::<_, Record>(
        "SELECT seq, at, kind, actor, subject, detail, prev_hash, hash FROM audit_log \
         WHERE at >= $1 AND at <= $2 AND ($3 = '' OR actor = $3) \
         AND ($4 = '' OR kind = $4 OR kind LIKE $5) \
         AND ($6 = '' OR LOWER(subject) = $6 OR LOWER(detail) LIKE $7) \
         AND ($8 = '' OR subject = $9 OR detail LIKE $10) \
         ORDER BY seq DESC LIMIT 2000",
    )
    .bind(filter.since.unwrap_or(i64::MIN))
    .bind(filter.until.unwrap_or(i64::MAX))
    .bind(filter.actor.clone().unwrap_or_default())
    .bind(&kind)
    .bind(format!("{kind}.%"))
    .bind(&serial)
    .bind(format!("%\"{serial}\"%"))
    .bind(&reference)
    .bind(&application)
    .bind(format!("%\"reference\":\"{reference}\"%"))
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .filter(|r| filter.selects(r))
        .take(PAGE)
        .collect())
}

/// An export of what the filter selects, for `staff`; recorded as `audit.exported`.
pub async fn audit_export(store: &Store, staff: &StaffSession, filter: Filter) -> Result<Export> {
    staff.authorize(Action::ViewAudit)?;
    let e = export::export(store, filter).await?;
    store
        .audit_now(&Event {
            kind: "audit.exported",
            actor: format!("staff:{}", staff.username),
            subject: None,
            detail: json!({ "filter": e.filter, "records": e.records.len(), "selected": e.matched(), "checkpoint": e.checkpoint.seq, "via": if staff.scopes.is_some() { "api token" } else { "signed-in session" } }),
        })
        .await?;
    Ok(e)
}
