//! Crash safety: the signing service killed (SIGKILL) at each step of the issuance cycle, while
//! it approves an application, leaves the serial in a recorded state, and the next start
//! resolves the leftover (`reserved` → `failed`, `issuing` → `abandoned`) and issues normally
//! with an intact audit trail.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ecert_e2e::*;

use crate::common::*;

const NO_FAILPOINTS_HINT: &str =
    "was ecert built with failpoints? build it with `cargo build -p ra-web --features failpoints`";

/// The subscriber certificates' serials (not the OCSP responders' a service makes itself).
fn serials(ca: &Ca) -> BTreeSet<String> {
    ca.cert_list()
        .into_iter()
        .filter(|r| r.profile != "ocsp-responder")
        .map(|r| r.serial)
        .collect()
}

/// After the crashed run: the next signer start (a normal issuance) resolves the
/// leftover by the recorded rule and issues; then exactly one other new serial, in `expected`
/// state in `cert list` and `cert show`; nothing left `reserved`/`issuing`; the audit trail
/// verifies.
fn after_crash(ca: &Ca, before: &BTreeSet<String>, expected: &str, ctx: &str) {
    let fresh =
        issue_and_verify_personal(ca, "after-crash", &format!("{ctx}: issuance after restart"));
    let rows = ca.cert_list();
    let new: Vec<&CertRow> = rows
        .iter()
        .filter(|r| {
            !before.contains(&r.serial) && r.serial != fresh.serial && r.profile != "ocsp-responder"
        })
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

/// Starts the signing service with `FAILPOINTS=failpoints` and has `case`'s application for
/// `csr` approved through it in another thread while `f` runs with the service; then waits
/// for that thread: `None` if its request failed (the service was killed, or its answer took
/// longer than the HTTP client waits), else what the application came to.
pub(crate) fn during_approval<T>(
    ca: &Ca,
    failpoints: &str,
    case: &ProfileCase,
    csr: &std::path::Path,
    f: impl FnOnce(&mut crate::serve::Server) -> T,
) -> (
    T,
    Option<Result<crate::apply::Applied, crate::apply::Refusal>>,
) {
    // Staff and outlet first, through an ordinary service.
    crate::apply::counter_ready(ca);
    let mut server = crate::serve::spawn_listening(
        ca.command(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--crl-watch-seconds",
                "1",
            ],
            &[("FAILPOINTS", failpoints)],
        ),
        Stdio::null(),
    );
    let out = std::thread::scope(|scope| {
        let approval = scope.spawn(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::apply::attempt(ca, &case.application, case.locality, csr)
            }))
            .ok()
        });
        let t = f(&mut server);
        (t, approval.join().unwrap())
    });
    drop(server);
    out
}

/// [`during_approval`] of a personal application with `failpoint=sleep(60000)`: waits until
/// the issuance has recorded a new serial and a moment more, and SIGKILLs the service; returns
/// the new serial. The service answered read-only commands meanwhile.
pub(crate) fn kill_during_approval(ca: &Ca, failpoint: &str, ctx: &str) -> String {
    let csr = ca.csr(&failpoint.replace(':', "_"), KeyType::P256);
    let before = serials(ca);
    let started = Instant::now();
    let fp = format!("{failpoint}=sleep(60000)");
    let (serial, _) = during_approval(ca, &fp, &personal(), &csr.csr, |server| {
        let serial = loop {
            if let Some(s) = serials(ca).difference(&before).next() {
                break s.clone();
            }
            if let Some(status) = server.0.try_wait().unwrap() {
                panic!("[{ctx}] the service exited ({status}) before it could be killed; {NO_FAILPOINTS_HINT}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "[{ctx}] no serial was recorded within 40 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        std::thread::sleep(Duration::from_millis(1500));
        ca.export("root");
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "[{ctx}] the service exited during the failpoint's sleep; {NO_FAILPOINTS_HINT}"
        );
        server.0.kill().unwrap(); // SIGKILL
        let status = server.0.wait().unwrap();
        assert!(!status.success(), "[{ctx}] killed process reported success");
        serial
    });
    serial
}

/// Killed at `failpoint`, the serial is `at_kill` (read with `cert list`, which takes no signer
/// lock); the next start leaves it `expected`.
fn crash_at(failpoint: &str, at_kill: &str, expected: &str) {
    let ctx = format!("SIGKILL at {failpoint}");
    let ca = Ca::init();
    let before = serials(&ca);
    let serial = kill_during_approval(&ca, failpoint, &ctx);
    let rows = ca.cert_list();
    assert!(
        rows.iter()
            .any(|r| r.serial == serial && r.state == at_kill),
        "[{ctx}] `cert list` after the kill: {rows:?}"
    );
    after_crash(&ca, &before, expected, &ctx);
}

#[test]
fn crash_after_reserve() {
    crash_at("ca::after_reserve", "reserved", "failed");
}

#[test]
fn crash_after_lint() {
    crash_at("ca::after_lint", "reserved", "failed");
}

#[test]
fn crash_after_issuing() {
    crash_at("ca::after_issuing", "issuing", "abandoned");
}

#[test]
fn crash_after_hsm_sign() {
    crash_at("ca::after_hsm_sign", "issuing", "abandoned");
}

#[test]
fn crash_after_store() {
    crash_at("ca::after_store", "issued", "issued");
}
