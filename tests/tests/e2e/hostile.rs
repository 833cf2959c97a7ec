//! Hostile CSRs and requests: each application refused cleanly at entry (a 4xx answer naming
//! the problem, audited where it is a rejected certificate request, nothing issued); a CSR's own
//! subject and SAN requests never reach the certificate.

use std::path::{Path, PathBuf};

use ecert_e2e::*;

use crate::common::*;

/// One refusal: the application, entered through the API with `csr`, must be refused cleanly
/// (a 4xx answer naming the problem: one of `keywords`, case-insensitive) before anything is
/// issued; with `audited`, as one `issuance.refused` audit event (BR §5.4.1: a rejected
/// certificate request is recorded).
fn refused(
    ca: &Ca,
    application: &serde_json::Value,
    csr: &Path,
    keywords: &[&str],
    ctx: &str,
    audited: bool,
) {
    let refusals = || {
        ca.sql_query("SELECT COUNT(*) FROM audit_log WHERE kind = 'issuance.refused'")
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("[{ctx}] counting refusals: {e}"))
    };
    let (issued_before, audited_before) = (ca.issued_count(), refusals());
    let r = match crate::apply::attempt(ca, application, None, csr) {
        Ok(a) => panic!("[{ctx}] issued {}", a.issued.serial),
        Err(r) => r,
    };
    eprintln!("[{ctx}] {} {}: {}", r.step, r.status, r.message());
    assert!(
        (400..500).contains(&r.status) && r.status != 404,
        "[{ctx}] {} answered {} {}",
        r.step,
        r.status,
        r.body
    );
    let line = r.message().to_lowercase();
    assert!(
        keywords.iter().any(|k| line.contains(&k.to_lowercase())),
        "[{ctx}] the answer does not name the problem (expected one of {keywords:?}): {}",
        r.message()
    );
    if audited {
        assert_eq!(
            refusals(),
            audited_before + 1,
            "[{ctx}] the refusal was not recorded as one `issuance.refused` audit event"
        );
    }
    assert_eq!(
        ca.issued_count(),
        issued_before,
        "[{ctx}] a refused request left a new issued certificate in `cert list`"
    );
}

