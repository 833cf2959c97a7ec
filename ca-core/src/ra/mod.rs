//! The registration authority: citizens' applications, counter staff, identity checks, fees and
//! approvals, ending in an issuance by [`Authority`](crate::authority::Authority) (docs/RA.md;
//! DESIGN.md "Who uses it").
//!
//! Ownership is part of every query: a citizen's application is found by reference *and* its
//! tracking secret, a clerk's by id *and* the clerk's outlet. A mismatch is
//! [`Error::NotFound`](crate::error::Error::NotFound), the same answer as for an id that does not
//! exist.
//!
//! Personal fields (HKID, date of birth, phone, address) are stored sealed ([`crate::pii`]);
//! staff screens get them masked, and a reveal is an audit event. Audit records name
//! applications by id and reference, never by personal data.
//!
//! # Layout
//!
//! One module per capability, each owning its SQL and reading rows into typed structs by column
//! name. They form layers, each using only those below it:
//!
//! 1. [`support`] (clock, hashes, random values, field checks) and [`rules`] (the decision
//!    rules as pure functions: status, readiness, the approval rule, the renewal window, a
//!    minor's validity, retention due).
//! 2. [`staff`] (roles and accounts; [`admin`] is their administration by admins), [`permissions`] (the role × action matrix every
//!    capability asks first), [`outlet`], [`session`] (sign-in) and [`token`] (API tokens).
//! 3. [`record`]: the application record — found by its owner, settled, checked open at a
//!    version — which every capability above loads through.
//! 4. The capabilities: [`mailbox`] (e-mail codes), [`application`] (the form, submission,
//!    tracking), [`domains`] (DNS validation and CAA), [`fee`], [`counter`] (queue, staff view,
//!    identity and organisation checks, corrections), [`decision`] (approve, reject, issue),
//!    [`renewal`] (online renewal and re-key), [`revocation`] (online and at the counter) and
//!    [`retention`] (purging personal data), and [`auditing`] (the auditor's view of the
//!    audit trail) and [`operations`] (the operator's view and triggers, no personal data).
//!
//! Callers use the items re-exported here (`ca_core::ra::submit`, `ca_core::ra::Role`, ...).

mod access;
mod admin;
mod application;
mod auditing;
pub mod bulk;
mod counter;
mod decision;
pub mod directory;
mod domains;
mod fee;
mod mailbox;
pub mod notices;
pub mod officer;
mod operations;
mod outlet;
pub mod permissions;
mod problems;
mod record;
pub mod reminders;
mod renewal;
pub mod reports;
mod retention;
mod revocation;
pub mod rules;
mod session;
mod staff;
mod support;
mod token;

#[cfg(test)]
mod tests;

pub use access::{personal_data, Consent, DataHeld, Item, Kept, Purpose};
pub use admin::{
    accounts, active_admins, add_account, approve_grant, change_role, grant_needs_second_admin,
    new_totp, reset_password, set_disabled, Account, MIN_ACTIVE_ADMINS,
};
pub use application::REGISTER_COUNTRY;
pub use application::{
    business_registration_number, certificate, certificate_chain, enter, set_choice, submit, track,
    Choice, CitizenView, NewApplication, Submitted, APPLICATION_PROFILES, CONSENT_WORDING,
    DIRECTORY_WORDING,
};
pub use auditing::{audit_export, audit_records, auditing_page};
pub use counter::{
    amend_contact, check_identity, check_organisation, queue, reveal, staff_certificate,
    staff_view, QueueRow, Revealable, StaffView,
};
pub use decision::{decide, Decided, Decision};
pub use domains::{
    validate_domains, validate_domains_at_counter, validate_domains_online, DomainStatus,
};
pub use fee::{fee_due, record_fee};
pub use mailbox::{
    confirm_email, confirm_email_link, new_email_code, CODES_SENT, CODE_ATTEMPTS,
    WAITING_PER_MAILBOX,
};
pub use officer::{ProposalRequest, ProposalView};
pub use operations::{
    activate_personal_data, operations, personal_data_status, publish_all_crls, sign_ocsp_now,
    OpsView,
};
pub use outlet::{add_outlet, all_outlets, change_outlet, ensure_outlet, outlets};
pub use permissions::{Action, Reach};
pub use problems::{
    report, report_clocks, report_decide, report_preliminary, report_problem, report_queue,
    source_bucket, NewReport, Notice, ProblemKind, ReportClocks, ReportOutcome, ReportReceived,
    ReportView,
};
pub use renewal::{rekey_message, renew_online};
pub use retention::purge;
pub use revocation::{
    change_certificate_status, key_compromise_challenge, key_compromise_message,
    release_at_counter, revoke_at_counter, revoke_online, revoke_surfaced, StatusChange,
    KEY_CHALLENGE_SECONDS,
};
pub use rules::Clock;
pub use rules::{Status, MAILBOX_VALIDATION_DAYS};
pub use session::{
    change_password, session, sign_in, sign_in_from, sign_out, SignedIn, StaffSession,
    ACCOUNT_SIGN_IN_ATTEMPTS, LOCK_SECONDS, SIGN_IN_ATTEMPTS,
};
pub use staff::{
    create_bootstrap_admin, create_staff, list_staff, reset_totp, set_staff_disabled, NewStaff,
    Role, StaffRow,
};
pub use token::{
    api_session, api_session_idle, cli_sign_in, cli_sign_out, create_api_token, revoke_api_tokens,
    CliSession, Scope, Scopes, CLI_SESSION_SECONDS,
};

/// Shared handle for the web layer.
pub type Shared = std::sync::Arc<crate::authority::Authority>;
