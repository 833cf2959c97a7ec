//! Renewal: a new key, the old certificate's subject, both certificates linked, and no second
//! renewal of the same certificate.

use ecert_e2e::*;

use crate::common::*;

/// The holder's online re-key (`/track/renew`): a CSR for a new key and the current key's
/// signature over `ecert-rekey-v1`, the reference, the old serial and the new key's SPKI hash,
/// made by openssl.
fn rekey(
    ca: &Ca,
    addr: &str,
    applied: &crate::apply::Applied,
    old_key: &std::path::Path,
    new: &CsrFiles,
) -> crate::serve::HttpResponse {
    let spki = openssl(
        ca.data_dir(),
        &[
            "pkey",
            "-in",
            new.key.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ],
    )
    .stdout;
    use sha2::Digest;
    let message = format!(
        "ecert-rekey-v1\n{}\n{}\n{}",
        applied.reference,
        applied.issued.serial,
        hex::encode(sha2::Sha256::digest(&spki))
    );
    let msg = ca.file("rekey.msg");
    std::fs::write(&msg, message).unwrap();
    let sig = openssl(
        ca.data_dir(),
        &[
            "dgst",
            "-sha256",
            "-sign",
            old_key.to_str().unwrap(),
            msg.to_str().unwrap(),
        ],
    )
    .stdout;
    use base64::Engine;
    let proof = base64::engine::general_purpose::STANDARD.encode(sig);
    let r = crate::ra::page(addr, "/track", "");
    let csrf = crate::ra::set_cookie(&r, "ecert_csrf").unwrap();
    crate::ra::form(
        addr,
        "/track/renew",
        &format!("ecert_csrf={csrf}"),
        &[
            ("csrf", &csrf),
            ("reference", &applied.reference),
            ("secret", &applied.secret),
            ("csr", &std::fs::read_to_string(&new.csr).unwrap()),
            ("rekey_proof", &proof),
        ],
    )
}

#[test]
fn renewal() {
    let ca = Ca::init();
    // A fresh certificate may be renewed at once (the default window is 90 days).
    ca.append_config("[ra]\nrenewal_window_days = 400");
    let case = personal();
    let old_csr = ca.csr("old", KeyType::P256);
    let applied = crate::apply::apply(&ca, &case, &old_csr.csr, "original");
    let old = applied.issued.clone();

    let new_csr = ca.csr("new", KeyType::P384);
    let (new_serial, again) = crate::ra::with_service(&ca, |addr| {
        let r = rekey(&ca, addr, &applied, &old_csr.key, &new_csr);
        assert_eq!(r.status, 200, "{}", crate::ra::text(&r));
        let before = ca.cert_list().len();
        // The same certificate is not renewed twice: its key's proof is refused now.
        let twice = ca.csr("again", KeyType::P256);
        let again = rekey(&ca, addr, &applied, &old_csr.key, &twice);
        assert_eq!(ca.cert_list().len(), before, "a second renewal issued");
        let renewed = ca.sql_query(&format!(
            "SELECT renewed_by FROM certificates WHERE serial = '{}'",
            old.serial
        ));
        (renewed.trim().to_string(), again)
    });
    assert_ne!(again.status, 200, "{}", crate::ra::text(&again));
    // (The application's certificate is now the renewal: the old key no longer speaks for it.)
    assert!(
        crate::ra::text(&again).contains("does not verify"),
        "the refusal does not say why: {}",
        crate::ra::text(&again)
    );
    let pem = ca.ecert_ok(&["cert", "export", &new_serial]);
    let path = ca.file("renewed.pem");
    std::fs::write(&path, pem).unwrap();
    let new = Issued {
        serial: new_serial,
        ca: "individual".into(),
        cert: CertFile::read(&path),
    };
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

    // Revoking the renewal revokes the certificate it renewed too (issue 11, defect 2: every
    // channel walks the renewal chain). The old certificate had another key, so its reason is
    // superseded, not keyCompromise; the CRL lists both, as openssl reads it.
    let out = crate::apply::revoke_ok(&ca, &["--serial", &new.serial, "--reason", "keyCompromise"]);
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
