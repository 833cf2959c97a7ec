//! One typed configuration, loaded once: `<data-dir>/ecert.toml` (optional) then `ECERT_*`
//! environment variables. Every field has a safe default for the embedded mode.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The whole configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the SQLite database, the SoftHSM2 token, PINs and locks live.
    #[serde(skip)]
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; default: `sqlite://<data-dir>/ecert.db`.
    pub database_url: Option<String>,
    /// The HSM.
    pub hsm: HsmConfig,
    /// Names and URLs of the hierarchy.
    pub ca: CaConfig,
    /// The OCSP responder.
    pub ocsp: OcspConfig,
    /// CRLs.
    pub crl: CrlConfig,
    /// The registration authority (citizen and staff pages).
    pub ra: RaConfig,
    /// Domain control validation and CAA for server certificates.
    pub dcv: DcvConfig,
    /// How every listener bounds its clients.
    pub http: HttpConfig,
    /// Subscriber key checks that need data from outside.
    pub keys: KeysConfig,
    /// The signer's clock check (crate::clock).
    pub clock: ClockConfig,
    /// The audit trail's witness copy (crate::audit::witness).
    pub audit: AuditConfig,
    /// Publishing certificates and CRLs to an LDAP directory (crate::ldap).
    pub ldap: LdapConfig,
    /// Who can open each part of a backup (crate::backup).
    pub backup: BackupConfig,
}

/// The holders of a backup's parts ([`crate::backup`], docs/OPERATIONS.md "Backup and
/// restore"): age X25519 recipients (`age1…`, from `age-keygen`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// The database snapshot and the configuration: any one of them opens it.
    pub operator: Vec<String>,
    /// The `ca` token (CA, responder and audit keys): encrypted to each in turn, so all of them
    /// must take part (dual control, TLS BR §5.2.2 and §6.2.4); at least two.
    pub key_custodians: Vec<String>,
    /// The `pii` token (the personal-data keys): any one of them opens it.
    pub data_owner: Vec<String>,
}

/// The LDAP directory the signer publishes to ([`crate::ldap`], docs/DIRECTORY.md "LDAP"):
/// each published certificate under its holder's address, each CA's certificate and newest
/// full CRL on the CA's entry. Off unless `url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    /// `ldap://HOST:PORT` (loopback only, unless `starttls`), `ldaps://HOST:PORT`, or
    /// `ldapi://` + the percent-encoded path of slapd's socket. Unset: nothing is published.
    pub url: Option<String>,
    /// Upgrade an `ldap://` connection with StartTLS (RFC 4511 §4.14) before binding.
    pub starttls: bool,
    /// The CA certificate (PEM) that signed the directory's TLS certificate; unset: the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// The DN the publisher binds as (simple bind); unset: SASL EXTERNAL (over `ldapi://`,
    /// slapd maps the process's uid to a DN).
    pub bind_dn: Option<String>,
    /// A file holding the bind password (required with `bind_dn`).
    pub password_file: Option<PathBuf>,
    /// Where subscribers' entries are (`mail=<address>,<people>`).
    pub people: String,
    /// Where the CAs' entries are (`cn=<CA id>,<cas>`).
    pub cas: String,
    /// Seconds for connecting and for each operation.
    pub timeout_seconds: u32,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            url: None,
            starttls: false,
            ca_file: None,
            bind_dn: None,
            password_file: None,
            people: "ou=people,dc=ecert,dc=example".into(),
            cas: "ou=cas,dc=ecert,dc=example".into(),
            timeout_seconds: 10,
        }
    }
}

/// The audit trail outside the database ([`crate::audit::witness`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A file (on another mount, another host's share: somewhere whoever controls the database
    /// and the HSM cannot rewrite) to which every signed checkpoint is appended. `ecert audit
    /// verify --witness FILE` compares it with the database's chain.
    pub witness: Option<PathBuf>,
    /// Or (and) an HTTPS service the auditor runs that accepts the checkpoints as POSTs
    /// ([`crate::audit::witness::post`] describes the exchange).
    pub witness_url: Option<String>,
    /// The witness service's CA certificate (PEM), required with `witness_url`.
    pub witness_ca: Option<PathBuf>,
    /// A file holding the bearer token the witness service expects (optional).
    pub witness_token_file: Option<PathBuf>,
}

/// The signer's clock check ([`crate::clock`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockConfig {
    /// `auto` (the PostgreSQL server's clock on PostgreSQL, none on SQLite), `database` or
    /// `none`.
    pub reference: ClockReference,
    /// The most this host's clock may differ from the reference before nothing is signed.
    pub max_skew_seconds: u32,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            reference: ClockReference::Auto,
            max_skew_seconds: 5,
        }
    }
}

/// What the signer's clock is compared with ([`ClockConfig::reference`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockReference {
    /// The database server's clock on PostgreSQL; none on SQLite.
    Auto,
    /// The database server's clock (PostgreSQL).
    Database,
    /// No reference: `/healthz` says the clock is unchecked.
    None,
}

/// The longest root validity: 15 years counting 3 leap days (5478 days never exceed 15 calendar
/// years). Mozilla Root Store Policy 3.1 §7.4 removes the websites trust bit 15 years after the
/// root key's creation (the e-mail bit after 18), and the Chrome Root Program likewise stops
/// trusting roots whose key is older than 15 years; this root serves both the Server CA and the
/// Individual CA, so its key (made by `init`) must not outlive the earlier of the two.
pub const MAX_ROOT_VALIDITY_DAYS: u32 = 15 * 365 + 3;

/// Subscriber key checks that need data from outside the binary.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// A directory of Debian weak-key lists (CVE-2008-0166; TLS BR §6.1.1.3(5)) in the
    /// openssl-vulnkey format, `blacklist.RSA-2048`, `-3072` and `-4096`
    /// ([`crate::keys::debian`]). `ecert keys debian-list build` makes them from the published
    /// keys. Unset: no Debian check (`ecert config check` warns; `--production` refuses).
    pub debian_weak_dir: Option<PathBuf>,
}

