//! Bulk enrolment (docs/BULK.md) at the core: what the attack on it found stays fixed.

use std::sync::Arc;

use super::journey::{signed_in, staff};
use crate::authority::test_ca_with;
use crate::error::Error;
use crate::ra::bulk::{self, BatchRowIn};
use crate::ra::support::now;
use crate::ra::*;

fn pem(key: &rcgen::KeyPair) -> String {
    rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(key)
        .unwrap()
        .pem()
        .unwrap()
}

fn row(id: &str, email: &str, title: Option<&str>) -> BatchRowIn {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    BatchRowIn {
        client_row_id: id.into(),
        surname: "Chan".into(),
        given_name: "Tai Man".into(),
        email: email.into(),
        title: title.map(String::from),
        profile: None,
        csr: pem(&key),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_checked_issued_once_and_checked_again_at_issuance() {
    // Mailbox domains' CAA is read from real servers (Knot, Unbound validating): the staff
    // domain's `issuemail` names this CA (RFC 9495).
    let rig = crate::dcv::rig::Rig::start();
    let (_dir, auth) = test_ca_with(|c| rig.configure(c)).await;
    let auth = Arc::new(auth);
    let store = auth.store().clone();
    ensure_outlet(&store, "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let (_, secret) = staff(&auth, "officer1", "gpo", Role::Officer).await;
    let officer = signed_in(&auth, "officer1", &secret, 0).await;
    let (_, secret) = staff(&auth, "clerk1", "gpo", Role::Clerk).await;
    let clerk = signed_in(&auth, "clerk1", &secret, 0).await;

    // An organisation checked at the counter 10 days ago, its domain validated.
    let org = "org-1";
    sqlx::query(
        "INSERT INTO organisations (id, name, register, org_id, application_id, verified_at, registered_by, registered_at) \
         VALUES ($1, 'Example Limited', 'NTR', '12345678', 'app', $2, 'officer1', $2)",
    )
    .bind(org)
    .bind(now() - 10 * 86_400)
    .execute(store.pool())
    .await
    .unwrap();
    // Not by a clerk.
    assert!(matches!(
        bulk::add_domain(&auth, &clerk, org, "staff.ourmail.example.test").await,
        Err(Error::Forbidden(_))
    ));
    let d = bulk::add_domain(&auth, &officer, org, "staff.ourmail.example.test")
        .await
        .unwrap();
    assert!(!d.validated);
    // A Random Value older than 30 days is replaced before any check (TLS BR §3.2.2.4.7): a
    // record left in DNS long ago does not validate the domain again.
    sqlx::query("UPDATE organisation_domains SET token_at = $1")
        .bind(now() - 31 * 86_400)
        .execute(store.pool())
        .await
        .unwrap();
    let v = bulk::validate_domain(&auth, &officer, org, "staff.ourmail.example.test")
        .await
        .unwrap();
    assert!(!v.validated);
    assert_ne!(v.value, d.value);
    assert!(v.problem.unwrap().contains("new Random Value"));
    sqlx::query("UPDATE organisation_domains SET validated_at = $1")
        .bind(now())
        .execute(store.pool())
        .await
        .unwrap();

    // A batch token acts until it expires or is revoked: officers revoke all of an
    // organisation's tokens in force (a clerk cannot), audited even when there is none. The
    // batches waiting for approval are refused with them (any may be a leaked token's), and
    // a submission checked before the revocation records nothing after it.
    let token = bulk::batch_token(&auth, &officer, org, &["organisational".into()], 30)
        .await
        .unwrap();
    let leaked = bulk::batch_caller(&store, &token).await.unwrap();
    let waiting = bulk::submit_batch(
        &auth,
        &leaked,
        vec![Ok(row("R", "r@staff.ourmail.example.test", None))],
    )
    .await
    .unwrap();
    assert_eq!(waiting.accepted, 1);
    assert!(matches!(
        bulk::revoke_batch_tokens(&auth, &clerk, org).await,
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        bulk::revoke_batch_tokens(&auth, &officer, "no-such-org").await,
        Err(Error::NotFound)
    ));
    // Nor can an officer's integration token: it takes a person signed in with the second
    // factor (the `session` scope).
    let mut integration = officer.clone();
    integration.scopes = Some(crate::ra::token::Scopes::parse("read,enter,decide").unwrap());
    assert!(matches!(
        bulk::revoke_batch_tokens(&auth, &integration, org).await,
        Err(Error::Forbidden(_))
    ));
    let revoked = |tokens, batches_refused| bulk::TokensRevoked {
        tokens,
        batches_refused,
    };
    assert_eq!(
        bulk::revoke_batch_tokens(&auth, &officer, org)
            .await
            .unwrap(),
        revoked(1, 1)
    );
    assert!(matches!(
        bulk::batch_caller(&store, &token).await,
        Err(Error::SignInFailed)
    ));
    assert!(matches!(
        bulk::submit_batch(
            &auth,
            &leaked,
            vec![Ok(row("S", "s@staff.ourmail.example.test", None))]
        )
        .await,
        Err(Error::SignInFailed)
    ));
    let (state, error): (String, Option<String>) =
        sqlx::query_as("SELECT state, error FROM batch_rows WHERE batch_id = $1")
            .bind(&waiting.id)
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(state, "invalid");
    assert!(error.unwrap().contains("revoked"));
    assert!(matches!(
        bulk::approve_batch(&store, &waiting.id, "test").await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        bulk::revoke_batch_tokens(&auth, &officer, org)
            .await
            .unwrap(),
        revoked(0, 0)
    );
    let revocations: Vec<String> = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE kind = 'bulk.token.revoked' ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        revocations,
        [
            r#"{"batches_refused":1,"tokens":1}"#,
            r#"{"batches_refused":0,"tokens":0}"#
        ]
    );
    let fresh = bulk::batch_token(&auth, &officer, org, &["organisational".into()], 30)
        .await
        .unwrap();
    let caller = bulk::batch_caller(&store, &fresh).await.unwrap();
    let long_id = format!("{}\u{7}{}", "a".repeat(50), "b".repeat(100_000));
    let rows = vec![
        // Refused (a title on a non-role row) ...
        Ok(row("X", "x@staff.ourmail.example.test", Some("Director"))),
        // ... and corrected later in the same batch: accepted, not a duplicate.
        Ok(row("X", "x@staff.ourmail.example.test", None)),
        // A long id with a control character: refused, and stored and echoed cut to 64
        // characters without it.
        Ok(row(&long_id, "y@staff.ourmail.example.test", None)),
        // The corrected row's id again: a duplicate.
        Ok(row("X", "x2@staff.ourmail.example.test", None)),
        Err("not a JSON row".to_string()),
    ];
    let r = bulk::submit_batch(&auth, &caller, rows).await.unwrap();
    assert_eq!(
        (r.accepted, r.duplicates, r.errors.len()),
        (1, 1, 3),
        "{r:?}"
    );
    assert_eq!(r.errors[0].0, 1);
    assert_eq!(
        r.errors[1].1,
        format!("{}{}", "a".repeat(50), "b".repeat(14))
    );
    let longest: i64 = sqlx::query_scalar("SELECT MAX(LENGTH(client_row_id)) FROM batch_rows")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(longest, 64);
    // Approval is idempotent (a decision carried out again after a crash).
    assert_eq!(bulk::approve_batch(&store, &r.id, "test").await.unwrap(), 1);
    assert_eq!(bulk::approve_batch(&store, &r.id, "test").await.unwrap(), 0);
    // The domain's validation expires before issuance: the rows fail, named, nothing issued.
    sqlx::query("UPDATE organisation_domains SET validated_at = $1")
        .bind(now() - 400 * 86_400)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(bulk::issue_queued(&auth, 100).await.unwrap(), 0);
    let s = bulk::batch_status(&store, bulk::BatchReader::Staff(&officer), &r.id)
        .await
        .unwrap();
    assert_eq!(s.counts.get("failed"), Some(&1), "{:?}", s.counts);
    assert!(s.rows.iter().filter(|r| r.state == "failed").all(|r| r
        .error
        .as_deref()
        .unwrap()
        .contains("expired")));
    assert_eq!(s.state, "done");

    // Validated again, resubmitted: issued once; the organisation's verification past 825
    // days refuses a new batch.
    sqlx::query("UPDATE organisation_domains SET validated_at = $1")
        .bind(now())
        .execute(store.pool())
        .await
        .unwrap();
    let r = bulk::submit_batch(
        &auth,
        &caller,
        vec![Ok(row("Z", "z@staff.ourmail.example.test", None))],
    )
    .await
    .unwrap();
    bulk::approve_batch(&store, &r.id, "test").await.unwrap();
    assert_eq!(bulk::issue_queued(&auth, 100).await.unwrap(), 1);
    assert_eq!(bulk::issue_queued(&auth, 100).await.unwrap(), 0);

    // CAA before issuance (S/MIME BR §4.2.2.1): a domain whose issuemail names another CA
    // fails its rows with the reason, audited; a domain whose CAA cannot be read (the
    // resolver refuses it) leaves its rows queued and waits before it is asked again.
    for d in ["staff.othermail.example.test", "unreadable.example.hk"] {
        sqlx::query(
            "INSERT INTO organisation_domains (organisation_id, domain, dcv_token, token_at, validated_at) \
             VALUES ($1, $2, 'v', $3, $3)",
        )
        .bind(org)
        .bind(d)
        .bind(now())
        .execute(store.pool())
        .await
        .unwrap();
    }
    // A domain whose issuemail names another CA, one the resolver refuses, one naming this CA.
    let caa_rows = || {
        vec![
            Ok(row("C1", "c1@staff.othermail.example.test", None)),
            Ok(row("C2", "c2@unreadable.example.hk", None)),
            Ok(row("C3", "c3@staff.ourmail.example.test", None)),
        ]
    };
    let r = bulk::submit_batch(&auth, &caller, caa_rows())
        .await
        .unwrap();
    assert_eq!(r.accepted, 3, "{r:?}");
    bulk::approve_batch(&store, &r.id, "test").await.unwrap();
    let audits = |kind: &str| {
        let store = store.clone();
        let kind = kind.to_string();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT detail FROM audit_log WHERE kind = $1 ORDER BY seq",
            )
            .bind(kind)
            .fetch_all(store.pool())
            .await
            .unwrap()
        }
    };
    let refused_before = audits("ra.caa.refused").await.len();
    let unavailable_before = audits("ra.caa.unavailable").await.len();
    let status = || async {
        bulk::batch_status(&store, bulk::BatchReader::Staff(&officer), &r.id)
            .await
            .unwrap()
    };
    let state = |s: &bulk::BatchStatus, id: &str| {
        s.rows
            .iter()
            .find(|r| r.client_row_id == id)
            .unwrap()
            .clone()
    };
    // The good domain's row issues; the pass reports the unreadable one.
    assert_eq!(bulk::issue_queued(&auth, 100).await.unwrap(), 1);
    let s = status().await;
    assert_eq!(state(&s, "C3").state, "issued");
    assert_eq!(state(&s, "C2").state, "queued");
    let c1 = state(&s, "C1");
    assert_eq!(c1.state, "failed");
    assert_eq!(
        c1.error.as_deref(),
        Some("CAA forbids issuance for staff.othermail.example.test: CAA at othermail.example.test: its issuemail records do not name this CA (RFC 9495)")
    );
    let refused = audits("ra.caa.refused").await;
    assert_eq!(refused.len(), refused_before + 1, "{refused:?}");
    assert!(refused[refused_before].contains("issuemail"));
    assert!(refused[refused_before].contains("staff.othermail.example.test"));
    let unavailable = audits("ra.caa.unavailable").await;
    assert_eq!(unavailable.len(), unavailable_before + 1, "{unavailable:?}");
    assert!(unavailable[unavailable_before].contains("unreadable.example.hk"));
    assert!(audits("ra.caa.checked")
        .await
        .iter()
        .any(|d| d.contains("issuemail") && d.contains("staff.ourmail.example.test")));
    // Within its wait the unreadable domain's row is not taken: nothing to do, nothing
    // audited, still queued.
    assert_eq!(bulk::issue_queued(&auth, 100).await.unwrap(), 0);
    assert_eq!(
        audits("ra.caa.unavailable").await.len(),
        unavailable_before + 1
    );
    assert_eq!(state(&status().await, "C2").state, "queued");
    // Due again: asked again (still unreadable), and it waits longer.
    let wait = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT caa_tries, caa_retry_at - updated_at FROM batch_rows WHERE client_row_id = 'C2' AND state = 'queued'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
    };
    assert_eq!(wait().await, (1, 30));
    sqlx::query("UPDATE batch_rows SET caa_retry_at = 0 WHERE client_row_id = 'C2'")
        .execute(store.pool())
        .await
        .unwrap();
    assert!(bulk::issue_queued(&auth, 100).await.is_err());
    assert_eq!(wait().await, (2, 60));
    // After a day of tries the row fails, saying why.
    sqlx::query(
        "UPDATE batch_rows SET caa_retry_at = 0, caa_tries = 29 WHERE client_row_id = 'C2'",
    )
    .execute(store.pool())
    .await
    .unwrap();
    assert!(bulk::issue_queued(&auth, 100).await.is_err());
    let c2 = state(&status().await, "C2");
    assert_eq!(c2.state, "failed");
    assert!(
        c2.error.as_deref().unwrap().starts_with(
            "the CAA records of unreadable.example.hk could not be read or corroborated for a day"
        ),
        "{c2:?}"
    );
    assert_eq!(status().await.state, "done");
    // A failed row issued nothing: its client row id is free, so the rows resubmitted as they
    // are (C1, C2) are accepted; the issued one's (C3) is not.
    let again = bulk::submit_batch(&auth, &caller, caa_rows())
        .await
        .unwrap();
    assert_eq!((again.accepted, again.duplicates), (2, 1), "{again:?}");
    sqlx::query("UPDATE organisations SET verified_at = $1")
        .bind(now() - 826 * 86_400)
        .execute(store.pool())
        .await
        .unwrap();
    assert!(matches!(
        bulk::submit_batch(&auth, &caller, vec![Ok(row("W", "w@staff.ourmail.example.test", None))]).await,
        Err(Error::Conflict(e)) if e.contains("825")
    ));
}

