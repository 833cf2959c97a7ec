//! Domain control validation and CAA for server certificates.
//!
//! - **Domain control** by TLS BR §3.2.2.4.7 (DNS Change): the RA gives each server application
//!   one Random Value (128 bits, above the 112 the BR's definition asks for); the applicant
//!   publishes it as a TXT record at `_ecert-challenge.<name>` (an Authorization Domain Name
//!   prefixed with an underscore label) for every DNS name applied for. A value older than 30
//!   days is not used; a new one is made.
//! - **CAA** by TLS BR §3.2.2.8 and RFC 8659: before each issuance, for every DNS name, the
//!   relevant RRset is the CAA RRset of the name or of its closest ancestor that has one (RFC
//!   8659 §3). Issuance is allowed when there is none, when it holds no `issue` property, or when
//!   an `issue` property names one of this CA's Issuer Domain Names (`[dcv] caa_identities`); an
//!   unknown property marked critical forbids it (RFC 8659 §4.1). A lookup failure forbids it too
//!   (the BR's "Insecure" exception is not used).
//!
//! Both ask the DNSSEC-validating recursive resolver named by `[dcv] resolver` (TLS BR
//! §3.2.2.4 and §3.2.2.8.1, in force since 2026-03-15: DNSSEC validation back to the IANA root
//! trust anchor). ecert does not validate signatures itself; it asks a local validating
//! resolver (Unbound) with the AD bit set (RFC 6840 §5.7) and EDNS, over its own small stub:
//!
//! - **The resolver must be on this host** (RFC 4035 §4.9.3: a stub trusts the AD bit only
//!   over a secure channel; loopback is one). `Config::validate` refuses another address while
//!   `[dcv] dnssec = "required"`.
//! - **It must prove it validates**: before the first lookup of a check, the DNSKEY RRset of
//!   `[dcv] dnssec_probe` (the root, `.`) must come back with AD. A resolver that does not
//!   validate fails closed: [`Error::Dnssec`].
//! - **Bogus data fails closed**: a validating resolver answers SERVFAIL for a signature that
//!   does not verify, a signed zone's record without its RRSIG ("unsigned where signed"), an
//!   expired signature or a missing denial-of-existence proof, with an Extended DNS Error
//!   (RFC 8914, codes 1–12). That is [`Error::Dnssec`], naming the record and the resolver's
//!   reason; any other SERVFAIL is [`Error::Dns`].
//! - **Secure and insecure answers are used**: AD set means the chain of trust validated
//!   (NODATA and NXDOMAIN included: their NSEC/NSEC3 proofs validated); AD clear on a good
//!   answer means the zone is provably unsigned (an insecure delegation), which the BR allows.
//!
//! Nothing is cached: each check builds a new [`Checker`], and the resolver's own cache is the
//! operator's (keep its TTL caps short). A check is the Primary Network Perspective; remote
//! perspectives corroborate what it found ([`crate::mpic`], BR §3.2.2.9), each asking its own
//! local validating resolver.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::caa::{Property, CAA};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{DcvConfig, Dnssec};
use crate::error::{Error, Result};

/// The underscore label in front of each name for the TXT record (BR §3.2.2.4.7 item 2).
pub const CHALLENGE_LABEL: &str = "_ecert-challenge";
/// A Random Value is not used after this many days (BR §3.2.2.4.7).
pub const TOKEN_DAYS: i64 = 30;
/// The method recorded with each validation.
pub const METHOD: &str = "TLS BR 2.2.6 §3.2.2.4.7 DNS Change (TXT)";
/// How long a domain validation may be reused for an issuance (TLS BR §4.2.1: 200 days for
/// validations from 2026-03-15; 100 days from 2027-03-15, 10 days from 2029-03-15).
pub fn reuse_days(now: time::OffsetDateTime) -> i64 {
    let d = now.date();
    if d >= time::macros::date!(2029 - 03 - 15) {
        10
    } else if d >= time::macros::date!(2027 - 03 - 15) {
        100
    } else {
        200
    }
}

/// The TXT record name an applicant publishes for `domain`.
pub fn record_name(domain: &str) -> String {
    format!("{CHALLENGE_LABEL}.{domain}")
}

/// Asks the configured resolver.
#[derive(Debug)]
pub struct Checker {
    resolver: SocketAddr,
    timeout: Duration,
    dnssec: Dnssec,
    probe: String,
    /// The probe succeeded for this check.
    validating: AtomicBool,
    identities: Vec<String>,
}

