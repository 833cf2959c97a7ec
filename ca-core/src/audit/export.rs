//! Audit exports an auditor verifies offline, with nothing but the export and the audit public
//! key (issue 14, "Independent audit").
//!
//! An export is a *contiguous* stretch of the chain between two signed checkpoints: it starts
//! right after the newest checkpoint before the first record the filter selects (or at the
//! chain's first record) and ends at the checkpoint that covers the last one, every record in
//! full (audit records hold no personal data, [`super::Event::detail`]). Both ends are signed,
//! so a stretch with records cut off either end, or an empty one, does not verify; the
//! `match` flags and the counts are recomputed from the filter, which the export carries. Records the attribute filters (actor, kind,
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

use super::{checkpoint_message, Checkpoint, Record};
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
    /// The ids of the application with that reference (resolved when the export is made: most
    /// records about an application name it by id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub application_ids: Vec<String>,
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
                || r.subject
                    .as_deref()
                    .is_some_and(|s| self.application_ids.iter().any(|id| id == s))
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
    /// The signed checkpoint the stretch starts right after (`None`: it starts at the chain's
    /// first record).
    pub start: Option<Checkpoint>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<Line>,
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

/// A CSV cell as written: one that a spreadsheet would take for a formula (`= + - @`, a tab,
/// a carriage return) — or that starts with the escape itself — gets a leading `'` (OWASP CSV
/// injection), which [`csv_value`] removes again.
fn csv_cell(v: &str) -> String {
    match v.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\'') => format!("'{v}"),
        _ => v.to_string(),
    }
}

fn csv_value(v: &str) -> String {
    match v.as_bytes() {
        [b'\'', b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\'', ..] => v[1..].to_string(),
        _ => v.to_string(),
    }
}

/// Encodes an export.
pub fn render(e: &Export, encoding: Encoding) -> Result<String> {
    let encode_err = |x: &dyn std::fmt::Display| Error::Encoding(format!("audit export: {x}"));
    let from_seq = e.records.first().map_or(e.checkpoint.seq, |(r, _)| r.seq);
    match encoding {
        Encoding::Jsonl => {
            let header = Header {
                format: FORMAT.into(),
                filter: e.filter.clone(),
                from_seq,
                start: e.start.as_ref().map(checkpoint_line),
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
            // The header row: from_seq, uncovered, and the filter (JSON) in `detail`.
            let filter = serde_json::to_string(&e.filter).map_err(|x| encode_err(&x))?;
            let mut row = |cells: [String; 11]| {
                w.write_record(cells.iter().map(|c| csv_cell(c)))
                    .map_err(|x| encode_err(&x))
            };
            row([
                "header".into(),
                from_seq.to_string(),
                e.uncovered.to_string(),
                FORMAT.into(),
                String::new(),
                String::new(),
                filter,
                String::new(),
                String::new(),
                String::new(),
                e.matched().to_string(),
            ])?;
            let checkpoint_row = |kind: &str, c: &Checkpoint| {
                [
                    kind.to_string(),
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
                ]
            };
            if let Some(start) = &e.start {
                row(checkpoint_row("start", start))?;
            }
            for (r, m) in &e.records {
                row([
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
                ])?;
            }
            row(checkpoint_row("checkpoint", &e.checkpoint))?;
            let bytes = w.into_inner().map_err(|x| encode_err(&x))?;
            String::from_utf8(bytes).map_err(|x| encode_err(&x))
        }
    }
}

/// What an export's header claims, checked by [`verify`] against what the records show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The first record's sequence number.
    pub from_seq: i64,
    /// How many records the filter selected.
    pub matched: usize,
}

