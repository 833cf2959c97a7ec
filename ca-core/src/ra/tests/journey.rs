//! A citizen's application from the form to the certificate, organisations, minors and
//! roles, failed issuances, dual control, renewal and re-key, sign-in: through the RA's
//! functions on a real store and SoftHSM2 token.

use sha2::{Digest, Sha256};
use sqlx::Row;
use zeroize::Zeroizing;

use crate::authority::{test_ca_with, Authority};
use crate::error::{Error, Result};
use crate::hkid::Hkid;
use crate::profile::SubjectData;
use crate::ra::support::now;
use crate::ra::*;
use crate::serial::SerialNumber;

/// A CSR for `key`.
pub(super) fn csr_for(key: &rcgen::KeyPair) -> Vec<u8> {
    rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(key)
        .unwrap()
        .der()
        .to_vec()
}

fn csr() -> Vec<u8> {
    csr_for(&rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap())
}

/// An application for `hkid` with `key`'s CSR, e-mail confirmed, identity checked and fee
/// recorded by `clerk`: ready for a decision.
pub(super) async fn ready_for_approval(
    auth: &Authority,
    clerk: &StaffSession,
    hkid: &Hkid,
    key: &rcgen::KeyPair,
) -> Submitted {
    let mut form = application(hkid);
    form.csr = csr_for(key);
    let sub = submit(auth, form).await.unwrap();
    confirm_email(auth.store(), &sub.reference, &sub.secret, &sub.email_code)
        .await
        .unwrap();
    check_identity(auth, clerk, &sub.id, 1, hkid.expose(), true, false)
        .await
        .unwrap();
    record_fee(auth, clerk, &sub.id, 5_000, "cash", "R")
        .await
        .unwrap();
    sub
}

/// The General Post Office with a clerk ("clerk1") and a supervisor ("super1"), both
/// signed in.
pub(super) async fn gpo_with_staff(auth: &Authority) -> (StaffSession, StaffSession) {
    ensure_outlet(
        auth.store(),
        "gpo",
        "General Post Office",
        "郵政總局",
        "test",
    )
    .await
    .unwrap();
    let (_, s1) = staff(auth, "clerk1", "gpo", Role::Clerk).await;
    let (_, s2) = staff(auth, "super1", "gpo", Role::Supervisor).await;
    (
        signed_in(auth, "clerk1", &s1, 0).await,
        signed_in(auth, "super1", &s2, 0).await,
    )
}

pub(super) async fn staff(
    auth: &Authority,
    name: &str,
    outlet: &str,
    role: Role,
) -> (String, Zeroizing<Vec<u8>>) {
    create_staff(
        auth.store(),
        &auth.staff_keys(),
        &NewStaff {
            username: name,
            display_name: name,
            outlet,
            role,
            password: "a password of some length",
        },
        "test",
    )
    .await
    .unwrap()
}

/// Signs in at a given step, so several sign-ins in one test each use a fresh code.
pub(super) async fn signed_in(
    auth: &Authority,
    name: &str,
    secret: &[u8],
    step: i64,
) -> StaffSession {
    sqlx::query("UPDATE staff SET totp_last_step = $2 WHERE username = $1")
        .bind(name)
        .bind(now() / crate::totp::STEP - 2 + step)
        .execute(auth.store().pool())
        .await
        .unwrap();
    let code = crate::totp::code_at(secret, now());
    sign_in(auth, name, "a password of some length", &code)
        .await
        .unwrap()
        .session
}

