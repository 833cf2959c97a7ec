//! Certificate chains as PKCS#7 (`.p7b`): a "certs-only" CMS SignedData (RFC 5652 §5 with no
//! signers, the degenerate form of RFC 8551 §3.2.2 / RFC 2315 §9.1), which Windows, macOS and
//! `openssl pkcs7 -print_certs` import as a chain.

use der::asn1::ObjectIdentifier;
use der::{Encode, Header, Length, Tag, TagNumber};

use crate::error::Result;

/// id-signedData (RFC 5652 §5.1).
const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// id-data (RFC 5652 §4).
const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");

fn tlv(tag: Tag, content: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(content.len() + 6);
    Header::new(tag, Length::try_from(content.len())?)?.encode_to_vec(&mut out)?;
    out.extend_from_slice(content);
    Ok(out)
}

/// `ContentInfo { id-signedData, [0] SignedData { version 1, digestAlgorithms {}, encapContentInfo
/// { id-data }, certificates [0] IMPLICIT certs, signerInfos {} } }`, DER (the SET OF
/// certificates sorted by encoding, X.690 §11.6).
pub fn certs_only(certs: &[Vec<u8>]) -> Result<Vec<u8>> {
    let mut sorted: Vec<&Vec<u8>> = certs.iter().collect();
    sorted.sort();
    let certificates = tlv(
        Tag::ContextSpecific {
            constructed: true,
            number: TagNumber::N0,
        },
        &sorted
            .iter()
            .flat_map(|c| c.iter().copied())
            .collect::<Vec<u8>>(),
    )?;
    let signed_data = tlv(
        Tag::Sequence,
        &[
            1u8.to_der()?,
            tlv(Tag::Set, &[])?,
            tlv(Tag::Sequence, &DATA.to_der()?)?,
            certificates,
            tlv(Tag::Set, &[])?,
        ]
        .concat(),
    )?;
    tlv(
        Tag::Sequence,
        &[
            SIGNED_DATA.to_der()?,
            tlv(
                Tag::ContextSpecific {
                    constructed: true,
                    number: TagNumber::N0,
                },
                &signed_data,
            )?,
        ]
        .concat(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The structure parses as RustCrypto's `cms`-compatible ContentInfo shape and carries the
    /// certificates unchanged (openssl reads it in the e2e tests).
    #[test]
    fn wraps_the_certificates() {
        let a = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        let b = vec![0x30, 0x03, 0x02, 0x01, 0x02];
        let p7 = certs_only(&[b.clone(), a.clone()]).unwrap();
        let hex = hex::encode(&p7);
        assert!(hex.starts_with("30"));
        assert!(hex.contains("06092a864886f70d010702"), "signedData OID");
        assert!(
            hex.contains(&format!("a00a{}{}", hex::encode(&a), hex::encode(&b))),
            "sorted certificates: {hex}"
        );
        assert!(hex.ends_with("3100"), "empty signerInfos");
    }
}
