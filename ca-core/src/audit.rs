//! The audit trail: append-only, hash-chained (BR §5.4.1, NSR §3; reference checklist #14).
//!
//! Each record's hash is SHA-256 over the previous record's hash and this record's fields, so
//! editing or removing a record breaks every hash after it. The `audit_head` row, updated in the
//! same transaction as each append, holds the last sequence number and hash, so cutting records
//! off the end is seen too. Records are written in the same transaction as the change they
//! describe: if the audit record cannot be written, the change does not happen.

use serde::Serialize;
use sha2::{Digest, Sha256};

pub mod export;
pub mod witness;

use crate::row::row;

/// An event to append.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// What happened, dotted (`certificate.issued`).
    pub kind: &'static str,
    /// Who did it (`cli:<user>`, `system`).
    pub actor: String,
    /// What it concerns (a serial, a CA name), if anything.
    pub subject: Option<String>,
    /// Details as JSON. MUST NOT hold personal data (identity numbers, birth dates, phones).
    pub detail: serde_json::Value,
}

row! {
    /// A stored record (a row of `audit_log`, read by column name).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Record {
        /// 1, 2, 3, ... with no gaps.
        pub seq: i64,
        /// Unix seconds.
        pub at: i64,
        /// [`Event::kind`].
        pub kind: String,
        /// [`Event::actor`].
        pub actor: String,
        /// [`Event::subject`].
        pub subject: Option<String>,
        /// [`Event::detail`], serialised.
        pub detail: String,
        /// The previous record's hash (32 zero bytes for the first).
        pub prev_hash: Vec<u8>,
        /// This record's hash.
        pub hash: Vec<u8>,
    }
}

impl Record {
    /// Whether the stored hash is the chain hash of this record's fields and `prev_hash`.
    pub fn hash_matches(&self) -> bool {
        chain_hash(
            &self.prev_hash,
            self.seq,
            self.at,
            &self.kind,
            &self.actor,
            self.subject.as_deref(),
            &self.detail,
        ) == self.hash
    }
}

/// The chain hash of a record.
pub fn chain_hash(
    prev_hash: &[u8],
    seq: i64,
    at: i64,
    kind: &str,
    actor: &str,
    subject: Option<&str>,
    detail: &str,
) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"ecert-audit-v1");
    h.update(prev_hash);
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    for field in [Some(kind), Some(actor), subject, Some(detail)] {
        match field {
            Some(s) => {
                h.update([1u8]);
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
            None => h.update([0u8]),
        }
    }
    h.finalize().to_vec()
}

row! {
    /// A signed statement "the chain had `hash` at record `seq`", made with the audit key in the
    /// HSM. Without the HSM nobody can make one, so cutting records off the end of the log (and
    /// rewriting `audit_head` to match) is found by any checkpoint past the cut.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Checkpoint {
        /// Sequence number of the record it covers.
        pub seq: i64,
        /// Unix seconds.
        pub at: i64,
        /// That record's hash.
        pub hash: Vec<u8>,
        /// Signature over [`checkpoint_message`].
        pub signature: Vec<u8>,
    }
}

