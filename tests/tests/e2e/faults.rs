//! Faults injected into a running `ecert serve`, as an operator meets them in production
//! (issue 13): the HSM token lost and restored, and a full disk. The clock and database
//! faults live with the features they break (`crl.rs`, `serve.rs`, `ocsp.rs`).
use std::process::Stdio;
use std::time::{Duration, Instant};

use ecert_e2e::*;

use crate::common::*;
use crate::ocsp::{chain, wait_status};
use crate::serve::{get, spawn_listening};

fn health(addr: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = get(addr, "/healthz");
    (status, serde_json::from_slice(&body).unwrap())
}

/// Polls `/healthz` until `pred` holds (or 30 s pass); returns the last answer.
fn wait_health(
    addr: &str,
    what: &str,
    pred: impl Fn(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, h) = health(addr);
        if pred(status, &h) {
            return (status, h);
        }
        assert!(Instant::now() < deadline, "{what}: {status} {h}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Issue 13, defect 1: the SoftHSM2 token directory is moved away while `serve` runs, a
/// certificate is revoked meanwhile, and the token is put back. `/healthz` says the HSM is at
/// fault while it is away (and the revocation waits for its response), the log says so a
/// bounded number of times, and once the token is back — with no restart — OCSP answers
/// `revoked` within seconds, the CRL lists the serial and health is ok again.
#[test]
fn a_lost_hsm_token_is_used_again_when_it_returns() {
    let ca = Ca::init();
    let chain = chain(&ca);
    let p = personal();
    let leaf = ca.issue(
        p.profile,
        &ca.csr("victim", KeyType::P256).csr,
        &p.args,
        "to revoke while the token is away",
    );
    let log = ca.file("serve.log");
    let server = spawn_listening(
        ca.command(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--crl-watch-seconds",
                "1",
            ],
            &[("ECERT_LOG", "info")],
        ),
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let addr = &server.1;
    let resp = ca.file("resp.der");
    let issuer = &chain.individual;
    wait_status(
        &ca,
        addr,
        &chain,
        issuer,
        &leaf.cert.path,
        "good",
        &resp,
        "before",
    );
    wait_health(addr, "healthy at start", |s, _| s == 200);

    // Away: out of SoftHSM2's token directory (a copy left inside it would be found as a token).
    let tokens = ca.data_dir().join("hsm/tokens");
    let token_dirs: Vec<_> = std::fs::read_dir(&tokens)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(token_dirs.len(), 1, "{token_dirs:?}");
    let token = &token_dirs[0];
    let away = ca.data_dir().join("token-away");
    std::fs::rename(token, &away).unwrap();
    let lost = Instant::now();
    let log_lines_at_loss = std::fs::read_to_string(&log).unwrap().lines().count();
    let (status, h) = wait_health(addr, "HSM fault while the token is away", |_, h| {
        h["hsm"]["status"] == "fault"
    });
    assert_eq!(status, 503, "{h}");
    assert!(h["hsm"]["error"].as_str().is_some(), "{h}");

    ca.ecert_ok(&[
        "revoke",
        "--serial",
        &leaf.serial,
        "--reason",
        "keyCompromise",
    ]);
    // Nothing can sign the change while the token is away: the old answer stands, and health
    // goes on saying why.
    std::thread::sleep(Duration::from_secs(8));
    let out = crate::ocsp::ocsp_post(&ca, addr, &chain, issuer, &leaf.cert.path, false, &resp);
    assert!(
        out.contains(&format!("{}: good", leaf.cert.path.display())),
        "a response was signed with the token away?\n{out}"
    );
    let (status, h) = health(addr);
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["hsm"]["status"], "fault", "{h}");
    assert!(h["hsm"]["fault_seconds"].as_i64().unwrap() >= 5, "{h}");
    let (_, _, metrics) = get(addr, "/metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("\necert_hsm_ok 0\n"), "{metrics}");

    std::fs::rename(&away, token).unwrap();
    let back = Instant::now();
    let away_for = back - lost;
    // Revoked within seconds of the token's return, with no restart.
    wait_status(
        &ca,
        addr,
        &chain,
        issuer,
        &leaf.cert.path,
        "revoked",
        &resp,
        "after the token is back",
    );
    let revoked_after = back.elapsed();
    assert!(
        revoked_after < Duration::from_secs(12),
        "revoked only {revoked_after:?} after the token came back"
    );
    let (_, h) = wait_health(addr, "healthy again", |s, h| {
        s == 200 && h["crl"]["individual"]["behind_revocations"] == serde_json::json!([])
    });
    assert_eq!(h["hsm"]["status"], "ok", "{h}");

    // The CRL that names the certificate lists it, judged by openssl.
    let crl = ca.file("individual.crl");
    let (code, _, body) = get(addr, "/crl/individual.crl");
    assert_eq!(code, 200);
    std::fs::write(&crl, body).unwrap();
    let o = openssl(
        ca.data_dir(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            crl.to_str().unwrap(),
            "-noout",
            "-text",
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_uppercase();
    assert!(
        text.contains(&leaf.serial.to_uppercase()),
        "serial {} not in the CRL:\n{text}",
        leaf.serial
    );

    // The outage was logged, boundedly: not a line per attempt (the signer retries every
    // 200 ms), and its end too.
    let text = std::fs::read_to_string(&log).unwrap();
    let during: Vec<&str> = text.lines().skip(log_lines_at_loss).collect();
    eprintln!(
        "token away {away_for:?}, revoked {revoked_after:?} after its return; {} log lines:\n{}",
        during.len(),
        during.join("\n")
    );
    assert!(
        during.iter().any(|l| l.contains("PKCS#11 token lost")),
        "{text}"
    );
    assert!(
        during.iter().any(|l| l.contains("PKCS#11 token back")),
        "{text}"
    );
    assert!(
        during.len() <= 30,
        "{} log lines for a {away_for:?} outage",
        during.len()
    );
}
