//! Custody of the personal-data keys (issue 14): the `pii` token apart from the `ca` token,
//! and the migration of data directories made before it existed.

use std::path::{Path, PathBuf};

use ecert_e2e::{totp_now, Ca, Db, SmtpServer};

use crate::serve::healthz;

use crate::ra::{
    add_gpo, add_staff, api, form, page, serve_ra, set_cookie, text, wong_application,
};

/// What the legacy fixture holds, besides its data directory.
pub(crate) const FIXTURE_HKID: &str = "Z683451(6)";

/// Makes `tests/fixtures/legacy-custody/<engine>`: a data directory made by the code *before*
/// the `pii` token existed (personal-data keys in the one token, TOTP secrets and problem
/// reports sealed under the personal-data key). Kept as a generator so the fixture's making is
/// on record; it must be run with the binary of that version, so it is not part of the suite.
#[test]
#[ignore = "generates the legacy-custody fixture with the binary of the version before issue 14's custody; run by hand"]
fn make_legacy_custody_fixture() {
    let out =
        std::path::PathBuf::from(std::env::var("ECERT_FIXTURE_OUT").expect("ECERT_FIXTURE_OUT"));
    let ca = Ca::init();
    // That version's direct data-directory commands (since replaced by the service's API).
    let legacy = |args: &[&str], stdin: &str| -> String {
        let o = ca.ecert_stdin(args, stdin);
        assert!(o.status.success(), "{}", ecert_e2e::show(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    legacy(
        &[
            "outlet",
            "add",
            "gpo",
            "--en",
            "General Post Office",
            "--zh",
            "郵政總局",
        ],
        "",
    );
    let mut totps = Vec::new();
    for (user, role) in [("clerk1", "clerk"), ("officer1", "officer")] {
        let out = legacy(
            &[
                "staff",
                "add",
                "--username",
                user,
                "--name",
                "Clerk One",
                "--outlet",
                "gpo",
                "--role",
                role,
            ],
            "a counter password 123\n",
        );
        totps.push(
            out.lines()
                .find_map(|l| l.strip_prefix("totp_secret="))
                .unwrap()
                .to_string(),
        );
    }
    let (totp_clerk, totp_officer) = (totps[0].clone(), totps[1].clone());
    let token = legacy(
        &[
            "staff",
            "token",
            "--username",
            "clerk1",
            "--days",
            "1",
            "--scopes",
            "read,enter",
        ],
        "",
    )
    .trim()
    .to_string();
    let p = crate::common::personal();
    let leaf = crate::apply::issue(
        &ca,
        &p,
        &ca.csr("reported", ecert_e2e::KeyType::P256).csr,
        "a certificate to report",
    );
    let smtp = SmtpServer::start();
    let log = ca.file("serve.log");
    let server = serve_ra(&ca, &smtp.addr, &log);
    let csr = std::fs::read_to_string(ca.csr("applicant", ecert_e2e::KeyType::P256).csr).unwrap();
    let (st, created) = api(
        &server.1,
        "POST",
        "/api/v1/applications",
        &token,
        Some(wong_application(&csr, FIXTURE_HKID, "sm.wong@example.hk")),
    );
    assert_eq!(st, 201, "{created}");
    let r = crate::serve::http(
        &server.1,
        "POST",
        "/api/v1/problem-reports",
        &[("Content-Type", "application/json")],
        serde_json::json!({"kind": "misuse", "serial": leaf.serial, "description": "Fixture report text.", "reporter_email": "abuse@example.org"}).to_string().as_bytes(),
    );
    assert!(r.status < 300, "{}", String::from_utf8_lossy(&r.body));
    drop(server);
    let engine = match ca.db() {
        Db::Sqlite => "sqlite",
        Db::Postgres => "postgres",
    };
    let dest = out.join(engine);
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(ca.data_dir())
        .args([
            "--exclude=./signer.lock",
            "--exclude=serve.log",
            "--exclude=crl",
            "-czf",
        ])
        .arg(dest.join("data.tar.gz"))
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    if ca.db() == Db::Postgres {
        std::fs::write(dest.join("dump.sql"), ca.pg_dump_full()).unwrap();
    }
    std::fs::write(
        dest.join("fixture.json"),
        serde_json::json!({
            "application_id": created["id"],
            "reference": created["reference"],
            "clerk1_totp": totp_clerk,
            "officer1_totp": totp_officer,
            "made_by": env!("CARGO_PKG_VERSION"),
        })
        .to_string(),
    )
    .unwrap();
}

fn sign_in(addr: &str, username: &str, totp: &str) -> String {
    let r = page(addr, "/staff/login", "");
    let csrf = set_cookie(&r, "ecert_csrf").unwrap();
    let attempt = || {
        form(
            addr,
            "/staff/login",
            &format!("ecert_csrf={csrf}"),
            &[
                ("csrf", &csrf),
                ("username", username),
                ("password", "a counter password 123"),
                ("code", &totp_now(totp)),
            ],
        )
    };
    let mut r = attempt();
    if r.status == 401 {
        // The harness may have used this time step's code already (a code is good once):
        // once more with the next step's.
        let step = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 30
        };
        let now = step(std::time::SystemTime::now());
        while step(std::time::SystemTime::now()) == now {
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        r = attempt();
    }
    assert_eq!(r.status, 303, "{username} signs in: {}", text(&r));
    format!("ecert_staff={}", set_cookie(&r, "ecert_staff").unwrap())
}

fn staff_token(ca: &Ca, username: &str, scopes: &str) -> String {
    crate::ra::staff_token(ca, username, scopes, 1)
}

fn pkcs11_tool(ca: &Ca, args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new("pkcs11-tool");
    c.env("SOFTHSM2_CONF", ca.data_dir().join("hsm/softhsm2.conf"))
        .args(["--module", "/usr/lib/softhsm/libsofthsm2.so"])
        .args(args);
    ecert_e2e::run_with_timeout(c, std::time::Duration::from_secs(30), "pkcs11-tool")
}

/// Issue 14, custody: the data owner's PIN for the `pii` token is never in the data directory.
/// With the directory and both of the `ca` token's PINs — all an operator holds — no `ecert`
/// command and no `pkcs11-tool` call (user login, SO login, `--init-pin`) opens a personal
/// field or the blind-index key; the service still serves status, sign-in and the counter
/// functions that need no personal data, and answers 503 for the rest until the data owner
/// activates the keys (a wrong PIN is refused and audited).
#[test]
fn personal_data_keys_stay_in_the_data_owners_custody() {
    const PII_PIN: &str = "data-owner-pin-2718";
    const PII_SO_PIN: &str = "data-owner-so-pin-3141";
    let ca = Ca::new();
    ca.append_config("[hsm]\npii_pin = \"env:ECERT_TEST_PII_PIN\"\n");
    // The data owner is present at init (it makes the pii token with their PINs) ...
    let o = ca.ecert_env(
        &["init"],
        &[
            ("ECERT_TEST_PII_PIN", PII_PIN),
            ("ECERT_PII_SO_PIN", PII_SO_PIN),
        ],
    );
    assert!(o.status.success(), "{}", ecert_e2e::show(&o));
    // ... and neither PIN was written anywhere in the data directory.
    for entry in walk(ca.data_dir()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        for pin in [PII_PIN, PII_SO_PIN] {
            assert!(
                !bytes.windows(pin.len()).any(|w| w == pin.as_bytes()),
                "{pin} in {}",
                entry.display()
            );
        }
    }
    let ca_pin = std::fs::read_to_string(ca.data_dir().join("hsm/user.pin")).unwrap();
    let ca_so_pin = std::fs::read_to_string(ca.data_dir().join("hsm/so.pin")).unwrap();
    let (ca_pin, ca_so_pin) = (ca_pin.trim(), ca_so_pin.trim());
    // `config check` no longer says custody is not separated.
    let o = ca.ecert(&["config", "check"]);
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("custody is not separated"),
        "{}",
        ecert_e2e::show(&o)
    );

    add_gpo(&ca);
    let totp = add_staff(&ca, "clerk1", "gpo", "clerk");
    add_staff(&ca, "owner1", "gpo", "data_owner");
    let entering = staff_token(&ca, "clerk1", "read,enter");
    let activating = staff_token(&ca, "owner1", "activate");
    let smtp = SmtpServer::start();

    // Served with the data owner's PIN: an application with personal data goes in.
    let log = ca.file("serve-1.log");
    let server =
        crate::ra::serve_ra_with(&ca, &smtp.addr, &log, &[("ECERT_TEST_PII_PIN", PII_PIN)]);
    assert_eq!(healthz(&server.1)["personal_data"]["status"], "activated");
    let csr = std::fs::read_to_string(ca.csr("applicant", ecert_e2e::KeyType::P256).csr).unwrap();
    let (st, created) = api(
        &server.1,
        "POST",
        "/api/v1/applications",
        &entering,
        Some(wong_application(&csr, FIXTURE_HKID, "sm.wong@example.hk")),
    );
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    drop(server);

    // What the operator holds: the directory and the ca token's PINs. pkcs11-tool cannot log
    // in to the pii token with them, as user or as SO, nor set its user PIN.
    let pii_label = "pii";
    for args in [
        vec![
            "--token-label",
            pii_label,
            "--login",
            "--pin",
            ca_pin,
            "--list-objects",
        ],
        vec![
            "--token-label",
            pii_label,
            "--login",
            "--pin",
            ca_so_pin,
            "--list-objects",
        ],
        vec![
            "--token-label",
            pii_label,
            "--login",
            "--login-type",
            "so",
            "--so-pin",
            ca_so_pin,
            "--init-pin",
            "--new-pin",
            "operator-chosen-pin",
        ],
        vec![
            "--token-label",
            pii_label,
            "--login",
            "--login-type",
            "so",
            "--so-pin",
            ca_pin,
            "--init-pin",
            "--new-pin",
            "operator-chosen-pin",
        ],
    ] {
        let o = pkcs11_tool(&ca, &args);
        // Refused for the PIN (the token was found: the refusal is the custody, not a typo).
        assert!(
            !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("CKR_PIN_INCORRECT"),
            "pkcs11-tool {args:?}:\n{}",
            ecert_e2e::show(&o)
        );
    }
    // The ca token holds the staff-auth key and no personal-data key.
    let objects = ca.pkcs11_objects(&[]);
    assert!(objects.contains("ecert-staff-auth"), "{objects}");
    assert!(!objects.contains("ecert-pii-"), "{objects}");
    // The PINs of the ca token given as the pii PIN open nothing either.
    for wrong in [ca_pin, ca_so_pin] {
        let o = ca.ecert_env(&["custody", "status"], &[("ECERT_PII_PIN", wrong)]);
        assert!(o.status.success(), "{}", ecert_e2e::show(&o));
    }

    // Served without the PIN: status, sign-in and the public pages work; personal data is 503.
    let log = ca.file("serve-2.log");
    let server = crate::ra::serve_ra_with(&ca, &smtp.addr, &log, &[("ECERT_PII_PIN", ca_pin)]);
    let addr = server.1.clone();
    let h = healthz(&addr);
    assert_eq!(h["personal_data"]["status"], "not activated", "{h}");
    assert!(
        h["alarms"]
            .to_string()
            .contains("personal-data keys not activated"),
        "{h}"
    );
    assert_eq!(h["hsm"]["status"], "ok", "{h}");
    let (st, _, _) = crate::serve::get(&addr, "/ca/root.crt");
    assert_eq!(st, 200);
    let (_, _, metrics) = crate::serve::get(&addr, "/metrics");
    assert!(
        String::from_utf8_lossy(&metrics).contains("ecert_personal_data_activated 0"),
        "metrics"
    );
    let staff = sign_in(&addr, "clerk1", &totp);
    let r = page(&addr, &format!("/staff/applications/{id}"), &staff);
    assert_eq!(r.status, 503, "{}", text(&r));
    assert!(
        text(&r).contains("personal-data keys not activated"),
        "{}",
        text(&r)
    );
    let (st, e) = api(
        &addr,
        "GET",
        &format!("/api/v1/applications/{id}"),
        &entering,
        None,
    );
    assert_eq!(st, 503, "{e}");
    let csr2 = std::fs::read_to_string(ca.csr("second", ecert_e2e::KeyType::P256).csr).unwrap();
    let (st, e) = api(
        &addr,
        "POST",
        "/api/v1/applications",
        &entering,
        Some(serde_json::json!({
            "profile": "personal", "surname": "Lee", "given_name": "Ka Yan",
            "email": "ky.lee@example.hk", "hkid": "Y531242(4)", "date_of_birth": "1990-01-01",
            "phone": "+852 2921 2223", "address": "1 Pier Road",
            "consent_notices": true, "revocation_secret": "other words here", "csr": csr2,
        })),
    );
    assert_eq!(st, 503, "nothing half-made: {e}");
    // The wrong PIN, by the data owner: refused, audited; the wrong role: 403.
    let (st, e) = api(
        &addr,
        "POST",
        "/api/v1/personal-data/activate",
        &activating,
        Some(serde_json::json!({ "pin": ca_pin })),
    );
    assert_eq!(st, 422, "{e}");
    let (st, e) = api(
        &addr,
        "POST",
        "/api/v1/personal-data/activate",
        &entering,
        Some(serde_json::json!({ "pin": PII_PIN })),
    );
    assert_eq!(st, 403, "{e}");
    assert_eq!(healthz(&addr)["personal_data"]["status"], "not activated");
    // The data owner activates: the counter works again, without a restart.
    let (st, e) = api(
        &addr,
        "POST",
        "/api/v1/personal-data/activate",
        &activating,
        Some(serde_json::json!({ "pin": PII_PIN })),
    );
    assert_eq!(st, 200, "{e}");
    assert_eq!(healthz(&addr)["personal_data"]["status"], "activated");
    let r = page(&addr, &format!("/staff/applications/{id}"), &staff);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(text(&r).contains("Z******(6)"), "{}", text(&r));
    drop(server);
    let kinds = ca.sql_query("SELECT kind FROM audit_log WHERE kind LIKE 'pii.%' ORDER BY seq");
    assert!(
        kinds.contains("pii.activation_refused") && kinds.contains("pii.activated"),
        "{kinds}"
    );
    let details = ca.sql_query("SELECT detail FROM audit_log WHERE kind LIKE 'pii.%'");
    for pin in [PII_PIN, ca_pin] {
        assert!(
            !details.contains(pin),
            "a PIN in the audit trail: {details}"
        );
    }
    assert!(
        !std::fs::read_to_string(&log).unwrap().contains(PII_PIN),
        "the PIN in the log"
    );

    ca.audit_ok();

    // Whoever holds the database deletes the sealed data key, hoping the service makes a new
    // one (under keys they might hold): it refuses, and makes nothing.
    ca.tamper("DELETE FROM meta WHERE key = 'pii_data_key_v2'");
    let log = ca.file("serve-3.log");
    let server =
        crate::ra::serve_ra_with(&ca, &smtp.addr, &log, &[("ECERT_TEST_PII_PIN", PII_PIN)]);
    let h = healthz(&server.1);
    assert_eq!(h["personal_data"]["status"], "not activated", "{h}");
    let (st, e) = api(
        &server.1,
        "POST",
        "/api/v1/personal-data/activate",
        &activating,
        Some(serde_json::json!({ "pin": PII_PIN })),
    );
    assert_eq!(st, 409, "{e}");
    assert!(e.to_string().contains("no new key is made"), "{e}");
    drop(server);
    assert_eq!(
        ca.sql_query("SELECT COUNT(*) FROM meta WHERE key = 'pii_data_key_v2'")
            .trim(),
        "0"
    );
    let made = ca.sql_query("SELECT COUNT(*) FROM audit_log WHERE kind = 'pii.data_key_created'");
    assert_eq!(made.trim(), "1", "only init's");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Issue 14, custody migration: a data directory made by the code before the pii token
/// existed (`tests/fixtures/legacy-custody`, made by [`make_legacy_custody_fixture`]) is
/// refused until `ecert custody migrate` runs; the migration re-seals the data key under the
/// new token, recomputes the blind index, re-seals TOTP secrets and problem reports under the
/// staff-auth key and destroys the old keys; a second run changes nothing; afterwards the
/// fixture's staff sign in with their old authenticators, the old application shows its masked
/// HKID, a new application with the same HKID is found as a duplicate, and the old problem
/// report reads as it was.
#[test]
fn a_legacy_data_directory_moves_to_separated_custody() {
    let ca = Ca::new();
    let meta = legacy_fixture(&ca);
    // Before the migration: refused by name.
    let e = ca.ecert_err(&["init"]);
    assert!(e.contains("ecert custody migrate"), "{e}");
    let objects = ca.pkcs11_objects(&[]);
    assert!(objects.contains("ecert-pii-seal"), "{objects}");
    legacy_custody_migrated(&ca, &meta);
}

/// Unpacks the legacy fixture (a data directory, and its PostgreSQL dump when the tests run on
/// PostgreSQL) into `ca`; returns what `fixture.json` says of it.
pub(crate) fn legacy_fixture(ca: &Ca) -> serde_json::Value {
    let engine = match ecert_e2e::test_db() {
        Db::Sqlite => "sqlite",
        Db::Postgres => "postgres",
    };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/legacy-custody")
        .join(engine);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("fixture.json")).unwrap()).unwrap();
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(ca.data_dir())
        .arg("-xzf")
        .arg(fixture.join("data.tar.gz"))
        .status()
        .unwrap();
    assert!(st.success());
    if ca.db() == Db::Postgres {
        let url = &ca.db_env.as_ref().unwrap().1;
        let o = std::process::Command::new("psql")
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-f"])
            .arg(fixture.join("dump.sql"))
            .arg(url)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", ecert_e2e::show(&o));
    }
    meta
}

fn legacy_custody_migrated(ca: &Ca, meta: &serde_json::Value) {
    let fields = match ca.db() {
        Db::Sqlite => "SELECT hex(hkid_sealed) || hex(dob_sealed) || hex(phone_sealed) || hex(address_sealed) FROM applications",
        Db::Postgres => "SELECT encode(hkid_sealed || dob_sealed || phone_sealed || address_sealed, 'hex') FROM applications",
    };
    let sealed_before = ca.sql_query(fields);
    assert!(sealed_before.trim().len() > 100, "{sealed_before}");
    let out = ca.ecert_ok(&["custody", "migrate"]);
    assert!(
        out.contains("2 TOTP secrets and 1 problem reports")
            && out.contains("the personal fields of 1 applications"),
        "{out}"
    );
    assert!(
        out.contains("old personal-data key objects destroyed"),
        "{out}"
    );
    // Every personal field was sealed again (under a new data key: the old one, sealed by a key
    // the operator's token held, is gone with that key).
    assert_ne!(
        ca.sql_query(fields),
        sealed_before,
        "the personal fields were not sealed again"
    );
    assert_eq!(
        ca.sql_query("SELECT COUNT(*) FROM meta WHERE key = 'pii_data_key_v1'")
            .trim(),
        "0"
    );
    let again = ca.ecert_ok(&["custody", "migrate"]);
    assert!(
        again.contains("separated already") && !again.contains("destroyed"),
        "{again}"
    );
    let objects = ca.pkcs11_objects(&[]);
    assert!(!objects.contains("ecert-pii-"), "{objects}");
    assert!(objects.contains("ecert-staff-auth"), "{objects}");
    let kinds = ca.sql_query("SELECT kind FROM audit_log WHERE kind LIKE 'custody.%' ORDER BY seq");
    assert_eq!(
        kinds.lines().collect::<Vec<_>>(),
        ["custody.migrated", "custody.old_keys_destroyed"],
        "{kinds}"
    );

    let smtp = SmtpServer::start();
    let log = ca.file("serve.log");
    let server = serve_ra(ca, &smtp.addr, &log);
    let addr = server.1.clone();
    assert_eq!(healthz(&addr)["personal_data"]["status"], "activated");
    // The old authenticators (TOTP secrets sealed again) still sign in.
    let clerk = sign_in(&addr, "clerk1", meta["clerk1_totp"].as_str().unwrap());
    let id = meta["application_id"].as_str().unwrap();
    // A second application with the fixture's HKID: the recomputed blind index finds the pair.
    // The harness knows the fixture's members by their authenticators.
    for who in ["clerk1", "officer1"] {
        std::fs::write(
            ca.file(&format!("e2e-staff-{who}.totp")),
            meta[format!("{who}_totp")].as_str().unwrap(),
        )
        .unwrap();
    }
    let entering = staff_token(ca, "clerk1", "read,enter");
    let csr = std::fs::read_to_string(ca.csr("again", ecert_e2e::KeyType::P256).csr).unwrap();
    let (st, e) = api(
        &addr,
        "POST",
        "/api/v1/applications",
        &entering,
        Some(wong_application(&csr, FIXTURE_HKID, "sm.wong2@example.hk")),
    );
    assert_eq!(st, 201, "{e}");
    let body = text(&page(&addr, &format!("/staff/applications/{id}"), &clerk));
    assert!(body.contains("Z******(6)"), "{body}");
    assert!(body.contains("<td id=\"same-hkid\">1</td>"), "{body}");
    // The problem report (sealed again under the staff-auth key) reads as it was.
    sign_in(&addr, "officer1", meta["officer1_totp"].as_str().unwrap());
    let officer = staff_token(ca, "officer1", "read");
    let (st, list) = api(&addr, "GET", "/api/v1/problem-reports", &officer, None);
    assert_eq!(st, 200, "{list}");
    assert!(list.to_string().contains("abuse@example.org"), "{list}");
    drop(server);
    ca.audit_ok();
}