/// How every listener (`ecert serve`, plain or TLS, a front instance, `ecert perspective
/// serve`) bounds its clients, so slow or many connections cannot stop OCSP, CRL and RA
/// answers (docs/SECURITY.md "Slow clients").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Connections served at once; more are closed at once.
    pub max_connections: u32,
    /// Seconds for a TLS handshake, for each request's head, and for an idle keep-alive
    /// connection to send its next request (1 to 10).
    pub header_timeout_seconds: u32,
    /// Seconds for a request's body and its answer; past it the request gets 408 (or the
    /// connection is closed).
    pub request_timeout_seconds: u32,
    /// On SIGTERM or SIGINT, seconds `/readyz` answers 503 while the listener still accepts,
    /// so that a load balancer's health check takes the instance out before it stops (0 to
    /// 300; docs/OPERATIONS.md "Rolling restart").
    pub drain_seconds: u32,
    /// Then, seconds the requests in flight are given to finish once the listener is closed
    /// (1 to 600); idle keep-alive connections are closed at once.
    pub shutdown_grace_seconds: u32,
    /// One `ecert::access` log event per request: method, route class, status, milliseconds,
    /// peer address — never the path, the query, a header or a body (docs/OPERATIONS.md).
    pub access_log: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: 4096,
            header_timeout_seconds: 10,
            request_timeout_seconds: 60,
            drain_seconds: 5,
            shutdown_grace_seconds: 20,
            access_log: true,
        }
    }
}

/// Domain control validation (TLS BR §3.2.2.4.7) and CAA checking (TLS BR §3.2.2.8) for server
/// applications (docs/RA.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DcvConfig {
    /// The DNSSEC-validating recursive resolver asked, `IP:PORT` (default `127.0.0.1:53`, a
    /// local Unbound). TLS BR §3.2.2.4 and §3.2.2.8.1 require DNSSEC validation; ecert asks with
    /// the AD bit and trusts the answer's AD bit only from a resolver on this host (RFC 4035
    /// §4.9.3, RFC 6840 §5.7), so with `dnssec = "required"` it must be a loopback address.
    pub resolver: String,
    /// `required` (the default): before any check the resolver must prove it validates (the
    /// DNSKEY RRset of `dnssec_probe` comes back with AD), and a SERVFAIL that carries a DNSSEC
    /// Extended DNS Error (bogus, RRSIGs missing, expired, ...; RFC 8914) fails the check with
    /// [`crate::error::Error::Dnssec`]. `off`: no probe (tests of other things, and private
    /// deployments; `config check --production` refuses it).
    pub dnssec: Dnssec,
    /// The zone whose DNSKEY RRset proves the resolver validates: `.` (the root, whose trust
    /// anchor every validating resolver has). Another zone with its own trust anchor in the
    /// resolver is for tests only.
    pub dnssec_probe: String,
    /// The Issuer Domain Names this CA recognises in CAA `issue` records (RFC 8659 §4.2), as
    /// its CPS §4.2 names them. Empty: a domain with any `issue` record forbids issuance.
    pub caa_identities: Vec<String>,
    /// Per-query timeout, in seconds.
    pub timeout_seconds: u32,
    /// Multi-Perspective Issuance Corroboration (TLS BR §3.2.2.9): `required` (the default;
    /// server domains are validated and server certificates issued only when the remote
    /// perspectives corroborate) or `off` (for a CA whose server certificates are not publicly
    /// trusted).
    pub mpic: Mpic,
    /// The remote Network Perspectives (`ecert perspective serve` instances).
    pub perspectives: Vec<Perspective>,
}

/// Whether DNS answers must be DNSSEC-validated ([`DcvConfig::dnssec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dnssec {
    /// The resolver must validate (proved by a probe) and a bogus answer fails closed.
    Required,
    /// No DNSSEC enforcement.
    Off,
}

/// Whether remote perspectives must corroborate ([`DcvConfig::mpic`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mpic {
    /// Corroboration is needed (TLS BR §3.2.2.9).
    Required,
    /// No corroboration.
    Off,
}

/// A remote Network Perspective.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Perspective {
    /// A name for logs and audit records.
    pub name: String,
    /// `https://HOST:PORT`.
    pub url: String,
    /// The file holding the bearer token it expects.
    pub token_file: PathBuf,
    /// PEM certificates that its TLS certificate must chain to.
    pub ca_file: PathBuf,
    /// The Regional Internet Registry whose service region it is in: AFRINIC, APNIC, ARIN,
    /// LACNIC or RIPE (TLS BR §3.2.2.9: the corroborating perspectives span at least two).
    pub rir: String,
}

/// The Regional Internet Registries.
pub const RIRS: [&str; 5] = ["AFRINIC", "APNIC", "ARIN", "LACNIC", "RIPE"];

impl Default for DcvConfig {
    fn default() -> Self {
        DcvConfig {
            resolver: "127.0.0.1:53".into(),
            dnssec: Dnssec::Required,
            dnssec_probe: ".".into(),
            caa_identities: Vec::new(),
            timeout_seconds: 5,
            mpic: Mpic::Required,
            perspectives: Vec::new(),
        }
    }
}

/// The registration authority (docs/RA.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaConfig {
    /// Fee per profile, in Hong Kong cents (e-Cert (Personal): HK$50 a year).
    pub fees: std::collections::BTreeMap<String, u32>,
    /// Profiles whose approval needs two different staff members.
    pub dual_control: Vec<String>,
    /// How long an approval counts, in hours.
    pub approval_hours: u32,
    /// A staff session ends after this many idle minutes...
    pub session_idle_minutes: u32,
    /// ... and at the latest this many hours after sign-in.
    pub session_max_hours: u32,
    /// How long an e-mail confirmation code is good for, in minutes.
    pub email_code_minutes: u32,
    /// Online renewal opens this many days before the certificate expires.
    pub renewal_window_days: u32,
    /// Expiry reminders are mailed to the subscriber this many days before the certificate
    /// expires, once each (empty: none). Each 1 to 365.
    pub reminder_days: Vec<u32>,
    /// The CA's policy allows standing authorisations: two officers may let an organisation's
    /// batches (up to a size, for up to a year) be approved on arrival instead of each by two
    /// officers (docs/BULK.md "Standing authorisation"). Default: not allowed.
    pub standing_authorisation: bool,
    /// Personal data of applications that ended without a certificate (rejected, or never
    /// completed) is purged this many days after their last change (docs/PRIVACY.md).
    pub retention_days: u32,
    /// Personal data and verification records behind an issued certificate are kept this many
    /// days after the certificate expires, then purged (docs/PRIVACY.md). At least 730: TLS
    /// BR and S/MIME BR §5.5.2 keep verification records two years after the certificates
    /// relying on them expire. Default 2557 (seven years).
    pub retention_after_expiry_days: u32,
    /// Audit records are kept this many days, then purged up to a signed checkpoint, the
    /// purge declared by a signed `audit.pruned` record so the chain still verifies
    /// (docs/AUDIT.md "Retention"). At least 730: TLS BR and S/MIME BR §5.4.3 and §5.5.2 keep
    /// audit logs two years. Default 2557 (seven years). Audit records hold no personal data.
    pub audit_retention_days: u32,
    /// SMTP relay for notices to citizens: `host:port` (plain SMTP; point it at a local relay
    /// that forwards with TLS).
    pub smtp: String,
    /// Sender address of notices.
    pub mail_from: String,
    /// Proxies whose `X-Forwarded-For` is believed (addresses or CIDR blocks): the front
    /// instances (`ecert serve --no-signer --ra-upstream`) and load balancers in front of this
    /// one. Rate limits then count the client the proxy names, not the proxy.
    pub trusted_proxies: Vec<String>,
}

