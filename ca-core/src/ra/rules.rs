//! The RA's decision rules as pure functions over typed inputs: where an application stands,
//! whether it is ready for approval, what an approval or rejection leads to, whether a
//! certificate may be renewed online, how long a minor's certificate lasts, and when personal
//! data is due for purging. No IO and no clock: the caller loads the facts, passes `now`, and
//! stores what the rule decided (STYLE.md rule 23). Each rule has a table test below.

use super::staff::Role;
use crate::error::{Error, Result};
use crate::profile::{Profile, ProfileKind};

/// S/MIME BR §4.2.1: control of the mailbox is validated no more than 30 days before issuance.
pub const MAILBOX_VALIDATION_DAYS: i64 = 30;

// ---------------------------------------------------------------------------------------------
// Status.

/// Where an application stands, as the citizen and staff see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The e-mail code has not been entered yet.
    AwaitingEmail,
    /// Waiting for the visit to the outlet (identity check, fee, approval).
    AwaitingVisit,
    /// Approved by one member of staff; a second, different one must approve.
    AwaitingSecondApproval,
    /// Being issued.
    Approved,
    /// Approved, but the issuance did not complete (e.g. CAA forbade it): staff retry.
    IssuanceFailed,
    /// The certificate is ready.
    Issued,
    /// Rejected.
    Rejected,
}

impl Status {
    /// A stable key for templates and the API.
    pub fn key(self) -> &'static str {
        match self {
            Status::AwaitingEmail => "awaiting_email",
            Status::AwaitingVisit => "awaiting_visit",
            Status::AwaitingSecondApproval => "awaiting_second_approval",
            Status::Approved => "approved",
            Status::IssuanceFailed => "issuance_failed",
            Status::Issued => "issued",
            Status::Rejected => "rejected",
        }
    }
}

/// The status of an application in `state` (the stored lifecycle), with its mailbox confirmed
/// or not, `approvals` valid approvals of its current version, and whether its last issuance
/// failed.
pub fn status_of(
    state: &str,
    email_confirmed: bool,
    approvals: usize,
    issue_failed: bool,
) -> Status {
    match state {
        "issued" => Status::Issued,
        "rejected" => Status::Rejected,
        "approved" => Status::Approved,
        _ if !email_confirmed => Status::AwaitingEmail,
        // The approvals that led to the failed issuance still count.
        _ if approvals > 0 && issue_failed => Status::IssuanceFailed,
        _ if approvals > 0 => Status::AwaitingSecondApproval,
        _ => Status::AwaitingVisit,
    }
}

/// Whether a mailbox confirmed at `confirmed_at` still counts at `now` (S/MIME BR §4.2.1).
pub fn mailbox_current(confirmed_at: Option<i64>, now: i64) -> bool {
    confirmed_at.is_some_and(|at| now - at <= MAILBOX_VALIDATION_DAYS * 86_400)
}

// ---------------------------------------------------------------------------------------------
// Approval.

/// What the checks at the counter have established for an application version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The version being approved.
    pub version: i64,
    /// The profile's kind.
    pub kind: Option<ProfileKind>,
    /// When the mailbox was confirmed.
    pub email_confirmed_at: Option<i64>,
    /// The version whose identity check matched.
    pub identity_version: Option<i64>,
    /// Whether the fee was recorded.
    pub fee_recorded: bool,
    /// The version whose organisation documents were checked.
    pub org_checked_version: Option<i64>,
    /// server: the names whose domain control is not (or no longer) validated.
    pub unvalidated_domains: Vec<String>,
}

/// Whether an application version may be approved: the mailbox confirmed within
/// [`MAILBOX_VALIDATION_DAYS`], the identity checked for this version, the fee recorded, an
/// organisation's documents checked for this version, and every server name validated. The
/// first missing step is named ([`Error::Conflict`]).
pub fn approval_readiness(r: &Readiness, now: i64) -> Result<()> {
    match r.email_confirmed_at {
        None => {
            return Err(Error::Conflict(
                "the e-mail address is not confirmed yet".into(),
            ))
        }
        Some(at) if !mailbox_current(Some(at), now) => {
            return Err(Error::Conflict(format!(
                "the e-mail address was confirmed more than {MAILBOX_VALIDATION_DAYS} days ago: send the applicant a new code (S/MIME BR §4.2.1)"
            )))
        }
        Some(_) => {}
    }
    if r.identity_version != Some(r.version) {
        return Err(Error::Conflict(
            "the identity check has not been done for this version".into(),
        ));
    }
    if !r.fee_recorded {
        return Err(Error::Conflict("the fee has not been recorded".into()));
    }
    let kind = r.kind.unwrap_or(ProfileKind::Personal);
    if kind != ProfileKind::Personal && r.org_checked_version != Some(r.version) {
        return Err(Error::Conflict(
            "the organisation's documents have not been checked for this version".into(),
        ));
    }
    if kind == ProfileKind::Server && !r.unvalidated_domains.is_empty() {
        return Err(Error::Conflict(format!(
            "domain control is not validated for {}",
            r.unvalidated_domains.join(", ")
        )));
    }
    Ok(())
}

