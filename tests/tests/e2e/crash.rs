//! Crash safety: ecert killed at each step of the issuance cycle leaves the serial in a
//! recorded state, writes no certificate file, and the next run resolves the leftover
//! (`reserved` → `failed`, `issuing` → `abandoned`) and issues normally with an intact audit trail.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ecert_e2e::*;

use crate::common::*;

const NO_FAILPOINTS_HINT: &str =
    "was ecert built with failpoints? build it with `cargo build -p ra-web --features failpoints`";

fn serials(ca: &Ca) -> BTreeSet<String> {
    ca.cert_list().into_iter().map(|r| r.serial).collect()
}

/// After the crashed run: no file; the next signer start (a normal issuance) resolves the
/// leftover by the recorded rule and issues; then exactly one other new serial, in `expected`
/// state in `cert list` and `cert show`; nothing left `reserved`/`issuing`; the audit trail
/// verifies.
fn after_crash(
    ca: &Ca,
    before: &BTreeSet<String>,
    out: &std::path::Path,
    expected: &str,
    ctx: &str,
) {
    assert!(
        !out.exists(),
        "[{ctx}] the crashed run wrote {}",
        out.display()
    );
    let fresh =
        issue_and_verify_personal(ca, "after-crash", &format!("{ctx}: issuance after restart"));
    let rows = ca.cert_list();
    let new: Vec<&CertRow> = rows
        .iter()
        .filter(|r| !before.contains(&r.serial) && r.serial != fresh.serial)
        .collect();
    assert_eq!(
        new.len(),
        1,
        "[{ctx}] expected exactly one new serial besides the fresh issuance, got {new:?}"
    );
    assert_eq!(
        new[0].state, expected,
        "[{ctx}] serial {} is {:?} after restart, expected {expected:?}",
        new[0].serial, new[0].state
    );
    let show = ca.cert_show(&new[0].serial);
    assert_eq!(
        show.get("state").map(String::as_str),
        Some(expected),
        "[{ctx}] cert show {}: {show:?}",
        new[0].serial
    );
    // Nothing is left unresolved.
    assert!(
        !rows
            .iter()
            .any(|r| r.state == "reserved" || r.state == "issuing"),
        "[{ctx}] unresolved rows: {rows:?}"
    );
    if expected == "issued" {
        // The certificate was stored but never delivered: `cert export` re-delivers it, and it
        // verifies under the chain (reference checklist #3).
        let pem = ca.ecert_ok(&["cert", "export", &new[0].serial]);
        let path = ca.file("redelivered.pem");
        std::fs::write(&path, pem).unwrap();
        let root = ca.export("root");
        let issuing = ca.export("individual");
        openssl_verify(&root.path, &[&issuing.path], &path, Some("smimesign"), ctx);
    } else {
        let o = ca.ecert(&["cert", "export", &new[0].serial]);
        check_clean_error(&o)
            .unwrap_or_else(|e| panic!("[{ctx}] cert export of a {expected} serial: {e}"));
    }
    ca.audit_ok();
}

fn crash_at(failpoint: &str, expected: &str) {
    let ctx = format!("{failpoint}=panic");
    let ca = Ca::init();
    let case = personal();
    let csr = ca.csr("crash", KeyType::P256);
    let before = serials(&ca);
    let out = ca.file("crash.pem");
    let mut args = vec![
        "issue",
        "--profile",
        case.profile,
        "--csr",
        csr.csr.to_str().unwrap(),
    ];
    args.extend(&case.args);
    args.extend(["--out", out.to_str().unwrap()]);
    let fp = format!("{failpoint}=panic");
    let o = ca.ecert_env(&args, &[("FAILPOINTS", &fp)]);
    assert!(!o.status.success(), "[{ctx}] ecert succeeded although the failpoint should have crashed it; {NO_FAILPOINTS_HINT}\n{}", show(&o));
    after_crash(&ca, &before, &out, expected, &ctx);
}

#[test]
fn crash_after_reserve() {
    crash_at("ca::after_reserve", "failed");
}

#[test]
fn crash_after_lint() {
    crash_at("ca::after_lint", "failed");
}

#[test]
fn crash_after_issuing() {
    crash_at("ca::after_issuing", "abandoned");
}

#[test]
fn crash_after_hsm_sign() {
    crash_at("ca::after_hsm_sign", "abandoned");
}

#[test]
fn crash_after_store() {
    crash_at("ca::after_store", "issued");
}

/// SIGKILL while the process sleeps between the HSM signature and storing the certificate.
/// Progress is watched in the database directly; while the signer sleeps, read-only commands
/// still answer (they take no signer lock).
#[test]
fn sigkill_after_hsm_sign() {
    let ctx = "SIGKILL during ca::after_hsm_sign=sleep(30000)";
    let ca = Ca::init();
    let case = personal();
    let csr = ca.csr("kill", KeyType::P256);
    let before = serials(&ca);
    let out = ca.file("kill.pem");
    let mut args = vec![
        "issue",
        "--profile",
        case.profile,
        "--csr",
        csr.csr.to_str().unwrap(),
    ];
    args.extend(&case.args);
    args.extend(["--out", out.to_str().unwrap()]);
    let stderr_file = ca.file("kill.stderr");
    let started = Instant::now();
    let mut child = ca.spawn_env(
        &args,
        &[("FAILPOINTS", "ca::after_hsm_sign=sleep(30000)")],
        &stderr_file,
    );
    // Wait until the serial is in state `issuing` (the HSM call follows at once), then a little.
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "[{ctx}] ecert exited ({status}) before it could be killed; {NO_FAILPOINTS_HINT}\n--- stderr ---\n{}",
                std::fs::read_to_string(&stderr_file).unwrap_or_default()
            );
        }
        let issuing = ca.sql_query("SELECT serial FROM certificates WHERE state = 'issuing'");
        if !issuing.trim().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "[{ctx}] no serial reached state `issuing` within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let rows = ca.cert_list();
    assert!(
        rows.iter().any(|r| r.state == "issuing"),
        "[{ctx}] `cert list` during the signer's sleep: {rows:?}"
    );
    ca.export("root");
    assert!(
        child.try_wait().unwrap().is_none(),
        "[{ctx}] ecert exited during the 30 s failpoint sleep; {NO_FAILPOINTS_HINT}"
    );
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "[{ctx}] killed process reported success");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "[{ctx}] too slow: the kill may have come after the sleep ended"
    );
    after_crash(&ca, &before, &out, "abandoned", ctx);
}
