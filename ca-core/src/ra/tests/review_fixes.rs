//! Regression tests for review findings, retention, staff administration and interrupted
//! decisions.

use sqlx::Row;

use super::journey::{ready_for_approval, signed_in, staff};
use crate::authority::{test_ca_with, Authority};
use crate::error::Error;
use crate::ra::support::now;
use crate::ra::*;

async fn issued_app(
    auth: &Authority,
    clerk: &StaffSession,
    key: &rcgen::KeyPair,
    n: u32,
) -> (Submitted, String) {
    let hkid = crate::hkid::synthetic("Y", n);
    let sub = ready_for_approval(auth, clerk, &hkid, key).await;
    let Decided::Issued { serial, .. } = decide(auth, clerk, &sub.id, 1, Decision::Approve)
        .await
        .unwrap()
    else {
        panic!("not issued")
    };
    (sub, serial)
}

async fn session_of(auth: &Authority, name: &str, role: Role) -> StaffSession {
    let (_, secret) = staff(auth, name, "gpo", role).await;
    signed_in(auth, name, &secret, 0).await
}

/// A mismatch after a match withdraws the identity check; two clerks are not dual control;
/// a new code is rate-limited and re-confirms the mailbox;
/// renewal needs a mailbox confirmed within 30 days; revoking revokes the predecessor too;
/// a citizen cannot choose privilegeWithdrawn; a locked account stays locked for its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_findings_stay_fixed() {
    let (_dir, auth) = test_ca_with(|c| {
        c.ra.dual_control.push("organisational".into());
        c.ra.renewal_window_days = 400;
    })
    .await;
    let store = auth.store().clone();
    ensure_outlet(&store, "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let clerk = session_of(&auth, "clerk1", Role::Clerk).await;

    // Identity: match, then mismatch → approval blocked again.
    let hkid = crate::hkid::synthetic("X", 1);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = super::journey::csr_for(&key);
    let sub = submit(
        &auth,
        NewApplication {
            profile: "personal".into(),
            surname: "Ho".into(),
            given_name: "Ka Ming".into(),
            email: "km.ho@example.hk".into(),
            hkid: hkid.expose().into(),
            date_of_birth: "1970-01-01".into(),
            phone: "+852 2100 0000".into(),
            address: "4 Des Voeux Road".into(),
            outlet: "gpo".into(),
            revocation_secret: "my revocation words".into(),
            csr,
            language: "en".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // A new code: not within the minute, then it works (wrong values over an application's
    // life: `mailbox_proof_is_capped_over_the_applications_life`).
    assert!(matches!(
        new_email_code(&auth, &sub.reference, &sub.secret).await,
        Err(Error::TooManyAttempts(_))
    ));
    sqlx::query(
        "UPDATE applications SET email_code_expires = email_code_expires - 120 WHERE id = $1",
    )
    .bind(&sub.id)
    .execute(store.pool())
    .await
    .unwrap();
    let (code, _) = new_email_code(&auth, &sub.reference, &sub.secret)
        .await
        .unwrap();
    confirm_email(&store, &sub.reference, &sub.secret, &code)
        .await
        .unwrap();
    check_identity(&auth, &clerk, &sub.id, 1, hkid.expose(), true, false)
        .await
        .unwrap();
    let other = crate::hkid::synthetic("X", 2);
    assert!(
        check_identity(&auth, &clerk, &sub.id, 1, other.expose(), true, false)
            .await
            .is_err()
    );
    record_fee(&auth, &clerk, &sub.id, 5_000, "cash", "R")
        .await
        .unwrap();
    let e = decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("identity check"), "{e}");
    // A mailbox confirmed over 30 days ago must be confirmed again before approval.
    check_identity(&auth, &clerk, &sub.id, 1, hkid.expose(), true, false)
        .await
        .unwrap();
    sqlx::query("UPDATE applications SET email_confirmed_at = email_confirmed_at - 31 * 86400 WHERE id = $1").bind(&sub.id).execute(store.pool()).await.unwrap();
    let e = decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("30 days"), "{e}");

    // Renewal with a stale mailbox: refused until a new code is confirmed; revoking the
    // renewal revokes its predecessor; privilegeWithdrawn is the CA's.
    let (sub2, first) = issued_app(&auth, &clerk, &key, 3).await;
    let csr = super::journey::csr_for(&key);
    sqlx::query("UPDATE applications SET email_confirmed_at = email_confirmed_at - 31 * 86400, email_code_expires = 0 WHERE id = $1").bind(&sub2.id).execute(store.pool()).await.unwrap();
    let e = renew_online(&auth, &sub2.reference, &sub2.secret, &csr, None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("confirm your e-mail address again"),
        "{e}"
    );
    let (code, _) = new_email_code(&auth, &sub2.reference, &sub2.secret)
        .await
        .unwrap();
    confirm_email(&store, &sub2.reference, &sub2.secret, &code)
        .await
        .unwrap();
    let second = renew_online(&auth, &sub2.reference, &sub2.secret, &csr, None)
        .await
        .unwrap();
    assert!(matches!(
        revoke_online(
            &auth,
            &sub2.reference,
            &sub2.secret,
            "my revocation words",
            crate::revocation::Reason::PrivilegeWithdrawn,
            None
        )
        .await,
        Err(Error::Invalid {
            field: "reason",
            ..
        })
    ));
    revoke_online(
        &auth,
        &sub2.reference,
        &sub2.secret,
        "my revocation words",
        crate::revocation::Reason::Superseded,
        None,
    )
    .await
    .unwrap();
    for serial in [&first, &second] {
        assert_eq!(
            store
                .certificate(serial)
                .await
                .unwrap()
                .unwrap()
                .revocation_reason,
            Some(4),
            "{serial} not revoked"
        );
    }

    // Two clerks are not dual control.
    let clerk2 = session_of(&auth, "clerk2", Role::Clerk).await;
    sqlx::query(
        "UPDATE applications SET profile = 'organisational', organization = 'Example Limited', \
         org_id = '12345678', user_surname = 'WONG', user_given_name = 'Siu Ming', org_checked_version = 1 WHERE id = $1",
    )
        .bind(&sub.id)
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE applications SET email_confirmed_at = $2 WHERE id = $1")
        .bind(&sub.id)
        .bind(now())
        .execute(store.pool())
        .await
        .unwrap();
    assert!(matches!(
        decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
            .await
            .unwrap(),
        Decided::AwaitingSecond
    ));
    assert!(matches!(
        decide(&auth, &clerk2, &sub.id, 1, Decision::Approve).await,
        Err(Error::Forbidden(_))
    ));

    // A locked account: failures while locked do not extend the lock.
    for _ in 0..SIGN_IN_ATTEMPTS {
        let _ = sign_in(&auth, "clerk2", "wrong password!!", "000000").await;
    }
    // (The lock is per client address: `sign_in` is the "local" one.)
    let lock_of = || async {
        sqlx::query(
            "SELECT f.locked_until FROM signin_failures f JOIN staff st ON st.id = f.staff \
             WHERE st.username = 'clerk2' AND f.source = 'local'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get::<i64, _>(0)
        .unwrap()
    };
    let locked = lock_of().await;
    assert!(locked > now());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let _ = sign_in(&auth, "clerk2", "wrong password!!", "000000").await;
    assert_eq!(
        locked,
        lock_of().await,
        "a failure while locked extended the lock"
    );
}

/// An application left `approved` with its certificate issued (a crash after signing) is
/// settled to `issued` on the next read; one whose issuance failed is open again.
/// Rejected and never-completed applications lose their personal data after the retention
/// period; issued ones keep it; the staff view still opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_only_ended_applications() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let store = auth.store().clone();
    ensure_outlet(&store, "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let clerk = session_of(&auth, "clerk1", Role::Clerk).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (issued, _) = issued_app(&auth, &clerk, &key, 11).await;
    let (stale, _) = issued_app(
        &auth,
        &clerk,
        &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        12,
    )
    .await;
    // Make the second one an old, never-completed application.
    sqlx::query("UPDATE applications SET state = 'submitted', certificate = NULL WHERE id = $1")
        .bind(&stale.id)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(purge(&auth, now()).await.unwrap(), 0, "nothing is old yet");
    let later = now() + 91 * 86_400;
    assert_eq!(purge(&auth, later).await.unwrap(), 1);
    let dump = format!(
        "{:?}",
        sqlx::query("SELECT hkid_sealed, csr, state FROM applications WHERE id = $1")
            .bind(&stale.id)
            .fetch_one(store.pool())
            .await
            .unwrap()
            .try_get::<Vec<u8>, _>(0)
            .unwrap()
    );
    assert_eq!(dump, "[]");
    let v = staff_view(&auth, &clerk, &stale.id).await.unwrap();
    assert_eq!(
        (v.hkid_masked.as_str(), v.status),
        ("(purged)", Status::Rejected)
    );
    assert!(matches!(
        reveal(&auth, &clerk, &stale.id, Revealable::Hkid).await,
        Err(Error::Conflict(_))
    ));
    let v = staff_view(&auth, &clerk, &issued.id).await.unwrap();
    assert_ne!(v.hkid_masked, "(purged)");
    assert!(store
        .audit_records()
        .await
        .unwrap()
        .0
        .iter()
        .any(|r| r.kind == "ra.purged"));
}

/// Disabling ends sessions and stops sign-in and API tokens; enabling restores sign-in; a
/// TOTP reset voids the old secret; revoked tokens stop working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_administration() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let store = auth.store().clone();
    ensure_outlet(&store, "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let (_, secret) = staff(&auth, "clerk1", "gpo", Role::Clerk).await;
    let signed = sign_in(
        &auth,
        "clerk1",
        "a password of some length",
        &crate::totp::code_at(&secret, now()),
    )
    .await
    .unwrap();
    let token = create_api_token(
        &store,
        "clerk1",
        "t",
        1,
        Scopes::parse("read").unwrap(),
        "t",
    )
    .await
    .unwrap();
    assert!(api_session(&store, &token).await.is_ok());
    set_staff_disabled(&store, "clerk1", true, "admin")
        .await
        .unwrap();
    assert!(
        session(&store, &auth.config().ra, &signed.token)
            .await
            .is_err(),
        "session survived"
    );
    assert!(
        api_session(&store, &token).await.is_err(),
        "token works while disabled"
    );
    sqlx::query("UPDATE staff SET totp_last_step = 0")
        .execute(store.pool())
        .await
        .unwrap();
    assert!(matches!(
        sign_in(
            &auth,
            "clerk1",
            "a password of some length",
            &crate::totp::code_at(&secret, now())
        )
        .await,
        Err(Error::SignInFailed)
    ));
    set_staff_disabled(&store, "clerk1", false, "admin")
        .await
        .unwrap();
    // Disabling revoked the token for good (issue 11, defect 7): enabling does not restore it.
    assert!(
        api_session(&store, &token).await.is_err(),
        "a disabled member's token works again"
    );
    let token = create_api_token(
        &store,
        "clerk1",
        "t",
        1,
        Scopes::parse("read").unwrap(),
        "t",
    )
    .await
    .unwrap();
    assert!(api_session(&store, &token).await.is_ok());
    let fresh = reset_totp(&store, &auth.staff_keys(), "clerk1", "admin")
        .await
        .unwrap();
    assert!(
        matches!(
            sign_in(
                &auth,
                "clerk1",
                "a password of some length",
                &crate::totp::code_at(&secret, now())
            )
            .await,
            Err(Error::SignInFailed)
        ),
        "old secret"
    );
    sign_in(
        &auth,
        "clerk1",
        "a password of some length",
        &crate::totp::code_at(&fresh, now()),
    )
    .await
    .unwrap();
    // A new TOTP secret (a lost phone) revoked the member's tokens too.
    assert!(
        api_session(&store, &token).await.is_err(),
        "a token survived reset-totp"
    );
    let token = create_api_token(
        &store,
        "clerk1",
        "t",
        1,
        Scopes::parse("read").unwrap(),
        "t",
    )
    .await
    .unwrap();
    assert_eq!(
        revoke_api_tokens(&store, "clerk1", "admin").await.unwrap(),
        1
    );
    assert!(api_session(&store, &token).await.is_err());
    let list = list_staff(&store).await.unwrap();
    assert_eq!(
        (list.len(), list[0].username.as_str(), list[0].disabled),
        (1, "clerk1", false)
    );
    assert!(matches!(
        set_staff_disabled(&store, "nobody", true, "admin").await,
        Err(Error::NotFound)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_decisions_are_settled() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let store = auth.store().clone();
    ensure_outlet(&store, "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let clerk = session_of(&auth, "clerk1", Role::Clerk).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (sub, serial) = issued_app(&auth, &clerk, &key, 7).await;
    sqlx::query("UPDATE applications SET state = 'approved' WHERE id = $1")
        .bind(&sub.id)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        track(&store, &sub.reference, &sub.secret)
            .await
            .unwrap()
            .status,
        Status::Issued
    );
    let (sub2, serial2) = issued_app(
        &auth,
        &clerk,
        &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        8,
    )
    .await;
    let _ = serial;
    sqlx::query("UPDATE certificates SET state = 'failed' WHERE serial = $1")
        .bind(&serial2)
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE applications SET state = 'approved' WHERE id = $1")
        .bind(&sub2.id)
        .execute(store.pool())
        .await
        .unwrap();
    let v = track(&store, &sub2.reference, &sub2.secret).await.unwrap();
    // Open again (its approval still counts), no certificate.
    assert!(
        v.status != Status::Issued && v.status != Status::Approved && v.certificate.is_none(),
        "{v:?}"
    );
}

/// Revealing a field is a read: it settles nothing (the RA split once made it settle an
/// `approved` application whose certificate was issued, a write on SQLite's writer lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reveal_is_a_read() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let (clerk, _) = super::journey::gpo_with_staff(&auth).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (sub, _) = issued_app(&auth, &clerk, &key, 7).await;
    let state = || async {
        sqlx::query("SELECT state FROM applications WHERE id = $1")
            .bind(&sub.id)
            .fetch_one(auth.store().pool())
            .await
            .unwrap()
            .try_get::<String, _>("state")
            .unwrap()
    };
    // As a crash between the signature and the last write leaves it.
    sqlx::query("UPDATE applications SET state = 'approved' WHERE id = $1")
        .bind(&sub.id)
        .execute(auth.store().pool())
        .await
        .unwrap();
    let phone = reveal(&auth, &clerk, &sub.id, Revealable::Phone)
        .await
        .unwrap();
    assert!(phone.contains("2921"), "the phone is revealed");
    assert_eq!(state().await, "approved", "reveal wrote nothing");
    // The next staff view settles it.
    staff_view(&auth, &clerk, &sub.id).await.unwrap();
    assert_eq!(state().await, "issued");
}

/// Issue 11, defect 2: every revocation channel walks the whole renewal chain. A counter
/// revocation (or hold, then release) reaches the certificate an online renewal replaced; an
/// online revocation that finds the newest certificate already revoked still revokes a
/// predecessor left good; revoking again changes nothing and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_the_whole_renewal_chain() {
    use crate::revocation::Reason;
    let (_dir, auth) = test_ca_with(|c| c.ra.renewal_window_days = 400).await;
    let store = auth.store().clone();
    let (clerk, _) = super::journey::gpo_with_staff(&auth).await;
    let reason_of = |serial: String| {
        let store = store.clone();
        async move {
            store
                .certificate(&serial)
                .await
                .unwrap()
                .unwrap()
                .revocation_reason
        }
    };

    // Counter: hold, release, then revoke; each reaches the renewed predecessor.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (sub, first) = issued_app(&auth, &clerk, &key, 11).await;
    let csr = super::journey::csr_for(&key);
    let second = renew_online(&auth, &sub.reference, &sub.secret, &csr, None)
        .await
        .unwrap();
    revoke_at_counter(&auth, &clerk, &sub.id, Reason::CertificateHold)
        .await
        .unwrap();
    assert_eq!(reason_of(first.clone()).await, Some(6), "predecessor held");
    assert_eq!(reason_of(second.clone()).await, Some(6));
    release_at_counter(&auth, &clerk, &sub.id).await.unwrap();
    assert_eq!(reason_of(first.clone()).await, None, "predecessor released");
    assert_eq!(reason_of(second.clone()).await, None);
    let revoked = revoke_at_counter(&auth, &clerk, &sub.id, Reason::AffiliationChanged)
        .await
        .unwrap();
    assert_eq!(
        revoked, second,
        "the counter revokes the current certificate"
    );
    assert_eq!(
        reason_of(first.clone()).await,
        Some(3),
        "predecessor revoked"
    );
    assert_eq!(reason_of(second.clone()).await, Some(3));
    // Again: nothing changed, and the answer says so.
    assert!(matches!(
        revoke_at_counter(&auth, &clerk, &sub.id, Reason::AffiliationChanged).await,
        Err(Error::AlreadyRevoked { .. })
    ));
    let log = store.audit_records().await.unwrap().0;
    assert!(
        log.iter().any(|e| e.kind == "certificate.revoked"
            && e.subject.as_deref() == Some(first.as_str())
            && e.detail.contains(&format!("renewed by {second}"))),
        "the predecessor's revocation is audited with its cause"
    );

    // Online: the newest already revoked and a predecessor left good (as a revocation made
    // before this fix left it): the citizen's revocation still reaches it.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (sub, first) = issued_app(&auth, &clerk, &key, 12).await;
    let csr = super::journey::csr_for(&key);
    let second = renew_online(&auth, &sub.reference, &sub.secret, &csr, None)
        .await
        .unwrap();
    sqlx::query("UPDATE certificates SET revocation_reason = 4, revoked_at = $2 WHERE serial = $1")
        .bind(&second)
        .bind(now())
        .execute(store.pool())
        .await
        .unwrap();
    revoke_online(
        &auth,
        &sub.reference,
        &sub.secret,
        "my revocation words",
        Reason::Superseded,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        reason_of(first.clone()).await,
        Some(4),
        "predecessor revoked"
    );
    assert!(matches!(
        revoke_online(
            &auth,
            &sub.reference,
            &sub.secret,
            "my revocation words",
            Reason::Superseded,
            None
        )
        .await,
        Err(Error::AlreadyRevoked { .. })
    ));
}

/// Issue 11, defect 1: the mailbox proof could be guessed (six digits; a new code reset the
/// attempts; any number of applications per mailbox). Now a 128-bit value; wrong values and
/// new values are capped over the application's whole life, a new value does not restart the
/// count, each refusal is audited, and a mailbox has at most three applications waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_proof_is_capped_over_the_applications_life() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let store = auth.store().clone();
    let (clerk, _) = super::journey::gpo_with_staff(&auth).await;
    let apply = |n: u32| {
        let mut a = super::journey::application(&crate::hkid::synthetic("W", n));
        a.email = "Shared.Box@example.hk".into();
        submit(&auth, a)
    };
    let sub = apply(1).await.unwrap();
    assert_eq!(sub.email_code.len(), 26, "a 128-bit value");
    // Wrong values, CODE_ATTEMPTS of them, then even the right value is refused...
    for left in (0..CODE_ATTEMPTS).rev() {
        assert!(matches!(
            confirm_email(&store, &sub.reference, &sub.secret, "AAAAAAAAAAAAAAAAAAAAAAAAAA").await,
            Err(Error::CodeRejected { attempts_left }) if attempts_left == left
        ));
    }
    assert!(matches!(
        confirm_email(&store, &sub.reference, &sub.secret, &sub.email_code).await,
        Err(Error::TooManyAttempts(_))
    ));
    // ... and a new value does not start the count again.
    let expire = || async {
        sqlx::query("UPDATE applications SET email_code_expires = 0 WHERE id = $1")
            .bind(&sub.id)
            .execute(store.pool())
            .await
            .unwrap();
    };
    expire().await;
    let (fresh, _) = new_email_code(&auth, &sub.reference, &sub.secret)
        .await
        .unwrap();
    assert!(matches!(
        confirm_email_link(&store, &sub.reference, &fresh).await,
        Err(Error::TooManyAttempts(_))
    ));
    let refusals = store
        .audit_records()
        .await
        .unwrap()
        .0
        .iter()
        .filter(|e| e.kind == "ra.email.refused" && e.subject.as_deref() == Some(sub.id.as_str()))
        .count();
    assert_eq!(
        refusals,
        CODE_ATTEMPTS as usize + 2,
        "each refusal is audited"
    );
    // New values: CODES_SENT over the application's life (the first included).
    for _ in 2..CODES_SENT {
        expire().await;
        new_email_code(&auth, &sub.reference, &sub.secret)
            .await
            .unwrap();
    }
    expire().await;
    let e = new_email_code(&auth, &sub.reference, &sub.secret)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("no more confirmation e-mails"),
        "{e}"
    );
    // At the counter, a clerk's correction of the address starts both counts again.
    let code = amend_contact(
        &auth,
        &clerk,
        &sub.id,
        1,
        Some("new.box@example.hk"),
        None,
        None,
    )
    .await
    .unwrap()
    .unwrap();
    confirm_email_link(&store, &sub.reference, &code.to_lowercase())
        .await
        .unwrap();
    // An expired value is refused and audited.
    let second = apply(2).await.unwrap();
    sqlx::query("UPDATE applications SET email_code_expires = 1 WHERE id = $1")
        .bind(&second.id)
        .execute(store.pool())
        .await
        .unwrap();
    assert!(matches!(
        confirm_email(
            &store,
            &second.reference,
            &second.secret,
            &second.email_code
        )
        .await,
        Err(Error::Expired(_))
    ));
    // Three applications may wait on one mailbox (case does not matter); a fourth is refused.
    apply(3).await.unwrap();
    apply(4).await.unwrap();
    let e = apply(5).await.unwrap_err();
    assert!(
        matches!(&e, Error::Invalid { field: "email", .. }) && e.to_string().contains("waiting"),
        "{e}"
    );
    // A link's value confirms once; the page that carries it is a POST (ra-web).
    let third = {
        sqlx::query(
            "UPDATE applications SET email_code_expires = 0 WHERE email = 'Shared.Box@example.hk'",
        )
        .execute(store.pool())
        .await
        .unwrap();
        let mut a = super::journey::application(&crate::hkid::synthetic("W", 6));
        a.email = "other.box@example.hk".into();
        submit(&auth, a).await.unwrap()
    };
    confirm_email_link(&store, &third.reference, &third.email_code)
        .await
        .unwrap();
    assert!(
        confirm_email_link(&store, &third.reference, &third.email_code)
            .await
            .is_err()
    );
}

