//! The fee paid at the counter: the amount due per profile (`[ra.fees]`, HK cents) and its
//! record (method and receipt) on the application.

use serde_json::json;

use super::permissions::Action;
use super::record::staff_owned;
use super::session::StaffSession;
use super::support::{check_len, invalid, now};
use crate::audit::Event;
use crate::authority::Authority;
use crate::config::RaConfig;
use crate::error::Result;

/// How a fee may be paid at the counter.
pub const METHODS: &[&str] = &["cash", "octopus", "card", "cheque"];

/// The fee due for `profile`, in HK cents (0 if none is configured).
pub fn fee_due(ra: &RaConfig, profile: &str) -> u32 {
    ra.fees.get(profile).copied().unwrap_or(0)
}

/// Records the fee paid at the counter (the amount must be the profile's fee).
pub async fn record_fee(
    auth: &Authority,
    staff: &StaffSession,
    id: &str,
    amount_cents: i64,
    method: &str,
    receipt: &str,
) -> Result<()> {
    let store = auth.store();
    let r = staff_owned(store, staff, id, Action::RecordChecks).await?;
    r.open_at(None)?;
    let due = fee_due(&auth.config().ra, &r.profile);
    if amount_cents != i64::from(due) {
        return Err(invalid(
            "amount",
            format!(
                "the fee for {} is HK${}.{:02}",
                r.profile,
                due / 100,
                due % 100
            ),
        ));
    }
    if !METHODS.contains(&method) {
        return Err(invalid("method", "cash, octopus, card or cheque"));
    }
    check_len("receipt", receipt, 1, 40)?;
    let mut tx = store.begin().await?;
    sqlx::query(
        "UPDATE applications SET fee_amount = $2, fee_method = $3, fee_receipt = $4, fee_by = $5, fee_at = $6, updated_at = $6 WHERE id = $1",
    )
    .bind(id)
    .bind(amount_cents)
    .bind(method)
    .bind(receipt.trim())
    .bind(&staff.staff)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.fee.recorded",
                actor: format!("staff:{}", staff.username),
                subject: Some(id.to_string()),
                detail: json!({ "amount_cents": amount_cents, "method": method, "receipt": receipt.trim() }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}
