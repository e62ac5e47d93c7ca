//! Credentials: password hashes and refresh-token rows, shared by the login
//! flow (`auth`), user administration (`users`) and two-factor login.

use std::sync::OnceLock;
use std::time::Duration;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
};
use uuid::Uuid;

use crate::entity::refresh_token;
use crate::error::{AppError, AppResult};
use crate::validate::check_password_policy;

pub fn validate_new_password(field: &str, password: &str) -> AppResult<()> {
    check_password_policy(password)
        .map_err(|msg| AppError::bad_input(field, format!("{field} {msg}")))
}

/// Argon2id with a fresh salt, off the async runtime.
pub async fn hash_password(password: &str) -> AppResult<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| AppError::internal(anyhow::anyhow!("hashing failed: {e}")))
    })
    .await
    .map_err(AppError::internal)?
}

/// Constant-effort check; an unparsable hash counts as a mismatch.
pub async fn verify_password(hash: &str, password: &str) -> AppResult<bool> {
    let (hash, password) = (hash.to_owned(), password.to_owned());
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .map_err(AppError::internal)
}

/// A hash to verify against when the email is unknown, so both failures take
/// the same time.
pub(super) async fn dummy_hash() -> AppResult<&'static str> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(h) = DUMMY.get() {
        return Ok(h);
    }
    let h = hash_password(&crate::config::generate_secret()).await?;
    Ok(DUMMY.get_or_init(|| h))
}

fn new_refresh_token() -> AppResult<String> {
    let random = crate::config::random_hex(32)
        .map_err(|e| AppError::internal(anyhow::anyhow!("no random source: {e}")))?;
    Ok(format!("srt_{random}"))
}

pub(super) fn token_hash(token: &str) -> String {
    crate::digest::sha256_hex(token)
}

/// Inserts a new refresh token row and returns the token (shown once).
pub(super) async fn insert_refresh_token(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    ttl: Duration,
) -> AppResult<(Uuid, String)> {
    let token = new_refresh_token()?;
    let id = Uuid::now_v7();
    let now = Utc::now();
    refresh_token::ActiveModel {
        id: Set(id),
        user_id: Set(user_id),
        token_hash: Set(token_hash(&token)),
        created_at: Set(now),
        expires_at: Set(now + chrono::Duration::from_std(ttl).map_err(AppError::internal)?),
        revoked_at: Set(None),
        replaced_by: Set(None),
    }
    .insert(conn)
    .await?;
    Ok((id, token))
}

/// Revokes every live refresh token of a user.
pub async fn revoke_all_refresh_tokens(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
) -> AppResult<u64> {
    let res = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(refresh_token::Column::UserId.eq(user_id))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(res.rows_affected)
}
