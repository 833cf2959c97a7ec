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
