//! Multi-Perspective Issuance Corroboration (TLS BR §3.2.2.9).
//!
//! The domain control check and the CAA check that the RA makes from this host's resolver (the
//! Primary Network Perspective, [`crate::dcv`]) are repeated by remote Network Perspectives:
//! `ecert perspective serve` instances placed elsewhere (at least 500 km apart, each with its
//! own recursive resolver in the same RIR region, per the BR). The CA asks each over HTTPS
//! (TLS 1.2+, the perspective's certificate checked against `ca_file`) with a bearer token,
//! in [`ask`]; no answer is cached or shared between perspectives.
//!
//! Quorum (BR §3.2.2.9 table): with 2 to 5 remote perspectives one may fail to corroborate,
//! with 6 or more two; and (from 2026-03-15) the perspectives that corroborate are in at least
//! two Regional Internet Registries' service regions. A perspective corroborates a domain
//! control check if it sees the same Random Value at the same record, and a CAA check if it
//! also finds that CAA permits this CA (a lookup failure there does not corroborate). The
//! number of remote perspectives follows the BR's phase-in ([`min_remote`]: five from
//! 2026-12-15); with `[dcv] mpic = "required"` (the default) and fewer, the RA refuses to
//! validate domains and to issue server certificates.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::config::{DcvConfig, Mpic, Perspective};
use crate::error::{Error, Result};

/// The path of a perspective's check.
pub const PATH: &str = "/mpic/v1/check";

/// One TXT record a perspective must find holding `value`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TxtCheck {
    /// The record's name.
    pub name: String,
    /// The Random Value expected.
    pub value: String,
}

/// What the CA asks a perspective.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CheckRequest {
    /// Domain control records.
    #[serde(default)]
    pub txt: Vec<TxtCheck>,
    /// Names whose CAA must permit one of `identities`.
    #[serde(default)]
    pub caa: Vec<String>,
    /// Mailbox domains whose CAA `issuemail` properties must permit one of `identities`
    /// (RFC 9495; S/MIME BR §4.2.2.1 asks remote perspectives to corroborate this check when
    /// the domain was validated by DNS, §3.2.2.1). A perspective that predates this field
    /// answers without it, and so corroborates nothing.
    #[serde(default)]
    pub caa_mail: Vec<String>,
    /// This CA's Issuer Domain Names.
    #[serde(default)]
    pub identities: Vec<String>,
}

/// A perspective's answer, one entry per asked item, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckResponse {
    /// Whether each TXT record held the value.
    pub txt: Vec<bool>,
    /// Whether CAA permits issuance for each name (a lookup failure is `false`).
    pub caa: Vec<bool>,
    /// Whether CAA permits a mailbox certificate at each mailbox domain.
    #[serde(default)]
    pub caa_mail: Vec<bool>,
}

/// Answers a [`CheckRequest`] from this host's resolver (what `ecert perspective serve` runs).
pub async fn answer(config: &DcvConfig, req: &CheckRequest) -> Result<CheckResponse> {
    let mut dcv = config.clone();
    dcv.caa_identities = req.identities.clone();
    let checker = crate::dcv::Checker::new(&dcv)?;
    let mut out = CheckResponse::default();
    for t in &req.txt {
        out.txt
            .push(checker.txt_holds(&t.name, &t.value).await.unwrap_or(false));
    }
    for d in &req.caa {
        out.caa.push(checker.caa(d).await.is_ok());
    }
    for d in &req.caa_mail {
        out.caa_mail.push(checker.caa_mail(d).await.is_ok());
    }
    Ok(out)
}

/// How many remote perspectives may fail to corroborate (BR §3.2.2.9 table); `None` when there
/// are too few for a quorum.
pub fn allowed_failures(remote: usize) -> Option<usize> {
    match remote {
        0 | 1 => None,
        2..=5 => Some(1),
        _ => Some(2),
    }
}

