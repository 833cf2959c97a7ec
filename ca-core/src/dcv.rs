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
//! Both ask the recursive resolver named by `[dcv] resolver`, which must validate DNSSEC (BR
//! §3.2.2.8.1): a validating resolver answers SERVFAIL for bogus data, which is a failure here.
//! Every check builds a new resolver without a cache, so no answer outlives its check.
//!
//! This host is the Primary Network Perspective; remote perspectives corroborate what it found
//! ([`crate::mpic`], BR §3.2.2.9).

use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::caa::{Property, CAA};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};

use crate::config::DcvConfig;
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
    resolver: TokioResolver,
    identities: Vec<String>,
}

/// An answer that is either records or a definite "none" (NOERROR/NXDOMAIN without answers).
enum Answer<T> {
    Records(Vec<T>),
    Empty,
}

impl Checker {
    /// A resolver for one check: no cache, no hosts file, no search domains.
    pub fn new(config: &DcvConfig) -> Result<Checker> {
        let mut opts = ResolverOpts::default();
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(u64::from(config.timeout_seconds));
        opts.attempts = 2;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.ndots = 0;
        let builder = if config.resolver == "system" {
            TokioResolver::builder_tokio()
                .map_err(|e| Error::Config(format!("dcv.resolver = \"system\": {e}")))?
        } else {
            let addr: std::net::SocketAddr = config
                .resolver
                .parse()
                .map_err(|_| Error::Config("dcv.resolver must be \"system\" or IP:PORT".into()))?;
            let servers = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), servers),
                TokioConnectionProvider::default(),
            )
        };
        Ok(Checker {
            resolver: builder.with_options(opts).build(),
            identities: config
                .caa_identities
                .iter()
                .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        })
    }

    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Answer<RData>> {
        let fqdn = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
            .map_err(|e| Error::Dns(format!("{name}: {e}")))?;
        match self.resolver.lookup(fqdn, rtype).await {
            Ok(l) => Ok(Answer::Records(l.iter().cloned().collect())),
            Err(e) if is_empty(&e) => Ok(Answer::Empty),
            Err(e) => Err(Error::Dns(format!("{rtype} {name}: {e}"))),
        }
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
    /// [`Error::CaaForbids`] naming where the relevant RRset was found, or [`Error::Dns`].
    pub async fn caa(&self, domain: &str) -> Result<()> {
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
                    return permits(&caa, &self.identities).map_err(|reason| Error::CaaForbids {
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

/// NOERROR or NXDOMAIN with no answer: a definite "no such records".
fn is_empty(e: &ResolveError) -> bool {
    e.proto().is_some_and(|p| {
        matches!(
            p.kind(),
            ProtoErrorKind::NoRecordsFound {
                response_code: ResponseCode::NoError | ResponseCode::NXDomain,
                ..
            }
        )
    })
}

/// The RFC 8659 §4 decision on a relevant RRset for a name that is not a wildcard: `issuewild`
/// does not apply; `iodef` is not acted on (the BR allows this).
pub fn permits(rrset: &[CAA], identities: &[String]) -> std::result::Result<(), String> {
    if let Some(c) = rrset
        .iter()
        .find(|c| c.issuer_critical() && matches!(c.tag(), Property::Unknown(_)))
    {
        return Err(format!(
            "unknown property {:?} is marked critical",
            c.tag().as_str()
        ));
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
        Ok((Some(name), _)) => {
            let n = name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
            identities.contains(&n)
        }
        _ => false,
    });
    if ours {
        Ok(())
    } else {
        Err("its issue records do not name this CA".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::caa::Value;

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

    #[test]
    fn reuse_period_follows_the_br_schedule() {
        use time::macros::datetime;
        assert_eq!(reuse_days(datetime!(2026-11-24 0:00 UTC)), 200);
        assert_eq!(reuse_days(datetime!(2027-03-15 0:00 UTC)), 100);
        assert_eq!(reuse_days(datetime!(2029-03-15 0:00 UTC)), 10);
    }
}
