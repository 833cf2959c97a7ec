//! The signing side of OCSP: delegated responders (made and rotated here, keys in the HSM) and
//! the pre-signed responses they sign (docs/OCSP.md).

use std::collections::HashMap;
use std::sync::Arc;

use der::Encode;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose};
use serde_json::json;

use super::{
    dn, key_id, now_secs, open_token, split_signed, unix, Authority, IssuanceToken, LintSigner,
};
use crate::audit::Event;
use crate::error::{Error, Result};
use crate::keys::SubscriberKey;
use crate::lint::{self, Expect, LintInput};
use crate::ocsp::{self, HashAlg, IssuerKey, ResponseSpec, Status};
use crate::profile::CaId;
use crate::publication::{self, OCSP_FRESH_AFTER_EXPIRY};
use crate::serial::SerialNumber;
use crate::store::{CertState, OcspDue, ResponderRow, WriteOp};

/// The profile id recorded for responder certificates.
pub const RESPONDER_PROFILE: &str = "ocsp-responder";

/// A delegated responder in use.
pub(super) struct Responder {
    pub(super) serial: String,
    pub(super) cert_der: Vec<u8>,
    pub(super) not_after: i64,
    pub(super) key_bits: Vec<u8>,
    pub(super) signer: Arc<dyn hsm::Signer>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Responder {
    pub(super) fn new(row: ResponderRow, key: hsm::pkcs11::Pkcs11Key) -> Result<Self> {
        let own = IssuerKey::from_cert(&row.cert_der)?;
        if hsm::Signer::public_key_spki(&key).is_empty() {
            return Err(Error::Config(format!(
                "OCSP responder key {} has no public key",
                row.key_label
            )));
        }
        Ok(Responder {
            serial: row.serial,
            cert_der: row.cert_der,
            not_after: row.not_after,
            key_bits: own.key_bits,
            // Every response is verified under this key after signing (ocsp::self_check).
            signer: Arc::new(key.without_release_check()),
        })
    }
}

use crate::store::SignedOcsp as Signed;

/// The status an OCSP response states for a serial's record: revoked (or held) if it has a
/// reason, revoked without one if it was abandoned (a signature may exist: never good), else
/// good.
fn status_of(due: &OcspDue) -> Status {
    match (due.reason, due.state) {
        (Some(reason), _) => Status::Revoked {
            at: due.revoked_at.unwrap_or(0),
            reason: Some(reason),
        },
        (None, CertState::Abandoned) => Status::Revoked {
            at: due.revoked_at.unwrap_or(0),
            reason: None,
        },
        (None, _) => Status::Good,
    }
}

impl Authority {
    /// Seconds before a responder's notAfter at which it is replaced: a response signed now
    /// must expire before its responder does (RFC 6960 §4.2.2.2), with a refresh period spare.
    fn rotate_margin(&self) -> i64 {
        i64::from(self.config.ocsp.validity_hours + self.config.ocsp.refresh_hours) * 3600
    }