fn write(ca: &Ca, name: &str, data: &[u8]) -> PathBuf {
    let p = ca.file(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Deterministic junk (xorshift), so a failure reproduces.
fn junk(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn hostile_csrs_are_refused() {
    let ca = Ca::init();
    let dir = ca.work.path().to_path_buf();
    let d = dir.as_path();
    // One good issuance first, so "no new issued certificate" is measured against a non-empty list.
    issue_and_verify_personal(&ca, "baseline", "baseline");
    assert_eq!(ca.issued_count(), 1);
    let application = personal().application;

    // Bad signature: flip a bit in the last octet of the signature of a DER CSR.
    let good = ca.csr("sig", KeyType::P256);
    let der = d.join("sig.der");
    openssl(
        d,
        &[
            "req",
            "-in",
            good.csr.to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            der.to_str().unwrap(),
        ],
    );
    let mut bytes = std::fs::read(&der).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let bad_sig = write(&ca, "badsig.der", &bytes);

    let rsa1024_key = d.join("rsa1024.key");
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            rsa1024_key.to_str().unwrap(),
        ],
    );
    let rsa1024 = csr_for_key(d, "rsa1024", &rsa1024_key, CSR_SUBJECT, &[]);
    let e3_key = d.join("e3.key");
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-pkeyopt",
            "rsa_keygen_pubexp:3",
            "-out",
            e3_key.to_str().unwrap(),
        ],
    );
    let e3 = csr_for_key(d, "e3", &e3_key, CSR_SUBJECT, &[]);
    let explicit_key = d.join("explicit.key");
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-param_enc",
            "explicit",
            "-genkey",
            "-noout",
            "-out",
            explicit_key.to_str().unwrap(),
        ],
    );
    let explicit = csr_for_key(d, "explicit", &explicit_key, CSR_SUBJECT, &[]);
    let ed_key = d.join("ed25519.key");
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            ed_key.to_str().unwrap(),
        ],
    );
    let ed = csr_for_key(d, "ed25519", &ed_key, CSR_SUBJECT, &[]);
    let ca_true = csr_with(
        d,
        "catrue",
        KeyType::P256,
        &["-addext", "basicConstraints=critical,CA:TRUE"],
    );
    // A valid CSR over 16 KiB (a huge extension), not just padding.
    let huge = format!("nsComment={}", "A".repeat(17 * 1024));
    let oversized = csr_with(d, "oversized", KeyType::P256, &["-addext", &huge]);
    assert!(std::fs::metadata(&oversized.csr).unwrap().len() > 16 * 1024);
    let mut garbage_bytes = vec![0x30, 0x82, 0x02, 0x00];
    garbage_bytes.extend(junk(512, 0x9e37_79b9_7f4a_7c15));
    let garbage = write(&ca, "garbage.bin", &garbage_bytes);
    let pem_text = std::fs::read(&good.csr).unwrap();
    let two = write(&ca, "two.pem", &[pem_text.clone(), pem_text].concat());
    let empty = write(&ca, "empty.csr", b"");
    // The key's PEM instead of a CSR.
    let not_csr = good.key.clone();

    let cases: Vec<(String, (PathBuf, Vec<&str>))> = vec![
        (
            "bad signature (DER, flipped bit)".into(),
            (bad_sig, vec!["signature"]),
        ),
        ("RSA-1024".into(), (rsa1024, vec!["1024", "too small"])),
        ("RSA exponent 3".into(), (e3, vec!["exponent"])),
        (
            "explicit EC parameters".into(),
            (explicit, vec!["explicit", "named curve"]),
        ),
        (
            "Ed25519 key".into(),
            (
                ed,
                vec![
                    "ed25519",
                    "1.3.101.112",
                    "algorithm",
                    "not accepted",
                    "unsupported",
                ],
            ),
        ),
        (
            "basicConstraints CA:TRUE".into(),
            (
                ca_true.csr,
                vec!["ca=true", "ca:true", "ca certificate", "basicconstraints"],
            ),
        ),
        (
            "oversized CSR (> 16 KiB)".into(),
            (oversized.csr, vec!["too large", "size", "limit", "kib"]),
        ),
        (
            "garbage bytes".into(),
            (
                garbage,
                vec!["malformed", "parse", "decode", "invalid", "not a"],
            ),
        ),
        (
            "two PEM blocks".into(),
            (two, vec!["pem block", "blocks", "exactly one"]),
        ),
        (
            "empty file".into(),
            (empty, vec!["empty", "malformed", "no pem", "not a"]),
        ),
        (
            "a private key instead of a CSR".into(),
            (
                not_csr,
                vec!["certificate request", "pem block", "not a", "expected"],
            ),
        ),
    ];
    run_all(cases, |ctx, (csr, keywords)| {
        refused(&ca, &application, &csr, &keywords, ctx, true)
    });
    ca.audit_ok();
}