/// The bytes a checkpoint signs.
pub fn checkpoint_message(seq: i64, hash: &[u8]) -> Vec<u8> {
    let mut m = b"ecert-audit-checkpoint-v1".to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// Checks checkpoints against the records and the audit public key (DER SPKI). The checkpoint
/// a restore recorded at the end of a stretch declared lost (`gaps`) holds the hash the chain
/// resumed after.
pub fn verify_checkpoints(
    records: &[Record],
    checkpoints: &[Checkpoint],
    audit_spki: &[u8],
    gaps: &[RestoredGap],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let by_seq: std::collections::HashMap<i64, &Record> =
        records.iter().map(|r| (r.seq, r)).collect();
    for c in checkpoints {
        let msg = checkpoint_message(c.seq, &c.hash);
        if hsm::verify(
            hsm::Algorithm::EcdsaP256Sha256,
            audit_spki,
            &msg,
            &c.signature,
        )
        .is_err()
        {
            out.push(Finding::CheckpointForged { seq: c.seq });
            continue;
        }
        match by_seq.get(&c.seq) {
            Some(r) if r.hash == c.hash => {}
            Some(_) => out.push(Finding::CheckpointMismatch { seq: c.seq }),
            None if gaps
                .iter()
                .any(|g| g.to == c.seq && g.resumed_after == c.hash) => {}
            None => out.push(Finding::CheckpointPastEnd {
                seq: c.seq,
                last_seq: records.last().map_or(0, |r| r.seq),
            }),
        }
    }
    out
}

/// What `ecert audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A sequence number is missing (a record was removed).
    Gap {
        /// The number expected.
        expected: i64,
        /// The number found.
        found: i64,
    },
    /// A record's stored hash does not match its contents (it was edited).
    HashMismatch {
        /// The record.
        seq: i64,
    },
    /// A record does not point at its predecessor's hash.
    BrokenLink {
        /// The record.
        seq: i64,
    },
    /// The chain ends before (or after) the head says it should (truncated).
    HeadMismatch {
        /// Last sequence number in the log.
        last_seq: i64,
        /// Sequence number the head records.
        head_seq: i64,
    },
    /// A signed checkpoint names a record that is no longer there (truncated).
    CheckpointPastEnd {
        /// The checkpoint.
        seq: i64,
        /// Last sequence number in the log.
        last_seq: i64,
    },
    /// A signed checkpoint's hash differs from the record's (rewritten chain).
    CheckpointMismatch {
        /// The checkpoint.
        seq: i64,
    },
    /// A checkpoint's signature does not verify under the audit key.
    CheckpointForged {
        /// The checkpoint.
        seq: i64,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Gap { expected, found } => {
                write!(f, "record {expected} is missing (next is {found})")
            }
            Finding::HashMismatch { seq } => write!(f, "record {seq} was altered (hash mismatch)"),
            Finding::BrokenLink { seq } => {
                write!(f, "record {seq} does not chain to its predecessor")
            }
            Finding::HeadMismatch { last_seq, head_seq } => write!(
                f,
                "the log ends at record {last_seq} but the head records {head_seq} (truncated)"
            ),
            Finding::CheckpointPastEnd { seq, last_seq } => write!(f, "signed checkpoint at record {seq} but the log ends at record {last_seq} (truncated)"),
            Finding::CheckpointMismatch { seq } => write!(f, "record {seq} differs from its signed checkpoint (chain rewritten)"),
            Finding::CheckpointForged { seq } => write!(f, "checkpoint at record {seq} is not signed by the audit key"),
        }
    }
}

/// A stretch of the chain lost in a restore (`ecert restore`, issue 17), declared by an
/// `audit.restored` record signed by the audit key: records `from..=to` were made after the
/// backup and are gone; the record `record` chains to `resumed_after`, the hash of record
/// `to` as the witness holds it.
///
/// Also the stretch `1..=to` purged after the audit retention period ([`pruned_message`],
/// issue 18), declared by a signed `audit.pruned` record (`pruned_by`): `record` is then the
/// first record kept, which chains to `resumed_after`, the hash of the last record purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredGap {
    /// The record that follows the stretch (the `audit.restored` record itself, for a restore).
    pub record: i64,
    /// The `audit.pruned` record that declared a purge (`None`: a restore).
    pub pruned_by: Option<i64>,
    /// First record lost.
    pub from: i64,
    /// Last record lost (`from - 1`: none).
    pub to: i64,
    /// The hash the restored chain continues from.
    pub resumed_after: Vec<u8>,
}

