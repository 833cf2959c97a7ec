//! The signature algorithms CA keys sign with, as certificates, CRLs and OCSP responses encode
//! them, and the check of a signature made by a CA key.
//!
//! - `ecdsa-with-SHA256` / `ecdsa-with-SHA384`: the AlgorithmIdentifier has no parameters
//!   (RFC 5758 §3.2; TLS BR §7.1.3.2.2 gives the exact bytes).
//! - `sha256WithRSAEncryption`: parameters present and NULL (RFC 4055 §5; TLS BR §7.1.3.2.1).
//!   RSA-PSS is not offered.

use const_oid::ObjectIdentifier;
use der::asn1::Any;
use der::Encode;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::error::{Error, Result};

const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_SHA256_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// The DER AlgorithmIdentifier of a signature algorithm.
pub fn algorithm_identifier(alg: hsm::Algorithm) -> Result<Vec<u8>> {
    let (oid, parameters) = match alg {
        hsm::Algorithm::EcdsaP256Sha256 => (OID_ECDSA_SHA256, None),
        hsm::Algorithm::EcdsaP384Sha384 => (OID_ECDSA_SHA384, None),
        hsm::Algorithm::RsaPkcs1Sha256 => (OID_SHA256_RSA, Some(Any::null())),
        other => {
            return Err(Error::Config(format!(
                "signature algorithm {other:?} is not offered"
            )))
        }
    };
    Ok(AlgorithmIdentifierOwned { oid, parameters }.to_der()?)
}

/// The OID (dotted) of a signature algorithm and whether its parameters are NULL (else
/// absent), for checking a parsed AlgorithmIdentifier.
pub fn oid_and_null(alg: hsm::Algorithm) -> (&'static str, bool) {
    match alg {
        hsm::Algorithm::EcdsaP384Sha384 => ("1.2.840.10045.4.3.3", false),
        hsm::Algorithm::RsaPkcs1Sha256 => ("1.2.840.113549.1.1.11", true),
        hsm::Algorithm::EcdsaP256Sha256 => ("1.2.840.10045.4.3.2", false),
        // Nothing matches an algorithm this module does not know.
        _ => ("", false),
    }
}

/// rcgen's description of the same algorithm, for the certificates rcgen encodes (its RSA
/// entry writes the NULL parameters, its ECDSA entries none).
pub fn rcgen_algorithm(alg: hsm::Algorithm) -> Result<&'static rcgen::SignatureAlgorithm> {
    match alg {
        hsm::Algorithm::EcdsaP256Sha256 => Ok(&rcgen::PKCS_ECDSA_P256_SHA256),
        hsm::Algorithm::EcdsaP384Sha384 => Ok(&rcgen::PKCS_ECDSA_P384_SHA384),
        hsm::Algorithm::RsaPkcs1Sha256 => Ok(&rcgen::PKCS_RSA_SHA256),
        other => Err(Error::Config(format!(
            "signature algorithm {other:?} is not offered"
        ))),
    }
}

/// The signature algorithm of the key in a DER SPKI.
pub fn of_spki(spki: &[u8]) -> Result<hsm::Algorithm> {
    Ok(hsm::KeySpec::of_spki(spki)?.algorithm())
}

/// Checks `signature` over `message` under the key in `spki` (ring, not the signer's code).
pub fn verify(spki: &[u8], message: &[u8], signature: &[u8]) -> Result<()> {
    hsm::verify(of_spki(spki)?, spki, message, signature).map_err(Error::from)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The encodings TLS BR §7.1.3.2 requires, byte for byte.
    #[test]
    fn encodings_are_the_baseline_requirements_bytes() {
        assert_eq!(
            hex::encode(algorithm_identifier(hsm::Algorithm::EcdsaP256Sha256).unwrap()),
            "300a06082a8648ce3d040302"
        );
        assert_eq!(
            hex::encode(algorithm_identifier(hsm::Algorithm::EcdsaP384Sha384).unwrap()),
            "300a06082a8648ce3d040303"
        );
        assert_eq!(
            hex::encode(algorithm_identifier(hsm::Algorithm::RsaPkcs1Sha256).unwrap()),
            "300d06092a864886f70d01010b0500"
        );
    }
}