pub(super) fn application(hkid: &Hkid) -> NewApplication {
    NewApplication {
        profile: "personal".into(),
        surname: "Chan".into(),
        given_name: "Tai Man".into(),
        name_zh: "陳大文".into(),
        email: "tm.chan@example.hk".into(),
        hkid: format!(
            "{}({})",
            &hkid.expose()[..hkid.expose().len() - 1],
            &hkid.expose()[hkid.expose().len() - 1..]
        ),
        date_of_birth: "1980-02-29".into(),
        phone: "+852 2921 2222".into(),
        address: "1 Connaught Place, Central".into(),
        outlet: "gpo".into(),
        consent_notices: false,
        publish_in_directory: false,
        revocation_secret: "my revocation words".into(),
        csr: csr(),
        language: "en".into(),
        entered_by: None,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citizen_to_certificate_with_every_refusal_on_the_way() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let store = auth.store().clone();
    ensure_outlet(&store, "gpo", "General Post Office", "郵政總局", "test")
        .await
        .unwrap();
    ensure_outlet(&store, "tst", "Tsim Sha Tsui", "尖沙咀", "test")
        .await
        .unwrap();
    let (_, s1) = staff(&auth, "clerk1", "gpo", Role::Clerk).await;
    let (_, s3) = staff(&auth, "clerk3", "tst", Role::Clerk).await;
    let hkid = crate::hkid::synthetic("Z", 683_451);
    let sub = submit(&auth, application(&hkid)).await.unwrap();
    assert!(sub.reference.starts_with("EC-"));

    // Nothing personal in clear anywhere in the tables.
    let dump: Vec<String> = sqlx::query("SELECT * FROM applications")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (0..sqlx::Row::len(r))
                .map(|i| {
                    r.try_get::<Option<String>, _>(i)
                        .ok()
                        .flatten()
                        .or_else(|| {
                            r.try_get::<Option<Vec<u8>>, _>(i)
                                .ok()
                                .flatten()
                                .map(|b| String::from_utf8_lossy(&b).into_owned())
                        })
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    for needle in [
        hkid.expose(),
        "683451",
        "2921 2222",
        "1980-02-29",
        "Connaught",
    ] {
        assert!(!dump.concat().contains(needle), "{needle} in clear");
    }

    // E-mail code: wrong, then right; tracking needs the secret.
    assert!(matches!(
        track(&store, &sub.reference, "wrong").await,
        Err(Error::NotFound)
    ));
    assert_eq!(
        track(&store, &sub.reference, &sub.secret)
            .await
            .unwrap()
            .status,
        Status::AwaitingEmail
    );
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert!(matches!(
        confirm_email(&store, &sub.reference, &sub.secret, wrong).await,
        Err(Error::CodeRejected { attempts_left }) if attempts_left == CODE_ATTEMPTS - 1
    ));
    confirm_email(&store, &sub.reference, &sub.secret, &sub.email_code)
        .await
        .unwrap();
    assert_eq!(
        track(&store, &sub.reference, &sub.secret)
            .await
            .unwrap()
            .status,
        Status::AwaitingVisit
    );

    // Staff: another outlet cannot see it.
    let other = signed_in(&auth, "clerk3", &s3, 0).await;
    assert!(matches!(
        staff_view(&auth, &other, &sub.id).await,
        Err(Error::NotFound)
    ));
    assert!(queue(&store, &other, None).await.unwrap().is_empty());
    let clerk = signed_in(&auth, "clerk1", &s1, 0).await;
    let q = queue(&store, &clerk, None).await.unwrap();
    assert_eq!(q.len(), 1);
    let view = staff_view(&auth, &clerk, &sub.id).await.unwrap();
    assert_eq!(view.hkid_masked, hkid.masked());
    assert!(!view.phone_masked.contains("2921"));

    // Approval before the counter steps is refused, then each step's refusals.
    assert!(matches!(
        decide(&auth, &clerk, &sub.id, 1, Decision::Approve).await,
        Err(Error::Conflict(_))
    ));
    let stranger = crate::hkid::synthetic("Z", 683_452);
    assert!(matches!(
        check_identity(&auth, &clerk, &sub.id, 1, stranger.expose(), true, false).await,
        Err(Error::Invalid { field: "hkid", .. })
    ));
    assert!(matches!(
        check_identity(&auth, &clerk, &sub.id, 1, hkid.expose(), false, false).await,
        Err(Error::Invalid {
            field: "card_sighted",
            ..
        })
    ));
    assert!(matches!(
        check_identity(&auth, &clerk, &sub.id, 1, "Z683451(0)", true, false).await,
        Err(Error::Hkid(_))
    ));
    check_identity(
        &auth,
        &clerk,
        &sub.id,
        1,
        &hkid.expose().to_lowercase(),
        true,
        false,
    )
    .await
    .unwrap();
    assert!(matches!(
        decide(&auth, &clerk, &sub.id, 1, Decision::Approve).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        record_fee(&auth, &clerk, &sub.id, 4_800, "cash", "R-1").await,
        Err(Error::Invalid {
            field: "amount",
            ..
        })
    ));
    record_fee(&auth, &clerk, &sub.id, 5_000, "octopus", "R-1")
        .await
        .unwrap();
    assert!(matches!(
        decide(&auth, &clerk, &sub.id, 2, Decision::Approve).await,
        Err(Error::Conflict(_))
    ));
    let revealed = reveal(&auth, &clerk, &sub.id, Revealable::Hkid)
        .await
        .unwrap();
    assert_eq!(&*revealed, hkid.expose());

    // Approve: issued through the core.
    let Decided::Issued { serial, .. } = decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
        .await
        .unwrap()
    else {
        panic!("not issued");
    };
    let v = track(&store, &sub.reference, &sub.secret).await.unwrap();
    assert_eq!(
        (v.status, v.certificate.as_deref()),
        (Status::Issued, Some(serial.as_str()))
    );
    let der = certificate(&store, &sub.reference, &sub.secret)
        .await
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        SerialNumber::from_be_bytes(cert.raw_serial()),
        SerialNumber::from_hex(&serial)
    );
    assert!(matches!(
        decide(&auth, &clerk, &sub.id, 1, Decision::Approve).await,
        Err(Error::Conflict(_))
    ));

    // Online revocation with the revocation secret.
    assert!(matches!(
        revoke_online(
            &auth,
            &sub.reference,
            &sub.secret,
            "not it",
            crate::revocation::Reason::KeyCompromise,
            None
        )
        .await,
        Err(Error::Invalid { .. })
    ));
    revoke_online(
        &auth,
        &sub.reference,
        &sub.secret,
        "my revocation words",
        crate::revocation::Reason::KeyCompromise,
        None,
    )
    .await
    .unwrap();
    let status = store.certificate(&serial).await.unwrap().unwrap();
    assert_eq!(status.revocation_reason, Some(1));

    // Every step left an audit record, and none names the HKID.
    let log = store.audit_records().await.unwrap().0;
    for kind in [
        "ra.application.submitted",
        "ra.email.confirmed",
        "ra.staff.signin",
        "ra.identity.mismatch",
        "ra.identity.checked",
        "ra.fee.recorded",
        "ra.pii.revealed",
        "ra.approval",
        "ra.issued",
    ] {
        assert!(log.iter().any(|r| r.kind == kind), "no {kind} event");
    }
    assert!(!format!("{log:?}").contains(hkid.expose()));
}

/// Organisational and server applications: the Authorised Representative's identity and the
/// organisation's documents are checked at the counter (a mismatch withdraws the check);
/// the organisational certificate names the Authorised User and the organisation; a server
/// application cannot be approved before its domains are validated, and never with a
/// wildcard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisation_applications_need_their_documents_and_domains() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let store = auth.store().clone();
    let (clerk, sup) = gpo_with_staff(&auth).await;
    let at_counter = |sub: &Submitted, hkid: &Hkid, fee: i64| {
        let (auth, clerk) = (&auth, &clerk);
        let (id, reference, secret, code, hkid) = (
            sub.id.clone(),
            sub.reference.clone(),
            sub.secret.clone(),
            sub.email_code.clone(),
            hkid.expose().to_string(),
        );
        async move {
            confirm_email(auth.store(), &reference, &secret, &code)
                .await
                .unwrap();
            check_identity(auth, clerk, &id, 1, &hkid, true, false)
                .await
                .unwrap();
            record_fee(auth, clerk, &id, fee, "cheque", "R-1")
                .await
                .unwrap();
        }
    };

    let hkid = crate::hkid::synthetic("K", 220_011);
    let mut form = application(&hkid);
    form.profile = "organisational".into();
    form.organization = "Example Trading Limited".into();
    form.org_id = "1234-5678".into();
    form.user_surname = "Wong".into();
    form.user_given_name = "Siu Ming".into();
    form.email = "sm.wong@example.hk".into();
    let sub = submit(&auth, form.clone()).await.unwrap();
    at_counter(&sub, &hkid, 15_000).await;
    let e = decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("organisation"), "{e}");
    check_organisation(&auth, &clerk, &sub.id, 1, "12345678", true, None)
        .await
        .unwrap();
    let e = check_organisation(&auth, &clerk, &sub.id, 1, "87654321", true, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Invalid {
                field: "org_id",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        !staff_view(&auth, &clerk, &sub.id)
            .await
            .unwrap()
            .organisation_checked
    );
    let e = check_organisation(&auth, &clerk, &sub.id, 1, "12345678", false, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Invalid {
                field: "documents_sighted",
                ..
            }
        ),
        "{e}"
    );
    check_organisation(&auth, &clerk, &sub.id, 1, "1234 5678", true, None)
        .await
        .unwrap();
    let view = staff_view(&auth, &clerk, &sub.id).await.unwrap();
    assert!(view.organisation_checked && view.dual_control);
    assert_eq!(
        view.organization,
        Some(("Example Trading Limited".into(), "12345678".into()))
    );
    assert_eq!(view.authorised_user.as_deref(), Some("WONG Siu Ming"));
    assert!(matches!(
        decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
            .await
            .unwrap(),
        Decided::AwaitingSecond
    ));
    assert!(matches!(
        decide(&auth, &sup, &sub.id, 1, Decision::Approve)
            .await
            .unwrap(),
        Decided::Issued { .. }
    ));
    let der = staff_certificate(&store, &clerk, &sub.id).await.unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let subject = cert.subject().to_string();
    for part in [
        "O=Example Trading Limited",
        "NTRHK-12345678",
        "WONG",
        "Siu Ming",
    ] {
        assert!(subject.contains(part), "{part} not in {subject}");
    }
    assert!(
        !subject.contains("CHAN"),
        "the representative is not in the certificate: {subject}"
    );

    // A personal application has no organisation to check.
    let hkid_p = crate::hkid::synthetic("K", 220_013);
    let personal = submit(&auth, application(&hkid_p)).await.unwrap();
    assert!(matches!(
        check_organisation(&auth, &clerk, &personal.id, 1, "12345678", true, None).await,
        Err(Error::Conflict(_))
    ));

    // Server: the names are normalised; approval waits for domain control.
    let hkid2 = crate::hkid::synthetic("K", 220_012);
    let mut server = form.clone();
    // Its own key: a key is certified to one subscriber only.
    server.csr = csr();
    server.profile = "server".into();
    server.hkid = hkid2.expose().to_string();
    server.email = "it@example.hk".into();
    server.dns_names = vec![
        "www.example.hk".into(),
        " WWW.Example.hk. ".into(),
        "api.example.hk".into(),
    ];
    let mut wild = server.clone();
    wild.dns_names.push("*.example.hk".into());
    assert!(matches!(
        submit(&auth, wild).await,
        Err(Error::Invalid {
            field: "dns_names",
            ..
        })
    ));
    let sub2 = submit(&auth, server).await.unwrap();
    at_counter(&sub2, &hkid2, 50_000).await;
    check_organisation(
        &auth,
        &clerk,
        &sub2.id,
        1,
        "12345678",
        true,
        Some("Kowloon"),
    )
    .await
    .unwrap();
    let view = staff_view(&auth, &clerk, &sub2.id).await.unwrap();
    assert_eq!(view.authorised_user, None);
    let token = view.dcv_token.clone().unwrap();
    assert_eq!(token.len(), 26, "128 bits in base32");
    assert_eq!(
        view.domains
            .iter()
            .map(|d| (d.domain.as_str(), d.record.as_str(), d.validated))
            .collect::<Vec<_>>(),
        vec![
            ("www.example.hk", "_ecert-challenge.www.example.hk", false),
            ("api.example.hk", "_ecert-challenge.api.example.hk", false),
        ]
    );
    let e = decide(&auth, &clerk, &sub2.id, 1, Decision::Approve)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("not validated for www.example.hk, api.example.hk"),
        "{e}"
    );
    // The applicant sees the same value and names on the tracking page.
    let t = track(&store, &sub2.reference, &sub2.secret).await.unwrap();
    assert_eq!(t.domains.len(), 2);
    assert_eq!(t.dcv_token.as_deref(), Some(token.as_str()));
}

