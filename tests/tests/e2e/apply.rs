//! Certificates the only way ecert makes them (issue 14): an application entered through the
//! JSON API by a counter clerk, its mailbox confirmed by the applicant from the code the RA
//! mailed (read from the installation's SMTP listener), the identity — and for an organisation
//! its registration, for a server its domains by DNS TXT record on the installation's DNS
//! server — checked at the counter, the fee recorded, and approved by someone else: a
//! supervisor (two, where the profile needs dual control). Every e2e test that needs a
//! certificate gets it here, so the suite keeps its breadth on the product path.

use std::path::Path;

use ecert_e2e::*;

use crate::common::ProfileCase;
use crate::ra::{admin_token, api, email_code, form, page, set_cookie, staff_token, with_service};
use crate::serve::http;

/// The outlet, the clerk who enters and checks, and the two supervisors who approve.
const OUTLET: &str = "gpo";
const CLERK: &str = "e2e-clerk";
const APPROVERS: [&str; 2] = ["e2e-super1", "e2e-super2"];

/// Where an attempt stopped: the step, the HTTP status and the service's answer.
#[derive(Debug)]
pub struct Refusal {
    pub step: &'static str,
    pub status: u16,
    pub body: serde_json::Value,
}

impl Refusal {
    /// The service's error message.
    pub fn message(&self) -> String {
        self.body["message"]
            .as_str()
            .map_or_else(|| self.body.to_string(), str::to_string)
    }
}

/// The installation's `[dcv]` for the harness's server applications: the test DNS server
/// ([`Ca::dns`], given to every `serve` as `ECERT_DNS_RESOLVER`) answers unsigned, so DNSSEC is
/// not enforced (it is against a real signed zone in ca-core's `dcv` tests); five remote
/// perspectives in three RIRs ask it too (TLS BR §3.2.2.9: no server certificate without
/// corroboration). Written, and the perspectives started, before the service starts; a test
/// with its own `[dcv]` keeps it.
pub fn dcv_config(ca: &Ca) {
    let path = ca.data_dir().join("ecert.toml");
    if std::fs::read_to_string(&path).unwrap().contains("[dcv]") {
        return;
    }
    assert!(
        !ca.data_dir().join(".e2e-serving").exists(),
        "a server application needs the harness's [dcv] before the service starts: call apply::dcv_config first"
    );
    let tls = crate::ra::perspective_tls(ca);
    ca.append_config(
        "[dcv]\ndnssec = \"off\"\ncaa_identities = [\"pki.example.hk\"]\ntimeout_seconds = 2",
    );
    for (i, rir) in ["APNIC", "RIPE", "ARIN", "ARIN", "RIPE"]
        .into_iter()
        .enumerate()
    {
        let p = crate::ra::start_perspective(ca, &tls, &ca.dns().addr);
        ca.append_config(&format!(
            "[[dcv.perspectives]]\nname = \"p{i}\"\nurl = \"https://{}\"\ntoken_file = {:?}\nca_file = {:?}\nrir = \"{rir}\"",
            p.1, tls.token, tls.ca
        ));
        ca.keep(p);
    }
}

/// A staff member's token for the counter work (made once per installation).
fn token(ca: &Ca, user: &str) -> String {
    let file = ca.file(&format!("e2e-counter-{user}.token"));
    if let Ok(t) = std::fs::read_to_string(&file) {
        return t;
    }
    let t = staff_token(ca, user, "read,enter,decide", 1);
    std::fs::write(&file, &t).unwrap();
    t
}

/// The harness's outlet, added by its first admin unless it exists.
fn outlet_exists(ca: &Ca, addr: &str) {
    let admin = admin_token(ca, addr, 1);
    let (st, v) = api(
        addr,
        "POST",
        "/api/v1/outlets",
        &admin,
        Some(
            serde_json::json!({"id": OUTLET, "name_en": "General Post Office", "name_zh": "郵政總局"}),
        ),
    );
    assert!(st == 201 || st == 409, "adding the outlet: {st} {v}");
}

/// The outlet and its counter staff, added by the harness's admins (once per installation).
fn counter_staff(ca: &Ca, addr: &str) {
    let ready = ca.file("e2e-counter.ready");
    if ready.exists() {
        return;
    }
    outlet_exists(ca, addr);
    crate::ra::add_staff(ca, CLERK, OUTLET, "clerk");
    for user in APPROVERS {
        crate::ra::add_staff(ca, user, OUTLET, "supervisor");
    }
    std::fs::write(ready, "").unwrap();
}

/// The applicant of `reference` confirms `email` on their tracking page with the code the RA
/// mailed to it (read from `smtp`).
pub fn confirm_mailbox(smtp: &SmtpServer, addr: &str, email: &str, reference: &str, secret: &str) {
    let code = email_code(&smtp.wait_for(email, reference));
    let r = page(addr, "/track", "");
    let csrf = set_cookie(&r, "ecert_csrf").unwrap();
    let r = form(
        addr,
        "/track/confirm",
        &format!("ecert_csrf={csrf}"),
        &[
            ("csrf", &csrf),
            ("reference", reference),
            ("secret", secret),
            ("code", &code),
        ],
    );
    assert_eq!(r.status, 200, "confirming {email}");
}

