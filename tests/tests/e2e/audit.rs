//! The hash-chained audit trail: intact after issuances; an edited record, a removed middle
//! record and cut-off last records are each found by `audit verify` (exit 1, the finding named).
//! The tampering is done the way an attacker with database access would: append-only triggers
//! disabled (SQLite: dropped; PostgreSQL: `DISABLE TRIGGER ALL`), then UPDATE/DELETE.

use std::process::Output;

use ecert_e2e::*;

use crate::common::*;

/// A CA with a few issuances; returns it and the number of audit records.
fn ca_with_history() -> (Ca, usize) {
    let ca = Ca::init();
    issue_and_verify_personal(&ca, "a", "history 1");
    let srv = server();
    let csr = ca.csr("b", KeyType::P256);
    crate::apply::issue(&ca, &srv, &csr.csr, "history 2");
    // A signer command ends with a signed checkpoint over everything so far (the services the
    // harness stops are killed, so their last records may follow the last checkpoint).
    ca.ecert_ok(&["crl", "publish"]);
    let n = ca.audit_ok();
    let rows: usize = ca
        .sql_query("SELECT COUNT(*) FROM audit_log")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        n, rows,
        "`audit verify` counted {n} records, the audit_log table has {rows}"
    );
    // 3 CAs created + at least one record per issuance.
    assert!(
        n >= 5,
        "only {n} audit records after init and two issuances"
    );
    (ca, n)
}