/// Reads an export in either encoding, with what its header claims.
pub fn parse(text: &str) -> Result<(Export, Claims)> {
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
        return Ok((
            Export {
                filter: header.filter,
                start: header.start.as_ref().map(checkpoint_of).transpose()?,
                checkpoint: checkpoint_of(&header.checkpoint)?,
                records,
                uncovered: header.uncovered,
            },
            Claims {
                from_seq: header.from_seq,
                matched: header.matched,
            },
        ));
    }
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let columns = r.headers().map_err(|e| bad(format!("CSV header: {e}")))?;
    if columns.iter().collect::<Vec<_>>() != CSV_COLUMNS {
        return Err(bad("CSV columns"));
    }
    let mut header: Option<(Filter, Claims, i64)> = None;
    let mut start = None;
    let mut records = Vec::new();
    let mut checkpoint = None;
    for row in r.records() {
        let row = row.map_err(|e| bad(format!("CSV: {e}")))?;
        let f = |i: usize| csv_value(row.get(i).unwrap_or_default());
        let num = |i: usize| {
            f(i).parse::<i64>()
                .map_err(|_| bad(format!("{} is not a number", CSV_COLUMNS[i])))
        };
        let opt = |i: usize| Some(f(i)).filter(|s| !s.is_empty());
        let line = || -> Result<Line> {
            Ok(Line {
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
            })
        };
        match (f(0).as_str(), &header, checkpoint.is_some()) {
            ("header", None, false) => {
                if f(3) != FORMAT {
                    return Err(bad("format"));
                }
                let filter: Filter =
                    serde_json::from_str(&f(6)).map_err(|e| bad(format!("filter: {e}")))?;
                let matched = f(10)
                    .parse::<usize>()
                    .map_err(|_| bad("the header's count"))?;
                header = Some((
                    filter,
                    Claims {
                        from_seq: num(1)?,
                        matched,
                    },
                    num(2)?,
                ));
            }
            ("start", Some(_), false) if start.is_none() && records.is_empty() => {
                start = Some(checkpoint_of(&line()?)?)
            }
            ("record", Some(_), false) => records.push(record_of(line()?)?),
            ("checkpoint", Some(_), false) => checkpoint = Some(checkpoint_of(&line()?)?),
            _ => return Err(bad("rows out of order or of an unknown type")),
        }
    }
    let (filter, claims, uncovered) = header.ok_or_else(|| bad("no header row"))?;
    Ok((
        Export {
            filter,
            start,
            checkpoint: checkpoint.ok_or_else(|| bad("no checkpoint row"))?,
            records,
            uncovered,
        },
        claims,
    ))
}

/// What an export's verification found wrong (empty: the export is authentic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A checkpoint (the end, or the start) is not signed by this audit key.
    CheckpointForged,
    /// The export holds no record.
    Empty,
    /// The first record does not follow the start checkpoint (or is not the chain's first):
    /// records were cut off the front.
    Unanchored,
    /// A sequence number is missing or out of order.
    Gap { expected: i64, found: i64 },
    /// A record does not chain to its predecessor.
    BrokenLink { seq: i64 },
    /// A record's hash does not match its contents (it was altered).
    Altered { seq: i64 },
    /// The stretch does not end at the checkpoint's record and hash.
    NotCovered { last_seq: i64, checkpoint_seq: i64 },
    /// The header's claims or a `match` flag disagree with the records and the filter.
    Misreported(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::CheckpointForged => {
                write!(f, "a checkpoint is not signed by this audit key")
            }
            Problem::Empty => write!(f, "the export holds no record"),
            Problem::Unanchored => write!(
                f,
                "the first record does not follow the export's start checkpoint: records were cut off the front"
            ),
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
            Problem::Misreported(what) => write!(f, "the export misreports {what}"),
        }
    }
}

fn signed(c: &Checkpoint, audit_spki: &[u8]) -> bool {
    hsm::verify(
        hsm::Algorithm::EcdsaP256Sha256,
        audit_spki,
        &checkpoint_message(c.seq, &c.hash),
        &c.signature,
    )
    .is_ok()
}

