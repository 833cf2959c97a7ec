//! Key ceremonies (issue 15; docs/CEREMONY.md): a reviewed file makes the hierarchy; the root
//! token opens only with a quorum of custodian shares; every ceremony leaves a record signed by
//! the audit key that `ecert ceremony verify` checks.

use std::path::Path;

use ecert_e2e::*;

use crate::common::*;

/// A production-like first ceremony: two roots (RSA-4096 and P-384), two issuing CAs, the
/// roots' CRLs; the root token's PINs shared 2 of 3.
const FIRST: &str = r#"
name = "2026-12 root key ceremony"
custodians = ["Alice Chan", "Bob Lee", "Carol Ho"]
quorum = 2
witnesses = ["Frank Yip (internal audit)", "Grace Lau (external auditor)"]

[[step]]
kind = "root"
ca = "root"
key_type = "rsa4096"
common_name = "Test S/MIME Root R1"
validity_days = 5000

[[step]]
kind = "root"
ca = "tls-root"
key_type = "p384"
common_name = "Test TLS Root E1"
validity_days = 5000

[[step]]
kind = "issuing"
ca = "individual"
root = "root"
key_type = "rsa2048"
common_name = "Test Individual CA R1"
validity_days = 3000

[[step]]
kind = "issuing"
ca = "server"
root = "tls-root"
key_type = "p256"
common_name = "Test Server CA E1"
validity_days = 3000
permitted = ["example.hk"]

[[step]]
kind = "root_crl"
ca = "root"

[[step]]
kind = "root_crl"
ca = "tls-root"
"#;

const CRL: &str = r#"
name = "CRL of the TLS root"
custodians = ["Alice Chan", "Bob Lee", "Carol Ho"]
quorum = 2
[[step]]
kind = "root_crl"
ca = "tls-root"
"#;