/// Review finding (issue 11, defect 3): the lock was checked before the password hash and
/// failures counted after it, so a burst of guesses all passed the check. Each attempt is now
/// counted first: of 20 concurrent wrong guesses at most five are checked, and the right
/// password and code are then refused until the lock lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_guesses_cannot_pass_the_lock() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let auth = std::sync::Arc::new(auth);
    let store = auth.store().clone();
    ensure_outlet(&store, "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let (_, secret) = staff(&auth, "clerk1", "gpo", Role::Clerk).await;
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let auth = auth.clone();
        burst.spawn(async move {
            sign_in(&auth, "clerk1", "not the password at all", "000000")
                .await
                .is_err()
        });
    }
    while let Some(refused) = burst.join_next().await {
        assert!(refused.unwrap());
    }
    let checked = store
        .audit_records()
        .await
        .unwrap()
        .0
        .iter()
        .filter(|e| e.kind == "ra.staff.signin_failed" && e.detail.contains("\"password\""))
        .count();
    assert!(
        checked <= SIGN_IN_ATTEMPTS as usize,
        "{checked} passwords checked in a burst"
    );
    sqlx::query("UPDATE staff SET totp_last_step = 0")
        .execute(store.pool())
        .await
        .unwrap();
    assert!(matches!(
        sign_in(
            &auth,
            "clerk1",
            "a password of some length",
            &crate::totp::code_at(&secret, now())
        )
        .await,
        Err(Error::SignInFailed)
    ));
}

