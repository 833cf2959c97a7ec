//! Who may do what: one permission matrix — role × action → reach — that the pages, the JSON
//! API and the command line all go through (issue 14; DESIGN.md "Custody and roles";
//! `docs/ROLES.md` shows it as a table and a test checks that table against [`MATRIX`]).
//!
//! Every capability that acts for a member of staff asks [`StaffSession::authorize`] first,
//! naming its [`Action`]. A role without the action is refused ([`Error::Forbidden`], 403);
//! with it, [`Reach`] says whether the member's own outlet's objects are in reach or all of
//! them — an object out of reach is [`Error::NotFound`] (404), the answer for an object that
//! does not exist. Rules that depend on the object as well as the role (the person who entered
//! or checked an application never approves it; dual control needs a senior approver) live in
//! [`super::rules`] and apply on top.

use super::session::StaffSession;
use super::staff::Role;
use crate::error::{Error, Result};

/// Something a member of staff does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// See applications (personal fields masked) and their certificates.
    ViewApplications,
    /// Enter an application at the counter (a walk-in) or through the API.
    EnterApplication,
    /// Record counter checks: identity, organisation documents, fee, domain checks, contact
    /// corrections.
    RecordChecks,
    /// Approve or reject an application.
    Decide,
    /// Reveal a personal field in clear (each reveal audited).
    RevealPersonalData,
    /// Revoke, suspend or release a certificate at the counter.
    Revoke,
    /// See Certificate Problem Reports.
    ViewProblemReports,
    /// Supervisors' reports: applications by status, fees, issuances and revocations — counts,
    /// no personal data ([`super::reports`]).
    ViewReports,
    /// Answer Certificate Problem Reports: preliminary report and revocation decision.
    AnswerProblemReports,
    /// Add, disable and reset staff accounts; make and revoke their API tokens.
    ManageStaff,
    /// Add, rename and close outlets.
    ManageOutlets,
    /// See the service's operation: health, publication, queues, counts (no personal data).
    ViewOperations,
    /// Trigger the service's own tasks: publish the CRLs now, sign the due OCSP responses now.
    RunOperations,
    /// Read, export and verify the audit trail (no personal data).
    ViewAudit,
    /// Activate the personal-data keys.
    ActivatePersonalDataKeys,
    /// Propose or confirm a decision two officers take together: a mass revocation, blocking
    /// a key, revoking an issuing CA, approving a batch ([`super::officer`]).
    TwoOfficerDecisions,
    /// Register an organisation for bulk enrolment, validate its mail domains, give it batch
    /// tokens and follow its batches ([`super::bulk`]).
    ManageOrganisations,
}

impl Action {
    /// Every action, in the order of the matrix's rows.
    pub const ALL: [Action; 17] = [
        Action::ViewApplications,
        Action::EnterApplication,
        Action::RecordChecks,
        Action::Decide,
        Action::RevealPersonalData,
        Action::Revoke,
        Action::ViewProblemReports,
        Action::AnswerProblemReports,
        Action::ViewReports,
        Action::ManageStaff,
        Action::ManageOutlets,
        Action::ViewOperations,
        Action::RunOperations,
        Action::ViewAudit,
        Action::ActivatePersonalDataKeys,
        Action::TwoOfficerDecisions,
        Action::ManageOrganisations,
    ];

    /// How `docs/ROLES.md` and refusals name it.
    pub fn describe(self) -> &'static str {
        match self {
            Action::ViewApplications => "view applications (masked) and their certificates",
            Action::EnterApplication => "enter an application (walk-in, API)",
            Action::RecordChecks => "record identity, organisation, fee and domain checks",
            Action::Decide => "approve or reject an application",
            Action::RevealPersonalData => "reveal a personal field (audited)",
            Action::Revoke => "revoke, suspend or release a certificate",
            Action::ViewProblemReports => "view certificate problem reports",
            Action::ViewReports => "read the reports (counts and fees, no personal data)",
            Action::AnswerProblemReports => "answer certificate problem reports",
            Action::ManageStaff => "manage staff accounts and API tokens",
            Action::ManageOutlets => "manage outlets",
            Action::ViewOperations => "view operations (health, publication, queues)",
            Action::RunOperations => "publish CRLs and sign due OCSP responses now",
            Action::ViewAudit => "read, export and verify the audit trail",
            Action::ActivatePersonalDataKeys => "activate the personal-data keys",
            Action::TwoOfficerDecisions => {
                "propose or confirm a mass revocation, a key block, an issuing CA's revocation or a batch's approval (two officers)"
            }
            Action::ManageOrganisations => {
                "register organisations for bulk enrolment, validate their mail domains, give and revoke batch tokens, follow batches"
            }
        }
    }
}

/// Whose objects an allowed action reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Those of the member's own outlet.
    OwnOutlet,
    /// Every outlet's (CA-level roles), or the action concerns no outlet.
    All,
}

use Action as A;
use Reach::{All, OwnOutlet as Own};