    /// Makes a responder for each issuing CA that has none, or whose responder would expire
    /// before a response signed now. Returns the CAs that got a new one.
    pub async fn ensure_responders(&self) -> Result<Vec<CaId>> {
        // Not while a CA retires: no responder certificate is issued by a CA after its final
        // CRL ([`Authority::retire_finished`]).
        let _lifecycle = self.lifecycle.lock().await;
        let now = unix(now_secs());
        let mut made = Vec::new();
        let mut failed = None;
        for role in self.publishing_cas() {
            // A revoked CA certifies nothing more, responders included.
            if self.ca_revoked(role) {
                continue;
            }
            // A responder never outlives its CA: near the CA's end a new one would be no
            // longer-lived than the one in use, which is kept.
            let ca_end = self
                .cas
                .get(&role)
                .map_or(0, |c| c.not_after.unix_timestamp());
            let due = match self.responders.read().await.get(&role) {
                None => true,
                Some(r) => r.not_after - now < self.rotate_margin() && r.not_after < ca_end,
            };
            if due {
                match self.new_responder(role).await {
                    Ok(r) => {
                        tracing::info!(ca = %role, serial = %r.serial, not_after = r.not_after, "OCSP responder certificate issued");
                        self.responders.write().await.insert(role, Arc::new(r));
                        made.push(role);
                    }
                    // Keep signing with the current responder while it lasts; only a CA with
                    // none at all is an error.
                    Err(e) => {
                        let usable = self
                            .responders
                            .read()
                            .await
                            .get(&role)
                            .is_some_and(|r| r.not_after > now);
                        tracing::error!(ca = %role, error = %e, usable, "could not make a new OCSP responder");
                        if !usable {
                            failed = Some(e);
                        }
                    }
                }
            }
        }
        if !made.is_empty() {
            // A rotation is the moment to drop the keys of responders that have expired.
            if let Err(e) = self.retire_responders().await {
                tracing::error!(error = %e, "could not retire expired OCSP responders");
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(made),
        }
    }

    /// Destroys the HSM keys of responders whose certificates have expired: every response
    /// they signed expired earlier (a response's nextUpdate is before its responder's
    /// notAfter), so the keys can sign nothing anyone would accept and are not kept. The
    /// certificates stay on record. Each destruction is an audit event. Returns the serials.
    pub async fn retire_responders(&self) -> Result<Vec<String>> {
        let now = unix(now_secs());
        let current: Vec<String> = self
            .responders
            .read()
            .await
            .values()
            .map(|r| r.serial.clone())
            .collect();
        let mut retired = Vec::new();
        for (serial, issuer, label) in self.store.expired_responders(now).await? {
            if current.contains(&serial) {
                continue;
            }
            let cfg = self.config.clone();
            let l2 = label.clone();
            // Idempotent: a key already gone (destroyed before a crash) is not an error.
            let destroyed = tokio::task::spawn_blocking(move || -> Result<()> {
                Ok(open_token(&cfg)?.destroy_key(&l2)?)
            })
            .await
            .map_err(|e| Error::Store(e.to_string()))?;
            destroyed?;
            let mut tx = self.store.begin().await?;
            self.store
                .mark_responder_key_destroyed(&mut tx, &serial)
                .await?;
            self.store
                .audit(
                    &mut tx,
                    &Event {
                        kind: "ocsp.responder.retired",
                        actor: "system".into(),
                        subject: Some(serial.clone()),
                        detail: json!({ "issuer": issuer, "key_label": label }),
                    },
                )
                .await?;
            tx.commit().await?;
            tracing::info!(serial, issuer, "expired OCSP responder key destroyed");
            retired.push(serial);
        }
        Ok(retired)
    }

    /// Makes a new responder for `role` now, whether or not the current one is due (`ecert
    /// ocsp rotate`).
    pub async fn rotate_responder(&self, role: CaId) -> Result<String> {
        if !self.publishing_cas().contains(&role) {
            return Err(Error::Config(format!(
                "the {} CA has no OCSP responder",
                role.name()
            )));
        }
        let r = self.new_responder(role).await?;
        let serial = r.serial.clone();
        self.responders.write().await.insert(role, Arc::new(r));
        Ok(serial)
    }

    /// The responder certificate in use for `role` (DER).
    pub async fn responder_cert(&self, role: CaId) -> Option<Vec<u8>> {
        self.responders
            .read()
            .await
            .get(&role)
            .map(|r| r.cert_der.clone())
    }

    /// Issues a responder certificate (TLS BR §7.1.2.8) through the issuance cycle: key made in
    /// the HSM, serial reserved, linting certificate linted, TBS recorded `issuing`, signed by
    /// the CA, stored `issued`; then recorded as the CA's responder.
    async fn new_responder(&self, role: CaId) -> Result<Responder> {
        let serial = SerialNumber::random();
        let serial_hex = serial.to_hex();
        let label = format!("ocsp-{}-{}", role.name(), &serial_hex[..16]);
        // The responder signs with its CA's kind of key: a relying party that can check the CA's
        // signatures (GnuPG's dirmngr checks only RSA ones) can check the responder's too.
        let ca = self.cas.get(&role).ok_or(Error::NotInitialised)?;
        let spec = hsm::KeySpec::of_spki(ca.signer.public_key_spki())?;
        let cfg = self.config.clone();
        let l2 = label.clone();
        let key = tokio::task::spawn_blocking(move || -> Result<hsm::pkcs11::Pkcs11Key> {
            Ok(open_token(&cfg)?.generate_key(&l2, spec)?)
        })
        .await
        .map_err(|e| Error::Store(e.to_string()))??;
        match self.certify_responder(role, serial, &label, &key).await {
            Ok(row) => Responder::new(row, key),
            Err(e) => {
                // The key was never certified: remove it, so failed rotations do not leave
                // keys behind in the HSM.
                let cfg = self.config.clone();
                let l2 = label.clone();
                let destroyed = tokio::task::spawn_blocking(move || -> Result<()> {
                    Ok(open_token(&cfg)?.destroy_key(&l2)?)
                })
                .await
                .map_err(|e| Error::Store(e.to_string()))
                .and_then(|r| r);
                if let Err(d) = destroyed {
                    tracing::error!(label, error = %d, "could not destroy an uncertified responder key");
                }
                Err(e)
            }
        }
    }

    /// Issues (through the issuance cycle) and records the certificate of a new responder key.
    async fn certify_responder(
        &self,
        role: CaId,
        serial: SerialNumber,
        label: &str,
        key: &hsm::pkcs11::Pkcs11Key,
    ) -> Result<ResponderRow> {
        fail::fail_point!("ocsp::certify", |_| Err(Error::Store(
            "failpoint ocsp::certify".into()
        )));
        self.clock.check(&self.store).await?;
        let serial_hex = serial.to_hex();
        let spki = hsm::Signer::public_key_spki(key).to_vec();
        let subject_key = SubscriberKey::from_spki_der(&spki)?;
        let actor = "system:ocsp".to_string();
        self.writer
            .write(
                WriteOp::Reserve {
                    serial: serial_hex.clone(),
                    issuer: role.name(),
                    profile: RESPONDER_PROFILE,
                    profile_version: 1,
                    key_fp: subject_key.fingerprint().to_vec(),
                    request: json!({ "key_label": label }).to_string(),
                    renews: None,
                    // Responder certificates carry no CRL distribution point.
                    crl_partition: None,
                },
                Event {
                    kind: "issuance.requested",
                    actor: actor.clone(),
                    subject: Some(serial_hex.clone()),
                    detail: json!({ "profile": RESPONDER_PROFILE, "issuer": role.name(), "key_label": label }),
                },
            )
            .await?;
        let built = self.responder_linting(role, &subject_key, serial);
        let (tbs, alg, nb, na) = match built {
            Ok(v) => v,
            Err(e) => {
                self.fail(&serial_hex, CertState::Reserved, &actor, &e)
                    .await;
                return Err(e);
            }
        };
        let recorded = self
            .writer
            .write(
                WriteOp::Issuing {
                    serial: serial_hex.clone(),
                    tbs: tbs.clone(),
                    not_before: nb,
                    not_after: na,
                },
                Event {
                    kind: "issuance.linted",
                    actor: actor.clone(),
                    subject: Some(serial_hex.clone()),
                    detail: json!({ "tbs_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tbs)) }),
                },
            )
            .await;
        if let Err(e) = recorded {
            self.fail(&serial_hex, CertState::Reserved, &actor, &e)
                .await;
            return Err(e);
        }
        let issued = self
            .sign(IssuanceToken {
                serial,
                issuer: role,
                tbs,
                signature_algorithm: alg,
                renews: None,
                actor: actor.clone(),
                profile: RESPONDER_PROFILE,
            })
            .await?;
        let row = ResponderRow {
            serial: serial_hex.clone(),
            issuer: role.name(),
            key_label: label.to_string(),
            cert_der: issued.cert_der,
            not_after: na,
        };
        let mut tx = self.store.begin().await?;
        self.store.insert_responder(&mut tx, &row).await?;
        self.store
            .audit(
                &mut tx,
                &Event {
                    kind: "ocsp.responder_created",
                    actor,
                    subject: Some(serial_hex),
                    detail: json!({ "issuer": role.name(), "key_label": label, "not_after": na }),
                },
            )
            .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// The linting certificate of a responder: TLS BR §7.1.2.8 — subject named like a CA
    /// (§7.1.2.10.2), EKU id-kp-OCSPSigning alone, id-pkix-ocsp-nocheck (NULL), keyUsage
    /// digitalSignature (critical), AKI and SKI, no basicConstraints, no AIA, CDP or policies.
    fn responder_linting(
        &self,
        role: CaId,
        key: &SubscriberKey,
        serial: SerialNumber,
    ) -> Result<(Vec<u8>, Vec<u8>, i64, i64)> {
        let ca = self.cas.get(&role).ok_or(Error::NotInitialised)?;
        let ca_cn = &ca.common_name;
        let mut cn = format!("{ca_cn} OCSP Responder");
        if cn.chars().count() > 64 {
            cn = "OCSP Responder".into();
        }
        let now = now_secs();
        let mut p = CertificateParams::default();
        p.serial_number = Some(rcgen::SerialNumber::from_slice(serial.as_bytes()));
        p.not_before = now;
        // Never beyond its CA's own notAfter (a superseded CA near its end).
        p.not_after = (now
            + time::Duration::hours(i64::from(self.config.ocsp.responder_validity_hours))
            - time::Duration::seconds(1))
        .min(ca.not_after);
        if p.not_after <= now {
            return Err(Error::Config(format!(
                "the {role} CA's certificate has expired: it certifies no responder"
            )));
        }
        let c = &self.config.ca;
        p.distinguished_name = dn(&c.country, &c.organization, &cn)?;
        p.is_ca = IsCa::NoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
        p.use_authority_key_identifier_extension = true;
        let ski = key_id(key.spki_der())?;
        p.key_identifier_method = KeyIdMethod::PreSpecified(ski.clone());
        p.custom_extensions = vec![
            // rcgen writes subjectKeyIdentifier for CA certificates only (TLS BR §7.1.2.8.2:
            // SHOULD be present here). RFC 5280 §4.2.1.2: KeyIdentifier ::= OCTET STRING.
            rcgen::CustomExtension::from_oid_content(
                &[2, 5, 29, 14],
                der::asn1::OctetString::new(ski)?.to_der()?,
            ),
            // id-pkix-ocsp-nocheck, NULL (RFC 6960 §4.2.2.2.1).
            rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5],
                vec![0x05, 0x00],
            ),
        ];
        let issuer = rcgen::Issuer::from_ca_cert_der(
            &ca.cert_der.clone().into(),
            LintSigner::of(&*ca.signer)?,
        )?;
        let linting = p.signed_by(key, &issuer)?;
        let findings = lint::lint(&LintInput {
            cert_der: linting.der(),
            issuer_subject_der: &ca.subject_der,
            expected_spki: key.spki_der(),
            issuer_key_id: ca.key_id.as_deref(),
            issuer_algorithm: ca.signer.algorithm(),
            expect: Expect::OcspResponder,
        });
        if !findings.is_empty() {
            return Err(Error::Lint(findings));
        }
        let (tbs, alg) = split_signed(linting.der())?;
        Ok((tbs, alg, unix(p.not_before), unix(p.not_after)))
    }

    /// The serials due for an OCSP response now, for one signing batch
    /// ([`crate::publication::ocsp_batch`]): up to `batch` queued changes, then, in the room
    /// they leave, responses older than `ocsp.refresh_hours` (oldest first) whose certificate
    /// expired less than [`OCSP_FRESH_AFTER_EXPIRY`] ago. If those cannot be read, the queued
    /// changes are still returned (the error is logged), unless there are none.
    pub async fn ocsp_due(&self, batch: i64) -> Result<Vec<OcspDue>> {
        let now = unix(now_secs());
        let queued = self.store.ocsp_pending(batch).await?;
        let room = publication::refresh_room(queued.len(), batch);
        let refresh = i64::from(self.config.ocsp.refresh_hours) * 3600;
        let refreshes = match self
            .store
            .ocsp_stale(now - refresh, now - OCSP_FRESH_AFTER_EXPIRY, room)
            .await
        {
            Ok(stale) => stale,
            Err(e) if !queued.is_empty() => {
                tracing::error!(error = %e, "OCSP: reading stale responses");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        Ok(publication::ocsp_batch(queued, refreshes, batch))
    }

    /// Signs and stores the responses of the serials queued for one (pending changes and
    /// responses due for a refresh). Each serial gets a response for a SHA-1 and one for a
    /// SHA-256 CertID, each linted, signed by the CA's responder in the HSM, and verified. Returns
    /// how many serials were done.
    pub async fn sign_ocsp(&self, due: Vec<OcspDue>) -> Result<usize> {
        if due.is_empty() {
            return Ok(0);
        }
        self.clock.check(&self.store).await?;
        // A CA without a responder has its serials skipped below; the others are signed.
        if let Err(e) = self.ensure_responders().await {
            tracing::error!(error = %e, "OCSP responders incomplete; signing what can be signed");
        }
        let now = unix(now_secs());
        // TLS BR §4.9.10 counts the interval inclusively: thisUpdate + h hours − 1 s.
        let next = now + i64::from(self.config.ocsp.validity_hours) * 3600 - 1;
        let responders = self.responders.read().await.clone();
        let mut issuers = HashMap::new();
        for role in self.publishing_cas() {
            let ca = self.cas.get(&role).ok_or(Error::NotInitialised)?;
            issuers.insert(role, Arc::new(IssuerKey::from_cert(&ca.cert_der)?));
        }
        let mut work = Vec::with_capacity(due.len());
        let mut unowed = Vec::new();
        for d in due {
            let role = CaId::from_name(&d.issuer)?;
            if self.status_of(role) == Some(crate::profile::CaStatus::Retired) {
                // A retired CA signs nothing more (revocations of its certificates are refused;
                // this is what was queued before it retired).
                if let Some(v) = d.version {
                    unowed.push((d.serial.clone(), v));
                }
                continue;
            }
            let (Some(responder), Some(issuer)) = (responders.get(&role), issuers.get(&role))
            else {
                if serial_log_due(&format!("no responder for {}", d.issuer)) {
                    tracing::error!(serial = %d.serial, issuer = %d.issuer, "OCSP: no responder for this issuer");
                }
                continue;
            };
            work.push((d, responder.clone(), issuer.clone()));
        }
        if !unowed.is_empty() {
            self.store.drop_ocsp_pending(&unowed).await?;
        }
        // Spread over the HSM sessions: one blocking task per session.
        let lanes = self.config.hsm.pool_size.clamp(1, 8);
        let per_lane = work.len().div_ceil(lanes).max(1);
        let mut tasks = Vec::new();
        let mut rest = work;
        while !rest.is_empty() {
            let tail = rest.split_off(per_lane.min(rest.len()));
            let chunk = std::mem::replace(&mut rest, tail);
            let permit = self.hsm_slots.clone().acquire_owned().await.map_err(|_| {
                Error::Hsm(hsm::Error::TokenUnavailable {
                    detail: "the signer is shutting down".into(),
                })
            })?;
            tasks.push(tokio::task::spawn_blocking(move || {
                let _permit = permit;
                // One serial that cannot be signed must not hold back the others: it stays
                // queued (its error logged) and is tried again on the next pass. A token that
                // is unavailable fails every serial alike: the pass stops and says so once.
                // What this lane signed before stopping is kept (stored below).
                let mut signed = Vec::with_capacity(chunk.len());
                for (d, r, i) in chunk {
                    let serial = d.serial.clone();
                    match sign_pair(d, &r, &i, now, next) {
                        Ok(s) => signed.push(s),
                        Err(e @ Error::Hsm(hsm::Error::TokenUnavailable { .. })) => {
                            return (signed, Some(e))
                        }
                        Err(e) => {
                            // The serial stays queued and is tried on every pass: said once a
                            // minute per serial, not five times a second.
                            if serial_log_due(&serial) {
                                tracing::error!(serial = %serial, error = %e, "OCSP: cannot sign this serial's response (it stays queued)");
                            }
                        }
                    }
                }
                (signed, None)
            }));
        }
        let mut rows = Vec::new();
        let mut stopped = None;
        for t in tasks {
            match t.await {
                Ok((signed, error)) => {
                    rows.extend(signed);
                    stopped = stopped.or(error);
                }
                Err(e) => {
                    stopped = stopped.or(Some(Error::Hsm(hsm::Error::TokenUnavailable {
                        detail: format!("OCSP signing task failed: {e}"),
                    })))
                }
            }
        }
        if rows.is_empty() {
            if let Some(e) = stopped {
                return Err(e);
            }
        }
        let mut per_ca: HashMap<&str, usize> = HashMap::new();
        for (d, ..) in &rows {
            *per_ca.entry(d.issuer.as_str()).or_default() += 1;
        }
        let responder_serials: HashMap<String, &str> = responders
            .iter()
            .map(|(role, r)| (role.name(), r.serial.as_str()))
            .collect();
        let event = Event {
            kind: "ocsp.signed",
            actor: "system:ocsp".into(),
            subject: None,
            detail: json!({ "serials": per_ca, "responders": responder_serials, "this_update": now, "next_update": next }),
        };
        self.store.store_ocsp(&rows, &event).await?;
        // Stored what was signed; the rest waits for the next pass, and the caller hears why.
        match stopped {
            Some(e) => Err(e),
            None => Ok(rows.len()),
        }
    }
}

/// Builds, lints, signs and checks one serial's two responses (blocking: calls the HSM).
fn sign_pair(
    due: OcspDue,
    responder: &Responder,
    issuer: &IssuerKey,
    now: i64,
    next: i64,
) -> Result<Signed> {
    let serial = SerialNumber::from_hex(&due.serial)
        .ok_or_else(|| Error::Store(format!("bad serial {}", due.serial)))?;
    // Lint: no certificateHold response for a certificate whose profile forbids hold (S/MIME
    // BR §7.2.2 and §7.3 for Strict, TLS BR §4.9.13). The serial stays queued (healthz then
    // reports the change waiting) until an officer releases or revokes it.
    if due.reason == Some(6) && !due.hold_allowed {
        return Err(Error::Lint(vec![format!(
            "serial {}: certificateHold for a certificate whose profile forbids hold",
            due.serial
        )]));
    }
    // A revocation recorded by a host whose clock runs ahead is stated at `now` at the latest:
    // never a revocationTime in the future.
    let status = match status_of(&due) {
        Status::Revoked { at, reason } => Status::Revoked {
            at: at.min(now),
            reason,
        },
        good => good,
    };
    let spec = ResponseSpec {
        issuer,
        serial,
        status,
        this_update: now,
        next_update: next,
        responder_key_bits: &responder.key_bits,
    };
    let mut out = Vec::with_capacity(2);
    for alg in HashAlg::ALL {
        let tbs = ocsp::response_data(&spec, alg)?;
        let findings = ocsp::lint(&tbs, &spec, alg, now);
        if !findings.is_empty() {
            return Err(Error::Lint(findings));
        }
        let signature = responder.signer.sign(&tbs)?;
        let der = ocsp::assemble(
            &tbs,
            responder.signer.algorithm(),
            &signature,
            &responder.cert_der,
        )?;
        ocsp::self_check(&der, &tbs, responder.signer.public_key_spki())?;
        out.push(der);
    }
    let sha256 = out.pop().unwrap_or_default();
    let sha1 = out.pop().unwrap_or_default();
    Ok((due, now, next, sha1, sha256))
}

/// Whether a failure to sign `serial`'s response should be logged now: at most once a minute
/// per serial (a serial that cannot be signed is retried on every pass).
fn serial_log_due(serial: &str) -> bool {
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};
    static LAST: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    let mut last = LAST
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    // Forget serials not seen for an hour, so the map stays small.
    last.retain(|_, t| now.duration_since(*t) < Duration::from_secs(3600));
    match last.get(serial) {
        Some(t) if now.duration_since(*t) < Duration::from_secs(60) => false,
        _ => {
            last.insert(serial.to_string(), now);
            true
        }
    }
}