/// Review findings (issue 11, defect 2): a revoked or held certificate could still be renewed
/// (the renewal claim did not look at its status); a counter release lifted a hold an officer
/// had put on the predecessor independently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_certificates_are_not_renewed_and_releases_lift_only_their_holds() {
    use crate::revocation::Reason;
    let (_dir, auth) = test_ca_with(|c| c.ra.renewal_window_days = 400).await;
    let store = auth.store().clone();
    let (clerk, _) = super::journey::gpo_with_staff(&auth).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (sub, first) = issued_app(&auth, &clerk, &key, 21).await;
    // Held: the core refuses the renewal claim (as a renewal racing the hold would meet it).
    let s = crate::serial::SerialNumber::from_hex(&first).unwrap();
    auth.revoke(s, Reason::CertificateHold, "officer:test")
        .await
        .unwrap();
    let csr = crate::csr::VerifiedCsr::parse(&super::journey::csr_for(&key)).unwrap();
    let e = auth
        .issue(crate::authority::ApprovedRequest {
            profile: "personal".into(),
            csr,
            subject: crate::profile::SubjectData::default(),
            days: None,
            renews: Some(s),
            actor: "test".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotRenewable { .. }), "{e}");
    auth.release(s, "officer:test").await.unwrap();
    // Renewed; then the officer holds the old one on its own, a second later.
    let second = renew_online(
        &auth,
        &sub.reference,
        &sub.secret,
        &super::journey::csr_for(&key),
        None,
    )
    .await
    .unwrap();
    auth.revoke(s, Reason::CertificateHold, "officer:test")
        .await
        .unwrap();
    sqlx::query("UPDATE certificates SET revoked_at = revoked_at - 5 WHERE serial = $1")
        .bind(&first)
        .execute(store.pool())
        .await
        .unwrap();
    // The clerk holds and releases the current certificate: the officer's hold stays.
    revoke_at_counter(&auth, &clerk, &sub.id, Reason::CertificateHold)
        .await
        .unwrap();
    release_at_counter(&auth, &clerk, &sub.id).await.unwrap();
    let reason = |serial: String| {
        let store = store.clone();
        async move {
            store
                .certificate(&serial)
                .await
                .unwrap()
                .unwrap()
                .revocation_reason
        }
    };
    assert_eq!(reason(second).await, None);
    assert_eq!(
        reason(first).await,
        Some(6),
        "the officer's hold was lifted"
    );
}