/// An address block `IP/len` (or one address).
pub fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (ip, len) = match s.trim().split_once('/') {
        Some((ip, len)) => (
            ip.parse::<std::net::IpAddr>().ok()?,
            len.parse::<u8>().ok()?,
        ),
        None => {
            let ip = s.trim().parse::<std::net::IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// Whether `ip` is in the block.
pub fn cidr_contains(block: (std::net::IpAddr, u8), ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let (net, len) = block;
    match (net, ip.to_canonical()) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

impl Default for RaConfig {
    fn default() -> Self {
        RaConfig {
            fees: [
                ("personal", 5_000),
                ("personal-minor", 5_000),
                ("organisational", 15_000),
                ("organisational-role", 15_000),
                ("encipherment", 15_000),
                ("server", 50_000),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            dual_control: vec![
                "organisational".into(),
                "organisational-role".into(),
                "server".into(),
            ],
            approval_hours: 24,
            session_idle_minutes: 15,
            session_max_hours: 8,
            email_code_minutes: 30,
            renewal_window_days: 90,
            reminder_days: vec![30, 7],
            standing_authorisation: false,
            retention_days: 90,
            retention_after_expiry_days: 2557,
            audit_retention_days: 2557,
            smtp: "127.0.0.1:25".into(),
            mail_from: "e-cert@pki.example.hk".into(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// How CRLs are partitioned, per issuing CA (docs/REVOCATION.md "Which CRL a client needs").
///
/// A partitioned CRL carries a critical IssuingDistributionPoint, which NSS (Thunderbird,
/// Firefox) refuses (`SEC_ERROR_CRL_UNKNOWN_CRITICAL_EXTENSION`); GnuPG's dirmngr and OpenSSL
/// accept it. So the Individual CA, whose certificates mail clients check, names its full CRL
/// by default, and the Server CA (TLS clients do not fetch CDPs; browsers use their own
/// revocation feeds) is partitioned by default (TLS BR §7.2.2.1).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrlConfig {
    /// Partitions of both issuing CAs, where the per-CA setting below is not given.
    pub partitions: Option<u16>,
    /// Partitions of the Individual & Organisational CA (default 0: certificates name the full
    /// CRL, which NSS and GnuPG can use).
    pub individual_partitions: Option<u16>,
    /// Partitions of the Server CA (default 16).
    pub server_partitions: Option<u16>,
}

impl CrlConfig {
    /// The partitions of an issuing CA (0: none; its certificates then name the full CRL). A
    /// certificate is assigned its partition when it is reserved, and keeps it: a change
    /// affects only certificates issued afterwards, and the partitions already used keep being
    /// published. The root is never partitioned.
    pub fn partitions_of(&self, role: crate::profile::CaRole) -> u16 {
        use crate::profile::CaRole;
        match role {
            CaRole::Root | CaRole::TlsRoot => 0,
            CaRole::Individual => self.individual_partitions.or(self.partitions).unwrap_or(0),
            CaRole::Server => self.server_partitions.or(self.partitions).unwrap_or(16),
        }
    }
}

/// How OCSP responses are made and served (docs/OCSP.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OcspConfig {
    /// nextUpdate − thisUpdate of every response, in hours: 8 to 240 (TLS BR §4.9.10).
    pub validity_hours: u32,
    /// A response is re-signed this many hours after its thisUpdate: less than half the
    /// validity and less than 96 (BR §4.9.10: no later than four days after thisUpdate, and at least eight
    /// hours before nextUpdate).
    pub refresh_hours: u32,
    /// Validity of a delegated responder certificate, in hours. A new responder is made once the
    /// current one would expire before a response it signs now.
    pub responder_validity_hours: u32,
    /// `Cache-Control: max-age` of GET responses (never beyond nextUpdate): how long an HTTP
    /// cache may keep answering with a response after the status changed.
    pub cache_max_age_seconds: u32,
}

impl Default for OcspConfig {
    fn default() -> Self {
        OcspConfig {
            validity_hours: 96,
            refresh_hours: 24,
            responder_validity_hours: 30 * 24,
            cache_max_age_seconds: 300,
        }
    }
}

/// Where the CA keys live.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HsmConfig {
    /// PKCS#11 module; default SoftHSM2.
    pub module: PathBuf,
    /// Token label.
    pub token_label: String,
    /// User PIN file; default `<data-dir>/hsm/user.pin` (made by `ecert init` for SoftHSM2).
    /// `ECERT_HSM_PIN` overrides it.
    pub user_pin_file: Option<PathBuf>,
    /// Sessions kept open for signing.
    pub pool_size: usize,
    /// Embedded mode: the SoftHSM2 token lives in `<data-dir>/hsm` with its own configuration
    /// and PIN files, made by `ecert init`. Default: true when the module is SoftHSM2. Set false
    /// to use an existing SoftHSM2 installation (its own `SOFTHSM2_CONF`, `ECERT_HSM_PIN`).
    pub embedded: Option<bool>,
    /// Label of the `pii` token: the personal-data seal and blind-index keys, in the data
    /// owner's custody (DESIGN.md "Custody and roles"). Default `pii`. (Not `ecert-…`:
    /// `pkcs11-tool --token-label ecert` matches any label that starts with `ecert`.)
    pub pii_token_label: String,
    /// Label of the root token: the roots' keys, opened only in a key ceremony with a quorum
    /// of custodian shares (`ecert ceremony`, docs/CEREMONY.md), never by `serve`. Default
    /// `root-keys`. In production it is on an offline HSM, not configured on the online signer.
    pub root_token_label: String,
    /// Where the `pii` token's user PIN comes from: `"file:PATH"` (a secret the data owner
    /// controls, outside the data directory in production), `"env:NAME"`, or `"activation"`
    /// (the `data_owner` role activates the keys through the API or `/staff/personal-data`).
    /// `ECERT_PII_PIN` overrides it. Default: embedded mode `file:<data-dir>/hsm/pii-user.pin`
    /// (made by `ecert init`; `config check` says custody is not separated), otherwise
    /// `activation`.
    pub pii_pin: Option<String>,
}

/// Where the `pii` token's user PIN comes from ([`HsmConfig::pii_pin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PiiPin {
    /// A file (trimmed).
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// Given by the data owner at run time.
    Activation,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The database URL may carry a password.
        let db = self
            .database_url
            .as_deref()
            .map(|u| crate::store::redact_url(u, u));
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("database_url", &db)
            .field("hsm", &self.hsm)
            .field("ca", &self.ca)
            .field("ocsp", &self.ocsp)
            .finish()
    }
}

impl std::fmt::Debug for HsmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmConfig")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("user_pin_file", &self.user_pin_file)
            .field("pool_size", &self.pool_size)
            .field("embedded", &self.embedded)
            .field("pii_token_label", &self.pii_token_label)
            .field("root_token_label", &self.root_token_label)
            .field("pii_pin", &self.pii_pin)
            .finish()
    }
}

/// Names, URLs and validity of the hierarchy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaConfig {
    /// Public base URL put in AIA and CRL distribution points.
    pub base_url: String,
    /// Two-letter country of the CA's organisation.
    pub country: String,
    /// The CA's organisation name.
    pub organization: String,
    /// Common names of the three CAs.
    pub root_common_name: String,
    /// The TLS root (over the Server CA; `root_common_name` names the S/MIME root).
    pub tls_root_common_name: String,
    /// Individual & Organisational issuing CA.
    pub individual_common_name: String,
    /// Server issuing CA.
    pub server_common_name: String,
    /// Root validity in days.
    pub root_validity_days: u32,
    /// Issuing CA validity in days.
    pub issuing_validity_days: u32,
    /// Policy OID arc; default: `2.25.<uuid>` made once by `ecert init` and kept in the database.
    pub policy_arc: Option<String>,
    /// The key type of each CA `ecert init` makes, unless [`CaConfig::key_types`] names another
    /// for it: `p256` (the default), `p384`, `rsa2048`, `rsa3072` or `rsa4096` (RSA signs with
    /// PKCS#1 v1.5 and SHA-256). Each CA's OCSP responder key has its CA's type. A CA that
    /// exists keeps its key: changing this later changes nothing already made.
    pub key_type: String,
    /// Key types of single CAs by name (`root`, `tls-root`, `individual`, `server`), e.g.
    /// `key_types = { root = "rsa4096", individual = "rsa2048" }`.
    pub key_types: std::collections::BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("ecert-data"),
            database_url: None,
            hsm: HsmConfig::default(),
            ca: CaConfig::default(),
            ocsp: OcspConfig::default(),
            crl: CrlConfig::default(),
            ra: RaConfig::default(),
            dcv: DcvConfig::default(),
            http: HttpConfig::default(),
            keys: KeysConfig::default(),
            clock: ClockConfig::default(),
            audit: AuditConfig::default(),
            ldap: LdapConfig::default(),
            backup: BackupConfig::default(),
        }
    }
}

