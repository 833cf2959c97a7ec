//! `ecert bench issue`: the issuance benchmark behind `ops/bench issue` (not a test).
//!
//! It measures, in one process against one fresh data directory: the token's bare signing rate
//! (`C_Sign` with CKM_ECDSA over a precomputed digest, as many threads as pooled sessions), then
//! end-to-end issuance — CSR parse and proof-of-possession check through the certificate stored
//! `issued` with its audit records, fsync on — with many issuances in flight so that the group
//! committer can batch their writes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ca_core::authority::{ApprovedRequest, Authority};
use ca_core::config::Config;
use ca_core::crl::Scope;
use ca_core::csr::VerifiedCsr;
use ca_core::profile::{CaRole, SubjectData};

/// Options of `ecert bench issue`.
#[derive(Debug, clap::Args)]
pub struct IssueBench {
    /// Certificates to issue.
    #[arg(long, default_value_t = 4000)]
    pub n: usize,
    /// Issuances in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to measure the bare HSM signing rate (0: skip it, for profiling).
    #[arg(long, default_value_t = 3)]
    pub hsm_seconds: u64,
    /// A label for the database engine in the report.
    #[arg(long, default_value = "sqlite")]
    pub engine: String,
}

pub async fn issue(config: Config, b: IssueBench) -> anyhow::Result<()> {
    let (auth, report) = Authority::init(config.clone()).await?;
    // Its certificates are issued outside the RA (no application, synthetic subjects): only
    // under CAs it made itself, never in an installation that has CAs already.
    if !report.existing.is_empty() {
        anyhow::bail!(
            "bench issue makes its own CAs and issues outside the RA: give it a fresh data directory and database, not an installation"
        );
    }
    let auth = Arc::new(auth);

    // 1. Bare token rate.
    let threads = config.hsm.pool_size;
    let cfg = hsm::pkcs11::Pkcs11Config {
        module: config.hsm.module.clone(),
        token_label: config.hsm.token_label.clone(),
        user_pin: config.user_pin()?,
        so_pin: None,
        pool_size: threads,
    };
    let secs = b.hsm_seconds;
    let raw_rate = if secs == 0 {
        f64::NAN
    } else {
        tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
            let token = hsm::pkcs11::Token::open(&cfg)?;
            let key = token.key(&CaRole::Individual.key_label())?;
            let digest = [7u8; 32];
            let deadline = Instant::now() + Duration::from_secs(secs);
            let count = AtomicUsize::new(0);
            let start = Instant::now();
            std::thread::scope(|s| -> anyhow::Result<()> {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| -> anyhow::Result<()> {
                            while Instant::now() < deadline {
                                key.sign_digest_raw(&digest)?;
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for h in handles {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("signing thread panicked"))??;
                }
                Ok(())
            })?;
            Ok(count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
        })
        .await??
    };
    println!(
        "SoftHSM2 raw P-256 sign (C_Sign CKM_ECDSA, {threads} sessions): {raw_rate:.0} signs/s"
    );
    let ceiling = crypto_ceiling(&config, secs, 2).await?;

    // 2. End to end. CSRs are made first and not timed.
    let csrs: Vec<Vec<u8>> = (0..b.n)
        .map(|_| -> anyhow::Result<Vec<u8>> {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            Ok(params.serialize_request(&key)?.der().to_vec())
        })
        .collect::<anyhow::Result<_>>()
        .context("making CSRs")?;
    let csrs = Arc::new(csrs);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = process_cpu_seconds();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..b.concurrency {
        let (auth, csrs, next) = (auth.clone(), csrs.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(der) = csrs.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let csr = VerifiedCsr::parse(der)?;
                let subject = SubjectData {
                    surname: Some("CHAN".into()),
                    given_name: Some("Tai Man".into()),
                    emails: vec![format!("user{i}@example.hk")],
                    ..Default::default()
                };
                auth.issue(ApprovedRequest {
                    profile: "personal".into(),
                    csr,
                    subject,
                    days: None,
                    renews: None,
                    actor: "bench".into(),
                })
                .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu_before;
    let rate = b.n as f64 / elapsed;
    println!(
        "ecert end-to-end issuance ({}, fsync on, {} in flight, {} certificates): {rate:.0} certs/s = {:.0}% of the crypto ceiling ({:.0}% of the raw HSM rate)",
        b.engine,
        b.concurrency,
        b.n,
        100.0 * rate / ceiling,
        100.0 * rate / raw_rate
    );
    println!(
        "  CPU in that phase: {:.2} of {} cores busy, {:.0} us of CPU per certificate",
        cpu / elapsed,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        1e6 * cpu / b.n as f64
    );
    let counts = auth.store().count_by_state().await?;
    let issued = counts
        .iter()
        .find(|(s, _)| s == "issued")
        .map_or(0, |(_, n)| *n);
    anyhow::ensure!(
        issued as usize == b.n,
        "expected {} issued certificates, the store has {issued}",
        b.n
    );
    Ok(())
}

/// CPU time (user and system, all threads) this process used so far, in seconds, from
/// `/proc/self/stat` (clock ticks of 1/100 s; NaN where it cannot be read).
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // The fields after the command name (which may hold spaces, and ends at the last ')').
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// Times one HSM signature and one ECDSA P-256 verification (each on one thread, for `secs`
/// seconds, at least one), and prints the ceiling of an operation that needs one signature and
/// `verifications` verifications: an issuance needs two (the CSR's proof of possession and
/// the self-check of the signed certificate), an OCSP response one (its self-check). Returns
/// cores ÷ (sign + `verifications` × verify): operations per second if every core did nothing
/// but the cryptography each one needs.
pub async fn crypto_ceiling(config: &Config, secs: u64, verifications: u32) -> anyhow::Result<f64> {
    let secs = secs.max(1);
    let cfg = hsm::pkcs11::Pkcs11Config {
        module: config.hsm.module.clone(),
        token_label: config.hsm.token_label.clone(),
        user_pin: config.user_pin()?,
        so_pin: None,
        pool_size: 1,
    };
    let (sign, verify) = tokio::task::spawn_blocking(move || -> anyhow::Result<(f64, f64)> {
        let token = hsm::pkcs11::Token::open(&cfg)?;
        let key = token.key(&CaRole::Individual.key_label())?;
        let digest = [7u8; 32];
        let per_op = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_secs(secs) {
                f()?;
                n += 1;
            }
            Ok(start.elapsed().as_secs_f64() / n as f64)
        };
        let sign = per_op(&mut || {
            key.sign_digest_raw(&digest)?;
            Ok(())
        })?;
        // A verification as the self-check makes it: ring, P-256 with SHA-256, ASN.1 signature.
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .map_err(|_| anyhow::anyhow!("generating a P-256 key"))?;
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .map_err(|_| anyhow::anyhow!("loading a P-256 key"))?;
        use ring::signature::KeyPair;
        let message = [9u8; 400];
        let sig = pair
            .sign(&rng, &message)
            .map_err(|_| anyhow::anyhow!("signing"))?;
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            pair.public_key().as_ref().to_vec(),
        );
        let verify = per_op(&mut || {
            public
                .verify(&message, sig.as_ref())
                .map_err(|_| anyhow::anyhow!("verification failed"))
        })?;
        Ok((sign, verify))
    })
    .await??;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rate = cores as f64 / (sign + f64::from(verifications) * verify);
    println!(
        "crypto ceiling: {cores} cores / (HSM sign {:.0} us + {verifications} x P-256 verify {:.0} us) = {rate:.0}/s",
        sign * 1e6,
        verify * 1e6
    );
    Ok(rate)
}

