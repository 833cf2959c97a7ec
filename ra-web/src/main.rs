//! `ecert`: the operator command line of the ecert certification authority.
//!
//! Every command takes `--data-dir` (env `ECERT_DATA_DIR`, default `./ecert-data`), which holds
//! the embedded SQLite database, the SoftHSM2 token and its PINs, and the optional `ecert.toml`.
//! Errors are one line on stderr starting with `error:` and a non-zero exit status.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use ca_core::authority::Authority;
use ca_core::config::Config;
use ca_core::profile::{CaId, CaRole};
use ca_core::serial::SerialNumber;
use ca_core::store::Store;
use clap::{Args, Parser, Subcommand};

/// `println!` for command output: a reader that went away (`ecert cert list | head`) ends the
/// command quietly instead of a panic on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

/// `print!` counterpart of [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

#[cfg(feature = "bench")]
mod bench;
mod client;
mod front;
mod metrics;
mod perspective;
mod ra;
mod serve;
mod tls;

/// ecert: an HSM-backed public certification authority.
#[derive(Debug, Parser)]
#[command(name = "ecert", version, about)]
struct Cli {
    /// Data directory: database, SoftHSM2 token, PINs, ecert.toml.
    #[arg(
        long,
        global = true,
        env = "ECERT_DATA_DIR",
        default_value = "ecert-data"
    )]
    data_dir: PathBuf,
    /// Configuration file (default: <data-dir>/ecert.toml if it exists).
    #[arg(long, global = true, env = "ECERT_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on standard error: `text` (for a person) or `json` (one object a line, for
    /// a log collector). The level is ECERT_LOG (default `warn,ecert::access=info`).
    #[arg(long, global = true, env = "ECERT_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the HSM token (embedded SoftHSM2), the CA hierarchy and the database. Idempotent.
    /// With --admin, also one of the first two admin accounts (its password read from standard
    /// input, its TOTP secret printed once): the only accounts ever made without another admin —
    /// two, because every privileged grant needs a second admin.
    Init(InitArgs),
    /// CA certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Certificates issued.
    #[command(subcommand)]
    Cert(CertCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write a backup archive while the service runs (docs/OPERATIONS.md "Backup and
    /// restore"): the database snapshot for the operator, the `ca` token for all the key
    /// custodians together, the `pii` token for the data owner (age, `[backup]`), signed by
    /// the audit key. Never the root token.
    Backup {
        /// The archive to write (0600; written whole or not at all).
        #[arg(long)]
        out: PathBuf,
    },
    /// Rebuild the CA from a backup archive into an empty --data-dir and an empty database:
    /// refuses an archive whose signature does not verify under --audit-key; then CRLNumbers
    /// move past anything issued after the backup and a signed `audit.restored` record names
    /// the records lost (from --witness).
    Restore {
        /// The archive (`ecert backup`).
        file: PathBuf,
        /// The audit public key the archive must be signed by (PEM, from `ecert audit key`,
        /// kept apart from the backups).
        #[arg(long)]
        audit_key: PathBuf,
        /// age identity files (`age-keygen`): the operator's, every key custodian's, the data
        /// owner's. Repeat the option.
        #[arg(long = "identity", required = true)]
        identities: Vec<PathBuf>,
        /// The witness copy of the audit checkpoints (`[audit] witness`): the records it
        /// covers past the backup are declared lost, and the chain continues after them.
        #[arg(long, conflicts_with = "no_witness")]
        witness: Option<PathBuf>,
        /// Restore without a witness copy though the backed-up configuration names one (the
        /// records made after the backup are then not declared).
        #[arg(long)]
        no_witness: bool,
        /// The last CRLs the lost machine published (DER or PEM; repeat the option): every
        /// certificate they list that the backup holds unrevoked is revoked again.
        #[arg(long = "crl")]
        crls: Vec<PathBuf>,
    },
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Custody of the personal-data keys (the pii token).
    #[command(subcommand)]
    Custody(CustodyCommand),
    /// Key ceremonies from one reviewed file (docs/CEREMONY.md): roots, issuing CAs, roots'
    /// CRLs; the root token opens only with a quorum of custodian shares.
    #[command(subcommand)]
    Ceremony(CeremonyCommand),
    /// Sign in to a running service as a member of staff: the password, then the
    /// authenticator's code, on standard input (one per line). The session (12 hours) is kept
    /// 0600 in $XDG_CONFIG_HOME/ecert/session.json; the commands below act through it.
    Login {
        /// The service's base URL: https://HOST:PORT (with --ca-file), or http:// on loopback.
        #[arg(long)]
        server: String,
        /// Your user name.
        #[arg(long)]
        username: String,
        /// The service's CA certificate (PEM), for https://.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// End the session (the token is revoked at the service).
    Logout,
    /// Enter an application through the service, as the signed-in member: the application as
    /// JSON (the API's NewApplication) in FILE, or `-` for standard input — never personal data
    /// on the command line.
    Apply {
        /// JSON file, or `-`.
        json: PathBuf,
    },
    /// Applications through the service: show, record counter checks.
    #[command(subcommand)]
    Application(ApplicationCommand),
    /// Approve an application through the service (or --reject it), as the signed-in member:
    /// the same rules as the counter (not the member who entered or checked it; dual control).
    Approve {
        /// Application id or reference (EC-…).
        application: String,
        /// Reject instead, for this reason.
        #[arg(long)]
        reject: Option<String>,
    },
    /// Decisions two officers take together, through the service: a mass revocation, a key
    /// block, an issuing CA's revocation.
    #[command(subcommand)]
    Proposal(ProposalCommand),
    /// Bulk enrolment with an organisation's batch token, through the service (docs/BULK.md):
    /// ECERT_SERVER and ECERT_TOKEN (the `ecb_…` token) name the service and the token.
    #[command(subcommand)]
    Batch(BatchCommand),
    /// Staff and outlet administration through the service, as the signed-in admin (the
    /// rules of /staff/admin: a privileged role waits for a second admin).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Your own integration token, made through the service as the signed-in member (printed
    /// once): it acts as you within its scopes.
    Token {
        /// What it is for.
        #[arg(long, default_value = "integration")]
        label: String,
        /// How many days it lasts (1 to 366).
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// read, enter, decide, activate (comma-separated): only what the integration needs.
        #[arg(long)]
        scopes: String,
    },
    /// Subscriber keys (also `ecert keys`).
    #[command(subcommand, visible_alias = "keys")]
    Key(KeyCommand),
    /// Revoke, hold or release certificates: one, a list, or all matching a query.
    Revoke(Box<RevokeArgs>),
    /// Certificate revocation lists.
    #[command(subcommand)]
    Crl(CrlCommand),
    /// OCSP responders and pre-signed responses.
    #[command(subcommand)]
    Ocsp(OcspCommand),
    /// Serve CA certificates, CRLs, OCSP, /healthz and /metrics; publish CRLs and sign OCSP
    /// responses as status changes (initialises a fresh data directory first).
    Serve(serve::ServeArgs),
    /// A remote network perspective for domain validation and CAA (TLS BR §3.2.2.9).
    #[command(subcommand)]
    Perspective(PerspectiveCommand),
    /// Benchmarks (run by ops/bench; they create CAs in the data directory given, and issue and
    /// revoke outside the RA: only in builds with the `bench` feature, never in ops/setup's).
    #[cfg(feature = "bench")]
    #[command(subcommand, hide = true)]
    Bench(BenchCommand),
}

#[cfg(feature = "bench")]
#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Raw HSM signing rate, then end-to-end issuance rate.
    Issue(bench::IssueBench),
    /// Time one full CRL of many revoked certificates.
    Crl(bench::CrlBench),
    /// HTTP load client for OCSP servers.
    OcspClient(bench::OcspClient),
    /// A bare axum server with a fixed OCSP answer (the ceiling).
    OcspCeiling(bench::OcspCeiling),
    /// Bulk enrolment through the HTTP API of a service it starts (ops/bench bulk).
    Bulk(bench::BulkBench),
    /// OCSP pre-signing rate and a mass revocation to OCSP and CRLs (ops/bench ocsp-sign).
    OcspSign(bench::OcspSignBench),
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// List the CAs.
    List,
    /// Print a CA certificate as PEM.
    Export {
        /// root, individual or server.
        name: String,
        /// Also print the issuers up to the root.
        #[arg(long)]
        chain: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// List every serial with its state and profile.
    List,
    /// Show one serial's record.
    Show {
        /// Serial, hex.
        serial: String,
    },
    /// Print an issued certificate as PEM (re-delivery: an approval whose answer was lost).
    Export {
        /// Serial, hex.
        serial: String,
    },
}

#[derive(Debug, Subcommand)]
enum ApplicationCommand {
    /// The application as the service shows it to you (personal fields masked).
    Show {
        /// Application id or reference (EC-…).
        application: String,
    },
    /// Record the identity check: the HKID number typed from the card, on standard input.
    Identity {
        /// Application id or reference (EC-…).
        application: String,
        /// The original identity card was seen.
        #[arg(long)]
        card_sighted: bool,
        /// personal-minor: a parent or guardian is present and consents.
        #[arg(long)]
        guardian_consent: bool,
    },
    /// Record the fee paid at the counter.
    Fee {
        /// Application id or reference (EC-…).
        application: String,
        /// Amount in cents.
        #[arg(long)]
        amount_cents: i64,
        /// cash, octopus, card or cheque.
        #[arg(long)]
        method: String,
        /// Receipt number.
        #[arg(long)]
        receipt: String,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Staff accounts.
    #[command(subcommand)]
    Staff(AdminStaffCommand),
    /// Service outlets.
    #[command(subcommand)]
    Outlet(AdminOutletCommand),
}

#[derive(Debug, Subcommand)]
enum AdminStaffCommand {
    /// Every account, with waiting grants.
    List,
    /// A new member: the initial password on standard input; prints the TOTP enrolment once.
    Add {
        #[arg(long)]
        username: String,
        /// Name shown on screens.
        #[arg(long)]
        name: String,
        #[arg(long)]
        outlet: String,
        /// clerk, supervisor, officer, admin, operator, auditor or data_owner.
        #[arg(long)]
        role: String,
    },
    /// Disable an account (its sessions and tokens end).
    Disable { username: String },
    /// Enable an account.
    Enable { username: String },
    /// Approve a role grant another admin asked for.
    Approve { username: String },
    /// Change a member's role (a privileged one waits for a second admin).
    Role {
        username: String,
        #[arg(long)]
        role: String,
    },
    /// Reset a member's password to a temporary one, read from standard input.
    ResetPassword { username: String },
    /// A new authenticator secret for a member (printed once).
    NewTotp { username: String },
    /// Revoke every API token of a member.
    RevokeTokens { username: String },
}

#[derive(Debug, Subcommand)]
enum AdminOutletCommand {
    /// Every outlet.
    List,
    /// A new outlet.
    Add {
        /// Lowercase letters, digits and dashes.
        id: String,
        #[arg(long)]
        en: String,
        #[arg(long)]
        zh: String,
    },
    /// New names.
    Rename {
        id: String,
        #[arg(long)]
        en: String,
        #[arg(long)]
        zh: String,
    },
    /// Close: no new applications; existing ones stay readable to its staff.
    Close { id: String },
}

#[derive(Debug, Subcommand)]
enum BatchCommand {
    /// Submits a batch (JSON lines, or CSV with a header line when FILE ends in .csv), prints
    /// each refused row, then follows it: approval by two officers, then a progress bar of the
    /// issuance (rows done / total, rate, ETA).
    Submit {
        /// The rows.
        file: PathBuf,
        /// The organisation the batch token must be for (nothing is submitted otherwise).
        #[arg(long)]
        org: String,
        /// Return once submitted.
        #[arg(long)]
        no_wait: bool,
    },
    /// A batch's state, its rows counted by state, and each refused or failed row.
    Status {
        /// The batch's id.
        id: String,
        /// Follow it until it is done, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Writes each issued certificate to DIR/<client_row_id>.pem, and all of them to
    /// DIR/batch-<id>.pem.
    Download {
        /// The batch's id.
        id: String,
        /// Where.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ProposalCommand {
    /// Pending and recent proposals.
    List,
    /// Propose; another officer confirms.
    Propose {
        /// mass_revocation, key_block, ca_revocation, batch_approval or standing_authorisation.
        #[arg(long)]
        kind: String,
        /// RFC 5280 reason (revocations) or why (key block).
        #[arg(long, default_value = "")]
        reason: String,
        /// Mass revocation: a serial (hex); repeatable. Key block: the certificate whose key.
        #[arg(long = "serial")]
        serials: Vec<String>,
        /// Mass revocation: every unrevoked certificate of this profile.
        #[arg(long)]
        profile: Option<String>,
        /// Key block: the public key (PEM file).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// CA revocation: individual or server.
        #[arg(long)]
        ca: Option<String>,
        /// Batch approval: the batch's id (docs/BULK.md).
        #[arg(long)]
        batch: Option<String>,
        /// Standing authorisation: the organisation's id (docs/BULK.md) ...
        #[arg(long)]
        organisation: Option<String>,
        /// ... the most good rows approved on arrival in any 24 hours ...
        #[arg(long)]
        max_rows: Option<i64>,
        /// ... for this many days (at most 365; 0 withdraws it).
        #[arg(long)]
        days: Option<u32>,
    },
    /// Confirm another officer's proposal: it is carried out now.
    Confirm {
        /// Proposal id.
        id: String,
    },
    /// Withdraw a pending proposal.
    Withdraw {
        /// Proposal id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum CustodyCommand {
    /// Move a data directory made before the pii token existed to separated custody: the
    /// personal-data key sealed again by the pii token, blind indexes computed again, TOTP
    /// secrets and problem reports sealed again under the staff-auth key, the old key objects
    /// destroyed. Needs the pii token's PIN (ECERT_PII_PIN or hsm.pii_pin) and no running
    /// `serve`. Audited; run it again if it stops half-way.
    Migrate,
    /// Where the keys are: the custody layout and whether this process can open the pii token.
    Status,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain and the HSM-signed checkpoints: finds removed, altered and
    /// truncated records. With --export, verifies an export file offline instead (no database,
    /// no HSM: the file and the public key are all it needs).
    Verify {
        /// The audit public key (PEM, from `ecert audit key`); default: read it from the HSM.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// An export (`ecert audit export`, JSON lines or CSV) to verify offline; needs
        /// --public-key.
        #[arg(long, requires = "public_key", conflicts_with = "witness")]
        export: Option<PathBuf>,
        /// Also compare the database's chain with this witness file (`[audit] witness`) and
        /// report the first disagreement.
        #[arg(long)]
        witness: Option<PathBuf>,
    },
    /// Export audit records with their chain positions and the signed checkpoint that covers
    /// them, for offline verification (`audit verify --export`). Records the filters do not
    /// select but that lie between are included, marked "match": false.
    Export(Box<AuditExportArgs>),
    /// Print the audit key's public key (PEM) for auditors.
    Key,
}

#[derive(Debug, Args)]
struct InitArgs {
    /// The new admin's user name (one of the first two).
    #[arg(long)]
    admin: Option<String>,
    /// The new admin's name as shown on screens.
    #[arg(long, requires = "admin", default_value = "Administrator")]
    admin_name: String,
    /// The outlet the new admin belongs to (made if missing).
    #[arg(long, requires = "admin", default_value = "hq")]
    admin_outlet: String,
    /// Make the hierarchy with this reviewed ceremony file (docs/CEREMONY.md) instead of the
    /// embedded default's built-in one.
    #[arg(long, conflicts_with = "admin")]
    ceremony: Option<PathBuf>,
    /// With --ceremony: where one share file per custodian is written.
    #[arg(long, requires = "ceremony")]
    shares_out: Option<PathBuf>,
    /// With --ceremony: where the signed record is written.
    #[arg(long, requires = "ceremony")]
    record: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct AuditExportArgs {
    /// Records made at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Records made at or before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Only this actor (e.g. staff:clerk1, cli:root, system:crl-publisher).
    #[arg(long)]
    actor: Option<String>,
    /// Only this kind, or every kind under it (issuance selects issuance.linted).
    #[arg(long)]
    kind: Option<String>,
    /// Only records about this certificate serial (hex).
    #[arg(long)]
    serial: Option<String>,
    /// Only records about this application reference.
    #[arg(long)]
    reference: Option<String>,
    /// jsonl or csv.
    #[arg(long, default_value = "jsonl")]
    format: String,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    /// Serial (hex) of the certificate.
    #[arg(long)]
    serial: String,
    /// RFC 5280 reason: unspecified (the default), keyCompromise, affiliationChanged,
    /// superseded, cessationOfOperation, privilegeWithdrawn (certificateHold: use --hold).
    #[arg(long)]
    reason: Option<String>,
    /// Put on hold (suspend) instead of revoking; Individual & Organisational CA only.
    #[arg(long, conflicts_with = "release")]
    hold: bool,
    /// Release a hold.
    #[arg(long)]
    release: bool,
    /// The certificate itself (PEM file): to revoke one this CA signed that its database does
    /// not hold — issued after the backup it was restored from.
    #[arg(long, conflicts_with_all = ["hold", "release"])]
    certificate: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum CrlCommand {
    /// Build, sign and publish CRLs now: each CA's full CRL and all its partitions (default:
    /// the issuing CAs; `--ca root` for the root's CRL of CA certificates, an explicit
    /// ceremony step).
    Publish {
        /// CA name (individual, server, root); repeatable.
        #[arg(long = "ca")]
        cas: Vec<String>,
    },
    /// Print the latest published CRL as PEM.
    Export {
        /// A CA name for its full CRL (`individual`), or `<ca>-p<k>` for partition k.
        name: String,
    },
    /// Move every CA's next CRLNumber past the current time in milliseconds (and past every
    /// number held): at a DR site, after promoting a replica that may lack CRLs the lost
    /// primary published, before starting the signer (docs/OPERATIONS.md "Disaster
    /// recovery").
    Floor,
    /// Make again the revocations the given CRLs list that this database lacks — at a DR site
    /// after promoting a replica that may have missed the lost primary's last commits, or
    /// after a restore (docs/OPERATIONS.md "Disaster recovery"). Each CRL (DER or PEM) must
    /// verify under one of this CA's issuing CAs; serials unknown here are recorded as revoked
    /// unknown certificates.
    Reapply {
        /// The CRL files (the last ones the lost primary published).
        #[arg(required = true)]
        crls: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum PerspectiveCommand {
    /// Answer the CA's corroboration checks over HTTPS from this host's resolver.
    Serve(perspective::PerspectiveArgs),
}

#[derive(Debug, Subcommand)]
enum OcspCommand {
    /// Sign every OCSP response that is due now (queued changes, then refreshes), without
    /// waiting for `ecert serve`.
    Sign,
    /// Make a new delegated responder (key in the HSM, certificate from the CA) for a CA now;
    /// `ecert serve` does this by itself before the current one would expire.
    Rotate {
        /// CA name (individual, server); repeatable; default both.
        #[arg(long = "ca")]
        cas: Vec<String>,
    },
    /// Print the responder certificate in use for a CA (PEM).
    Responder {
        /// CA name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Debian weak-key lists (CVE-2008-0166) for `[keys] debian_weak_dir`.
    #[command(subcommand)]
    DebianList(DebianListCommand),
}

#[derive(Debug, Subcommand)]
enum DebianListCommand {
    /// Turn a tree of weak keys (the CA/Browser Forum's Debian-weak-keys sets: PEM RSA private
    /// or public keys) into openssl-vulnkey lists, `blacklist.RSA-<bits>` per size.
    Build {
        /// The directory of keys, read recursively.
        keys_dir: PathBuf,
        /// Where to write the lists (the directory `[keys] debian_weak_dir` names).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CeremonyCommand {
    /// Validate a ceremony file against the configuration and the database, without an HSM,
    /// and print what it would sign.
    Check {
        /// The ceremony file (TOML).
        file: PathBuf,
    },
    /// Run a ceremony: make its keys and certificates, sign its roots' CRLs, and write the
    /// signed record.
    Run {
        /// The ceremony file (TOML).
        file: PathBuf,
        /// A custodian's share file (repeat for each custodian present). Without any, the
        /// shares are asked for at the terminal (the embedded default uses its one share in
        /// the data directory).
        #[arg(long = "share")]
        shares: Vec<PathBuf>,
        /// Where a ceremony that creates the root token writes one share file per custodian.
        #[arg(long)]
        shares_out: Option<PathBuf>,
        /// Where the signed record is written for the witnesses (it also goes to the audit
        /// trail).
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Check a ceremony record: the audit key's signature and, with the data directory, the
    /// certificates, CRLs and audit record it names.
    Verify {
        /// The record.
        record: PathBuf,
        /// The audit key (PEM, from `ecert audit key`); otherwise read from the HSM.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check the configuration; exits non-zero if it is invalid (or, with `--production`, not
    /// ready to issue publicly-trusted certificates).
    Check {
        /// Also refuse what is valid but not fit for a production CA: no Debian weak-key list
        /// for an accepted RSA size, a policy arc linters cannot decode.
        #[arg(long)]
        production: bool,
    },
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("ECERT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ecert::access=info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        // Colours for a person at a terminal, plain text for a log file or journald.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.data_dir, cli.config.as_deref())?;
    match &cli.command {
        Command::Config(ConfigCommand::Check { production }) => {
            return config_check(&config, *production)
        }
        Command::Key(KeyCommand::DebianList(DebianListCommand::Build { keys_dir, out })) => {
            return debian_list_build(keys_dir, out)
        }
        _ => {}
    }
    if config.embedded_softhsm() && config.hsm_dir().join("softhsm2.conf").exists() {
        // The configuration names the token directory by its absolute path: written again, so
        // a data directory restored or moved elsewhere finds its own tokens.
        let dir = config.hsm_dir();
        let current = std::fs::read_to_string(dir.join("softhsm2.conf")).unwrap_or_default();
        let tokens = std::path::absolute(dir.join("tokens")).unwrap_or_default();
        if !current.contains(&format!("directories.tokendir = {}\n", tokens.display())) {
            hsm::pkcs11::softhsm_conf(&dir).context("writing softhsm2.conf")?;
        }
    }
    if config.embedded_softhsm() {
        // SoftHSM2 reads its configuration from this variable at C_Initialize; in embedded mode
        // it is always the data directory's own (a stray value would send the token elsewhere).
        // Set here, before any thread exists (the runtime is built below), so no other thread
        // reads the environment concurrently.
        std::env::set_var(
            "SOFTHSM2_CONF",
            ca_core::authority::softhsm_conf_path(&config),
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Init(args) => init(config, args).await,
            Command::Custody(c) => custody(config, c).await,
            Command::Ceremony(c) => ceremony(config, c).await,
            Command::Login {
                server,
                username,
                ca_file,
            } => login(&server, &username, ca_file).await,
            Command::Logout => logout().await,
            Command::Apply { json } => apply(&json).await,
            Command::Application(c) => application(c).await,
            Command::Approve {
                application,
                reject,
            } => approve(&application, reject).await,
            Command::Proposal(c) => proposal(c).await,
            Command::Batch(c) => batch(c).await,
            Command::Admin(c) => admin(c).await,
            Command::Token {
                label,
                days,
                scopes,
            } => {
                let api = client::Api::of(&client::current()?)?;
                let body = serde_json::json!({ "label": label, "days": days, "scopes": scopes });
                let v = api
                    .call(axum::http::Method::POST, "/api/v1/tokens", Some(&body))
                    .await?;
                outln!("{}", client::printable(v["token"].as_str().unwrap_or_default()));
                Ok(())
            }
            Command::Ca(c) => ca(config, c).await,
            Command::Cert(c) => cert(config, c).await,
            Command::Audit(AuditCommand::Verify {
                public_key,
                export: Some(export),
                ..
            }) => audit_verify_export(&export, public_key.as_deref()),
            Command::Audit(AuditCommand::Verify {
                public_key,
                export: None,
                witness,
            }) => audit_verify(config, public_key, witness).await,
            Command::Audit(AuditCommand::Export(args)) => audit_export(config, *args).await,
            Command::Backup { out } => {
                let made = ca_core::backup::make(&config, &out, &actor()).await?;
                outln!(
                    "backup {}: {} bytes, audit record {}, parts {} (manifest sha256 {})",
                    out.display(),
                    made.bytes,
                    made.manifest.audit_seq,
                    made.manifest
                        .parts
                        .iter()
                        .map(|p| format!("{} for the {}", p.name, p.holder.replace('_', " ")))
                        .collect::<Vec<_>>()
                        .join(", "),
                    made.manifest_sha256
                );
                if made.manifest.hsm == "external" {
                    outln!("the HSM's keys are not in it: back them up by the module's own procedure");
                }
                Ok(())
            }
            Command::Restore {
                file,
                audit_key,
                identities,
                witness,
                no_witness,
                crls,
            } => {
                let spki = read_public_key(&audit_key)?;
                let ids = ca_core::backup::identities(&identities)?;
                let r = ca_core::backup::restore(
                    &config.data_dir,
                    cli.config.as_deref(),
                    &file,
                    &spki,
                    &ids,
                    witness.as_deref(),
                    no_witness,
                    &crls,
                    &actor(),
                )
                .await?;
                let when = time::OffsetDateTime::from_unix_timestamp(r.manifest.created_at)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_default();
                outln!(
                    "restored {} certificates into {} from the backup of {when} (audit record {})",
                    r.certificates,
                    config.data_dir.display(),
                    r.manifest.audit_seq
                );
                match r.lost {
                    Some((from, to)) => outln!(
                        "audit records {from} to {to} were made after the backup and are lost (the witness holds their checkpoints); the chain continues after them"
                    ),
                    None if witness.is_none() => outln!(
                        "no witness given: the records made after the backup, if any, are not known"
                    ),
                    None => outln!("no audit record was lost"),
                }
                if !crls.is_empty() {
                    outln!(
                        "from the CRLs given: {} revoked again (made after the backup), {} already revoked",
                        r.reapplied.revoked,
                        r.reapplied.already
                    );
                    for s in &r.reapplied.unknown {
                        outln!("revoked on the lost machine but not in the backup (issued after it): {s}");
                    }
                } else {
                    outln!("no CRL given (--crl): revocations made after the backup are not in it");
                }
                outln!(
                    "CRLNumbers continue after {}; certificates issued after {when} are unknown here: if one surfaces, revoke it by serial (docs/OPERATIONS.md \"Backup and restore\")",
                    r.crl_number_floor
                );
                Ok(())
            }
            Command::Audit(AuditCommand::Key) => {
                let spki = Authority::audit_public_key_from_hsm(&config).await?;
                out!(
                    "{}",
                    pem::encode_config(
                        &pem::Pem::new("PUBLIC KEY", spki),
                        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF)
                    )
                );
                Ok(())
            }
            // Handled before the HSM is set up.
            Command::Config(_) | Command::Key(KeyCommand::DebianList(_)) => Ok(()),
            Command::Revoke(args) => revoke(*args).await,
            Command::Crl(CrlCommand::Publish { cas }) => crl_publish(config, cas).await,
            Command::Crl(CrlCommand::Floor) => {
                let store = open_store(&config).await?;
                let floor = ca_core::backup::raise_crl_number_floor(&store, &actor()).await?;
                outln!("every CA's next CRLNumber is above {floor}");
                Ok(())
            }
            Command::Crl(CrlCommand::Reapply { crls }) => {
                let store = open_store(&config).await?;
                let r = ca_core::backup::reapply_crls(&config, &store, &crls, &actor()).await?;
                outln!(
                    "from the CRLs given: {} revoked again, {} already revoked here",
                    r.revoked,
                    r.already
                );
                for s in &r.unknown {
                    outln!("revoked there but not known here (recorded as revoked): {s}");
                }
                Ok(())
            }
            Command::Serve(args) => serve::serve(config, args).await,
            Command::Perspective(PerspectiveCommand::Serve(args)) => {
                perspective::serve(config.dcv.clone(), args).await
            }
            Command::Ocsp(cmd) => ocsp(config, cmd).await,
            Command::Crl(CrlCommand::Export { name }) => {
                let store = open_store(&config).await?;
                let (role, scope) = ca_core::crl::Scope::parse_file(&format!("{name}.crl"))
                    .with_context(|| format!("no such CRL {name:?}: name a CA (individual, server, root, tls-root, a successor such as individual-2) or <ca>-p<k>"))?;
                let Some((_, der)) = store.latest_crl(&role.name(), scope).await? else {
                    bail!(
                        "no CRL has been published for the {name} CA yet: run `ecert crl publish`"
                    );
                };
                out!(
                    "{}",
                    pem::encode_config(
                        &pem::Pem::new("X509 CRL", der),
                        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF)
                    )
                );
                Ok(())
            }
            #[cfg(feature = "bench")]
            Command::Bench(BenchCommand::Issue(b)) => bench::issue(config, b).await,
            #[cfg(feature = "bench")]
            Command::Bench(BenchCommand::Crl(b)) => bench::crl(config, b).await,
            #[cfg(feature = "bench")]
            Command::Bench(BenchCommand::OcspClient(b)) => bench::ocsp_client(b).await,
            #[cfg(feature = "bench")]
            Command::Bench(BenchCommand::OcspCeiling(b)) => bench::ocsp_ceiling(b).await,
            #[cfg(feature = "bench")]
            Command::Bench(BenchCommand::Bulk(b)) => bench::bulk(config, b).await,
            #[cfg(feature = "bench")]
            Command::Bench(BenchCommand::OcspSign(b)) => bench::ocsp_sign(config, b).await,
        }
    })
}

async fn init(config: Config, a: InitArgs) -> anyhow::Result<()> {
    // An initialised installation's first admins need only the database and the staff-auth
    // key, not the signer lock: `init --admin` then works while `ecert serve` runs.
    if let Some(username) = &a.admin {
        if initialised(&config).await {
            let (store, vault) = Authority::open_staff_keys(&config).await?;
            return first_admin(&store, &vault, username, &a.admin_name, &a.admin_outlet).await;
        }
    }
    let run = match &a.ceremony {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            Some(ca_core::authority::CeremonyRun {
                ceremony: ca_core::ceremony::Ceremony::parse(&text)?,
                text,
                access: ca_core::ceremony::Access {
                    shares: Vec::new(),
                    shares_out: a.shares_out.clone(),
                },
                record_out: a.record.clone(),
            })
        }
        None => None,
    };
    let from_file = run.is_some();
    let (auth, report) = Authority::init_with(config, run).await?;
    for role in &report.created {
        outln!("created {} CA", role.name());
    }
    for role in &report.existing {
        outln!("{} CA already exists", role.name());
    }
    if let (Some(record), true) = (&report.ceremony, from_file) {
        out!("{record}");
    } else if report.ceremony.is_some() {
        outln!(
            "ran the built-in key ceremony (embedded default): roots in the root token, a 1-of-1 \
             quorum whose one share is kept in {}; for production see docs/CEREMONY.md",
            ca_core::ceremony::embedded_share_path(auth.config()).display()
        );
    }
    if let Some(username) = &a.admin {
        let made = first_admin(
            auth.store(),
            &auth.staff_keys(),
            username,
            &a.admin_name,
            &a.admin_outlet,
        )
        .await;
        if let Err(e) = made {
            checkpoint(&auth).await;
            return Err(e);
        }
    }
    checkpoint(&auth).await;
    print_ca_list(auth.store()).await?;
    Ok(())
}

/// `ecert ceremony`.
async fn ceremony(config: Config, c: CeremonyCommand) -> anyhow::Result<()> {
    use ca_core::ceremony::{self, Ceremony};
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    match c {
        CeremonyCommand::Check { file } => {
            let text = read(&file)?;
            let c = Ceremony::parse(&text)?;
            let store = open_store(&config).await?;
            for line in c.check(&config, &store).await? {
                outln!("{line}");
            }
            outln!(
                "ceremony file is valid; SHA-256 {}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()))
            );
            Ok(())
        }
        CeremonyCommand::Run {
            file,
            shares,
            shares_out,
            record,
        } => {
            let text = read(&file)?;
            let c = Ceremony::parse(&text)?;
            let mut access = ceremony::Access {
                shares: Vec::new(),
                shares_out,
            };
            for path in &shares {
                let t = read(path)?;
                let share = ceremony::user_share_of(&t).with_context(|| {
                    format!(
                        "{} holds no share (a `user PIN share:` line)",
                        path.display()
                    )
                })?;
                access.shares.push(zeroize::Zeroizing::new(share));
            }
            if shares.is_empty() {
                let embedded = ceremony::embedded_share_path(&config);
                if config.embedded_softhsm() && embedded.exists() {
                    eprintln!(
                        "using the embedded default's 1-of-1 root-token share in {}",
                        embedded.display()
                    );
                    access.shares = ceremony::embedded_access(&config)?.shares;
                } else if config.embedded_softhsm()
                    && access.shares_out.is_none()
                    && c.quorum == 1
                    && c.custodians.len() == 1
                    && !c
                        .root_token_made(&config, &open_store(&config).await?)
                        .await?
                {
                    // The embedded default's root token made now (a data directory from before
                    // the root token): its one share goes where `ecert init` puts it.
                    let out = ceremony::embedded_access(&config)?.shares_out;
                    if let Some(dir) = &out {
                        eprintln!(
                            "a new root token's 1-of-1 share goes to {} (the embedded default's place)",
                            dir.display()
                        );
                    }
                    access.shares_out = out;
                } else if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                    loop {
                        let s =
                            client::read_secret("custodian share (empty line when all are in)")?;
                        if s.trim().is_empty() {
                            break;
                        }
                        access
                            .shares
                            .push(zeroize::Zeroizing::new(s.trim().to_string()));
                    }
                }
            }
            let (auth, rec) =
                Authority::run_ceremony(config, c, &text, access, record.as_deref(), &actor())
                    .await?;
            // Beside a running signer, its next tick checkpoints (and feeds the witness).
            if auth.is_signer() {
                checkpoint(&auth).await;
            }
            out!("{rec}");
            Ok(())
        }
        CeremonyCommand::Verify { record, public_key } => {
            let text = read(&record)?;
            let spki = match &public_key {
                Some(path) => read_public_key(path)?,
                None => Authority::audit_public_key_from_hsm(&config).await?,
            };
            let store = open_store(&config).await.ok();
            let v = ceremony::verify_record(&text, &spki, store.as_ref()).await?;
            outln!(
                "ceremony record {:?} verifies: signed by the audit key; {} steps{}",
                v.name,
                v.steps,
                if store.is_some() {
                    format!(
                        "; {} certificate and CRL hashes match the data directory and the audit trail holds it",
                        v.matched
                    )
                } else {
                    "; offline: the signature only (no data directory to compare its \
                     certificates, CRLs and audit record with)"
                        .to_string()
                }
            );
            Ok(())
        }
    }
}

/// `ecert login`.
async fn login(server: &str, username: &str, ca_file: Option<PathBuf>) -> anyhow::Result<()> {
    let api = client::Api::new(server, ca_file.as_deref(), None)?;
    let password = client::read_secret("password")?;
    let code = client::read_line("authenticator code")?;
    let body = serde_json::json!({ "username": username, "password": &*password, "code": &*code });
    let s = api
        .call(axum::http::Method::POST, "/api/v1/session", Some(&body))
        .await?;
    let session = client::Session {
        server: server.trim_end_matches('/').to_string(),
        ca_file: ca_file.map(|p| std::path::absolute(&p).unwrap_or(p)),
        token: s["token"]
            .as_str()
            .context("the service gave no token")?
            .to_string(),
        expires_at: s["expires_at"].as_i64().unwrap_or_default(),
        username: username.to_string(),
    };
    let path = client::save(&session)?;
    outln!(
        "signed in as {username} ({}) until {}; session in {}",
        s["role"].as_str().unwrap_or_default(),
        time::OffsetDateTime::from_unix_timestamp(session.expires_at)
            .ok()
            .and_then(|t| t
                .format(&time::format_description::well_known::Rfc3339)
                .ok())
            .unwrap_or_default(),
        path.display()
    );
    Ok(())
}

/// `ecert logout`: the stored session's token is revoked at the service, then forgotten (a
/// token given in `ECERT_TOKEN` is an integration's, and is left alone).
async fn logout() -> anyhow::Result<()> {
    if let Ok(session) = client::stored() {
        let api = client::Api::of(&session)?;
        let (status, v) = api
            .send(axum::http::Method::DELETE, "/api/v1/session", None)
            .await
            .context("the service was not reached: the session is kept; try again")?;
        // 401: expired or revoked already.
        if !(200..300).contains(&status) && status != 401 {
            bail!(
                "the service did not end the session (HTTP {status}: {}); it is kept: try again",
                client::printable(v["message"].as_str().unwrap_or_default())
            );
        }
    }
    client::forget()?;
    outln!("signed out");
    Ok(())
}

/// `ecert apply FILE|-`.
async fn apply(json: &Path) -> anyhow::Result<()> {
    let text = if json == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the application from standard input")?;
        s
    } else {
        String::from_utf8(read_limited(json, 256 * 1024)?)
            .with_context(|| format!("{} is not UTF-8", json.display()))?
    };
    let body: serde_json::Value =
        serde_json::from_str(&text).context("the application is not JSON")?;
    let api = client::Api::of(&client::current()?)?;
    let made = api
        .call(
            axum::http::Method::POST,
            "/api/v1/applications",
            Some(&body),
        )
        .await?;
    outln!("application {}", made["id"].as_str().unwrap_or_default());
    outln!(
        "reference={}",
        made["reference"].as_str().unwrap_or_default()
    );
    outln!(
        "tracking_secret={}",
        made["tracking_secret"].as_str().unwrap_or_default()
    );
    Ok(())
}

async fn application_view(api: &client::Api, id: &str) -> anyhow::Result<serde_json::Value> {
    api.call(
        axum::http::Method::GET,
        &format!("/api/v1/applications/{id}"),
        None,
    )
    .await
}

/// `ecert application show|identity|fee`.
async fn application(c: ApplicationCommand) -> anyhow::Result<()> {
    let api = client::Api::of(&client::current()?)?;
    match c {
        ApplicationCommand::Show { application } => {
            let id = client::application_id(&api, &application).await?;
            let v = application_view(&api, &id).await?;
            outln!("{}", serde_json::to_string_pretty(&v)?);
        }
        ApplicationCommand::Identity {
            application,
            card_sighted,
            guardian_consent,
        } => {
            let hkid = client::read_secret("HKID number")?;
            let id = client::application_id(&api, &application).await?;
            let v = application_view(&api, &id).await?;
            let body = serde_json::json!({
                "version": v["version"], "hkid": &*hkid, "card_sighted": card_sighted,
                "guardian_consent": guardian_consent,
            });
            api.call(
                axum::http::Method::POST,
                &format!("/api/v1/applications/{id}/identity"),
                Some(&body),
            )
            .await?;
            outln!(
                "identity check recorded for {}",
                v["reference"].as_str().unwrap_or_default()
            );
        }
        ApplicationCommand::Fee {
            application,
            amount_cents,
            method,
            receipt,
        } => {
            let id = client::application_id(&api, &application).await?;
            let body = serde_json::json!({ "amount_cents": amount_cents, "method": method, "receipt": receipt });
            api.call(
                axum::http::Method::POST,
                &format!("/api/v1/applications/{id}/fee"),
                Some(&body),
            )
            .await?;
            outln!("fee recorded");
        }
    }
    Ok(())
}

/// `ecert approve ID|REF [--reject REASON]`.
async fn approve(application: &str, reject: Option<String>) -> anyhow::Result<()> {
    let api = client::Api::of(&client::current()?)?;
    let id = client::application_id(&api, application).await?;
    let v = application_view(&api, &id).await?;
    let body = match &reject {
        Some(reason) => {
            serde_json::json!({ "version": v["version"], "decision": "reject", "reason": reason })
        }
        None => serde_json::json!({ "version": v["version"], "decision": "approve" }),
    };
    let r = api
        .call(
            axum::http::Method::POST,
            &format!("/api/v1/applications/{id}/decision"),
            Some(&body),
        )
        .await?;
    match r["serial"].as_str() {
        Some(serial) => outln!(
            "{}\tserial={serial}",
            r["outcome"].as_str().unwrap_or_default()
        ),
        None => outln!("{}", r["outcome"].as_str().unwrap_or_default()),
    }
    Ok(())
}

fn show_proposal(p: &serde_json::Value) {
    let field = |k: &str| client::printable(p[k].as_str().unwrap_or_default());
    outln!(
        "{}\t{}\t{}\t{}{}",
        field("id"),
        field("state"),
        field("proposed_by"),
        field("summary"),
        p["outcome"]
            .as_str()
            .map(|o| format!(": {}", client::printable(o)))
            .unwrap_or_default()
    );
    // Exactly what is confirmed.
    outln!("\t{}", client::printable(&p["params"].to_string()));
}

/// `ecert batch submit|status|download` (docs/BULK.md).
async fn batch(c: BatchCommand) -> anyhow::Result<()> {
    use axum::http::Method;
    let session = client::current()?;
    let api = client::Api::of(&session)?;
    match c {
        BatchCommand::Submit { file, org, no_wait } => {
            let body = read_limited(&file, 32 * 1024 * 1024)?;
            let csv = file.extension().is_some_and(|e| e == "csv");
            if org.is_empty() || !org.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                bail!("--org: an organisation's id (as `POST /api/v1/organisations` gave it)");
            }
            let path = format!("/api/v1/batches?organisation={org}");
            let (status, answer) = api
                .send_raw(
                    Method::POST,
                    &path,
                    if csv {
                        "text/csv"
                    } else {
                        "application/x-ndjson"
                    },
                    body,
                )
                .await?;
            let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
            if status != 201 {
                bail!(
                    "{} (HTTP {status})",
                    client::printable(v["message"].as_str().unwrap_or("the batch was refused"))
                );
            }
            let id = client::printable(v["id"].as_str().unwrap_or_default());
            outln!(
                "batch {id}: {} rows, {} accepted, {} duplicates (issued before), {} refused",
                v["rows"],
                v["accepted"],
                v["duplicates"],
                v["errors"].as_array().map_or(0, Vec::len)
            );
            for e in v["errors"].as_array().into_iter().flatten() {
                outln!(
                    "row {} ({}): {}",
                    e["row"],
                    client::printable(e["client_row_id"].as_str().unwrap_or_default()),
                    client::printable(e["error"].as_str().unwrap_or_default())
                );
            }
            if !no_wait && v["accepted"].as_u64().unwrap_or(0) > 0 {
                follow_batch(&api, &id).await?;
            }
            Ok(())
        }
        BatchCommand::Status { id, wait } => {
            if wait {
                follow_batch(&api, &id).await?;
            }
            let v = api
                .call(Method::GET, &format!("/api/v1/batches/{id}"), None)
                .await?;
            outln!(
                "batch {}: {}",
                client::printable(v["id"].as_str().unwrap_or_default()),
                client::printable(v["state"].as_str().unwrap_or_default())
            );
            for (state, n) in v["counts"].as_object().into_iter().flatten() {
                outln!("{}\t{n}", client::printable(state));
            }
            for r in v["rows"].as_array().into_iter().flatten() {
                if let Some(e) = r["error"].as_str() {
                    outln!(
                        "row {} ({}) {}: {}",
                        r["row"],
                        client::printable(r["client_row_id"].as_str().unwrap_or_default()),
                        client::printable(r["state"].as_str().unwrap_or_default()),
                        client::printable(e)
                    );
                }
            }
            Ok(())
        }
        BatchCommand::Download { id, out } => {
            let (status, bytes) = api
                .send_raw(
                    Method::GET,
                    &format!("/api/v1/batches/{id}/certificates"),
                    "application/json",
                    Vec::new(),
                )
                .await?;
            if status != 200 {
                bail!("the batch's certificates were not given (HTTP {status})");
            }
            let text = String::from_utf8(bytes.to_vec()).context("the bundle is not text")?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut n = 0;
            let mut current: Option<String> = None;
            let mut pem = String::new();
            let mut write = |name: &Option<String>, pem: &str| -> anyhow::Result<()> {
                if let Some(name) = name {
                    // A client row id as a file name: letters, digits, dot, dash, underscore.
                    let safe: String = name
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect();
                    let safe = safe.trim_start_matches('.').to_string();
                    std::fs::write(out.join(format!("{safe}.pem")), pem)?;
                    n += 1;
                }
                Ok(())
            };
            for line in text.lines() {
                if let Some(name) = line.strip_prefix("# ") {
                    write(&current, &pem)?;
                    current = Some(name.to_string());
                    pem.clear();
                } else {
                    pem.push_str(line);
                    pem.push('\n');
                }
            }
            write(&current, &pem)?;
            std::fs::write(out.join(format!("batch-{id}.pem")), &text)?;
            outln!("{n} certificates written to {}", out.display());
            Ok(())
        }
    }
}

/// Follows a batch until it is done: while it waits for two officers, says so; then a
/// progress bar on standard error (a line every 2 s when it is not a terminal).
async fn follow_batch(api: &client::Api, id: &str) -> anyhow::Result<()> {
    use axum::http::Method;
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    let mut said_waiting = false;
    let mut started: Option<(std::time::Instant, i64)> = None;
    let mut last_line = std::time::Instant::now() - std::time::Duration::from_secs(10);
    loop {
        let v = api
            .call(Method::GET, &format!("/api/v1/batches/{id}"), None)
            .await?;
        let count = |k: &str| v["counts"][k].as_i64().unwrap_or(0);
        let state = v["state"].as_str().unwrap_or_default().to_string();
        if state == "submitted" {
            if !said_waiting {
                eprintln!(
                    "waiting for two officers' approval: `ecert proposal propose --kind batch_approval --batch {id}`, then another officer confirms"
                );
                said_waiting = true;
            }
        } else {
            let done = count("issued") + count("failed");
            let total = done + count("queued") + count("issuing");
            let (t0, d0) = *started.get_or_insert((std::time::Instant::now(), done));
            let secs = t0.elapsed().as_secs_f64().max(0.001);
            let rate = (done - d0) as f64 / secs;
            let eta = if rate > 0.0 {
                format!("{:.0} s", (total - done) as f64 / rate)
            } else {
                "?".into()
            };
            let width = 30usize;
            let filled = if total > 0 {
                (done as usize * width) / total as usize
            } else {
                width
            };
            let line = format!(
                "[{}{}] {done}/{total} issued{}, {rate:.0}/s, ETA {eta}",
                "#".repeat(filled),
                ".".repeat(width - filled),
                if count("failed") > 0 {
                    format!(" ({} failed)", count("failed"))
                } else {
                    String::new()
                }
            );
            if tty {
                eprint!("\r{line}");
                let _ = std::io::stderr().flush();
            } else if last_line.elapsed() >= std::time::Duration::from_secs(2) || state == "done" {
                eprintln!("{line}");
                last_line = std::time::Instant::now();
            }
            if state == "done" {
                if tty {
                    eprintln!();
                }
                return Ok(());
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `ecert proposal list|propose|confirm|withdraw`.
async fn proposal(c: ProposalCommand) -> anyhow::Result<()> {
    use axum::http::Method;
    let api = client::Api::of(&client::current()?)?;
    match c {
        ProposalCommand::List => {
            let list = api
                .call(Method::GET, "/api/v1/officer-proposals", None)
                .await?;
            for p in list.as_array().into_iter().flatten() {
                show_proposal(p);
            }
        }
        ProposalCommand::Propose {
            kind,
            reason,
            serials,
            profile,
            public_key,
            ca,
            batch,
            organisation,
            max_rows,
            days,
        } => {
            let public_key = public_key
                .map(|p| {
                    read_limited(&p, 64 * 1024).map(|b| String::from_utf8_lossy(&b).into_owned())
                })
                .transpose()?;
            let mut body = serde_json::json!({ "kind": kind, "reason": reason, "profile": profile, "public_key": public_key, "ca": ca, "batch": batch, "organisation": organisation, "max_rows": max_rows, "days": days });
            if kind == "key_block" {
                body["serial"] = serde_json::json!(serials.first());
            } else {
                body["serials"] = serde_json::json!(serials);
            }
            let p = api
                .call(Method::POST, "/api/v1/officer-proposals", Some(&body))
                .await?;
            show_proposal(&p);
        }
        ProposalCommand::Confirm { id } => {
            let path = format!("/api/v1/officer-proposals/{id}/confirm");
            show_proposal(&api.call(Method::POST, &path, None).await?);
        }
        ProposalCommand::Withdraw { id } => {
            let path = format!("/api/v1/officer-proposals/{id}/withdraw");
            show_proposal(&api.call(Method::POST, &path, None).await?);
        }
    }
    Ok(())
}

/// `ecert admin staff|outlet …`.
async fn admin(c: AdminCommand) -> anyhow::Result<()> {
    use axum::http::Method;
    let api = client::Api::of(&client::current()?)?;
    let p = client::printable;
    let staff_path = |u: &str, action: &str| -> anyhow::Result<String> {
        anyhow::ensure!(
            !u.is_empty()
                && u.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c)),
            "{u:?} is not a user name"
        );
        Ok(format!("/api/v1/staff/{u}/{action}"))
    };
    let enrolment = |v: &serde_json::Value| {
        outln!(
            "totp_secret={}",
            p(v["totp_secret"].as_str().unwrap_or_default())
        );
        outln!("otpauth={}", p(v["otpauth"].as_str().unwrap_or_default()));
    };
    match c {
        AdminCommand::Staff(AdminStaffCommand::List) => {
            let list = api.call(Method::GET, "/api/v1/staff", None).await?;
            for a in list.as_array().into_iter().flatten() {
                let s = |k: &str| p(a[k].as_str().unwrap_or_default());
                outln!(
                    "{}\t{}\t{}\t{}\t{}{}",
                    s("username"),
                    s("role"),
                    s("outlet"),
                    if a["disabled"].as_bool().unwrap_or_default() {
                        "disabled"
                    } else {
                        "active"
                    },
                    s("display_name"),
                    a["grant_role"]
                        .as_str()
                        .map(|r| format!(
                            "\tgrant of {} waits (asked by {})",
                            p(r),
                            s("grant_requested_by")
                        ))
                        .unwrap_or_default()
                );
            }
        }
        AdminCommand::Staff(AdminStaffCommand::Add {
            username,
            name,
            outlet,
            role,
        }) => {
            let password = client::read_secret("initial password")?;
            let body = serde_json::json!({ "username": username, "display_name": name, "outlet": outlet, "role": role, "password": &*password });
            let v = api.call(Method::POST, "/api/v1/staff", Some(&body)).await?;
            outln!("staff {username}");
            enrolment(&v);
            if v["grant_waits"].as_bool().unwrap_or_default() {
                outln!("the {role} role waits for a second admin's approval: the account is disabled until then");
            }
        }
        AdminCommand::Staff(AdminStaffCommand::Disable { username }) => {
            api.call(Method::POST, &staff_path(&username, "disable")?, None)
                .await?;
            outln!("staff {username} disabled");
        }
        AdminCommand::Staff(AdminStaffCommand::Enable { username }) => {
            api.call(Method::POST, &staff_path(&username, "enable")?, None)
                .await?;
            outln!("staff {username} enabled");
        }
        AdminCommand::Staff(AdminStaffCommand::Approve { username }) => {
            api.call(Method::POST, &staff_path(&username, "approve")?, None)
                .await?;
            outln!("{username}'s role granted");
        }
        AdminCommand::Staff(AdminStaffCommand::Role { username, role }) => {
            let v = api
                .call(
                    Method::POST,
                    &staff_path(&username, "role")?,
                    Some(&serde_json::json!({ "role": role })),
                )
                .await?;
            if v["grant_waits"].as_bool().unwrap_or_default() {
                outln!("{username}'s move to {role} waits for a second admin's approval");
            } else {
                outln!("{username} is now {role}");
            }
        }
        AdminCommand::Staff(AdminStaffCommand::ResetPassword { username }) => {
            let password = client::read_secret("temporary password")?;
            api.call(
                Method::POST,
                &staff_path(&username, "password")?,
                Some(&serde_json::json!({ "password": &*password })),
            )
            .await?;
            outln!("{username}'s password reset: they choose a new one at their next sign-in");
        }
        AdminCommand::Staff(AdminStaffCommand::RevokeTokens { username }) => {
            let v = api
                .call(Method::POST, &staff_path(&username, "revoke-tokens")?, None)
                .await?;
            outln!("{} API tokens of {username} revoked", v["revoked"]);
        }
        AdminCommand::Staff(AdminStaffCommand::NewTotp { username }) => {
            let v = api
                .call(Method::POST, &staff_path(&username, "totp")?, None)
                .await?;
            enrolment(&v);
        }
        AdminCommand::Outlet(AdminOutletCommand::List) => {
            let list = api.call(Method::GET, "/api/v1/outlets", None).await?;
            for o in list.as_array().into_iter().flatten() {
                let s = |k: &str| p(o[k].as_str().unwrap_or_default());
                outln!(
                    "{}\t{}\t{}{}",
                    s("id"),
                    s("name_en"),
                    s("name_zh"),
                    if o["closed"].as_bool().unwrap_or_default() {
                        "\tclosed"
                    } else {
                        ""
                    }
                );
            }
        }
        AdminCommand::Outlet(AdminOutletCommand::Add { id, en, zh }) => {
            let body = serde_json::json!({ "id": id, "name_en": en, "name_zh": zh });
            api.call(Method::POST, "/api/v1/outlets", Some(&body))
                .await?;
            outln!("outlet {id} added");
        }
        AdminCommand::Outlet(AdminOutletCommand::Rename { id, en, zh }) => {
            anyhow::ensure!(
                id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{id:?} is not an outlet id"
            );
            let body = serde_json::json!({ "name_en": en, "name_zh": zh });
            api.call(
                Method::POST,
                &format!("/api/v1/outlets/{id}/rename"),
                Some(&body),
            )
            .await?;
            outln!("outlet {id} renamed");
        }
        AdminCommand::Outlet(AdminOutletCommand::Close { id }) => {
            anyhow::ensure!(
                id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{id:?} is not an outlet id"
            );
            api.call(Method::POST, &format!("/api/v1/outlets/{id}/close"), None)
                .await?;
            outln!("outlet {id} closed: it takes no new applications");
        }
    }
    Ok(())
}

/// `ecert custody migrate|status`.
async fn custody(config: Config, c: CustodyCommand) -> anyhow::Result<()> {
    match c {
        CustodyCommand::Migrate => {
            let r = Authority::migrate_custody(&config, &actor()).await?;
            if r.migrated {
                outln!(
                    "custody migrated: {} TOTP secrets and {} problem reports sealed again under the staff-auth key, the personal fields of {} applications sealed again under a new data key and their blind indexes computed again in the {} token",
                    r.totp_secrets,
                    r.problem_reports,
                    r.applications,
                    config.hsm.pii_token_label
                );
            } else {
                outln!("custody is separated already");
            }
            if r.destroyed > 0 {
                outln!(
                    "{} old personal-data key objects destroyed in the {} token",
                    r.destroyed,
                    config.hsm.token_label
                );
            }
            Ok(())
        }
        CustodyCommand::Status => {
            let store = open_store(&config).await?;
            let legacy = ca_core::custody::is_legacy(&store).await?;
            outln!(
                "layout: {}",
                if legacy {
                    "one token (run `ecert custody migrate`)"
                } else {
                    "separated"
                }
            );
            outln!("ca token: {}", config.hsm.token_label);
            outln!("pii token: {}", config.hsm.pii_token_label);
            outln!(
                "pii PIN: {}",
                match config.pii_pin_source()? {
                    ca_core::config::PiiPin::File(f) => format!("file {}", f.display()),
                    ca_core::config::PiiPin::Env(n) => format!("environment variable {n}"),
                    ca_core::config::PiiPin::Activation => "activation by the data owner".into(),
                }
            );
            if config.pii_custody_in_data_dir() {
                outln!("warning: custody is not separated: the pii PIN is a file in the data directory");
            }
            Ok(())
        }
    }
}

/// `init --admin` makes an admin only while fewer than this many are active: the least that
/// dual control needs (a grant of admin, officer, auditor or data owner waits for a second
/// admin, so one admin alone could never make another — nor anyone privileged). The service
/// never lets the active admins drop below it ([`ca_core::ra::MIN_ACTIVE_ADMINS`]), so past
/// bootstrap this is a break-glass path only where the database was changed behind its back.
const BOOTSTRAP_ADMINS: i64 = ca_core::ra::MIN_ACTIVE_ADMINS;

/// `init --admin`: one of the first two admins, only while fewer exist.
async fn first_admin(
    store: &Store,
    vault: &ca_core::pii::Vault,
    username: &str,
    name: &str,
    outlet: &str,
) -> anyhow::Result<()> {
    // Read first (the password may take a while to come), counted after, just before the
    // account is made.
    let password = client::read_secret("the first admin's password")?;
    // A first look, to say so before anything is made; the count that decides is taken again
    // in the transaction that adds the account.
    let active = ca_core::ra::active_admins(store).await?;
    anyhow::ensure!(
        active < BOOTSTRAP_ADMINS,
        "{BOOTSTRAP_ADMINS} active admin accounts exist already: further accounts are made by admins (/staff/admin, ecert admin staff add)"
    );
    anyhow::ensure!(
        ca_core::ra::list_staff(store)
            .await?
            .iter()
            .all(|r| r.username != username),
        "an account {username} exists already"
    );
    ca_core::ra::ensure_outlet(store, outlet, "Head office", "總辦事處", &actor()).await?;
    let new = ca_core::ra::NewStaff {
        username,
        display_name: name,
        outlet,
        role: ca_core::ra::Role::Admin,
        password: &password,
    };
    let (id, secret) =
        ca_core::ra::create_bootstrap_admin(store, vault, &new, &actor(), BOOTSTRAP_ADMINS).await?;
    outln!("admin {username} ({id})");
    outln!("totp_secret={}", ca_core::totp::secret_base32(&secret));
    outln!(
        "otpauth={}",
        ca_core::totp::otpauth_uri("ecert", username, &secret)
    );
    Ok(())
}

fn read_limited(path: &Path, max: usize) -> anyhow::Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = Vec::new();
    // Read one byte past the limit so that an oversized file is reported, not truncated.
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(buf)
}

/// Who ran a command, for the audit trail: the operating-system account of the process (its
/// effective uid, read from the owner of `/proc/self`, named from `/etc/passwd`) — not `$USER`,
/// which whoever runs the command sets at will.
pub(crate) fn actor() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "cli:unknown".into();
    };
    cli_actor(
        uid,
        &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
    )
}

/// `cli:NAME` for `uid` by the passwd file's text, or `cli:uid-N` when it has no entry.
fn cli_actor(uid: u32, passwd: &str) -> String {
    let name = passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?.parse::<u32>().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    });
    match name {
        Some(n) => format!("cli:{n}"),
        None => format!("cli:uid-{uid}"),
    }
}

fn pem_cert(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The store of an initialised CA, for read-only commands.
/// Whether the data directory holds an initialised CA (without creating anything).
async fn initialised(config: &Config) -> bool {
    match open_store(config).await {
        Ok(store) => matches!(store.ca("root").await, Ok(Some(_))),
        Err(_) => false,
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    // The embedded default: no database file means no CA (and a read-only command must not
    // create one).
    if config.database_url.is_none() && !config.data_dir.join("ecert.db").exists() {
        return Err(ca_core::Error::NotInitialised.into());
    }
    let store = Store::open(&config.database_url())
        .await?
        .with_clock_check(&config.clock);
    if store.meta("policy_arc").await?.is_none() {
        return Err(ca_core::Error::NotInitialised.into());
    }
    Ok(store)
}

/// A CA certificate from the store (read-only commands never take the signer lock or the HSM).
async fn stored_ca(store: &Store, role: CaId) -> anyhow::Result<Vec<u8>> {
    match store.ca(&role.name()).await? {
        Some((_, der)) => Ok(der),
        None => Err(ca_core::Error::NotInitialised.into()),
    }
}

/// One line per CA (roots first; a data directory made before the TLS root has none):
/// id, serial, subject, notAfter, state (`active`, `pending`, `superseded`, `retired`).
async fn print_ca_list(store: &Store) -> anyhow::Result<()> {
    let cas = store.cas().await?;
    if !cas.iter().any(|c| c.id.role == CaRole::Individual) {
        return Err(ca_core::Error::NotInitialised.into());
    }
    let cross = store.cross_certificates().await?;
    let lines = cas
        .iter()
        .map(|ca| (ca.id.name(), &ca.cert_der, ca.state.as_str()))
        .chain(
            cross
                .iter()
                .map(|(s, i, der)| (format!("{s}-by-{i}"), der, "cross")),
        );
    for (name, der, state) in lines {
        let (_, c) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| anyhow::anyhow!("stored CA certificate: {e}"))?;
        outln!(
            "{}\t{}\t{}\t{}\t{}",
            name,
            hex::encode(c.raw_serial()).trim_start_matches("00"),
            c.subject(),
            c.validity().not_after,
            state
        );
    }
    Ok(())
}

async fn ca(config: Config, c: CaCommand) -> anyhow::Result<()> {
    match c {
        CaCommand::List => print_ca_list(&open_store(&config).await?).await,
        CaCommand::Export { name, chain } => {
            let store = open_store(&config).await?;
            // A cross-certificate (`tls-root-by-root`), the newest of its pair; with --chain,
            // then the root that signed it.
            let cross = store
                .cross_certificates()
                .await?
                .into_iter()
                .rev()
                .find(|(s, i, _)| format!("{s}-by-{i}") == name);
            if let Some((_, issuer, der)) = cross {
                out!("{}", pem_cert(&der));
                if chain {
                    out!(
                        "{}",
                        pem_cert(&stored_ca(&store, CaId::from_name(&issuer)?).await?)
                    );
                }
                return Ok(());
            }
            let role = CaId::from_name(&name)?;
            out!("{}", pem_cert(&stored_ca(&store, role).await?));
            if chain && !role.is_root() {
                out!("{}", pem_cert(&store.root_over(&role.name()).await?.1));
            }
            Ok(())
        }
    }
}

async fn cert(config: Config, c: CertCommand) -> anyhow::Result<()> {
    // Read-only: no signer lock, no HSM. (Leftovers of a crashed issuance are resolved when the
    // next signer starts.)
    let store = &open_store(&config).await?;
    match c {
        CertCommand::List => {
            for (serial, state, profile) in store.list_certificates().await? {
                outln!("{serial}\t{state}\t{profile}");
            }
        }
        CertCommand::Export { serial } => {
            let s = SerialNumber::from_hex(&serial)
                .with_context(|| format!("{serial:?} is not a serial number"))?;
            match store.certificate(&s.to_hex()).await? {
                Some(r) => match r.cert_der {
                    Some(der) => out!("{}", pem_cert(&der)),
                    None => bail!("certificate {serial} was not issued (state {})", r.state),
                },
                None => bail!("no certificate with serial {serial}"),
            }
        }
        CertCommand::Show { serial } => {
            let s = SerialNumber::from_hex(&serial)
                .with_context(|| format!("{serial:?} is not a serial number"))?;
            let Some(r) = store.certificate(&s.to_hex()).await? else {
                bail!("no certificate with serial {serial}");
            };
            outln!("serial={}", r.serial);
            outln!("state={}", r.state);
            outln!("issuer={}", r.issuer);
            outln!("profile={} v{}", r.profile, r.profile_version);
            outln!("renews={}", r.renews.unwrap_or_default());
            outln!("renewed_by={}", r.renewed_by.unwrap_or_default());
            if let Some(na) = r.not_after {
                outln!("not_after={na}");
            }
            if let Some(code) = r.revocation_reason {
                let name = ca_core::revocation::Reason::from_code(code).map_or("?", |x| x.name());
                outln!("revocation_reason={name}");
                outln!("revoked_at={}", r.revoked_at.unwrap_or_default());
            }
            if let Some(f) = r.failure {
                outln!("failure={f}");
            }
        }
    }
    Ok(())
}

/// Reads a PEM `PUBLIC KEY` file (the audit key, from `ecert audit key`).
fn read_public_key(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let block = pem::parse(text).with_context(|| format!("{} is not PEM", path.display()))?;
    anyhow::ensure!(
        block.tag() == "PUBLIC KEY",
        "{} is not a PUBLIC KEY",
        path.display()
    );
    Ok(block.into_contents())
}

async fn audit_verify(
    config: Config,
    public_key: Option<PathBuf>,
    witness: Option<PathBuf>,
) -> anyhow::Result<()> {
    let spki = match public_key {
        Some(path) => read_public_key(&path)?,
        None => Authority::audit_public_key_from_hsm(&config).await?,
    };
    let store = open_store(&config).await?;
    let ca_core::authority::AuditVerified {
        records: n,
        checkpoints,
        findings,
        gaps,
    } = Authority::verify_audit(&store, &spki).await?;
    let mut problems: Vec<String> = findings.iter().map(ToString::to_string).collect();
    for g in &gaps {
        if let Some(by) = g.pruned_by {
            outln!(
                "records {} to {} were purged after the audit retention period (declared by the signed record {by})",
                g.from,
                g.to
            );
        } else if g.from <= g.to {
            outln!(
                "records {} to {} were lost in a restore from backup (declared by the signed record {})",
                g.from,
                g.to,
                g.record
            );
        } else {
            outln!(
                "restored from backup at record {} with no record lost",
                g.record
            );
        }
    }
    if let Some(path) = &witness {
        let witnessed = ca_core::audit::witness::read(path)?;
        let (records, _, _) = store.audit_records().await?;
        let db_checkpoints = store.checkpoints().await?;
        match ca_core::audit::witness::compare(&witnessed, &records, &db_checkpoints, &spki, &gaps)
        {
            None => outln!(
                "witness {} agrees: {} checkpoints",
                path.display(),
                witnessed.len()
            ),
            Some(d) => problems.push(format!("witness: {d}")),
        }
    }
    if problems.is_empty() {
        outln!("audit trail intact: {n} records, {checkpoints} signed checkpoints");
        return Ok(());
    }
    for p in &problems {
        outln!("{p}");
    }
    bail!(
        "audit trail verification failed: {} finding(s) in {n} records",
        problems.len()
    )
}

/// `audit verify --export FILE --public-key KEY`: offline, from the file alone.
fn audit_verify_export(
    export: &std::path::Path,
    public_key: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use ca_core::audit::export;
    let key = public_key.context("--export needs --public-key")?;
    let spki = read_public_key(key)?;
    let text =
        std::fs::read_to_string(export).with_context(|| format!("reading {}", export.display()))?;
    let (e, claims) = export::parse(&text)?;
    let problems = export::verify(&e, &claims, &spki);
    if problems.is_empty() {
        let first = e.records.first().map_or(e.checkpoint.seq, |(r, _)| r.seq);
        outln!(
            "export verified: {} records ({} selected by its filter) from record {first} to {}, between {} and the signed checkpoint at record {}",
            e.records.len(),
            e.matched(),
            e.checkpoint.seq,
            e.start.as_ref().map_or("the chain's start".to_string(), |s| format!("the signed checkpoint at record {}", s.seq)),
            e.checkpoint.seq,
        );
        if e.uncovered > 0 {
            outln!(
                "(the exporter reported {} newer selected record(s) not yet covered by a checkpoint)",
                e.uncovered
            );
        }
        return Ok(());
    }
    for p in &problems {
        outln!("{p}");
    }
    bail!(
        "audit export verification failed: {} finding(s)",
        problems.len()
    )
}

async fn audit_export(config: Config, a: AuditExportArgs) -> anyhow::Result<()> {
    use ca_core::audit::export;
    let encoding = export::Encoding::parse(&a.format)?;
    let filter = export::Filter {
        since: a.since.as_deref().map(parse_time).transpose()?,
        until: a.until.as_deref().map(parse_time).transpose()?,
        actor: a.actor,
        kind: a.kind,
        serial: a.serial,
        reference: a.reference,
        application_ids: Vec::new(),
    };
    let store = open_store(&config).await?;
    let e = match export::export(&store, filter).await {
        Err(ca_core::Error::NotFound) => bail!(
            "no audit record matches that is covered by a signed checkpoint yet (a signer makes one at least every 30 s while `ecert serve` runs)"
        ),
        other => other?,
    };
    // Who exported what is itself audited.
    store
        .audit_now(&ca_core::audit::Event {
            kind: "audit.exported",
            actor: actor(),
            subject: None,
            detail: serde_json::json!({ "filter": e.filter, "records": e.records.len(), "selected": e.matched(), "checkpoint": e.checkpoint.seq }),
        })
        .await?;
    let text = export::render(&e, encoding)?;
    match &a.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => out!("{text}"),
    }
    eprintln!(
        "exported {} records ({} selected) up to the checkpoint at record {}{}",
        e.records.len(),
        e.matched(),
        e.checkpoint.seq,
        if e.uncovered > 0 {
            format!(
                "; {} newer selected record(s) wait for the next checkpoint",
                e.uncovered
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

fn parse_time(s: &str) -> anyhow::Result<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{s:?} is not an RFC 3339 time (e.g. 2026-11-01T00:00:00Z)"))?;
    Ok(t.unix_timestamp())
}

/// `ecert revoke`: one certificate, through the service as the signed-in member
/// (`POST /api/v1/certificates/{serial}/revocation`); a line per certificate changed (the
/// renewal chain is walked), with the reason recorded.
async fn revoke(a: RevokeArgs) -> anyhow::Result<()> {
    let api = client::Api::of(&client::current()?)?;
    let body = if a.release {
        anyhow::ensure!(
            a.reason.is_none(),
            "--release takes no --reason: it lifts a hold"
        );
        serde_json::json!({ "release": true })
    } else if a.hold {
        anyhow::ensure!(a.reason.is_none(), "--hold takes no --reason");
        serde_json::json!({ "reason": "certificateHold" })
    } else {
        let reason =
            ca_core::revocation::Reason::parse(a.reason.as_deref().unwrap_or("unspecified"))?;
        anyhow::ensure!(
            reason != ca_core::revocation::Reason::CertificateHold,
            "use --hold to put a certificate on hold"
        );
        let mut body = serde_json::json!({ "reason": reason.name() });
        if let Some(f) = &a.certificate {
            // PEM as it is; DER (a .cer/.der file) wrapped in PEM.
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            let text = match String::from_utf8(bytes.clone()) {
                Ok(t) if t.contains("-----BEGIN") => t,
                _ => pem::encode(&pem::Pem::new("CERTIFICATE", bytes)),
            };
            body["certificate"] = serde_json::Value::String(text);
        }
        body
    };
    let mut serial = a.serial.replace(':', "").to_ascii_lowercase();
    // As some tools print it, without its leading zero.
    if serial.len() % 2 == 1 {
        serial.insert(0, '0');
    }
    anyhow::ensure!(
        !serial.is_empty() && serial.bytes().all(|b| b.is_ascii_hexdigit()),
        "{:?} is not a serial number",
        a.serial
    );
    let r = api
        .call(
            axum::http::Method::POST,
            &format!("/api/v1/certificates/{serial}/revocation"),
            Some(&body),
        )
        .await?;
    for c in r["changed"].as_array().into_iter().flatten() {
        let field = |k: &str| client::printable(c[k].as_str().unwrap_or("-"));
        outln!(
            "{}\t{}\t{}",
            field("serial"),
            field("outcome"),
            field("reason")
        );
    }
    Ok(())
}

async fn ocsp(config: Config, cmd: OcspCommand) -> anyhow::Result<()> {
    let auth = Authority::open(config).await?;
    let result = match cmd {
        OcspCommand::Sign => serve::sign_all_due(&auth)
            .await
            .map(|n| outln!("signed responses for {n} serials"))
            .map_err(anyhow::Error::from),
        OcspCommand::Rotate { cas } => {
            let roles = if cas.is_empty() {
                auth.publishing_cas()
            } else {
                cas.iter()
                    .map(|c| CaId::from_name(c))
                    .collect::<Result<Vec<_>, _>>()?
            };
            let mut out = Ok(());
            for role in roles {
                match auth.rotate_responder(role).await {
                    Ok(serial) => outln!("{}	responder={serial}", role.name()),
                    Err(e) => {
                        out = Err(e.into());
                        break;
                    }
                }
            }
            out
        }
        OcspCommand::Responder { name } => {
            let role = CaId::from_name(&name)?;
            auth.ensure_responders().await?;
            match auth.responder_cert(role).await {
                Some(der) => {
                    out!(
                        "{}",
                        pem::encode_config(
                            &pem::Pem::new("CERTIFICATE", der),
                            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF)
                        )
                    );
                    Ok(())
                }
                None => Err(anyhow::anyhow!("the {name} CA has no OCSP responder")),
            }
        }
    };
    checkpoint(&auth).await;
    result
}

async fn crl_publish(config: Config, cas: Vec<String>) -> anyhow::Result<()> {
    let auth = Authority::open(config).await?;
    let roles = if cas.is_empty() {
        auth.publishing_cas()
    } else {
        cas.iter()
            .map(|c| CaId::from_name(c))
            .collect::<Result<Vec<_>, _>>()?
    };
    for role in roles {
        let scopes = match auth.crl_scopes(role).await {
            Ok(s) => s,
            Err(e) => {
                checkpoint(&auth).await;
                return Err(e.into());
            }
        };
        for scope in scopes {
            match auth.publish_crl(role, scope, &actor()).await {
                Ok(p) => outln!(
                    "{}\tnumber={}\tentries={}\t{}",
                    scope.file_name(role),
                    p.number,
                    p.entries,
                    p.path.display()
                ),
                Err(e) => {
                    checkpoint(&auth).await;
                    return Err(e.into());
                }
            }
        }
    }
    checkpoint(&auth).await;
    Ok(())
}

/// Signs an audit checkpoint at the end of a signer command. The command's own work is done
/// by then, so a failure here is reported but does not turn success into failure.
async fn checkpoint(auth: &Authority) {
    if let Err(e) = auth.checkpoint().await {
        eprintln!("warning: could not sign the audit checkpoint: {e}");
    }
}

/// `ecert keys debian-list build`.
fn debian_list_build(keys_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let report = ca_core::keys::debian::build(keys_dir, out)?;
    for (path, why) in &report.skipped {
        eprintln!("skipped {}: {why}", path.display());
    }
    if report.written.is_empty() {
        bail!(
            "no RSA key found in {} ({} files read)",
            keys_dir.display(),
            report.files
        );
    }
    for (bits, n) in &report.written {
        outln!(
            "{}: {n} weak RSA-{bits} keys",
            out.join(ca_core::keys::debian::list_name(*bits)).display()
        );
    }
    Ok(())
}

fn config_check(config: &Config, production: bool) -> anyhow::Result<()> {
    for w in config.warnings() {
        eprintln!("warning: {w}");
    }
    let mut unfit = config.production_problems()?;
    // What the database holds of custody: roots' tokens and quorums (when it is initialised).
    let from_store = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(async {
            match open_store(config).await {
                Ok(store) => ca_core::ceremony::custody_problems(config, &store).await,
                Err(_) => Ok(Vec::new()),
            }
        })?;
    unfit.extend(from_store);
    // The root token is offline: in production the online signer's module must not reach it
    // (DESIGN.md "Custody and roles"). Only asked of a hardware module (SoftHSM2 is refused
    // above) that exists.
    if production && !config.embedded_softhsm() && config.hsm.module.exists() {
        match hsm::pkcs11::token_present(&config.hsm.module, &config.hsm.root_token_label) {
            Ok(true) => unfit.push(format!(
                "the root token {:?} is reachable through the online signer's module {}: \
                 roots stay offline, opened only in a key ceremony",
                config.hsm.root_token_label,
                config.hsm.module.display()
            )),
            Ok(false) => {}
            Err(e) => unfit.push(format!(
                "the PKCS#11 module could not be asked for tokens: {e}"
            )),
        }
    }
    for p in &unfit {
        eprintln!("{}: {p}", if production { "error" } else { "warning" });
    }
    if production && !unfit.is_empty() {
        bail!("not ready for production: {} problem(s) above", unfit.len());
    }
    if (config.embedded_softhsm() || config.hsm.module.is_absolute()) && !config.hsm.module.exists()
    {
        bail!(
            "PKCS#11 module {} does not exist",
            config.hsm.module.display()
        );
    }
    outln!("configuration OK");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Issue 14 (from the attack on custody): the command line's audit actor is the process's
    /// account, whatever `$USER` says.
    #[test]
    fn the_cli_actor_is_the_process_account_not_user() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nops:x:1000:1000::/home/ops:/bin/sh\n";
        assert_eq!(cli_actor(0, passwd), "cli:root");
        assert_eq!(cli_actor(1000, passwd), "cli:ops");
        assert_eq!(cli_actor(4242, passwd), "cli:uid-4242");
        let before = actor();
        std::env::set_var("USER", "someone-else");
        assert_eq!(actor(), before);
        assert_ne!(before, "cli:someone-else");
    }
}