#[test]
fn hostile_requests_are_refused_and_csr_content_is_ignored() {
    let ca = Ca::init();
    let good = ca.csr("good", KeyType::P256);
    let srv = server();
    let pers = personal();
    let org = organisational();
    let change = |app: &serde_json::Value, fields: serde_json::Value| with(app.clone(), fields);

    type Case = (serde_json::Value, Vec<&'static str>);
    let cases: Vec<(String, Case)> = vec![
        (
            "server: wildcard DNS name".into(),
            (
                change(
                    &srv.application,
                    serde_json::json!({"dns_names": ["*.example.hk"]}),
                ),
                vec!["wildcard"],
            ),
        ),
        (
            "server: no DNS name".into(),
            (
                change(&srv.application, serde_json::json!({"dns_names": []})),
                vec!["dns"],
            ),
        ),
        (
            "server: no organisation".into(),
            (
                change(&srv.application, serde_json::json!({"organization": ""})),
                vec!["org"],
            ),
        ),
        (
            "personal: no e-mail".into(),
            (
                change(&pers.application, serde_json::json!({"email": ""})),
                vec!["e-mail", "email"],
            ),
        ),
        (
            "personal: no given name or surname".into(),
            (
                change(
                    &pers.application,
                    serde_json::json!({"surname": "", "given_name": ""}),
                ),
                vec!["given", "surname", "personal name"],
            ),
        ),
        (
            "organisational: no business registration number".into(),
            (
                change(&org.application, serde_json::json!({"org_id": ""})),
                vec!["registration", "org_id", "organizationidentifier"],
            ),
        ),
        (
            "unknown profile".into(),
            (
                change(
                    &pers.application,
                    serde_json::json!({"profile": "wildcard-profile"}),
                ),
                vec!["wildcard-profile", "profile"],
            ),
        ),
    ];
    run_all(cases, |ctx, (application, keywords)| {
        refused(&ca, &application, &good.csr, &keywords, ctx, false)
    });

    // A CSR with its own subject and SAN requests is issued, but with only the approved names.
    let d = ca.work.path();
    let evil_subject =
        "/CN=evil.example/O=Evil Corp/OU=Evil Unit/L=Evil Town/emailAddress=evil@evil.example";
    let evil_sans =
        "subjectAltName=DNS:evil.example,DNS:www.evil.example,email:evil@evil.example,IP:10.6.6.6";
    let cases: Vec<(String, ProfileCase)> = vec![
        ("server with evil CSR".into(), srv),
        ("personal with evil CSR".into(), pers),
    ];
    run_all(cases, |ctx, case| {
        let key = d.join(format!("{}-evil.key", case.profile));
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                key.to_str().unwrap(),
            ],
        );
        let csr = csr_for_key(
            d,
            &format!("{}-evil", case.profile),
            &key,
            evil_subject,
            &["-addext", evil_sans],
        );
        let issued = crate::apply::issue(&ca, &case, &csr, ctx);
        let cert = issued.cert.parse();
        let mut want: Vec<String> = case.sans.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(
            san_list(&cert),
            want,
            "[{ctx}] SANs are not exactly the approved names"
        );
        let attrs = name_attrs(cert.subject());
        assert!(
            !attrs.iter().any(|(_, v)| v.to_lowercase().contains("evil")),
            "[{ctx}] the CSR's subject leaked into the certificate: {attrs:?}"
        );
        assert!(
            !attrs.iter().any(|(o, _)| o == OID_OU),
            "[{ctx}] OU from the CSR: {attrs:?}"
        );
        let root = ca.export(root_for(case.ca));
        let issuing = ca.export(case.ca);
        openssl_verify(
            &root.path,
            &[&issuing.path],
            &issued.cert.path,
            case.purpose,
            ctx,
        );
        pkilint(
            case.linter,
            &["-t", case.lint_type],
            &[&issued.cert.path],
            ctx,
        );
    });

    assert_eq!(ca.issued_count(), 2);
    ca.audit_ok();
}

