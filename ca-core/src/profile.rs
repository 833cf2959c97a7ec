//! Certificate profiles as versioned data.
//!
//! A [`Profile`] says which CA issues it, which subject fields and SANs it carries, its key usage,
//! extended key usage, policies and validity. [`Profile::params`] turns an approved request into
//! rcgen `CertificateParams`; it is pure (time and serial are passed in). Every issued
//! certificate records the profile id and version it was made under; changing what a profile
//! produces means a new version.

use rcgen::{
    CertificateParams, CrlDistributionPoint, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::ext;
use crate::keys::SubscriberKey;
use crate::serial::SerialNumber;

/// The CAs of the hierarchy (DESIGN.md "Hierarchy and profiles").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CaRole {
    /// The S/MIME root (`root`): over the Individual & Organisational CA. In a data directory
    /// made before the TLS root existed, over the Server CA too until its rollover.
    Root,
    /// The TLS root (`tls-root`): over the Server CA only (Mozilla Root Store Policy 3.1 §7.5:
    /// a root serves one purpose; Chrome: hierarchies dedicated to TLS server authentication).
    TlsRoot,
    /// The Individual & Organisational issuing CA (S/MIME BR; hold allowed).
    Individual,
    /// The Server issuing CA (TLS BR; no hold).
    Server,
}

impl CaRole {
    /// Every CA, roots first.
    pub const ALL: [CaRole; 4] = [
        CaRole::Root,
        CaRole::TlsRoot,
        CaRole::Individual,
        CaRole::Server,
    ];

    /// The two roots.
    pub const ROOTS: [CaRole; 2] = [CaRole::Root, CaRole::TlsRoot];

    /// A root (self-signed, signs CA certificates and its CRL only).
    pub fn is_root(self) -> bool {
        matches!(self, CaRole::Root | CaRole::TlsRoot)
    }

    /// The root a new issuing CA of this role is made under; `None` for a root.
    pub fn intended_root(self) -> Option<CaRole> {
        match self {
            CaRole::Root | CaRole::TlsRoot => None,
            CaRole::Individual => Some(CaRole::Root),
            CaRole::Server => Some(CaRole::TlsRoot),
        }
    }

    /// The short name used in URLs (`/ca/{name}.crt`), the CLI and the database.
    pub fn name(self) -> &'static str {
        match self {
            CaRole::Root => "root",
            CaRole::TlsRoot => "tls-root",
            CaRole::Individual => "individual",
            CaRole::Server => "server",
        }
    }

    /// The inverse of [`CaRole::name`].
    pub fn from_name(s: &str) -> Result<Self> {
        CaRole::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| Error::UnknownCa(s.to_string()))
    }

    /// The HSM key label of this CA's key.
    pub fn key_label(self) -> String {
        format!("ecert-{}-ca", self.name())
    }
}

/// One CA of the hierarchy (DESIGN.md: "each CA has an id; a role names its *current* CA"):
/// its role and its generation within the role. The first CA of a role (generation 1) is named
/// by the role itself (`individual`), so the URLs already in issued certificates
/// (`/ca/individual.crt`, `/crl/individual.crl`, `/crl/individual-p3.crl`) stay bound to it
/// for ever; a successor made by a rollover is named `<role>-<generation>` (`individual-2`),
/// with its own URLs, CRLNumber sequences and partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaId {
    /// What it issues.
    pub role: CaRole,
    /// 1 for the first CA of the role, then 2, 3 … for its successors.
    pub generation: u16,
}

impl CaId {
    /// The first CA of `role`.
    pub const fn first(role: CaRole) -> CaId {
        CaId {
            role,
            generation: 1,
        }
    }

    /// The id in URLs (`/ca/{name}.crt`), the CLI and the database (`cas.name`,
    /// `certificates.issuer`).
    pub fn name(self) -> String {
        match self.generation {
            1 => self.role.name().to_string(),
            g => format!("{}-{g}", self.role.name()),
        }
    }

    /// The inverse of [`CaId::name`]: one name per CA (no `individual-1`, no leading zero).
    pub fn from_name(s: &str) -> Result<CaId> {
        if let Ok(role) = CaRole::from_name(s) {
            return Ok(CaId::first(role));
        }
        let unknown = || Error::UnknownCa(s.to_string());
        let (role, g) = s.rsplit_once('-').ok_or_else(unknown)?;
        let role = CaRole::from_name(role).map_err(|_| unknown())?;
        if g.is_empty() || !g.bytes().all(|b| b.is_ascii_digit()) || g.starts_with('0') {
            return Err(unknown());
        }
        match g.parse::<u16>() {
            Ok(generation) if generation >= 2 => Ok(CaId { role, generation }),
            _ => Err(unknown()),
        }
    }

    /// The default HSM key label of this CA's key (`ecert-individual-ca`,
    /// `ecert-individual-2-ca`).
    pub fn key_label(self) -> String {
        format!("ecert-{}-ca", self.name())
    }