/// An answer that is either records or a definite "none" (NOERROR/NXDOMAIN without answers).
enum Answer<T> {
    Records(Vec<T>),
    Empty,
}

/// The UDP payload size offered (RFC 9715 / DNS Flag Day 2020: 1232 avoids fragmentation).
const UDP_PAYLOAD: u16 = 1232;
/// Tries per query over UDP before giving up (each with the configured timeout).
const ATTEMPTS: u32 = 2;

impl Checker {
    /// A checker for one check: no cache.
    pub fn new(config: &DcvConfig) -> Result<Checker> {
        let resolver: SocketAddr = config.resolver.parse().map_err(|_| {
            Error::Config("dcv.resolver must be IP:PORT of a validating resolver".into())
        })?;
        if config.dnssec == Dnssec::Required && !resolver.ip().is_loopback() {
            return Err(Error::Config(
                "dcv.resolver must be on a loopback address while dcv.dnssec = \"required\" (RFC 4035 §4.9.3)".into(),
            ));
        }
        Ok(Checker {
            resolver,
            timeout: Duration::from_secs(u64::from(config.timeout_seconds.max(1))),
            dnssec: config.dnssec,
            probe: config.dnssec_probe.clone(),
            validating: AtomicBool::new(false),
            identities: config
                .caa_identities
                .iter()
                .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        })
    }

    /// Proves once per check that the resolver validates: the probe zone's DNSKEY RRset must
    /// come back with AD set.
    async fn ensure_validating(&self) -> Result<()> {
        if self.dnssec == Dnssec::Off || self.validating.load(Ordering::Relaxed) {
            return Ok(());
        }
        let name = fqdn(&self.probe)?;
        let m = self.exchange(&name, RecordType::DNSKEY).await?;
        let has_keys = m
            .answers()
            .iter()
            .any(|r| r.record_type() == RecordType::DNSKEY);
        if m.response_code() != ResponseCode::NoError || !has_keys || !m.authentic_data() {
            return Err(Error::Dnssec(format!(
                "the resolver {} did not return the DNSKEY records of {} as validated (AD): it \
                 must be a DNSSEC-validating resolver with the {} trust anchor",
                self.resolver,
                self.probe,
                if self.probe.trim_end_matches('.').is_empty() {
                    "root"
                } else {
                    "probe zone's"
                }
            )));
        }
        self.validating.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Answer<RData>> {
        self.ensure_validating().await?;
        let fqdn = fqdn(name)?;
        let m = self.exchange(&fqdn, rtype).await?;
        match m.response_code() {
            ResponseCode::NoError => {
                let records: Vec<RData> = m
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .map(|r| r.data().clone())
                    .collect();
                Ok(if records.is_empty() {
                    Answer::Empty
                } else {
                    Answer::Records(records)
                })
            }
            ResponseCode::NXDomain => Ok(Answer::Empty),
            ResponseCode::ServFail => match extended_error(&m) {
                Some((code, text))
                    if self.dnssec == Dnssec::Required && (1..=12).contains(&code) =>
                {
                    Err(Error::Dnssec(format!(
                        "{rtype} {name}: the resolver found the answer bogus (EDE {code}{}{text})",
                        if text.is_empty() { "" } else { ": " }
                    )))
                }
                Some((code, text)) => Err(Error::Dns(format!(
                    "{rtype} {name}: SERVFAIL (EDE {code} {text})"
                ))),
                None => Err(Error::Dns(format!("{rtype} {name}: SERVFAIL"))),
            },
            other => Err(Error::Dns(format!("{rtype} {name}: {other}"))),
        }
    }

    /// One question to the resolver, AD and EDNS set, CD clear: over UDP (retried), and over
    /// TCP when the answer is truncated. The answer must echo the id and the question.
    async fn exchange(&self, name: &Name, rtype: RecordType) -> Result<Message> {
        let id: u16 = rand::random();
        let mut q = Message::new();
        q.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .set_authentic_data(true)
            .set_checking_disabled(false);
        let mut query = Query::query(name.clone(), rtype);
        query.set_query_class(DNSClass::IN);
        q.add_query(query);
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        q.set_edns(edns);
        let bytes = q
            .to_vec()
            .map_err(|e| Error::Dns(format!("{rtype} {name}: {e}")))?;
        let fail = |what: String| Error::Dns(format!("{rtype} {name}: {what}"));
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match tokio::time::timeout(self.timeout, self.udp(&bytes)).await {
                Ok(Ok(reply)) => match check_reply(&reply, id, name, rtype) {
                    Ok(m) if m.truncated() => {
                        let reply = tokio::time::timeout(self.timeout, self.tcp(&bytes))
                            .await
                            .map_err(|_| {
                                fail(format!("no answer over TCP from {}", self.resolver))
                            })?
                            .map_err(|e| fail(format!("TCP to {}: {e}", self.resolver)))?;
                        return check_reply(&reply, id, name, rtype).map_err(fail);
                    }
                    Ok(m) => return Ok(m),
                    // A stray or forged datagram: ask again.
                    Err(e) => last = e,
                },
                Ok(Err(e)) => last = format!("UDP to {}: {e}", self.resolver),
                Err(_) => {
                    last = format!("no answer from {} within {:?}", self.resolver, self.timeout)
                }
            }
        }
        Err(fail(last))
    }

