//! Hot standby (issue 17, docs/OPERATIONS.md "Standby"): a second signing instance serves the
//! public face at once and waits on the signer lock; when the signer is killed it takes over —
//! the previous signer's leftovers resolved, the batch queue, OCSP and CRLs carried on — with
//! every row issued exactly once and every revocation published; and a signer cut off from its
//! lock stops, writing nothing more.

use std::time::{Duration, Instant};

use ecert_e2e::*;

use crate::bulk::{csrs, organisation_ready, rows_of, submitted, wait_done};
use crate::ra::api;
use crate::serve::{get, healthz, start, start_with};

/// Polls `addr`'s `/healthz` until its role is `role`; the time it took. `log`: the
/// instance's data directory, whose log a failure shows.
fn wait_role(addr: &str, role: &str, secs: u64, log: Option<&std::path::Path>) -> Duration {
    let start = Instant::now();
    loop {
        if healthz(addr)["role"] == role {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{addr} is not {role} after {secs} s: {}\n{}",
            healthz(addr),
            log.map(crate::serve::log_tail).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The serials of rows issued so far: (client row id, serial).
fn issued_rows(ca: &Ca, batch: &str, limit: usize) -> Vec<(String, String)> {
    ca.sql_query(&format!(
        "SELECT client_row_id, serial FROM batch_rows WHERE batch_id = '{batch}' AND state = 'issued' \
         ORDER BY client_row_id LIMIT {limit}"
    ))
    .lines()
    .filter_map(|l| l.split_once('\t'))
    .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
    .collect()
}

/// `ecert revoke --serial SERIAL --reason keyCompromise` as an officer, as an operator's
/// client does it across a takeover: to whichever of `addrs` answers, retried for up to 60 s
/// (a killed signer refuses connections, a standby answers 503 until it signs).
fn revoke_via(ca: &Ca, addrs: &[&str], serial: &str) {
    let token = crate::apply::officer_session(ca, "e2e-officer1");
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        for addr in addrs {
            let o = ca.ecert_env(
                &["revoke", "--serial", serial, "--reason", "keyCompromise"],
                &[
                    ("ECERT_SERVER", &format!("http://{addr}")),
                    ("ECERT_TOKEN", token.trim()),
                ],
            );
            if o.status.success() {
                return;
            }
            assert!(Instant::now() < until, "revoking {serial}: {}", show(&o));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `openssl ocsp` against `addr` for the certificate of batch row `id` (fetched through the
/// integrators' API): its status line.
fn row_ocsp(ca: &Ca, addr: &str, token: &str, id: &str) -> String {
    let (st, v) = api(
        addr,
        "GET",
        &format!("/api/v1/staff-certificates/{id}"),
        token,
        None,
    );
    assert_eq!(st, 200, "{v}");
    let cert = ca.file(&format!("standby-{id}.pem"));
    std::fs::write(&cert, v["certificate"].as_str().unwrap()).unwrap();
    let issuer = ca.export("individual").path;
    crate::ra::ocsp_status(ca, addr, &issuer, &cert)
}

#[test]
fn a_standby_takes_over_from_a_killed_signer_and_nothing_is_lost_or_signed_twice() {
    let ca = Ca::init();
    crate::apply::dcv_config(&ca);
    crate::apply::officers_ready(&ca);
    let n = 600;
    let keys = csrs(&ca, n);
    let rows = rows_of(&keys);
    let mut signer = start(&ca);
    let standby = start_with(&ca, &["--standby"]);
    let (a, b) = (signer.1.clone(), standby.1.clone());

    // The standby serves the public face at once, and no registration until it signs.
    assert_eq!(healthz(&b)["role"], "standby");
    assert_eq!(healthz(&a)["role"], "signer");
    assert_eq!(get(&b, "/crl/individual.crl").0, 200);
    assert_eq!(get(&b, "/ca/individual.crt").0, 200);
    let (st, _, body) = get(&b, "/apply");
    assert_eq!(st, 503, "{}", String::from_utf8_lossy(&body));

    crate::apply::officers_ready(&ca);
    let (_, token) = organisation_ready(&ca, &a);
    let batch = submitted(&a, &token, &rows);
    crate::apply::officers_decide(
        &ca,
        serde_json::json!({ "kind": "batch_approval", "batch": batch }),
    );
    crate::bulk::wait_issued(&a, &token, &batch, 20);

    // Revocations stream through the kill: from the command line (any process may revoke;
    // the signer publishes), before, during and after the takeover.
    let to_revoke = issued_rows(&ca, &batch, 12);
    assert_eq!(to_revoke.len(), 12);
    std::thread::scope(|scope| {
        let revoker = scope.spawn(|| {
            for (_, s) in &to_revoke[..10] {
                revoke_via(&ca, &[&a, &b], s);
                std::thread::sleep(Duration::from_millis(150));
            }
        });
        signer.0.kill().unwrap(); // SIGKILL
        signer.0.wait().unwrap();
        let killed = Instant::now();
        let mid = ca.sql_query(&format!(
            "SELECT COUNT(*) FROM batch_rows WHERE batch_id = '{batch}' AND state = 'issued'"
        ));
        assert!(
            mid.trim().parse::<usize>().unwrap() < n,
            "the batch finished before the kill: make it bigger"
        );
        wait_role(&b, "signer", 60, None);
        eprintln!(
            "standby takeover: {} ms from SIGKILL to signing",
            killed.elapsed().as_millis()
        );
        revoker.join().unwrap();
    });
    drop(signer);
    // The harness's staff and officer helpers go to the new signer.
    std::fs::write(ca.data_dir().join(".e2e-serving"), &b).unwrap();

    // The batch queue carries on at the standby: every row issued exactly once.
    let s = wait_done(&b, &token, &batch, 300);
    assert_eq!(s["counts"]["issued"], n, "{}", s["counts"]);
    crate::bulk::assert_each_row_issued_once(&ca, &batch, n);
    // What the dead signer left half-done was resolved by the recorded rule.
    assert_eq!(
        ca.sql_query("SELECT COUNT(*) FROM certificates WHERE state IN ('reserved', 'issuing')")
            .trim(),
        "0"
    );
    // A revocation through the new signer's API, too.
    let (id, _) = &to_revoke[10];
    let (st, v) = api(
        &b,
        "POST",
        &format!("/api/v1/staff-certificates/{id}/revocation"),
        &token,
        Some(serde_json::json!({ "reason": "affiliationChanged" })),
    );
    assert_eq!(st, 200, "{v}");

    // Every revocation reaches OCSP (judged by openssl) and the CRL the standby publishes.
    let until = Instant::now() + Duration::from_secs(60);
    for (id, _) in &to_revoke[..11] {
        loop {
            let out = row_ocsp(&ca, &b, &token, id);
            if out.contains(": revoked") {
                break;
            }
            assert!(Instant::now() < until, "{id} not revoked in OCSP: {out}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let out = row_ocsp(&ca, &b, &token, &to_revoke[11].0);
    assert!(out.contains(": good"), "{out}");
    let issuer = ca.export("individual").path;
    // The CRL duty runs beside OCSP's: its own minute.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, der) = get(&b, "/crl/individual.crl");
        let text = openssl_crl_text(&ca.file(""), &der, Some(&issuer));
        assert!(text.contains("verify OK"), "{text}");
        let listed = to_revoke[..11]
            .iter()
            .all(|(_, serial)| crl_text_lists(&text, serial));
        if listed {
            break;
        }
        assert!(
            Instant::now() < until,
            "the standby's CRL does not list every revocation: missing {:?}\nhealthz crl: {}\nCRL: {}",
            to_revoke[..11]
                .iter()
                .filter(|(_, serial)| !crl_text_lists(&text, serial))
                .map(|(_, serial)| (
                    serial.clone(),
                    ca.sql_query(&format!(
                        "SELECT state, revocation_reason, revoked_at FROM certificates WHERE serial = '{serial}'"
                    ))
                ))
                .collect::<Vec<_>>(),
            healthz(&b)["crl"]["individual"],
            text.lines().take(12).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let took = ca.sql_query("SELECT COUNT(*) FROM audit_log WHERE kind = 'service.took_over'");
    assert_eq!(took.trim(), "1");
    drop(standby);
    ca.audit_ok();
}

/// A signer that is frozen (SIGSTOP: its process alive, its lock session open — as a wedged
/// process or a host gone silent keeps it) stops renewing its lease; after
/// `SIGNER_LEASE_SECONDS` the standby ends that session and takes over. When the old signer
/// wakes it finds it no longer holds the lock and stops at once (exit status 75) instead of
/// signing beside the new one; the revocation the new signer published stays published, and
/// the new signer holds the next epoch.
#[test]
fn a_frozen_signer_is_deposed_after_its_lease_and_stops_when_it_wakes() {
    if test_db() != Db::Postgres {
        eprintln!("skipped: the lock connection exists on PostgreSQL only (SQLite locks a file)");
        return;
    }
    let ca = Ca::init();
    let leaf = crate::apply::issue(
        &ca,
        &crate::common::personal(),
        &ca.csr("frozen", KeyType::P256).csr,
        "before the partition",
    );
    let mut signer = start(&ca);
    crate::apply::officers_ready(&ca);
    // The standby runs on another host: its own data directory, with the token restored
    // from the signer's (here a copy), on the same database.
    let other_host = ca.file("standby-host");
    copy_dir(ca.data_dir(), &other_host);
    let standby = crate::serve::start_in(&ca, &other_host, &["--standby"]);
    let b = standby.1.clone();
    assert_eq!(healthz(&b)["role"], "standby");
    // The signer renews its lease (once a second) before it is frozen.
    let until = Instant::now() + Duration::from_secs(10);
    while ca.sql_query("SELECT COUNT(*) FROM signer_lease").trim() != "1" {
        assert!(Instant::now() < until, "no lease");
        std::thread::sleep(Duration::from_millis(100));
    }
    let epoch_before: i64 = ca
        .sql_query("SELECT epoch FROM signer_epoch")
        .trim()
        .parse()
        .unwrap();
    let pid = signer.0.id().to_string();
    let signal = |sig: &str| {
        let o = std::process::Command::new("kill")
            .args([sig, &pid])
            .output()
            .unwrap();
        assert!(o.status.success(), "kill {sig}: {}", show(&o));
    };
    signal("-STOP");
    // Nobody ends the frozen signer's session by hand: the standby does, once its lease is
    // stale (10 s).
    let took = wait_role(&b, "signer", 60, Some(&other_host));
    assert!(
        took >= Duration::from_secs(8),
        "the standby took over before the lease ran out ({took:?})"
    );
    eprintln!(
        "standby takeover from a frozen signer: {} ms (lease 10 s)",
        took.as_millis()
    );
    revoke_via(&ca, &[&b], &leaf.serial);
    let issuer = ca.export("individual").path;
    let until = Instant::now() + Duration::from_secs(30);
    while !openssl_ocsp_answer(&b, &issuer, &leaf.cert.path, &ca.roots_bundle())
        .contains(": revoked")
    {
        assert!(Instant::now() < until, "the new signer did not publish");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The old signer wakes: it finds it no longer holds the lock and exits.
    signal("-CONT");
    let until = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(st) = signer.0.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            Instant::now() < until,
            "the cut-off signer is still running"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, Some(75), "exit status of a signer that lost its lock");
    drop(signer);
    assert!(crate::ra::ocsp_status(&ca, &b, &issuer, &leaf.cert.path).contains(": revoked"));
    let epoch: i64 = ca
        .sql_query("SELECT epoch FROM signer_epoch")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(epoch, epoch_before + 1, "the standby took the next epoch");
    // What relying parties get from the database is the new signer's revoked response.
    let stored = ca.sql_query(&format!(
        "SELECT COUNT(*) FROM certificates WHERE serial = '{}' AND revocation_reason = 1",
        leaf.serial
    ));
    assert_eq!(stored.trim(), "1");
    drop(standby);
    ca.audit_ok();
}