    /// A root.
    pub fn is_root(self) -> bool {
        self.role.is_root()
    }
}

impl std::fmt::Display for CaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.generation {
            1 => f.write_str(self.role.name()),
            g => write!(f, "{}-{g}", self.role.name()),
        }
    }
}

/// Where a CA is in its life (`cas.state`). One CA of a role is `active` at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaStatus {
    /// Made by a rollover ceremony, not yet taking issuance: its certificate is published so
    /// relying parties can fetch it ahead of time.
    Pending,
    /// The current CA of its role: new issuance goes to it.
    Active,
    /// Replaced by a successor: issues nothing more, but keeps publishing its CRLs and
    /// answering OCSP until its last certificate expires.
    Superseded,
    /// Its last certificate has expired: its final CRL stays available, nothing more is signed.
    Retired,
}

impl CaStatus {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            CaStatus::Pending => "pending",
            CaStatus::Active => "active",
            CaStatus::Superseded => "superseded",
            CaStatus::Retired => "retired",
        }
    }

    /// The inverse of [`CaStatus::as_str`].
    pub fn parse(s: &str) -> Result<CaStatus> {
        Ok(match s {
            "pending" => CaStatus::Pending,
            "active" => CaStatus::Active,
            "superseded" => CaStatus::Superseded,
            "retired" => CaStatus::Retired,
            other => return Err(Error::Store(format!("unknown CA state {other:?}"))),
        })
    }

    /// Publishes CRLs and signs OCSP responses.
    pub fn publishes(self) -> bool {
        matches!(self, CaStatus::Active | CaStatus::Superseded)
    }
}

/// What a profile makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    /// A citizen's certificate: S/MIME BR Individual-validated.
    Personal,
    /// A named user in an organisation: S/MIME BR Sponsor-validated.
    Organisational,
    /// An organisation's encryption certificate: S/MIME BR Organization-validated.
    Encipherment,
    /// A TLS server: TLS BR Organization-validated.
    Server,
}

/// A certificate profile. See the module documentation.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Stable name (an application's `profile`).
    pub id: &'static str,
    /// Bumped whenever what the profile produces changes. v2: the CRL distribution point names
    /// the certificate's CRL partition (`/crl/<ca>-p<k>.crl`) when its CA is partitioned.
    pub version: u32,
    /// What it makes.
    pub kind: ProfileKind,
    /// The CA that issues it.
    pub issuer: CaRole,
    /// Validity when the request names none, in days.
    pub default_days: u32,
    /// The most a request may ask for, in days.
    pub max_days: u32,
    /// The CA/Browser Forum reserved policy OID the certificate asserts.
    pub cabf_policy: &'static str,
    /// This CA's own policy: `<policy arc>.2.<local_policy>`.
    pub local_policy: u32,
    /// The subject carries the holder's organisational role as `title` (2.5.4.12; S/MIME BR
    /// §7.1.4.2.2 i, §7.1.4.2.5), which is then required.
    pub role: bool,
    /// For holders under 18 (e-Cert (Personal/Minor)): the RA ends the validity before the
    /// holder's 18th birthday; the CPS gives it a reliance limit of zero.
    pub minor: bool,
}

/// The profiles this CA issues.
pub static PROFILES: &[Profile] = &[
    Profile {
        id: "personal",
        version: 2,
        kind: ProfileKind::Personal,
        issuer: CaRole::Individual,
        default_days: 365,
        max_days: 824,
        // S/MIME BR §7.1.6.1 individual-validated, multipurpose.
        cabf_policy: "2.23.140.1.5.4.2",
        local_policy: 1,
        role: false,
        minor: false,
    },
    Profile {
        id: "organisational",
        version: 2,
        kind: ProfileKind::Organisational,
        issuer: CaRole::Individual,
        default_days: 365,
        max_days: 824,
        // S/MIME BR §7.1.6.1 sponsor-validated, multipurpose.
        cabf_policy: "2.23.140.1.5.3.2",
        local_policy: 2,
        role: false,
        minor: false,
    },
    Profile {
        id: "encipherment",
        version: 2,
        kind: ProfileKind::Encipherment,
        issuer: CaRole::Individual,
        default_days: 365,
        max_days: 824,
        // S/MIME BR §7.1.6.1 organization-validated, strict.
        cabf_policy: "2.23.140.1.5.2.3",
        local_policy: 3,
        role: false,
        minor: false,
    },
    Profile {
        id: "server",
        // v3: keyEncipherment beside digitalSignature for an RSA key.
        version: 3,
        kind: ProfileKind::Server,
        issuer: CaRole::Server,
        default_days: 199,
        // TLS BR §6.3.2: 200 days from 2026-03-15; one day of margin.
        max_days: 199,
        // TLS BR §7.1.6.1 organization-validated.
        cabf_policy: "2.23.140.1.2.2",
        local_policy: 4,
        role: false,
        minor: false,
    },
    Profile {
        id: "personal-minor",
        version: 1,
        kind: ProfileKind::Personal,
        issuer: CaRole::Individual,
        default_days: 365,
        max_days: 824,
        // S/MIME BR §7.1.6.1 individual-validated, multipurpose.
        cabf_policy: "2.23.140.1.5.4.2",
        local_policy: 5,
        role: false,
        minor: true,
    },
    Profile {
        id: "organisational-role",
        version: 1,
        kind: ProfileKind::Organisational,
        issuer: CaRole::Individual,
        default_days: 365,
        max_days: 824,
        // S/MIME BR §7.1.6.1 sponsor-validated, multipurpose.
        cabf_policy: "2.23.140.1.5.3.2",
        local_policy: 6,
        role: true,
        minor: false,
    },
];