/// Review finding (issue 11, defect 3): five wrong passwords per lapse from one address kept
/// the account locked for everyone. Failures now lock the address that made them out of the
/// account; the clerk at another address signs in; only many addresses together
/// (ACCOUNT_SIGN_IN_ATTEMPTS) lock the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_locks_out_their_own_address_not_the_clerk() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let store = auth.store().clone();
    ensure_outlet(&store, "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let (_, secret) = staff(&auth, "clerk1", "gpo", Role::Clerk).await;
    let right = || {
        let secret = secret.clone();
        let auth = &auth;
        let store = store.clone();
        async move {
            sqlx::query("UPDATE staff SET totp_last_step = $1")
                .bind(now() / crate::totp::STEP - 2)
                .execute(store.pool())
                .await
                .unwrap();
            sign_in_from(
                auth,
                "clerk1",
                "a password of some length",
                &crate::totp::code_at(&secret, now()),
                "192.0.2.10",
            )
            .await
        }
    };
    for round in 0..3 {
        for _ in 0..SIGN_IN_ATTEMPTS {
            let _ =
                sign_in_from(&auth, "clerk1", "wrong password!!", "000000", "203.0.113.9").await;
        }
        // The attacker's address is locked out, even with the right password...
        assert!(sign_in_from(
            &auth,
            "clerk1",
            "a password of some length",
            &crate::totp::code_at(&secret, now()),
            "203.0.113.9",
        )
        .await
        .is_err());
        // ... the clerk's is not.
        assert!(
            right().await.is_ok(),
            "round {round}: the clerk was locked out"
        );
        sqlx::query("UPDATE signin_failures SET locked_until = 1, failed_since = 1")
            .execute(store.pool())
            .await
            .unwrap();
    }
    // Many addresses together lock the account.
    for i in 0..ACCOUNT_SIGN_IN_ATTEMPTS {
        let _ = sign_in_from(
            &auth,
            "clerk1",
            "wrong password!!",
            "000000",
            &format!("198.51.100.{i}"),
        )
        .await;
    }
    assert!(matches!(right().await, Err(Error::SignInFailed)));
    let why = store.audit_records().await.unwrap().0;
    assert!(
        why.last().is_some_and(|e| e.detail.contains("locked")),
        "refused for another reason: {:?}",
        why.last()
    );
}

