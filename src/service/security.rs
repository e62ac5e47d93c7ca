//! The periodic security review in one call: who lacks two-factor login,
//! whose password is past the policy, which accounts are locked, and which
//! accounts and addresses failed to log in repeatedly.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, Order, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::Serialize;
use uuid::Uuid;

use super::auth::AccountPolicy;
use crate::entity::audit_log::{self, AuditAction};
use crate::entity::user::{self, Role};
use crate::error::AppResult;

/// At most this many groups of failed logins are listed, most first.
const MAX_GROUPS: u64 = 100;

pub struct SecurityReport {
    pub generated_at: DateTime<Utc>,
    /// Failed logins are counted from here.
    pub since: DateTime<Utc>,
    pub min_failures: u64,
    pub active_users: usize,
    pub two_factor_users: usize,
    /// Active ADMINs and MANAGERs without two-factor login.
    pub privileged_without_two_factor: Vec<user::Model>,
    /// Active users whose password is older than PASSWORD_MAX_AGE_DAYS.
    pub expired_passwords: Vec<user::Model>,
    pub locked: Vec<user::Model>,
    pub failed_by_account: Vec<FailedLogins>,
    pub failed_by_ip: Vec<FailedLogins>,
}

/// Failed logins of one account (by email) or from one address.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedLogins {
    pub key: String,
    pub user_id: Option<Uuid>,
    /// The account, for groups by account (read once for the whole report).
    #[serde(skip)]
    pub user: Option<user::Model>,
    pub count: i64,
    pub last_at: DateTime<Utc>,
}

#[derive(FromQueryResult)]
struct Group {
    key: Option<String>,
    n: i64,
    last_at: DateTime<Utc>,
}

async fn failed_logins(
    conn: &impl ConnectionTrait,
    column: audit_log::Column,
    since: DateTime<Utc>,
    min_failures: u64,
) -> AppResult<Vec<Group>> {
    let count = Expr::col(audit_log::Column::Id).count();
    Ok(audit_log::Entity::find()
        .select_only()
        .column_as(column, "key")
        .column_as(count.clone(), "n")
        .column_as(Expr::col(audit_log::Column::OccurredAt).max(), "last_at")
        .filter(audit_log::Column::Action.eq(AuditAction::LoginFailed))
        .filter(audit_log::Column::OccurredAt.gte(since))
        .filter(column.is_not_null())
        .group_by(column)
        .having(
            count
                .clone()
                .gte(i64::try_from(min_failures).unwrap_or(i64::MAX)),
        )
        .order_by(count, Order::Desc)
        .limit(MAX_GROUPS)
        .into_model::<Group>()
        .all(conn)
        .await?)
}

pub async fn report(
    conn: &impl ConnectionTrait,
    policy: &AccountPolicy,
    hours: u32,
    min_failures: u64,
) -> AppResult<SecurityReport> {
    let now = Utc::now();
    let since = now - chrono::Duration::hours(i64::from(hours));
    let users = user::Entity::find()
        .filter(user::Column::IsActive.eq(true))
        .order_by_asc(user::Column::Email)
        .all(conn)
        .await?;
    let pick = |keep: &dyn Fn(&user::Model) -> bool| -> Vec<user::Model> {
        users.iter().filter(|u| keep(u)).cloned().collect()
    };
    let privileged_without_two_factor =
        pick(&|u| matches!(u.role, Role::Admin | Role::Manager) && !u.two_factor_enabled());
    let expired_passwords = pick(&|u| policy.password_expired(u, now));
    let two_factor_users = users.iter().filter(|u| u.two_factor_enabled()).count();
    // Inactive accounts can be locked too; a lock is worth seeing either way.
    let locked = user::Entity::find()
        .filter(user::Column::LockedUntil.gt(now))
        .order_by_asc(user::Column::Email)
        .all(conn)
        .await?;

    // Failures of known accounts carry the user's id as entity_id.
    let groups = failed_logins(conn, audit_log::Column::EntityId, since, min_failures).await?;
    let ids: Vec<Uuid> = groups
        .iter()
        .filter_map(|g| g.key.as_deref().and_then(|k| Uuid::parse_str(k).ok()))
        .collect();
    let mut accounts: std::collections::HashMap<Uuid, user::Model> = user::Entity::find()
        .filter(user::Column::Id.is_in(ids))
        .all(conn)
        .await?
        .into_iter()
        .map(|u| (u.id, u))
        .collect();
    let failed_by_account = groups
        .into_iter()
        .map(|g| {
            let user_id = g.key.as_deref().and_then(|k| Uuid::parse_str(k).ok());
            let user = user_id.and_then(|id| accounts.remove(&id));
            FailedLogins {
                key: user
                    .as_ref()
                    .map(|u| u.email.clone())
                    .or(g.key)
                    .unwrap_or_default(),
                user_id,
                user,
                count: g.n,
                last_at: g.last_at,
            }
        })
        .collect();
    let failed_by_ip = failed_logins(conn, audit_log::Column::Ip, since, min_failures)
        .await?
        .into_iter()
        .map(|g| FailedLogins {
            key: g.key.unwrap_or_default(),
            user_id: None,
            user: None,
            count: g.n,
            last_at: g.last_at,
        })
        .collect();
    Ok(SecurityReport {
        generated_at: now,
        since,
        min_failures,
        active_users: users.len(),
        two_factor_users,
        privileged_without_two_factor,
        expired_passwords,
        locked,
        failed_by_account,
        failed_by_ip,
    })
}
