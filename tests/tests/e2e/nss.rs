//! NSS — the library of Thunderbird and Firefox — as the relying party (issue 12): `vfychain`,
//! `crlutil`, `certutil` and `ocspclnt` from Debian's `libnss3-tools`, against a running
//! `ecert serve` whose certificates name it in their AIA and CRL distribution points.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ecert_e2e::*;

use crate::common::*;
use crate::serve::spawn_listening;

fn nss(tool: &str, args: &[&str]) -> Output {
    let mut c = Command::new(tool);
    c.args(args).stdin(Stdio::null());
    run_with_timeout(c, Duration::from_secs(60), tool)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An NSS database (`sql:` format, empty password) that trusts the roots for e-mail and TLS and
/// knows both issuing CAs, as a mail client or browser with these roots installed.
fn nss_db(dir: &Path, roots: &[&Path], issuing: &[&Path]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let db = format!("sql:{}", dir.display());
    let o = nss("certutil", &["-N", "-d", &db, "--empty-password"]);
    assert!(o.status.success(), "{}", text(&o));
    let add = |nick: &str, trust: &str, file: &Path| {
        let o = nss(
            "certutil",
            &[
                "-A",
                "-d",
                &db,
                "-n",
                nick,
                "-t",
                trust,
                "-i",
                file.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "certutil -A {nick}: {}", text(&o));
    };
    for (i, root) in roots.iter().enumerate() {
        add(&format!("root-{i}"), "C,C,C", root);
    }
    for (i, ca) in issuing.iter().enumerate() {
        add(&format!("issuing-{i}"), ",,", ca);
    }
    db
}

/// `vfychain` with the libpkix verifier and a revocation policy; (chain good, output).
fn vfychain(db: &str, usage: &str, policy: &[&str], cert: &Path) -> (bool, String) {
    let mut args = vec!["-d", db, "-pp", "-u", usage];
    args.extend_from_slice(policy);
    args.extend(["-a", cert.to_str().unwrap()]);
    let o = nss("vfychain", &args);
    let out = text(&o);
    (out.contains("Chain is good!"), out)
}

/// OCSP required: the leaf's status must come, fresh, from the responder in its AIA.
const OCSP_REQUIRED: &[&str] = &[
    "-g",
    "leaf",
    "-h",
    "requireFreshInfo",
    "-m",
    "ocsp",
    "-s",
    "failIfNoInfo",
];
/// CRL required: fetched from the leaf's CRL distribution point.
const CRL_REQUIRED: &[&str] = &["-g", "leaf", "-m", "crl", "-s", "failIfNoInfo"];

/// A personal and an RSA server certificate are good in NSS with OCSP required and with CRLs
/// required; a revoked personal certificate is refused by both; with the server stopped, OCSP
/// required fails (so the answer really came from ecert's responder). The Individual CA's
/// certificates name its full CRL, which `crlutil` imports; the Server CA's partitions carry a
/// critical IssuingDistributionPoint, which NSS refuses (docs/REVOCATION.md says who needs
/// which). The RSA server certificate passes NSS's classic verifier for TLS server use (it
/// refused digitalSignature-only RSA certificates, error -8102).
#[test]
fn nss_checks_status_by_ocsp_and_crl_against_the_running_server() {
    // The port the certificates name, held until the service takes it (the services and
    // perspectives the harness starts meanwhile bind ports of their own).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let ca = Ca::new();
    std::fs::write(
        ca.data_dir().join("ecert.toml"),
        format!(
            "[ca]\nbase_url = \"http://127.0.0.1:{port}\"\npolicy_arc = \"1.3.6.1.4.1.32473.1\"\n"
        ),
    )
    .unwrap();
    ca.ecert_ok(&["init"]);
    let (p, s) = (personal(), server());
    let good = crate::apply::issue(&ca, &p, &ca.csr("good", KeyType::P256).csr, "personal");
    let bad = crate::apply::issue(
        &ca,
        &p,
        &ca.csr("bad", KeyType::P256).csr,
        "personal to revoke",
    );
    let tls = crate::apply::issue(&ca, &s, &ca.csr("tls", KeyType::Rsa2048).csr, "RSA server");
    crate::apply::revoke_ok(&ca, &["--serial", &bad.serial, "--reason", "keyCompromise"]);
    let root = ca.export("root");
    let tls_root = ca.export("tls-root");
    let individual = ca.export("individual");
    let server_ca = ca.export("server");
    let db = nss_db(
        &ca.file("nssdb"),
        &[&root.path, &tls_root.path],
        &[&individual.path, &server_ca.path],
    );

    let listen = format!("127.0.0.1:{port}");
    drop(held);
    let srv = spawn_listening(
        ca.command(
            &["serve", "--crl-watch-seconds", "1", "--listen", &listen],
            &[],
        ),
        Stdio::null(),
    );
    // The revocation reaches the responder and the CRL shortly after start.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = vfychain(&db, "4", OCSP_REQUIRED, &bad.cert.path);
        if !ok && out.contains("-8180") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "NSS never saw the revocation by OCSP:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for (what, usage, cert) in [
        ("personal (e-mail recipient)", "5", &good.cert.path),
        ("personal (e-mail signer)", "4", &good.cert.path),
        ("server (TLS server)", "1", &tls.cert.path),
    ] {
        let (ok, out) = vfychain(&db, usage, OCSP_REQUIRED, cert);
        assert!(ok, "{what}, OCSP required:\n{out}");
    }

    // CRLs required, fetched from the CDP: the Individual CA's full CRL.
    let (ok, out) = vfychain(&db, "4", CRL_REQUIRED, &good.cert.path);
    assert!(ok, "personal, CRL required:\n{out}");
    let (ok, out) = vfychain(&db, "4", CRL_REQUIRED, &bad.cert.path);
    assert!(
        !ok && out.contains("-8180"),
        "revoked personal, CRL required:\n{out}"
    );
    let cdp = |c: &Issued| aia_and_crl_uris(&c.cert.parse()).1;
    let personal_cdp = cdp(&good);
    assert_eq!(
        personal_cdp,
        vec![format!("http://127.0.0.1:{port}/crl/individual.crl")],
        "the Individual CA names its full CRL by default"
    );
    let fetch = |url: &str, name: &str| {
        let path = ca.file(name);
        let r = crate::serve::http(
            &listen,
            "GET",
            url.trim_start_matches(&format!("http://{listen}")),
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "{url}");
        std::fs::write(&path, r.body).unwrap();
        path
    };
    let full = fetch(&personal_cdp[0], "individual.crl");
    let o = nss(
        "crlutil",
        &["-I", "-i", full.to_str().unwrap(), "-d", &db, "-t", "1"],
    );
    assert!(
        o.status.success(),
        "crlutil -I individual.crl: {}",
        text(&o)
    );
    let tls_cdp = cdp(&tls);
    assert!(
        tls_cdp[0].contains("/crl/server-p"),
        "the Server CA is partitioned by default: {tls_cdp:?}"
    );
    let partition = fetch(&tls_cdp[0], "server-partition.crl");
    let o = nss(
        "crlutil",
        &[
            "-I",
            "-i",
            partition.to_str().unwrap(),
            "-d",
            &db,
            "-t",
            "1",
        ],
    );
    assert!(
        !o.status.success() && text(&o).contains("SEC_ERROR_CRL_UNKNOWN_CRITICAL_EXTENSION"),
        "NSS accepted a partition (docs/REVOCATION.md says it does not): {}",
        text(&o)
    );

    // NSS's classic verifier (CERT_VerifyCertificate) accepts the RSA server certificate for
    // TLS server use.
    let o = nss(
        "vfychain",
        &[
            "-d",
            &db,
            "-p",
            "-u",
            "1",
            "-a",
            tls.cert.path.to_str().unwrap(),
        ],
    );
    assert!(text(&o).contains("Chain is good!"), "{}", text(&o));

    // The responder is what answered: stopped, OCSP required fails.
    drop(srv);
    let (ok, out) = vfychain(&db, "4", OCSP_REQUIRED, &good.cert.path);
    assert!(
        !ok,
        "OCSP required passed with the responder stopped:\n{out}"
    );
}
