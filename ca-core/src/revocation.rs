//! Revocation status changes: revoke, hold, release (RFC 5280 §5.3.1; TLS BR §4.9, §7.2.2).
//!
//! Every change is a compare-and-set `UPDATE` guarded by the state it expects, with its audit
//! record in the same transaction, so concurrent writers never lose a revocation and a second
//! revocation is answered ("already revoked"), not repeated. The only change allowed to a
//! revoked certificate is to `keyCompromise`. A `keyCompromise` revocation blocks the key and
//! revokes every certificate that carries it, in the same transaction.

use serde_json::json;

use crate::audit::Event;
use crate::error::{Error, Result};
use crate::profile::CaRole;
use crate::serial::SerialNumber;
use crate::store::{CertState, Store, Tx};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Revokes (or, with `certificateHold`, suspends) one certificate and the still-valid
/// certificates it renewed, back along the renewal chain: compare-and-set, each with its audit
/// record, in one transaction. Every channel (online, counter, API, CLI) comes here, so none
/// leaves a renewed predecessor good. A keyCompromise revocation also blocks the key and revokes
/// every other certificate carrying it, in that same transaction. Idempotent per certificate:
/// [`Error::AlreadyRevoked`] only when nothing changed. Needs only the
/// database — no signer lock, no HSM — so any process (CLI, RA, another instance) can do it
/// while a signer runs. Returns each serial changed and how.
pub async fn revoke(
    store: &Store,
    serial: SerialNumber,
    reason: Reason,
    actor: &str,
) -> Result<Vec<(String, Outcome)>> {
    revoke_as(store, serial, reason, actor, Evidence::Verified).await
}

/// What stands behind a keyCompromise revocation (TLS BR §4.9.1.1 and S/MIME BR §4.9.1.1:
/// the CA acts on *verified* evidence of key compromise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// An officer, or a subscriber who proved possession of the private key: the key is
    /// blocked and every certificate carrying it is revoked.
    Verified,
    /// A subscriber's report without that proof: their own certificates (the renewal chain)
    /// are revoked for keyCompromise, and the report is recorded (`key_compromise_reports`,
    /// audited) for an officer to confirm with `ecert revoke --reason keyCompromise`, which
    /// then blocks the key; nobody else's certificate is touched on the subscriber's word.
    Reported,
}

/// [`revoke`] with the [`Evidence`] behind a keyCompromise reason.
pub async fn revoke_as(
    store: &Store,
    serial: SerialNumber,
    reason: Reason,
    actor: &str,
    evidence: Evidence,
) -> Result<Vec<(String, Outcome)>> {
    let hex = serial.to_hex();
    // Checked against the database server's clock where that is the reference.
    let at = crate::clock::revocation_time(store).await?;
    let mut tx = store.begin().await?;
    let mut events = Vec::new();
    let changed = revoke_as_in(
        store,
        &mut tx,
        &hex,
        reason,
        at,
        actor,
        evidence,
        &mut events,
    )
    .await?;
    store
        .audit_many(&mut tx, &events.iter().collect::<Vec<_>>())
        .await?;
    tx.commit().await?;
    for (s, o) in &changed {
        tracing::info!(serial = %s, outcome = ?o, "revocation status changed");
    }
    Ok(changed)
}

/// Revokes many certificates for one reason — a two-officer mass revocation — a few hundred
/// to a transaction instead of one each (100,000 revocations reach OCSP and the CRLs within a
/// minute: issue 16). Each certificate is revoked exactly as [`revoke`] does it (its renewal
/// chain, and for keyCompromise its key blocked and swept), with its audit records, inside a
/// savepoint: one that cannot be revoked is rolled back alone and counted. Returns (revoked,
/// already revoked, failed).
pub async fn revoke_many(
    store: &Store,
    serials: &[SerialNumber],
    reason: Reason,
    actor: &str,
) -> Result<(usize, usize, usize)> {
    const PER_TRANSACTION: usize = 500;
    let (mut done, mut already, mut failed) = (0, 0, 0);
    // The common case set-based: a certificate issued, neither revoked nor held, that renews
    // nothing, of a CA not retired, for a reason that neither suspends nor sweeps a key. What
    // [`revoke_in`] would do to it is exactly a compare-and-set of its revocation columns and
    // the queues ([`Store::note_status_changes`]); everything else goes one by one below.
    let set_based = !matches!(reason, Reason::KeyCompromise | Reason::CertificateHold);
    for chunk in serials.chunks(PER_TRANSACTION) {
        // A chunk is one transaction: after a database failure it is tried again (everything
        // in it was rolled back), so one failover does not stop a mass revocation half-way.
        let mut attempt = 0;
        let (d, a, f) = loop {
            match revoke_chunk(store, chunk, reason, actor, set_based).await {
                Ok(counts) => break counts,
                Err(e @ (Error::Store(_) | Error::StoreUnavailable(_))) if attempt < 4 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "mass revocation: a chunk failed; trying it again");
                    tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
                }
                Err(e) => return Err(e),
            }
        };
        done += d;
        already += a;
        failed += f;
    }
    tracing::info!(revoked = done, already, failed, "mass revocation");
    Ok((done, already, failed))
}

