//! Handler-level tests: the RA router driven with `oneshot`, on a real CA (SoftHSM2 token,
//! SQLite), mail to a real SMTP conversation with a small listener in this test. Every error
//! path the issue lists: bad HKID, wrong e-mail code, mismatched identity, expired approval,
//! the same person approving twice, CSRF missing, id swapping — plus every page in both
//! languages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use ca_core::authority::Authority;
use ca_core::config::Config;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tower::ServiceExt;

use super::*;

/// A listener that speaks enough SMTP (RFC 5321) for lettre and keeps each message's data.
async fn smtp_listener() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let keep = inbox.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let keep = keep.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 test ESMTP\r\n").await.unwrap();
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(d) = data.as_mut() {
                        if line == "." {
                            keep.lock().unwrap().push(std::mem::take(d));
                            data = None;
                            w.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            d.push_str(&line);
                            d.push('\n');
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 test\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go on\r\n"
                        }
                        "QUIT" => {
                            w.write_all(b"221 bye\r\n").await.unwrap();
                            return;
                        }
                        _ => b"250 ok\r\n",
                    };
                    w.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (addr, inbox)
}

struct App {
    _dir: tempfile::TempDir,
    router: Router,
    auth: Arc<Authority>,
    inbox: Arc<Mutex<Vec<String>>>,
}

async fn app(edit: impl FnOnce(&mut Config)) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::load(dir.path(), None).unwrap();
    config.ca.policy_arc = Some("1.3.6.1.4.1.32473.1".into());
    config.ca.base_url = "http://pki.example.hk".into();
    let (smtp, inbox) = smtp_listener().await;
    config.ra.smtp = smtp;
    edit(&mut config);
    std::env::set_var(
        "SOFTHSM2_CONF",
        ca_core::authority::softhsm_conf_path(&config),
    );
    let (auth, _) = Authority::init(config.clone()).await.unwrap();
    let auth = Arc::new(auth);
    ra::ensure_outlet(
        auth.store(),
        "gpo",
        "General Post Office",
        "郵政總局",
        "test",
    )
    .await
    .unwrap();
    ra::ensure_outlet(auth.store(), "tst", "Tsim Sha Tsui", "尖沙咀", "test")
        .await
        .unwrap();
    let mailer = Mailer::new(&config.ra.smtp, &config.ra.mail_from);
    let router = router(Arc::new(RaState::new(auth.clone(), mailer)));
    App {
        _dir: dir,
        router,
        auth,
        inbox,
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                let first = v.split(';').next()?;
                let (k, val) = first.split_once('=')?;
                (k == name).then(|| val.to_string())
            })
    }

    /// The value of the first hidden input `name`.
    fn hidden(&self, name: &str) -> String {
        let key = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&key)
            .unwrap_or_else(|| panic!("no {name} in {}", self.body))
            + key.len();
        self.body[start..].split('"').next().unwrap().to_string()
    }

    fn text_of(&self, id: &str) -> String {
        let key = format!("id=\"{id}\"");
        let start = self
            .body
            .find(&key)
            .unwrap_or_else(|| panic!("no #{id} in {}", self.body));
        let rest = &self.body[start..];
        let open = rest.find('>').unwrap() + 1;
        rest[open..].split('<').next().unwrap().trim().to_string()
    }
}

