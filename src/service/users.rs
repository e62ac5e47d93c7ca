//! User accounts: creation, updates, listing, and seeding the first admin.

use chrono::Utc;
use sea_orm::Order;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QuerySelect,
};
use serde_json::json;
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::context::Services;
use super::{Actor, Page, PageRequest, credentials, paginate, required_text};
use crate::entity::audit_log::{AuditAction, EntityType};
use crate::entity::user::{self, Role};
use crate::error::{AppError, AppResult, USERS_EMAIL_KEY, on_unique_violation};
use crate::events::DomainEvent;

pub use crate::validate::{MAX_EMAIL, check_email};
const MAX_DISPLAY_NAME: usize = 100;

fn normalized_email(field: &str, email: &str) -> AppResult<String> {
    let email = email.trim().to_lowercase();
    check_email(&email).map_err(|m| AppError::bad_input(field, format!("{field} {m}")))?;
    Ok(email)
}

pub struct NewUser {
    pub email: String,
    pub display_name: String,
    pub password: String,
    pub role: Role,
}

#[derive(Default)]
pub struct UserPatch {
    pub display_name: Option<String>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
}

/// The audited view of a user: never the password hash.
fn snapshot(u: &user::Model) -> serde_json::Value {
    json!({
        "email": u.email,
        "displayName": u.display_name,
        "role": u.role,
        "isActive": u.is_active,
    })
}

async fn insert_user(
    conn: &impl ConnectionTrait,
    email: String,
    display_name: String,
    password_hash: String,
    role: Role,
) -> AppResult<user::Model> {
    let now = Utc::now();
    user::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(email.clone()),
        display_name: Set(display_name),
        password_hash: Set(password_hash),
        role: Set(role),
        is_active: Set(true),
        created_at: Set(now),
        updated_at: Set(now),
        last_login_at: Set(None),
        password_changed_at: Set(Some(now)),
        failed_login_count: Set(0),
        locked_until: Set(None),
        totp_secret: Set(None),
        totp_enabled_at: Set(None),
        totp_last_step: Set(None),
    }
    .insert(conn)
    .await
    .map_err(|e| {
        on_unique_violation(
            e,
            &USERS_EMAIL_KEY,
            AppError::conflict(format!("a user with email {email} already exists")),
        )
    })
}

#[tracing::instrument(skip_all, fields(role = ?input.role))]
pub async fn create(db: &Services, actor: &Actor, input: NewUser) -> AppResult<user::Model> {
    let email = normalized_email("email", &input.email)?;
    let display_name = required_text("displayName", &input.display_name, MAX_DISPLAY_NAME)?;
    credentials::validate_new_password("password", &input.password)?;
    let hash = credentials::hash_password(&input.password).await?;

    let txn = db.begin_write().await?;
    let user = insert_user(&*txn, email, display_name, hash, input.role).await?;
    audit::record(
        &txn,
        actor,
        AuditEntry::new(AuditAction::Create, EntityType::User, user.id)
            .summary(format!("created user {} ({:?})", user.email, user.role))
            .changes(None, Some(snapshot(&user))),
    )
    .await?;
    txn.commit().await?;
    Ok(user)
}