fn write(ca: &Ca, name: &str, text: &str) -> std::path::PathBuf {
    let p = ca.file(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `ecert init --ceremony FILE --shares-out DIR`, expected to fail: its error.
fn init_refused(ca: &Ca, file: &Path, shares_out: &Path) -> String {
    ca.ecert_err(&[
        "init",
        "--ceremony",
        file.to_str().unwrap(),
        "--shares-out",
        shares_out.to_str().unwrap(),
    ])
}

/// `ecert ceremony run FILE --share S...`, expected to fail: its error.
fn run_refused(ca: &Ca, file: &Path, shares: &[&str]) -> String {
    let mut args = vec!["ceremony", "run", file.to_str().unwrap()];
    for s in shares {
        args.extend(["--share", s]);
    }
    ca.ecert_err(&args)
}

fn share(dir: &Path, i: usize) -> String {
    dir.join(format!("share-{i}.txt"))
        .to_str()
        .unwrap()
        .to_string()
}

/// A 2-of-3 quorum: `ceremony check` shows the plan without an HSM; `init --ceremony` makes
/// the hierarchy and one share sheet per custodian (0600, naming its custodian); the hierarchy
/// issues; any two shares sign a root CRL, one share or a corrupted or foreign share is refused
/// cleanly (nothing signed, the refusal audited); the records verify, offline too, and an
/// altered record does not.
#[test]
fn a_two_of_three_quorum_opens_the_root_token_and_nothing_less() {
    use std::os::unix::fs::PermissionsExt;
    let ca = Ca::new();
    let first = write(&ca, "first.toml", FIRST);
    // Checked before anything exists: the plan names every certificate's content.
    let plan = ca.ecert_err(&["ceremony", "check", first.to_str().unwrap()]);
    assert!(
        plan.contains("not initialised") || plan.contains("init"),
        "{plan}"
    );
    let shares = ca.file("shares");
    let record1 = ca.file("record-1.txt");
    let out = ca.ecert_ok(&[
        "init",
        "--ceremony",
        first.to_str().unwrap(),
        "--shares-out",
        shares.to_str().unwrap(),
        "--record",
        record1.to_str().unwrap(),
    ]);
    assert!(out.contains("quorum: 2 of 3"), "{out}");
    assert!(
        out.contains("witnesses: Frank Yip (internal audit), Grace Lau"),
        "{out}"
    );
    let written = std::fs::read_to_string(&record1).unwrap();
    assert!(
        written.starts_with("ecert ceremony record v1\n"),
        "{written}"
    );
    assert!(
        out.contains(&written),
        "the record printed is not the one written: {out}"
    );
    for (i, name) in [(1, "Alice Chan"), (2, "Bob Lee"), (3, "Carol Ho")] {
        let path = shares.join(format!("share-{i}.txt"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("custodian: {name} (share {i} of 3; any 2")),
            "{text}"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // The certificates are as the file said.
    let tls_root_file = ca.export("tls-root");
    let tls_root = tls_root_file.parse();
    assert!(tls_root
        .subject()
        .to_string()
        .contains("CN=Test TLS Root E1"));
    let server_ca = ca.export("server");
    let text = String::from_utf8_lossy(
        &openssl(
            ca.data_dir(),
            &[
                "x509",
                "-in",
                server_ca.path.to_str().unwrap(),
                "-noout",
                "-text",
            ],
        )
        .stdout,
    )
    .into_owned();
    assert!(
        text.contains("Name Constraints") && text.contains("DNS:example.hk"),
        "{text}"
    );
    assert!(
        text.contains("ecdsa-with-SHA384"),
        "signed by the P-384 TLS root: {text}"
    );
    pkilint(
        "lint_cabf_serverauth_cert",
        &["-t", "ROOT-CA"],
        &[&ca.export("tls-root").path],
        "ceremony TLS root",
    );
    // The hierarchy issues (a server name inside the constraint).
    let csr = ca.csr("s", KeyType::P256);
    let leaf = crate::apply::issue(&ca, &server(), &csr.csr, "server");
    check_leaf(
        &ca,
        &server(),
        &leaf,
        &csr.csr,
        "server under the ceremony's TLS root",
    );
    // A name outside the Server CA's constraint is refused before anything is signed (relying
    // parties would reject the certificate).
    let outside = crate::common::with(
        server().application,
        serde_json::json!({ "dns_names": ["www.example.org"] }),
    );
    let csr = ca.csr("outside", KeyType::P256);
    let refused = crate::apply::attempt(&ca, &outside, server().locality, &csr.csr)
        .expect_err("a name outside the constraints was issued");
    assert!(
        refused
            .message()
            .contains("www.example.org is outside the name constraints of the server CA"),
        "{refused:?}"
    );

    // The plan of a later ceremony, read before it runs.
    let crl = write(&ca, "crl.toml", CRL);
    let plan = ca.ecert_ok(&["ceremony", "check", crl.to_str().unwrap()]);
    assert!(plan.contains("CRL of tls-root"), "{plan}");
    let wrong_people = write(&ca, "wrong.toml", &CRL.replace("Carol Ho", "Mallory"));
    let e = ca.ecert_err(&["ceremony", "check", wrong_people.to_str().unwrap()]);
    assert!(e.contains("held by Alice Chan, Bob Lee, Carol Ho"), "{e}");

    // Any two of three.
    let mut numbers = Vec::new();
    for (a, b) in [(1, 2), (2, 3), (1, 3)] {
        let rec = ca.file(&format!("record-{a}{b}.txt"));
        let out = ca.ecert_ok(&[
            "ceremony",
            "run",
            crl.to_str().unwrap(),
            "--share",
            &share(&shares, a),
            "--share",
            &share(&shares, b),
            "--record",
            rec.to_str().unwrap(),
        ]);
        let names = ["Alice Chan", "Bob Lee", "Carol Ho"];
        assert!(
            out.contains(&format!(
                "opened by {} (share {a}), {} (share {b})",
                names[a - 1],
                names[b - 1]
            )),
            "{out}"
        );
        let n: i64 = out
            .split("CRL of tls-root: number ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no CRL number in {out}"));
        numbers.push(n);
        let v = ca.ecert_ok(&["ceremony", "verify", rec.to_str().unwrap()]);
        assert!(
            v.contains("verifies") && v.contains("audit trail holds it"),
            "{v}"
        );
    }
    assert!(numbers.windows(2).all(|w| w[1] > w[0]), "{numbers:?}");

    // Not enough, corrupted, foreign: refused before any login, nothing signed, audited.
    let before = ca.ecert_ok(&["crl", "export", "tls-root"]);
    let one = run_refused(&ca, &crl, &[&share(&shares, 2)]);
    assert!(
        one.contains("2 of 3 custodians' shares are needed, 1 given"),
        "{one}"
    );
    let text = std::fs::read_to_string(shares.join("share-3.txt")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("user PIN share: "))
        .unwrap();
    let payload_at = line.len() - 12;
    let mut typo = line.to_string();
    let c = if &line[payload_at..=payload_at] == "A" {
        "B"
    } else {
        "A"
    };
    typo.replace_range(payload_at..=payload_at, c);
    let bad = write(&ca, "typo.txt", &text.replace(line, &typo));
    let e = run_refused(&ca, &crl, &[&share(&shares, 1), bad.to_str().unwrap()]);
    assert!(e.contains("share 2") && e.contains("mistyped"), "{e}");
    // Bob's SO-PIN share offered as his user-PIN share: another sharing.
    let so = text
        .lines()
        .find(|l| l.starts_with("SO PIN share: "))
        .unwrap();
    let foreign = write(
        &ca,
        "foreign.txt",
        &format!(
            "user PIN share: {}\n",
            so.trim_start_matches("SO PIN share: ")
        ),
    );
    let e = run_refused(&ca, &crl, &[&share(&shares, 1), foreign.to_str().unwrap()]);
    assert!(e.contains("not all of one sharing"), "{e}");
    assert_eq!(
        ca.ecert_ok(&["crl", "export", "tls-root"]),
        before,
        "something was signed"
    );
    let refusals =
        ca.sql_query("SELECT COUNT(*) FROM audit_log WHERE kind = 'ceremony.quorum_refused'");
    assert_eq!(refusals.trim(), "3", "each refusal is audited");

    // Offline: the record and the audit key alone; an altered record fails.
    let key = write(&ca, "audit-key.pem", &ca.ecert_ok(&["audit", "key"]));
    let elsewhere = tempfile::tempdir().unwrap();
    let offline = |record: &Path| {
        let mut c = std::process::Command::new(ecert_bin());
        c.args(["--data-dir"])
            .arg(elsewhere.path().join("none"))
            .args(["ceremony", "verify"])
            .arg(record)
            .arg("--public-key")
            .arg(&key);
        run_with_timeout(c, std::time::Duration::from_secs(60), "ceremony verify")
    };
    let o = offline(&record1);
    assert!(o.status.success(), "{}", show(&o));
    let altered = write(
        &ca,
        "altered.txt",
        &std::fs::read_to_string(&record1)
            .unwrap()
            .replace("quorum: 2 of 3", "quorum: 1 of 3"),
    );
    let o = offline(&altered);
    assert!(
        !o.status.success(),
        "an altered record verifies: {}",
        show(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not verify"),
        "{}",
        show(&o)
    );
    // Lines slipped in between the signature label and its value, or after it: refused.
    let genuine = std::fs::read_to_string(&record1).unwrap();
    let sig_at = genuine.rfind("signature: ").unwrap();
    let (body, sig) = genuine.split_at(sig_at);
    let (label, value) = sig.split_at(sig.rfind(' ').unwrap() + 1);
    for (name, text) in [
        (
            "inserted",
            format!("{body}{label}\nstep 9: root root: forged\n{value}"),
        ),
        ("appended", format!("{genuine}step 9: root root: forged\n")),
    ] {
        let o = offline(&write(&ca, &format!("{name}.txt"), &text));
        assert!(!o.status.success(), "{name} lines verify: {}", show(&o));
    }
    // A record file is never overwritten.
    let e = ca.ecert_err(&[
        "ceremony",
        "run",
        crl.to_str().unwrap(),
        "--share",
        &share(&shares, 1),
        "--share",
        &share(&shares, 2),
        "--record",
        record1.to_str().unwrap(),
    ]);
    assert!(e.contains("writing the ceremony record"), "{e}");
    assert_eq!(std::fs::read_to_string(&record1).unwrap(), genuine);
    ca.audit_ok();
}

/// What a ceremony file may not ask for is refused by `check` (and so by `run`) by name.
#[test]
fn ceremony_files_are_checked_before_any_hsm_is_touched() {
    let ca = Ca::init();
    // The embedded default's root token is held by one custodian.
    let base =
        "name = \"x\"\ncustodians = [\"the operator of the embedded default\"]\nquorum = 1\n";
    for (step, expect) in [
        ("kind = \"root\"\nca = \"root\"\nkey_type = \"p256\"\ncommon_name = \"R\"\nvalidity_days = 100", "exists already"),
        ("kind = \"root\"\nca = \"server\"\nkey_type = \"p256\"\ncommon_name = \"R\"\nvalidity_days = 100", "not a root"),
        ("kind = \"root_crl\"\nca = \"individual\"", "not a root"),
        ("kind = \"issuing\"\nca = \"server\"\nroot = \"root\"\nkey_type = \"p256\"\ncommon_name = \"S\"\nvalidity_days = 10", "belongs under tls-root"),
        ("kind = \"issuing\"\nca = \"server\"\nroot = \"tls-root\"\nkey_type = \"ed25519\"\ncommon_name = \"S\"\nvalidity_days = 10", "unknown key type"),
        ("kind = \"wat\"", "does not parse"),
        ("kind = \"cross\"\nca = \"root\"\nissuer = \"root\"\nvalidity_days = 10", "one root by the other"),
        ("kind = \"cross\"\nca = \"server\"\nissuer = \"root\"\nvalidity_days = 10", "one root by the other"),
        ("kind = \"cross\"\nca = \"tls-root\"\nissuer = \"root\"\nvalidity_days = 9000", "ends before both roots"),
        ("kind = \"rollover\"\nca = \"server\"\nroot = \"tls-root\"\nkey_type = \"p256\"\ncommon_name = \"S2\"\nvalidity_days = 9000", "ends before its root"),
        ("kind = \"activate\"\nca = \"server-2\"", "not a successor waiting"),
        ("kind = \"activate\"\nca = \"server-1\"", "no CA named"),
    ] {
        let f = write(&ca, "bad.toml", &format!("{base}[[step]]\n{step}\n"));
        let e = ca.ecert_err(&["ceremony", "check", f.to_str().unwrap()]);
        assert!(e.contains(expect), "{step}: {e}");
    }
    for (head, expect) in [
        (
            "name = \"x\"\ncustodians = [\"A\", \"A\"]\nquorum = 1\n",
            "each named once",
        ),
        (
            "name = \"x\"\ncustodians = [\"A\", \"B\"]\nquorum = 3\n",
            "quorum 3 of 2",
        ),
        (
            "name = \"x\"\ncustodians = [\"A\"]\nquorum = 1\n[root_token]\nlabel = \"ecert\"\n",
            "must not be the online",
        ),
    ] {
        let f = write(
            &ca,
            "bad.toml",
            &format!("{head}[[step]]\nkind = \"root_crl\"\nca = \"root\"\n"),
        );
        let e = ca.ecert_err(&["ceremony", "check", f.to_str().unwrap()]);
        assert!(e.contains(expect), "{head}: {e}");
    }
    // Names, labels and constraints of their own; one line of text where the record shows it;
    // an issuing CA ending before an existing root's end.
    let fresh = Ca::new();
    for (from, to, expect) in [
        (
            "Test TLS Root E1",
            "Test S/MIME Root R1",
            "another CA is named",
        ),
        (
            "common_name = \"Test Server CA E1\"",
            "common_name = \"Test Server CA E1\"\nkey_label = \"ecert-root-ca\"",
            "is taken",
        ),
        (
            "permitted = [\"example.hk\"]",
            "permitted = [\"a..hk\"]",
            "not a DNS name",
        ),
        (
            "permitted = [\"example.hk\"]",
            "permitted = [\"x@example.hk\"]",
            "not a DNS name",
        ),
        (
            "\"Bob Lee\"",
            "\"Bob Lee\\nstep 9: forged\"",
            "one line of text",
        ),
        ("\"Bob Lee\"", "\"Lee, Bob\"", "no commas"),
    ] {
        assert!(FIRST.contains(from), "{from}");
        let f = write(&fresh, "bad.toml", &FIRST.replace(from, to));
        let e = init_refused(&fresh, &f, &fresh.file("s"));
        assert!(e.contains(expect), "{to}: {e}");
    }
    assert!(
        !fresh.file("s").join("share-1.txt").exists(),
        "a refused file made shares"
    );
    // Shares never go over earlier ones: refused before the token is made, so a second try
    // into an empty directory works (no token left without holders).
    let used = fresh.file("used");
    std::fs::create_dir_all(&used).unwrap();
    std::fs::write(used.join("share-2.txt"), "an earlier sheet\n").unwrap();
    let f = write(&fresh, "first.toml", FIRST);
    let e = init_refused(&fresh, &f, &used);
    assert!(e.contains("new shares go to an empty directory"), "{e}");
    let out = fresh.ecert_ok(&[
        "init",
        "--ceremony",
        f.to_str().unwrap(),
        "--shares-out",
        fresh.file("clean").to_str().unwrap(),
    ]);
    assert!(out.contains("new root token"), "{out}");
    let fresh = Ca::new();
    // A root's validity is capped at 15 years; an issuing CA ends before its root.
    let f = write(
        &fresh,
        "long.toml",
        &FIRST.replace("validity_days = 5000", "validity_days = 6000"),
    );
    let e = init_refused(&fresh, &f, &fresh.file("s"));
    assert!(e.contains("15 years"), "{e}");
    let f = write(
        &fresh,
        "outlive.toml",
        &FIRST.replace("validity_days = 3000", "validity_days = 5000"),
    );
    let e = init_refused(&fresh, &f, &fresh.file("s"));
    assert!(e.contains("ends before its root"), "{e}");
}

/// The embedded default's `init` says it ran the built-in ceremony with a 1-of-1 quorum, and
/// `config check --production` refuses what DESIGN.md's token table rules out: the PIN and SO
/// PIN files and the root-token share in the data directory, and SoftHSM2 for CA keys.
#[test]
fn production_refuses_the_embedded_custody() {
    let ca = Ca::new();
    let out = ca.ecert_ok(&["init"]);
    assert!(
        out.contains("built-in key ceremony") && out.contains("1-of-1"),
        "{out}"
    );
    let e = ca.ecert_err(&["config", "check", "--production"]);
    for expect in [
        "the ca token's PIN is a file in the data directory",
        "an SO PIN is a file in the data directory",
        "root-token shares are in the data directory",
        "is SoftHSM2",
        "opens with 1 custodian share(s): a production quorum is at least 2",
    ] {
        assert!(e.contains(expect), "{expect:?} not in {e}");
    }
    // The service never holds a root key: a root CRL through `crl publish` is refused.
    let e = ca.ecert_err(&["crl", "publish", "--ca", "tls-root"]);
    assert!(e.contains("key ceremony"), "{e}");
}

/// The ceremony files docs/CEREMONY.md gives work as written: the first ceremony (both
/// hierarchies, 3 of 5), the root CRL with three of the five shares, and the embedded
/// default's roots' CRLs.
#[test]
fn the_documented_ceremony_files_work() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ceremony");
    let doc = |f: &str| docs.join(f).to_str().unwrap().to_string();
    let ca = Ca::new();
    let shares = ca.file("shares");
    let out = ca.ecert_ok(&[
        "init",
        "--ceremony",
        &doc("first-ceremony.toml"),
        "--shares-out",
        shares.to_str().unwrap(),
    ]);
    assert!(out.contains("quorum: 3 of 5"), "{out}");
    assert_eq!(std::fs::read_dir(&shares).unwrap().count(), 5);
    let plan = ca.ecert_ok(&["ceremony", "check", &doc("root-crl.toml")]);
    assert!(plan.contains("CRL of tls-root"), "{plan}");
    let out = ca.ecert_ok(&[
        "ceremony",
        "run",
        &doc("root-crl.toml"),
        "--share",
        &share(&shares, 1),
        "--share",
        &share(&shares, 3),
        "--share",
        &share(&shares, 5),
    ]);
    assert!(
        out.contains("Eve Lam (share 5)") && out.contains("CRL of tls-root: number 2"),
        "{out}"
    );
    let crl = crate::crl::export_crl(&ca, "tls-root", "tls-root.crl.pem");
    pkilint(
        "lint_crl",
        &["-t", "ARL", "-p", "BR"],
        &[&crl],
        "TLS root ARL (P-384)",
    );

    let embedded = Ca::init();
    let out = embedded.ecert_ok(&["ceremony", "run", &doc("embedded-root-crl.toml")]);
    assert!(
        out.contains("CRL of root: number 2") && out.contains("CRL of tls-root: number 2"),
        "{out}"
    );
}
