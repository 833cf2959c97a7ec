//! CA key types (issue 15): a hierarchy of RSA keys is first-class. Every profile is issued
//! under it and judged by openssl and pkilint; its CRLs and OCSP responses too.

use ecert_e2e::*;

use crate::common::*;

/// Whether `openssl asn1parse` reads both of a certificate's signature algorithms (in the TBS
/// and outside it) as `sha256WithRSAEncryption` with NULL parameters (TLS BR §7.1.3.2.1).
fn rsa_sha256_with_null(ca: &Ca, pem: &std::path::Path) -> bool {
    let o = openssl(ca.data_dir(), &["asn1parse", "-in", pem.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let at: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].ends_with(":sha256WithRSAEncryption"))
        .collect();
    at.len() == 2
        && at
            .iter()
            .all(|i| lines.get(i + 1).is_some_and(|l| l.contains("prim: NULL")))
}

/// RSA hierarchies (RSA-4096 S/MIME root, RSA-3072 TLS root, RSA-2048 issuing CAs): every profile with an RSA and an EC
/// subscriber key, each certificate signed `sha256WithRSAEncryption` and clean by openssl and
/// pkilint; then a revocation per issuing CA, their CRLs (RSA-signed) judged by `openssl crl`,
/// `openssl verify -crl_check` and `lint_crl`, and OCSP answered by an RSA responder judged by
/// `openssl ocsp` and `lint_ocsp_response`.
#[test]
fn rsa_hierarchy_every_profile_crl_and_ocsp() {
    let ca = Ca::new();
    // Continues the `[ca]` table the harness's configuration ends with.
    ca.append_config(
        "key_type = \"rsa2048\"\nkey_types = { root = \"rsa4096\", tls-root = \"rsa3072\" }",
    );
    ca.ecert_ok(&["init"]);
    for name in ["root", "tls-root", "individual", "server"] {
        let exported = ca.export(name);
        let text = String::from_utf8_lossy(
            &openssl(
                ca.data_dir(),
                &[
                    "x509",
                    "-in",
                    exported.path.to_str().unwrap(),
                    "-noout",
                    "-text",
                ],
            )
            .stdout,
        )
        .into_owned();
        let bits = match name {
            "root" => 4096,
            "tls-root" => 3072,
            _ => 2048,
        };
        assert!(
            text.contains(&format!("Public-Key: ({bits} bit)")),
            "{name}: {text}"
        );
        assert!(rsa_sha256_with_null(&ca, &exported.path), "{name}");
    }
    let cases = [
        personal(),
        personal_minor(),
        organisational(),
        organisational_role(),
        encipherment(),
        encipherment_government(),
        server(),
    ];
    let mut issued = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        // RSA subscriber keys for half, EC for the others.
        let kind = if i % 2 == 0 {
            KeyType::Rsa2048
        } else {
            KeyType::P256
        };
        let ctx = format!("RSA hierarchy / {} / {}", case.profile, kind.label());
        let csr = ca.csr(&format!("rsa-h-{i}"), kind);
        let leaf = crate::apply::issue(&ca, case, &csr.csr, &ctx);
        check_leaf(&ca, case, &leaf, &csr.csr, &ctx);
        assert!(rsa_sha256_with_null(&ca, &leaf.cert.path), "[{ctx}]");
        issued.push((case.clone(), leaf));
    }

    // One revocation on each issuing CA, then their CRLs.
    let (_, personal_leaf) = &issued[0];
    let (_, server_leaf) = issued.last().unwrap();
    crate::apply::revoke_ok(
        &ca,
        &[
            "--serial",
            &personal_leaf.serial,
            "--reason",
            "keyCompromise",
        ],
    );
    crate::apply::revoke_ok(
        &ca,
        &["--serial", &server_leaf.serial, "--reason", "superseded"],
    );
    ca.ecert_ok(&["crl", "publish"]);
    for (name, leaf, profile) in [
        ("individual", personal_leaf, &["-t", "CRL", "-p", "PKIX"]),
        ("server", server_leaf, &["-t", "CRL", "-p", "BR"]),
    ] {
        let issuing = ca.export(name);
        let root = ca.export(root_for(name));
        let crl = crate::crl::export_crl(&ca, name, &format!("{name}.crl.pem"));
        let o = openssl(
            ca.data_dir(),
            &[
                "crl",
                "-in",
                crl.to_str().unwrap(),
                "-CAfile",
                issuing.path.to_str().unwrap(),
                "-noout",
                "-text",
            ],
        );
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("verify OK"), "{name} CRL: {out}");
        assert!(out.contains("sha256WithRSAEncryption"), "{name} CRL: {out}");
        pkilint("lint_crl", profile, &[&crl], &format!("{name} CRL (RSA)"));
        let e = crate::crl::verify_with_crl(&ca, &root.path, &issuing.path, &crl, &leaf.cert.path)
            .expect_err("a revoked certificate passes -crl_check");
        assert!(e.contains("certificate revoked"), "{e}");
    }
    // Another certificate of the Individual CA still verifies with its CRL.
    let (_, other) = &issued[2];
    let individual = ca.export("individual");
    let root = ca.export("root");
    let crl = ca.file("individual.crl.pem");
    crate::crl::verify_with_crl(&ca, &root.path, &individual.path, &crl, &other.cert.path).unwrap();

    // OCSP: the responder has an RSA key, its responses verify and lint clean.
    let srv = crate::serve::start(&ca);
    let chain = crate::ocsp::chain(&ca);
    for (leaf, issuer, status) in [
        (personal_leaf, &chain.individual, "revoked"),
        (&issued[2].1, &chain.individual, "good"),
        (server_leaf, &chain.server, "revoked"),
    ] {
        let out = ca.file(&format!("ocsp-{}.der", leaf.serial));
        let said = crate::ocsp::wait_status(
            &ca,
            &srv.1,
            &chain,
            issuer,
            &leaf.cert.path,
            status,
            &out,
            "RSA OCSP",
        );
        crate::ocsp::assert_status(&said, &leaf.cert.path, status, "RSA OCSP");
        crate::ocsp::lint_response(&out, "RSA OCSP");
        let o = openssl(
            ca.data_dir(),
            &[
                "ocsp",
                "-respin",
                out.to_str().unwrap(),
                "-resp_text",
                "-noverify",
            ],
        );
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("sha256WithRSAEncryption"), "{text}");
    }
    ca.audit_ok();
}