    async fn udp(&self, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let local: SocketAddr = if self.resolver.is_ipv4() {
            "0.0.0.0:0".parse().unwrap_or_else(|_| unreachable!())
        } else {
            "[::]:0".parse().unwrap_or_else(|_| unreachable!())
        };
        let sock = tokio::net::UdpSocket::bind(local).await?;
        sock.connect(self.resolver).await?;
        sock.send(bytes).await?;
        let mut buf = vec![0u8; 65_535];
        let n = sock.recv(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }

    async fn tcp(&self, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut s = tokio::net::TcpStream::connect(self.resolver).await?;
        let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        s.write_all(&framed).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }

    /// Whether the TXT record at `_ecert-challenge.<domain>` holds `token` (BR §3.2.2.4.7).
    /// A record split into several character-strings is joined first (RFC 7208 §3.3 style).
    pub async fn domain_control(&self, domain: &str, token: &str) -> Result<bool> {
        self.txt_holds(&record_name(domain), token).await
    }

    /// Whether a TXT record at `name` holds exactly `value`.
    pub async fn txt_holds(&self, name: &str, value: &str) -> Result<bool> {
        let Answer::Records(records) = self.lookup(name, RecordType::TXT).await? else {
            return Ok(false);
        };
        Ok(records.iter().any(|r| match r {
            RData::TXT(t) => {
                let joined: Vec<u8> = t
                    .txt_data()
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                joined == value.as_bytes()
            }
            _ => false,
        }))
    }

    /// Whether CAA lets this CA issue for `domain` (RFC 8659 §3 and §4): `Ok(())`, or
    /// [`Error::CaaForbids`] naming where the relevant RRset was found, or [`Error::Dns`] /
    /// [`Error::Dnssec`].
    pub async fn caa(&self, domain: &str) -> Result<()> {
        self.caa_for(domain, CaaFor::DomainName).await
    }

    /// Whether CAA lets this CA issue a certificate naming a mailbox at `domain` (RFC 9495 §4,
    /// S/MIME BR §4.2.2.1): the same Relevant RRset as [`Checker::caa`], decided by its
    /// `issuemail` properties ([`permits_mail`]).
    pub async fn caa_mail(&self, domain: &str) -> Result<()> {
        self.caa_for(domain, CaaFor::Mailbox).await
    }

    /// [`Checker::caa`] or [`Checker::caa_mail`], as `what` says.
    pub async fn caa_for(&self, domain: &str, what: CaaFor) -> Result<()> {
        let mut at = domain.trim_end_matches('.').to_ascii_lowercase();
        loop {
            if let Answer::Records(records) = self.lookup(&at, RecordType::CAA).await? {
                let caa: Vec<CAA> = records
                    .into_iter()
                    .filter_map(|r| match r {
                        RData::CAA(c) => Some(c),
                        _ => None,
                    })
                    .collect();
                if !caa.is_empty() {
                    let decision = match what {
                        CaaFor::DomainName => permits(&caa, &self.identities),
                        CaaFor::Mailbox => permits_mail(&caa, &self.identities),
                    };
                    return decision.map_err(|reason| Error::CaaForbids {
                        domain: domain.to_string(),
                        reason: format!("CAA at {at}: {reason}"),
                    });
                }
            }
            // Climb to the parent; the root is not asked (RFC 8659 §3).
            match at.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => at = parent.to_string(),
                _ => return Ok(()),
            }
        }
    }
}

fn fqdn(name: &str) -> Result<Name> {
    let n = name.trim_end_matches('.');
    Name::from_ascii(if n.is_empty() {
        ".".to_string()
    } else {
        format!("{n}.")
    })
    .map_err(|e| Error::Dns(format!("{name}: {e}")))
}

