//! What a resolver reads from its context, and nothing else: the
//! application, where the request came from, who is calling, and the
//! request's DataLoaders. The pipeline attaches every
//! one of them before it runs an operation; a resolver that finds one
//! missing answers INTERNAL instead of panicking.

use async_graphql::{Context, ErrorExtensions};

use super::loaders::Loaders;
use crate::error::{AppError, AppResult};
use crate::service::{Actor, Caller, CurrentUser, RequestMeta};
use crate::state::AppState;

/// Where a request (or a WebSocket connection) came from, and the token it
/// carries.
pub struct RequestContext {
    pub meta: RequestMeta,
    bearer: Option<String>,
}

impl RequestContext {
    pub fn new(meta: RequestMeta, bearer: Option<String>) -> Self {
        Self { meta, bearer }
    }

    pub fn bearer(&self) -> Option<&str> {
        self.bearer.as_deref()
    }
}

/// Converts a service error for a resolver.
pub fn gql(err: AppError) -> async_graphql::Error {
    err.extend()
}

fn data<'a, T: Send + Sync + 'static>(ctx: &Context<'a>) -> AppResult<&'a T> {
    ctx.data::<T>().map_err(|_| {
        AppError::internal(anyhow::anyhow!(
            "{} missing from the GraphQL context",
            std::any::type_name::<T>()
        ))
    })
}

pub fn state<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a AppState> {
    data::<AppState>(ctx).map_err(gql)
}

pub fn request<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a RequestContext> {
    data::<RequestContext>(ctx).map_err(gql)
}

pub fn loaders<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Loaders> {
    data::<Loaders>(ctx).map_err(gql)
}

/// The caller, as the pipeline resolved it for this operation.
pub fn caller<'a>(ctx: &Context<'a>) -> AppResult<&'a Caller> {
    data::<Caller>(ctx)
}

/// The signed-in caller, or UNAUTHENTICATED.
pub fn current_user(ctx: &Context<'_>) -> AppResult<CurrentUser> {
    caller(ctx)?.user().cloned()
}

/// The caller as an audit actor.
pub fn actor(ctx: &Context<'_>) -> AppResult<Actor> {
    let user = current_user(ctx)?;
    let meta = data::<RequestContext>(ctx)?.meta.clone();
    Ok(Actor::new(Some(&user), meta))
}