/// `openssl verify -purpose P -CAfile ROOT -untrusted ISSUING LEAF` succeeded.
fn chains(
    root: &std::path::Path,
    issuing: &std::path::Path,
    leaf: &std::path::Path,
    purpose: &str,
) -> bool {
    let mut c = std::process::Command::new("openssl");
    c.args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
        .arg(root)
        .arg("-untrusted")
        .arg(issuing)
        .arg(leaf);
    run_with_timeout(c, std::time::Duration::from_secs(60), "openssl verify")
        .status
        .success()
}

/// Two hierarchies, one purpose each (Mozilla Root Store Policy 3.1 §7.5; Chrome's dedicated
/// TLS hierarchies): a server certificate chains to the TLS root for `sslserver` and not to the
/// S/MIME root; a personal certificate chains to the S/MIME root for `smimesign` and not to the
/// TLS root, whichever intermediates are offered.
#[test]
fn a_certificate_chains_only_to_the_root_of_its_purpose() {
    let ca = Ca::init();
    let tls = crate::apply::issue(&ca, &server(), &ca.csr("tls", KeyType::P256).csr, "server");
    let mail = crate::apply::issue(
        &ca,
        &personal(),
        &ca.csr("mail", KeyType::P256).csr,
        "personal",
    );
    let (root, tls_root) = (ca.export("root"), ca.export("tls-root"));
    let (individual, server_ca) = (ca.export("individual"), ca.export("server"));
    let both = ca.file("both-issuing.pem");
    std::fs::write(
        &both,
        [
            std::fs::read(&individual.path).unwrap(),
            std::fs::read(&server_ca.path).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    assert!(chains(
        &tls_root.path,
        &server_ca.path,
        &tls.cert.path,
        "sslserver"
    ));
    assert!(chains(
        &root.path,
        &individual.path,
        &mail.cert.path,
        "smimesign"
    ));
    for purpose in ["sslserver", "smimesign", "any"] {
        assert!(
            !chains(&root.path, &both, &tls.cert.path, purpose),
            "the server certificate chains to the S/MIME root ({purpose})"
        );
        assert!(
            !chains(&tls_root.path, &both, &mail.cert.path, purpose),
            "the personal certificate chains to the TLS root ({purpose})"
        );
    }
    // What the applicant downloads names the right root too: the server certificate's issuing
    // CA says where its root is (caIssuers) and the S/MIME root's CRL is not its CDP.
    let (aia, _) = aia_and_crl_uris(&server_ca.parse());
    assert!(
        aia.iter().any(|(_, u)| u.ends_with("/ca/tls-root.crt")),
        "{aia:?}"
    );
}