/// Issue 11, defect 5: an online keyCompromise blocked the key and revoked every certificate
/// carrying it, across subscribers, on the requester's word. Without proof of possession the
/// subscriber's own certificate is revoked and the report waits for an officer; with the
/// certificate key's signature over a fresh challenge the key is blocked and swept; a wrong
/// or reused proof is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_compromise_needs_proof_of_possession_to_reach_others() {
    use crate::revocation::Reason;
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let store = auth.store().clone();
    let (clerk, _) = super::journey::gpo_with_staff(&auth).await;
    let reason = |serial: String| {
        let store = store.clone();
        async move {
            store
                .certificate(&serial)
                .await
                .unwrap()
                .unwrap()
                .revocation_reason
        }
    };
    let blocked = || async {
        sqlx::query("SELECT COUNT(*) FROM blocked_keys")
            .fetch_one(store.pool())
            .await
            .unwrap()
            .try_get::<i64, _>(0)
            .unwrap()
    };
    // The victim's key, certified to the victim (directly, as the CLI issues: the RA refuses
    // a key certified to another subscriber) and, from a copied CSR, to the attacker.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (attacker, attackers) = issued_app(&auth, &clerk, &key, 32).await;
    let direct = |key: &rcgen::KeyPair| {
        let csr = crate::csr::VerifiedCsr::parse(&super::journey::csr_for(key)).unwrap();
        auth.issue(crate::authority::ApprovedRequest {
            profile: "personal".into(),
            csr,
            subject: crate::profile::SubjectData {
                surname: Some("VICTIM".into()),
                given_name: Some("Ka Ming".into()),
                emails: vec!["victim@example.hk".into()],
                ..Default::default()
            },
            days: None,
            renews: None,
            actor: "officer:test".into(),
        })
    };
    let victims = direct(&key).await.unwrap().serial.to_hex();
    revoke_online(
        &auth,
        &attacker.reference,
        &attacker.secret,
        "my revocation words",
        Reason::KeyCompromise,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        reason(attackers.clone()).await,
        Some(1),
        "the reporter's own certificate"
    );
    assert_eq!(
        reason(victims.clone()).await,
        None,
        "the victim's certificate was revoked"
    );
    assert_eq!(blocked().await, 0, "the key was blocked on a report");
    let reports = sqlx::query("SELECT COUNT(*) FROM key_compromise_reports")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get::<i64, _>(0)
        .unwrap();
    assert_eq!(reports, 1);

    // With proof: the key's signature over a fresh challenge blocks it and sweeps.
    let key2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (owner, owned_serial) = issued_app(&auth, &clerk, &key2, 33).await;
    let other_serial = direct(&key2).await.unwrap().serial.to_hex();
    // The RA itself refuses the key to another subscriber.
    let mut copy = super::journey::application(&crate::hkid::synthetic("Y", 35));
    copy.csr = super::journey::csr_for(&key2);
    assert!(matches!(
        submit(&auth, copy).await,
        Err(Error::Invalid { field: "csr", .. })
    ));
    let sign = |key: &rcgen::KeyPair, message: &str| {
        rcgen::SigningKey::sign(key, message.as_bytes()).unwrap()
    };
    let (challenge, serial) = key_compromise_challenge(&auth, &owner.reference, &owner.secret)
        .await
        .unwrap();
    assert_eq!(serial, owned_serial);
    // Signed by another key: refused, and nothing changes.
    let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let message = key_compromise_message(&owner.reference, &serial, &challenge);
    let e = revoke_online(
        &auth,
        &owner.reference,
        &owner.secret,
        "my revocation words",
        Reason::KeyCompromise,
        Some(&sign(&stranger, &message)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Invalid {
                field: "key_proof",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(reason(owned_serial.clone()).await, None);
    // The challenge was spent by that attempt: a right signature over it is refused too.
    assert!(revoke_online(
        &auth,
        &owner.reference,
        &owner.secret,
        "my revocation words",
        Reason::KeyCompromise,
        Some(&sign(&key2, &message)),
    )
    .await
    .is_err());
    let (challenge, _) = key_compromise_challenge(&auth, &owner.reference, &owner.secret)
        .await
        .unwrap();
    let message = key_compromise_message(&owner.reference, &serial, &challenge);
    revoke_online(
        &auth,
        &owner.reference,
        &owner.secret,
        "my revocation words",
        Reason::KeyCompromise,
        Some(&sign(&key2, &message)),
    )
    .await
    .unwrap();
    assert_eq!(reason(owned_serial).await, Some(1));
    assert_eq!(
        reason(other_serial).await,
        Some(1),
        "the proven key was swept"
    );
    assert_eq!(blocked().await, 1);
    // An officer confirms the earlier report from the CLI path: the key is blocked and the
    // victim's certificate goes too.
    let s = crate::serial::SerialNumber::from_hex(&attackers).unwrap();
    auth.revoke(s, Reason::KeyCompromise, "officer:test")
        .await
        .unwrap();
    assert_eq!(reason(victims).await, Some(1));
    assert_eq!(blocked().await, 2);
}

/// Issue 12, defect 2: with Debian weak-key lists configured, a citizen's application with a
/// weak key is refused at submission by name (not only later, at the counter's approval), and
/// nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_weak_keys_are_refused_at_submission() {
    let keys = tempfile::tempdir().unwrap();
    std::fs::write(
        keys.path().join("1000.key"),
        include_str!("../../testdata/debian-weak-rsa2048-pid1000.key"),
    )
    .unwrap();
    let lists = tempfile::tempdir().unwrap();
    crate::keys::debian::build(keys.path(), lists.path()).unwrap();
    let dir = lists.path().to_path_buf();
    let (_dir, auth) = test_ca_with(|c| c.keys.debian_weak_dir = Some(dir)).await;
    ensure_outlet(auth.store(), "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let weak = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(
        include_str!("../../testdata/debian-weak-rsa2048-pid1000.pk8.pem"),
        &rcgen::PKCS_RSA_SHA256,
    )
    .unwrap();
    let hkid = crate::hkid::synthetic("W", 2008);
    let mut form = super::journey::application(&hkid);
    form.csr = super::journey::csr_for(&weak);
    match submit(&auth, form).await {
        Err(Error::WeakKey(m)) => assert!(m.contains("CVE-2008-0166"), "{m}"),
        other => panic!("a Debian weak key was not refused: {other:?}"),
    }
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM applications")
        .fetch_one(auth.store().pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "a refused application left a record");
    // An ordinary key is accepted beside the lists.
    let mut form = super::journey::application(&hkid);
    form.csr = super::journey::csr_for(
        &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
    );
    submit(&auth, form).await.unwrap();
}

/// Issue 12, defect 4: with `dcv.mpic = "off"` nothing is issued under the TLS BR OV policy —
/// a server application is refused at submission, and the issuance core refuses a server
/// certificate from any channel (here an approved request given to the core directly) — while the Individual CA
/// issues as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpic_off_issues_no_br_server_certificate() {
    let (_dir, auth) = test_ca_with(|c| c.dcv.mpic = crate::config::Mpic::Off).await;
    ensure_outlet(auth.store(), "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let hkid = crate::hkid::synthetic("M", 3229);
    let mut form = super::journey::application(&hkid);
    form.profile = "server".into();
    form.organization = "Example Trading Limited".into();
    form.org_id = "1234-5678".into();
    form.email = "it@example.hk".into();
    form.dns_names = vec!["www.example.hk".into()];
    match submit(&auth, form).await {
        Err(Error::Profile { reason, .. }) => assert!(reason.contains("3.2.2.9"), "{reason}"),
        other => panic!("a server application was accepted with mpic off: {other:?}"),
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let request = |profile: &str, subject| crate::authority::ApprovedRequest {
        profile: profile.into(),
        csr: crate::csr::VerifiedCsr::parse(&super::journey::csr_for(&key)).unwrap(),
        subject,
        days: None,
        renews: None,
        actor: "test".into(),
    };
    let server = crate::profile::SubjectData {
        organization: Some("Example Trading Limited".into()),
        org_id: Some("12345678".into()),
        dns_names: vec!["www.example.hk".into()],
        ..Default::default()
    };
    match auth.issue(request("server", server.clone())).await {
        Err(Error::Profile { reason, .. }) => assert!(reason.contains("dcv.mpic"), "{reason}"),
        other => panic!("a server certificate was issued with mpic off: {other:?}"),
    }
    let personal = crate::profile::SubjectData {
        surname: Some("CHAN".into()),
        given_name: Some("Tai Man".into()),
        emails: vec!["tm.chan@example.hk".into()],
        ..Default::default()
    };
    auth.issue(request("personal", personal)).await.unwrap();
}

/// Issue 12, defects 5 and 6: countryName comes from what the counter verified — the HKID card
/// a matched identity check saw (HK) for a person, the register the organisation check
/// confirmed for an organisation — never from configuration; a government bureau is named
/// `GOVHK` without a registration number; a server application's organisation check records the
/// locality of its registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_carry_what_the_counter_verified() {
    use x509_parser::prelude::*;
    // A configured country that is not Hong Kong's: it must not reach a subscriber.
    let (_dir, auth) = test_ca_with(|c| c.ca.country = "GB".into()).await;
    ensure_outlet(auth.store(), "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let clerk = session_of(&auth, "clerk1", Role::Clerk).await;
    let subject_of = |der: &[u8]| {
        let (_, c) = X509Certificate::from_der(der).unwrap();
        let get = |oid: &str| {
            c.subject()
                .iter_attributes()
                .find(|a| a.attr_type().to_id_string() == oid)
                .map(|a| a.as_str().unwrap().to_string())
        };
        (get("2.5.4.6"), get("2.5.4.97"))
    };
    let certificate = |serial: &str| {
        let store = auth.store().clone();
        let serial = serial.to_string();
        async move {
            store
                .certificate(&serial)
                .await
                .unwrap()
                .unwrap()
                .cert_der
                .unwrap()
        }
    };

    // A person: HK, the issuer of the HKID card checked.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (_, serial) = issued_app(&auth, &clerk, &key, 7001).await;
    assert_eq!(
        subject_of(&certificate(&serial).await),
        (Some("HK".into()), None)
    );

    // A bureau: organizationIdentifier GOVHK, no number; C=HK from the register.
    let hkid = crate::hkid::synthetic("G", 7002);
    let mut form = super::journey::application(&hkid);
    form.profile = "encipherment".into();
    form.organization = "Example Bureau".into();
    form.org_register = "gov".into();
    form.org_id = "12345678".into();
    form.email = "info@example.gov.hk".into();
    form.csr = super::journey::csr_for(
        &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
    );
    assert!(matches!(
        submit(&auth, form.clone()).await,
        Err(Error::Invalid {
            field: "org_id",
            ..
        })
    ));
    form.org_id = String::new();
    let sub = submit(&auth, form).await.unwrap();
    confirm_email(auth.store(), &sub.reference, &sub.secret, &sub.email_code)
        .await
        .unwrap();
    check_identity(&auth, &clerk, &sub.id, 1, hkid.expose(), true, false)
        .await
        .unwrap();
    assert!(matches!(
        check_organisation(&auth, &clerk, &sub.id, 1, "12345678", true, None).await,
        Err(Error::Invalid {
            field: "org_id",
            ..
        })
    ));
    assert!(matches!(
        check_organisation(&auth, &clerk, &sub.id, 1, "", true, Some("Kowloon")).await,
        Err(Error::Invalid {
            field: "locality",
            ..
        })
    ));
    check_organisation(&auth, &clerk, &sub.id, 1, "", true, None)
        .await
        .unwrap();
    record_fee(&auth, &clerk, &sub.id, 15_000, "cash", "R-G")
        .await
        .unwrap();
    // No registration number backs a government entity: two people approve, one senior.
    assert!(matches!(
        decide(&auth, &clerk, &sub.id, 1, Decision::Approve).await,
        Ok(Decided::AwaitingSecond)
    ));
    let supervisor = session_of(&auth, "super1", Role::Supervisor).await;
    let Decided::Issued { serial, .. } = decide(&auth, &supervisor, &sub.id, 1, Decision::Approve)
        .await
        .unwrap()
    else {
        panic!("not issued")
    };
    assert_eq!(
        subject_of(&certificate(&serial).await),
        (Some("HK".into()), Some("GOVHK".into()))
    );

    // A server application's organisation check needs the registration's locality.
    let hkid = crate::hkid::synthetic("G", 7003);
    let mut form = super::journey::application(&hkid);
    form.profile = "server".into();
    form.organization = "Example Trading Limited".into();
    form.org_id = "1234-5678".into();
    form.email = "it@example.hk".into();
    form.dns_names = vec!["www.example.hk".into()];
    form.csr = super::journey::csr_for(
        &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
    );
    let sub = submit(&auth, form).await.unwrap();
    assert!(matches!(
        check_organisation(&auth, &clerk, &sub.id, 1, "12345678", true, None).await,
        Err(Error::Invalid {
            field: "locality",
            ..
        })
    ));
    check_organisation(
        &auth,
        &clerk,
        &sub.id,
        1,
        "12345678",
        true,
        Some(" Kwun Tong "),
    )
    .await
    .unwrap();
    let locality: Option<String> =
        sqlx::query("SELECT org_locality FROM applications WHERE id = $1")
            .bind(&sub.id)
            .fetch_one(auth.store().pool())
            .await
            .unwrap()
            .get(0);
    assert_eq!(locality.as_deref(), Some("Kwun Tong"));
}

/// Issue 12, item 13: Certificate Problem Reports. A report without proof opens the BR clocks
/// (preliminary report in 24 hours; revocation in 24 hours for key compromise, 5 days
/// otherwise), which `report_clocks` counts as nearing and overdue as the clock moves; an
/// officer sends the preliminary findings to the reporter and the subscriber and decides; a
/// CSR signed by the certificate's key revokes at once; only officers see the queue; the
/// reporter's mailbox and words are sealed; one address is rate-limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problem_reports_run_on_the_br_clocks() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    ensure_outlet(auth.store(), "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let clerk = session_of(&auth, "clerk1", Role::Clerk).await;
    let officer = session_of(&auth, "officer1", Role::Officer).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (_, serial) = issued_app(&auth, &clerk, &key, 8101).await;
    let report = |kind: &str, serial: &str, proof: Vec<u8>, source: &str| NewReport {
        kind: kind.into(),
        serial: serial.into(),
        description: "The key was posted on a public paste site.".into(),
        reporter_email: "researcher@example.org".into(),
        proof_csr: proof,
        source: source.into(),
    };

    // Refused by name, nothing recorded.
    for (r, field) in [
        (report("stolen", &serial, vec![], "a"), "kind"),
        (report("misuse", "00ff", vec![], "a"), "serial"),
        (report("misuse", "not hex", vec![], "a"), "serial"),
        (
            report(
                "key_compromise",
                &serial,
                super::journey::csr_for(
                    &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
                ),
                "a",
            ),
            "proof_csr",
        ),
    ] {
        match report_problem(&auth, r).await {
            Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }

    // A key-compromise report without proof: both clocks run 24 hours.
    let colons = serial
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let got = report_problem(
        &auth,
        report("key_compromise", &colons, vec![], "192.0.2.1"),
    )
    .await
    .unwrap();
    assert!(got.revoked.is_empty());
    assert_eq!(got.revocation_due - got.preliminary_due, 0);
    assert_eq!(got.notices.len(), 1);
    assert_eq!(got.notices[0].to, "researcher@example.org");
    assert!(got.notices[0].body.contains(&got.reference));
    let t0 = got.preliminary_due - 86_400;
    let clocks = |at: i64| {
        let store = auth.store().clone();
        async move { report_clocks(&store, at).await.unwrap() }
    };
    assert_eq!(
        clocks(t0 + 3600).await,
        ReportClocks {
            open: 1,
            ..Default::default()
        }
    );
    let nearing = clocks(t0 + 19 * 3600).await;
    assert_eq!(
        (nearing.preliminary_nearing, nearing.revocation_nearing),
        (1, 1)
    );
    let overdue = clocks(t0 + 25 * 3600).await;
    assert_eq!(
        (overdue.preliminary_overdue, overdue.revocation_overdue),
        (1, 1)
    );

    // The sealed fields are not in the database in clear.
    let raw: Vec<u8> = sqlx::query("SELECT reporter_sealed FROM problem_reports WHERE id = $1")
        .bind(&got.id)
        .fetch_one(auth.store().pool())
        .await
        .unwrap()
        .get(0);
    assert!(!raw.windows(10).any(|w| w == b"researcher"));

    // Officers only.
    assert!(matches!(
        report_queue(&auth, &clerk, t0).await,
        Err(Error::Forbidden(_))
    ));
    let queue = report_queue(&auth, &officer, t0 + 25 * 3600).await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].reporter_email, "researcher@example.org");
    assert_eq!(queue[0].preliminary_clock, Clock::Overdue);
    // The preliminary report goes to the reporter and to the subscriber (the application's
    // mailbox), once.
    let sent = report_preliminary(&auth, &officer, &got.id, "We are checking the paste.")
        .await
        .unwrap();
    let to: Vec<&str> = sent.iter().map(|n| n.to.as_str()).collect();
    assert_eq!(to, vec!["researcher@example.org", "tm.chan@example.hk"]);
    assert!(matches!(
        report_preliminary(&auth, &officer, &got.id, "Again, later.").await,
        Err(Error::Conflict(_))
    ));
    let after = clocks(t0 + 25 * 3600).await;
    assert_eq!(
        (after.preliminary_overdue, after.revocation_overdue),
        (0, 1)
    );
    // The officer confirms: revoked for keyCompromise, the key blocked.
    let (revoked, notices) = report_decide(
        &auth,
        &officer,
        &got.id,
        ReportOutcome::Revoke(crate::revocation::Reason::KeyCompromise),
        "The paste holds the private key.",
    )
    .await
    .unwrap();
    assert_eq!(revoked, vec![serial.clone()]);
    assert_eq!(notices.len(), 2);
    assert_eq!(clocks(t0 + 25 * 3600).await, ReportClocks::default());
    let rec = auth.store().certificate(&serial).await.unwrap().unwrap();
    assert_eq!(rec.revocation_reason, Some(1));
    assert!(matches!(
        report_decide(
            &auth,
            &officer,
            &got.id,
            ReportOutcome::Reject,
            "Twice is wrong."
        )
        .await,
        Err(Error::Conflict(_))
    ));

    // Misuse: five days; rejected with the reason.
    let key2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (_, serial2) = issued_app(&auth, &clerk, &key2, 8102).await;
    let misuse = report_problem(&auth, report("misuse", &serial2, vec![], "192.0.2.1"))
        .await
        .unwrap();
    assert_eq!(misuse.revocation_due - misuse.preliminary_due, 4 * 86_400);
    report_decide(
        &auth,
        &officer,
        &misuse.id,
        ReportOutcome::Reject,
        "Not misuse: a test mail.",
    )
    .await
    .unwrap();

    // A proof is a CSR by the certificate's key stating the compromise of this serial: the
    // subscriber's own issuance CSR (anyone who saw it could replay it) or a statement about
    // another serial proves nothing.
    let statement = |serial: &str| {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            crate::csr::compromise_statement(serial),
        );
        p.serialize_request(&key2).unwrap().der().to_vec()
    };
    for proof in [super::journey::csr_for(&key2), statement(&serial)] {
        match report_problem(
            &auth,
            report("key_compromise", &serial2, proof, "192.0.2.1"),
        )
        .await
        {
            Err(Error::Invalid {
                field: "proof_csr", ..
            }) => {}
            other => panic!("a replayed or misdirected proof: {other:?}"),
        }
    }
    assert_eq!(
        auth.store()
            .certificate(&serial2)
            .await
            .unwrap()
            .unwrap()
            .revocation_reason,
        None
    );
    // With proof: revoked at once, the report closed.
    let proved = report_problem(
        &auth,
        report("key_compromise", &serial2, statement(&serial2), "192.0.2.1"),
    )
    .await
    .unwrap();
    assert_eq!(proved.revoked, vec![serial2.clone()]);
    assert_eq!(clocks(t0 + 30 * 86_400).await, ReportClocks::default());
    let to: Vec<&str> = proved.notices.iter().map(|n| n.to.as_str()).collect();
    assert_eq!(to, vec!["tm.chan@example.hk", "researcher@example.org"]);

    // One address files at most 20 an hour.
    for _ in 0..20 {
        let _ = report_problem(&auth, report("other", &serial2, vec![], "198.51.100.7")).await;
    }
    assert!(matches!(
        report_problem(&auth, report("other", &serial2, vec![], "198.51.100.7")).await,
        Err(Error::TooManyAttempts(_))
    ));
}

