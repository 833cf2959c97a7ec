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
    ca.audit_ok();
}
