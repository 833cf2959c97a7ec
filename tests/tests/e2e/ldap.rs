//! The public directory over LDAP (issue 16, docs/DIRECTORY.md "LDAP"), against a real slapd
//! configured from `ops/slapd/`, read with `ldapsearch` as a mail client reads it: a published
//! certificate is found by its exact address under `userCertificate;binary`; harvesting filters
//! find nothing; the entry holds nothing the certificate does not say; the CA's entry holds its
//! certificate and its newest CRL; a revocation made while slapd is down reaches the directory
//! once it is back.

use std::time::{Duration, Instant};

use ecert_e2e::ldap::{LdapServer, Search};
use ecert_e2e::*;

use crate::common::*;
use crate::ra::with_service;

const ADDRESS: &str = "taiman.chan@example.hk";

/// Polls `f` until it returns `Some` (the publisher runs every two seconds; the issue allows a
/// minute).
fn within_a_minute<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within a minute: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn by_mail(slapd: &LdapServer, address: &str) -> Search {
    slapd.search_anonymous(&slapd.people(), "sub", &format!("(mail={address})"), &["*"])
}

fn certificates(s: &Search) -> Vec<Vec<u8>> {
    s.values("userCertificate;binary")
}

fn der(path: &std::path::Path) -> Vec<u8> {
    pem_certs(&std::fs::read(path).unwrap())[0].clone()
}

