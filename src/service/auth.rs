//! Passwords, access tokens, refresh tokens and the login flow.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::audit::{self, AuditEntry};
use super::context::{Services, Txn};
use super::credentials::{
    dummy_hash, hash_password, insert_refresh_token, revoke_all_refresh_tokens, token_hash,
    validate_new_password, verify_password,
};
use super::two_factor::{self, SecretBox};
use super::{Actor, Caller, CurrentUser, RequestMeta, Restriction};
use crate::config::Config;
use crate::entity::alert::AlertKind;
use crate::entity::audit_log::{AuditAction, EntityType};
use crate::entity::refresh_token;
use crate::entity::user::{self, Role};
use crate::error::{AppError, AppResult};
use crate::limits::Limiters;

pub use crate::validate::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
/// Longer login passwords cannot match any stored one; they are not hashed.
const MAX_PASSWORD_BYTES: usize = MAX_PASSWORD_CHARS * 4;
const INVALID_CREDENTIALS: &str = "invalid email or password";
const INVALID_REFRESH: &str = "invalid or expired refresh token";
const INVALID_ACCESS: &str = "invalid or expired access token";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// The key id of a signing secret: a hash prefix that names the secret
/// without revealing it.
fn key_id(secret: &str) -> String {
    let mut id = crate::digest::sha256_hex(format!("stockroom-jwt-kid:{secret}"));
    id.truncate(16);
    id
}

/// HS256 keys and the fixed validation rules for access tokens. Tokens are
/// signed with `JWT_SECRET` and carry its key id (`kid`); a token whose `kid`
/// names `JWT_SECRET_PREVIOUS` is verified with that one, so that rotating the
/// secret logs no one out.
pub struct JwtKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    previous: Option<(String, DecodingKey)>,
    validation: Validation,
    issuer: String,
    audience: String,
    access_ttl: Duration,
}

