//! Key types a CA key may have, their `SubjectPublicKeyInfo` encodings and signature
//! verification.
//!
//! - ECDSA on P-256 with SHA-256 and on P-384 with SHA-384 (RFC 5480, RFC 5758 §3.2): the
//!   signature is a DER `Ecdsa-Sig-Value` (RFC 3279 §2.2.3).
//! - RSA (2048, 3072 or 4096 bits, exponent 65537) with PKCS#1 v1.5 and SHA-256 (RFC 8017
//!   §8.2, `sha256WithRSAEncryption`, RFC 4055 §5): the signature is the bare octet string of
//!   the modulus's length. RSA-PSS is not offered.
//!
//! Verification uses ring, not the code that made the signature.

use p256::pkcs8::der::asn1::{BitString, ObjectIdentifier, UintRef};
use p256::pkcs8::der::{Decode, Encode};
use p256::pkcs8::spki::{
    AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef,
};
use p256::pkcs8::AssociatedOid;

use crate::{Algorithm, Error};

/// `id-ecPublicKey` (RFC 5480 §2.1.1).
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `rsaEncryption` (RFC 8017 Appendix C).
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The kinds of key a CA (or its OCSP responder) may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// ECDSA on NIST P-256, signing with SHA-256.
    P256,
    /// ECDSA on NIST P-384, signing with SHA-384.
    P384,
    /// RSA with a 2048-bit modulus, PKCS#1 v1.5 with SHA-256.
    Rsa2048,
    /// RSA with a 3072-bit modulus, PKCS#1 v1.5 with SHA-256.
    Rsa3072,
    /// RSA with a 4096-bit modulus, PKCS#1 v1.5 with SHA-256.
    Rsa4096,
}

impl KeySpec {
    /// Every key spec, in the order they are documented.
    pub const ALL: [KeySpec; 5] = [
        KeySpec::P256,
        KeySpec::P384,
        KeySpec::Rsa2048,
        KeySpec::Rsa3072,
        KeySpec::Rsa4096,
    ];

    /// The configuration name: `p256`, `p384`, `rsa2048`, `rsa3072`, `rsa4096`.
    pub fn name(self) -> &'static str {
        match self {
            KeySpec::P256 => "p256",
            KeySpec::P384 => "p384",
            KeySpec::Rsa2048 => "rsa2048",
            KeySpec::Rsa3072 => "rsa3072",
            KeySpec::Rsa4096 => "rsa4096",
        }
    }

    /// Parses [`KeySpec::name`]; `P-256`, `rsa-2048` and such spellings are accepted too.
    pub fn from_name(name: &str) -> Option<KeySpec> {
        let folded: String = name
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        KeySpec::ALL.into_iter().find(|k| k.name() == folded)
    }

    /// The signature algorithm a key of this kind signs with.
    pub fn algorithm(self) -> Algorithm {
        match self {
            KeySpec::P256 => Algorithm::EcdsaP256Sha256,
            KeySpec::P384 => Algorithm::EcdsaP384Sha384,
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => Algorithm::RsaPkcs1Sha256,
        }
    }

    /// The RSA modulus size in bits, or `None` for an EC key.
    pub fn rsa_bits(self) -> Option<u32> {
        match self {
            KeySpec::Rsa2048 => Some(2048),
            KeySpec::Rsa3072 => Some(3072),
            KeySpec::Rsa4096 => Some(4096),
            KeySpec::P256 | KeySpec::P384 => None,
        }
    }

    /// The DER named-curve OID an EC key's `CKA_EC_PARAMS` (and SPKI parameters) carry.
    pub(crate) fn curve_oid(self) -> Option<ObjectIdentifier> {
        match self {
            KeySpec::P256 => Some(p256::NistP256::OID),
            KeySpec::P384 => Some(p384::NistP384::OID),
            _ => None,
        }
    }

    /// The length of an uncompressed point on this curve.
    pub(crate) fn point_len(self) -> Option<usize> {
        match self {
            KeySpec::P256 => Some(65),
            KeySpec::P384 => Some(97),
            _ => None,
        }
    }

    /// What a DER SPKI holds, if it is one of these kinds.
    pub fn of_spki(spki_der: &[u8]) -> Result<KeySpec, Error> {
        Ok(PublicKey::from_spki(spki_der)?.spec)
    }
}

impl std::fmt::Display for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KeySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeySpec::from_name(s).ok_or_else(|| {
            format!("unknown key type {s:?}: use one of p256, p384, rsa2048, rsa3072, rsa4096")
        })
    }
}