/// The `audit.restored` records in `records` whose declaration is signed by the audit key and
/// consistent with where they stand (an unsigned or inconsistent one declares nothing, so the
/// gap it would cover is a finding).
pub fn restored_gaps(records: &[Record], audit_spki: &[u8]) -> Vec<RestoredGap> {
    records
        .iter()
        .filter(|r| r.kind == "audit.restored")
        .filter_map(|r| {
            let d: serde_json::Value = serde_json::from_str(&r.detail).ok()?;
            let from = d["lost_from"].as_i64()?;
            let to = d["lost_to"].as_i64()?;
            let resumed_after = hex::decode(d["resumed_after"].as_str()?).ok()?;
            let backup = d["backup"].as_str()?;
            let signature = hex::decode(d["signature"].as_str()?).ok()?;
            let message = crate::backup::restored_message(from, to, &resumed_after, backup);
            let signed = hsm::verify(
                hsm::Algorithm::EcdsaP256Sha256,
                audit_spki,
                &message,
                &signature,
            )
            .is_ok();
            (signed && r.seq == to + 1 && to + 1 >= from && r.prev_hash == resumed_after).then_some(
                RestoredGap {
                    record: r.seq,
                    pruned_by: None,
                    from,
                    to,
                    resumed_after,
                },
            )
        })
        .chain(pruned_prefix(records, audit_spki))
        .collect()
}

/// Domain of the message an `audit.pruned` record's signature covers.
const PRUNED_DOMAIN: &[u8] = b"ecert-audit-pruned-v1\0";

/// What the audit key signs for a purge of records `1..=to` made before `before` (Unix
/// seconds), the last of which hashed to `anchor`.
pub fn pruned_message(to: i64, anchor: &[u8], before: i64) -> Vec<u8> {
    let mut m = PRUNED_DOMAIN.to_vec();
    m.extend_from_slice(&to.to_be_bytes());
    m.extend_from_slice(anchor);
    m.extend_from_slice(&before.to_be_bytes());
    m
}

/// Checks, before a purge, that `stretch` — the records from the first kept to the one after
/// `anchor` — is what the audit key signed: every record's hash is its content's, each links
/// to the one before it (or across a restore gap a signed `audit.restored` record declares),
/// the anchor's checkpoint is signed and holds its record's hash, and the record after the
/// anchor links to it. The reason it is not, otherwise.
pub fn check_stretch(
    stretch: &[Record],
    anchor: &Checkpoint,
    audit_spki: &[u8],
) -> std::result::Result<(), String> {
    if hsm::verify(
        hsm::Algorithm::EcdsaP256Sha256,
        audit_spki,
        &checkpoint_message(anchor.seq, &anchor.hash),
        &anchor.signature,
    )
    .is_err()
    {
        return Err(format!(
            "checkpoint {} is not signed by the audit key",
            anchor.seq
        ));
    }
    let gaps = restored_gaps(stretch, audit_spki);
    for (i, r) in stretch.iter().enumerate() {
        if !r.hash_matches() {
            return Err(format!("record {} was altered", r.seq));
        }
        if let Some(prev) = i.checked_sub(1).map(|j| &stretch[j]) {
            let linked = if r.seq == prev.seq + 1 {
                r.prev_hash == prev.hash
            } else {
                gaps.iter()
                    .any(|g| g.pruned_by.is_none() && g.record == r.seq && g.from == prev.seq + 1)
            };
            if !linked {
                return Err(format!(
                    "record {} does not chain to record {}",
                    r.seq, prev.seq
                ));
            }
        }
        if r.seq == anchor.seq && r.hash != anchor.hash {
            return Err(format!(
                "record {} differs from its signed checkpoint",
                r.seq
            ));
        }
    }
    let ends = |seq: i64| stretch.iter().any(|r| r.seq == seq);
    if !ends(anchor.seq) || !ends(anchor.seq + 1) {
        return Err(format!(
            "the records around checkpoint {} are missing",
            anchor.seq
        ));
    }
    Ok(())
}