/// Writes `n` synthetic certificates of the Individual CA straight into the store (issued a
/// minute ago, for a year; keyCompromise-revoked if `revoked`; no DER: CRLs and OCSP need only
/// the serial and its status), in one transaction. Returns their serials (hex).
async fn fill(auth: &Authority, n: usize, revoked: bool) -> anyhow::Result<Vec<String>> {
    use rand::RngCore;
    use sqlx::Executor;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut rng = rand::rngs::OsRng;
    let partitions = auth.config().crl.partitions_of(CaRole::Individual);
    let pool = auth.store().pool();
    let mut conn = pool.acquire().await?;
    conn.execute("BEGIN").await?;
    const ROWS: usize = 500;
    let mut all = Vec::with_capacity(n);
    while all.len() < n {
        let k = ROWS.min(n - all.len());
        let mut sql = String::from(
            "INSERT INTO certificates (serial, issuer, state, profile, profile_version, key_fp, request, reserved_at, updated_at, not_before, not_after, revocation_reason, revoked_at, crl_partition) VALUES ",
        );
        let mut serials = Vec::with_capacity(k);
        for i in 0..k {
            let mut s = [0u8; 16];
            rng.fill_bytes(&mut s);
            s[0] &= 0x7f;
            s[0] |= 0x10;
            serials.push(hex::encode(s));
            let p = i * 5;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${}, 'individual', 'issued', 'personal', 1, ${}, '{{}}', {now}, {now}, {now}, {}, ${}, ${}, ${})",
                p + 1,
                p + 2,
                now + 365 * 86_400,
                p + 3,
                p + 4,
                p + 5
            ));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for s in &serials {
            let mut fp = vec![0u8; 32];
            rng.fill_bytes(&mut fp);
            let partition = ca_core::serial::SerialNumber::from_hex(s)
                .and_then(|s| ca_core::crl::partition_of(&s, partitions))
                .map(i64::from);
            q = q
                .bind(s.clone())
                .bind(fp)
                .bind(revoked.then_some(1i64))
                .bind(revoked.then_some(now - 60))
                .bind(partition);
        }
        q.execute(&mut *conn).await?;
        all.extend(serials);
    }
    conn.execute("COMMIT").await?;
    Ok(all)
}

