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

/// Checks checkpoints against the records and the audit public key (DER SPKI).
pub fn verify_checkpoints(
    records: &[Record],
    checkpoints: &[Checkpoint],
    audit_spki: &[u8],
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

/// Verifies records (in sequence order) against the head.
pub fn verify(records: &[Record], head_seq: i64, head_hash: &[u8]) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut prev = vec![0u8; 32];
    let mut expected = 1;
    for r in records {
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
        assert_eq!(verify(&c, 5, &c[4].hash), vec![]);
        assert_eq!(verify(&[], 0, &[0; 32]), vec![]);
    }

    #[test]
    fn removed_edited_truncated_are_found() {
        let c = chain(5);
        let mut removed = c.clone();
        removed.remove(2);
        assert!(verify(&removed, 5, &c[4].hash).contains(&Finding::Gap {
            expected: 3,
            found: 4
        }));
        let mut edited = c.clone();
        edited[1].detail = "{\"n\":99}".into();
        assert_eq!(
            verify(&edited, 5, &c[4].hash),
            vec![Finding::HashMismatch { seq: 2 }]
        );
        let truncated = &c[..3];
        assert_eq!(
            verify(truncated, 5, &c[4].hash),
            vec![Finding::HeadMismatch {
                last_seq: 3,
                head_seq: 5
            }]
        );
    }
}
