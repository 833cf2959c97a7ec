//! OCSP (RFC 6960, with the RFC 5019 high-volume profile): request parsing, response building
//! and linting, and the in-memory table of pre-signed responses every serving instance answers
//! from (docs/OCSP.md).
//!
//! Responses are signed ahead of time by the signing process ([`crate::authority::Authority`])
//! and stored; each serving instance follows the store ([`Cache::sync`]) and answers a request
//! with a map lookup: no signing and no database round trip on the hot path.
//!
//! What a request gets:
//! - a pre-signed response when the issuer is one of ours and the serial is a certificate we
//!   issued (`good`, or `revoked` with its reason; certificateHold while held);
//! - `malformedRequest` when it does not parse as one OCSPRequest with exactly one Request;
//! - `unauthorized` when the issuer is not one we serve, the hash algorithm is neither SHA-1 nor
//!   SHA-256, the serial was never issued (reserved, failed and random serials included: never
//!   `good`, TLS BR §4.9.10), or the response's nextUpdate has passed (RFC 5019 §2.2.3).
//!
//! Nonces (RFC 9654) are ignored: responses are pre-signed and cacheable, so they carry none,
//! as RFC 5019 §2.1 and RFC 9654 §2.1 allow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use der::asn1::{AnyRef, BitStringRef, GeneralizedTime, Null, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use sha2::Digest;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    OcspResponseStatus, ResponderId, ResponseBytes, ResponseData, RevokedInfo, SingleResponse,
};
use x509_parser::prelude::FromDer;

use crate::error::{Error, Result};
use crate::profile::CaId;
use crate::serial::SerialNumber;
use crate::store::{OcspRow, Store};

/// `OCSPResponse { responseStatus malformedRequest }` (RFC 6960 §4.2.1): unsigned.
pub const MALFORMED_REQUEST: &[u8] = &[0x30, 0x03, 0x0a, 0x01, 0x01];
/// `OCSPResponse { responseStatus internalError }`.
pub const INTERNAL_ERROR: &[u8] = &[0x30, 0x03, 0x0a, 0x01, 0x02];
/// `OCSPResponse { responseStatus unauthorized }`.
pub const UNAUTHORIZED: &[u8] = &[0x30, 0x03, 0x0a, 0x01, 0x06];

const OID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");

/// The hash algorithm of a CertID. RFC 5019 clients use SHA-1; RFC 6960 allows others and
/// modern clients send SHA-256. A response is made for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
}

impl HashAlg {
    /// Both, in the order responses are stored.
    pub const ALL: [HashAlg; 2] = [HashAlg::Sha1, HashAlg::Sha256];

    fn oid(self) -> ObjectIdentifier {
        match self {
            HashAlg::Sha1 => OID_SHA1,
            HashAlg::Sha256 => OID_SHA256,
        }
    }

    fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        match *oid {
            OID_SHA1 => Some(HashAlg::Sha1),
            OID_SHA256 => Some(HashAlg::Sha256),
            _ => None,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Sha1 => sha1::Sha1::digest(data).to_vec(),
            HashAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
        }
    }
}

/// The status a response states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Issued and not revoked.
    Good,
    /// Revoked (or held: reason 6, certificateHold) at this Unix time. A reason of `None` or 0
    /// (unspecified) is omitted, as on the CRL.
    Revoked {
        /// Unix seconds.
        at: i64,
        /// RFC 5280 reason code.
        reason: Option<i64>,
    },
}

/// The parts of a certificate a CertID is made of (RFC 6960 §4.1.1): the issuer's name and
/// the issuer's public key BIT STRING contents.
#[derive(Debug, Clone)]
pub struct IssuerKey {
    /// The issuer's subject name, DER.
    pub name_der: Vec<u8>,
    /// The issuer's subjectPublicKey BIT STRING contents.
    pub key_bits: Vec<u8>,
}