/// The matrix: for each role, the actions it may take and their reach; any action not listed
/// is refused. One role per person; nobody holds two of these rows.
///
/// - Counter staff (clerk, supervisor) work on their outlet's applications; a supervisor's
///   approval is the senior one dual control needs ([`super::rules::is_senior`]).
/// - An officer takes CA-level decisions on every outlet's applications and certificates and
///   answers problem reports, but enters nothing and reveals no personal field.
/// - Supervisors read their outlet's reports, officers and admins every outlet's
///   ([`Action::ViewReports`]: counts, never personal data).
/// - An admin manages staff and outlet accounts (and reads the reports); an operator sees the service's operation,
///   an auditor the audit trail, and a data owner activates the personal-data keys and otherwise
///   sees what an auditor sees: none of them sees an application.
pub const MATRIX: &[(Role, &[(Action, Reach)])] = &[
    (
        Role::Clerk,
        &[
            (A::ViewApplications, Own),
            (A::EnterApplication, Own),
            (A::RecordChecks, Own),
            (A::Decide, Own),
            (A::RevealPersonalData, Own),
            (A::Revoke, Own),
        ],
    ),
    (
        Role::Supervisor,
        &[
            (A::ViewApplications, Own),
            (A::EnterApplication, Own),
            (A::RecordChecks, Own),
            (A::Decide, Own),
            (A::RevealPersonalData, Own),
            (A::Revoke, Own),
            (A::ViewReports, Own),
        ],
    ),
    (
        Role::Officer,
        &[
            (A::ViewApplications, All),
            (A::Decide, All),
            (A::Revoke, All),
            (A::ViewProblemReports, All),
            (A::AnswerProblemReports, All),
            (A::TwoOfficerDecisions, All),
            (A::ManageOrganisations, All),
            (A::ViewReports, All),
        ],
    ),
    (
        Role::Admin,
        &[
            (A::ManageStaff, All),
            (A::ManageOutlets, All),
            (A::ViewReports, All),
        ],
    ),
    (
        Role::Operator,
        &[(A::ViewOperations, All), (A::RunOperations, All)],
    ),
    (Role::Auditor, &[(A::ViewAudit, All)]),
    (
        Role::DataOwner,
        &[(A::ActivatePersonalDataKeys, All), (A::ViewAudit, All)],
    ),
];

/// What the matrix says for `role` and `action`: its reach, or `None` (refused).
pub fn permits(role: Role, action: Action) -> Option<Reach> {
    MATRIX
        .iter()
        .find(|(r, _)| *r == role)
        .and_then(|(_, actions)| actions.iter().find(|(a, _)| *a == action))
        .map(|(_, reach)| *reach)
}

/// The matrix as the Markdown table `docs/ROLES.md` carries (a test compares them).
pub fn markdown_table() -> String {
    let mut out = String::from("| action |");
    for role in Role::ALL {
        out.push_str(&format!(" {} |", role.name()));
    }
    out.push_str("\n|---|");
    for _ in Role::ALL {
        out.push_str("---|");
    }
    out.push('\n');
    for action in Action::ALL {
        out.push_str(&format!("| {} |", action.describe()));
        for role in Role::ALL {
            out.push_str(match permits(role, action) {
                Some(Reach::OwnOutlet) => " own outlet |",
                Some(Reach::All) => " yes |",
                None => " — |",
            });
        }
        out.push('\n');
    }
    out
}

impl StaffSession {
    /// Refuses an action the member's role may not take ([`Error::Forbidden`]) or an API token's
    /// scopes do not cover; returns the reach of an allowed one.
    pub fn authorize(&self, action: Action) -> Result<Reach> {
        if self.must_change_password {
            return Err(Error::Forbidden(
                "your password was reset: choose a new one (/staff/password) first".into(),
            ));
        }
        let reach = permits(self.role, action).ok_or_else(|| {
            Error::Forbidden(format!(
                "the {} role may not {}",
                self.role.name(),
                action.describe()
            ))
        })?;
        if self.scopes.is_some() {
            match super::token::Scope::needed_for(action) {
                Some(scope) => self.require(scope)?,
                None => {
                    return Err(Error::Forbidden(format!(
                        "an API token may not {}: sign in",
                        action.describe()
                    )))
                }
            }
        }
        Ok(reach)
    }

    /// The outlet an allowed action is limited to: `Some(own outlet)` or `None` (all).
    pub fn outlet_limit(&self, action: Action) -> Result<Option<&str>> {
        Ok(match self.authorize(action)? {
            Reach::OwnOutlet => Some(self.outlet.as_str()),
            Reach::All => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_has_one_row_and_the_rules_hold() {
        for role in Role::ALL {
            assert_eq!(
                MATRIX.iter().filter(|(r, _)| *r == role).count(),
                1,
                "{role:?}"
            );
        }
        // Nobody outside the counter and the officers sees an application; nobody but the
        // counter reveals a personal field; nobody who decides manages accounts.
        for role in Role::ALL {
            let sees = permits(role, Action::ViewApplications).is_some();
            assert_eq!(
                sees,
                matches!(role, Role::Clerk | Role::Supervisor | Role::Officer),
                "{role:?}"
            );
            if permits(role, Action::RevealPersonalData).is_some() {
                assert!(matches!(role, Role::Clerk | Role::Supervisor), "{role:?}");
            }
            if permits(role, Action::Decide).is_some() {
                assert!(permits(role, Action::ManageStaff).is_none(), "{role:?}");
            }
        }
        for role in [Role::Operator, Role::Auditor, Role::DataOwner, Role::Admin] {
            for a in [
                Action::ViewApplications,
                Action::RevealPersonalData,
                Action::ViewProblemReports,
            ] {
                assert_eq!(permits(role, a), None, "{role:?} {a:?}");
            }
        }
    }

    #[test]
    fn the_roles_document_shows_the_matrix() {
        let doc = include_str!("../../../docs/ROLES.md");
        let table = markdown_table();
        assert!(
            doc.contains(&table),
            "docs/ROLES.md does not carry the matrix of ca_core::ra::permissions; replace its table with:\n{table}"
        );
    }
}