/// e-Cert (Personal/Minor) is for applicants under 18 (and personal for 18 and over); its
/// validity ends before the 18th birthday, and one who is about to turn 18 is refused at
/// approval (the application stays open). organisational-role puts the role in the
/// certificate's title.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minors_and_roles() {
    let (_dir, auth) = test_ca_with(|c| c.ra.renewal_window_days = 400).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let store = auth.store().clone();
    let (clerk, sup) = gpo_with_staff(&auth).await;
    let today = time::OffsetDateTime::now_utc().date();
    let born = |years: i32, plus_days: i64| {
        let d = time::Date::from_calendar_date(today.year() - years, today.month(), 1).unwrap()
            + time::Duration::days(i64::from(today.day()) - 1 + plus_days);
        d.format(time::macros::format_description!("[year]-[month]-[day]"))
            .unwrap()
    };
    let ready = |profile: &'static str, dob: String, n: u32| {
        let (auth, clerk, key) = (&auth, &clerk, &key);
        async move {
            let hkid = crate::hkid::synthetic("M", n);
            let mut a = application(&hkid);
            a.profile = profile.into();
            a.date_of_birth = dob;
            // Each applicant a key of their own (a key is certified to one subscriber only):
            // the shared `key` only for application 4, whose renewal it signs.
            a.csr = if n == 4 { csr_for(key) } else { csr() };
            let sub = submit(auth, a).await?;
            confirm_email(auth.store(), &sub.reference, &sub.secret, &sub.email_code)
                .await
                .unwrap();
            if profile == "personal-minor" {
                assert!(matches!(
                    check_identity(auth, clerk, &sub.id, 1, hkid.expose(), true, false).await,
                    Err(Error::Invalid {
                        field: "guardian_consent",
                        ..
                    })
                ));
            }
            check_identity(auth, clerk, &sub.id, 1, hkid.expose(), true, true)
                .await
                .unwrap();
            record_fee(auth, clerk, &sub.id, 5_000, "cash", "R")
                .await
                .unwrap();
            Ok::<_, Error>(sub)
        }
    };
    // Ages and profiles.
    assert!(matches!(
        ready("personal-minor", born(30, 0), 1).await,
        Err(Error::Invalid {
            field: "date_of_birth",
            ..
        })
    ));
    assert!(matches!(
        ready("personal", born(16, 0), 2).await,
        Err(Error::Invalid {
            field: "date_of_birth",
            ..
        })
    ));
    // Sixteen: a full year's certificate (it ends well before 18).
    let sub = ready("personal-minor", born(16, 0), 3).await.unwrap();
    let Decided::Issued { serial, .. } = decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
        .await
        .unwrap()
    else {
        panic!("not issued")
    };
    let days = |serial: String| {
        let store = store.clone();
        async move {
            let der = store
                .certificate(&serial)
                .await
                .unwrap()
                .unwrap()
                .cert_der
                .unwrap();
            let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
            (c.validity().not_after.timestamp() - c.validity().not_before.timestamp() + 1) / 86_400
        }
    };
    assert_eq!(days(serial).await, 365);
    // Eighteen in 20 days: the certificate ends before the birthday.
    let sub = ready("personal-minor", born(18, 20), 4).await.unwrap();
    let Decided::Issued { serial, .. } = decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
        .await
        .unwrap()
    else {
        panic!("not issued")
    };
    let d = days(serial).await;
    assert!((18..=19).contains(&d), "{d}");
    // Its online renewal ends before the birthday too.
    let renewed = renew_online(&auth, &sub.reference, &sub.secret, &csr_for(&key), None)
        .await
        .unwrap();
    let d = days(renewed).await;
    assert!((18..=19).contains(&d), "renewal: {d}");
    // Eighteen tomorrow: refused at approval, the application open again.
    let sub = ready("personal-minor", born(18, 1), 5).await.unwrap();
    assert!(matches!(
        decide(&auth, &clerk, &sub.id, 1, Decision::Approve).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        track(&store, &sub.reference, &sub.secret)
            .await
            .unwrap()
            .status,
        Status::IssuanceFailed
    );
    let view = staff_view(&auth, &clerk, &sub.id).await.unwrap();
    assert!(
        view.issue_error
            .as_deref()
            .is_some_and(|e| e.contains("18")),
        "{view:?}"
    );

    // organisational-role: the role is required and goes into the title.
    let hkid = crate::hkid::synthetic("M", 6);
    let mut a = application(&hkid);
    a.profile = "organisational-role".into();
    a.organization = "Example Hospital Authority".into();
    a.org_id = "12345678".into();
    a.user_surname = "Lee".into();
    a.user_given_name = "Mei".into();
    assert!(matches!(
        submit(&auth, a.clone()).await,
        Err(Error::Invalid {
            field: "user_title",
            ..
        })
    ));
    a.user_title = "Ward Manager".into();
    // A key of its own: the minor's key is certified to the minor.
    let role_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    a.csr = csr_for(&role_key);
    let sub = submit(&auth, a).await.unwrap();
    confirm_email(&store, &sub.reference, &sub.secret, &sub.email_code)
        .await
        .unwrap();
    check_identity(&auth, &clerk, &sub.id, 1, hkid.expose(), true, false)
        .await
        .unwrap();
    check_organisation(&auth, &clerk, &sub.id, 1, "12345678", true, None)
        .await
        .unwrap();
    record_fee(&auth, &clerk, &sub.id, 15_000, "cash", "R")
        .await
        .unwrap();
    let view = staff_view(&auth, &clerk, &sub.id).await.unwrap();
    assert_eq!(
        view.authorised_user.as_deref(),
        Some("LEE Mei (Ward Manager)")
    );
    assert!(view.dual_control);
    decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
        .await
        .unwrap();
    decide(&auth, &sup, &sub.id, 1, Decision::Approve)
        .await
        .unwrap();
    let der = staff_certificate(&store, &clerk, &sub.id).await.unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let title = cert
        .subject()
        .iter_attributes()
        .find(|a| a.attr_type().to_id_string() == "2.5.4.12")
        .and_then(|a| a.as_str().ok().map(str::to_string));
    assert_eq!(title.as_deref(), Some("Ward Manager"));
    // Renewal keeps the role.
    let renewed = renew_online(
        &auth,
        &sub.reference,
        &sub.secret,
        &csr_for(&role_key),
        None,
    )
    .await
    .unwrap();
    let der = store
        .certificate(&renewed)
        .await
        .unwrap()
        .unwrap()
        .cert_der
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(
        cert.subject().to_string().contains("Ward Manager"),
        "{}",
        cert.subject()
    );
}