impl IssuerKey {
    /// From a (CA or responder) certificate.
    pub fn from_cert(cert_der: &[u8]) -> Result<Self> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
            .map_err(|e| Error::Encoding(format!("certificate does not parse: {e}")))?;
        Ok(IssuerKey {
            name_der: cert.tbs_certificate.subject.as_raw().to_vec(),
            key_bits: cert
                .tbs_certificate
                .subject_pki
                .subject_public_key
                .data
                .to_vec(),
        })
    }

    fn cert_id(&self, alg: HashAlg, serial: SerialNumber) -> Result<CertId> {
        Ok(CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: alg.oid(),
                parameters: Some(Null.into()),
            },
            issuer_name_hash: OctetString::new(alg.digest(&self.name_der))?,
            issuer_key_hash: OctetString::new(alg.digest(&self.key_bits))?,
            serial_number: x509_cert::serial_number::SerialNumber::new(serial.as_bytes())?,
        })
    }
}

fn gen_time(unix: i64) -> Result<OcspGeneralizedTime> {
    let secs = u64::try_from(unix).map_err(|_| Error::Encoding("time before 1970".into()))?;
    Ok(OcspGeneralizedTime(GeneralizedTime::from_unix_duration(
        std::time::Duration::from_secs(secs),
    )?))
}

/// What one response says, before it is signed.
#[derive(Debug, Clone, Copy)]
pub struct ResponseSpec<'a> {
    /// The CA that issued the certificate.
    pub issuer: &'a IssuerKey,
    /// The certificate's serial.
    pub serial: SerialNumber,
    /// Its status.
    pub status: Status,
    /// thisUpdate (and producedAt), Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// The responder's subjectPublicKey BIT STRING contents (ResponderID byKey).
    pub responder_key_bits: &'a [u8],
}

/// Encodes the ResponseData (the signed part) of a response for one CertID hash algorithm:
/// version v1, ResponderID byKey (RFC 5019 §2.2.2), one SingleResponse, no extensions.
pub fn response_data(spec: &ResponseSpec<'_>, alg: HashAlg) -> Result<Vec<u8>> {
    let cert_status = match spec.status {
        Status::Good => CertStatus::good(),
        Status::Revoked { at, reason } => CertStatus::revoked(RevokedInfo {
            revocation_time: gen_time(at)?,
            revocation_reason: crl_reason(reason),
        }),
    };
    let data = ResponseData {
        version: x509_ocsp::Version::V1,
        responder_id: ResponderId::ByKey(OctetString::new(
            sha1::Sha1::digest(spec.responder_key_bits).to_vec(),
        )?),
        produced_at: gen_time(spec.this_update)?,
        responses: vec![SingleResponse {
            cert_id: spec.issuer.cert_id(alg, spec.serial)?,
            cert_status,
            this_update: gen_time(spec.this_update)?,
            next_update: Some(gen_time(spec.next_update)?),
            single_extensions: None,
        }],
        response_extensions: None,
    };
    Ok(data.to_der()?)
}

fn crl_reason(code: Option<i64>) -> Option<x509_cert::ext::pkix::CrlReason> {
    use x509_cert::ext::pkix::CrlReason as R;
    Some(match code? {
        1 => R::KeyCompromise,
        2 => R::CaCompromise,
        3 => R::AffiliationChanged,
        4 => R::Superseded,
        5 => R::CessationOfOperation,
        6 => R::CertificateHold,
        9 => R::PrivilegeWithdrawn,
        10 => R::AaCompromise,
        _ => return None,
    })
}

/// `BasicOCSPResponse` around the exact bytes that were linted and signed.
#[derive(der::Sequence)]
struct BasicRef<'a> {
    tbs: AnyRef<'a>,
    algorithm: AnyRef<'a>,
    signature: BitStringRef<'a>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    certs: Option<Vec<AnyRef<'a>>>,
}

