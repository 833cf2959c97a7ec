//! What every issued certificate must satisfy, and the request data of each profile.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use ecert_e2e::*;
use x509_parser::prelude::*;

pub const OID_COUNTRY: &str = "2.5.4.6";
pub const OID_CN: &str = "2.5.4.3";
pub const OID_SURNAME: &str = "2.5.4.4";
pub const OID_SERIAL_NUMBER: &str = "2.5.4.5";
pub const OID_LOCALITY: &str = "2.5.4.7";
pub const OID_O: &str = "2.5.4.10";
pub const OID_OU: &str = "2.5.4.11";
pub const OID_GIVEN_NAME: &str = "2.5.4.42";
pub const OID_TITLE: &str = "2.5.4.12";
pub const OID_ORG_ID: &str = "2.5.4.97";
pub const OID_EMAIL_ADDRESS: &str = "1.2.840.113549.1.9.1";
pub const OID_AIA_CA_ISSUERS: &str = "1.3.6.1.5.5.7.48.2";

/// One profile's application and what its certificates must look like.
#[derive(Debug, Clone)]
pub struct ProfileCase {
    pub profile: &'static str,
    /// The application as the JSON API takes it (`POST /api/v1/applications`), without the
    /// CSR; its `hkid` is what the counter types from the card.
    pub application: serde_json::Value,
    /// server: the locality the counter reads from the organisation's registration.
    pub locality: Option<&'static str>,
    /// The issuing CA (`ca export` name).
    pub ca: &'static str,
    /// pkilint CA/B linter and its `-t` type.
    pub linter: &'static str,
    pub lint_type: &'static str,
    /// `openssl verify -purpose`.
    pub purpose: Option<&'static str>,
    /// The exact SANs (see [`san_list`]).
    pub sans: Vec<&'static str>,
    /// Subject attributes that must be present with these values.
    pub attrs: Vec<(&'static str, &'static str)>,
    /// Subject attributes that must be absent.
    pub forbidden: Vec<&'static str>,
}

/// The applicant's personal fields (synthetic; the HKID's check digit is valid): a citizen,
/// or an organisation's Authorised Representative.
fn applicant(
    profile: &str,
    surname: &str,
    given: &str,
    email: &str,
    hkid: &str,
) -> serde_json::Value {
    serde_json::json!({
        "profile": profile, "surname": surname, "given_name": given, "email": email,
        "hkid": hkid, "date_of_birth": "1985-06-01", "phone": "+852 2921 2222",
        "address": "2 Connaught Place, Central", "revocation_secret": "my revocation words",
    })
}

/// Adds `fields` to an application.
pub fn with(mut application: serde_json::Value, fields: serde_json::Value) -> serde_json::Value {
    for (k, v) in fields.as_object().unwrap() {
        application[k] = v.clone();
    }
    application
}

pub fn personal() -> ProfileCase {
    ProfileCase {
        profile: "personal",
        application: applicant(
            "personal",
            "Chan",
            "Tai Man",
            "taiman.chan@example.hk",
            "Z683451(6)",
        ),
        locality: None,
        ca: "individual",
        linter: "lint_cabf_smime_cert",
        lint_type: "INDIVIDUAL-MULTIPURPOSE",
        purpose: Some("smimesign"),
        sans: vec!["email:taiman.chan@example.hk"],
        // The counter saw an HKID card: countryName HK (S/MIME BR §7.1.4.2.2(n)).
        attrs: vec![
            (OID_GIVEN_NAME, "Tai Man"),
            (OID_SURNAME, "CHAN"),
            (OID_CN, "CHAN Tai Man"),
            (OID_COUNTRY, "HK"),
        ],
        forbidden: vec![OID_O, OID_ORG_ID, OID_OU, OID_LOCALITY, OID_TITLE],
    }
}

/// e-Cert (Personal/Minor): as personal, under its own policy, for a holder born in 2015 (a
/// guardian consents at the counter).
pub fn personal_minor() -> ProfileCase {
    let mut c = personal();
    c.profile = "personal-minor";
    c.application = with(
        c.application,
        serde_json::json!({"profile": "personal-minor", "date_of_birth": "2015-06-01"}),
    );
    c
}

/// e-Cert (Organisational Role): as organisational, with the holder's role as `title`.
pub fn organisational_role() -> ProfileCase {
    let mut c = organisational();
    c.profile = "organisational-role";
    c.application = with(
        c.application,
        serde_json::json!({"profile": "organisational-role", "user_title": "Ward Manager"}),
    );
    c.attrs.push((OID_TITLE, "Ward Manager"));
    c.forbidden.retain(|o| *o != OID_TITLE);
    c
}

