//! Subscriber key policy: which public keys may be certified.
//!
//! Each rule is a small check that denies by default (BR §6.1.1.3, §6.1.5, §6.1.6; S/MIME BR
//! §6.1.5). Structural checks ([`SubscriberKey::from_spki_der`]) run before any signature math, so
//! explicit curve parameters or compressed points never reach the EC arithmetic (CVE-2022-0778;
//! reference checklist #36). The deeper checks ([`SubscriberKey::check_strength`]) run after the
//! CSR signature verified.

pub mod debian;

use num_bigint::BigUint;
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{Error, Result};

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_RSA: &str = "1.2.840.113549.1.1.1";

/// The RSA modulus sizes accepted: at least 2048 (BR §6.1.5), and only sizes the Debian
/// weak-key lists cover ([`debian`], TLS BR §6.1.1.3(5)), as Boulder's goodkey does.
pub const ACCEPTED_RSA_BITS: [usize; 3] = [2048, 3072, 4096];

/// The kinds of subscriber key this CA certifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on NIST P-256 (named curve).
    EcP256,
    /// ECDSA on NIST P-384 (named curve).
    EcP384,
    /// RSA with exponent 65537.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
}

impl KeyKind {
    /// Short name for messages and the database.
    pub fn name(&self) -> String {
        match self {
            KeyKind::EcP256 => "P-256".into(),
            KeyKind::EcP384 => "P-384".into(),
            KeyKind::Rsa { bits } => format!("RSA-{bits}"),
        }
    }

    /// True for keys that can encrypt (RSA) rather than agree keys (EC).
    pub fn is_rsa(&self) -> bool {
        matches!(self, KeyKind::Rsa { .. })
    }
}

/// A subscriber public key that passed the structural checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberKey {
    kind: KeyKind,
    spki_der: Vec<u8>,
    /// The subjectPublicKey BIT STRING contents (what rcgen calls `der_bytes`).
    key_bytes: Vec<u8>,
}