/// Builds the OCSPResponse: `successful`, a BasicOCSPResponse with the signed ResponseData, the
/// responder key's signature algorithm ([`crate::sigalg`]) and signature, and the responder's
/// certificate (RFC 6960 §4.2.2.2: a delegated responder's certificate is included so clients
/// can check it).
pub fn assemble(
    tbs: &[u8],
    algorithm: hsm::Algorithm,
    signature: &[u8],
    responder_cert: &[u8],
) -> Result<Vec<u8>> {
    let algorithm = crate::sigalg::algorithm_identifier(algorithm)?;
    let basic = BasicRef {
        tbs: AnyRef::from_der(tbs)?,
        algorithm: AnyRef::from_der(&algorithm)?,
        signature: BitStringRef::from_bytes(signature)?,
        certs: Some(vec![AnyRef::from_der(responder_cert)?]),
    }
    .to_der()?;
    Ok(OcspResponse {
        response_status: OcspResponseStatus::Successful,
        response_bytes: Some(ResponseBytes {
            response_type: OID_OCSP_BASIC,
            response: OctetString::new(basic)?,
        }),
    }
    .to_der()?)
}

/// Checks a signed response: it parses, carries exactly the ResponseData that was linted, and
/// its signature verifies under the responder's key (with ring, not the signer's code).
pub fn self_check(response: &[u8], tbs: &[u8], responder_spki: &[u8]) -> Result<()> {
    let bad = |m: &str| Error::SignatureCheck(format!("OCSP response: {m}"));
    let outer = OcspResponse::from_der(response).map_err(|e| bad(&e.to_string()))?;
    let bytes = outer
        .response_bytes
        .ok_or_else(|| bad("no responseBytes"))?;
    let basic =
        BasicOcspResponse::from_der(bytes.response.as_bytes()).map_err(|e| bad(&e.to_string()))?;
    if basic.tbs_response_data.to_der()? != tbs {
        return Err(bad("signed ResponseData differs from the linted one"));
    }
    let sig = basic
        .signature
        .as_bytes()
        .ok_or_else(|| bad("signature has unused bits"))?;
    if basic.signature_algorithm.to_der()?
        != crate::sigalg::algorithm_identifier(crate::sigalg::of_spki(responder_spki)?)?
    {
        return Err(bad("signatureAlgorithm is not the responder key's"));
    }
    crate::sigalg::verify(responder_spki, tbs, sig)
        .map_err(|_| bad("signature does not verify under the responder's key"))
}

/// Lints a ResponseData before it is signed (TLS BR §4.3.1.2 and §4.9.10, RFC 6960 §4.2,
/// RFC 5019 §2.2): returns every finding (empty = clean).
pub fn lint(tbs: &[u8], spec: &ResponseSpec<'_>, alg: HashAlg, now: i64) -> Vec<String> {
    let mut f = Vec::new();
    let data = match ResponseData::from_der(tbs) {
        Ok(d) => d,
        Err(e) => return vec![format!("ResponseData does not parse: {e}")],
    };
    if data.version != x509_ocsp::Version::V1 {
        f.push("version must be v1 (RFC 6960 §4.2.1)".into());
    }
    if data.response_extensions.is_some() {
        f.push("a pre-signed response carries no extensions (no nonce, RFC 5019 §2.2)".into());
    }
    match &data.responder_id {
        ResponderId::ByKey(k)
            if k.as_bytes() == &sha1::Sha1::digest(spec.responder_key_bits)[..] => {}
        _ => f.push("ResponderID must be byKey of the responder's key (RFC 5019 §2.2.2)".into()),
    }
    let [single] = data.responses.as_slice() else {
        return vec!["exactly one SingleResponse (RFC 5019 §2.2.1)".into()];
    };
    match spec.issuer.cert_id(alg, spec.serial) {
        Ok(id) if id == single.cert_id => {}
        _ => f.push("CertID does not name this certificate and issuer".into()),
    }
    let secs = |t: &OcspGeneralizedTime| t.0.to_unix_duration().as_secs() as i64;
    let this_update = secs(&single.this_update);
    if this_update > now + 60 {
        f.push("thisUpdate is in the future".into());
    }
    if secs(&data.produced_at) < this_update {
        f.push("producedAt is before thisUpdate".into());
    }
    match &single.next_update {
        None => f.push("nextUpdate is required (TLS BR §4.9.10)".into()),
        Some(n) => {
            let validity = secs(n) - this_update;
            // Inclusive interval (TLS BR §4.9.10): nextUpdate − thisUpdate + 1 s.
            if !(8 * 3600..=10 * 86_400).contains(&(validity + 1)) {
                f.push(format!(
                    "validity interval {validity} s is outside 8 hours to 10 days (TLS BR §4.9.10)"
                ));
            }
        }
    }
    match (single.cert_status, spec.status) {
        (CertStatus::Good(_), Status::Good) => {}
        (CertStatus::Revoked(info), Status::Revoked { at, .. }) => {
            if secs(&info.revocation_time) != at || at > now + 60 {
                f.push("revocationTime is not the recorded one, or in the future".into());
            }
            if info.revocation_reason == Some(x509_cert::ext::pkix::CrlReason::Unspecified) {
                f.push("reasonCode unspecified (0) must be omitted (TLS BR §7.2.2)".into());
            }
        }
        _ => f.push("certStatus is not the recorded status".into()),
    }
    f
}

