//! Service outlets: where citizens prove who they are and where counter staff work.

use serde_json::json;

use super::support::{check_len, now};
use crate::audit::Event;
use crate::error::Result;
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
    check_len("outlet", id, 1, 40)?;
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

/// The outlets: (id, English name, Chinese name).
pub async fn outlets(store: &Store) -> Result<Vec<(String, String, String)>> {
    let rows =
        sqlx::query_as::<_, OutletRow>("SELECT id, name_en, name_zh FROM outlets ORDER BY id")
            .fetch_all(store.pool())
            .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.name_en, r.name_zh))
        .collect())
}

/// Whether outlet `id` exists.
pub(super) async fn exists<'e, E>(executor: E, id: &str) -> Result<bool>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    Ok(sqlx::query("SELECT 1 FROM outlets WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await?
        .is_some())
}
