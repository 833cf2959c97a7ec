//! A small W3C WebDriver client (https://www.w3.org/TR/webdriver2/) for the browser tests: it
//! starts Debian's `chromedriver`, opens headless Chromium with downloads allowed into a
//! temporary directory, and speaks the JSON protocol over plain HTTP/1.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tempfile::TempDir;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The chromedriver process, killed when dropped (also when starting the session fails).
#[derive(Debug)]
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A headless Chromium driven through chromedriver.
#[derive(Debug)]
pub struct Chrome {
    _driver: Driver,
    port: u16,
    session: String,
    /// Where downloads land.
    pub downloads: TempDir,
    _profile: TempDir,
    shots: PathBuf,
    shot_no: std::cell::Cell<u32>,
    /// The pages whose accessibility was checked.
    checked: std::cell::RefCell<Vec<String>>,
}

use crate::free_port;

fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read the head, then exactly the body it announces (chromedriver may keep the
    // connection open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "WebDriver closed the connection");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let lower = head.to_ascii_lowercase();
    let mut payload = raw[split + 4..].to_vec();
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while payload.len() < len {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "WebDriver closed the connection early");
            payload.extend_from_slice(&buf[..n]);
        }
        payload.truncate(len);
    } else {
        s.read_to_end(&mut payload).unwrap();
        if lower.contains("transfer-encoding: chunked") {
            payload = dechunk(&payload);
        }
    }
    serde_json::from_slice(&payload)
        .unwrap_or_else(|e| panic!("WebDriver answer to {method} {path} is not JSON ({e}): {head}"))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
    out
}