/// The harness's outlet and counter staff exist, with their tokens (made through the service
/// if not yet: a sign-in checks a TOTP code against the service's clock).
pub fn counter_ready(ca: &Ca) {
    with_service(ca, |addr| {
        counter_staff(ca, addr);
        for user in [CLERK].into_iter().chain(APPROVERS) {
            token(ca, user);
        }
    });
}

/// An application that was issued: its certificate, and what its applicant was given.
#[derive(Debug, Clone)]
pub struct Applied {
    pub issued: Issued,
    pub reference: String,
    /// The tracking secret.
    pub secret: String,
}

/// An application entered, confirmed, checked and approved: the certificate, or where and why
/// the service refused. `application` is the API's JSON without the CSR.
pub fn attempt(
    ca: &Ca,
    application: &serde_json::Value,
    locality: Option<&str>,
    csr: &Path,
) -> Result<Applied, Refusal> {
    let profile = application["profile"].as_str().unwrap().to_string();
    if profile == "server" {
        dcv_config(ca);
    }
    with_service(ca, |addr| {
        counter_staff(ca, addr);
        let clerk = token(ca, CLERK);
        let call = |step: &'static str, who: &str, method: &str, path: &str, body| {
            let (status, v) = api(addr, method, path, who, body);
            if (200..300).contains(&status) {
                Ok(v)
            } else {
                Err(Refusal {
                    step,
                    status,
                    body: v,
                })
            }
        };
        let mut body = application.clone();
        body["csr"] = csr_field(&std::fs::read(csr).unwrap()).into();
        let created = call("entry", &clerk, "POST", "/api/v1/applications", Some(body))?;
        let id = created["id"].as_str().unwrap().to_string();
        let reference = created["reference"].as_str().unwrap().to_string();
        let secret = created["tracking_secret"].as_str().unwrap().to_string();
        let path = format!("/api/v1/applications/{id}");

        // The applicant confirms the mailbox with the code the RA mailed.
        let email = application["email"].as_str().unwrap();
        confirm_mailbox(ca.smtp(), addr, email, &reference, &secret);

        // At the counter.
        let view = call("view", &clerk, "GET", &path, None)?;
        let version = view["version"].as_i64().unwrap();
        call(
            "identity",
            &clerk,
            "POST",
            &format!("{path}/identity"),
            Some(serde_json::json!({
                "version": version, "hkid": application["hkid"], "card_sighted": true,
                "guardian_consent": profile == "personal-minor",
            })),
        )?;
        if !profile.starts_with("personal") {
            call(
                "organisation",
                &clerk,
                "POST",
                &format!("{path}/organisation"),
                Some(serde_json::json!({
                    "version": version,
                    "org_id": application["org_id"].as_str().unwrap_or_default(),
                    "documents_sighted": true, "locality": locality,
                })),
            )?;
        }
        call(
            "fee",
            &clerk,
            "POST",
            &format!("{path}/fee"),
            Some(
                serde_json::json!({"amount_cents": view["fee_due_cents"], "method": "cash", "receipt": format!("E2E-{reference}")}),
            ),
        )?;
        if profile == "server" {
            let v = call("domains", &clerk, "POST", &format!("{path}/domains"), None)?;
            let value = v["random_value"].as_str().unwrap();
            for d in application["dns_names"].as_array().unwrap() {
                ca.dns().set_txt(
                    &format!("_ecert-challenge.{}", d.as_str().unwrap()),
                    &[value],
                );
            }
            let v = call("domains", &clerk, "POST", &format!("{path}/domains"), None)?;
            let all = v["domains"].as_array().unwrap();
            assert!(
                all.iter().all(|d| d["validated"] == true),
                "domain validation: {v}"
            );
        }

        // Approved by supervisors, never the clerk who entered and checked it.
        let mut decided = serde_json::Value::Null;
        for user in APPROVERS {
            decided = call(
                "approval",
                &token(ca, user),
                "POST",
                &format!("{path}/decision"),
                Some(serde_json::json!({"version": version, "decision": "approve"})),
            )?;
            if decided["outcome"] != "awaiting_second_approval" {
                break;
            }
        }
        assert_eq!(decided["outcome"], "issued", "{decided}");
        let serial = decided["serial"].as_str().unwrap().to_string();
        let r = http(
            addr,
            "GET",
            &format!("{path}/certificate"),
            &[("Authorization", &format!("Bearer {}", token(ca, APPROVERS[0])))],
            b"",
        );
        assert_eq!(r.status, 200, "the certificate of {reference}");
        let file = ca.file(&format!("issued-{serial}.pem"));
        std::fs::write(&file, &r.body).unwrap();
        Ok(Applied {
            issued: Issued {
                serial,
                ca: String::new(),
                cert: CertFile::read(&file),
            },
            reference,
            secret,
        })
    })
    .map(|mut applied| {
        let issuer = applied.issued.cert.parse().issuer().as_raw().to_vec();
        // Every issuing CA `ca list` names (a rollover's successor too).
        applied.issued.ca = ca
            .ecert_ok(&["ca", "list"])
            .lines()
            .filter_map(|l| l.split('\t').next())
            .filter(|name| !name.is_empty() && !name.contains("root"))
            .find(|name| ca.export(name).parse().subject().as_raw() == issuer.as_slice())
            .unwrap_or("unknown")
            .to_string();
        applied
    })
}

