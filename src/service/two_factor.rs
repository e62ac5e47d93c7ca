//! Two-factor login: TOTP (RFC 6238) with secrets encrypted at rest, and
//! one-time recovery codes stored as hashes.
//!
//! A code is taken once: the time step it matched is stored and a later
//! login needs a later step; a recovery code is marked used by a conditional
//! update, so two racing logins cannot both spend it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QuerySelect,
};
use totp_rs::{Builder, Totp};
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::context::{Services, Txn};
use super::{Actor, CurrentUser};
use crate::entity::audit_log::{AuditAction, EntityType};
use crate::entity::{recovery_code, user};
use crate::error::{AppError, AppResult};
use crate::sealing::Sealer;

pub const RECOVERY_CODE_COUNT: usize = 10;
const ISSUER: &str = "Stockroom";
/// 160 bits, RFC 4226's recommendation.
const SECRET_BYTES: usize = 20;
/// Crockford's base32: no I, L, O or U to misread.
const RECOVERY_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// What a user scans when enrolling; shown once.
pub struct Enrollment {
    pub secret: String,
    pub otpauth_uri: String,
    pub qr_code_svg: String,
}

/// How a second factor was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Totp,
    RecoveryCode,
}

/// Two-factor secrets sealed under the data-encryption key
/// ([`crate::sealing`]), each bound to its user's id.
pub struct SecretBox(Arc<Sealer>);

impl SecretBox {
    pub fn new(sealer: Arc<Sealer>) -> Self {
        Self(sealer)
    }

    /// False in production without a data-encryption key.
    pub fn may_seal(&self) -> bool {
        self.0.may_seal()
    }

    pub(super) fn seal(&self, user_id: Uuid, secret: &[u8]) -> AppResult<String> {
        self.0
            .seal(user_id.as_bytes(), secret)
            .map_err(AppError::internal)
    }

    pub(super) fn open(&self, user_id: Uuid, stored: &str) -> AppResult<Vec<u8>> {
        self.0.open(user_id.as_bytes(), stored).map_err(|e| {
            AppError::internal(anyhow::anyhow!(
                "TOTP secret of user {user_id}: {e}; or reset the user's 2FA"
            ))
        })
    }
}

/// SHA-1, six digits, 30 s steps and one step of skew either side: what every
/// authenticator app does.
fn totp(secret: Vec<u8>, account: &str) -> AppResult<Totp> {
    Builder::new()
        .with_secret(secret.into_boxed_slice())
        .with_account_name(account)
        .with_issuer(Some(ISSUER))
        .build()
        .map_err(|e| AppError::internal(anyhow::anyhow!("TOTP setup failed: {e}")))
}

fn unix_now(now: DateTime<Utc>) -> u64 {
    u64::try_from(now.timestamp()).unwrap_or(0)
}

fn recovery_hash(user_id: Uuid, code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    crate::digest::sha256_hex(format!("stockroom-recovery:{user_id}:{normalized}"))
}

fn new_recovery_code() -> AppResult<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| AppError::internal(anyhow::anyhow!("no random source: {e}")))?;
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| RECOVERY_ALPHABET[usize::from(b & 31)] as char)
        .collect();
    Ok(chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-"))
}

/// A six-digit code is a TOTP code; anything else is tried as a recovery code.
fn looks_like_totp(code: &str) -> bool {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    digits.len() == 6 && digits.chars().all(|c| c.is_ascii_digit())
}

