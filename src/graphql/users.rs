use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::context::{actor, current_user, gql, request, state};
use super::guards::RoleGuard;
use super::types::{AuthPayload, Conn, User, connection, connection_page, parse_id};
use crate::entity::user::Role;
use crate::error::AppError;
use crate::service::{auth, security, two_factor, users};

#[derive(InputObject)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
    /// The authenticator's current code, or an unused recovery code, for an
    /// account with two-factor login on (TWO_FACTOR_REQUIRED without it).
    pub otp: Option<String>,
}

/// What to scan or type into an authenticator app; shown once.
#[derive(SimpleObject)]
pub struct TwoFactorEnrollment {
    /// The TOTP secret in base32, for typing in by hand.
    pub secret: String,
    /// `otpauth://totp/...`: what authenticator apps read from a QR code.
    pub otpauth_uri: String,
    /// The URI as an SVG QR code, to scan from the GraphiQL page.
    pub qr_code_svg: String,
}

#[derive(SimpleObject)]
pub struct TwoFactorConfirmation {
    /// Ten one-time codes for when the authenticator is lost; shown once,
    /// stored hashed.
    pub recovery_codes: Vec<String>,
    pub user: User,
}

/// Failed logins of one account or from one address.
#[derive(SimpleObject)]
pub struct FailedLoginGroup {
    /// The account's email, or the client address.
    pub key: String,
    /// The account, for groups by account.
    pub user: Option<User>,
    pub count: i64,
    pub last_at: DateTime<Utc>,
}

/// The periodic security review (ADMIN).
#[derive(SimpleObject)]
pub struct SecurityReport {
    pub generated_at: DateTime<Utc>,
    /// Failed logins are counted from here.
    pub since: DateTime<Utc>,
    pub password_max_age_days: i32,
    pub lockout_threshold: i32,
    pub lockout_seconds: i64,
    pub two_factor_required_roles: Vec<Role>,
    pub active_users: i32,
    pub two_factor_users: i32,
    /// Active ADMINs and MANAGERs without two-factor login.
    pub privileged_without_two_factor: Vec<User>,
    /// Active users whose password is older than PASSWORD_MAX_AGE_DAYS.
    pub expired_passwords: Vec<User>,
    pub locked_accounts: Vec<User>,
    /// Accounts with at least minFailures failed logins since `since`.
    pub failed_logins_by_account: Vec<FailedLoginGroup>,
    /// Client addresses with at least minFailures failed logins since `since`.
    pub failed_logins_by_ip: Vec<FailedLoginGroup>,
}

#[derive(InputObject)]
pub struct CreateUserInput {
    pub email: String,
    pub display_name: String,
    pub password: String,
    pub role: Role,
}

#[derive(InputObject)]
pub struct UpdateUserInput {
    pub display_name: Option<String>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
}

#[derive(Default)]
pub struct UsersQuery;

