//! Staff sign-in (password and TOTP), browser sessions and signing out. Every failure gives
//! the same answer and spends the time of a password check; repeated failures within a window
//! lock the account, and a lapsed lock is forgotten ([`after_failed_sign_in`]).

use serde_json::json;
use zeroize::Zeroizing;

use super::rules::{after_failed_sign_in, SignInFailures};
use super::staff::{plausible_username, Role};
use super::support::{now, password_matches_async, random_base32, sha256};
use crate::audit::Event;
use crate::authority::Authority;
use crate::error::{Error, Result};
use crate::pii::Field;
use crate::row::row;
use crate::store::Store;

pub use super::rules::{ACCOUNT_SIGN_IN_ATTEMPTS, LOCK_SECONDS, SIGN_IN_ATTEMPTS};

/// A signed-in member of staff.
#[derive(Debug, Clone)]
pub struct StaffSession {
    /// Staff id.
    pub staff: String,
    /// User name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Outlet.
    pub outlet: String,
    /// Role.
    pub role: Role,
    /// The session's CSRF token (a hidden field of every form).
    pub csrf: String,
    /// An API token's scopes; `None` for a browser session (what the role allows).
    pub scopes: Option<super::token::Scopes>,
    /// The password was reset by an admin: nothing is allowed until the member chooses a new
    /// one ([`change_password`]).
    pub must_change_password: bool,
}

/// A new session: the cookie token (shown once) and who it is.
#[derive(Debug)]
pub struct SignedIn {
    /// Random session token for the cookie; only its SHA-256 is stored.
    pub token: String,
    /// The session.
    pub session: StaffSession,
}

row! {
    /// What sign-in reads of an account.
    struct Account {
        id: String,
        password_hash: String,
        totp_sealed: Vec<u8>,
        totp_last_step: i64,
        disabled: i64,
        display_name: String,
        outlet: String,
        role: String,
        must_change_password: i64,
    }
}

/// [`sign_in_from`] a local caller (the tests, tools): one source of its own.
pub async fn sign_in(
    auth: &Authority,
    username: &str,
    password: &str,
    code: &str,
) -> Result<SignedIn> {
    sign_in_from(auth, username, password, code, "local").await
}

/// Signs a member of staff in with password and TOTP code from client address `source` (the
/// rate-limit bucket the page saw). Every failure gives the same answer;
/// [`SIGN_IN_ATTEMPTS`] failures from one source lock that source out of the account, and
/// [`ACCOUNT_SIGN_IN_ATTEMPTS`] from all sources lock the account, each for [`LOCK_SECONDS`]
/// — so an outsider locks themself out, not the clerk at the counter. A new session token is
/// made at every sign-in (no fixation).
pub async fn sign_in_from(
    auth: &Authority,
    username: &str,
    password: &str,
    code: &str,
    source: &str,
) -> Result<SignedIn> {
    let store = auth.store();
    let t = now();
    let row = sqlx::query_as::<_, Account>(
        "SELECT id, password_hash, totp_sealed, totp_last_step, disabled, display_name, outlet, role, must_change_password \
         FROM staff WHERE username = $1",
    )
    .bind(username)
    .fetch_optional(store.pool())
    .await?;
    // Only a plausible user name goes into the audit trail (a password typed into the wrong
    // field must not).
    // Nor a typed name no account has: a password typed into the user-name field often looks
    // like a user name, and auditors read these records.
    let shown_name = if row.is_some() && plausible_username(username) {
        username.to_string()
    } else {
        "(unknown user)".to_string()
    };
    let fail = |kind: &'static str, staff: Option<String>| async move {
        let _ = store
            .audit_now(&Event {
                kind: "ra.staff.signin_failed",
                actor: format!("staff-login:{shown_name}"),
                subject: staff,
                detail: json!({ "why": kind }),
            })
            .await;
        Err(Error::SignInFailed)
    };
    // Every refusal spends the time of a password check, so absent, disabled and locked
    // accounts do not answer faster than a wrong password.
    let dummy = || async {
        let _ = password_matches_async(password, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await;
    };
    let Some(account) = row else {
        dummy().await;
        return fail("unknown user", None).await;
    };
    let id = account.id.clone();
    if account.disabled != 0 {
        dummy().await;
        return fail("disabled", Some(id)).await;
    }
    // The attempt is counted as a failure first, atomically, before anything is checked: a
    // burst of guesses cannot pass the lock by all reading "unlocked" before any fails, and a
    // locked account spends no real check. A success clears the count it made, unless another
    // attempt counted since (then it is refused too).
    let Some(counted) = count_attempt(store, &id, source, t).await? else {
        dummy().await;
        return fail("locked", Some(id)).await;
    };
    if !password_matches_async(password, &account.password_hash).await? {
        return fail("password", Some(id)).await;
    }
    let vault = auth.staff_keys();
    let secret_b32 = vault.open_field(Field::TotpSecret, &id, &account.totp_sealed)?;
    let secret = Zeroizing::new(
        data_encoding::BASE32_NOPAD
            .decode(secret_b32.as_bytes())
            .map_err(|_| Error::Store("stored TOTP secret is not base32".into()))?,
    );
    let Some(step) = crate::totp::verify(&secret, code, t, account.totp_last_step) else {
        return fail("code", Some(id)).await;
    };
    let token = random_base32(32);
    let csrf = random_base32(20);
    let mut tx = store.begin().await?;
    // Compare-and-set on the step (the same code cannot sign in twice, even concurrently), on
    // the failures this attempt counted (no attempt counted since), and on the account as
    // read (not disabled, no new TOTP secret since).
    let res = sqlx::query(
        "UPDATE staff SET totp_last_step = $2, failed_logins = 0, failed_since = 0, locked_until = 0 \
         WHERE id = $1 AND totp_last_step < $2 AND failed_logins = $3 AND failed_since = $4 AND locked_until = $5 \
         AND disabled = 0 AND totp_sealed = $6",
    )
    .bind(&id)
    .bind(step)
    .bind(counted.count)
    .bind(counted.since)
    .bind(counted.locked_until)
    .bind(&account.totp_sealed)
    .execute(&mut *tx)
    .await?;
    if res.rows_affected() != 1 {
        drop(tx);
        return fail("code reused or contended", Some(id)).await;
    }
    sqlx::query("DELETE FROM signin_failures WHERE staff = $1 AND source = $2")
        .bind(&id)
        .bind(source)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO staff_sessions (token_hash, staff, csrf, created_at, last_seen) VALUES ($1, $2, $3, $4, $4)")
        .bind(sha256(&[b"session", token.as_bytes()]))
        .bind(&id)
        .bind(&csrf)
        .bind(t)
        .execute(&mut *tx)
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.staff.signin",
                actor: format!("staff:{username}"),
                subject: Some(id.clone()),
                detail: json!({}),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(SignedIn {
        token,
        session: StaffSession {
            staff: id,
            username: username.to_string(),
            display_name: account.display_name,
            outlet: account.outlet,
            role: Role::parse(&account.role)?,
            csrf,
            scopes: None,
            must_change_password: account.must_change_password != 0,
        },
    })
}

