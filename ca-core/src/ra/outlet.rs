//! Service outlets: where citizens prove who they are and where counter staff work.

use serde_json::json;

use super::permissions::Action;
use super::session::StaffSession;
use super::support::{check_len, invalid, now};
use crate::audit::Event;
use crate::error::{Error, Result};
use crate::row::row;
use crate::store::Store;

row! {
    /// An outlet as listed on the application form.
    #[derive(Debug, Clone)]
    struct OutletRow {
        id: String,
        name_en: String,
        name_zh: String,
    }
}

/// Adds an outlet (idempotent); a new one is audited (`ra.outlet.added`) as `actor`'s.
pub async fn ensure_outlet(
    store: &Store,
    id: &str,
    name_en: &str,
    name_zh: &str,
    actor: &str,
) -> Result<()> {
    check_id(id)?;
    check_len("name_en", name_en, 1, 80)?;
    check_len("name_zh", name_zh, 1, 80)?;
    let mut tx = store.begin().await?;
    let added = sqlx::query("INSERT INTO outlets (id, name_en, name_zh, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING")
        .bind(id)
        .bind(name_en)
        .bind(name_zh)
        .bind(now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if added > 0 {
        store
            .audit(
                &mut tx,
                &Event {
                    kind: "ra.outlet.added",
                    actor: actor.to_string(),
                    subject: Some(id.to_string()),
                    detail: json!({ "name_en": name_en, "name_zh": name_zh }),
                },
            )
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// An outlet id: 1 to 40 of lowercase letters, digits and `-` (it is a path segment, a CSV
/// cell in audit exports, and shown on every page).
fn check_id(id: &str) -> Result<()> {
    check_len("outlet", id, 1, 40)?;
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid("outlet", "lowercase letters, digits and - only"));
    }
    Ok(())
}

/// The open outlets (the ones applications may name): (id, English name, Chinese name).
pub async fn outlets(store: &Store) -> Result<Vec<(String, String, String)>> {
    let rows = sqlx::query_as::<_, OutletRow>(
        "SELECT id, name_en, name_zh FROM outlets WHERE closed_at IS NULL ORDER BY id",
    )
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.name_en, r.name_zh))
        .collect())
}

/// Whether outlet `id` exists and is open.
pub(super) async fn exists<'e, E>(executor: E, id: &str) -> Result<bool>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    Ok(
        sqlx::query("SELECT 1 FROM outlets WHERE id = $1 AND closed_at IS NULL")
            .bind(id)
            .fetch_optional(executor)
            .await?
            .is_some(),
    )
}

/// Every outlet, open or closed, for admins: (id, English name, Chinese name, closed).
pub async fn all_outlets(
    store: &Store,
    staff: &StaffSession,
) -> Result<Vec<(String, String, String, bool)>> {
    staff.authorize(Action::ManageOutlets)?;
    let rows = sqlx::query_as::<_, AdminOutletRow>(
        "SELECT id, name_en, name_zh, closed_at FROM outlets ORDER BY id",
    )
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.name_en, r.name_zh, r.closed_at.is_some()))
        .collect())
}

row! {
    struct AdminOutletRow {
        id: String,
        name_en: String,
        name_zh: String,
        closed_at: Option<i64>,
    }
}

/// An admin adds an outlet.
pub async fn add_outlet(
    store: &Store,
    staff: &StaffSession,
    id: &str,
    name_en: &str,
    name_zh: &str,
) -> Result<()> {
    staff.authorize(Action::ManageOutlets)?;
    let taken = sqlx::query("SELECT 1 FROM outlets WHERE id = $1")
        .bind(id)
        .fetch_optional(store.pool())
        .await?
        .is_some();
    if taken {
        return Err(Error::Conflict(format!("the outlet {id} exists already")));
    }
    ensure_outlet(
        store,
        id,
        name_en,
        name_zh,
        &format!("staff:{}", staff.username),
    )
    .await
}

/// An admin renames an outlet, or closes it (no new applications name it; its applications
/// and staff stay).
pub async fn change_outlet(
    store: &Store,
    staff: &StaffSession,
    id: &str,
    rename: Option<(&str, &str)>,
) -> Result<()> {
    staff.authorize(Action::ManageOutlets)?;
    let mut tx = store.begin().await?;
    let (kind, detail) = match rename {
        Some((en, zh)) => {
            check_len("name_en", en, 1, 80)?;
            check_len("name_zh", zh, 1, 80)?;
            let n = sqlx::query("UPDATE outlets SET name_en = $2, name_zh = $3 WHERE id = $1")
                .bind(id)
                .bind(en)
                .bind(zh)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(Error::NotFound);
            }
            ("ra.outlet.renamed", json!({ "name_en": en, "name_zh": zh }))
        }
        None => {
            let n = sqlx::query(
                "UPDATE outlets SET closed_at = $2 WHERE id = $1 AND closed_at IS NULL",
            )
            .bind(id)
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(Error::Conflict(format!("no open outlet {id}")));
            }
            ("ra.outlet.closed", json!({}))
        }
    };
    store
        .audit(
            &mut tx,
            &Event {
                kind,
                actor: format!("staff:{}", staff.username),
                subject: Some(id.to_string()),
                detail,
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}
