//! Full CRLs (issue 3, part 2): built, linted, signed in the HSM, published; judged by
//! `openssl crl`, `openssl verify -crl_check` and pkilint's `lint_crl`. CRLNumber strictly
//! increases, also across a crash between handing out the number and signing.

use std::time::{Duration, Instant};

use ecert_e2e::*;

use crate::common::*;

/// Exports a CA's latest CRL to a PEM file.
pub(crate) fn export_crl(ca: &Ca, name: &str, file: &str) -> std::path::PathBuf {
    let pem = ca.ecert_ok(&["crl", "export", name]);
    assert!(pem.contains("BEGIN X509 CRL"), "{pem}");
    let path = ca.file(file);
    std::fs::write(&path, pem).unwrap();
    path
}

fn crl_number(ca: &Ca, crl: &std::path::Path) -> u64 {
    let o = openssl(
        ca.data_dir(),
        &["crl", "-in", crl.to_str().unwrap(), "-noout", "-crlnumber"],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    let hex = text
        .trim()
        .trim_start_matches("crlNumber=")
        .trim_start_matches("0x");
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("crlNumber {text:?}: {e}"))
}

/// `openssl verify -crl_check` of `leaf`: Ok(()) or the error text.
pub(crate) fn verify_with_crl(
    ca: &Ca,
    root: &std::path::Path,
    issuing: &std::path::Path,
    crl: &std::path::Path,
    leaf: &std::path::Path,
) -> Result<(), String> {
    let mut c = std::process::Command::new("openssl");
    c.args(["verify", "-crl_check", "-CRLfile"])
        .arg(crl)
        .arg("-CAfile")
        .arg(root)
        .arg("-untrusted")
        .arg(issuing)
        .arg(leaf);
    c.current_dir(ca.data_dir());
    let o = run_with_timeout(
        c,
        std::time::Duration::from_secs(60),
        "openssl verify -crl_check",
    );
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

#[test]
fn crls_list_revocations_and_pass_the_judges() {
    let ca = Ca::init();
    let p = personal();
    let leaves: Vec<Issued> = (0..3)
        .map(|i| {
            let csr = ca.csr(&format!("p{i}"), KeyType::P256);
            crate::apply::issue(&ca, &p, &csr.csr, "personal")
        })
        .collect();
    let srv = server();
    let servers: Vec<Issued> = (0..2)
        .map(|i| {
            let csr = ca.csr(&format!("s{i}"), KeyType::P256);
            crate::apply::issue(&ca, &srv, &csr.csr, "server")
        })
        .collect();
    crate::apply::revoke_ok(
        &ca,
        &["--serial", &leaves[0].serial, "--reason", "keyCompromise"],
    );
    crate::apply::revoke_ok(&ca, &["--serial", &leaves[1].serial, "--hold"]);
    crate::apply::revoke_ok(
        &ca,
        &["--serial", &servers[0].serial, "--reason", "superseded"],
    );
    let out = ca.ecert_ok(&["crl", "publish"]);
    // (The services the harness ran published the earlier numbers.)
    let published = |crl: &str, entries: usize| {
        out.lines().any(|l| {
            l.starts_with(&format!("{crl}\tnumber="))
                && l.contains(&format!("\tentries={entries}\t"))
        })
    };
    assert!(published("individual.crl", 2), "{out}");
    assert!(published("server.crl", 1), "{out}");
    // Roots' CRLs are signed in key ceremonies, never by `crl publish`.
    let refused = ca.ecert_err(&["crl", "publish", "--ca", "root"]);
    assert!(refused.contains("key ceremony"), "{refused}");
    ca.root_crl_ceremony("root");
    ca.root_crl_ceremony("tls-root");

    let root = ca.export("root");
    let tls_root = ca.export("tls-root");
    let individual = ca.export("individual");
    let server_ca = ca.export("server");
    let ind_crl = export_crl(&ca, "individual", "individual.crl.pem");
    let srv_crl = export_crl(&ca, "server", "server.crl.pem");
    let root_crl = export_crl(&ca, "root", "root.crl.pem");
    let tls_root_crl = export_crl(&ca, "tls-root", "tls-root.crl.pem");
    for (crl, issuer) in [
        (&ind_crl, &individual.path),
        (&srv_crl, &server_ca.path),
        (&root_crl, &root.path),
        (&tls_root_crl, &tls_root.path),
    ] {
        let o = openssl(
            ca.data_dir(),
            &[
                "crl",
                "-in",
                crl.to_str().unwrap(),
                "-CAfile",
                issuer.to_str().unwrap(),
                "-noout",
            ],
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("verify OK"),
            "{}",
            show(&o)
        );
    }
    // Reason codes as openssl reads them: keyCompromise and certificateHold on the Individual
    // CA's CRL, superseded on the Server CA's; unspecified would be omitted.
    let text = |crl: &std::path::Path| {
        String::from_utf8_lossy(
            &openssl(
                ca.data_dir(),
                &["crl", "-in", crl.to_str().unwrap(), "-noout", "-text"],
            )
            .stdout,
        )
        .to_string()
    };
    let ind_text = text(&ind_crl);
    assert!(
        ind_text.contains("Key Compromise") && ind_text.contains("Certificate Hold"),
        "{ind_text}"
    );
    let srv_text = text(&srv_crl);
    assert!(
        srv_text.contains("Superseded") && !srv_text.contains("Hold"),
        "{srv_text}"
    );
    // pkilint: the Server CA's CRL under the TLS BR; the Individual CA's under RFC 5280 (its
    // hierarchy allows certificateHold, which the BR profile forbids); the root's as an ARL.
    pkilint(
        "lint_crl",
        &["-t", "CRL", "-p", "BR"],
        &[&srv_crl],
        "server CRL",
    );
    pkilint(
        "lint_crl",
        &["-t", "CRL", "-p", "PKIX"],
        &[&ind_crl],
        "individual CRL",
    );
    for (crl, ctx) in [
        (&root_crl, "S/MIME root ARL"),
        (&tls_root_crl, "TLS root ARL"),
    ] {
        pkilint("lint_crl", &["-t", "ARL", "-p", "BR"], &[crl], ctx);
    }

    // openssl verify -crl_check: revoked and held fail, the rest pass.
    for (leaf, revoked) in [(&leaves[0], true), (&leaves[1], true), (&leaves[2], false)] {
        let r = verify_with_crl(&ca, &root.path, &individual.path, &ind_crl, &leaf.cert.path);
        match (revoked, r) {
            (true, Err(e)) => assert!(e.contains("certificate revoked"), "{e}"),
            (false, Ok(())) => {}
            (want, got) => panic!("{}: revoked={want}, openssl said {got:?}", leaf.serial),
        }
    }
    assert!(verify_with_crl(
        &ca,
        &tls_root.path,
        &server_ca.path,
        &srv_crl,
        &servers[0].cert.path
    )
    .is_err());
    verify_with_crl(
        &ca,
        &tls_root.path,
        &server_ca.path,
        &srv_crl,
        &servers[1].cert.path,
    )
    .unwrap();

    // Release the hold: the next CRL no longer lists it, and its number is higher.
    crate::apply::revoke_ok(&ca, &["--serial", &leaves[1].serial, "--release"]);
    ca.ecert_ok(&["crl", "publish", "--ca", "individual"]);
    let ind_crl2 = export_crl(&ca, "individual", "individual2.crl.pem");
    assert!(crl_number(&ca, &ind_crl2) > crl_number(&ca, &ind_crl));
    verify_with_crl(
        &ca,
        &root.path,
        &individual.path,
        &ind_crl2,
        &leaves[1].cert.path,
    )
    .unwrap();
    ca.audit_ok();
}

/// A crash after the CRLNumber was handed out and before the CRL was signed leaves a gap,
/// never a repeat: the next CRL's number is higher than any handed out before.
#[test]
fn crl_number_never_repeats_across_a_crash() {
    let ca = Ca::init();
    ca.ecert_ok(&["crl", "publish", "--ca", "server"]);
    let first = crl_number(&ca, &export_crl(&ca, "server", "a.crl.pem"));
    let o = ca.ecert_env(
        &["crl", "publish", "--ca", "server"],
        &[("FAILPOINTS", "crl::after_number=panic")],
    );
    assert!(
        !o.status.success(),
        "the failpoint did not fire\n{}",
        show(&o)
    );
    ca.ecert_ok(&["crl", "publish", "--ca", "server"]);
    let after = crl_number(&ca, &export_crl(&ca, "server", "b.crl.pem"));
    assert!(
        after > first + 1,
        "CRL number after the crash is {after}, before it {first}"
    );
}

/// The serials a CRL lists, as `openssl crl -text` prints them (upper-case hex).
fn crl_serials(ca: &Ca, crl_pem: &std::path::Path) -> Vec<String> {
    let o = openssl(
        ca.data_dir(),
        &["crl", "-in", crl_pem.to_str().unwrap(), "-noout", "-text"],
    );
    assert!(o.status.success(), "{}", show(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(str::to_string)
        .collect()
}

/// A CRL file of the data directory (DER) as PEM in the scratch directory.
fn crl_pem(ca: &Ca, file: &str) -> std::path::PathBuf {
    let der = ca.data_dir().join("crl").join(file);
    let pem = ca.file(&format!("{file}.pem"));
    let o = openssl(
        ca.data_dir(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            der.to_str().unwrap(),
            "-out",
            pem.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{file}: {}", show(&o));
    pem
}

/// Partitioned CRLs (TLS BR §7.2.2.1): every leaf's CRL distribution point names a partition;
/// that partition carries a critical IssuingDistributionPoint naming the same URL; openssl
/// finds revoked leaves through it and refuses another partition's CRL as out of scope; the
/// partitions together list exactly what the full CRL lists, no serial twice; pkilint passes
/// every partition.
#[test]
fn partitions_cover_every_certificate_with_a_critical_idp() {
    // The Individual CA names its full CRL by default (NSS refuses a critical IDP); partitioned
    // here by configuration, as the Server CA is by default.
    let ca = Ca::new();
    std::fs::write(
        ca.data_dir().join("ecert.toml"),
        format!("{CONFIG_TOML}[crl]\nindividual_partitions = 16\n"),
    )
    .unwrap();
    ca.ecert_ok(&["init"]);
    let (p, srv) = (personal(), server());
    let mut leaves: Vec<(Issued, &str)> = Vec::new();
    for i in 0..8 {
        let csr = ca.csr(&format!("p{i}"), KeyType::P256);
        leaves.push((
            crate::apply::issue(&ca, &p, &csr.csr, "personal"),
            "individual",
        ));
    }
    for i in 0..4 {
        let csr = ca.csr(&format!("s{i}"), KeyType::P256);
        leaves.push((crate::apply::issue(&ca, &srv, &csr.csr, "server"), "server"));
    }
    let revoked = [
        (0, &["--reason", "keyCompromise"][..]),
        (1, &["--hold"][..]),
        (8, &["--reason", "superseded"][..]),
        (9, &["--reason", "cessationOfOperation"][..]),
    ];
    for (i, how) in revoked {
        let mut args = vec!["--serial", &leaves[i].0.serial];
        args.extend_from_slice(how);
        crate::apply::revoke_ok(&ca, &args);
    }
    let out = ca.ecert_ok(&["crl", "publish"]);
    for ca_name in ["individual", "server"] {
        assert!(out.contains(&format!("{ca_name}.crl\t")), "{out}");
        for k in 0..16 {
            assert!(out.contains(&format!("{ca_name}-p{k}.crl\t")), "{out}");
        }
    }
    let issuing = [
        ("individual", ca.export("individual")),
        ("server", ca.export("server")),
    ];
    let roots = [
        ("individual", ca.export("root")),
        ("server", ca.export("tls-root")),
    ];
    let root_of = |name: &str| &roots.iter().find(|(n, _)| *n == name).unwrap().1;
    let issuer_of = |name: &str| &issuing.iter().find(|(n, _)| *n == name).unwrap().1;

    // Each leaf names one partition; openssl judges the leaf against that partition.
    for (i, (leaf, ca_name)) in leaves.iter().enumerate() {
        let (_, cdp) = aia_and_crl_uris(&leaf.cert.parse());
        assert_eq!(cdp.len(), 1, "{cdp:?}");
        let prefix = format!("{BASE_URL}/crl/{ca_name}-p");
        let file = cdp[0]
            .strip_prefix(&format!("{BASE_URL}/crl/"))
            .unwrap_or_else(|| panic!("CDP {} is not under {prefix}", cdp[0]));
        assert!(cdp[0].starts_with(&prefix), "{}", cdp[0]);
        let pem = crl_pem(&ca, file);
        let text = String::from_utf8_lossy(
            &openssl(
                ca.data_dir(),
                &["crl", "-in", pem.to_str().unwrap(), "-noout", "-text"],
            )
            .stdout,
        )
        .to_string();
        assert!(
            text.contains("X509v3 Issuing Distribution Point: critical"),
            "{text}"
        );
        assert!(text.contains(&format!("URI:{}", cdp[0])), "{text}");
        assert!(text.contains("Only User Certificates"), "{text}");
        let r = verify_with_crl(
            &ca,
            &root_of(ca_name).path,
            &issuer_of(ca_name).path,
            &pem,
            &leaf.cert.path,
        );
        let is_revoked = revoked.iter().any(|(j, _)| *j == i);
        match (is_revoked, r) {
            (true, Err(e)) => assert!(e.contains("certificate revoked"), "{e}"),
            (false, Ok(())) => {}
            (want, got) => panic!("{}: revoked={want}, openssl said {got:?}", leaf.serial),
        }
        // Another partition of the same CA does not cover this leaf.
        let other = (0..16)
            .map(|k| format!("{ca_name}-p{k}.crl"))
            .find(|f| f != file)
            .unwrap();
        let e = verify_with_crl(
            &ca,
            &root_of(ca_name).path,
            &issuer_of(ca_name).path,
            &crl_pem(&ca, &other),
            &leaf.cert.path,
        )
        .unwrap_err();
        assert!(e.contains("different CRL scope"), "{e}");
    }

    // Together the partitions are the full CRL, no serial twice; pkilint passes every one.
    for (ca_name, profile) in [("individual", "PKIX"), ("server", "BR")] {
        let full_pem = crl_pem(&ca, &format!("{ca_name}.crl"));
        let full_text = String::from_utf8_lossy(
            &openssl(
                ca.data_dir(),
                &["crl", "-in", full_pem.to_str().unwrap(), "-noout", "-text"],
            )
            .stdout,
        )
        .to_string();
        assert!(
            !full_text.contains("Issuing Distribution Point"),
            "{full_text}"
        );
        let mut full = crl_serials(&ca, &full_pem);
        assert_eq!(full.len(), 2, "{ca_name}: {full:?}");
        let mut union = Vec::new();
        // pkilint (0.4 s a run) judges the full CRL, every partition with entries, and one
        // empty partition.
        let mut pems = vec![full_pem];
        let mut empty_linted = false;
        for k in 0..16 {
            let pem = crl_pem(&ca, &format!("{ca_name}-p{k}.crl"));
            let serials = crl_serials(&ca, &pem);
            if !serials.is_empty() || !empty_linted {
                empty_linted |= serials.is_empty();
                pems.push(pem);
            }
            union.extend(serials);
        }
        full.sort();
        union.sort();
        assert_eq!(
            union, full,
            "{ca_name}: the partitions differ from the full CRL"
        );
        for pem in &pems {
            pkilint(
                "lint_crl",
                &["-t", "CRL", "-p", profile],
                &[pem],
                &pem.display().to_string(),
            );
        }
    }
    ca.audit_ok();
}

/// The root revokes an issuing CA (`ecert ca revoke`, a ceremony step): the root's CRL lists
/// the CA certificate with its reason at once (pkilint's ARL lint under the BR), `openssl
/// verify -crl_check_all` then refuses a leaf under it that it accepted before, and the CA
/// issues nothing more while the other one goes on. The root, a reason the BR does not allow
/// for CA certificates, and a second revocation are refused.
#[test]
fn revoking_an_issuing_ca() {
    let ca = Ca::init();
    let p = personal();
    let csr = ca.csr("before", KeyType::P256);
    let leaf = crate::apply::issue(&ca, &p, &csr.csr, "before the CA's revocation");
    ca.ecert_ok(&["crl", "publish"]);
    ca.root_crl_ceremony("root");
    let (root, individual) = (ca.export("root"), ca.export("individual"));
    let verify_all = |root_crl: &std::path::Path, ind_crl: &std::path::Path| {
        let mut c = std::process::Command::new("openssl");
        c.args(["verify", "-crl_check_all", "-CRLfile"])
            .arg(root_crl)
            .arg("-CRLfile")
            .arg(ind_crl)
            .arg("-CAfile")
            .arg(&root.path)
            .arg("-untrusted")
            .arg(&individual.path)
            .arg(&leaf.cert.path);
        let o = run_with_timeout(c, std::time::Duration::from_secs(60), "openssl verify");
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let ind_crl = export_crl(&ca, "individual", "ind.crl.pem");
    let root_before = export_crl(&ca, "root", "root-before.crl.pem");
    let (ok, text) = verify_all(&root_before, &ind_crl);
    assert!(ok, "before: {text}");

    // Two officers decide it (issue 14); what cannot be decided is refused when proposed.
    let proposal = |ca_name: &str, reason: &str| serde_json::json!({"kind": "ca_revocation", "ca": ca_name, "reason": reason});
    for (ca_name, reason, expect) in [
        ("root", "keyCompromise", "root is not revoked"),
        (
            "individual",
            "certificateHold",
            "a hold is placed at the counter",
        ),
        ("individual", "unspecified", "with a reason"),
    ] {
        let (st, e) = crate::apply::officers_propose(&ca, proposal(ca_name, reason));
        assert!(
            st == 422 && e.to_string().contains(expect),
            "{ca_name} {reason}: {st} {e}"
        );
    }
    let done = crate::apply::officers_decide(&ca, proposal("individual", "keyCompromise"));
    assert!(
        done.to_string().contains(
            "the individual CA revoked; the root CRL that lists it is signed in a key ceremony"
        ),
        "{done}"
    );
    // Until the ceremony, /healthz alarms: a CA revocation waits for its root's CRL (TLS BR
    // §4.9.7: within 24 hours); the TLS root has nothing waiting.
    let srv = crate::serve::start(&ca);
    let h = crate::serve::healthz(&srv.1);
    assert_eq!(h["status"], "fault", "{h}");
    assert!(
        h["crl"]["root"]["revocation_waits_for_ceremony"]["since_seconds"].is_i64(),
        "{h}"
    );
    assert!(
        h["crl"]["tls-root"]
            .get("revocation_waits_for_ceremony")
            .is_none(),
        "{h}"
    );
    assert!(
        h["crl"]["root"]["ceremony_due_in_days"].as_i64() > Some(300),
        "{h}"
    );
    let record = ca.root_crl_ceremony("root");
    assert!(record.contains("CRL of root: number"), "{record}");
    let start = Instant::now();
    while crate::serve::healthz(&srv.1)["crl"]["root"]
        .get("revocation_waits_for_ceremony")
        .is_some()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the alarm stays after the ceremony"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(srv);
    // Decided again: nothing changes (the reason recorded stays keyCompromise, below).
    let again = crate::apply::officers_decide(&ca, proposal("individual", "superseded"));
    assert!(again.to_string().contains("was revoked already"), "{again}");

    let root_after = export_crl(&ca, "root", "root-after.crl.pem");
    assert!(crl_number(&ca, &root_after) > crl_number(&ca, &root_before));
    pkilint(
        "lint_crl",
        &["-t", "ARL", "-p", "BR"],
        &[&root_after],
        "root ARL with a revoked CA",
    );
    let text = String::from_utf8_lossy(
        &openssl(
            ca.data_dir(),
            &[
                "crl",
                "-in",
                root_after.to_str().unwrap(),
                "-noout",
                "-text",
            ],
        )
        .stdout,
    )
    .into_owned();
    let ind_serial = String::from_utf8_lossy(
        &openssl(
            ca.data_dir(),
            &[
                "x509",
                "-in",
                individual.path.to_str().unwrap(),
                "-noout",
                "-serial",
            ],
        )
        .stdout,
    )
    .trim()
    .trim_start_matches("serial=")
    .to_string();
    assert!(
        text.contains(&format!("Serial Number: {ind_serial}")) && text.contains("Key Compromise"),
        "{ind_serial} not listed with its reason: {text}"
    );
    let (ok, text) = verify_all(&root_after, &ind_crl);
    assert!(!ok && text.contains("certificate revoked"), "after: {text}");

    // The revoked CA issues nothing; the Server CA goes on.
    let csr2 = ca.csr("after", KeyType::P256);
    let refusal = crate::apply::refusal(
        &ca,
        &p.application,
        &csr2.csr,
        "a certificate from a revoked CA",
    );
    assert!(
        refusal.message().contains("the individual CA is revoked"),
        "{refusal:?}"
    );
    let s = server();
    let csr3 = ca.csr("server-after", KeyType::P256);
    crate::apply::issue(
        &ca,
        &s,
        &csr3.csr,
        "the Server CA after the other's revocation",
    );
    ca.audit_ok();
}

/// Issue 13, defect 2: a skewed clock signs nothing and says so, in both directions, through
/// the real binary with libfaketime. Set back 3 hours, no CRL is dated before its predecessor
/// (every engine). Set 3 hours ahead against PostgreSQL (whose server's clock is the
/// reference), nothing is signed — no CRL, no certificate — and `/healthz` is a fault naming
/// the clock, with the skew in `/metrics`; on SQLite (no reference) `/healthz` says the clock
/// is unchecked. Back at the right time, publishing works again, with no other step.
#[test]
fn a_skewed_clock_signs_nothing_and_says_so() {
    let ca = Ca::init();
    ca.ecert_ok(&["crl", "publish"]);
    let preload = crate::ocsp::libfaketime();
    let at = |offset: &'static str| {
        [
            ("LD_PRELOAD", preload.to_str().unwrap().to_string()),
            ("FAKETIME", offset.to_string()),
        ]
    };
    // A signing service whose host's clock is off by `offset`, once its clock check has run
    // (`/healthz` says fault): the service, and that answer's status and body.
    let skewed_service = |offset: &'static str| {
        let env = at(offset);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let srv = crate::serve::spawn_listening(
            ca.command(
                &[
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--crl-watch-seconds",
                    "1",
                ],
                &env,
            ),
            std::process::Stdio::null(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, _, body) = crate::serve::get(&srv.1, "/healthz");
            let h: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if h["clock"]["status"] == "fault" {
                return (srv, status, h);
            }
            assert!(Instant::now() < deadline, "{h}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let run = |args: &[&str], offset: &'static str| {
        let env = at(offset);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ca.ecert_env(args, &env)
    };
    // Against PostgreSQL's clock the skew is caught first; without a reference (SQLite), the
    // CRL's thisUpdate would go backwards.
    let o = run(&["crl", "publish"], "-3h");
    let err = String::from_utf8_lossy(&o.stderr);
    let why = match ca.db() {
        Db::Postgres => "behind the database server's",
        Db::Sqlite => "set back",
    };
    assert!(!o.status.success() && err.contains(why), "{err}");

    let p = personal();
    let csr = ca.csr("skewed", KeyType::P256);
    match ca.db() {
        Db::Postgres => {
            let o = run(&["crl", "publish"], "+3h");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success() && err.contains("ahead of"), "{err}");
            // (Staff sign in while the clocks agree: a TOTP code is checked by the time.)
            crate::apply::counter_ready(&ca);
            let (srv, status, h) = skewed_service("+3h");
            assert_eq!(status, 503, "{h}");
            assert!(h["clock"]["error"].to_string().contains("ahead of"), "{h}");
            let (_, _, metrics) = crate::serve::get(&srv.1, "/metrics");
            let metrics = String::from_utf8(metrics).unwrap();
            assert!(metrics.contains("ecert_clock_ok 0"), "{metrics}");
            assert!(metrics.contains("ecert_clock_skew_seconds 10"), "{metrics}");
            // An approval signs nothing either.
            let refusal = crate::apply::refusal(
                &ca,
                &p.application,
                &csr.csr,
                "a certificate signed by a skewed clock",
            );
            assert!(refusal.message().contains("clock"), "{refusal:?}");
        }
        Db::Sqlite => {
            let srv = crate::serve::start(&ca);
            let (_, _, body) = crate::serve::get(&srv.1, "/healthz");
            let h: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(h["clock"]["status"], "unchecked", "{h}");
        }
    }
    // Right again: signing resumes.
    ca.ecert_ok(&["crl", "publish"]);
    let leaf = crate::apply::issue(&ca, &p, &csr.csr, "after the clock is right");

    // A revocation by a service whose host's clock is 3 hours behind is not dated 3 hours in
    // the past: against PostgreSQL's clock it is refused, named, and nothing is revoked.
    let revoke = ["--serial", leaf.serial.as_str(), "--reason", "superseded"];
    if ca.db() == Db::Postgres {
        crate::apply::officers_ready(&ca);
        // Once its clock check has run (every store probe), it refuses.
        let (behind, _, _) = skewed_service("-3h");
        let err = crate::apply::revoke_err(&ca, &revoke);
        drop(behind);
        assert!(
            err.contains("clock is not confirmed right") && err.contains("nothing was changed"),
            "{err}"
        );
        let row = ca.sql_query(&format!(
            "SELECT revoked_at FROM certificates WHERE serial = '{}'",
            leaf.serial
        ));
        assert_eq!(row.trim(), "", "revoked with a skewed clock: {row}");
    }
    crate::apply::revoke_ok(&ca, &revoke);
    let revoked_at: i64 = ca
        .sql_query(&format!(
            "SELECT revoked_at FROM certificates WHERE serial = '{}'",
            leaf.serial
        ))
        .trim()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - revoked_at).abs() < 60, "{revoked_at} vs {now}");
}
