//! Built-in pre-issuance lints (TLS BR §4.3.1.2, S/MIME BR §4.3.1.2).
//!
//! They run on the linting certificate (the TBS with a static signature value) and mirror what
//! pkilint checks for these profiles: encoding, lengths, string types, required and forbidden
//! extensions, validity. Any finding blocks signing. pkilint itself judges every certificate in
//! the end-to-end tests; these lints keep a bad certificate from ever being signed in production.

use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::profile::{Profile, ProfileKind, MAX_NAME_CHARS};

/// What the certificate is expected to be.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// A subscriber certificate of this profile.
    Leaf(&'a Profile),
    /// A CA certificate.
    Ca,
    /// A delegated OCSP responder certificate (TLS BR §7.1.2.8).
    OcspResponder,
}

/// The facts a certificate is linted against.
#[derive(Debug, Clone, Copy)]
pub struct LintInput<'a> {
    /// The (linting) certificate, DER.
    pub cert_der: &'a [u8],
    /// The issuer's subject name, DER: the certificate's issuer must equal it byte for byte.
    pub issuer_subject_der: &'a [u8],
    /// The subject public key the request approved, DER SPKI.
    pub expected_spki: &'a [u8],
    /// The issuer's subjectKeyIdentifier: a subscriber certificate's AKI must equal it
    /// (RFC 5280 §4.2.1.1).
    pub issuer_key_id: Option<&'a [u8]>,
    /// The signature algorithm of the issuer's key: `signature` and `signatureAlgorithm` must
    /// be its exact encoding ([`crate::sigalg`]; TLS BR §7.1.3.2: NULL parameters for RSA, none
    /// for ECDSA).
    pub issuer_algorithm: hsm::Algorithm,
    /// What it should be.
    pub expect: Expect<'a>,
}

const OID_CP: &str = "2.5.29.32";
const OID_AIA: &str = "1.3.6.1.5.5.7.1.1";
const OID_CDP: &str = "2.5.29.31";
const OID_AKI: &str = "2.5.29.35";
const OID_KU: &str = "2.5.29.15";
const OID_EKU: &str = "2.5.29.37";
const OID_SAN: &str = "2.5.29.17";
const OID_BC: &str = "2.5.29.19";
const OID_SKI: &str = "2.5.29.14";
const OID_OCSP_NOCHECK: &str = "1.3.6.1.5.5.7.48.1.5";

/// The keyIdentifier of an authorityKeyIdentifier extension, if any.
fn authority_key_id<'a>(
    exts: &'a [x509_parser::extensions::X509Extension<'_>],
) -> Option<&'a [u8]> {
    exts.iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
        _ => None,
    })
}

/// The subjectKeyIdentifier of a certificate's extensions, if any.
pub fn subject_key_id(exts: &[x509_parser::extensions::X509Extension<'_>]) -> Option<Vec<u8>> {
    exts.iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    })
}