/// A DER CRL as `openssl crl -text` reads it.
fn crl_text(ca: &Ca, crl: &[u8]) -> String {
    let file = ca.file("ldap-crl.der");
    std::fs::write(&file, crl).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl crl: the directory's CRL does not parse"
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn published_certificates_reach_ldap_by_exact_address_and_leave_it() {
    let ca = Ca::init();
    let mut slapd = LdapServer::start();
    ca.append_config(&slapd.config());
    let mut published = personal();
    published.application["publish_in_directory"] = serde_json::json!(true);
    assert_eq!(published.application["email"].as_str().unwrap(), ADDRESS);
    with_service(&ca, |addr| {
        let a = crate::apply::apply(
            &ca,
            &published,
            &ca.csr("l1", KeyType::P256).csr,
            "published",
        );
        let b = crate::apply::apply(
            &ca,
            &personal(),
            &ca.csr("l2", KeyType::P256).csr,
            "not yet",
        );
        let (a_der, b_der) = (der(&a.issued.cert.path), der(&b.issued.cert.path));

        // A mail client finds the published certificate by the exact address.
        let entry = within_a_minute("the published certificate in LDAP", || {
            let s = by_mail(&slapd, ADDRESS);
            (certificates(&s).len() == 1).then_some(s)
        });
        assert_eq!(entry.code, 0);
        assert_eq!(certificates(&entry), vec![a_der.clone()]);
        assert_eq!(
            entry.dns(),
            vec![format!("mail={ADDRESS},{}", slapd.people())]
        );
        // Nothing beyond what the certificate says: its address and the names in its subject.
        let mut names: Vec<&str> = entry
            .ldif
            .lines()
            .filter_map(|l| l.split(':').next())
            .filter(|n| !n.is_empty() && *n != "dn")
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names,
            vec![
                "cn",
                "givenName",
                "mail",
                "objectClass",
                "sn",
                "userCertificate;binary"
            ],
            "{}",
            entry.ldif
        );
        let subject = openssl_subject(&ca, &a.issued.cert.path);
        let value = |attr: &str| String::from_utf8(entry.values(attr).remove(0)).unwrap();
        let cn = value("cn");
        for (attr, short) in [("cn", "CN"), ("sn", "SN"), ("givenName", "GN")] {
            let v = value(attr);
            assert!(
                subject.contains(&format!("{short}={v}")),
                "{attr} {v} vs {subject}"
            );
        }
        assert_eq!(value("mail"), ADDRESS);

        // No harvest: presence, substrings, other attributes, listing, several addresses.
        let people = slapd.people();
        for (scope, filter) in [
            ("sub", "(mail=*)"),
            ("sub", "(mail=taiman*)"),
            ("sub", "(mail=*@example.hk)"),
            ("one", "(mail=*)"),
            ("one", "(objectClass=*)"),
            ("one", "(objectClass=inetOrgPerson)"),
            ("sub", "(cn=*)"),
            ("sub", &format!("(cn={cn})")),
            ("sub", "(sn=*)"),
            ("sub", "(userCertificate;binary=*)"),
            ("one", "(!(mail=nobody@example.hk))"),
            ("sub", &format!("(&(mail={ADDRESS})(cn=*))")),
            // Many guesses in one search: whether one of them is published must not show.
            (
                "sub",
                &format!("(|(mail={ADDRESS})(mail=guess1@example.hk)(mail=guess2@example.hk))"),
            ),
            ("sub", "(|(mail=guess1@example.hk)(mail=guess2@example.hk))"),
            ("sub", &format!("(mail:caseExactIA5Match:={ADDRESS})")),
            ("sub", "(entryDN=*)"),
        ] {
            let s = slapd.search_anonymous(&people, scope, filter, &["mail"]);
            assert!(
                s.dns().is_empty() && (s.code == 0 || s.code == 11),
                "{scope} {filter}: {} {}",
                s.code,
                s.ldif
            );
        }
        // An OR of guesses answers the same whether one of them is published or none is (no
        // oracle for a guessing attack).
        let guesses = |first: &str| {
            let s = slapd.search_anonymous(
                &people,
                "sub",
                &format!("(|(mail={first})(mail=guess1@example.hk))"),
                &["mail"],
            );
            (s.code, s.dns().len())
        };
        assert_eq!(guesses(ADDRESS), guesses("guess0@example.hk"));
        // No compare (an anonymous compare of hasSubordinates crashed slapd 2.5), and slapd is
        // still up after one.
        for _ in 0..3 {
            let c = std::process::Command::new("ldapcompare")
                .args(["-x", "-H", &slapd.url(), &people, "hasSubordinates:TRUE"])
                .output()
                .unwrap();
            assert!(!c.status.success(), "compare is refused");
        }
        for _ in 0..8 {
            assert_eq!(by_mail(&slapd, ADDRESS).dns().len(), 1, "slapd is up");
        }
        // The suffix and cn=config are closed to anonymous clients.
        for base in [ecert_e2e::ldap::SUFFIX, "cn=config"] {
            let s = slapd.search_anonymous(base, "sub", &format!("(mail={ADDRESS})"), &[]);
            assert!(s.dns().is_empty(), "{base}: {}", s.ldif);
        }

        // The CA's entry: its certificate, and its newest CRL.
        let ca_entry = within_a_minute("the CA entry with a CRL", || {
            let s = slapd.search_anonymous(
                &format!("cn=individual,{}", slapd.cas()),
                "base",
                "(objectClass=*)",
                &["cACertificate;binary", "certificateRevocationList;binary"],
            );
            (!s.values("certificateRevocationList;binary").is_empty()).then_some(s)
        });
        let (st, _, issuing) = crate::serve::get(addr, "/ca/individual.crt");
        assert_eq!(st, 200);
        assert_eq!(ca_entry.values("cACertificate;binary"), vec![issuing]);

        // The second holder publishes on the tracking page: the entry holds both.
        let publish = |on: &str| {
            crate::directory::publish_on_tracking_page(addr, &b, on);
        };
        publish("on");
        within_a_minute("both certificates in the entry", || {
            let mut got = certificates(&by_mail(&slapd, ADDRESS));
            got.sort();
            let mut want = vec![a_der.clone(), b_der.clone()];
            want.sort();
            (got == want).then_some(())
        });

        // slapd is down during a revocation: queued, then published once it is back.
        slapd.stop();
        crate::apply::revoke_ok(
            &ca,
            &["--serial", &a.issued.serial, "--reason", "keyCompromise"],
        );
        std::thread::sleep(Duration::from_secs(5));
        let queued = ca.sql_query("SELECT COUNT(*) FROM ldap_pending WHERE entry LIKE 'mail:%'");
        assert_eq!(queued.trim(), "1", "the change waits in the queue");
        slapd.resume();
        within_a_minute("the revoked certificate out of the entry", || {
            (certificates(&by_mail(&slapd, ADDRESS)) == vec![b_der.clone()]).then_some(())
        });
        let serial = &a.issued.serial;
        within_a_minute("the revocation in the CA entry's CRL", || {
            let s = slapd.search_anonymous(
                &format!("cn=individual,{}", slapd.cas()),
                "base",
                "(objectClass=*)",
                &["certificateRevocationList;binary"],
            );
            let crl = s.values("certificateRevocationList;binary").pop()?;
            crl_text_lists(&crl_text(&ca, &crl), serial).then_some(())
        });

        // Withdrawn: the entry is gone.
        publish("off");
        within_a_minute("the entry deleted", || {
            let s = by_mail(&slapd, ADDRESS);
            (s.code == 0 && s.dns().is_empty()).then_some(())
        });
    });
    let left = ca.sql_query("SELECT COUNT(*) FROM ldap_pending");
    assert_eq!(left.trim(), "0", "the queue drained");
    ca.audit_ok();
}

/// The subject of a certificate file as openssl prints it (RFC 2253).
fn openssl_subject(_ca: &Ca, cert: &std::path::Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}