/// Checks a code (TOTP or recovery) of a user with 2FA on and spends it.
/// `Ok(None)` is a wrong, reused or spent code.
pub async fn consume_code(
    conn: &impl ConnectionTrait,
    secrets: &SecretBox,
    user: &user::Model,
    code: &str,
    now: DateTime<Utc>,
) -> AppResult<Option<Method>> {
    let Some(stored) = user.totp_secret.as_deref() else {
        return Ok(None);
    };
    if looks_like_totp(code) {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        let totp = totp(secrets.open(user.id, stored)?, &user.email)?;
        let Some(step) = totp.check(&code, unix_now(now)) else {
            return Ok(None);
        };
        let step = i64::try_from(step).map_err(AppError::internal)?;
        // Conditional: a code for a step at or before the last accepted one is
        // a replay, also when two logins race with the same code.
        let res = user::Entity::update_many()
            .col_expr(user::Column::TotpLastStep, Expr::value(step))
            .filter(user::Column::Id.eq(user.id))
            .filter(
                Condition::any()
                    .add(user::Column::TotpLastStep.is_null())
                    .add(user::Column::TotpLastStep.lt(step)),
            )
            .exec(conn)
            .await?;
        return Ok((res.rows_affected == 1).then_some(Method::Totp));
    }
    let res = recovery_code::Entity::update_many()
        .col_expr(recovery_code::Column::UsedAt, Expr::value(now))
        .filter(recovery_code::Column::UserId.eq(user.id))
        .filter(recovery_code::Column::CodeHash.eq(recovery_hash(user.id, code)))
        .filter(recovery_code::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok((res.rows_affected == 1).then_some(Method::RecoveryCode))
}

/// Recovery codes a user has not spent.
pub async fn unused_recovery_codes(conn: &impl ConnectionTrait, user_id: Uuid) -> AppResult<u64> {
    Ok(recovery_code::Entity::find()
        .filter(recovery_code::Column::UserId.eq(user_id))
        .filter(recovery_code::Column::UsedAt.is_null())
        .count(conn)
        .await?)
}

async fn locked_user(txn: &Txn, id: Uuid) -> AppResult<user::Model> {
    user::Entity::find_by_id(id)
        .lock_exclusive()
        .one(&**txn)
        .await?
        .ok_or_else(|| AppError::Unauthenticated("user no longer exists".into()))
}

/// Starts (or restarts) enrollment: a new secret, stored encrypted and not yet
/// in force. CONFLICT when 2FA is already on.
pub async fn begin_enrollment(
    db: &Services,
    secrets: &SecretBox,
    current: &CurrentUser,
    actor: &Actor,
) -> AppResult<Enrollment> {
    if !secrets.may_seal() {
        return Err(AppError::conflict(
            "two-factor login is not available: the server has no DATA_ENCRYPTION_KEY; ask an operator to set it",
        ));
    }
    let mut secret = vec![0u8; SECRET_BYTES];
    getrandom::fill(&mut secret)
        .map_err(|e| AppError::internal(anyhow::anyhow!("no random source: {e}")))?;
    let txn = db.begin_write().await?;
    let user = locked_user(&txn, current.id).await?;
    if user.two_factor_enabled() {
        return Err(AppError::conflict(
            "two-factor login is already on; turn it off first to enroll a new device",
        ));
    }
    let sealed = secrets.seal(user.id, &secret)?;
    let totp = totp(secret, &user.email)?;
    let otpauth_uri = totp
        .to_url()
        .map_err(|e| AppError::internal(anyhow::anyhow!("otpauth URI: {e}")))?;
    let enrollment = Enrollment {
        secret: totp.secret().to_base32(),
        qr_code_svg: qr_svg(&otpauth_uri)?,
        otpauth_uri,
    };
    let mut active: user::ActiveModel = user.into();
    active.totp_secret = Set(Some(sealed));
    active.totp_last_step = Set(None);
    active.updated_at = Set(Utc::now());
    let user = active.update(&*txn).await?;
    audit::record(
        &txn,
        actor,
        AuditEntry::new(AuditAction::TwoFactorEnroll, EntityType::User, user.id)
            .summary(format!("{} began two-factor enrollment", user.email)),
    )
    .await?;
    txn.commit().await?;
    Ok(enrollment)
}

fn qr_svg(uri: &str) -> AppResult<String> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::new(uri.as_bytes())
        .map_err(|e| AppError::internal(anyhow::anyhow!("QR code: {e}")))?;
    Ok(code
        .render::<svg::Color>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build())
}

/// Turns 2FA on with a first code from the authenticator and returns fresh
/// recovery codes (shown once, stored hashed).
pub async fn confirm(
    db: &Services,
    secrets: &SecretBox,
    current: &CurrentUser,
    code: &str,
    actor: &Actor,
) -> AppResult<Vec<String>> {
    let txn = db.begin_write().await?;
    let user = locked_user(&txn, current.id).await?;
    if user.two_factor_enabled() {
        return Err(AppError::conflict("two-factor login is already on"));
    }
    if user.totp_secret.is_none() {
        return Err(AppError::conflict(
            "no enrollment in progress: call beginTwoFactorEnrollment first",
        ));
    }
    let now = Utc::now();
    if !looks_like_totp(code)
        || consume_code(&*txn, secrets, &user, code, now).await? != Some(Method::Totp)
    {
        return Err(AppError::bad_input(
            "code",
            "code is not valid: enter the current six-digit code of the authenticator",
        ));
    }
    recovery_code::Entity::delete_many()
        .filter(recovery_code::Column::UserId.eq(user.id))
        .exec(&*txn)
        .await?;
    let mut codes = Vec::with_capacity(RECOVERY_CODE_COUNT);
    let mut rows = Vec::with_capacity(RECOVERY_CODE_COUNT);
    for _ in 0..RECOVERY_CODE_COUNT {
        let code = new_recovery_code()?;
        rows.push(recovery_code::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user.id),
            code_hash: Set(recovery_hash(user.id, &code)),
            created_at: Set(now),
            used_at: Set(None),
        });
        codes.push(code);
    }
    recovery_code::Entity::insert_many(rows).exec(&*txn).await?;
    user::Entity::update_many()
        .col_expr(user::Column::TotpEnabledAt, Expr::value(now))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .filter(user::Column::Id.eq(user.id))
        .exec(&*txn)
        .await?;
    audit::record(
        &txn,
        actor,
        AuditEntry::new(AuditAction::TwoFactorEnable, EntityType::User, user.id).summary(format!(
            "{} turned on two-factor login; {RECOVERY_CODE_COUNT} recovery codes issued",
            user.email
        )),
    )
    .await?;
    txn.commit().await?;
    Ok(codes)
}

