//! Staff accounts: roles, creation, listing, disabling and a new TOTP secret (the
//! administration of `/staff/admin` and `ecert admin` drives). Signing in is [`super::session`]; API tokens are
//! [`super::token`].

use serde_json::json;
use zeroize::Zeroizing;

use super::support::{check_len, hash_password_async, invalid, now};
use crate::audit::Event;
use crate::error::{Error, Result};
use crate::pii::Field;
use crate::row::row;
use crate::store::{Store, Tx};

/// A staff role (DESIGN.md "Custody and roles"); what each may do is
/// [`super::permissions::MATRIX`]. One role per person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Counter clerk (one outlet): identity check, fee, approval, rejection.
    Clerk,
    /// Outlet supervisor: also the senior approval dual control needs.
    Supervisor,
    /// CA officer: CA-level decisions on every outlet's applications and certificates.
    Officer,
    /// Staff and outlet accounts, nothing else.
    Admin,
    /// Runs the service (a contractor): health and publication, no personal data.
    Operator,
    /// Reads and verifies the audit trail, no personal data.
    Auditor,
    /// Activates the personal-data keys; otherwise sees what an auditor sees.
    DataOwner,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 7] = [
        Role::Clerk,
        Role::Supervisor,
        Role::Officer,
        Role::Admin,
        Role::Operator,
        Role::Auditor,
        Role::DataOwner,
    ];

    /// Its name in the database and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Clerk => "clerk",
            Role::Supervisor => "supervisor",
            Role::Officer => "officer",
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::DataOwner => "data_owner",
        }
    }

    /// Parses [`Role::name`].
    pub fn parse(s: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                invalid(
                    "role",
                    "clerk, supervisor, officer, admin, operator, auditor or data_owner",
                )
            })
    }
}

/// A staff account to make.
#[derive(Debug, Clone, Copy)]
pub struct NewStaff<'a> {
    /// Sign-in name.
    pub username: &'a str,
    /// Name shown on screens.
    pub display_name: &'a str,
    /// Outlet id.
    pub outlet: &'a str,
    /// Role.
    pub role: Role,
    /// Password (argon2id-hashed; at least 12 characters).
    pub password: &'a str,
}

/// Whether a typed user name has the form of one (3 to 40 of letters, digits and `._-@`).
pub(super) fn plausible_username(username: &str) -> bool {
    (3..=40).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

/// A new staff account: returns its id and the TOTP secret to enrol in an authenticator (shown
/// once).
pub async fn create_staff(
    store: &Store,
    vault: &crate::pii::Vault,
    new: &NewStaff<'_>,
    actor: &str,
) -> Result<(String, Zeroizing<Vec<u8>>)> {
    insert_staff(store, vault, new, actor, None, None).await
}

/// [`create_staff`] of an admin while fewer than `limit` admins are active, counted in the
/// transaction that adds the account (serialised: SQLite's writer lock, PostgreSQL's advisory
/// lock), so two `ecert init --admin` at once cannot make a third.
pub async fn create_bootstrap_admin(
    store: &Store,
    vault: &crate::pii::Vault,
    new: &NewStaff<'_>,
    actor: &str,
    limit: i64,
) -> Result<(String, Zeroizing<Vec<u8>>)> {
    insert_staff(store, vault, new, actor, None, Some(limit)).await
}

/// [`create_staff`]; with `pending_grant_by` (the requesting admin's staff id) the account is
/// made disabled, its role grant waiting for a second admin ([`super::admin`]), in the same
/// transaction.
pub(super) async fn insert_staff(
    store: &Store,
    vault: &crate::pii::Vault,
    new: &NewStaff<'_>,
    actor: &str,
    pending_grant_by: Option<&str>,
    admins_below: Option<i64>,
) -> Result<(String, Zeroizing<Vec<u8>>)> {
    let NewStaff {
        username,
        display_name,
        outlet,
        role,
        password,
    } = *new;
    check_len("username", username, 3, 40)?;
    if !username
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
    {
        return Err(invalid("username", "letters, digits and . _ - @ only"));
    }
    check_len("display_name", display_name, 1, 80)?;
    check_len("password", password, 12, 256)?;
    let id = uuid::Uuid::new_v4().to_string();
    let secret = Zeroizing::new(crate::totp::new_secret().to_vec());
    let sealed = vault.seal(
        Field::TotpSecret,
        &id,
        &data_encoding::BASE32_NOPAD.encode(&secret),
    )?;
    let password_hash = hash_password_async(password).await?;
    let mut tx = store.begin().await?;
    if let Some(limit) = admins_below {
        if store.engine() == crate::store::Engine::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7365064)")
                .execute(&mut *tx)
                .await?;
        }
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM staff s WHERE s.role = 'admin' AND s.disabled = 0 \
             AND NOT EXISTS (SELECT 1 FROM staff_role_grants g WHERE g.staff = s.id)",
        )
        .fetch_one(&mut *tx)
        .await?;
        if active >= limit {
            return Err(Error::Conflict(format!(
                "{limit} active admin accounts exist already: further accounts are made by admins (/staff/admin, ecert admin staff add)"
            )));
        }
    }
    if !super::outlet::exists(&mut *tx, outlet).await? {
        return Err(invalid("outlet", "no such outlet"));
    }
    let taken = sqlx::query("SELECT 1 FROM staff WHERE username = $1")
        .bind(username)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    if taken {
        return Err(Error::Conflict(format!(
            "the user name {username} is taken"
        )));
    }
    sqlx::query(
        "INSERT INTO staff (id, username, display_name, outlet, role, password_hash, totp_sealed, created_at, disabled) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(username)
    .bind(display_name)
    .bind(outlet)
    .bind(role.name())
    .bind(password_hash)
    .bind(sealed)
    .bind(now())
    .bind(i64::from(pending_grant_by.is_some()))
    .execute(&mut *tx)
    .await?;
    if let Some(by) = pending_grant_by {
        sqlx::query(
            "INSERT INTO staff_role_grants (staff, role, requested_by, requested_at, new_account) VALUES ($1, $2, $3, $4, 1)",
        )
        .bind(&id)
        .bind(role.name())
        .bind(by)
        .bind(now())
        .execute(&mut *tx)
        .await?;
    }
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.staff.created",
                actor: actor.to_string(),
                subject: Some(id.clone()),
                detail: json!({ "username": username, "outlet": outlet, "role": role.name(), "awaiting_second_admin": pending_grant_by.is_some() }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok((id, secret))
}

/// One staff account as listed.
#[derive(Debug, Clone)]
pub struct StaffRow {
    /// User name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Outlet.
    pub outlet: String,
    /// Role.
    pub role: String,
    /// Whether the account is disabled.
    pub disabled: bool,
}

row! {
    struct StaffListRow {
        username: String,
        display_name: String,
        outlet: String,
        role: String,
        disabled: i64,
    }
}

/// Every staff account.
pub async fn list_staff(store: &Store) -> Result<Vec<StaffRow>> {
    let rows = sqlx::query_as::<_, StaffListRow>(
        "SELECT username, display_name, outlet, role, disabled FROM staff ORDER BY username",
    )
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| StaffRow {
            username: r.username,
            display_name: r.display_name,
            outlet: r.outlet,
            role: r.role,
            disabled: r.disabled != 0,
        })
        .collect())
}