pub fn organisational() -> ProfileCase {
    ProfileCase {
        profile: "organisational",
        application: with(
            applicant(
                "organisational",
                "Lee",
                "Ka Yan",
                "siuming.wong@example.hk",
                "K410002(6)",
            ),
            serde_json::json!({
                "organization": "Example Trading Limited", "org_id": "12345678",
                "user_surname": "Wong", "user_given_name": "Siu Ming",
            }),
        ),
        locality: None,
        ca: "individual",
        linter: "lint_cabf_smime_cert",
        lint_type: "SPONSORED-MULTIPURPOSE",
        purpose: Some("smimesign"),
        sans: vec!["email:siuming.wong@example.hk"],
        attrs: vec![
            (OID_COUNTRY, "HK"),
            (OID_O, "Example Trading Limited"),
            (OID_ORG_ID, "NTRHK-12345678"),
            (OID_GIVEN_NAME, "Siu Ming"),
            (OID_SURNAME, "WONG"),
        ],
        forbidden: vec![OID_OU, OID_LOCALITY, OID_TITLE],
    }
}

pub fn encipherment() -> ProfileCase {
    ProfileCase {
        profile: "encipherment",
        application: with(
            applicant(
                "encipherment",
                "Lee",
                "Ka Yan",
                "secure@example.hk",
                "K410002(6)",
            ),
            serde_json::json!({"organization": "Example Trading Limited", "org_id": "12345678"}),
        ),
        locality: None,
        ca: "individual",
        linter: "lint_cabf_smime_cert",
        lint_type: "ORGANIZATION-STRICT",
        purpose: None,
        sans: vec!["email:secure@example.hk"],
        attrs: vec![
            (OID_COUNTRY, "HK"),
            (OID_O, "Example Trading Limited"),
            (OID_ORG_ID, "NTRHK-12345678"),
        ],
        forbidden: vec![OID_GIVEN_NAME, OID_SURNAME, OID_SERIAL_NUMBER, OID_LOCALITY],
    }
}

/// e-Cert (Encipherment) for a government bureau: organizationIdentifier `GOVHK` (S/MIME BR
/// §7.1.4.2.2(d) Note 2), no registration number (issue 12, defect 6).
pub fn encipherment_government() -> ProfileCase {
    ProfileCase {
        application: with(
            applicant(
                "encipherment",
                "Lee",
                "Ka Yan",
                "secure@example.gov.hk",
                "K410002(6)",
            ),
            serde_json::json!({"organization": "Example Bureau", "org_register": "gov"}),
        ),
        sans: vec!["email:secure@example.gov.hk"],
        attrs: vec![
            (OID_COUNTRY, "HK"),
            (OID_O, "Example Bureau"),
            (OID_ORG_ID, "GOVHK"),
        ],
        ..encipherment()
    }
}

pub fn server() -> ProfileCase {
    ProfileCase {
        profile: "server",
        application: with(
            applicant("server", "Lee", "Ka Yan", "it@example.hk", "K410002(6)"),
            serde_json::json!({
                "organization": "Example Trading Limited", "org_id": "12345678",
                "dns_names": ["www.example.hk", "example.hk"],
            }),
        ),
        locality: Some("Kowloon"),
        ca: "server",
        linter: "lint_cabf_serverauth_cert",
        lint_type: "OV-FINAL-CERTIFICATE",
        purpose: Some("sslserver"),
        sans: vec!["dns:example.hk", "dns:www.example.hk"],
        attrs: vec![
            (OID_COUNTRY, "HK"),
            (OID_O, "Example Trading Limited"),
            (OID_LOCALITY, "Kowloon"),
        ],
        forbidden: vec![OID_ORG_ID, OID_GIVEN_NAME, OID_SURNAME, OID_EMAIL_ADDRESS],
    }
}

