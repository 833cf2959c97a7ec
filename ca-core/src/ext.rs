//! X.509 extensions rcgen does not write itself, encoded with the RustCrypto `der` types.

use der::asn1::{Ia5String, ObjectIdentifier};
use der::Encode;
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

/// A policy OID in dotted form, with arcs of any size up to 128 bits.
///
/// X.667 makes `2.25.<uuid>` arcs 128-bit integers, and DESIGN.md's default policy arc is one.
/// const-oid 0.9 keeps arcs in a `u32` and *silently wraps* larger ones while parsing (found
/// here: `2.25.176558870128699696056285303791655210445` came out as `2.25.1854819789`), so
/// policy OIDs are encoded here (X.690 §8.19) instead of through `ObjectIdentifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOid {
    dotted: String,
    content: Vec<u8>,
}

impl PolicyOid {
    /// Parses and encodes a dotted OID: first arc 0–2, second below 40 unless the first is 2,
    /// decimal arcs without leading zeros, at least two arcs.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Config(format!("bad OID {s:?}: {why}"));
        let arcs = s
            .split('.')
            .map(|a| {
                if a.is_empty()
                    || !a.bytes().all(|b| b.is_ascii_digit())
                    || (a.len() > 1 && a.starts_with('0'))
                {
                    return Err(bad("arcs are decimal numbers without leading zeros"));
                }
                a.parse::<u128>()
                    .map_err(|_| bad("an arc is larger than 128 bits"))
            })
            .collect::<Result<Vec<u128>>>()?;
        if arcs.len() < 2 {
            return Err(bad("at least two arcs"));
        }
        if arcs[0] > 2 || (arcs[0] < 2 && arcs[1] >= 40) {
            return Err(bad("first arc 0, 1 or 2; second below 40 under 0 and 1"));
        }
        let first = arcs[0]
            .checked_mul(40)
            .and_then(|v| v.checked_add(arcs[1]))
            .ok_or_else(|| bad("second arc too large"))?;
        let mut content = Vec::new();
        for arc in std::iter::once(first).chain(arcs[2..].iter().copied()) {
            let mut groups = vec![(arc & 0x7f) as u8];
            let mut rest = arc >> 7;
            while rest > 0 {
                groups.push((rest & 0x7f) as u8 | 0x80);
                rest >>= 7;
            }
            content.extend(groups.iter().rev());
        }
        Ok(PolicyOid {
            dotted: s.to_string(),
            content,
        })
    }

    /// The dotted form.
    pub fn as_str(&self) -> &str {
        &self.dotted
    }

    /// The DER contents octets (without tag and length).
    pub fn content(&self) -> &[u8] {
        &self.content
    }
}

/// `PolicyInformation ::= SEQUENCE { policyIdentifier CertPolicyId }` (RFC 5280 §4.2.1.4),
/// without qualifiers.
#[derive(der::Sequence)]
struct PolicyInformation<'a> {
    policy_identifier: der::asn1::AnyRef<'a>,
}

/// certificatePolicies (RFC 5280 §4.2.1.4), non-critical, policy OIDs only (no qualifiers: the
/// BRs make them optional and pkilint prefers none).
pub fn certificate_policies(oids: &[PolicyOid]) -> Result<rcgen::CustomExtension> {
    let infos = oids
        .iter()
        .map(|o| {
            Ok(PolicyInformation {
                policy_identifier: der::asn1::AnyRef::new(der::Tag::ObjectIdentifier, o.content())?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(rcgen::CustomExtension::from_oid_content(
        &oid_arcs(&const_oid::db::rfc5280::ID_CE_CERTIFICATE_POLICIES),
        infos.to_der()?,
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
        let ext = certificate_policies(&[PolicyOid::parse("2.23.140.1.2.2").unwrap()]).unwrap();
        // SEQUENCE { SEQUENCE { OID 2.23.140.1.2.2 } }
        assert_eq!(hex::encode(ext.content()), "300a3008060667810c010202");
    }

    /// Pinned against `openssl asn1parse -genstr OID:<arc>` of the same OIDs.
    #[test]
    fn big_arcs_are_encoded_not_wrapped() {
        let uuid_arc = "2.25.176558870128699696056285303791655210445.2.1";
        let oid = PolicyOid::parse(uuid_arc).unwrap();
        assert_eq!(
            hex::encode(oid.content()),
            "698289d48098bad1c299af8a9580f6f6f4b99b4d0201"
        );
        assert_eq!(
            hex::encode(PolicyOid::parse("1.3.6.1.4.1.32473.1").unwrap().content()),
            "2b0601040181fd5901"
        );
        for bad in [
            "",
            "1",
            "3.1",
            "1.40",
            "1.2.03",
            "1..2",
            "1.2.x",
            "2.25.340282366920938463463374607431768211456",
        ] {
            assert!(PolicyOid::parse(bad).is_err(), "{bad:?} accepted");
        }
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