/// A public key of one of the [`KeySpec`]s, ready for ring's verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublicKey {
    pub(crate) spec: KeySpec,
    /// The DER SPKI.
    pub(crate) spki: Vec<u8>,
    /// The subjectPublicKey BIT STRING's contents: the uncompressed point, or the DER
    /// `RSAPublicKey` (what ring takes).
    pub(crate) raw: Vec<u8>,
}

impl PublicKey {
    /// The SPKI of an uncompressed EC point on `spec`'s curve, after checking the point is on
    /// the curve.
    pub(crate) fn ec(spec: KeySpec, point: &[u8]) -> Result<PublicKey, Error> {
        let bad = || Error::PublicKey(format!("EC point is not a valid {spec} point"));
        match spec {
            KeySpec::P256 => p256::PublicKey::from_sec1_bytes(point)
                .map(|_| ())
                .map_err(|_| bad())?,
            KeySpec::P384 => p384::PublicKey::from_sec1_bytes(point)
                .map(|_| ())
                .map_err(|_| bad())?,
            _ => return Err(bad()),
        }
        if Some(point.len()) != spec.point_len() || point.first() != Some(&0x04) {
            return Err(bad());
        }
        let curve = spec.curve_oid().ok_or_else(bad)?;
        let spki = SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: OID_EC_PUBLIC_KEY,
                parameters: Some(
                    p256::pkcs8::der::asn1::Any::encode_from(&curve).map_err(encoding)?,
                ),
            },
            subject_public_key: BitString::from_bytes(point).map_err(encoding)?,
        };
        Ok(PublicKey {
            spec,
            spki: spki.to_der().map_err(encoding)?,
            raw: point.to_vec(),
        })
    }

    /// The SPKI of an RSA key from its modulus and public exponent (big-endian, as
    /// `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT` give them): `rsaEncryption` with NULL
    /// parameters (RFC 3279 §2.3.1).
    pub(crate) fn rsa(modulus: &[u8], exponent: &[u8]) -> Result<PublicKey, Error> {
        let n = UintRef::new(modulus).map_err(encoding)?;
        let e = UintRef::new(exponent).map_err(encoding)?;
        let bits = modulus_bits(n.as_bytes());
        let spec = match bits {
            2048 => KeySpec::Rsa2048,
            3072 => KeySpec::Rsa3072,
            4096 => KeySpec::Rsa4096,
            other => {
                return Err(Error::PublicKey(format!(
                    "an RSA-{other} key is not one of RSA-2048, 3072, 4096"
                )))
            }
        };
        if e.as_bytes() != [0x01, 0x00, 0x01] {
            return Err(Error::PublicKey(
                "the RSA public exponent is not 65537".into(),
            ));
        }
        // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } (RFC 8017 A.1.1)
        let mut body = n.to_der().map_err(encoding)?;
        body.extend(e.to_der().map_err(encoding)?);
        let mut raw = Vec::with_capacity(body.len() + 4);
        p256::pkcs8::der::Header::new(
            p256::pkcs8::der::Tag::Sequence,
            p256::pkcs8::der::Length::try_from(body.len()).map_err(encoding)?,
        )
        .map_err(encoding)?
        .encode_to_vec(&mut raw)
        .map_err(encoding)?;
        raw.extend(body);
        let spki = SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: OID_RSA_ENCRYPTION,
                parameters: Some(p256::pkcs8::der::asn1::Any::null()),
            },
            subject_public_key: BitString::from_bytes(&raw).map_err(encoding)?,
        };
        Ok(PublicKey {
            spec,
            spki: spki.to_der().map_err(encoding)?,
            raw,
        })
    }

    /// Reads a DER SPKI of one of the [`KeySpec`]s.
    pub(crate) fn from_spki(der: &[u8]) -> Result<PublicKey, Error> {
        let info = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| Error::PublicKey(format!("SubjectPublicKeyInfo does not parse: {e}")))?;
        let raw = info
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| Error::PublicKey("subjectPublicKey has unused bits".into()))?;
        let key = if info.algorithm.oid == OID_EC_PUBLIC_KEY {
            let curve: ObjectIdentifier = info
                .algorithm
                .parameters
                .ok_or_else(|| Error::PublicKey("EC key without a named curve".into()))?
                .decode_as()
                .map_err(|_| Error::PublicKey("EC key without a named curve".into()))?;
            let spec = [KeySpec::P256, KeySpec::P384]
                .into_iter()
                .find(|s| s.curve_oid() == Some(curve))
                .ok_or_else(|| {
                    Error::PublicKey(format!("EC curve {curve} is not P-256 or P-384"))
                })?;
            PublicKey::ec(spec, raw)?
        } else if info.algorithm.oid == OID_RSA_ENCRYPTION {
            #[derive(Debug)]
            struct Parts<'a>(UintRef<'a>, UintRef<'a>);
            let parts = p256::pkcs8::der::SliceReader::new(raw)
                .and_then(|mut r| {
                    use p256::pkcs8::der::Reader as _;
                    let v =
                        r.sequence(|seq| Ok(Parts(UintRef::decode(seq)?, UintRef::decode(seq)?)))?;
                    r.finish(v)
                })
                .map_err(|e| Error::PublicKey(format!("RSAPublicKey does not parse: {e}")))?;
            PublicKey::rsa(parts.0.as_bytes(), parts.1.as_bytes())?
        } else {
            return Err(Error::PublicKey(format!(
                "key algorithm {} is not EC or RSA",
                info.algorithm.oid
            )));
        };
        if key.spki != der {
            return Err(Error::PublicKey(
                "SubjectPublicKeyInfo is not in its canonical DER form".into(),
            ));
        }
        Ok(key)
    }

    /// Checks a signature as [`crate::Signer::sign`] returns it (DER ECDSA, bare RSA).
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        ring::signature::UnparsedPublicKey::new(ring_verifier(self.spec, false), &self.raw)
            .verify(message, signature)
            .map_err(|_| Error::BadSignature)
    }
}

