//! Custody of the personal-data keys (issue 14): the `pii` token apart from the `ca` token,
//! and the migration of data directories made before it existed.

use ecert_e2e::{Ca, Db, SmtpServer};

use crate::ra::{add_gpo, add_staff, api, serve_ra};

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
    add_gpo(&ca);
    let totp_clerk = add_staff(&ca, "clerk1", "gpo", "clerk");
    let totp_officer = add_staff(&ca, "officer1", "gpo", "officer");
    let token = ca
        .ecert_ok(&[
            "staff",
            "token",
            "--username",
            "clerk1",
            "--days",
            "1",
            "--scopes",
            "read,enter",
        ])
        .trim()
        .to_string();
    let p = crate::common::personal();
    let leaf = ca.issue(
        p.profile,
        &ca.csr("reported", ecert_e2e::KeyType::P256).csr,
        &p.args,
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
        Some(serde_json::json!({
            "profile": "personal", "surname": "Wong", "given_name": "Siu Ming",
            "email": "sm.wong@example.hk", "hkid": FIXTURE_HKID, "date_of_birth": "1985-06-01",
            "phone": "+852 2921 2222", "address": "2 Connaught Place, Central",
            "consent_notices": true, "revocation_secret": "my revocation words", "csr": csr,
        })),
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
            "--exclude=*.lock",
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