/// The purged stretch at the start of `records`: declared by a signed `audit.pruned` record
/// whose anchor is what the first record kept chains to. A prefix removed without such a
/// record — or cut short of, or past, what one declares — is not declared, so the gap is a
/// finding.
fn pruned_prefix(records: &[Record], audit_spki: &[u8]) -> Option<RestoredGap> {
    let first = records.first()?;
    records
        .iter()
        .rev()
        .filter(|r| r.kind == "audit.pruned")
        .filter_map(|r| {
            let d: serde_json::Value = serde_json::from_str(&r.detail).ok()?;
            let to = d["pruned_to"].as_i64()?;
            let anchor = hex::decode(d["anchor"].as_str()?).ok()?;
            let before = d["before"].as_i64()?;
            let signature = hex::decode(d["signature"].as_str()?).ok()?;
            let signed = hsm::verify(
                hsm::Algorithm::EcdsaP256Sha256,
                audit_spki,
                &pruned_message(to, &anchor, before),
                &signature,
            )
            .is_ok();
            (signed && to >= 1 && first.seq == to + 1 && first.prev_hash == anchor).then_some(
                RestoredGap {
                    record: first.seq,
                    pruned_by: Some(r.seq),
                    from: 1,
                    to,
                    resumed_after: anchor,
                },
            )
        })
        .next()
}