row! {
    struct FailureRow {
        failed_logins: i64,
        failed_since: i64,
        locked_until: i64,
    }
}

/// Counts a sign-in attempt of account `id` from `source` at `t` as a failure, for the source
/// and for the account ([`after_failed_sign_in`]); returns the account's failures it wrote
/// (what a success must still find), or `None` when the source or the account is locked (a
/// failure then is not counted: nobody extends a lock by failing on purpose).
async fn count_attempt(
    store: &Store,
    id: &str,
    source: &str,
    t: i64,
) -> Result<Option<SignInFailures>> {
    sqlx::query("INSERT INTO signin_failures (staff, source) VALUES ($1, $2) ON CONFLICT (staff, source) DO NOTHING")
        .bind(id)
        .bind(source)
        .execute(store.pool())
        .await?;
    let by_source = count_in(
        store,
        "SELECT failed_logins, failed_since, locked_until FROM signin_failures WHERE staff = $1 AND source = $2",
        "UPDATE signin_failures SET failed_logins = $3, failed_since = $4, locked_until = $5 \
         WHERE staff = $1 AND source = $2 AND failed_logins = $6 AND failed_since = $7 AND locked_until = $8",
        id,
        source,
        t,
        SIGN_IN_ATTEMPTS,
    )
    .await?;
    if by_source.is_none() {
        return Ok(None);
    }
    count_in(
        store,
        "SELECT failed_logins, failed_since, locked_until FROM staff WHERE id = $1 AND $2 = $2",
        "UPDATE staff SET failed_logins = $3, failed_since = $4, locked_until = $5 \
         WHERE id = $1 AND $2 = $2 AND failed_logins = $6 AND failed_since = $7 AND locked_until = $8",
        id,
        source,
        t,
        ACCOUNT_SIGN_IN_ATTEMPTS,
    )
    .await
}

