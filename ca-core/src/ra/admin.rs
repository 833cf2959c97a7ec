//! Staff administration by admins (issue 14): the accounts, new accounts with their TOTP
//! enrolment shown once, disabling and enabling, a new TOTP secret — each allowed by the
//! matrix's `ManageStaff` and audited with the admin's name. Granting the roles that carry
//! power over others or over the records — admin, officer, auditor, data owner — needs a second
//! admin: such an account is made disabled, its grant waiting, until another admin (not the
//! one who asked, not the account itself) approves it.

use serde_json::json;
use zeroize::Zeroizing;

use super::permissions::Action;
use super::session::StaffSession;
use super::staff::{insert_staff, reset_totp, set_staff_disabled, NewStaff, Role};
use super::support::now;
use crate::audit::Event;
use crate::error::{Error, Result};
use crate::row::row;
use crate::store::Store;

/// Whether granting `role` needs a second admin.
pub fn grant_needs_second_admin(role: Role) -> bool {
    matches!(
        role,
        Role::Admin | Role::Officer | Role::Auditor | Role::DataOwner
    )
}

/// One account as the admin page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// User name.
    pub username: String,
    /// Name shown on screens.
    pub display_name: String,
    /// Outlet.
    pub outlet: String,
    /// Role.
    pub role: String,
    /// Disabled (including while a grant waits).
    pub disabled: bool,
    /// The admin who asked for a grant that waits for a second admin.
    pub grant_requested_by: Option<String>,
    /// The role that grant gives.
    pub grant_role: Option<String>,
}

row! {
    struct AccountRow {
        username: String,
        display_name: String,
        outlet: String,
        role: String,
        disabled: i64,
        requested_by: Option<String>,
        grant_role: Option<String>,
    }
}

fn actor(staff: &StaffSession) -> String {
    format!("staff:{}", staff.username)
}

/// Every account, with the grants that wait.
pub async fn accounts(store: &Store, staff: &StaffSession) -> Result<Vec<Account>> {
    staff.authorize(Action::ManageStaff)?;
    let rows = sqlx::query_as::<_, AccountRow>(
        "SELECT s.username, s.display_name, s.outlet, s.role, s.disabled, r.username AS requested_by, g.role AS grant_role \
         FROM staff s LEFT JOIN staff_role_grants g ON g.staff = s.id LEFT JOIN staff r ON r.id = g.requested_by \
         ORDER BY s.username",
    )
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Account {
            username: r.username,
            display_name: r.display_name,
            outlet: r.outlet,
            role: r.role,
            disabled: r.disabled != 0,
            grant_requested_by: r.requested_by,
            grant_role: r.grant_role,
        })
        .collect())
}

/// A new account; returns its id, the TOTP secret to enrol (shown once) and whether its role
/// grant waits for a second admin.
pub async fn add_account(
    store: &Store,
    vault: &crate::pii::Vault,
    staff: &StaffSession,
    new: &NewStaff<'_>,
) -> Result<(String, Zeroizing<Vec<u8>>, bool)> {
    staff.authorize(Action::ManageStaff)?;
    let pending = grant_needs_second_admin(new.role);
    let (id, secret) = insert_staff(
        store,
        vault,
        new,
        &actor(staff),
        pending.then_some(staff.staff.as_str()),
        None,
    )
    .await?;
    Ok((id, secret, pending))
}

