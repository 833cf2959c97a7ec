//! Audit exports an auditor verifies offline, with nothing but the export and the audit public
//! key (issue 14, "Independent audit").
//!
//! An export is a *contiguous* stretch of the chain, from the first record the filter selects
//! to the signed checkpoint that covers the last one, every record in full (audit records hold
//! no personal data, [`super::Event::detail`]). Records the attribute filters (actor, kind,
//! serial, application reference) did not select are still there, marked `"match": false`,
//! because the chain hash of each record covers its predecessor's: without them nobody could
//! recompute the checkpoint's hash. So [`verify`] proves that every record of the export —
//! selected or not — is, unaltered and in order, part of the chain the HSM's audit key signed
//! at the checkpoint. Records newer than the newest checkpoint are left out (and counted)
//! until a checkpoint covers them.
//!
//! Two encodings, both read back by [`parse`]:
//! - JSON lines: a header object (`format`, the checkpoint, the filter, counts), then one
//!   object per record.
//! - CSV (RFC 4180): columns `type,seq,at,kind,actor,subject,detail,prev_hash,hash,signature,match`;
//!   `type` is `record` or, in the last row, `checkpoint`.
//!
//! Hashes and signatures are lowercase hex.

use serde::{Deserialize, Serialize};

use super::{chain_hash, checkpoint_message, Checkpoint, Record};
use crate::error::{Error, Result};

/// The format name in every export's header.
pub const FORMAT: &str = "ecert-audit-export-v1";

/// Which records an export selects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Made at or after (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Made at or before (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    /// Exactly this actor (`staff:clerk1`, `cli:root`, `system:crl-publisher`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// This kind, or every kind under it (`issuance` selects `issuance.linted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Records about this certificate serial (hex, any case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Records about this application reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl Filter {
    /// Whether `r` is selected by the attribute filters (the time bounds chose the stretch).
    pub fn selects(&self, r: &Record) -> bool {
        let time = self.since.is_none_or(|t| r.at >= t) && self.until.is_none_or(|t| r.at <= t);
        let actor = self.actor.as_deref().is_none_or(|a| r.actor == a);
        let kind = self.kind.as_deref().is_none_or(|k| {
            r.kind == k || (r.kind.starts_with(k) && r.kind[k.len()..].starts_with('.'))
        });
        let serial = self.serial.as_deref().is_none_or(|s| {
            let s = s.trim().to_ascii_lowercase();
            r.subject.as_deref().map(str::to_ascii_lowercase) == Some(s.clone())
                || r.detail.to_ascii_lowercase().contains(&format!("\"{s}\""))
        });
        let reference = self.reference.as_deref().is_none_or(|reference| {
            let reference = reference.trim().to_ascii_uppercase();
            r.detail.contains(&format!("\"reference\":\"{reference}\""))
        });
        time && actor && kind && serial && reference
    }
}

/// An export: the records from `from_seq` to the checkpoint, each with whether the filter
/// selected it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// What selected the records.
    pub filter: Filter,
    /// The signed checkpoint the stretch ends at.
    pub checkpoint: Checkpoint,
    /// The records, in sequence order, and whether each was selected.
    pub records: Vec<(Record, bool)>,
    /// Selected records left out because no checkpoint covers them yet.
    pub uncovered: i64,
}

impl Export {
    /// How many records the filter selected.
    pub fn matched(&self) -> usize {
        self.records.iter().filter(|(_, m)| *m).count()
    }
}

/// An export's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JSON lines.
    Jsonl,
    /// CSV (RFC 4180).
    Csv,
}

impl Encoding {
    /// Parses `jsonl` or `csv`.
    pub fn parse(s: &str) -> Result<Encoding> {
        match s {
            "jsonl" => Ok(Encoding::Jsonl),
            "csv" => Ok(Encoding::Csv),
            _ => Err(Error::Config(format!(
                "unknown export format {s:?}: jsonl or csv"
            ))),
        }
    }