impl App {
    async fn send(&self, req: Request<Body>) -> Reply {
        let r = self.router.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, cookies: &str) -> Reply {
        self.send(
            Request::get(path)
                .header(header::COOKIE, cookies)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn post(&self, path: &str, cookies: &str, form: &[(&str, &str)]) -> Reply {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.send(
            Request::post(path)
                .header(header::COOKIE, cookies)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    /// The last mail's code line value (its last `Label: value` line).
    fn last_code(&self) -> String {
        let inbox = self.inbox.lock().unwrap();
        let mail = inbox.last().expect("a mail was sent");
        mail.lines()
            .rev()
            .find_map(|l| l.rsplit_once(": ").map(|(_, c)| c.trim().to_string()))
            // A 128-bit Random Value: 26 base32 characters.
            .filter(|c| {
                c.len() == 26
                    && c.bytes()
                        .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
            })
            .unwrap_or_else(|| panic!("no code in {mail}"))
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn csr_pem() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

/// A citizen session: the CSRF cookie and token from the form page.
async fn citizen(app: &App) -> (String, String) {
    let r = app.get("/apply", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = r.cookie(CSRF_COOKIE).expect("csrf cookie");
    assert_eq!(r.hidden("csrf"), token);
    (format!("{CSRF_COOKIE}={token}"), token)
}

fn application<'a>(csrf: &'a str, hkid: &'a str, csr: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("surname", "Chan"),
        ("given_name", "Tai Man"),
        ("name_zh", "陳大文"),
        ("email", "tm.chan@example.hk"),
        ("hkid", hkid),
        ("date_of_birth", "1980-02-29"),
        ("phone", "+852 2921 2222"),
        ("address", "1 Connaught Place, Central"),
        ("outlet", "gpo"),
        ("revocation_secret", "my revocation words"),
        ("csr", csr),
    ]
}

async fn staff_cookie(app: &App, username: &str, outlet: &str, role: ra::Role) -> (String, String) {
    let (_, secret) = ra::create_staff(
        app.auth.store(),
        &app.auth.staff_keys(),
        &ra::NewStaff {
            username,
            display_name: username,
            outlet,
            role,
            password: "a password of some length",
        },
        "test",
    )
    .await
    .unwrap();
    let (cookies, csrf) = {
        let r = app.get("/staff/login", "").await;
        let token = r.cookie(CSRF_COOKIE).unwrap();
        (format!("{CSRF_COOKIE}={token}"), token)
    };
    let code = ca_core::totp::code_at(&secret, time::OffsetDateTime::now_utc().unix_timestamp());
    let r = app
        .post(
            "/staff/login",
            &cookies,
            &[
                ("csrf", &csrf),
                ("username", username),
                ("password", "a password of some length"),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let session = r.cookie(STAFF_COOKIE).expect("session cookie");
    let set = r
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("Secure") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = format!("{STAFF_COOKIE}={session}");
    let queue = app.get("/staff", &cookie).await;
    assert_eq!(queue.status, StatusCode::OK, "{}", queue.body);
    // The session's CSRF token is on the sign-out form.
    (cookie, queue.hidden("csrf"))
}

/// The application id behind a queue row (the link `/staff/applications/{id}`).
fn app_id(queue: &Reply, reference: &str) -> String {
    let key = format!("data-reference=\"{reference}\" href=\"/staff/applications/");
    let start = queue
        .body
        .find(&key)
        .unwrap_or_else(|| panic!("{reference} not in queue: {}", queue.body))
        + key.len();
    queue.body[start..].split('"').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citizen_and_clerk_journey_with_every_error_path() {
    let app = app(|c| c.ra.dual_control.push("personal".into())).await;
    let (cookies, csrf) = citizen(&app).await;
    let csr = csr_pem();
    let hkid = ca_core::hkid::synthetic("Z", 683_451);
    let hkid_typed = hkid.expose().to_string();

    // CSRF missing or wrong: 403, nothing stored.
    let mut form = application("", &hkid_typed, &csr);
    let r = app.post("/apply", &cookies, &form).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    form[0].1 = &csrf;
    let r = app.post("/apply", "", &form).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let count: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM applications")
            .fetch_one(app.auth.store().pool())
            .await
            .unwrap(),
        0,
    );
    assert_eq!(count, 0, "a refused form left a record");

    // Bad HKID: 422 naming the problem, never echoing the number.
    let bad = format!("{}0", &hkid_typed[..hkid_typed.len() - 1]);
    let bad = if bad == hkid_typed {
        format!("{}1", &hkid_typed[..hkid_typed.len() - 1])
    } else {
        bad
    };
    let r = app
        .post("/apply", &cookies, &application(&csrf, &bad, &csr))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text_of("error-message").contains("check digit"),
        "{}",
        r.body
    );
    assert!(!r.body.contains(&bad[1..7]), "the page echoes the number");

    // A good application: reference and secret shown once; the code goes by mail.
    let r = app
        .post("/apply", &cookies, &application(&csrf, &hkid_typed, &csr))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let reference = r.text_of("reference");
    let secret = r.text_of("tracking-secret");
    let code = app.last_code();

    // Wrong e-mail code, then the right one.
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAA";
    let track = |code: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("reference", reference.clone()),
            ("secret", secret.clone()),
            ("code", code.to_string()),
        ]
    };
    let as_refs = |v: &Vec<(&'static str, String)>| {
        v.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>()
    };
    let wrong_form = as_refs(&track(wrong));
    let pairs: Vec<(&str, &str)> = wrong_form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = app.post("/track/confirm", &cookies, &pairs).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text_of("error-message").contains("9 attempts left"),
        "{}",
        r.body
    );
    let r = app
        .post(
            "/track/confirm",
            &cookies,
            &[
                ("csrf", &csrf),
                ("reference", &reference),
                ("secret", &secret),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.contains("data-status=\"awaiting_visit\""),
        "{}",
        r.body
    );
    // Tracking with a wrong secret: 404, the same as no such reference.
    let r = app
        .post(
            "/track",
            &cookies,
            &[
                ("csrf", &csrf),
                ("reference", &reference),
                ("secret", "WRONG"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Staff. Another outlet's clerk swapping the id in: 404.
    let (clerk, clerk_csrf) = staff_cookie(&app, "clerk1", "gpo", ra::Role::Clerk).await;
    let (sup, sup_csrf) = staff_cookie(&app, "super1", "gpo", ra::Role::Supervisor).await;
    let (far, far_csrf) = staff_cookie(&app, "clerk9", "tst", ra::Role::Clerk).await;
    let queue = app.get("/staff", &clerk).await;
    let id = app_id(&queue, &reference);
    let page = app.get(&format!("/staff/applications/{id}"), &clerk).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.text_of("hkid-masked"), hkid.masked());
    assert!(
        !page.body.contains(&hkid_typed),
        "the full number is on the screen"
    );
    assert_eq!(
        app.get(&format!("/staff/applications/{id}"), &far)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = app
        .post(
            &format!("/staff/applications/{id}/reveal"),
            &far,
            &[("csrf", &far_csrf), ("field", "hkid")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/staff/applications/no-such-id", &clerk)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // No session: to the sign-in page. A staff form without its CSRF token: 403.
    let r = app.get("/staff", "").await;
    assert_eq!(
        (
            r.status,
            r.headers
                .get(header::LOCATION)
                .map(|v| v.to_str().unwrap().to_string())
        ),
        (StatusCode::SEE_OTHER, Some("/staff/login".into()))
    );
    let r = app
        .post(
            &format!("/staff/applications/{id}/identity"),
            &clerk,
            &[
                ("csrf", "nope"),
                ("version", "1"),
                ("hkid", &hkid_typed),
                ("card_sighted", "yes"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Identity mismatch: 422 and no check recorded.
    let other = ca_core::hkid::synthetic("Z", 683_452);
    let r = app
        .post(
            &format!("/staff/applications/{id}/identity"),
            &clerk,
            &[
                ("csrf", &clerk_csrf),
                ("version", "1"),
                ("hkid", other.expose()),
                ("card_sighted", "yes"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.text_of("error-message").contains("does not match"),
        "{}",
        r.body
    );
    let r = app
        .post(
            &format!("/staff/applications/{id}/identity"),
            &clerk,
            &[
                ("csrf", &clerk_csrf),
                ("version", "1"),
                ("hkid", &hkid_typed),
                ("card_sighted", "yes"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.text_of("identity"), ra_text(Lang::En).checked);
    let r = app
        .post(
            &format!("/staff/applications/{id}/fee"),
            &clerk,
            &[
                ("csrf", &clerk_csrf),
                ("amount", "48"),
                ("method", "cash"),
                ("receipt", "R1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .post(
            &format!("/staff/applications/{id}/fee"),
            &clerk,
            &[
                ("csrf", &clerk_csrf),
                ("amount", "50.00"),
                ("method", "cash"),
                ("receipt", "R1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Dual control: the same person twice is refused; the second person issues.
    let approve = |c: &str| {
        vec![
            ("csrf", c.to_string()),
            ("version", "1".to_string()),
            ("decision", "approve".to_string()),
        ]
    };
    let pairs = |v: &Vec<(&'static str, String)>| {
        v.iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect::<Vec<(&str, String)>>()
    };
    let send = |cookie: String, form: Vec<(&'static str, String)>| {
        let path = format!("/staff/applications/{id}/decide");
        let app = &app;
        async move {
            let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.post(&path, &cookie, &f).await
        }
    };
    let r = send(clerk.clone(), pairs(&approve(&clerk_csrf))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.text_of("message"),
        ra_text(Lang::En).status_awaiting_second_approval
    );
    let r = send(clerk.clone(), pairs(&approve(&clerk_csrf))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = send(sup.clone(), pairs(&approve(&sup_csrf))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.text_of("message")
            .starts_with(ra_text(Lang::En).status_issued),
        "{}",
        r.body
    );
    assert!(app
        .inbox
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .contains(&reference));

    // The citizen downloads the certificate (PEM): openssl-parsable, with the e-mail.
    let r = app
        .post(
            "/track/download",
            &cookies,
            &[
                ("csrf", &csrf),
                ("reference", &reference),
                ("secret", &secret),
                ("format", "pem"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        r.body
    );
    let der = pem::parse(&r.body).unwrap().into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(format!("{:?}", cert.subject_alternative_name()).contains("tm.chan@example.hk"));
    let r = app
        .post(
            "/track/download",
            &cookies,
            &[
                ("csrf", &csrf),
                ("reference", &reference),
                ("secret", "WRONG"),
                ("format", "pem"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

fn ra_text(l: Lang) -> &'static Texts {
    l.texts()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_approvals_do_not_count_over_http() {
    let app = app(|c| {
        c.ra.dual_control.push("personal".into());
        c.ra.approval_hours = 0;
    })
    .await;
    let (cookies, csrf) = citizen(&app).await;
    let csr = csr_pem();
    let hkid = ca_core::hkid::synthetic("Y", 4);
    let r = app
        .post("/apply", &cookies, &application(&csrf, hkid.expose(), &csr))
        .await;
    let reference = r.text_of("reference");
    let secret = r.text_of("tracking-secret");
    let code = app.last_code();
    app.post(
        "/track/confirm",
        &cookies,
        &[
            ("csrf", &csrf),
            ("reference", &reference),
            ("secret", &secret),
            ("code", &code),
        ],
    )
    .await;
    let (clerk, c1) = staff_cookie(&app, "clerk1", "gpo", ra::Role::Clerk).await;
    let (sup, c2) = staff_cookie(&app, "super1", "gpo", ra::Role::Supervisor).await;
    let id = app_id(&app.get("/staff", &clerk).await, &reference);
    let base = format!("/staff/applications/{id}");
    app.post(
        &format!("{base}/identity"),
        &clerk,
        &[
            ("csrf", &c1),
            ("version", "1"),
            ("hkid", hkid.expose()),
            ("card_sighted", "yes"),
        ],
    )
    .await;
    app.post(
        &format!("{base}/fee"),
        &clerk,
        &[
            ("csrf", &c1),
            ("amount", "50"),
            ("method", "card"),
            ("receipt", "R2"),
        ],
    )
    .await;
    let r = app
        .post(
            &format!("{base}/decide"),
            &clerk,
            &[("csrf", &c1), ("version", "1"), ("decision", "approve")],
        )
        .await;
    assert_eq!(
        r.text_of("message"),
        ra_text(Lang::En).status_awaiting_second_approval
    );
    let r = app
        .post(
            &format!("{base}/decide"),
            &sup,
            &[("csrf", &c2), ("version", "1"), ("decision", "approve")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.text_of("message"),
        ra_text(Lang::En).status_awaiting_second_approval,
        "an expired approval counted"
    );
}

/// Every page renders in both languages, with the right `lang` and a switch to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_in_both_languages() {
    let app = app(|_| {}).await;
    let (clerk, _) = staff_cookie(&app, "clerk1", "gpo", ra::Role::Clerk).await;
    let (cookies, csrf) = citizen(&app).await;
    let csr = csr_pem();
    let hkid = ca_core::hkid::synthetic("Z", 77);
    let applied = app
        .post("/apply", &cookies, &application(&csrf, hkid.expose(), &csr))
        .await;
    let reference = applied.text_of("reference");
    let secret = applied.text_of("tracking-secret");
    let id = app_id(&app.get("/staff", &clerk).await, &reference);
    let hkid2 = ca_core::hkid::synthetic("Z", 78);
    let mut server = application(&csrf, hkid2.expose(), &csr);
    server.extend([
        ("profile", "server"),
        ("organization", "Example Trading Limited"),
        ("org_id", "12345678"),
        ("dns_names", "www.example.hk"),
    ]);
    let applied = app.post("/apply", &cookies, &server).await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.body);
    let server_ref = applied.text_of("reference");
    let server_secret = applied.text_of("tracking-secret");
    let server_id = app_id(&app.get("/staff", &clerk).await, &server_ref);
    for lang in [Lang::En, Lang::ZhHk] {
        let t = lang.texts();
        let q = format!("?lang={}", lang.tag());
        let cookie_lang = format!("{LANG_COOKIE}={}", lang.tag());
        let with = |c: &str| format!("{c}; {cookie_lang}");
        let pages = vec![
            app.get(&format!("/{q}"), "").await,
            app.get(&format!("/terms{q}"), "").await,
            app.get(&format!("/apply{q}"), "").await,
            app.get(&format!("/track{q}"), "").await,
            app.get(&format!("/staff/login{q}"), "").await,
            app.get("/staff", &with(&clerk)).await,
            app.get(&format!("/staff/applications/{id}"), &with(&clerk))
                .await,
            app.post(
                "/track",
                &with(&cookies),
                &[
                    ("csrf", &csrf),
                    ("reference", &reference),
                    ("secret", &secret),
                ],
            )
            .await,
            app.post(
                "/track",
                &with(&cookies),
                &[
                    ("csrf", &csrf),
                    ("reference", &reference),
                    ("secret", "WRONG"),
                ],
            )
            .await,
            app.get(&format!("/apply{q}&profile=organisational"), "")
                .await,
            app.get(&format!("/apply{q}&profile=encipherment"), "")
                .await,
            app.get(&format!("/apply{q}&profile=server"), "").await,
            app.get("/staff/walk-in", &with(&clerk)).await,
            app.get(&format!("/staff/applications/{server_id}"), &with(&clerk))
                .await,
            app.post(
                "/track",
                &with(&cookies),
                &[
                    ("csrf", &csrf),
                    ("reference", &server_ref),
                    ("secret", &server_secret),
                ],
            )
            .await,
            app.get(
                &format!("/confirm{q}&reference={reference}&code=AAAAAAAAAAAAAAAAAAAAAAAAAA"),
                "",
            )
            .await,
        ];
        for profile in ["personal-minor", "organisational-role"] {
            let p = app.get(&format!("/apply{q}&profile={profile}"), "").await;
            assert_eq!(p.status, StatusCode::OK, "{profile}");
            assert!(p.body.contains(&format!("<html lang=\"{}\">", lang.tag())));
            assert_eq!(
                p.body.contains("name=\"user_title\""),
                profile == "organisational-role",
                "{profile}"
            );
        }
        assert!(pages[13].body.contains("_ecert-challenge.www.example.hk"));
        assert!(pages[14].body.contains("_ecert-challenge.www.example.hk"));
        for (i, p) in pages.iter().enumerate() {
            assert!(
                p.status == StatusCode::OK || (i == 8 && p.status == StatusCode::NOT_FOUND),
                "page {i}: {}",
                p.status
            );
            assert!(
                p.body.contains(&format!("<html lang=\"{}\">", lang.tag())),
                "page {i} in {lang:?}"
            );
            assert!(
                p.body.contains(t.site) && p.body.contains(t.switch_to),
                "page {i} in {lang:?}"
            );
            assert!(
                p.headers.get(header::CONTENT_SECURITY_POLICY).is_some(),
                "page {i}: no CSP"
            );
        }
        assert!(
            pages[0].cookie(LANG_COOKIE).is_some(),
            "?lang= is remembered"
        );
    }
}

/// Organisational and server applications over HTTP: each type has its form (the server form
/// asks for DNS names and makes no browser key); the staff page shows the organisation, the
/// documents check and the DNS records to publish; every refusal on the way has its status;
/// a DNS failure is reported per name without losing the application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisation_and_server_applications_over_http() {
    // A resolver nobody answers at: checks fail fast and say why.
    let app = app(|c| {
        c.dcv.resolver = "127.0.0.1:9".into();
        c.dcv.timeout_seconds = 1;
    })
    .await;
    for lang in [Lang::En, Lang::ZhHk] {
        let t = lang.texts();
        let q = format!("lang={}", lang.tag());
        let server = app.get(&format!("/apply?profile=server&{q}"), "").await;
        assert_eq!(server.status, StatusCode::OK);
        assert!(
            server.body.contains(t.profile_server) && server.body.contains("name=\"dns_names\"")
        );
        assert!(
            !server.body.contains("id=\"make-key\""),
            "a server key is not made in the browser"
        );
        assert!(!server.body.contains("name=\"user_surname\""));
        let org = app
            .get(&format!("/apply?profile=organisational&{q}"), "")
            .await;
        assert!(org.body.contains("name=\"user_surname\"") && org.body.contains("name=\"org_id\""));
        assert!(org.body.contains("id=\"representative\""));
        let home = app.get(&format!("/?{q}"), "").await;
        for p in ["personal", "organisational", "encipherment", "server"] {
            assert!(
                home.body.contains(&format!("href=\"/apply?profile={p}\"")),
                "{p}"
            );
        }
        assert!(
            home.body.contains(&format!("199 {}", t.days)),
            "server validity"
        );
    }
    assert_eq!(
        app.get("/apply?profile=root", "").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let (cookies, csrf) = citizen(&app).await;
    let (clerk, clerk_csrf) = staff_cookie(&app, "clerk1", "gpo", ra::Role::Clerk).await;
    let csr = csr_pem();
    let hkid = ca_core::hkid::synthetic("K", 410_001);
    let mut form = application(&csrf, hkid.expose(), &csr);
    form.retain(|(k, _)| *k != "email");
    form.extend([
        ("profile", "server"),
        ("email", "it@example.hk"),
        ("organization", "Example Trading Limited"),
        ("org_id", "1234 5678"),
        (
            "dns_names",
            "www.example.hk\r\nAPI.example.hk, www.example.hk",
        ),
    ]);
    let mut wild = form.clone();
    wild.push(("dns_names", "*.example.hk"));
    wild.retain(|(k, v)| *k != "dns_names" || *v == "*.example.hk");
    let r = app.post("/apply", &cookies, &wild).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let mut no_br = form.clone();
    no_br.retain(|(k, _)| *k != "org_id");
    let r = app.post("/apply", &cookies, &no_br).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("org_id"), "{}", r.body);

    let applied = app.post("/apply", &cookies, &form).await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.body);
    let reference = applied.text_of("reference");
    let secret = applied.text_of("tracking-secret");
    let id = app_id(&app.get("/staff", &clerk).await, &reference);
    // The applicant confirms the mailbox; the clerk checks the representative and the fee.
    let code = app.last_code();
    let r = app
        .post(
            "/track/confirm",
            &cookies,
            &[
                ("csrf", &csrf),
                ("reference", &reference),
                ("secret", &secret),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .post(
            &format!("/staff/applications/{id}/identity"),
            &clerk,
            &[
                ("csrf", &clerk_csrf),
                ("version", "1"),
                ("hkid", hkid.expose()),
                ("card_sighted", "yes"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .post(
            &format!("/staff/applications/{id}/fee"),
            &clerk,
            &[
                ("csrf", &clerk_csrf),
                ("amount", "500.00"),
                ("method", "cheque"),
                ("receipt", "R-9"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let page = app.get(&format!("/staff/applications/{id}"), &clerk).await;
    assert!(
        page.body.contains("Example Trading Limited (12345678)"),
        "{}",
        page.body
    );
    let value = page.text_of("dcv-value");
    assert_eq!(value.len(), 26);
    for name in ["www.example.hk", "api.example.hk"] {
        assert!(
            page.body.contains(&format!("_ecert-challenge.{name}")),
            "{name}"
        );
    }
    // The applicant sees the same records to publish.
    let tracked = app
        .post(
            "/track",
            &cookies,
            &[
                ("csrf", &csrf),
                ("reference", &reference),
                ("secret", &secret),
            ],
        )
        .await;
    assert_eq!(tracked.text_of("dcv-value"), value);

    // The documents check: CSRF, the number, the attestation.
    let check = |br: &'static str, sighted: bool, token: &str| {
        let mut f = vec![
            ("csrf", token.to_string()),
            ("version", "1".into()),
            ("org_id", br.into()),
            ("locality", "Kwun Tong".into()),
        ];
        if sighted {
            f.push(("documents_sighted", "yes".into()));
        }
        f
    };
    let post = |path: String, f: Vec<(&'static str, String)>| {
        let (app, clerk) = (&app, &clerk);
        async move {
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.post(&path, clerk, &f).await
        }
    };
    let org_path = format!("/staff/applications/{id}/organisation");
    assert_eq!(
        post(org_path.clone(), check("12345678", true, "forged"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = post(org_path.clone(), check("12345679", true, &clerk_csrf)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        !r.body.contains("12345679"),
        "the typed number is not echoed"
    );
    assert_eq!(
        post(org_path.clone(), check("12345678", false, &clerk_csrf))
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let r = post(org_path.clone(), check("12345678", true, &clerk_csrf)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.text_of("organisation-checked"),
        lang_text(Lang::En).checked
    );

    // Domains: the resolver does not answer, each name says so, nothing is lost.
    let r = post(
        format!("/staff/applications/{id}/domains"),
        vec![("csrf", clerk_csrf.clone())],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.text_of("message").contains("DNS lookup failed"),
        "{}",
        r.body
    );
    let r = app
        .post(
            "/track/domains",
            &cookies,
            &[
                ("csrf", &csrf),
                ("reference", &reference),
                ("secret", &secret),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r
        .text_of("message")
        .contains(lang_text(Lang::En).not_validated));
    let r = app
        .post(
            "/track/domains",
            &cookies,
            &[
                ("csrf", &csrf),
                ("reference", &reference),
                ("secret", "WRONG"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Approval waits for the domains.
    let r = post(
        format!("/staff/applications/{id}/decide"),
        vec![
            ("csrf", clerk_csrf.clone()),
            ("version", "1".into()),
            ("decision", "approve".into()),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.body.contains("www.example.hk, api.example.hk"),
        "{}",
        r.body
    );
}

fn lang_text(l: Lang) -> &'static Texts {
    l.texts()
}

impl App {
    async fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }
}

/// Whether `s` contains something shaped like an HKID number (`[A-Z]{1,2}[0-9]{6}\(?[0-9A]\)?`).
fn has_hkid_shape(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len()).any(|i| {
        let letters = b[i..].iter().take_while(|c| c.is_ascii_uppercase()).count();
        if !(1..=2).contains(&letters) || (i > 0 && b[i - 1].is_ascii_uppercase()) {
            return false;
        }
        let rest = &b[i + letters..];
        rest.len() >= 7 && rest[..6].iter().all(u8::is_ascii_digit) && {
            let c = if rest[6] == b'(' {
                rest.get(7).copied()
            } else {
                Some(rest[6])
            };
            c.is_some_and(|c| c.is_ascii_digit() || c == b'A')
        }
    })
}

/// The JSON API: bearer tokens of staff, the same outlet scoping and rules as the pages, JSON
/// errors with the same statuses, an OpenAPI description, and no HKID-shaped data in any
/// response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_api_with_staff_tokens() {
    let scopes = |list: &str| ra::Scopes::parse(list).unwrap();
    let app = app(|_| {}).await;
    let store = app.auth.store().clone();
    ra::create_staff(
        app.auth.store(),
        &app.auth.staff_keys(),
        &ra::NewStaff {
            username: "clerk1",
            display_name: "Clerk",
            outlet: "gpo",
            role: ra::Role::Clerk,
            password: "a password of some length",
        },
        "test",
    )
    .await
    .unwrap();
    ra::create_staff(
        app.auth.store(),
        &app.auth.staff_keys(),
        &ra::NewStaff {
            username: "clerk9",
            display_name: "Far",
            outlet: "tst",
            role: ra::Role::Clerk,
            password: "a password of some length",
        },
        "test",
    )
    .await
    .unwrap();
    let token = ra::create_api_token(
        &store,
        "clerk1",
        "integration",
        30,
        scopes("read,enter,decide"),
        "test",
    )
    .await
    .unwrap();
    let far = ra::create_api_token(
        &store,
        "clerk9",
        "integration",
        30,
        scopes("read,enter"),
        "test",
    )
    .await
    .unwrap();
    ra::create_staff(
        app.auth.store(),
        &app.auth.staff_keys(),
        &ra::NewStaff {
            username: "clerk2",
            display_name: "Second clerk",
            outlet: "gpo",
            role: ra::Role::Clerk,
            password: "a password of some length",
        },
        "test",
    )
    .await
    .unwrap();
    let second = ra::create_api_token(
        &store,
        "clerk2",
        "integration",
        30,
        scopes("read,decide"),
        "test",
    )
    .await
    .unwrap();
    let mut bodies = Vec::new();

    // Authentication.
    let r = app.api("GET", "/api/v1/applications", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(header::WWW_AUTHENTICATE).is_some());
    assert_eq!(
        app.api("GET", "/api/v1/applications", Some("ecert_WRONG"), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // The description.
    let doc = app.api("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/applications",
        "/api/v1/applications/{id}",
        "/api/v1/applications/{id}/identity",
        "/api/v1/applications/{id}/fee",
        "/api/v1/applications/{id}/decision",
        "/api/v1/applications/{id}/certificate",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} not described");
    }
    assert!(doc["components"]["securitySchemes"]["staff_token"].is_object());

    // A walk-in application with the applicant's CSR.
    let hkid = ca_core::hkid::synthetic("Z", 90_210);
    let mut body = serde_json::json!({
        "profile": "personal", "surname": "Lee", "given_name": "Ka Yan", "email": "ky.lee@example.hk",
        "hkid": "Z090210(0)", "date_of_birth": "1990-05-01", "phone": "+852 3111 0000",
        "address": "2 Nathan Road, Kowloon", "revocation_secret": "revoke me please", "csr": csr_pem()
    });
    let r = app
        .api(
            "POST",
            "/api/v1/applications",
            Some(&token),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let e: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(e["error"], "invalid");
    assert!(e["request_id"].is_string());
    body["hkid"] = serde_json::Value::String(hkid.expose().into());
    let r = app
        .api("POST", "/api/v1/applications", Some(&token), Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    bodies.push(r.body.clone());
    let created: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let reference = created["reference"].as_str().unwrap().to_string();
    let secret = created["tracking_secret"].as_str().unwrap().to_string();
    ra::confirm_email(&store, &reference, &secret, &app.last_code())
        .await
        .unwrap();

    // Scoping: the other outlet sees nothing.
    let mine = app
        .api("GET", "/api/v1/applications", Some(&token), None)
        .await;
    assert!(mine.body.contains(&reference));
    bodies.push(mine.body);
    let theirs = app
        .api("GET", "/api/v1/applications", Some(&far), None)
        .await;
    assert_eq!(theirs.body, "[]");
    assert_eq!(
        app.api(
            "GET",
            &format!("/api/v1/applications/{id}"),
            Some(&far),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    let r = app
        .api(
            "POST",
            &format!("/api/v1/applications/{id}/identity"),
            Some(&far),
            Some(serde_json::json!({"version": 1, "hkid": hkid.expose(), "card_sighted": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let view = app
        .api(
            "GET",
            &format!("/api/v1/applications/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(view.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&view.body).unwrap();
    assert_eq!(v["hkid_masked"], hkid.masked());
    assert_eq!(v["status"], "awaiting_visit");
    bodies.push(view.body);

    // Scopes (issue 11, defect 7): a token does only what it was made for. The second clerk's
    // token reads and decides; it does not record counter checks or enter applications.
    let r = app
        .api(
            "POST",
            &format!("/api/v1/applications/{id}/identity"),
            Some(&second),
            Some(serde_json::json!({"version": 1, "hkid": hkid.expose(), "card_sighted": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("lacks the enter scope"), "{}", r.body);
    let r = app
        .api(
            "GET",
            &format!("/api/v1/applications/{id}"),
            Some(&second),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let reader = ra::create_api_token(&store, "clerk1", "reporting", 30, scopes("read"), "test")
        .await
        .unwrap();
    let r = app
        .api(
            "POST",
            &format!("/api/v1/applications/{id}/decision"),
            Some(&reader),
            Some(
                serde_json::json!({"version": 1, "decision": "reject", "reason": "testing scopes"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("lacks the decide scope"), "{}", r.body);

    // The counter steps, with their refusals.
    let other = ca_core::hkid::synthetic("Z", 90_211);
    let r = app
        .api(
            "POST",
            &format!("/api/v1/applications/{id}/identity"),
            Some(&token),
            Some(serde_json::json!({"version": 1, "hkid": other.expose(), "card_sighted": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    bodies.push(r.body);
    let r = app
        .api(
            "POST",
            &format!("/api/v1/applications/{id}/decision"),
            Some(&token),
            Some(serde_json::json!({"version": 1, "decision": "approve"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app
        .api(
            "POST",
            &format!("/api/v1/applications/{id}/identity"),
            Some(&token),
            Some(serde_json::json!({"version": 1, "hkid": hkid.expose(), "card_sighted": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = app
        .api(
            "POST",
            &format!("/api/v1/applications/{id}/fee"),
            Some(&token),
            Some(serde_json::json!({"amount_cents": 5000, "method": "card", "receipt": "API-1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = app
        .api(
            "GET",
            &format!("/api/v1/applications/{id}/certificate"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // The member who entered the application does not approve it (issue 11, defect 7: one
    // token carried an application from entry to issuance alone).
    let r = app
        .api(
            "POST",
            &format!("/api/v1/applications/{id}/decision"),
            Some(&token),
            Some(serde_json::json!({"version": 1, "decision": "approve"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("another member of staff"), "{}", r.body);
    let r = app
        .api(
            "POST",
            &format!("/api/v1/applications/{id}/decision"),
            Some(&second),
            Some(serde_json::json!({"version": 1, "decision": "approve"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let d: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(d["outcome"], "issued");
    bodies.push(r.body);
    let r = app
        .api(
            "GET",
            &format!("/api/v1/applications/{id}/certificate"),
            Some(&token),
            None,
        )
        .await;
    assert!(r.body.starts_with("-----BEGIN CERTIFICATE-----"));

    // Response minimisation: nothing HKID-shaped in any JSON answer.
    assert!(
        has_hkid_shape(hkid.expose()) && has_hkid_shape("AB123456(9)"),
        "the shape check works"
    );
    for b in &bodies {
        assert!(!has_hkid_shape(b), "HKID-shaped data in {b}");
    }
}

/// A walk-in entered by a clerk with the applicant's CSR, then approved; the certificate is put
/// on hold at the counter. Another outlet can do neither; a form without the token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walk_in_and_revocation_at_the_counter() {
    let app = app(|_| {}).await;
    let (clerk, csrf) = staff_cookie(&app, "clerk1", "gpo", ra::Role::Clerk).await;
    let (far, far_csrf) = staff_cookie(&app, "clerk9", "tst", ra::Role::Clerk).await;
    let page = app.get("/staff/walk-in", &clerk).await;
    assert_eq!(page.status, StatusCode::OK);
    let csr = csr_pem();
    let hkid = ca_core::hkid::synthetic("Z", 55_555);
    let mut form = application(&csrf, hkid.expose(), &csr);
    form[0].1 = "nope";
    assert_eq!(
        app.post("/staff/walk-in", &clerk, &form).await.status,
        StatusCode::FORBIDDEN
    );
    form[0].1 = &csrf;
    let r = app.post("/staff/walk-in", &clerk, &form).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let reference = r.text_of("reference");
    let secret = r.text_of("tracking-secret");
    let store = app.auth.store().clone();
    ra::confirm_email(&store, &reference, &secret, &app.last_code())
        .await
        .unwrap();
    let log = store.audit_records().await.unwrap().0;
    assert!(
        log.iter()
            .any(|e| e.kind == "ra.application.submitted" && e.actor == "staff:clerk1"),
        "walk-in not attributed to the clerk"
    );
    let id = app_id(&app.get("/staff", &clerk).await, &reference);
    let base = format!("/staff/applications/{id}");
    app.post(
        &format!("{base}/identity"),
        &clerk,
        &[
            ("csrf", &csrf),
            ("version", "1"),
            ("hkid", hkid.expose()),
            ("card_sighted", "yes"),
        ],
    )
    .await;
    app.post(
        &format!("{base}/fee"),
        &clerk,
        &[
            ("csrf", &csrf),
            ("amount", "50"),
            ("method", "cash"),
            ("receipt", "W-1"),
        ],
    )
    .await;
    // The clerk who entered it does not approve it; another member of staff does.
    let r = app
        .post(
            &format!("{base}/decide"),
            &clerk,
            &[("csrf", &csrf), ("version", "1"), ("decision", "approve")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("another member of staff"), "{}", r.body);
    let (second, second_csrf) = staff_cookie(&app, "clerk2", "gpo", ra::Role::Clerk).await;
    let r = app
        .post(
            &format!("{base}/decide"),
            &second,
            &[
                ("csrf", &second_csrf),
                ("version", "1"),
                ("decision", "approve"),
            ],
        )
        .await;
    assert!(r.text_of("message").starts_with("Issued"), "{}", r.body);
    let serial = r.text_of("message").rsplit(' ').next().unwrap().to_string();
    // Another outlet cannot revoke it.
    let r = app
        .post(
            &format!("{base}/revoke"),
            &far,
            &[("csrf", &far_csrf), ("reason", "keyCompromise")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .post(
            &format!("{base}/revoke"),
            &clerk,
            &[("csrf", &csrf), ("reason", "certificateHold")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let rec = store.certificate(&serial).await.unwrap().unwrap();
    assert_eq!(rec.revocation_reason, Some(6), "on hold");
    // Released at the counter, then held again.
    let r = app
        .post(
            &format!("{base}/revoke"),
            &clerk,
            &[("csrf", &csrf), ("reason", "release")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        store
            .certificate(&serial)
            .await
            .unwrap()
            .unwrap()
            .revocation_reason,
        None,
        "released"
    );
    // An officer's hold (review finding: any clerk of the outlet released it) is released by
    // an officer only.
    let (officer, officer_csrf) = staff_cookie(&app, "officer1", "tst", ra::Role::Officer).await;
    let r = app
        .post(
            &format!("{base}/revoke"),
            &officer,
            &[("csrf", &officer_csrf), ("reason", "certificateHold")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .post(
            &format!("{base}/revoke"),
            &clerk,
            &[("csrf", &csrf), ("reason", "release")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("an officer releases it"), "{}", r.body);
    // Still the officer's when the holder's account is gone (review finding: an unknown holder
    // counted as a counter hold).
    sqlx::query("UPDATE certificates SET held_by = 'staff:someone-gone' WHERE serial = $1")
        .bind(&serial)
        .execute(store.pool())
        .await
        .unwrap();
    let r = app
        .post(
            &format!("{base}/revoke"),
            &clerk,
            &[("csrf", &csrf), ("reason", "release")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = app
        .post(
            &format!("{base}/revoke"),
            &officer,
            &[("csrf", &officer_csrf), ("reason", "release")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .post(
            &format!("{base}/revoke"),
            &clerk,
            &[("csrf", &csrf), ("reason", "certificateHold")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Revoked for good afterwards; a second identical revocation is a conflict.
    let r = app
        .post(
            &format!("{base}/revoke"),
            &clerk,
            &[("csrf", &csrf), ("reason", "keyCompromise")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .post(
            &format!("{base}/revoke"),
            &clerk,
            &[("csrf", &csrf), ("reason", "keyCompromise")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
}

/// Certificate Problem Reports over HTTP (issue 12, item 13): the public form (CSRF-checked,
/// errors named), the officer's queue and report page in both languages (clerks refused), the
/// preliminary findings and the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problem_reports_over_http() {
    let app = app(|_| {}).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let issued = app
        .auth
        .issue(ca_core::authority::ApprovedRequest {
            profile: "personal".into(),
            csr: ca_core::csr::VerifiedCsr::parse(csr.der()).unwrap(),
            subject: ca_core::profile::SubjectData {
                surname: Some("CHAN".into()),
                given_name: Some("Tai Man".into()),
                emails: vec!["tm.chan@example.hk".into()],
                ..Default::default()
            },
            days: None,
            renews: None,
            actor: "test".into(),
        })
        .await
        .unwrap();
    let serial = issued.serial.to_hex();
    let form = app.get("/report", "").await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let token = form.cookie(CSRF_COOKIE).expect("csrf cookie");
    let cookies = format!("{CSRF_COOKIE}={token}");
    let fields = |csrf: &str, serial: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("kind", "misissuance".to_string()),
            ("serial", serial.to_string()),
            (
                "description",
                "The subject names the wrong company.".to_string(),
            ),
            ("reporter_email", "rp@example.org".to_string()),
        ]
    };
    let post = |path: &'static str, cookies: String, f: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.post(path, &cookies, &f).await
        }
    };
    assert_eq!(
        post("/report", cookies.clone(), fields("forged", &serial))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let bad = post("/report", cookies.clone(), fields(&token, "00")).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let r = post("/report", cookies.clone(), fields(&token, &serial)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let reference = r.text_of("report-reference");
    assert!(reference.starts_with("PR-"), "{reference}");

    let (clerk, _) = staff_cookie(&app, "clerk1", "gpo", ra::Role::Clerk).await;
    assert_eq!(
        app.get("/staff/problems", &clerk).await.status,
        StatusCode::FORBIDDEN
    );
    let (officer, officer_csrf) = staff_cookie(&app, "officer1", "gpo", ra::Role::Officer).await;
    for lang in [Lang::En, Lang::ZhHk] {
        let q = format!("?lang={}", lang.tag());
        let page = app.get(&format!("/report{q}"), "").await;
        assert!(
            page.body.contains(lang.texts().report_title),
            "{}",
            page.body
        );
        let queue = app.get(&format!("/staff/problems{q}"), &officer).await;
        assert_eq!(queue.status, StatusCode::OK, "{}", queue.body);
        assert!(queue.body.contains(&reference), "{}", queue.body);
    }
    let queue = app.get("/staff/problems", &officer).await;
    let key = format!("data-reference=\"{reference}\" href=\"/staff/problems/");
    let start = queue.body.find(&key).unwrap() + key.len();
    let id = queue.body[start..].split('"').next().unwrap().to_string();
    let page = app.get(&format!("/staff/problems/{id}"), &officer).await;
    assert_eq!(page.text_of("reporter"), "rp@example.org");
    let prelim = app
        .post(
            &format!("/staff/problems/{id}/preliminary"),
            &officer,
            &[
                ("csrf", officer_csrf.as_str()),
                ("version", "0"),
                (
                    "findings",
                    "We are comparing the subject with the register.",
                ),
            ],
        )
        .await;
    assert_eq!(prelim.status, StatusCode::OK, "{}", prelim.body);
    let done = app
        .post(
            &format!("/staff/problems/{id}/decide"),
            &officer,
            &[
                ("csrf", officer_csrf.as_str()),
                ("version", "0"),
                ("decision", "revoke"),
                ("reason", "privilegeWithdrawn"),
                ("note", "The subject was wrong: revoked."),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(
        done.text_of("outcome").starts_with("revoked"),
        "{}",
        done.body
    );
    let rec = app
        .auth
        .store()
        .certificate(&serial)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.revocation_reason, Some(9));
}

/// Issue 14: every staff page and API endpoint, as every role (signed in, and through an API
/// token with every scope) and as a signed-out visitor, answers as the permission matrix
/// (`ca_core::ra::permissions`) says: a role without the action gets 403; with it, an object of
/// its own outlet (or any, for a CA-level role) is reached, and one of another outlet answers
/// 404 like an object that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_as_every_role_follows_the_matrix() {
    use axum::extract::ConnectInfo;
    use ca_core::ra::permissions::{permits, Reach};
    use ca_core::ra::Action as A;

    let app = app(|_| {}).await;
    // One application at the General Post Office.
    let (cookies, csrf) = citizen(&app).await;
    let csr = csr_pem();
    let r = app
        .post("/apply", &cookies, &application(&csrf, "Z683451(6)", &csr))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let id: String = sqlx::query_scalar("SELECT id FROM applications")
        .fetch_one(app.auth.store().pool())
        .await
        .unwrap();
    let report = uuid::Uuid::new_v4().to_string();

    /// How a route is reached, what it does, and whether it names an outlet's object.
    struct Route {
        method: &'static str,
        path: String,
        api: bool,
        body: serde_json::Value,
        action: Option<A>,
        outlet_object: bool,
    }
    let page = |method, path: String, fields: serde_json::Value, action, outlet_object| Route {
        method,
        path,
        api: false,
        body: fields,
        action,
        outlet_object,
    };
    let api = |method, path: String, body: serde_json::Value, action, outlet_object| Route {
        method,
        path,
        api: true,
        body,
        action,
        outlet_object,
    };
    let a = |p: &str| format!("/staff/applications/{id}{p}");
    let v = |p: &str| format!("/api/v1/applications/{id}{p}");
    let routes = vec![
        page("GET", "/staff".into(), serde_json::json!({}), None, false),
        page(
            "GET",
            a(""),
            serde_json::json!({}),
            Some(A::ViewApplications),
            true,
        ),
        page(
            "POST",
            a("/identity"),
            serde_json::json!({"version": "1", "hkid": "Z683451(6)", "card_sighted": "yes"}),
            Some(A::RecordChecks),
            true,
        ),
        page(
            "POST",
            a("/fee"),
            serde_json::json!({"amount": "50.00", "method": "cash", "receipt": "R-1"}),
            Some(A::RecordChecks),
            true,
        ),
        page(
            "POST",
            a("/organisation"),
            serde_json::json!({"version": "1", "org_id": "12345678", "documents_sighted": "yes"}),
            Some(A::RecordChecks),
            true,
        ),
        page(
            "POST",
            a("/domains"),
            serde_json::json!({"version": "1"}),
            Some(A::RecordChecks),
            true,
        ),
        page(
            "POST",
            a("/reveal"),
            serde_json::json!({"field": "hkid"}),
            Some(A::RevealPersonalData),
            true,
        ),
        page(
            "POST",
            a("/decide"),
            serde_json::json!({"version": "1", "decision": "reject", "reason": "a test"}),
            Some(A::Decide),
            true,
        ),
        page(
            "POST",
            a("/revoke"),
            serde_json::json!({"reason": "superseded"}),
            Some(A::Revoke),
            true,
        ),
        page(
            "GET",
            "/staff/walk-in".into(),
            serde_json::json!({}),
            Some(A::EnterApplication),
            false,
        ),
        page(
            "GET",
            "/staff/reports".into(),
            serde_json::json!({}),
            Some(A::ViewReports),
            false,
        ),
        page(
            "GET",
            "/staff/reports/fees.csv".into(),
            serde_json::json!({}),
            Some(A::ViewReports),
            false,
        ),
        page(
            "GET",
            "/staff/problems".into(),
            serde_json::json!({}),
            Some(A::ViewProblemReports),
            false,
        ),
        page(
            "GET",
            format!("/staff/problems/{report}"),
            serde_json::json!({}),
            Some(A::ViewProblemReports),
            false,
        ),
        page(
            "POST",
            format!("/staff/problems/{report}/preliminary"),
            serde_json::json!({"findings": "x"}),
            Some(A::AnswerProblemReports),
            false,
        ),
        page(
            "POST",
            format!("/staff/problems/{report}/decide"),
            serde_json::json!({"decision": "reject", "note": "x"}),
            Some(A::AnswerProblemReports),
            false,
        ),
        page(
            "GET",
            "/staff/password".into(),
            serde_json::json!({}),
            None,
            false,
        ),
        page(
            "POST",
            "/staff/admin/outlet/no-such-outlet/rename".into(),
            serde_json::json!({"name_en": "x", "name_zh": "x"}),
            Some(A::ManageOutlets),
            false,
        ),
        page(
            "GET",
            "/staff/admin".into(),
            serde_json::json!({}),
            Some(A::ManageStaff),
            false,
        ),
        page(
            "POST",
            "/staff/admin/nobody/disable".into(),
            serde_json::json!({}),
            Some(A::ManageStaff),
            false,
        ),
        page(
            "POST",
            "/staff/admin/add".into(),
            serde_json::json!({"username": "added-by-matrix", "display_name": "x", "outlet": "gpo", "role": "clerk", "password": "a long initial password"}),
            Some(A::ManageStaff),
            false,
        ),
        page(
            "GET",
            "/staff/ops".into(),
            serde_json::json!({}),
            Some(A::ViewOperations),
            false,
        ),
        page(
            "POST",
            "/staff/ops/sign-ocsp".into(),
            serde_json::json!({}),
            Some(A::RunOperations),
            false,
        ),
        page(
            "POST",
            "/staff/ops/publish-crls".into(),
            serde_json::json!({}),
            Some(A::RunOperations),
            false,
        ),
        page(
            "GET",
            "/staff/audit?kind=ca".into(),
            serde_json::json!({}),
            Some(A::ViewAudit),
            false,
        ),
        page(
            "GET",
            "/staff/audit/export?kind=ca&format=csv".into(),
            serde_json::json!({}),
            Some(A::ViewAudit),
            false,
        ),
        api(
            "GET",
            "/api/v1/audit/export?kind=ca".into(),
            serde_json::json!(null),
            Some(A::ViewAudit),
            false,
        ),
        api(
            "GET",
            "/api/v1/applications".into(),
            serde_json::json!(null),
            Some(A::ViewApplications),
            false,
        ),
        api(
            "POST",
            "/api/v1/applications".into(),
            serde_json::json!({"profile": "personal", "surname": "Lee", "given_name": "Ka Yan", "email": "ky.lee@example.hk", "hkid": "Y531242(4)", "date_of_birth": "1990-01-01", "phone": "+852 2921 2222", "address": "1 Pier Road", "revocation_secret": "some words here", "csr": csr_pem()}),
            Some(A::EnterApplication),
            false,
        ),
        api(
            "GET",
            v(""),
            serde_json::json!(null),
            Some(A::ViewApplications),
            true,
        ),
        api(
            "POST",
            v("/identity"),
            serde_json::json!({"version": 1, "hkid": "Z683451(6)", "card_sighted": true}),
            Some(A::RecordChecks),
            true,
        ),
        api(
            "POST",
            v("/fee"),
            serde_json::json!({"amount_cents": 5000, "method": "cash", "receipt": "R-2"}),
            Some(A::RecordChecks),
            true,
        ),
        api(
            "POST",
            v("/organisation"),
            serde_json::json!({"version": 1, "org_id": "12345678", "documents_sighted": true}),
            Some(A::RecordChecks),
            true,
        ),
        api(
            "POST",
            v("/domains"),
            serde_json::json!(null),
            Some(A::RecordChecks),
            true,
        ),
        api(
            "POST",
            v("/decision"),
            serde_json::json!({"version": 1, "decision": "reject", "reason": "a test"}),
            Some(A::Decide),
            true,
        ),
        api(
            "GET",
            v("/certificate"),
            serde_json::json!(null),
            Some(A::ViewApplications),
            true,
        ),
        api(
            "POST",
            "/api/v1/certificates/00112233445566778899aabbccddeeff/revocation".into(),
            serde_json::json!({"reason": "superseded"}),
            Some(A::Revoke),
            false,
        ),
        page(
            "GET",
            "/staff/officer".into(),
            serde_json::json!({}),
            Some(A::TwoOfficerDecisions),
            false,
        ),
        page(
            "POST",
            "/staff/officer/propose".into(),
            serde_json::json!({"kind": "everything"}),
            Some(A::TwoOfficerDecisions),
            false,
        ),
        page(
            "POST",
            "/staff/officer/no-such-proposal/confirm".into(),
            serde_json::json!({}),
            Some(A::TwoOfficerDecisions),
            false,
        ),
        page(
            "POST",
            "/staff/officer/no-such-proposal/withdraw".into(),
            serde_json::json!({}),
            Some(A::TwoOfficerDecisions),
            false,
        ),
        api(
            "GET",
            "/api/v1/officer-proposals".into(),
            serde_json::json!(null),
            Some(A::TwoOfficerDecisions),
            false,
        ),
        api(
            "POST",
            "/api/v1/officer-proposals".into(),
            serde_json::json!({"kind": "everything"}),
            Some(A::TwoOfficerDecisions),
            false,
        ),
        api(
            "POST",
            "/api/v1/officer-proposals/no-such-proposal/confirm".into(),
            serde_json::json!(null),
            Some(A::TwoOfficerDecisions),
            false,
        ),
        api(
            "POST",
            "/api/v1/officer-proposals/no-such-proposal/withdraw".into(),
            serde_json::json!(null),
            Some(A::TwoOfficerDecisions),
            false,
        ),
        page(
            "GET",
            "/staff/personal-data".into(),
            serde_json::json!({}),
            Some(A::ActivatePersonalDataKeys),
            false,
        ),
        page(
            "POST",
            "/staff/personal-data/activate".into(),
            serde_json::json!({"pin": "not the pin"}),
            Some(A::ActivatePersonalDataKeys),
            false,
        ),
        api(
            "POST",
            "/api/v1/personal-data/activate".into(),
            serde_json::json!({"pin": "not the pin"}),
            Some(A::ActivatePersonalDataKeys),
            false,
        ),
        api(
            "GET",
            "/api/v1/problem-reports".into(),
            serde_json::json!(null),
            Some(A::ViewProblemReports),
            false,
        ),
        api(
            "GET",
            format!("/api/v1/problem-reports/{report}"),
            serde_json::json!(null),
            Some(A::ViewProblemReports),
            false,
        ),
        api(
            "POST",
            format!("/api/v1/problem-reports/{report}/preliminary"),
            serde_json::json!({"findings": "x"}),
            Some(A::AnswerProblemReports),
            false,
        ),
        api(
            "POST",
            format!("/api/v1/problem-reports/{report}/decision"),
            serde_json::json!({"outcome": "reject", "note": "x"}),
            Some(A::AnswerProblemReports),
            false,
        ),
        api(
            "GET",
            "/api/v1/staff".into(),
            serde_json::json!(null),
            Some(A::ManageStaff),
            false,
        ),
        api(
            "POST",
            "/api/v1/staff".into(),
            serde_json::json!({"username": "", "display_name": "", "outlet": "gpo", "role": "clerk", "password": ""}),
            Some(A::ManageStaff),
            false,
        ),
        api(
            "POST",
            "/api/v1/staff/nobody/disable".into(),
            serde_json::json!(null),
            Some(A::ManageStaff),
            false,
        ),
        api(
            "GET",
            "/api/v1/outlets".into(),
            serde_json::json!(null),
            Some(A::ManageOutlets),
            false,
        ),
        api(
            "POST",
            "/api/v1/outlets".into(),
            serde_json::json!({"id": "Not An Id", "name_en": "x", "name_zh": "x"}),
            Some(A::ManageOutlets),
            false,
        ),
        api(
            "POST",
            "/api/v1/outlets/no-such-outlet/rename".into(),
            serde_json::json!({"name_en": "x", "name_zh": "x"}),
            Some(A::ManageOutlets),
            false,
        ),
        api(
            "POST",
            "/api/v1/organisations".into(),
            serde_json::json!({"application_id": "no-such-application"}),
            Some(A::ManageOrganisations),
            false,
        ),
        api(
            "GET",
            "/api/v1/organisations/no-such-org/domains".into(),
            serde_json::json!(null),
            Some(A::ManageOrganisations),
            false,
        ),
        api(
            "POST",
            "/api/v1/organisations/no-such-org/domains".into(),
            serde_json::json!({"domain": "example.hk"}),
            Some(A::ManageOrganisations),
            false,
        ),
        api(
            "POST",
            "/api/v1/organisations/no-such-org/domains/example.hk/validation".into(),
            serde_json::json!(null),
            Some(A::ManageOrganisations),
            false,
        ),
        api(
            "POST",
            "/api/v1/organisations/no-such-org/batch-tokens".into(),
            serde_json::json!({"profiles": ["organisational"], "days": 30}),
            Some(A::ManageOrganisations),
            false,
        ),
        api(
            "DELETE",
            "/api/v1/organisations/no-such-org/batch-tokens".into(),
            serde_json::json!(null),
            Some(A::ManageOrganisations),
            false,
        ),
        // A batch is read by its organisation's batch token or an officer; it is submitted only
        // with a batch token (`POST /api/v1/batches`: a staff token is refused with 403 and a
        // wrong batch token with 401, in the e2e test
        // `bulk::a_batch_of_staff_is_checked_approved_issued_once_and_judged`).
        api(
            "GET",
            "/api/v1/batches/no-such-batch".into(),
            serde_json::json!(null),
            Some(A::ManageOrganisations),
            false,
        ),
        api(
            "GET",
            "/api/v1/batches/no-such-batch/certificates".into(),
            serde_json::json!(null),
            Some(A::ManageOrganisations),
            false,
        ),
        // Last: it ends the token's session.
        api(
            "DELETE",
            "/api/v1/session".into(),
            serde_json::json!(null),
            None,
            false,
        ),
    ];

    // Each caller from its own address, so the staff rate limit counts them apart.
    let mut n = 0u8;
    let mut send = |route: &Route, cookie: Option<(&str, &str)>, token: Option<&str>| {
        n = n.wrapping_add(1);
        let peer = std::net::SocketAddr::from(([10, 0, 0, n], 40000));
        let mut req = Request::builder()
            .method(route.method)
            .uri(&route.path)
            .extension(ConnectInfo(peer));
        let body = if route.api {
            if let Some(t) = token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            req = req.header(header::CONTENT_TYPE, "application/json");
            if route.body.is_null() {
                Body::empty()
            } else {
                Body::from(route.body.to_string())
            }
        } else {
            let mut fields: Vec<(String, String)> = route
                .body
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            if let Some((c, csrf)) = cookie {
                req = req.header(header::COOKIE, c);
                fields.push(("csrf".into(), csrf.into()));
            }
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            if route.method == "GET" {
                Body::empty()
            } else {
                Body::from(
                    fields
                        .iter()
                        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                        .collect::<Vec<_>>()
                        .join("&"),
                )
            }
        };
        req.body(body).unwrap()
    };

    // The signed-out visitor: pages send to the sign-in, the API answers 401.
    for route in &routes {
        let r = app.send(send(route, None, None)).await;
        let expected = if route.api {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::SEE_OTHER
        };
        assert!(
            r.status == expected || (!route.api && r.status == StatusCode::FORBIDDEN),
            "visitor {} {}: {} {}",
            route.method,
            route.path,
            r.status,
            r.body
        );
    }

    let mut checked = 0;
    for role in ra::Role::ALL {
        for outlet in ["gpo", "tst"] {
            let username = format!("{}-{outlet}", role.name().replace('_', "-"));
            let (cookie, csrf) = signed_in_from(&app, &username, outlet, role, checked as u8).await;
            let token = ra::create_api_token(
                app.auth.store(),
                &username,
                "matrix",
                1,
                ra::Scopes::parse("read,enter,decide,activate").unwrap(),
                "test",
            )
            .await
            .unwrap();
            // As a signed-in command line's token (`ecert login`) has it.
            sqlx::query(
                "UPDATE api_tokens SET scopes = scopes || ' session' WHERE label = 'matrix'",
            )
            .execute(app.auth.store().pool())
            .await
            .unwrap();
            for route in &routes {
                let req = send(route, Some((&cookie, &csrf)), Some(&token));
                let r = app.send(req).await;
                let who = format!(
                    "{} at {outlet}: {} {} -> {} {}",
                    role.name(),
                    route.method,
                    route.path,
                    r.status,
                    &r.body[..r.body.len().min(300)]
                );
                match route.action.map(|a| permits(role, a)) {
                    // Any signed-in member.
                    None => assert!(r.status.is_success(), "{who}"),
                    Some(None) => assert_eq!(r.status, StatusCode::FORBIDDEN, "{who}"),
                    Some(Some(reach)) => {
                        assert_ne!(r.status, StatusCode::FORBIDDEN, "{who}");
                        assert!(
                            r.status != StatusCode::UNAUTHORIZED
                                && r.status != StatusCode::SEE_OTHER,
                            "{who}"
                        );
                        if route.outlet_object {
                            let out_of_reach = reach == Reach::OwnOutlet && outlet != "gpo";
                            if out_of_reach {
                                assert_eq!(r.status, StatusCode::NOT_FOUND, "{who}");
                            } else {
                                assert_ne!(r.status, StatusCode::NOT_FOUND, "{who}");
                            }
                        }
                    }
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, ra::Role::ALL.len() * 2 * routes.len());
}

/// A member of staff made and signed in from their own address (`10.2.0.n`), so that many
/// sign-ins in one test stay under the per-address limit.
async fn signed_in_from(
    app: &App,
    username: &str,
    outlet: &str,
    role: ra::Role,
    n: u8,
) -> (String, String) {
    let (_, secret) = ra::create_staff(
        app.auth.store(),
        &app.auth.staff_keys(),
        &ra::NewStaff {
            username,
            display_name: username,
            outlet,
            role,
            password: "a password of some length",
        },
        "test",
    )
    .await
    .unwrap();
    let r = sign_in_as(app, username, "a password of some length", &secret, n).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let cookie = format!("{STAFF_COOKIE}={}", r.cookie(STAFF_COOKIE).unwrap());
    let home = app.get("/staff", &cookie).await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    (cookie, home.hidden("csrf"))
}

/// Issue 14: an auditor reads the audit trail on its page (filtered) and downloads an export
/// that verifies under the audit public key alone; the export is an audit event with the
/// auditor's name; a clerk is refused both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_reads_and_exports_the_trail() {
    let app = app(|_| {}).await;
    app.auth.checkpoint().await.unwrap();
    let (auditor, _) = staff_cookie(&app, "auditor1", "gpo", ra::Role::Auditor).await;
    let home = app.get("/staff", &auditor).await;
    assert!(home.body.contains("id=\"audit-link\""), "{}", home.body);
    assert!(!home.body.contains("id=\"queue\""), "{}", home.body);
    let r = app.get("/staff/audit?kind=ca", &auditor).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("ca.created"), "{}", r.body);
    assert!(!r.body.contains("ra.staff.created"), "filtered: {}", r.body);
    let r = app
        .get("/staff/audit/export?kind=ca&format=csv", &auditor)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .ends_with(".csv\""));
    let (e, claims) = ca_core::audit::export::parse(&r.body).unwrap();
    assert!(e.matched() >= 3, "{}", r.body);
    assert_eq!(
        ca_core::audit::export::verify(&e, &claims, app.auth.audit_public_key()),
        vec![]
    );
    let bad = app.get("/staff/audit?since=yesterday", &auditor).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE kind = 'audit.exported' AND actor = 'staff:auditor1'",
    )
    .fetch_one(app.auth.store().pool())
    .await
    .unwrap();
    assert_eq!(n, 1);
    let (clerk, _) = staff_cookie(&app, "clerk1", "gpo", ra::Role::Clerk).await;
    assert_eq!(
        app.get("/staff/audit", &clerk).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/staff/audit/export", &clerk).await.status,
        StatusCode::FORBIDDEN
    );
}

/// Issue 14: the operator sees no personal data. A citizen's application goes through the
/// counter to an issued certificate (and a second one stays open); then the operator signs in
/// and crawls every page reachable by links from the staff home, every staff route by name,
/// and every API endpoint with an operator token, and no response carries a personal field of
/// the fixtures — in clear, in hex or in base64. Reveal is refused; the operator's triggers
/// work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_crawls_everything_and_sees_no_personal_data() {
    use base64::Engine as _;
    let app = app(|_| {}).await;
    let (cookies, csrf) = citizen(&app).await;
    let csr = csr_pem();
    let r = app
        .post("/apply", &cookies, &application(&csrf, "Z683451(6)", &csr))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (reference, secret, code) = (
        r.text_of("reference"),
        r.text_of("tracking-secret"),
        app.last_code(),
    );
    let r = app
        .post(
            "/track/confirm",
            &cookies,
            &[
                ("csrf", &csrf),
                ("reference", &reference),
                ("secret", &secret),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (clerk, clerk_csrf) = staff_cookie(&app, "clerk1", "gpo", ra::Role::Clerk).await;
    let queue = app.get("/staff", &clerk).await;
    let id = app_id(&queue, &reference);
    for (path, fields) in [
        (
            "identity",
            vec![
                ("version", "1"),
                ("hkid", "Z683451(6)"),
                ("card_sighted", "yes"),
            ],
        ),
        (
            "fee",
            vec![
                ("amount", "50.00"),
                ("method", "cash"),
                ("receipt", "GPO-1"),
            ],
        ),
        ("decide", vec![("version", "1"), ("decision", "approve")]),
    ] {
        let mut f = fields.clone();
        f.push(("csrf", &clerk_csrf));
        let r = app
            .post(&format!("/staff/applications/{id}/{path}"), &clerk, &f)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
    }
    let issued: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM applications WHERE state = 'issued'")
            .fetch_one(app.auth.store().pool())
            .await
            .unwrap();
    assert_eq!(issued, 1);
    // A second, open one with other data.
    let second_csr = csr_pem();
    let mut second = application(&csrf, "Y531242(4)", &second_csr);
    for (k, v) in second.iter_mut() {
        match *k {
            "surname" => *v = "Wong",
            "given_name" => *v = "Siu Ming",
            "name_zh" => *v = "黃小明",
            "email" => *v = "sm.wong@example.hk",
            "date_of_birth" => *v = "1975-12-31",
            "phone" => *v = "+852 9123 4567",
            "address" => *v = "18 Harbour Road, Wan Chai",
            _ => {}
        }
    }
    let r = app.post("/apply", &cookies, &second).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Every personal field of both, as typed and as stored forms (HKID without brackets).
    // (Names as whole words with the given name: a bare "Chan" is also in "Change".)
    let clear = [
        "CHAN Tai",
        "Chan Tai",
        "Tai Man",
        "TAI MAN",
        "陳大文",
        "tm.chan@example.hk",
        "Z683451",
        "Z6834516",
        "1980-02-29",
        "2921 2222",
        "29212222",
        "Connaught Place",
        "WONG Siu",
        "Wong Siu",
        "Siu Ming",
        "SIU MING",
        "黃小明",
        "sm.wong@example.hk",
        "Y531242",
        "Y5312424",
        "1975-12-31",
        "9123 4567",
        "Harbour Road",
    ];
    let mut needles: Vec<(String, String)> = Vec::new();
    for c in clear {
        needles.push((c.into(), c.into()));
        needles.push((format!("hex of {c}"), hex::encode(c)));
        needles.push((format!("HEX of {c}"), hex::encode_upper(c)));
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            // Each of the three alignments of the value inside a longer base64 text.
            for pad in ["", "x", "xx"] {
                let b = engine.encode(format!("{pad}{c}"));
                let skip = if pad.is_empty() {
                    0
                } else {
                    (pad.len() * 4).div_ceil(3) + 1
                };
                let end = b.len().saturating_sub(3);
                if end > skip + 4 {
                    needles.push((format!("base64 of {c}"), b[skip..end].to_string()));
                }
            }
        }
    }
    let check = |what: &str, body: &str| {
        for (name, n) in &needles {
            assert!(
                !body.contains(n.as_str()),
                "{what} shows {name} to the operator:\n{}",
                &body[..body.len().min(2000)]
            );
        }
    };

    let (operator, op_csrf) = staff_cookie(&app, "operator1", "gpo", ra::Role::Operator).await;
    let token = ra::create_api_token(
        app.auth.store(),
        "operator1",
        "crawl",
        1,
        ra::Scopes::parse("read,enter,decide").unwrap(),
        "test",
    )
    .await
    .unwrap();
    // The triggers work (and their answers are crawled too).
    let r = app
        .post("/staff/ops/publish-crls", &operator, &[("csrf", &op_csrf)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.text_of("message").contains("CRLs published"),
        "{}",
        r.body
    );
    check("POST /staff/ops/publish-crls", &r.body);
    let r = app
        .post("/staff/ops/sign-ocsp", &operator, &[("csrf", &op_csrf)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    check("POST /staff/ops/sign-ocsp", &r.body);
    // Reveal is refused.
    let r = app
        .post(
            &format!("/staff/applications/{id}/reveal"),
            &operator,
            &[("csrf", &op_csrf), ("field", "hkid")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    check("reveal", &r.body);

    // Crawl: links from the staff home, then every staff route and API endpoint by name.
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec!["/staff".to_string(), "/staff/ops".to_string()];
    for p in [
        format!("/staff/applications/{id}"),
        "/staff/walk-in".into(),
        "/staff/problems".into(),
        "/staff/audit".into(),
        "/staff/audit/export".into(),
        format!("/staff/applications/{id}/certificate"),
    ] {
        todo.push(p);
    }
    while let Some(path) = todo.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let r = app.get(&path, &operator).await;
        check(&format!("GET {path} ({})", r.status), &r.body);
        for part in r.body.split("href=\"").skip(1) {
            let link = part
                .split('"')
                .next()
                .unwrap_or_default()
                .replace("&amp;", "&");
            if link.starts_with("/staff") && !seen.contains(&link) {
                todo.push(link);
            }
        }
    }
    assert!(seen.len() >= 7, "{seen:?}");
    for path in [
        "/api/v1/applications".to_string(),
        format!("/api/v1/applications?reference={reference}"),
        format!("/api/v1/applications/{id}"),
        format!("/api/v1/applications/{id}/certificate"),
        "/api/v1/problem-reports".into(),
        "/api/v1/audit/export".into(),
        "/api/v1/openapi.json".into(),
    ] {
        let r = app
            .send(
                Request::get(&path)
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        check(&format!("API GET {path} ({})", r.status), &r.body);
    }
    // And the health of it: the ops page shows the issued certificate's count.
    let r = app.get("/staff/ops", &operator).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.text_of("hsm"), "ok", "{}", r.body);
    assert!(
        r.body
            .contains("<td>issued</td><td>personal</td><td>1</td>"),
        "{}",
        r.body
    );
}

/// Issue 14 (audit): signing out and adding an outlet are audit events (the outlet once: adding
/// it again changes nothing and records nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_and_outlets_are_audited() {
    let app = app(|_| {}).await;
    let store = app.auth.store().clone();
    let count = |kind: &'static str| {
        let store = store.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_log WHERE kind = $1")
                .bind(kind)
                .fetch_one(store.pool())
                .await
                .unwrap()
        }
    };
    assert_eq!(count("ra.outlet.added").await, 2);
    ra::ensure_outlet(
        app.auth.store(),
        "gpo",
        "General Post Office",
        "郵政總局",
        "test",
    )
    .await
    .unwrap();
    assert_eq!(count("ra.outlet.added").await, 2);
    let (cookie, csrf) = staff_cookie(&app, "clerk1", "gpo", ra::Role::Clerk).await;
    let r = app.post("/staff/logout", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(count("ra.staff.signout").await, 1);
    assert_eq!(
        app.get("/staff", &cookie).await.status,
        StatusCode::SEE_OTHER,
        "the session still works after sign-out"
    );
}

/// RFC 4648 base32 (no padding), for reading a secret off the enrolment page.
fn base32_decode(s: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {s}"),
        };
        bits = (bits << 5) | u32::from(v);
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// Signs `username` in with the password and a code from `secret`, from address 10.2.0.`n`.
async fn sign_in_as(app: &App, username: &str, password: &str, secret: &[u8], n: u8) -> Reply {
    sign_in_later(app, username, password, secret, n, 0).await
}

/// [`sign_in_as`] with the code of `later` seconds from now (a second sign-in within one TOTP
/// step would replay the first's code, which is refused).
async fn sign_in_later(
    app: &App,
    username: &str,
    password: &str,
    secret: &[u8],
    n: u8,
    later: i64,
) -> Reply {
    use axum::extract::ConnectInfo;
    let peer = std::net::SocketAddr::from(([10, 2, 0, n], 40000));
    let r = app
        .send(
            Request::get("/staff/login")
                .extension(ConnectInfo(peer))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let token = r.cookie(CSRF_COOKIE).unwrap();
    let code = ca_core::totp::code_at(
        secret,
        time::OffsetDateTime::now_utc().unix_timestamp() + later,
    );
    let form = [
        ("csrf", token.as_str()),
        ("username", username),
        ("password", password),
        ("code", code.as_str()),
    ]
    .iter()
    .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
    .collect::<Vec<_>>()
    .join("&");
    app.send(
        Request::post("/staff/login")
            .extension(ConnectInfo(peer))
            .header(header::COOKIE, format!("{CSRF_COOKIE}={token}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap(),
    )
    .await
}

/// Issue 14: an admin adds staff on the web — the TOTP enrolment shown once as text, URI and
/// QR code, and the new member signs in with it — disables and enables them; an officer's
/// account (a privileged role) stays disabled until a second admin approves the grant: not
/// the admin who asked, who is refused; the approval is audited with both. A clerk has no
/// admin page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_staff_and_privileged_grants_need_a_second_admin() {
    let app = app(|_| {}).await;
    let (admin1, csrf1) = staff_cookie(&app, "admin1", "gpo", ra::Role::Admin).await;
    let (admin2, csrf2) = staff_cookie(&app, "admin2", "gpo", ra::Role::Admin).await;
    let home = app.get("/staff", &admin1).await;
    assert!(home.body.contains("id=\"admin-link\""), "{}", home.body);
    let page = app.get("/staff/admin", &admin1).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    let add = |cookie: String, csrf: String, username: &'static str, role: &'static str| {
        let app = &app;
        async move {
            app.post(
                "/staff/admin/add",
                &cookie,
                &[
                    ("csrf", &csrf),
                    ("username", username),
                    ("display_name", username),
                    ("outlet", "gpo"),
                    ("role", role),
                    ("password", "a long initial password"),
                ],
            )
            .await
        }
    };
    let r = add(admin1.clone(), csrf1.clone(), "clerk9", "clerk").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("<svg"), "no QR code: {}", r.body);
    assert!(
        r.text_of("otpauth").starts_with("otpauth://totp/"),
        "{}",
        r.body
    );
    let secret = base32_decode(&r.text_of("totp-secret"));
    let r = sign_in_as(&app, "clerk9", "a long initial password", &secret, 1).await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "the new clerk cannot sign in: {}",
        r.body
    );

    // Disable, enable.
    let r = app
        .post("/staff/admin/clerk9/disable", &admin1, &[("csrf", &csrf1)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = sign_in_as(&app, "clerk9", "a long initial password", &secret, 2).await;
    assert_ne!(
        r.status,
        StatusCode::SEE_OTHER,
        "a disabled member signed in"
    );
    let r = app
        .post("/staff/admin/clerk9/enable", &admin1, &[("csrf", &csrf1)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // A privileged role waits for a second admin.
    let r = add(admin1.clone(), csrf1.clone(), "officer9", "officer").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("id=\"pending\""), "{}", r.body);
    let officer_secret = base32_decode(&r.text_of("totp-secret"));
    let r = sign_in_as(
        &app,
        "officer9",
        "a long initial password",
        &officer_secret,
        3,
    )
    .await;
    assert_ne!(
        r.status,
        StatusCode::SEE_OTHER,
        "an ungranted officer signed in"
    );
    let r = app
        .post("/staff/admin/officer9/enable", &admin1, &[("csrf", &csrf1)])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = app
        .post(
            "/staff/admin/officer9/approve",
            &admin1,
            &[("csrf", &csrf1)],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let page = app.get("/staff/admin", &admin1).await;
    assert!(
        !page.body.contains("/staff/admin/officer9/approve"),
        "the asking admin is offered the approval: {}",
        page.body
    );
    let r = app
        .post(
            "/staff/admin/officer9/approve",
            &admin2,
            &[("csrf", &csrf2)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = sign_in_as(
        &app,
        "officer9",
        "a long initial password",
        &officer_secret,
        4,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let granted: String =
        sqlx::query_scalar("SELECT detail FROM audit_log WHERE kind = 'ra.staff.role_granted'")
            .fetch_one(app.auth.store().pool())
            .await
            .unwrap();
    assert!(granted.contains("\"role\":\"officer\""), "{granted}");

    // Not an admin: no admin page, no adding.
    let (clerk, clerk_csrf) = staff_cookie(&app, "clerk1", "gpo", ra::Role::Clerk).await;
    assert_eq!(
        app.get("/staff/admin", &clerk).await.status,
        StatusCode::FORBIDDEN
    );
    let r = add(clerk.clone(), clerk_csrf.clone(), "sneaky", "admin").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
}

/// Issue 14: an admin changes a member's role on the web. To a counter role it takes effect at
/// once and ends the member's sessions; to a privileged role (officer) it waits for a second
/// admin, the member keeping the old role meanwhile; nobody changes their own role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_to_privileged_roles_need_a_second_admin() {
    let app = app(|_| {}).await;
    let (admin1, csrf1) = staff_cookie(&app, "admin1", "gpo", ra::Role::Admin).await;
    let (admin2, csrf2) = staff_cookie(&app, "admin2", "gpo", ra::Role::Admin).await;
    let (clerk, _) = staff_cookie(&app, "clerk1", "gpo", ra::Role::Clerk).await;
    let role_of = |name: &'static str| {
        let store = app.auth.store().clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT role FROM staff WHERE username = $1")
                .bind(name)
                .fetch_one(store.pool())
                .await
                .unwrap()
        }
    };
    let change = |cookie: &str, csrf: &str, user: &str, role: &str| {
        let (cookie, csrf, path, role) = (
            cookie.to_string(),
            csrf.to_string(),
            format!("/staff/admin/{user}/role"),
            role.to_string(),
        );
        let app = &app;
        async move {
            app.post(&path, &cookie, &[("csrf", &csrf), ("role", &role)])
                .await
        }
    };
    let r = change(&admin1, &csrf1, "clerk1", "supervisor").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(role_of("clerk1").await, "supervisor");
    assert_eq!(
        app.get("/staff", &clerk).await.status,
        StatusCode::SEE_OTHER,
        "the member's session outlived the role change"
    );
    let r = change(&admin1, &csrf1, "clerk1", "officer").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        role_of("clerk1").await,
        "supervisor",
        "granted without a second admin"
    );
    let r = app
        .post("/staff/admin/clerk1/approve", &admin1, &[("csrf", &csrf1)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = app
        .post("/staff/admin/clerk1/approve", &admin2, &[("csrf", &csrf2)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(role_of("clerk1").await, "officer");
    let r = change(&admin1, &csrf1, "admin1", "clerk").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = change(&admin1, &csrf1, "clerk1", "emperor").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM audit_log WHERE kind LIKE 'ra.staff.role%' ORDER BY seq",
    )
    .fetch_all(app.auth.store().pool())
    .await
    .unwrap();
    assert_eq!(
        kinds,
        [
            "ra.staff.role_changed",
            "ra.staff.role_change_requested",
            "ra.staff.role_granted"
        ]
    );
}

/// Issue 14: an admin resets a member's password to a temporary one; the member's sessions
/// end, and at the next sign-in nothing but choosing a new password is allowed; members change
/// their own password (the current one first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_password_is_changed_before_anything_else() {
    let app = app(|_| {}).await;
    let (admin, admin_csrf) = staff_cookie(&app, "admin1", "gpo", ra::Role::Admin).await;
    let (_, secret) = ra::create_staff(
        app.auth.store(),
        &app.auth.staff_keys(),
        &ra::NewStaff {
            username: "clerk7",
            display_name: "clerk7",
            outlet: "gpo",
            role: ra::Role::Clerk,
            password: "the clerk's first password",
        },
        "test",
    )
    .await
    .unwrap();
    let r = sign_in_as(&app, "clerk7", "the clerk's first password", &secret, 10).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let old = format!("{STAFF_COOKIE}={}", r.cookie(STAFF_COOKIE).unwrap());
    let r = app
        .post(
            "/staff/admin/clerk7/password",
            &admin,
            &[("csrf", &admin_csrf), ("password", "a temporary password")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(app.get("/staff", &old).await.status, StatusCode::SEE_OTHER);
    let r = app
        .post(
            "/staff/admin/admin1/password",
            &admin,
            &[("csrf", &admin_csrf), ("password", "my own new password")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    let r = sign_in_later(&app, "clerk7", "a temporary password", &secret, 11, 30).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let cookie = format!("{STAFF_COOKIE}={}", r.cookie(STAFF_COOKIE).unwrap());
    let home = app.get("/staff", &cookie).await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    assert_eq!(home.headers[header::LOCATION], "/staff/password");
    let r = app.get("/staff/walk-in", &cookie).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let page = app.get("/staff/password", &cookie).await;
    assert!(page.body.contains("id=\"must-change\""), "{}", page.body);
    let csrf = page.hidden("csrf");
    let r = app
        .post(
            "/staff/password",
            &cookie,
            &[
                ("csrf", &csrf),
                ("current_password", "not the password"),
                ("new_password", "the clerk's next password"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = app
        .post(
            "/staff/password",
            &cookie,
            &[
                ("csrf", &csrf),
                ("current_password", "a temporary password"),
                ("new_password", "the clerk's next password"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(app.get("/staff", &cookie).await.status, StatusCode::OK);
    assert_eq!(
        app.get("/staff/walk-in", &cookie).await.status,
        StatusCode::OK
    );
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM audit_log WHERE kind LIKE 'ra.staff.password%' ORDER BY seq",
    )
    .fetch_all(app.auth.store().pool())
    .await
    .unwrap();
    assert_eq!(
        kinds,
        ["ra.staff.password_reset", "ra.staff.password_changed"]
    );
}

/// Issue 14: admins add, rename and close outlets on the web. A closed outlet is not offered to
/// applicants and takes no new application; its applications stay readable to its staff. An
/// outlet id is lowercase letters, digits and dashes (it lands in paths and audit exports).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_add_rename_and_close_outlets() {
    let app = app(|_| {}).await;
    let (admin, csrf) = staff_cookie(&app, "admin1", "gpo", ra::Role::Admin).await;
    let post = |path: &str, fields: &[(&str, &str)]| {
        let mut f: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        f.push(("csrf".into(), csrf.clone()));
        let (path, admin) = (path.to_string(), admin.clone());
        let app = &app;
        async move {
            let pairs: Vec<(&str, &str)> =
                f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            app.post(&path, &admin, &pairs).await
        }
    };
    let r = post(
        "/staff/admin/outlets",
        &[("id", "=HYPERLINK(1)"), ("name_en", "x"), ("name_zh", "x")],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = post(
        "/staff/admin/outlets",
        &[("id", "kt"), ("name_en", "Kwun Tong"), ("name_zh", "觀塘")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = post(
        "/staff/admin/outlet/kt/rename",
        &[
            ("name_en", "Kwun Tong Post Office"),
            ("name_zh", "觀塘郵政局"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let form = app.get("/apply", "").await;
    assert!(form.body.contains("Kwun Tong Post Office"), "{}", form.body);

    // An application at kt, then kt closes.
    let (cookies, ccsrf) = citizen(&app).await;
    let csr = csr_pem();
    let mut fields = application(&ccsrf, "Z683451(6)", &csr);
    for (k, v) in fields.iter_mut() {
        if *k == "outlet" {
            *v = "kt";
        }
    }
    let r = app.post("/apply", &cookies, &fields).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let reference = r.text_of("reference");
    let r = post("/staff/admin/outlet/kt/close", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let form = app.get("/apply", "").await;
    assert!(
        !form.body.contains("Kwun Tong"),
        "a closed outlet offered: {}",
        form.body
    );
    let second = csr_pem();
    let mut again = application(&ccsrf, "Y531242(4)", &second);
    for (k, v) in again.iter_mut() {
        if *k == "outlet" {
            *v = "kt";
        }
    }
    let r = app.post("/apply", &cookies, &again).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    // Its staff still see its applications.
    let (clerk, _) = staff_cookie(&app, "clerk-kt", "gpo", ra::Role::Clerk).await;
    sqlx::query("UPDATE staff SET outlet = 'kt' WHERE username = 'clerk-kt'")
        .execute(app.auth.store().pool())
        .await
        .unwrap();
    let queue = app.get("/staff", &clerk).await;
    assert!(queue.body.contains(&reference), "{}", queue.body);
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM audit_log WHERE subject = 'kt' ORDER BY seq")
            .fetch_all(app.auth.store().pool())
            .await
            .unwrap();
    assert_eq!(
        kinds,
        ["ra.outlet.added", "ra.outlet.renamed", "ra.outlet.closed"]
    );
}

/// Issue 18: the applicant sees what is held about them — masked as on staff screens, why,
/// and until when — as a page and as a copy to keep, only with the tracking secret, audited
/// without personal data; and changes the consent to value-added notices on the tracking page,
/// recorded with its time and wording version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_sees_what_is_held_and_changes_consent() {
    let app = app(|_| {}).await;
    let (cookies, csrf) = citizen(&app).await;
    let hkid = ca_core::hkid::synthetic("Z", 683_452);
    let hkid_typed = hkid.expose().to_string();
    let csr = csr_pem();
    let r = app
        .post("/apply", &cookies, &application(&csrf, &hkid_typed, &csr))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let reference = r.text_of("reference");
    let secret = r.text_of("tracking-secret");
    let form = |secret: &str, extra: &[(&'static str, &'static str)]| {
        let mut f = vec![
            ("csrf", csrf.clone()),
            ("reference", reference.clone()),
            ("secret", secret.to_string()),
        ];
        f.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        f
    };
    let post = |path: &'static str, f: Vec<(&'static str, String)>| {
        let app = &app;
        let cookies = cookies.clone();
        async move {
            let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.post(path, &cookies, &pairs).await
        }
    };
    // The wrong secret sees nothing.
    let r = post("/track/data", form("not the secret", &[])).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.body.contains("CHAN"));

    let r = post("/track/data", form(&secret, &[])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.text_of("data-reference"), reference);
    let masked = ca_core::hkid::Hkid::parse(&hkid_typed).unwrap().masked();
    assert!(r.body.contains(&masked), "no masked HKID: {}", r.body);
    let digits: String = hkid_typed.chars().filter(char::is_ascii_digit).collect();
    assert!(!r.body.contains(&digits[..6]), "the HKID number is shown");
    assert!(
        r.body.contains("************22"),
        "the phone is not masked as on staff screens"
    );
    assert!(!r.body.contains("2921"), "the phone is shown");
    assert!(
        r.body.contains("1 Co…") && !r.body.contains("Connaught"),
        "the address is not masked"
    );
    assert!(!r.body.contains("1980"), "the date of birth is shown");
    // Why each item is held, and until when: no certificate yet, so 90 days after its last change.
    let t = Lang::En.texts();
    for why in [t.purpose_certificate, t.purpose_identity, t.purpose_contact] {
        assert!(r.body.contains(&*html_escape(why)), "no purpose {why:?}");
    }
    let updated: i64 =
        sqlx::query_scalar("SELECT updated_at FROM applications WHERE reference = $1")
            .bind(&reference)
            .fetch_one(app.auth.store().pool())
            .await
            .unwrap();
    assert_eq!(
        r.text_of("data-kept-until"),
        utc_minute(updated + 90 * 86_400)
    );
    assert!(r.headers.get(header::CONTENT_DISPOSITION).is_none());
    // A copy to keep: the same page, as a file.
    let r = post("/track/data", form(&secret, &[("copy", "yes")])).await;
    assert_eq!(r.status, StatusCode::OK);
    let disposition = r
        .headers
        .get(header::CONTENT_DISPOSITION)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(disposition.starts_with("attachment") && disposition.contains(&reference));
    assert!(r.body.contains(&masked));
    // The copy may be passed on: it holds no form and never the tracking secret.
    assert!(
        !r.body.contains(&secret),
        "the copy holds the tracking secret"
    );
    assert!(!r.body.contains("data-copy-form"));

    // Consent to value-added notices: not given at application, given, then withdrawn.
    let consent = || async {
        sqlx::query_as::<_, (i64, String, i64)>(
            "SELECT consent_notices, consent_wording, consent_at FROM applications WHERE reference = $1",
        )
        .bind(&reference)
        .fetch_one(app.auth.store().pool())
        .await
        .unwrap()
    };
    let (given, _, at0) = consent().await;
    assert_eq!(given, 0);
    let r = post("/track", form(&secret, &[])).await;
    assert_eq!(r.text_of("notices-state"), t.notices_off);
    let r = post("/track/notices", form(&secret, &[("notices", "maybe")])).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = post(
        "/track/notices",
        form("not the secret", &[("notices", "on")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        consent().await.0,
        0,
        "a refused request changed the consent"
    );
    let r = post("/track/notices", form(&secret, &[("notices", "on")])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.text_of("notices-state"), t.notices_on);
    let (given, wording, at1) = consent().await;
    assert_eq!((given, wording.as_str()), (1, ca_core::ra::CONSENT_WORDING));
    assert!(at1 >= at0);
    let r = post("/track/notices", form(&secret, &[("notices", "off")])).await;
    assert_eq!(r.text_of("notices-state"), t.notices_off);
    assert_eq!(consent().await.0, 0);
    // Audited, naming no one: the changes and each look at the data.
    let (records, _, _) = app.auth.store().audit_records().await.unwrap();
    let kinds = |k: &str| records.iter().filter(|r| r.kind == k).count();
    assert_eq!(kinds("ra.notices.changed"), 2);
    assert_eq!(kinds("ra.data_viewed"), 2);
    for r in &records {
        assert!(
            !r.detail.contains(&digits[..6]) && !r.detail.contains("Connaught"),
            "{}",
            r.detail
        );
    }
}

/// Text as askama escapes it in a page.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// Issue 18: the supervisors' reports — applications by status, fees per outlet and Hong
/// Kong day, issuances and revocations per profile, as a page and as CSV — are scoped by the
/// matrix (a supervisor sees their outlet, officers and admins every outlet, a clerk
/// nothing), count only what falls in the period, and carry no personal data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_scoped_and_hold_no_personal_data() {
    let app = app(|_| {}).await;
    let pool = app.auth.store().pool().clone();
    // 2026-03-01 00:30 in Hong Kong is 2026-02-28 16:30 UTC: the day is the 1st.
    let day1 = 1_772_296_200; // 2026-02-28T16:30:00Z
    let day2 = day1 + 86_400;
    let before = day1 - 2 * 86_400;
    // (id, outlet, state, created, fee cents, fee at, certificate: (serial, profile, notBefore, revocation))
    type Cert = Option<(&'static str, &'static str, i64, Option<(i64, i64)>)>;
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        i64,
        Option<i64>,
        i64,
        Cert,
    );
    let rows: [Row; 6] = [
        (
            "a1",
            "gpo",
            "issued",
            day1,
            Some(5_000),
            day1 + 60,
            Some(("0a01", "personal", day1 + 120, None)),
        ),
        (
            "a2",
            "gpo",
            "issued",
            day1,
            Some(5_000),
            day2,
            Some(("0a02", "personal", day2, Some((1, day2 + 10)))),
        ),
        ("a3", "gpo", "submitted", day2, None, 0, None),
        (
            "a4",
            "tst",
            "rejected",
            day1,
            Some(12_500),
            day1 + 3600,
            None,
        ),
        // An attempt abandoned after a crash in the period: not an issuance.
        (
            "a6",
            "gpo",
            "approved",
            before,
            None,
            0,
            Some(("0a06", "personal", day1 + 300, None)),
        ),
        // Outside the period: counted nowhere.
        (
            "a5",
            "gpo",
            "issued",
            before,
            Some(5_000),
            before,
            Some(("0a05", "personal", before, Some((6, before + 10)))),
        ),
    ];
    for (i, (id, outlet, state, created, fee, fee_at, cert)) in rows.iter().enumerate() {
        if let Some((serial, profile, not_before, revocation)) = cert {
            sqlx::query(
                "INSERT INTO certificates (serial, issuer, state, profile, profile_version, key_fp, request, reserved_at, \
                 updated_at, not_before, not_after, revocation_reason, revoked_at) \
                 VALUES ($1, 'individual', $8, $2, 2, $3, '{}', $4, $4, $4, $5, $6, $7)",
            )
            .bind(serial)
            .bind(profile)
            .bind(serial.as_bytes().to_vec())
            .bind(not_before)
            .bind(not_before + 365 * 86_400)
            .bind(revocation.map(|r| r.0))
            .bind(revocation.map(|r| r.1))
            .bind(if *id == "a6" { "abandoned" } else { "issued" })
            .execute(&pool)
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO applications (id, reference, secret_hash, revocation_hash, profile, state, version, outlet, language, \
             surname, given_name, name_zh, email, hkid_sealed, hkid_index, dob_sealed, phone_sealed, address_sealed, \
             consent_notices, consent_wording, consent_at, csr, created_at, updated_at, certificate, fee_amount, fee_at, fee_method, fee_receipt) \
             VALUES ($1, $2, $3, 'x', 'personal', $4, 1, $5, 'en', 'CHAN', 'Tai Man', '陳大文', $6, $3, $3, $3, $3, $3, 0, '', $7, $3, $7, $7, $8, $9, $10, 'cash', 'R-1')",
        )
        .bind(id)
        .bind(format!("EC-0000000{i}"))
        .bind(vec![1u8])
        .bind(state)
        .bind(outlet)
        .bind(format!("tm.chan{i}@example.hk"))
        .bind(created)
        .bind(cert.map(|c| c.0))
        .bind(fee)
        .bind(fee.map(|_| *fee_at))
        .execute(&pool)
        .await
        .unwrap();
    }
    let period = "?from=2026-03-01&to=2026-03-02";
    let (supervisor, _) = staff_cookie(&app, "sup1", "gpo", ra::Role::Supervisor).await;
    let (officer, _) = staff_cookie(&app, "off1", "gpo", ra::Role::Officer).await;
    let (admin, _) = staff_cookie(&app, "adm1", "gpo", ra::Role::Admin).await;
    let (clerk, _) = staff_cookie(&app, "clk1", "gpo", ra::Role::Clerk).await;
    let csv = |cookie: String, report: &'static str| {
        let app = &app;
        async move {
            let r = app
                .get(&format!("/staff/reports/{report}.csv{period}"), &cookie)
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            assert!(r.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/csv"));
            assert!(r.headers[header::CONTENT_DISPOSITION]
                .to_str()
                .unwrap()
                .starts_with("attachment"));
            r.body
        }
    };
    // The supervisor: their outlet only.
    assert_eq!(
        csv(supervisor.clone(), "applications").await,
        "outlet,state,count\r\ngpo,issued,2\r\ngpo,submitted,1\r\n"
    );
    assert_eq!(
        csv(supervisor.clone(), "fees").await,
        "outlet,day,count,total_hkd\r\ngpo,2026-03-01,1,50.00\r\ngpo,2026-03-02,1,50.00\r\n"
    );
    assert_eq!(
        csv(supervisor.clone(), "certificates").await,
        "profile,issued,revoked,held\r\npersonal,2,1,0\r\n"
    );
    // Officers and admins: every outlet.
    for who in [officer.clone(), admin.clone()] {
        assert_eq!(
            csv(who.clone(), "applications").await,
            "outlet,state,count\r\ngpo,issued,2\r\ngpo,submitted,1\r\ntst,rejected,1\r\n"
        );
        assert_eq!(
            csv(who.clone(), "fees").await,
            "outlet,day,count,total_hkd\r\ngpo,2026-03-01,1,50.00\r\ngpo,2026-03-02,1,50.00\r\ntst,2026-03-01,1,125.00\r\n"
        );
    }
    // The page, and no personal data anywhere.
    let page = app
        .get(&format!("/staff/reports{period}"), &supervisor)
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("id=\"fees\""));
    for body in [
        page.body.clone(),
        app.get(&format!("/staff/reports{period}"), &officer)
            .await
            .body,
        csv(officer.clone(), "applications").await,
        csv(officer.clone(), "fees").await,
        csv(officer.clone(), "certificates").await,
    ] {
        for personal in [
            "CHAN",
            "Tai Man",
            "陳大文",
            "example.hk",
            "EC-0000000",
            "R-1",
        ] {
            assert!(!body.contains(personal), "{personal} in {body}");
        }
    }
    // A clerk is refused; a bad period is a named error.
    let r = app.get(&format!("/staff/reports{period}"), &clerk).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .get(&format!("/staff/reports/fees.csv{period}"), &clerk)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    for bad in [
        "?from=2026-03-02&to=2026-03-01",
        "?from=2026-02-30&to=2026-03-01",
        "?from=2025-01-01&to=2026-03-01",
    ] {
        let r = app.get(&format!("/staff/reports{bad}"), &officer).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.body
        );
    }
    let r = app
        .get(&format!("/staff/reports/people.csv{period}"), &officer)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // A problem report's old address leads to its new one.
    let r = app
        .get(
            "/staff/reports/0b6f6c2e-1111-4222-8333-444455556666",
            &officer,
        )
        .await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.headers[header::LOCATION],
        "/staff/problems/0b6f6c2e-1111-4222-8333-444455556666"
    );
    // Without a period: the last 30 days, shown in the form.
    let r = app.get("/staff/reports", &officer).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.hidden("to").len(),
        10,
        "the last day of the default period"
    );
}

/// Issue 18: the language switch keeps the page — the same path and query for a page read
/// with GET, the form's own page for the answer to a POST — and never points off the site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_language_switch_keeps_the_page() {
    let app = app(|_| {}).await;
    let switch = |r: &Reply| {
        let key = "id=\"lang-switch\" href=\"";
        let start = r
            .body
            .find(key)
            .unwrap_or_else(|| panic!("no switch: {}", r.body))
            + key.len();
        r.body[start..].split('"').next().unwrap().to_string()
    };
    let r = app.get("/apply?profile=personal&lang=en", "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(switch(&r), "/apply?profile=personal&amp;lang=zh-HK");
    assert!(
        r.body.contains("lang=\"zh-HK\" hreflang=\"zh-HK\""),
        "the switch does not say its language"
    );
    let r = app.get("/track?lang=zh-HK", "").await;
    assert_eq!(switch(&r), "/track?lang=en");
    assert!(r.body.starts_with("<!doctype html>\n<html lang=\"zh-HK\">"));
    // The answer to a form: its page.
    let (cookies, csrf) = citizen(&app).await;
    let r = app
        .post(
            "/track/notices",
            &cookies,
            &[
                ("csrf", &csrf),
                ("reference", "EC-NOPE"),
                ("secret", "x"),
                ("notices", "on"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(switch(&r), "/track?lang=zh-HK");
    // Never another host, and nothing a query can inject.
    let r = app.get("//evil.example/x", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.body.contains("evil.example"), "{}", r.body);
    let r = app.get("/apply?profile=%22%3E%3Cscript%3E", "").await;
    assert!(!r.body.contains("<script>"));
    assert!(!switch(&r).contains('"') && !switch(&r).contains('<'));
    // The page's length is the rewritten one.
    assert!(r
        .headers
        .get(header::CONTENT_LENGTH)
        .is_none_or(|l| l.to_str().unwrap() == r.body.len().to_string()));
}
