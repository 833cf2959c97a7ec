//! The whole journey in real headless Chromium (Debian chromium + chromedriver): a citizen
//! applies with a key made in the browser (WebCrypto, PKI.js), confirms the e-mail code read
//! from a real SMTP server, a clerk signs in with TOTP, checks identity, records the fee and
//! approves; the citizen downloads a PKCS#12 from the same browser, which openssl opens with the
//! passphrase and whose certificate verifies against the chain; the citizen revokes online and
//! OCSP says revoked. A screenshot of every step is kept in target/e2e-screenshots/.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ecert_e2e::webdriver::Chrome;
use ecert_e2e::*;

use crate::ra::{add_clerk, add_gpo, ocsp_status, serve_ra};

fn screenshots(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target
        .join("e2e-screenshots")
        .join(format!("{name}-{:?}", test_db()).to_lowercase())
}

/// Opens a PKCS#12 with `openssl pkcs12` and the key's passphrase: its PEM dump (key and
/// certificates, with bag attributes) and the first certificate in its own file.
fn open_pkcs12(ca: &Ca, p12: &Path, name: &str) -> (String, PathBuf) {
    let dump = ca.file(&format!("p12-{name}.pem"));
    let o = openssl(
        ca.data_dir(),
        &[
            "pkcs12",
            "-in",
            p12.to_str().unwrap(),
            "-passin",
            "pass:key file passphrase",
            "-nodes",
            "-out",
            dump.to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success(),
        "openssl cannot open the browser's PKCS#12: {}",
        show(&o)
    );
    let pems = std::fs::read_to_string(&dump).unwrap();
    let first = pems.find("-----BEGIN CERTIFICATE-----").unwrap();
    let end = pems[first..].find("-----END CERTIFICATE-----").unwrap() + first + 25;
    let leaf = ca.file(&format!("leaf-{name}.pem"));
    std::fs::write(&leaf, &pems[first..end]).unwrap();
    (pems, leaf)
}

/// `openssl x509 -noout <what>` of a certificate file, trimmed.
fn x509_print(ca: &Ca, cert: &Path, what: &str) -> String {
    let o = openssl(
        ca.data_dir(),
        &["x509", "-in", cert.to_str().unwrap(), "-noout", what],
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The rest of the application form's secrets, then a key and CSR made in the browser
/// (WebCrypto, PKI.js), waited for.
fn make_key(b: &Chrome) {
    b.fill("#revocation_secret", "my revocation words");
    b.fill("#key-passphrase", "key file passphrase");
    b.click("#make-key");
    b.wait_until(
        "return document.getElementById('csr').value.includes('BEGIN CERTIFICATE REQUEST');",
        "the CSR made in the browser",
    );
}

/// The e-mail code in a mail as the SMTP listener keeps it: 26 base32 characters after a label
/// in either language (a Chinese mail's body is base64, Content-Transfer-Encoding).
fn mail_code(mail: &str) -> String {
    use base64::Engine as _;
    let body = mail.split_once("\n\n").map_or("", |(_, b)| b);
    let text = if mail.contains("Content-Transfer-Encoding: base64") {
        let raw: String = body.split_whitespace().collect();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap(),
        )
        .unwrap()
    } else {
        body.to_string()
    };
    text.split(|c: char| c.is_whitespace() || c == ':' || c == '：')
        .find(|c| {
            c.len() == 26
                && c.bytes()
                    .all(|x| x.is_ascii_uppercase() || (b'2'..=b'7').contains(&x))
        })
        .unwrap_or_else(|| panic!("no code in {mail}"))
        .to_string()
}

fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[test]
fn browser_journey_apply_approve_pkcs12_revoke() {
    let ca = Ca::init();
    add_gpo(&ca);
    let totp = add_clerk(&ca, "clerk1", "gpo");
    // Let a fresh certificate be renewed online at once (the default window is 90 days).
    ca.append_config("[ra]\nrenewal_window_days = 400");
    let smtp = SmtpServer::start();
    let log = ca.file("serve.log");
    let server = serve_ra(&ca, &smtp.addr, &log);
    let base = format!("http://{}", server.1);
    let b = Chrome::start(&screenshots("browser-journey"));

    // Apply, with a key made in this browser.
    b.goto(&format!("{base}/"));
    b.screenshot("home");
    b.click("#apply-personal");
    b.fill("#surname", "Chan");
    b.fill("#given_name", "Tai Man");
    b.fill("#name_zh", "陳大文");
    b.fill("#email", "tm.chan@example.hk");
    b.fill("#hkid", "Z683451(6)");
    b.eval("document.getElementById('date_of_birth').value = '1980-02-29'; return true;");
    b.fill("#phone", "+852 2921 2222");
    b.fill("#address", "1 Connaught Place, Central");
    make_key(&b);
    b.screenshot("key-made");
    // The passphrase-protected key file opens with openssl and holds a P-256 key.
    let keyfile = b.download(".p8.pem");
    let o = openssl(
        ca.data_dir(),
        &[
            "pkey",
            "-in",
            keyfile.to_str().unwrap(),
            "-passin",
            "pass:key file passphrase",
            "-noout",
            "-text",
        ],
    );
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("prime256v1"),
        "{}",
        show(&o)
    );
    let csr = b.eval("return document.getElementById('csr').value;");
    let csr_path = ca.file("browser.csr");
    std::fs::write(&csr_path, csr.as_str().unwrap()).unwrap();
    let o = openssl(
        ca.data_dir(),
        &[
            "req",
            "-in",
            csr_path.to_str().unwrap(),
            "-verify",
            "-noout",
        ],
    );
    assert!(
        o.status.success(),
        "the browser's CSR does not verify: {}",
        show(&o)
    );
    b.click("#submit");
    let reference = b.text("#reference");
    let secret = b.text("#tracking-secret");
    assert!(
        reference.starts_with("EC-") && secret.len() > 20,
        "{}",
        b.text("body")
    );
    b.screenshot("applied");

    // The e-mail code.
    let code = mail_code(&smtp.wait_for("tm.chan@example.hk", &reference));
    b.fill("#code", &code);
    b.click("#confirm");
    b.wait_until(
        "const e = document.getElementById('status'); return !!e && e.dataset.status === 'awaiting_visit';",
        "awaiting the visit",
    );
    b.screenshot("email-confirmed");

    // The clerk at the counter.
    b.goto(&format!("{base}/staff/login"));
    b.fill("#username", "clerk1");
    b.fill("#password", "a counter password 123");
    b.fill("#code", &totp_now(&totp));
    b.screenshot("staff-sign-in");
    b.click("#sign-in");
    b.click(&format!("a.open[data-reference={}]", js_str(&reference)));
    assert_eq!(b.text("#hkid-masked"), "Z******(6)");
    b.screenshot("staff-application");
    b.fill("#typed-hkid", "Z683451(6)");
    b.click("#card-sighted");
    b.click("#check-identity");
    b.fill("#receipt", "GPO-0001");
    b.click("#record-fee");
    b.screenshot("identity-and-fee");
    b.click("#approve");
    b.wait_until(
        "const m = document.getElementById('message'); return !!m && m.textContent.startsWith('Issued');",
        "issuance",
    );
    b.screenshot("approved");

    // The citizen, in the same browser: the PKCS#12.
    b.goto(&format!("{base}/track"));
    b.fill("#reference", &reference);
    b.fill("#secret", &secret);
    b.click("#show");
    b.wait_until(
        "const e = document.getElementById('status'); return !!e && e.dataset.status === 'issued';",
        "issued",
    );
    // A wrong passphrase is refused in the page; nothing is saved.
    b.fill("#p12-passphrase", "not the key passphrase");
    b.click("#download-p12");
    b.wait_until(
        "const e = document.getElementById('p12-status'); return !!e && e.textContent === e.dataset.wrong;",
        "the wrong-passphrase message",
    );
    assert!(
        std::fs::read_dir(b.downloads.path()).unwrap().all(|e| !e
            .unwrap()
            .path()
            .to_string_lossy()
            .ends_with(".p12")),
        "a PKCS#12 was saved with a wrong passphrase"
    );
    // What the browser profile keeps: a non-extractable signing key and the encrypted PKCS#8.
    let kept = b.eval_async(
        "const done = arguments[0];
         const req = indexedDB.open('ecert-keys', 1);
         req.onsuccess = () => {
           const all = req.result.transaction('keys').objectStore('keys').getAll();
           all.onsuccess = () => done(all.result.map((k) => ({
             extractable: k.privateKey.extractable,
             encrypted: k.encryptedPkcs8 && k.encryptedPkcs8.byteLength > 100,
           })));
         };",
    );
    assert_eq!(
        kept,
        serde_json::json!([{ "extractable": false, "encrypted": true }]),
        "the browser keeps the private key in a form that can be read out"
    );
    b.fill("#p12-passphrase", "key file passphrase");
    b.click("#download-p12");
    let p12 = b.download(".p12");
    b.screenshot("pkcs12-downloaded");
    let (pems, leaf) = open_pkcs12(&ca, &p12, "first");
    let wrong = std::process::Command::new("openssl")
        .args([
            "pkcs12",
            "-in",
            p12.to_str().unwrap(),
            "-passin",
            "pass:wrong",
            "-nodes",
            "-noout",
        ])
        .output()
        .unwrap();
    assert!(
        !wrong.status.success(),
        "the PKCS#12 opens with a wrong passphrase"
    );
    // Its certificate verifies against the chain and carries the key's public half.
    // Key and certificate are paired for keychain importers (localKeyID) and named.
    assert!(pems.matches("localKeyID:").count() >= 2, "{pems}");
    assert!(
        pems.contains(&format!("friendlyName: e-Cert {reference}")),
        "{pems}"
    );
    let root = ca.export("root");
    let individual = ca.export("individual");
    let verify = |leaf: &Path, ctx: &str| {
        openssl_verify(
            &root.path,
            &[&individual.path],
            leaf,
            Some("smimesign"),
            ctx,
        )
    };
    verify(&leaf, "the PKCS#12's certificate");
    let cert_pub = x509_print(&ca, &leaf, "-pubkey");
    let key_pub = openssl(
        ca.data_dir(),
        &[
            "pkey",
            "-in",
            ca.file("p12-first.pem").to_str().unwrap(),
            "-pubout",
        ],
    )
    .stdout;
    assert_eq!(
        cert_pub,
        String::from_utf8_lossy(&key_pub).trim(),
        "the PKCS#12 key does not belong to its certificate"
    );
    assert!(
        pems.matches("BEGIN CERTIFICATE").count() >= 3,
        "leaf, issuing CA and root: {pems}"
    );

    // Online renewal with the key in this browser, then a new PKCS#12 with the new certificate.
    let first_serial = x509_print(&ca, &leaf, "-serial");
    std::fs::remove_file(&p12).unwrap();
    b.click("#renew-browser");
    b.wait_until(
        "const m = document.getElementById('message'); return !!m && m.textContent.startsWith('Renewed');",
        "the renewal",
    );
    b.screenshot("renewed");
    b.fill("#p12-passphrase", "key file passphrase");
    b.click("#download-p12");
    let p12 = b.download(".p12");
    let (_, leaf) = open_pkcs12(&ca, &p12, "renewed");
    verify(&leaf, "the renewed PKCS#12's certificate");
    let second_serial = x509_print(&ca, &leaf, "-serial");
    assert_ne!(
        first_serial, second_serial,
        "the renewal is a new certificate"
    );
    let renewed_pub = x509_print(&ca, &leaf, "-pubkey");
    assert_eq!(renewed_pub, cert_pub, "renewal keeps the key");

    // Online re-key: a new key made in this browser, vouched for by the current key's
    // signature; the new key file is offered, and the new PKCS#12 holds the new key.
    std::fs::remove_file(&p12).unwrap();
    for f in std::fs::read_dir(b.downloads()).unwrap().flatten() {
        std::fs::remove_file(f.path()).unwrap();
    }
    b.fill("#rekey-passphrase", "key file passphrase");
    b.click("#rekey-browser");
    b.wait_until(
        "const m = document.getElementById('message'); return !!m && m.textContent.startsWith('Renewed');",
        "the re-key",
    );
    b.screenshot("rekeyed");
    let key_file = b.download(".p8.pem");
    assert!(
        std::fs::read_to_string(&key_file)
            .unwrap()
            .contains("BEGIN ENCRYPTED PRIVATE KEY"),
        "the new key is offered encrypted"
    );
    b.fill("#p12-passphrase", "key file passphrase");
    b.click("#download-p12");
    let p12 = b.download(".p12");
    let (_, leaf) = open_pkcs12(&ca, &p12, "rekeyed");
    verify(&leaf, "the re-keyed PKCS#12's certificate");
    let rekeyed_pub = x509_print(&ca, &leaf, "-pubkey");
    assert_ne!(rekeyed_pub, cert_pub, "re-key changes the key");
    let rekeyed_serial = x509_print(&ca, &leaf, "-serial");
    assert!(
        rekeyed_serial != first_serial && rekeyed_serial != second_serial,
        "the re-key is a new certificate"
    );
    let audit = ca.sql_query("SELECT kind FROM audit_log WHERE kind LIKE 'ra.re%' ORDER BY seq");
    assert!(
        audit.contains("ra.renewed") && audit.contains("ra.rekeyed"),
        "{audit}"
    );

    // Online revocation; OCSP answers revoked.
    b.fill("#revocation_secret", "my revocation words");
    b.eval("document.getElementById('reason').value = 'keyCompromise'; return true;");
    b.click("#revoke");
    b.wait_until(
        "const m = document.getElementById('message'); return !!m;",
        "the revocation",
    );
    b.screenshot("revoked");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = ocsp_status(&ca, &server.1, &individual.path, &leaf);
        if s.contains(": revoked") {
            assert!(s.contains("Response verify OK"), "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "{s}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Signs in at /staff/login in the browser.
fn staff_sign_in(b: &Chrome, base: &str, username: &str, totp: &str) {
    b.goto(&format!("{base}/staff/login"));
    b.fill("#username", username);
    b.fill("#password", "a counter password 123");
    b.fill("#code", &totp_now(totp));
    b.click("#sign-in");
    b.wait_until(
        "return !!document.getElementById('role');",
        "the staff home page",
    );
}

/// Issue 14, in real Chromium: one officer proposes a mass revocation on /staff/officer, sees
/// no button to confirm it themself; a second officer, signed in after the first signs out,
/// sees exactly which serials it names and confirms it; the certificates are revoked. A data
/// owner's home links to /staff/personal-data, which says the keys are activated.
#[test]
fn browser_two_officers_and_the_data_owner() {
    use crate::ra::add_staff;
    let ca = Ca::init();
    add_gpo(&ca);
    let totp1 = add_staff(&ca, "officer1", "gpo", "officer");
    let totp2 = add_staff(&ca, "officer2", "gpo", "officer");
    let totp_owner = add_staff(&ca, "owner1", "gpo", "data_owner");
    let p = crate::common::personal();
    let leaves: Vec<_> = (0..2)
        .map(|i| {
            crate::apply::issue(
                &ca,
                &p,
                &ca.csr(&format!("browser-mass-{i}"), KeyType::P256).csr,
                "to revoke from the page",
            )
        })
        .collect();
    let smtp = SmtpServer::start();
    let log = ca.file("serve.log");
    let server = serve_ra(&ca, &smtp.addr, &log);
    let base = format!("http://{}", server.1);
    let b = Chrome::start(&screenshots("browser-officers"));

    staff_sign_in(&b, &base, "officer1", &totp1);
    b.click("#officer-link");
    b.fill(
        "#serials",
        &format!("{}\n{}", leaves[0].serial, leaves[1].serial),
    );
    b.eval("document.getElementById('mass-reason').value = 'cessationOfOperation'; return true;");
    b.click("#propose-mass button[type=submit]");
    b.wait_until(
        "const m = document.getElementById('message'); return !!m && m.textContent.startsWith('revoke 2 certificate(s)');",
        "the proposal",
    );
    b.screenshot("proposed");
    assert_eq!(
        b.eval("return document.querySelectorAll('#proposals tr[data-state=pending] button.confirm').length;"),
        serde_json::json!(0),
        "the proposer is offered a confirm button"
    );
    b.goto(&format!("{base}/staff"));
    b.click("#sign-out");

    staff_sign_in(&b, &base, "officer2", &totp2);
    b.goto(&format!("{base}/staff/officer"));
    // The exact list sits in a <details> under the summary.
    let listed = b.eval(
        "return document.querySelector('#proposals tr[data-state=pending] pre.params').textContent;",
    );
    let listed = listed.as_str().unwrap_or_default();
    assert!(
        listed.contains(&leaves[0].serial) && listed.contains(&leaves[1].serial),
        "the second officer sees what they confirm: {listed}"
    );
    b.screenshot("to-confirm");
    b.click("#proposals tr[data-state=pending] button.confirm");
    b.wait_until(
        "const m = document.getElementById('message'); return !!m && m.textContent.startsWith('2 revoked');",
        "the revocation",
    );
    b.screenshot("confirmed");
    for leaf in &leaves {
        let shown = ca.cert_show(&leaf.serial);
        assert!(
            shown.values().any(|v| v.contains("cessationOfOperation")),
            "{shown:?}"
        );
    }
    b.goto(&format!("{base}/staff"));
    b.click("#sign-out");

    staff_sign_in(&b, &base, "owner1", &totp_owner);
    b.click("#personal-data-link");
    b.wait_until(
        "const e = document.getElementById('pii-status'); return !!e && e.dataset.status === 'activated';",
        "the personal-data page",
    );
    b.screenshot("personal-data");
}

/// Signs in at /staff/login in the browser with `password`, and waits for the staff home.
fn staff_sign_in_with(b: &Chrome, base: &str, username: &str, password: &str, totp: &str) {
    b.goto(&format!("{base}/staff/login"));
    b.fill("#username", username);
    b.fill("#password", password);
    b.fill("#code", &totp_now(totp));
    b.click("#sign-in");
    b.wait_until(
        "return !!document.getElementById('role');",
        "the staff home page",
    );
}

/// `url` with `lang=` set (the page in that language; the choice is remembered).
fn in_lang(url: &str, lang: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}lang={lang}")
}

/// Issue 18: every page — public, the citizen's after a form, and each staff role's — passes
/// axe-core's WCAG 2.1 A and AA rules (no serious or critical finding) in English and in
/// Traditional Chinese; a journey walks in Traditional Chinese; the language switch keeps the
/// page and a half-filled form (but never the HKID number).
#[test]
fn every_page_passes_axe_in_both_languages_and_a_journey_in_chinese() {
    use crate::ra::add_staff;
    let ca = Ca::init();
    add_gpo(&ca);
    let roles = [
        ("clerk1", "clerk"),
        ("super1", "supervisor"),
        ("officer1", "officer"),
        ("operator1", "operator"),
        ("auditor1", "auditor"),
        ("owner1", "data_owner"),
    ];
    let totps: Vec<String> = roles
        .iter()
        .map(|(u, r)| add_staff(&ca, u, "gpo", r))
        .collect();
    // The second of the two admins `add_staff` made. It approved the privileged accounts with
    // this time step's code, which is refused a second time (replay): its browser sign-in
    // waits for the next step.
    let admin_totp = std::fs::read_to_string(ca.file("e2e-admin2.totp")).unwrap();
    let admin_step = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30;
    let smtp = SmtpServer::start();
    let log = ca.file("serve.log");
    let server = serve_ra(&ca, &smtp.addr, &log);
    let base = format!("http://{}", server.1);
    let b = Chrome::start(&screenshots("browser-a11y"));
    let langs = ["en", "zh-HK"];
    let lang_is = |lang: &str| {
        b.wait_until(
            &format!("return document.documentElement.lang === '{lang}';"),
            &format!("the page in {lang}"),
        )
    };

    // The language switch keeps the page and what was typed, except the HKID number.
    b.goto(&in_lang(&format!("{base}/apply?profile=personal"), "en"));
    b.fill("#surname", "Chan");
    b.fill("#given_name", "Siu Ming");
    b.fill("#email", "sm.chan@example.hk");
    b.fill("#hkid", "Z683451(6)");
    b.fill("#phone", "+852 2921 2223");
    b.click("#lang-switch");
    lang_is("zh-HK");
    assert_eq!(
        b.eval("return location.pathname + location.search;"),
        serde_json::json!("/apply?profile=personal&lang=zh-HK")
    );
    assert_eq!(
        b.eval("return document.getElementById('surname').value;"),
        serde_json::json!("Chan")
    );
    assert_eq!(
        b.eval("return document.getElementById('email').value;"),
        serde_json::json!("sm.chan@example.hk")
    );
    assert_eq!(
        b.eval("return document.getElementById('hkid').value;"),
        serde_json::json!(""),
        "the HKID number was kept in the browser"
    );
    assert_eq!(
        b.eval("return document.getElementById('phone').value;"),
        serde_json::json!(""),
        "the phone number was kept in the browser"
    );
    assert_eq!(
        b.eval("return sessionStorage.length;"),
        serde_json::json!(0),
        "what the switch kept is still in the browser"
    );
    b.screenshot("zh-apply-kept");

    // A journey in Traditional Chinese: apply, confirm the mailbox, see the data held, change
    // a consent.
    b.fill("#hkid", "Z683451(6)");
    b.fill("#name_zh", "陳小明");
    b.eval("document.getElementById('date_of_birth').value = '1985-06-15'; return true;");
    b.fill("#phone", "+852 2921 2223");
    b.fill("#address", "香港中環干諾道中2號");
    make_key(&b);
    b.screenshot("zh-key-made");
    b.click("#submit");
    let reference = b.text("#reference");
    let secret = b.text("#tracking-secret");
    lang_is("zh-HK");
    b.screenshot("zh-applied");
    let code = mail_code(&smtp.wait_for("sm.chan@example.hk", &reference));
    b.fill("#code", &code);
    b.click("#confirm");
    b.wait_until(
        "const e = document.getElementById('status'); return !!e && e.dataset.status === 'awaiting_visit';",
        "awaiting the visit",
    );
    lang_is("zh-HK");
    b.screenshot("zh-status");
    b.click("#notices-toggle");
    b.wait_until(
        "const e = document.getElementById('notices-state'); return !!e && e.textContent.includes('您已同意');",
        "the consent given",
    );
    b.screenshot("zh-consent-given");
    b.click("#data-see");
    b.wait_until(
        "return !!document.getElementById('data-title');",
        "the data page",
    );
    assert_eq!(b.text("#data-title"), "我們持有的您的個人資料");
    assert!(
        b.text("#data-items").contains("Z******(6)"),
        "{}",
        b.text("body")
    );
    b.screenshot("zh-data");
    // The same page in English, found again from the tracking form.
    b.goto(&in_lang(&format!("{base}/track"), "en"));
    b.fill("#reference", &reference);
    b.fill("#secret", &secret);
    b.click("#show");
    b.click("#data-see");
    b.wait_until(
        "return !!document.getElementById('data-title');",
        "the data page",
    );
    lang_is("en");
    b.screenshot("en-data");

    // Every public page, in both languages.
    for lang in langs {
        for page in [
            "/",
            "/apply?profile=personal",
            "/apply?profile=organisational",
            "/apply?profile=server",
            "/track",
            "/report",
            "/directory",
            "/directory?email=nobody%40example.hk",
            "/terms",
            "/staff/login",
        ] {
            b.goto(&in_lang(&format!("{base}{page}"), lang));
            lang_is(lang);
            b.check_accessibility(page);
        }
    }

    // Each staff role's pages, in both languages (one sign-in each: a TOTP code is used once).
    let id: String = ca
        .sql_query(&format!(
            "SELECT id FROM applications WHERE reference = '{reference}'"
        ))
        .trim()
        .to_string();
    let application = format!("/staff/applications/{id}");
    let mut accounts: Vec<(&str, &str, &str, Vec<&str>)> = vec![
        (
            "clerk1",
            "a counter password 123",
            &totps[0],
            vec!["/staff", &application, "/staff/walk-in", "/staff/password"],
        ),
        (
            "super1",
            "a counter password 123",
            &totps[1],
            vec!["/staff", "/staff/reports"],
        ),
        (
            "officer1",
            "a counter password 123",
            &totps[2],
            vec![
                "/staff",
                &application,
                "/staff/problems",
                "/staff/officer",
                "/staff/reports",
            ],
        ),
        (
            "operator1",
            "a counter password 123",
            &totps[3],
            vec!["/staff", "/staff/ops"],
        ),
        (
            "auditor1",
            "a counter password 123",
            &totps[4],
            vec!["/staff", "/staff/audit"],
        ),
        (
            "owner1",
            "a counter password 123",
            &totps[5],
            vec!["/staff", "/staff/audit", "/staff/personal-data"],
        ),
    ];
    accounts.push((
        "e2e-admin2",
        "an e2e admin password",
        &admin_totp,
        vec!["/staff", "/staff/admin", "/staff/reports"],
    ));
    for (user, password, totp, pages) in accounts {
        eprintln!("signing in as {user}");
        while user.starts_with("e2e-admin")
            && std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                / 30
                <= admin_step
        {
            std::thread::sleep(Duration::from_millis(500));
        }
        staff_sign_in_with(&b, &base, user, password, totp);
        for lang in langs {
            for page in &pages {
                b.goto(&in_lang(&format!("{base}{page}"), lang));
                lang_is(lang);
                b.check_accessibility(&format!("{user} {page}"));
            }
        }
        b.goto(&format!("{base}/staff"));
        b.click("#sign-out");
    }
    let checked = b.checked_pages();
    eprintln!(
        "axe-core passed {} pages:\n{}",
        checked.len(),
        checked.join("\n")
    );
    assert!(checked.len() >= 60, "{checked:?}");
}
