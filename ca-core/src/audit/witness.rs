//! The witness: every signed checkpoint also appended, as a JSON line, to a file outside the
//! database (`[audit] witness`: another mount, a share the auditor controls). Someone who
//! controls the database *and* the HSM can rewrite the chain and sign a new head — the
//! database alone then verifies — but cannot change what the witness already holds:
//! [`compare`] reports the first record where the database's chain and the witness disagree.
//!
//! Line format: `{"seq":N,"at":T,"hash":"<hex>","signature":"<hex>"}`.
//!
//! The witness can also be an HTTPS service the auditor runs (`[audit] witness_url`,
//! [`post`]): the same lines, POSTed.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{checkpoint_message, Checkpoint, Record};
use crate::error::{Error, Result};

#[derive(Serialize, Deserialize)]
struct Line {
    seq: i64,
    at: i64,
    hash: String,
    signature: String,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        context: format!("audit witness {}", path.display()),
        source: e,
    }
}

/// The sequence number of the last checkpoint in the witness (0 if none or no file). Reads
/// only the file's tail.
pub fn last_seq(path: &Path) -> Result<i64> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(path, e)),
    };
    let len = f.metadata().map_err(|e| io(path, e))?.len();
    let start = len.saturating_sub(4096);
    f.seek(SeekFrom::Start(start)).map_err(|e| io(path, e))?;
    let mut tail = String::new();
    f.read_to_string(&mut tail).map_err(|e| io(path, e))?;
    let Some(last) = tail.lines().rev().find(|l| !l.trim().is_empty()) else {
        return Ok(0);
    };
    let line: Line = serde_json::from_str(last)
        .map_err(|e| Error::Audit(format!("the witness's last line does not parse: {e}")))?;
    Ok(line.seq)
}

/// Appends `checkpoints` (oldest first) and flushes them to the disk. The file is made only
/// when `create` (the first checkpoint ever witnessed): a witness that has gone missing — an
/// unmounted share, a deleted file — is an error, never quietly started again.
pub fn append(path: &Path, checkpoints: &[Checkpoint], create: bool) -> Result<()> {
    if checkpoints.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for c in checkpoints {
        let line = Line {
            seq: c.seq,
            at: c.at,
            hash: hex::encode(&c.hash),
            signature: hex::encode(&c.signature),
        };
        text.push_str(&serde_json::to_string(&line).map_err(|e| Error::Encoding(e.to_string()))?);
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(create)
        .append(true)
        .open(path)
        .map_err(|e| io(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

/// Every checkpoint in the witness, in file order.
pub fn read(path: &Path) -> Result<Vec<Checkpoint>> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let bad = |why: String| Error::Audit(format!("witness line {}: {why}", i + 1));
            let line: Line = serde_json::from_str(l).map_err(|e| bad(e.to_string()))?;
            Ok(Checkpoint {
                seq: line.seq,
                at: line.at,
                hash: hex::decode(&line.hash).map_err(|_| bad("hash is not hex".into()))?,
                signature: hex::decode(&line.signature)
                    .map_err(|_| bad("signature is not hex".into()))?,
            })
        })
        .collect()
}

/// The first disagreement between the witness and the database's chain, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disagreement {
    /// A witness line's signature is not the audit key's.
    NotSigned { line: usize, seq: i64 },
    /// The database's record at `seq` has another hash than the witness holds: the chain was
    /// rewritten after it was witnessed.
    Rewritten { line: usize, seq: i64 },
    /// The database's chain ends before a witnessed record.
    Truncated {
        line: usize,
        seq: i64,
        last_seq: i64,
    },
    /// The witness's lines do not go up one checkpoint after another.
    OutOfOrder { line: usize },
    /// A checkpoint the database holds, within the witnessed stretch, is not in the witness.
    Missing { seq: i64 },
    /// The database has checkpoints well past the witness's last line: the witness stopped
    /// receiving them, or was cut short.
    Behind {
        witnessed: i64,
        newest: i64,
        missing: usize,
    },
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Disagreement::NotSigned { line, seq } => write!(
                f,
                "witness line {line} (record {seq}) is not signed by the audit key"
            ),
            Disagreement::Rewritten { line, seq } => write!(
                f,
                "the database's record {seq} differs from witness line {line}: the chain was rewritten after it was witnessed"
            ),
            Disagreement::Truncated {
                line,
                seq,
                last_seq,
            } => write!(
                f,
                "witness line {line} covers record {seq} but the database's chain ends at record {last_seq} (truncated)"
            ),
            Disagreement::OutOfOrder { line } => {
                write!(f, "witness line {line} does not follow the line before it")
            }
            Disagreement::Missing { seq } => write!(
                f,
                "the database's checkpoint at record {seq} is missing from the witness"
            ),
            Disagreement::Behind {
                witnessed,
                newest,
                missing,
            } => write!(
                f,
                "the witness ends at record {witnessed} but the database has {missing} newer checkpoints (to record {newest}): it stopped receiving them or was cut short"
            ),
        }
    }
}