/// `audit verify` must exit 1 and report a finding containing `keyword` (and `also`, if given).
fn verify_finds(ca: &Ca, keyword: &str, also: Option<&str>, ctx: &str) {
    let o = ca.ecert(&["audit", "verify"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "[{ctx}] `audit verify` should exit 1\n{}",
        show(&o)
    );
    assert!(!text.contains("panicked"), "[{ctx}] panic\n{}", show(&o));
    let lower = text.to_lowercase();
    assert!(
        lower.contains(keyword),
        "[{ctx}] no finding mentions {keyword:?}\n{}",
        show(&o)
    );
    if let Some(a) = also {
        assert!(
            text.contains(a),
            "[{ctx}] the findings do not name {a:?}\n{}",
            show(&o)
        );
    }
    assert!(
        !lower.contains("intact"),
        "[{ctx}] reported intact\n{}",
        show(&o)
    );
}

#[test]
fn audit_detects_altered_record() {
    let (ca, n) = ca_with_history();
    let seq = n / 2;
    ca.tamper(&format!(
        "UPDATE audit_log SET detail = '{{\"tampered\":true}}' WHERE seq = {seq};"
    ));
    verify_finds(&ca, "altered", Some(&seq.to_string()), "edited detail");
}

#[test]
fn audit_detects_missing_record() {
    let (ca, n) = ca_with_history();
    let seq = n / 2;
    ca.tamper(&format!("DELETE FROM audit_log WHERE seq = {seq};"));
    verify_finds(
        &ca,
        "missing",
        Some(&seq.to_string()),
        "deleted middle record",
    );
}

#[test]
fn audit_detects_truncation() {
    let (ca, n) = ca_with_history();
    ca.tamper(&format!("DELETE FROM audit_log WHERE seq > {};", n - 2));
    verify_finds(&ca, "truncated", None, "deleted the last two records");
}

/// Cutting the tail and rewriting `audit_head` to match defeats the hash chain alone; the
/// HSM-signed checkpoint written when the last command finished still names the cut records.
#[test]
fn audit_detects_truncation_with_head_rewritten() {
    let (ca, n) = ca_with_history();
    let keep = n - 2;
    ca.tamper(&format!(
        "DELETE FROM audit_log WHERE seq > {keep}; \
         UPDATE audit_head SET seq = {keep}, hash = (SELECT hash FROM audit_log WHERE seq = {keep}) WHERE id = 1;"
    ));
    verify_finds(
        &ca,
        "truncated",
        Some(&n.to_string()),
        "tail cut and head rewritten",
    );
}

/// A checkpoint whose signature was not made by the audit key is reported; verifying with the
/// exported public key (`ecert audit key`, for auditors without the HSM) gives the same answer.
#[test]
fn audit_detects_forged_checkpoint_and_verifies_with_exported_key() {
    let (ca, _) = ca_with_history();
    let key = ca.ecert_ok(&["audit", "key"]);
    assert!(key.contains("BEGIN PUBLIC KEY"), "{key}");
    let key_file = ca.file("audit-key.pem");
    std::fs::write(&key_file, &key).unwrap();
    let out = ca.ecert_ok(&[
        "audit",
        "verify",
        "--public-key",
        key_file.to_str().unwrap(),
    ]);
    assert!(out.contains("intact"), "{out}");
    ca.tamper("UPDATE audit_checkpoints SET signature = (SELECT signature FROM audit_checkpoints ORDER BY seq LIMIT 1) WHERE seq = (SELECT MAX(seq) FROM audit_checkpoints);");
    let count: usize = ca
        .sql_query("SELECT COUNT(*) FROM audit_checkpoints")
        .trim()
        .parse()
        .unwrap();
    assert!(
        count >= 2,
        "need two checkpoints to swap signatures, have {count}"
    );
    verify_finds(
        &ca,
        "not signed by the audit key",
        None,
        "checkpoint signature swapped",
    );
}

/// The audit key as PEM in a file, for verifying without the HSM.
fn audit_key_file(ca: &Ca) -> std::path::PathBuf {
    let key = ca.ecert_ok(&["audit", "key"]);
    let path = ca.file("audit-key.pem");
    std::fs::write(&path, key).unwrap();
    path
}

/// `ecert audit verify --export FILE --public-key KEY` from an empty directory: the export and
/// the key are all it has.
fn verify_export_offline(ca: &Ca, export: &std::path::Path, key: &std::path::Path) -> Output {
    let empty = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new(ecert_bin());
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(empty.path())
        .arg("--data-dir")
        .arg(empty.path().join("nothing-here"))
        .args(["audit", "verify", "--export"])
        .arg(export)
        .arg("--public-key")
        .arg(key);
    let o = run_with_timeout(c, TIMEOUT, "ecert audit verify --export");
    assert!(
        !empty.path().join("nothing-here").exists(),
        "offline verification made a data directory"
    );
    let _ = ca;
    o
}

/// Issue 14: an auditor exports the records of one kind (JSON lines and CSV) and verifies each
/// export offline with only the audit public key; the export carries the stretch of the chain
/// up to the covering signed checkpoint. An export with one record altered, or cut short, is
/// refused with the finding named; the export itself is an audit event.
#[test]
fn audit_exports_verify_offline_and_tampered_exports_fail() {
    let (ca, _) = ca_with_history();
    let key = audit_key_file(&ca);
    for format in ["jsonl", "csv"] {
        let out = ca.file(&format!("export.{format}"));
        let o = ca.ecert(&[
            "audit",
            "export",
            "--kind",
            "issuance",
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", show(&o));
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("issuance.linted"), "{text}");
        let v = verify_export_offline(&ca, &out, &key);
        assert!(v.status.success(), "[{format}] {}", show(&v));
        let said = String::from_utf8_lossy(&v.stdout);
        assert!(said.contains("export verified"), "{said}");

        // One record's detail changed: found.
        let altered = ca.file(&format!("altered.{format}"));
        let changed = text.replacen("tbs_sha256", "tbs_sha255", 1);
        assert_ne!(changed, text);
        std::fs::write(&altered, changed).unwrap();
        let v = verify_export_offline(&ca, &altered, &key);
        assert_eq!(v.status.code(), Some(1), "{}", show(&v));
        assert!(
            String::from_utf8_lossy(&v.stdout).contains("was altered"),
            "{}",
            show(&v)
        );
    }
    // Cut short: the last record (the one the checkpoint signs) dropped.
    let text = std::fs::read_to_string(ca.file("export.jsonl")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    let cut = ca.file("cut.jsonl");
    std::fs::write(&cut, lines.join("\n")).unwrap();
    let v = verify_export_offline(&ca, &cut, &key);
    assert_eq!(v.status.code(), Some(1), "{}", show(&v));
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("checkpoint"),
        "{}",
        show(&v)
    );
    // Another key does not vouch for it.
    let other = ca.file("other.pem");
    let o = std::process::Command::new("openssl")
        .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout"])
        .output()
        .unwrap();
    let priv_key = ca.file("other-key.pem");
    std::fs::write(&priv_key, &o.stdout).unwrap();
    let o = std::process::Command::new("openssl")
        .args(["ec", "-pubout", "-in", priv_key.to_str().unwrap(), "-out"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let v = verify_export_offline(&ca, &ca.file("export.jsonl"), &other);
    assert_eq!(v.status.code(), Some(1), "{}", show(&v));
    let n: i64 = ca
        .sql_query("SELECT COUNT(*) FROM audit_log WHERE kind = 'audit.exported'")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(n, 2, "each export is an audit event");
}

/// The chain hash, written here from its definition (ca_core::audit::chain_hash), as an
/// attacker who read the source would.
fn chain_hash(
    prev: &[u8],
    seq: i64,
    at: i64,
    kind: &str,
    actor: &str,
    subject: Option<&str>,
    detail: &str,
) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"ecert-audit-v1");
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    for field in [Some(kind), Some(actor), subject, Some(detail)] {
        match field {
            Some(s) => {
                h.update([1u8]);
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
            None => h.update([0u8]),
        }
    }
    h.finalize().to_vec()
}

/// Rewrites record `seq`'s detail and every later hash, moves the head, and drops the
/// checkpoints the rewrite broke: what someone who controls the database does before asking
/// the HSM for a fresh checkpoint.
fn rewrite_chain_from(ca: &Ca, seq: i64, detail: &str) {
    let blob = |hex_text: &str| match ca.db() {
        Db::Sqlite => format!("X'{hex_text}'"),
        Db::Postgres => format!("'\\x{hex_text}'::bytea"),
    };
    let rows = ca.sql_query(&format!(
        "SELECT seq, at, kind, actor, CASE WHEN subject IS NULL THEN 0 ELSE 1 END, COALESCE(subject, ''), detail, prev_hash FROM audit_log WHERE seq >= {seq} ORDER BY seq"
    ));
    let mut prev: Option<Vec<u8>> = None;
    let mut sql = String::new();
    for line in rows.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let (n, at): (i64, i64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
        let subject = (f[4] == "1").then_some(f[5]);
        let this_detail = if n == seq { detail } else { f[6] };
        let stored_prev = hex::decode(f[7].trim_start_matches("\\x")).unwrap();
        let p = prev.clone().unwrap_or(stored_prev);
        let h = chain_hash(&p, n, at, f[2], f[3], subject, this_detail);
        sql.push_str(&format!(
            "UPDATE audit_log SET detail = '{}', prev_hash = {}, hash = {} WHERE seq = {n};\n",
            this_detail.replace('\'', "''"),
            blob(&hex::encode(&p)),
            blob(&hex::encode(&h))
        ));
        prev = Some(h);
    }
    let head = prev.expect("records to rewrite");
    sql.push_str(&format!(
        "UPDATE audit_head SET hash = {} WHERE id = 1;\nDELETE FROM audit_checkpoints WHERE seq >= {seq};\n",
        blob(&hex::encode(&head))
    ));
    ca.tamper(&sql);
}

/// Issue 14: with `[audit] witness`, every signed checkpoint is also appended to a file outside
/// the database. Someone who controls the database and the HSM rewrites a record, rehashes
/// the chain after it and has the HSM sign a new checkpoint: `audit verify` on the database
/// alone calls that intact, but `audit verify --witness` reports where the database and the
/// witness disagree.
#[test]
fn the_witness_catches_a_chain_rewritten_and_signed_again() {
    let ca = Ca::new();
    let witness = ca.file("witness.jsonl");
    ca.append_config(&format!("[audit]\nwitness = \"{}\"", witness.display()));
    ca.ecert_ok(&["init"]);
    issue_and_verify_personal(&ca, "w", "witnessed");
    ca.ecert_ok(&["crl", "publish"]);
    let lines = std::fs::read_to_string(&witness).unwrap();
    assert!(lines.lines().count() >= 2, "{lines}");
    let out = ca.ecert_ok(&["audit", "verify", "--witness", witness.to_str().unwrap()]);
    assert!(out.contains("agrees") && out.contains("intact"), "{out}");

    // The first issuance's lint record now says something else.
    let seq: i64 = ca
        .sql_query("SELECT MIN(seq) FROM audit_log WHERE kind = 'issuance.linted'")
        .trim()
        .parse()
        .unwrap();
    rewrite_chain_from(&ca, seq, "{\"tbs_sha256\":\"00\"}");
    // The HSM signs the rewritten head (the attacker holds it too).
    ca.ecert_ok(&["crl", "publish"]);
    let out = ca.ecert_ok(&["audit", "verify"]);
    assert!(
        out.contains("intact"),
        "the database alone cannot tell: {out}"
    );
    let o = ca.ecert(&["audit", "verify", "--witness", witness.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("rewritten after it was witnessed"),
        "{}",
        show(&o)
    );

    // A witness that goes missing is not started again from the database (which would launder
    // a rewritten history into it): the signer says so and writes nothing.
    std::fs::remove_file(&witness).unwrap();
    issue_and_verify_personal(&ca, "w2", "after the witness went missing");
    let o = ca.ecert(&["crl", "publish"]);
    assert!(
        !witness.exists(),
        "the witness was made again:\n{}",
        show(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("holds less than was written to it"),
        "{}",
        show(&o)
    );
}

/// Issue 14: if the audit record cannot be written, the action does not happen. The record
/// with the linting TBS (`issuance.linted`) commits before the HSM is asked to sign; here the
/// database refuses it (a trigger that raises) and the HSM is never asked — the failpoint
/// just before the HSM call, which panics when reached (as the first, unrefused issuance
/// shows), stays silent — and nothing is issued.
#[test]
fn an_issuance_whose_audit_record_cannot_be_written_never_reaches_the_hsm() {
    let ca = Ca::init();
    let p = personal();
    crate::apply::counter_ready(&ca);
    // An approval through a signing service whose HSM call panics when reached; the service's
    // log, and what the approval came to.
    let approve = |name: &str| {
        let csr = ca.csr(name, KeyType::P256);
        let log = ca.file(&format!("{name}.log"));
        let server = crate::serve::spawn_listening(
            ca.command(
                &[
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--crl-watch-seconds",
                    "1",
                ],
                &[(
                    "FAILPOINTS",
                    "ca::before_hsm_sign=panic(the HSM is asked to sign)",
                )],
            ),
            std::fs::File::create(&log).unwrap().into(),
        );
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::apply::attempt(&ca, &p.application, None, &csr.csr)
        }));
        drop(server);
        (std::fs::read_to_string(&log).unwrap(), outcome)
    };
    let issued_certificates = || -> i64 {
        ca.sql_query("SELECT COUNT(*) FROM certificates WHERE state = 'issued'")
            .trim()
            .parse()
            .unwrap()
    };
    // Control: without the refusal, the issuance reaches the HSM call.
    let (log, outcome) = approve("control");
    assert!(!matches!(outcome, Ok(Ok(_))), "issued past the failpoint");
    assert!(
        log.contains("the HSM is asked to sign"),
        "the failpoint is not live; build with --features failpoints\n{log}"
    );
    let before = issued_certificates();

    let refuse = match ca.db() {
        Db::Sqlite => "CREATE TRIGGER audit_refuses BEFORE INSERT ON audit_log \
             WHEN NEW.kind = 'issuance.linted' BEGIN SELECT RAISE(ABORT, 'the audit store refuses'); END;"
            .to_string(),
        Db::Postgres => "CREATE FUNCTION audit_refuses() RETURNS trigger AS $$ BEGIN \
             IF NEW.kind = 'issuance.linted' THEN RAISE EXCEPTION 'the audit store refuses'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER audit_refuses BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_refuses();"
            .to_string(),
    };
    ca.tamper(&refuse);
    let (log, outcome) = approve("refused");
    let refusal = match outcome {
        Ok(Err(r)) => r,
        other => panic!("the approval was not refused: {other:?}\n{log}"),
    };
    assert_eq!(refusal.step, "approval", "{refusal:?}");
    assert!(
        log.contains("the audit store refuses")
            || refusal.message().contains("the audit store refuses"),
        "the refusal is not named: {refusal:?}\n{log}"
    );
    assert!(
        !log.contains("the HSM is asked to sign") && !log.contains("panicked"),
        "the HSM was asked to sign although the audit record was refused\n{log}"
    );
    assert_eq!(issued_certificates(), before);
    let linted: i64 = ca
        .sql_query("SELECT COUNT(*) FROM certificates WHERE state = 'issuing'")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        linted, 0,
        "a serial was left issuing without its audit record"
    );
}

/// A witness service as an auditor might run it: HTTPS (Python's standard library), a bearer
/// token, appending the lines that extend what it holds to a file and refusing the others
/// with 409 (`ca_core::audit::witness::post` describes the exchange).
const WITNESS_SERVICE: &str = r#"
import http.server, ssl, json, sys, os
path, cert, key, token = sys.argv[1:5]
class H(http.server.BaseHTTPRequestHandler):
    def answer(self, code, last):
        body = json.dumps({"last_seq": last}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        if self.headers.get("Authorization") != "Bearer " + token:
            self.send_response(401); self.send_header("Content-Length", "0"); self.end_headers(); return
        last = 0
        if os.path.exists(path):
            lines = [l for l in open(path) if l.strip()]
            if lines: last = json.loads(lines[-1])["seq"]
        new = []
        for l in body.splitlines():
            if not l.strip(): continue
            seq = json.loads(l)["seq"]
            if seq <= last: return self.answer(409, last)
            new.append(l); last = seq
        with open(path, "a") as f: f.write("".join(x + "\n" for x in new))
        self.answer(200, last)
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// Issue 14: the witness can be an HTTPS service the auditor runs. Every signed checkpoint
/// reaches it (checked by TLS against its CA, with its token); its copy verifies the chain
/// offline (`audit verify --witness`); a service that comes back holding less than it
/// acknowledged is an error the signer reports and feeds nothing more.
#[test]
fn the_witness_can_be_an_https_service() {
    use std::io::BufRead;
    let ca = Ca::new();
    let tls = crate::ra::perspective_tls(&ca);
    let held = ca.file("service-witness.jsonl");
    let start = || {
        let mut child = std::process::Command::new("python3")
            .args(["-c", WITNESS_SERVICE])
            .arg(&held)
            .arg(&tls.cert)
            .arg(&tls.key)
            .arg(std::fs::read_to_string(&tls.token).unwrap().trim())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut port = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut port)
            .unwrap();
        (child, port.trim().to_string())
    };
    let (mut service, port) = start();
    ca.append_config(&format!(
        "[audit]\nwitness_url = \"https://127.0.0.1:{port}/witness\"\nwitness_ca = \"{}\"\nwitness_token_file = \"{}\"\n",
        tls.ca.display(),
        tls.token.display()
    ));
    ca.ecert_ok(&["init"]);
    issue_and_verify_personal(&ca, "s", "witnessed by a service");
    ca.ecert_ok(&["crl", "publish"]);
    let lines = std::fs::read_to_string(&held).unwrap();
    assert!(lines.lines().count() >= 2, "{lines}");
    let out = ca.ecert_ok(&["audit", "verify", "--witness", held.to_str().unwrap()]);
    assert!(out.contains("agrees") && out.contains("intact"), "{out}");
    let acknowledged = ca.sql_query("SELECT value FROM meta WHERE key = 'audit_witness_url_seq'");
    assert!(
        !acknowledged.trim().is_empty(),
        "nothing recorded as acknowledged"
    );

    // The service is replaced by an empty one: the signer refuses to feed it from the start.
    let _ = service.kill();
    let _ = service.wait();
    std::fs::remove_file(&held).unwrap();
    let (mut service, port2) = start();
    let config = std::fs::read_to_string(ca.data_dir().join("ecert.toml"))
        .unwrap()
        .replace(&port, &port2);
    std::fs::write(ca.data_dir().join("ecert.toml"), config).unwrap();
    issue_and_verify_personal(&ca, "s2", "after the service lost its copy");
    let o = ca.ecert(&["crl", "publish"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("holds less than it acknowledged"),
        "{}",
        show(&o)
    );
    assert!(
        !held.exists() || std::fs::read_to_string(&held).unwrap().trim().is_empty(),
        "a reset witness was fed from the start"
    );
    let _ = service.kill();
    let _ = service.wait();
}

/// Issue 18 (docs/AUDIT.md "Retention"): a signer whose clock is past `ra.audit_retention_days`
/// purges the audit records up to the newest checkpoint before the cutoff, on either engine
/// (the append-only trigger lets exactly those go); `audit verify` still passes and says what
/// was purged; an export from what is kept verifies offline; and the records left are the
/// ones after the anchor.
#[test]
fn audit_records_are_purged_after_their_period_and_the_trail_still_verifies() {
    let (ca, before) = ca_with_history();
    ca.append_config("[ra]\naudit_retention_days = 730");
    let mut srv = crate::serve::start_faked(&ca, "+731d");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ca
        .sql_query("SELECT COUNT(*) FROM audit_log WHERE kind = 'audit.pruned'")
        .trim()
        != "1"
    {
        assert!(std::time::Instant::now() < deadline, "nothing purged");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    crate::serve::terminate(&mut srv, 20);
    let first: i64 = ca
        .sql_query("SELECT MIN(seq) FROM audit_log")
        .trim()
        .parse()
        .unwrap();
    let anchor: i64 = ca
        .sql_query("SELECT MIN(seq) FROM audit_checkpoints")
        .trim()
        .parse()
        .unwrap();
    assert!(first > 1, "no record purged");
    assert_eq!(
        first,
        anchor + 1,
        "the first record kept follows the anchor"
    );
    assert!(
        usize::try_from(anchor).unwrap() <= before,
        "records made after the cutoff went"
    );
    let o = ca.ecert(&["audit", "verify"]);
    assert!(o.status.success(), "{}", show(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains(&format!(
            "records 1 to {anchor} were purged after the audit retention period"
        )),
        "{said}"
    );
    // An export of what is kept starts at the anchor's checkpoint and verifies offline.
    let out = ca.file("after-purge.jsonl");
    let o = ca.ecert(&["audit", "export", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    let v = verify_export_offline(&ca, &out, &audit_key_file(&ca));
    assert!(v.status.success(), "{}", show(&v));
}
