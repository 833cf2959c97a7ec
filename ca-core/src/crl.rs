//! Certificate revocation lists: encoding, linting and the in-memory entry list they are built
//! from (RFC 5280 §5; TLS BR §7.2; docs/REVOCATION.md).
//!
//! Each issuing CA publishes a **full CRL** (every revoked, held or abandoned serial; no
//! IssuingDistributionPoint, TLS BR §7.2.2.1 "NOT RECOMMENDED for full and complete CRLs") and
//! **partitioned CRLs**: a certificate records at reservation which partition it belongs to and
//! its CRL distribution point names that partition's URL; the partition's CRL carries a critical
//! IssuingDistributionPoint whose `fullName` is byte-identical to that URL and asserts
//! `onlyContainsUserCerts` (RFC 5280 §5.2.5; TLS BR §7.2.2.1). The partitions together cover
//! every certificate, and no serial is in two of them: the partition is a function of the
//! serial, recorded once.
//!
//! Speed: a CRL of a million entries is built from DER entries kept in memory ([`EntryList`]):
//! each entry is encoded once, when its status changes, and a publication only concatenates
//! them, lints the result with a streaming pass (no tree is built) and signs it.

use std::collections::BTreeMap;
use std::time::Duration;

use const_oid::db::rfc5280::{
    ID_CE_AUTHORITY_KEY_IDENTIFIER, ID_CE_CRL_NUMBER, ID_CE_CRL_REASONS,
    ID_CE_ISSUING_DISTRIBUTION_POINT,
};
use der::asn1::{AnyRef, Ia5String, IntRef, OctetString, UintRef, UtcTime};
use der::{Decode, Encode, Header, Length, Reader, SliceReader, Tag, TagMode, TagNumber};
use x509_cert::ext::pkix::crl::{CrlNumber, IssuingDistributionPoint};
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlReason};
use x509_cert::ext::Extension;
use x509_cert::time::Time;

use crate::error::{Error, Result};
use crate::profile::CaId;
use crate::serial::SerialNumber;

/// Entries stay on CRLs for this long after their certificate expires (BR §4.10.1: "not
/// before the revoked certificate expires"; we keep them one more week).
pub const KEEP_AFTER_EXPIRY: i64 = 7 * 86_400;

/// The most partitions a CA may be configured with.
pub const MAX_PARTITIONS: u16 = 1024;

/// Which CRL of a CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The full and complete CRL.
    Full,
    /// One partition.
    Partition(u16),
}

impl Scope {
    /// The file name under `<data-dir>/crl/` and `/crl/` on the web.
    pub fn file_name(self, ca: CaId) -> String {
        match self {
            Scope::Full => format!("{}.crl", ca.name()),
            Scope::Partition(k) => format!("{}-p{k}.crl", ca.name()),
        }
    }

    /// The URL of this CRL: what certificates put in their CRL distribution point and, for a
    /// partition, what its IssuingDistributionPoint names.
    pub fn url(self, base_url: &str, ca: CaId) -> String {
        format!(
            "{}/crl/{}",
            base_url.trim_end_matches('/'),
            self.file_name(ca)
        )
    }

    /// Parses a file name made by [`Scope::file_name`].
    pub fn parse_file(name: &str) -> Option<(CaId, Scope)> {
        let stem = name.strip_suffix(".crl")?;
        if let Ok(id) = CaId::from_name(stem) {
            return Some((id, Scope::Full));
        }
        let (ca, k) = stem.rsplit_once("-p")?;
        // A root publishes only its full CRL.
        let role = CaId::from_name(ca).ok().filter(|id| !id.is_root())?;
        // Digits only, no sign or leading zero: one name per partition.
        if k.is_empty()
            || !k.bytes().all(|b| b.is_ascii_digit())
            || (k.len() > 1 && k.starts_with('0'))
        {
            return None;
        }
        let k: u16 = k.parse().ok()?;
        (k < MAX_PARTITIONS).then_some((role, Scope::Partition(k)))
    }

    /// The value kept in `crls.partition_no`: −1 for the full CRL.
    pub fn code(self) -> i64 {
        match self {
            Scope::Full => -1,
            Scope::Partition(k) => i64::from(k),
        }
    }

    /// The inverse of [`Scope::code`].
    pub fn from_code(code: i64) -> Option<Scope> {
        match code {
            -1 => Some(Scope::Full),
            k => u16::try_from(k).ok().map(Scope::Partition),
        }
    }
}

/// The partition of a serial when a CA has `partitions` of them (0: not partitioned). A
/// function of the serial's random low bits, so partitions fill evenly.
pub fn partition_of(serial: &SerialNumber, partitions: u16) -> Option<u16> {
    if partitions == 0 {
        return None;
    }
    let b = serial.as_bytes();
    Some(u16::from_be_bytes([b[14], b[15]]) % partitions)
}

