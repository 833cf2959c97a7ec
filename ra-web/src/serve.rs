//! `ecert serve`: the relying-party face (CA certificates, CRLs, health, metrics) and the
//! signing core's background duties (CRL publication, audit checkpoints).
//!
//! The process is the signer for its data directory: on a fresh one it initialises everything
//! first (token, hierarchy, database). Revocations made by other processes (`ecert revoke`, the
//! RA) reach the published CRLs within `--crl-watch-seconds` of the change.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ca_core::authority::Authority;
use ca_core::config::Config;
use ca_core::profile::CaRole;

/// Options of `ecert serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Republish every issuing CA's CRL at this interval (e-Cert publishes three times a day).
    #[arg(long, default_value_t = 8 * 3600)]
    pub crl_interval_seconds: u64,
    /// How often to look for revocations made by other processes and republish.
    #[arg(long, default_value_t = 30)]
    pub crl_watch_seconds: u64,
}

struct AppState {
    auth: Authority,
    /// Last HSM check: (when, result). `/healthz` signs at most once per 10 s.
    hsm: tokio::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

type Shared = Arc<AppState>;

pub async fn serve(config: Config, a: ServeArgs) -> anyhow::Result<()> {
    let (auth, _) = Authority::init(config).await?;
    let state: Shared = Arc::new(AppState {
        auth,
        hsm: tokio::sync::Mutex::new(None),
    });
    // Publish at once where a CRL is missing, then keep them fresh.
    publish_due(&state, a.crl_interval_seconds as i64).await;
    let background = tokio::spawn(background(
        state.clone(),
        a.crl_interval_seconds,
        a.crl_watch_seconds,
    ));
    let app = router(state.clone());
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")?;
    background.abort();
    if let Err(e) = state.auth.checkpoint().await {
        eprintln!("warning: could not sign the audit checkpoint: {e}");
    }
    Ok(())
}

/// The routes. Public, read-only.
fn router(state: Shared) -> Router {
    Router::new()
        .route("/ca/{file}", get(ca_cert))
        .route("/crl/{file}", get(crl))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// `GET /ca/{ca}.crt`: DER, `application/pkix-cert` (RFC 2585 §4.1), the URL in caIssuers.
async fn ca_cert(State(s): State<Shared>, Path(file): Path<String>) -> Response {
    let Some(role) = file
        .strip_suffix(".crt")
        .and_then(|n| CaRole::from_name(n).ok())
    else {
        return not_found();
    };
    match s.auth.ca_cert(role) {
        Ok(der) => (
            [
                (header::CONTENT_TYPE, "application/pkix-cert"),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            der.to_vec(),
        )
            .into_response(),
        Err(_) => not_found(),
    }
}

/// `GET /crl/{ca}.crl`: DER, `application/pkix-crl` (RFC 2585 §4.2), the URL in CRL DPs.
async fn crl(State(s): State<Shared>, Path(file): Path<String>) -> Response {
    let Some(role) = file
        .strip_suffix(".crl")
        .and_then(|n| CaRole::from_name(n).ok())
    else {
        return not_found();
    };
    match s.auth.store().latest_crl(role.name()).await {
        Ok(Some((_, der))) => (
            [
                (header::CONTENT_TYPE, "application/pkix-crl"),
                (header::CACHE_CONTROL, "public, max-age=60"),
            ],
            der,
        )
            .into_response(),
        Ok(None) => not_found(),
        Err(e) => {
            tracing::error!(error = %e, "reading a CRL");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable\n",
            )
                .into_response()
        }
    }
}

/// `GET /healthz`: 200 when the database answers, the HSM signs (checked at most every 10 s)
/// and every CRL is within its validity; 503 otherwise. The body says which part is at fault.
async fn healthz(State(s): State<Shared>) -> Response {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut ok = true;
    let mut crls = serde_json::Map::new();
    let db = match s.auth.store().count_by_state().await {
        Ok(_) => "ok".to_string(),
        Err(e) => {
            ok = false;
            format!("error: {e}")
        }
    };
    let hsm_ok = {
        let mut last = s.hsm.lock().await;
        match *last {
            Some((at, ok)) if at.elapsed() < Duration::from_secs(10) => ok,
            _ => {
                let ok = tokio::time::timeout(Duration::from_secs(5), s.auth.hsm_ok())
                    .await
                    .unwrap_or(false);
                *last = Some((std::time::Instant::now(), ok));
                ok
            }
        }
    };
    ok &= hsm_ok;
    for role in CaRole::ALL {
        let v = match s.auth.store().latest_crl_times(role.name()).await {
            Ok(Some((number, this_update, next_update, _))) => {
                let fresh = now < next_update;
                ok &= fresh;
                serde_json::json!({ "number": number, "age_seconds": now - this_update, "fresh": fresh })
            }
            Ok(None) => {
                ok = false;
                serde_json::json!({ "missing": true })
            }
            Err(_) => {
                ok = false;
                serde_json::json!({ "error": "database" })
            }
        };
        crls.insert(role.name().into(), v);
    }
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "fault" },
        "database": db,
        "hsm": if hsm_ok { "ok" } else { "fault" },
        "crl": crls,
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus text format 0.0.4.
async fn metrics(State(s): State<Shared>) -> Response {
    let mut out = String::new();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    out.push_str(
        "# HELP ecert_certificates Serials by lifecycle state.\n# TYPE ecert_certificates gauge\n",
    );
    if let Ok(counts) = s.auth.store().count_by_state().await {
        for (state, n) in counts {
            out.push_str(&format!("ecert_certificates{{state=\"{state}\"}} {n}\n"));
        }
    }
    // Each metric family is one group (Prometheus text format 0.0.4).
    let mut crls = Vec::new();
    for role in CaRole::ALL {
        if let Ok(Some((number, this_update, _, _))) =
            s.auth.store().latest_crl_times(role.name()).await
        {
            crls.push((role.name(), number, now - this_update));
        }
    }
    out.push_str(
        "# HELP ecert_crl_number CRLNumber of the newest CRL.\n# TYPE ecert_crl_number gauge\n",
    );
    for (ca, number, _) in &crls {
        out.push_str(&format!("ecert_crl_number{{ca=\"{ca}\"}} {number}\n"));
    }
    out.push_str("# HELP ecert_crl_age_seconds Seconds since the newest CRL's thisUpdate.\n# TYPE ecert_crl_age_seconds gauge\n");
    for (ca, _, age) in &crls {
        out.push_str(&format!("ecert_crl_age_seconds{{ca=\"{ca}\"}} {age}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Publishes the CRL of each CA that has none, whose newest is older than `interval`, or whose
/// status changed since it was made. The root's CRL is made once (it changes only by ceremony).
async fn publish_due(s: &Shared, interval: i64) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for role in CaRole::ALL {
        let store = s.auth.store();
        let due = match store.latest_crl_times(role.name()).await {
            Ok(None) => true,
            Ok(Some((_, this_update, next_update, covered))) => {
                let version = store.status_version(role.name()).await.unwrap_or(i64::MAX);
                (role != CaRole::Root && (now - this_update >= interval || version > covered))
                    || next_update - now < 86_400
            }
            Err(e) => {
                tracing::error!(error = %e, "CRL schedule: database");
                false
            }
        };
        if due {
            match s.auth.publish_crl(role, "system:crl-publisher").await {
                Ok(p) => tracing::info!(ca = role.name(), number = p.number, "CRL published"),
                Err(e) => tracing::error!(ca = role.name(), error = %e, "CRL publication failed"),
            }
        }
    }
}

async fn background(s: Shared, interval: u64, watch: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(watch.max(1)));
    loop {
        tick.tick().await;
        publish_due(&s, interval as i64).await;
        if let Err(e) = s.auth.checkpoint().await {
            tracing::error!(error = %e, "audit checkpoint failed");
        }
    }
}