impl JwtKeys {
    pub fn new(config: &Config) -> Self {
        let secret = config.jwt_secret.expose();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.jwt_issuer]);
        validation.set_audience(&[&config.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            kid: key_id(secret),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            previous: config.jwt_secret_previous.as_ref().map(|p| {
                (
                    key_id(p.expose()),
                    DecodingKey::from_secret(p.expose().as_bytes()),
                )
            }),
            validation,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            access_ttl: config.jwt_access_ttl,
        }
    }

    pub fn issue(&self, user: &user::Model) -> AppResult<(String, DateTime<Utc>)> {
        let now = Utc::now();
        let expires_at =
            now + chrono::Duration::from_std(self.access_ttl).map_err(AppError::internal)?;
        let claims = Claims {
            sub: user.id.to_string(),
            role: user.role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: Uuid::new_v4().to_string(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(AppError::internal)?;
        Ok((token, expires_at))
    }

    /// Checks signature (HS256 only, with the key its `kid` names), expiry,
    /// issuer and audience. A token without a `kid` (signed before key ids)
    /// is tried with the current key, then the previous one.
    pub fn verify(&self, token: &str) -> AppResult<Claims> {
        let refused = || AppError::Unauthenticated(INVALID_ACCESS.into());
        let header = jsonwebtoken::decode_header(token).map_err(|_| refused())?;
        let previous = self.previous.as_ref();
        let keys: Vec<&DecodingKey> = match header.kid.as_deref() {
            Some(kid) if kid == self.kid => vec![&self.decoding],
            Some(kid) => previous
                .filter(|(p, _)| p == kid)
                .map(|(_, key)| key)
                .into_iter()
                .collect(),
            None => std::iter::once(&self.decoding)
                .chain(previous.map(|(_, key)| key))
                .collect(),
        };
        keys.into_iter()
            .find_map(|key| jsonwebtoken::decode::<Claims>(token, key, &self.validation).ok())
            .map(|data| data.claims)
            .ok_or_else(refused)
    }
}

/// What authentication needs, and nothing more: signing keys, the verified
/// user cache, the login limiters and token lifetimes.
pub struct Auth {
    pub keys: JwtKeys,
    pub users: UserCache,
    pub limiters: std::sync::Arc<Limiters>,
    pub refresh_ttl: Duration,
    /// Failed logins per account or address that raise a LOGIN_FAILURES alert,
    /// and the window they are counted in.
    pub failure_alert: (u32, Duration),
    pub policy: AccountPolicy,
    pub secrets: SecretBox,
    pub production: bool,
}

/// Lockout, password age and the roles that must use two-factor login.
pub struct AccountPolicy {
    /// Consecutive failures that lock an account; 0 is off.
    pub lockout_threshold: u32,
    pub lockout: Duration,
    /// 0 is no limit.
    pub password_max_age_days: u32,
    pub two_factor_roles: Vec<Role>,
}

impl AccountPolicy {
    pub fn new(config: &Config) -> Self {
        Self {
            lockout_threshold: config.login_lockout_threshold,
            lockout: config.login_lockout,
            password_max_age_days: config.password_max_age_days,
            two_factor_roles: config.two_factor_required_roles.to_vec(),
        }
    }

    /// True when the user's password is older than the policy allows.
    pub fn password_expired(&self, u: &user::Model, now: DateTime<Utc>) -> bool {
        self.password_max_age_days > 0
            && now - u.password_set_at()
                > chrono::Duration::days(i64::from(self.password_max_age_days))
    }

    /// True when the user's role requires 2FA and it is not on.
    pub fn needs_two_factor(&self, u: &user::Model) -> bool {
        self.two_factor_roles.contains(&u.role) && !u.two_factor_enabled()
    }

    /// What the user must do first; a password change comes before enrolling.
    pub fn restriction(&self, u: &user::Model, now: DateTime<Utc>) -> Option<Restriction> {
        if self.password_expired(u, now) {
            Some(Restriction::PasswordChangeRequired)
        } else if self.needs_two_factor(u) {
            Some(Restriction::TwoFactorEnrollmentRequired)
        } else {
            None
        }
    }
}

impl Auth {
    pub fn new(
        config: &Config,
        limiters: std::sync::Arc<Limiters>,
        sealer: std::sync::Arc<crate::sealing::Sealer>,
    ) -> AppResult<Self> {
        Ok(Self {
            keys: JwtKeys::new(config),
            users: UserCache::new(config.auth_cache_ttl),
            limiters,
            refresh_ttl: config.jwt_refresh_ttl,
            failure_alert: (config.alert_login_failures, config.alert_login_window),
            policy: AccountPolicy::new(config),
            secrets: SecretBox::new(sealer),
            production: config.is_production(),
        })
    }

    /// Like [`Self::authenticate`], but reads the user row instead of
    /// trusting the cache (for long-lived streams, checked once); also
    /// returns the token's expiry.
    pub async fn authenticate_fresh(
        &self,
        db: &Services,
        token: &str,
    ) -> AppResult<(CurrentUser, DateTime<Utc>)> {
        let claims = self.keys.verify(token)?;
        let expires = DateTime::from_timestamp(claims.exp, 0)
            .ok_or_else(|| AppError::Unauthenticated(INVALID_ACCESS.into()))?;
        let user = active_user(db.conn(), self, &claims, false).await?;
        Ok((user, expires))
    }

    /// The caller a bearer token names (see [`Caller`]): `Err` only when
    /// the token could not be checked.
    pub async fn caller(&self, db: &Services, bearer: Option<&str>) -> AppResult<Caller> {
        let Some(token) = bearer else {
            return Ok(Caller::Anonymous);
        };
        match self.authenticate(db, token).await {
            Ok(user) => Ok(Caller::User(user)),
            Err(AppError::Unauthenticated(message)) => Ok(Caller::Invalid(message)),
            Err(failed) => Err(failed),
        }
    }

    /// Resolves a bearer token to its active user, with the user's current
    /// role (read from the database, or from the short cache) and restriction.
    pub async fn authenticate(&self, db: &Services, token: &str) -> AppResult<CurrentUser> {
        let claims = self.keys.verify(token)?;
        active_user(db.conn(), self, &claims, true).await
    }
}

/// Recently verified users, so that every request does not read the user row.
/// Changes made through this instance invalidate their entry at once; other
/// instances see a role change or a deactivation within the TTL.
pub struct UserCache(Option<moka::sync::Cache<Uuid, CurrentUser>>);

impl UserCache {
    pub fn new(ttl: Duration) -> Self {
        Self((!ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build()
        }))
    }

    pub fn invalidate(&self, user_id: Uuid) {
        if let Some(cache) = &self.0 {
            cache.invalidate(&user_id);
        }
    }

    pub fn invalidate_all(&self) {
        if let Some(cache) = &self.0 {
            cache.invalidate_all();
        }
    }
}