/// What a profile asks of its approvers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalPolicy {
    /// Two different people must approve, one of them a supervisor or officer
    /// (`ra.dual_control`).
    pub dual_control: bool,
}

impl ApprovalPolicy {
    /// The policy of `profile` under `ra`, for an organisation in `org_register`: a government
    /// entity (`GOV`) always needs dual control, because no registration number backs it — a
    /// second, senior member of staff confirms the bureau's letter.
    pub fn of(ra: &crate::config::RaConfig, profile: &str, org_register: Option<&str>) -> Self {
        ApprovalPolicy {
            dual_control: ra.dual_control.iter().any(|p| p == profile)
                || org_register == Some("GOV"),
        }
    }

    /// How many different people must approve.
    pub fn needed(self) -> usize {
        if self.dual_control {
            2
        } else {
            1
        }
    }
}

/// A decision on an application version: one recorded earlier, or the one being made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The staff member's id.
    pub staff: String,
    /// Their role now.
    pub role: Role,
    /// Approve (true) or reject.
    pub approve: bool,
    /// Until when it counts (Unix seconds; it counts while `expires_at > now`).
    pub expires_at: i64,
    /// Made through an API token (no second factor), not a signed-in browser session.
    pub via_token: bool,
}

/// Whether a role decides on applications at all, as the permission matrix says
/// ([`super::permissions::MATRIX`]): clerks, supervisors and officers do; an admin, operator,
/// auditor or data owner does not (DESIGN.md "Custody and roles").
pub fn may_decide(role: Role) -> bool {
    super::permissions::permits(role, super::permissions::Action::Decide).is_some()
}

/// Whether a role's approval is the senior one dual control needs.
pub fn is_senior(role: Role) -> bool {
    matches!(role, Role::Supervisor | Role::Officer)
}

/// Why a decision is refused (nothing is recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The role does not decide on applications ([`may_decide`]).
    NotAnApprover,
    /// The person entered the application (a walk-in or API entry): someone else approves it.
    EnteredIt,
    /// Dual control: the approvals would be complete without a supervisor or officer.
    SecondMustBeSenior,
    /// This person's own decision on this version still counts.
    AlreadyDecided,
    /// An approval through an API token by the member who recorded the identity check or fee.
    TokenCheckedIt,
}

impl Refusal {
    /// The error the person is shown.
    pub fn error(self) -> Error {
        match self {
            Refusal::NotAnApprover => Error::Forbidden(
                "your role does not approve or reject applications".into(),
            ),
            Refusal::EnteredIt => Error::Forbidden(
                "you entered this application: another member of staff must approve it".into(),
            ),
            Refusal::SecondMustBeSenior => Error::Forbidden(
                "the second approval of this profile must come from a supervisor".into(),
            ),
            Refusal::TokenCheckedIt => Error::Forbidden(
                "an API token cannot approve an application whose identity check or fee its member recorded: another member of staff approves it".into(),
            ),
            Refusal::AlreadyDecided => Error::Conflict(
                "you have already decided on this application: a second approval must come from someone else".into(),
            ),
        }
    }
}

/// Who handled an application at the counter (staff ids; `None`: nobody yet, or the citizen
/// applied online).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handling<'a> {
    /// Entered it (a walk-in, or through the API).
    pub entered_by: Option<&'a str>,
    /// Recorded the identity check.
    pub identity_by: Option<&'a str>,
    /// Recorded the fee.
    pub fee_by: Option<&'a str>,
}

/// What a decision leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused; nothing is recorded.
    Refused(Refusal),
    /// Recorded (replacing the person's own expired decision, if any); the application is
    /// rejected.
    Reject,
    /// Recorded; more approvals from other people are needed.
    Await,
    /// Recorded; the approvals are complete: issue.
    Issue,
    /// The person's own approval still counts and the set is complete, so an issuance it
    /// started did not finish: issue again, recording nothing new.
    Retry,
}