/// The HSM fails after the serial was recorded on the application: the serial's own state
/// decides (nothing was signed: it is not `issued`), the application opens again without a
/// certificate, with the error for staff and the `issuance_failed` status — never an
/// orphan certificate, never a second one beside a first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_signature_leaves_no_orphan_and_says_why() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let store = auth.store().clone();
    let (clerk, _) = gpo_with_staff(&auth).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let sub = ready_for_approval(&auth, &clerk, &crate::hkid::synthetic("H", 404), &key).await;
    // The Individual CA's key disappears from the token.
    crate::authority::open_token(auth.config())
        .unwrap()
        .destroy_key(&crate::profile::CaRole::Individual.key_label())
        .unwrap();
    assert!(decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
        .await
        .is_err());
    let v = staff_view(&auth, &clerk, &sub.id).await.unwrap();
    assert_eq!(v.status, Status::IssuanceFailed, "{v:?}");
    assert!(v.certificate.is_none(), "{v:?}");
    let why = v.issue_error.clone().unwrap_or_default();
    assert!(why.starts_with("HSM"), "the signing step failed: {why}");
    let states: Vec<String> =
        sqlx::query("SELECT state FROM certificates WHERE profile = 'personal'")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get(0).unwrap())
            .collect();
    assert_eq!(states.len(), 1, "{states:?}");
    assert!(
        matches!(states[0].as_str(), "failed" | "abandoned"),
        "{states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_control_needs_two_people_and_the_same_version() {
    let (_dir, auth) = test_ca_with(|c| c.ra.dual_control.push("personal".into())).await;
    let store = auth.store().clone();
    let (clerk, sup) = gpo_with_staff(&auth).await;
    let hkid = crate::hkid::synthetic("XA", 120_394);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let sub = ready_for_approval(&auth, &clerk, &hkid, &key).await;
    assert!(matches!(
        decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
            .await
            .unwrap(),
        Decided::AwaitingSecond
    ));
    assert!(
        matches!(
            decide(&auth, &clerk, &sub.id, 1, Decision::Approve).await,
            Err(Error::Conflict(_))
        ),
        "same person twice"
    );
    // An edit makes a new version: the first approval no longer counts.
    let code = amend_contact(
        &auth,
        &clerk,
        &sub.id,
        1,
        None,
        Some("+852 3111 1111"),
        None,
    )
    .await
    .unwrap();
    assert!(code.is_none());
    assert!(
        matches!(
            decide(&auth, &sup, &sub.id, 1, Decision::Approve).await,
            Err(Error::Conflict(_))
        ),
        "stale version"
    );
    assert!(
        matches!(
            decide(&auth, &sup, &sub.id, 2, Decision::Approve).await,
            Err(Error::Conflict(_))
        ),
        "identity not checked for v2"
    );
    check_identity(&auth, &clerk, &sub.id, 2, hkid.expose(), true, false)
        .await
        .unwrap();
    assert!(matches!(
        decide(&auth, &sup, &sub.id, 2, Decision::Approve)
            .await
            .unwrap(),
        Decided::AwaitingSecond
    ));
    assert_eq!(
        track(&store, &sub.reference, &sub.secret)
            .await
            .unwrap()
            .status,
        Status::AwaitingSecondApproval
    );
    assert!(matches!(
        decide(&auth, &clerk, &sub.id, 2, Decision::Approve)
            .await
            .unwrap(),
        Decided::Issued { .. }
    ));

    // One rejection rejects.
    let hkid2 = crate::hkid::synthetic("Y", 555_001);
    let sub2 = submit(&auth, application(&hkid2)).await.unwrap();
    assert!(matches!(
        decide(
            &auth,
            &clerk,
            &sub2.id,
            1,
            Decision::Reject("the applicant did not come".into())
        )
        .await
        .unwrap(),
        Decided::Rejected { .. }
    ));
    let v = track(&store, &sub2.reference, &sub2.secret).await.unwrap();
    assert_eq!(
        (v.status, v.rejected_reason.as_deref()),
        (Status::Rejected, Some("the applicant did not come"))
    );
}