    /// The media type an HTTP answer carries.
    pub fn media_type(self) -> &'static str {
        match self {
            Encoding::Jsonl => "application/jsonl",
            Encoding::Csv => "text/csv; charset=utf-8",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    filter: Filter,
    from_seq: i64,
    checkpoint: Line,
    matched: usize,
    uncovered: i64,
}

/// One record or checkpoint as the JSON lines carry it.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    seq: i64,
    at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev_hash: Option<String>,
    hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    matched: Option<bool>,
}

fn record_line(r: &Record, matched: bool) -> Line {
    Line {
        seq: r.seq,
        at: r.at,
        kind: Some(r.kind.clone()),
        actor: Some(r.actor.clone()),
        subject: r.subject.clone(),
        detail: Some(r.detail.clone()),
        prev_hash: Some(hex::encode(&r.prev_hash)),
        hash: hex::encode(&r.hash),
        signature: None,
        matched: Some(matched),
    }
}

fn checkpoint_line(c: &Checkpoint) -> Line {
    Line {
        seq: c.seq,
        at: c.at,
        kind: None,
        actor: None,
        subject: None,
        detail: None,
        prev_hash: None,
        hash: hex::encode(&c.hash),
        signature: Some(hex::encode(&c.signature)),
        matched: None,
    }
}

fn bad(why: impl std::fmt::Display) -> Error {
    Error::Audit(format!("not an ecert audit export: {why}"))
}

fn unhex(field: &str, s: &str) -> Result<Vec<u8>> {
    hex::decode(s).map_err(|_| bad(format!("{field} is not hex")))
}

fn record_of(l: Line) -> Result<(Record, bool)> {
    let need =
        |f: Option<String>, name: &str| f.ok_or_else(|| bad(format!("a record has no {name}")));
    Ok((
        Record {
            seq: l.seq,
            at: l.at,
            kind: need(l.kind, "kind")?,
            actor: need(l.actor, "actor")?,
            subject: l.subject,
            detail: need(l.detail, "detail")?,
            prev_hash: unhex("prev_hash", &need(l.prev_hash, "prev_hash")?)?,
            hash: unhex("hash", &l.hash)?,
        },
        l.matched.unwrap_or(false),
    ))
}

fn checkpoint_of(l: &Line) -> Result<Checkpoint> {
    Ok(Checkpoint {
        seq: l.seq,
        at: l.at,
        hash: unhex("checkpoint hash", &l.hash)?,
        signature: unhex(
            "checkpoint signature",
            l.signature
                .as_deref()
                .ok_or_else(|| bad("the checkpoint has no signature"))?,
        )?,
    })
}

const CSV_COLUMNS: [&str; 11] = [
    "type",
    "seq",
    "at",
    "kind",
    "actor",
    "subject",
    "detail",
    "prev_hash",
    "hash",
    "signature",
    "match",
];