impl Default for HsmConfig {
    fn default() -> Self {
        HsmConfig {
            module: PathBuf::from(hsm::pkcs11::SOFTHSM2_MODULE),
            token_label: "ecert".into(),
            user_pin_file: None,
            pool_size: 4,
            embedded: None,
            pii_token_label: "pii".into(),
            root_token_label: "root-keys".into(),
            pii_pin: None,
        }
    }
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            base_url: "http://127.0.0.1:8080".into(),
            country: "HK".into(),
            organization: "ecert Demonstration CA".into(),
            root_common_name: "ecert Root CA".into(),
            tls_root_common_name: "ecert TLS Root CA".into(),
            individual_common_name: "ecert Individual and Organisational CA".into(),
            server_common_name: "ecert Server CA".into(),
            root_validity_days: MAX_ROOT_VALIDITY_DAYS,
            issuing_validity_days: 10 * 365,
            policy_arc: None,
            key_type: hsm::KeySpec::P256.name().into(),
            key_types: Default::default(),
        }
    }
}

fn parse_key_type(key: &str, value: &str) -> Result<hsm::KeySpec> {
    value
        .parse::<hsm::KeySpec>()
        .map_err(|e| Error::Config(format!("{key}: {e}")))
}

impl Config {
    /// The key type a new CA of `role` gets ([`CaConfig::key_type`], [`CaConfig::key_types`]).
    pub fn ca_key_type(&self, role: crate::profile::CaRole) -> Result<hsm::KeySpec> {
        match self.ca.key_types.get(role.name()) {
            Some(v) => parse_key_type(&format!("ca.key_types.{}", role.name()), v),
            None => parse_key_type("ca.key_type", &self.ca.key_type),
        }
    }

    /// The audit witness file (`[audit] witness`, relative to the data directory when not
    /// absolute).
    pub fn audit_witness(&self) -> Option<PathBuf> {
        self.audit.witness.as_ref().map(|p| self.data_dir.join(p))
    }
}

