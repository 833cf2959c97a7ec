//! Revocation status changes through `ecert revoke`, as a named officer through the running
//! service: compare-and-set semantics, reason rules per CA, hold and release, keyCompromise
//! blocking the key and revoking every certificate that carries it, and mass revocation by
//! query or list, which two officers decide. Each change is audited.

use ecert_e2e::*;

use crate::common::*;

fn show_field(ca: &Ca, serial: &str, key: &str) -> Option<String> {
    ca.cert_show(serial).get(key).cloned()
}

#[test]
fn revoke_hold_release_and_key_compromise() {
    let ca = Ca::init();
    let case = personal();
    let shared_key = ca.csr("shared", KeyType::P256);
    let a = crate::apply::issue(&ca, &case, &shared_key.csr, "first with the shared key");
    let b = crate::apply::issue(&ca, &case, &shared_key.csr, "second with the shared key");
    let srv = server();
    let s_csr = ca.csr("srv", KeyType::P256);
    let s = crate::apply::issue(&ca, &srv, &s_csr.csr, "server");

    // Revoke; revoking again is answered, not repeated.
    let out = crate::apply::revoke_ok(&ca, &["--serial", &a.serial, "--reason", "superseded"]);
    assert!(
        out.contains(&format!("{}\trevoked\tsuperseded", a.serial)),
        "{out}"
    );
    assert_eq!(
        show_field(&ca, &a.serial, "revocation_reason").as_deref(),
        Some("superseded")
    );
    let err = crate::apply::revoke_err(
        &ca,
        &["--serial", &a.serial, "--reason", "affiliationChanged"],
    );
    assert!(error_line(&err).contains("already revoked"), "{err}");

    // Hold and release on the Individual & Organisational CA; refused on the Server CA.
    let out = crate::apply::revoke_ok(&ca, &["--serial", &b.serial, "--hold"]);
    assert!(out.contains("held"), "{out}");
    assert_eq!(
        show_field(&ca, &b.serial, "revocation_reason").as_deref(),
        Some("certificateHold")
    );
    crate::apply::revoke_ok(&ca, &["--serial", &b.serial, "--release"]);
    assert_eq!(show_field(&ca, &b.serial, "revocation_reason"), None);
    let err = crate::apply::revoke_err(&ca, &["--serial", &b.serial, "--release"]);
    assert!(error_line(&err).contains("not on hold"), "{err}");
    let err = crate::apply::revoke_err(&ca, &["--serial", &s.serial, "--hold"]);
    assert!(
        error_line(&err).contains("not allowed on the server CA"),
        "{err}"
    );
    // Nor on an S/MIME BR Strict certificate (encipherment), though its CA allows holds
    // (issue 12, defect 1: S/MIME BR §7.2.2); it stays good, as OCSP and the CRL then say.
    let enc = encipherment();
    let e_csr = ca.csr("enc", KeyType::P256);
    let e = crate::apply::issue(&ca, &enc, &e_csr.csr, "encipherment");
    let err = crate::apply::revoke_err(&ca, &["--serial", &e.serial, "--hold"]);
    assert!(error_line(&err).contains("Strict"), "{err}");
    assert_eq!(show_field(&ca, &e.serial, "revocation_reason"), None);
    let err = crate::apply::revoke_err(&ca, &["--serial", &s.serial, "--reason", "nonsense"]);
    assert!(error_line(&err).contains("unknown reason"), "{err}");

    // The only change after revocation: to keyCompromise. It blocks the key and revokes the
    // other certificate with the same key, in one step.
    let out = crate::apply::revoke_ok(&ca, &["--serial", &a.serial, "--reason", "keyCompromise"]);
    assert!(
        out.contains(&format!("{}\treason_updated\tkeyCompromise", a.serial)),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}\trevoked\tkeyCompromise", b.serial)),
        "{out}"
    );
    for serial in [&a.serial, &b.serial] {
        assert_eq!(
            show_field(&ca, serial, "revocation_reason").as_deref(),
            Some("keyCompromise")
        );
    }
    let before = ca.issued_count();
    let another = with(
        case.application.clone(),
        serde_json::json!({"surname": "Ho", "given_name": "Wai", "email": "x@example.hk"}),
    );
    let refusal = crate::apply::refusal(
        &ca,
        &another,
        &shared_key.csr,
        "a certificate with a compromised key",
    );
    assert!(refusal.message().contains("blocked"), "{refusal:?}");
    assert_eq!(ca.issued_count(), before);

    // Unknown serial; a serial that was never issued.
    let err = crate::apply::revoke_err(&ca, &["--serial", "00112233445566778899aabbccddeeff"]);
    assert!(error_line(&err).contains("not found (HTTP 404)"), "{err}");

    let kinds = ca.sql_query("SELECT kind FROM audit_log WHERE kind LIKE 'certificate.%' OR kind = 'key.blocked' ORDER BY seq");
    for kind in [
        "certificate.revoked",
        "certificate.held",
        "certificate.released",
        "certificate.revocation_reason_updated",
        "key.blocked",
    ] {
        assert!(
            kinds.lines().any(|l| l.trim() == kind),
            "no {kind} audit event in:\n{kinds}"
        );
    }
    ca.audit_ok();
}