/// Options of `ecert bench crl`.
#[derive(Debug, clap::Args)]
pub struct CrlBench {
    /// Revoked certificates on the CRL.
    #[arg(long, default_value_t = 1_000_000)]
    pub n: usize,
    /// Also write an `openssl ca` index.txt with the same entries here (for `openssl ca -gencrl`).
    #[arg(long)]
    pub openssl_index: Option<std::path::PathBuf>,
}

/// `ecert bench crl`: fills the store with `n` revoked certificates of the Individual CA
/// (synthetic rows; no certificates are signed), then times full CRL runs (build, lint, HSM
/// signature, self-check, store, file): the first after start, which also reads every entry
/// from the database, and the one after a further revocation, which is what the publisher
/// does within a minute of every revocation. Then the one partition that revocation touched.
pub async fn crl(config: Config, b: CrlBench) -> anyhow::Result<()> {
    let (auth, _) = Authority::init(config).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let fmt = |t: i64| -> anyhow::Result<String> {
        let d = time::OffsetDateTime::from_unix_timestamp(t)?;
        Ok(format!(
            "{:02}{:02}{:02}{:02}{:02}{:02}Z",
            d.year() % 100,
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ))
    };
    let partitions = auth.config().crl.partitions_of(CaRole::Individual);
    let started = Instant::now();
    let serials = fill(&auth, b.n, true).await?;
    println!(
        "filled {} revoked certificates in {:.1} s",
        b.n,
        started.elapsed().as_secs_f64()
    );
    let mut index = String::new();
    if b.openssl_index.is_some() {
        for s in &serials {
            index.push_str(&format!(
                "R\t{}\t{},keyCompromise\t{}\tunknown\t/CN=bench\n",
                fmt(now + 365 * 86_400)?,
                fmt(now - 60)?,
                s.to_uppercase()
            ));
        }
    }
    let pool = auth.store().pool();
    if let Some(path) = &b.openssl_index {
        std::fs::write(path, index)?;
    }
    let individual = ca_core::profile::CaId::first(CaRole::Individual);
    let t = Instant::now();
    let p = auth.publish_crl(individual, Scope::Full, "bench").await?;
    println!(
        "ecert full CRL of {} entries, first run (reads every entry from the database): {:.2} s, {} bytes",
        p.entries,
        t.elapsed().as_secs_f64(),
        p.der.len()
    );
    // One more certificate, revoked the way an officer does it.
    let serial = ca_core::serial::SerialNumber::random();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO certificates (serial, issuer, state, profile, profile_version, key_fp, request, reserved_at, updated_at, not_before, not_after, crl_partition) \
         VALUES ($1, 'individual', 'issued', 'personal', 2, $2, '{{}}', {now}, {now}, {now}, {}, $3)",
        now + 365 * 86_400
    )))
    .bind(serial.to_hex())
    .bind(vec![0x5a_u8; 32])
    .bind(ca_core::crl::partition_of(&serial, partitions).map(i64::from))
    .execute(pool)
    .await?;
    auth.revoke(serial, ca_core::revocation::Reason::Superseded, "bench")
        .await?;
    let t = Instant::now();
    let p = auth.publish_crl(individual, Scope::Full, "bench").await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "ecert full CRL of {} entries after one revocation: build and sign (encode, lint, HSM sign, verify) {:.2} s (target <= 1 s); published (plus database and file) {secs:.2} s; {} bytes",
        p.entries,
        p.build_and_sign.as_secs_f64(),
        p.der.len()
    );
    if let Some(k) = ca_core::crl::partition_of(&serial, partitions) {
        let t = Instant::now();
        let p = auth
            .publish_crl(individual, Scope::Partition(k), "bench")
            .await?;
        println!(
            "ecert CRL partition {k} of {partitions} ({} entries) after that revocation: {:.2} s, {} bytes",
            p.entries,
            t.elapsed().as_secs_f64(),
            p.der.len()
        );
    }
    Ok(())
}

