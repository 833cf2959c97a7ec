//! Renewal: a new key, the old certificate's subject, both certificates linked, and no second
//! renewal of the same certificate.

use ecert_e2e::*;

use crate::common::*;

#[test]
fn renewal() {
    let ca = Ca::init();
    let case = personal();
    let old_csr = ca.csr("old", KeyType::P256);
    let old = ca.issue(case.profile, &old_csr.csr, &case.args, "original");

    let new_csr = ca.csr("new", KeyType::P384);
    let new = ca.issue(
        case.profile,
        &new_csr.csr,
        &["--renews", &old.serial],
        "renewal",
    );
    assert_ne!(new.serial, old.serial);
    check_leaf(&ca, &case, &new, &new_csr.csr, "renewal");

    let (o, n) = (old.cert.parse(), new.cert.parse());
    assert_eq!(
        n.subject().as_raw(),
        o.subject().as_raw(),
        "renewal subject differs:\n old {:?}\n new {:?}",
        name_attrs(o.subject()),
        name_attrs(n.subject())
    );
    assert_eq!(san_list(&n), san_list(&o), "renewal SANs differ");
    assert_ne!(
        n.public_key().raw,
        o.public_key().raw,
        "renewal kept the old key"
    );

    let old_show = ca.cert_show(&old.serial);
    assert_eq!(
        old_show.get("renewed_by"),
        Some(&new.serial),
        "cert show {} (old): {old_show:?}",
        old.serial
    );
    let new_show = ca.cert_show(&new.serial);
    assert_eq!(
        new_show.get("renews"),
        Some(&old.serial),
        "cert show {} (new): {new_show:?}",
        new.serial
    );
    assert_eq!(new_show.get("state").map(String::as_str), Some("issued"));

    // The same old certificate cannot be renewed twice.
    let before = ca.issued_count();
    let again = ca.csr("again", KeyType::P256);
    let out = ca.file("again.pem");
    let err = ca.ecert_err(&[
        "issue",
        "--profile",
        "personal",
        "--csr",
        again.csr.to_str().unwrap(),
        "--renews",
        &old.serial,
        "--out",
        out.to_str().unwrap(),
    ]);
    let line = error_line(&err).to_lowercase();
    assert!(
        line.contains("renew"),
        "the refusal does not say why: {err}"
    );
    assert!(!out.exists());
    // Nor can an unknown serial, or a certificate of another profile.
    let err = ca.ecert_err(&[
        "issue",
        "--profile",
        "personal",
        "--csr",
        again.csr.to_str().unwrap(),
        "--renews",
        &"ab".repeat(16),
    ]);
    assert!(
        error_line(&err).contains(&"ab".repeat(16))
            || error_line(&err).to_lowercase().contains("no certificate"),
        "{err}"
    );
    let org = organisational();
    let err = ca.ecert_err(&[
        "issue",
        "--profile",
        org.profile,
        "--csr",
        again.csr.to_str().unwrap(),
        "--renews",
        &new.serial,
    ]);
    let line = error_line(&err).to_lowercase();
    assert!(
        line.contains("personal") || line.contains("renew"),
        "renewing a personal certificate as organisational: {err}"
    );
    assert_eq!(
        ca.issued_count(),
        before,
        "a refused renewal issued a certificate"
    );

    // Revoking the renewal revokes the certificate it renewed too (issue 11, defect 2: every
    // channel walks the renewal chain). The old certificate had another key, so its reason is
    // superseded, not keyCompromise; the CRL lists both, as openssl reads it.
    let out = ca.ecert_ok(&[
        "revoke",
        "--serial",
        &new.serial,
        "--reason",
        "keyCompromise",
    ]);
    assert!(
        out.contains(&format!("{}\trevoked\tkeyCompromise", new.serial))
            && out.contains(&format!("{}\trevoked\tsuperseded", old.serial)),
        "{out}"
    );
    assert_eq!(
        ca.cert_show(&old.serial)
            .get("revocation_reason")
            .map(String::as_str),
        Some("superseded")
    );
    ca.ecert_ok(&["crl", "publish"]);
    let crl = ca.file("individual.crl.pem");
    std::fs::write(&crl, ca.ecert_ok(&["crl", "export", "individual"])).unwrap();
    let o = openssl(
        ca.data_dir(),
        &["crl", "-in", crl.to_str().unwrap(), "-noout", "-text"],
    );
    assert!(o.status.success(), "{}", show(&o));
    let listed: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(|s| s.trim_start_matches('0').to_uppercase())
        .collect();
    for serial in [&old.serial, &new.serial] {
        let serial = serial.trim_start_matches('0').to_uppercase();
        assert!(
            listed.contains(&serial),
            "{serial} not on the CRL: {listed:?}"
        );
    }
    ca.audit_ok();
}
