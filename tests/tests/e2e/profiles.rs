//! Every profile × {P-256, P-384, RSA-2048}: issued, verified by openssl, clean in pkilint,
//! and the fields the CA must control checked with x509-parser. One CA per profile.

use ecert_e2e::*;

use crate::common::*;

fn matrix(case: ProfileCase) {
    let ca = Ca::init();
    let cases = KeyType::ALL.map(|k| (format!("profile {} / key {}", case.profile, k.label()), k));
    run_all(cases, |ctx, kind| {
        let csr = ca.csr(&format!("{}-{}", case.profile, kind.label()), kind);
        // One of the three asks for an explicit validity.
        let mut args = case.args.clone();
        if kind == KeyType::P384 {
            args.extend(["--days", "30"]);
        }
        let issued = ca.issue(case.profile, &csr.csr, &args, ctx);
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
                &["x509", "-in", issued.cert.path.to_str().unwrap(), "-noout", "-ext", "keyUsage"],
            );
            let ku = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(ku.contains("Digital Signature"), "[{ctx}] {ku}");
            assert_eq!(
                ku.contains("Key Encipherment"),
                matches!(kind, KeyType::Rsa2048),
                "[{ctx}] {ku}"
            );
        }
        if kind == KeyType::P384 {
            let cert = issued.cert.parse();
            let v = cert.validity();
            let secs = v.not_after.timestamp() - v.not_before.timestamp();
            assert!(
                secs == 30 * 86400 - 1 || secs == 30 * 86400,
                "[{ctx}] --days 30 gave a validity of {secs} s"
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
fn profile_personal_minor() {
    matrix(personal_minor());
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