/// One CRL entry as stored: what [`EntryList`] is loaded and updated from.
#[derive(Debug, Clone)]
pub struct EntryRow {
    /// The serial.
    pub serial: SerialNumber,
    /// RFC 5280 reason code; `None`: no reasonCode (unspecified, or an abandoned serial).
    pub reason: Option<i64>,
    /// revocationDate, Unix seconds.
    pub revoked_at: i64,
    /// The certificate's notAfter (`None` for a serial never signed).
    pub not_after: Option<i64>,
    /// Its partition, if its CA was partitioned when it was reserved.
    pub partition: Option<u16>,
    /// Whether its profile allows certificateHold ([`crate::profile::Profile::hold_allowed_for`]).
    pub hold_allowed: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    der: Box<[u8]>,
    partition: Option<u16>,
    keep_until: i64,
}

/// Every current entry of one CA's CRLs, DER-encoded once, in serial order.
#[derive(Debug, Default)]
pub struct EntryList {
    entries: BTreeMap<SerialNumber, Entry>,
}

impl EntryList {
    /// Sets (or replaces) the entry of `row.serial`.
    /// An entry certificateHold for a certificate whose profile forbids hold (S/MIME BR §7.2.2
    /// Strict, TLS BR §4.9.13) is refused ([`Error::Lint`]): no CRL lists it; the revoke paths
    /// refuse such a hold, so only data from before that check can hold one, and an officer
    /// must release it or revoke it for good.
    pub fn insert(&mut self, row: &EntryRow) -> Result<()> {
        if row.reason == Some(6) && !row.hold_allowed {
            return Err(Error::Lint(vec![format!(
                "serial {}: certificateHold for a certificate whose profile forbids hold \
                 (S/MIME BR §7.2.2, TLS BR §4.9.13): release it or revoke it",
                row.serial.to_hex()
            )]));
        }
        let der = encode_entry(&row.serial, row.revoked_at, row.reason)?;
        // A serial never signed has no expiry of its own: keep it as long as any certificate
        // of the CA could be valid (it is listed so that it is never taken for unknown).
        let keep_until = row
            .not_after
            .map_or(i64::MAX, |t| t.saturating_add(KEEP_AFTER_EXPIRY));
        self.entries.insert(
            row.serial,
            Entry {
                der: der.into_boxed_slice(),
                partition: row.partition,
                keep_until,
            },
        );
        Ok(())
    }

    /// Removes the entry of `serial` (released from hold).
    pub fn remove(&mut self, serial: &SerialNumber) {
        self.entries.remove(serial);
    }

    /// Drops entries whose certificate expired more than [`KEEP_AFTER_EXPIRY`] before `now`.
    pub fn expire(&mut self, now: i64) {
        self.entries.retain(|_, e| e.keep_until >= now);
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The DER entries in `scope`, in serial order.
    pub fn select(&self, scope: Scope) -> Vec<&[u8]> {
        self.entries
            .values()
            .filter(|e| match scope {
                Scope::Full => true,
                Scope::Partition(k) => e.partition == Some(k),
            })
            .map(|e| &*e.der)
            .collect()
    }

    /// The serials in `scope`, in order (for tests and checks).
    pub fn serials(&self, scope: Scope) -> Vec<SerialNumber> {
        self.entries
            .iter()
            .filter(|(_, e)| match scope {
                Scope::Full => true,
                Scope::Partition(k) => e.partition == Some(k),
            })
            .map(|(s, _)| *s)
            .collect()
    }
}

/// RFC 5280 §4.1.2.5 / §5.1.2.4: UTCTime through 2049, GeneralizedTime from 2050.
pub fn time(unix: i64) -> Result<Time> {
    let secs = u64::try_from(unix).map_err(|_| Error::Encoding("time before 1970".into()))?;
    let d = Duration::from_secs(secs);
    Ok(if unix < 2_524_608_000 {
        Time::UtcTime(UtcTime::from_unix_duration(d)?)
    } else {
        Time::GeneralTime(der::asn1::GeneralizedTime::from_unix_duration(d)?)
    })
}

/// `revokedCertificates` entry (RFC 5280 §5.1): the serial encoded exactly as in the
/// certificate (a positive INTEGER, minimal octets), the revocation date, and a non-critical
/// reasonCode unless the reason is unspecified (TLS BR §7.2.2: then it is omitted).
#[derive(der::Sequence)]
struct EntryOut<'a> {
    serial: UintRef<'a>,
    date: Time,
    extensions: Option<Vec<Extension>>,
}

fn reason_of(code: i64) -> Option<CrlReason> {
    Some(match code {
        1 => CrlReason::KeyCompromise,
        2 => CrlReason::CaCompromise,
        3 => CrlReason::AffiliationChanged,
        4 => CrlReason::Superseded,
        5 => CrlReason::CessationOfOperation,
        6 => CrlReason::CertificateHold,
        9 => CrlReason::PrivilegeWithdrawn,
        10 => CrlReason::AaCompromise,
        _ => return None,
    })
}

/// Encodes one CRL entry.
pub fn encode_entry(
    serial: &SerialNumber,
    revoked_at: i64,
    reason: Option<i64>,
) -> Result<Vec<u8>> {
    let extensions = match reason.and_then(reason_of) {
        Some(r) => Some(vec![Extension {
            extn_id: ID_CE_CRL_REASONS,
            critical: false,
            extn_value: OctetString::new(r.to_der()?)?,
        }]),
        None => None,
    };
    Ok(EntryOut {
        serial: UintRef::new(serial.as_bytes())?,
        date: time(revoked_at)?,
        extensions,
    }
    .to_der()?)
}

