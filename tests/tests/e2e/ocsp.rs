//! OCSP through `ecert serve`, judged by `openssl ocsp`, pkilint's `lint_ocsp_response` and
//! Python `cryptography`: good → revoked (POST and GET, SHA-1 and SHA-256 CertIDs), hold and
//! release, caching headers, malformed and unauthorized requests, never `good` for a serial
//! that was not issued, changes made by other processes, a second (`--no-signer`) instance,
//! and a database outage.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ecert_e2e::*;

use crate::common::*;
use crate::serve::{get, http, start, start_with};

/// The exported chain files a relying party holds.
pub(crate) struct Chain {
    pub root: PathBuf,
    pub individual: PathBuf,
    pub server: PathBuf,
}

pub(crate) fn chain(ca: &Ca) -> Chain {
    Chain {
        root: ca.roots_bundle(),
        individual: ca.export("individual").path,
        server: ca.export("server").path,
    }
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `openssl ocsp` POSTs a request for `cert` and verifies the response against the root; the
/// response is kept in `out` for pkilint. Returns openssl's output.
pub(crate) fn ocsp_post(
    ca: &Ca,
    addr: &str,
    chain: &Chain,
    issuer: &Path,
    cert: &Path,
    sha256: bool,
    out: &Path,
) -> String {
    let url = format!("http://{addr}/ocsp");
    let mut args = vec!["ocsp"];
    if sha256 {
        args.push("-sha256");
    }
    args.extend([
        "-issuer",
        issuer.to_str().unwrap(),
        "-cert",
        cert.to_str().unwrap(),
        "-url",
        &url,
        "-CAfile",
        chain.root.to_str().unwrap(),
        "-respout",
        out.to_str().unwrap(),
    ]);
    // Not `openssl()`: an unauthorized answer makes openssl exit 1, and that is asserted here.
    let mut c = std::process::Command::new("openssl");
    c.current_dir(ca.data_dir()).args(&args);
    text(&run_with_timeout(
        c,
        Duration::from_secs(60),
        "openssl ocsp",
    ))
}

/// The same by GET: `openssl ocsp -reqout` makes the request, it is sent as
/// `GET /ocsp/{base64}` (percent-encoded when `encode`), and `openssl ocsp -respin` verifies
/// the answer. Returns (openssl's verdict, the HTTP response).
fn ocsp_get(
    ca: &Ca,
    addr: &str,
    chain: &Chain,
    issuer: &Path,
    cert: &Path,
    encode: bool,
    out: &Path,
) -> (String, crate::serve::HttpResponse) {
    let req = ca.file("get-req.der");
    let o = openssl(
        ca.data_dir(),
        &[
            "ocsp",
            "-no_nonce",
            "-issuer",
            issuer.to_str().unwrap(),
            "-cert",
            cert.to_str().unwrap(),
            "-reqout",
            req.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    let mut b64 = get_request_b64(ca).trim().to_string();
    if encode {
        b64 = b64
            .replace('/', "%2F")
            .replace('+', "%2B")
            .replace('=', "%3D");
    }
    let resp = http(addr, "GET", &format!("/ocsp/{b64}"), &[], b"");
    std::fs::write(out, &resp.body).unwrap();
    let o = openssl(
        ca.data_dir(),
        &[
            "ocsp",
            "-respin",
            out.to_str().unwrap(),
            "-issuer",
            issuer.to_str().unwrap(),
            "-cert",
            cert.to_str().unwrap(),
            "-CAfile",
            chain.root.to_str().unwrap(),
        ],
    );
    (text(&o), resp)
}

/// The base64 of the last request [`ocsp_get`] made (openssl's, as it would send it).
fn get_request_b64(ca: &Ca) -> String {
    let der = ca.file("get-req.der");
    let out = openssl(
        ca.data_dir(),
        &["base64", "-A", "-in", der.to_str().unwrap()],
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn lint_response(path: &Path, ctx: &str) {
    pkilint("lint_ocsp_response", &[], &[path], ctx);
}

/// Asserts openssl's verdict: the signature chain verified and the status is `status`.
pub(crate) fn assert_status(out: &str, cert: &Path, status: &str, ctx: &str) {
    assert!(
        out.contains("Response verify OK"),
        "[{ctx}] response did not verify:\n{out}"
    );
    let line = format!("{}: {status}", cert.display());
    assert!(out.contains(&line), "[{ctx}] expected {line:?}:\n{out}");
}

/// Polls by POST until the status is `status` (or `deadline` passes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn wait_status(
    ca: &Ca,
    addr: &str,
    chain: &Chain,
    issuer: &Path,
    cert: &Path,
    status: &str,
    out: &Path,
    ctx: &str,
) -> String {
    let start = Instant::now();
    loop {
        let got = ocsp_post(ca, addr, chain, issuer, cert, false, out);
        if got.contains(&format!("{}: {status}", cert.display())) {
            eprintln!("[{ctx}] {status} after {:?}", start.elapsed());
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "[{ctx}] still not {status} after 15 s:\n{got}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn good_then_revoked_by_post_and_get_judged_by_openssl_and_pkilint() {
    let ca = Ca::init();
    let chain = chain(&ca);
    let p = personal();
    let leaf = crate::apply::issue(&ca, &p, &ca.csr("a", KeyType::P256).csr, "personal");
    let held = crate::apply::issue(&ca, &p, &ca.csr("h", KeyType::P256).csr, "personal to hold");
    let s = server();
    let tls = crate::apply::issue(&ca, &s, &ca.csr("s", KeyType::P256).csr, "server");
    let srv = start(&ca);
    let addr = &srv.1;
    let resp = ca.file("resp.der");

    // Good, by POST with SHA-1 and SHA-256 CertIDs, and by GET (plain and percent-encoded).
    for sha256 in [false, true] {
        let out = ocsp_post(
            &ca,
            addr,
            &chain,
            &chain.individual,
            &leaf.cert.path,
            sha256,
            &resp,
        );
        assert_status(
            &out,
            &leaf.cert.path,
            "good",
            &format!("POST sha256={sha256}"),
        );
        lint_response(&resp, "good response");
        std::fs::copy(&resp, ca.file("individual-resp.der")).unwrap();
    }
    for encode in [false, true] {
        let (out, r) = ocsp_get(
            &ca,
            addr,
            &chain,
            &chain.individual,
            &leaf.cert.path,
            encode,
            &resp,
        );
        assert_status(
            &out,
            &leaf.cert.path,
            "good",
            &format!("GET encode={encode}"),
        );
        assert_eq!(r.header("content-type"), Some("application/ocsp-response"));
        let cc = r.header("cache-control").unwrap_or_default();
        assert!(cc.contains("max-age=") && cc.contains("public"), "{cc}");
        for h in ["etag", "last-modified", "expires"] {
            assert!(r.header(h).is_some(), "GET response lacks {h}");
        }
        // The validator works: the same request with If-None-Match is 304 Not Modified.
        let etag = r.header("etag").unwrap().to_string();
        let b64 = get_request_b64(&ca);
        let again = http(
            addr,
            "GET",
            &format!("/ocsp/{}", b64.trim()),
            &[("If-None-Match", &etag)],
            b"",
        );
        assert_eq!(again.status, 304, "If-None-Match {etag}");
        lint_response(&resp, "GET response");
    }

    // The Server CA's responder answers for its certificates.
    let out = ocsp_post(
        &ca,
        addr,
        &chain,
        &chain.server,
        &tls.cert.path,
        true,
        &resp,
    );
    assert_status(&out, &tls.cert.path, "good", "server certificate");
    lint_response(&resp, "server CA response");
    std::fs::copy(&resp, ca.file("server-resp.der")).unwrap();

    // The responder certificates: delegated (EKU OCSPSigning, ocsp-nocheck), judged by pkilint
    // (the TLS BR's OCSP responder profile for the Server CA's).
    // (`ecert ocsp responder` opens the signer: the server stops meanwhile.)
    drop(srv);
    for (name, linter, args) in [
        ("individual", "lint_pkix_cert", vec![]),
        (
            "server",
            "lint_cabf_serverauth_cert",
            vec!["-t", "OCSP-RESPONDER"],
        ),
    ] {
        let pem = ca.ecert_ok(&["ocsp", "responder", name]);
        let path = ca.file(&format!("{name}-responder.pem"));
        std::fs::write(&path, pem).unwrap();
        let shown = text(&openssl(
            ca.data_dir(),
            &["x509", "-in", path.to_str().unwrap(), "-noout", "-text"],
        ));
        assert!(
            shown.contains("OCSP Signing") && shown.contains("OCSP No Check"),
            "{shown}"
        );
        pkilint(
            linter,
            &args,
            &[&path],
            &format!("{name} OCSP responder certificate"),
        );
        // Found by key (issue 12, defect 9), judged by Python `cryptography`: the response's
        // ResponderID byKey is the responder certificate's SKI, which is RFC 5280 method 1;
        // the responder's AKI is its CA's SKI.
        let ca_pem = if name == "server" {
            &chain.server
        } else {
            &chain.individual
        };
        let mut c = std::process::Command::new("python3");
        c.args(["-c", KEY_IDS_PY])
            .arg(&path)
            .arg(ca_pem)
            .arg(ca.file(&format!("{name}-resp.der")));
        let o = run_with_timeout(c, Duration::from_secs(60), "python3 key ids");
        assert_eq!(text(&o).trim(), "ok", "{name} responder key identifiers");
    }
    let srv = start(&ca);
    let addr = &srv.1;

    // Revoked by another process (the CLI) while serving: the reason shows.
    crate::apply::revoke_ok(
        &ca,
        &["--serial", &leaf.serial, "--reason", "keyCompromise"],
    );
    let out = wait_status(
        &ca,
        addr,
        &chain,
        &chain.individual,
        &leaf.cert.path,
        "revoked",
        &resp,
        "revoke",
    );
    assert_status(&out, &leaf.cert.path, "revoked", "revoked");
    assert!(out.contains("Reason: keyCompromise"), "{out}");
    lint_response(&resp, "revoked response");
    let (out, _) = ocsp_get(
        &ca,
        addr,
        &chain,
        &chain.individual,
        &leaf.cert.path,
        false,
        &resp,
    );
    assert_status(&out, &leaf.cert.path, "revoked", "revoked by GET");

    // Hold then release (Individual & Organisational CA): revoked/certificateHold, then good.
    crate::apply::revoke_ok(&ca, &["--serial", &held.serial, "--hold"]);
    let out = wait_status(
        &ca,
        addr,
        &chain,
        &chain.individual,
        &held.cert.path,
        "revoked",
        &resp,
        "hold",
    );
    assert!(out.contains("Reason: certificateHold"), "{out}");
    lint_response(&resp, "held response");
    crate::apply::revoke_ok(&ca, &["--serial", &held.serial, "--release"]);
    wait_status(
        &ca,
        addr,
        &chain,
        &chain.individual,
        &held.cert.path,
        "good",
        &resp,
        "release",
    );

    // An issuer this responder does not serve (the root, for an issuing CA's certificate):
    // unauthorized.
    let out = ocsp_post(
        &ca,
        addr,
        &chain,
        &chain.root,
        &chain.individual,
        false,
        &resp,
    );
    assert!(out.contains("unauthorized"), "{out}");

    // Malformed requests: malformedRequest (an unsigned OCSPResponse with status 1), never a
    // crash.
    const MALFORMED: &[u8] = &[0x30, 0x03, 0x0a, 0x01, 0x01];
    for body in [&b""[..], b"garbage", &[0x30, 0x82, 0xff, 0xff][..]] {
        let r = http(
            addr,
            "POST",
            "/ocsp",
            &[("Content-Type", "application/ocsp-request")],
            body,
        );
        assert_eq!((r.status, r.body.as_slice()), (200, MALFORMED), "{body:?}");
    }
    for path in [
        "/ocsp/MEIwQDA%2BMDwwOjAJBgUrDgMCGgUABBT",
        "/ocsp/!!!",
        "/ocsp/AAAA",
    ] {
        let r = http(addr, "GET", path, &[], b"");
        assert_eq!((r.status, r.body.as_slice()), (200, MALFORMED), "{path}");
        // An error answer is never cached (not even one whose base64 did not decode).
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
    }

    // Issue 16: GET and POST are answered before the router (`tls::Fast`); the router still
    // answers the rest under /ocsp with the same code: HEAD as GET without the body, other
    // methods 405. A body over 16 KiB is refused; every answer is counted in the metrics.
    let b64 = get_request_b64(&ca);
    let head = http(addr, "HEAD", &format!("/ocsp/{}", b64.trim()), &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-type"),
        Some("application/ocsp-response")
    );
    assert!(head.header("etag").is_some() && head.body.is_empty());
    assert_eq!(http(addr, "PUT", "/ocsp", &[], b"").status, 405);
    let big = http(
        addr,
        "POST",
        "/ocsp",
        &[("Content-Type", "application/ocsp-request")],
        &[0x30; 16 * 1024 + 1],
    );
    assert_eq!(big.status, 413);
    let (_, _, metrics) = get(addr, "/metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    let counted = |code: &str| -> u64 {
        let line = format!("ecert_http_requests_total{{route=\"ocsp\",code=\"{code}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0, |n| n.trim().parse().unwrap())
    };
    assert_eq!(counted("413"), 1, "{metrics}");
    assert_eq!(counted("405"), 1, "{metrics}");
    // Since this instance started: the revoked and held checks, the malformed requests, HEAD.
    assert!(counted("200") >= 10, "{metrics}");

    let (status, _, body) = get(addr, "/healthz");
    let health = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{health}");
    assert!(health.contains("\"responses\":"), "{health}");
}

/// Checks the key identifiers of a responder certificate (argv 1), its CA (argv 2) and a
/// response it signed (argv 3) with Python `cryptography`; prints "ok" or what differs.
const KEY_IDS_PY: &str = r#"
import sys
from cryptography import x509
from cryptography.x509 import ocsp
responder = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
issuer = x509.load_pem_x509_certificate(open(sys.argv[2], "rb").read())
resp = ocsp.load_der_ocsp_response(open(sys.argv[3], "rb").read())
def ski(c):
    return c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
method1 = x509.SubjectKeyIdentifier.from_public_key(responder.public_key()).digest
aki = responder.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
problems = []
if ski(responder) != method1: problems.append("responder SKI is not RFC 5280 method 1")
if resp.responder_key_hash != ski(responder): problems.append("ResponderID byKey is not the responder SKI")
if aki != ski(issuer): problems.append("responder AKI is not its CA's SKI")
print("; ".join(problems) or "ok")
"#;

/// Sends `n` random serials (half with SHA-1, half with SHA-256 CertIDs) plus the given ones to
/// `/ocsp` with Python `cryptography`, over one keep-alive connection, and prints the status of
/// each given serial and a count per status of the random ones.
const RANDOM_SERIALS_PY: &str = r#"
import http.client, json, os, sys
from cryptography import x509
from cryptography.x509 import ocsp
from cryptography.hazmat.primitives import hashes, serialization

host, port = sys.argv[1].rsplit(":", 1)
issuer = x509.load_pem_x509_certificate(open(sys.argv[2], "rb").read())
n = int(sys.argv[3])
given = sys.argv[4:]
key = issuer.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
def h(alg, data):
    d = hashes.Hash(alg); d.update(data); return d.finalize()
conn = http.client.HTTPConnection(host, int(port), timeout=10)
def ask(serial, alg):
    req = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        h(alg, issuer.subject.public_bytes()), h(alg, key), serial, alg).build()
    conn.request("POST", "/ocsp", req.public_bytes(serialization.Encoding.DER),
                 {"Content-Type": "application/ocsp-request"})
    resp = ocsp.load_der_ocsp_response(conn.getresponse().read())
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return resp.response_status.name
    if resp.serial_number != serial:
        return "WRONG_SERIAL"
    # A revocation is dated when it happened (an abandoned serial: when it was given up),
    # never at the epoch (issue 12, defect 10).
    if resp.certificate_status == ocsp.OCSPCertStatus.REVOKED and resp.revocation_time.year < 2020:
        return "REVOKED_AT_EPOCH"
    return resp.certificate_status.name
out = {"given": {}, "random": {}}
for s in given:
    out["given"][s] = ask(int(s, 16), hashes.SHA256())
for i in range(n):
    serial = int.from_bytes(os.urandom(16), "big") or 1
    st = ask(serial, hashes.SHA1() if i % 2 else hashes.SHA256())
    out["random"][st] = out["random"].get(st, 0) + 1
print(json.dumps(out))
"#;

#[test]
fn never_good_for_random_reserved_or_half_issued_serials() {
    let ca = Ca::init();
    let chain = chain(&ca);
    let p = personal();
    let leaf = crate::apply::issue(&ca, &p, &ca.csr("a", KeyType::P256).csr, "personal");
    // One serial left `reserved` and one left `issuing` by a signing service killed at a
    // failpoint, resolved at the next start to failed and abandoned.
    let left: Vec<String> = ["ca::after_reserve", "ca::after_issuing"]
        .into_iter()
        .map(|fp| crate::crash::kill_during_approval(&ca, fp, fp))
        .collect();
    // No response was made for them while they were left.
    let before_serve = ca.sql_query(&format!(
        "SELECT COUNT(*) FROM ocsp_responses WHERE serial IN ('{}', '{}')",
        left[0], left[1]
    ));
    assert_eq!(before_serve.trim(), "0");

    let srv = start(&ca);
    // The next start resolved them (docs/ISSUANCE-CYCLE.md): reserved → failed, issuing →
    // abandoned.
    for (serial, state) in left.iter().zip(["failed", "abandoned"]) {
        let got = ca.sql_query(&format!(
            "SELECT state FROM certificates WHERE serial = '{serial}'"
        ));
        assert_eq!(got.trim(), state, "{serial}");
    }
    let mut c = std::process::Command::new("python3");
    c.args(["-c", RANDOM_SERIALS_PY])
        .arg(&srv.1)
        .arg(&chain.individual)
        .arg("10000")
        .arg(&leaf.serial)
        .args(&left);
    let o = run_with_timeout(c, Duration::from_secs(600), "python3 random serials");
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    // The control: the issued serial is good (so the client and CertIDs are right).
    assert!(
        out.contains(&format!("\"{}\": \"GOOD\"", leaf.serial)),
        "{out}"
    );
    // Failed (was reserved): unauthorized; abandoned (was issuing): revoked.
    assert!(
        out.contains(&format!("\"{}\": \"UNAUTHORIZED\"", left[0])),
        "{out}"
    );
    assert!(
        out.contains(&format!("\"{}\": \"REVOKED\"", left[1])),
        "{out}"
    );
    assert!(
        out.contains("\"random\": {\"UNAUTHORIZED\": 10000}"),
        "random serials must all be unauthorized: {out}"
    );
}

#[test]
fn every_instance_follows_other_processes_and_answers_through_a_database_outage() {
    let ca = Ca::init();
    let chain = chain(&ca);
    let p = personal();
    let leaf = crate::apply::issue(&ca, &p, &ca.csr("a", KeyType::P256).csr, "personal");
    let signer = start(&ca);
    let reader = start_with(&ca, &["--no-signer"]);
    let resp = ca.file("resp.der");
    for srv in [&signer, &reader] {
        wait_status(
            &ca,
            &srv.1,
            &chain,
            &chain.individual,
            &leaf.cert.path,
            "good",
            &resp,
            "before",
        );
    }
    let (_, _, body) = get(&reader.1, "/healthz");
    let health = String::from_utf8_lossy(&body);
    assert!(health.contains("\"role\":\"no-signer\""), "{health}");

    // A revocation made by the CLI reaches both instances.
    crate::apply::revoke_ok(&ca, &["--serial", &leaf.serial, "--reason", "superseded"]);
    for (srv, who) in [(&signer, "signer"), (&reader, "no-signer instance")] {
        let out = wait_status(
            &ca,
            &srv.1,
            &chain,
            &chain.individual,
            &leaf.cert.path,
            "revoked",
            &resp,
            who,
        );
        assert!(out.contains("Reason: superseded"), "{out}");
    }

    // The database goes away: OCSP and CRLs keep being answered from memory, /healthz reports
    // the fault, and recovers when the database is back.
    if !ca.db_outage(true) {
        // SQLite is embedded in the ecert process: there is no separate server to stop.
        eprintln!("database outage: not applicable to SQLite");
        return;
    }
    for srv in [&signer, &reader] {
        let out = ocsp_post(
            &ca,
            &srv.1,
            &chain,
            &chain.individual,
            &leaf.cert.path,
            false,
            &resp,
        );
        assert_status(&out, &leaf.cert.path, "revoked", "database down");
        let (status, ctype, _) = get(&srv.1, "/crl/individual.crl");
        assert_eq!((status, ctype.as_str()), (200, "application/pkix-crl"));
        // /healthz reports the store probe's view, refreshed every 2 s, and answers from
        // memory: within a second while the database is down (issue 13, defect 4: it took 4 s,
        // two 2-second probes in a row, and load balancers gave up on it).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let asked = Instant::now();
            let (status, _, body) = get(&srv.1, "/healthz");
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "/healthz took {:?} with the database down",
                asked.elapsed()
            );
            let health = String::from_utf8_lossy(&body).into_owned();
            if status == 503 && health.contains("\"database\":\"error") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no database fault: {status} {health}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    ca.db_outage(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    for srv in [&signer, &reader] {
        loop {
            let (status, _, body) = get(&srv.1, "/healthz");
            if status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "healthz did not recover: {}",
                String::from_utf8_lossy(&body)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// libfaketime, installed by ops/lib.sh (Debian `libfaketime`).
pub(crate) fn libfaketime() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.is_file())
        .expect("libfaketime.so.1 not found under /usr/lib/*/faketime: install Debian's libfaketime (ops/test does)")
}

#[test]
fn responders_rotate_before_a_response_could_outlive_them() {
    let ca = Ca::new();
    // Short settings: responses valid 8 h, refreshed after 3 h, responders valid 24 h; a
    // responder is replaced once it has less than 11 h left.
    // The clock is moved on to test rotation, not the clock check (that is
    // `crl::a_skewed_clock_signs_nothing_and_says_so`): no reference clock here.
    ca.append_config(
        "[ocsp]\nvalidity_hours = 8\nrefresh_hours = 3\nresponder_validity_hours = 24\n[clock]\nreference = \"none\"",
    );
    ca.ecert_ok(&["init"]);
    let first = ca.ecert_ok(&["ocsp", "responder", "individual"]);
    assert_eq!(
        ca.ecert_ok(&["ocsp", "responder", "individual"]),
        first,
        "a fresh responder is kept"
    );
    let preload = libfaketime();
    let later = |offset: &str| {
        let o = ca.ecert_env(
            &["ocsp", "responder", "individual"],
            &[
                ("LD_PRELOAD", preload.to_str().unwrap()),
                ("FAKETIME", offset),
            ],
        );
        assert!(o.status.success(), "{}", show(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    // 11 h later 13 h are left: kept. 13 h later 11 h are left: replaced.
    assert_eq!(later("+11h"), first, "rotated too early");
    let second = later("+13h");
    assert_ne!(second, first, "not rotated with 11 h left");
    let path = ca.file("second-responder.pem");
    std::fs::write(&path, &second).unwrap();
    pkilint("lint_pkix_cert", &[], &[&path], "rotated responder");
    // Both are certificates the CA issued and knows.
    let responders = ca
        .cert_list()
        .into_iter()
        .filter(|c| c.profile == "ocsp-responder" && c.state == "issued")
        .count();
    assert_eq!(responders, 4, "two for each issuing CA");
    // 27 h later the first responders (valid 24 h) have expired and the second ones have 10 h
    // left: the rotation makes third ones and destroys the first ones' keys in the HSM; the
    // keys in use stay.
    let third = later("+27h");
    assert!(third != first && third != second, "not rotated again");
    let retired = ca.sql_query(
        "SELECT key_label FROM ocsp_responders WHERE key_destroyed_at IS NOT NULL ORDER BY key_label",
    );
    let kept = ca.sql_query(
        "SELECT key_label FROM ocsp_responders WHERE key_destroyed_at IS NULL ORDER BY key_label",
    );
    let (retired, kept): (Vec<&str>, Vec<&str>) = (
        retired.split_whitespace().collect(),
        kept.split_whitespace().collect(),
    );
    assert_eq!((retired.len(), kept.len()), (2, 4), "{retired:?} {kept:?}");
    let objects = ca.pkcs11_objects(&[]);
    for label in &retired {
        assert!(!objects.contains(label), "{label} is still in the token");
    }
    for label in &kept {
        assert!(objects.contains(label), "{label} is gone from the token");
    }
    let audit =
        ca.sql_query("SELECT COUNT(*) FROM audit_log WHERE kind = 'ocsp.responder.retired'");
    assert_eq!(audit.trim(), "2");
    ca.audit_ok();
}

/// A status change left unsigned for over a minute (no signer running) turns `/healthz` red,
/// with the waiting time in the body.
#[test]
fn healthz_faults_when_a_change_waits_too_long_for_its_response() {
    let ca = Ca::init();
    let p = personal();
    let csr = ca.csr("waiting", KeyType::P256);
    let leaf = crate::apply::issue(&ca, &p, &csr.csr, "to revoke");
    // The service that issued it is gone: the revocation's change waits for a signer.
    crate::apply::revoke_ok(&ca, &["--serial", &leaf.serial, "--reason", "superseded"]);
    let server = start_with(&ca, &["--no-signer"]);
    let health = |addr: &str| -> (u16, serde_json::Value) {
        let (status, _, body) = get(addr, "/healthz");
        (status, serde_json::from_slice(&body).unwrap())
    };
    // Just queued: OCSP itself is fine (the missing CRLs fault the whole, not OCSP).
    let (_, h) = health(&server.1);
    assert_eq!(h["ocsp"]["status"], "ok", "{h}");
    assert!(
        h["ocsp"]["queue"]["oldest_change_waiting_seconds"]
            .as_i64()
            .unwrap()
            < 60,
        "{h}"
    );
    let old = time_now() - 120;
    ca.tamper(&format!("UPDATE ocsp_pending SET queued_at = {old}"));
    // Seen at the next store probe (every 2 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    let (status, h) = loop {
        let (status, h) = health(&server.1);
        if h["ocsp"]["status"] == "fault" || Instant::now() > deadline {
            break (status, h);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["ocsp"]["status"], "fault", "{h}");
    assert!(
        h["ocsp"]["queue"]["oldest_change_waiting_seconds"]
            .as_i64()
            .unwrap()
            >= 120,
        "{h}"
    );
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A responder rotation that fails after its key was generated (failpoint before the
/// certificate) leaves no key behind in the HSM, as `pkcs11-tool` (OpenSC) sees the token.
#[test]
fn a_failed_rotation_leaves_no_key_in_the_hsm() {
    let ca = Ca::init();
    let o = ca.ecert_env(
        &["ocsp", "rotate", "--ca", "individual"],
        &[("FAILPOINTS", "ocsp::certify=return")],
    );
    assert!(
        !o.status.success(),
        "the failpoint did not fire\n{}",
        show(&o)
    );
    let text = ca.pkcs11_objects(&[]);
    assert!(
        text.contains("ecert-individual-ca"),
        "the listing is not of the CA's token:\n{text}"
    );
    assert!(
        !text.contains("ocsp-individual-"),
        "an uncertified responder key was left behind:\n{text}"
    );
    // And a rotation that succeeds makes exactly one.
    ca.ecert_ok(&["ocsp", "rotate", "--ca", "individual"]);
    let text = ca.pkcs11_objects(&["--type", "privkey"]);
    assert_eq!(text.matches("ocsp-individual-").count(), 1, "{text}");
}
