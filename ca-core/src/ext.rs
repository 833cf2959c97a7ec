//! X.509 extensions rcgen does not write itself, encoded with the RustCrypto `der` types.

use der::asn1::{Ia5String, ObjectIdentifier};
use der::Encode;
use x509_cert::ext::pkix::certpolicy::{CertificatePolicies, PolicyInformation};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};

use crate::error::{Error, Result};

/// id-ad-ocsp (RFC 5280 §4.2.2.1).
const ID_AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
/// id-ad-caIssuers (RFC 5280 §4.2.2.1).
const ID_AD_CA_ISSUERS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2");

fn oid_arcs(oid: &ObjectIdentifier) -> Vec<u64> {
    oid.arcs().map(u64::from).collect()
}

/// Parses a dotted OID string.
pub fn parse_oid(s: &str) -> Result<ObjectIdentifier> {
    ObjectIdentifier::new(s).map_err(|e| Error::Config(format!("bad OID {s:?}: {e}")))
}

/// certificatePolicies (RFC 5280 §4.2.1.4), non-critical, policy OIDs only (no qualifiers: the
/// BRs make them optional and pkilint prefers none).
pub fn certificate_policies(oids: &[ObjectIdentifier]) -> Result<rcgen::CustomExtension> {
    let value = CertificatePolicies(
        oids.iter()
            .map(|oid| PolicyInformation {
                policy_identifier: *oid,
                policy_qualifiers: None,
            })
            .collect(),
    )
    .to_der()?;
    Ok(rcgen::CustomExtension::from_oid_content(
        &oid_arcs(&const_oid::db::rfc5280::ID_CE_CERTIFICATE_POLICIES),
        value,
    ))
}

/// authorityInfoAccess (RFC 5280 §4.2.2.1), non-critical: OCSP first, then caIssuers.
pub fn authority_info_access(
    ocsp: Option<&str>,
    ca_issuers: &str,
) -> Result<rcgen::CustomExtension> {
    let uri = |s: &str| -> Result<GeneralName> {
        Ok(GeneralName::UniformResourceIdentifier(
            Ia5String::new(s).map_err(|e| Error::Config(format!("bad URL {s:?}: {e}")))?,
        ))
    };
    let mut access = Vec::new();
    if let Some(ocsp) = ocsp {
        access.push(AccessDescription {
            access_method: ID_AD_OCSP,
            access_location: uri(ocsp)?,
        });
    }
    access.push(AccessDescription {
        access_method: ID_AD_CA_ISSUERS,
        access_location: uri(ca_issuers)?,
    });
    let value = AuthorityInfoAccessSyntax(access).to_der()?;
    Ok(rcgen::CustomExtension::from_oid_content(
        &oid_arcs(&const_oid::db::rfc5280::ID_PE_AUTHORITY_INFO_ACCESS),
        value,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encodings are pinned against what `openssl asn1parse` shows for the same values.
    #[test]
    fn policies_der() {
        let ext = certificate_policies(&[parse_oid("2.23.140.1.2.2").unwrap()]).unwrap();
        // SEQUENCE { SEQUENCE { OID 2.23.140.1.2.2 } }
        assert_eq!(hex::encode(ext.content()), "300a3008060667810c010202");
    }

    #[test]
    fn aia_der() {
        let ext = authority_info_access(Some("http://a/o"), "http://a/c").unwrap();
        let c = hex::encode(ext.content());
        assert!(c.starts_with("30"));
        assert!(c.contains("2b06010505073001")); // id-ad-ocsp
        assert!(c.contains("2b06010505073002")); // id-ad-caIssuers
        assert!(c.contains(&hex::encode("http://a/o")));
    }
}
