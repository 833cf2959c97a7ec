//! `ecert serve`: the relying-party HTTP face over a real socket, and CRL republication after a
//! revocation made by another process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ecert_e2e::*;

use crate::common::*;

/// An HTTP response: status, headers (lower-case names), body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: pki.example.hk\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// `GET /healthz`, its JSON.
pub fn healthz(addr: &str) -> serde_json::Value {
    serde_json::from_slice(&get(addr, "/healthz").2).unwrap()
}

/// A plain HTTP/1.1 GET: (status, content-type, body).
pub fn get(addr: &str, path: &str) -> (u16, String, Vec<u8>) {
    let r = http(addr, "GET", path, &[], b"");
    let ctype = r.header("content-type").unwrap_or_default().to_string();
    (r.status, ctype, r.body)
}

/// A running `ecert serve`: the process, its address, and (for a signer) the marker file that
/// tells the harness's [`crate::ra::with_service`] where this installation's service answers.
pub struct Server(pub Child, pub String, Option<std::path::PathBuf>);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(m) = &self.2 {
            let _ = std::fs::remove_file(m);
        }
    }
}

pub fn start(ca: &Ca) -> Server {
    start_with(ca, &[])
}

/// `ecert serve --listen 127.0.0.1:0 --crl-watch-seconds 1 EXTRA`, once it listens.
pub fn start_with(ca: &Ca, extra: &[&str]) -> Server {
    let mut args = vec!["serve", "--crl-watch-seconds", "1"];
    if !extra.contains(&"--listen") {
        args.extend(["--listen", "127.0.0.1:0"]);
    }
    args.extend_from_slice(extra);
    spawn_listening(ca.command(&args, &[]), Stdio::null())
}

/// [`start`] with the service's clock moved by `offset` (libfaketime's `FAKETIME`, e.g.
/// `+340d`): retention, reminders and expiry seen from the future.
pub fn start_faked(ca: &Ca, offset: &str) -> Server {
    let preload = crate::ocsp::libfaketime();
    spawn_listening(
        ca.command(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--crl-watch-seconds",
                "1",
            ],
            &[
                ("LD_PRELOAD", preload.to_str().unwrap()),
                ("FAKETIME", offset),
            ],
        ),
        Stdio::null(),
    )
}

/// Sends SIGTERM to `server` and waits (up to `secs`) for it to exit; its exit status.
pub fn terminate(server: &mut Server, secs: u64) -> std::process::ExitStatus {
    let pid = server.0.id().to_string();
    let o = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .output()
        .unwrap();
    assert!(o.status.success());
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < until, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`start_with`] on another data directory of the installation (a copy, as on another host).
pub fn start_in(ca: &Ca, dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--crl-watch-seconds",
        "1",
    ];
    args.extend_from_slice(extra);
    // Its log beside its data, for a test's failure message (`log_tail`).
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    spawn_listening(ca.command_in(dir, &args, &[]), Stdio::from(log))
}