/// Encodes an export.
pub fn render(e: &Export, encoding: Encoding) -> Result<String> {
    let encode_err = |x: &dyn std::fmt::Display| Error::Encoding(format!("audit export: {x}"));
    match encoding {
        Encoding::Jsonl => {
            let header = Header {
                format: FORMAT.into(),
                filter: e.filter.clone(),
                from_seq: e.records.first().map_or(e.checkpoint.seq, |(r, _)| r.seq),
                checkpoint: checkpoint_line(&e.checkpoint),
                matched: e.matched(),
                uncovered: e.uncovered,
            };
            let mut out = serde_json::to_string(&header).map_err(|x| encode_err(&x))?;
            out.push('\n');
            for (r, m) in &e.records {
                out.push_str(
                    &serde_json::to_string(&record_line(r, *m)).map_err(|x| encode_err(&x))?,
                );
                out.push('\n');
            }
            Ok(out)
        }
        Encoding::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(CSV_COLUMNS).map_err(|x| encode_err(&x))?;
            for (r, m) in &e.records {
                w.write_record([
                    "record".to_string(),
                    r.seq.to_string(),
                    r.at.to_string(),
                    r.kind.clone(),
                    r.actor.clone(),
                    r.subject.clone().unwrap_or_default(),
                    r.detail.clone(),
                    hex::encode(&r.prev_hash),
                    hex::encode(&r.hash),
                    String::new(),
                    m.to_string(),
                ])
                .map_err(|x| encode_err(&x))?;
            }
            let c = &e.checkpoint;
            w.write_record([
                "checkpoint".to_string(),
                c.seq.to_string(),
                c.at.to_string(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                hex::encode(&c.hash),
                hex::encode(&c.signature),
                String::new(),
            ])
            .map_err(|x| encode_err(&x))?;
            let bytes = w.into_inner().map_err(|x| encode_err(&x))?;
            String::from_utf8(bytes).map_err(|x| encode_err(&x))
        }
    }
}

/// Reads an export in either encoding. (A CSV export does not carry the filter; only what
/// verification needs.)
pub fn parse(text: &str) -> Result<Export> {
    if text.trim_start().starts_with('{') {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Header = serde_json::from_str(lines.next().unwrap_or_default())
            .map_err(|e| bad(format!("header: {e}")))?;
        if header.format != FORMAT {
            return Err(bad(format!("format {:?}", header.format)));
        }
        let records = lines
            .map(|l| {
                serde_json::from_str::<Line>(l)
                    .map_err(|e| bad(format!("record: {e}")))
                    .and_then(record_of)
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Export {
            filter: header.filter,
            checkpoint: checkpoint_of(&header.checkpoint)?,
            records,
            uncovered: header.uncovered,
        });
    }
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let columns = r.headers().map_err(|e| bad(format!("CSV header: {e}")))?;
    if columns.iter().collect::<Vec<_>>() != CSV_COLUMNS {
        return Err(bad("CSV columns"));
    }
    let mut records = Vec::new();
    let mut checkpoint = None;
    for row in r.records() {
        let row = row.map_err(|e| bad(format!("CSV: {e}")))?;
        let f = |i: usize| row.get(i).unwrap_or_default().to_string();
        let num = |i: usize| {
            f(i).parse::<i64>()
                .map_err(|_| bad(format!("{} is not a number", CSV_COLUMNS[i])))
        };
        let opt = |i: usize| Some(f(i)).filter(|s| !s.is_empty());
        let line = Line {
            seq: num(1)?,
            at: num(2)?,
            kind: opt(3),
            actor: opt(4),
            subject: opt(5),
            detail: opt(6),
            prev_hash: opt(7),
            hash: f(8),
            signature: opt(9),
            matched: Some(f(10) == "true"),
        };
        match f(0).as_str() {
            "record" if checkpoint.is_none() => records.push(record_of(line)?),
            "checkpoint" if checkpoint.is_none() => checkpoint = Some(checkpoint_of(&line)?),
            _ => return Err(bad("rows after the checkpoint, or of an unknown type")),
        }
    }
    Ok(Export {
        filter: Filter::default(),
        checkpoint: checkpoint.ok_or_else(|| bad("no checkpoint row"))?,
        records,
        uncovered: 0,
    })
}

/// What an export's verification found wrong (empty: the export is authentic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The checkpoint is not signed by this audit key.
    CheckpointForged,
    /// A sequence number is missing or out of order.
    Gap { expected: i64, found: i64 },
    /// A record does not chain to its predecessor.
    BrokenLink { seq: i64 },
    /// A record's hash does not match its contents (it was altered).
    Altered { seq: i64 },
    /// The stretch does not end at the checkpoint's record and hash.
    NotCovered { last_seq: i64, checkpoint_seq: i64 },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::CheckpointForged => {
                write!(f, "the checkpoint is not signed by this audit key")
            }
            Problem::Gap { expected, found } => {
                write!(f, "record {expected} is missing (next is {found})")
            }
            Problem::BrokenLink { seq } => {
                write!(f, "record {seq} does not chain to its predecessor")
            }
            Problem::Altered { seq } => write!(f, "record {seq} was altered (hash mismatch)"),
            Problem::NotCovered {
                last_seq,
                checkpoint_seq,
            } => write!(
                f,
                "the export ends at record {last_seq} with another hash than the checkpoint at record {checkpoint_seq} signs"
            ),
        }
    }
}