/// The approval rule: what `new` leads to, given the decisions `recorded` on the same version,
/// `policy`, and who handled the application at the counter (`handling`), at `now` (docs/RA.md
/// "The counter", step 6).
///
/// - Only clerks, supervisors and officers decide ([`may_decide`]); the person who entered the
///   application does not approve it (they may reject it).
/// - An approval through an API token (no second factor) does not come from the member who
///   recorded the identity check or the fee: a stolen token alone cannot carry an application
///   through the counter. In a browser session signed in with TOTP one clerk checks, takes the
///   fee and approves, as e-Cert outlets do.
/// - An approval counts while it has not expired, once per person, and only from a role that
///   decides.
/// - The approvals are complete with one approver, or with dual control two different
///   people at least one of whom is a supervisor or officer ([`is_senior`]), whatever the
///   order: an approval that would complete the count without one is refused.
/// - A person decides once per version; their expired approval may be renewed; their approval
///   that still counts, in a complete set, retries an issuance that did not finish.
/// - A rejection rejects.
pub fn approval_outcome(
    policy: ApprovalPolicy,
    recorded: &[Approval],
    new: &Approval,
    handling: Handling<'_>,
    now: i64,
) -> Outcome {
    if !may_decide(new.role) {
        return Outcome::Refused(Refusal::NotAnApprover);
    }
    let counts = |a: &&Approval| a.approve && a.expires_at > now && may_decide(a.role);
    // The distinct approvers that count in `set`, and whether one of them is senior.
    let tally = |set: &mut dyn Iterator<Item = &Approval>| {
        let mut seen: Vec<&str> = Vec::new();
        let mut senior = false;
        for a in set.filter(counts) {
            if !seen.contains(&a.staff.as_str()) {
                seen.push(&a.staff);
            }
            senior |= is_senior(a.role);
        }
        (seen.len(), senior)
    };
    let complete = |(approvers, senior): (usize, bool)| {
        approvers >= policy.needed() && (!policy.dual_control || senior)
    };
    if let Some(own) = recorded.iter().find(|a| a.staff == new.staff) {
        if own.expires_at > now {
            return if new.approve && own.approve && complete(tally(&mut recorded.iter())) {
                Outcome::Retry
            } else {
                Outcome::Refused(Refusal::AlreadyDecided)
            };
        }
    }
    if !new.approve {
        return Outcome::Reject;
    }
    let me = Some(new.staff.as_str());
    if handling.entered_by == me {
        return Outcome::Refused(Refusal::EnteredIt);
    }
    if new.via_token && (handling.identity_by == me || handling.fee_by == me) {
        return Outcome::Refused(Refusal::TokenCheckedIt);
    }
    let after = tally(
        &mut recorded
            .iter()
            .filter(|a| a.staff != new.staff)
            .chain(std::iter::once(new)),
    );
    if complete(after) {
        Outcome::Issue
    } else if after.0 >= policy.needed() {
        // Enough people, none of them senior.
        Outcome::Refused(Refusal::SecondMustBeSenior)
    } else {
        Outcome::Await
    }
}

// ---------------------------------------------------------------------------------------------
// Staff sign-in.

/// Failed sign-ins from one client address in one window before that address is locked out
/// of the account for [`LOCK_SECONDS`].
pub const SIGN_IN_ATTEMPTS: i64 = 5;
/// Failed sign-ins from all addresses together in one window before the whole account is
/// locked for [`LOCK_SECONDS`] (many addresses guessing at once).
pub const ACCOUNT_SIGN_IN_ATTEMPTS: i64 = 50;
/// How long a locked account stays locked; also the window failures are counted in.
pub const LOCK_SECONDS: i64 = 15 * 60;

/// A staff account's run of failed sign-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignInFailures {
    /// Failures in the current window.
    pub count: i64,
    /// When the window began (Unix seconds; 0: none).
    pub since: i64,
    /// Locked until then (0: not locked).
    pub locked_until: i64,
}

impl SignInFailures {
    /// Whether the account is locked at `now`.
    pub fn locked(&self, now: i64) -> bool {
        self.locked_until > now
    }
}

/// The failures after one more wrong password or code at `now` (not called while locked: a
/// failure then does not count, so nobody extends a lock by failing on purpose). A lock that
/// lapsed, or a window older than [`LOCK_SECONDS`], starts a new window: failures are not
/// remembered past either, so one wrong password per lapse never locks the account again;
/// `limit` failures within a window lock it ([`SIGN_IN_ATTEMPTS`] for one client address,
/// [`ACCOUNT_SIGN_IN_ATTEMPTS`] for the account).
pub fn after_failed_sign_in(f: SignInFailures, now: i64, limit: i64) -> SignInFailures {
    let lapsed = f.locked_until > 0 && f.locked_until <= now;
    let fresh = lapsed || f.count == 0 || now - f.since >= LOCK_SECONDS;
    let (count, since) = if fresh {
        (1, now)
    } else {
        (f.count + 1, f.since)
    };
    let locked_until = if count >= limit {
        now + LOCK_SECONDS
    } else if f.locked_until > now {
        f.locked_until
    } else {
        0
    };
    SignInFailures {
        count,
        since,
        locked_until,
    }
}

// ---------------------------------------------------------------------------------------------
// Online renewal.

/// What online renewal needs to know of the current certificate and its application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalFacts {
    /// The profile's kind.
    pub kind: ProfileKind,
    /// Revoked or on hold.
    pub revoked_or_held: bool,
    /// The certificate's notAfter (Unix seconds; 0 if unknown).
    pub not_after: i64,
    /// Renewed already.
    pub renewed: bool,
    /// When the mailbox was last confirmed.
    pub email_confirmed_at: Option<i64>,
}