/// One compare-and-set count of a failure in the row `read` selects (`$1`, `$2`), again if
/// another attempt got in between, so parallel attempts each count.
#[allow(clippy::too_many_arguments)]
async fn count_in(
    store: &Store,
    read: &'static str,
    write: &'static str,
    id: &str,
    source: &str,
    t: i64,
    limit: i64,
) -> Result<Option<SignInFailures>> {
    for _ in 0..16 {
        let Some(r) = sqlx::query_as::<_, FailureRow>(read)
            .bind(id)
            .bind(source)
            .fetch_optional(store.pool())
            .await?
        else {
            return Ok(None);
        };
        let read = SignInFailures {
            count: r.failed_logins,
            since: r.failed_since,
            locked_until: r.locked_until,
        };
        if read.locked(t) {
            return Ok(None);
        }
        let next = after_failed_sign_in(read, t, limit);
        let done = sqlx::query(write)
            .bind(id)
            .bind(source)
            .bind(next.count)
            .bind(next.since)
            .bind(next.locked_until)
            .bind(read.count)
            .bind(read.since)
            .bind(read.locked_until)
            .execute(store.pool())
            .await?
            .rows_affected();
        if done == 1 {
            return Ok(Some(next));
        }
    }
    Err(Error::Store(
        "the sign-in attempt could not be counted".into(),
    ))
}

row! {
    /// A session and its account, as a cookie token finds them.
    struct SessionRow {
        staff: String,
        csrf: String,
        created_at: i64,
        last_seen: i64,
        username: String,
        display_name: String,
        outlet: String,
        role: String,
        disabled: i64,
        must_change_password: i64,
    }
}

/// The session of a cookie token; expired (idle or too old) sessions are ended.
pub async fn session(
    store: &Store,
    ra: &crate::config::RaConfig,
    token: &str,
) -> Result<StaffSession> {
    let hash = sha256(&[b"session", token.as_bytes()]);
    let r = sqlx::query_as::<_, SessionRow>(
        "SELECT s.staff, s.csrf, s.created_at, s.last_seen, st.username, st.display_name, st.outlet, st.role, st.disabled, st.must_change_password \
         FROM staff_sessions s JOIN staff st ON st.id = s.staff WHERE s.token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(store.pool())
    .await?
    .ok_or(Error::NotFound)?;
    let t = now();
    if r.disabled != 0
        || t - r.last_seen > i64::from(ra.session_idle_minutes) * 60
        || t - r.created_at > i64::from(ra.session_max_hours) * 3600
    {
        sqlx::query("DELETE FROM staff_sessions WHERE token_hash = $1")
            .bind(&hash)
            .execute(store.pool())
            .await?;
        return Err(Error::Expired(
            "the session has ended: sign in again".into(),
        ));
    }
    sqlx::query("UPDATE staff_sessions SET last_seen = $2 WHERE token_hash = $1")
        .bind(&hash)
        .bind(t)
        .execute(store.pool())
        .await?;
    Ok(StaffSession {
        staff: r.staff,
        csrf: r.csrf,
        username: r.username,
        display_name: r.display_name,
        outlet: r.outlet,
        role: Role::parse(&r.role)?,
        scopes: None,
        must_change_password: r.must_change_password != 0,
    })
}

/// Ends a session.
pub async fn sign_out(store: &Store, token: &str) -> Result<()> {
    let hash = sha256(&[b"session", token.as_bytes()]);
    let mut tx = store.begin().await?;
    let staff: Option<String> =
        sqlx::query_scalar("SELECT staff FROM staff_sessions WHERE token_hash = $1")
            .bind(hash.clone())
            .fetch_optional(&mut *tx)
            .await?;
    let Some(staff) = staff else {
        // No such session (signed out already, or expired): nothing to record.
        return Ok(());
    };
    sqlx::query("DELETE FROM staff_sessions WHERE token_hash = $1")
        .bind(hash)
        .execute(&mut *tx)
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.staff.signout",
                actor: format!("staff-id:{staff}"),
                subject: Some(staff),
                detail: json!({}),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A member changes their own password: the current one first, then a new one (12 characters at
/// least, not the current one). Ends a reset's hold on the account; audited.
pub async fn change_password(
    store: &Store,
    staff: &StaffSession,
    current: &str,
    new: &str,
) -> Result<()> {
    if staff.scopes.is_some() {
        return Err(Error::Forbidden(
            "a password is changed signed in, not with an API token".into(),
        ));
    }
    super::support::check_len("new_password", new, 12, 256)?;
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM staff WHERE id = $1")
        .bind(&staff.staff)
        .fetch_one(store.pool())
        .await?;
    if !password_matches_async(current, &hash).await? {
        return Err(Error::Invalid {
            field: "current_password",
            reason: "this is not your current password".into(),
        });
    }
    if new == current {
        return Err(Error::Invalid {
            field: "new_password",
            reason: "choose a password other than the current one".into(),
        });
    }
    let new_hash = super::support::hash_password_async(new).await?;
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE staff SET password_hash = $2, must_change_password = 0 WHERE id = $1")
        .bind(&staff.staff)
        .bind(new_hash)
        .execute(&mut *tx)
        .await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.staff.password_changed",
                actor: format!("staff:{}", staff.username),
                subject: Some(staff.staff.clone()),
                detail: json!({}),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}