/// The reply, if it answers our question: a response with our id and the same question
/// (the name compared case-insensitively).
fn check_reply(
    bytes: &[u8],
    id: u16,
    name: &Name,
    rtype: RecordType,
) -> std::result::Result<Message, String> {
    let m = Message::from_vec(bytes).map_err(|e| format!("malformed answer: {e}"))?;
    let same_question = matches!(m.queries(), [q] if q.query_type() == rtype
        && q.name().to_ascii().eq_ignore_ascii_case(&name.to_ascii()));
    if m.id() != id || m.message_type() != MessageType::Response || !same_question {
        return Err("an answer that does not match the question".into());
    }
    Ok(m)
}

/// The Extended DNS Error of an answer (RFC 8914: EDNS option 15, INFO-CODE and EXTRA-TEXT).
fn extended_error(m: &Message) -> Option<(u16, String)> {
    let edns = m.extensions().as_ref()?;
    edns.options()
        .as_ref()
        .iter()
        .find_map(|(code, opt)| match (code, opt) {
            (EdnsCode::Unknown(15), EdnsOption::Unknown(15, data)) if data.len() >= 2 => Some((
                u16::from_be_bytes([data[0], data[1]]),
                String::from_utf8_lossy(&data[2..])
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect(),
            )),
            _ => None,
        })
}

/// Which property decides a CAA check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaaFor {
    /// `issue` (RFC 8659): a certificate naming a domain.
    DomainName,
    /// `issuemail` (RFC 9495): a certificate naming a mailbox at the domain.
    Mailbox,
}

/// RFC 9495's property tag (hickory knows it as an unknown tag; tags match case-insensitively,
/// RFC 8659 §4.1).
fn is_issuemail(tag: &Property) -> bool {
    matches!(tag, Property::Unknown(t) if t.eq_ignore_ascii_case("issuemail"))
}

/// A property this CA does not process marked critical: RFC 8659 §4.1 forbids issuance. The
/// CA processes `issue`, `issuewild`, `iodef` and `issuemail`, whichever certificate it is
/// deciding on (an `issuemail` record marked critical does not stop a server certificate).
fn unknown_critical(rrset: &[CAA]) -> Option<String> {
    rrset
        .iter()
        .find(|c| {
            c.issuer_critical() && matches!(c.tag(), Property::Unknown(_)) && !is_issuemail(c.tag())
        })
        .map(|c| format!("unknown property {:?} is marked critical", c.tag().as_str()))
}

/// The RFC 8659 §4 decision on a relevant RRset for a name that is not a wildcard: `issuewild`
/// does not apply; `iodef` is not acted on (the BR allows this).
pub fn permits(rrset: &[CAA], identities: &[String]) -> std::result::Result<(), String> {
    if let Some(e) = unknown_critical(rrset) {
        return Err(e);
    }
    let issue: Vec<&CAA> = rrset
        .iter()
        .filter(|c| matches!(c.tag(), Property::Issue))
        .collect();
    if issue.is_empty() {
        return Ok(());
    }
    // A value that does not parse authorises no CA (RFC 8659 §4.2).
    let ours = issue.iter().any(|c| match c.value_as_issue() {
        Ok((Some(name), _)) => names_us(&name.to_ascii(), identities),
        _ => false,
    });
    if ours {
        Ok(())
    } else {
        Err("its issue records do not name this CA".into())
    }
}

/// Whether an issuer-domain-name is one of `identities` (compared as DNS names: any case, with
/// or without the final dot, on either side).
fn names_us(name: &str, identities: &[String]) -> bool {
    let norm = |n: &str| n.trim().trim_end_matches('.').to_ascii_lowercase();
    let n = norm(name);
    identities.iter().any(|i| norm(i) == n)
}