/// Issue 14: decisions of large effect need two officers. One proposes (a query becomes its
/// serials then), the proposer cannot confirm, a clerk cannot take part, another officer
/// confirms and it is carried out once (a second confirmation is a conflict); a withdrawn or
/// an expired proposal does nothing; a key block proposed by a certificate's serial blocks
/// that key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_decisions_need_two_officers() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let auth = std::sync::Arc::new(auth);
    let store = auth.store().clone();
    ensure_outlet(&store, "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let clerk = session_of(&auth, "clerk1", Role::Clerk).await;
    let alice = session_of(&auth, "alice", Role::Officer).await;
    let bob = session_of(&auth, "bob", Role::Officer).await;
    let mut serials = Vec::new();
    for n in 0..3 {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let (_, serial) = issued_app(&auth, &clerk, &key, 40 + n).await;
        serials.push(serial);
    }
    let state = |s: &str| {
        let store = store.clone();
        let s = s.to_string();
        async move {
            match store.certificate(&s).await.unwrap().unwrap().revoked_at {
                Some(_) => "revoked",
                None => "issued",
            }
        }
    };

    let by_query = officer::ProposalRequest {
        kind: "mass_revocation".into(),
        reason: "cessationOfOperation".into(),
        profile: Some("personal".into()),
        ..Default::default()
    };
    let e = officer::propose(&auth, &clerk, &by_query)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e}");
    let p = officer::propose(&auth, &alice, &by_query).await.unwrap();
    assert_eq!(p.state, "pending");
    assert_eq!(
        p.summary,
        "revoke 3 certificate(s) (3 matching profile personal issued - to -) for cessationOfOperation"
    );
    let params: serde_json::Value = serde_json::from_str(&p.params).unwrap();
    assert_eq!(
        params["serials"].as_array().unwrap().len(),
        3,
        "the second officer sees the list"
    );
    // A certificate issued after the proposal is not in it: the list was fixed when proposed.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (_, later) = issued_app(&auth, &clerk, &key, 50).await;
    let e = officer::confirm(&auth, &alice, &p.id).await.unwrap_err();
    assert!(
        matches!(e, Error::Forbidden(_)),
        "the proposer confirmed: {e}"
    );
    let e = officer::confirm(&auth, &clerk, &p.id).await.unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e}");
    assert_eq!(
        state(&serials[0]).await,
        "issued",
        "nothing before the second officer"
    );
    let done = officer::confirm(&auth, &bob, &p.id).await.unwrap();
    assert_eq!(done.state, "done");
    assert_eq!(done.decided_by.as_deref(), Some("bob"));
    assert_eq!(
        done.outcome.as_deref(),
        Some("3 revoked, 0 already revoked, 0 failed")
    );
    for s in &serials {
        assert_eq!(state(s).await, "revoked", "{s}");
    }
    assert_eq!(state(&later).await, "issued");
    let e = officer::confirm(&auth, &bob, &p.id).await.unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "carried out twice: {e}");

    // Withdrawn: nothing happens, and it cannot be confirmed afterwards.
    let p = officer::propose(
        &auth,
        &bob,
        &officer::ProposalRequest {
            kind: "mass_revocation".into(),
            reason: "superseded".into(),
            serials: vec![later.clone()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    officer::withdraw(&auth, &bob, &p.id).await.unwrap();
    assert!(officer::confirm(&auth, &alice, &p.id).await.is_err());
    assert_eq!(state(&later).await, "issued");
    // Expired: refused.
    let p = officer::propose(
        &auth,
        &bob,
        &officer::ProposalRequest {
            kind: "key_block".into(),
            reason: "published on a paste site".into(),
            serial: Some(later.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    sqlx::query("UPDATE officer_proposals SET expires_at = 1 WHERE id = $1")
        .bind(&p.id)
        .execute(store.pool())
        .await
        .unwrap();
    let e = officer::confirm(&auth, &alice, &p.id).await.unwrap_err();
    assert!(matches!(e, Error::Expired(_)), "{e}");
    // Confirmed: the certificate's key is blocked.
    let p = officer::propose(
        &auth,
        &bob,
        &officer::ProposalRequest {
            kind: "key_block".into(),
            reason: "published on a paste site".into(),
            serial: Some(later.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    officer::confirm(&auth, &alice, &p.id).await.unwrap();
    let fp = store.certificate(&later).await.unwrap().unwrap().key_fp;
    let blocked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blocked_keys WHERE key_fp = $1")
        .bind(fp)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(blocked, 1);
    // Bad proposals are named.
    for (r, field) in [
        (
            officer::ProposalRequest {
                kind: "mass_revocation".into(),
                reason: "certificateHold".into(),
                serials: vec![later.clone()],
                ..Default::default()
            },
            "reason",
        ),
        (
            officer::ProposalRequest {
                kind: "ca_revocation".into(),
                reason: "keyCompromise".into(),
                ca: Some("root".into()),
                ..Default::default()
            },
            "ca",
        ),
        // A CA that does not exist is refused at the proposal, not after two officers agreed.
        (
            officer::ProposalRequest {
                kind: "ca_revocation".into(),
                reason: "keyCompromise".into(),
                ca: Some("individual-3".into()),
                ..Default::default()
            },
            "ca",
        ),
        (
            officer::ProposalRequest {
                kind: "everything".into(),
                ..Default::default()
            },
            "kind",
        ),
        // From the attack on it: a free-text "profile" would become the summary the second
        // officer reads, and an empty one would match everything.
        (
            officer::ProposalRequest {
                kind: "mass_revocation".into(),
                reason: "superseded".into(),
                profile: Some("test-2026 (3 expired test certs, ticket 812)".into()),
                serials: vec![later.clone()],
                ..Default::default()
            },
            "profile",
        ),
        (
            officer::ProposalRequest {
                kind: "mass_revocation".into(),
                reason: "superseded".into(),
                profile: Some(String::new()),
                ..Default::default()
            },
            "profile",
        ),
        (
            officer::ProposalRequest {
                kind: "mass_revocation".into(),
                reason: "superseded".into(),
                profile: Some("ocsp-responder".into()),
                ..Default::default()
            },
            "profile",
        ),
    ] {
        let e = officer::propose(&auth, &alice, &r).await.unwrap_err();
        assert!(
            matches!(e, Error::Invalid { field: f, .. } if f == field),
            "{e}"
        );
    }
    // A responder's certificate is never in a mass revocation, listed or matched by time.
    auth.ensure_responders().await.unwrap();
    let responder: String = sqlx::query_scalar(
        "SELECT serial FROM certificates WHERE profile = 'ocsp-responder' LIMIT 1",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    let e = officer::propose(
        &auth,
        &alice,
        &officer::ProposalRequest {
            kind: "mass_revocation".into(),
            reason: "superseded".into(),
            serials: vec![responder.clone()],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Invalid {
                field: "serials",
                ..
            }
        ),
        "{e}"
    );
    let by_time = officer::propose(
        &auth,
        &alice,
        &officer::ProposalRequest {
            kind: "mass_revocation".into(),
            reason: "superseded".into(),
            issued_after: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!by_time.params.contains(&responder), "{}", by_time.params);
    // Left `confirming` by a process that stopped: finished by the next one, as its officer.
    sqlx::query("UPDATE officer_proposals SET state = 'confirming', decided_by = (SELECT id FROM staff WHERE username = 'bob') WHERE id = $1")
        .bind(&by_time.id)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(officer::resume(&auth).await.unwrap(), 1);
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM officer_proposals WHERE id = $1")
            .bind(&by_time.id)
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(states, ["done"]);
    assert_eq!(state(&later).await, "revoked");
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM audit_log WHERE kind LIKE 'officer.%' ORDER BY seq")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        kinds,
        [
            "officer.proposed",
            "officer.confirmed",
            "officer.proposed",
            "officer.withdrawn",
            "officer.proposed",
            "officer.proposed",
            "officer.confirmed",
            "officer.proposed"
        ]
    );
}

/// Issue 14 (from the attack on staff administration): one admin never holds both of another
/// member's credentials — after resetting the password, the same admin may not give a new
/// authenticator (nor the other way round); another admin may. And the active admins never
/// drop below two: neither is disabled nor moved away while only two are active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_admin_never_holds_both_credentials_and_two_admins_remain() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let store = auth.store().clone();
    ensure_outlet(&store, "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let a = session_of(&auth, "admin-a", Role::Admin).await;
    let b = session_of(&auth, "admin-b", Role::Admin).await;
    session_of(&auth, "clerk1", Role::Clerk).await;
    let vault = auth.staff_keys();
    reset_password(&store, &a, "clerk1", "a temporary password 1")
        .await
        .unwrap();
    let e = new_totp(&store, &vault, &a, "clerk1").await.unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e}");
    new_totp(&store, &vault, &b, "clerk1").await.unwrap();
    let e = reset_password(&store, &b, "clerk1", "another temporary 22")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e}");
    // Two active admins: neither goes.
    let e = set_disabled(&store, &a, "admin-b", true).await.unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    let e = change_role(&store, &a, "admin-b", "clerk")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    assert_eq!(active_admins(&store).await.unwrap(), 2);
    // With a third, one may.
    session_of(&auth, "admin-c", Role::Admin).await;
    set_disabled(&store, &a, "admin-b", true).await.unwrap();
    assert_eq!(active_admins(&store).await.unwrap(), 2);
}

/// A token that outlived a password reset (made in a race with it) does nothing until the
/// member has chosen a new password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_a_member_whose_password_was_reset_does_nothing() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let store = auth.store().clone();
    ensure_outlet(&store, "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    session_of(&auth, "clerk1", Role::Clerk).await;
    let token = create_api_token(
        &store,
        "clerk1",
        "t",
        1,
        Scopes::parse("read").unwrap(),
        "test",
    )
    .await
    .unwrap();
    assert!(api_session(&store, &token)
        .await
        .unwrap()
        .authorize(Action::ViewApplications)
        .is_ok());
    sqlx::query("UPDATE staff SET must_change_password = 1 WHERE username = 'clerk1'")
        .execute(store.pool())
        .await
        .unwrap();
    let e = api_session(&store, &token)
        .await
        .unwrap()
        .authorize(Action::ViewApplications)
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e}");
}

/// Issue 14 follow-up: `init --admin` counts the active admins in the transaction that adds
/// the account, so bootstraps at once cannot make more than the limit (the count and the
/// insert were apart). Eight at once with one admin already: exactly one more is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_admins_at_once_make_no_more_than_the_limit() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    ensure_outlet(auth.store(), "hq", "Head office", "總辦事處", "test")
        .await
        .unwrap();
    staff(&auth, "admin0", "hq", Role::Admin).await;
    let auth = std::sync::Arc::new(auth);
    let tasks: Vec<_> = (1..=8)
        .map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move {
                let name = format!("admin{i}");
                create_bootstrap_admin(
                    auth.store(),
                    &auth.staff_keys(),
                    &NewStaff {
                        username: &name,
                        display_name: &name,
                        outlet: "hq",
                        role: Role::Admin,
                        password: "a password of some length",
                    },
                    "test",
                    MIN_ACTIVE_ADMINS,
                )
                .await
            })
        })
        .collect();
    let mut made = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => made += 1,
            Err(Error::Conflict(m)) => assert!(m.contains("active admin accounts exist"), "{m}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(made, 1);
    assert_eq!(
        active_admins(auth.store()).await.unwrap(),
        MIN_ACTIVE_ADMINS
    );
}

/// Review of issue 14: refused requests from citizens (the public form) are recorded one by
/// one up to a cap a minute; past it they are counted and the count recorded, so a flood of
/// bad CSRs neither swamps the audit trail nor goes unrecorded. Staff refusals are not capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_requests_is_counted_not_recorded_one_by_one() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let refused = Error::Encoding("not a CSR".into());
    let count = |kind: &'static str| {
        let store = auth.store().clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_log WHERE kind = $1")
                .bind(kind)
                .fetch_one(store.pool())
                .await
                .unwrap()
        }
    };
    let cap = i64::from(crate::authority::CITIZEN_REFUSALS_PER_MINUTE);
    for _ in 0..cap + 10 {
        auth.record_refusal_in("citizen", "personal", &refused, 1000)
            .await;
    }
    assert_eq!(count("issuance.refused").await, cap);
    assert_eq!(count("issuance.refusals_counted").await, 0);
    // The next minute's first refusal records it, and the count of the last minute's rest.
    auth.record_refusal_in("citizen", "personal", &refused, 1001)
        .await;
    assert_eq!(count("issuance.refused").await, cap + 1);
    let detail: String =
        sqlx::query_scalar("SELECT detail FROM audit_log WHERE kind = 'issuance.refusals_counted'")
            .fetch_one(auth.store().pool())
            .await
            .unwrap();
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["count"], 10, "{detail}");
    assert_eq!(detail["minute"], 1000, "{detail}");
    // Staff refusals are every one recorded.
    for _ in 0..cap + 5 {
        auth.record_refusal_in("staff:clerk1", "personal", &refused, 1001)
            .await;
    }
    assert_eq!(count("issuance.refused").await, 2 * cap + 6);
}