/// Options of `ecert bench ocsp-client`: a small HTTP/1.1 load generator (one tokio task per
/// connection) for `ops/bench ocsp`. The same client drives every server compared.
#[derive(Debug, clap::Args)]
pub struct OcspClient {
    /// `host:port` of the server.
    #[arg(long)]
    pub addr: String,
    /// The DER OCSP request to send.
    #[arg(long)]
    pub request: std::path::PathBuf,
    /// Send it as `GET /ocsp/{base64}` (default: `POST /ocsp`).
    #[arg(long)]
    pub get: bool,
    /// Reuse each connection (HTTP keep-alive); otherwise one connection per request.
    #[arg(long)]
    pub keep_alive: bool,
    /// Connections in parallel.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Requests per second in total (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Label of the line printed.
    #[arg(long, default_value = "")]
    pub label: String,
    /// The responder's path: POST goes to it, GET to `{path}/{base64}` (`openssl ocsp -port`
    /// answers at the root: "").
    #[arg(long, default_value = "/ocsp")]
    pub path: String,
}

/// Reads one HTTP/1.1 response (headers, then Content-Length bytes, or to EOF). Returns the
/// status.
async fn read_response(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    to_eof: bool,
) -> anyhow::Result<u16> {
    use tokio::io::AsyncReadExt;
    buf.clear();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?;
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .context("no status")?
                .parse()?;
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if to_eof {
                while s.read(&mut chunk).await? > 0 {}
                return Ok(status);
            }
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await?;
                anyhow::ensure!(n > 0, "connection closed mid-response");
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
        let n = s.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub async fn ocsp_client(b: OcspClient) -> anyhow::Result<()> {
    use base64::Engine as _;
    use tokio::io::AsyncWriteExt;
    let der = std::fs::read(&b.request).with_context(|| b.request.display().to_string())?;
    let conn = if b.keep_alive { "keep-alive" } else { "close" };
    let request: Arc<Vec<u8>> = Arc::new(if b.get {
        // Percent-encoded base64, as RFC 6960 Appendix A.1 and RFC 5019 §5 describe.
        let path = base64::engine::general_purpose::STANDARD
            .encode(&der)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        format!(
            "GET {}/{path} HTTP/1.1\r\nHost: {}\r\nConnection: {conn}\r\n\r\n",
            b.path, b.addr
        )
        .into_bytes()
    } else {
        let mut r = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n",
            if b.path.is_empty() { "/" } else { b.path.as_str() },
            b.addr,
            der.len()
        )
        .into_bytes();
        r.extend_from_slice(&der);
        r
    });
    let deadline = Instant::now() + Duration::from_secs(b.seconds);
    let interval =
        (b.rate > 0).then(|| Duration::from_secs_f64(b.concurrency as f64 / b.rate as f64));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let connections = b.concurrency;
    for i in 0..connections {
        let request = request.clone();
        let addr = b.addr.clone();
        let errors = errors.clone();
        let keep_alive = b.keep_alive;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut buf = Vec::with_capacity(4096);
            let mut stream: Option<tokio::net::TcpStream> = None;
            let mut next = Instant::now()
                + interval.map_or(Duration::ZERO, |iv| {
                    iv.mul_f64(i as f64 / connections as f64)
                });
            while Instant::now() < deadline {
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let t = Instant::now();
                let result: anyhow::Result<u16> = async {
                    if stream.is_none() {
                        let s = tokio::net::TcpStream::connect(&addr).await?;
                        s.set_nodelay(true)?;
                        stream = Some(s);
                    }
                    let s = stream.as_mut().context("no connection")?;
                    s.write_all(&request).await?;
                    read_response(s, &mut buf, !keep_alive).await
                }
                .await;
                if !keep_alive {
                    stream = None;
                }
                match result {
                    Ok(200) => lat.push(t.elapsed().as_micros() as u64),
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        stream = None;
                    }
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(f64::NAN, |v| *v as f64 / 1000.0)
    };
    println!(
        "{:<44} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
        b.label,
        all.len() as f64 / b.seconds as f64,
        pct(0.50),
        pct(0.99),
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Options of `ecert bench ocsp-ceiling`: a bare axum server answering every `/ocsp` request
/// with a fixed body — the ceiling an OCSP server on this machine and client can reach.
#[derive(Debug, clap::Args)]
pub struct OcspCeiling {
    /// Address to listen on.
    #[arg(long)]
    pub listen: std::net::SocketAddr,
    /// The body to answer with (e.g. a real OCSP response, for the same size).
    #[arg(long)]
    pub body: std::path::PathBuf,
}

pub async fn ocsp_ceiling(b: OcspCeiling) -> anyhow::Result<()> {
    use axum::routing::{get, post};
    let body = axum::body::Bytes::from(std::fs::read(&b.body)?);
    let b1 = body.clone();
    let app = axum::Router::new()
        .route(
            "/ocsp",
            post(move || {
                let b = b1.clone();
                async move { b }
            }),
        )
        .route(
            "/ocsp/{*req}",
            get(move || {
                let b = body.clone();
                async move { b }
            }),
        );
    let listener = tokio::net::TcpListener::bind(b.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// Options of `ecert bench bulk`.
#[derive(Debug, clap::Args)]
pub struct BulkBench {
    /// Rows in the batch.
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// A label for the database engine in the report.
    #[arg(long, default_value = "sqlite")]
    pub engine: String,
}

/// A DNS responder on a loopback UDP port that answers every question NXDOMAIN (a domain
/// without CAA records); it lives as long as the process. Returns its address.
fn no_caa_responder() -> anyhow::Result<std::net::SocketAddr> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let addr = sock.local_addr()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            // The header and the question, no other section (RFC 1035 §4.1).
            let q = &buf[..n];
            let mut end = 12;
            while end < n && q[end] != 0 {
                end += 1 + usize::from(q[end]);
            }
            end += 5;
            if n < 12 || end > n {
                continue;
            }
            let mut r = q[..end].to_vec();
            r[2] = 0x84 | (q[2] & 0x01); // QR, AA, the query's RD
            r[3] = 0x83; // RA, NXDOMAIN
            r[4..6].copy_from_slice(&[0, 1]);
            r[6..12].fill(0);
            let _ = sock.send_to(&r, peer);
        }
    });
    Ok(addr)
}

/// `ecert bench bulk`: an organisation with a validated mail domain submits `n` staff rows
/// through the HTTP API of an `ecert serve` it starts on this (initialised, otherwise unused)
/// data directory; prints the wall time from the submission to the last certificate issued
/// with its OCSP response ready, and certificates per second.
///
/// Not timed, and written straight into the store because they are not what is measured: the
/// organisation and its validated domain (counter check and DNS validation), the batch token,
/// the CSRs (made first), and the two officers' approval (`approve_batch`, what their decision
/// carries out, called at once after the submission).
pub async fn bulk(config: Config, b: BulkBench) -> anyhow::Result<()> {
    let store = ca_core::store::Store::open(&config.database_url()).await?;
    let issued_before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certificates")
        .fetch_one(store.pool())
        .await?;
    let orgs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organisations")
        .fetch_one(store.pool())
        .await?;
    anyhow::ensure!(
        orgs == 0,
        "bench bulk writes an organisation straight into the store: give it a freshly initialised data directory, not an installation"
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let org = "bench-org";
    sqlx::query(
        "INSERT INTO organisations (id, name, register, org_id, application_id, verified_at, registered_by, registered_at) \
         VALUES ($1, 'Bench Department', 'GOV', NULL, 'bench', $2, 'bench', $2)",
    )
    .bind(org)
    .bind(now)
    .execute(store.pool())
    .await?;
    sqlx::query(
        "INSERT INTO organisation_domains (organisation_id, domain, dcv_token, token_at, validated_at) VALUES ($1, 'bench.gov.hk', 'x', $2, $2)",
    )
    .bind(org)
    .bind(now)
    .execute(store.pool())
    .await?;
    let token = format!("ecb_bench{}", hex::encode(rand::random::<[u8; 16]>()));
    sqlx::query(
        "INSERT INTO batch_tokens (token_sha256, organisation_id, profiles, created_by, created_at, expires_at) \
         VALUES ($1, $2, 'organisational', 'bench', $3, $4)",
    )
    .bind(ca_core::ra::bulk::token_digest(&token))
    .bind(org)
    .bind(now)
    .bind(now + 86_400)
    .execute(store.pool())
    .await?;

    // The rows, CSRs made first.
    let rows: Vec<serde_json::Value> = (0..b.n)
        .map(|i| -> anyhow::Result<serde_json::Value> {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            Ok(serde_json::json!({
                "client_row_id": format!("staff-{i}"),
                "surname": "CHAN",
                "given_name": "Tai Man",
                "email": format!("staff{i}@bench.gov.hk"),
                "csr": params.serialize_request(&key)?.pem()?,
            }))
        })
        .collect::<anyhow::Result<_>>()
        .context("making CSRs")?;
    let body = serde_json::to_vec(&serde_json::json!({ "rows": rows }))?;

    // The mail domain's CAA is checked before each pass issues (RFC 9495): here it has none,
    // as a local responder answers (NXDOMAIN), asked without DNSSEC and without remote
    // perspectives (the bench has neither a validating resolver nor perspectives).
    let resolver = no_caa_responder()?;
    let toml = config.data_dir.join("ecert.toml");
    let text = std::fs::read_to_string(&toml).unwrap_or_default();
    anyhow::ensure!(
        !text.contains("[dcv]"),
        "bench bulk sets [dcv] itself: give it a data directory without one"
    );
    std::fs::write(
        &toml,
        format!("{text}\n[dcv]\nresolver = \"{resolver}\"\ndnssec = \"off\"\nmpic = \"off\"\n"),
    )?;

    // The service, as operators run it.
    let exe = std::env::current_exe()?;
    let mut serve = std::process::Command::new(exe)
        .arg("--data-dir")
        .arg(&config.data_dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("ECERT_DNS_RESOLVER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let out = serve.stdout.take().context("serve's output")?;
    let serve = Stop(serve);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut tx = Some(tx);
        // Reads to the end, so serve never blocks on a full pipe.
        for line in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
            if let Some(a) = line.strip_prefix("listening on http://") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(a.to_string());
                }
            }
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(120), rx)
        .await
        .context("serve did not start within 2 minutes")?
        .context("serve stopped before listening")?;

    // The client `ecert batch` uses.
    let api = crate::client::Api::new(&format!("http://{addr}"), None, Some(token))?;
    let start = Instant::now();
    let (status, answer) = api
        .send_raw(
            axum::http::Method::POST,
            "/api/v1/batches",
            "application/json",
            body,
        )
        .await?;
    anyhow::ensure!(
        status == 201,
        "submitting the batch: {status} {}",
        String::from_utf8_lossy(&answer)
    );
    let receipt: serde_json::Value = serde_json::from_slice(&answer)?;
    let id = receipt["id"]
        .as_str()
        .context("the receipt's id")?
        .to_string();
    let accepted = receipt["accepted"].as_u64().unwrap_or(0) as i64;
    anyhow::ensure!(
        accepted == b.n as i64,
        "{accepted} of {} rows accepted: {receipt}",
        b.n
    );
    let submitted = start.elapsed().as_secs_f64();
    ca_core::ra::bulk::approve_batch(&store, &id, "bench").await?;
    // Done when every row is issued and its serial has a pre-signed response and nothing
    // pending in the OCSP queue.
    let ready_sql =
        "SELECT COUNT(*) FROM batch_rows r WHERE r.batch_id = $1 AND r.state = 'issued' \
         AND EXISTS (SELECT 1 FROM ocsp_responses o WHERE o.serial = r.serial) \
         AND NOT EXISTS (SELECT 1 FROM ocsp_pending p WHERE p.serial = r.serial)";
    let mut issued_at = None;
    loop {
        let issued: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM batch_rows WHERE batch_id = $1 AND state = 'issued'",
        )
        .bind(&id)
        .fetch_one(store.pool())
        .await?;
        if issued == accepted && issued_at.is_none() {
            issued_at = Some(start.elapsed().as_secs_f64());
        }
        if issued_at.is_some() {
            let ready: i64 = sqlx::query_scalar(ready_sql)
                .bind(&id)
                .fetch_one(store.pool())
                .await?;
            if ready == accepted {
                break;
            }
        }
        let failed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM batch_rows WHERE batch_id = $1 AND state = 'failed'",
        )
        .bind(&id)
        .fetch_one(store.pool())
        .await?;
        anyhow::ensure!(failed == 0, "{failed} rows failed");
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(1800),
            "not done in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = start.elapsed().as_secs_f64();
    let (status, _) = api
        .send(
            axum::http::Method::GET,
            &format!("/api/v1/batches/{id}"),
            None,
        )
        .await?;
    anyhow::ensure!(status == 200, "batch status: {status}");
    let issued_now: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM certificates WHERE state = 'issued'")
            .fetch_one(store.pool())
            .await?;
    anyhow::ensure!(
        issued_now - issued_before >= accepted,
        "the store has {} new certificates for {accepted} rows",
        issued_now - issued_before
    );
    println!(
        "ecert bulk enrolment ({}, {} rows through POST /api/v1/batches): submitted and checked in {submitted:.2} s, last certificate issued at {:.2} s, every OCSP response ready at {total:.2} s: {:.0} certs/s",
        b.engine,
        b.n,
        issued_at.unwrap_or(total),
        b.n as f64 / total
    );
    drop(serve);
    Ok(())
}