/// A second admin approves a waiting role grant: the account is enabled.
pub async fn approve_grant(store: &Store, staff: &StaffSession, username: &str) -> Result<()> {
    staff.authorize(Action::ManageStaff)?;
    let mut tx = store.begin().await?;
    let row = sqlx::query_as::<_, GrantRow>(
        "SELECT s.id, g.role, g.requested_by, g.new_account FROM staff s JOIN staff_role_grants g ON g.staff = s.id \
         WHERE s.username = $1",
    )
    .bind(username)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::Conflict(format!("no role grant waits for {username}")))?;
    if row.requested_by == staff.staff || row.id == staff.staff {
        return Err(Error::Forbidden(
            "a second admin approves this grant: not the one who asked for it, nor its holder"
                .into(),
        ));
    }
    sqlx::query("DELETE FROM staff_role_grants WHERE staff = $1")
        .bind(&row.id)
        .execute(&mut *tx)
        .await?;
    // The role granted; a new account is enabled, an existing one keeps its state (its
    // sessions and tokens end: they carried the old role).
    sqlx::query(
        "UPDATE staff SET role = $2, disabled = CASE WHEN $3 = 1 THEN 0 ELSE disabled END WHERE id = $1",
    )
    .bind(&row.id)
    .bind(&row.role)
    .bind(row.new_account)
    .execute(&mut *tx)
    .await?;
    if row.new_account == 0 {
        end_access(&mut tx, &row.id).await?;
    }
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.staff.role_granted",
                actor: actor(staff),
                subject: Some(row.id.clone()),
                detail: json!({ "username": username, "role": row.role, "requested_by": row.requested_by, "approved_by": staff.staff, "at": now() }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

row! {
    struct GrantRow {
        id: String,
        role: String,
        requested_by: String,
        new_account: i64,
    }
}

/// Ends a member's sessions and revokes their API tokens (their role changed).
async fn end_access(tx: &mut crate::store::Tx, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM staff_sessions WHERE staff = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    super::token::revoke_tokens_in(tx, id).await?;
    Ok(())
}

/// Changes a member's role. To a role that needs a second admin ([`grant_needs_second_admin`])
/// the change waits for one and the member keeps the old role meanwhile; to any other it takes
/// effect at once. Either way the member's sessions and API tokens end when the role changes.
/// Nobody changes their own role. Returns whether the change waits.
pub async fn change_role(
    store: &Store,
    staff: &StaffSession,
    username: &str,
    role: &str,
) -> Result<bool> {
    staff.authorize(Action::ManageStaff)?;
    let role = Role::parse(role)?;
    if username == staff.username {
        return Err(Error::Forbidden(
            "nobody changes their own role: another admin does".into(),
        ));
    }
    let mut tx = store.begin().await?;
    let row = sqlx::query_as::<_, CurrentRole>("SELECT id, role FROM staff WHERE username = $1")
        .bind(username)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound)?;
    if row.role == role.name() {
        return Err(Error::Conflict(format!(
            "{username} is a {} already",
            role.name()
        )));
    }
    if row.role == Role::Admin.name() {
        keeps_two_admins(store, username).await?;
    }
    let waits = grant_needs_second_admin(role);
    // A new request replaces one that waited.
    sqlx::query("DELETE FROM staff_role_grants WHERE staff = $1 AND new_account = 0")
        .bind(&row.id)
        .execute(&mut *tx)
        .await?;
    if waits {
        sqlx::query(
            "INSERT INTO staff_role_grants (staff, role, requested_by, requested_at, new_account) VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(&row.id)
        .bind(role.name())
        .bind(&staff.staff)
        .bind(now())
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query("UPDATE staff SET role = $2 WHERE id = $1")
            .bind(&row.id)
            .bind(role.name())
            .execute(&mut *tx)
            .await?;
        end_access(&mut tx, &row.id).await?;
    }
    store
        .audit(
            &mut tx,
            &Event {
                kind: if waits {
                    "ra.staff.role_change_requested"
                } else {
                    "ra.staff.role_changed"
                },
                actor: actor(staff),
                subject: Some(row.id.clone()),
                detail: json!({ "username": username, "from": row.role, "to": role.name() }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(waits)
}

/// The fewest active admins the service keeps: dual control of privileged grants needs two,
/// and `ecert init --admin` (which needs no admin) makes admins only while fewer are active.
pub const MIN_ACTIVE_ADMINS: i64 = 2;

/// Active admins: enabled, with no grant waiting.
pub async fn active_admins(store: &Store) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM staff s WHERE s.role = 'admin' AND s.disabled = 0 \
         AND NOT EXISTS (SELECT 1 FROM staff_role_grants g WHERE g.staff = s.id)",
    )
    .fetch_one(store.pool())
    .await?)
}

/// Refuses to disable or move away an admin when that would leave fewer than
/// [`MIN_ACTIVE_ADMINS`] active: fewer would stop privileged grants, and would let whoever
/// holds the data directory make an admin with `init --admin` (issue 14, from the attack on
/// staff administration). Add and approve another admin first.
async fn keeps_two_admins(store: &Store, username: &str) -> Result<()> {
    let is_active_admin: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM staff s WHERE s.username = $1 AND s.role = 'admin' AND s.disabled = 0 \
         AND NOT EXISTS (SELECT 1 FROM staff_role_grants g WHERE g.staff = s.id)",
    )
    .bind(username)
    .fetch_one(store.pool())
    .await?;
    if is_active_admin > 0 && active_admins(store).await? - 1 < MIN_ACTIVE_ADMINS {
        return Err(Error::Conflict(format!(
            "{MIN_ACTIVE_ADMINS} active admins must remain: add and approve another admin first"
        )));
    }
    Ok(())
}

