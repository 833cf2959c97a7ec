//! The command line as a client of the running service's JSON API (issue 14): a member of
//! staff signs in (`ecert login`: password and TOTP code, the sign-in page's lockouts and
//! audit) and every command then acts as them, under the same permission matrix, dual control
//! and audit as the pages — and works while `ecert serve` runs, because the service does the
//! work.
//!
//! The session (server, bearer token, expiry) is kept in
//! `$XDG_CONFIG_HOME/ecert/session.json` (default `~/.config/ecert/session.json`), mode 0600;
//! `ECERT_SERVER` and `ECERT_TOKEN` override it (an integration token, `ecert token`, for
//! integrations). Passwords go only to an `https://` server whose certificate is checked
//! against `--ca-file`, or to `http://` on a loopback address.

use std::path::PathBuf;

use anyhow::{bail, Context};
use axum::body::Body;
use axum::http::{header, Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A stored command-line session.
#[derive(Serialize, Deserialize)]
pub struct Session {
    /// `https://host:port` or `http://127.0.0.1:port`.
    pub server: String,
    /// The server's CA certificate (PEM file), for `https://`.
    pub ca_file: Option<PathBuf>,
    /// The bearer token.
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Who signed in.
    pub username: String,
}

/// Where the session is kept.
pub fn session_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .context("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the session")?,
        )
        .join(".config"),
    };
    Ok(base.join("ecert").join("session.json"))
}

/// Writes the session 0600 (through a temporary file and a rename).
pub fn save(session: &Session) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = session_path()?;
    let dir = path.parent().context("session path")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(".session.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string(session)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The session in force: `ECERT_SERVER` + `ECERT_TOKEN`, else the stored one.
pub fn current() -> anyhow::Result<Session> {
    if let Some(s) = from_env() {
        return Ok(s);
    }
    stored()
}

/// `ECERT_SERVER` + `ECERT_TOKEN`, when both are set.
fn from_env() -> Option<Session> {
    if let (Ok(server), Ok(token)) = (std::env::var("ECERT_SERVER"), std::env::var("ECERT_TOKEN")) {
        if !server.is_empty() && !token.is_empty() {
            return Some(Session {
                server,
                ca_file: std::env::var_os("ECERT_SERVER_CA").map(PathBuf::from),
                token,
                expires_at: i64::MAX,
                username: "(ECERT_TOKEN)".into(),
            });
        }
    }
    None
}

/// The session `ecert login` stored.
pub fn stored() -> anyhow::Result<Session> {
    let path = session_path()?;
    let text = std::fs::read_to_string(&path)
        .map_err(|_| anyhow::anyhow!("not signed in: run `ecert login --server URL --username NAME` (or set ECERT_SERVER and ECERT_TOKEN)"))?;
    let s: Session = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a session: sign in again", path.display()))?;
    if s.expires_at <= time::OffsetDateTime::now_utc().unix_timestamp() {
        bail!(
            "the session of {} has expired: run `ecert login` again",
            s.username
        );
    }
    Ok(s)
}

/// Removes the stored session.
pub fn forget() -> anyhow::Result<()> {
    match std::fs::remove_file(session_path()?) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Refuses a server that a password must not be sent to.
pub fn check_server(server: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<Uri> {
    let uri: Uri = server
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    let host = uri.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match (uri.scheme_str(), ca_file) {
        (Some("https"), Some(_)) => {}
        (Some("https"), None) => {
            bail!("an https:// server needs --ca-file (its CA certificate, PEM)")
        }
        (Some("http"), _) if loopback => {}
        (Some("http"), _) => bail!(
            "passwords and tokens go over https:// only (plain http:// is accepted on a loopback address)"
        ),
        _ => bail!("--server must be https://HOST:PORT or http://127.0.0.1:PORT"),
    }
    if uri.authority().is_none() || uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        bail!("--server is the service's base URL, e.g. https://ra.example.hk:8443");
    }
    Ok(uri)
}

/// A JSON API client for one server.
pub struct Api {
    base: String,
    token: Option<String>,
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

impl Api {
    /// A client for `server` (checked by [`check_server`]).
    pub fn new(
        server: &str,
        ca_file: Option<&std::path::Path>,
        token: Option<String>,
    ) -> anyhow::Result<Api> {
        let uri = check_server(server, ca_file)?;
        let https = uri.scheme_str() == Some("https");
        let connector = crate::front::connector(ca_file.filter(|_| https), 10)?;
        Ok(Api {
            base: format!(
                "{}://{}",
                uri.scheme_str().unwrap_or("https"),
                uri.authority().map(|a| a.as_str()).unwrap_or_default()
            ),
            token,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The client of the session in force.
    pub fn of(session: &Session) -> anyhow::Result<Api> {
        Api::new(
            &session.server,
            session.ca_file.as_deref(),
            Some(session.token.clone()),
        )
    }

    /// Sends a request; returns the status and the JSON answer (`null` when empty).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::ACCEPT, "application/json");
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string()))?,
            None => req.body(Body::empty())?,
        };
        let resp = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            self.client.request(req),
        )
        .await
        .context("the service did not answer within 120 s")?
        .with_context(|| format!("reaching {}", self.base))?;
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 16 << 20)
            .await
            .context("reading the answer")?;
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, v))
    }

    /// Sends `body` as `content_type`; returns the status and the answer's bytes.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, axum::body::Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))?;
        let resp = tokio::time::timeout(
            std::time::Duration::from_secs(300),
            self.client.request(req),
        )
        .await
        .context("the service did not answer within 300 s")?
        .with_context(|| format!("reaching {}", self.base))?;
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 256 << 20)
            .await
            .context("reading the answer")?;
        Ok((status, bytes))
    }

    /// [`Api::send`], with an error (the service's own message) unless the status is 2xx.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, v) = self.send(method, path, body).await?;
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let message = printable(
            &v["message"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string()),
        );
        match status {
            401 => bail!("{message}: the session is not valid any more; run `ecert login` again"),
            _ => bail!("{message} (HTTP {status})"),
        }
    }
}