/// Why a request gets no pre-signed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not one well-formed OCSPRequest with exactly one Request.
    Malformed,
    /// Not an issuer, algorithm or serial this responder answers for.
    Unauthorized,
}

impl Refusal {
    /// The unsigned OCSPResponse that says so.
    pub fn body(self) -> &'static [u8] {
        match self {
            Refusal::Malformed => MALFORMED_REQUEST,
            Refusal::Unauthorized => UNAUTHORIZED,
        }
    }
}

/// The one CertID of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// Its hash algorithm.
    pub alg: HashAlg,
    /// issuerNameHash.
    pub name_hash: Vec<u8>,
    /// issuerKeyHash.
    pub key_hash: Vec<u8>,
    /// The serial.
    pub serial: SerialNumber,
}

/// Parses an OCSPRequest (DER) down to its one CertID. A request signature, if any, is not
/// checked (this responder serves everyone); extensions, nonce included, are ignored.
pub fn parse_request(der: &[u8]) -> std::result::Result<Asked, Refusal> {
    let req = OcspRequest::from_der(der).map_err(|_| Refusal::Malformed)?;
    let asked = cert_id(&req)?;
    Ok(Asked {
        alg: asked.alg,
        name_hash: asked.name_hash.to_vec(),
        key_hash: asked.key_hash.to_vec(),
        serial: asked.serial,
    })
}

/// [`Asked`] borrowing the hashes from the parsed request (the responder answers without
/// copying them).
struct AskedRef<'a> {
    alg: HashAlg,
    name_hash: &'a [u8],
    key_hash: &'a [u8],
    serial: SerialNumber,
}

/// [`parse_request`]'s work on a parsed request.
fn cert_id(req: &OcspRequest) -> std::result::Result<AskedRef<'_>, Refusal> {
    let [one] = req.tbs_request.request_list.as_slice() else {
        // RFC 5019 §2.1.1: one Request per OCSPRequest; a pre-signed response cannot answer
        // several.
        return Err(Refusal::Malformed);
    };
    let id = &one.req_cert;
    let alg = HashAlg::from_oid(&id.hash_algorithm.oid).ok_or(Refusal::Unauthorized)?;
    // The serial INTEGER's content octets: a negative one was never issued.
    let content = id.serial_number.as_bytes();
    if content.first().is_none_or(|b| b & 0x80 != 0) {
        return Err(Refusal::Unauthorized);
    }
    let serial = SerialNumber::from_be_bytes(content).ok_or(Refusal::Unauthorized)?;
    Ok(AskedRef {
        alg,
        name_hash: id.issuer_name_hash.as_bytes(),
        key_hash: id.issuer_key_hash.as_bytes(),
        serial,
    })
}