/// Whether a certificate may be renewed online at `now` with a window of `window_days` before
/// expiry (BR §3.3.1 routine re-key): not a server certificate (its domains are validated
/// again by a new application), not revoked or held, not expired, inside the window, not
/// renewed already, and the mailbox confirmed within [`MAILBOX_VALIDATION_DAYS`].
pub fn renewal_allowed(c: &RenewalFacts, now: i64, window_days: u32) -> Result<()> {
    if c.kind == ProfileKind::Server {
        return Err(Error::Conflict(
            "a server certificate is renewed by a new application: its domains are validated again"
                .into(),
        ));
    }
    if c.revoked_or_held {
        return Err(Error::Conflict(
            "the certificate is revoked or on hold: apply again".into(),
        ));
    }
    if c.not_after < now {
        return Err(Error::Conflict(
            "the certificate has expired: apply again".into(),
        ));
    }
    let window = i64::from(window_days);
    if c.not_after - now > window * 86_400 {
        return Err(Error::Conflict(format!(
            "online renewal opens {window} days before the certificate expires"
        )));
    }
    if c.renewed {
        return Err(Error::Conflict(
            "the certificate has been renewed already".into(),
        ));
    }
    if !mailbox_current(c.email_confirmed_at, now) {
        return Err(Error::Conflict(format!(
            "confirm your e-mail address again first (it was confirmed more than {MAILBOX_VALIDATION_DAYS} days ago): ask for a new code"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Minors.

/// The validity of a minor's certificate: the profile's default, but ending before the
/// holder's 18th birthday (e-Cert (Personal/Minor) holders move to e-Cert (Personal) at 18).
/// `dob` is `YYYY-MM-DD`.
pub fn minor_days(profile: &Profile, dob: &str, now: time::OffsetDateTime) -> Result<u32> {
    let dob = time::Date::parse(
        dob,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| Error::Conflict("the stored date of birth is not readable".into()))?;
    let year = dob.year() + 18;
    // Born on 29 February: the 18th birthday is 1 March in a common year.
    let eighteen = time::Date::from_calendar_date(year, dob.month(), dob.day())
        .or_else(|_| time::Date::from_calendar_date(year, time::Month::March, 1))
        .map_err(|_| Error::Conflict("the stored date of birth is not readable".into()))?;
    let left = (eighteen - now.date()).whole_days() - 1;
    if left < 1 {
        return Err(Error::Conflict(
            "the applicant is 18 or about to be: apply for e-Cert (Personal) instead".into(),
        ));
    }
    Ok(u32::try_from(left)
        .unwrap_or(u32::MAX)
        .min(profile.days_for(None, now)))
}

// ---------------------------------------------------------------------------------------------
// Retention.

/// Whether an application's personal data is due for purging at `now` (DESIGN.md "Custody
/// and roles"; PDPO DPP2(2)): it ended without a certificate (rejected, or never completed:
/// still `submitted`), it still holds personal data, and its last change is more than
/// `retention_days` old.
pub fn retention_due(
    state: &str,
    holds_personal_data: bool,
    updated_at: i64,
    now: i64,
    retention_days: u32,
) -> bool {
    holds_personal_data
        && matches!(state, "rejected" | "submitted")
        && updated_at < now - i64::from(retention_days) * 86_400
}

/// Certificate Problem Reports (TLS BR and S/MIME BR §4.9.5): the preliminary report on the
/// findings to the reporter and the subscriber is due 24 hours after the report arrives.
pub const REPORT_PRELIMINARY_SECS: i64 = 24 * 3600;
/// Revocation for a reported key compromise is due within 24 hours (TLS BR §4.9.1.1 (3),
/// S/MIME BR §4.9.1); the clock runs from the report, whether or not it came with proof.
pub const REPORT_KEY_COMPROMISE_SECS: i64 = 24 * 3600;
/// Revocation for the other reasons (misissuance, misuse, ...) is due within 5 days (TLS BR
/// §4.9.1.1, S/MIME BR §4.9.1).
pub const REPORT_OTHER_SECS: i64 = 5 * 86_400;
/// A deadline this close counts as nearing: `/healthz` and `/metrics` raise it.
pub const REPORT_NEARING_SECS: i64 = 6 * 3600;

/// The deadlines of a report received at `received_at`: (preliminary report, revocation).
pub fn report_deadlines(key_compromise: bool, received_at: i64) -> (i64, i64) {
    let revoke = if key_compromise {
        REPORT_KEY_COMPROMISE_SECS
    } else {
        REPORT_OTHER_SECS
    };
    (received_at + REPORT_PRELIMINARY_SECS, received_at + revoke)
}

/// Where one open clock of a report stands at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Clock {
    /// Done, or more than [`REPORT_NEARING_SECS`] left.
    Ok,
    /// Less than [`REPORT_NEARING_SECS`] left.
    Nearing,
    /// Past due and not done.
    Overdue,
}

impl Clock {
    /// Its name on pages and in the API: `ok`, `nearing` or `overdue`.
    pub fn name(self) -> &'static str {
        match self {
            Clock::Ok => "ok",
            Clock::Nearing => "nearing",
            Clock::Overdue => "overdue",
        }
    }
}

/// The state of a deadline `due` that was met at `done` (if it was).
pub fn clock(due: i64, done: Option<i64>, now: i64) -> Clock {
    match done {
        Some(_) => Clock::Ok,
        None if now > due => Clock::Overdue,
        None if due - now <= REPORT_NEARING_SECS => Clock::Nearing,
        None => Clock::Ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_facts() {
        assert_eq!(
            status_of("submitted", false, 0, false),
            Status::AwaitingEmail
        );
        assert_eq!(
            status_of("submitted", true, 0, false),
            Status::AwaitingVisit
        );
        assert_eq!(
            status_of("submitted", true, 1, false),
            Status::AwaitingSecondApproval
        );
        assert_eq!(
            status_of("submitted", true, 1, true),
            Status::IssuanceFailed
        );
        // A new version: the old approvals do not count, nor does the old failure.
        assert_eq!(status_of("submitted", true, 0, true), Status::AwaitingVisit);
        assert_eq!(status_of("issued", true, 2, false), Status::Issued);
        assert_eq!(status_of("rejected", true, 0, false), Status::Rejected);
        assert_eq!(status_of("approved", true, 2, false), Status::Approved);
    }

    const NOW: i64 = 1_800_000_000;
    const HOUR: i64 = 3600;

    fn by(staff: &str, role: Role) -> Approval {
        Approval {
            staff: staff.into(),
            role,
            approve: true,
            expires_at: NOW + 24 * HOUR,
            via_token: false,
        }
    }

    use Outcome::{Await, Issue, Refused, Reject, Retry};
    use Role::{Admin, Clerk, Officer, Supervisor};
    const SENIOR: Outcome = Refused(Refusal::SecondMustBeSenior);
    const DECIDED: Outcome = Refused(Refusal::AlreadyDecided);
    const NOBODY: Handling<'static> = Handling {
        entered_by: None,
        identity_by: None,
        fee_by: None,
    };
    const SINGLE: ApprovalPolicy = ApprovalPolicy {
        dual_control: false,
    };
    const DUAL: ApprovalPolicy = ApprovalPolicy { dual_control: true };

    /// Every role alone under single control, and every ordered pair of two different people
    /// under dual control: what the first and the second approval lead to. A refused first
    /// approval is not recorded, so the second is then the first that counts.
    ///
    /// Rows marked `// was: ...` changed with issue 11, defect 4 ("Dual control without a
    /// supervisor"): the senior rule holds whatever the order, and an admin does not approve.
    #[test]
    fn approval_table() {
        const ADMIN: Outcome = Refused(Refusal::NotAnApprover);
        struct Row {
            policy: ApprovalPolicy,
            first: Role,
            second: Option<Role>,
            after_first: Outcome,
            after_second: Option<Outcome>,
        }
        let single = |first, after_first| Row {
            policy: SINGLE,
            first,
            second: None,
            after_first,
            after_second: None,
        };
        let dual = |first, after_first, second, after_second| Row {
            policy: DUAL,
            first,
            second: Some(second),
            after_first,
            after_second: Some(after_second),
        };
        #[rustfmt::skip]
        let table = [
            single(Clerk, Issue),
            single(Supervisor, Issue),
            single(Officer, Issue),
            single(Admin, ADMIN), // was: Issue
            dual(Clerk, Await, Clerk, SENIOR),
            dual(Clerk, Await, Supervisor, Issue),
            dual(Clerk, Await, Officer, Issue),
            dual(Clerk, Await, Admin, ADMIN), // was: Issue (no supervisor or officer)
            dual(Supervisor, Await, Clerk, Issue),
            dual(Supervisor, Await, Supervisor, Issue),
            dual(Supervisor, Await, Officer, Issue),
            dual(Supervisor, Await, Admin, ADMIN), // was: Issue
            dual(Officer, Await, Clerk, Issue),
            dual(Officer, Await, Supervisor, Issue),
            dual(Officer, Await, Officer, Issue),
            dual(Officer, Await, Admin, ADMIN), // was: Issue
            dual(Admin, ADMIN, Clerk, Await), // was: Await, then SENIOR
            dual(Admin, ADMIN, Supervisor, Await), // was: Await, then Issue
            dual(Admin, ADMIN, Officer, Await), // was: Await, then Issue
            dual(Admin, ADMIN, Admin, ADMIN), // was: Await, then Issue (two admins)
        ];
        // The roles that take no decisions (operator, auditor, data owner) are refused like
        // the admin: the table is expanded to every combination of every role, each once.
        let like = |r: Role| if may_decide(r) { r } else { Admin };
        let mut expanded = Vec::new();
        for row in &table {
            for first in Role::ALL.into_iter().filter(|r| like(*r) == row.first) {
                let seconds: Vec<Option<Role>> = match row.second {
                    None => vec![None],
                    Some(s) => Role::ALL
                        .into_iter()
                        .filter(|r| like(*r) == s)
                        .map(Some)
                        .collect(),
                };
                for second in seconds {
                    expanded.push(Row {
                        policy: row.policy,
                        first,
                        second,
                        after_first: row.after_first,
                        after_second: row.after_second,
                    });
                }
            }
        }
        assert_eq!(
            expanded.len(),
            Role::ALL.len() + Role::ALL.len() * Role::ALL.len()
        );
        for row in &expanded {
            let a = by("a", row.first);
            let what = format!("{:?} {:?} then {:?}", row.policy, row.first, row.second);
            let first = approval_outcome(row.policy, &[], &a, NOBODY, NOW);
            assert_eq!(first, row.after_first, "{what}");
            let recorded = if matches!(first, Await | Issue) {
                vec![a]
            } else {
                vec![]
            };
            if let (Some(second), Some(expected)) = (row.second, row.after_second) {
                let b = by("b", second);
                assert_eq!(
                    approval_outcome(row.policy, &recorded, &b, NOBODY, NOW),
                    expected,
                    "{what}"
                );
            }
        }
    }

    /// Approvals recorded before the rule changed (an admin's, or two clerks' in a set a retry
    /// would complete) do not complete a dual-control set.
    #[test]
    fn approvals_of_roles_that_do_not_decide_do_not_count() {
        let admin = by("a", Admin);
        assert_eq!(
            approval_outcome(
                DUAL,
                std::slice::from_ref(&admin),
                &by("b", Supervisor),
                NOBODY,
                NOW
            ),
            Await
        );
        let clerks = [by("a", Clerk), by("b", Clerk)];
        assert_eq!(
            approval_outcome(DUAL, &clerks, &by("a", Clerk), NOBODY, NOW),
            DECIDED
        );
        assert_eq!(
            approval_outcome(DUAL, &clerks, &by("c", Clerk), NOBODY, NOW),
            SENIOR
        );
        assert_eq!(
            approval_outcome(DUAL, &clerks, &by("c", Officer), NOBODY, NOW),
            Issue
        );
    }

    #[test]
    fn a_token_does_not_approve_what_its_member_checked() {
        let token = Approval {
            via_token: true,
            ..by("a", Clerk)
        };
        let refused = Refused(Refusal::TokenCheckedIt);
        let handled = |identity_by, fee_by| Handling {
            identity_by,
            fee_by,
            ..NOBODY
        };
        let outcome = |a: &Approval, h| approval_outcome(SINGLE, &[], a, h, NOW);
        assert_eq!(outcome(&token, handled(Some("a"), Some("b"))), refused);
        assert_eq!(outcome(&token, handled(Some("b"), Some("a"))), refused);
        assert_eq!(outcome(&token, handled(Some("b"), Some("b"))), Issue);
        assert_eq!(outcome(&token, NOBODY), Issue);
        // In a browser session (TOTP), the clerk who checked may approve.
        assert_eq!(
            outcome(&by("a", Clerk), handled(Some("a"), Some("a"))),
            Issue
        );
        // A token may still reject what its member checked.
        let reject = Approval {
            approve: false,
            ..token
        };
        assert_eq!(outcome(&reject, handled(Some("a"), Some("a"))), Reject);
    }

    /// The person who entered an application does not approve it; they may reject it.
    #[test]
    fn the_enterer_does_not_approve() {
        let entered = Handling {
            entered_by: Some("a"),
            ..NOBODY
        };
        for role in [Clerk, Supervisor, Officer] {
            assert_eq!(
                approval_outcome(SINGLE, &[], &by("a", role), entered, NOW),
                Refused(Refusal::EnteredIt),
                "{role:?}"
            );
            assert_eq!(
                approval_outcome(SINGLE, &[], &by("b", role), entered, NOW),
                Issue
            );
            let reject = Approval {
                approve: false,
                ..by("a", role)
            };
            assert_eq!(approval_outcome(SINGLE, &[], &reject, entered, NOW), Reject);
        }
        // Nor as the second of dual control.
        assert_eq!(
            approval_outcome(DUAL, &[by("b", Supervisor)], &by("a", Clerk), entered, NOW),
            Refused(Refusal::EnteredIt)
        );
    }

    #[test]
    fn a_person_decides_once_per_version() {
        let a = by("a", Supervisor);
        // The same person again, before the set is complete: refused.
        assert_eq!(
            approval_outcome(DUAL, std::slice::from_ref(&a), &a, NOBODY, NOW),
            DECIDED
        );
        // Rejecting after one's own approval: refused too.
        let a_rejects = Approval {
            approve: false,
            ..a.clone()
        };
        assert_eq!(
            approval_outcome(DUAL, std::slice::from_ref(&a), &a_rejects, NOBODY, NOW),
            DECIDED
        );
        // The set is complete (an issuance that failed): the same approver retries.
        let b = by("b", Clerk);
        assert_eq!(
            approval_outcome(DUAL, &[a.clone(), b.clone()], &b, NOBODY, NOW),
            Retry
        );
        assert_eq!(
            approval_outcome(SINGLE, std::slice::from_ref(&a), &a, NOBODY, NOW),
            Retry
        );
        // ... but cannot turn it into a rejection.
        assert_eq!(
            approval_outcome(SINGLE, std::slice::from_ref(&a), &a_rejects, NOBODY, NOW),
            DECIDED
        );
        // A clerk retrying beside a supervisor is not a "second non-senior approval".
        assert_eq!(
            approval_outcome(DUAL, &[b.clone(), a.clone()], &b, NOBODY, NOW),
            Retry
        );
    }

    #[test]
    fn expired_approvals_do_not_count() {
        let expired = |staff: &str, role| Approval {
            expires_at: NOW,
            ..by(staff, role)
        };
        // Another person's expired approval: this one is the first again.
        assert_eq!(
            approval_outcome(
                DUAL,
                &[expired("a", Supervisor)],
                &by("b", Supervisor),
                NOBODY,
                NOW
            ),
            Await
        );
        // ... and does not make a clerk's approval a second one.
        assert_eq!(
            approval_outcome(DUAL, &[expired("a", Clerk)], &by("b", Clerk), NOBODY, NOW),
            Await
        );
        // One's own expired approval may be renewed.
        assert_eq!(
            approval_outcome(SINGLE, &[expired("a", Clerk)], &by("a", Clerk), NOBODY, NOW),
            Issue
        );
        assert_eq!(
            approval_outcome(
                DUAL,
                &[expired("a", Clerk), by("b", Supervisor)],
                &by("a", Clerk),
                NOBODY,
                NOW
            ),
            Issue
        );
        // An approval that would expire at once does not count either.
        let instant = Approval {
            expires_at: NOW,
            ..by("a", Officer)
        };
        assert_eq!(approval_outcome(SINGLE, &[], &instant, NOBODY, NOW), Await);
    }

    #[test]
    fn a_rejection_rejects() {
        let reject = |staff: &str, role| Approval {
            approve: false,
            ..by(staff, role)
        };
        assert_eq!(
            approval_outcome(SINGLE, &[], &reject("a", Admin), NOBODY, NOW),
            Refused(Refusal::NotAnApprover)
        );
        for role in [Clerk, Supervisor, Officer] {
            assert_eq!(
                approval_outcome(SINGLE, &[], &reject("a", role), NOBODY, NOW),
                Reject
            );
            assert_eq!(
                approval_outcome(
                    DUAL,
                    &[by("b", Supervisor)],
                    &reject("a", role),
                    NOBODY,
                    NOW
                ),
                Reject
            );
        }
    }

    #[test]
    fn readiness_names_the_first_missing_step() {
        let ready = Readiness {
            version: 2,
            kind: Some(ProfileKind::Server),
            email_confirmed_at: Some(NOW - 86_400),
            identity_version: Some(2),
            fee_recorded: true,
            org_checked_version: Some(2),
            unvalidated_domains: vec![],
        };
        assert!(approval_readiness(&ready, NOW).is_ok());
        let refused = |r: Readiness| approval_readiness(&r, NOW).unwrap_err().to_string();
        let cases: Vec<(Readiness, &str)> = vec![
            (
                Readiness {
                    email_confirmed_at: None,
                    ..ready.clone()
                },
                "not confirmed yet",
            ),
            (
                Readiness {
                    email_confirmed_at: Some(NOW - 31 * 86_400),
                    ..ready.clone()
                },
                "more than 30 days ago",
            ),
            (
                Readiness {
                    identity_version: Some(1),
                    ..ready.clone()
                },
                "identity check",
            ),
            (
                Readiness {
                    fee_recorded: false,
                    ..ready.clone()
                },
                "fee",
            ),
            (
                Readiness {
                    org_checked_version: Some(1),
                    ..ready.clone()
                },
                "organisation",
            ),
            (
                Readiness {
                    unvalidated_domains: vec!["www.example.hk".into()],
                    ..ready.clone()
                },
                "www.example.hk",
            ),
        ];
        for (r, expected) in cases {
            let e = refused(r);
            assert!(e.contains(expected), "{expected}: {e}");
        }
        // A personal application has no organisation or domains to check.
        let personal = Readiness {
            kind: Some(ProfileKind::Personal),
            org_checked_version: None,
            unvalidated_domains: vec!["ignored".into()],
            ..ready
        };
        assert!(approval_readiness(&personal, NOW).is_ok());
    }

    /// Issue 11, defect 3: failures were forgotten only on success, so after a lock lapsed one
    /// wrong password locked the account again, and an outsider could keep it locked for good.
    #[test]
    fn sign_in_failures_lock_within_a_window_and_are_forgotten_when_the_lock_lapses() {
        let fail = |f, at| after_failed_sign_in(f, at, SIGN_IN_ATTEMPTS);
        // Five failures within the window lock the account for LOCK_SECONDS.
        let mut f = SignInFailures::default();
        for i in 0..SIGN_IN_ATTEMPTS {
            assert!(!f.locked(NOW + i), "locked after {i}");
            f = fail(f, NOW + i);
        }
        assert!(f.locked(NOW + SIGN_IN_ATTEMPTS));
        assert_eq!(f.locked_until, NOW + SIGN_IN_ATTEMPTS - 1 + LOCK_SECONDS);
        // One wrong password per lapse, for a day: never locked at the moment it lapsed.
        let mut at = f.locked_until;
        for _ in 0..96 {
            assert!(!f.locked(at), "locked again at {at}");
            f = fail(f, at);
            assert_eq!((f.count, f.locked_until), (1, 0), "{f:?}");
            at += LOCK_SECONDS;
        }
        // Four failures, then the window passes: the count starts again.
        let mut f = SignInFailures::default();
        for i in 0..SIGN_IN_ATTEMPTS - 1 {
            f = fail(f, NOW + i * 60);
        }
        assert!(!f.locked(NOW + 300));
        let later = fail(f, NOW + LOCK_SECONDS);
        assert_eq!((later.count, later.locked_until), (1, 0));
        // ... but the fifth inside the window locks.
        let locked = fail(f, NOW + LOCK_SECONDS - 1);
        assert!(locked.locked(NOW + LOCK_SECONDS));
        // Brute force stays bounded: at most SIGN_IN_ATTEMPTS tries per LOCK_SECONDS.
        let mut f = SignInFailures::default();
        let mut tries = 0;
        for second in 0..LOCK_SECONDS * 4 {
            if !f.locked(NOW + second) {
                f = fail(f, NOW + second);
                tries += 1;
            }
        }
        assert!(
            tries <= 4 * SIGN_IN_ATTEMPTS + SIGN_IN_ATTEMPTS,
            "{tries} tries in an hour"
        );
    }

    #[test]
    fn renewal_window_and_its_refusals() {
        let day = 86_400;
        let ok = RenewalFacts {
            kind: ProfileKind::Personal,
            revoked_or_held: false,
            not_after: NOW + 30 * day,
            renewed: false,
            email_confirmed_at: Some(NOW - day),
        };
        assert!(renewal_allowed(&ok, NOW, 90).is_ok());
        // The window's edge: exactly `window` days before expiry is inside.
        assert!(renewal_allowed(
            &RenewalFacts {
                not_after: NOW + 90 * day,
                ..ok.clone()
            },
            NOW,
            90
        )
        .is_ok());
        let cases: Vec<(RenewalFacts, u32, &str)> = vec![
            (
                RenewalFacts {
                    kind: ProfileKind::Server,
                    ..ok.clone()
                },
                90,
                "new application",
            ),
            (
                RenewalFacts {
                    revoked_or_held: true,
                    ..ok.clone()
                },
                90,
                "revoked or on hold",
            ),
            (
                RenewalFacts {
                    not_after: NOW - 1,
                    ..ok.clone()
                },
                90,
                "expired",
            ),
            (
                RenewalFacts {
                    not_after: NOW + 90 * day + 1,
                    ..ok.clone()
                },
                90,
                "opens 90 days",
            ),
            (ok.clone(), 29, "opens 29 days"),
            (
                RenewalFacts {
                    renewed: true,
                    ..ok.clone()
                },
                90,
                "renewed already",
            ),
            (
                RenewalFacts {
                    email_confirmed_at: None,
                    ..ok.clone()
                },
                90,
                "confirm your e-mail",
            ),
            (
                RenewalFacts {
                    email_confirmed_at: Some(NOW - 31 * day),
                    ..ok.clone()
                },
                90,
                "confirm your e-mail",
            ),
        ];
        for (facts, window, expected) in cases {
            let e = renewal_allowed(&facts, NOW, window)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{expected}: {e}");
        }
    }

    #[test]
    fn a_minors_certificate_ends_before_the_18th_birthday() {
        let minor = Profile::get("personal-minor").unwrap();
        let now = time::macros::datetime!(2026-12-02 10:00 UTC);
        let cap = minor.days_for(None, now);
        // Far from 18: the profile's default.
        assert_eq!(minor_days(minor, "2020-06-01", now).unwrap(), cap);
        // 18 on 2027-01-01: 30 days left, less the day before the birthday.
        assert_eq!(minor_days(minor, "2009-01-01", now).unwrap(), 29);
        // Born on 29 February: 18 on 1 March in a common year (2030), not on 28 February.
        let before = time::macros::datetime!(2030-01-30 10:00 UTC);
        assert_eq!(minor_days(minor, "2012-02-29", before).unwrap(), 29);
        assert_eq!(minor_days(minor, "2012-02-28", before).unwrap(), 28);
        // Already 18.
        assert!(minor_days(minor, "2008-02-29", now)
            .unwrap_err()
            .to_string()
            .contains("18"));
        // 18 tomorrow, or today: refused.
        for dob in ["2008-12-03", "2008-12-02", "2008-12-01"] {
            assert!(minor_days(minor, dob, now).is_err(), "{dob}");
        }
        assert!(minor_days(minor, "not a date", now).is_err());
    }

    #[test]
    fn retention_is_due_only_for_ended_applications_past_the_period() {
        let day = 86_400;
        let old = NOW - 91 * day;
        let cases = [
            ("rejected", true, old, true),
            ("submitted", true, old, true),
            ("approved", true, old, false),
            ("issued", true, old, false),
            ("rejected", false, old, false),
            ("rejected", true, NOW - 89 * day, false),
            ("submitted", true, NOW - 90 * day, false),
            ("submitted", true, NOW - 90 * day - 1, true),
        ];
        for (state, holds, updated_at, due) in cases {
            assert_eq!(
                retention_due(state, holds, updated_at, NOW, 90),
                due,
                "{state} {holds} {updated_at}"
            );
        }
    }

    #[test]
    fn report_clocks_follow_the_br_with_a_moved_clock() {
        let received = NOW;
        let (prelim, kc) = report_deadlines(true, received);
        assert_eq!((prelim - received, kc - received), (86_400, 86_400));
        let (_, other) = report_deadlines(false, received);
        assert_eq!(other - received, 5 * 86_400);
        let hours = |h: i64| received + h * 3600;
        assert_eq!(clock(prelim, None, hours(1)), Clock::Ok);
        assert_eq!(clock(prelim, None, hours(18)), Clock::Nearing);
        assert_eq!(clock(prelim, None, hours(24)), Clock::Nearing);
        assert_eq!(clock(prelim, None, hours(24) + 1), Clock::Overdue);
        assert_eq!(clock(prelim, Some(hours(2)), hours(30)), Clock::Ok);
        assert_eq!(clock(other, None, hours(4 * 24 + 17)), Clock::Ok);
        assert_eq!(clock(other, None, hours(4 * 24 + 19)), Clock::Nearing);
        assert_eq!(clock(other, None, hours(5 * 24 + 1)), Clock::Overdue);
    }
}
