//! The listeners: HTTP/1.1, plain or over rustls (TLS 1.2 and 1.3, ring), for `ecert serve`
//! (with `--tls-cert --tls-key`, the signing instance behind front instances) and `ecert
//! perspective serve`, each bounded by [`Limits`] so slow or many clients cannot stop the
//! service. The TLS client side is `ca_core::mpic::client_tls`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::TokioIo;

/// Bounds on what clients may hold (docs/SECURITY.md "Slow clients").
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// Time for the TLS handshake, for each request head, and for an idle keep-alive
    /// connection's next request head (hyper's header-read timer runs whenever the connection
    /// waits for a head).
    pub handshake: Duration,
    /// Time for a request's body and its answer: 408 past it.
    pub request: Duration,
    /// Time for a whole connection, if bounded.
    pub connection: Option<Duration>,
    /// On SIGTERM or SIGINT: how long [`Shutdown::draining`] is reported while the listener
    /// still accepts.
    pub drain: Duration,
    /// Then how long requests in flight are given to finish.
    pub grace: Duration,
}

/// Requests answered before the router: `serve` gives the OCSP routes (relying parties' hot
/// path), which then pass through no router and no middleware, only [`crate::metrics::note`]
/// (with the peer's address; the request carries no [`ConnectInfo`]). `answer` keeps the
/// limits itself (a body's size and time).
#[derive(Clone)]
pub struct Fast {
    /// Whether `answer` takes this request (by method and path); the router takes the rest.
    pub takes: fn(&axum::http::Method, &str) -> bool,
    /// The answer.
    pub answer: Arc<dyn Fn(FastRequest) -> FastAnswer + Send + Sync>,
}

/// A request as [`Fast::answer`] gets it (body unread).
pub type FastRequest = axum::http::Request<hyper::body::Incoming>;

/// [`Fast::answer`]'s answer.
pub type FastAnswer =
    std::pin::Pin<Box<dyn std::future::Future<Output = axum::response::Response> + Send>>;

/// Shared with the routes: whether the listener is draining (a stop was asked), so that
/// `/readyz` says 503 while requests are still served.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    draining: Arc<std::sync::atomic::AtomicBool>,
}

impl Shutdown {
    /// Whether a stop was asked.
    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Limits {
    /// The limits `[http]` configures.
    pub fn from_config(http: &ca_core::config::HttpConfig) -> Limits {
        Limits {
            max_connections: usize::try_from(http.max_connections).unwrap_or(usize::MAX),
            handshake: Duration::from_secs(u64::from(http.header_timeout_seconds)),
            request: Duration::from_secs(u64::from(http.request_timeout_seconds)),
            connection: None,
            drain: Duration::from_secs(u64::from(http.drain_seconds)),
            grace: Duration::from_secs(u64::from(http.shutdown_grace_seconds)),
        }
    }
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

/// Serves `app` on `listener`, over TLS with `tls` or plain HTTP/1.1 without, within `limits`:
/// a connection slot per client (refused when none is free), a deadline for the handshake and
/// every request head (slowloris), one for each request's body and answer (a trickled body),
/// and optionally one for the whole connection. The peer address reaches handlers as
/// `ConnectInfo`.
///
/// Stops gracefully on SIGTERM or SIGINT: `shutdown` reports draining at once (`/readyz`
/// answers 503) while the listener keeps accepting for `limits.drain`, so that a load
/// balancer takes the instance out first; then the listener is closed, idle keep-alive
/// connections are closed, and the requests in flight get `limits.grace` to finish (each
/// answer on a kept-alive connection then says `Connection: close`). Returns when they have.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<rustls::ServerConfig>,
    app: Router,
    limits: Limits,
    shutdown: Shutdown,
    fast: Option<Fast>,
) -> anyhow::Result<()> {
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(Arc::new(t)));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let request = limits.request;
    let app = app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(request, next.run(req)).await {
                Ok(r) => r,
                Err(_) => (
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    [(axum::http::header::CONNECTION, "close")],
                    "the request took too long\n",
                )
                    .into_response(),
            }
        },
    ));
    // Outside the timeout, so that a 408 is counted and logged too.
    let app = app.layer(axum::middleware::from_fn(crate::metrics::observe));
    // SIGTERM (systemd, kill) stops as SIGINT does: the caller records the stop.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| std::io::Error::other(format!("SIGTERM handler: {e}")))?;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let draining = shutdown.draining.clone();
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        draining.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(
            drain_seconds = limits.drain.as_secs(),
            "stopping: draining, then closing the listener"
        );
        tokio::time::sleep(limits.drain).await;
    };
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                // Out of file descriptors and the like: wait a little rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections; refused");
            continue;
        };
        let (acceptor, app, fast) = (acceptor.clone(), app.clone(), fast.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => connection(tls, app, fast, peer, limits, watcher).await,
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                }
                None => connection(tcp, app, fast, peer, limits, watcher).await,
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_seconds = limits.grace.as_secs(),
            "requests still in flight after the grace period: closed"
        );
    }
    Ok(())
}

/// Serves HTTP/1.1 on one connection within `limits`: a request `fast` takes is answered by
/// it, any other by the router (which sees the peer as [`ConnectInfo`]).
async fn connection<IO>(
    io: IO,
    app: Router,
    fast: Option<Fast>,
    peer: SocketAddr,
    limits: Limits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            // Only what this request's path needs is cloned (this runs for every request).
            let to = match fast
                .as_ref()
                .filter(|f| (f.takes)(req.method(), req.uri().path()))
            {
                Some(f) => Err(f.answer.clone()),
                None => Ok(app.clone()),
            };
            async move {
                match to {
                    Ok(app) => {
                        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                        tower::ServiceExt::oneshot(app, req).await
                    }
                    Err(answer) => {
                        let started = std::time::Instant::now();
                        let class = crate::metrics::class(req.uri().path());
                        let method = req.method().clone();
                        let response = answer(req).await;
                        let status = response.status().as_u16();
                        crate::metrics::note(
                            class,
                            &method,
                            status,
                            started.elapsed(),
                            Some(peer.ip()),
                        );
                        Ok(response)
                    }
                }
            }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.handshake)
        .serve_connection(TokioIo::new(io), service);
    let conn = watcher.watch(conn);
    let outcome = match limits.connection {
        Some(d) => tokio::time::timeout(d, conn).await.ok(),
        None => Some(conn.await),
    };
    match outcome {
        Some(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended"),
        None => tracing::info!(%peer, "connection closed after its time"),
        Some(Ok(())) => {}
    }
}
