//! JSON API tokens: made by a signed-in member for themself (`ecert token`), or by `ecert login` for a session; printed once, stored as a
//! SHA-256; a token acts as its member (same outlet, same role) within the scopes chosen when
//! it was made, until it expires, is revoked, or the account is disabled (which revokes it).

use serde_json::json;

use super::session::StaffSession;
use super::staff::{staff_id, Role};
use super::support::{check_len, invalid, now, random_base32, sha256};
use crate::audit::Event;
use crate::error::{Error, Result};
use crate::row::row;
use crate::store::{Store, Tx};

/// One thing an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read the outlet's applications and their certificates.
    Read,
    /// Enter applications (walk-ins) and record counter checks, fees and domain checks.
    Enter,
    /// Approve or reject.
    Decide,
    /// Activate the personal-data keys (the `data_owner` role, with the `pii` token's PIN:
    /// activation "through the API" on each instance, issue 14).
    Activate,
    /// Given only to a token made by signing in with the second factor (`ecert login`, for
    /// [`CLI_SESSION_SECONDS`] at most), never to a long-lived integration token: what needs a
    /// person present — two-officer decisions.
    Session,
}

impl Scope {
    /// The scope an API token needs for `action`; `None` for actions no token may take
    /// (account and key administration are done signed in, with a second factor).
    pub fn needed_for(action: super::permissions::Action) -> Option<Scope> {
        use super::permissions::Action as A;
        match action {
            A::ViewApplications
            | A::ViewProblemReports
            | A::ViewOperations
            | A::ViewAudit
            | A::ViewReports => Some(Scope::Read),
            A::EnterApplication | A::RecordChecks => Some(Scope::Enter),
            A::Decide | A::Revoke | A::AnswerProblemReports | A::RunOperations => {
                Some(Scope::Decide)
            }
            // The token alone opens nothing: the request carries the pii token's PIN too.
            A::ActivatePersonalDataKeys => Some(Scope::Activate),
            // A person, signed in with the second factor, not an integration's token.
            A::TwoOfficerDecisions | A::ManageStaff | A::ManageOutlets | A::ManageOrganisations => {
                Some(Scope::Session)
            }
            // Never with a token: on the page, each reveal seen by the person who asked.
            A::RevealPersonalData => None,
        }
    }

    /// Every scope.
    pub const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Enter,
        Scope::Decide,
        Scope::Activate,
        Scope::Session,
    ];

    /// Its name on the command line and in the database.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Enter => "enter",
            Scope::Decide => "decide",
            Scope::Activate => "activate",
            Scope::Session => "session",
        }
    }
}

/// The scopes of an API token (a browser session has no such limit: `None` in
/// [`StaffSession::scopes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes {
    read: bool,
    enter: bool,
    decide: bool,
    activate: bool,
    session: bool,
}