impl Config {
    /// Loads `<data_dir>/ecert.toml` (or `file` if given), then applies the environment.
    pub fn load(data_dir: &Path, file: Option<&Path>) -> Result<Self> {
        let default_file = data_dir.join("ecert.toml");
        let path = file.map(Path::to_path_buf).unwrap_or(default_file);
        let mut cfg: Config = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {}", path.display(), e.message())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && file.is_none() => {
                Config::default()
            }
            Err(e) => {
                return Err(Error::Io {
                    context: format!("reading {}", path.display()),
                    source: e,
                })
            }
        };
        cfg.data_dir = data_dir.to_path_buf();
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(v) = env("ECERT_DATABASE_URL") {
            cfg.database_url = Some(v);
        }
        if let Some(v) = env("ECERT_BASE_URL") {
            cfg.ca.base_url = v;
        }
        if let Some(v) = env("ECERT_DNS_RESOLVER") {
            cfg.dcv.resolver = v;
        }
        if let Some(v) = env("ECERT_SMTP") {
            cfg.ra.smtp = v;
        }
        if let Some(v) = env("ECERT_HSM_MODULE") {
            cfg.hsm.module = v.into();
        }
        if let Some(v) = env("ECERT_HSM_TOKEN_LABEL") {
            cfg.hsm.token_label = v;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what can be checked without touching the HSM or the database.
    pub fn validate(&self) -> Result<()> {
        if let Some(url) = &self.audit.witness_url {
            if !url.starts_with("https://") || self.audit.witness_ca.is_none() {
                return Err(Error::Config(
                    "audit.witness_url must be https:// and needs audit.witness_ca (the witness service's CA certificate)".into(),
                ));
            }
        }
        self.pii_pin_source()?;
        crate::ldap::check_config(&self.ldap)?;
        let mut days = self.ra.reminder_days.clone();
        days.sort_unstable();
        days.dedup();
        if days.len() != self.ra.reminder_days.len()
            || days.len() > 5
            || days
                .iter()
                .any(|d| *d == 0 || *d > self.ra.renewal_window_days)
        {
            return Err(Error::Config(format!(
                "ra.reminder_days: at most 5 different values, each 1 to ra.renewal_window_days ({}): a reminder asks the subscriber to renew online",
                self.ra.renewal_window_days
            )));
        }
        if self.ra.retention_after_expiry_days < 730 {
            return Err(Error::Config(
                "ra.retention_after_expiry_days: at least 730 (TLS BR and S/MIME BR §5.5.2: verification records are kept two years after the certificate expires)".into(),
            ));
        }
        if self.ra.audit_retention_days < 730 {
            return Err(Error::Config(
                "ra.audit_retention_days: at least 730 (TLS BR and S/MIME BR §5.4.3: audit logs are kept two years)".into(),
            ));
        }
        if self.ra.retention_days == 0 {
            return Err(Error::Config(
                "ra.retention_days: at least 1 (an unfinished application needs time to be completed)".into(),
            ));
        }
        let (ca, pii) = (&self.hsm.token_label, &self.hsm.pii_token_label);
        if pii.starts_with(ca.as_str()) || ca.starts_with(pii.as_str()) {
            return Err(Error::Config(
                "hsm.pii_token_label must name another token than hsm.token_label, neither label \
                 starting with the other (pkcs11-tool matches labels by prefix): the \
                 personal-data keys are in the data owner's custody, apart from the CA keys"
                    .into(),
            ));
        }
        let Ok(resolver) = self.dcv.resolver.parse::<std::net::SocketAddr>() else {
            return Err(Error::Config(format!(
                "dcv.resolver must be IP:PORT of a DNSSEC-validating resolver (e.g. a local \
                 Unbound at 127.0.0.1:53), got {:?}",
                self.dcv.resolver
            )));
        };
        if self.dcv.dnssec == Dnssec::Required && !resolver.ip().is_loopback() {
            return Err(Error::Config(format!(
                "dcv.resolver {resolver} is not on this host: with dcv.dnssec = \"required\" the \
                 AD bit is trusted only from a resolver on a loopback address (RFC 4035 §4.9.3); \
                 run a validating resolver here"
            )));
        }
        if hickory_proto::rr::Name::from_ascii(&self.dcv.dnssec_probe).is_err() {
            return Err(Error::Config(format!(
                "dcv.dnssec_probe {:?} is not a DNS name",
                self.dcv.dnssec_probe
            )));
        }
        if let Some(bad) = self
            .ra
            .trusted_proxies
            .iter()
            .find(|p| parse_cidr(p).is_none())
        {
            return Err(Error::Config(format!(
                "ra.trusted_proxies: {bad:?} is not an address or IP/len block"
            )));
        }
        if let Some(p) = self
            .dcv
            .perspectives
            .iter()
            .find(|p| !p.url.starts_with("https://"))
        {
            return Err(Error::Config(format!(
                "dcv.perspectives {:?}: the url must be https:// (TLS BR §3.2.2.9: an encrypted, authenticated channel)",
                p.name
            )));
        }
        for (i, p) in self.dcv.perspectives.iter().enumerate() {
            if !RIRS.contains(&p.rir.as_str()) {
                return Err(Error::Config(format!(
                    "dcv.perspectives {:?}: rir must be one of {}",
                    p.name,
                    RIRS.join(", ")
                )));
            }
            if self.dcv.perspectives[..i]
                .iter()
                .any(|q| q.name == p.name || q.url == p.url)
            {
                return Err(Error::Config(format!(
                    "dcv.perspectives {:?}: each perspective is listed once (name and url)",
                    p.name
                )));
            }
        }
        if !(1..=10).contains(&self.http.header_timeout_seconds) {
            return Err(Error::Config(
                "http.header_timeout_seconds must be 1 to 10".into(),
            ));
        }
        if self.http.drain_seconds > 300 {
            return Err(Error::Config("http.drain_seconds must be 0 to 300".into()));
        }
        if !(1..=600).contains(&self.http.shutdown_grace_seconds) {
            return Err(Error::Config(
                "http.shutdown_grace_seconds must be 1 to 600".into(),
            ));
        }
        if !(1..=600).contains(&self.http.request_timeout_seconds) {
            return Err(Error::Config(
                "http.request_timeout_seconds must be 1 to 600".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.http.max_connections) {
            return Err(Error::Config(
                "http.max_connections must be 1 to 1000000".into(),
            ));
        }
        if !(1..=60).contains(&self.dcv.timeout_seconds) {
            return Err(Error::Config("dcv.timeout_seconds must be 1 to 60".into()));
        }
        let url = self.ca.base_url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
            return Err(Error::Config(format!(
                "ca.base_url must be an http(s) URL, got {:?}",
                self.ca.base_url
            )));
        }
        if self.ca.country.len() != 2 || !self.ca.country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(Error::Config(
                "ca.country must be two upper-case letters".into(),
            ));
        }
        for (k, v) in [
            ("ca.organization", &self.ca.organization),
            ("ca.root_common_name", &self.ca.root_common_name),
            ("ca.tls_root_common_name", &self.ca.tls_root_common_name),
            ("ca.individual_common_name", &self.ca.individual_common_name),
            ("ca.server_common_name", &self.ca.server_common_name),
        ] {
            if v.is_empty() || v.chars().count() > 64 {
                return Err(Error::Config(format!("{k} must be 1 to 64 characters")));
            }
        }
        // Each CA its own name: chains are built and roots' CRLs filtered by issuer name.
        let cns = [
            &self.ca.root_common_name,
            &self.ca.tls_root_common_name,
            &self.ca.individual_common_name,
            &self.ca.server_common_name,
        ];
        if (1..cns.len()).any(|i| cns[..i].contains(&cns[i])) {
            return Err(Error::Config(
                "ca.root_common_name, tls_root_common_name, individual_common_name and \
                 server_common_name must all differ: each CA has its own name"
                    .into(),
            ));
        }
        if self.ca.root_validity_days == 0 || self.ca.issuing_validity_days == 0 {
            return Err(Error::Config("CA validity must be at least one day".into()));
        }
        if self.ca.root_validity_days > MAX_ROOT_VALIDITY_DAYS {
            return Err(Error::Config(format!(
                "ca.root_validity_days = {} is longer than 15 years ({MAX_ROOT_VALIDITY_DAYS} days): \
                 root programs stop trusting a root for websites 15 years after its key was made \
                 (Mozilla Root Store Policy 3.1 §7.4, Chrome Root Program)",
                self.ca.root_validity_days
            )));
        }
        if self.ca.issuing_validity_days >= self.ca.root_validity_days {
            return Err(Error::Config(
                "ca.issuing_validity_days must be shorter than ca.root_validity_days (an issuing CA \
                 ends before its root)"
                    .into(),
            ));
        }
        if let Some(arc) = &self.ca.policy_arc {
            crate::ext::PolicyOid::parse(arc)?;
        }
        parse_key_type("ca.key_type", &self.ca.key_type)?;
        for (name, value) in &self.ca.key_types {
            crate::profile::CaRole::from_name(name).map_err(|_| {
                Error::Config(format!(
                    "ca.key_types: {name:?} is not a CA (root, tls-root, individual, server)"
                ))
            })?;
            parse_key_type(&format!("ca.key_types.{name}"), value)?;
        }
        for (key, n) in [
            ("partitions", self.crl.partitions),
            ("individual_partitions", self.crl.individual_partitions),
            ("server_partitions", self.crl.server_partitions),
        ] {
            if n.is_some_and(|n| n > crate::crl::MAX_PARTITIONS) {
                return Err(Error::Config(format!(
                    "crl.{key} must be 0 to {}",
                    crate::crl::MAX_PARTITIONS
                )));
            }
        }
        let o = &self.ocsp;
        if !(8..=240).contains(&o.validity_hours) {
            return Err(Error::Config(
                "ocsp.validity_hours must be 8 to 240 (TLS BR §4.9.10)".into(),
            ));
        }
        // Strictly below the BR deadlines: a refresh starts after `refresh_hours` and takes
        // a pass of the signer to land.
        if o.refresh_hours == 0 || o.refresh_hours >= (o.validity_hours / 2).min(96) {
            return Err(Error::Config(
                "ocsp.refresh_hours must be at least 1 and below half of ocsp.validity_hours and below 96 (TLS BR §4.9.10)"
                    .into(),
            ));
        }
        if o.responder_validity_hours < 2 * (o.validity_hours + o.refresh_hours) {
            return Err(Error::Config(
                "ocsp.responder_validity_hours must be at least twice ocsp.validity_hours + ocsp.refresh_hours"
                    .into(),
            ));
        }
        if self.hsm.pool_size == 0 || self.hsm.pool_size > 64 {
            return Err(Error::Config("hsm.pool_size must be 1 to 64".into()));
        }
        if let Some(url) = &self.database_url {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                return Err(Error::Config(
                    "database_url must start with sqlite: or postgres://".into(),
                ));
            }
        }
        Ok(())
    }

    /// Things that are valid but will bite: judged by outside linters as errors, or unsafe for
    /// production. `ecert config check` prints them.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let host = self
            .base_url()
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', ':']).next().unwrap_or_default())
            .unwrap_or_default();
        if host.parse::<std::net::IpAddr>().is_ok() || host == "localhost" || !host.contains('.') {
            w.push(format!(
                "ca.base_url host {host:?} is an IP address or internal name; certificates will carry it in AIA/CRL \
                 URLs, which the CA/B Forum requirements (and pkilint) reject for public certificates"
            ));
        }
        if self.dcv.mpic == Mpic::Off {
            w.push(
                "dcv.mpic is \"off\": the Server CA issues nothing (its certificates assert the TLS BR \
                 OV policy, which needs corroboration by remote perspectives, TLS BR §3.2.2.9)"
                    .into(),
            );
        }
        if let Err(e) = crate::mpic::required(&self.dcv) {
            w.push(format!(
                "{e}: server applications cannot have their domains validated until it is"
            ));
        }
        // dnssec = "off" and a test trust anchor are production problems
        // ([`Config::production_problems`]); `config check` prints those as warnings too.
        if self.dcv.caa_identities.is_empty() {
            w.push(
                "dcv.caa_identities is empty: a domain with any CAA issue record forbids this CA"
                    .into(),
            );
        }
        w
    }

    /// What makes a valid configuration unfit for a production CA. `ecert config check` warns
    /// of each; `--production` refuses. Reads the Debian weak-key lists (a malformed list is an
    /// error).
    pub fn production_problems(&self) -> Result<Vec<String>> {
        let mut p = Vec::new();
        match &self.keys.debian_weak_dir {
            None => p.push(
                "keys.debian_weak_dir is not set: Debian weak keys (CVE-2008-0166) are not refused \
                 (TLS BR §6.1.1.3(5), S/MIME BR §6.1.1.3); install the lists (`ecert keys \
                 debian-list build`)"
                    .into(),
            ),
            Some(dir) => {
                let lists = crate::keys::debian::DebianWeakKeys::load(dir)?;
                for bits in lists.missing() {
                    p.push(format!(
                        "{} has no {}: Debian weak RSA-{bits} keys are not refused",
                        dir.display(),
                        crate::keys::debian::list_name(bits)
                    ));
                }
            }
        }
        if self.dcv.dnssec == Dnssec::Off {
            p.push(
                "dcv.dnssec is \"off\": TLS BR §3.2.2.4 and §3.2.2.8.1 require DNSSEC validation"
                    .into(),
            );
        }
        if !self.dcv.dnssec_probe.trim_end_matches('.').is_empty() {
            p.push(format!(
                "dcv.dnssec_probe {:?} is a test trust anchor; production uses the root (\".\")",
                self.dcv.dnssec_probe
            ));
        }
        // Custody (issue 14; DESIGN.md "Custody and roles"): whoever holds the data directory
        // must not hold the personal-data keys' PIN.
        if self.pii_custody_in_data_dir() {
            p.push(
                "custody is not separated: the pii token's PIN is a file in the data directory \
                 (hsm.pii_pin); give it to the data owner (\"activation\", or a file or \
                 variable outside the data directory)"
                    .into(),
            );
        }
        // The token table of DESIGN.md "Custody and roles" (issue 15): no PIN in the data
        // directory, no root-token share there, a certified module.
        let in_data_dir = |p: &Path| {
            std::path::absolute(p)
                .ok()
                .zip(std::path::absolute(&self.data_dir).ok())
                .is_some_and(|(p, d)| p.starts_with(d))
        };
        let user_pin_file = self
            .hsm
            .user_pin_file
            .clone()
            .unwrap_or_else(|| self.hsm_dir().join("user.pin"));
        if std::env::var_os("ECERT_HSM_PIN").is_none() && in_data_dir(&user_pin_file) {
            p.push(format!(
                "the ca token's PIN is a file in the data directory ({}): give it from outside \
                 (hsm.user_pin_file elsewhere, or ECERT_HSM_PIN)",
                user_pin_file.display()
            ));
        }
        for so in ["so.pin", "pii-so.pin"] {
            if self.hsm_dir().join(so).exists() {
                p.push(format!(
                    "an SO PIN is a file in the data directory (hsm/{so}): SO PINs are kept by \
                     custodians, never beside the data"
                ));
            }
        }
        let shares = crate::ceremony::embedded_share_path(self);
        if shares.parent().is_some_and(Path::exists) {
            p.push(format!(
                "root-token shares are in the data directory ({}): the embedded default's 1-of-1 \
                 quorum; a production root token is made in a key ceremony with m-of-n \
                 custodians (docs/CEREMONY.md)",
                shares.parent().unwrap_or(&shares).display()
            ));
        }
        if self
            .hsm
            .module
            .to_string_lossy()
            .to_ascii_lowercase()
            .contains("softhsm")
        {
            p.push(format!(
                "hsm.module {} is SoftHSM2, a software token: CA keys need a module validated \
                 to FIPS 140-3 level 3 (or Common Criteria EAL 4+), TLS BR §6.2.7",
                self.hsm.module.display()
            ));
        }
        if !self.policy_arc_decodable() {
            p.push(
                "ca.policy_arc is unset or has an arc above 2^32-1: linters and clients \
                 (pkilint, libksba) cannot decode the certificate policies; set an arc under \
                 your IANA enterprise number"
                    .into(),
            );
        }
        Ok(p)
    }

    /// Whether the configured policy arc is one every linter decodes (each arc below 2^32).
    fn policy_arc_decodable(&self) -> bool {
        self.ca.policy_arc.as_deref().is_some_and(|arc| {
            arc.split('.')
                .all(|a| a.parse::<u64>().is_ok_and(|n| n <= u64::from(u32::MAX)))
        })
    }

    /// The database URL in force.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("ecert.db").display()
            )
        })
    }

    /// The base URL without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.ca.base_url.trim_end_matches('/')
    }

    /// True when the HSM is the embedded SoftHSM2 token in the data directory.
    pub fn embedded_softhsm(&self) -> bool {
        self.hsm
            .embedded
            .unwrap_or_else(|| self.hsm.module.to_string_lossy().contains("softhsm"))
    }

    /// Directory of the embedded SoftHSM2 token and its PIN files.
    pub fn hsm_dir(&self) -> PathBuf {
        self.data_dir.join("hsm")
    }

    /// Where the `pii` token's PIN comes from; see [`HsmConfig::pii_pin`].
    pub fn pii_pin_source(&self) -> Result<PiiPin> {
        Ok(match self.hsm.pii_pin.as_deref() {
            None if self.embedded_softhsm() => PiiPin::File(self.hsm_dir().join("pii-user.pin")),
            None | Some("activation") => PiiPin::Activation,
            Some(s) => match s.split_once(':') {
                Some(("file", path)) if !path.is_empty() => PiiPin::File(PathBuf::from(path)),
                Some(("env", name)) if !name.is_empty() => PiiPin::Env(name.to_string()),
                _ => {
                    return Err(Error::Config(format!(
                    "hsm.pii_pin must be \"file:PATH\", \"env:NAME\" or \"activation\", got {s:?}"
                )))
                }
            },
        })
    }

    /// The `pii` token's user PIN if this process may read it (`ECERT_PII_PIN`, else
    /// [`Config::pii_pin_source`]); `Ok(None)` when it waits for activation; an error naming
    /// the file or variable that should hold it and does not.
    pub fn pii_pin(&self) -> Result<Option<String>> {
        if let Ok(pin) = std::env::var("ECERT_PII_PIN") {
            if !pin.is_empty() {
                return Ok(Some(pin));
            }
        }
        match self.pii_pin_source()? {
            PiiPin::Activation => Ok(None),
            PiiPin::Env(name) => match std::env::var(&name) {
                Ok(pin) if !pin.is_empty() => Ok(Some(pin)),
                _ => Err(Error::Config(format!(
                    "the pii token's PIN variable {name} is not set"
                ))),
            },
            PiiPin::File(file) => std::fs::read_to_string(&file)
                .map(|s| Some(s.trim().to_string()))
                .map_err(|e| Error::Io {
                    context: format!("reading the pii token's PIN from {}", file.display()),
                    source: e,
                }),
        }
    }

    /// True when a `pii` token PIN is a file inside the data directory: the configured source,
    /// or the embedded default's `pii-user.pin` / `pii-so.pin` left behind after the source
    /// moved elsewhere (they still open the token). Whoever holds the directory then holds the
    /// personal data (the embedded default; `config check` says so).
    pub fn pii_custody_in_data_dir(&self) -> bool {
        // Symbolic links and `..` resolved, so no spelling of a path hides where it is.
        let real = |p: &Path| std::fs::canonicalize(p).ok();
        let Some(dir) = real(&self.data_dir) else {
            return false;
        };
        let default_files = ["pii-user.pin", "pii-so.pin"].map(|f| self.hsm_dir().join(f));
        if default_files.iter().any(|f| f.exists()) {
            return true;
        }
        match self.pii_pin_source() {
            Ok(PiiPin::File(f)) => real(&f).is_some_and(|f| f.starts_with(&dir)),
            _ => false,
        }
    }

    /// Reads the user PIN: `ECERT_HSM_PIN`, else the PIN file.
    pub fn user_pin(&self) -> Result<String> {
        if let Ok(pin) = std::env::var("ECERT_HSM_PIN") {
            if !pin.is_empty() {
                return Ok(pin);
            }
        }
        let file = self
            .hsm
            .user_pin_file
            .clone()
            .unwrap_or_else(|| self.hsm_dir().join("user.pin"));
        std::fs::read_to_string(&file)
            .map(|s| s.trim().to_string())
            .map_err(|e| Error::Io {
                context: format!("reading the HSM user PIN from {}", file.display()),
                source: e,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, defect 7: a root longer than 15 years, or an issuing CA not shorter than its
    /// root, is refused by name; the defaults fit.
    #[test]
    fn ca_validities_are_limited() {
        let mut c = Config::default();
        c.validate().unwrap();
        assert!(c.ca.root_validity_days <= MAX_ROOT_VALIDITY_DAYS);
        c.ca.root_validity_days = 25 * 365;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("15 years") && e.contains("7.4"), "{e}");
        c.ca.root_validity_days = 3650;
        c.ca.issuing_validity_days = 3650;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("shorter than ca.root_validity_days"), "{e}");
    }

    /// Issue 14 (custody, from the attack on it): a pii PIN file in the data directory means
    /// custody is not separated — the configured source, or the embedded default's files left
    /// behind after the source moved to activation, however the path is spelt.
    #[test]
    fn a_pii_pin_in_the_data_directory_is_not_separated_custody() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config {
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        std::fs::create_dir_all(c.hsm_dir()).unwrap();
        c.hsm.pii_pin = Some("activation".into());
        assert!(!c.pii_custody_in_data_dir());
        std::fs::write(c.hsm_dir().join("pii-so.pin"), "x").unwrap();
        assert!(
            c.pii_custody_in_data_dir(),
            "the default SO PIN file is left"
        );
        std::fs::remove_file(c.hsm_dir().join("pii-so.pin")).unwrap();
        let inside = c.data_dir.join("secret.pin");
        std::fs::write(&inside, "x").unwrap();
        let roundabout = dir.path().join("data/../data/secret.pin");
        c.hsm.pii_pin = Some(format!("file:{}", roundabout.display()));
        assert!(c.pii_custody_in_data_dir(), "{roundabout:?}");
        let outside = dir.path().join("owner.pin");
        std::fs::write(&outside, "x").unwrap();
        c.hsm.pii_pin = Some(format!("file:{}", outside.display()));
        assert!(!c.pii_custody_in_data_dir());
        assert!(c
            .production_problems()
            .unwrap()
            .iter()
            .all(|p| !p.contains("custody")));
        c.hsm.pii_pin = Some("file:".into());
        assert!(c.validate().is_err());
        c.hsm.pii_pin = Some("env:ECERT_X".into());
        c.hsm.pii_token_label = "ecert-pii".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("pii_token_label"), "{e}");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[ca]\ncountry = \"Hong Kong\"\n").unwrap();
        let e = Config::load(dir.path(), Some(&f)).unwrap_err().to_string();
        assert!(e.contains("ca.country"), "{e}");
        std::fs::write(&f, "[ca]\nnot_a_field = 1\n").unwrap();
        let e = Config::load(dir.path(), Some(&f)).unwrap_err().to_string();
        assert!(e.contains("not_a_field"), "{e}");
        std::fs::write(&f, "[ca]\nbase_url = \"https://ca.example.hk/\"\n").unwrap();
        let c = Config::load(dir.path(), Some(&f)).unwrap();
        assert_eq!(c.base_url(), "https://ca.example.hk");
        for (bad, key) in [
            ("[ocsp]\nvalidity_hours = 241\n", "ocsp.validity_hours"),
            ("[ocsp]\nvalidity_hours = 7\n", "ocsp.validity_hours"),
            (
                "[ocsp]\nvalidity_hours = 16\nrefresh_hours = 9\n",
                "ocsp.refresh_hours",
            ),
            (
                "[ocsp]\nrefresh_hours = 97\nvalidity_hours = 240\n",
                "ocsp.refresh_hours",
            ),
            (
                "[ocsp]\nresponder_validity_hours = 200\n",
                "ocsp.responder_validity_hours",
            ),
        ] {
            std::fs::write(&f, bad).unwrap();
            let e = Config::load(dir.path(), Some(&f)).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }
}