/// Reads one line of standard input (a password, a code), without its line end.
pub fn read_line(what: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .with_context(|| format!("reading the {what} from standard input"))?;
    let trimmed = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
    if trimmed.is_empty() {
        bail!("no {what} on standard input");
    }
    Ok(trimmed)
}

/// Reads a secret line (a password, an HKID number): from a terminal with its echo off and a
/// prompt on standard error, so that it is neither shown nor left on the screen; from a pipe
/// as [`read_line`].
pub fn read_secret(what: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return read_line(what);
    }
    let before = tcgetattr(&stdin).context("reading the terminal's settings")?;
    let mut quiet = before.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("turning the terminal's echo off")?;
    // Only now the prompt: what is typed after seeing it is never echoed.
    eprint!("{what}: ");
    let line = read_line(what);
    // Echo back on whatever was read (an interrupt leaves it off: `stty echo` restores it).
    let restored = tcsetattr(&stdin, OptionalActions::Now, &before);
    eprintln!();
    restored.context("turning the terminal's echo back on")?;
    line
}

/// Text from the service made safe for a terminal: control characters (escape sequences)
/// shown as `?`.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// An application's id, from its id or its reference (`EC-…`).
pub async fn application_id(api: &Api, id_or_reference: &str) -> anyhow::Result<String> {
    if !id_or_reference
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        bail!("{id_or_reference:?} is not an application id or reference");
    }
    if !id_or_reference.starts_with("EC-") {
        return Ok(id_or_reference.to_string());
    }
    let list = api
        .call(
            Method::GET,
            &format!("/api/v1/applications?reference={id_or_reference}"),
            None,
        )
        .await?;
    list.as_array()
        .and_then(|l| l.first())
        .and_then(|a| a["id"].as_str())
        .map(String::from)
        .with_context(|| format!("no application {id_or_reference} within your reach"))
}