/// The fewest remote perspectives the BR's phase-in allows at `now` (TLS BR §3.2.2.9).
pub fn min_remote(now: time::OffsetDateTime) -> usize {
    let d = now.date();
    if d >= time::macros::date!(2026 - 12 - 15) {
        5
    } else if d >= time::macros::date!(2026 - 06 - 15) {
        4
    } else if d >= time::macros::date!(2026 - 03 - 15) {
        3
    } else {
        2
    }
}

/// Whether the corroborating perspectives must span two RIRs at `now` (from 2026-03-15).
fn two_rirs(now: time::OffsetDateTime) -> bool {
    now.date() >= time::macros::date!(2026 - 03 - 15)
}

/// Whether corroboration is needed and possible now; an error when it is required but cannot
/// be had with this configuration.
pub fn required(config: &DcvConfig) -> Result<bool> {
    required_at(config, time::OffsetDateTime::now_utc())
}

/// [`required`] at `now`.
pub fn required_at(config: &DcvConfig, now: time::OffsetDateTime) -> Result<bool> {
    let need = min_remote(now);
    match config.mpic {
        Mpic::Off => Ok(false),
        Mpic::Required if config.perspectives.len() < need => Err(Error::Config(format!(
            "dcv.mpic = \"required\" needs at least {need} [[dcv.perspectives]] now (TLS BR §3.2.2.9), {} are configured",
            config.perspectives.len()
        ))),
        Mpic::Required => Ok(true),
    }
}

/// Asks every remote perspective (concurrently, each over its own connection) and returns
/// their answers: `None` for a perspective that did not answer properly.
pub async fn ask(config: &DcvConfig, req: &CheckRequest) -> Vec<(String, Option<CheckResponse>)> {
    let body = serde_json::to_vec(req).unwrap_or_default();
    let handles: Vec<_> = config
        .perspectives
        .iter()
        .map(|p| {
            let (p, body, req, timeout) =
                (p.clone(), body.clone(), req.clone(), config.timeout_seconds);
            tokio::spawn(async move {
                let answer = ask_one(&p, body, timeout, &req).await;
                if let Err(e) = &answer {
                    tracing::warn!(perspective = p.name, error = %e, "perspective did not answer");
                }
                (p.name, answer.ok())
            })
        })
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for (h, p) in handles.into_iter().zip(&config.perspectives) {
        out.push(h.await.unwrap_or_else(|_| (p.name.clone(), None)));
    }
    out
}

/// An HTTPS-only HTTP/1.1 client whose servers are checked against the PEM file `ca_file`
/// (the perspectives; the audit witness service).
pub(crate) fn https_client(
    ca_file: &std::path::Path,
) -> Result<
    Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<bytes::Bytes>,
    >,
> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls(ca_file)?)
        .https_only()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// A TLS client configuration (ring, TLS 1.2+) that trusts only the certificates in the PEM