/// Everything checked on an issued certificate: chain and purpose (openssl), profile (pkilint
/// CA/B linter, PKIX linter, issuer/subject chain linter), and with x509-parser: the serial
/// encoding, the key from the CSR, no CSR subject data, the exact SANs, the subject attributes,
/// AIA and CRL DP under the configured base URL.
pub fn check_leaf(ca: &Ca, case: &ProfileCase, issued: &Issued, csr: &Path, ctx: &str) {
    // The profile's CA, or its successor after a rollover (`individual-2`).
    assert!(
        issued.ca == case.ca || issued.ca.starts_with(&format!("{}-", case.ca)),
        "[{ctx}] issued by CA {:?}, expected {:?}",
        issued.ca,
        case.ca
    );
    let root = ca.export(root_for(&issued.ca));
    let issuing = ca.export(&issued.ca);
    let leaf = &issued.cert.path;
    openssl_verify(&root.path, &[&issuing.path], leaf, case.purpose, ctx);
    pkilint(case.linter, &["-t", case.lint_type], &[leaf], ctx);
    pkilint("lint_pkix_cert", &[], &[leaf], ctx);
    pkilint(
        "lint_pkix_signer_signee_cert_chain",
        &[],
        &[&issuing.path, leaf],
        ctx,
    );

    let cert = issued.cert.parse();
    let issuing_parsed = issuing.parse();
    assert_eq!(
        cert.issuer().as_raw(),
        issuing_parsed.subject().as_raw(),
        "[{ctx}] issuer name differs from the {} CA's subject",
        case.ca
    );

    // Serial: a positive, minimally encoded INTEGER carrying the 16 bytes `issue` reported.
    let raw = cert.raw_serial();
    let reported = hex::decode(&issued.serial).unwrap();
    assert_eq!(
        reported.len(),
        16,
        "[{ctx}] reported serial {} is not 16 bytes",
        issued.serial
    );
    assert!(
        raw[0] & 0x80 == 0,
        "[{ctx}] serial {} is negative",
        hex::encode(raw)
    );
    assert_eq!(
        raw,
        expected_serial_content(&reported).as_slice(),
        "[{ctx}] certificate serial {} is not the reported {} (as a minimal positive INTEGER)",
        hex::encode(raw),
        issued.serial
    );
    if reported[0] != 0 {
        assert!(
            (16..=17).contains(&raw.len()),
            "[{ctx}] serial is {} octets, expected 16-17",
            raw.len()
        );
    }

    assert_eq!(
        cert.public_key().raw,
        csr_spki(csr).as_slice(),
        "[{ctx}] the certificate does not certify the CSR's key"
    );

    let attrs = name_attrs(cert.subject());
    for (oid, value) in &attrs {
        assert!(
            !value.to_lowercase().contains("ignored"),
            "[{ctx}] subject attribute {oid}={value:?} comes from the CSR; subject: {attrs:?}"
        );
    }
    for (oid, want) in &case.attrs {
        assert!(
            attrs.iter().any(|(o, v)| o == oid && v == want),
            "[{ctx}] subject lacks {oid}={want:?}; subject: {attrs:?}"
        );
    }
    for oid in &case.forbidden {
        assert!(
            !attrs.iter().any(|(o, _)| o == oid),
            "[{ctx}] subject carries forbidden {oid}; subject: {attrs:?}"
        );
    }

    let mut want: Vec<String> = case.sans.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        san_list(&cert),
        want,
        "[{ctx}] SANs differ from the requested names"
    );

    check_urls(&cert, ctx);

    let nb = cert.validity().not_before.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        nb <= now + 300 && nb >= now - 48 * 3600,
        "[{ctx}] notBefore {nb} is not close to now ({now})"
    );
}

/// AIA has a caIssuers URI and CRL DP a URI, and every URI is under [`BASE_URL`].
pub fn check_urls(cert: &X509Certificate<'_>, ctx: &str) {
    let (aia, crl) = aia_and_crl_uris(cert);
    assert!(
        aia.iter().any(|(m, _)| m == OID_AIA_CA_ISSUERS),
        "[{ctx}] AIA has no caIssuers: {aia:?}"
    );
    assert!(!crl.is_empty(), "[{ctx}] no CRL distribution point");
    let prefix = format!("{BASE_URL}/");
    for (_, u) in &aia {
        assert!(
            u.starts_with(&prefix),
            "[{ctx}] AIA URI {u:?} is not under {prefix}"
        );
    }
    for u in &crl {
        assert!(
            u.starts_with(&prefix),
            "[{ctx}] CRL DP URI {u:?} is not under {prefix}"
        );
    }
}

/// Runs each case, catching failures, then fails listing every case that failed.
pub fn run_all<T>(cases: impl IntoIterator<Item = (String, T)>, f: impl Fn(&str, T)) {
    let mut failed = Vec::new();
    for (name, case) in cases {
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(&name, case))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("== {name}:\n{msg}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} case(s) failed:\n{}",
        failed.len(),
        failed.join("\n\n")
    );
}

/// `openssl verify` of a freshly issued personal certificate: the CA still works.
pub fn issue_and_verify_personal(ca: &Ca, name: &str, ctx: &str) -> Issued {
    let case = personal();
    let csr = ca.csr(name, KeyType::P256);
    let issued = crate::apply::issue(ca, &case, &csr.csr, ctx);
    let root = ca.export("root");
    let issuing = ca.export("individual");
    openssl_verify(
        &root.path,
        &[&issuing.path],
        &issued.cert.path,
        case.purpose,
        ctx,
    );
    issued
}