/// Turns 2FA off with a current code or a recovery code.
pub async fn disable(
    db: &Services,
    secrets: &SecretBox,
    current: &CurrentUser,
    code: &str,
    actor: &Actor,
) -> AppResult<()> {
    let txn = db.begin_write().await?;
    let user = locked_user(&txn, current.id).await?;
    if !user.two_factor_enabled() {
        return Err(AppError::conflict("two-factor login is not on"));
    }
    let Some(method) = consume_code(&*txn, secrets, &user, code, Utc::now()).await? else {
        return Err(AppError::bad_input(
            "code",
            "code is not valid: enter a current code of the authenticator or an unused recovery code",
        ));
    };
    let how = match method {
        Method::Totp => "an authenticator code",
        Method::RecoveryCode => "a recovery code",
    };
    clear(&txn, &user).await?;
    audit::record(
        &txn,
        actor,
        AuditEntry::new(AuditAction::TwoFactorDisable, EntityType::User, user.id).summary(format!(
            "{} turned off two-factor login with {how}",
            user.email
        )),
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

async fn clear(txn: &Txn, user: &user::Model) -> AppResult<()> {
    recovery_code::Entity::delete_many()
        .filter(recovery_code::Column::UserId.eq(user.id))
        .exec(&**txn)
        .await?;
    user::Entity::update_many()
        .col_expr(
            user::Column::TotpSecret,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            user::Column::TotpEnabledAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(user::Column::TotpLastStep, Expr::value(Option::<i64>::None))
        .col_expr(user::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(user::Column::Id.eq(user.id))
        .exec(&**txn)
        .await?;
    Ok(())
}

/// Turns another user's 2FA off (an ADMIN, or the CLI for a locked-out admin)
/// and ends their sessions, so the next login enrolls afresh.
pub async fn reset(db: &Services, actor: &Actor, user_id: Uuid) -> AppResult<user::Model> {
    let txn = db.begin_write().await?;
    let user = user::Entity::find_by_id(user_id)
        .lock_exclusive()
        .one(&*txn)
        .await?
        .ok_or_else(|| AppError::not_found("user not found"))?;
    if user.totp_secret.is_none() {
        return Ok(user);
    }
    clear(&txn, &user).await?;
    let revoked = super::credentials::revoke_all_refresh_tokens(&*txn, user.id).await?;
    let by = actor.name.as_deref().unwrap_or("the command line");
    audit::record(
        &txn,
        actor,
        AuditEntry::new(AuditAction::TwoFactorDisable, EntityType::User, user.id).summary(format!(
            "two-factor login of {} reset by {by}; {revoked} session(s) revoked",
            user.email
        )),
    )
    .await?;
    let user = user::Entity::find_by_id(user_id)
        .one(&*txn)
        .await?
        .ok_or_else(|| AppError::not_found("user not found"))?;
    txn.commit().await?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_80_bits_and_match_however_typed() -> AppResult<()> {
        let code = new_recovery_code()?;
        assert_eq!(code.len(), 19);
        assert_eq!(code.matches('-').count(), 3);
        let id = Uuid::now_v7();
        assert_eq!(
            recovery_hash(id, &code),
            recovery_hash(id, &code.to_lowercase().replace('-', " "))
        );
        assert_ne!(
            recovery_hash(id, &code),
            recovery_hash(Uuid::now_v7(), &code)
        );
        assert_ne!(code, new_recovery_code()?);
        Ok(())
    }
}