/// Verifies an export against the audit public key (DER SPKI): the checkpoint's signature,
/// then every record's hash and link, up to the checkpoint's record and hash.
pub fn verify(e: &Export, audit_spki: &[u8]) -> Vec<Problem> {
    let mut out = Vec::new();
    let c = &e.checkpoint;
    if hsm::verify(
        hsm::Algorithm::EcdsaP256Sha256,
        audit_spki,
        &checkpoint_message(c.seq, &c.hash),
        &c.signature,
    )
    .is_err()
    {
        out.push(Problem::CheckpointForged);
    }
    let mut prev: Option<&Record> = None;
    for (r, _) in &e.records {
        if let Some(p) = prev {
            if r.seq != p.seq + 1 {
                out.push(Problem::Gap {
                    expected: p.seq + 1,
                    found: r.seq,
                });
            }
            if r.prev_hash != p.hash {
                out.push(Problem::BrokenLink { seq: r.seq });
            }
        }
        let h = chain_hash(
            &r.prev_hash,
            r.seq,
            r.at,
            &r.kind,
            &r.actor,
            r.subject.as_deref(),
            &r.detail,
        );
        if h != r.hash {
            out.push(Problem::Altered { seq: r.seq });
        }
        prev = Some(r);
    }
    if let Some(last) = prev {
        if last.seq != c.seq || last.hash != c.hash {
            out.push(Problem::NotCovered {
                last_seq: last.seq,
                checkpoint_seq: c.seq,
            });
        }
    }
    out
}

