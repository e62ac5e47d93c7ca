//! The GraphQL API: schema assembly, per-request context, and SDL export.

pub mod audit;
pub mod guards;
pub mod health;
pub mod loaders;
pub mod products;
pub mod stock;
pub mod types;
pub mod users;

use async_graphql::{
    Context, EmptySubscription, ErrorExtensions, MergedObject, Schema, ServerError,
};
use tokio::sync::OnceCell;

use crate::error::{AppError, AppResult};
use crate::service::{CurrentUser, RequestMeta, auth};
use crate::state::AppState;

#[derive(MergedObject, Default)]
pub struct Query(
    health::HealthQuery,
    users::UsersQuery,
    products::ProductsQuery,
    stock::StockQuery,
    audit::AuditQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    users::AuthMutation,
    users::UsersMutation,
    products::ProductsMutation,
    stock::StockMutation,
);

pub type AppSchema = Schema<Query, Mutation, EmptySubscription>;

/// Builds the schema with the configured limits; `state` is available to
/// every resolver.
pub fn build_schema(state: Option<AppState>) -> AppSchema {
    let mut builder = Schema::build(Query::default(), Mutation::default(), EmptySubscription);
    if let Some(state) = state {
        let config = state.config.clone();
        builder = builder
            .limit_depth(config.graphql_max_depth)
            .limit_complexity(config.graphql_max_complexity)
            .data(state);
        if !config.graphql_introspection {
            builder = builder.disable_introspection();
        }
    }
    builder.finish()
}

/// The SDL that `export-schema` writes to `schema.graphql`.
pub fn sdl() -> String {
    build_schema(None).sdl()
}

/// Per-request data: who is calling, from where.
pub struct RequestContext {
    pub meta: RequestMeta,
    bearer: Option<String>,
    user: OnceCell<CurrentUser>,
}

impl RequestContext {
    pub fn new(meta: RequestMeta, bearer: Option<String>) -> Self {
        Self {
            meta,
            bearer,
            user: OnceCell::new(),
        }
    }
}

pub fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

pub fn request<'a>(ctx: &Context<'a>) -> &'a RequestContext {
    ctx.data_unchecked::<RequestContext>()
}

/// The caller, authenticated once per request (lazily: public operations
/// cost no database read).
pub async fn current_user(ctx: &Context<'_>) -> AppResult<CurrentUser> {
    let req = request(ctx);
    let Some(token) = req.bearer.as_deref() else {
        return Err(AppError::Unauthenticated("authentication required".into()));
    };
    let state = state(ctx);
    req.user
        .get_or_try_init(|| auth::authenticate(state.db.conn(), &state.jwt, &state.users, token))
        .await
        .cloned()
}

/// The caller as an audit actor.
pub async fn actor(ctx: &Context<'_>) -> AppResult<crate::service::Actor> {
    let user = current_user(ctx).await?;
    Ok(crate::service::Actor::new(
        Some(&user),
        request(ctx).meta.clone(),
    ))
}

/// Gives every error an `extensions.code`: errors raised by async-graphql
/// itself (parse, validation, limits) are the client's.
pub fn ensure_error_codes(errors: &mut [ServerError]) {
    for err in errors {
        let has_code = err
            .extensions
            .as_ref()
            .is_some_and(|e| e.get("code").is_some());
        if !has_code {
            let ext = err.extensions.get_or_insert_with(Default::default);
            ext.set("code", "BAD_USER_INPUT");
        }
    }
}

/// Converts a service error for a resolver.
pub fn gql(err: AppError) -> async_graphql::Error {
    err.extend()
}
