//! `ecert perspective serve`: a remote Network Perspective for Multi-Perspective Issuance
//! Corroboration (TLS BR §3.2.2.9; `ca_core::mpic`). It answers `POST /mpic/v1/check` over
//! HTTPS only (rustls, TLS 1.2 and 1.3), for callers presenting the bearer token in
//! `--token-file`, with what its own resolver (`[dcv] resolver` of its configuration) shows.
//! It keeps no state, no cache and no personal data; it needs no database and no HSM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use ca_core::config::DcvConfig;
use ca_core::mpic::{self, CheckRequest};

/// Options of `ecert perspective serve`.
#[derive(Debug, clap::Args)]
pub struct PerspectiveArgs {
    /// Address to listen on (port 0: any free port; the chosen address is printed).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// The TLS certificate chain (PEM, leaf first).
    #[arg(long)]
    pub cert: PathBuf,
    /// The TLS private key (PEM, PKCS#8).
    #[arg(long)]
    pub key: PathBuf,
    /// The file holding the bearer token callers must present.
    #[arg(long)]
    pub token_file: PathBuf,
}

/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// Time for the TLS handshake, and for the request head.
const HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);
/// Time for a whole connection (the checks themselves take at most a few DNS timeouts).
const EXCHANGE: std::time::Duration = std::time::Duration::from_secs(120);

struct PerspectiveState {
    dcv: DcvConfig,
    token: String,
}

/// Runs the perspective until interrupted.
pub async fn serve(dcv: DcvConfig, a: PerspectiveArgs) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&a.token_file)
        .with_context(|| format!("reading {}", a.token_file.display()))?
        .trim()
        .to_string();
    anyhow::ensure!(
        token.len() >= 32,
        "the token in {} must be at least 32 characters",
        a.token_file.display()
    );
    let tls = crate::tls::server_config(&a.cert, &a.key)?;
    let state = Arc::new(PerspectiveState { dcv, token });
    let app = Router::new()
        .route(mpic::PATH, post(check))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    println!("listening on https://{}", listener.local_addr()?);
    crate::tls::serve(
        listener,
        Some(tls),
        app,
        crate::tls::Limits {
            max_connections: MAX_CONNECTIONS,
            handshake: HANDSHAKE,
            request: EXCHANGE,
            connection: Some(EXCHANGE),
            drain: std::time::Duration::ZERO,
            grace: EXCHANGE,
        },
        crate::tls::Shutdown::default(),
        None,
    )
    .await
}

async fn check(
    State(s): State<Arc<PerspectiveState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .as_bytes();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(presented, s.token.as_bytes())) {
        return (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
    }
    // Parsed only once the caller is known.
    let Ok(req) = serde_json::from_slice::<CheckRequest>(&body) else {
        return (StatusCode::BAD_REQUEST, "not a check request\n").into_response();
    };
    if req.txt.len() + req.caa.len() > 100 {
        return (StatusCode::PAYLOAD_TOO_LARGE, "at most 100 checks\n").into_response();
    }
    match mpic::answer(&s.dcv, &req).await {
        Ok(a) => Json(a).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "perspective check failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "check failed\n").into_response()
        }
    }
}