/// A key two officers blocked as compromised (by public key, or by a certificate that carries
/// it) is never certified again; the refusal names it, leaves no certificate, and is audited.
#[test]
fn blocked_keys_are_refused() {
    let ca = Ca::init();
    let case = personal();
    let first = ca.csr("compromised", KeyType::P256);
    crate::apply::issue(&ca, &case, &first.csr, "before blocking");
    let pubkey = ca.file("compromised.pub.pem");
    openssl(
        ca.data_dir(),
        &[
            "pkey",
            "-in",
            first.key.to_str().unwrap(),
            "-pubout",
            "-out",
            pubkey.to_str().unwrap(),
        ],
    );
    // Two officers block it (issue 14): by its public key...
    let done = crate::apply::officers_decide(
        &ca,
        serde_json::json!({
            "kind": "key_block", "reason": "reported compromised",
            "public_key": std::fs::read_to_string(&pubkey).unwrap(),
        }),
    );
    assert!(done.to_string().contains("block"), "{done}");
    refused(
        &ca,
        &case.application,
        &first.csr,
        &["blocked"],
        "blocked by public key",
        true,
    );

    // ... or by a certificate that carries it.
    let second = ca.csr("compromised-2", KeyType::Rsa2048);
    let carrier = crate::apply::issue(&ca, &case, &second.csr, "an RSA key before blocking");
    crate::apply::officers_decide(
        &ca,
        serde_json::json!({"kind": "key_block", "reason": "key compromise", "serial": carrier.serial}),
    );
    refused(
        &ca,
        &case.application,
        &second.csr,
        &["blocked"],
        "blocked by a certificate's serial",
        true,
    );

    // Another key still works; garbage is refused without blocking anything.
    crate::common::issue_and_verify_personal(&ca, "clean", "unblocked key");
    let (st, e) = crate::apply::officers_propose(
        &ca,
        serde_json::json!({
            "kind": "key_block", "reason": "x",
            "public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        }),
    );
    assert_eq!(st, 422, "garbage public key: {e}");
    let blocked: usize = ca
        .sql_query("SELECT COUNT(*) FROM blocked_keys")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(blocked, 2, "blocked_keys rows");
    let events: usize = ca
        .sql_query("SELECT COUNT(*) FROM audit_log WHERE kind = 'key.blocked'")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(events, 2, "key.blocked audit events");
    ca.audit_ok();
}

/// Debian weak keys (CVE-2008-0166; TLS BR §6.1.1.3(5), issue 12 defect 2): `ecert keys
/// debian-list build` turns a tree of weak keys into openssl-vulnkey lists whose line for the
/// fixture is what `openssl rsa -modulus | openssl sha1` gives; with the lists configured a CSR
/// for the key is refused by name and audited; `config check` warns of a size without a list
/// and `--production` refuses until every accepted size has one.
#[test]
fn debian_weak_keys_are_refused() {
    let ca = Ca::new();
    let d = ca.work.path().to_path_buf();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ca-core/src/testdata/debian-weak-rsa2048-pid1000.key");
    let tree = d.join("weak-keys/rsa/2048/x86_64");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::copy(&fixture, tree.join("1000.key")).unwrap();
    std::fs::write(d.join("weak-keys/README.md"), "the published weak keys\n").unwrap();
    let lists = d.join("lists");
    let built = ca.ecert_ok(&[
        "keys",
        "debian-list",
        "build",
        d.join("weak-keys").to_str().unwrap(),
        "--out",
        lists.to_str().unwrap(),
    ]);
    assert!(built.contains("1 weak RSA-2048 keys"), "{built}");

    // The outside judge of the fingerprint: openssl's own modulus line and SHA-1.
    let modulus = openssl(
        &d,
        &[
            "rsa",
            "-noout",
            "-modulus",
            "-in",
            fixture.to_str().unwrap(),
        ],
    )
    .stdout;
    let line_file = write(&ca, "modulus.txt", &modulus);
    let sha1 = String::from_utf8(openssl(&d, &["sha1", "-r", line_file.to_str().unwrap()]).stdout)
        .unwrap();
    let fp = &sha1.split_whitespace().next().unwrap()[20..];
    let list = std::fs::read_to_string(lists.join("blacklist.RSA-2048")).unwrap();
    assert!(list.lines().any(|l| l == fp), "{fp} not in\n{list}");

    let config = format!(
        "{CONFIG_TOML}[keys]\ndebian_weak_dir = \"{}\"\n[hsm]\npii_pin = \"activation\"\n",
        lists.display()
    );
    std::fs::write(ca.data_dir().join("ecert.toml"), &config).unwrap();
    let o = ca.ecert(&["config", "check"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("blacklist.RSA-3072") && stderr.contains("blacklist.RSA-4096"),
        "config check does not warn of the sizes without a list: {stderr}"
    );
    let err = ca.ecert_err(&["config", "check", "--production"]);
    assert!(
        err.contains("blacklist.RSA-3072") && err.contains("not ready for production"),
        "{err}"
    );
    for bits in [3072, 4096] {
        // (An empty list is refused as an incomplete installation: one stand-in line.)
        std::fs::write(
            lists.join(format!("blacklist.RSA-{bits}")),
            "# a stand-in: no keys of this size in the test tree\n00000000000000000000\n",
        )
        .unwrap();
    }
    // Every size has its list now: --production no longer names one. (It still refuses this
    // installation for its SoftHSM2 token and the PIN in its data directory: config.rs.)
    let err = ca.ecert_err(&["config", "check", "--production"]);
    assert!(!err.contains("blacklist"), "{err}");
    assert!(err.contains("SoftHSM2"), "{err}");

    // The installation itself keeps the embedded custody (its pii PIN in the data directory),
    // so the harness's counter can enter applications without a data owner.
    std::fs::write(
        ca.data_dir().join("ecert.toml"),
        config.replace("[hsm]\npii_pin = \"activation\"\n", ""),
    )
    .unwrap();
    ca.ecert_ok(&["init"]);
    let csr = csr_for_key(&d, "debian-weak", &fixture, CSR_SUBJECT, &[]);
    refused(
        &ca,
        &personal().application,
        &csr,
        &["Debian weak key", "CVE-2008-0166"],
        "Debian weak RSA-2048 key",
        true,
    );
    // An ordinary RSA-2048 key is still issued.
    let ordinary = ca.csr("ordinary", KeyType::Rsa2048);
    let p = personal();
    crate::apply::issue(
        &ca,
        &p,
        &ordinary.csr,
        "an ordinary RSA key beside the lists",
    );

    // A malformed list fails closed: the signer does not open (no issuance without the check).
    std::fs::write(lists.join("blacklist.RSA-4096"), "zz\n").unwrap();
    let err = ca.ecert_err(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(err.contains("blacklist.RSA-4096:1"), "{err}");
}
