//! A front instance's forwarding of the registration pages and API.
//!
//! DESIGN.md "Storage and scale": web instances are stateless and the signing core is the only
//! process that opens the HSM. The registration authority needs the HSM (personal data is
//! sealed and indexed with HSM keys; approvals issue), so an `ecert serve --no-signer
//! --ra-upstream URL` instance serves the repository and OCSP from the database itself and
//! forwards everything else — `/`, `/apply`, `/track…`, `/staff…`, `/api/v1/…`, `/static/…` —
//! to the signing instance at URL. It appends the client's address to `X-Forwarded-For`; the
//! signing instance believes that header only from `[ra] trusted_proxies`. Hop-by-hop headers
//! (RFC 9110 §7.6.1) are not forwarded. If the signer cannot be reached the answer is 502.
//!
//! The forwarded requests carry passwords, TOTP codes and personal data: across a network the
//! upstream is `https://` (the signer runs `serve --tls-cert --tls-key`), its certificate
//! checked against `--ra-upstream-ca`; `http://` is for a loopback or an already encrypted
//! link.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, Clone)]
struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    /// `http://host:port`, no path.
    base: String,
}

/// The largest request body forwarded (the RA's own limit is 64 KiB) ...
const MAX_BODY: usize = 256 * 1024;

/// ... but for a batch of staff rows (`POST /api/v1/batches`, the RA's limit there is 32 MiB:
/// docs/BULK.md).
const MAX_BATCH_BODY: usize = 32 * 1024 * 1024;

/// An HTTP/1.1 connector for `http://` and `https://` URLs: TLS checked against the PEM file
/// `ca` (without one, no server certificate is trusted, so only `http://` works). Shared by the
/// front instance and the command line's API client.
pub(crate) fn connector(
    ca: Option<&std::path::Path>,
    connect_timeout_seconds: u64,
) -> anyhow::Result<HttpsConnector<HttpConnector>> {
    let tls = match ca {
        Some(ca) => ca_core::mpic::client_tls(ca)?,
        None => rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    };
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(std::time::Duration::from_secs(
        connect_timeout_seconds,
    )));
    http.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// A router whose fallback forwards to `upstream` (`https://host:port`, its certificate
/// checked against the PEM file `ca`; or `http://host:port`).
pub fn router(upstream: &str, ca: Option<&std::path::Path>) -> anyhow::Result<Router> {
    let uri: Uri = upstream
        .parse()
        .map_err(|e| anyhow::anyhow!("--ra-upstream {upstream:?}: {e}"))?;
    let scheme = uri.scheme_str().unwrap_or_default().to_string();
    if !matches!(scheme.as_str(), "http" | "https")
        || uri.authority().is_none()
        || uri.path_and_query().is_some_and(|p| p.as_str() != "/")
    {
        anyhow::bail!(
            "--ra-upstream must be https://HOST:PORT or http://HOST:PORT (the signing instance), got {upstream:?}"
        );
    }
    if scheme == "https" && ca.is_none() {
        anyhow::bail!("an https:// --ra-upstream needs --ra-upstream-ca");
    }
    let connector = connector(ca.filter(|_| scheme == "https"), 5)?;
    let up = Upstream {
        // Pooled connections are dropped well before the signer closes an idle keep-alive
        // connection (`[http] header_timeout_seconds`: 1 to 10 s), so a
        // request never goes out on a connection the signer is closing.
        client: Client::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(std::time::Duration::from_millis(500))
            .build(connector),
        base: format!(
            "{scheme}://{}",
            uri.authority().map(|a| a.as_str()).unwrap_or_default()
        ),
    };
    Ok(Router::new().fallback(forward).with_state(up))
}

/// RFC 9110 §7.6.1 connection-specific headers, plus the ones `Connection` names.
fn hop_by_hop(name: &HeaderName, listed: &[String]) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    ) || listed.iter().any(|l| l.eq_ignore_ascii_case(name.as_str()))
}

fn connection_listed(headers: &axum::http::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .collect()
}

async fn forward(
    State(up): State<Upstream>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let limit = if parts.uri.path() == "/api/v1/batches" {
        MAX_BATCH_BODY
    } else {
        MAX_BODY
    };
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request too large\n").into_response(),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(format!("{}{path}", up.base));
    let listed = connection_listed(&parts.headers);
    let mut forwarded_for = Vec::new();
    for (name, value) in &parts.headers {
        if hop_by_hop(name, &listed) || name == header::HOST || name == header::CONTENT_LENGTH {
            continue;
        }
        if name.as_str() == "x-forwarded-for" {
            if let Ok(v) = value.to_str() {
                forwarded_for.push(v.to_string());
            }
            continue;
        }
        out = out.header(name, value);
    }
    forwarded_for.push(peer.ip().to_string());
    let Ok(xff) = HeaderValue::from_str(&forwarded_for.join(", ")) else {
        return (StatusCode::BAD_REQUEST, "bad X-Forwarded-For\n").into_response();
    };
    out = out.header("x-forwarded-for", xff);
    if let Some(host) = parts.headers.get(header::HOST) {
        out = out.header("x-forwarded-host", host);
    }
    let Ok(request) = out.body(Body::from(body)) else {
        return (StatusCode::BAD_REQUEST, "bad request\n").into_response();
    };
    match up.client.request(request).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            let listed = connection_listed(&parts.headers);
            let drop: Vec<HeaderName> = parts
                .headers
                .keys()
                .filter(|n| hop_by_hop(n, &listed))
                .cloned()
                .collect();
            for n in drop {
                parts.headers.remove(n);
            }
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            tracing::error!(error = %e, upstream = %up.base, "the signing instance did not answer");
            (
                StatusCode::BAD_GATEWAY,
                "the registration service is not reachable; please try again later\n",
            )
                .into_response()
        }
    }
}