/// Updates a user. Deactivation ends their sessions; the last active admin
/// cannot be demoted or deactivated.
#[tracing::instrument(skip_all, fields(user_id = %id))]
pub async fn update(
    db: &Services,
    actor: &Actor,
    id: Uuid,
    patch: UserPatch,
) -> AppResult<user::Model> {
    let display_name = match &patch.display_name {
        Some(n) => Some(required_text("displayName", n, MAX_DISPLAY_NAME)?),
        None => None,
    };
    let txn = db.begin_write().await?;
    let before = user::Entity::find_by_id(id)
        .lock_exclusive()
        .one(&*txn)
        .await?
        .ok_or_else(|| AppError::not_found("user not found"))?;

    let loses_admin = before.role == Role::Admin
        && before.is_active
        && (patch.role.is_some_and(|r| r != Role::Admin) || patch.is_active == Some(false));
    if loses_admin {
        // Locks every active admin, so two admins demoting each other at
        // once cannot both pass this check.
        let admins = user::Entity::find()
            .filter(user::Column::Role.eq(Role::Admin))
            .filter(user::Column::IsActive.eq(true))
            .lock_exclusive()
            .all(&*txn)
            .await?;
        if admins.len() <= 1 {
            return Err(AppError::conflict(
                "the last active admin cannot be demoted or deactivated",
            ));
        }
    }

    let unchanged = display_name
        .as_ref()
        .is_none_or(|n| *n == before.display_name)
        && patch.role.is_none_or(|r| r == before.role)
        && patch.is_active.is_none_or(|a| a == before.is_active);
    if unchanged {
        return Ok(before);
    }
    let mut active: user::ActiveModel = before.clone().into();
    if let Some(n) = display_name {
        active.display_name = Set(n);
    }
    if let Some(r) = patch.role {
        active.role = Set(r);
    }
    if let Some(a) = patch.is_active {
        active.is_active = Set(a);
    }
    active.updated_at = Set(Utc::now());
    let after = active.update(&*txn).await?;
    if before.role != after.role || before.is_active != after.is_active {
        txn.emit(DomainEvent::UserChanged {
            user_id: after.id,
            role: after.role,
            active: after.is_active,
        });
    }
    let mut revoked = 0;
    if before.is_active && !after.is_active {
        revoked = credentials::revoke_all_refresh_tokens(&*txn, after.id).await?;
    }
    let mut summary = format!("updated user {}", after.email);
    if revoked > 0 {
        summary.push_str(&format!("; {revoked} session(s) revoked"));
    }
    audit::record(
        &txn,
        actor,
        AuditEntry::new(AuditAction::Update, EntityType::User, after.id)
            .summary(summary)
            .changes(Some(snapshot(&before)), Some(snapshot(&after))),
    )
    .await?;
    txn.commit().await?;
    Ok(after)
}

pub async fn get(conn: &impl ConnectionTrait, id: Uuid) -> AppResult<Option<user::Model>> {
    Ok(user::Entity::find_by_id(id).one(conn).await?)
}

/// Oldest first.
pub async fn list(conn: &impl ConnectionTrait, page: PageRequest) -> AppResult<Page<user::Model>> {
    paginate(
        conn,
        user::Entity::find(),
        user::Column::Id,
        Order::Asc,
        page,
    )
    .await
}

/// What seeding did.
pub enum Seeded {
    /// An admin was created; `generated_password` is set when none was configured.
    Created {
        email: String,
        generated_password: Option<String>,
    },
    /// The database already has users; nothing changed.
    AlreadySeeded,
}

/// Creates the admin account when the database has no user at all. Running it
/// again changes nothing. `password` None generates one (development only).
pub async fn seed_admin(
    db: &Services,
    email: &str,
    password: Option<&str>,
    allow_generated: bool,
) -> AppResult<Seeded> {
    if user::Entity::find().count(db.conn()).await? > 0 {
        return Ok(Seeded::AlreadySeeded);
    }
    let (password, generated) = match password {
        Some(p) => (p.to_string(), false),
        None if allow_generated => (crate::config::generate_secret()[..20].to_string(), true),
        None => {
            return Err(AppError::bad_input(
                "ADMIN_PASSWORD",
                "ADMIN_PASSWORD is required to seed the admin when APP_ENV=production",
            ));
        }
    };
    let email = normalized_email("ADMIN_EMAIL", email)?;
    let hash = credentials::hash_password(&password).await?;

    let txn = db.begin_write().await?;
    // Re-checked inside the write transaction: two instances starting at once
    // must not both seed.
    if user::Entity::find().count(&*txn).await? > 0 {
        return Ok(Seeded::AlreadySeeded);
    }
    let admin = insert_user(&*txn, email, "Administrator".into(), hash, Role::Admin).await?;
    audit::record(
        &txn,
        &Actor::system(),
        AuditEntry::new(AuditAction::Create, EntityType::User, admin.id)
            .summary(format!("seeded admin {}", admin.email))
            .changes(None, Some(snapshot(&admin))),
    )
    .await?;
    txn.commit().await?;
    Ok(Seeded::Created {
        email: admin.email,
        generated_password: generated.then_some(password),
    })
}