#[Object]
impl UsersQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        let me = current_user(ctx).map_err(gql)?;
        users::get(state(ctx)?.services.conn(), me.id)
            .await
            .map_err(gql)?
            .map(User::from)
            .ok_or_else(|| gql(AppError::Unauthenticated("user no longer exists".into())))
    }

    #[graphql(
        guard = "RoleGuard(Role::Admin)",
        complexity = "super::types::page_cost(first, child_complexity)"
    )]
    async fn users(
        &self,
        ctx: &Context<'_>,
        first: Option<i64>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<User>> {
        let page = connection_page(ctx, first, after)?;
        let rows = users::list(state(ctx)?.services.conn(), page)
            .await
            .map_err(gql)?;
        Ok(connection(rows, |u| u.id, User::from))
    }

    /// Admins and managers without 2FA, expired passwords, locked accounts,
    /// and accounts and addresses with repeated failed logins.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn security_report(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 24, validator(minimum = 1, maximum = 720))] hours: i32,
        #[graphql(default = 3, validator(minimum = 1, maximum = 1000000))] min_failures: i32,
    ) -> async_graphql::Result<SecurityReport> {
        let state = state(ctx)?;
        let policy = &state.auth.policy;
        let r = security::report(
            state.services.conn(),
            policy,
            u32::try_from(hours).unwrap_or(24),
            u64::try_from(min_failures).unwrap_or(3),
        )
        .await
        .map_err(gql)?;
        let group = |g: security::FailedLogins| FailedLoginGroup {
            key: g.key,
            user: g.user.map(User::from),
            count: g.count,
            last_at: g.last_at,
        };
        let to_users = |v: Vec<crate::entity::user::Model>| v.into_iter().map(User::from).collect();
        Ok(SecurityReport {
            generated_at: r.generated_at,
            since: r.since,
            password_max_age_days: i32::try_from(policy.password_max_age_days).unwrap_or(i32::MAX),
            lockout_threshold: i32::try_from(policy.lockout_threshold).unwrap_or(i32::MAX),
            lockout_seconds: i64::try_from(policy.lockout.as_secs()).unwrap_or(i64::MAX),
            two_factor_required_roles: policy.two_factor_roles.clone(),
            active_users: i32::try_from(r.active_users).unwrap_or(i32::MAX),
            two_factor_users: i32::try_from(r.two_factor_users).unwrap_or(i32::MAX),
            privileged_without_two_factor: to_users(r.privileged_without_two_factor),
            expired_passwords: to_users(r.expired_passwords),
            locked_accounts: to_users(r.locked),
            failed_logins_by_account: r.failed_by_account.into_iter().map(group).collect(),
            failed_logins_by_ip: r.failed_by_ip.into_iter().map(group).collect(),
        })
    }
}

/// The caller of an operation that checks a two-factor code, after the login
/// rate limit: guessing codes is limited like guessing passwords.
async fn code_caller(
    ctx: &Context<'_>,
) -> async_graphql::Result<(crate::service::CurrentUser, crate::service::Actor)> {
    let me = current_user(ctx).map_err(gql)?;
    state(ctx)?
        .auth
        .limiters
        .check_login(request(ctx)?.meta.ip.as_deref(), &me.email)
        .map_err(gql)?;
    Ok((me, actor(ctx).map_err(gql)?))
}

#[derive(Default)]
pub struct AuthMutation;

#[Object]
impl AuthMutation {
    /// Public, rate limited per client IP and per email, audited.
    async fn login(
        &self,
        ctx: &Context<'_>,
        input: LoginInput,
    ) -> async_graphql::Result<AuthPayload> {
        let state = state(ctx)?;
        let session = auth::login(
            &state.services,
            &state.auth,
            &input.email,
            &input.password,
            input.otp.as_deref(),
            request(ctx)?.meta.clone(),
        )
        .await
        .map_err(gql)?;
        Ok(session.into())
    }