/// Options of `ecert bench ocsp-sign`.
#[derive(Debug, clap::Args)]
pub struct OcspSignBench {
    /// Certificates (each gets two responses: SHA-1 and SHA-256 CertIDs).
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
}

/// `ecert bench ocsp-sign`: OCSP pre-signing and a mass revocation, in one fresh data
/// directory. Prints the crypto ceiling of a response (cores ÷ (one HSM signature + one P-256
/// verification, its self-check), each timed in this run); then signs the first responses of
/// `n` certificates (written straight into the store, queued as issuance queues them) and
/// prints responses per second as a share of that ceiling; then revokes all `n` as a
/// two-officer mass revocation does ([`ca_core::revocation::revoke_many`]) and times, from the
/// start of the revocation, the last OCSP response and the last CRL (full and partitions)
/// showing it — the signer's two duties run side by side, as in `ecert serve`.
pub async fn ocsp_sign(config: Config, b: OcspSignBench) -> anyhow::Result<()> {
    let (auth, report) = Authority::init(config.clone()).await?;
    if !report.existing.is_empty() {
        anyhow::bail!(
            "bench ocsp-sign makes its own CAs: give it a fresh data directory and database"
        );
    }
    let auth = Arc::new(auth);
    let ceiling = crypto_ceiling(&config, 2, 1).await?;
    let serials = fill(&auth, b.n, false).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    sqlx::query(
        "INSERT INTO ocsp_pending (serial, version, queued_at) SELECT serial, 1, $1 FROM certificates \
         WHERE issuer = 'individual' AND profile = 'personal' ON CONFLICT (serial) DO NOTHING",
    )
    .bind(now)
    .execute(auth.store().pool())
    .await?;
    // The CRLs as they stand before the revocation (so the run below publishes only what the
    // revocation changed).
    publish_due_crls(&auth).await?;
    let t = Instant::now();
    let signed = crate::serve::sign_all_due(&auth).await?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(signed >= b.n, "signed {signed} of {} serials", b.n);
    let rate = 2.0 * signed as f64 / secs;
    println!(
        "ecert OCSP pre-signing, {signed} serials (two responses each) in {secs:.1} s: {rate:.0} responses/s = {:.0}% of the crypto ceiling",
        100.0 * rate / ceiling
    );

    let parsed: Vec<ca_core::serial::SerialNumber> = serials
        .iter()
        .filter_map(|s| ca_core::serial::SerialNumber::from_hex(s))
        .collect();
    // The revocation, with the signer's OCSP and CRL duties running beside it as in `ecert
    // serve` (OCSP every 200 ms, CRLs every 5 s and once more after the last chunk).
    let t = Instant::now();
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let revocation = {
        let (auth, finished) = (auth.clone(), finished.clone());
        tokio::spawn(async move {
            let r = ca_core::revocation::revoke_many(
                auth.store(),
                &parsed,
                ca_core::revocation::Reason::Superseded,
                "bench",
            )
            .await;
            finished.store(true, Ordering::SeqCst);
            r.map(|counts| (counts, t.elapsed().as_secs_f64()))
        })
    };
    let (ocsp, crls) = tokio::join!(
        async {
            loop {
                let last = finished.load(Ordering::SeqCst);
                crate::serve::sign_all_due(&auth).await?;
                if last {
                    return Ok::<_, anyhow::Error>(t.elapsed().as_secs_f64());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
        async {
            let mut n = 0;
            loop {
                let last = finished.load(Ordering::SeqCst);
                n += publish_due_crls(&auth).await?;
                if last {
                    return Ok::<_, anyhow::Error>((t.elapsed().as_secs_f64(), n));
                }
                for _ in 0..50 {
                    if finished.load(Ordering::SeqCst) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    );
    let ((revoked, already, failed), recorded) = revocation.await??;
    anyhow::ensure!(
        revoked == b.n && already == 0 && failed == 0,
        "revoked {revoked}, already {already}, failed {failed}"
    );
    let (ocsp, (crls, published)) = (ocsp?, crls?);
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ocsp_pending")
        .fetch_one(auth.store().pool())
        .await?;
    anyhow::ensure!(pending == 0, "{pending} OCSP responses still due");
    let full = auth
        .store()
        .latest_crl(CaRole::Individual.name(), Scope::Full)
        .await?
        .map_or(0, |(_, der)| der.len());
    println!(
        "ecert mass revocation of {} certificates: recorded in {recorded:.1} s; every OCSP response shows it at {ocsp:.1} s; every CRL ({published} published, the full one {} bytes) at {crls:.1} s (target: both within 60 s for 100,000)",
        b.n, full
    );
    Ok(())
}

/// Publishes every CRL that is due now (full and partitions of each publishing CA), as the
/// signer's CRL duty does; returns how many.
async fn publish_due_crls(auth: &Authority) -> anyhow::Result<usize> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut n = 0;
    for role in auth.publishing_cas() {
        for scope in auth.crls_due(role, now, 3600).await? {
            auth.publish_crl(role, scope, "bench").await?;
            n += 1;
        }
    }
    Ok(n)
}