/// The retention purge reaches batch rows: a row never approved within the retention period
/// is refused and, like every old row, loses its names, mailbox and CSR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_batch_rows_are_purged() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let auth = Arc::new(auth);
    let store = auth.store().clone();
    sqlx::query(
        "INSERT INTO organisations (id, name, register, org_id, application_id, verified_at, registered_by, registered_at) \
         VALUES ('o', 'Example Limited', 'NTR', '12345678', 'app', $1, 'officer1', $1)",
    )
    .bind(now())
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO organisation_domains (organisation_id, domain, dcv_token, token_at, validated_at) \
         VALUES ('o', 'staff.ourmail.example.test', 'v', $1, $1)",
    )
    .bind(now())
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO batch_tokens (token_sha256, organisation_id, profiles, created_by, created_at, expires_at) \
         VALUES ($1, 'o', 'organisational', 'officer1', $2, $3)",
    )
    .bind(bulk::token_digest("ecb_test"))
    .bind(now())
    .bind(now() + 86_400)
    .execute(store.pool())
    .await
    .unwrap();
    let caller = bulk::batch_caller(&store, "ecb_test").await.unwrap();
    let r = bulk::submit_batch(
        &auth,
        &caller,
        vec![
            Ok(row("A", "a@staff.ourmail.example.test", None)),
            Ok(row("B", "b@elsewhere.hk", None)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.accepted, 1);
    let days = i64::from(auth.config().ra.retention_days);
    crate::ra::purge(&auth, now()).await.unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM batch_rows WHERE csr IS NOT NULL")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(kept, 1, "a young pending row lost its data");
    crate::ra::purge(&auth, now() + (days + 1) * 86_400)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM batch_rows WHERE csr IS NOT NULL OR email IS NOT NULL OR surname IS NOT NULL",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(left, 0);
    let s = bulk::batch_status(&store, bulk::BatchReader::Organisation(&caller), &r.id)
        .await
        .unwrap();
    assert_eq!(s.state, "done");
    assert_eq!(s.counts.get("invalid"), Some(&2), "{:?}", s.counts);
    assert!(bulk::approve_batch(&store, &r.id, "test").await.is_err());
}