#[test]
fn mass_revocation_by_query_and_list() {
    let ca = Ca::init();
    let case = personal();
    let mut personal_serials = Vec::new();
    for i in 0..4 {
        let csr = ca.csr(&format!("p{i}"), KeyType::P256);
        personal_serials.push(crate::apply::issue(&ca, &case, &csr.csr, "personal").serial);
    }
    let srv = server();
    let s_csr = ca.csr("s", KeyType::P256);
    let s = crate::apply::issue(&ca, &srv, &s_csr.csr, "server");

    // One revoked beforehand is skipped; one on hold is revoked for good (a later release must
    // not bring it back); the rest revoked; the server certificate untouched. Two officers
    // decide a revocation of many (issue 14).
    crate::apply::revoke_ok(&ca, &["--serial", &personal_serials[3], "--hold"]);
    crate::apply::revoke_ok(
        &ca,
        &["--serial", &personal_serials[0], "--reason", "superseded"],
    );
    let done = crate::apply::officers_decide(
        &ca,
        serde_json::json!({
            "kind": "mass_revocation", "reason": "cessationOfOperation",
            "profile": "personal", "issued_after": "2000-01-01T00:00:00Z",
        }),
    );
    assert_eq!(done["state"], "done", "{done}");
    for serial in &personal_serials[1..] {
        assert_eq!(
            show_field(&ca, serial, "revocation_reason").as_deref(),
            Some("cessationOfOperation")
        );
    }
    assert_eq!(
        show_field(&ca, &personal_serials[0], "revocation_reason").as_deref(),
        Some("superseded")
    );
    assert_eq!(show_field(&ca, &s.serial, "revocation_reason"), None);
    let err = crate::apply::revoke_err(&ca, &["--serial", &personal_serials[3], "--release"]);
    assert!(error_line(&err).contains("not on hold"), "{err}");

    // A list of serials, one already revoked: skipped, not an error.
    let done = crate::apply::officers_decide(
        &ca,
        serde_json::json!({
            "kind": "mass_revocation", "reason": "privilegeWithdrawn",
            "serials": [s.serial, personal_serials[1]],
        }),
    );
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(
        show_field(&ca, &s.serial, "revocation_reason").as_deref(),
        Some("privilegeWithdrawn")
    );
    assert_eq!(
        show_field(&ca, &personal_serials[1], "revocation_reason").as_deref(),
        Some("cessationOfOperation")
    );
    // Nobody revokes many alone: the command takes one serial.
    let o = crate::apply::revoke(
        &ca,
        &["--serial", &s.serial, "--serial", &personal_serials[2]],
    );
    assert!(!o.status.success(), "{}", show(&o));
    ca.audit_ok();
}

