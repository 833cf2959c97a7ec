//! Request metrics and the access log (issue 17, docs/OPERATIONS.md "Logs and metrics").
//!
//! Every request through [`crate::tls::serve`] is counted by route class and status, timed
//! into a latency histogram per class, and — with `[http] access_log` — written to the log as
//! one `ecert::access` event: method, route class, status, milliseconds, peer address. Never
//! the path or the query (a tracking reference, an e-mail address looked up in the directory,
//! an OCSP request are not the log's business), never a header or a body: route classes are a
//! fixed list, so no label can carry personal data.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Route classes, the only values of the `route` label.
pub const CLASSES: [&str; 9] = [
    "ocsp",
    "crl",
    "ca",
    "health",
    "directory",
    "api",
    "staff",
    "pages",
    "other",
];

/// Status codes counted by name; any other is `other`.
const CODES: [u16; 22] = [
    200, 201, 204, 301, 302, 303, 304, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 500,
    502, 503, 504,
];

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

struct Class {
    by_code: [AtomicU64; CODES.len() + 1],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Class {
    const fn new() -> Class {
        Class {
            by_code: [const { AtomicU64::new(0) }; CODES.len() + 1],
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

static HTTP: [Class; CLASSES.len()] = [const { Class::new() }; CLASSES.len()];
static ACCESS_LOG: AtomicBool = AtomicBool::new(false);

/// Turns the access log on or off (`[http] access_log`).
pub fn set_access_log(on: bool) {
    ACCESS_LOG.store(on, Ordering::Relaxed);
}

/// The route class of `path` (its fixed prefix only).
pub fn class(path: &str) -> usize {
    let name = if path == "/ocsp" || path.starts_with("/ocsp/") {
        "ocsp"
    } else if path.starts_with("/crl/") {
        "crl"
    } else if path.starts_with("/ca/") {
        "ca"
    } else if matches!(path, "/healthz" | "/readyz" | "/readyz/signer" | "/metrics") {
        "health"
    } else if path.starts_with("/directory") || path.starts_with("/api/v1/directory") {
        "directory"
    } else if path.starts_with("/api/") {
        "api"
    } else if path.starts_with("/staff") {
        "staff"
    } else if path == "/"
        || [
            "/apply", "/track", "/confirm", "/report", "/static", "/terms",
        ]
        .iter()
        .any(|p| path.starts_with(p))
    {
        "pages"
    } else {
        "other"
    };
    CLASSES
        .iter()
        .position(|c| *c == name)
        .unwrap_or(CLASSES.len() - 1)
}

fn record(class: usize, status: u16, took: std::time::Duration) {
    let c = &HTTP[class];
    let code = CODES
        .iter()
        .position(|k| *k == status)
        .unwrap_or(CODES.len());
    c.by_code[code].fetch_add(1, Ordering::Relaxed);
    c.count.fetch_add(1, Ordering::Relaxed);
    c.sum_micros
        .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    let secs = took.as_secs_f64();
    if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
        c.buckets[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// The middleware: counts, times and (optionally) logs each request.
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let class = class(req.uri().path());
    let method = req.method().clone();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let response = next.run(req).await;
    note(
        class,
        &method,
        response.status().as_u16(),
        started.elapsed(),
        peer,
    );
    response
}

/// Counts, times and (with `[http] access_log`) logs one answered request: what [`observe`]
/// does for the router, and each connection of [`crate::tls::serve`] for a request answered
/// before the router ([`crate::tls::Fast`]).
pub fn note(
    class: usize,
    method: &axum::http::Method,
    status: u16,
    took: std::time::Duration,
    peer: Option<std::net::IpAddr>,
) {
    record(class, status, took);
    if ACCESS_LOG.load(Ordering::Relaxed) {
        tracing::info!(
            target: "ecert::access",
            method = %method,
            route = CLASSES[class],
            status,
            ms = took.as_secs_f64() * 1000.0,
            peer = ?peer,
        );
    }
}

/// Appends the request and HSM metrics in the Prometheus text format.
pub fn render(out: &mut String) {
    out.push_str("# HELP ecert_http_requests_total Requests answered, by route class and status.\n# TYPE ecert_http_requests_total counter\n");
    for (i, c) in HTTP.iter().enumerate() {
        for (k, n) in c.by_code.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let code = CODES.get(k).map_or("other".to_string(), u16::to_string);
            let _ = writeln!(
                out,
                "ecert_http_requests_total{{route=\"{}\",code=\"{code}\"}} {n}",
                CLASSES[i]
            );
        }
    }
    out.push_str("# HELP ecert_http_request_duration_seconds Time to answer a request, by route class.\n# TYPE ecert_http_request_duration_seconds histogram\n");
    for (i, c) in HTTP.iter().enumerate() {
        let count = c.count.load(Ordering::Relaxed);
        if count == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (b, le) in BUCKETS.iter().enumerate() {
            cumulative += c.buckets[b].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "ecert_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{le}\"}} {cumulative}",
                CLASSES[i]
            );
        }
        let _ = writeln!(
            out,
            "ecert_http_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {count}\necert_http_request_duration_seconds_sum{{route=\"{}\"}} {}\necert_http_request_duration_seconds_count{{route=\"{}\"}} {count}",
            CLASSES[i],
            CLASSES[i],
            c.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            CLASSES[i]
        );
    }
    let s = &hsm::metrics::SIGNS;
    let total = s.total.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP ecert_hsm_signs_total C_Sign calls made by this process.\n# TYPE ecert_hsm_signs_total counter\necert_hsm_signs_total {total}\n\
         # HELP ecert_hsm_sign_errors_total C_Sign calls that failed.\n# TYPE ecert_hsm_sign_errors_total counter\necert_hsm_sign_errors_total {}",
        s.errors.load(Ordering::Relaxed)
    );
    out.push_str("# HELP ecert_hsm_sign_duration_seconds Time of one C_Sign call.\n# TYPE ecert_hsm_sign_duration_seconds histogram\n");
    let mut cumulative = 0;
    for (b, le) in hsm::metrics::BUCKETS.iter().enumerate() {
        cumulative += s.buckets[b].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "ecert_hsm_sign_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "ecert_hsm_sign_duration_seconds_bucket{{le=\"+Inf\"}} {total}\necert_hsm_sign_duration_seconds_sum {}\necert_hsm_sign_duration_seconds_count {total}",
        s.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_name_only_fixed_prefixes() {
        let name = |p: &str| CLASSES[class(p)];
        assert_eq!(name("/ocsp"), "ocsp");
        assert_eq!(name("/ocsp/MEUwQzBBMD8wPTAJBgUrDgMCGgUABBQ"), "ocsp");
        assert_eq!(name("/crl/individual-p3.crl"), "crl");
        assert_eq!(name("/api/v1/directory"), "directory");
        assert_eq!(name("/api/v1/applications/ABC"), "api");
        assert_eq!(name("/track/REF123"), "pages");
        assert_eq!(name("/readyz"), "health");
        assert_eq!(name("/ocspx"), "other");
        record(
            class("/track/REF123"),
            200,
            std::time::Duration::from_millis(3),
        );
        record(class("/ocsp"), 418, std::time::Duration::from_millis(1));
        let mut out = String::new();
        render(&mut out);
        assert!(
            out.contains("ecert_http_requests_total{route=\"pages\",code=\"200\"}"),
            "{out}"
        );
        assert!(
            out.contains("ecert_http_requests_total{route=\"ocsp\",code=\"other\"}"),
            "{out}"
        );
        assert!(!out.contains("REF123"), "{out}");
        assert!(out.contains("ecert_hsm_signs_total"), "{out}");
    }
}
