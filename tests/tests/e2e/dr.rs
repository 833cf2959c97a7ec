//! The disaster-recovery site (issue 17, docs/OPERATIONS.md "Disaster recovery"): a PostgreSQL
//! streaming standby made with `pg_basebackup` follows the primary; the primary site is lost
//! (the signer killed, the primary cluster stopped at once); the standby is promoted, a signer
//! started at the DR site with its token restored from the HSM backup (here a copy of the data
//! directory) — and every committed certificate and revocation is there, a revocation the
//! replica missed (its link cut) is made again from the primary's last CRL (`ecert crl
//! reapply`), and the service carries on. PostgreSQL only.

use std::time::{Duration, Instant};

use ecert_e2e::*;

use crate::backup::crl_number;
use crate::common::*;
use crate::serve::{get, start};

#[test]
fn the_dr_site_carries_on_from_a_promoted_streaming_standby() {
    if test_db() != Db::Postgres {
        eprintln!("skipped: the disaster-recovery replica is a PostgreSQL streaming standby");
        return;
    }
    let primary = PgCluster::primary();
    primary.query("postgres", "CREATE DATABASE ecert");
    let mut ca = Ca::new();
    ca.use_database(&primary.url("ecert"));
    ca.ecert_ok(&["init"]);
    let dr = PgCluster::standby_of(&primary);

    // The primary site works: certificates issued, one revoked, while the standby follows.
    let signer = start(&ca);
    let good = crate::apply::issue(&ca, &personal(), &ca.csr("good", KeyType::P256).csr, "good");
    let revoked = crate::apply::issue(&ca, &personal(), &ca.csr("rev", KeyType::P256).csr, "rev");
    let late = crate::apply::issue(&ca, &personal(), &ca.csr("late", KeyType::P256).csr, "late");
    crate::apply::revoke_ok(
        &ca,
        &["--serial", &revoked.serial, "--reason", "keyCompromise"],
    );
    let issuer = ca.export("individual").path;
    let until = Instant::now() + Duration::from_secs(30);
    // (Not yet signed is `unauthorized`: asked again until revoked.)
    while !openssl_ocsp_answer(&signer.1, &issuer, &revoked.cert.path, &ca.roots_bundle())
        .contains(": revoked")
    {
        assert!(Instant::now() < until, "the revocation did not reach OCSP");
        std::thread::sleep(Duration::from_millis(200));
    }
    let committed = ca
        .sql_query("SELECT COUNT(*) FROM certificates")
        .trim()
        .to_string();
    let audit_head = ca
        .sql_query("SELECT seq FROM audit_head")
        .trim()
        .to_string();
    // Everything committed has reached the standby (synchronous replication would make this
    // wait part of every commit; asynchronous, as here, loses at most what had not arrived).
    let lsn = primary.query("ecert", "SELECT pg_current_wal_lsn()");
    let until = Instant::now() + Duration::from_secs(30);
    while dr.query(
        "ecert",
        &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
    ) != "t"
    {
        assert!(Instant::now() < until, "the standby did not catch up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The standby answers reads, refuses writes.
    assert_eq!(
        dr.query("ecert", "SELECT COUNT(*) FROM certificates"),
        committed
    );
    assert_eq!(dr.query("ecert", "SELECT pg_is_in_recovery()"), "t");

    // The link to the DR site breaks (asynchronous replication): a revocation the primary
    // commits and publishes on its CRL never reaches the standby.
    dr.query("postgres", "ALTER SYSTEM SET primary_conninfo = ''");
    dr.query("postgres", "SELECT pg_reload_conf()");
    let until = Instant::now() + Duration::from_secs(30);
    while dr.query("postgres", "SELECT COUNT(*) FROM pg_stat_wal_receiver") != "0" {
        assert!(Instant::now() < until, "the standby still streams");
        std::thread::sleep(Duration::from_millis(100));
    }
    crate::apply::revoke_ok(
        &ca,
        &["--serial", &late.serial, "--reason", "keyCompromise"],
    );
    // The last CRL relying parties got from the primary site: it lists that revocation.
    let until = Instant::now() + Duration::from_secs(30);
    let crl = loop {
        let (_, _, crl) = get(&signer.1, "/crl/individual.crl");
        if crl_text_lists(&openssl_crl_text(ca.data_dir(), &crl, None), &late.serial) {
            break crl;
        }
        assert!(
            Instant::now() < until,
            "the primary's CRL does not list the late revocation"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let published = crl_number(&ca, &crl);
    let last_crl = ca.file("primary-last.crl");
    std::fs::write(&last_crl, &crl).unwrap();
    // The primary site is lost.
    drop(signer);
    primary.crash();

    // Failover: promote, start the DR signer (its token restored from the HSM backup), repoint.
    dr.promote();
    assert_eq!(dr.query("ecert", "SELECT pg_is_in_recovery()"), "f");
    ca.use_database(&dr.url("ecert"));
    // The replica may lack CRLs the primary published after its last replayed commit: every
    // CA's next CRLNumber is moved past anything it could have published.
    let out = ca.ecert_ok(&["crl", "floor"]);
    assert!(out.contains("next CRLNumber is above"), "{out}");
    let cas = ca.sql_query("SELECT COUNT(*) FROM cas");
    let floored = ca.sql_query("SELECT COUNT(*) FROM crl_numbers WHERE last > 1000000000000");
    assert_eq!(floored.trim(), cas.trim());
    // The revocation the replica missed is made again from the primary's last CRL.
    let reason_of = |leaf: &Issued| {
        ca.sql_query(&format!(
            "SELECT COALESCE(CAST(revocation_reason AS TEXT), 'none') FROM certificates WHERE serial = '{}'",
            leaf.serial
        ))
        .trim()
        .to_string()
    };
    assert_eq!(
        reason_of(&late),
        "none",
        "the replica has the late revocation after all"
    );
    let out = ca.ecert_ok(&["crl", "reapply", last_crl.to_str().unwrap()]);
    assert!(out.contains("1 revoked again"), "{out}");
    assert_eq!(reason_of(&late), "1", "keyCompromise");
    let dr_dir = ca.file("dr-site");
    copy_dir(ca.data_dir(), &dr_dir);
    let dr_signer = crate::serve::start_in(&ca, &dr_dir, &[]);
    std::fs::write(ca.data_dir().join(".e2e-serving"), &dr_signer.1).unwrap();
    let d = dr_signer.1.clone();
    assert_eq!(crate::serve::healthz(&d)["role"], "signer");

    // Every committed certificate and revocation is there.
    assert_eq!(
        ca.sql_query("SELECT COUNT(*) FROM certificates").trim(),
        committed
    );
    assert!(
        ca.sql_query("SELECT seq FROM audit_head")
            .trim()
            .parse::<i64>()
            .unwrap()
            >= audit_head.parse::<i64>().unwrap()
    );
    let status = |leaf: &Issued| crate::ra::ocsp_status(&ca, &d, &issuer, &leaf.cert.path);
    assert!(status(&good).contains(": good"), "{}", status(&good));
    assert!(
        status(&revoked).contains(": revoked"),
        "{}",
        status(&revoked)
    );
    let until = Instant::now() + Duration::from_secs(30);
    while !status(&late).contains(": revoked") {
        assert!(Instant::now() < until, "{}", status(&late));
        std::thread::sleep(Duration::from_millis(200));
    }
    let (st, _, _) = get(&d, "/crl/individual.crl");
    assert_eq!(st, 200);
    // And the service carries on: a revocation and an issuance at the DR site.
    crate::apply::revoke_ok(&ca, &["--serial", &good.serial, "--reason", "superseded"]);
    let until = Instant::now() + Duration::from_secs(30);
    while !status(&good).contains(": revoked") {
        assert!(
            Instant::now() < until,
            "the DR site did not publish the revocation"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The DR site's CRL follows the primary's in number.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, crl) = get(&d, "/crl/individual.crl");
        let n = crl_number(&ca, &crl);
        if n > 1_000_000_000_000 {
            assert!(n > published);
            break;
        }
        assert!(
            Instant::now() < until,
            "no CRL from the DR site (number {n})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = crate::apply::issue(
        &ca,
        &personal(),
        &ca.csr("dr", KeyType::P256).csr,
        "at the DR site",
    );
    assert_eq!(
        ca.sql_query(&format!(
            "SELECT state FROM certificates WHERE serial = '{}'",
            after.serial
        ))
        .trim(),
        "issued"
    );
    drop(dr_signer);
    ca.audit_ok();
}