/// Revocation needs only the database: an officer's revocation through the service goes through
/// at once while the same service is in the middle of an issuance (an approval paused by a
/// failpoint after the HSM signed), instead of waiting for it.
#[test]
fn a_revocation_does_not_wait_for_an_issuance_in_progress() {
    let ca = Ca::init();
    let case = personal();
    let csr = ca.csr("a", KeyType::P256);
    let a = crate::apply::issue(&ca, &case, &csr.csr, "to revoke");
    crate::apply::officers_ready(&ca);
    let csr2 = ca.csr("b", KeyType::P256);
    crate::crash::during_approval(
        &ca,
        "ca::after_hsm_sign=sleep(20000)",
        &case,
        &csr2.csr,
        |signer| {
            let started = std::time::Instant::now();
            while ca
                .sql_query("SELECT serial FROM certificates WHERE state = 'issuing'")
                .trim()
                .is_empty()
            {
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(30),
                    "the signer never reached `issuing`"
                );
                assert!(
                    signer.0.try_wait().unwrap().is_none(),
                    "the signer exited early (failpoints compiled in?)"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let t = std::time::Instant::now();
            let out =
                crate::apply::revoke_ok(&ca, &["--serial", &a.serial, "--reason", "superseded"]);
            assert!(out.contains("revoked"), "{out}");
            assert!(
                t.elapsed() < std::time::Duration::from_secs(10),
                "revoke waited {:?} for the signer",
                t.elapsed()
            );
            assert!(
                signer.0.try_wait().unwrap().is_none(),
                "the signer should still be paused"
            );
            signer.0.kill().unwrap();
            let _ = signer.0.wait();
        },
    );
}

/// A keyCompromise revocation by one process while another process is storing a new
/// certificate for the same key (paused by a failpoint inside the transaction that marks it
/// `issued`, between the state change and the blocked-key check): the revocation waits for the
/// row and then revokes the new certificate too, or the issuance sees the block and rolls back.
/// Never an issued, unrevoked certificate with a compromised key. Runs on both engines.
#[test]
fn key_compromise_racing_an_issuance_in_another_process_loses_nothing() {
    let ca = Ca::init();
    let case = personal();
    let key = ca.csr("raced", KeyType::P256);
    let first = crate::apply::issue(&ca, &case, &key.csr, "first");
    let ((second, revoked), outcome) = crate::crash::during_approval(
        &ca,
        "store::mark_issued_before_block_check=sleep(4000)",
        &case,
        &key.csr,
        |_| {
            // Wait until the second serial is recorded (`issuing`); its transaction to
            // `issued` is then open and sleeping.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let second = loop {
                if let Some(r) = ca
                    .cert_list()
                    .into_iter()
                    .find(|r| r.serial != first.serial && r.profile == "personal")
                {
                    break r.serial;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the second issuance never reached the store"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            };
            std::thread::sleep(std::time::Duration::from_millis(1500));
            let revoked = crate::apply::revoke_ok(
                &ca,
                &["--serial", &first.serial, "--reason", "keyCompromise"],
            );
            (second, revoked)
        },
    );
    let state = show_field(&ca, &second, "state");
    let reason = show_field(&ca, &second, "revocation_reason");
    match (outcome, state.as_deref()) {
        // The issuance won the row: the sweep waited for it and revoked the new certificate.
        (Some(Ok(_)), Some("issued")) => {
            assert_eq!(
                reason.as_deref(),
                Some("keyCompromise"),
                "an issued certificate with a compromised key is not revoked\n{revoked}"
            );
            assert!(revoked.contains(&second), "{revoked}");
        }
        // The issuance saw the block: no certificate.
        (Some(Err(refusal)), s) => {
            assert!(refusal.message().contains("blocked"), "{refusal:?}");
            assert_ne!(s, Some("issued"), "{refusal:?}");
        }
        (outcome, s) => panic!("issuance {outcome:?}, state {s:?}"),
    }
    // Either way the key stays blocked.
    let refusal = crate::apply::refusal(
        &ca,
        &case.application,
        &key.csr,
        "a certificate for a blocked key",
    );
    assert!(refusal.message().contains("blocked"), "{refusal:?}");
    ca.audit_ok();
}

/// Issue 14: a mass revocation and a key block through the running service's API need two
/// officers. The proposer cannot confirm; once a second officer confirms, OCSP (judged by
/// openssl) answers `revoked` for the listed certificates and not for the others, and a new
/// certificate for the blocked key is refused; everything is in the audit trail.
#[test]
fn two_officers_revoke_many_and_block_a_key_through_the_api() {
    use crate::ra::{add_gpo, add_staff, api, serve_ra, session_token};
    let ca = Ca::init();
    add_gpo(&ca);
    let totp1 = add_staff(&ca, "officer1", "gpo", "officer");
    let totp2 = add_staff(&ca, "officer2", "gpo", "officer");
    add_staff(&ca, "clerk1", "gpo", "clerk");
    let token = |who: &str| crate::ra::staff_token(&ca, who, "read,decide", 1);
    let (long_lived, clerk) = (token("officer1"), token("clerk1"));
    let p = crate::common::personal();
    let csrs: Vec<_> = (0..3)
        .map(|i| ca.csr(&format!("many-{i}"), KeyType::P256))
        .collect();
    let leaves: Vec<_> = csrs
        .iter()
        .map(|c| crate::apply::issue(&ca, &p, &c.csr, "for the officers"))
        .collect();
    let smtp = ecert_e2e::SmtpServer::start();
    let log = ca.file("serve.log");
    let server = serve_ra(&ca, &smtp.addr, &log);
    let addr = server.1.clone();
    let chain = crate::ocsp::chain(&ca);
    let resp = ca.file("resp.der");
    // Each officer signed in, with the second factor (`ecert login`'s token).
    let (one, two) = (
        session_token(&addr, "officer1", &totp1),
        session_token(&addr, "officer2", &totp2),
    );

    let mass = serde_json::json!({
        "kind": "mass_revocation", "reason": "cessationOfOperation",
        "serials": [leaves[0].serial, leaves[1].serial],
    });
    let (st, e) = api(
        &addr,
        "POST",
        "/api/v1/officer-proposals",
        &clerk,
        Some(mass.clone()),
    );
    assert_eq!(st, 403, "a clerk proposes: {e}");
    let (st, e) = api(
        &addr,
        "POST",
        "/api/v1/officer-proposals",
        &long_lived,
        Some(mass.clone()),
    );
    assert_eq!(st, 403, "an integration's long-lived token proposes: {e}");
    assert!(e.to_string().contains("session"), "{e}");
    let (st, proposal) = api(&addr, "POST", "/api/v1/officer-proposals", &one, Some(mass));
    assert_eq!(st, 201, "{proposal}");
    assert_eq!(proposal["state"], "pending");
    let confirm = format!(
        "/api/v1/officer-proposals/{}/confirm",
        proposal["id"].as_str().unwrap()
    );
    let (st, e) = api(&addr, "POST", &confirm, &one, None);
    assert_eq!(st, 403, "the proposer confirms: {e}");
    crate::ocsp::wait_status(
        &ca,
        &addr,
        &chain,
        &chain.individual,
        &leaves[0].cert.path,
        "good",
        &resp,
        "before the second officer",
    );
    let (st, done) = api(&addr, "POST", &confirm, &two, None);
    assert_eq!(st, 200, "{done}");
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["outcome"], "2 revoked, 0 already revoked, 0 failed");
    for leaf in &leaves[..2] {
        crate::ocsp::wait_status(
            &ca,
            &addr,
            &chain,
            &chain.individual,
            &leaf.cert.path,
            "revoked",
            &resp,
            "after the second officer",
        );
    }
    crate::ocsp::wait_status(
        &ca,
        &addr,
        &chain,
        &chain.individual,
        &leaves[2].cert.path,
        "good",
        &resp,
        "not in the proposal",
    );
    let (st, e) = api(&addr, "POST", &confirm, &two, None);
    assert_eq!(st, 409, "carried out twice: {e}");

    // The key of the third certificate, blocked by two officers.
    let (st, proposal) = api(
        &addr,
        "POST",
        "/api/v1/officer-proposals",
        &two,
        Some(
            serde_json::json!({"kind": "key_block", "serial": leaves[2].serial, "reason": "found on a paste site"}),
        ),
    );
    assert_eq!(st, 201, "{proposal}");
    let (st, list) = api(&addr, "GET", "/api/v1/officer-proposals", &one, None);
    assert_eq!(st, 200, "{list}");
    assert!(list.to_string().contains("block the key"), "{list}");
    let path = format!(
        "/api/v1/officer-proposals/{}/confirm",
        proposal["id"].as_str().unwrap()
    );
    let (st, done) = api(&addr, "POST", &path, &one, None);
    assert_eq!(st, 200, "{done}");

    // The Server CA (no certificate here depends on it), revoked by two officers: the root's
    // CRL lists it with its reason (openssl and pkilint judge it).
    let (st, proposal) = api(
        &addr,
        "POST",
        "/api/v1/officer-proposals",
        &one,
        Some(
            serde_json::json!({"kind": "ca_revocation", "ca": "server", "reason": "cessationOfOperation"}),
        ),
    );
    assert_eq!(st, 201, "{proposal}");
    let path = format!(
        "/api/v1/officer-proposals/{}/confirm",
        proposal["id"].as_str().unwrap()
    );
    let (st, done) = api(&addr, "POST", &path, &two, None);
    assert_eq!(st, 200, "{done}");
    assert!(
        done["outcome"]
            .as_str()
            .unwrap()
            .starts_with("the server CA revoked"),
        "{done}"
    );
    // The command line sees the same, as the signed-in officer (ECERT_SERVER + ECERT_TOKEN).
    let o = std::process::Command::new(ecert_bin())
        .args(["proposal", "list"])
        .env("ECERT_SERVER", format!("http://{addr}"))
        .env("ECERT_TOKEN", &one)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(listed.matches("\tdone\t").count(), 3, "{listed}");
    assert!(
        listed.contains(&leaves[0].serial),
        "the list confirmed is shown: {listed}"
    );
    drop(server);
    // The Server CA is under the TLS root: its revocation is on that root's CRL, signed in a
    // key ceremony.
    ca.root_crl_ceremony("tls-root");
    ca.root_crl_ceremony("root");
    let root_crl = ca.file("tls-root.crl.pem");
    std::fs::write(&root_crl, ca.ecert_ok(&["crl", "export", "tls-root"])).unwrap();
    pkilint(
        "lint_crl",
        &["-t", "ARL", "-p", "BR"],
        &[&root_crl],
        "TLS root ARL after two officers",
    );
    let text = String::from_utf8_lossy(
        &openssl(
            ca.data_dir(),
            &["crl", "-in", root_crl.to_str().unwrap(), "-noout", "-text"],
        )
        .stdout,
    )
    .into_owned();
    let server_serial = String::from_utf8_lossy(
        &openssl(
            ca.data_dir(),
            &[
                "x509",
                "-in",
                chain.server.to_str().unwrap(),
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
        text.contains(&format!("Serial Number: {server_serial}"))
            && text.contains("Cessation Of Operation"),
        "{server_serial} not listed: {text}"
    );
    // ... and not on the S/MIME root's, which did not issue it.
    let smime_root_crl = ca.file("root.crl.pem");
    std::fs::write(&smime_root_crl, ca.ecert_ok(&["crl", "export", "root"])).unwrap();
    let smime_text = String::from_utf8_lossy(
        &openssl(
            ca.data_dir(),
            &[
                "crl",
                "-in",
                smime_root_crl.to_str().unwrap(),
                "-noout",
                "-text",
            ],
        )
        .stdout,
    )
    .into_owned();
    assert!(
        !smime_text.contains(&format!("Serial Number: {server_serial}")),
        "the S/MIME root lists the TLS root's CA: {smime_text}"
    );
    let refusal = crate::apply::refusal(
        &ca,
        &p.application,
        &csrs[2].csr,
        "a certificate for a blocked key",
    );
    assert!(refusal.message().contains("blocked"), "{refusal:?}");
    let kinds = ca.sql_query("SELECT kind FROM audit_log WHERE kind LIKE 'officer.%' ORDER BY seq");
    assert_eq!(
        kinds.lines().collect::<Vec<_>>(),
        [
            "officer.proposed",
            "officer.confirmed",
            "officer.proposed",
            "officer.confirmed",
            "officer.proposed",
            "officer.confirmed"
        ]
    );
    ca.audit_ok();
}

/// Issue 14: revocation by serial through the API follows the matrix. Counter staff reach the
/// certificates of their own outlet's applications (another outlet's is 404, as its application
/// is); roles without `Revoke` are refused (403); every change is audited with the member.
#[test]
fn revocation_by_serial_follows_the_matrix() {
    use crate::ra::{add_staff, api, as_admin, staff_token, with_service};
    let ca = Ca::init();
    let case = personal();
    let leaf = crate::apply::issue(&ca, &case, &ca.csr("a", KeyType::P256).csr, "at the GPO");
    as_admin(
        &ca,
        "POST",
        "/api/v1/outlets",
        Some(serde_json::json!({"id": "tst", "name_en": "Tsim Sha Tsui", "name_zh": "尖沙咀"})),
    );
    add_staff(&ca, "tst-clerk", "tst", "clerk");
    add_staff(&ca, "gpo-clerk", "gpo", "clerk");
    add_staff(&ca, "auditor1", "gpo", "auditor");
    let other = staff_token(&ca, "tst-clerk", "read,decide", 1);
    let own = staff_token(&ca, "gpo-clerk", "read,decide", 1);
    let auditor = staff_token(&ca, "auditor1", "read", 1);
    let path = format!("/api/v1/certificates/{}/revocation", leaf.serial);
    let hold = serde_json::json!({"reason": "certificateHold"});
    with_service(&ca, |addr| {
        let (st, e) = api(addr, "POST", &path, &other, Some(hold.clone()));
        assert_eq!(st, 404, "another outlet's clerk: {e}");
        let (st, e) = api(addr, "POST", &path, &auditor, Some(hold.clone()));
        assert_eq!(st, 403, "an auditor: {e}");
        let (st, v) = api(addr, "POST", &path, &own, Some(hold.clone()));
        assert_eq!(st, 200, "the outlet's clerk: {v}");
        assert_eq!(v["changed"][0]["outcome"], "held", "{v}");
        let (st, v) = api(
            addr,
            "POST",
            &path,
            &own,
            Some(serde_json::json!({"release": true})),
        );
        assert_eq!(st, 200, "{v}");
    });
    assert_eq!(show_field(&ca, &leaf.serial, "revocation_reason"), None);

    // Nothing is revoked by default: an empty or misspelt body is refused.
    with_service(&ca, |addr| {
        for body in [
            serde_json::json!({}),
            serde_json::json!({"reasons": "keyCompromise"}),
            serde_json::json!({"reason": "superseded", "release": true}),
        ] {
            let (st, e) = api(addr, "POST", &path, &own, Some(body.clone()));
            assert_eq!(st, 422, "{body}: {e}");
        }
    });
    assert_eq!(show_field(&ca, &leaf.serial, "revocation_reason"), None);

    // A clerk's keyCompromise takes the subscriber's word: it reaches this certificate (and
    // what it renewed), records a report, and blocks nothing; another certificate with the key
    // stays good until an officer confirms, which blocks the key and revokes that one too.
    let key = ca.csr("shared", KeyType::P256);
    let first = crate::apply::issue(&ca, &case, &key.csr, "first with the key");
    let second = crate::apply::issue(&ca, &case, &key.csr, "second with the key");
    let first_path = format!("/api/v1/certificates/{}/revocation", first.serial);
    let compromised = serde_json::json!({"reason": "keyCompromise"});
    with_service(&ca, |addr| {
        let (st, v) = api(addr, "POST", &first_path, &own, Some(compromised.clone()));
        assert_eq!(st, 200, "{v}");
    });
    let count = |sql: &str| ca.sql_query(sql).trim().to_string();
    assert_eq!(count("SELECT COUNT(*) FROM blocked_keys"), "0");
    assert_eq!(count("SELECT COUNT(*) FROM key_compromise_reports"), "1");
    assert_eq!(show_field(&ca, &second.serial, "revocation_reason"), None);
    let out = crate::apply::revoke_ok(
        &ca,
        &["--serial", &first.serial, "--reason", "keyCompromise"],
    );
    assert!(
        out.contains(&format!("{}\trevoked\tkeyCompromise", second.serial)),
        "{out}"
    );
    assert_eq!(count("SELECT COUNT(*) FROM blocked_keys"), "1");
    // With no other certificate to reach, the officer's confirmation still blocks the key
    // (it used to answer "already revoked" and block nothing).
    let lone = crate::apply::issue(&ca, &case, &ca.csr("lone", KeyType::P256).csr, "alone");
    with_service(&ca, |addr| {
        let path = format!("/api/v1/certificates/{}/revocation", lone.serial);
        let (st, v) = api(addr, "POST", &path, &own, Some(compromised.clone()));
        assert_eq!(st, 200, "{v}");
    });
    assert_eq!(count("SELECT COUNT(*) FROM blocked_keys"), "1");
    crate::apply::revoke_ok(
        &ca,
        &["--serial", &lone.serial, "--reason", "keyCompromise"],
    );
    assert_eq!(count("SELECT COUNT(*) FROM blocked_keys"), "2");
    let actors = ca.sql_query(
        "SELECT kind || ' ' || actor FROM audit_log WHERE kind IN ('certificate.held', 'certificate.released', 'key.compromise_reported', 'key.blocked') ORDER BY seq",
    );
    assert_eq!(
        actors.lines().collect::<Vec<_>>(),
        [
            "certificate.held staff:gpo-clerk",
            "certificate.released staff:gpo-clerk",
            "key.compromise_reported staff:gpo-clerk",
            "key.blocked staff:e2e-officer1",
            "key.compromise_reported staff:gpo-clerk",
            "key.blocked staff:e2e-officer1"
        ],
        "{actors}"
    );

    // One at a time, a member revokes or holds at most 30 an hour: more is a mass revocation,
    // which two officers decide.
    let refused = with_service(&ca, |addr| {
        for _ in 0..40 {
            let (st, e) = api(addr, "POST", &path, &own, Some(hold.clone()));
            if st == 429 {
                return e;
            }
            assert_eq!(st, 200, "{e}");
            let (st, e) = api(
                addr,
                "POST",
                &path,
                &own,
                Some(serde_json::json!({"release": true})),
            );
            assert_eq!(st, 200, "{e}");
        }
        panic!("no limit after 40 holds in an hour");
    });
    assert!(refused.to_string().contains("two officers"), "{refused}");
    let made = ca.sql_query(
        "SELECT COUNT(*) FROM audit_log WHERE actor = 'staff:gpo-clerk' AND kind IN ('certificate.revoked', 'certificate.held', 'certificate.revocation_reason_updated')",
    );
    assert_eq!(made.trim(), "30", "revocations and holds by the clerk");
}