/// The id of the account `username` ([`Error::NotFound`] if there is none).
pub(super) async fn staff_id(tx: &mut Tx, username: &str) -> Result<String> {
    sqlx::query_scalar::<_, String>("SELECT id FROM staff WHERE username = $1")
        .bind(username)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(Error::NotFound)
}

/// Disables (or enables again) a staff account. Disabling ends its sessions and revokes its API
/// tokens.
pub async fn set_staff_disabled(
    store: &Store,
    username: &str,
    disabled: bool,
    actor: &str,
) -> Result<()> {
    let mut tx = store.begin().await?;
    let id = staff_id(&mut tx, username).await?;
    sqlx::query("UPDATE staff SET disabled = $2 WHERE id = $1")
        .bind(&id)
        .bind(i64::from(disabled))
        .execute(&mut *tx)
        .await?;
    // Disabling ends the member's sessions and revokes their API tokens (enabling again
    // restores neither).
    let tokens = if disabled {
        sqlx::query("DELETE FROM staff_sessions WHERE staff = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        super::token::revoke_tokens_in(&mut tx, &id).await?
    } else {
        0
    };
    store
        .audit(
            &mut tx,
            &Event {
                kind: if disabled {
                    "ra.staff.disabled"
                } else {
                    "ra.staff.enabled"
                },
                actor: actor.to_string(),
                subject: Some(id),
                detail: json!({ "username": username, "api_tokens_revoked": tokens }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A new TOTP secret for a staff member (a lost phone); ends their sessions and revokes their
/// API tokens. Returns the secret to enrol (shown once).
pub async fn reset_totp(
    store: &Store,
    vault: &crate::pii::Vault,
    username: &str,
    actor: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut tx = store.begin().await?;
    let id = staff_id(&mut tx, username).await?;
    let secret = Zeroizing::new(crate::totp::new_secret().to_vec());
    let sealed = vault.seal(
        Field::TotpSecret,
        &id,
        &data_encoding::BASE32_NOPAD.encode(&secret),
    )?;
    sqlx::query("UPDATE staff SET totp_sealed = $2, totp_last_step = 0 WHERE id = $1")
        .bind(&id)
        .bind(sealed)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM staff_sessions WHERE staff = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    // A lost phone may mean a lost laptop: the member's API tokens go too.
    let tokens = super::token::revoke_tokens_in(&mut tx, &id).await?;
    store
        .audit(
            &mut tx,
            &Event {
                kind: "ra.staff.totp_reset",
                actor: actor.to_string(),
                subject: Some(id),
                detail: json!({ "username": username, "api_tokens_revoked": tokens }),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(secret)
}