/// Everything a TBSCertList says besides its entries.
#[derive(Debug, Clone, Copy)]
pub struct TbsSpec<'a> {
    /// The signature AlgorithmIdentifier, DER (also the outer signatureAlgorithm).
    pub algorithm: &'a [u8],
    /// The CA's subject Name, DER (TLS BR §7.2: byte-identical).
    pub issuer: &'a [u8],
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// CRLNumber (RFC 5280 §5.2.3).
    pub number: i64,
    /// The CA's subjectKeyIdentifier, for the AKI (RFC 5280 §5.2.1).
    pub key_id: &'a [u8],
    /// For a partition: the URL its certificates name (IssuingDistributionPoint fullName).
    pub idp_uri: Option<&'a str>,
}

fn extension(
    id: der::oid::ObjectIdentifier,
    critical: bool,
    value: &impl Encode,
) -> Result<Extension> {
    Ok(Extension {
        extn_id: id,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// The IssuingDistributionPoint of a partition (TLS BR §7.2.2.1): distributionPoint fullName
/// with the one URI, onlyContainsUserCerts, nothing else.
fn idp(uri: &str) -> Result<IssuingDistributionPoint> {
    Ok(IssuingDistributionPoint {
        distribution_point: Some(DistributionPointName::FullName(vec![
            GeneralName::UniformResourceIdentifier(Ia5String::new(uri)?),
        ])),
        only_contains_user_certs: true,
        only_contains_ca_certs: false,
        only_some_reasons: None,
        indirect_crl: false,
        only_contains_attribute_certs: false,
    })
}

fn push_header(out: &mut Vec<u8>, tag: Tag, len: usize) -> Result<()> {
    let header = Header::new(tag, Length::try_from(len)?)?;
    header.encode_to_vec(out)?;
    Ok(())
}

/// Encodes a TBSCertList (RFC 5280 §5.1.2) around already-encoded entries, which must be in
/// serial order: version v2, signature, issuer, thisUpdate, nextUpdate, revokedCertificates
/// (omitted when empty, §5.1.2.6), and the extensions AKI, CRLNumber and, for a partition, a
/// critical IssuingDistributionPoint.
pub fn encode_tbs(spec: &TbsSpec<'_>, entries: &[&[u8]]) -> Result<Vec<u8>> {
    let number =
        u64::try_from(spec.number).map_err(|_| Error::Encoding("negative CRLNumber".into()))?;
    let mut extensions = vec![
        extension(
            ID_CE_AUTHORITY_KEY_IDENTIFIER,
            false,
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(spec.key_id)?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
        )?,
        extension(
            ID_CE_CRL_NUMBER,
            false,
            &CrlNumber(der::asn1::Uint::new(&number.to_be_bytes())?),
        )?,
    ];
    if let Some(uri) = spec.idp_uri {
        extensions.push(extension(
            ID_CE_ISSUING_DISTRIBUTION_POINT,
            true,
            &idp(uri)?,
        )?);
    }
    let extensions = der::asn1::ContextSpecific {
        tag_number: TagNumber::N0,
        tag_mode: TagMode::Explicit,
        value: extensions,
    }
    .to_der()?;
    let head = [
        1u8.to_der()?,
        spec.algorithm.to_vec(),
        spec.issuer.to_vec(),
        time(spec.this_update)?.to_der()?,
        time(spec.next_update)?.to_der()?,
    ]
    .concat();
    let entries_len: usize = entries.iter().map(|e| e.len()).sum();
    let mut list_header = Vec::new();
    if !entries.is_empty() {
        push_header(&mut list_header, Tag::Sequence, entries_len)?;
    }
    let body = head.len() + list_header.len() + entries_len + extensions.len();
    let mut out = Vec::with_capacity(body + 8);
    push_header(&mut out, Tag::Sequence, body)?;
    out.extend_from_slice(&head);
    out.extend_from_slice(&list_header);
    for e in entries {
        out.extend_from_slice(e);
    }
    out.extend_from_slice(&extensions);
    Ok(out)
}

/// The facts a TBSCertList is linted against.
#[derive(Debug, Clone, Copy)]
pub struct LintInput<'a> {
    /// The TBSCertList, DER.
    pub tbs: &'a [u8],
    /// The AlgorithmIdentifier the CA signs with.
    pub algorithm: &'a [u8],
    /// The CA's subject name, DER.
    pub issuer_subject_der: &'a [u8],
    /// The CA's subjectKeyIdentifier.
    pub issuer_key_id: &'a [u8],
    /// The longest nextUpdate − thisUpdate allowed.
    pub max_validity_secs: i64,
    /// Whether certificateHold entries are allowed (not under the TLS BR).
    pub hold_allowed: bool,
    /// For a partition, the URL its IssuingDistributionPoint must name; `None` for a full CRL,
    /// which must not have one.
    pub idp_uri: Option<&'a str>,
}

/// The content octets of a SEQUENCE, undecoded.
struct RawSequence<'a>(&'a [u8]);

impl<'a> der::DecodeValue<'a> for RawSequence<'a> {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        Ok(RawSequence(reader.read_slice(header.length)?))
    }
}