/// Issue 18: each kind of personal data goes at its time and not before, by a moved clock —
/// an unfinished application's `ra.retention_days` after its last change, an issued
/// certificate's application `ra.retention_after_expiry_days` after the certificate expires —
/// names and mailbox included; the audit record gives counts, never whose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_personal_data_goes_at_its_time_and_not_before() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let store = auth.store().clone();
    ensure_outlet(&store, "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let clerk = session_of(&auth, "clerk1", Role::Clerk).await;
    let new_key = || rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (issued, _) = issued_app(&auth, &clerk, &new_key(), 21).await;
    let (unfinished, _) = issued_app(&auth, &clerk, &new_key(), 22).await;
    let left_at = now() - 10;
    sqlx::query(
        "UPDATE applications SET state = 'submitted', certificate = NULL, updated_at = $2 WHERE id = $1",
    )
    .bind(&unfinished.id)
    .bind(left_at)
    .execute(store.pool())
    .await
    .unwrap();
    let not_after: i64 = sqlx::query_scalar(
        "SELECT c.not_after FROM certificates c JOIN applications a ON a.certificate = c.serial WHERE a.id = $1",
    )
    .bind(&issued.id)
    .fetch_one(store.pool())
    .await
    .unwrap();
    let ra = &auth.config().ra;
    let (days, after) = (
        i64::from(ra.retention_days),
        i64::from(ra.retention_after_expiry_days),
    );
    assert_eq!((days, after), (90, 2557), "the documented defaults");
    // (sealed HKID, surname, e-mail) of an application.
    let held = |id: String| {
        let store = store.clone();
        async move {
            let r =
                sqlx::query("SELECT hkid_sealed, surname, email FROM applications WHERE id = $1")
                    .bind(&id)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            let hkid: Vec<u8> = r.try_get(0).unwrap();
            let surname: String = r.try_get(1).unwrap();
            let email: String = r.try_get(2).unwrap();
            !hkid.is_empty() || !surname.is_empty() || !email.is_empty()
        }
    };
    let purged_at = |at: i64| {
        let auth = &auth;
        async move { purge(auth, at).await.unwrap() }
    };
    // The unfinished application: kept to the second, then gone.
    assert_eq!(purged_at(left_at + days * 86_400).await, 0);
    assert!(held(unfinished.id.clone()).await);
    assert_eq!(purged_at(left_at + days * 86_400 + 1).await, 1);
    assert!(!held(unfinished.id.clone()).await, "names or HKID kept");
    assert!(
        held(issued.id.clone()).await,
        "an issued certificate's record went early"
    );
    // The issued one: kept while the certificate is valid and for the period after it.
    assert_eq!(purged_at(not_after).await, 0);
    assert_eq!(purged_at(not_after + after * 86_400 - 1).await, 0);
    assert!(held(issued.id.clone()).await);
    let issued_id = issued.id.clone();
    let request = || {
        let store = store.clone();
        let id = issued_id.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT c.request FROM certificates c JOIN applications a ON a.certificate = c.serial WHERE a.id = $1",
            )
            .bind(&id)
            .fetch_one(store.pool())
            .await
            .unwrap()
        }
    };
    assert!(
        request().await.contains("CHAN"),
        "the issuance request holds the subject"
    );
    assert_eq!(purged_at(not_after + after * 86_400 + 1).await, 1);
    assert!(!held(issued.id.clone()).await, "kept past its period");
    assert_eq!(
        request().await,
        "{}",
        "the issuance request kept the subject"
    );
    // Nothing is purged twice; the records say how many, not whose.
    assert_eq!(purged_at(not_after + after * 86_400 + 2).await, 0);
    let (records, _, _) = store.audit_records().await.unwrap();
    let purges: Vec<&crate::audit::Record> =
        records.iter().filter(|r| r.kind == "ra.purged").collect();
    // (A run in between may purge the other certificate's issuance record, which can expire a
    // second or more earlier: counted apart.)
    assert!(
        purges
            .iter()
            .any(|r| r.detail.contains("\"applications_after_expiry\":1")),
        "{purges:?}"
    );
    for r in purges {
        assert!(r.subject.is_none());
        assert!(
            !r.detail.contains("CHAN") && !r.detail.contains('@'),
            "{}",
            r.detail
        );
    }
}

