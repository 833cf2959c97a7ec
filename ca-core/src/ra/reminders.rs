//! Expiry reminders (issue 16): before a subscriber's certificate expires, `serve` mails the
//! address its application confirmed, at each of `[ra] reminder_days` (default 30 and 7 days
//! before), with the link to renew online. Each (certificate, threshold) is claimed in the
//! database before its mail goes out, so restarts and several instances never send it twice; a
//! mail that could not be sent releases its claim and is tried again on the next pass. The
//! subscriber turns reminders off (and on) on the tracking page.

use serde_json::json;

use super::record::owned;
use crate::audit::Event;
use crate::error::Result;
use crate::row::row;
use crate::store::Store;

/// A reminder due.
#[derive(Debug, Clone)]
pub struct Reminder {
    /// The certificate.
    pub serial: String,
    /// Its application's reference.
    pub reference: String,
    /// Where the application confirmed the subscriber can be reached.
    pub email: String,
    /// The application's language (`en` or `zh-HK`).
    pub language: String,
    /// The certificate's notAfter (Unix seconds).
    pub not_after: i64,
    /// The threshold it is sent for (days before notAfter).
    pub days: u32,
}

row! {
    struct DueRow {
        serial: String,
        reference: String,
        email: String,
        language: String,
        not_after: i64,
    }
}

/// The reminders due at `now` for `thresholds` (days before expiry): for each issued,
/// unrevoked certificate of an application whose subscriber has not turned reminders off,
/// that expires within the largest threshold and has not been renewed, the smallest threshold
/// it has reached, unless that one was sent. At most `limit`.
pub async fn due(store: &Store, now: i64, thresholds: &[u32], limit: i64) -> Result<Vec<Reminder>> {
    let Some(widest) = thresholds.iter().max() else {
        return Ok(Vec::new());
    };
    let rows = sqlx::query_as::<_, DueRow>(
        "SELECT c.serial, a.reference, a.email, a.language, c.not_after FROM certificates c \
         JOIN applications a ON a.certificate = c.serial \
         WHERE c.state = 'issued' AND c.revocation_reason IS NULL AND a.reminders_off = 0 \
         AND c.not_after > $1 AND c.not_after <= $2 \
         AND NOT EXISTS (SELECT 1 FROM certificates n WHERE n.renews = c.serial AND n.state = 'issued') \
         ORDER BY c.not_after LIMIT $3",
    )
    .bind(now)
    .bind(now + i64::from(*widest) * 86_400)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let left = r.not_after - now;
        let Some(days) = thresholds
            .iter()
            .copied()
            .filter(|d| left <= i64::from(*d) * 86_400)
            .min()
        else {
            continue;
        };
        let sent: Option<i64> = sqlx::query_scalar(
            "SELECT sent_at FROM expiry_reminders WHERE serial = $1 AND days = $2",
        )
        .bind(&r.serial)
        .bind(i64::from(days))
        .fetch_optional(store.pool())
        .await?;
        if sent.is_none() {
            out.push(Reminder {
                serial: r.serial,
                reference: r.reference,
                email: r.email,
                language: r.language,
                not_after: r.not_after,
                days,
            });
        }
    }
    Ok(out)
}

/// Claims a reminder before its mail goes out: false when another pass or instance has.
pub async fn claim(store: &Store, r: &Reminder, now: i64) -> Result<bool> {
    let mut tx = store.begin().await?;
    let n = sqlx::query(
        "INSERT INTO expiry_reminders (serial, days, sent_at) VALUES ($1, $2, $3) ON CONFLICT (serial, days) DO NOTHING",
    )
    .bind(&r.serial)
    .bind(i64::from(r.days))
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 1 {
        store
            .audit(
                &mut tx,
                &Event {
                    kind: "ra.reminder.sent",
                    actor: "system:reminders".into(),
                    subject: Some(r.serial.clone()),
                    detail: json!({ "days_before_expiry": r.days, "reference": r.reference }),
                },
            )
            .await?;
    }
    tx.commit().await?;
    Ok(n == 1)
}

/// Gives a claim back after its mail could not be sent (tried again on the next pass).
pub async fn release(store: &Store, r: &Reminder) -> Result<()> {
    sqlx::query("DELETE FROM expiry_reminders WHERE serial = $1 AND days = $2")
        .bind(&r.serial)
        .bind(i64::from(r.days))
        .execute(store.pool())
        .await?;
    Ok(())
}

/// The subscriber turns expiry reminders on or off (the tracking page: reference and tracking
/// secret). Audited.
pub async fn set_reminders(store: &Store, reference: &str, secret: &str, on: bool) -> Result<()> {
    let id = owned(store, reference, secret).await?;
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE applications SET reminders_off = $2 WHERE id = $1")
        .bind(&id)
        .bind(i64::from(!on))
        .execute(&mut *tx)
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.reminders.changed",
                actor: super::support::citizen(reference),
                subject: Some(id),
                detail: json!({ "reminders": on }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Whether the application's subscriber gets expiry reminders.
pub async fn reminders_on(store: &Store, reference: &str, secret: &str) -> Result<bool> {
    let id = owned(store, reference, secret).await?;
    let off: i64 = sqlx::query_scalar("SELECT reminders_off FROM applications WHERE id = $1")
        .bind(&id)
        .fetch_one(store.pool())
        .await?;
    Ok(off == 0)
}