/// The RFC 9495 §4 decision on a relevant RRset for a mailbox's domain: with no `issuemail`
/// property any CA may issue (`issue` and `issuewild` do not restrict mailboxes); otherwise one
/// must name this CA. A value that does not follow the `issue` syntax (RFC 9495 §3) counts as
/// an empty issuer-domain-name, which names no CA.
pub fn permits_mail(rrset: &[CAA], identities: &[String]) -> std::result::Result<(), String> {
    if let Some(e) = unknown_critical(rrset) {
        return Err(e);
    }
    let issuemail: Vec<&CAA> = rrset.iter().filter(|c| is_issuemail(c.tag())).collect();
    if issuemail.is_empty() {
        return Ok(());
    }
    let ours = issuemail.iter().any(|c| {
        // RFC 8659 §4.2's syntax allows blanks around the issuer-domain-name.
        let raw = c.raw_value();
        let split = raw.iter().position(|b| *b == b';').unwrap_or(raw.len());
        let (name, rest) = raw.split_at(split);
        let value = [name.trim_ascii(), rest].concat();
        match hickory_proto::rr::rdata::caa::read_issuer(&value) {
            Ok((Some(name), _)) => names_us(&name.to_ascii(), identities),
            _ => false,
        }
    });
    if ours {
        Ok(())
    } else {
        Err("its issuemail records do not name this CA (RFC 9495)".into())
    }
}