/// One serial's pre-signed responses, ready to serve.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The OCSPResponse for a SHA-1 CertID.
    pub sha1: bytes::Bytes,
    /// The OCSPResponse for a SHA-256 CertID.
    pub sha256: bytes::Bytes,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// Strong validators (RFC 9110 §8.8.3), quoted: one per response.
    pub etags: [bytes::Bytes; 2],
}

impl Entry {
    /// The response and its ETag for a CertID hash algorithm.
    pub fn for_alg(&self, alg: HashAlg) -> (&bytes::Bytes, &bytes::Bytes) {
        match alg {
            HashAlg::Sha1 => (&self.sha1, &self.etags[0]),
            HashAlg::Sha256 => (&self.sha256, &self.etags[1]),
        }
    }
}

/// A strong ETag (quoted hex), shared bytes so an answer's header copies nothing.
fn etag(der: &[u8]) -> bytes::Bytes {
    format!("\"{}\"", hex::encode(&sha2::Sha256::digest(der)[..16])).into()
}

/// The pre-signed responses of every issuing CA, kept in memory and following the store.
#[derive(Debug)]
pub struct Cache {
    /// (issuer, hash algorithm, issuerNameHash, issuerKeyHash).
    issuers: Vec<(CaId, HashAlg, Vec<u8>, Vec<u8>)>,
    entries: RwLock<HashMap<(CaId, SerialNumber), Arc<Entry>>>,
    /// The newest `seq` applied.
    seq: AtomicI64,
    /// When the last sync succeeded (Unix seconds; 0: never).
    synced_at: AtomicI64,
}

impl Cache {
    /// A cache answering for these CAs (name, certificate DER).
    pub fn new(cas: &[(CaId, Vec<u8>)]) -> Result<Cache> {
        let mut issuers = Vec::new();
        for (role, der) in cas {
            let key = IssuerKey::from_cert(der)?;
            for alg in HashAlg::ALL {
                issuers.push((
                    *role,
                    alg,
                    alg.digest(&key.name_der),
                    alg.digest(&key.key_bits),
                ));
            }
        }
        Ok(Cache {
            issuers,
            entries: RwLock::new(HashMap::new()),
            seq: AtomicI64::new(0),
            synced_at: AtomicI64::new(0),
        })
    }

    /// Answers a DER OCSPRequest at `now` (Unix seconds): the pre-signed response and the
    /// CertID's hash algorithm, or a refusal.
    pub fn answer(
        &self,
        request: &[u8],
        now: i64,
    ) -> std::result::Result<(Arc<Entry>, HashAlg), Refusal> {
        let req = OcspRequest::from_der(request).map_err(|_| Refusal::Malformed)?;
        let asked = cert_id(&req)?;
        let role = self
            .issuers
            .iter()
            .find(|(_, alg, name, key)| {
                *alg == asked.alg && *name == asked.name_hash && *key == asked.key_hash
            })
            .map(|(role, ..)| *role)
            .ok_or(Refusal::Unauthorized)?;
        let entry = self
            .entries
            .read()
            .map_err(|_| Refusal::Unauthorized)?
            .get(&(role, asked.serial))
            .cloned()
            .ok_or(Refusal::Unauthorized)?;
        // An expired response is never served (RFC 5019 §2.2.3 / §4).
        if now >= entry.next_update {
            return Err(Refusal::Unauthorized);
        }
        Ok((entry, asked.alg))
    }

    /// Applies stored responses (in `seq` order).
    pub fn apply(&self, rows: Vec<OcspRow>) {
        let Ok(mut map) = self.entries.write() else {
            return;
        };
        for row in rows {
            self.seq.fetch_max(row.seq, Ordering::Relaxed);
            let (Ok(role), Some(serial)) = (
                CaId::from_name(&row.issuer),
                SerialNumber::from_hex(&row.serial),
            ) else {
                tracing::error!(serial = %row.serial, "OCSP: a stored response names an unknown issuer or serial");
                continue;
            };
            let etags = [etag(&row.der_sha1), etag(&row.der_sha256)];
            map.insert(
                (role, serial),
                Arc::new(Entry {
                    sha1: row.der_sha1.into(),
                    sha256: row.der_sha256.into(),
                    this_update: row.this_update,
                    next_update: row.next_update,
                    etags,
                }),
            );
        }
    }