/// The active user a verified token names, from the cache when `cached`
/// allows it; the cache is refreshed either way.
async fn active_user(
    conn: &impl ConnectionTrait,
    auth: &Auth,
    claims: &Claims,
    cached: bool,
) -> AppResult<CurrentUser> {
    let cache = &auth.users;
    let id = Uuid::parse_str(&claims.sub)
        .map_err(|_| AppError::Unauthenticated(INVALID_ACCESS.into()))?;
    if cached && let Some(user) = cache.0.as_ref().and_then(|c| c.get(&id)) {
        return Ok(user);
    }
    match user::Entity::find_by_id(id).one(conn).await? {
        Some(u) if u.is_active => {
            let user = CurrentUser {
                restriction: auth.policy.restriction(&u, Utc::now()),
                id: u.id,
                email: u.email,
                role: u.role,
            };
            if let Some(c) = &cache.0 {
                c.insert(id, user.clone());
            }
            Ok(user)
        }
        _ => Err(AppError::Unauthenticated(INVALID_ACCESS.into())),
    }
}

/// What a successful login or refresh hands back.
pub struct Session {
    pub access_token: String,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub user: user::Model,
    /// What the user must do before anything else.
    pub restriction: Option<Restriction>,
}

fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Checks the login rate limits, verifies the password (and the second factor
/// when 2FA is on), and on success records the login and opens a session.
/// Every attempt is audited; consecutive failures lock the account.
#[tracing::instrument(skip_all)]
pub async fn login(
    db: &Services,
    auth: &Auth,
    email: &str,
    password: &str,
    otp: Option<&str>,
    meta: RequestMeta,
) -> AppResult<Session> {
    let normalized = normalize_email(email);
    // What is limited, looked up and audited is bounded and printable, so an
    // absurd "email" can neither bloat the audit log nor reach the database.
    let well_formed = normalized.chars().count() <= super::users::MAX_EMAIL
        && !normalized.chars().any(char::is_control);
    let email: String = normalized
        .chars()
        .filter(|c| !c.is_control())
        .take(super::users::MAX_EMAIL)
        .collect();
    auth.limiters.check_login(meta.ip.as_deref(), &email)?;

    let found = if well_formed {
        user::Entity::find()
            .filter(user::Column::Email.eq(email.as_str()))
            .one(db.conn())
            .await?
    } else {
        None
    };
    let now = Utc::now();
    // The password is checked in every case, so that a locked account answers
    // as a wrong password does, in the same time.
    let failure = match &found {
        None => {
            if password.len() <= MAX_PASSWORD_BYTES {
                verify_password(dummy_hash().await?, password).await?;
            }
            Some(Failure::UnknownEmail)
        }
        Some(u) => {
            let matches = password.len() <= MAX_PASSWORD_BYTES
                && verify_password(&u.password_hash, password).await?;
            if u.locked_at(now).is_some() {
                Some(Failure::Locked)
            } else if password.len() > MAX_PASSWORD_BYTES {
                Some(Failure::PasswordTooLong)
            } else if !matches {
                Some(Failure::WrongPassword)
            } else if !u.is_active {
                Some(Failure::Deactivated)
            } else {
                None
            }
        }
    };
    let user = match (found, failure) {
        (Some(user), None) => user,
        (found, Some(failure)) => {
            return Err(failed_login(db, auth, found.as_ref(), &email, failure, meta).await?);
        }
        (None, None) => return Err(AppError::Unauthenticated(INVALID_CREDENTIALS.into())),
    };

    let txn = db.begin_write().await?;
    let mut second_factor = None;
    if user.two_factor_enabled() {
        let Some(code) = otp.map(str::trim).filter(|c| !c.is_empty()) else {
            return Err(AppError::TwoFactorRequired(
                "this account has two-factor login: send the authenticator's code (or a recovery code) in otp".into(),
            ));
        };
        match two_factor::consume_code(&*txn, &auth.secrets, &user, code, now).await? {
            Some(method) => second_factor = Some(method),
            None => {
                drop(txn);
                let failure = Failure::WrongSecondFactor;
                return Err(failed_login(db, auth, Some(&user), &email, failure, meta).await?);
            }
        }
    }
    let actor = Actor {
        user_id: Some(user.id),
        name: Some(user.email.clone()),
        meta,
    };
    end_expired_lock(&txn, &user, now).await?;
    let mut active: user::ActiveModel = user.into();
    active.last_login_at = Set(Some(now));
    active.failed_login_count = Set(0);
    let user = active.update(&*txn).await?;
    let (_, refresh) = insert_refresh_token(&*txn, user.id, auth.refresh_ttl).await?;
    let how = match second_factor {
        None => "",
        Some(two_factor::Method::Totp) => " with an authenticator code",
        Some(two_factor::Method::RecoveryCode) => " with a recovery code",
    };
    audit::record(
        &txn,
        &actor,
        AuditEntry::new(AuditAction::Login, EntityType::User, user.id)
            .summary(format!("{} logged in{how}", user.email)),
    )
    .await?;
    txn.commit().await?;
    // The cached user may carry a restriction this login's state lifts.
    auth.users.invalidate(user.id);

    let (access_token, access_token_expires_at) = auth.keys.issue(&user)?;
    Ok(Session {
        access_token,
        access_token_expires_at,
        refresh_token: refresh,
        restriction: auth.policy.restriction(&user, now),
        user,
    })
}

/// Why a login failed, as the audit log tells it. The client always gets
/// the same UNAUTHENTICATED.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    UnknownEmail,
    PasswordTooLong,
    WrongPassword,
    Deactivated,
    Locked,
    WrongSecondFactor,
}

