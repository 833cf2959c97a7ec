//! `ecert config check`, and errors before `init`.

use ecert_e2e::*;

#[test]
fn config_check() {
    let ca = Ca::new();
    let good = ca.ecert_ok(&["config", "check"]);
    assert!(
        good.contains("configuration OK"),
        "config check of the test configuration: {good:?}"
    );
    // Valid but not ready for server applications: said on stderr.
    let o = ca.ecert(&["config", "check"]);
    let warned = String::from_utf8_lossy(&o.stderr);
    assert!(
        warned.contains("dcv.mpic") && warned.contains("dcv.caa_identities"),
        "{warned}"
    );

    let cases: &[(&str, &str, &[&str])] = &[
        (
            "bad country",
            "[ca]\ncountry = \"Hong Kong\"\n",
            &["country"],
        ),
        ("unknown key", "[ca]\nnot_a_field = 1\n", &["not_a_field"]),
        (
            "TOML syntax",
            "[ca\nbase_url = 1\n",
            &["toml", "expected", "invalid", "parse"],
        ),
        (
            "bad base URL",
            "[ca]\nbase_url = \"ftp://pki.example.hk\"\n",
            &["base_url"],
        ),
        (
            "policy arc not an OID",
            "[ca]\npolicy_arc = \"not.an.oid\"\n",
            &["policy_arc", "oid"],
        ),
    ];
    for (what, text, keywords) in cases {
        let file = ca.file(&format!("{}.toml", what.replace(' ', "-")));
        std::fs::write(&file, text).unwrap();
        let err = ca.ecert_err(&["--config", file.to_str().unwrap(), "config", "check"]);
        let line = error_line(&err).to_lowercase();
        assert!(
            keywords.iter().any(|k| line.contains(k)),
            "[{what}] the error does not name the problem ({keywords:?}): {err}"
        );
    }
    let missing = ca.file("no-such.toml");
    let err = ca.ecert_err(&["--config", missing.to_str().unwrap(), "config", "check"]);
    assert!(
        err.contains("no-such.toml"),
        "a missing --config file: {err}"
    );

    // The data directory's own ecert.toml is checked too.
    std::fs::write(
        ca.data_dir().join("ecert.toml"),
        "[ca]\ncountry = \"Hong Kong\"\n",
    )
    .unwrap();
    let err = ca.ecert_err(&["config", "check"]);
    assert!(error_line(&err).contains("country"), "{err}");
}

#[test]
fn commands_before_init_fail_cleanly() {
    let ca = Ca::new();
    for args in [
        vec!["cert", "list"],
        vec!["ca", "export", "root"],
        vec!["crl", "publish"],
    ] {
        let err = ca.ecert_err(&args);
        assert!(
            error_line(&err).contains("init"),
            "`ecert {}` before init should say to run init: {err}",
            args.join(" ")
        );
    }
}

/// A reader that goes away (`ecert crl publish | head -1`) ends the command quietly: no panic
/// on the broken pipe.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let ca = Ca::init();
    let mut c = ca.command(&["crl", "publish"], &[]);
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}

/// Issue 14: no command issues a subscriber certificate outside the RA. `issue` is gone, and
/// `bench` (which issues synthetic certificates under CAs it makes, and refuses an installation
/// whose database has CAs already) is not in the builds ops/setup and ops/test make.
#[test]
fn no_command_issues_a_certificate_outside_the_ra() {
    let ca = Ca::init();
    let csr = ca.csr("direct", KeyType::P256);
    let o = ca.ecert(&[
        "issue",
        "--profile",
        "personal",
        "--csr",
        csr.csr.to_str().unwrap(),
        "--email",
        "tm@example.hk",
    ]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unrecognized subcommand 'issue'"),
        "{}",
        show(&o)
    );
    // `bench` (synthetic certificates under CAs it makes) is only in ops/bench's builds.
    let o = ca.ecert(&["bench", "issue", "--n", "1", "--hsm-seconds", "0"]);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("unrecognized subcommand 'bench'"),
        "{}",
        show(&o)
    );
    let leaves =
        ca.sql_query("SELECT COUNT(*) FROM certificates WHERE profile <> 'ocsp-responder'");
    assert_eq!(leaves.trim(), "0", "a certificate was issued");
}