/// file `ca_file`: for the remote perspectives here, and for a front instance's link to the
/// signing instance.
pub fn client_tls(ca_file: &std::path::Path) -> Result<rustls::ClientConfig> {
    let bad = |what: String| Error::Config(format!("{}: {what}", ca_file.display()));
    let pem = std::fs::read(ca_file).map_err(|e| Error::Io {
        context: format!("reading {}", ca_file.display()),
        source: e,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for block in pem::parse_many(&pem)
        .map_err(|e| bad(e.to_string()))?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
    {
        roots
            .add(rustls::pki_types::CertificateDer::from(
                block.into_contents(),
            ))
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

async fn ask_one(
    p: &Perspective,
    body: Vec<u8>,
    timeout_seconds: u32,
    req: &CheckRequest,
) -> Result<CheckResponse> {
    let fail = |what: &str| Error::Dns(format!("perspective {}: {what}", p.name));
    let token = std::fs::read_to_string(&p.token_file).map_err(|e| Error::Io {
        context: format!("reading {}", p.token_file.display()),
        source: e,
    })?;
    let client = https_client(&p.ca_file)?;
    let request = hyper::Request::post(format!("{}{PATH}", p.url.trim_end_matches('/')))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", token.trim()))
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| fail(&e.to_string()))?;
    let timeout = Duration::from_secs(u64::from(timeout_seconds) * 4);
    let resp = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| fail("timed out"))?
        .map_err(|e| fail(&e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(&format!("HTTP {}", resp.status())));
    }
    let bytes = tokio::time::timeout(timeout, resp.into_body().collect())
        .await
        .map_err(|_| fail("timed out"))?
        .map_err(|e| fail(&e.to_string()))?
        .to_bytes();
    let answer: CheckResponse =
        serde_json::from_slice(&bytes).map_err(|e| fail(&format!("bad answer: {e}")))?;
    if !answers_every_item(req, &answer) {
        return Err(fail("the answer does not match the question"));
    }
    Ok(answer)
}

/// Whether `answer` has an entry for each item of `req`: one that does not (a perspective too
/// old to know an item, or a confused one) is treated as no answer at all.
fn answers_every_item(req: &CheckRequest, answer: &CheckResponse) -> bool {
    answer.txt.len() == req.txt.len()
        && answer.caa.len() == req.caa.len()
        && answer.caa_mail.len() == req.caa_mail.len()
}

/// Whether the answers corroborate every item: for each asked item, at most
/// [`allowed_failures`] perspectives failed to confirm it (a perspective that did not answer
/// fails every item), and (from 2026-03-15) the ones that confirmed it are in at least two
/// RIRs. `answers[k]` is the answer of `perspectives[k]`. Returns the items that were not
/// corroborated, by index (txt first, then caa, then caa_mail).
pub fn uncorroborated(
    req: &CheckRequest,
    answers: &[(String, Option<CheckResponse>)],
    perspectives: &[Perspective],
    now: time::OffsetDateTime,
) -> Vec<usize> {
    let (txt, caa) = (req.txt.len(), req.caa.len());
    let items = txt + caa + req.caa_mail.len();
    let Some(allowed) = allowed_failures(perspectives.len()) else {
        return (0..items).collect();
    };
    (0..items)
        .filter(|&i| {
            let confirming: Vec<&Perspective> = answers
                .iter()
                .zip(perspectives)
                .filter(|((_, a), _)| {
                    a.as_ref().is_some_and(|a| {
                        let yes = if i < txt {
                            a.txt.get(i)
                        } else if i < txt + caa {
                            a.caa.get(i - txt)
                        } else {
                            a.caa_mail.get(i - txt - caa)
                        };
                        yes.copied().unwrap_or(false)
                    })
                })
                .map(|(_, p)| p)
                .collect();
            let mut rirs: Vec<&str> = confirming.iter().map(|p| p.rir.as_str()).collect();
            rirs.sort_unstable();
            rirs.dedup();
            perspectives.len().saturating_sub(confirming.len()) > allowed
                || (two_rirs(now) && rirs.len() < 2)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(txt: usize, caa: usize) -> CheckRequest {
        CheckRequest {
            txt: (0..txt)
                .map(|i| TxtCheck {
                    name: format!("_ecert-challenge.n{i}.example"),
                    value: "v".into(),
                })
                .collect(),
            caa: (0..caa).map(|i| format!("n{i}.example")).collect(),
            ..Default::default()
        }
    }

    fn yes(txt: Vec<bool>, caa: Vec<bool>) -> (String, Option<CheckResponse>) {
        (
            "p".into(),
            Some(CheckResponse {
                txt,
                caa,
                caa_mail: vec![],
            }),
        )
    }

    fn perspectives(rirs: &[&str]) -> Vec<Perspective> {
        rirs.iter()
            .enumerate()
            .map(|(i, r)| Perspective {
                name: format!("p{i}"),
                url: format!("https://10.0.0.{i}"),
                token_file: "t".into(),
                ca_file: "c".into(),
                rir: (*r).into(),
            })
            .collect()
    }

    fn now() -> time::OffsetDateTime {
        time::macros::datetime!(2026-11-24 0:00 UTC)
    }

    #[test]
    fn phase_in_follows_the_br_timeline() {
        use time::macros::datetime;
        assert_eq!(min_remote(datetime!(2025-10-01 0:00 UTC)), 2);
        assert_eq!(min_remote(datetime!(2026-03-15 0:00 UTC)), 3);
        assert_eq!(min_remote(datetime!(2026-06-15 0:00 UTC)), 4);
        assert_eq!(min_remote(datetime!(2026-12-15 0:00 UTC)), 5);
    }

    #[test]
    fn corroborating_perspectives_span_two_rirs() {
        let r = req(1, 0);
        let agree = yes(vec![true], vec![]);
        let against = yes(vec![false], vec![]);
        let answers = [agree.clone(), agree.clone(), agree.clone(), against];
        assert_eq!(
            uncorroborated(
                &r,
                &answers,
                &perspectives(&["APNIC", "APNIC", "APNIC", "ARIN"]),
                now()
            ),
            vec![0],
            "the three that agree are all in one RIR"
        );
        assert!(uncorroborated(
            &r,
            &answers,
            &perspectives(&["APNIC", "APNIC", "RIPE", "ARIN"]),
            now()
        )
        .is_empty());
    }

    #[test]
    fn quorum_follows_the_br_table() {
        assert_eq!(allowed_failures(1), None);
        assert_eq!(allowed_failures(2), Some(1));
        assert_eq!(allowed_failures(5), Some(1));
        assert_eq!(allowed_failures(6), Some(2));
    }

    #[test]
    fn one_dissent_of_three_is_allowed_two_are_not() {
        let r = req(1, 1);
        let agree = yes(vec![true], vec![true]);
        let silent = ("p".to_string(), None);
        let against = yes(vec![false], vec![true]);
        // The first two are in different RIRs, so the RIR rule holds whenever both agree.
        let ps = perspectives(&["APNIC", "RIPE", "ARIN"]);
        let check =
            |answers: &[(String, Option<CheckResponse>)]| uncorroborated(&r, answers, &ps, now());
        assert!(check(&[agree.clone(), agree.clone(), against.clone()]).is_empty());
        assert!(check(&[agree.clone(), agree.clone(), silent.clone()]).is_empty());
        assert_eq!(check(&[agree.clone(), against.clone(), silent]), vec![0]);
        // Each item counts on its own.
        let caa_no = yes(vec![true], vec![false]);
        assert_eq!(check(&[agree, caa_no.clone(), caa_no]), vec![1]);
        // Too few perspectives for any quorum: nothing is corroborated.
        assert_eq!(uncorroborated(&r, &[], &[], now()), vec![0, 1]);
    }

    /// Mailbox domains' CAA (RFC 9495) are items after the TXT and CAA ones; a perspective
    /// that answers without them (one that predates the field) corroborates none.
    #[test]
    fn mailbox_caa_is_corroborated_item_by_item() {
        let r = CheckRequest {
            caa_mail: vec!["a.example".into(), "b.example".into()],
            ..req(1, 1)
        };
        let answer = |mail: Vec<bool>| {
            (
                "p".to_string(),
                Some(CheckResponse {
                    txt: vec![true],
                    caa: vec![true],
                    caa_mail: mail,
                }),
            )
        };
        let ps = perspectives(&["APNIC", "RIPE", "ARIN"]);
        let agree = answer(vec![true, true]);
        let b_no = answer(vec![true, false]);
        assert!(uncorroborated(
            &r,
            &[agree.clone(), agree.clone(), b_no.clone()],
            &ps,
            now()
        )
        .is_empty());
        assert_eq!(
            uncorroborated(&r, &[agree.clone(), b_no.clone(), b_no], &ps, now()),
            vec![3]
        );
        let old = answer(vec![]);
        assert_eq!(
            uncorroborated(&r, &[agree, old.clone(), old], &ps, now()),
            vec![2, 3]
        );
        // The wire form: an old perspective's answer reads with no mailbox items, and is not
        // taken as an answer (ask_one gives None for it).
        let parsed: CheckResponse = serde_json::from_str(r#"{"txt":[true],"caa":[true]}"#).unwrap();
        assert!(parsed.caa_mail.is_empty());
        assert!(!answers_every_item(&r, &parsed));
        assert!(answers_every_item(
            &r,
            answer(vec![true, false]).1.as_ref().unwrap()
        ));
    }
}