/// The last lines of a data directory's `serve.log` ([`start_in`]).
pub fn log_tail(dir: &std::path::Path) -> String {
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Starts a server process and waits for its first line, `listening on http(s)://ADDR`.
pub fn spawn_listening(mut c: std::process::Command, stderr: Stdio) -> Server {
    let args: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // A signing `serve` of a data directory (not a front instance): where its service answers.
    // (`Ca::command` gives `--data-dir DIR SUBCOMMAND …`.)
    let dir = args.iter().position(|a| a == "--data-dir");
    let marker = dir
        .filter(|i| args.get(i + 2).map(String::as_str) == Some("serve"))
        .filter(|_| {
            !args
                .iter()
                .any(|a| a == "--no-signer" || a == "--ra-upstream" || a == "--standby")
        })
        .and_then(|i| args.get(i + 1))
        .map(|d| std::path::Path::new(d).join(".e2e-serving"));
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .or_else(|| line.trim().strip_prefix("listening on https://"))
        .unwrap_or_else(|| panic!("first line {line:?}"))
        .to_string();
    if let Some(m) = &marker {
        std::fs::write(m, &addr).unwrap();
    }
    Server(child, addr, marker)
}

#[test]
fn serves_ca_certs_crls_health_and_republishes_after_revocation() {
    // Partitioned by configuration (the Individual CA names its full CRL by default), so a
    // revocation republishes the full CRL and one partition.
    let ca = Ca::new();
    std::fs::write(
        ca.data_dir().join("ecert.toml"),
        format!("{CONFIG_TOML}[crl]\nindividual_partitions = 16\n"),
    )
    .unwrap();
    ca.ecert_ok(&["init"]);
    let case = personal();
    let csr = ca.csr("a", KeyType::P256);
    let leaf = crate::apply::issue(&ca, &case, &csr.csr, "before serving");
    let server = start(&ca);
    let addr = &server.1;

    // CA certificates: DER, application/pkix-cert, the same bytes `ca export` gives.
    for name in ["root", "tls-root", "individual", "server"] {
        let (status, ctype, body) = get(addr, &format!("/ca/{name}.crt"));
        assert_eq!(
            (status, ctype.as_str()),
            (200, "application/pkix-cert"),
            "/ca/{name}.crt"
        );
        assert_eq!(body, ca.export(name).der, "/ca/{name}.crt bytes");
    }
    assert_eq!(get(addr, "/ca/nosuch.crt").0, 404);
    assert_eq!(get(addr, "/crl/root.crt").0, 404);

    // CRLs were published at start; each verifies under its CA (openssl).
    let (status, ctype, body) = get(addr, "/crl/individual.crl");
    assert_eq!((status, ctype.as_str()), (200, "application/pkix-crl"));
    let crl_path = ca.file("served.crl");
    std::fs::write(&crl_path, &body).unwrap();
    let issuing = ca.export("individual");
    let o = openssl(
        ca.data_dir(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            crl_path.to_str().unwrap(),
            "-CAfile",
            issuing.path.to_str().unwrap(),
            "-noout",
        ],
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("verify OK"),
        "{}",
        show(&o)
    );

    let (status, ctype, body) = get(addr, "/healthz");
    let health = String::from_utf8_lossy(&body);
    assert_eq!(
        (status, ctype.as_str()),
        (200, "application/json"),
        "{health}"
    );
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    let h: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(h["hsm"]["status"], "ok", "{health}");
    let (status, _, body) = get(addr, "/metrics");
    let metrics = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(
        // The leaf and the two OCSP responder certificates.
        metrics.contains("ecert_certificates{state=\"issued\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ecert_crl_number{ca=\"individual\",crl=\"full\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("\necert_hsm_ok 1\n"), "{metrics}");
    // Requests by route class and status, their latency, the HSM's signatures, the queues and
    // applications by state (issue 17) — route classes only, never a path.
    assert!(
        metrics.contains("ecert_http_requests_total{route=\"health\",code=\"200\"}")
            && metrics.contains("ecert_http_request_duration_seconds_count{route=\"health\"}"),
        "{metrics}"
    );
    let signs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ecert_hsm_signs_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(signs > 0, "{metrics}");
    assert!(
        metrics.contains("ecert_hsm_sign_duration_seconds_count")
            && metrics.contains("ecert_queue_length{queue=\"ocsp\"}")
            && metrics.contains("ecert_applications{state=\"issued\"} 1"),
        "{metrics}"
    );

    // The leaf's partition is served at the URL in its CRL distribution point.
    let (_, cdp) = aia_and_crl_uris(&leaf.cert.parse());
    let partition_path = cdp[0]
        .strip_prefix(BASE_URL)
        .unwrap_or_else(|| panic!("CDP {cdp:?}"))
        .to_string();
    let partition = partition_path
        .trim_start_matches("/crl/individual-")
        .trim_end_matches(".crl")
        .to_string();
    assert!(partition.starts_with('p'), "{partition_path}");
    let (status, ctype, _) = get(addr, &partition_path);
    assert_eq!((status, ctype.as_str()), (200, "application/pkix-crl"));
    for missing in [
        "/crl/individual-p16.crl",
        "/crl/individual-p01.crl",
        "/crl/root-p0.crl",
    ] {
        assert_eq!(get(addr, missing).0, 404, "{missing}");
    }
    let numbers_before = crl_numbers(addr);
    // 16 partitions and the full CRL of each issuing CA, and each root's CRL.
    assert_eq!(numbers_before.len(), 2 * 17 + 2, "{numbers_before:?}");

    // A revocation by another process (the CLI, no signer lock) reaches the served CRL.
    crate::apply::revoke_ok(
        &ca,
        &["--serial", &leaf.serial, "--reason", "keyCompromise"],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, body) = get(addr, "/crl/individual.crl");
        std::fs::write(&crl_path, &body).unwrap();
        let o = openssl(
            ca.data_dir(),
            &[
                "crl",
                "-inform",
                "DER",
                "-in",
                crl_path.to_str().unwrap(),
                "-noout",
                "-text",
            ],
        );
        if crl_text_lists(&String::from_utf8_lossy(&o.stdout), &leaf.serial) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the served CRL did not list {} within 20 s",
            leaf.serial
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    pkilint(
        "lint_crl",
        &["-t", "CRL", "-p", "PKIX"],
        &[&crl_path],
        "served CRL",
    );
    // ... and its partition; the other partitions are not rebuilt for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let numbers_after = loop {
        let numbers = crl_numbers(addr);
        let changed: Vec<_> = numbers
            .iter()
            .filter(|(k, v)| numbers_before.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        if changed.len() >= 2 {
            break numbers;
        }
        assert!(
            Instant::now() < deadline,
            "partition not republished: {changed:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let mut changed: Vec<_> = numbers_after
        .iter()
        .filter(|(k, v)| numbers_before.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    changed.sort();
    assert_eq!(
        changed,
        vec![
            "individual/full".to_string(),
            format!("individual/{partition}")
        ],
        "only the full CRL and the leaf's partition are republished"
    );
    let (_, _, body) = get(addr, &partition_path);
    let part_path = ca.file("served-partition.crl");
    std::fs::write(&part_path, &body).unwrap();
    let o = openssl(
        ca.data_dir(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            part_path.to_str().unwrap(),
            "-noout",
            "-text",
        ],
    );
    assert!(
        crl_text_lists(&String::from_utf8_lossy(&o.stdout), &leaf.serial),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let text = String::from_utf8_lossy(&o.stdout).to_uppercase();
    assert!(
        text.contains("ISSUING DISTRIBUTION POINT: CRITICAL"),
        "{text}"
    );
}

/// `/healthz` and `/metrics` are answered from what the service already holds: a burst of
/// unauthenticated requests does not make the database count the certificates table once per
/// request (issue 11, defect 9). The store is read every 2 s (`ecert_store_probes_total`),
/// whatever the request rate.
#[test]
fn health_and_metrics_do_not_query_the_database_per_request() {
    let ca = Ca::init();
    let server = start(&ca);
    let addr = &server.1;
    let probes = || -> u64 {
        let (_, _, body) = get(addr, "/metrics");
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix("ecert_store_probes_total "))
            .unwrap_or_else(|| panic!("no ecert_store_probes_total"))
            .trim()
            .parse()
            .unwrap()
    };
    let started = Instant::now();
    let before = probes();
    for _ in 0..40 {
        assert_eq!(get(addr, "/healthz").0, 200);
        assert_eq!(get(addr, "/metrics").0, 200);
    }
    let after = probes();
    let elapsed = started.elapsed().as_secs();
    assert!(
        after - before <= elapsed / 2 + 2,
        "{} store probes for 81 requests in {elapsed} s",
        after - before
    );
}

/// Slow clients cannot hold the listener (issue 11, defect 6): 25 connections that trickle a
/// request head (slowloris) and 25 that trickle a request body are cut, while OCSP and the CRLs
/// keep answering; an idle keep-alive connection is closed too; past `max_connections` a new
/// connection is closed at once.
#[test]
fn slow_clients_are_cut_while_ocsp_keeps_answering() {
    let ca = Ca::init();
    let case = personal();
    let csr = ca.csr("a", KeyType::P256);
    let leaf = crate::apply::issue(&ca, &case, &csr.csr, "before serving");
    ca.append_config(
        "[http]\nmax_connections = 60\nheader_timeout_seconds = 2\nrequest_timeout_seconds = 3",
    );
    let server = start(&ca);
    let addr = server.1.clone();
    let individual = ca.export("individual");

    // 50 slow clients, each sending a byte every 500 ms: 25 heads that never end, 25 bodies
    // that never complete — to OCSP (answered before the router, issue 16) and to a page
    // (through the router). Each records when the server closed it.
    let started = Instant::now();
    let slow: Vec<_> = (0..50)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || -> Option<Duration> {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                let head = match i % 4 {
                    0 | 2 => "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_string(),
                    1 => "POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\nContent-Length: 1000\r\n\r\n".to_string(),
                    _ => "POST /track HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n".to_string(),
                };
                if s.write_all(head.as_bytes()).is_err() {
                    return Some(started.elapsed());
                }
                let begun = Instant::now();
                while begun.elapsed() < Duration::from_secs(20) {
                    let mut buf = [0u8; 512];
                    match s.read(&mut buf) {
                        Ok(0) => return Some(begun.elapsed()),
                        Ok(_) => {} // a 408 before the close
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => return Some(begun.elapsed()),
                    }
                    if s.write_all(b"a").is_err() {
                        return Some(begun.elapsed());
                    }
                    std::thread::sleep(Duration::from_millis(400));
                }
                None
            })
        })
        .collect();
    // Meanwhile relying parties are answered.
    std::thread::sleep(Duration::from_millis(500));
    let status = crate::ra::ocsp_status(&ca, &addr, &individual.path, &leaf.cert.path);
    assert!(status.contains(": good"), "{status}");
    assert_eq!(get(&addr, "/crl/individual.crl").0, 200);
    for (i, t) in slow.into_iter().enumerate() {
        let cut = t.join().unwrap();
        assert!(
            cut.is_some_and(|d| d < Duration::from_secs(10)),
            "slow client {i} was not cut: {cut:?}"
        );
    }
    // The slow bodies were answered 408 and counted, on both paths.
    let (_, _, metrics) = get(&addr, "/metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    for route in ["ocsp", "pages"] {
        let line = format!("ecert_http_requests_total{{route=\"{route}\",code=\"408\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0, |n| n.trim().parse().unwrap());
        assert!(
            n >= 10,
            "{route}: {n} slow bodies counted as 408\n{metrics}"
        );
    }

    // An idle keep-alive connection is closed after the header timeout.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{got:?}"
    );
    assert!(closed, "an idle keep-alive connection stayed open");

    // Past max_connections, a new connection is closed at once; the held ones still work.
    let held: Vec<_> = (0..60)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(&addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        matches!(extra.read(&mut buf), Ok(0) | Err(_)),
        "a connection past the cap was served"
    );
    drop(held);
}

/// `ecert_crl_number{ca=..,crl=..}` from `/metrics`, keyed `ca/crl`.
fn crl_numbers(addr: &str) -> std::collections::BTreeMap<String, u64> {
    let (_, _, body) = get(addr, "/metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| l.strip_prefix("ecert_crl_number{ca=\""))
        .filter_map(|l| {
            let (ca, rest) = l.split_once("\",crl=\"")?;
            let (crl, n) = rest.split_once("\"} ")?;
            Some((format!("{ca}/{crl}"), n.trim().parse().ok()?))
        })
        .collect()
}

/// Issue 13, defect 4: a revocation that does not reach the CRL its certificate names is a
/// fault in `/healthz`, not "ok". CRL publication is made to fail (failpoint `crl::publish`)
/// after the CRLs were published; a revocation then leaves the full CRL behind, and past four
/// watch intervals (10 s at least) `/healthz` answers 503 naming the CRL; a signer without the
/// fault publishes and health is ok again.
#[test]
fn health_faults_when_a_revocation_is_not_in_its_crl() {
    let ca = Ca::init();
    let p = personal();
    let csr = ca.csr("behind", KeyType::P256);
    let leaf = crate::apply::issue(&ca, &p, &csr.csr, "to revoke");
    ca.ecert_ok(&["crl", "publish"]);
    let failing = spawn_listening(
        ca.command(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--crl-watch-seconds",
                "1",
            ],
            &[("FAILPOINTS", "crl::publish=return")],
        ),
        Stdio::null(),
    );
    crate::apply::revoke_ok(
        &ca,
        &["--serial", &leaf.serial, "--reason", "keyCompromise"],
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (status, _, body) = get(&failing.1, "/healthz");
        let h: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let behind = &h["crl"]["individual"]["behind_revocations"];
        let late = behind.as_array().is_some_and(|b| {
            b.iter()
                .any(|x| x["crl"] == "individual.crl" && x["seconds"].as_i64() > Some(10))
        });
        if late {
            assert_eq!(status, 503, "{h}");
            // And the publisher's failure itself, with its error, CRL by CRL.
            let failing = h["crl_publication"]["failing"].as_array().unwrap();
            assert!(
                failing.iter().any(|f| f["crl"] == "individual.crl"
                    && f["seconds"].as_i64() > Some(10)
                    && f["error"].as_str().is_some()),
                "{h}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no fault for a revocation missing from its CRL; set FAILPOINTS support (cargo build --features failpoints): {h}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(failing);
    let healthy = start(&ca);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = get(&healthy.1, "/healthz");
        let h: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if status == 200 && h["crl"]["individual"]["behind_revocations"] == serde_json::json!([]) {
            assert_eq!(
                h["crl_publication"]["failing"],
                serde_json::json!([]),
                "{h}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{h}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Issue 14 (audit): the service's start and its stop on SIGTERM are audit events, naming the
/// role and a fingerprint of the effective configuration.
#[test]
fn the_service_start_and_stop_are_audited() {
    let ca = Ca::init();
    let mut server = start(&ca);
    let (status, _, _) = get(&server.1, "/healthz");
    assert!(status == 200 || status == 503);
    let exit = terminate(&mut server, 20);
    assert!(exit.success(), "{exit:?}");
    let rows =
        ca.sql_query("SELECT kind, detail FROM audit_log WHERE kind LIKE 'service.%' ORDER BY seq");
    let lines: Vec<&str> = rows.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2, "{rows}");
    assert!(lines[0].starts_with("service.started"), "{rows}");
    assert!(lines[1].starts_with("service.stopped"), "{rows}");
    for l in lines {
        assert!(
            l.contains("\"role\":\"signer\"") && l.contains("config_sha256"),
            "{l}"
        );
    }
}

/// Issue 17: the systemd units in ops/systemd are valid for systemd (`systemd-analyze
/// verify`), hardened (a dedicated user, the data directory the only writable path, no new
/// privileges), and run ecert with arguments it accepts.
#[test]
fn the_systemd_units_verify_and_name_arguments_ecert_accepts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/systemd");
    let scratch = tempfile::tempdir().unwrap();
    let bin = ecert_bin();
    let mut units = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".service") {
            continue;
        }
        units += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        for line in [
            "User=ecert",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/ecert",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=",
        ] {
            assert!(
                text.lines().any(|l| l.trim() == line),
                "{name} lacks {line}"
            );
        }
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("ReadWritePaths="))
                .count(),
            1,
            "{name}: the data directory is the only writable path"
        );
        // The binary where the test built it, for systemd-analyze to find.
        let local = scratch.path().join(&name);
        std::fs::write(
            &local,
            text.replace("/usr/local/bin/ecert", &bin.display().to_string()),
        )
        .unwrap();
        let o = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&local)
            .output()
            .expect("systemd-analyze (Debian package systemd)");
        assert!(
            o.status.success() && o.stderr.is_empty() && o.stdout.is_empty(),
            "{name}: {}",
            show(&o)
        );
        // What ExecStart gives ecert parses (clap refuses an unknown option before --help).
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/ecert "))
            .unwrap_or_else(|| panic!("{name}: no ExecStart of ecert"));
        let mut args: Vec<&str> = exec.split_whitespace().collect();
        args.push("--help");
        let o = std::process::Command::new(&bin)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: ecert {}: {}",
            args.join(" "),
            show(&o)
        );
    }
    assert_eq!(units, 4, "signer, standby, public, perspective");
}
