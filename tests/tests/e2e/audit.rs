//! The hash-chained audit trail: intact after issuances; an edited record, a removed middle
//! record and cut-off last records are each found by `audit verify` (exit 1, the finding named).
//! The tampering is done the way an attacker with database access would: append-only triggers
//! disabled (SQLite: dropped; PostgreSQL: `DISABLE TRIGGER ALL`), then UPDATE/DELETE.

use ecert_e2e::*;

use crate::common::*;

/// A CA with a few issuances; returns it and the number of audit records.
fn ca_with_history() -> (Ca, usize) {
    let ca = Ca::init();
    issue_and_verify_personal(&ca, "a", "history 1");
    let srv = server();
    let csr = ca.csr("b", KeyType::P256);
    ca.issue(srv.profile, &csr.csr, &srv.args, "history 2");
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