impl Chrome {
    /// Starts chromedriver and a headless Chromium session. Screenshots go to `shots`.
    pub fn start(shots: &Path) -> Chrome {
        std::fs::create_dir_all(shots).unwrap();
        let port = free_port();
        let driver = Driver(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver (Debian chromium-driver; ops/test installs it)"),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        let downloads = tempfile::Builder::new()
            .prefix("ecert-e2e-downloads.")
            .tempdir()
            .unwrap();
        let profile = tempfile::Builder::new()
            .prefix("ecert-e2e-chrome.")
            .tempdir()
            .unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1600", format!("--user-data-dir={}", profile.path().display())],
                "prefs": {
                    "download.default_directory": downloads.path().to_str().unwrap(),
                    "download.prompt_for_download": false,
                    "safebrowsing.enabled": false
                }
            }
        }}});
        let r = http(port, "POST", "/session", Some(&caps));
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        let chrome = Chrome {
            _driver: driver,
            port,
            session,
            downloads,
            _profile: profile,
            shots: shots.to_path_buf(),
            shot_no: std::cell::Cell::new(0),
            checked: Default::default(),
        };
        // Headless Chromium saves downloads only when told where (Chrome DevTools Protocol).
        chrome.call(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": "Browser.setDownloadBehavior", "params": {
                "behavior": "allow", "downloadPath": chrome.downloads.path().to_str().unwrap()}})),
        );
        chrome
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        );
        if let Some(e) = r["value"].get("error") {
            panic!("WebDriver {method} {path}: {e} {}", r["value"]["message"]);
        }
        r["value"].clone()
    }

    /// Opens a URL.
    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The element matching a CSS selector (waits up to 10 s for it).
    pub fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = http(
                self.port,
                "POST",
                &format!("/session/{}/element", self.session),
                Some(&json!({"using": "css selector", "value": css})),
            );
            if let Some(id) = r["value"][ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no element {css}: {}",
                self.text_now("body")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Calls an element command, finding the element again if the page replaced it meanwhile
    /// (a stale reference while a page loads).
    fn on_element(&self, css: &str, command: &str, body: &Value) {
        for attempt in 0.. {
            let id = self.find(css);
            let r = http(
                self.port,
                "POST",
                &format!("/session/{}/element/{id}/{command}", self.session),
                Some(body),
            );
            match r["value"].get("error") {
                None => return,
                Some(_) if attempt < 10 => std::thread::sleep(Duration::from_millis(300)),
                Some(e) => panic!(
                    "WebDriver {command} on {css}: {e} {}",
                    r["value"]["message"]
                ),
            }
        }
    }

    /// Types into a field (after clearing it).
    pub fn fill(&self, css: &str, text: &str) {
        self.on_element(css, "clear", &json!({}));
        self.on_element(css, "value", &json!({ "text": text }));
    }

    /// Clicks.
    pub fn click(&self, css: &str) {
        self.on_element(css, "click", &json!({}));
    }

    /// Visible text of an element, waiting up to 10 s for it to appear (after a click the next
    /// page may still be loading) and finding it again if the page replaced it meanwhile.
    pub fn text(&self, css: &str) -> String {
        for attempt in 0.. {
            let id = self.find(css);
            let r = http(
                self.port,
                "GET",
                &format!("/session/{}/element/{id}/text", self.session),
                None,
            );
            match (r["value"].as_str(), r["value"].get("error")) {
                (Some(t), _) => return t.to_string(),
                (None, Some(_)) if attempt < 10 => std::thread::sleep(Duration::from_millis(300)),
                (None, e) => panic!("WebDriver text of {css}: {e:?} {}", r["value"]["message"]),
            }
        }
        unreachable!()
    }

    /// Visible text of an element now, or "" if there is none (for failure messages).
    fn text_now(&self, css: &str) -> String {
        let r = http(
            self.port,
            "POST",
            &format!("/session/{}/element", self.session),
            Some(&json!({"using": "css selector", "value": css})),
        );
        match r["value"][ELEMENT].as_str() {
            Some(id) => http(
                self.port,
                "GET",
                &format!("/session/{}/element/{id}/text", self.session),
                None,
            )["value"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        }
    }

    /// Runs a script in the page and returns its value.
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Runs an asynchronous script: it calls `arguments[0]` with its result.
    pub fn eval_async(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Waits until `script` returns true.
    pub fn wait_until(&self, script: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.eval(script) != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {}",
                self.text_now("body")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs axe-core's WCAG 2.1 A and AA rules over the page as it is now and panics, naming
    /// the page, the rule and the elements, on any serious or critical finding (issue 18).
    /// axe-core is `ECERT_AXE_JS` (ops/test installs it from tests/axe).
    pub fn check_accessibility(&self, what: &str) {
        static AXE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let axe = AXE.get_or_init(|| {
            let path = std::env::var("ECERT_AXE_JS").expect(
                "ECERT_AXE_JS: axe.min.js of axe-core (ops/test installs it: tests/axe, npm ci)",
            );
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        });
        if self.eval("return typeof axe === 'undefined';") == Value::Bool(true) {
            self.eval(&format!("{axe}\n;return true;"));
        }
        let found = self.eval_async(
            "const done = arguments[0]; \
             axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}, resultTypes: ['violations']}) \
               .then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical') \
                 .map(v => `${v.impact} ${v.id} (${v.help}): ${v.nodes.slice(0, 5).map(n => n.target.join(' ')).join(', ')}`))) \
               .catch(e => done(['axe failed: ' + e]));",
        );
        let found: Vec<String> = serde_json::from_value(found).unwrap_or_default();
        let url =
            self.eval("return location.pathname + ' [' + document.documentElement.lang + ']';");
        assert!(
            found.is_empty(),
            "accessibility (axe-core, WCAG 2.1 AA) on {what} {url}:\n{}",
            found.join("\n")
        );
        self.checked.borrow_mut().push(format!("{what} {url}"));
    }

    /// The pages [`Chrome::check_accessibility`] passed, as `what /path [lang]`.
    pub fn checked_pages(&self) -> Vec<String> {
        self.checked.borrow().clone()
    }

    /// Saves a PNG screenshot `NN-name.png`, after checking the page's accessibility
    /// ([`Chrome::check_accessibility`]): every step a test records is a page someone uses.
    pub fn screenshot(&self, name: &str) {
        self.check_accessibility(name);
        let n = self.shot_no.get() + 1;
        self.shot_no.set(n);
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .unwrap();
        std::fs::write(self.shots.join(format!("{n:02}-{name}.png")), png).unwrap();
    }

    /// The download directory.
    pub fn downloads(&self) -> &Path {
        self.downloads.path()
    }

    /// Waits for a finished download whose name ends with `suffix`.
    pub fn download(&self, suffix: &str) -> PathBuf {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = std::fs::read_dir(self.downloads.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with(suffix));
            if let Some(p) = found {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "no download *{suffix}: {}",
                self.text_now("body")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            http(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            )
        });
        // Dropping `driver` then kills chromedriver.
    }
}