impl SubscriberKey {
    /// Parses a DER SubjectPublicKeyInfo and applies the structural key policy: algorithm,
    /// named curve, uncompressed point of the right length, RSA parameters NULL, modulus size and
    /// exponent. No EC or big-number arithmetic happens here.
    pub fn from_spki_der(der: &[u8]) -> Result<Self> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| Error::KeyNotAllowed(format!("malformed SubjectPublicKeyInfo: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::KeyNotAllowed(
                "trailing bytes after SubjectPublicKeyInfo".into(),
            ));
        }
        let alg = spki.algorithm.algorithm.to_id_string();
        let key_bytes = spki.subject_public_key.data.to_vec();
        let kind = match alg.as_str() {
            OID_EC_PUBLIC_KEY => {
                let params = spki.algorithm.parameters.as_ref().ok_or_else(|| {
                    Error::KeyNotAllowed("EC key without curve parameters".into())
                })?;
                // asn1-rs's as_oid() does not check the tag: an explicit-parameters SEQUENCE
                // would be read as a nonsense OID. Check the tag first.
                if params.tag() != x509_parser::der_parser::asn1_rs::Tag::Oid {
                    return Err(Error::KeyNotAllowed(
                        "explicit EC curve parameters are not accepted; use a named curve".into(),
                    ));
                }
                let curve = params.as_oid().map_err(|_| {
                    Error::KeyNotAllowed(
                        "explicit EC curve parameters are not accepted; use a named curve".into(),
                    )
                })?;
                let (kind, len) = match curve.to_id_string().as_str() {
                    OID_P256 => (KeyKind::EcP256, 65),
                    OID_P384 => (KeyKind::EcP384, 97),
                    other => {
                        return Err(Error::KeyNotAllowed(format!(
                            "EC curve {other} is not accepted; use P-256 or P-384"
                        )))
                    }
                };
                if key_bytes.first() != Some(&0x04) || key_bytes.len() != len {
                    return Err(Error::KeyNotAllowed(
                        "EC point must be uncompressed (0x04 || X || Y)".into(),
                    ));
                }
                kind
            }
            OID_RSA => {
                match spki.algorithm.parameters.as_ref() {
                    Some(p) if p.tag() == x509_parser::der_parser::asn1_rs::Tag::Null => {}
                    _ => {
                        return Err(Error::KeyNotAllowed(
                            "rsaEncryption parameters must be NULL (RFC 3279 §2.3.1)".into(),
                        ))
                    }
                }
                let (n, e) = rsa_parts(&key_bytes)?;
                let bits = n.bits() as usize;
                if bits < ACCEPTED_RSA_BITS[0] {
                    return Err(Error::KeyNotAllowed(format!(
                        "RSA-{bits} is too small; use RSA-2048, 3072 or 4096"
                    )));
                }
                if !ACCEPTED_RSA_BITS.contains(&bits) {
                    return Err(Error::KeyNotAllowed(format!(
                        "RSA-{bits} is not accepted; use RSA-2048, 3072 or 4096"
                    )));
                }
                if e != BigUint::from(65537u32) {
                    return Err(Error::KeyNotAllowed(
                        "RSA public exponent must be 65537".into(),
                    ));
                }
                KeyKind::Rsa { bits }
            }
            other => {
                return Err(Error::KeyNotAllowed(format!(
                    "key algorithm {other} is not accepted; use ECDSA P-256/P-384 or RSA"
                )))
            }
        };
        Ok(SubscriberKey {
            kind,
            spki_der: der.to_vec(),
            key_bytes,
        })
    }

    /// The deeper checks: the EC point is on its curve and not the identity; the RSA modulus has
    /// no small factor, no ROCA fingerprint (CVE-2017-15361) and does not fall to 100 rounds of
    /// Fermat factorisation (BR §6.1.1.3 (4)).
    pub fn check_strength(&self) -> Result<()> {
        match self.kind {
            KeyKind::EcP256 => p256::PublicKey::from_sec1_bytes(&self.key_bytes)
                .map(|_| ())
                .map_err(|_| Error::WeakKey("EC point is not on P-256".into())),
            KeyKind::EcP384 => p384::PublicKey::from_sec1_bytes(&self.key_bytes)
                .map(|_| ())
                .map_err(|_| Error::WeakKey("EC point is not on P-384".into())),
            KeyKind::Rsa { .. } => {
                let (n, _) = rsa_parts(&self.key_bytes)?;
                rsa_weakness(&n).map_or(Ok(()), |w| Err(Error::WeakKey(w.into())))
            }
        }
    }

    /// The key's kind.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The DER SubjectPublicKeyInfo exactly as received.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo: the key's identity for blocking and revocation.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(&self.spki_der).into()
    }

    /// Whether `signature` by this key verifies over `message`: ECDSA with SHA-256 (P-256) or
    /// SHA-384 (P-384), as IEEE P1363 `r||s` (what WebCrypto makes) or as a DER
    /// `ECDSA-Sig-Value` (what `openssl dgst -sign` makes); RSA PKCS#1 v1.5 with SHA-256.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature as sig;
        let algs: &[&'static dyn sig::VerificationAlgorithm] = match self.kind {
            KeyKind::EcP256 => &[&sig::ECDSA_P256_SHA256_FIXED, &sig::ECDSA_P256_SHA256_ASN1],
            KeyKind::EcP384 => &[&sig::ECDSA_P384_SHA384_FIXED, &sig::ECDSA_P384_SHA384_ASN1],
            KeyKind::Rsa { .. } => &[&sig::RSA_PKCS1_2048_8192_SHA256],
        };
        algs.iter().any(|alg| {
            sig::UnparsedPublicKey::new(*alg, &self.key_bytes)
                .verify(message, signature)
                .is_ok()
        })
    }
}

