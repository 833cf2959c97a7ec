//! Expiry reminders (issue 16): before a subscriber's certificate expires, `serve` mails the
//! address its application confirmed, at each of `[ra] reminder_days` (default 30 and 7 days
//! before), with the link to renew online. Each (certificate, threshold) is claimed in the
//! database before its mail goes out and marked sent after, so restarts and several instances
//! never send it twice; a mail that could not be sent releases its claim, and a claim never
//! marked sent (a crash) is taken over an hour later. The subscriber turns reminders off (and
//! on) on the tracking page.

use serde_json::json;

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
    /// Whether it renews online (a server certificate does not: a new application).
    pub renews_online: bool,
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
        profile: String,
        not_after: i64,
    }
}

/// The reminders due at `now` for `thresholds` (days before expiry): for each issued,
/// unrevoked certificate of an application whose subscriber has not turned reminders off and
/// that has not been renewed, the smallest threshold it has reached — unless that one was
/// sent. Each threshold's window (after the next smaller one) is read on its own, already
/// filtered by what was sent, so reminders sent never hide the ones due. At most `limit` per
/// threshold.
pub async fn due(store: &Store, now: i64, thresholds: &[u32], limit: i64) -> Result<Vec<Reminder>> {
    let mut sorted: Vec<u32> = thresholds.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut lower = now;
    for days in sorted {
        let upper = now + i64::from(days) * 86_400;
        let rows = sqlx::query_as::<_, DueRow>(
            "SELECT c.serial, a.reference, a.email, a.language, a.profile, c.not_after FROM certificates c \
             JOIN applications a ON a.certificate = c.serial \
             WHERE c.state = 'issued' AND c.revocation_reason IS NULL AND a.reminders_off = 0 \
             AND c.not_after > $1 AND c.not_after <= $2 \
             AND NOT EXISTS (SELECT 1 FROM certificates n WHERE n.renews = c.serial AND n.state = 'issued') \
             AND NOT EXISTS (SELECT 1 FROM expiry_reminders e WHERE e.serial = c.serial AND e.days = $3 \
                 AND (e.sent_at IS NOT NULL OR e.claimed_at > $5)) \
             ORDER BY c.not_after LIMIT $4",
        )
        .bind(lower)
        .bind(upper)
        .bind(i64::from(days))
        .bind(limit)
        .bind(now - CLAIM_SECONDS)
        .fetch_all(store.pool())
        .await?;
        out.extend(rows.into_iter().map(|r| Reminder {
            serial: r.serial,
            reference: r.reference,
            email: r.email,
            language: r.language,
            renews_online: r.profile != "server",
            not_after: r.not_after,
            days,
        }));
        lower = upper;
    }
    Ok(out)
}

/// How long a claim holds before another pass may take it over (its mail never confirmed
/// sent: a crash, a failed relay).
pub const CLAIM_SECONDS: i64 = 3_600;

/// Claims a reminder before its mail goes out: false when another pass or instance holds it,
/// or it was sent. A claim older than [`CLAIM_SECONDS`] and not marked sent is taken over.
pub async fn claim(store: &Store, r: &Reminder, now: i64) -> Result<bool> {
    let n = sqlx::query(
        "INSERT INTO expiry_reminders (serial, days, claimed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (serial, days) DO UPDATE SET claimed_at = excluded.claimed_at \
         WHERE expiry_reminders.sent_at IS NULL AND expiry_reminders.claimed_at <= $4",
    )
    .bind(&r.serial)
    .bind(i64::from(r.days))
    .bind(now)
    .bind(now - CLAIM_SECONDS)
    .execute(store.pool())
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Records a reminder's mail as sent (audited `ra.reminder.sent`).
pub async fn mark_sent(store: &Store, r: &Reminder, now: i64) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE expiry_reminders SET sent_at = $3 WHERE serial = $1 AND days = $2")
        .bind(&r.serial)
        .bind(i64::from(r.days))
        .bind(now)
        .execute(&mut *tx)
        .await?;
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
    tx.commit().await?;
    Ok(())
}

