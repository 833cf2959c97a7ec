//! Bulk enrolment (issue 16, docs/BULK.md): an organisation verified at the counter proves its
//! mail domain by DNS, gets a batch token, submits a batch of staff rows (bad rows refused by
//! name, the good ones kept), two officers approve it, and the signer issues every good row
//! once — judged by openssl and pkilint; a resubmission issues nothing; a `kill -9` mid-batch
//! and a restart finish it with no duplicate and no gap.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ecert_e2e::*;

use crate::common::*;
use crate::ra::{api, with_service};
use crate::serve::http;

const DOMAIN: &str = "staff.example.hk";

/// `n` P-256 keys and their CSRs (PEM), made in one Python `cryptography` process.
pub(crate) fn csrs(ca: &Ca, n: usize) -> Vec<String> {
    let script = r#"
import json, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
out = []
for i in range(int(sys.argv[1])):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored %d" % i)])
    ).sign(key, hashes.SHA256())
    out.append(csr.public_bytes(serialization.Encoding.PEM).decode())
json.dump(out, sys.stdout)
"#;
    let mut c = std::process::Command::new(venv_python());
    c.args(["-c", script, &n.to_string()])
        .current_dir(ca.data_dir());
    let o = run_with_timeout(c, Duration::from_secs(120), "CSR generator");
    assert!(o.status.success(), "{}", show(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The organisation of an issued organisational application, registered by an officer, its
/// mail domain validated through DNS, and a batch token. Returns (organisation id, token).
pub(crate) fn organisation_ready(ca: &Ca, addr: &str) -> (String, String) {
    let officer = crate::apply::officer_session(ca, "e2e-officer1");
    let reference = crate::apply::apply(
        ca,
        &organisational(),
        &ca.csr("org-rep", KeyType::P256).csr,
        "the organisation's first certificate",
    )
    .reference;
    let application = ca
        .sql_query(&format!(
            "SELECT id FROM applications WHERE reference = '{reference}'"
        ))
        .trim()
        .to_string();
    // A clerk may not register organisations; an officer may, once.
    let (st, org) = api(
        addr,
        "POST",
        "/api/v1/organisations",
        &officer,
        Some(serde_json::json!({ "application_id": application })),
    );
    assert_eq!(st, 201, "{org}");
    let id = org["id"].as_str().unwrap().to_string();
    let (_, again) = api(
        addr,
        "POST",
        "/api/v1/organisations",
        &officer,
        Some(serde_json::json!({ "application_id": application })),
    );
    assert_eq!(again["id"], org["id"], "registered twice");
    // No batch token before a validated domain.
    let token_req =
        serde_json::json!({ "profiles": ["organisational", "organisational-role"], "days": 30 });
    let (st, e) = api(
        addr,
        "POST",
        &format!("/api/v1/organisations/{id}/batch-tokens"),
        &officer,
        Some(token_req.clone()),
    );
    assert_eq!(st, 409, "{e}");
    let (st, d) = api(
        addr,
        "POST",
        &format!("/api/v1/organisations/{id}/domains"),
        &officer,
        Some(serde_json::json!({ "domain": DOMAIN })),
    );
    assert_eq!(st, 200, "{d}");
    let validate = || {
        api(
            addr,
            "POST",
            &format!("/api/v1/organisations/{id}/domains/{DOMAIN}/validation"),
            &officer,
            None,
        )
    };
    // Not published yet: not validated, and why.
    let (st, v) = validate();
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["validated"], false, "{v}");
    assert!(v["problem"].as_str().unwrap().contains("TXT"), "{v}");
    ca.dns().set_txt(
        d["record"].as_str().unwrap(),
        &[d["value"].as_str().unwrap()],
    );
    let (_, v) = validate();
    assert_eq!(v["validated"], true, "{v}");
    let (st, t) = api(
        addr,
        "POST",
        &format!("/api/v1/organisations/{id}/batch-tokens"),
        &officer,
        Some(token_req),
    );
    assert_eq!(st, 201, "{t}");
    (id, t["token"].as_str().unwrap().to_string())
}

pub(crate) fn row(i: usize, csr: &str) -> serde_json::Value {
    serde_json::json!({
        "client_row_id": format!("hr-{i:05}"),
        "surname": "Chan",
        "given_name": format!("Staff {i}"),
        "email": format!("staff{i}@{DOMAIN}"),
        "csr": csr,
    })
}

/// One batch row per CSR, numbered from 0 ([`row`]).
pub(crate) fn rows_of(csrs: &[String]) -> Vec<serde_json::Value> {
    csrs.iter().enumerate().map(|(i, c)| row(i, c)).collect()
}

/// [`submit`], which must be accepted: the batch id.
pub(crate) fn submitted(addr: &str, token: &str, rows: &[serde_json::Value]) -> String {
    let (st, receipt) = submit(addr, token, rows);
    assert_eq!(st, 201, "{receipt}");
    receipt["id"].as_str().unwrap().to_string()
}

pub(crate) fn submit(
    addr: &str,
    token: &str,
    rows: &[serde_json::Value],
) -> (u16, serde_json::Value) {
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let r = http(
        addr,
        "POST",
        "/api/v1/batches",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Type", "application/x-ndjson"),
        ],
        body.as_bytes(),
    );
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null),
    )
}