    /// Rotates the refresh token: the one presented stops working.
    async fn refresh_token(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> async_graphql::Result<AuthPayload> {
        let state = state(ctx)?;
        let session = auth::refresh(
            &state.services,
            &state.auth,
            &refresh_token,
            request(ctx)?.meta.clone(),
        )
        .await
        .map_err(gql)?;
        Ok(session.into())
    }

    async fn logout(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> async_graphql::Result<bool> {
        auth::logout(
            &state(ctx)?.services,
            &refresh_token,
            request(ctx)?.meta.clone(),
        )
        .await
        .map_err(gql)
    }

    /// Starts two-factor enrollment for the caller: scan the QR code (or type
    /// the secret) into an authenticator app, then call confirmTwoFactor.
    /// Calling it again replaces an unconfirmed secret.
    async fn begin_two_factor_enrollment(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<TwoFactorEnrollment> {
        let me = current_user(ctx).map_err(gql)?;
        let state = state(ctx)?;
        let e = two_factor::begin_enrollment(
            &state.services,
            &state.auth.secrets,
            &me,
            &actor(ctx).map_err(gql)?,
        )
        .await
        .map_err(gql)?;
        Ok(TwoFactorEnrollment {
            secret: e.secret,
            otpauth_uri: e.otpauth_uri,
            qr_code_svg: e.qr_code_svg,
        })
    }

    /// Turns two-factor login on with the authenticator's current code and
    /// returns the recovery codes, once.
    async fn confirm_two_factor(
        &self,
        ctx: &Context<'_>,
        code: String,
    ) -> async_graphql::Result<TwoFactorConfirmation> {
        let (me, actor) = code_caller(ctx).await?;
        let state = state(ctx)?;
        let codes = two_factor::confirm(&state.services, &state.auth.secrets, &me, &code, &actor)
            .await
            .map_err(gql)?;
        state.auth.users.invalidate(me.id);
        let user = users::get(state.services.conn(), me.id)
            .await
            .map_err(gql)?
            .ok_or_else(|| gql(AppError::Unauthenticated("user no longer exists".into())))?;
        Ok(TwoFactorConfirmation {
            recovery_codes: codes,
            user: user.into(),
        })
    }

    /// Turns two-factor login off with the authenticator's current code or an
    /// unused recovery code.
    async fn disable_two_factor(
        &self,
        ctx: &Context<'_>,
        code: String,
    ) -> async_graphql::Result<bool> {
        let (me, actor) = code_caller(ctx).await?;
        let state = state(ctx)?;
        two_factor::disable(&state.services, &state.auth.secrets, &me, &code, &actor)
            .await
            .map_err(gql)?;
        state.auth.users.invalidate(me.id);
        Ok(true)
    }

    /// Revokes every refresh token of the caller.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> async_graphql::Result<bool> {
        let me = current_user(ctx).map_err(gql)?;
        let state = state(ctx)?;
        auth::change_password(
            &state.services,
            &state.auth,
            &me,
            &current_password,
            &new_password,
            request(ctx)?.meta.clone(),
        )
        .await
        .map_err(gql)?;
        Ok(true)
    }
}

#[derive(Default)]
pub struct UsersMutation;

#[Object]
impl UsersMutation {
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        input: CreateUserInput,
    ) -> async_graphql::Result<User> {
        let actor = actor(ctx).map_err(gql)?;
        let user = users::create(
            &state(ctx)?.services,
            &actor,
            users::NewUser {
                email: input.email,
                display_name: input.display_name,
                password: input.password,
                role: input.role,
            },
        )
        .await
        .map_err(gql)?;
        Ok(user.into())
    }

    /// Deactivating a user ends their sessions at once.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn update_user(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateUserInput,
    ) -> async_graphql::Result<User> {
        let id = parse_id("id", &id).map_err(gql)?;
        let actor = actor(ctx).map_err(gql)?;
        let state = state(ctx)?;
        let user = users::update(
            &state.services,
            &actor,
            id,
            users::UserPatch {
                display_name: input.display_name,
                role: input.role,
                is_active: input.is_active,
            },
        )
        .await
        .map_err(gql)?;
        state.auth.users.invalidate(user.id);
        Ok(user.into())
    }

    /// Ends a lock after repeated failed logins before its time (audited).
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn unlock_user(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<User> {
        let id = parse_id("id", &id).map_err(gql)?;
        let actor = actor(ctx).map_err(gql)?;
        let user = auth::unlock(&state(ctx)?.services, &actor, id)
            .await
            .map_err(gql)?;
        Ok(user.into())
    }

    /// Turns another user's two-factor login off (a lost device) and ends
    /// their sessions; they enroll again at their next login. Audited.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn reset_two_factor(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<User> {
        let id = parse_id("id", &id).map_err(gql)?;
        let actor = actor(ctx).map_err(gql)?;
        let state = state(ctx)?;
        let user = two_factor::reset(&state.services, &actor, id)
            .await
            .map_err(gql)?;
        state.auth.users.invalidate(user.id);
        Ok(user.into())
    }
}