/// Lints a certificate; returns every finding (empty = clean).
pub fn lint(input: &LintInput<'_>) -> Vec<String> {
    let mut f = Vec::new();
    let cert = match X509Certificate::from_der(input.cert_der) {
        Ok(([], c)) => c,
        Ok(_) => return vec!["trailing bytes after the certificate".into()],
        Err(e) => return vec![format!("certificate does not parse: {e}")],
    };
    let tbs = &cert.tbs_certificate;
    if tbs.version.0 != 2 {
        f.push("version must be v3 (RFC 5280 §4.1.2.1)".into());
    }
    // RFC 5280 §4.1.2.2: positive, at most 20 octets.
    let serial = tbs.raw_serial();
    if serial.is_empty()
        || serial.len() > 20
        || serial[0] & 0x80 != 0
        || serial.iter().all(|b| *b == 0)
    {
        f.push("serial must be a positive INTEGER of at most 20 octets".into());
    }
    if tbs.signature != cert.signature_algorithm {
        f.push(
            "tbsCertificate.signature differs from signatureAlgorithm (RFC 5280 §4.1.1.2)".into(),
        );
    }
    let (want_oid, want_null) = crate::sigalg::oid_and_null(input.issuer_algorithm);
    let params_null = match &tbs.signature.parameters {
        None => Some(false),
        Some(p) if p.tag() == Tag::Null && p.data.is_empty() => Some(true),
        Some(_) => None,
    };
    match (tbs.signature.algorithm.to_id_string(), params_null) {
        (oid, Some(null)) if oid == want_oid && null == want_null => {}
        _ => f.push(format!(
            "tbsCertificate.signature is not the issuer key's algorithm ({:?}) in its required \
             encoding (TLS BR §7.1.3.2)",
            input.issuer_algorithm
        )),
    }
    if tbs.issuer.as_raw() != input.issuer_subject_der {
        f.push("issuer name is not byte-identical to the CA's subject".into());
    }
    if tbs.subject_pki.raw != input.expected_spki {
        f.push("subject public key differs from the approved request's key".into());
    }
    let nb = tbs.validity.not_before.timestamp();
    let na = tbs.validity.not_after.timestamp();
    if na <= nb {
        f.push("notAfter is not after notBefore".into());
    }
    for rdn in tbs.subject.iter() {
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let tag = atv.attr_value().tag();
            let text = atv.as_str().unwrap_or_default();
            let upper = match oid.as_str() {
                "2.5.4.3" | "2.5.4.10" | "2.5.4.11" | "2.5.4.7" | "2.5.4.8" => MAX_NAME_CHARS,
                "2.5.4.5" => 64,
                "2.5.4.6" => 2,
                _ => 64,
            };
            if text.chars().count() > upper {
                f.push(format!(
                    "subject attribute {oid} is longer than {upper} characters"
                ));
            }
            if text.is_empty() {
                f.push(format!("subject attribute {oid} is empty or not a string"));
            }
            let printable_only = matches!(oid.as_str(), "2.5.4.6" | "2.5.4.5");
            if printable_only && tag != Tag::PrintableString {
                f.push(format!("subject attribute {oid} must be a PrintableString"));
            }
            if !matches!(tag, Tag::PrintableString | Tag::Utf8String) {
                f.push(format!(
                    "subject attribute {oid} must be PrintableString or UTF8String"
                ));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for e in tbs.extensions() {
        if !seen.insert(e.oid.to_id_string()) {
            f.push(format!("extension {} appears twice (RFC 5280 §4.2)", e.oid));
        }
        // x509-parser has no parser for id-pkix-ocsp-nocheck; its value is checked below.
        if let ParsedExtension::UnsupportedExtension { .. } | ParsedExtension::ParseError { .. } =
            e.parsed_extension()
        {
            if e.oid.to_id_string() == OID_OCSP_NOCHECK {
                continue;
            }
            f.push(format!("extension {} does not parse", e.oid));
        }
    }
    let has = |oid: &str| seen.contains(oid);
    let crit = |oid: &str| {
        tbs.extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == oid)
            .map(|e| e.critical)
    };
    if !has(OID_AKI) && !matches!(input.expect, Expect::Ca) {
        f.push("authorityKeyIdentifier is required (RFC 5280 §4.2.1.1)".into());
    }
    if crit(OID_KU) != Some(true) {
        f.push("keyUsage must be present and critical".into());
    }
    match input.expect {
        Expect::Ca => {
            if crit(OID_BC) != Some(true) {
                f.push("a CA certificate needs a critical basicConstraints".into());
            }
            if !has(OID_SKI) {
                f.push("a CA certificate needs subjectKeyIdentifier (RFC 5280 §4.2.1.2)".into());
            }
            match tbs.basic_constraints() {
                Ok(Some(bc)) if bc.value.ca => {}
                _ => f.push("a CA certificate needs cA=TRUE".into()),
            }
        }
        Expect::OcspResponder => {
            if input.issuer_key_id.is_some()
                && authority_key_id(tbs.extensions()) != input.issuer_key_id
            {
                f.push(
                    "authorityKeyIdentifier does not match the issuer's subjectKeyIdentifier"
                        .into(),
                );
            }
            match tbs.extended_key_usage() {
                Ok(Some(eku))
                    if eku.value.ocsp_signing
                        && !eku.value.any
                        && !eku.value.server_auth
                        && !eku.value.client_auth
                        && !eku.value.code_signing
                        && !eku.value.email_protection
                        && !eku.value.time_stamping
                        && eku.value.other.is_empty() => {}
                _ => {
                    f.push("extKeyUsage must be id-kp-OCSPSigning alone (TLS BR §7.1.2.8.5)".into())
                }
            }
            match tbs
                .extensions()
                .iter()
                .find(|e| e.oid.to_id_string() == OID_OCSP_NOCHECK)
            {
                Some(e) if e.value == [0x05, 0x00] && !e.critical => {}
                _ => f.push(
                    "id-pkix-ocsp-nocheck must be present, non-critical, with NULL (TLS BR §7.1.2.8.6)"
                        .into(),
                ),
            }
            match tbs.key_usage() {
                Ok(Some(ku)) if ku.value.flags == 1 => {}
                _ => f.push("keyUsage must be digitalSignature alone (TLS BR §7.1.2.8.7)".into()),
            }
            for (oid, what) in [
                (OID_SAN, "subjectAltName"),
                (OID_CDP, "cRLDistributionPoints"),
                (OID_CP, "certificatePolicies"),
            ] {
                if has(oid) {
                    f.push(format!(
                        "{what} must not be in an OCSP responder certificate"
                    ));
                }
            }
            if let Ok(Some(bc)) = tbs.basic_constraints() {
                if bc.value.ca {
                    f.push("an OCSP responder certificate must not be a CA".into());
                }
            }
        }
        Expect::Leaf(profile) => {
            let aki = authority_key_id(tbs.extensions());
            if input.issuer_key_id.is_some() && aki != input.issuer_key_id {
                f.push(
                    "authorityKeyIdentifier does not match the issuer's subjectKeyIdentifier"
                        .into(),
                );
            }
            if let Ok(Some(bc)) = tbs.basic_constraints() {
                if bc.value.ca {
                    f.push("a subscriber certificate must not be a CA".into());
                }
            }
            for (oid, what) in [
                (OID_CP, "certificatePolicies"),
                (OID_AIA, "authorityInformationAccess"),
                (OID_CDP, "cRLDistributionPoints"),
                (OID_EKU, "extKeyUsage"),
                (OID_SAN, "subjectAltName"),
            ] {
                if !has(oid) {
                    f.push(format!("{what} is required in a subscriber certificate"));
                }
                if crit(oid) == Some(true) && oid != OID_SAN {
                    f.push(format!("{what} must not be critical"));
                }
            }
            let days = (na - nb + 1) as f64 / 86400.0;
            let max = profile.max_days_at(tbs.validity.not_before.to_datetime());
            if days > f64::from(max) {
                f.push(format!(
                    "validity {days:.0} days exceeds the profile maximum {max}"
                ));
            }
            if let Ok(Some(san)) = tbs.subject_alternative_name() {
                for n in &san.value.general_names {
                    match (n, profile.kind) {
                        (GeneralName::RFC822Name(_), ProfileKind::Server) => {
                            f.push("a server certificate carries no e-mail".into())
                        }
                        (GeneralName::DNSName(d), ProfileKind::Server) if d.contains('*') => {
                            f.push("wildcard DNS name".into())
                        }
                        (GeneralName::DNSName(_), ProfileKind::Server) => {}
                        (GeneralName::RFC822Name(_), _) => {}
                        _ => f.push(
                            "subjectAltName carries a name type this profile does not allow".into(),
                        ),
                    }
                }
                if san.value.general_names.is_empty() {
                    f.push("subjectAltName is empty".into());
                }
            }
            if has(OID_SKI) && profile.kind == ProfileKind::Server {
                f.push("subjectKeyIdentifier is NOT RECOMMENDED in TLS subscriber certificates (TLS BR §7.1.2.7.6)".into());
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::keys::SubscriberKey;
    use crate::profile::{IssueContext, Profile, SubjectData};
    use crate::serial::SerialNumber;

    /// A clean server certificate from the real profile code, then one mutation per rule: each
    /// must produce a finding (and so block signing).
    #[test]
    fn each_rule_finds_its_violation() {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_der(ca_cert.der(), &ca_key).unwrap();
        let (_, parsed_ca) = X509Certificate::from_der(ca_cert.der()).unwrap();
        let issuer_subject = parsed_ca.tbs_certificate.subject.as_raw().to_vec();
        let issuer_key_id = subject_key_id(parsed_ca.tbs_certificate.extensions());
        assert!(issuer_key_id.is_some(), "test CA has no SKI");
        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&leaf_key);
        let key = SubscriberKey::from_spki_der(&spki).unwrap();
        let profile = Profile::get("server").unwrap();
        let ctx = IssueContext {
            crl_partition: Some(3),
            base_url: "http://pki.example.hk",
            policy_arc: "1.3.6.1.4.1.32473.1",
            issuer: crate::profile::CaId::first(crate::profile::CaRole::Server),
        };
        let subject = SubjectData {
            organization: Some("Example Ltd".into()),
            country: Some("HK".into()),
            locality: Some("Hong Kong".into()),
            dns_names: vec!["www.example.hk".into()],
            ..Default::default()
        };
        let now = time::macros::datetime!(2026-11-23 12:00 UTC);
        let base = profile
            .params(&ctx, &subject, &key, SerialNumber::random(), now, None)
            .unwrap();
        let run = |p: &rcgen::CertificateParams, expected_spki: &[u8], issuer_subject: &[u8]| {
            let cert = p.signed_by(&key, &issuer).unwrap();
            lint(&LintInput {
                cert_der: cert.der(),
                issuer_subject_der: issuer_subject,
                expected_spki,
                issuer_key_id: issuer_key_id.as_deref(),
                issuer_algorithm: hsm::Algorithm::EcdsaP256Sha256,
                expect: Expect::Leaf(profile),
            })
        };
        assert_eq!(
            run(&base, &spki, &issuer_subject),
            Vec::<String>::new(),
            "the clean certificate has findings"
        );
        // Signed with ECDSA, but the issuer's key is RSA (or P-384): the encoding is not the
        // issuer's, so the HSM would be asked for a certificate its key cannot match.
        for other in [
            hsm::Algorithm::RsaPkcs1Sha256,
            hsm::Algorithm::EcdsaP384Sha384,
        ] {
            let cert = base.signed_by(&key, &issuer).unwrap();
            let f = lint(&LintInput {
                cert_der: cert.der(),
                issuer_subject_der: &issuer_subject,
                expected_spki: &spki,
                issuer_key_id: issuer_key_id.as_deref(),
                issuer_algorithm: other,
                expect: Expect::Leaf(profile),
            });
            assert!(
                f.iter().any(|x| x.contains("issuer key's algorithm")),
                "{other:?}: {f:?}"
            );
        }

        let mut cases: Vec<(&str, rcgen::CertificateParams)> = Vec::new();
        let mut p = base.clone();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        cases.push(("must not be a CA", p));
        let mut p = base.clone();
        p.custom_extensions
            .retain(|e| e.oid_components().collect::<Vec<_>>() != [1, 3, 6, 1, 5, 5, 7, 1, 1]);
        cases.push(("authorityInformationAccess is required", p));
        let mut p = base.clone();
        p.not_after = p.not_before + time::Duration::days(200);
        cases.push(("exceeds the profile maximum", p));
        let mut p = base.clone();
        p.subject_alt_names = vec![rcgen::SanType::DnsName("*.example.hk".try_into().unwrap())];
        cases.push(("wildcard", p));
        let mut p = base.clone();
        p.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            "a@example.hk".try_into().unwrap(),
        ));
        cases.push(("carries no e-mail", p));
        let mut p = base.clone();
        p.key_usages.clear();
        cases.push(("keyUsage must be present", p));
        let mut p = base.clone();
        p.distinguished_name.push(
            rcgen::DnType::CountryName,
            rcgen::DnValue::Utf8String("HK".into()),
        );
        cases.push(("PrintableString", p));
        let mut p = base.clone();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "x".repeat(65));
        cases.push(("longer than 64", p));
        let mut p = base.clone();
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x80; 21]));
        cases.push(("serial must be a positive INTEGER", p));
        for (expected, p) in &cases {
            let f = run(p, &spki, &issuer_subject);
            assert!(
                f.iter().any(|x| x.contains(expected)),
                "{expected:?} not found in {f:?}"
            );
        }
        let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let f = run(
            &base,
            &rcgen::PublicKeyData::subject_public_key_info(&other_key),
            &issuer_subject,
        );
        assert!(
            f.iter().any(|x| x.contains("approved request's key")),
            "{f:?}"
        );
        let cert = base.signed_by(&key, &issuer).unwrap();
        let f = lint(&LintInput {
            cert_der: cert.der(),
            issuer_subject_der: &issuer_subject,
            expected_spki: &spki,
            issuer_key_id: Some(&[0u8; 20]),
            issuer_algorithm: hsm::Algorithm::EcdsaP256Sha256,
            expect: Expect::Leaf(profile),
        });
        assert!(
            f.iter()
                .any(|x| x.contains("authorityKeyIdentifier does not match")),
            "{f:?}"
        );
        let f = run(&base, &spki, b"\x30\x00");
        assert!(f.iter().any(|x| x.contains("byte-identical")), "{f:?}");
    }

    /// A clean CRL from rcgen (an encoder other than ours), then one violation per rule: each
    /// must be found by [`crate::crl::lint`].
    #[test]
    fn each_crl_rule_finds_its_violation() {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_der(ca_cert.der(), &ca_key).unwrap();
        let (_, parsed_ca) = X509Certificate::from_der(ca_cert.der()).unwrap();
        let subject = parsed_ca.tbs_certificate.subject.as_raw().to_vec();
        let ski: Vec<u8> = subject_key_id(parsed_ca.tbs_certificate.extensions()).unwrap();
        let now = time::macros::datetime!(2026-11-23 12:00 UTC);
        let entry = |serial: u8, reason| rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(&[serial]),
            revocation_time: now,
            reason_code: reason,
            invalidity_date: None,
        };
        let base = rcgen::CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(7),
            crl_number: rcgen::SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: vec![entry(1, Some(rcgen::RevocationReason::KeyCompromise))],
            key_identifier_method: rcgen::KeyIdMethod::PreSpecified(ski.clone()),
        };
        let run = |p: &rcgen::CertificateRevocationListParams,
                   hold_allowed: bool,
                   key_id: &[u8]| {
            let crl = p.signed_by(&issuer).unwrap();
            let (_, parsed) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(crl.der())
                    .unwrap();
            crate::crl::lint(&crate::crl::LintInput {
                tbs: parsed.tbs_cert_list.as_ref(),
                algorithm: &crate::sigalg::algorithm_identifier(hsm::Algorithm::EcdsaP256Sha256)
                    .unwrap(),
                issuer_subject_der: &subject,
                issuer_key_id: key_id,
                max_validity_secs: 10 * 86_400,
                hold_allowed,
                idp_uri: None,
            })
        };
        assert_eq!(
            run(&base, false, &ski),
            Vec::<String>::new(),
            "the clean CRL has findings"
        );
        let mut cases: Vec<(&str, rcgen::CertificateRevocationListParams, bool)> = Vec::new();
        let mut p = base.clone();
        p.next_update = now + time::Duration::days(11);
        cases.push(("more than", p, false));
        let mut p = base.clone();
        p.revoked_certs
            .push(entry(2, Some(rcgen::RevocationReason::CertificateHold)));
        cases.push(("certificateHold is not allowed", p, false));
        // (rcgen itself omits an unspecified reasonCode, so that rule cannot be provoked here.)
        let mut p = base.clone();
        p.revoked_certs.push(entry(1, None));
        cases.push(("strictly ascending", p, true));
        for (expected, p, hold) in &cases {
            let f = run(p, *hold, &ski);
            assert!(
                f.iter().any(|x| x.contains(expected)),
                "{expected:?} not found in {f:?}"
            );
        }
        let f = run(&base, false, &[0u8; 20]);
        assert!(
            f.iter().any(|x| x.contains("authorityKeyIdentifier")),
            "{f:?}"
        );
        // Hold is fine where allowed.
        let mut p = base.clone();
        p.revoked_certs
            .push(entry(2, Some(rcgen::RevocationReason::CertificateHold)));
        assert_eq!(run(&p, true, &ski), Vec::<String>::new());
    }

    #[test]
    fn garbage_is_a_finding_not_a_panic() {
        let input = LintInput {
            cert_der: b"\x30\x00",
            issuer_subject_der: b"",
            expected_spki: b"",
            issuer_key_id: None,
            issuer_algorithm: hsm::Algorithm::EcdsaP256Sha256,
            expect: Expect::Ca,
        };
        assert_eq!(lint(&input).len(), 1);
    }
}