impl Failure {
    /// The metric label.
    fn label(self) -> &'static str {
        match self {
            Self::UnknownEmail => "unknown_email",
            Self::PasswordTooLong => "password_too_long",
            Self::WrongPassword => "wrong_password",
            Self::Deactivated => "deactivated",
            Self::Locked => "locked",
            Self::WrongSecondFactor => "wrong_second_factor",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::UnknownEmail => "unknown email",
            Self::PasswordTooLong => "password too long",
            Self::WrongPassword => "wrong password",
            Self::Deactivated => "account deactivated",
            Self::Locked => "account locked",
            Self::WrongSecondFactor => "wrong two-factor code",
        }
    }

    /// Failures that count towards locking the account.
    fn counts(self) -> bool {
        matches!(
            self,
            Self::PasswordTooLong | Self::WrongPassword | Self::WrongSecondFactor
        )
    }
}

/// Audits a failed login, raises the LOGIN_FAILURES alert when due, counts
/// it against the account (locking it at the threshold), and returns the
/// error the client gets.
async fn failed_login(
    db: &Services,
    auth: &Auth,
    found: Option<&user::Model>,
    email: &str,
    failure: Failure,
    meta: RequestMeta,
) -> AppResult<AppError> {
    let reason = failure.reason();
    crate::metrics::login_failure(failure.label());
    let actor = Actor {
        user_id: found.map(|u| u.id),
        name: found.map(|u| u.email.clone()),
        meta,
    };
    let entry = AuditEntry {
        action: AuditAction::LoginFailed,
        entity_type: EntityType::User,
        entity_id: found.map(|u| u.id.to_string()),
        summary: format!("failed login for {email}: {reason}"),
        changes: Some(serde_json::json!({
            "before": null,
            "after": { "email": email, "reason": reason }
        })),
    };
    let txn = db.begin_write().await?;
    audit::record(&txn, &actor, entry).await?;
    let (threshold, window) = auth.failure_alert;
    super::alerts::on_failed_login(
        &txn,
        actor.user_id,
        email,
        actor.meta.ip.as_deref(),
        threshold,
        window,
    )
    .await?;
    if let Some(u) = found
        && failure.counts()
    {
        count_failure(&txn, &auth.policy, u.id, &actor).await?;
    }
    txn.commit().await?;
    Ok(AppError::Unauthenticated(INVALID_CREDENTIALS.into()))
}