/// Issue 18: audit records go after `ra.audit_retention_days`, and not before — up to the
/// newest signed checkpoint made before the cutoff, declared by a signed `audit.pruned`
/// record — and the chain still verifies, against the witness too; a record removed any
/// other way is a finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_go_after_their_period_and_the_chain_still_verifies() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let store = auth.store().clone();
    let spki = auth.audit_public_key().to_vec();
    let event = |n: i64| crate::audit::Event {
        kind: "test.event",
        actor: "test".into(),
        subject: None,
        detail: serde_json::json!({ "n": n }),
    };
    for n in 0..3 {
        store.audit_now(&event(n)).await.unwrap();
    }
    let first_checkpoint = auth.checkpoint().await.unwrap().unwrap();
    // The rest is made at least a second later (record times are whole seconds).
    let made_first: i64 = sqlx::query_scalar("SELECT at FROM audit_log WHERE seq = $1")
        .bind(first_checkpoint)
        .fetch_one(store.pool())
        .await
        .unwrap();
    while now() <= made_first {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for n in 3..6 {
        store.audit_now(&event(n)).await.unwrap();
    }
    auth.checkpoint().await.unwrap().unwrap();
    store.audit_now(&event(6)).await.unwrap();
    let at_of_head = |store: crate::store::Store| async move {
        let (seq, _) = store.audit_head().await.unwrap();
        sqlx::query_scalar::<_, i64>("SELECT at FROM audit_log WHERE seq = $1")
            .bind(seq)
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    // What a genuine purge will take: the newest checkpoint of the first checkpoint's second.
    let expected: i64 = sqlx::query_scalar(
        "SELECT MAX(c.seq) FROM audit_checkpoints c JOIN audit_log l ON l.seq = c.seq WHERE l.at <= $1",
    )
    .bind(made_first)
    .fetch_one(store.pool())
    .await
    .unwrap();
    // A database writer appends a record dated 1970 at the head (the chain hash has no key)
    // and the signer checkpoints it: it must carry nothing away with it.
    let (head_seq, head_hash) = store.audit_head().await.unwrap();
    let forged = crate::audit::chain_hash(
        &head_hash,
        head_seq + 1,
        1,
        "test.event",
        "attacker",
        None,
        "{}",
    );
    sqlx::query(
        "INSERT INTO audit_log (seq, at, kind, actor, subject, detail, prev_hash, hash) \
         VALUES ($1, 1, 'test.event', 'attacker', NULL, '{}', $2, $3)",
    )
    .bind(head_seq + 1)
    .bind(head_hash)
    .bind(forged.clone())
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(head_seq + 1)
        .bind(forged)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(auth.checkpoint().await.unwrap(), Some(head_seq + 1));
    assert_eq!(at_of_head(store.clone()).await, 1);
    store.audit_now(&event(7)).await.unwrap();
    let witnessed = store.checkpoints().await.unwrap();
    let at_of = |seq: i64| {
        let store = store.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT at FROM audit_log WHERE seq = $1")
                .bind(seq)
                .fetch_one(store.pool())
                .await
                .unwrap()
        }
    };
    let made = at_of(first_checkpoint).await;
    let days = i64::from(auth.config().ra.audit_retention_days);
    assert_eq!(days, 2557, "the documented default");
    // To the second: nothing made before the cutoff has a checkpoint yet.
    assert_eq!(auth.prune_audit(made + days * 86_400).await.unwrap(), None);
    assert_eq!(
        Authority::verify_audit(&store, &spki)
            .await
            .unwrap()
            .findings,
        vec![]
    );
    // A second later the first checkpoint's stretch (and any checkpoint made in that second)
    // goes — not the backdated record's.
    let (to, purged) = auth
        .prune_audit(made + days * 86_400 + 1)
        .await
        .unwrap()
        .expect("nothing purged");
    assert_eq!((to, purged), (expected, u64::try_from(expected).unwrap()));
    let first_kept: i64 = sqlx::query_scalar("SELECT MIN(seq) FROM audit_log")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(first_kept, to + 1);
    // The chain verifies and says what was purged; the witness still agrees.
    let v = Authority::verify_audit(&store, &spki).await.unwrap();
    assert_eq!(v.findings, vec![]);
    let gap = v
        .gaps
        .iter()
        .find(|g| g.pruned_by.is_some())
        .expect("no purge declared");
    assert_eq!((gap.from, gap.to), (1, to));
    let (records, _, _) = store.audit_records().await.unwrap();
    let checkpoints = store.checkpoints().await.unwrap();
    assert_eq!(
        checkpoints.first().map(|c| c.seq),
        Some(to),
        "the anchor's checkpoint is kept"
    );
    assert_eq!(
        crate::audit::witness::compare(&witnessed, &records, &checkpoints, &spki, &v.gaps),
        None
    );
    // Nothing is purged twice.
    assert_eq!(
        auth.prune_audit(made + days * 86_400 + 1).await.unwrap(),
        None
    );
    // The bound is closed again, and its row cannot be removed to open the trigger.
    let upto: i64 = sqlx::query_scalar("SELECT upto FROM audit_prune")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(upto, 0);
    assert!(sqlx::query("DELETE FROM audit_prune")
        .execute(store.pool())
        .await
        .is_err());
    // The append-only trigger still refuses any other deletion...
    assert!(sqlx::query("DELETE FROM audit_log WHERE seq = $1")
        .bind(first_kept)
        .execute(store.pool())
        .await
        .is_err());
    // ... and a record removed by someone who moves its bound too is a finding.
    sqlx::query("UPDATE audit_prune SET upto = $1")
        .bind(first_kept)
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE seq = $1")
        .bind(first_kept)
        .execute(store.pool())
        .await
        .unwrap();
    assert_ne!(
        Authority::verify_audit(&store, &spki)
            .await
            .unwrap()
            .findings,
        vec![],
        "a record removed without a signed declaration went unnoticed"
    );
}