impl Profile {
    /// Looks a profile up by name.
    pub fn get(id: &str) -> Result<&'static Profile> {
        PROFILES
            .iter()
            .find(|p| p.id == id)
            .ok_or_else(|| Error::UnknownProfile(id.to_string()))
    }

    fn refuse(&self, reason: impl Into<String>) -> Error {
        Error::Profile {
            profile: self.id.to_string(),
            reason: reason.into(),
        }
    }
}

/// The subject data of an approved request. Every field here comes from the RA's approved
/// application record, never from the CSR.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectData {
    /// Display name put in commonName (personal, organisational); derived from surname and
    /// given name when absent.
    pub name: Option<String>,
    /// Given name (givenName, 2.5.4.42).
    pub given_name: Option<String>,
    /// Surname (surname, 2.5.4.4).
    pub surname: Option<String>,
    /// Mailboxes (rfc822Name SANs).
    pub emails: Vec<String>,
    /// Organisation name.
    pub organization: Option<String>,
    /// Hong Kong Business Registration number (8 digits), carried as organizationIdentifier
    /// `NTR<country>-<number>` (S/MIME BR §7.1.4.2.2(d), Appendix A.1).
    pub org_id: Option<String>,
    /// The organisation is a Government Entity (a bureau, department or statutory body)
    /// verified as such: organizationIdentifier `GOV<country>` (S/MIME BR §7.1.4.2.2(d) Note
    /// 2). Excludes `org_id`.
    #[serde(default)]
    pub government: bool,
    /// The subject's country as verified (countryName, ISO 3166-1 alpha-2): for a person, the
    /// issuer of the identity document checked at the counter (an HKID card: `HK`); for an
    /// organisation, the country of the register it was checked in. Absent: no countryName
    /// (S/MIME profiles; a server certificate needs it). S/MIME BR §7.1.4.2.2(n), TLS BR
    /// §7.1.2.7.4.
    #[serde(default)]
    pub country: Option<String>,
    /// Locality of the organisation as verified from its registration (server certificates,
    /// localityName; TLS BR §7.1.2.7.4).
    pub locality: Option<String>,
    /// DNS names (server certificates).
    pub dns_names: Vec<String>,
    /// The CA-assigned Subscriber Reference Number (never an identity-card number).
    pub srn: Option<String>,
    /// The holder's organisational role (title, 2.5.4.12; organisational-role only).
    #[serde(default)]
    pub title: Option<String>,
}

/// Budget: SANs per certificate (e-Cert Server allows up to 50 names).
pub const MAX_SANS: usize = 50;
/// RFC 5280 Appendix A upper bound for commonName, organizationName and localityName.
pub const MAX_NAME_CHARS: usize = 64;

/// Everything [`Profile::params`] needs besides the request.
#[derive(Debug, Clone)]
pub struct IssueContext<'a> {
    /// Base URL for AIA/CDP.
    pub base_url: &'a str,
    /// This CA's policy OID arc.
    pub policy_arc: &'a str,
    /// The certificate's CRL partition (`None`: its CDP names the full CRL).
    pub crl_partition: Option<u16>,
    /// The CA that signs it (a CA of the profile's role): its CDP and caIssuers name this
    /// CA's own URLs, which never change meaning.
    pub issuer: CaId,
}