/// The refusal of an application that must not be issued (`what` names it in the panic if it
/// is).
pub fn refusal(ca: &Ca, application: &serde_json::Value, csr: &Path, what: &str) -> Refusal {
    match attempt(ca, application, None, csr) {
        Ok(a) => panic!("{what} was issued: {}", a.issued.serial),
        Err(r) => r,
    }
}

/// [`issue`], with the application's reference and tracking secret.
pub fn apply(ca: &Ca, case: &ProfileCase, csr: &Path, ctx: &str) -> Applied {
    attempt(ca, &case.application, case.locality, csr)
        .unwrap_or_else(|r| panic!("[{ctx}] {} refused: {} {}", r.step, r.status, r.body))
}

/// A CSR file as the API's `csr` field: PEM as it is, anything else (DER, junk) in base64.
fn csr_field(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.contains("-----BEGIN") || text.is_empty() => text.to_string(),
        _ => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(bytes)
        }
    }
}

/// A certificate for `case` with the key of `csr`, through the application path; panics
/// with the step and the service's answer if any step is refused.
pub fn issue(ca: &Ca, case: &ProfileCase, csr: &Path, ctx: &str) -> Issued {
    apply(ca, case, csr, ctx).issued
}

/// The harness's officers: the first revokes through the service; the two together take the
/// decisions two officers take.
const OFFICERS: [&str; 2] = ["e2e-officer1", "e2e-officer2"];

/// The officers exist (made through the service, each grant approved by the second admin),
/// with a signed-in session each (`staff_token` signs them in) and an integration token.
pub fn officers_ready(ca: &Ca) {
    if ca.file("e2e-officers.ready").exists() {
        return;
    }
    with_service(ca, |addr| {
        outlet_exists(ca, addr);
        for user in OFFICERS {
            crate::ra::add_staff(ca, user, OUTLET, "officer");
            token(ca, user);
        }
    });
    std::fs::write(ca.file("e2e-officers.ready"), "").unwrap();
}

/// `ecert revoke ARGS` as an officer through the running service (`ECERT_SERVER`,
/// `ECERT_TOKEN`): the command as an operator at the CA runs it.
pub fn revoke(ca: &Ca, args: &[&str]) -> std::process::Output {
    officers_ready(ca);
    let token = token(ca, OFFICERS[0]);
    with_service(ca, |addr| {
        let server = format!("http://{addr}");
        let mut all = vec!["revoke"];
        all.extend_from_slice(args);
        ca.ecert_env(&all, &[("ECERT_SERVER", &server), ("ECERT_TOKEN", &token)])
    })
}

/// [`revoke`], asserting success; its standard output.
pub fn revoke_ok(ca: &Ca, args: &[&str]) -> String {
    let o = revoke(ca, args);
    assert!(
        o.status.success(),
        "`ecert revoke {}`: {}",
        args.join(" "),
        show(&o)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// [`revoke`], asserting a clean failure; its standard error.
pub fn revoke_err(ca: &Ca, args: &[&str]) -> String {
    let o = revoke(ca, args);
    check_clean_error(&o).unwrap_or_else(|e| panic!("`ecert revoke {}`: {e}", args.join(" ")))
}

/// An officer's signed-in session token.
pub(crate) fn officer_session(ca: &Ca, user: &str) -> String {
    std::fs::read_to_string(ca.file(&format!("e2e-staff-{user}.session"))).unwrap()
}

/// The first officer proposes `proposal` (the API's JSON): the answer's status and body.
pub fn officers_propose(ca: &Ca, proposal: serde_json::Value) -> (u16, serde_json::Value) {
    officers_ready(ca);
    with_service(ca, |addr| {
        api(
            addr,
            "POST",
            "/api/v1/officer-proposals",
            &officer_session(ca, OFFICERS[0]),
            Some(proposal),
        )
    })
}

/// A decision two officers take: the first proposes `proposal` (the API's JSON; asserted
/// accepted), the second confirms; the confirmation's status and answer.
pub fn officers_confirm(ca: &Ca, proposal: serde_json::Value) -> (u16, serde_json::Value) {
    let (st, p) = officers_propose(ca, proposal);
    assert_eq!(st, 201, "{p}");
    with_service(ca, |addr| {
        let path = format!(
            "/api/v1/officer-proposals/{}/confirm",
            p["id"].as_str().unwrap()
        );
        api(addr, "POST", &path, &officer_session(ca, OFFICERS[1]), None)
    })
}

/// [`officers_confirm`], asserting it was carried out; the answer.
pub fn officers_decide(ca: &Ca, proposal: serde_json::Value) -> serde_json::Value {
    let (st, done) = officers_confirm(ca, proposal);
    assert_eq!(st, 200, "{done}");
    assert_eq!(done["state"], "done", "{done}");
    done
}
