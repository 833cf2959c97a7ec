//! A real OpenLDAP `slapd` (Debian's package) for the directory tests, configured from the
//! files ecert ships (`ops/slapd/config.ldif`, `ops/slapd/base.ldif`), on a private port and
//! directory; and `ldapsearch` (ldap-utils) as the mail client's side.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The suffix the tests' directory holds.
pub const SUFFIX: &str = "dc=ecert,dc=test";

/// A running (or stopped) slapd.
#[derive(Debug)]
pub struct LdapServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

/// What one `ldapsearch` returned.
#[derive(Debug)]
pub struct Search {
    /// ldapsearch's exit status: the LDAP result code (0 success, 11 adminLimitExceeded, 32
    /// noSuchObject), or 255 when the server could not be reached.
    pub code: i32,
    /// Its LDIF output (`-LLL`), with binary values in base64.
    pub ldif: String,
}

impl Search {
    /// The DNs of the entries returned.
    pub fn dns(&self) -> Vec<String> {
        self.ldif
            .lines()
            .filter_map(|l| l.strip_prefix("dn: "))
            .map(str::to_string)
            .collect()
    }

    /// Every value of `attr` (`name:: base64` decoded, or `name: text`) in the answer.
    pub fn values(&self, attr: &str) -> Vec<Vec<u8>> {
        use base64::Engine;
        // Unfold continuation lines (RFC 2849: a line starting with one space continues).
        let mut lines: Vec<String> = Vec::new();
        for l in self.ldif.lines() {
            match l.strip_prefix(' ') {
                Some(rest) if !lines.is_empty() => lines.last_mut().unwrap().push_str(rest),
                _ => lines.push(l.to_string()),
            }
        }
        lines
            .iter()
            .filter_map(|l| {
                if let Some(b64) = l.strip_prefix(&format!("{attr}:: ")) {
                    base64::engine::general_purpose::STANDARD.decode(b64).ok()
                } else {
                    l.strip_prefix(&format!("{attr}: "))
                        .map(|t| t.as_bytes().to_vec())
                }
            })
            .collect()
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

impl LdapServer {
    /// Loads the shipped configuration into a fresh directory and starts slapd on a free port.
    pub fn start() -> LdapServer {
        let dir = tempfile::Builder::new()
            .prefix("ecert-e2e-ldap.")
            .tempdir()
            .unwrap();
        for d in ["conf", "db", "run"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let password = "publisher-password-for-the-tests";
        std::fs::write(dir.path().join("publisher.pw"), format!("{password}\n")).unwrap();
        let hash = Command::new("slappasswd")
            .args(["-s", password])
            .output()
            .expect("running slappasswd (apt-get install slapd; ops/test does)");
        assert!(hash.status.success(), "slappasswd failed");
        let hash = String::from_utf8(hash.stdout).unwrap().trim().to_string();
        let fill = |name: &str| {
            let text = std::fs::read_to_string(workspace().join("ops/slapd").join(name))
                .unwrap_or_else(|e| panic!("reading ops/slapd/{name}: {e}"));
            let out = dir.path().join(name);
            std::fs::write(
                &out,
                text.replace("@SUFFIX@", SUFFIX)
                    .replace("@DC@", "ecert")
                    .replace("@PUBLISHER_PASSWORD@", &hash)
                    .replace("@DB_DIR@", &dir.path().join("db").to_string_lossy())
                    .replace("@RUN_DIR@", &dir.path().join("run").to_string_lossy())
                    .replace("@MODULE_DIR@", "/usr/lib/ldap")
                    .replace("@SCHEMA_DIR@", "/etc/ldap/schema"),
            )
            .unwrap();
            out
        };
        let config = fill("config.ldif");
        let base = fill("base.ldif");
        let conf = dir.path().join("conf");
        for (db, ldif) in [("0", &config), ("1", &base)] {
            let out = Command::new("slapadd")
                .args(["-q", "-n", db, "-F"])
                .arg(&conf)
                .arg("-l")
                .arg(ldif)
                .output()
                .expect("running slapadd");
            assert!(
                out.status.success(),
                "slapadd -n {db}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = LdapServer {
            child: None,
            dir,
            port,
        };
        server.resume();
        server
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The file holding the publisher's password (for `[ldap] password_file`).
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("publisher.pw")
    }

    /// The `[ldap]` section of an `ecert.toml` that publishes here.
    pub fn config(&self) -> String {
        format!(
            "[ldap]\nurl = \"{}\"\nbind_dn = \"cn=publisher,{SUFFIX}\"\npassword_file = \"{}\"\n\
             people = \"ou=people,{SUFFIX}\"\ncas = \"ou=cas,{SUFFIX}\"\n",
            self.url(),
            self.password_file().display()
        )
    }

    /// Stops slapd (the data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts slapd again on the same port and data, and waits until it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "slapd is running");
        let child = Command::new("slapd")
            .arg("-F")
            .arg(self.dir.path().join("conf"))
            .args(["-h", &format!("{}/", self.url()), "-d", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting slapd (apt-get install slapd; ops/test does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self
            .search_anonymous("", "base", "(objectClass=*)", &["namingContexts"])
            .code
            != 0
        {
            assert!(
                Instant::now() < deadline,
                "slapd did not answer on {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An anonymous `ldapsearch` as a mail client makes it (`scope`: base, one or sub).
    pub fn search_anonymous(
        &self,
        base: &str,
        scope: &str,
        filter: &str,
        attrs: &[&str],
    ) -> Search {
        let out = Command::new("ldapsearch")
            .args([
                "-x",
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-H",
                &self.url(),
                "-b",
                base,
                "-s",
                scope,
            ])
            .arg(filter)
            .args(attrs)
            .env("LDAPTLS_REQCERT", "never")
            .stdin(Stdio::null())
            .output()
            .expect("running ldapsearch (apt-get install ldap-utils; ops/test does)");
        Search {
            code: out.status.code().unwrap_or(-1),
            ldif: String::from_utf8_lossy(&out.stdout).into_owned(),
        }
    }

    /// The subscriber entries' base.
    pub fn people(&self) -> String {
        format!("ou=people,{SUFFIX}")
    }

    /// The CA entries' base.
    pub fn cas(&self) -> String {
        format!("ou=cas,{SUFFIX}")
    }
}

impl Drop for LdapServer {
    fn drop(&mut self) {
        self.stop();
    }
}