impl Profile {
    /// Checks the request against this profile and normalises it (lower-case DNS names and
    /// mailbox domains). Deny by default: a field the profile does not carry is refused.
    pub fn check(
        &self,
        s: &SubjectData,
        days: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<SubjectData> {
        let mut s = s.clone();
        let max = self.max_days_at(now);
        let days = self.days_for(days, now);
        if days == 0 || days > max {
            return Err(self.refuse(format!("validity of {days} days is outside 1..={max} days")));
        }
        for (label, v) in [
            ("name", &s.name),
            ("given name", &s.given_name),
            ("surname", &s.surname),
            ("organisation", &s.organization),
            ("locality", &s.locality),
        ] {
            if let Some(v) = v {
                check_name(self, label, v)?;
            }
        }
        if s.emails.len() + s.dns_names.len() > MAX_SANS {
            return Err(self.refuse(format!("more than {MAX_SANS} names")));
        }
        s.emails = s
            .emails
            .iter()
            .map(|e| check_email(self, e))
            .collect::<Result<_>>()?;
        s.dns_names = s
            .dns_names
            .iter()
            .map(|d| check_dns(self, d))
            .collect::<Result<_>>()?;
        let mut seen = std::collections::HashSet::new();
        if !s
            .emails
            .iter()
            .chain(&s.dns_names)
            .all(|n| seen.insert(n.clone()))
        {
            return Err(self.refuse("a name is given twice"));
        }
        if let Some(id) = &s.org_id {
            if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(self.refuse("the business registration number must be 8 digits"));
            }
        }
        if let Some(c) = &s.country {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(self.refuse(
                    "the country must be a two-letter ISO 3166-1 code in capitals (XX if none)",
                ));
            }
        }
        if s.government && s.org_id.is_some() {
            return Err(self.refuse(
                "a government entity has no business registration number (organizationIdentifier GOV)",
            ));
        }
        if (s.org_id.is_some() || s.government) && s.country.is_none() {
            return Err(self
                .refuse("an organisation identifier needs the verified country of its register"));
        }
        let need = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(self.refuse(what.to_string()))
            }
        };
        match self.kind {
            ProfileKind::Personal => {
                need(
                    s.given_name.is_some() || s.surname.is_some(),
                    "a surname or given name is required (S/MIME BR §7.1.4.2.6)",
                )?;
                need(!s.emails.is_empty(), "an e-mail address is required")?;
                need(
                    s.organization.is_none() && s.org_id.is_none() && !s.government,
                    "a personal certificate carries no organisation",
                )?;
                need(
                    s.dns_names.is_empty() && s.locality.is_none(),
                    "a personal certificate carries no DNS names or locality",
                )?;
            }
            ProfileKind::Organisational => {
                need(s.given_name.is_some() || s.surname.is_some(), "the authorised user's surname or given name is required (S/MIME BR §7.1.4.2.5)")?;
                need(
                    s.organization.is_some() && (s.org_id.is_some() || s.government),
                    "the organisation name and its business registration number (or government \
                     entity) are required",
                )?;
                need(!s.emails.is_empty(), "an e-mail address is required")?;
                need(
                    s.dns_names.is_empty() && s.locality.is_none(),
                    "an organisational certificate carries no DNS names or locality",
                )?;
            }
            ProfileKind::Encipherment => {
                need(
                    s.organization.is_some() && (s.org_id.is_some() || s.government),
                    "the organisation name and its business registration number (or government \
                     entity) are required",
                )?;
                need(
                    !s.emails.is_empty(),
                    "the organisation's e-mail address is required",
                )?;
                need(
                    s.name.is_none() && s.given_name.is_none() && s.surname.is_none(),
                    "an encipherment certificate names the organisation, not a person",
                )?;
                need(
                    s.dns_names.is_empty() && s.locality.is_none(),
                    "an encipherment certificate carries no DNS names or locality",
                )?;
            }
            ProfileKind::Server => {
                need(
                    s.organization.is_some(),
                    "the organisation name is required",
                )?;
                need(!s.dns_names.is_empty(), "at least one DNS name is required")?;
                need(
                    s.emails.is_empty()
                        && s.name.is_none()
                        && s.given_name.is_none()
                        && s.surname.is_none(),
                    "a server certificate carries no e-mail or personal name",
                )?;
                need(
                    s.org_id.is_none() && !s.government,
                    "a server (OV) certificate carries no organizationIdentifier (TLS BR §7.1.4.2)",
                )?;
            }
        }
        if self.role {
            match &s.title {
                Some(t) => check_name(self, "the role (title)", t)?,
                None => return Err(self.refuse("the holder's role (title) is required")),
            }
        } else if s.title.is_some() {
            return Err(
                self.refuse("only an organisational-role certificate carries a role (title)")
            );
        }
        if !matches!(
            self.kind,
            ProfileKind::Personal | ProfileKind::Organisational
        ) {
            s.srn = None;
        }
        Ok(s)
    }

    /// The longest validity allowed for a certificate whose notBefore is `now`. For TLS the
    /// maximum falls on fixed dates (TLS BR §6.3.2, ballot SC-081): 200 days from 2026-03-15,
    /// 100 days from 2027-03-15, 47 days from 2029-03-15; one day of margin is kept because
    /// pkilint warns at the maximum.
    pub fn max_days_at(&self, now: OffsetDateTime) -> u32 {
        if self.kind != ProfileKind::Server {
            return self.max_days;
        }
        let d = now.date();
        let cap = if d >= time::macros::date!(2029 - 03 - 15) {
            46
        } else if d >= time::macros::date!(2027 - 03 - 15) {
            99
        } else {
            199
        };
        self.max_days.min(cap)
    }

    /// The validity a request gets: what it asked for, else the profile default capped at the
    /// maximum in force.
    pub fn days_for(&self, requested: Option<u32>, now: OffsetDateTime) -> u32 {
        requested.unwrap_or_else(|| self.default_days.min(self.max_days_at(now)))
    }

    /// Whether it is an S/MIME BR Strict-generation profile (its reserved policy OID
    /// `2.23.140.1.5.<type>.3`, S/MIME BR §7.1.6.1): never put on hold (§7.2.2).
    pub fn smime_strict(&self) -> bool {
        self.cabf_policy.starts_with("2.23.140.1.5.") && self.cabf_policy.ends_with(".3")
    }

    /// Whether a certificate of the profile `id` may be put on hold: only on the Individual &
    /// Organisational CA (TLS BR §4.9.13 forbids it for the Server CA) and never for an S/MIME
    /// Strict generation (S/MIME BR §7.2.2). An unknown profile (an OCSP responder's
    /// certificate) may not.
    pub fn hold_allowed_for(id: &str) -> bool {
        Profile::get(id).is_ok_and(|p| p.issuer == CaRole::Individual && !p.smime_strict())
    }

    /// Builds the rcgen parameters for a checked request (see [`Profile::check`]). Pure.
    pub fn params(
        &self,
        ctx: &IssueContext<'_>,
        s: &SubjectData,
        key: &SubscriberKey,
        serial: SerialNumber,
        not_before: OffsetDateTime,
        days: Option<u32>,
    ) -> Result<CertificateParams> {
        let days = self.days_for(days, not_before);
        let mut p = CertificateParams::default();
        p.serial_number = Some(rcgen::SerialNumber::from_slice(serial.as_bytes()));
        p.not_before = not_before;
        // BR §1.6.1 / S/MIME BR: validity counts both ends inclusive, so subtract one second.
        p.not_after =
            not_before + time::Duration::days(i64::from(days)) - time::Duration::seconds(1);
        // S/MIME: basicConstraints cA=FALSE (critical) and a subjectKeyIdentifier, as pkilint's
        // RFC 5280 checks want. TLS: neither (TLS BR §7.1.2.7.6: SKI NOT RECOMMENDED).
        p.is_ca = if self.kind == ProfileKind::Server {
            IsCa::NoCa
        } else {
            IsCa::ExplicitNoCa
        };
        p.use_authority_key_identifier_extension = true;
        // The SKI (S/MIME only) by RFC 5280 §4.2.1.2 method 1, as for the CAs; the AKI is the
        // issuer's SKI as the issuer certificate carries it.
        p.key_identifier_method =
            rcgen::KeyIdMethod::PreSpecified(crate::authority::key_id(key.spki_der())?);
        p.distinguished_name = self.subject(s)?;
        p.subject_alt_names = s
            .emails
            .iter()
            .map(|e| Ok(SanType::Rfc822Name(e.as_str().try_into()?)))
            .chain(
                s.dns_names
                    .iter()
                    .map(|d| Ok(SanType::DnsName(d.as_str().try_into()?))),
            )
            .collect::<Result<_, rcgen::Error>>()?;
        let rsa = key.kind().is_rsa();
        p.key_usages = match self.kind {
            ProfileKind::Personal | ProfileKind::Organisational if rsa => {
                vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ]
            }
            ProfileKind::Personal | ProfileKind::Organisational => {
                vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyAgreement,
                ]
            }
            ProfileKind::Encipherment if rsa => vec![KeyUsagePurpose::KeyEncipherment],
            ProfileKind::Encipherment => vec![KeyUsagePurpose::KeyAgreement],
            // TLS BR §7.1.2.7.11: digitalSignature, and for an RSA key keyEncipherment MAY be
            // set: NSS's classic verifier refuses an RSA server certificate without it for TLS
            // server use (SEC_ERROR_INADEQUATE_KEY_USAGE, -8102), so it is set.
            ProfileKind::Server if rsa => vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
            ProfileKind::Server => vec![KeyUsagePurpose::DigitalSignature],
        };
        p.extended_key_usages = match self.kind {
            ProfileKind::Personal | ProfileKind::Organisational => vec![
                ExtendedKeyUsagePurpose::EmailProtection,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            ProfileKind::Encipherment => vec![ExtendedKeyUsagePurpose::EmailProtection],
            ProfileKind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        };
        if ctx.issuer.role != self.issuer {
            return Err(Error::Config(format!(
                "the {} profile is issued by a {} CA, not {}",
                self.id,
                self.issuer.name(),
                ctx.issuer
            )));
        }
        let issuer = ctx.issuer.name();
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![ctx
                .crl_partition
                .map_or(crate::crl::Scope::Full, crate::crl::Scope::Partition)
                .url(ctx.base_url, ctx.issuer)],
        }];
        let local = ext::PolicyOid::parse(&format!("{}.2.{}", ctx.policy_arc, self.local_policy))?;
        p.custom_extensions = vec![
            ext::certificate_policies(&[ext::PolicyOid::parse(self.cabf_policy)?, local])?,
            ext::authority_info_access(
                Some(&format!("{}/ocsp", ctx.base_url)),
                &format!("{}/ca/{issuer}.crt", ctx.base_url),
            )?,
        ];
        Ok(p)
    }

    /// The subject, attributes in the order the BRs give (TLS BR §7.1.4.2; S/MIME BR
    /// §7.1.4.2.2): countryName, localityName, organizationName, organizationIdentifier, surname,
    /// givenName, commonName, serialNumber. countryName and serialNumber are PrintableString
    /// (X.520), the rest UTF8String (RFC 5280 §4.1.2.6).
    fn subject(&self, s: &SubjectData) -> Result<DistinguishedName> {
        const SURNAME: [u64; 4] = [2, 5, 4, 4];
        const GIVEN_NAME: [u64; 4] = [2, 5, 4, 42];
        const SERIAL_NUMBER: [u64; 4] = [2, 5, 4, 5];
        const TITLE: [u64; 4] = [2, 5, 4, 12];
        const ORGANIZATION_IDENTIFIER: [u64; 4] = [2, 5, 4, 97];
        let mut dn = DistinguishedName::new();
        let printable = |v: &str| -> Result<DnValue> {
            Ok(DnValue::PrintableString(v.try_into().map_err(|_| {
                self.refuse(format!("{v:?} is not a PrintableString"))
            })?))
        };
        let text = |v: &str| DnValue::Utf8String(v.to_string());
        // Only verified values: the country of the document or register checked, the
        // locality of the organisation's registration (S/MIME BR §7.1.4.2.2(k)(n); TLS BR
        // §7.1.2.7.4: an OV certificate needs countryName and localityName or
        // stateOrProvinceName). Never a configured default.
        if let Some(c) = &s.country {
            dn.push(DnType::CountryName, printable(c)?);
        }
        if self.kind == ProfileKind::Server {
            let (Some(_), Some(locality)) = (&s.country, &s.locality) else {
                return Err(self.refuse(
                    "a server (OV) certificate needs the organisation's verified country and \
                     locality (TLS BR §7.1.2.7.4)",
                ));
            };
            dn.push(DnType::LocalityName, text(locality));
        }
        if let Some(o) = &s.organization {
            dn.push(DnType::OrganizationName, text(o));
        }
        // S/MIME BR §7.1.4.2.2(d): scheme NTR, the register's country, the Business
        // Registration number (Appendix A.1); a Government Entity: GOV and the country, no
        // reference (Note 2). The country matches countryName (Note 1): both are `s.country`.
        let org_identifier = match (&s.org_id, s.government, &s.country) {
            (Some(id), false, Some(c)) => Some(format!("NTR{c}-{id}")),
            (None, true, Some(c)) => Some(format!("GOV{c}")),
            (None, false, _) => None,
            _ => return Err(self.refuse("an organisation identifier needs its register's country")),
        };
        if let Some(id) = org_identifier {
            dn.push(
                DnType::CustomDnType(ORGANIZATION_IDENTIFIER.to_vec()),
                printable(&id)?,
            );
        }
        match self.kind {
            ProfileKind::Personal | ProfileKind::Organisational => {
                if let Some(v) = &s.surname {
                    dn.push(DnType::CustomDnType(SURNAME.to_vec()), text(v));
                }
                if let Some(v) = &s.given_name {
                    dn.push(DnType::CustomDnType(GIVEN_NAME.to_vec()), text(v));
                }
                let derived = [s.surname.as_deref(), s.given_name.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                if let Some(t) = &s.title {
                    dn.push(DnType::CustomDnType(TITLE.to_vec()), text(t));
                }
                let cn = s.name.clone().unwrap_or(derived);
                check_name(self, "name", &cn)?;
                dn.push(DnType::CommonName, text(&cn));
            }
            // S/MIME BR §7.1.4.2.4: commonName, if present, is the organisation name.
            ProfileKind::Encipherment => {
                if let Some(o) = &s.organization {
                    dn.push(DnType::CommonName, text(o));
                }
            }
            // TLS BR §7.1.2.7.4: commonName NOT RECOMMENDED; the names are in the SAN.
            ProfileKind::Server => {}
        }
        if let Some(srn) = &s.srn {
            // The CA-assigned Subscriber Reference Number (S/MIME BR §7.1.4.2.2 g).
            dn.push(
                DnType::CustomDnType(SERIAL_NUMBER.to_vec()),
                printable(srn)?,
            );
        }
        Ok(dn)
    }
}