/// One transaction of [`revoke_many`]: (revoked, already revoked, failed).
async fn revoke_chunk(
    store: &Store,
    chunk: &[SerialNumber],
    reason: Reason,
    actor: &str,
    set_based: bool,
) -> Result<(usize, usize, usize)> {
    let (mut done, mut already, mut failed) = (0, 0, 0);
    let at = crate::clock::revocation_time(store).await?;
    let mut tx = store.begin().await?;
    // The chunk's revocation records, chained with one read and one write of the head.
    let mut events = Vec::new();
    let hexes: Vec<String> = chunk.iter().map(SerialNumber::to_hex).collect();
    let taken: std::collections::HashSet<String> = if set_based {
        let changed = store
            .revoke_plain_in(&mut tx, &hexes, reason.code(), at)
            .await?;
        for hex in &changed {
            events.push(event(hex, &Outcome::Revoked, Some(reason), actor, None));
        }
        done += changed.len();
        changed.into_iter().collect()
    } else {
        Default::default()
    };
    for serial in chunk.iter().filter(|s| !taken.contains(&s.to_hex())) {
        let hex = serial.to_hex();
        sqlx::query("SAVEPOINT one_revocation")
            .execute(&mut *tx)
            .await?;
        let mut mine = Vec::new();
        let r = revoke_as_in(
            store,
            &mut tx,
            &hex,
            reason,
            at,
            actor,
            Evidence::Verified,
            &mut mine,
        )
        .await;
        if r.is_ok() {
            events.append(&mut mine);
        }
        if r.is_err() {
            sqlx::query("ROLLBACK TO SAVEPOINT one_revocation")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("RELEASE SAVEPOINT one_revocation")
            .execute(&mut *tx)
            .await?;
        match r {
            Ok(_) => done += 1,
            Err(Error::AlreadyRevoked { .. }) => already += 1,
            Err(e @ (Error::Store(_) | Error::StoreUnavailable(_) | Error::StoreFull(_))) => {
                return Err(e)
            }
            Err(e) => {
                failed += 1;
                tracing::warn!(serial = %hex, error = %e, "mass revocation: one certificate failed");
            }
        }
    }
    store
        .audit_many(&mut tx, &events.iter().collect::<Vec<_>>())
        .await?;
    tx.commit().await?;
    Ok((done, already, failed))
}

/// [`revoke_as`] inside `tx`, dated `at`. The revocation records are added to `events`, for the
/// caller to audit in `tx` (many at once); the rarer records (a key blocked, a compromise
/// reported) are audited here.
#[allow(clippy::too_many_arguments)]
async fn revoke_as_in(
    store: &Store,
    tx: &mut Tx,
    hex: &str,
    reason: Reason,
    at: i64,
    actor: &str,
    evidence: Evidence,
    events: &mut Vec<Event>,
) -> Result<Vec<(String, Outcome)>> {
    let hex = hex.to_string();
    let sweep = reason == Reason::KeyCompromise && evidence == Evidence::Verified;
    if sweep {
        store.lock_key_family(tx, &hex).await?;
    }
    let mut changed = Vec::new();
    let mut already = None;
    let mut newly_blocked = false;
    match revoke_in(store, tx, &hex, reason, at, actor).await {
        Ok(outcome) => {
            events.push(event(&hex, &outcome, Some(reason), actor, None));
            changed.push((hex.clone(), outcome));
        }
        // Already revoked: still walk the renewal chain (and, for keyCompromise, sweep the
        // key), so a certificate renewed or issued with the key since is revoked too.
        Err(e @ Error::AlreadyRevoked { .. }) => already = Some(e),
        Err(e) => return Err(e),
    }
    // The certificates this one renewed: a renewal leaves its predecessor valid until it
    // expires, with the same subscriber and often the same key, so it goes with it.
    let renewed = store.renewed_in(tx, &hex, at).await?;
    let key_of = |status: Option<Status>| status.map(|s| s.key_fp);
    let key = if renewed.is_empty() {
        None
    } else {
        key_of(store.status_in(tx, &hex).await?)
    };
    for previous in renewed {
        // A re-keyed predecessor's key was not reported compromised: it is superseded.
        let own = if reason == Reason::KeyCompromise
            && key_of(store.status_in(tx, &previous).await?) != key
        {
            Reason::Superseded
        } else {
            reason
        };
        match revoke_in(store, tx, &previous, own, at, actor).await {
            Ok(o) => {
                let cause = format!("renewed by {hex}");
                events.push(event(&previous, &o, Some(own), actor, Some(&cause)));
                changed.push((previous, o));
            }
            Err(Error::AlreadyRevoked { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if reason == Reason::KeyCompromise && evidence == Evidence::Reported {
        let status = store
            .status_in(tx, &hex)
            .await?
            .ok_or_else(|| Error::UnknownSerial(hex.clone()))?;
        store
            .report_key_compromise(tx, &status.key_fp, &hex, actor, at)
            .await?;
        store
            .audit(
                tx,
                &Event {
                    kind: "key.compromise_reported",
                    actor: actor.to_string(),
                    subject: Some(hex.clone()),
                    detail: json!({ "key_sha256": hex::encode(&status.key_fp), "evidence": "none: awaits an officer" }),
                },
            )
            .await?;
    }
    if sweep {
        let status = store
            .status_in(tx, &hex)
            .await?
            .ok_or_else(|| Error::UnknownSerial(hex.clone()))?;
        let fp: [u8; 32] = status
            .key_fp
            .as_slice()
            .try_into()
            .map_err(|_| Error::Store("bad key fingerprint".into()))?;
        newly_blocked =
            block_key_in(store, tx, &fp, &format!("keyCompromise of {hex}"), actor).await?;
        for other in store.serials_with_key_in(tx, &fp).await? {
            if other == hex {
                continue;
            }
            match revoke_in(store, tx, &other, Reason::KeyCompromise, at, actor).await {
                Ok(o) => {
                    let cause = format!("same key as {hex}");
                    events.push(event(
                        &other,
                        &o,
                        Some(Reason::KeyCompromise),
                        actor,
                        Some(&cause),
                    ));
                    changed.push((other, o));
                }
                Err(Error::AlreadyRevoked { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    // "Already revoked" only when nothing changed: an officer's keyCompromise that blocks the
    // key of a certificate its subscriber revoked on their word alone is a change.
    if let (true, false, Some(e)) = (changed.is_empty(), newly_blocked, already) {
        return Err(e);
    }
    Ok(changed)
}

/// Releases a certificate from hold (Individual & Organisational CA only; RFC 5280 §5.3.1
/// certificateHold), and the certificates it renewed that are on hold, audited in the same
/// transaction. Database only, like [`revoke`].
pub async fn release(store: &Store, serial: SerialNumber, actor: &str) -> Result<()> {
    let hex = serial.to_hex();
    let mut tx = store.begin().await?;
    let held_at = store
        .status_in(&mut tx, &hex)
        .await?
        .and_then(|s| s.revoked_at);
    let outcome = release_in(store, &mut tx, &hex).await?;
    store
        .audit(&mut tx, &event(&hex, &outcome, None, actor, None))
        .await?;
    // A hold reached the certificates this one renewed ([`revoke`]), dated as this one's; so
    // does its release. A predecessor held on its own (another date) stays held.
    for previous in store.renewed_in(&mut tx, &hex, now()).await? {
        let held = store
            .status_in(&mut tx, &previous)
            .await?
            .is_some_and(|s| s.reason == Some(Reason::CertificateHold) && s.revoked_at == held_at);
        if held {
            let o = release_in(store, &mut tx, &previous).await?;
            let cause = format!("renewed by {hex}");
            store
                .audit(&mut tx, &event(&previous, &o, None, actor, Some(&cause)))
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Adds a key to the blocked list (BR §4.9.1.1, §6.1.1.3 (4): a key reported compromised is
/// never certified again), with its audit record in the same transaction. `key_fp` is the
/// SHA-256 of the DER SubjectPublicKeyInfo.
pub async fn block_key(store: &Store, key_fp: &[u8; 32], reason: &str, actor: &str) -> Result<()> {
    let mut tx = store.begin().await?;
    block_key_in(store, &mut tx, key_fp, reason, actor).await?;
    tx.commit().await?;
    Ok(())
}

/// Blocks the key in `tx`, audited; whether it was not blocked before.
async fn block_key_in(
    store: &Store,
    tx: &mut Tx,
    key_fp: &[u8; 32],
    reason: &str,
    actor: &str,
) -> Result<bool> {
    let added = store.block_key(tx, key_fp, reason).await?;
    let event = Event {
        kind: "key.blocked",
        actor: actor.to_string(),
        subject: None,
        detail: json!({ "key_sha256": hex::encode(key_fp), "reason": reason }),
    };
    store.audit(tx, &event).await?;
    Ok(added)
}

/// CRLReason (RFC 5280 §5.3.1). Codes 2 (cACompromise), 8 (removeFromCRL) and 10 (aACompromise)
/// are not offered: they do not apply to subscriber certificates or full CRLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 0: no reason given; CRL entries and OCSP omit the reasonCode (TLS BR §7.2.2).
    Unspecified,
    /// 1.
    KeyCompromise,
    /// 3.
    AffiliationChanged,
    /// 4.
    Superseded,
    /// 5.
    CessationOfOperation,
    /// 6: on hold ("suspended"); Individual & Organisational CA only (TLS BR §4.9.13 forbids it
    /// on the Server CA).
    CertificateHold,
    /// 9.
    PrivilegeWithdrawn,
}

impl Reason {
    /// The RFC 5280 code.
    pub fn code(self) -> i64 {
        match self {
            Reason::Unspecified => 0,
            Reason::KeyCompromise => 1,
            Reason::AffiliationChanged => 3,
            Reason::Superseded => 4,
            Reason::CessationOfOperation => 5,
            Reason::CertificateHold => 6,
            Reason::PrivilegeWithdrawn => 9,
        }
    }

    /// The inverse of [`Reason::code`].
    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Every reason offered.
    pub const ALL: [Reason; 7] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
        Reason::CertificateHold,
        Reason::PrivilegeWithdrawn,
    ];

    /// The RFC 5280 name (`keyCompromise`).
    pub fn name(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "keyCompromise",
            Reason::AffiliationChanged => "affiliationChanged",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessationOfOperation",
            Reason::CertificateHold => "certificateHold",
            Reason::PrivilegeWithdrawn => "privilegeWithdrawn",
        }
    }

    /// Parses a name, case-insensitively, with or without dashes (`key-compromise`).
    pub fn parse(s: &str) -> Result<Self> {
        let norm: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_lowercase();
        Self::ALL
            .into_iter()
            .find(|r| r.name().to_lowercase() == norm)
            .ok_or_else(|| {
                Error::Revocation(format!(
                    "unknown reason {s:?}; one of {}",
                    Self::ALL
                        .iter()
                        .map(|r| r.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// Whether this CA may use the reason: the Server CA follows the TLS BR (§7.2.2: no hold).
    pub fn allowed_on(self, ca: CaRole) -> bool {
        !(ca == CaRole::Server && self == Reason::CertificateHold)
    }
}

/// What a revocation request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Newly revoked (or a hold made permanent).
    Revoked,
    /// It was revoked already; the reason moved to keyCompromise.
    ReasonUpdated,
    /// Put on hold.
    Held,
    /// Hold released: valid again.
    Released,
}

/// The status of one certificate as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Issuing CA name.
    pub issuer: String,
    /// Lifecycle state.
    pub state: CertState,
    /// Revocation reason, if revoked or on hold.
    pub reason: Option<Reason>,
    /// When, Unix seconds.
    pub revoked_at: Option<i64>,
    /// SHA-256 of the subject SPKI.
    pub key_fp: Vec<u8>,
    /// The profile it was issued under.
    pub profile: String,
}

/// Applies a revocation (`reason`) to `serial` inside `tx`, compare-and-set. Returns the outcome
/// or a named refusal. Does not handle keyCompromise's key blocking (the caller does).
pub(crate) async fn revoke_in(
    store: &Store,
    tx: &mut Tx,
    serial: &str,
    reason: Reason,
    at: i64,
    actor: &str,
) -> Result<Outcome> {
    let status = store
        .status_in(tx, serial)
        .await?
        .ok_or_else(|| Error::UnknownSerial(serial.to_string()))?;
    // Read in `tx` (its connection holds SQLite's write lock: a second connection from the pool
    // here would wait on it).
    if store.ca_state_in(tx, &status.issuer).await? == Some(crate::profile::CaStatus::Retired) {
        return Err(Error::Revocation(format!(
            "the {} CA is retired: every certificate it issued has expired and it publishes no \
             more CRLs or OCSP responses",
            status.issuer
        )));
    }
    let ca = crate::profile::CaId::from_name(&status.issuer)?.role;
    if !reason.allowed_on(ca) {
        return Err(Error::Revocation(format!(
            "{} is not allowed on the {} CA (TLS BR §4.9.13: no suspension)",
            reason.name(),
            ca.name()
        )));
    }
    // S/MIME BR §7.2.2 (and §7.3): certificateHold SHALL NOT be used for Strict-generation
    // certificates, whichever channel asks (CLI, counter, API all come here); nor for a
    // certificate of no subscriber profile (an OCSP responder's). The same rule as the CRL and
    // OCSP lints ([`crate::profile::Profile::hold_allowed_for`]).
    if reason == Reason::CertificateHold
        && !crate::profile::Profile::hold_allowed_for(&status.profile)
    {
        return Err(Error::Revocation(format!(
            "certificateHold is not allowed for the {} profile: an S/MIME BR Strict certificate (or a responder's) is revoked, never suspended (S/MIME BR §7.2.2)",
            status.profile
        )));
    }
    if !matches!(status.state, CertState::Issued | CertState::Abandoned) {
        return Err(Error::Revocation(format!(
            "certificate {serial} was never issued (state {})",
            status.state
        )));
    }
    match (status.reason, reason) {
        (None, Reason::CertificateHold) => {
            if status.state != CertState::Issued {
                return Err(Error::Revocation(format!(
                    "certificate {serial} cannot be put on hold (state {})",
                    status.state
                )));
            }
            store
                .set_revocation(tx, serial, None, Some((Reason::CertificateHold, at)))
                .await?;
            // Who placed the hold: only someone of that rank releases it
            // (ca_core::ra::release_at_counter).
            store.set_held_by(tx, serial, Some(actor)).await?;
            Ok(Outcome::Held)
        }
        (Some(Reason::CertificateHold), Reason::CertificateHold) => Err(Error::AlreadyRevoked {
            serial: serial.to_string(),
            reason: Reason::CertificateHold.name().into(),
        }),
        // Revoking, or making a hold permanent.
        (None, r) | (Some(Reason::CertificateHold), r) => {
            store
                .set_revocation(tx, serial, status.reason, Some((r, at)))
                .await?;
            Ok(Outcome::Revoked)
        }
        (Some(old), Reason::KeyCompromise) if old != Reason::KeyCompromise => {
            // RFC 5280 / BR §7.2.2: the reason may move to keyCompromise; the date stays.
            let kept = status.revoked_at.unwrap_or(at);
            store
                .set_revocation(tx, serial, Some(old), Some((Reason::KeyCompromise, kept)))
                .await?;
            Ok(Outcome::ReasonUpdated)
        }
        (Some(old), _) => Err(Error::AlreadyRevoked {
            serial: serial.to_string(),
            reason: old.name().into(),
        }),
    }
}

/// Releases a hold inside `tx`.
pub(crate) async fn release_in(store: &Store, tx: &mut Tx, serial: &str) -> Result<Outcome> {
    let status = store
        .status_in(tx, serial)
        .await?
        .ok_or_else(|| Error::UnknownSerial(serial.to_string()))?;
    if status.reason != Some(Reason::CertificateHold) {
        return Err(Error::Revocation(format!(
            "certificate {serial} is not on hold ({})",
            status.reason.map_or("not revoked", Reason::name)
        )));
    }
    store
        .set_revocation(tx, serial, Some(Reason::CertificateHold), None)
        .await?;
    store.set_held_by(tx, serial, None).await?;
    Ok(Outcome::Released)
}

/// The audit record of a status change.
pub(crate) fn event(
    serial: &str,
    outcome: &Outcome,
    reason: Option<Reason>,
    actor: &str,
    cause: Option<&str>,
) -> Event {
    Event {
        kind: match outcome {
            Outcome::Revoked => "certificate.revoked",
            Outcome::ReasonUpdated => "certificate.revocation_reason_updated",
            Outcome::Held => "certificate.held",
            Outcome::Released => "certificate.released",
        },
        actor: actor.to_string(),
        subject: Some(serial.to_string()),
        detail: json!({ "reason": reason.map(Reason::name), "cause": cause }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mass revocation revokes plain certificates set-based and the rest one by one, to the
    /// same effect: queues, counters and audit records for every change; a renewal's
    /// predecessor goes with it; a hold becomes permanent; an already revoked one is counted.
    #[tokio::test]
    async fn a_mass_revocation_treats_every_certificate_as_one_revocation_does() {
        let (_dir, store) = crate::store::test_store().await;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let cert = |serial: &'static str, reason: Option<i64>, renews: Option<&'static str>| {
            let store = store.clone();
            async move {
                sqlx::query(
                    "INSERT INTO certificates (serial, issuer, state, profile, profile_version, key_fp, request, reserved_at, \
                     updated_at, not_after, revocation_reason, revoked_at, renews, crl_partition) \
                     VALUES ($1, 'individual', 'issued', 'personal', 2, $2, '{}', $3, $3, $4, $5, $6, $7, 1)",
                )
                .bind(serial)
                .bind(serial.as_bytes().to_vec())
                .bind(now - 100)
                .bind(now + 86_400)
                .bind(reason)
                .bind(reason.map(|_| now - 10))
                .bind(renews)
                .execute(store.pool())
                .await
                .unwrap();
            }
        };
        let s = |n: u8| format!("{:032x}", 0x1000u32 + u32::from(n));
        let (a, b, c, d, e, f) = (s(1), s(2), s(3), s(4), s(5), s(6));
        let leak = |x: &String| -> &'static str { Box::leak(x.clone().into_boxed_str()) };
        cert(leak(&a), None, None).await; // plain
        cert(leak(&b), Some(1), None).await; // already revoked
        cert(leak(&d), None, None).await; // renewed by c
        cert(leak(&c), None, Some(leak(&d))).await;
        cert(leak(&e), Some(6), None).await; // held
        cert(leak(&f), None, None).await; // plain
        let serials: Vec<SerialNumber> = [&a, &b, &c, &e, &f]
            .iter()
            .map(|h| SerialNumber::from_hex(h).unwrap())
            .collect();
        let (done, already, failed) = revoke_many(&store, &serials, Reason::Superseded, "staff:o1")
            .await
            .unwrap();
        assert_eq!((done, already, failed), (4, 1, 0));
        for (serial, want) in [
            (&a, Some(4)),
            (&b, Some(1)),
            (&c, Some(4)),
            (&d, Some(4)),
            (&e, Some(4)),
            (&f, Some(4)),
        ] {
            let r: Option<i64> =
                sqlx::query_scalar("SELECT revocation_reason FROM certificates WHERE serial = $1")
                    .bind(serial)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            assert_eq!(r, want, "{serial}");
        }
        let queued = |table: &'static str| {
            let store = store.clone();
            async move {
                sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
                    "SELECT serial FROM {table} ORDER BY serial"
                )))
                .fetch_all(store.pool())
                .await
                .unwrap()
            }
        };
        let changed = vec![a.clone(), c.clone(), d.clone(), e.clone(), f.clone()];
        assert_eq!(queued("crl_pending").await, changed);
        assert_eq!(queued("ocsp_pending").await, changed);
        let versions: Vec<(String, i64)> =
            sqlx::query_as("SELECT issuer, version FROM status_changes ORDER BY issuer")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(
            versions,
            vec![
                ("individual".to_string(), 5),
                ("individual/p1".to_string(), 5)
            ]
        );
        let audited: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE kind LIKE 'certificate.%' AND actor = 'staff:o1'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(audited, 5);
    }

    #[test]
    fn names_and_codes() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.code()), Some(r));
            assert_eq!(Reason::parse(r.name()).unwrap(), r);
        }
        assert_eq!(
            Reason::parse("key-compromise").unwrap(),
            Reason::KeyCompromise
        );
        assert!(Reason::parse("cACompromise").is_err());
        assert!(!Reason::CertificateHold.allowed_on(CaRole::Server));
        assert!(Reason::CertificateHold.allowed_on(CaRole::Individual));
        assert!(Reason::KeyCompromise.allowed_on(CaRole::Server));
    }
}
