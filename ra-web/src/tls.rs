//! HTTPS serving with rustls (TLS 1.2 and 1.3, ring), for `ecert perspective serve` and for
//! `ecert serve --tls-cert --tls-key` (the signing instance behind front instances). The client
//! side is `ca_core::mpic::client_tls`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::TokioIo;

/// Bounds on what clients may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are refused.
    pub max_connections: usize,
    /// Time for the TLS handshake, and for each request head.
    pub handshake: Duration,
    /// Time for a whole connection, if bounded.
    pub connection: Option<Duration>,
}

/// A server configuration from a PEM certificate chain (leaf first) and a PEM PKCS#8 key.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let certs: Vec<_> = pem::parse_many(read(cert)?)
        .with_context(|| format!("{} is not PEM", cert.display()))?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| rustls::pki_types::CertificateDer::from(b.into_contents()))
        .collect();
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert.display());
    let key_pem = pem::parse_many(read(key)?)
        .with_context(|| format!("{} is not PEM", key.display()))?
        .into_iter()
        .find(|b| b.tag() == "PRIVATE KEY")
        .with_context(|| format!("{} holds no PKCS#8 PRIVATE KEY", key.display()))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_pem.into_contents().into());
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not go together")
}

/// Serves `app` over TLS on `listener` until Ctrl-C. Each request carries the client's
/// address as `ConnectInfo`, as with plain `axum::serve`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    limits: Limits,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => r?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections; refused");
            continue;
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let app = app.layer(axum::Extension(ConnectInfo::<SocketAddr>(peer)));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.handshake)
                .serve_connection(TokioIo::new(tls), service);
            let outcome = match limits.connection {
                Some(d) => tokio::time::timeout(d, conn).await.ok(),
                None => Some(conn.await),
            };
            match outcome {
                Some(Err(e)) => tracing::info!(%peer, error = %e, "connection ended"),
                None => tracing::info!(%peer, "connection closed after its time"),
                Some(Ok(())) => {}
            }
        });
    }
}
