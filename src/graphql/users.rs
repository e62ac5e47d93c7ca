use async_graphql::{Context, ID, InputObject, Object};

use super::guards::RoleGuard;
use super::types::{AuthPayload, Conn, User, connection, connection_page, parse_id};
use super::{actor, current_user, gql, request, state};
use crate::entity::user::Role;
use crate::error::AppError;
use crate::service::{auth, users};

#[derive(InputObject)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
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
        let me = current_user(ctx).await.map_err(gql)?;
        users::get(state(ctx).db.conn(), me.id)
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
        let rows = users::list(state(ctx).db.conn(), page).await.map_err(gql)?;
        Ok(connection(rows, |u| u.id, User::from))
    }
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
        let state = state(ctx);
        let session = auth::login(
            &state.db,
            &state.auth,
            &input.email,
            &input.password,
            request(ctx).meta.clone(),
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
        let state = state(ctx);
        let session = auth::refresh(
            &state.db,
            &state.auth,
            &refresh_token,
            request(ctx).meta.clone(),
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
        auth::logout(&state(ctx).db, &refresh_token, request(ctx).meta.clone())
            .await
            .map_err(gql)
    }

    /// Revokes every refresh token of the caller.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> async_graphql::Result<bool> {
        let me = current_user(ctx).await.map_err(gql)?;
        let state = state(ctx);
        auth::change_password(
            &state.db,
            &state.auth,
            &me,
            &current_password,
            &new_password,
            request(ctx).meta.clone(),
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
        let actor = actor(ctx).await.map_err(gql)?;
        let user = users::create(
            &state(ctx).db,
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
        let actor = actor(ctx).await.map_err(gql)?;
        let state = state(ctx);
        let user = users::update(
            &state.db,
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
}
