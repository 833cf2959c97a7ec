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
    let leaf = crate::apply::issue(
        &ca,
        &p,
        &ca.csr("victim", KeyType::P256).csr,
        "to revoke while the token is away",
    );
    // The officer who revokes signs in now (sign-in opens the staff-auth key in the token).
    crate::apply::officers_ready(&ca);
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

    // Away: out of SoftHSM2's token directory (a copy left inside it would be found as a
    // token). Both tokens (ca and pii) go, as when the device is unplugged.
    let tokens = ca.data_dir().join("hsm/tokens");
    let away = ca.data_dir().join("token-away");
    std::fs::rename(&tokens, &away).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    let lost = Instant::now();
    let log_lines_at_loss = std::fs::read_to_string(&log).unwrap().lines().count();
    let (status, h) = wait_health(addr, "HSM fault while the token is away", |_, h| {
        h["hsm"]["status"] == "fault"
    });
    assert_eq!(status, 503, "{h}");
    assert!(h["hsm"]["error"].as_str().is_some(), "{h}");

    crate::apply::revoke_ok(
        &ca,
        &["--serial", &leaf.serial, "--reason", "keyCompromise"],
    );
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

    std::fs::remove_dir(&tokens).unwrap();
    std::fs::rename(&away, &tokens).unwrap();
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
    assert!(
        served_crl_lists(&ca, addr, "/crl/individual.crl", &leaf.serial),
        "serial {} not in the CRL",
        leaf.serial
    );

    // The outage was logged, boundedly: not a line per attempt (the signer retries every
    // 200 ms), and its end too.
    let text = std::fs::read_to_string(&log).unwrap();
    // The access log (one line per request the test makes) is not the outage's log.
    let during: Vec<&str> = text
        .lines()
        .skip(log_lines_at_loss)
        .filter(|l| !l.contains("ecert::access"))
        .collect();
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

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with the reason printed) where this machine cannot mount one: mounting needs
    /// root (CAP_SYS_ADMIN), as `ops/test` has in CI.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("ecert-e2e-tmpfs.")
            .tempdir()
            .unwrap();
        let o = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match o {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs here (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a file until the file system is full; returns it.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0x55u8; 64 * 1024];
        loop {
            if let Err(e) = f.write_all(&block) {
                assert_eq!(e.raw_os_error(), Some(28), "{e}"); // ENOSPC
                break;
            }
        }
        // The last partial blocks.
        let small = [0x55u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Issue 13, defect 3: the data directory (database, CRL files, SoftHSM2 token) is on a small
/// tmpfs that fills up while `serve` runs. A revocation and an approval fail with a named error
/// (the RA answers 503, not 500) and leave nothing half-done; once space is freed both succeed,
/// every later request works (no pooled connection is left inside a failed transaction), the
/// partition CRL that names the certificate lists the revocation within seconds, and no
/// half-written CRL file is left behind. On PostgreSQL the database is elsewhere and keeps
/// working; the CRL files and the token still live on the full disk.
#[test]
fn a_full_disk_fails_cleanly_and_recovers_when_space_is_freed() {
    use crate::ra::{add_clerk, add_gpo, api, serve_ra};
    let Some(fs) = Tmpfs::mount("48m") else {
        return;
    };
    let ca = Ca::init_in(fs.path());
    let sqlite = ca.db() == Db::Sqlite;
    add_gpo(&ca);
    // One clerk enters the application and records the identity check and the fee, the other
    // decides (nobody approves what they entered or checked).
    let token_of = |clerk: &str, scopes: &str| {
        add_clerk(&ca, clerk, "gpo");
        crate::ra::staff_token(&ca, clerk, scopes, 1)
    };
    let entering = token_of("clerk1", "read,enter");
    let token = token_of("clerk2", "read,decide");
    let p = personal();
    let leaf = crate::apply::issue(
        &ca,
        &p,
        &ca.csr("victim", KeyType::P256).csr,
        "to revoke on a full disk",
    );
    crate::apply::officers_ready(&ca);
    let smtp = SmtpServer::start();
    let log = ca.file("serve.log");
    let server = serve_ra(&ca, &smtp.addr, &log);
    let addr = &server.1;

    // An application ready for its decision: entered at the counter, e-mail confirmed,
    // identity and fee recorded.
    let csr = std::fs::read_to_string(ca.csr("applicant", KeyType::P256).csr).unwrap();
    let (st, created) = api(
        addr,
        "POST",
        "/api/v1/applications",
        &entering,
        Some(serde_json::json!({
            "profile": "personal", "surname": "Wong", "given_name": "Siu Ming",
            "email": "sm.wong@example.hk", "hkid": "Z683451(6)", "date_of_birth": "1985-06-01",
            "phone": "+852 2921 2222", "address": "2 Connaught Place, Central",
            "consent_notices": true, "revocation_secret": "my revocation words", "csr": csr,
        })),
    );
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let reference = created["reference"].as_str().unwrap().to_string();
    let secret = created["tracking_secret"].as_str().unwrap().to_string();
    crate::apply::confirm_mailbox(&smtp, addr, "sm.wong@example.hk", &reference, &secret);
    let path = format!("/api/v1/applications/{id}");
    let (st, e) = api(
        addr,
        "POST",
        &format!("{path}/identity"),
        &entering,
        Some(serde_json::json!({"version": 1, "hkid": "Z683451(6)", "card_sighted": true})),
    );
    assert_eq!(st, 204, "{e}");
    let (st, e) = api(
        addr,
        "POST",
        &format!("{path}/fee"),
        &entering,
        Some(serde_json::json!({"amount_cents": 5000, "method": "octopus", "receipt": "GPO-9"})),
    );
    assert_eq!(st, 204, "{e}");
    wait_health(addr, "healthy before the disk fills", |s, _| s == 200);
    let (_, before) = api(addr, "GET", &path, &token, None);

    // The disk fills. SQLite's WAL may still have room in what it allocated before: empty it
    // first, so that the next commit needs new blocks.
    if sqlite {
        ca.sql_query("PRAGMA wal_checkpoint(TRUNCATE)");
    }
    let filler = fs.fill();
    let approve = || Some(serde_json::json!({"version": 1, "decision": "approve"}));
    let revoke = [
        "--serial",
        leaf.serial.as_str(),
        "--reason",
        "keyCompromise",
    ];
    if sqlite {
        // The officer is told the service records nothing now (503), and nothing changed.
        let err = crate::apply::revoke_err(&ca, &revoke);
        assert!(
            err.contains("cannot record anything") && err.contains("nothing was changed"),
            "{err}"
        );
        let (st, e) = api(addr, "POST", &format!("{path}/decision"), &token, approve());
        assert_eq!(st, 503, "{e}");
        assert_eq!(e["error"], "unavailable", "{e}");
        // Nothing half-done: the application waits for its decision, the certificate is not
        // revoked.
        let (st, view) = api(addr, "GET", &path, &token, None);
        assert_eq!(st, 200, "{view}");
        assert_eq!(view["status"], before["status"], "{view}");
        assert_eq!(view["approvals"], 0, "{view}");
        assert!(view["certificate"].is_null(), "{view}");
        // The database answers reads but accepts no writes: /healthz says so.
        let (status, h) = wait_health(addr, "a database accepting no writes", |_, h| {
            h["database"]
                .as_str()
                .is_some_and(|d| d.contains("accepts no writes"))
        });
        assert_eq!(status, 503, "{h}");
    } else {
        // The database is elsewhere: the revocation is recorded and its CRL stored and
        // served, but the CRL file (for a web server in front) cannot be written: a fault.
        crate::apply::revoke_ok(&ca, &revoke);
        let (status, h) = wait_health(addr, "CRL files behind on a full disk", |_, h| {
            h["crl_files"]["status"] == "fault"
        });
        assert_eq!(status, 503, "{h}");
    }
    // Publication fails while the disk is full, leaving no half-written file.
    std::thread::sleep(Duration::from_secs(3));
    let tmp_files = |dir: &std::path::Path| -> Vec<String> {
        walk(dir)
            .into_iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    };
    assert_eq!(tmp_files(ca.data_dir()), Vec::<String>::new());

    // Space is freed: everything works again, by itself.
    std::fs::remove_file(&filler).unwrap();
    if sqlite {
        crate::apply::revoke_ok(&ca, &revoke);
    }
    let (st, e) = api(addr, "POST", &format!("{path}/decision"), &token, approve());
    assert_eq!(st, 200, "{e}");
    // Every pooled connection is usable: no request fails on one left inside a transaction.
    for _ in 0..12 {
        let (st, v) = api(addr, "GET", &path, &token, None);
        assert_eq!(st, 200, "{v}");
        let (st, v) = api(addr, "GET", "/api/v1/applications", &token, None);
        assert_eq!(st, 200, "{v}");
    }
    let (_, view) = api(addr, "GET", &path, &token, None);
    assert_eq!(view["status"], "issued", "{view}");

    // The partition CRL named in the certificate lists the revocation within seconds.
    let (_, cdp) = aia_and_crl_uris(&leaf.cert.parse());
    let partition = cdp[0].strip_prefix(BASE_URL).unwrap().to_string();
    let freed = Instant::now();
    loop {
        if served_crl_lists(&ca, addr, &partition, &leaf.serial) {
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(15),
            "{partition} does not list {} {:?} after the space was freed",
            leaf.serial,
            freed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // And so does its file, written again from the database.
    let file = ca
        .data_dir()
        .join("crl")
        .join(partition.rsplit('/').next().unwrap());
    let (_, h) = wait_health(addr, "healthy once space is freed", |s, h| {
        s == 200 && h["crl_files"]["status"] == "ok"
    });
    assert_eq!(h["crl_files"]["behind"], serde_json::json!([]), "{h}");
    // The last CRL fetched above was the partition: its file is the same bytes.
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(ca.file("served.crl")).unwrap()
    );
    assert_eq!(tmp_files(ca.data_dir()), Vec::<String>::new());
    drop(server);
    drop(ca);
}

/// Whether the CRL served at `path` lists `serial`, as `openssl crl -text` reads it.
fn served_crl_lists(ca: &Ca, addr: &str, path: &str, serial: &str) -> bool {
    let (code, _, body) = get(addr, path);
    assert_eq!(code, 200, "{path}");
    let file = ca.file("served.crl");
    std::fs::write(&file, body).unwrap();
    let o = openssl(
        ca.data_dir(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            file.to_str().unwrap(),
            "-noout",
            "-text",
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    crl_text_lists(&String::from_utf8_lossy(&o.stdout), serial)
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