/// Compares the witness with the database's records and checkpoints (in sequence order);
/// returns the first disagreement. One checkpoint not yet witnessed is allowed (the witness is
/// written just after the database). A witnessed checkpoint inside a stretch declared lost by a
/// signed `audit.restored` record (`gaps`, [`crate::audit::restored_gaps`]) is lost, not a
/// disagreement — but the one at the stretch's end must hold the hash the restored chain
/// continues from.
pub fn compare(
    witnessed: &[Checkpoint],
    records: &[Record],
    checkpoints: &[Checkpoint],
    audit_spki: &[u8],
    gaps: &[crate::audit::RestoredGap],
) -> Option<Disagreement> {
    let by_seq: std::collections::HashMap<i64, &Record> =
        records.iter().map(|r| (r.seq, r)).collect();
    let last_seq = records.last().map_or(0, |r| r.seq);
    let mut prev = 0;
    for (i, c) in witnessed.iter().enumerate() {
        let line = i + 1;
        if c.seq <= prev {
            return Some(Disagreement::OutOfOrder { line });
        }
        prev = c.seq;
        if hsm::verify(
            hsm::Algorithm::EcdsaP256Sha256,
            audit_spki,
            &checkpoint_message(c.seq, &c.hash),
            &c.signature,
        )
        .is_err()
        {
            return Some(Disagreement::NotSigned { line, seq: c.seq });
        }
        let lost = gaps.iter().find(|g| g.from <= c.seq && c.seq <= g.to);
        match (by_seq.get(&c.seq), lost) {
            (Some(r), _) if r.hash == c.hash => {}
            (Some(_), _) => return Some(Disagreement::Rewritten { line, seq: c.seq }),
            (None, Some(g)) if c.seq < g.to || c.hash == g.resumed_after => {}
            (None, Some(_)) => return Some(Disagreement::Rewritten { line, seq: c.seq }),
            (None, None) => {
                return Some(Disagreement::Truncated {
                    line,
                    seq: c.seq,
                    last_seq,
                })
            }
        }
    }
    let first = witnessed.first().map_or(0, |c| c.seq);
    let in_witness: std::collections::HashSet<i64> = witnessed.iter().map(|c| c.seq).collect();
    if let Some(c) = checkpoints
        .iter()
        .find(|c| c.seq >= first && c.seq <= prev && !in_witness.contains(&c.seq))
    {
        return Some(Disagreement::Missing { seq: c.seq });
    }
    let newer: Vec<&Checkpoint> = checkpoints.iter().filter(|c| c.seq > prev).collect();
    if newer.len() > 1 {
        return Some(Disagreement::Behind {
            witnessed: prev,
            newest: newer.last().map_or(prev, |c| c.seq),
            missing: newer.len(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsm::Signer;

    #[test]
    fn appended_lines_are_read_back_and_compared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("witness.jsonl");
        assert_eq!(last_seq(&path).unwrap(), 0);
        let key = hsm::software::SoftwareSigner::generate_p256();
        let rec = |seq: i64, hash: u8| Record {
            seq,
            at: seq,
            kind: "k".into(),
            actor: "a".into(),
            subject: None,
            detail: "{}".into(),
            prev_hash: vec![],
            hash: vec![hash; 32],
        };
        let cp = |seq: i64, hash: u8| Checkpoint {
            seq,
            at: seq,
            hash: vec![hash; 32],
            signature: key.sign(&checkpoint_message(seq, &[hash; 32])).unwrap(),
        };
        append(&path, &[cp(1, 1), cp(3, 3)], true).unwrap();
        append(&path, &[cp(4, 4)], false).unwrap();
        assert!(append(&dir.path().join("gone.jsonl"), &[cp(5, 5)], false).is_err());
        assert_eq!(last_seq(&path).unwrap(), 4);
        let w = read(&path).unwrap();
        assert_eq!(w.len(), 3);
        let spki = key.public_key_spki();
        let chain = [rec(1, 1), rec(2, 2), rec(3, 3), rec(4, 4)];
        assert_eq!(compare(&w, &chain, &w, spki, &[]), None);
        let rewritten = [rec(1, 1), rec(2, 2), rec(3, 9), rec(4, 4)];
        assert_eq!(
            compare(&w, &rewritten, &w, spki, &[]),
            Some(Disagreement::Rewritten { line: 2, seq: 3 })
        );
        assert_eq!(
            compare(&w, &chain[..2], &w, spki, &[]),
            Some(Disagreement::Truncated {
                line: 2,
                seq: 3,
                last_seq: 2
            })
        );
        // Cut short: the database's newer checkpoints are not in it.
        let all = [cp(1, 1), cp(3, 3), cp(4, 4)];
        assert_eq!(
            compare(&w[..1], &chain, &all, spki, &[]),
            Some(Disagreement::Behind {
                witnessed: 1,
                newest: 4,
                missing: 2
            })
        );
        // A line dropped from the middle.
        let holed = [w[0].clone(), w[2].clone()];
        assert_eq!(
            compare(&holed, &chain, &all, spki, &[]),
            Some(Disagreement::Missing { seq: 3 })
        );
        let other = hsm::software::SoftwareSigner::generate_p256();
        assert_eq!(
            compare(&w, &chain, &w, other.public_key_spki(), &[]),
            Some(Disagreement::NotSigned { line: 1, seq: 1 })
        );
    }
}

/// What a witness service answers: the newest checkpoint it holds.
#[derive(Deserialize)]
struct Held {
    last_seq: i64,
}

/// Sends `checkpoints` (oldest first) to a witness service: `POST witness_url` with the lines
/// above as `application/x-ndjson` (and `Authorization: Bearer TOKEN` when a token is given),
/// over TLS checked against `ca`. The service appends the lines that extend what it holds and
/// answers 2xx with `{"last_seq": N}`, its newest checkpoint after the append; a line that
/// does not extend it (a rewritten or replayed history) is refused with 409 and the same body.
/// An empty list asks only for `last_seq`. Returns that N.
pub async fn post(
    url: &str,
    ca: &Path,
    token: Option<&str>,
    checkpoints: &[Checkpoint],
) -> Result<i64> {
    use http_body_util::{BodyExt, Full};
    let fail = |what: String| Error::Audit(format!("audit witness {url}: {what}"));
    let client = crate::mpic::https_client(ca)?;
    let mut body = String::new();
    for c in checkpoints {
        body.push_str(
            &serde_json::to_string(&Line {
                seq: c.seq,
                at: c.at,
                hash: hex::encode(&c.hash),
                signature: hex::encode(&c.signature),
            })
            .map_err(|e| fail(e.to_string()))?,
        );
        body.push('\n');
    }
    let mut request = hyper::Request::post(url).header("content-type", "application/x-ndjson");
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {}", t.trim()));
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| fail(e.to_string()))?;
    let timeout = std::time::Duration::from_secs(20);
    let resp = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    let bytes = tokio::time::timeout(timeout, resp.into_body().collect())
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?
        .to_bytes();
    let held: Option<Held> = serde_json::from_slice(&bytes).ok();
    match (status.as_u16(), held) {
        (200..=299, Some(h)) => Ok(h.last_seq),
        (409, Some(h)) => Err(fail(format!(
            "refused the checkpoints as not extending what it holds (it holds up to record {})",
            h.last_seq
        ))),
        (s, _) => Err(fail(format!("HTTP {s}"))),
    }
}