pub(crate) fn status(addr: &str, token: &str, id: &str) -> serde_json::Value {
    let (st, s) = api(addr, "GET", &format!("/api/v1/batches/{id}"), token, None);
    assert_eq!(st, 200, "{s}");
    s
}

/// Waits (up to 60 s) until at least `at_least` rows of `batch` are issued.
pub(crate) fn wait_issued(addr: &str, token: &str, batch: &str, at_least: i64) {
    let until = Instant::now() + Duration::from_secs(60);
    while status(addr, token, batch)["counts"]["issued"]
        .as_i64()
        .unwrap_or(0)
        < at_least
    {
        assert!(Instant::now() < until, "nothing issued");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn wait_done(addr: &str, token: &str, id: &str, secs: u64) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status(addr, token, id);
        if s["state"] == "done" {
            return s;
        }
        assert!(
            Instant::now() < until,
            "batch not done after {secs} s: {}",
            s["counts"]
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_batch_of_staff_is_checked_approved_issued_once_and_judged() {
    let ca = Ca::init();
    crate::apply::dcv_config(&ca);
    crate::apply::officers_ready(&ca);
    let n = 1_000;
    let keys = csrs(&ca, n);
    let mut rows: Vec<serde_json::Value> =
        keys.iter().enumerate().map(|(i, c)| row(i, c)).collect();
    // Ten bad rows, each refused by name; the others are not held back by them.
    let bad: [(usize, &str, serde_json::Value); 10] = [
        (3, "email", serde_json::json!("staff3@elsewhere.hk")),
        (50, "email", serde_json::json!("staff50@example.hk")),
        (99, "surname", serde_json::json!("")),
        (150, "given_name", serde_json::json!("")),
        (200, "csr", serde_json::json!("not a CSR")),
        (250, "csr", serde_json::json!(bad_signature(&keys[250]))),
        (300, "profile", serde_json::json!("personal")),
        (350, "title", serde_json::json!("Director")),
        (400, "client_row_id", serde_json::json!("")),
        (450, "profile", serde_json::json!("server")),
    ];
    for (i, field, value) in &bad {
        rows[*i][*field] = value.clone();
    }
    with_service(&ca, |addr| {
        let (org, token) = organisation_ready(&ca, addr);
        // A staff token submits no batch; a batch token reads no other organisation's.
        let officer = crate::apply::officer_session(&ca, "e2e-officer1");
        let (st, e) = submit(addr, &officer, &rows[..1]);
        assert_eq!(st, 403, "{e}");
        let (st, _) = submit(addr, "ecb_not-a-token", &rows[..1]);
        assert_eq!(st, 401);

        let started = Instant::now();
        let (st, receipt) = submit(addr, &token, &rows);
        assert_eq!(st, 201, "{receipt}");
        eprintln!("1,000 rows checked in {:?}", started.elapsed());
        assert_eq!(receipt["rows"], n);
        assert_eq!(receipt["accepted"], n - bad.len(), "{receipt}");
        let errors = receipt["errors"].as_array().unwrap();
        assert_eq!(errors.len(), bad.len(), "{receipt}");
        for ((i, field, _), e) in bad.iter().zip(errors) {
            assert_eq!(e["row"], i + 1, "{e}");
            let msg = e["error"].as_str().unwrap();
            let named = match *field {
                "csr" => msg.to_lowercase().contains("csr") || msg.contains("PEM"),
                _ => msg.contains(field),
            };
            assert!(named, "row {i} ({field}): {msg}");
        }
        let batch = receipt["id"].as_str().unwrap().to_string();
        // Nothing is issued before two officers approve it.
        std::thread::sleep(Duration::from_secs(1));
        let s = status(addr, &token, &batch);
        assert_eq!(s["state"], "submitted", "{}", s["counts"]);
        assert_eq!(s["counts"]["pending"], n - bad.len());
        let done = crate::apply::officers_decide(
            &ca,
            serde_json::json!({ "kind": "batch_approval", "batch": batch }),
        );
        assert!(
            done["outcome"]
                .as_str()
                .unwrap()
                .contains("990 rows queued"),
            "{done}"
        );
        let approved = Instant::now();
        let s = wait_done(addr, &token, &batch, 300);
        eprintln!("990 certificates issued in {:?}", approved.elapsed());
        assert_eq!(s["counts"]["issued"], n - bad.len(), "{}", s["counts"]);
        assert_eq!(s["counts"]["invalid"], bad.len(), "{}", s["counts"]);
        // Issue 16: the rows' changes were group-committed as sets, none refused as a whole
        // (the set statements hold on this engine).
        let (_, _, metrics) = crate::serve::get(addr, "/metrics");
        let metrics = String::from_utf8_lossy(&metrics);
        assert!(
            metrics.contains("\necert_group_commit_retries_total 0\n"),
            "{metrics}"
        );
        // An officer follows it too; another organisation's token would not find it.
        assert_eq!(status(addr, &officer, &batch)["counts"], s["counts"]);

        // Every certificate: issued under the organisation, with its row's mailbox, verified by
        // openssl and linted by pkilint; its OCSP response ready.
        let r = http(
            addr,
            "GET",
            &format!("/api/v1/batches/{batch}/certificates"),
            &[("Authorization", &format!("Bearer {token}"))],
            b"",
        );
        assert_eq!(r.status, 200);
        let bundle = String::from_utf8(r.body).unwrap();
        let certs = pem_certs(bundle.as_bytes());
        assert_eq!(certs.len(), n - bad.len());
        let dir = ca.file("batch");
        std::fs::create_dir_all(&dir).unwrap();
        let mut files: Vec<PathBuf> = Vec::new();
        for (k, der) in certs.iter().enumerate() {
            let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
            let sans = san_list(&c);
            assert_eq!(sans.len(), 1, "{sans:?}");
            assert!(sans[0].ends_with(&format!("@{DOMAIN}")), "{sans:?}");
            let attrs = name_attrs(c.subject());
            assert!(
                attrs
                    .iter()
                    .any(|(o, v)| o == OID_O && v == "Example Trading Limited"),
                "{attrs:?}"
            );
            let f = dir.join(format!("{k}.pem"));
            std::fs::write(
                &f,
                format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    base64_lines(der)
                ),
            )
            .unwrap();
            files.push(f);
        }
        let root = ca.export("root");
        let issuing = ca.export("individual");
        for chunk in files.chunks(200) {
            let mut c = std::process::Command::new("openssl");
            c.args(["verify", "-x509_strict", "-purpose", "smimesign", "-CAfile"])
                .arg(&root.path)
                .arg("-untrusted")
                .arg(&issuing.path)
                .args(chunk);
            let o = run_with_timeout(c, Duration::from_secs(120), "openssl verify");
            assert!(o.status.success(), "{}", show(&o));
        }
        let linted = Instant::now();
        for f in &files {
            pkilint(
                "lint_cabf_smime_cert",
                &["-t", "SPONSORED-MULTIPURPOSE"],
                &[f],
                &f.display().to_string(),
            );
        }
        eprintln!("990 certificates linted in {:?}", linted.elapsed());
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = ca.sql_query(&format!(
                "SELECT COUNT(*) FROM ocsp_responses o JOIN batch_rows r ON r.serial = o.serial WHERE r.batch_id = '{batch}'"
            ));
            if ready.trim() == (n - bad.len()).to_string() {
                break;
            }
            assert!(Instant::now() < until, "OCSP responses ready: {ready}");
            std::thread::sleep(Duration::from_millis(250));
        }

        // The same batch again, through a front instance (its 600 KB pass the front's limit
        // for batches): every good row is a duplicate, nothing new is issued.
        let issued_before = ca.issued_count();
        let front = crate::serve::start_with(
            &ca,
            &["--no-signer", "--ra-upstream", &format!("http://{addr}")],
        );
        let (st, again) = submit(&front.1, &token, &rows);
        drop(front);
        assert_eq!(st, 201, "{again}");
        assert_eq!(again["accepted"], 0, "{again}");
        assert_eq!(again["duplicates"], n - bad.len(), "{again}");
        let again_id = again["id"].as_str().unwrap();
        assert_eq!(status(addr, &token, again_id)["state"], "done");
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(ca.issued_count(), issued_before, "a resubmission issued");

        // The command line, with the batch token: status, download, and a CSV batch followed
        // to the end with its progress bar.
        let url = format!("http://{addr}");
        let cli =
            |args: &[&str]| ca.ecert_env(args, &[("ECERT_SERVER", &url), ("ECERT_TOKEN", &token)]);
        let ok = |args: &[&str]| {
            let o = cli(args);
            assert!(o.status.success(), "{}", show(&o));
            (
                String::from_utf8(o.stdout).unwrap(),
                String::from_utf8(o.stderr).unwrap(),
            )
        };
        let (st, _) = ok(&["batch", "status", &batch]);
        assert!(st.contains(": done") && st.contains("issued\t990"), "{st}");
        assert!(
            st.contains("row 4 (hr-00003) invalid: email: not in a mail domain"),
            "{st}"
        );
        let out = ca.file("downloaded");
        let (dl, _) = ok(&["batch", "download", &batch, "--out", out.to_str().unwrap()]);
        assert!(dl.starts_with("990 certificates"), "{dl}");
        let one = CertFile::read(&out.join("hr-00000.pem"));
        assert!(san_list(&one.parse())[0].contains(&format!("staff0@{DOMAIN}")));
        let more = csrs(&ca, 3);
        let mut csv = String::from("client_row_id,surname,given_name,email,title,profile,csr\n");
        for (i, c) in more.iter().enumerate() {
            csv.push_str(&format!(
                "hr-2000{i},Ho,Mei {i},mei{i}@{DOMAIN},,,{}\n",
                c.trim().replace('\n', "\\n")
            ));
        }
        csv.push_str(&format!("hr-20009,Ho,Bad,bad@{DOMAIN},,,not a csr\n"));
        let file = ca.file("more.csv");
        std::fs::write(&file, csv).unwrap();
        // For another organisation: refused, nothing submitted.
        let o = cli(&[
            "batch",
            "submit",
            file.to_str().unwrap(),
            "--org",
            "another-org",
            "--no-wait",
        ]);
        let e = check_clean_error(&o).unwrap();
        assert!(e.contains("another organisation"), "{e}");
        let (sub, _) = ok(&[
            "batch",
            "submit",
            file.to_str().unwrap(),
            "--org",
            &org,
            "--no-wait",
        ]);
        assert!(
            sub.contains("3 accepted") && sub.contains("row 4 (hr-20009)"),
            "{sub}"
        );
        let id = sub
            .split_whitespace()
            .nth(1)
            .unwrap()
            .trim_end_matches(':')
            .to_string();
        crate::apply::officers_decide(
            &ca,
            serde_json::json!({ "kind": "batch_approval", "batch": id }),
        );
        let (st, progress) = ok(&["batch", "status", &id, "--wait"]);
        assert!(progress.contains("3/3 issued"), "{progress}");
        assert!(st.contains("issued\t3"), "{st}");

        // A leaked token is revoked by an officer (a batch token cannot): refused at once, by
        // the API and the command line; the organisation gets a new one.
        let tokens = format!("/api/v1/organisations/{org}/batch-tokens");
        let (st, _) = api(addr, "DELETE", &tokens, &token, None);
        assert_eq!(st, 401);
        let (st, r) = api(addr, "DELETE", &tokens, &officer, None);
        assert_eq!(
            (st, r["revoked"].as_u64(), r["batches_refused"].as_u64()),
            (200, Some(1), Some(0)),
            "{r}"
        );
        let (st, _) = api(
            addr,
            "GET",
            &format!("/api/v1/batches/{batch}"),
            &token,
            None,
        );
        assert_eq!(st, 401);
        assert!(!cli(&["batch", "status", &batch]).status.success());
        let (st, r) = api(
            addr,
            "POST",
            &tokens,
            &officer,
            Some(serde_json::json!({ "profiles": ["organisational"], "days": 30 })),
        );
        assert_eq!(st, 201, "{r}");
        status(addr, r["token"].as_str().unwrap(), &batch);
    });
    ca.audit_ok();
}

/// A signer killed (`kill -9`) while it issues a batch: the restarted one finishes the rest,
/// every row issued exactly once (one certificate per client row id), none missing.
#[test]
fn a_batch_survives_kill_9_with_no_duplicate_and_no_gap() {
    let ca = Ca::init();
    crate::apply::dcv_config(&ca);
    crate::apply::officers_ready(&ca);
    let n = 400;
    let keys = csrs(&ca, n);
    let rows = rows_of(&keys);
    let mut server = crate::serve::start(&ca);
    let addr = server.1.clone();
    let (_, token) = organisation_ready(&ca, &addr);
    let batch = submitted(&addr, &token, &rows);
    // Approved from the command line: `ecert proposal propose`, then another officer confirms.
    let server_url = format!("http://{addr}");
    let as_officer = |user: &str, args: &[&str]| {
        let token = crate::apply::officer_session(&ca, user);
        let o = ca.ecert_env(
            args,
            &[("ECERT_SERVER", &server_url), ("ECERT_TOKEN", token.trim())],
        );
        assert!(o.status.success(), "{}", show(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let proposed = as_officer(
        "e2e-officer1",
        &[
            "proposal",
            "propose",
            "--kind",
            "batch_approval",
            "--batch",
            &batch,
        ],
    );
    assert!(
        proposed.contains(&format!("approve batch {batch}")) && proposed.contains("400 good rows"),
        "{proposed}"
    );
    let proposal = proposed.split('\t').next().unwrap().to_string();
    let confirmed = as_officer("e2e-officer2", &["proposal", "confirm", &proposal]);
    assert!(confirmed.contains("400 rows queued"), "{confirmed}");
    // Killed once some, not all, are issued.
    wait_issued(&addr, &token, &batch, 20);
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(server);
    let mid = ca.sql_query(&format!(
        "SELECT COUNT(*) FROM batch_rows WHERE batch_id = '{batch}' AND state = 'issued'"
    ));
    assert!(
        mid.trim().parse::<usize>().unwrap() < n,
        "the batch finished before the kill: make it bigger"
    );
    let server = crate::serve::start(&ca);
    let s = wait_done(&server.1, &token, &batch, 300);
    assert_eq!(s["counts"]["issued"], n, "{}", s["counts"]);
    // One issued certificate per row, each the row's, and no other certificate of the batch
    // reported good.
    crate::bulk::assert_each_row_issued_once(&ca, &batch, n);
    drop(server);
    ca.audit_ok();
}

/// One issued certificate per row of `batch` (`n` rows), each the row's, and no other
/// certificate of the batch issued: no row issued twice, none missing.
pub(crate) fn assert_each_row_issued_once(ca: &Ca, batch: &str, n: usize) {
    let per_row = ca.sql_query(&format!(
        "SELECT COUNT(DISTINCT r.serial) FROM batch_rows r JOIN certificates c ON c.serial = r.serial \
         WHERE r.batch_id = '{batch}' AND c.state = 'issued'"
    ));
    assert_eq!(per_row.trim(), n.to_string());
    let issued_for_batch = ca.sql_query(&format!(
        "SELECT COUNT(*) FROM certificates c JOIN audit_log a ON a.subject = c.serial \
         WHERE c.state = 'issued' AND a.kind = 'issuance.requested' AND a.actor = 'batch:{batch}'"
    ));
    assert_eq!(
        issued_for_batch.trim(),
        n.to_string(),
        "a row was issued twice"
    );
}

/// The CSR with one base64 character of its signature changed: the proof of possession fails.
fn bad_signature(pem: &str) -> String {
    let end = pem.find("-----END").unwrap();
    let at = end - 8;
    let mut b = pem.as_bytes().to_vec();
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

/// DER as base64 lines of 64.
fn base64_lines(der: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    b.as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// An integrator's client, generated by openapi-python-client from the served
/// `/api/v1/openapi.json`, submits a batch and follows it to the end — the API as its document
/// describes it, not as hand-written requests use it.
#[test]
fn a_client_generated_from_the_openapi_document_drives_a_batch() {
    let ca = Ca::init();
    crate::apply::dcv_config(&ca);
    crate::apply::officers_ready(&ca);
    let keys = csrs(&ca, 20);
    let rows = rows_of(&keys);
    with_service(&ca, |addr| {
        let (org, token) = organisation_ready(&ca, addr);
        let doc = http(addr, "GET", "/api/v1/openapi.json", &[], b"");
        let doc_file = ca.file("openapi.json");
        std::fs::write(&doc_file, &doc.body).unwrap();
        let out = ca.file("generated");
        let mut c = std::process::Command::new(venv_python());
        c.args([
            "-m",
            "openapi_python_client",
            "generate",
            "--meta",
            "none",
            "--path",
        ])
        .arg(&doc_file)
        .arg("--output-path")
        .arg(out.join("ecert_client"))
        .current_dir(ca.data_dir());
        let o = run_with_timeout(c, Duration::from_secs(120), "openapi-python-client");
        assert!(o.status.success(), "{}", show(&o));
        let rows_file = ca.file("rows.json");
        std::fs::write(&rows_file, serde_json::to_vec(&rows).unwrap()).unwrap();
        let script = r#"
import json, sys, time
sys.path.insert(0, sys.argv[1])
from ecert_client import AuthenticatedClient
from ecert_client.api.default import batch_submit, batch_show, staff_certificate_show
from ecert_client.models import BatchSubmission
url, token, org, rows_file, step = sys.argv[2:7]
client = AuthenticatedClient(base_url=url, token=token)
if step == "submit":
    rows = json.load(open(rows_file))
    r = batch_submit.sync(client=client, body=BatchSubmission.from_dict({"rows": rows}), organisation=org)
    print(json.dumps(r.to_dict()))
elif step.startswith("row:"):
    r = staff_certificate_show.sync(client=client, client_row_id=step[4:])
    print(json.dumps(r.to_dict()))
else:
    for _ in range(600):
        s = batch_show.sync(client=client, id=step)
        if s.state == "done":
            break
        time.sleep(0.2)
    print(json.dumps(s.to_dict()))
"#;
        let run = |step: &str| {
            let mut c = std::process::Command::new(venv_python());
            c.args(["-c", script])
                .arg(&out)
                .arg(format!("http://{addr}"))
                .arg(&token)
                .arg(&org)
                .arg(&rows_file)
                .arg(step);
            let o = run_with_timeout(c, Duration::from_secs(180), "the generated client");
            assert!(o.status.success(), "{}", show(&o));
            serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
        };
        let receipt = run("submit");
        assert_eq!(receipt["accepted"], 20, "{receipt}");
        let batch = receipt["id"].as_str().unwrap().to_string();
        crate::apply::officers_decide(
            &ca,
            serde_json::json!({ "kind": "batch_approval", "batch": batch }),
        );
        let status = run(&batch);
        assert_eq!(status["state"], "done", "{status}");
        assert_eq!(status["counts"]["issued"], 20, "{status}");

        // The organisation revokes a leaver's certificate by its row id, with a subscriber's
        // reasons only; its own rows only; staff go through /api/v1/certificates.
        let revoke = |who: &str, row: &str, reason: &str| {
            api(
                addr,
                "POST",
                &format!("/api/v1/staff-certificates/{row}/revocation"),
                who,
                Some(serde_json::json!({ "reason": reason })),
            )
        };
        let (st, v) = revoke(&token, "hr-00000", "privilegeWithdrawn");
        assert_eq!(st, 422, "{v}");
        let (st, v) = revoke(&token, "hr-99999", "affiliationChanged");
        assert_eq!(st, 404, "{v}");
        let officer = crate::apply::officer_session(&ca, "e2e-officer1");
        let (st, v) = revoke(&officer, "hr-00000", "affiliationChanged");
        assert_eq!(st, 403, "{v}");
        let (st, v) = revoke(&token, "hr-00000", "affiliationChanged");
        assert_eq!(st, 200, "{v}");
        let serial = v["serial"].as_str().unwrap().to_string();
        assert_eq!(
            ca.sql_query(&format!(
                "SELECT revocation_reason FROM certificates WHERE serial = '{serial}'"
            ))
            .trim(),
            "3"
        );
        let (st, v) = revoke(&token, "hr-00000", "affiliationChanged");
        assert_eq!(st, 409, "{v}");
        let actor = ca.sql_query(&format!(
            "SELECT actor FROM audit_log WHERE subject = '{serial}' AND kind LIKE 'certificate.revoked%'"
        ));
        assert!(actor.contains(&format!("organisation:{org}")), "{actor}");

        // A row's certificate, through the generated client: PEM and status.
        let row_serial = |id: &str| {
            status["rows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["client_row_id"] == id)
                .unwrap()["serial"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let shown = run("row:hr-00001");
        assert_eq!(shown["status"], "good", "{shown}");
        assert_eq!(shown["serial"].as_str().unwrap(), row_serial("hr-00001"));
        let pem = shown["certificate"].as_str().unwrap();
        let cert = ca.file("row-hr-00001.pem");
        std::fs::write(&cert, pem).unwrap();
        let o = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        // openssl prints a serial without its leading zero bytes (one in 256 starts with one).
        assert!(
            String::from_utf8_lossy(&o.stdout)
                .to_ascii_lowercase()
                .contains(
                    row_serial("hr-00001")
                        .to_ascii_lowercase()
                        .trim_start_matches('0')
                ),
            "{}",
            show(&o)
        );
        let shown = run("row:hr-00000");
        assert_eq!(shown["status"], "revoked", "{shown}");
        assert_eq!(shown["reason"], "affiliationChanged", "{shown}");
        let row_status = |id: &str| {
            let (st, v) = api(
                addr,
                "GET",
                &format!("/api/v1/staff-certificates/{id}"),
                &token,
                None,
            );
            assert_eq!(st, 200, "{v}");
            v["status"].as_str().unwrap().to_string()
        };
        let release = |who: &str, id: &str| {
            api(
                addr,
                "POST",
                &format!("/api/v1/staff-certificates/{id}/release"),
                who,
                None,
            )
        };
        // Held (a suspension) and released by the organisation.
        let (st, v) = revoke(&token, "hr-00001", "certificateHold");
        assert_eq!(st, 200, "{v}");
        assert_eq!(row_status("hr-00001"), "held");
        let (st, v) = release(&token, "hr-00001");
        assert_eq!(st, 200, "{v}");
        assert_eq!(row_status("hr-00001"), "good");
        let (st, v) = release(&token, "hr-00001");
        assert!(st == 409 || st == 422, "not on hold: {st} {v}");
        // A hold an officer placed is the officer's to release; staff reach no row by its id.
        let serial2 = row_serial("hr-00002");
        let (st, v) = api(
            addr,
            "POST",
            &format!("/api/v1/certificates/{serial2}/revocation"),
            &officer,
            Some(serde_json::json!({ "reason": "certificateHold" })),
        );
        assert_eq!(st, 200, "{v}");
        let (st, v) = release(&token, "hr-00002");
        assert_eq!(st, 403, "{v}");
        assert_eq!(row_status("hr-00002"), "held");
        let (st, v) = release(&officer, "hr-00002");
        assert_eq!(st, 403, "{v}");
        let (st, v) = api(
            addr,
            "GET",
            "/api/v1/staff-certificates/hr-00002",
            &officer,
            None,
        );
        assert_eq!(st, 403, "{v}");
        let (st, v) = api(
            addr,
            "GET",
            "/api/v1/staff-certificates/hr-99999",
            &token,
            None,
        );
        assert_eq!(st, 404, "{v}");
        // The CA's default policy allows no standing authorisation.
        let (st, v) = api(
            addr,
            "POST",
            "/api/v1/officer-proposals",
            &officer,
            Some(
                serde_json::json!({ "kind": "standing_authorisation", "organisation": org, "max_rows": 5, "days": 30 }),
            ),
        );
        assert_eq!(st, 422, "{v}");
        assert!(v["message"].as_str().unwrap().contains("policy"), "{v}");
    });
}

/// CAA before a batch issues (S/MIME BR §4.2.2.1, RFC 9495): while the staff domain's parent
/// publishes `issuemail` naming another CA, the approved rows fail with that reason (each
/// check audited, with the five remote perspectives' answers) and no certificate is signed;
/// once it names this CA, the same rows resubmitted issue.
#[test]
fn a_mail_domain_whose_caa_names_another_ca_gets_no_certificate() {
    let ca = Ca::init();
    crate::apply::dcv_config(&ca);
    crate::apply::officers_ready(&ca);
    let keys = csrs(&ca, 2);
    let rows = rows_of(&keys);
    with_service(&ca, |addr| {
        let (_, token) = organisation_ready(&ca, addr);
        let parent = DOMAIN.split_once('.').unwrap().1;
        let run = |rows: &[serde_json::Value]| {
            let (st, receipt) = submit(addr, &token, rows);
            assert_eq!(st, 201, "{receipt}");
            let batch = receipt["id"].as_str().unwrap().to_string();
            crate::apply::officers_decide(
                &ca,
                serde_json::json!({ "kind": "batch_approval", "batch": batch }),
            );
            wait_done(addr, &token, &batch, 60)
        };
        let signed =
            || ca.sql_query("SELECT COUNT(*) FROM certificates WHERE profile = 'organisational'");
        let before = signed();
        // `issuemail` naming another CA forbids (beside `issue ";"`, which forbids every CA
        // to certify the domain's names and does not restrict mailboxes: see below).
        ca.dns().set_caa_issue(parent, &[None]);
        ca.dns().set_caa_issuemail(parent, &["other-ca.example"]);
        let s = run(&rows);
        assert_eq!(s["counts"]["failed"], 2, "{}", s["counts"]);
        for r in s["rows"].as_array().unwrap() {
            assert_eq!(
                r["error"].as_str().unwrap(),
                format!(
                    "CAA forbids issuance for {DOMAIN}: CAA at {parent}: its issuemail records do not name this CA (RFC 9495)"
                ),
                "{r}"
            );
        }
        assert_eq!(signed(), before, "a certificate was signed against CAA");
        let refused = ca.sql_query(
            "SELECT detail FROM audit_log WHERE kind = 'ra.caa.refused' AND actor = 'system:batch-issuer'",
        );
        assert!(
            refused.contains("issuemail") && refused.contains(DOMAIN),
            "{refused}"
        );
        // Named, and corroborated by the five remote perspectives: the same rows, resubmitted
        // under their client row ids (a failed row's is free), issue, `issue ";"` still there.
        // A permission serves the signer for an hour: the refusal above was not one.
        ca.dns()
            .set_caa_issuemail(parent, &["other-ca.example", "pki.example.hk; account=42"]);
        let s = run(&rows);
        assert_eq!(s["counts"]["issued"], 2, "{}", s["counts"]);
        let checked = ca.sql_query(
            "SELECT detail FROM audit_log WHERE kind = 'ra.caa.checked' AND actor = 'system:batch-issuer' \
             ORDER BY seq DESC LIMIT 1",
        );
        assert!(checked.contains("issuemail"), "{checked}");
        assert_eq!(checked.matches("\"answered\":true").count(), 5, "{checked}");
    });
    ca.audit_ok();
}

/// Where the policy allows it, two officers give an organisation a standing authorisation: its
/// batches are approved on arrival (audited as the authorisation) up to a number of rows in any
/// 24 hours; a larger batch, or one past that number, waits for two officers; once withdrawn
/// every batch waits again.
#[test]
fn a_standing_authorisation_approves_small_batches_on_arrival() {
    let ca = Ca::init();
    crate::apply::dcv_config(&ca);
    crate::apply::officers_ready(&ca);
    ca.append_config("[ra]\nstanding_authorisation = true");
    let keys = csrs(&ca, 12);
    let rows = rows_of(&keys);
    with_service(&ca, |addr| {
        let (org, token) = organisation_ready(&ca, addr);
        let submit = |rows: &[serde_json::Value]| {
            let (st, v) = api(
                addr,
                "POST",
                "/api/v1/batches",
                &token,
                Some(serde_json::json!({ "rows": rows })),
            );
            assert_eq!(st, 201, "{v}");
            v
        };
        let state = |id: &serde_json::Value| {
            ca.sql_query(&format!(
                "SELECT state FROM batches WHERE id = '{}'",
                id.as_str().unwrap()
            ))
            .trim()
            .to_string()
        };
        // Before any authorisation: waits.
        let first = submit(&rows[0..2]);
        assert_eq!(first["approved"], false, "{first}");
        // Out of bounds: refused by name before two officers agree.
        let (st, v) = crate::apply::officers_propose(
            &ca,
            serde_json::json!({ "kind": "standing_authorisation", "organisation": org, "max_rows": 5, "days": 400 }),
        );
        assert_eq!(st, 422, "{v}");
        let done = crate::apply::officers_decide(
            &ca,
            serde_json::json!({ "kind": "standing_authorisation", "organisation": org, "max_rows": 3, "days": 30 }),
        );
        let granted_by = done["id"].as_str().unwrap().to_string();
        // More than 3 in one batch: waits for two officers.
        let large = submit(&rows[2..6]);
        assert_eq!(large["approved"], false, "{large}");
        assert_eq!(state(&large["id"]), "submitted");
        // Up to 3 good rows: approved on arrival and issued, named by the authorisation.
        let small = submit(&rows[6..8]);
        assert_eq!(small["approved"], true, "{small}");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while state(&small["id"]) != "done" {
            assert!(std::time::Instant::now() < deadline, "not issued");
            std::thread::sleep(Duration::from_millis(200));
        }
        let issued = ca.sql_query(&format!(
            "SELECT COUNT(*) FROM batch_rows WHERE batch_id = '{}' AND state = 'issued'",
            small["id"].as_str().unwrap()
        ));
        assert_eq!(issued.trim(), "2");
        let actor = ca.sql_query(&format!(
            "SELECT actor FROM audit_log WHERE kind = 'bulk.batch.approved' AND subject = '{}'",
            small["id"].as_str().unwrap()
        ));
        assert_eq!(actor.trim(), format!("standing-authorisation:{granted_by}"));
        // At most 3 in any 24 hours, however they are split: a third row passes, a fourth waits.
        let third = submit(&rows[8..9]);
        assert_eq!(third["approved"], true, "{third}");
        let fourth = submit(&rows[9..10]);
        assert_eq!(
            (fourth["accepted"].as_u64(), fourth["approved"].as_bool()),
            (Some(1), Some(false)),
            "{fourth}"
        );
        // Withdrawn: every batch waits again.
        crate::apply::officers_decide(
            &ca,
            serde_json::json!({ "kind": "standing_authorisation", "organisation": org, "days": 0 }),
        );
        let again = submit(&rows[10..11]);
        assert_eq!(
            (again["accepted"].as_u64(), again["approved"].as_bool()),
            (Some(1), Some(false)),
            "{again}"
        );
        assert_eq!(state(&first["id"]), "submitted");
    });
    ca.audit_ok();
}

/// Issue 17: a signer stopped (SIGTERM) while it issues a batch stops at the end of its pass:
/// nothing is left `issuing` and no serial is abandoned; the next start finishes the batch.
#[test]
fn a_signer_stopped_during_a_batch_leaves_nothing_half_issued() {
    let ca = Ca::init();
    // No drain: the stop reaches the batch issuer at once.
    ca.append_config("[http]\ndrain_seconds = 0\n");
    crate::apply::dcv_config(&ca);
    crate::apply::officers_ready(&ca);
    let n = 600;
    let keys = csrs(&ca, n);
    let rows = rows_of(&keys);
    let mut server = crate::serve::start(&ca);
    let addr = server.1.clone();
    let (_, token) = organisation_ready(&ca, &addr);
    let batch = submitted(&addr, &token, &rows);
    crate::apply::officers_decide(
        &ca,
        serde_json::json!({ "kind": "batch_approval", "batch": batch }),
    );
    wait_issued(&addr, &token, &batch, 20);
    let exit = crate::serve::terminate(&mut server, 60);
    assert!(exit.success(), "{exit:?}");
    drop(server);
    let half = ca.sql_query(
        "SELECT COUNT(*) FROM certificates WHERE state IN ('reserved', 'issuing', 'abandoned')",
    );
    assert_eq!(half.trim(), "0", "an issuance was cut off by the stop");
    let issuing = ca.sql_query(&format!(
        "SELECT COUNT(*) FROM batch_rows WHERE batch_id = '{batch}' AND state = 'issuing'"
    ));
    assert_eq!(issuing.trim(), "0");
    let mid = ca.sql_query(&format!(
        "SELECT COUNT(*) FROM batch_rows WHERE batch_id = '{batch}' AND state = 'issued'"
    ));
    assert!(
        mid.trim().parse::<usize>().unwrap() < n,
        "the batch finished before the stop: make it bigger"
    );
    let server = crate::serve::start(&ca);
    let s = wait_done(&server.1, &token, &batch, 300);
    assert_eq!(s["counts"]["issued"], n, "{}", s["counts"]);
    assert_each_row_issued_once(&ca, &batch, n);
    drop(server);
    ca.audit_ok();
}