impl der::EncodeValue for RawSequence<'_> {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.0.len())
    }

    fn encode_value(&self, writer: &mut impl der::Writer) -> der::Result<()> {
        writer.write(self.0)
    }
}

impl der::FixedTag for RawSequence<'_> {
    const TAG: Tag = Tag::Sequence;
}

#[derive(der::Sequence)]
struct TbsView<'a> {
    version: Option<u8>,
    signature: AnyRef<'a>,
    issuer: AnyRef<'a>,
    this_update: Time,
    next_update: Option<Time>,
    revoked: Option<RawSequence<'a>>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    extensions: Option<Vec<Extension>>,
}

#[derive(der::Sequence)]
struct EntryView<'a> {
    serial: IntRef<'a>,
    date: Time,
    extensions: Option<RawSequence<'a>>,
}

/// An Extension (RFC 5280 §4.1), borrowed: decoding a million entries allocates nothing.
#[derive(der::Sequence)]
struct ExtensionView<'a> {
    extn_id: der::oid::ObjectIdentifier,
    #[asn1(default = "Default::default")]
    critical: bool,
    extn_value: der::asn1::OctetStringRef<'a>,
}

/// Lints a TBSCertList before it is signed (RFC 5280 §5; TLS BR §4.9.7, §7.2): returns every
/// finding (empty = clean). One streaming pass over the entries: positive serials of at most
/// 20 octets in strictly ascending order (so none twice), revocation dates not after
/// thisUpdate, reasonCode never critical, never unspecified, certificateHold only where
/// allowed, no other entry extension; v2, the CA's algorithm, byte-identical issuer,
/// nextUpdate within the limit; AKI = the CA's key identifier, CRLNumber in 0..2^159, an
/// IssuingDistributionPoint exactly for partitions, no other extension.
pub fn lint(input: &LintInput<'_>) -> Vec<String> {
    let mut f: Vec<String> = Vec::new();
    let tbs = match TbsView::from_der(input.tbs) {
        Ok(t) => t,
        Err(e) => return vec![format!("TBSCertList does not parse: {e}")],
    };
    if tbs.version != Some(1) {
        f.push("CRL version must be v2 (RFC 5280 §5.1.2.1)".into());
    }
    if tbs.signature.to_der().ok().as_deref() != Some(input.algorithm) {
        f.push("tbsCertList.signature is not the CA's signature algorithm".into());
    }
    if tbs.issuer.to_der().ok().as_deref() != Some(input.issuer_subject_der) {
        f.push("CRL issuer is not byte-identical to the CA's subject (TLS BR §7.2)".into());
    }
    let this_update = tbs.this_update.to_unix_duration().as_secs() as i64;
    match tbs.next_update {
        None => f.push("nextUpdate is required (RFC 5280 §5.1.2.5)".into()),
        Some(n) => {
            let n = n.to_unix_duration().as_secs() as i64;
            if n <= this_update {
                f.push("nextUpdate is not after thisUpdate".into());
            } else if n - this_update > input.max_validity_secs {
                f.push(format!(
                    "nextUpdate is more than {} s after thisUpdate (TLS BR §4.9.7)",
                    input.max_validity_secs
                ));
            }
        }
    }
    match &tbs.revoked {
        Some(list) if list.0.is_empty() => {
            f.push("revokedCertificates is present but empty (RFC 5280 §5.1.2.6)".into())
        }
        Some(list) => lint_entries(list.0, this_update, input, &mut f),
        None => {}
    }
    let exts = tbs.extensions.unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for e in &exts {
        if !seen.insert(e.extn_id) {
            f.push(format!(
                "extension {} appears twice (RFC 5280 §4.2)",
                e.extn_id
            ));
        }
    }
    let find = |id| exts.iter().find(|e| e.extn_id == id);
    match find(ID_CE_AUTHORITY_KEY_IDENTIFIER)
        .and_then(|e| AuthorityKeyIdentifier::from_der(e.extn_value.as_bytes()).ok().map(|a| (e.critical, a)))
    {
        Some((false, a)) if a.key_identifier.as_ref().map(|k| k.as_bytes()) == Some(input.issuer_key_id) => {}
        _ => f.push(
            "CRL authorityKeyIdentifier missing, critical or not the CA's key identifier (RFC 5280 §5.2.1)"
                .into(),
        ),
    }
    match find(ID_CE_CRL_NUMBER).and_then(|e| {
        der::asn1::Int::from_der(e.extn_value.as_bytes())
            .ok()
            .map(|n| (e.critical, n))
    }) {
        Some((false, n)) => {
            let b = n.as_bytes();
            if b.first().is_some_and(|x| x & 0x80 != 0) || b.len() > 20 {
                f.push("CRLNumber must be in 0 .. 2^159 (TLS BR §7.2.2)".into());
            }
        }
        _ => f.push("CRLNumber is required and not critical (RFC 5280 §5.2.3)".into()),
    }
    match (find(ID_CE_ISSUING_DISTRIBUTION_POINT), input.idp_uri) {
        (None, None) => {}
        (Some(_), None) => f.push(
            "a full CRL carries no IssuingDistributionPoint (TLS BR §7.2.2.1)".into(),
        ),
        (None, Some(_)) => f.push(
            "a partitioned CRL needs an IssuingDistributionPoint (TLS BR §7.2.2.1, RFC 5280 §5.2.5)"
                .into(),
        ),
        (Some(e), Some(uri)) => {
            let expected = idp(uri).and_then(|i| Ok(i.to_der()?));
            if !e.critical {
                f.push("IssuingDistributionPoint must be critical (RFC 5280 §5.2.5)".into());
            }
            if expected.ok().as_deref() != Some(e.extn_value.as_bytes()) {
                f.push(format!(
                    "IssuingDistributionPoint must name exactly {uri} with onlyContainsUserCerts (TLS BR §7.2.2.1)"
                ));
            }
        }
    }
    for e in &exts {
        if ![
            ID_CE_AUTHORITY_KEY_IDENTIFIER,
            ID_CE_CRL_NUMBER,
            ID_CE_ISSUING_DISTRIBUTION_POINT,
        ]
        .contains(&e.extn_id)
        {
            f.push(format!(
                "extension {} is NOT RECOMMENDED on CRLs (TLS BR §7.2.2)",
                e.extn_id
            ));
        }
    }
    f
}