/// Gives a claim back after its mail could not be sent (tried again on the next pass).
pub async fn release(store: &Store, r: &Reminder) -> Result<()> {
    sqlx::query("DELETE FROM expiry_reminders WHERE serial = $1 AND days = $2 AND sent_at IS NULL")
        .bind(&r.serial)
        .bind(i64::from(r.days))
        .execute(store.pool())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::test_ca_with;

    /// `n` issued certificates of applications, the i-th expiring `first + i` seconds from
    /// `now`.
    async fn certificates(store: &Store, n: usize, now: i64, first: i64) {
        crate::ra::ensure_outlet(store, "o", "O", "O", "test")
            .await
            .unwrap();
        for i in 0..n {
            let serial = format!("{i:032x}");
            sqlx::query(
                "INSERT INTO certificates (serial, issuer, state, profile, profile_version, key_fp, request, reserved_at, updated_at, not_after) \
                 VALUES ($1, 'individual', 'issued', 'personal', 2, $2, '{}', $3, $3, $4)",
            )
            .bind(&serial)
            .bind(serial.as_bytes().to_vec())
            .bind(now)
            .bind(now + first + i as i64)
            .execute(store.pool())
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO applications (id, reference, secret_hash, revocation_hash, profile, state, version, outlet, language, \
                 surname, given_name, name_zh, email, hkid_sealed, hkid_index, dob_sealed, phone_sealed, address_sealed, \
                 consent_notices, consent_wording, consent_at, csr, created_at, updated_at, certificate) \
                 VALUES ($1, $2, $3, 'x', 'personal', 'issued', 1, 'o', 'en', 'CHAN', 'Tai Man', '', $4, $3, $3, $3, $3, $3, 0, '', $5, $3, $5, $5, $6)",
            )
            .bind(format!("app-{i}"))
            .bind(format!("EC-{i:08}"))
            .bind(vec![0u8])
            .bind(format!("user{i}@example.hk"))
            .bind(now)
            .bind(&serial)
            .execute(store.pool())
            .await
            .unwrap();
        }
    }

    /// Reminders sent never hide the ones due (each threshold's window is read already
    /// filtered), and a claim never marked sent (a crash between claim and mail) is taken over
    /// an hour later; one marked sent is never sent again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sent_reminders_hide_nothing_and_lost_claims_are_taken_over() {
        let (_dir, auth) = test_ca_with(|_| {}).await;
        let store = auth.store();
        let now = 1_900_000_000;
        // 12 certificates within 30 days (none within 7).
        certificates(store, 12, now, 10 * 86_400).await;
        let due = super::due(store, now, &[30, 7], 5).await.unwrap();
        assert_eq!(due.len(), 5);
        assert!(due.iter().all(|r| r.days == 30));
        // The first five are claimed and sent: the next five come out, not nothing.
        for r in &due {
            assert!(claim(store, r, now).await.unwrap());
            mark_sent(store, r, now).await.unwrap();
        }
        let next = super::due(store, now, &[30, 7], 5).await.unwrap();
        assert_eq!(next.len(), 5);
        assert!(next
            .iter()
            .all(|r| !due.iter().any(|d| d.serial == r.serial)));
        // A claim whose mail never went out (the process died): hidden for an hour, then due.
        let lost = &next[0];
        assert!(claim(store, lost, now).await.unwrap());
        assert!(
            !claim(store, lost, now + 10).await.unwrap(),
            "claimed twice"
        );
        let soon = super::due(store, now + 60, &[30, 7], 100).await.unwrap();
        assert!(!soon.iter().any(|r| r.serial == lost.serial));
        let later = super::due(store, now + CLAIM_SECONDS + 1, &[30, 7], 100)
            .await
            .unwrap();
        assert!(later.iter().any(|r| r.serial == lost.serial));
        assert!(claim(store, lost, now + CLAIM_SECONDS + 1).await.unwrap());
        // Sent ones are never due again at their threshold, and released ones are.
        let all = super::due(store, now + CLAIM_SECONDS + 1, &[30, 7], 100)
            .await
            .unwrap();
        assert!(!all.iter().any(|r| due.iter().any(|d| d.serial == r.serial)));
        release(store, lost).await.unwrap();
        assert!(super::due(store, now + 60, &[30, 7], 100)
            .await
            .unwrap()
            .iter()
            .any(|r| r.serial == lost.serial));
        // Five days before expiry: the 7-day reminder is due even where the 30-day one was sent.
        let week = super::due(store, now + 6 * 86_400, &[30, 7], 100)
            .await
            .unwrap();
        assert!(week.iter().all(|r| r.days == 7));
        assert_eq!(week.len(), 12);
    }
}
