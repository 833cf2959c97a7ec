//! CA rollover (issue 15): a successor to the Individual CA is made in a key ceremony, waits
//! pending, is activated in a second one; new issuance goes to it while its predecessor keeps
//! publishing its CRL and answering OCSP for what it issued. Each leaf's CDP and caIssuers
//! URLs are fetched literally from the service; openssl, pkilint and the OCSP responders judge.

use std::path::{Path, PathBuf};

use ecert_e2e::*;
use x509_parser::prelude::FromDer;

use crate::common::*;

const CUSTODIAN: &str = "the operator of the embedded default";
const G2: &str = "ecert Test Individual CA G2";

fn ceremony_file(ca: &Ca, name: &str, steps: &str) -> PathBuf {
    let file = ca.file(name);
    std::fs::write(
        &file,
        format!("name = \"{name}\"\ncustodians = [\"{CUSTODIAN}\"]\nquorum = 1\n{steps}"),
    )
    .unwrap();
    file
}

/// `ca list`: id → state.
fn states(ca: &Ca) -> Vec<(String, String)> {
    ca.ecert_ok(&["ca", "list"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[4].to_string())
        })
        .collect()
}

fn state_of(ca: &Ca, id: &str) -> String {
    states(ca)
        .into_iter()
        .find(|(n, _)| n == id)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("{id} is not in `ca list`: {:?}", states(ca)))
}

/// The path of a URL the certificates carry, as the service answers it.
fn path_of(url: &str) -> &str {
    url.strip_prefix(BASE_URL)
        .unwrap_or_else(|| panic!("{url} is not under {BASE_URL}"))
}

/// Fetches `url`'s path from the service and writes it as PEM (`label`) for openssl.
fn fetch_pem(ca: &Ca, addr: &str, url: &str, label: &str, file: &str) -> (PathBuf, Vec<u8>) {
    let (status, _, der) = crate::serve::get(addr, path_of(url));
    assert_eq!(status, 200, "GET {url}");
    let path = ca.file(file);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).unwrap());
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    std::fs::write(&path, text).unwrap();
    (path, der)
}

/// The leaf's caIssuers and CRL distribution point URLs.
fn urls(leaf: &Issued) -> (String, String) {
    let (aia, cdp) = aia_and_crl_uris(&leaf.cert.parse());
    let ca_issuers = aia
        .iter()
        .find(|(m, _)| m == OID_AIA_CA_ISSUERS)
        .map(|(_, u)| u.clone())
        .expect("caIssuers");
    assert_eq!(cdp.len(), 1, "{cdp:?}");
    (ca_issuers, cdp[0].clone())
}

/// The serials (lowercase hex, no leading zeros) a DER CRL lists.
fn crl_serials(der: &[u8]) -> Vec<String> {
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der).unwrap();
    crl.iter_revoked_certificates()
        .map(|r| {
            hex::encode(r.raw_serial())
                .trim_start_matches('0')
                .to_string()
        })
        .collect()
}

fn short(serial: &str) -> String {
    serial.trim_start_matches('0').to_string()
}