/// The magnitude of a positive INTEGER's content octets, for ordering.
fn magnitude(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[start..]
}

/// What linting a run of entries found: each kind of problem once, with the first serial it
/// was found on, and the run's first and last serial (to check the order across runs).
#[derive(Default)]
struct ChunkLint<'a> {
    findings: Vec<(&'static str, String)>,
    first: Option<&'a [u8]>,
    last: Option<&'a [u8]>,
}

/// Cuts the entries into about `parts` runs at entry boundaries (reading headers only).
fn split_entries(list: &[u8], parts: usize) -> der::Result<Vec<&[u8]>> {
    let mut out = Vec::with_capacity(parts);
    let mut reader = SliceReader::new(list)?;
    let mut start = 0;
    let step = list.len() / parts.max(1) + 1;
    while !reader.is_finished() {
        let header = Header::decode(&mut reader)?;
        reader.read_slice(header.length)?;
        let end = usize::try_from(reader.position())?;
        if end - start >= step {
            out.push(&list[start..end]);
            start = end;
        }
    }
    if start < list.len() {
        out.push(&list[start..]);
    }
    Ok(out)
}

/// Lints the entries on every core: one run per thread, then the order across runs.
fn lint_entries(list: &[u8], this_update: i64, input: &LintInput<'_>, f: &mut Vec<String>) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let runs = match split_entries(list, if list.len() < 1 << 20 { 1 } else { threads }) {
        Ok(r) => r,
        Err(e) => {
            f.push(format!("revokedCertificates entries do not parse: {e}"));
            return;
        }
    };
    let results: Vec<ChunkLint<'_>> = std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .iter()
            .map(|run| scope.spawn(move || lint_run(run, this_update, input)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| ChunkLint {
                    findings: vec![("panic", "the entry lint panicked".into())],
                    ..ChunkLint::default()
                })
            })
            .collect()
    });
    let mut kinds = std::collections::HashSet::new();
    let mut previous_last: Option<&[u8]> = None;
    for r in &results {
        if let (Some(p), Some(first)) = (previous_last, r.first) {
            if (p.len(), p) >= (first.len(), first) && kinds.insert(ORDER) {
                f.push(format!("{ORDER} (first at serial {})", hex::encode(first)));
            }
        }
        previous_last = r.last.or(previous_last);
        for (kind, message) in &r.findings {
            if kinds.insert(kind) {
                f.push(message.clone());
            }
        }
    }
}

const ORDER: &str = "entries not in strictly ascending serial order (a serial listed twice?)";