    /// Reads every response written since the last sync. Returns how many were applied.
    pub async fn sync(&self, store: &Store) -> Result<usize> {
        let mut total = 0;
        loop {
            let rows = store
                .ocsp_since(self.seq.load(Ordering::Relaxed), 5000)
                .await?;
            let n = rows.len();
            total += n;
            self.apply(rows);
            if n < 5000 {
                break;
            }
        }
        self.synced_at.store(
            time::OffsetDateTime::now_utc().unix_timestamp(),
            Ordering::Relaxed,
        );
        Ok(total)
    }

    /// How many serials have a response.
    pub fn len(&self) -> usize {
        self.entries.read().map(|m| m.len()).unwrap_or(0)
    }

    /// True when no serial has a response.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the last sync with the store succeeded (Unix seconds; 0: never).
    pub fn synced_at(&self) -> i64 {
        self.synced_at.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_are_the_rfc_structures() {
        for (bytes, status) in [
            (MALFORMED_REQUEST, OcspResponseStatus::MalformedRequest),
            (INTERNAL_ERROR, OcspResponseStatus::InternalError),
            (UNAUTHORIZED, OcspResponseStatus::Unauthorized),
        ] {
            let r = OcspResponse::from_der(bytes).unwrap();
            assert_eq!(r.response_status, status);
            assert!(r.response_bytes.is_none());
        }
    }

    /// A well-formed request for serial 0x1234 (SHA-1 CertID).
    fn valid_request() -> Vec<u8> {
        let id = CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: OID_SHA1,
                parameters: Some(Null.into()),
            },
            issuer_name_hash: OctetString::new(vec![1; 20]).unwrap(),
            issuer_key_hash: OctetString::new(vec![2; 20]).unwrap(),
            serial_number: x509_cert::serial_number::SerialNumber::new(&[0x12, 0x34]).unwrap(),
        };
        OcspRequest {
            tbs_request: x509_ocsp::TbsRequest {
                version: Default::default(),
                requestor_name: None,
                request_list: vec![x509_ocsp::Request {
                    req_cert: id,
                    single_request_extensions: None,
                }],
                request_extensions: None,
            },
            optional_signature: None,
        }
        .to_der()
        .unwrap()
    }

    /// A stand-in for fuzzing on stable Rust (cargo-fuzz needs nightly): 20,000 seeded
    /// mutations of a valid request — flipped bits, truncations, inserted and replaced bytes,
    /// grown lengths — each answered with a parse or a refusal, never a panic; and any request
    /// that still parses names a serial no longer than 20 octets.
    #[test]
    fn mutated_requests_never_panic() {
        use rand::{Rng, SeedableRng};
        let valid = valid_request();
        let asked = parse_request(&valid).unwrap();
        assert_eq!(
            asked.serial,
            SerialNumber::from_be_bytes(&[0x12, 0x34]).unwrap()
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6f63_7370);
        for _ in 0..20_000 {
            let mut der = valid.clone();
            for _ in 0..rng.gen_range(1..4) {
                if der.is_empty() {
                    break;
                }
                let at = rng.gen_range(0..der.len());
                match rng.gen_range(0..4) {
                    0 => der[at] ^= 1 << rng.gen_range(0..8),
                    1 => der.truncate(at),
                    2 => der.insert(at, rng.gen()),
                    _ => der[at] = rng.gen(),
                }
            }
            let _ = parse_request(&der);
        }
    }

    #[test]
    fn garbage_and_truncated_requests_are_malformed_never_a_panic() {
        assert_eq!(parse_request(b""), Err(Refusal::Malformed));
        assert_eq!(parse_request(b"\x30\x03\x02\x01"), Err(Refusal::Malformed));
        let mut seed = 7u64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 33) as u8
                })
                .collect();
            assert!(parse_request(&bytes).is_err());
        }
    }
}
