//! The public directory over HTTP (issue 16, docs/DIRECTORY.md): a certificate its holder chose
//! to publish is found by its exact address — not by a prefix, a wildcard or another case of
//! its local part — until it is revoked or withdrawn; a miss is an empty answer; the lookups
//! are rate-limited.

use ecert_e2e::*;

use crate::common::*;
use crate::ra::{api, form, page, set_cookie, text, with_service};

const ADDRESS: &str = "taiman.chan@example.hk";

fn found(addr: &str, email: &str) -> (u16, serde_json::Value) {
    api(
        addr,
        "GET",
        &format!("/api/v1/directory?email={email}"),
        "",
        None,
    )
}

fn serials(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["serial"].as_str().unwrap().to_string())
        .collect()
}

/// The holder of `applied` publishes (`on`) or withdraws (`off`) it on the tracking page; the
/// page answered.
pub(crate) fn publish_on_tracking_page(
    addr: &str,
    applied: &crate::apply::Applied,
    on: &str,
) -> String {
    let r = page(addr, "/track", "");
    let csrf = set_cookie(&r, "ecert_csrf").unwrap();
    let r = form(
        addr,
        "/track/directory",
        &format!("ecert_csrf={csrf}"),
        &[
            ("csrf", &csrf),
            ("reference", &applied.reference),
            ("secret", &applied.secret),
            ("publish", on),
        ],
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    text(&r)
}

#[test]
fn published_certificates_are_found_by_exact_address_only() {
    let ca = Ca::init();
    let mut published = personal();
    published.application["publish_in_directory"] = serde_json::json!(true);
    let a = crate::apply::apply(
        &ca,
        &published,
        &ca.csr("d1", KeyType::P256).csr,
        "published",
    );
    let b = crate::apply::apply(
        &ca,
        &personal(),
        &ca.csr("d2", KeyType::P256).csr,
        "not published",
    );
    // Only a personal certificate is published, by its holder: an Authorised Representative
    // does not publish an Authorised User's.
    let mut org = organisational();
    org.application["publish_in_directory"] = serde_json::json!(true);
    let refused = crate::apply::refusal(
        &ca,
        &org.application,
        &ca.csr("d3", KeyType::P256).csr,
        "an organisational application published",
    );
    assert!(
        refused.message().contains("publish_in_directory"),
        "{refused:?}"
    );
    // An encipherment certificate (an organisation's mailbox) is published by the organisation's
    // choice: its Authorised Representative's, at application.
    let mut enc = encipherment();
    enc.application["publish_in_directory"] = serde_json::json!(true);
    let e = crate::apply::apply(
        &ca,
        &enc,
        &ca.csr("d4", KeyType::P256).csr,
        "an encipherment certificate published",
    );
    let enc_address = enc.application["email"].as_str().unwrap().to_string();
    // The choice made at application is in the audit trail.
    let submitted = ca.sql_query(&format!(
        "SELECT detail FROM audit_log WHERE kind = 'ra.application.submitted' AND detail LIKE '%{}%'",
        a.reference
    ));
    assert!(submitted.contains("\"published\":true"), "{submitted}");
    assert_eq!(
        published.application["email"].as_str().unwrap(),
        ADDRESS,
        "the harness's personal address"
    );
    with_service(&ca, |addr| {
        // The published one, by its exact address (the domain in any case), as its PEM.
        let (st, v) = found(addr, ADDRESS);
        assert_eq!(st, 200, "{v}");
        assert_eq!(serials(&v), vec![a.issued.serial.clone()], "{v}");
        let pem = v[0]["certificate"].as_str().unwrap();
        assert_eq!(
            pem_certs(pem.as_bytes())[0],
            pem_certs(&std::fs::read(&a.issued.cert.path).unwrap())[0]
        );
        assert_eq!(serials(&found(addr, "taiman.chan@EXAMPLE.HK").1).len(), 1);
        // No prefix or list (refused by name); a wildcard is just a character (equality: it
        // finds nothing); another address finds nothing (200, empty).
        for bad in [
            "taiman",
            "taiman.chan%40example.hk%2C",
            "taiman.chan@example",
            "",
        ] {
            let (st, v) = found(addr, bad);
            assert_eq!(st, 422, "{bad}: {v}");
        }
        for nothing in [
            "*@example.hk",
            "%25@example.hk",
            "taiman.chan@example.hk.evil",
        ] {
            let (st, v) = found(addr, nothing);
            assert_eq!((st, serials(&v).len()), (200, 0), "{nothing}: {v}");
        }
        let (st, v) = api(addr, "GET", "/api/v1/directory", "", None);
        assert_eq!(st, 422, "no address: {v}");
        assert_eq!(
            serials(&found(addr, &enc_address).1),
            vec![e.issued.serial.clone()]
        );
        let (st, v) = found(addr, "someone.else@example.hk");
        assert_eq!((st, serials(&v).len()), (200, 0), "{v}");
        assert_eq!(serials(&found(addr, "TAIMAN.CHAN@example.hk").1).len(), 0);
        // The page, in both languages.
        let shown = text(&page(addr, &format!("/directory?email={ADDRESS}"), ""));
        assert!(
            shown.contains(&a.issued.serial) && shown.contains("BEGIN CERTIFICATE"),
            "{shown}"
        );
        let shown = text(&page(
            addr,
            "/directory?lang=zh-HK&email=nobody@example.hk",
            "",
        ));
        assert!(shown.contains("此地址沒有已公開的證書"), "{shown}");

        // The second holder publishes theirs on the tracking page; then withdraws it.
        let publish = |on: &str| publish_on_tracking_page(addr, &b, on);
        assert!(publish("on").contains("This certificate is published"));
        assert_eq!(serials(&found(addr, ADDRESS).1).len(), 2);
        // Revoked: no longer found.
        crate::apply::revoke_ok(
            &ca,
            &["--serial", &a.issued.serial, "--reason", "superseded"],
        );
        assert_eq!(
            serials(&found(addr, ADDRESS).1),
            vec![b.issued.serial.clone()]
        );
        assert!(publish("off").contains("not published"));
        assert_eq!(serials(&found(addr, ADDRESS).1).len(), 0);
        // Rate-limited: a harvest by many lookups is refused.
        let mut limited = false;
        for i in 0..40 {
            if found(addr, &format!("n{i}@example.hk")).0 == 429 {
                limited = true;
                break;
            }
        }
        assert!(limited, "40 lookups in a minute were all answered");
    });
    let audited =
        ca.sql_query("SELECT COUNT(*) FROM audit_log WHERE kind = 'ra.directory.changed'");
    assert_eq!(audited.trim(), "2");
    ca.audit_ok();
}
