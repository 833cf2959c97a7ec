//! Every profile × {P-256, P-384, RSA-2048}: issued, verified by openssl, clean in pkilint,
//! and the fields the CA must control checked with x509-parser. One CA per profile.

use ecert_e2e::*;

use crate::common::*;

fn matrix(case: ProfileCase) {
    let ca = Ca::init();
    let cases = KeyType::ALL.map(|k| (format!("profile {} / key {}", case.profile, k.label()), k));
    run_all(cases, |ctx, kind| {
        let csr = ca.csr(&format!("{}-{}", case.profile, kind.label()), kind);
        let issued = crate::apply::issue(&ca, &case, &csr.csr, ctx);
        check_leaf(&ca, &case, &issued, &csr.csr, ctx);
        // Each profile asserts its own policy under the configured arc.
        let local = match case.profile {
            "personal" => 1,
            "organisational" => 2,
            "encipherment" => 3,
            "server" => 4,
            "personal-minor" => 5,
            "organisational-role" => 6,
            other => panic!("no policy known for {other}"),
        };
        let cert = issued.cert.parse();
        let policies: Vec<String> = cert
            .extensions()
            .iter()
            .filter_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::CertificatePolicies(p) => Some(p),
                _ => None,
            })
            .flat_map(|p| p.iter().map(|i| i.policy_id.to_id_string()))
            .collect();
        assert!(
            policies.contains(&format!("1.3.6.1.4.1.32473.1.2.{local}")),
            "[{ctx}] policies {policies:?}"
        );
        // Server certificates: keyEncipherment for an RSA key (NSS's classic verifier wants it
        // for TLS server use; issue 12, defect 11), digitalSignature alone for EC keys; as
        // openssl prints them.
        if case.profile == "server" {
            let o = openssl(
                ca.data_dir(),
                &[
                    "x509",
                    "-in",
                    issued.cert.path.to_str().unwrap(),
                    "-noout",
                    "-ext",
                    "keyUsage",
                ],
            );
            let ku = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(ku.contains("Digital Signature"), "[{ctx}] {ku}");
            assert_eq!(
                ku.contains("Key Encipherment"),
                matches!(kind, KeyType::Rsa2048),
                "[{ctx}] {ku}"
            );
        }
        let row = ca
            .cert_list()
            .into_iter()
            .find(|r| r.serial == issued.serial);
        assert!(
            row.as_ref()
                .is_some_and(|r| r.state == "issued" && r.profile == case.profile),
            "[{ctx}] `cert list` row for {}: {row:?}",
            issued.serial
        );
        let show = ca.cert_show(&issued.serial);
        assert_eq!(
            show.get("state").map(String::as_str),
            Some("issued"),
            "[{ctx}] cert show: {show:?}"
        );
    });
    ca.audit_ok();
}

#[test]
fn profile_personal() {
    matrix(personal());
}

#[test]
fn profile_organisational() {
    matrix(organisational());
}

#[test]
fn profile_encipherment_government() {
    matrix(encipherment_government());
}

#[test]
fn profile_personal_minor() {
    matrix(personal_minor());
}

/// A minor's certificate ends before the 18th birthday (issue 12, defect 8): a holder who
/// turns 18 in about ten days gets about ten days.
#[test]
fn a_minors_certificate_ends_before_the_18th_birthday() {
    let ca = Ca::init();
    let csr = ca.csr("minor", KeyType::P256);
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 86_400;
    let (y, m, d) = civil_from_days(today + 10);
    let dob = format!("{:04}-{:02}-{:02}", y - 18, m, d.min(28));
    let mut case = personal_minor();
    case.application["date_of_birth"] = dob.into();
    let issued = crate::apply::issue(&ca, &case, &csr.csr, "a minor 18 in ten days");
    let v = issued.cert.parse().validity().clone();
    let days = (v.not_after.timestamp() - v.not_before.timestamp()) / 86_400;
    assert!(
        (5..=11).contains(&days),
        "{days} days for a holder 18 in about ten days"
    );
}

/// The civil date (year, month, day) of a count of days since 1970-01-01 (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[test]
fn profile_organisational_role() {
    matrix(organisational_role());
}

#[test]
fn profile_encipherment() {
    matrix(encipherment());
}

#[test]
fn profile_server() {
    matrix(server());
}

/// The judge judges: pkilint run through the harness's one-process server still refuses a
/// certificate it finds errors in (a CA certificate without keyUsage, RFC 5280 §4.2.1.3),
/// names the finding, and keeps judging after a refusal.
#[test]
fn pkilint_through_the_harness_refuses_a_bad_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("no-ku.pem");
    let o = openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            dir.path().join("k.pem").to_str().unwrap(),
            "-out",
            bad.to_str().unwrap(),
            "-subj",
            "/CN=no keyUsage",
            "-days",
            "2",
        ],
    );
    assert!(o.status.success());
    let refused = std::panic::catch_unwind(|| pkilint("lint_pkix_cert", &[], &[&bad], "bad"))
        .expect_err("pkilint passed a CA certificate without keyUsage");
    let msg = refused
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(msg.contains("pkix.ca_certificate_no_ku_extension"), "{msg}");
    // A clean one after the refusal: the same server, still judging.
    let ca = Ca::init();
    let root = ca.export("root");
    pkilint("lint_pkix_cert", &[], &[&root.path], "root after a refusal");
}

/// The S/MIME linter's validators are reused between certificates by the harness's pkilint
/// server: a certificate with an S/MIME error linted after clean ones is still refused.
#[test]
fn pkilint_smime_refuses_after_clean_ones() {
    let ca = Ca::init();
    let case = personal();
    let leaf = crate::apply::issue(&ca, &case, &ca.csr("p", KeyType::P256).csr, "personal");
    for _ in 0..3 {
        pkilint(
            case.linter,
            &["-t", case.lint_type],
            &[&leaf.cert.path],
            "clean",
        );
    }
    // The same personal certificate judged as another type: the linter must find errors.
    let refused = std::panic::catch_unwind(|| {
        pkilint(
            case.linter,
            &["-t", "SPONSORED-STRICT"],
            &[&leaf.cert.path],
            "wrong type",
        )
    });
    assert!(
        refused.is_err(),
        "judged as SPONSORED-STRICT, a personal certificate passed"
    );
    pkilint(
        case.linter,
        &["-t", case.lint_type],
        &[&leaf.cert.path],
        "clean again",
    );
}
