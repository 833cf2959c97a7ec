//! JSON API tokens: made for a staff member by `ecert staff token`, printed once, stored as a
//! SHA-256; a token acts as its member (same outlet, same role) until it expires, is revoked,
//! or the account is disabled.

use serde_json::json;

use super::session::StaffSession;
use super::staff::{staff_id, Role};
use super::support::{check_len, invalid, now, random_base32, sha256};
use crate::audit::Event;
use crate::error::{Error, Result};
use crate::row::row;
use crate::store::Store;

/// Makes an API token for a staff member (printed once; only its SHA-256 is stored). The token
/// acts as that member: same outlet, same role, until it expires or the account is disabled.
pub async fn create_api_token(
    store: &Store,
    username: &str,
    label: &str,
    days: u32,
    actor: &str,
) -> Result<String> {
    check_len("label", label, 1, 80)?;
    if !(1..=366).contains(&days) {
        return Err(invalid("days", "1 to 366"));
    }
    let staff = sqlx::query_scalar::<_, String>(
        "SELECT id FROM staff WHERE username = $1 AND disabled = 0",
    )
    .bind(username)
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::NotFound)?;
    let token = format!("ecert_{}", random_base32(32));
    let t = now();
    let mut tx = store.begin().await?;
    sqlx::query("INSERT INTO api_tokens (token_hash, staff, label, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(sha256(&[b"api-token", token.as_bytes()]))
        .bind(&staff)
        .bind(label)
        .bind(t)
        .bind(t + i64::from(days) * 86_400)
        .execute(&mut *tx)
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.api_token.created",
                actor: actor.to_string(),
                subject: Some(staff),
                detail: json!({ "username": username, "label": label, "days": days }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(token)
}

row! {
    /// A token and its account.
    struct TokenRow {
        id: String,
        username: String,
        display_name: String,
        outlet: String,
        role: String,
        expires_at: i64,
        revoked: i64,
        disabled: i64,
    }
}

/// The staff member behind an API token ([`Error::NotFound`] or [`Error::Expired`] otherwise).
pub async fn api_session(store: &Store, token: &str) -> Result<StaffSession> {
    let r = sqlx::query_as::<_, TokenRow>(
        "SELECT st.id, st.username, st.display_name, st.outlet, st.role, t.expires_at, t.revoked, st.disabled \
         FROM api_tokens t JOIN staff st ON st.id = t.staff WHERE t.token_hash = $1",
    )
    .bind(sha256(&[b"api-token", token.as_bytes()]))
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::NotFound)?;
    if r.expires_at < now() || r.revoked != 0 || r.disabled != 0 {
        return Err(Error::Expired("the API token is no longer valid".into()));
    }
    Ok(StaffSession {
        staff: r.id,
        username: r.username,
        display_name: r.display_name,
        outlet: r.outlet,
        role: Role::parse(&r.role)?,
        csrf: String::new(),
    })
}

/// Revokes every API token of a staff member; returns how many were live.
pub async fn revoke_api_tokens(store: &Store, username: &str, actor: &str) -> Result<u64> {
    let mut tx = store.begin().await?;
    let id = staff_id(&mut tx, username).await?;
    let n = sqlx::query("UPDATE api_tokens SET revoked = 1 WHERE staff = $1 AND revoked = 0")
        .bind(&id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.api_token.revoked",
                actor: actor.to_string(),
                subject: Some(id),
                detail: json!({ "username": username, "tokens": n }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}