impl Scopes {
    /// Parses a list like `read,enter` (commas or spaces); at least one, each known.
    pub fn parse(list: &str) -> Result<Scopes> {
        let mut s = Scopes::default();
        for name in list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|n| !n.is_empty())
        {
            match name {
                "read" => s.read = true,
                "enter" => s.enter = true,
                "decide" => s.decide = true,
                "activate" => s.activate = true,
                "session" => {
                    return Err(invalid(
                        "scopes",
                        "the session scope comes only with signing in (ecert login)",
                    ))
                }
                _ => return Err(invalid("scopes", "read, enter, decide and/or activate")),
            }
        }
        if s == Scopes::default() {
            return Err(invalid(
                "scopes",
                "at least one of read, enter, decide, activate",
            ));
        }
        Ok(s)
    }

    /// The scopes as stored (the names [`Scopes::names`] wrote, `session` included); an unknown
    /// name grants nothing.
    fn stored(names: &str) -> Scopes {
        let mut s = Scopes::default();
        for n in names.split_whitespace() {
            match n {
                "read" => s.read = true,
                "enter" => s.enter = true,
                "decide" => s.decide = true,
                "activate" => s.activate = true,
                "session" => s.session = true,
                _ => {}
            }
        }
        s
    }

    /// Whether `scope` is among them.
    pub fn allows(self, scope: Scope) -> bool {
        match scope {
            Scope::Read => self.read,
            Scope::Enter => self.enter,
            Scope::Decide => self.decide,
            Scope::Activate => self.activate,
            Scope::Session => self.session,
        }
    }

    /// The names, space-separated, in a fixed order.
    pub fn names(self) -> String {
        Scope::ALL
            .iter()
            .filter(|s| self.allows(**s))
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl StaffSession {
    /// Refuses a request a token's scopes do not cover ([`Error::Forbidden`]); a browser
    /// session passes.
    pub fn require(&self, scope: Scope) -> Result<()> {
        match self.scopes {
            Some(s) if !s.allows(scope) => Err(Error::Forbidden(format!(
                "this API token lacks the {} scope",
                scope.name()
            ))),
            _ => Ok(()),
        }
    }
}

/// Makes an API token for a staff member (printed once; only its SHA-256 is stored). The token
/// acts as that member — same outlet, same role — within `scopes`, until it expires, is
/// revoked, or the account is disabled.
pub async fn create_api_token(
    store: &Store,
    username: &str,
    label: &str,
    days: u32,
    scopes: Scopes,
    actor: &str,
) -> Result<String> {
    check_len("label", label, 1, 80)?;
    if !(1..=366).contains(&days) {
        return Err(invalid("days", "1 to 366"));
    }
    let staff = sqlx::query_scalar::<_, String>(
        "SELECT id FROM staff WHERE username = $1 AND disabled = 0",
    )
    .bind(username)
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::NotFound)?;
    let token = format!("ecert_{}", random_base32(32));
    let t = now();
    let mut tx = store.begin().await?;
    sqlx::query("INSERT INTO api_tokens (token_hash, staff, label, created_at, expires_at, scopes) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(sha256(&[b"api-token", token.as_bytes()]))
        .bind(&staff)
        .bind(label)
        .bind(t)
        .bind(t + i64::from(days) * 86_400)
        .bind(scopes.names())
        .execute(&mut *tx)
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.api_token.created",
                actor: actor.to_string(),
                subject: Some(staff),
                detail: json!({ "username": username, "label": label, "days": days, "scopes": scopes.names() }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(token)
}

row! {
    /// A token and its account.
    struct TokenRow {
        id: String,
        username: String,
        display_name: String,
        outlet: String,
        role: String,
        expires_at: i64,
        revoked: i64,
        disabled: i64,
        scopes: String,
        created_at: i64,
        last_used: Option<i64>,
        must_change_password: i64,
    }
}

/// The staff member behind an API token ([`Error::NotFound`] or [`Error::Expired`] otherwise),
/// with no idle limit; see [`api_session_idle`].
pub async fn api_session(store: &Store, token: &str) -> Result<StaffSession> {
    api_session_idle(store, token, i64::MAX).await
}

/// [`api_session`], and a command-line session token (scope `session`) unused for more than
/// `idle_seconds` has ended, as an idle browser session does (`[ra] session_idle_minutes`).
/// Its use is recorded at most once a minute.
pub async fn api_session_idle(
    store: &Store,
    token: &str,
    idle_seconds: i64,
) -> Result<StaffSession> {
    let hash = sha256(&[b"api-token", token.as_bytes()]);
    let r = sqlx::query_as::<_, TokenRow>(
        "SELECT st.id, st.username, st.display_name, st.outlet, st.role, t.expires_at, t.revoked, st.disabled, t.scopes, \
         t.created_at, t.last_used, st.must_change_password FROM api_tokens t JOIN staff st ON st.id = t.staff WHERE t.token_hash = $1",
    )
    .bind(hash.clone())
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::NotFound)?;
    let t = now();
    if r.expires_at < t || r.revoked != 0 || r.disabled != 0 {
        return Err(Error::Expired("the API token is no longer valid".into()));
    }
    if Scopes::stored(&r.scopes).session {
        let last = r.last_used.unwrap_or(r.created_at);
        if t - last > idle_seconds {
            return Err(Error::Expired(
                "the session ended after a while unused: sign in again".into(),
            ));
        }
        if t - last >= 60 {
            sqlx::query("UPDATE api_tokens SET last_used = $2 WHERE token_hash = $1")
                .bind(hash)
                .bind(t)
                .execute(store.pool())
                .await?;
        }
    }
    Ok(StaffSession {
        // A password reset revokes the member's tokens; one made in a race with the reset
        // still does nothing until the member has chosen a new password.
        must_change_password: r.must_change_password != 0,
        staff: r.id,
        username: r.username,
        display_name: r.display_name,
        outlet: r.outlet,
        role: Role::parse(&r.role)?,
        csrf: String::new(),
        scopes: Some(Scopes::stored(&r.scopes)),
    })
}

/// Revokes every live API token of staff account `id` inside `tx`; returns how many.
pub(super) async fn revoke_tokens_in(tx: &mut Tx, id: &str) -> Result<u64> {
    Ok(
        sqlx::query("UPDATE api_tokens SET revoked = 1 WHERE staff = $1 AND revoked = 0")
            .bind(id)
            .execute(&mut **tx)
            .await?
            .rows_affected(),
    )
}

/// Revokes every API token of a staff member; returns how many were live.
pub async fn revoke_api_tokens(store: &Store, username: &str, actor: &str) -> Result<u64> {
    let mut tx = store.begin().await?;
    let id = staff_id(&mut tx, username).await?;
    let n = revoke_tokens_in(&mut tx, &id).await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.api_token.revoked",
                actor: actor.to_string(),
                subject: Some(id),
                detail: json!({ "username": username, "tokens": n }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// The longest a command-line session token lasts (`ecert login`); `[ra]
/// session_max_hours` shortens it, as it does a browser session.
pub const CLI_SESSION_SECONDS: i64 = 12 * 3600;

/// A command-line session (`POST /api/v1/session`, `ecert login`).
#[derive(Debug)]
pub struct CliSession {
    /// The bearer token (printed never; the CLI stores it 0600).
    pub token: String,
    /// When it expires (Unix seconds).
    pub expires_at: i64,
    /// The member's role.
    pub role: Role,
}

/// Signs a member in for the command line: the same password, TOTP code, lockouts and audit
/// as the sign-in page ([`super::session::sign_in_from`]), and the result is an API token for
/// [`CLI_SESSION_SECONDS`] with every scope — what the member may do is still the permission
/// matrix's answer for their role. A member whose password was reset changes it on the page
/// first. The browser session the sign-in made is dropped unused.
pub async fn cli_sign_in(
    auth: &crate::authority::Authority,
    username: &str,
    password: &str,
    code: &str,
    source: &str,
) -> Result<CliSession> {
    let store = auth.store();
    let signed = super::session::sign_in_from(auth, username, password, code, source).await?;
    sqlx::query("DELETE FROM staff_sessions WHERE token_hash = $1")
        .bind(sha256(&[b"session", signed.token.as_bytes()]))
        .execute(store.pool())
        .await?;
    if signed.session.must_change_password {
        return Err(Error::Forbidden(
            "your password was reset: choose a new one at /staff/password first".into(),
        ));
    }
    let token = format!("ecert_{}", random_base32(32));
    let t = now();
    let seconds = CLI_SESSION_SECONDS.min(i64::from(auth.config().ra.session_max_hours) * 3600);
    let expires_at = t + seconds;
    let scopes = Scopes {
        read: true,
        enter: true,
        decide: true,
        activate: true,
        session: true,
    };
    let mut tx = store.begin().await?;
    sqlx::query("INSERT INTO api_tokens (token_hash, staff, label, created_at, expires_at, scopes, last_used) VALUES ($1, $2, $3, $4, $5, $6, $4)")
        .bind(sha256(&[b"api-token", token.as_bytes()]))
        .bind(&signed.session.staff)
        .bind("command line")
        .bind(t)
        .bind(expires_at)
        .bind(scopes.names())
        .execute(&mut *tx)
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.api_token.created",
                actor: format!("staff:{username}"),
                subject: Some(signed.session.staff.clone()),
                detail: json!({ "username": username, "label": "command line", "seconds": seconds, "scopes": scopes.names() }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(CliSession {
        token,
        expires_at,
        role: signed.session.role,
    })
}

/// Ends the command-line session of `token` (`ecert logout`): the token is revoked.
pub async fn cli_sign_out(store: &Store, session: &StaffSession, token: &str) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE api_tokens SET revoked = 1 WHERE token_hash = $1 AND staff = $2")
        .bind(sha256(&[b"api-token", token.as_bytes()]))
        .bind(&session.staff)
        .execute(&mut *tx)
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.staff.signout",
                actor: format!("staff:{}", session.username),
                subject: Some(session.staff.clone()),
                detail: json!({ "via": "api" }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}