#[cfg(test)]
mod cidr_tests {
    use super::*;

    #[test]
    fn perspectives_must_be_https() {
        let mut c = Config::default();
        let p = |i: usize, rir: &str| Perspective {
            name: format!("p{i}"),
            url: format!("https://10.0.0.{i}:8443"),
            token_file: "t".into(),
            ca_file: "c".into(),
            rir: rir.into(),
        };
        c.dcv.perspectives.push(Perspective {
            url: "http://10.0.0.9:8443".into(),
            ..p(9, "APNIC")
        });
        assert!(c.validate().unwrap_err().to_string().contains("https"));
        c.dcv.perspectives[0] = p(9, "MARS");
        assert!(c.validate().unwrap_err().to_string().contains("rir"));
        c.dcv.perspectives[0] = p(9, "APNIC");
        assert!(c.validate().is_ok());
        c.dcv.perspectives.push(p(9, "ARIN"));
        assert!(
            c.validate().unwrap_err().to_string().contains("once"),
            "duplicates"
        );
        c.dcv.perspectives.pop();
        // Required corroboration with fewer perspectives than the BR's phase-in asks for now
        // (five from 2026-12-15) cannot be met.
        let now = time::macros::datetime!(2026-12-20 0:00 UTC);
        for i in 1..4 {
            c.dcv.perspectives.push(p(i, "ARIN"));
        }
        assert!(crate::mpic::required_at(&c.dcv, now).is_err());
        c.dcv.perspectives.push(p(4, "RIPE"));
        assert!(crate::mpic::required_at(&c.dcv, now).unwrap());
        c.dcv.mpic = Mpic::Off;
        assert!(!crate::mpic::required_at(&c.dcv, now).unwrap());
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let b = parse_cidr("10.1.0.0/16").unwrap();
        assert!(cidr_contains(b, "10.1.200.3".parse().unwrap()));
        assert!(!cidr_contains(b, "10.2.0.1".parse().unwrap()));
        let one = parse_cidr("127.0.0.1").unwrap();
        assert!(cidr_contains(one, "127.0.0.1".parse().unwrap()));
        assert!(
            cidr_contains(one, "::ffff:127.0.0.1".parse().unwrap()),
            "v4-mapped"
        );
        assert!(!cidr_contains(one, "127.0.0.2".parse().unwrap()));
        let v6 = parse_cidr("2001:db8::/32").unwrap();
        assert!(cidr_contains(v6, "2001:db8:1::9".parse().unwrap()));
        assert!(!cidr_contains(v6, "10.0.0.1".parse().unwrap()));
        assert!(cidr_contains(
            parse_cidr("0.0.0.0/0").unwrap(),
            "8.8.8.8".parse().unwrap()
        ));
        for bad in ["10.0.0.0/33", "example", "10.0.0.0/x", ""] {
            assert!(parse_cidr(bad).is_none(), "{bad}");
        }
    }
}