/// One more consecutive failure; at the threshold the account is locked
/// (audited, with a LOGIN_FAILURES alert). The row is locked, so failures
/// racing on several instances are all counted.
async fn count_failure(
    txn: &Txn,
    policy: &AccountPolicy,
    user_id: Uuid,
    actor: &Actor,
) -> AppResult<()> {
    if policy.lockout_threshold == 0 {
        return Ok(());
    }
    let Some(u) = user::Entity::find_by_id(user_id)
        .lock_exclusive()
        .one(&**txn)
        .await?
    else {
        return Ok(());
    };
    let now = Utc::now();
    if u.locked_at(now).is_some() {
        return Ok(());
    }
    end_expired_lock(txn, &u, now).await?;
    let count = u.failed_login_count.saturating_add(1);
    let threshold = i32::try_from(policy.lockout_threshold).unwrap_or(i32::MAX);
    if count < threshold {
        user::Entity::update_many()
            .col_expr(user::Column::FailedLoginCount, Expr::value(count))
            .filter(user::Column::Id.eq(u.id))
            .exec(&**txn)
            .await?;
        return Ok(());
    }
    let until = now + chrono::Duration::from_std(policy.lockout).map_err(AppError::internal)?;
    user::Entity::update_many()
        .col_expr(user::Column::FailedLoginCount, Expr::value(0))
        .col_expr(user::Column::LockedUntil, Expr::value(until))
        .filter(user::Column::Id.eq(u.id))
        .exec(&**txn)
        .await?;
    crate::metrics::account_locked();
    let ip = actor.meta.ip.as_deref().unwrap_or("an unknown address");
    audit::record(
        txn,
        actor,
        AuditEntry::new(AuditAction::AccountLock, EntityType::User, u.id)
            .summary(format!(
                "{} locked until {} after {count} consecutive failed logins (the last from {ip})",
                u.email,
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ))
            .changes(
                None,
                Some(serde_json::json!({ "lockedUntil": until, "failedLogins": count })),
            ),
    )
    .await?;
    let message = format!(
        "🔒 Account <b>{}</b> locked until {} UTC after {count} consecutive failed logins (the last from {}).",
        super::alerts::escape_html(&u.email),
        until.format("%Y-%m-%d %H:%M"),
        super::alerts::escape_html(ip)
    );
    super::alerts::enqueue(
        txn,
        AlertKind::LoginFailures,
        message,
        Some(format!("lock:{}:{}", u.id, until.timestamp())),
    )
    .await?;
    Ok(())
}