row! {
    struct CurrentRole {
        id: String,
        role: String,
    }
}

/// Disables (or enables) an account. An account whose grant waits is enabled only by
/// [`approve_grant`].
pub async fn set_disabled(
    store: &Store,
    staff: &StaffSession,
    username: &str,
    disabled: bool,
) -> Result<()> {
    staff.authorize(Action::ManageStaff)?;
    if disabled {
        keeps_two_admins(store, username).await?;
    }
    if !disabled {
        let waiting: Option<String> = sqlx::query_scalar(
            "SELECT g.role FROM staff s JOIN staff_role_grants g ON g.staff = s.id WHERE s.username = $1",
        )
        .bind(username)
        .fetch_optional(store.pool())
        .await?;
        if waiting.is_some() {
            return Err(Error::Conflict(format!(
                "{username}'s role grant waits for a second admin's approval"
            )));
        }
    }
    set_staff_disabled(store, username, disabled, &actor(staff)).await
}

/// A new TOTP secret for an account (a lost phone), shown once.
pub async fn new_totp(
    store: &Store,
    vault: &crate::pii::Vault,
    staff: &StaffSession,
    username: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    staff.authorize(Action::ManageStaff)?;
    if username == staff.username {
        return Err(Error::Forbidden(
            "another admin gives you a new authenticator".into(),
        ));
    }
    not_both_credentials(store, staff, username, "ra.staff.password_reset").await?;
    reset_totp(store, vault, username, &actor(staff)).await
}

/// How long one admin's reset of one of a member's credentials keeps them from resetting the
/// other.
pub const CREDENTIAL_RESET_SECONDS: i64 = 24 * 3600;

/// Refuses an admin who reset the member's other credential (`other` is its audit kind) within
/// [`CREDENTIAL_RESET_SECONDS`]: with both a temporary password and a new authenticator one
/// admin could sign in as the member — another admin, and so approve their own requests
/// (issue 14, from the attack on staff administration). A second admin resets the second one.
async fn not_both_credentials(
    store: &Store,
    staff: &StaffSession,
    username: &str,
    other: &str,
) -> Result<()> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log a JOIN staff s ON s.id = a.subject \
         WHERE a.kind = $1 AND s.username = $2 AND a.actor = $3 AND a.at > $4",
    )
    .bind(other)
    .bind(username)
    .bind(actor(staff))
    .bind(now() - CREDENTIAL_RESET_SECONDS)
    .fetch_one(store.pool())
    .await?;
    if n > 0 {
        return Err(Error::Forbidden(format!(
            "you reset {username}'s other credential today: another admin resets this one (one admin never holds both)"
        )));
    }
    Ok(())
}

/// An admin resets a member's password to a temporary one: the member must choose a new one
/// at the next sign-in before anything else; their sessions and API tokens end. Not one's own.
pub async fn reset_password(
    store: &Store,
    staff: &StaffSession,
    username: &str,
    temporary: &str,
) -> Result<()> {
    staff.authorize(Action::ManageStaff)?;
    if username == staff.username {
        return Err(Error::Forbidden(
            "change your own password at /staff/password".into(),
        ));
    }
    super::support::check_len("password", temporary, 12, 256)?;
    not_both_credentials(store, staff, username, "ra.staff.totp_reset").await?;
    let hash = super::support::hash_password_async(temporary).await?;
    let mut tx = store.begin().await?;
    let id: String = sqlx::query_scalar("SELECT id FROM staff WHERE username = $1")
        .bind(username)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound)?;
    sqlx::query("UPDATE staff SET password_hash = $2, must_change_password = 1 WHERE id = $1")
        .bind(&id)
        .bind(hash)
        .execute(&mut *tx)
        .await?;
    end_access(&mut tx, &id).await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.staff.password_reset",
                actor: actor(staff),
                subject: Some(id),
                detail: json!({ "username": username }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}