/// Online re-key: a CSR for a new key is accepted only with the current key's signature
/// over the message naming this reference, the serial replaced and the new key (WebCrypto's
/// `r||s` and OpenSSL's DER signatures both verify); the new certificate carries the new key
/// and is linked to the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_rekey_needs_the_current_keys_signature() {
    let (_dir, auth) = test_ca_with(|c| c.ra.renewal_window_days = 400).await;
    let store = auth.store().clone();
    let (clerk, _) = gpo_with_staff(&auth).await;
    let current = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let hkid = crate::hkid::synthetic("Z", 41_414);
    let sub = ready_for_approval(&auth, &clerk, &hkid, &current).await;
    let Decided::Issued { serial: old, .. } = decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
        .await
        .unwrap()
    else {
        panic!("not issued")
    };
    let new = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let new_fp = hex::encode(Sha256::digest(
        rcgen::PublicKeyData::subject_public_key_info(&new),
    ));
    let message = rekey_message(&sub.reference, &old, &new_fp);
    // r||s, as WebCrypto signs.
    let fixed = |key: &rcgen::KeyPair, msg: &str| {
        let rng = ring::rand::SystemRandom::new();
        ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .unwrap()
        .sign(&rng, msg.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
    };
    let refused = |r: Result<String>| {
        matches!(
            r,
            Err(Error::Invalid {
                field: "rekey_proof",
                ..
            })
        )
    };
    // Signed by the new key, not the current one.
    assert!(refused(
        renew_online(
            &auth,
            &sub.reference,
            &sub.secret,
            &csr_for(&new),
            Some(&fixed(&new, &message))
        )
        .await
    ));
    // Signed by the current key, but for another new key.
    let other_fp = hex::encode(Sha256::digest(
        rcgen::PublicKeyData::subject_public_key_info(&current),
    ));
    let wrong = rekey_message(&sub.reference, &old, &other_fp);
    assert!(refused(
        renew_online(
            &auth,
            &sub.reference,
            &sub.secret,
            &csr_for(&new),
            Some(&fixed(&current, &wrong))
        )
        .await
    ));
    // No proof at all: the plain renewal's error.
    assert!(matches!(
        renew_online(&auth, &sub.reference, &sub.secret, &csr_for(&new), None).await,
        Err(Error::Invalid { field: "csr", .. })
    ));
    // The DER signature OpenSSL would make (rcgen signs ECDSA as DER) verifies too.
    let der_sig = rcgen::SigningKey::sign(&current, message.as_bytes()).unwrap();
    let serial = renew_online(
        &auth,
        &sub.reference,
        &sub.secret,
        &csr_for(&new),
        Some(&der_sig),
    )
    .await
    .unwrap();
    let rec = store.certificate(&serial).await.unwrap().unwrap();
    assert_eq!(rec.renews.as_deref(), Some(old.as_str()));
    let (_, cert) = x509_parser::parse_x509_certificate(rec.cert_der.as_deref().unwrap()).unwrap();
    assert_eq!(
        cert.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&new).as_slice()
    );
    assert!(store
        .audit_records()
        .await
        .unwrap()
        .0
        .iter()
        .any(|r| r.kind == "ra.rekeyed"));
}