/// Clears a lock whose time is over and audits its end, once: the update is
/// conditional on the lock read, so only one instance writes the row.
async fn end_expired_lock(txn: &Txn, u: &user::Model, now: DateTime<Utc>) -> AppResult<()> {
    let Some(until) = u.locked_until.filter(|until| *until <= now) else {
        return Ok(());
    };
    let res = user::Entity::update_many()
        .col_expr(
            user::Column::LockedUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(user::Column::Id.eq(u.id))
        .filter(user::Column::LockedUntil.eq(until))
        .exec(&**txn)
        .await?;
    if res.rows_affected == 1 {
        audit::record(
            txn,
            &Actor::system(),
            AuditEntry::new(AuditAction::AccountUnlock, EntityType::User, u.id).summary(format!(
                "the lock of {} ended at {}",
                u.email,
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
        )
        .await?;
    }
    Ok(())
}

/// Ends and audits every lock whose time is over; run periodically, so the
/// end of a lock is in the audit log even when nobody logs in again.
pub async fn end_expired_locks(db: &Services) -> AppResult<usize> {
    let now = Utc::now();
    let expired = user::Entity::find()
        .filter(user::Column::LockedUntil.lte(now))
        .all(db.conn())
        .await?;
    for u in &expired {
        let txn = db.begin_write().await?;
        end_expired_lock(&txn, u, now).await?;
        txn.commit().await?;
    }
    Ok(expired.len())
}

/// An ADMIN ends a lock early (and clears the failure count). Audited when
/// the account was locked.
pub async fn unlock(db: &Services, actor: &Actor, user_id: Uuid) -> AppResult<user::Model> {
    let txn = db.begin_write().await?;
    let u = user::Entity::find_by_id(user_id)
        .lock_exclusive()
        .one(&*txn)
        .await?
        .ok_or_else(|| AppError::not_found("user not found"))?;
    let now = Utc::now();
    let was_locked = u.locked_at(now);
    end_expired_lock(&txn, &u, now).await?;
    let mut active: user::ActiveModel = u.clone().into();
    active.locked_until = Set(None);
    active.failed_login_count = Set(0);
    let after = active.update(&*txn).await?;
    if let Some(until) = was_locked {
        let by = actor.name.as_deref().unwrap_or("the system");
        audit::record(
            &txn,
            actor,
            AuditEntry::new(AuditAction::AccountUnlock, EntityType::User, u.id).summary(format!(
                "{} unlocked by {by} (was locked until {})",
                u.email,
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
        )
        .await?;
    }
    txn.commit().await?;
    Ok(after)
}

/// Sets a user's password from outside the account (the CLI recovery of a
/// locked-out admin): clears any lock, ends every session, audited as
/// PASSWORD_RESET.
pub async fn reset_password(
    db: &Services,
    actor: &Actor,
    email: &str,
    new_password: &str,
) -> AppResult<user::Model> {
    validate_new_password("password", new_password)?;
    let email = normalize_email(email);
    let hash = hash_password(new_password).await?;
    let txn = db.begin_write().await?;
    let u = user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .lock_exclusive()
        .one(&*txn)
        .await?
        .ok_or_else(|| AppError::not_found(format!("no user with email {email}")))?;
    let now = Utc::now();
    let mut active: user::ActiveModel = u.into();
    active.password_hash = Set(hash);
    active.password_changed_at = Set(Some(now));
    active.locked_until = Set(None);
    active.failed_login_count = Set(0);
    active.updated_at = Set(now);
    let u = active.update(&*txn).await?;
    let revoked = revoke_all_refresh_tokens(&*txn, u.id).await?;
    let by = actor.name.as_deref().unwrap_or("the system");
    audit::record(
        &txn,
        actor,
        AuditEntry::new(AuditAction::PasswordReset, EntityType::User, u.id).summary(format!(
            "password of {} reset by {by}; lock cleared; {revoked} session(s) revoked",
            u.email
        )),
    )
    .await?;
    txn.commit().await?;
    Ok(u)
}

/// A rotated refresh token came back: someone holds a copy. Audited as a
/// failed login of its user, with a LOGIN_FAILURES alert (once per token).
async fn refresh_reused(
    txn: &Txn,
    row: &refresh_token::Model,
    revoked: u64,
    meta: RequestMeta,
) -> AppResult<()> {
    let email = user::Entity::find_by_id(row.user_id)
        .one(&**txn)
        .await?
        .map(|u| u.email)
        .unwrap_or_default();
    let actor = Actor {
        user_id: None,
        name: None,
        meta,
    };
    let ip = actor
        .meta
        .ip
        .clone()
        .unwrap_or_else(|| "an unknown address".into());
    audit::record(
        txn,
        &actor,
        AuditEntry::new(AuditAction::LoginFailed, EntityType::User, row.user_id)
            .summary(format!(
                "a rotated refresh token of {email} was presented again from {ip}: possible token theft; {revoked} sessions revoked"
            ))
            .changes(
                None,
                Some(serde_json::json!({
                    "email": email,
                    "reason": "refresh_token_reused",
                    "sessionsRevoked": revoked,
                })),
            ),
    )
    .await?;
    let message = format!(
        "🚨 A rotated refresh token of <b>{}</b> was used again from {}: possible token theft. All {revoked} sessions of the account were revoked.",
        super::alerts::escape_html(&email),
        super::alerts::escape_html(&ip)
    );
    super::alerts::enqueue(
        txn,
        AlertKind::LoginFailures,
        message,
        Some(format!("refresh-reuse:{}", row.id)),
    )
    .await?;
    Ok(())
}

/// The stored row of a presented refresh token; unknown is UNAUTHENTICATED.
async fn find_refresh_token(
    conn: &impl ConnectionTrait,
    token: &str,
) -> AppResult<refresh_token::Model> {
    refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(token_hash(token)))
        .one(conn)
        .await?
        .ok_or_else(|| AppError::Unauthenticated(INVALID_REFRESH.into()))
}

/// Rotates a refresh token: the presented one stops working and a new one is
/// issued. Presenting a token that was already rotated is treated as theft:
/// every session of its user is revoked.
#[tracing::instrument(skip_all)]
pub async fn refresh(
    db: &Services,
    auth: &Auth,
    token: &str,
    meta: RequestMeta,
) -> AppResult<Session> {
    let txn = db.begin_write().await?;
    let row = find_refresh_token(&*txn, token).await?;
    if row.revoked_at.is_some() {
        if row.replaced_by.is_some() {
            let revoked = revoke_all_refresh_tokens(&*txn, row.user_id).await?;
            refresh_reused(&txn, &row, revoked, meta).await?;
            txn.commit().await?;
            tracing::warn!(user_id = %row.user_id, revoked, "rotated refresh token reused; all sessions revoked");
        }
        return Err(AppError::Unauthenticated(INVALID_REFRESH.into()));
    }
    if row.expires_at <= Utc::now() {
        return Err(AppError::Unauthenticated(INVALID_REFRESH.into()));
    }
    let user = match user::Entity::find_by_id(row.user_id).one(&*txn).await? {
        Some(u) if u.is_active => u,
        _ => return Err(AppError::Unauthenticated(INVALID_REFRESH.into())),
    };
    let (new_id, new_token) = insert_refresh_token(&*txn, user.id, auth.refresh_ttl).await?;
    // Conditional, so two racing refreshes of one token cannot both win.
    let res = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, Expr::value(Utc::now()))
        .col_expr(refresh_token::Column::ReplacedBy, Expr::value(new_id))
        .filter(refresh_token::Column::Id.eq(row.id))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(&*txn)
        .await?;
    if res.rows_affected != 1 {
        return Err(AppError::Unauthenticated(INVALID_REFRESH.into()));
    }
    txn.commit().await?;
    let (access_token, access_token_expires_at) = auth.keys.issue(&user)?;
    Ok(Session {
        access_token,
        access_token_expires_at,
        refresh_token: new_token,
        restriction: auth.policy.restriction(&user, Utc::now()),
        user,
    })
}

/// Revokes one refresh token. Logging out twice is not an error.
#[tracing::instrument(skip_all)]
pub async fn logout(db: &Services, token: &str, meta: RequestMeta) -> AppResult<bool> {
    let txn = db.begin_write().await?;
    let row = find_refresh_token(&*txn, token).await?;
    if row.revoked_at.is_some() {
        return Ok(true);
    }
    refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(refresh_token::Column::Id.eq(row.id))
        .exec(&*txn)
        .await?;
    let actor = Actor {
        user_id: Some(row.user_id),
        name: None,
        meta,
    };
    audit::record(
        &txn,
        &actor,
        AuditEntry::new(AuditAction::Logout, EntityType::User, row.user_id).summary("logged out"),
    )
    .await?;
    txn.commit().await?;
    Ok(true)
}

/// Checks the current password, stores the new hash and ends every session.
#[tracing::instrument(skip_all, fields(user_id = %current.id))]
pub async fn change_password(
    db: &Services,
    auth: &Auth,
    current: &CurrentUser,
    current_password: &str,
    new_password: &str,
    meta: RequestMeta,
) -> AppResult<()> {
    validate_new_password("newPassword", new_password)?;
    auth.limiters
        .check_login(meta.ip.as_deref(), &current.email)?;
    let user = user::Entity::find_by_id(current.id)
        .one(db.conn())
        .await?
        .ok_or_else(|| AppError::Unauthenticated(INVALID_ACCESS.into()))?;
    if !verify_password(&user.password_hash, current_password).await? {
        return Err(AppError::bad_input(
            "currentPassword",
            "current password is incorrect",
        ));
    }
    if current_password == new_password {
        return Err(AppError::bad_input(
            "newPassword",
            "newPassword must differ from the current password",
        ));
    }
    let hash = hash_password(new_password).await?;
    let txn = db.begin_write().await?;
    let now = Utc::now();
    let mut active: user::ActiveModel = user.into();
    active.password_hash = Set(hash);
    active.password_changed_at = Set(Some(now));
    active.updated_at = Set(now);
    let user = active.update(&*txn).await?;
    let revoked = revoke_all_refresh_tokens(&*txn, user.id).await?;
    audit::record(
        &txn,
        &Actor::new(Some(current), meta),
        AuditEntry::new(AuditAction::PasswordChange, EntityType::User, user.id).summary(format!(
            "{} changed their password; {revoked} session(s) revoked",
            user.email
        )),
    )
    .await?;
    txn.commit().await?;
    auth.users.invalidate(user.id);
    Ok(())
}