/// Verifies an export against the audit public key (DER SPKI): both checkpoints' signatures;
/// that the first record follows the start checkpoint (or is the chain's first) and the last
/// is the end checkpoint's; every hash and link between; and that the header's claims and
/// every `match` flag are what the filter gives.
pub fn verify(e: &Export, claims: &Claims, audit_spki: &[u8]) -> Vec<Problem> {
    let mut out = Vec::new();
    let c = &e.checkpoint;
    if !signed(c, audit_spki) || e.start.as_ref().is_some_and(|s| !signed(s, audit_spki)) {
        out.push(Problem::CheckpointForged);
    }
    let Some((first, _)) = e.records.first() else {
        out.push(Problem::Empty);
        return out;
    };
    let anchored = match &e.start {
        Some(s) => first.seq == s.seq + 1 && first.prev_hash == s.hash,
        None => first.seq == 1 && first.prev_hash == vec![0u8; 32],
    };
    if !anchored || claims.from_seq != first.seq {
        out.push(Problem::Unanchored);
    }
    let mut prev: Option<&Record> = None;
    for (r, m) in &e.records {
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
        if !r.hash_matches() {
            out.push(Problem::Altered { seq: r.seq });
        }
        if *m != e.filter.selects(r) {
            out.push(Problem::Misreported(format!(
                "whether record {} matches the filter",
                r.seq
            )));
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
    if claims.matched != e.matched() {
        out.push(Problem::Misreported("how many records match".into()));
    }
    out
}

/// The most records one export holds: narrow a larger one with since/until.
pub const MAX_RECORDS: i64 = 200_000;

/// Builds the export `filter` selects from `store`. [`Error::NotFound`] when the filter
/// selects no record covered by a checkpoint.
pub async fn export(store: &crate::store::Store, mut filter: Filter) -> Result<Export> {
    if let Some(reference) = &filter.reference {
        filter.application_ids = store.application_ids_by_reference(reference).await?;
    }
    let Some((first, last)) = store.audit_seq_bounds(filter.since, filter.until).await? else {
        return Err(Error::NotFound);
    };
    let Some(checkpoint) = store.checkpoint_covering(last).await? else {
        return Err(Error::NotFound);
    };
    if checkpoint.seq < first {
        return Err(Error::NotFound);
    }
    // The first selected record, found in bounded pages (the time bounds chose the window).
    let mut from = None;
    let mut at = first;
    while at <= checkpoint.seq && from.is_none() {
        let to = (at + 9_999).min(checkpoint.seq);
        from = store
            .audit_range(at, to)
            .await?
            .iter()
            .find(|r| r.seq <= last && filter.selects(r))
            .map(|r| r.seq);
        at = to + 1;
    }
    let Some(from) = from else {
        return Err(Error::NotFound);
    };
    // The stretch starts right after the newest checkpoint before the first selected record.
    let start = store.checkpoint_before(from).await?;
    let begin = start.as_ref().map_or(1, |s| s.seq + 1);
    if checkpoint.seq - begin + 1 > MAX_RECORDS {
        return Err(Error::Invalid {
            field: "since",
            reason: format!(
                "the export would hold {} records (at most {MAX_RECORDS}): narrow it with since and until",
                checkpoint.seq - begin + 1
            ),
        });
    }
    let records = store.audit_range(begin, checkpoint.seq).await?;
    let uncovered = (last - checkpoint.seq).max(0);
    let records = records
        .into_iter()
        .map(|r| {
            let m = filter.selects(&r);
            (r, m)
        })
        .collect();
    Ok(Export {
        filter,
        start,
        checkpoint,
        records,
        uncovered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain_hash;
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
            start: None,
            records: records
                .into_iter()
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
            let (back, claims) = parse(&text).unwrap();
            assert_eq!(back.records, e.records, "{enc:?}");
            assert_eq!(back.checkpoint, e.checkpoint, "{enc:?}");
            assert_eq!(back.filter, e.filter, "{enc:?}");
            assert_eq!(
                verify(&back, &claims, key.public_key_spki()),
                vec![],
                "{enc:?}"
            );
        }
    }

    #[test]
    fn altered_cut_misreported_and_foreign_exports_fail() {
        let key = hsm::software::SoftwareSigner::generate_p256();
        let spki = key.public_key_spki();
        let e = sample(&key);
        let claims = |e: &Export| Claims {
            from_seq: e.records.first().map_or(0, |(r, _)| r.seq),
            matched: e.matched(),
        };
        let mut altered = e.clone();
        altered.records[1].0.detail = "{\"n\":99}".into();
        assert!(verify(&altered, &claims(&altered), spki).contains(&Problem::Altered { seq: 2 }));
        let mut dropped = e.clone();
        dropped.records.remove(2);
        let p = verify(&dropped, &claims(&dropped), spki);
        assert!(
            p.contains(&Problem::Gap {
                expected: 3,
                found: 4
            }),
            "{p:?}"
        );
        // Cut off the end, or the front (the review's attack: the selected records dropped).
        let mut cut = e.clone();
        cut.records.pop();
        let p = verify(&cut, &claims(&cut), spki);
        assert!(matches!(p[..], [Problem::NotCovered { .. }]), "{p:?}");
        let mut front = e.clone();
        front.records.drain(..3);
        let p = verify(&front, &claims(&front), spki);
        assert!(p.contains(&Problem::Unanchored), "{p:?}");
        let mut empty = e.clone();
        empty.records.clear();
        assert!(verify(&empty, &claims(&empty), spki).contains(&Problem::Empty));
        // Flags and counts are recomputed from the filter.
        let mut flags = e.clone();
        for (_, m) in flags.records.iter_mut() {
            *m = false;
        }
        let p = verify(&flags, &claims(&e), spki);
        assert!(
            p.iter().any(|x| matches!(x, Problem::Misreported(_))),
            "{p:?}"
        );
        let other = hsm::software::SoftwareSigner::generate_p256();
        assert_eq!(
            verify(&e, &claims(&e), other.public_key_spki()),
            vec![Problem::CheckpointForged]
        );
        assert!(parse("{\"format\":\"something-else\"}").is_err());
        assert!(parse("a,b\n1,2\n").is_err());
    }

    #[test]
    fn csv_cells_that_look_like_formulas_are_escaped_and_read_back() {
        for v in [
            "=HYPERLINK(\"x\")",
            "+1",
            "-2",
            "@SUM(A1)",
            "'quoted",
            "plain",
            "",
        ] {
            let cell = csv_cell(v);
            assert!(!cell.starts_with(['=', '+', '-', '@']), "{cell}");
            assert_eq!(csv_value(&cell), v);
        }
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