fn check_name(p: &Profile, label: &str, v: &str) -> Result<()> {
    let n = v.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(p.refuse(format!(
            "{label} must be 1 to {MAX_NAME_CHARS} characters (RFC 5280 upper bound); it is {n}"
        )));
    }
    if v.chars().any(|c| c.is_control()) || v.trim() != v || v.contains("  ") {
        return Err(p.refuse(format!("{label} has control characters or stray spaces")));
    }
    Ok(())
}

fn check_email(p: &Profile, e: &str) -> Result<String> {
    let bad = || p.refuse("an e-mail address is not a valid ASCII mailbox (local@domain)");
    let (local, domain) = e.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || local.len() > 64
        || e.len() > 254
        || !local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return Err(bad());
    }
    let domain = check_dns(p, domain).map_err(|_| bad())?;
    Ok(format!("{local}@{domain}"))
}

/// A DNS name: LDH labels, at least two, no wildcard (TLS BR §7.1.2.7.12; e-Cert Server allows
/// none), not an IP address.
fn check_dns(p: &Profile, d: &str) -> Result<String> {
    let d = d.to_ascii_lowercase();
    let bad = |why: &str| p.refuse(format!("DNS name {d:?} {why}"));
    if d.contains('*') {
        return Err(bad("is a wildcard; wildcards are not issued"));
    }
    if d.is_empty() || d.len() > 253 {
        return Err(bad("must be 1 to 253 characters"));
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return Err(bad("must have at least two labels"));
    }
    for l in &labels {
        if l.is_empty()
            || l.len() > 63
            || l.starts_with('-')
            || l.ends_with('-')
            || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad("is not a valid host name"));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("looks like an IP address"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One name per CA: the first of a role keeps the role's name (the URLs already in its
    /// certificates), successors are `<role>-<generation>`; nothing else parses.
    #[test]
    fn ca_ids_round_trip_and_strangers_are_refused() {
        for role in CaRole::ALL {
            for generation in [1, 2, 10, u16::MAX] {
                let id = CaId { role, generation };
                assert_eq!(CaId::from_name(&id.name()).unwrap(), id);
                assert_eq!(id.to_string(), id.name());
            }
        }
        assert_eq!(CaId::first(CaRole::Individual).name(), "individual");
        assert_eq!(
            CaId::from_name("tls-root").unwrap(),
            CaId::first(CaRole::TlsRoot)
        );
        assert_eq!(
            CaId::from_name("server-2").unwrap().key_label(),
            "ecert-server-2-ca"
        );
        for bad in [
            "individual-1",
            "individual-0",
            "individual-02",
            "individual-",
            "individual--2",
            "individual-+2",
            "individual-65536",
            "tls",
            "nobody-2",
            "",
        ] {
            assert!(CaId::from_name(bad).is_err(), "{bad}");
        }
    }

    /// Only the encipherment profile is S/MIME BR Strict (…5.2.3); it is never put on hold.
    #[test]
    fn strict_generation_is_read_from_the_policy_oid() {
        for p in PROFILES {
            assert_eq!(p.smime_strict(), p.id == "encipherment", "{}", p.id);
        }
    }

    fn personal() -> SubjectData {
        SubjectData {
            surname: Some("CHAN".into()),
            given_name: Some("Tai Man".into()),
            emails: vec!["tai.man@Example.HK".into()],
            srn: Some("0000012345".into()),
            ..Default::default()
        }
    }

    #[test]
    /// Issue 12, defects 5 and 6: countryName and localityName only as verified (never a
    /// configured default), and a government entity named `GOV<country>`.
    fn subject_names_only_verified_values() {
        use rcgen::{DnType, DnValue};
        let key = crate::keys::SubscriberKey::from_spki_der(
            &rcgen::PublicKeyData::subject_public_key_info(
                &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            ),
        )
        .unwrap();
        let dn = |profile: &str, s: &SubjectData| {
            let p = Profile::get(profile).unwrap();
            let ctx = IssueContext {
                base_url: "http://pki.example.hk",
                policy_arc: "1.3.6.1.4.1.32473.1",
                crl_partition: None,
                issuer: CaId::first(p.issuer),
            };
            let s = p.check(s, None, now())?;
            let params = p.params(
                &ctx,
                &s,
                &key,
                crate::serial::SerialNumber::random(),
                now(),
                None,
            )?;
            let text = |t: DnType| {
                params.distinguished_name.get(&t).map(|v| match v {
                    DnValue::PrintableString(p) => p.as_str().to_string(),
                    DnValue::Utf8String(u) => u.clone(),
                    other => format!("{other:?}"),
                })
            };
            Ok::<_, Error>((
                text(DnType::CountryName),
                text(DnType::LocalityName),
                text(DnType::CustomDnType(vec![2, 5, 4, 97])),
            ))
        };
        // A person without a verified document country: no countryName at all.
        assert_eq!(dn("personal", &personal()).unwrap(), (None, None, None));
        let checked = SubjectData {
            country: Some("HK".into()),
            ..personal()
        };
        assert_eq!(dn("personal", &checked).unwrap().0.as_deref(), Some("HK"));
        // A bureau: GOVHK, no registration reference (pkilint's GOV scheme forbids one).
        let bureau = SubjectData {
            emails: vec!["info@example.gov.hk".into()],
            organization: Some("Example Bureau".into()),
            government: true,
            country: Some("HK".into()),
            ..Default::default()
        };
        assert_eq!(
            dn("encipherment", &bureau).unwrap(),
            (Some("HK".into()), None, Some("GOVHK".into()))
        );
        let both = SubjectData {
            org_id: Some("12345678".into()),
            ..bureau.clone()
        };
        assert!(dn("encipherment", &both).is_err());
        let no_country = SubjectData {
            country: None,
            ..bureau
        };
        assert!(dn("encipherment", &no_country).is_err());
        // A server certificate needs the verified country and locality; no default fills in.
        let server = SubjectData {
            organization: Some("Example Ltd".into()),
            dns_names: vec!["www.example.hk".into()],
            ..Default::default()
        };
        let e = dn("server", &server).unwrap_err().to_string();
        assert!(e.contains("verified country and locality"), "{e}");
        let verified = SubjectData {
            country: Some("HK".into()),
            locality: Some("Kowloon".into()),
            ..server
        };
        assert_eq!(
            dn("server", &verified).unwrap(),
            (Some("HK".into()), Some("Kowloon".into()), None)
        );
        let bad = SubjectData {
            country: Some("Hong Kong".into()),
            ..verified
        };
        assert!(dn("server", &bad).is_err());
    }

    /// The role is required by organisational-role and refused by every other profile.
    #[test]
    fn only_the_role_profile_carries_a_title() {
        let org = SubjectData {
            surname: Some("WONG".into()),
            given_name: Some("Siu Ming".into()),
            emails: vec!["sm.wong@example.hk".into()],
            organization: Some("Example Hospital Authority".into()),
            org_id: Some("12345678".into()),
            country: Some("HK".into()),
            ..Default::default()
        };
        let role = Profile::get("organisational-role").unwrap();
        assert!(role
            .check(&org, None, now())
            .unwrap_err()
            .to_string()
            .contains("role"));
        let titled = SubjectData {
            title: Some("Ward Manager".into()),
            ..org.clone()
        };
        assert!(role.check(&titled, None, now()).is_ok());
        assert!(Profile::get("organisational")
            .unwrap()
            .check(&titled, None, now())
            .is_err());
        let mut minor = personal();
        minor.title = Some("Student".into());
        assert!(Profile::get("personal-minor")
            .unwrap()
            .check(&minor, None, now())
            .is_err());
        assert!(Profile::get("personal-minor")
            .unwrap()
            .check(&personal(), None, now())
            .is_ok());
        let long = SubjectData {
            title: Some("x".repeat(65)),
            ..org
        };
        assert!(role.check(&long, None, now()).is_err());
    }

    #[test]
    fn personal_checks_and_normalises() {
        let p = Profile::get("personal").unwrap();
        let s = p.check(&personal(), None, now()).unwrap();
        assert_eq!(s.emails, vec!["tai.man@example.hk"]);
        let mut bad = personal();
        bad.organization = Some("X".into());
        assert!(p.check(&bad, None, now()).is_err());
        assert!(p.check(&personal(), Some(825), now()).is_err());
        let mut long = personal();
        long.surname = Some("陳".repeat(65));
        assert!(p
            .check(&long, None, now())
            .unwrap_err()
            .to_string()
            .contains("64"));
    }

    #[test]
    fn server_names() {
        let p = Profile::get("server").unwrap();
        let mut s = SubjectData {
            organization: Some("Example Ltd".into()),
            dns_names: vec!["WWW.example.hk".into()],
            ..Default::default()
        };
        assert_eq!(
            p.check(&s, None, now()).unwrap().dns_names,
            vec!["www.example.hk"]
        );
        for bad in [
            "*.example.hk",
            "localhost",
            "10.0.0.1",
            "a..b",
            "-a.hk",
            "a_b.hk",
        ] {
            s.dns_names = vec![bad.into()];
            assert!(p.check(&s, None, now()).is_err(), "{bad} accepted");
        }
        s.dns_names = (0..51).map(|i| format!("h{i}.example.hk")).collect();
        assert!(p.check(&s, None, now()).is_err());
        assert!(p
            .check(
                &SubjectData {
                    dns_names: vec!["a.hk".into()],
                    organization: Some("O".into()),
                    ..Default::default()
                },
                Some(200),
                now()
            )
            .is_err());
    }

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-11-23 12:00 UTC)
    }

    #[test]
    fn server_validity_follows_the_br_schedule() {
        let p = Profile::get("server").unwrap();
        assert_eq!(
            p.max_days_at(time::macros::datetime!(2026-03-15 00:00 UTC)),
            199
        );
        assert_eq!(
            p.max_days_at(time::macros::datetime!(2027-03-14 23:59 UTC)),
            199
        );
        assert_eq!(
            p.max_days_at(time::macros::datetime!(2027-03-15 00:00 UTC)),
            99
        );
        assert_eq!(
            p.max_days_at(time::macros::datetime!(2029-03-15 00:00 UTC)),
            46
        );
        assert_eq!(
            p.days_for(None, time::macros::datetime!(2027-06-01 00:00 UTC)),
            99
        );
        assert_eq!(Profile::get("personal").unwrap().max_days_at(now()), 824);
    }

    #[test]
    fn unknown_profile() {
        assert!(matches!(
            Profile::get("wildcard"),
            Err(Error::UnknownProfile(_))
        ));
    }
}