/// Builds the export `filter` selects from `store`. [`Error::NotFound`] when the filter
/// selects no record covered by a checkpoint.
pub async fn export(store: &crate::store::Store, filter: Filter) -> Result<Export> {
    let Some((first, last)) = store.audit_seq_bounds(filter.since, filter.until).await? else {
        return Err(Error::NotFound);
    };
    let Some(checkpoint) = store.checkpoint_covering(last).await? else {
        return Err(Error::NotFound);
    };
    let uncovered = (last - checkpoint.seq).max(0);
    if checkpoint.seq < first {
        return Err(Error::NotFound);
    }
    let records = store.audit_range(first, checkpoint.seq).await?;
    let mut selected = Vec::with_capacity(records.len());
    let mut started = false;
    for r in records {
        let m = r.seq <= last && filter.selects(&r);
        // The stretch starts at the first selected record (the chain before it is not needed).
        started |= m;
        if started {
            selected.push((r, m));
        }
    }
    if selected.is_empty() {
        return Err(Error::NotFound);
    }
    Ok(Export {
        filter,
        checkpoint,
        records: selected,
        uncovered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsm::Signer;

    fn chain(n: i64) -> Vec<Record> {
        let mut prev = vec![0u8; 32];
        (1..=n)
            .map(|seq| {
                let (kind, actor) = if seq % 2 == 0 {
                    ("issuance.linted", "staff:clerk1")
                } else {
                    ("crl.published", "system:crl-publisher")
                };
                let detail = format!("{{\"n\":{seq},\"note\":\"a, \\\"quoted\\\" one\"}}");
                let hash = chain_hash(&prev, seq, 1000 + seq, kind, actor, Some("ab12"), &detail);
                let r = Record {
                    seq,
                    at: 1000 + seq,
                    kind: kind.into(),
                    actor: actor.into(),
                    subject: Some("ab12".into()),
                    detail,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                r
            })
            .collect()
    }

    fn sample(key: &hsm::software::SoftwareSigner) -> Export {
        let records = chain(6);
        let last = records.last().unwrap().clone();
        let filter = Filter {
            actor: Some("staff:clerk1".into()),
            ..Filter::default()
        };
        Export {
            records: records
                .into_iter()
                .skip(1)
                .map(|r| {
                    let m = filter.selects(&r);
                    (r, m)
                })
                .collect(),
            filter,
            checkpoint: Checkpoint {
                seq: last.seq,
                at: 2000,
                signature: key.sign(&checkpoint_message(last.seq, &last.hash)).unwrap(),
                hash: last.hash,
            },
            uncovered: 0,
        }
    }

    #[test]
    fn both_encodings_round_trip_and_verify() {
        let key = hsm::software::SoftwareSigner::generate_p256();
        let e = sample(&key);
        assert_eq!(e.matched(), 3);
        for enc in [Encoding::Jsonl, Encoding::Csv] {
            let text = render(&e, enc).unwrap();
            let back = parse(&text).unwrap();
            assert_eq!(back.records, e.records, "{enc:?}");
            assert_eq!(back.checkpoint, e.checkpoint, "{enc:?}");
            assert_eq!(verify(&back, key.public_key_spki()), vec![], "{enc:?}");
        }
    }

    #[test]
    fn altered_dropped_and_foreign_exports_fail() {
        let key = hsm::software::SoftwareSigner::generate_p256();
        let e = sample(&key);
        let mut altered = e.clone();
        altered.records[1].0.detail = "{\"n\":99}".into();
        assert!(verify(&altered, key.public_key_spki()).contains(&Problem::Altered { seq: 3 }));
        let mut dropped = e.clone();
        dropped.records.remove(2);
        let p = verify(&dropped, key.public_key_spki());
        assert!(
            p.contains(&Problem::Gap {
                expected: 4,
                found: 5
            }),
            "{p:?}"
        );
        let mut cut = e.clone();
        cut.records.pop();
        let p = verify(&cut, key.public_key_spki());
        assert!(matches!(p[..], [Problem::NotCovered { .. }]), "{p:?}");
        let other = hsm::software::SoftwareSigner::generate_p256();
        assert_eq!(
            verify(&e, other.public_key_spki()),
            vec![Problem::CheckpointForged]
        );
        assert!(parse("{\"format\":\"something-else\"}").is_err());
        assert!(parse("a,b\n1,2\n").is_err());
    }

    #[test]
    fn filters_select_by_kind_prefix_serial_and_reference() {
        let r = |kind: &str, subject: Option<&str>, detail: &str| Record {
            seq: 1,
            at: 10,
            kind: kind.into(),
            actor: "a".into(),
            subject: subject.map(Into::into),
            detail: detail.into(),
            prev_hash: vec![],
            hash: vec![],
        };
        let kind = Filter {
            kind: Some("issuance".into()),
            ..Filter::default()
        };
        assert!(kind.selects(&r("issuance.linted", None, "{}")));
        assert!(!kind.selects(&r("issuances.x", None, "{}")));
        let serial = Filter {
            serial: Some("AB12".into()),
            ..Filter::default()
        };
        assert!(serial.selects(&r("x", Some("ab12"), "{}")));
        assert!(serial.selects(&r("x", None, "{\"renewed\":\"ab12\"}")));
        assert!(!serial.selects(&r("x", Some("ab1"), "{}")));
        let reference = Filter {
            reference: Some("ec-abc".into()),
            ..Filter::default()
        };
        assert!(reference.selects(&r("x", None, "{\"reference\":\"EC-ABC\"}")));
        let time = Filter {
            since: Some(11),
            ..Filter::default()
        };
        assert!(!time.selects(&r("x", None, "{}")));
    }
}