/// Online renewal: only with the current key, only in the window before expiry, once; the
/// new certificate is linked to the old one and keeps its subject (and SRN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_renewal_needs_the_current_key_and_the_window() {
    let (_dir, auth) = test_ca_with(|c| c.ra.renewal_window_days = 400).await;
    let store = auth.store().clone();
    ensure_outlet(&store, "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let (_, s1) = staff(&auth, "clerk1", "gpo", Role::Clerk).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let hkid = crate::hkid::synthetic("Z", 31_337);
    let mut form = application(&hkid);
    form.csr = csr_for(&key);
    let sub = submit(&auth, form).await.unwrap();
    assert!(
        matches!(
            renew_online(&auth, &sub.reference, &sub.secret, &csr_for(&key), None).await,
            Err(Error::Conflict(_))
        ),
        "nothing issued yet"
    );
    confirm_email(&store, &sub.reference, &sub.secret, &sub.email_code)
        .await
        .unwrap();
    let clerk = signed_in(&auth, "clerk1", &s1, 0).await;
    check_identity(&auth, &clerk, &sub.id, 1, hkid.expose(), true, false)
        .await
        .unwrap();
    record_fee(&auth, &clerk, &sub.id, 5_000, "cash", "R-9")
        .await
        .unwrap();
    let Decided::Issued { serial: first, .. } =
        decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
            .await
            .unwrap()
    else {
        panic!("not issued")
    };
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    assert!(matches!(
        renew_online(&auth, &sub.reference, &sub.secret, &csr_for(&other), None).await,
        Err(Error::Invalid { field: "csr", .. })
    ));
    assert!(matches!(
        renew_online(&auth, &sub.reference, "wrong", &csr_for(&key), None).await,
        Err(Error::NotFound)
    ));
    let second = renew_online(&auth, &sub.reference, &sub.secret, &csr_for(&key), None)
        .await
        .unwrap();
    assert_ne!(first, second);
    let old = store.certificate(&first).await.unwrap().unwrap();
    let new = store.certificate(&second).await.unwrap().unwrap();
    assert_eq!(old.renewed_by.as_deref(), Some(second.as_str()));
    assert_eq!(new.renews.as_deref(), Some(first.as_str()));
    let srn =
        |r: &crate::store::CertRecord| serde_json::from_str::<SubjectData>(&r.request).unwrap().srn;
    assert_eq!(srn(&old), srn(&new));
    assert!(srn(&new).is_some());
    assert_eq!(
        track(&store, &sub.reference, &sub.secret)
            .await
            .unwrap()
            .certificate
            .as_deref(),
        Some(second.as_str())
    );
    assert!(store
        .audit_records()
        .await
        .unwrap()
        .0
        .iter()
        .any(|r| r.kind == "ra.renewed"));
    // A crash between the renewal's signature and the application's update: the next read
    // points the application at the renewal.
    sqlx::query("UPDATE applications SET certificate = $2 WHERE id = $1")
        .bind(&sub.id)
        .bind(&first)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        track(&store, &sub.reference, &sub.secret)
            .await
            .unwrap()
            .certificate
            .as_deref(),
        Some(second.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_window_is_enforced() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let (clerk, _) = gpo_with_staff(&auth).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = csr_for(&key);
    let hkid = crate::hkid::synthetic("Z", 4_242);
    let sub = ready_for_approval(&auth, &clerk, &hkid, &key).await;
    decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
        .await
        .unwrap();
    let e = renew_online(&auth, &sub.reference, &sub.secret, &csr, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("opens 90 days before"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_approvals_do_not_count() {
    let (_dir, auth) = test_ca_with(|c| {
        c.ra.dual_control.push("personal".into());
        c.ra.approval_hours = 0;
    })
    .await;
    let (clerk, sup) = gpo_with_staff(&auth).await;
    let hkid = crate::hkid::synthetic("Z", 1);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let sub = ready_for_approval(&auth, &clerk, &hkid, &key).await;
    assert!(matches!(
        decide(&auth, &clerk, &sub.id, 1, Decision::Approve)
            .await
            .unwrap(),
        Decided::AwaitingSecond
    ));
    assert!(
        matches!(
            decide(&auth, &sup, &sub.id, 1, Decision::Approve)
                .await
                .unwrap(),
            Decided::AwaitingSecond
        ),
        "the first approval had expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_refuses_reuse_and_locks_after_failures() {
    let (_dir, auth) = test_ca_with(|_| {}).await;
    let store = auth.store().clone();
    ensure_outlet(&store, "gpo", "GPO", "郵政總局", "test")
        .await
        .unwrap();
    let (_, secret) = staff(&auth, "clerk1", "gpo", Role::Clerk).await;
    let code = crate::totp::code_at(&secret, now());
    let first = sign_in(&auth, "clerk1", "a password of some length", &code)
        .await
        .unwrap();
    assert!(
        matches!(
            sign_in(&auth, "clerk1", "a password of some length", &code).await,
            Err(Error::SignInFailed)
        ),
        "code reused"
    );
    assert!(matches!(
        sign_in(&auth, "nobody", "x", "000000").await,
        Err(Error::SignInFailed)
    ));
    let s = session(&store, &auth.config().ra, &first.token)
        .await
        .unwrap();
    assert_eq!(s.username, "clerk1");
    sign_out(&store, &first.token).await.unwrap();
    assert!(session(&store, &auth.config().ra, &first.token)
        .await
        .is_err());
    for _ in 0..SIGN_IN_ATTEMPTS {
        assert!(sign_in(&auth, "clerk1", "wrong password!!", "000000")
            .await
            .is_err());
    }
    // Locked: even the right password and a fresh code are refused.
    sqlx::query("UPDATE staff SET totp_last_step = 0 WHERE username = 'clerk1'")
        .execute(store.pool())
        .await
        .unwrap();
    let code = crate::totp::code_at(&secret, now());
    assert!(matches!(
        sign_in(&auth, "clerk1", "a password of some length", &code).await,
        Err(Error::SignInFailed)
    ));
    let log = store.audit_records().await.unwrap().0;
    assert!(
        log.iter()
            .filter(|r| r.kind == "ra.staff.signin_failed")
            .count()
            >= 6
    );
}