fn lint_run<'a>(list: &'a [u8], this_update: i64, input: &LintInput<'_>) -> ChunkLint<'a> {
    let mut out = ChunkLint::default();
    let mut reader = match SliceReader::new(list) {
        Ok(r) => r,
        Err(e) => {
            out.findings
                .push(("parse", format!("revokedCertificates: {e}")));
            return out;
        }
    };
    let mut previous: Option<&[u8]> = None;
    // Report each kind of problem once, with the first serial it was found on.
    let mut reported = std::collections::HashSet::new();
    let mut report = |f: &mut Vec<(&'static str, String)>, kind: &'static str, serial: &[u8]| {
        if reported.insert(kind) {
            f.push((
                kind,
                format!("{kind} (first at serial {})", hex::encode(serial)),
            ));
        }
    };
    let f = &mut out.findings;
    while !reader.is_finished() {
        let entry = match EntryView::decode(&mut reader) {
            Ok(e) => e,
            Err(e) => {
                f.push((
                    "parse",
                    format!("a revokedCertificates entry does not parse: {e}"),
                ));
                break;
            }
        };
        let raw = entry.serial.as_bytes();
        let serial = magnitude(raw);
        if raw.first().is_some_and(|b| b & 0x80 != 0) || serial.is_empty() {
            report(f, "serial is not positive (RFC 5280 §4.1.2.2)", raw);
        }
        if raw.len() > 20 {
            report(
                f,
                "serial is longer than 20 octets (RFC 5280 §4.1.2.2)",
                raw,
            );
        }
        if let Some(p) = previous {
            if (p.len(), p) >= (serial.len(), serial) {
                report(f, ORDER, raw);
            }
        }
        if out.first.is_none() {
            out.first = Some(serial);
        }
        previous = Some(serial);
        if entry.date.to_unix_duration().as_secs() as i64 > this_update {
            report(f, "revocationDate is after thisUpdate", raw);
        }
        let Some(exts) = entry.extensions else {
            continue;
        };
        let mut ext_reader = match SliceReader::new(exts.0) {
            Ok(r) => r,
            Err(_) => {
                report(f, "entry extensions do not parse", raw);
                continue;
            }
        };
        while !ext_reader.is_finished() {
            let Ok(ext) = ExtensionView::decode(&mut ext_reader) else {
                report(f, "entry extensions do not parse", raw);
                break;
            };
            if ext.extn_id != ID_CE_CRL_REASONS {
                report(
                    f,
                    "entry extension other than reasonCode (TLS BR §7.2.2)",
                    raw,
                );
                continue;
            }
            if ext.critical {
                report(f, "reasonCode must not be critical (TLS BR §7.2.2)", raw);
            }
            match CrlReason::from_der(ext.extn_value.as_bytes()) {
                Ok(CrlReason::Unspecified) => report(
                    f,
                    "reasonCode unspecified must be omitted (TLS BR §7.2.2)",
                    raw,
                ),
                Ok(CrlReason::CertificateHold) if !input.hold_allowed => report(
                    f,
                    "certificateHold is not allowed on this CA (TLS BR §4.9.13)",
                    raw,
                ),
                Ok(CrlReason::RemoveFromCRL) => report(
                    f,
                    "removeFromCRL belongs in delta CRLs only (RFC 5280 §5.3.1)",
                    raw,
                ),
                Ok(_) => {}
                Err(_) => report(f, "reasonCode does not parse", raw),
            }
        }
    }
    out.last = previous;
    out
}
#[cfg(test)]
mod tests {
    use super::*;

    fn serial(hex: &str) -> SerialNumber {
        SerialNumber::from_hex(hex).unwrap()
    }

    #[test]
    fn file_names_round_trip_and_strangers_are_refused() {
        use crate::profile::{CaId, CaRole};
        let second = CaId {
            role: CaRole::Individual,
            generation: 2,
        };
        for (role, scope) in [
            (CaId::first(CaRole::Individual), Scope::Full),
            (CaId::first(CaRole::Server), Scope::Partition(0)),
            (CaId::first(CaRole::Individual), Scope::Partition(15)),
            (CaId::first(CaRole::Root), Scope::Full),
            (CaId::first(CaRole::TlsRoot), Scope::Full),
            (second, Scope::Full),
            (second, Scope::Partition(3)),
            (
                CaId {
                    role: CaRole::Server,
                    generation: 12,
                },
                Scope::Partition(0),
            ),
        ] {
            assert_eq!(
                Scope::parse_file(&scope.file_name(role)),
                Some((role, scope))
            );
            assert_eq!(Scope::from_code(scope.code()), Some(scope));
        }
        for bad in [
            "individual-p.crl",
            "individual-p01.crl",
            "individual-p-1.crl",
            "individual-p1024.crl",
            "individual-p1.der",
            "nobody-p1.crl",
            "individual-p+1.crl",
            "individual-1.crl",
            "individual-02.crl",
            "individual-0.crl",
            "individual--2.crl",
            "tls-root-2-p1.crl",
            "individual-2-p01.crl",
        ] {
            assert_eq!(Scope::parse_file(bad), None, "{bad}");
        }
    }

    #[test]
    fn partitions_come_from_the_serial() {
        let s = serial("00000000000000000000000000000123");
        assert_eq!(partition_of(&s, 0), None);
        assert_eq!(partition_of(&s, 16), Some(0x123 % 16));
        assert_eq!(partition_of(&s, 1), Some(0));
    }

    /// Our entry encoding equals rcgen's (which encodes the certificates' serials): serials
    /// with a leading zero octet and with the top bit set are the edge cases.
    #[test]
    fn entries_match_an_independent_encoder() {
        let issuer_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&issuer_key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_der(ca_cert.der(), &issuer_key).unwrap();
        for (hex, reason) in [
            ("00ab0000000000000000000000000001", Some(1)),
            ("80000000000000000000000000000001", None),
            ("0000000000000000000000000000007f", Some(6)),
            ("7fffffffffffffffffffffffffffffff", Some(4)),
        ] {
            let s = serial(hex);
            let at = 1_800_000_000;
            let ours = encode_entry(&s, at, reason).unwrap();
            let crl = rcgen::CertificateRevocationListParams {
                this_update: time::OffsetDateTime::from_unix_timestamp(at).unwrap(),
                next_update: time::OffsetDateTime::from_unix_timestamp(at + 86_400).unwrap(),
                crl_number: rcgen::SerialNumber::from_slice(&[1]),
                issuing_distribution_point: None,
                revoked_certs: vec![rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(s.as_bytes()),
                    revocation_time: time::OffsetDateTime::from_unix_timestamp(at).unwrap(),
                    reason_code: match reason {
                        Some(1) => Some(rcgen::RevocationReason::KeyCompromise),
                        Some(4) => Some(rcgen::RevocationReason::Superseded),
                        Some(6) => Some(rcgen::RevocationReason::CertificateHold),
                        _ => None,
                    },
                    invalidity_date: None,
                }],
                key_identifier_method: rcgen::KeyIdMethod::PreSpecified(vec![1; 20]),
            }
            .signed_by(&issuer)
            .unwrap();
            let der = crl.der().to_vec();
            assert!(
                der.windows(ours.len()).any(|w| w == ours.as_slice()),
                "entry {hex} is not encoded as rcgen encodes it"
            );
        }
    }

    fn spec<'a>(alg: &'a [u8], issuer: &'a [u8], idp: Option<&'a str>) -> TbsSpec<'a> {
        TbsSpec {
            algorithm: alg,
            issuer,
            this_update: 1_800_000_000,
            next_update: 1_800_000_000 + 7 * 86_400,
            number: 42,
            key_id: &[7; 20],
            idp_uri: idp,
        }
    }

    fn input<'a>(
        tbs: &'a [u8],
        alg: &'a [u8],
        issuer: &'a [u8],
        idp: Option<&'a str>,
    ) -> LintInput<'a> {
        LintInput {
            tbs,
            algorithm: alg,
            issuer_subject_der: issuer,
            issuer_key_id: &[7; 20],
            max_validity_secs: 10 * 86_400,
            hold_allowed: false,
            idp_uri: idp,
        }
    }

    /// A clean TBS from the encoder lints clean, with and without an IDP; then one mutation per
    /// rule, each producing its finding.
    #[test]
    fn lint_finds_each_violation() {
        let alg = crate::sigalg::algorithm_identifier(hsm::Algorithm::EcdsaP256Sha256).unwrap();
        let issuer = x509_cert::name::Name::default().to_der().unwrap();
        let uri = "http://pki.example.hk/crl/server-p3.crl";
        let e1 = encode_entry(&serial("01"), 1_799_999_000, Some(1)).unwrap();
        let e2 = encode_entry(&serial("ff01"), 1_799_999_000, None).unwrap();
        let (e1, e2) = (e1.as_slice(), e2.as_slice());
        let clean = [e1, e2];
        for idp in [None, Some(uri)] {
            let tbs = encode_tbs(&spec(&alg, &issuer, idp), &clean).unwrap();
            assert_eq!(lint(&input(&tbs, &alg, &issuer, idp)), Vec::<String>::new());
            let empty = encode_tbs(&spec(&alg, &issuer, idp), &[]).unwrap();
            assert_eq!(
                lint(&input(&empty, &alg, &issuer, idp)),
                Vec::<String>::new()
            );
        }
        let hold = encode_entry(&serial("02"), 1_799_999_000, Some(6)).unwrap();
        let unspecified = encode_entry(&serial("03"), 1_799_999_000, Some(0)).unwrap();
        assert_eq!(
            unspecified.len(),
            encode_entry(&serial("03"), 1_799_999_000, None)
                .unwrap()
                .len(),
            "unspecified is omitted"
        );
        let future = encode_entry(&serial("04"), 1_800_000_001, None).unwrap();
        let (hold, future) = (hold.as_slice(), future.as_slice());
        type Case<'a> = (&'a str, Vec<&'a [u8]>, TbsSpec<'a>, Option<&'a str>);
        let cases: Vec<Case<'_>> = vec![
            ("ascending", vec![e2, e1], spec(&alg, &issuer, None), None),
            ("ascending", vec![e1, e1], spec(&alg, &issuer, None), None),
            (
                "certificateHold",
                vec![e1, hold],
                spec(&alg, &issuer, None),
                None,
            ),
            (
                "after thisUpdate",
                vec![e1, future],
                spec(&alg, &issuer, None),
                None,
            ),
            (
                "needs an IssuingDistributionPoint",
                vec![e1],
                spec(&alg, &issuer, None),
                Some(uri),
            ),
            (
                "carries no IssuingDistributionPoint",
                vec![e1],
                spec(&alg, &issuer, Some(uri)),
                None,
            ),
            (
                "must name exactly",
                vec![e1],
                spec(&alg, &issuer, Some("http://x.example/crl/a.crl")),
                Some(uri),
            ),
            (
                "more than",
                vec![e1],
                TbsSpec {
                    next_update: 1_800_000_000 + 11 * 86_400,
                    ..spec(&alg, &issuer, None)
                },
                None,
            ),
            (
                "not after thisUpdate",
                vec![e1],
                TbsSpec {
                    next_update: 1_800_000_000,
                    ..spec(&alg, &issuer, None)
                },
                None,
            ),
            (
                "authorityKeyIdentifier",
                vec![e1],
                TbsSpec {
                    key_id: &[8; 20],
                    ..spec(&alg, &issuer, None)
                },
                None,
            ),
        ];
        for (expected, entries, s, idp) in cases {
            let tbs = encode_tbs(&s, &entries).unwrap();
            let findings = lint(&input(&tbs, &alg, &issuer, idp));
            assert!(
                findings.iter().any(|x| x.contains(expected)),
                "expected {expected:?}, got {findings:?}"
            );
        }
        // Another issuer, another algorithm.
        let tbs = encode_tbs(&spec(&alg, &issuer, None), &clean).unwrap();
        let mut other_issuer = issuer.clone();
        other_issuer.push(0);
        let f = lint(&LintInput {
            issuer_subject_der: &other_issuer,
            ..input(&tbs, &alg, &issuer, None)
        });
        assert!(f.iter().any(|x| x.contains("byte-identical")), "{f:?}");
        let f = lint(&LintInput {
            algorithm: &[0x30, 0x00],
            ..input(&tbs, &alg, &issuer, None)
        });
        assert!(f.iter().any(|x| x.contains("signature algorithm")), "{f:?}");
        // Garbage never panics.
        for cut in 0..tbs.len() {
            let _ = lint(&input(&tbs[..cut], &alg, &issuer, None));
        }
    }

    /// Above 1 MiB the entries are linted in parallel runs; order is still checked across the
    /// seams between runs.
    #[test]
    fn parallel_lint_checks_order_across_runs() {
        let alg = crate::sigalg::algorithm_identifier(hsm::Algorithm::EcdsaP256Sha256).unwrap();
        let issuer = x509_cert::name::Name::default().to_der().unwrap();
        let entries: Vec<Vec<u8>> = (1..=30_000u32)
            .map(|i| {
                let mut b = [0u8; 16];
                b[12..].copy_from_slice(&i.to_be_bytes());
                encode_entry(
                    &SerialNumber::from_be_bytes(&b).unwrap(),
                    1_799_000_000,
                    Some(4),
                )
                .unwrap()
            })
            .collect();
        let lint_of = |list: &[&[u8]]| {
            let tbs = encode_tbs(&spec(&alg, &issuer, None), list).unwrap();
            assert!(tbs.len() > 1 << 20);
            lint(&input(&tbs, &alg, &issuer, None))
        };
        let mut list: Vec<&[u8]> = entries.iter().map(|e| e.as_slice()).collect();
        assert_eq!(lint_of(&list), Vec::<String>::new());
        let all = list.concat();
        let runs = split_entries(&all, 2).unwrap();
        assert_eq!(runs.len(), 2, "two runs");
        // The last entry of the first run repeated as the first of the second.
        let mid = runs[0].len() / entries[0].len();
        list[mid] = list[mid - 1];
        let f = lint_of(&list);
        assert!(f.iter().any(|x| x.contains("ascending")), "{f:?}");
        // A hold entry deep in the second half is still found.
        let hold = encode_entry(
            &SerialNumber::from_be_bytes(&[0x75, 0x2f]).unwrap(),
            1_799_000_000,
            Some(6),
        )
        .unwrap();
        let mut list: Vec<&[u8]> = entries.iter().map(|e| e.as_slice()).collect();
        list[29_999] = &hold;
        let f = lint_of(&list);
        assert!(f.iter().any(|x| x.contains("certificateHold")), "{f:?}");
    }

    /// Issue 12, defect 1: a certificateHold entry for a certificate whose profile forbids hold
    /// (S/MIME Strict, TLS) never reaches a CRL; the same entry is listed where hold is allowed.
    #[test]
    fn a_hold_is_refused_where_the_profile_forbids_it() {
        let row = |hold_allowed| EntryRow {
            serial: serial("5a"),
            reason: Some(6),
            revoked_at: 1_000,
            not_after: Some(9_000),
            partition: None,
            hold_allowed,
        };
        let mut l = EntryList::default();
        match l.insert(&row(false)) {
            Err(Error::Lint(f)) => assert!(f[0].contains("7.2.2"), "{f:?}"),
            other => panic!("{other:?}"),
        }
        l.insert(&row(true)).unwrap();
    }

    #[test]
    fn entry_list_selects_partitions_and_expires() {
        let mut l = EntryList::default();
        for (i, hex) in ["10", "21", "32", "43"].iter().enumerate() {
            let s = serial(hex);
            l.insert(&EntryRow {
                serial: s,
                reason: Some(1),
                revoked_at: 1_000,
                not_after: Some(2_000 + i as i64 * 1_000),
                partition: partition_of(&s, 2),
                hold_allowed: true,
            })
            .unwrap();
        }
        assert_eq!(l.select(Scope::Full).len(), 4);
        let p0 = l.serials(Scope::Partition(0));
        let p1 = l.serials(Scope::Partition(1));
        assert_eq!(p0.len() + p1.len(), 4);
        assert!(p0.iter().all(|s| !p1.contains(s)));
        l.remove(&serial("10"));
        assert_eq!(l.len(), 3);
        l.expire(4_000 + KEEP_AFTER_EXPIRY + 1);
        assert_eq!(l.serials(Scope::Full), vec![serial("43")]);
    }
}
