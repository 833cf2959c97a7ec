//! Debian weak keys (CVE-2008-0166): TLS BR §6.1.1.3(5) and S/MIME BR §6.1.1.3 require the CA
//! to reject a key "known to be weak", Debian's included.
//!
//! The lists are in the openssl-vulnkey (`openssl-blacklist` package) format: one file
//! `blacklist.RSA-<bits>` per modulus size, `#` comments, and one line per weak key holding the
//! lower 80 bits (the last 20 hex digits) of `SHA-1("Modulus=<UPPERCASE HEX>\n")` — what
//! `openssl rsa -noout -modulus | sha1sum` prints. The complete lists (every PID, architecture
//! and size) are installed by the operator in `[keys] debian_weak_dir`. The published sets hold
//! raw keys, so [`build`] turns a tree of keys into the lists (`ecert keys debian-list build`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use der::asn1::{AnyRef, OctetStringRef, UintRef};
use der::Decode;
use num_bigint::BigUint;
use sha1::{Digest, Sha1};

use super::{KeyKind, SubscriberKey, ACCEPTED_RSA_BITS};
use crate::error::{Error, Result};

/// One list entry: the lower 80 bits of the modulus line's SHA-1.
pub type Fingerprint = [u8; 10];

/// The file name of the list for `bits`.
pub fn list_name(bits: usize) -> String {
    format!("blacklist.RSA-{bits}")
}

/// The openssl-vulnkey fingerprint of a modulus.
pub fn fingerprint(n: &BigUint) -> Fingerprint {
    let line = format!("Modulus={}\n", n.to_str_radix(16).to_uppercase());
    let digest = Sha1::digest(line.as_bytes());
    let mut fp = [0u8; 10];
    fp.copy_from_slice(&digest[10..]);
    fp
}

/// The loaded lists, one per accepted RSA size that has a file.
#[derive(Debug, Default, Clone)]
pub struct DebianWeakKeys {
    /// Sorted, for binary search.
    lists: BTreeMap<usize, Vec<Fingerprint>>,
}