/// ring's verifier for a key spec; `fixed` picks the raw `r||s` ECDSA form a token returns.
pub(crate) fn ring_verifier(
    spec: KeySpec,
    fixed: bool,
) -> &'static dyn ring::signature::VerificationAlgorithm {
    match (spec, fixed) {
        (KeySpec::P256, false) => &ring::signature::ECDSA_P256_SHA256_ASN1,
        (KeySpec::P256, true) => &ring::signature::ECDSA_P256_SHA256_FIXED,
        (KeySpec::P384, false) => &ring::signature::ECDSA_P384_SHA384_ASN1,
        (KeySpec::P384, true) => &ring::signature::ECDSA_P384_SHA384_FIXED,
        (KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096, _) => {
            &ring::signature::RSA_PKCS1_2048_8192_SHA256
        }
    }
}

/// Bits in a big-endian unsigned integer without leading zero bytes.
fn modulus_bits(n: &[u8]) -> u32 {
    match n.first() {
        None => 0,
        Some(top) => (n.len() as u32 - 1) * 8 + (8 - top.leading_zeros()),
    }
}

fn encoding(e: p256::pkcs8::der::Error) -> Error {
    Error::PublicKey(format!("encoding a public key failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_common_spellings_parse() {
        for k in KeySpec::ALL {
            assert_eq!(KeySpec::from_name(k.name()), Some(k));
        }
        assert_eq!(KeySpec::from_name("P-256"), Some(KeySpec::P256));
        assert_eq!(KeySpec::from_name("RSA-4096"), Some(KeySpec::Rsa4096));
        assert_eq!(KeySpec::from_name("rsa_3072"), Some(KeySpec::Rsa3072));
        assert_eq!(KeySpec::from_name("rsa1024"), None);
        assert_eq!(KeySpec::from_name("ed25519"), None);
    }

    #[test]
    fn ec_spki_round_trips_and_matches_p256s_own_encoding() {
        use p256::pkcs8::EncodePublicKey;
        let sk = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let point = sk.verifying_key().to_encoded_point(false);
        let ours = PublicKey::ec(KeySpec::P256, point.as_bytes()).unwrap();
        let theirs = sk.verifying_key().to_public_key_der().unwrap();
        assert_eq!(ours.spki, theirs.as_bytes());
        assert_eq!(PublicKey::from_spki(&ours.spki).unwrap(), ours);
        // A P-256 point is not a P-384 key.
        assert!(PublicKey::ec(KeySpec::P384, point.as_bytes()).is_err());
    }

    #[test]
    fn rsa_spki_is_rejected_unless_size_and_exponent_are_allowed() {
        let mut n = vec![0xc5u8; 256];
        n[255] |= 1;
        let k = PublicKey::rsa(&n, &[1, 0, 1]).unwrap();
        assert_eq!(k.spec, KeySpec::Rsa2048);
        assert_eq!(PublicKey::from_spki(&k.spki).unwrap(), k);
        assert!(PublicKey::rsa(&n[..128], &[1, 0, 1]).is_err(), "RSA-1024");
        assert!(PublicKey::rsa(&n, &[3]).is_err(), "e = 3");
    }
}