fn issuer_cn(leaf: &Issued) -> String {
    leaf.cert
        .parse()
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn rollover_successor_issues_while_the_predecessor_keeps_answering() {
    let ca = Ca::init();
    let case = personal();
    let issue = |name: &str| {
        let csr = ca.csr(name, KeyType::P256);
        let leaf = crate::apply::issue(&ca, &case, &csr.csr, name);
        check_leaf(&ca, &case, &leaf, &csr.csr, name);
        leaf
    };
    let old_kept = issue("old-kept");
    let old_revoked = issue("old-revoked");
    let old_cn = issuer_cn(&old_kept);
    assert_eq!(old_kept.ca, "individual");

    // The successor, pending: checked without the HSM, then made.
    let make = ceremony_file(
        &ca,
        "rollover.toml",
        &format!(
            "[[step]]\nkind = \"rollover\"\nca = \"individual\"\nroot = \"root\"\nkey_type = \"p256\"\n\
             common_name = \"{G2}\"\nvalidity_days = 1500\nactivate = false\n"
        ),
    );
    let plan = ca.ecert_ok(&["ceremony", "check", make.to_str().unwrap()]);
    for want in [
        "rollover individual-2",
        &format!("{BASE_URL}/crl/individual-2.crl"),
        &format!("{BASE_URL}/ca/individual-2.crt"),
        "pending until an activate step",
    ] {
        assert!(plan.contains(want), "plan lacks {want:?}:\n{plan}");
    }
    // A successor may not take another CA's name.
    let same_name = ceremony_file(
        &ca,
        "same-name.toml",
        &format!(
            "[[step]]\nkind = \"rollover\"\nca = \"individual\"\nroot = \"root\"\nkey_type = \"p256\"\n\
             common_name = \"{old_cn}\"\nvalidity_days = 1500\n"
        ),
    );
    let e = ca.ecert_err(&["ceremony", "check", same_name.to_str().unwrap()]);
    assert!(e.contains("each CA has its own name"), "{e}");
    let record = ca.ecert_ok(&["ceremony", "run", make.to_str().unwrap()]);
    assert!(record.contains("rollover individual-2"), "{record}");
    assert_eq!(state_of(&ca, "individual"), "active");
    assert_eq!(state_of(&ca, "individual-2"), "pending");
    // Pending, it takes no issuance; its certificate is published ahead of its activation,
    // and it owes no CRL yet.
    let still_old = issue("still-old");
    assert_eq!(still_old.ca, "individual");
    {
        let srv = crate::serve::start(&ca);
        assert_eq!(crate::serve::get(&srv.1, "/ca/individual-2.crt").0, 200);
        let health = crate::serve::healthz(&srv.1);
        assert_eq!(
            health["crl"]["individual-2"]["state"], "pending",
            "{health}"
        );
        assert_eq!(health["crl"]["individual"]["state"], "active", "{health}");
        assert_eq!(health["status"], "ok", "{health}");
    }
    let e = ca.ecert_err(&["crl", "publish", "--ca", "individual-2"]);
    assert!(e.contains("waits for activation"), "{e}");
    // Only one successor of a role waits at a time.
    let e = ca.ecert_err(&["ceremony", "check", make.to_str().unwrap()]);
    assert!(e.contains("waits for activation already"), "{e}");

    // Activated in its own ceremony (no root key needed).
    let activate = ceremony_file(
        &ca,
        "activate.toml",
        "[[step]]\nkind = \"activate\"\nca = \"individual-2\"\n",
    );
    let record = ca.ecert_ok(&["ceremony", "run", activate.to_str().unwrap()]);
    assert!(record.contains("activate individual-2"), "{record}");
    assert_eq!(state_of(&ca, "individual"), "superseded");
    assert_eq!(state_of(&ca, "individual-2"), "active");
    let e = ca.ecert_err(&["ceremony", "check", activate.to_str().unwrap()]);
    assert!(e.contains("not a successor waiting for activation"), "{e}");

    // New issuance goes to the successor, whose certificates name its own URLs.
    let new_kept = issue("new-kept");
    let new_revoked = issue("new-revoked");
    for leaf in [&new_kept, &new_revoked] {
        assert_eq!(leaf.ca, "individual-2");
        assert_eq!(issuer_cn(leaf), G2);
        let (aia, cdp) = urls(leaf);
        assert_eq!(aia, format!("{BASE_URL}/ca/individual-2.crt"));
        assert_eq!(cdp, format!("{BASE_URL}/crl/individual-2.crl"));
    }
    for leaf in [&old_kept, &old_revoked, &still_old] {
        let (aia, cdp) = urls(leaf);
        assert_eq!(aia, format!("{BASE_URL}/ca/individual.crt"));
        assert_eq!(cdp, format!("{BASE_URL}/crl/individual.crl"));
    }

    // One revocation under each; the publisher publishes both CAs' CRLs.
    crate::apply::revoke_ok(
        &ca,
        &["--serial", &old_revoked.serial, "--reason", "superseded"],
    );
    crate::apply::revoke_ok(
        &ca,
        &[
            "--serial",
            &new_revoked.serial,
            "--reason",
            "affiliationChanged",
        ],
    );
    let published = ca.ecert_ok(&["crl", "publish"]);
    for file in ["individual.crl", "individual-2.crl", "server.crl"] {
        assert!(published.contains(file), "{file}: {published}");
    }

    let srv = crate::serve::start(&ca);
    let addr = &srv.1;
    let root = ca.export("root");
    let mut crls = Vec::new();
    for (i, (kept, revoked, own)) in [
        (&old_kept, &old_revoked, "individual"),
        (&new_kept, &new_revoked, "individual-2"),
    ]
    .into_iter()
    .enumerate()
    {
        let ctx = format!("CA {own}");
        let (aia, cdp) = urls(kept);
        let (issuing, issuing_der) =
            fetch_pem(&ca, addr, &aia, "CERTIFICATE", &format!("ca-{i}.pem"));
        assert_eq!(
            issuing_der,
            std::fs::read(ca.export(own).path)
                .map(|p| pem_certs(&p).remove(0))
                .unwrap(),
            "[{ctx}] caIssuers serves the CA that issued the leaf"
        );
        let (crl, crl_der) = fetch_pem(&ca, addr, &cdp, "X509 CRL", &format!("crl-{i}.pem"));
        assert_eq!(
            crl_serials(&crl_der),
            vec![short(&revoked.serial)],
            "[{ctx}] its CRL lists its own revocation only"
        );
        pkilint("lint_crl", &["-t", "CRL", "-p", "PKIX"], &[&crl], &ctx);
        crate::crl::verify_with_crl(&ca, &root.path, &issuing, &crl, &kept.cert.path)
            .unwrap_or_else(|e| panic!("[{ctx}] a good certificate fails -crl_check: {e}"));
        let e = crate::crl::verify_with_crl(&ca, &root.path, &issuing, &crl, &revoked.cert.path)
            .expect_err("a revoked certificate passes -crl_check");
        assert!(e.contains("certificate revoked"), "[{ctx}] {e}");
        crls.push(crl);
    }
    // A CRL does not vouch for the other CA's certificates: openssl finds no CRL for them.
    let (issuing, _) = fetch_pem(
        &ca,
        addr,
        &format!("{BASE_URL}/ca/individual-2.crt"),
        "CERTIFICATE",
        "ca-2.pem",
    );
    let e = crate::crl::verify_with_crl(&ca, &root.path, &issuing, &crls[0], &new_kept.cert.path)
        .expect_err("the old CA's CRL covers the new CA's certificate");
    assert!(e.contains("unable to get certificate CRL"), "{e}");

    // OCSP: each CA's certificates through its own responder.
    let chain = crate::ocsp::chain(&ca);
    let g2_pem = ca.export("individual-2").path;
    for (leaf, issuer, status, responder_of) in [
        (&old_kept, &chain.individual, "good", old_cn.as_str()),
        (&old_revoked, &chain.individual, "revoked", old_cn.as_str()),
        (&new_kept, &g2_pem, "good", G2),
        (&new_revoked, &g2_pem, "revoked", G2),
    ] {
        let ctx = format!("OCSP {} under {responder_of}", leaf.serial);
        let out = ca.file(&format!("ocsp-{}.der", leaf.serial));
        let said = crate::ocsp::wait_status(
            &ca,
            addr,
            &chain,
            issuer,
            &leaf.cert.path,
            status,
            &out,
            &ctx,
        );
        crate::ocsp::assert_status(&said, &leaf.cert.path, status, &ctx);
        crate::ocsp::lint_response(&out, &ctx);
        let text = responder_name(&ca, &out);
        assert!(
            text.contains(&format!("{responder_of} OCSP Responder")),
            "[{ctx}] answered by another responder: {text}"
        );
    }

    // Both CAs' certificates are served; /healthz follows each CA's CRLs with its state.
    for id in ["individual", "individual-2"] {
        assert_eq!(
            crate::serve::get(addr, &format!("/ca/{id}.crt")).0,
            200,
            "{id}"
        );
    }
    let health = crate::serve::healthz(addr);
    assert_eq!(
        health["crl"]["individual"]["state"], "superseded",
        "{health}"
    );
    assert_eq!(health["crl"]["individual-2"]["state"], "active", "{health}");
    assert_eq!(health["crl"]["individual"]["fresh"], true, "{health}");
    drop(srv);
    ca.audit_ok();
}

/// The responder's name in a stored OCSP response, as `openssl ocsp -resp_text` prints it.
fn responder_name(ca: &Ca, response: &Path) -> String {
    let o = openssl(
        ca.data_dir(),
        &[
            "ocsp",
            "-respin",
            response.to_str().unwrap(),
            "-resp_text",
            "-noverify",
        ],
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("Responder Id") || l.contains("Subject:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A data directory made before the TLS root (the legacy fixture: its Server CA under the one
/// root) moves its Server CA to a TLS hierarchy of its own by the documented rollover
/// (docs/CEREMONY.md): one ceremony makes the TLS root, a successor Server CA under it
/// (activated) and the TLS root's CRL. The old Server CA keeps answering under the old root.
#[test]
fn a_legacy_server_ca_moves_under_a_new_tls_root() {
    let ca = Ca::new();
    crate::custody::legacy_fixture(&ca);
    ca.ecert_ok(&["custody", "migrate"]);
    let before = states(&ca);
    assert!(
        !before.iter().any(|(n, _)| n == "tls-root"),
        "the fixture predates the TLS root: {before:?}"
    );
    let old_root = ca.export("root");
    let old_server = ca.export("server");
    assert_eq!(
        old_server.parse().issuer().as_raw(),
        old_root.parse().subject().as_raw(),
        "the fixture's Server CA is under the S/MIME root"
    );
    let file = ceremony_file(
        &ca,
        "tls-move.toml",
        "[[step]]\nkind = \"root\"\nca = \"tls-root\"\nkey_type = \"p384\"\n\
         common_name = \"ecert Test TLS Root\"\nvalidity_days = 5000\n\
         [[step]]\nkind = \"rollover\"\nca = \"server\"\nroot = \"tls-root\"\nkey_type = \"p256\"\n\
         common_name = \"ecert Test Server CA G2\"\nvalidity_days = 1500\n\
         [[step]]\nkind = \"cross\"\nca = \"tls-root\"\nissuer = \"root\"\nvalidity_days = 1000\n\
         [[step]]\nkind = \"root_crl\"\nca = \"tls-root\"\n",
    );
    // Under the S/MIME root it may not go (one purpose per hierarchy).
    let wrong = ceremony_file(
        &ca,
        "tls-wrong.toml",
        "[[step]]\nkind = \"rollover\"\nca = \"server\"\nroot = \"root\"\nkey_type = \"p256\"\n\
         common_name = \"ecert Test Server CA G2\"\nvalidity_days = 1500\n",
    );
    let e = ca.ecert_err(&["ceremony", "check", wrong.to_str().unwrap()]);
    assert!(e.contains("belongs under tls-root"), "{e}");
    let plan = ca.ecert_ok(&["ceremony", "check", file.to_str().unwrap()]);
    assert!(plan.contains("rollover server-2"), "{plan}");
    let record_file = ca.file("tls-move-record.txt");
    ca.ecert_ok(&[
        "ceremony",
        "run",
        file.to_str().unwrap(),
        "--record",
        record_file.to_str().unwrap(),
    ]);
    let verified = ca.ecert_ok(&["ceremony", "verify", record_file.to_str().unwrap()]);
    // Its three certificates and one CRL (the cross-certificate's hash among them) match.
    assert!(
        verified.contains("verifies") && verified.contains("; 4 certificate and CRL hashes match"),
        "{verified}"
    );
    let after = states(&ca);
    for (id, want) in [
        ("root", "active"),
        ("tls-root", "active"),
        ("individual", "active"),
        ("server", "superseded"),
        ("server-2", "active"),
        ("tls-root-by-root", "cross"),
    ] {
        assert!(
            after.iter().any(|(n, s)| n == id && s == want),
            "{id} is not {want}: {after:?}"
        );
    }
    // The successor chains to the TLS root only, and names its root's URLs.
    let tls_root = ca.export("tls-root");
    let g2 = ca.export("server-2");
    let verify = |root: &Path, cert: &Path| {
        let mut c = std::process::Command::new("openssl");
        c.args(["verify", "-x509_strict", "-CAfile"])
            .arg(root)
            .arg(cert);
        run_with_timeout(c, std::time::Duration::from_secs(60), "openssl verify")
            .status
            .success()
    };
    assert!(verify(&tls_root.path, &g2.path));
    assert!(!verify(&old_root.path, &g2.path));
    assert!(verify(&old_root.path, &old_server.path));
    let (aia, cdp) = aia_and_crl_uris(&g2.parse());
    assert_eq!(cdp, [format!("{BASE_URL}/crl/tls-root.crl")]);
    assert!(
        aia.iter()
            .any(|(_, u)| *u == format!("{BASE_URL}/ca/tls-root.crt")),
        "{aia:?}"
    );
    pkilint(
        "lint_cabf_serverauth_cert",
        &["-t", "ROOT-CA"],
        &[&tls_root.path],
        "TLS root",
    );
    pkilint(
        "lint_cabf_serverauth_cert",
        &["-t", "INTERNAL-UNCONSTRAINED-TLS-CA"],
        &[&g2.path],
        "Server CA G2",
    );
    pkilint("lint_pkix_cert", &[], &[&g2.path], "Server CA G2");
    pkilint(
        "lint_pkix_signer_signee_cert_chain",
        &[],
        &[&tls_root.path, &g2.path],
        "TLS root over Server CA G2",
    );
    // The cross-certificate (TLS BR §7.1.2.2): the TLS root's name byte for byte and its key,
    // signed by the old root, so a relying party that trusts only the old root reaches the new
    // Server CA through it — and only for TLS.
    let cross = ca.export("tls-root-by-root");
    assert_eq!(
        cross.parse().subject().as_raw(),
        tls_root.parse().subject().as_raw()
    );
    assert_eq!(
        cross.parse().public_key().raw,
        tls_root.parse().public_key().raw
    );
    assert_eq!(
        cross.parse().issuer().as_raw(),
        old_root.parse().subject().as_raw()
    );
    pkilint(
        "lint_cabf_serverauth_cert",
        &["-t", "INTERNAL-CROSS-CA"],
        &[&cross.path],
        "cross-certificate",
    );
    pkilint("lint_pkix_cert", &[], &[&cross.path], "cross-certificate");
    pkilint(
        "lint_pkix_signer_signee_cert_chain",
        &[],
        &[&old_root.path, &cross.path],
        "old root over the cross-certificate",
    );
    let through_cross = |purpose: &str| {
        let mut c = std::process::Command::new("openssl");
        c.args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
            .arg(&old_root.path)
            .arg("-untrusted")
            .arg(&cross.path)
            .arg(&g2.path);
        run_with_timeout(c, std::time::Duration::from_secs(60), "openssl verify")
    };
    let o = through_cross("sslserver");
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        !verify(&old_root.path, &g2.path),
        "not without the cross-certificate"
    );
    // The chain export follows the new hierarchy.
    let chain = ca.ecert_ok(&["ca", "export", "server-2", "--chain"]);
    assert_eq!(
        pem_certs(chain.as_bytes()).last().unwrap(),
        &pem_certs(&std::fs::read(&tls_root.path).unwrap())[0]
    );
    // The service publishes both Server CAs' CRLs and the TLS root's.
    let srv = crate::serve::start(&ca);
    let addr = &srv.1;
    for path in [
        "/ca/tls-root.crt",
        "/ca/server-2.crt",
        "/ca/server.crt",
        "/crl/tls-root.crl",
        "/ca/tls-root-by-root.crt",
    ] {
        assert_eq!(crate::serve::get(addr, path).0, 200, "{path}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let health = loop {
        let h = crate::serve::healthz(addr);
        if h["crl"]["server-2"]["fresh"] == true || std::time::Instant::now() > deadline {
            break h;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(health["crl"]["server-2"]["fresh"], true, "{health}");
    assert_eq!(health["crl"]["tls-root"]["fresh"], true, "{health}");
    // The fixture's Server CA never issued a certificate: nothing of its is left to answer for,
    // so the publisher retires it at once, after a final CRL, which stays served.
    assert_eq!(
        ca.sql_query(
            "SELECT COUNT(*) FROM certificates WHERE issuer = 'server' AND profile <> 'ocsp-responder'"
        )
        .trim(),
        "0"
    );
    assert_eq!(health["crl"]["server"]["state"], "retired", "{health}");
    assert_eq!(state_of(&ca, "server"), "retired");
    let (status, _, final_crl) = crate::serve::get(addr, "/crl/server.crl");
    assert_eq!(status, 200);
    let retired = ca
        .sql_query("SELECT detail FROM audit_log WHERE kind = 'ca.retired' AND subject = 'server'");
    assert!(retired.contains("final_crls"), "{retired}");
    assert!(crl_serials(&final_crl).is_empty());
    drop(srv);
    let e = ca.ecert_err(&["crl", "publish", "--ca", "server"]);
    assert!(e.contains("retired"), "{e}");
    // `crl publish` alone publishes the CAs that still publish, not the retired one.
    let out = ca.ecert_ok(&["crl", "publish"]);
    assert!(
        out.contains("server-2.crl")
            && !out.contains("\nserver.crl")
            && !out.starts_with("server.crl"),
        "{out}"
    );
    ca.audit_ok();
}