impl rcgen::PublicKeyData for SubscriberKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key_bytes
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        // Only the key-algorithm half (the SPKI AlgorithmIdentifier) of these is used for a
        // subject key; lint::check_certificate proves the SPKI written equals `spki_der`.
        match self.kind {
            KeyKind::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

fn rsa_parts(key_bytes: &[u8]) -> Result<(BigUint, BigUint)> {
    let (_, k) = x509_parser::public_key::RSAPublicKey::from_der(key_bytes)
        .map_err(|_| Error::KeyNotAllowed("malformed RSA public key".into()))?;
    Ok((
        BigUint::from_bytes_be(k.modulus),
        BigUint::from_bytes_be(k.exponent),
    ))
}

/// Primes below 752, the bound Boulder's goodkey uses for its small-factor check.
fn small_primes() -> impl Iterator<Item = u32> {
    (2u32..752).filter(|n| (2..*n).take_while(|d| d * d <= *n).all(|d| n % d != 0))
}

/// The primes of the ROCA fingerprint (Nemec et al., CCS 2017): a modulus made by the flawed
/// Infineon generator is, modulo each of these, a power of 65537.
const ROCA_PRIMES: [u32; 38] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

fn rsa_weakness(n: &BigUint) -> Option<&'static str> {
    use num_bigint::ToBigUint;
    let rem = |p: u32| -> u32 {
        let r = n % p;
        r.to_u32_digits().first().copied().unwrap_or(0)
    };
    if small_primes().any(|p| rem(p) == 0) {
        return Some("RSA modulus has a small prime factor");
    }
    let roca = ROCA_PRIMES.iter().all(|&p| {
        let r = rem(p);
        let g = 65537 % p;
        let mut x = 1u32;
        // Walk the subgroup generated by 65537 mod p (its order divides p - 1).
        for _ in 0..p {
            if x == r {
                return true;
            }
            x = x * g % p;
            if x == 1 {
                break;
            }
        }
        false
    });
    if roca {
        return Some("RSA modulus has the ROCA fingerprint (CVE-2017-15361)");
    }
    // Fermat: if p and q are close, a = ceil(sqrt(n)) + i gives a perfect square a^2 - n.
    let mut a = n.sqrt();
    if &a * &a < *n {
        a += 1u32;
    }
    let one = 1u32.to_biguint().unwrap_or_default();
    for _ in 0..100 {
        let b2 = &a * &a - n;
        let b = b2.sqrt();
        if &b * &b == b2 {
            return Some("RSA modulus factors by Fermat's method (its primes are too close)");
        }
        a += &one;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_bigint::BigUint;

    fn primorial() -> BigUint {
        ROCA_PRIMES
            .iter()
            .fold(BigUint::from(1u32), |acc, p| acc * *p)
    }

    fn odd_2048() -> BigUint {
        // A fixed odd 2048-bit number with no special structure.
        let mut bytes = [0u8; 256];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for b in bytes.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
        bytes[0] |= 0x80;
        bytes[255] |= 1;
        BigUint::from_bytes_be(&bytes)
    }

    /// Fixtures made with openssl (`openssl ... -pubout -outform DER`); each is refused by the
    /// structural policy with a reason naming the problem (reference checklist #34, #36).
    #[test]
    fn structural_policy_refuses_with_named_reasons() {
        let cases: [(&str, &[u8], &str); 10] = [
            (
                "P-521",
                include_bytes!("testdata/p521.spki.der"),
                "P-256 or P-384",
            ),
            (
                "compressed P-256 point",
                include_bytes!("testdata/p256-compressed.spki.der"),
                "uncompressed",
            ),
            (
                "explicit curve parameters",
                include_bytes!("testdata/p256-explicit.spki.der"),
                "explicit",
            ),
            (
                "RSA-1024",
                include_bytes!("testdata/rsa1024.spki.der"),
                "too small",
            ),
            (
                "RSA e=3",
                include_bytes!("testdata/rsa2048-e3.spki.der"),
                "65537",
            ),
            (
                "RSA-2052",
                include_bytes!("testdata/rsa2052.spki.der"),
                "2048, 3072 or 4096",
            ),
            (
                "RSA-2056",
                include_bytes!("testdata/rsa2056.spki.der"),
                "2048, 3072 or 4096",
            ),
            (
                "Ed25519",
                include_bytes!("testdata/ed25519.spki.der"),
                "not accepted",
            ),
            (
                "RSA-PSS key",
                include_bytes!("testdata/rsapss.spki.der"),
                "not accepted",
            ),
            ("garbage", b"\x30\x03\x02\x01\x01", "malformed"),
        ];
        for (what, der, reason) in cases {
            match SubscriberKey::from_spki_der(der) {
                Err(Error::KeyNotAllowed(msg)) => assert!(msg.contains(reason), "{what}: {msg}"),
                other => panic!("{what}: expected KeyNotAllowed, got {other:?}"),
            }
        }
        // A Debian weak key is structurally sound and has no small factor: only the lists
        // ([`debian`]) catch it.
        let ok =
            SubscriberKey::from_spki_der(include_bytes!("testdata/debian-weak-rsa2048.spki.der"))
                .unwrap();
        assert_eq!(ok.kind(), KeyKind::Rsa { bits: 2048 });
        ok.check_strength().unwrap();
    }

    /// A point that is not on the curve passes the structural checks (right length, 0x04) and
    /// is caught by the strength check.
    #[test]
    fn off_curve_point_is_weak() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut spki = rcgen::PublicKeyData::subject_public_key_info(&kp);
        let last = spki.len() - 1;
        spki[last] ^= 1;
        let key = SubscriberKey::from_spki_der(&spki).unwrap();
        assert!(matches!(key.check_strength(), Err(Error::WeakKey(_))));
    }

    #[test]
    fn small_factor_is_weak() {
        let n = BigUint::from(751u32) * (odd_2048() >> 16u32);
        assert_eq!(
            rsa_weakness(&n),
            Some("RSA modulus has a small prime factor")
        );
    }

    #[test]
    fn roca_fingerprint_is_weak() {
        // n ≡ 65537^5 (mod M) for M the primorial of the ROCA primes: every residue is a power
        // of 65537, as for the flawed generator's moduli.
        let m = primorial();
        let base = BigUint::from(65537u32).modpow(&BigUint::from(5u32), &m);
        let mut n = (odd_2048() / &m) * &m + base;
        // Step by M (keeps every ROCA residue) until no other small prime divides n.
        while small_primes().any(|p| (&n % p) == BigUint::ZERO) {
            n += &m;
        }
        assert!(rsa_weakness(&n).is_some_and(|w| w.contains("ROCA")));
    }

    #[test]
    fn fermat_close_primes_are_weak() {
        // (x - d)(x + d) with d small factors at the first Fermat round; make both factors free
        // of small primes so that only the Fermat check can catch it.
        let mut x = odd_2048() >> 1024u32;
        x |= BigUint::from(1u32) << 1023u32;
        // x even and d odd make both factors odd.
        if x.bit(0) {
            x += 1u32;
        }
        let d = loop {
            let found = (1u32..2000).step_by(2).find(|d| {
                let (p, q) = (&x - *d, &x + *d);
                small_primes().all(|s| (&p % s) != BigUint::ZERO && (&q % s) != BigUint::ZERO)
            });
            match found {
                Some(d) => break d,
                None => x += 2u32,
            }
        };
        let n = (&x - d) * (&x + d);
        assert!(
            rsa_weakness(&n).is_some_and(|w| w.contains("Fermat")),
            "{:?}",
            rsa_weakness(&n)
        );
    }

    #[test]
    fn ordinary_modulus_passes() {
        // Product of two unrelated odd numbers free of small factors would be ideal; a random odd
        // number free of small factors and not ROCA-shaped passes as well for this check.
        let mut n = odd_2048();
        while small_primes().any(|p| (&n % p) == BigUint::ZERO) {
            n += 2u32;
        }
        assert_eq!(rsa_weakness(&n), None);
    }
}