/// Verifies records (in sequence order) against the head. A stretch declared lost by a signed
/// `audit.restored` record in `gaps` ([`restored_gaps`]) is not a finding: that record may
/// follow the last record before the loss with the sequence number and hash it declares.
pub fn verify(
    records: &[Record],
    head_seq: i64,
    head_hash: &[u8],
    gaps: &[RestoredGap],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut prev = vec![0u8; 32];
    let mut expected = 1;
    for r in records {
        if let Some(g) = gaps
            .iter()
            .find(|g| g.record == r.seq && g.from == expected)
        {
            prev = g.resumed_after.clone();
            expected = r.seq;
        }
        if r.seq != expected {
            out.push(Finding::Gap {
                expected,
                found: r.seq,
            });
        }
        if r.prev_hash != prev {
            out.push(Finding::BrokenLink { seq: r.seq });
        }
        if !r.hash_matches() {
            out.push(Finding::HashMismatch { seq: r.seq });
        }
        prev = r.hash.clone();
        expected = r.seq + 1;
    }
    let last_seq = records.last().map_or(0, |r| r.seq);
    if last_seq != head_seq || (head_seq > 0 && prev != head_hash) {
        out.push(Finding::HeadMismatch { last_seq, head_seq });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Record> {
        let mut prev = vec![0u8; 32];
        (1..=n)
            .map(|seq| {
                let detail = format!("{{\"n\":{seq}}}");
                let hash = chain_hash(&prev, seq, 1000 + seq, "k", "a", Some("s"), &detail);
                let r = Record {
                    seq,
                    at: 1000 + seq,
                    kind: "k".into(),
                    actor: "a".into(),
                    subject: Some("s".into()),
                    detail,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                r
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        assert_eq!(verify(&c, 5, &c[4].hash, &[]), vec![]);
        assert_eq!(verify(&[], 0, &[0; 32], &[]), vec![]);
    }

    /// Issue 17: a stretch lost in a restore is accepted only when the `audit.restored`
    /// record that declares it is signed by the audit key; a database writer cannot hide
    /// removed records by writing such a record itself.
    /// Issue 18: a purge goes ahead only over records the audit key signed — intact, linked,
    /// up to a signed checkpoint holding its record's hash, with the next record there.
    #[test]
    fn a_purge_checks_what_it_removes() {
        use hsm::Signer;
        let key = hsm::software::SoftwareSigner::generate_p256();
        let spki = key.public_key_spki().to_vec();
        let c = chain(6);
        let checkpoint =
            |seq: i64, hash: &[u8], signer: &hsm::software::SoftwareSigner| Checkpoint {
                seq,
                at: 0,
                hash: hash.to_vec(),
                signature: signer.sign(&checkpoint_message(seq, hash)).unwrap(),
            };
        let anchor = checkpoint(4, &c[3].hash, &key);
        assert_eq!(check_stretch(&c[..5], &anchor, &spki), Ok(()));
        // A checkpoint signed by another key, or over another hash.
        let other = hsm::software::SoftwareSigner::generate_p256();
        assert!(check_stretch(&c[..5], &checkpoint(4, &c[3].hash, &other), &spki).is_err());
        assert!(check_stretch(&c[..5], &checkpoint(4, &c[2].hash, &key), &spki).is_err());
        // An altered record, a broken link, a record missing, no next record.
        let mut altered = c[..5].to_vec();
        altered[1].detail = "{\"n\":99}".into();
        assert!(check_stretch(&altered, &anchor, &spki).is_err());
        let mut unlinked = c[..5].to_vec();
        unlinked.remove(2);
        assert!(check_stretch(&unlinked, &anchor, &spki).is_err());
        assert!(check_stretch(&c[..4], &anchor, &spki).is_err());
    }

    #[test]
    fn only_a_signed_restore_record_declares_a_gap() {
        use hsm::Signer;
        let key = hsm::software::SoftwareSigner::generate_p256();
        let other = hsm::software::SoftwareSigner::generate_p256();
        let c = chain(6);
        // Records 4 and 5 were lost; the witness held 5's hash; the restore record is 6.
        let restored = |signer: &hsm::software::SoftwareSigner| -> Vec<Record> {
            let resumed = c[4].hash.clone();
            let sig = signer
                .sign(&crate::backup::restored_message(4, 5, &resumed, "ab"))
                .unwrap();
            let detail = serde_json::json!({
                "lost_from": 4, "lost_to": 5, "resumed_after": hex::encode(&resumed),
                "backup": "ab", "signature": hex::encode(sig),
            })
            .to_string();
            let hash = chain_hash(
                &resumed,
                6,
                2000,
                "audit.restored",
                "cli:root",
                None,
                &detail,
            );
            let mut records = c[..3].to_vec();
            records.push(Record {
                seq: 6,
                at: 2000,
                kind: "audit.restored".into(),
                actor: "cli:root".into(),
                subject: None,
                detail,
                prev_hash: resumed,
                hash,
            });
            records
        };
        let good = restored(&key);
        let gaps = restored_gaps(&good, key.public_key_spki());
        assert_eq!(gaps.len(), 1);
        assert_eq!((gaps[0].from, gaps[0].to, gaps[0].record), (4, 5, 6));
        let head = good[3].hash.clone();
        assert_eq!(verify(&good, 6, &head, &gaps), vec![]);
        // Signed by another key: no gap declared, so the loss is a finding.
        let forged = restored(&other);
        let gaps = restored_gaps(&forged, key.public_key_spki());
        assert!(gaps.is_empty());
        let found = verify(&forged, 6, &forged[3].hash, &gaps);
        assert!(found.contains(&Finding::Gap {
            expected: 4,
            found: 6
        }));
        assert!(found.contains(&Finding::BrokenLink { seq: 6 }));
    }

    #[test]
    fn removed_edited_truncated_are_found() {
        let c = chain(5);
        let mut removed = c.clone();
        removed.remove(2);
        assert!(
            verify(&removed, 5, &c[4].hash, &[]).contains(&Finding::Gap {
                expected: 3,
                found: 4
            })
        );
        let mut edited = c.clone();
        edited[1].detail = "{\"n\":99}".into();
        assert_eq!(
            verify(&edited, 5, &c[4].hash, &[]),
            vec![Finding::HashMismatch { seq: 2 }]
        );
        let truncated = &c[..3];
        assert_eq!(
            verify(truncated, 5, &c[4].hash, &[]),
            vec![Finding::HeadMismatch {
                last_seq: 3,
                head_seq: 5
            }]
        );
    }
}
