//! Expiry reminders (issue 16): the signer mails the subscriber 30 and 7 days before a
//! certificate expires — once per certificate and threshold, whatever restarts — with the link
//! to renew online; a subscriber who turned them off on the tracking page gets none. The
//! clock is moved forward with libfaketime.

use std::time::Duration;

use ecert_e2e::*;

use crate::common::*;
use crate::ra::{form, page, set_cookie, text, with_service};

/// The reminder mails of `reference` the SMTP listener holds.
fn reminders_of(ca: &Ca, reference: &str) -> usize {
    ca.smtp()
        .messages()
        .iter()
        .filter(|m| m.contains(reference) && m.contains("Your e-Cert expires soon"))
        .count()
}

#[test]
fn expiry_reminders_are_mailed_once_per_threshold_and_can_be_turned_off() {
    let ca = Ca::init();
    // The clock is moved to test the reminders, not the clock check (no reference clock).
    ca.append_config("[clock]\nreference = \"none\"");
    let case = personal();
    let reminded = crate::apply::apply(&ca, &case, &ca.csr("r1", KeyType::P256).csr, "reminded");
    let quiet = crate::apply::apply(&ca, &case, &ca.csr("r2", KeyType::P256).csr, "quiet");
    // The second subscriber turns reminders off on the tracking page.
    with_service(&ca, |addr| {
        let r = page(addr, "/track", "");
        let csrf = set_cookie(&r, "ecert_csrf").unwrap();
        let cookie = format!("ecert_csrf={csrf}");
        let shown = text(&form(
            addr,
            "/track",
            &cookie,
            &[
                ("csrf", &csrf),
                ("reference", &quiet.reference),
                ("secret", &quiet.secret),
            ],
        ));
        assert!(
            shown.contains("We e-mail you before this certificate expires."),
            "{shown}"
        );
        let r = form(
            addr,
            "/track/reminders",
            &cookie,
            &[
                ("csrf", &csrf),
                ("reference", &quiet.reference),
                ("secret", &quiet.secret),
                ("reminders", "off"),
            ],
        );
        assert_eq!(r.status, 200, "{}", text(&r));
        assert!(
            text(&r).contains("You receive no reminder before this certificate expires."),
            "{}",
            text(&r)
        );
        // Not with the wrong tracking secret.
        let r = form(
            addr,
            "/track/reminders",
            &cookie,
            &[
                ("csrf", &csrf),
                ("reference", &reminded.reference),
                ("secret", "not the secret"),
                ("reminders", "off"),
            ],
        );
        assert_ne!(r.status, 200);
    });
    // Nothing is due today.
    with_service(&ca, |_| std::thread::sleep(Duration::from_secs(2)));
    assert_eq!(reminders_of(&ca, &reminded.reference), 0);

    let service_at = |offset: &str| crate::serve::start_faked(&ca, offset);
    // 25 days before expiry (365-day certificates): the 30-day reminder, with the renewal link.
    let srv = service_at("+340d");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reminders_of(&ca, &reminded.reference) < 1 {
        assert!(std::time::Instant::now() < deadline, "no 30-day reminder");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mail = ca
        .smtp()
        .messages()
        .into_iter()
        .find(|m| m.contains(&reminded.reference) && m.contains("Your e-Cert expires soon"))
        .unwrap();
    // Quoted-printable (RFC 2045 §6.7): soft line breaks and `=3D`.
    let mail = mail
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    assert!(
        mail.contains(case.application["email"].as_str().unwrap()),
        "{mail}"
    );
    assert!(mail.contains("Your certificate expires on"), "{mail}");
    assert!(
        mail.contains(&format!(
            "{BASE_URL}/track?reference={}",
            reminded.reference
        )),
        "{mail}"
    );
    // The link opens the tracking page with the reference filled in.
    let page_shown = text(&page(
        &srv.1,
        &format!("/track?reference={}", reminded.reference),
        "",
    ));
    assert!(
        page_shown.contains(&format!("value=\"{}\"", reminded.reference)),
        "{page_shown}"
    );
    std::thread::sleep(Duration::from_secs(2));
    drop(srv);
    // Restarted the same day: not again; the subscriber who turned them off: none.
    let srv = service_at("+341d");
    std::thread::sleep(Duration::from_secs(3));
    drop(srv);
    assert_eq!(reminders_of(&ca, &reminded.reference), 1);
    assert_eq!(reminders_of(&ca, &quiet.reference), 0);
    // 5 days before expiry: the 7-day reminder.
    let srv = service_at("+360d");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reminders_of(&ca, &reminded.reference) < 2 {
        assert!(std::time::Instant::now() < deadline, "no 7-day reminder");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    drop(srv);
    assert_eq!(reminders_of(&ca, &reminded.reference), 2);
    assert_eq!(reminders_of(&ca, &quiet.reference), 0);
    let audited = ca.sql_query("SELECT COUNT(*) FROM audit_log WHERE kind = 'ra.reminder.sent'");
    assert_eq!(audited.trim(), "2");
    ca.audit_ok();
}
