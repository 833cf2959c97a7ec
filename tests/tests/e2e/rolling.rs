//! No failed request across a rolling restart (issue 17, docs/OPERATIONS.md "Rolling
//! restart"): two public instances behind a real load balancer (HAProxy, Debian's, checking
//! `/readyz`) under a steady OCSP and page load; each is stopped with SIGTERM and started again
//! in turn; the clients see no failed request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ecert_e2e::*;

use crate::serve::{spawn_listening, start, Server};

/// One request on a new connection; the status and body, or why it failed.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    ctype: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: pki.example.hk\r\nConnection: close\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    s.write_all(body).map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no answer ({} bytes)", raw.len()))?;
    let status = String::from_utf8_lossy(&raw[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    Ok((status, raw[split + 4..].to_vec()))
}

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A public instance (`--no-signer`, pages forwarded to the signer) on a fixed port.
fn public_instance(ca: &Ca, port: u16, upstream: &str) -> Server {
    spawn_listening(
        ca.command(
            &[
                "serve",
                "--no-signer",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--ra-upstream",
                &format!("http://{upstream}"),
            ],
            &[],
        ),
        Stdio::null(),
    )
}

fn wait_ready(addr: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while !matches!(
        request(addr, "GET", "/readyz", "text/plain", b""),
        Ok((200, _))
    ) {
        assert!(Instant::now() < until, "{addr} not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_rolling_restart_of_the_public_instances_fails_no_request() {
    let ca = Ca::init();
    // The load balancer checks /readyz every 100 ms: a second of draining is plenty.
    ca.append_config("[http]\ndrain_seconds = 1\n");
    let leaf = crate::apply::issue(
        &ca,
        &crate::common::personal(),
        &ca.csr("rolling", KeyType::P256).csr,
        "the certificate asked about",
    );
    let issuer = ca.export("individual").path;
    let req = ca.file("rolling-req.der");
    let o = Command::new("openssl")
        .args(["ocsp", "-no_nonce", "-issuer"])
        .arg(&issuer)
        .arg("-cert")
        .arg(&leaf.cert.path)
        .arg("-reqout")
        .arg(&req)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let ocsp_request = std::fs::read(&req).unwrap();

    let signer = start(&ca);
    let ports = [free_port(), free_port()];
    let mut instances: Vec<Server> = ports
        .iter()
        .map(|p| public_instance(&ca, *p, &signer.1))
        .collect();
    // No retries in the balancer: a request it sends to an instance that has stopped accepting
    // fails to the client, so only the instance's own draining (`/readyz` 503 while it still
    // serves) can keep the count at zero — with `drain_seconds = 0` this test fails.
    let lb_port = free_port();
    let cfg = ca.file("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 512\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 15s\n  timeout server 15s\n  \
             retries 0\n\
             frontend fe\n  bind 127.0.0.1:{lb_port}\n  default_backend be\n\
             backend be\n  option http-buffer-request\n  option httpchk GET /readyz\n  http-check expect status 200\n  \
             default-server inter 100ms fall 1 rise 2\n  server a 127.0.0.1:{} check\n  server b 127.0.0.1:{} check\n",
            ports[0], ports[1]
        ),
    )
    .unwrap();
    let haproxy = Haproxy(
        Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (Debian package haproxy): run ops/test"),
    );
    let lb = format!("127.0.0.1:{lb_port}");
    wait_ready(&lb);
    for p in ports {
        wait_ready(&format!("127.0.0.1:{p}"));
    }
    std::thread::sleep(Duration::from_millis(500));

    let stop = AtomicBool::new(false);
    let ok = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for client in 0..4 {
            let (stop, ok, failures, lb, ocsp_request) =
                (&stop, &ok, &failures, &lb, &ocsp_request);
            scope.spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    // OCSP POSTs, and public pages: the form (forwarded to the signer), the CA
                    // certificate, the CRL.
                    let (what, r) = match (client + i) % 4 {
                        0 | 1 => (
                            "POST /ocsp",
                            request(
                                lb,
                                "POST",
                                "/ocsp",
                                "application/ocsp-request",
                                ocsp_request,
                            ),
                        ),
                        2 => (
                            "GET /apply",
                            request(lb, "GET", "/apply", "text/plain", b""),
                        ),
                        _ => (
                            "GET /crl/individual.crl",
                            request(lb, "GET", "/crl/individual.crl", "text/plain", b""),
                        ),
                    };
                    match r {
                        Ok((200, body)) if !body.is_empty() => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((st, body)) => failures.lock().unwrap().push(format!(
                            "{what}: {st} {}",
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                        )),
                        Err(e) => failures.lock().unwrap().push(format!("{what}: {e}")),
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(1));
        // Each instance in turn: SIGTERM, it drains and exits; started again on its port.
        for (k, port) in ports.iter().enumerate() {
            let before = ok.load(Ordering::Relaxed);
            let exit = crate::serve::terminate(&mut instances[k], 30);
            assert!(exit.success(), "instance {k} exited {exit:?}");
            instances[k] = public_instance(&ca, *port, &signer.1);
            wait_ready(&format!("127.0.0.1:{port}"));
            // The balancer sees it back (two good checks) before the next one stops.
            std::thread::sleep(Duration::from_millis(1000));
            assert!(
                ok.load(Ordering::Relaxed) > before,
                "no request was answered while instance {k} restarted"
            );
        }
        stop.store(true, Ordering::SeqCst);
    });
    drop(haproxy);
    let failures = failures.into_inner().unwrap();
    let answered = ok.load(Ordering::Relaxed);
    eprintln!(
        "rolling restart: {answered} requests answered, {} failed",
        failures.len()
    );
    assert!(
        answered > 100,
        "too little load to show anything: {answered}"
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failures.len(),
        answered + failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Each stop was recorded as one.
    let stops = ca.sql_query("SELECT COUNT(*) FROM audit_log WHERE kind = 'service.stopped'");
    assert!(stops.trim().parse::<i64>().unwrap() >= 2, "{stops}");
}