#[cfg(test)]
pub(crate) mod rig;

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::caa::Value;

    fn checker(resolver: SocketAddr, dnssec: Dnssec) -> Checker {
        Checker::new(&DcvConfig {
            resolver: resolver.to_string(),
            dnssec,
            dnssec_probe: rig::ZONE.into(),
            caa_identities: ids(),
            timeout_seconds: 3,
            ..Default::default()
        })
        .unwrap()
    }

    /// Issue 12, defect 3, against real servers (Knot serving an NSEC3-signed zone, Unbound
    /// validating it): a valid TXT passes; a CAA NODATA proven by NSEC3 permits; a TXT whose
    /// RRSIG was stripped or tampered is refused with [`Error::Dnssec`] naming the resolver's
    /// Extended DNS Error; a resolver that does not validate (the authoritative server itself)
    /// fails the probe, so nothing is concluded from it.
    #[tokio::test]
    async fn dnssec_is_enforced_against_a_signed_zone() {
        let rig = rig::Rig::start();
        let c = checker(rig.resolver, Dnssec::Required);
        let at = |d: &str| format!("_ecert-challenge.{d}.example.test");
        assert!(
            c.txt_holds(&at("www"), rig::TOKEN).await.unwrap(),
            "the valid TXT (logs in {})",
            rig.dir().display()
        );
        assert!(!c.txt_holds(&at("www"), "another value").await.unwrap());
        assert!(!c.txt_holds(&at("nosuch"), rig::TOKEN).await.unwrap());
        c.caa("www.example.test").await.unwrap();
        // RFC 9495 through a real validating resolver: issuemail decides mailboxes, and the
        // RRset found at a parent applies to its subdomains (RFC 8659 §3).
        c.caa_mail("www.example.test").await.unwrap();
        c.caa_mail("ourmail.example.test").await.unwrap();
        c.caa_mail("staff.ourmail.example.test").await.unwrap();
        match c.caa_mail("staff.othermail.example.test").await {
            Err(Error::CaaForbids { reason, .. }) => {
                assert!(reason.contains("CAA at othermail.example.test"), "{reason}")
            }
            other => panic!("issuemail naming another CA: {other:?}"),
        }
        assert!(matches!(
            c.caa("ourmail.example.test").await,
            Err(Error::CaaForbids { .. })
        ));
        c.caa("othermail.example.test").await.unwrap();
        for (name, ede) in [("stripped", "EDE 10"), ("tampered", "EDE 6")] {
            match c.txt_holds(&at(name), name).await {
                Err(Error::Dnssec(m)) => assert!(m.contains(ede), "{name}: {m}"),
                other => panic!("{name}: not refused as bogus: {other:?}"),
            }
            match c
                .caa(&format!("_ecert-challenge.{name}.example.test"))
                .await
            {
                Ok(()) | Err(Error::Dnssec(_)) => {}
                other => panic!("{name} CAA: {other:?}"),
            }
        }
        // The authoritative server answers, but not as a validating resolver: refused.
        let unvalidated = checker(rig.authoritative, Dnssec::Required);
        match unvalidated.txt_holds(&at("www"), rig::TOKEN).await {
            Err(Error::Dnssec(m)) => assert!(m.contains("validated"), "{m}"),
            other => panic!("a non-validating resolver was trusted: {other:?}"),
        }
        // With enforcement off the same server is used as it answers (tests only).
        let off = checker(rig.authoritative, Dnssec::Off);
        assert!(off.txt_holds(&at("www"), rig::TOKEN).await.is_ok());
        // An AD bit is trusted only from this host (RFC 4035 §4.9.3).
        let remote = Checker::new(&DcvConfig {
            resolver: "192.0.2.53:53".into(),
            ..Default::default()
        });
        assert!(matches!(remote, Err(Error::Config(_))));
    }

    fn issue(name: Option<&str>) -> CAA {
        CAA::new_issue(
            false,
            name.map(|n| Name::from_ascii(n).unwrap()),
            Vec::new(),
        )
    }

    fn ids() -> Vec<String> {
        vec!["pki.example.hk".to_string()]
    }

    #[test]
    fn issue_naming_this_ca_permits() {
        assert!(permits(
            &[issue(Some("other.example")), issue(Some("PKI.example.hk."))],
            &ids()
        )
        .is_ok());
    }

    #[test]
    fn issue_naming_others_or_nobody_forbids() {
        assert!(permits(&[issue(Some("letsencrypt.org"))], &ids()).is_err());
        // `0 issue ";"`: no CA may issue.
        assert!(permits(&[issue(None)], &ids()).is_err());
        // No identities configured: any issue record forbids.
        assert!(permits(&[issue(Some("pki.example.hk"))], &[]).is_err());
    }

    #[test]
    fn only_iodef_or_issuewild_does_not_restrict() {
        let iodef = CAA::new_iodef(false, "mailto:security@example.hk".parse().unwrap());
        let wild = CAA::new_issuewild(
            false,
            Some(Name::from_ascii("other.example").unwrap()),
            Vec::new(),
        );
        assert!(permits(&[iodef, wild], &ids()).is_ok());
    }

    #[test]
    fn unknown_critical_property_forbids_even_with_our_issue() {
        let mut unknown = CAA::new_issue(true, None, Vec::new());
        unknown.set_tag(Property::Unknown("tbs".into()));
        unknown.set_value(Value::Unknown(b"x".to_vec()));
        assert!(permits(&[issue(Some("pki.example.hk")), unknown.clone()], &ids()).is_err());
        // The same property without the critical flag is ignored.
        unknown.set_issuer_critical(false);
        assert!(permits(&[issue(Some("pki.example.hk")), unknown], &ids()).is_ok());
    }

    /// An `issuemail` record (RFC 9495 §3) with `value` as its raw property value.
    fn issuemail(critical: bool, value: &str) -> CAA {
        let mut c = CAA::new_issue(critical, None, Vec::new());
        c.set_tag(Property::Unknown("issuemail".into()));
        c.set_value(Value::Unknown(value.as_bytes().to_vec()));
        c
    }

    #[test]
    fn issuemail_decides_mailboxes_and_issue_does_not() {
        // No issuemail: any CA may certify mailboxes, whatever `issue` says (RFC 9495 §4).
        assert!(permits_mail(&[issue(Some("letsencrypt.org"))], &ids()).is_ok());
        assert!(permits_mail(&[issue(None)], &ids()).is_ok());
        // One naming this CA among others permits; the tag matches in any case.
        let mut upper = issuemail(false, " PKI.example.hk ; account=1");
        upper.set_tag(Property::Unknown("IssueMail".into()));
        assert!(permits_mail(&[issuemail(false, "other.example"), upper.clone()], &ids()).is_ok());
        // Identities as configured: any case, a final dot.
        assert!(permits_mail(&[upper], &["Pki.Example.HK.".to_string()]).is_ok());
        // Naming others, naming nobody (`;`), or not following the syntax: refused.
        for v in [
            "other.example",
            ";",
            "",
            "pki.example.hk;;bad key=",
            "not a name!",
        ] {
            assert!(
                permits_mail(&[issuemail(false, v)], &ids()).is_err(),
                "issuemail {v:?}"
            );
        }
        // issuemail marked critical is understood: it neither stops a server certificate ...
        assert!(permits(&[issuemail(true, "other.example")], &ids()).is_ok());
        // ... nor lets an unknown critical property through for mailboxes.
        let mut unknown = CAA::new_issue(true, None, Vec::new());
        unknown.set_tag(Property::Unknown("tbs".into()));
        unknown.set_value(Value::Unknown(b"x".to_vec()));
        assert!(permits_mail(&[issuemail(false, "pki.example.hk"), unknown], &ids()).is_err());
    }

    #[test]
    fn reuse_period_follows_the_br_schedule() {
        use time::macros::datetime;
        assert_eq!(reuse_days(datetime!(2026-11-24 0:00 UTC)), 200);
        assert_eq!(reuse_days(datetime!(2027-03-15 0:00 UTC)), 100);
        assert_eq!(reuse_days(datetime!(2029-03-15 0:00 UTC)), 10);
    }
}