impl DebianWeakKeys {
    /// Loads `blacklist.RSA-<bits>` for every size ecert accepts from `dir`. A missing file
    /// leaves that size without a list ([`DebianWeakKeys::missing`]; `ecert config check` warns,
    /// and refuses with `--production`); a missing directory or a malformed line is an error, so
    /// a broken installation fails closed rather than checking nothing.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Config(format!(
                "keys.debian_weak_dir {} is not a directory",
                dir.display()
            )));
        }
        let mut lists = BTreeMap::new();
        for bits in ACCEPTED_RSA_BITS {
            let path = dir.join(list_name(bits));
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::Io {
                        context: format!("reading {}", path.display()),
                        source: e,
                    })
                }
            };
            lists.insert(bits, parse(&text, &path)?);
        }
        Ok(DebianWeakKeys { lists })
    }

    /// The accepted RSA sizes without a list.
    pub fn missing(&self) -> Vec<usize> {
        ACCEPTED_RSA_BITS
            .into_iter()
            .filter(|b| !self.lists.contains_key(b))
            .collect()
    }

    /// How many fingerprints each loaded list holds.
    pub fn sizes(&self) -> Vec<(usize, usize)> {
        self.lists.iter().map(|(b, l)| (*b, l.len())).collect()
    }

    /// Whether the modulus is on the list of its size.
    pub fn contains(&self, n: &BigUint) -> bool {
        let bits = n.bits() as usize;
        self.lists
            .get(&bits)
            .is_some_and(|l| l.binary_search(&fingerprint(n)).is_ok())
    }

    /// Refuses an RSA key that is on its size's list (a named [`Error::WeakKey`]); EC keys are
    /// not affected by CVE-2008-0166 in a way the lists cover.
    pub fn check(&self, key: &SubscriberKey) -> Result<()> {
        if let KeyKind::Rsa { .. } = key.kind() {
            let (n, _) = super::rsa_parts(&key.key_bytes)?;
            if self.contains(&n) {
                return Err(Error::WeakKey(
                    "the RSA key is a Debian weak key (CVE-2008-0166): make a new key with a \
                     current OpenSSL"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

/// Parses one list: `#` comments and blank lines skipped; every other line exactly 20 hex
/// digits (either case); at least one.
fn parse(text: &str, origin: &Path) -> Result<Vec<Fingerprint>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fp = [0u8; 10];
        if line.len() != 20 || hex::decode_to_slice(line, &mut fp).is_err() {
            return Err(Error::Config(format!(
                "{}:{}: not a 20-hex-digit openssl-vulnkey fingerprint",
                origin.display(),
                i + 1
            )));
        }
        out.push(fp);
    }
    if out.is_empty() {
        return Err(Error::Config(format!(
            "{} holds no fingerprint: an incomplete installation would check nothing",
            origin.display()
        )));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// What [`build`] did.
#[derive(Debug, Default)]
pub struct BuildReport {
    /// Distinct weak keys written, per modulus size.
    pub written: BTreeMap<usize, usize>,
    /// Files read.
    pub files: usize,
    /// Files that held no RSA key ecert could read (with why), e.g. a README.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Largest file [`build`] reads: a PEM key is a few kilobytes.
const MAX_KEY_FILE: u64 = 1 << 20;

/// Walks `keys_dir` (recursively) for RSA keys — PEM `RSA PRIVATE KEY` (PKCS#1), `PRIVATE KEY`
/// (PKCS#8), `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY` — and writes `out_dir/blacklist.RSA-<bits>`
/// for every size found, sorted and without duplicates. Each file is replaced atomically.
pub fn build(keys_dir: &Path, out_dir: &Path) -> Result<BuildReport> {
    let io = |context: String| move |source| Error::Io { context, source };
    let mut report = BuildReport::default();
    let mut found: BTreeMap<usize, BTreeSet<Fingerprint>> = BTreeMap::new();
    let mut dirs = vec![keys_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(io(format!("reading {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(io(format!("reading {}", dir.display())))?;
            let path = entry.path();
            let meta = std::fs::metadata(&path).map_err(io(format!("{}", path.display())))?;
            if meta.is_dir() {
                dirs.push(path);
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            report.files += 1;
            if meta.len() > MAX_KEY_FILE {
                report.skipped.push((path, "larger than 1 MiB".into()));
                continue;
            }
            let bytes = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
            match moduli(&bytes) {
                Ok(ns) if !ns.is_empty() => {
                    for n in ns {
                        found
                            .entry(n.bits() as usize)
                            .or_default()
                            .insert(fingerprint(&n));
                    }
                }
                Ok(_) => report.skipped.push((path, "no RSA key in it".into())),
                Err(why) => report.skipped.push((path, why)),
            }
        }
    }
    std::fs::create_dir_all(out_dir).map_err(io(format!("creating {}", out_dir.display())))?;
    for (bits, fps) in &found {
        let mut text = format!(
            "# Debian weak RSA-{bits} keys (CVE-2008-0166), openssl-vulnkey format: the lower 80 \
             bits of SHA-1(\"Modulus=<HEX>\\n\").\n# Made by `ecert keys debian-list build` from \
             {} keys.\n",
            fps.len()
        );
        for fp in fps {
            text.push_str(&hex::encode(fp));
            text.push('\n');
        }
        let path = out_dir.join(list_name(*bits));
        let tmp = out_dir.join(format!(".{}.tmp", list_name(*bits)));
        std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("writing {}", path.display())))?;
        report.written.insert(*bits, fps.len());
    }
    Ok(report)
}

/// The RSA moduli of every PEM block in a file that holds an RSA key.
fn moduli(bytes: &[u8]) -> std::result::Result<Vec<BigUint>, String> {
    let blocks = pem::parse_many(bytes).map_err(|e| format!("not PEM: {e}"))?;
    let mut out = Vec::new();
    for b in blocks {
        let n = match b.tag() {
            "RSA PRIVATE KEY" => pkcs1_modulus(b.contents(), 1)?,
            "RSA PUBLIC KEY" => pkcs1_modulus(b.contents(), 0)?,
            "PRIVATE KEY" => {
                // PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING, .. }
                // (RFC 5208 §5); the octets are an RSAPrivateKey for rsaEncryption.
                let items = sequence(b.contents())?;
                let inner = items
                    .get(2)
                    .and_then(|a| a.decode_as::<OctetStringRef<'_>>().ok())
                    .ok_or("PKCS#8 without a private key")?;
                match pkcs1_modulus(inner.as_bytes(), 1) {
                    Ok(n) => n,
                    Err(_) => continue, // not an RSA key
                }
            }
            "PUBLIC KEY" => {
                let Ok(key) = SubscriberKey::from_spki_der(b.contents()) else {
                    continue;
                };
                match key.kind() {
                    KeyKind::Rsa { .. } => {
                        super::rsa_parts(&key.key_bytes)
                            .map_err(|e| e.to_string())?
                            .0
                    }
                    _ => continue,
                }
            }
            _ => continue,
        };
        out.push(n);
    }
    Ok(out)
}

fn sequence(der: &[u8]) -> std::result::Result<Vec<AnyRef<'_>>, String> {
    Vec::<AnyRef<'_>>::from_der(der).map_err(|e| format!("not a DER SEQUENCE: {e}"))
}

/// The INTEGER at `index` of a PKCS#1 RSAPrivateKey (1) or RSAPublicKey (0) (RFC 8017 A.1).
fn pkcs1_modulus(der: &[u8], index: usize) -> std::result::Result<BigUint, String> {
    let items = sequence(der)?;
    let n = items
        .get(index)
        .and_then(|a| a.decode_as::<UintRef<'_>>().ok())
        .ok_or("no RSA modulus")?;
    Ok(BigUint::from_bytes_be(n.as_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const WEAK: &str = include_str!("../testdata/debian-weak-rsa2048-pid1000.key");

    /// The fixture's fingerprint as its README (and `openssl rsa -modulus | sha1sum`) gives it.
    #[test]
    fn fingerprint_matches_openssl_vulnkey() {
        let n = moduli(WEAK.as_bytes()).unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].bits(), 2048);
        assert_eq!(hex::encode(fingerprint(&n[0])), "49d96fae9bfc0e84bba3");
    }

    #[test]
    fn build_then_load_refuses_the_weak_key_only() {
        let keys = tempfile::tempdir().unwrap();
        std::fs::create_dir(keys.path().join("x86_64")).unwrap();
        std::fs::write(keys.path().join("x86_64/1000.key"), WEAK).unwrap();
        std::fs::write(keys.path().join("README"), "not a key").unwrap();
        let out = tempfile::tempdir().unwrap();
        let report = build(keys.path(), out.path()).unwrap();
        assert_eq!(report.written, BTreeMap::from([(2048, 1)]));
        assert_eq!((report.files, report.skipped.len()), (2, 1));
        let text = std::fs::read_to_string(out.path().join("blacklist.RSA-2048")).unwrap();
        assert!(text.lines().any(|l| l == "49d96fae9bfc0e84bba3"), "{text}");

        let lists = DebianWeakKeys::load(out.path()).unwrap();
        assert_eq!(lists.missing(), vec![3072, 4096]);
        let weak = moduli(WEAK.as_bytes()).unwrap().remove(0);
        assert!(lists.contains(&weak));
        assert!(!lists.contains(&(weak + 2u32)));
    }

    #[test]
    fn a_malformed_list_fails_closed_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("blacklist.RSA-3072"),
            "# header\n\n49d96fae9bfc0e84bba3\n49D96FAE9BFC0E84BBA3\nnot-a-fingerprint\n",
        )
        .unwrap();
        match DebianWeakKeys::load(dir.path()) {
            Err(Error::Config(m)) => assert!(m.contains("blacklist.RSA-3072:5"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            DebianWeakKeys::load(&dir.path().join("absent")),
            Err(Error::Config(_))
        ));
    }
}
