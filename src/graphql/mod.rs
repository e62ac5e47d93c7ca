//! The GraphQL API: schema assembly, per-request context, and SDL export.

pub mod alerts;
pub mod audit;
pub mod fast;
pub mod guards;
pub mod health;
pub mod limits;
pub mod loaders;
pub mod observe;
pub mod products;
pub mod restrictions;
pub mod stock;
pub mod subscriptions;
pub mod types;
pub mod uploads;
pub mod users;

use std::sync::Arc;

use async_graphql::futures_util::stream::BoxStream;
use async_graphql::{
    Context, Data, ErrorExtensions, Executor, MergedObject, Request, Response, Schema, ServerError,
};
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use crate::error::{AppError, AppResult};
use crate::service::{CurrentUser, RequestMeta};
use crate::state::AppState;

#[derive(MergedObject, Default)]
pub struct Query(
    health::HealthQuery,
    users::UsersQuery,
    products::ProductsQuery,
    stock::StockQuery,
    audit::AuditQuery,
    alerts::AlertsQuery,
    uploads::UploadsQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    users::AuthMutation,
    users::UsersMutation,
    products::ProductsMutation,
    stock::StockMutation,
    alerts::AlertsMutation,
    uploads::UploadsMutation,
);

pub type AppSchema = Schema<Query, Mutation, subscriptions::Subscription>;

/// The schema as the transports run it: every error of every response
/// (subscription events included) gets its `extensions.code`. With a fast
/// path ([`fast`]), `POST /graphql` operations and WebSocket subscriptions
/// that qualify run on its schema; the rest on the full one.
#[derive(Clone)]
pub struct CodedSchema {
    full: AppSchema,
    fast: fast::FastPath,
}

impl CodedSchema {
    /// Both schemas, with the configured limits; `state` is available to
    /// every resolver.
    pub fn new(state: AppState) -> Self {
        let (max_root_fields, metrics) = (
            state.config.graphql_max_root_fields,
            state.config.metrics_enabled,
        );
        Self {
            full: build(Some(state.clone()), true),
            fast: fast::FastPath::new(build(Some(state), false), max_root_fields, metrics),
        }
    }

    /// A `POST /graphql` operation of the caller `context`: on the fast
    /// path when it qualifies, otherwise on the full schema.
    pub async fn execute_http(
        &self,
        state: &AppState,
        context: RequestContext,
        request: Request,
    ) -> fast::Answer {
        let mut response = match self.fast.execute(state, context, request).await {
            Ok(fast::Answer::Fresh(response)) => response,
            Ok(serialized) => return serialized,
            Err(request) => self.full.execute(request).await,
        };
        ensure_error_codes(&mut response.errors);
        fast::Answer::Fresh(response)
    }
}

impl Executor for CodedSchema {
    async fn execute(&self, request: Request) -> Response {
        let mut response = self.full.execute(request).await;
        ensure_error_codes(&mut response.errors);
        response
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let (schema, request) = match self.fast.subscription(request) {
            fast::Route::Fast(request) => (self.fast.schema(), request),
            fast::Route::Full(request) => (&self.full, request),
        };
        schema
            .execute_stream_with_session_data(request, session_data.unwrap_or_default())
            .map(|mut response| {
                ensure_error_codes(&mut response.errors);
                response
            })
            .boxed()
    }
}

/// The schema, with its extensions when `extensions` (the fast path's is the
/// same without them: it makes their checks itself).
fn build(state: Option<AppState>, extensions: bool) -> AppSchema {
    let mut builder = Schema::build(
        Query::default(),
        Mutation::default(),
        subscriptions::Subscription,
    );
    if let Some(state) = state {
        let config = state.config.clone();
        builder = builder
            .limit_depth(config.graphql_max_depth)
            .limit_complexity(config.graphql_max_complexity)
            .data(state);
        if extensions {
            builder = builder
                .extension(limits::MaxRootFields(config.graphql_max_root_fields))
                .extension(restrictions::AccountRestrictions);
            // Metrics cost nothing per request when they are off.
            if config.metrics_enabled {
                builder = builder.extension(observe::OperationMetrics);
            }
        }
        if !config.graphql_introspection {
            builder = builder.disable_introspection();
        }
    }
    builder.finish()
}

/// The SDL that `export-schema` writes to `schema.graphql`.
pub fn sdl() -> String {
    build(None, true).sdl()
}

/// Per-request data: who is calling, from where.
pub struct RequestContext {
    pub meta: RequestMeta,
    bearer: Option<String>,
    /// HTTP requests authenticate once; a WebSocket connection lives longer
    /// than its token may, so it authenticates on every operation.
    user: Option<OnceCell<CurrentUser>>,
}

impl RequestContext {
    /// For one HTTP request.
    pub fn new(meta: RequestMeta, bearer: Option<String>) -> Self {
        Self {
            meta,
            bearer,
            user: Some(OnceCell::new()),
        }
    }

    /// For a WebSocket connection.
    pub fn for_socket(meta: RequestMeta, bearer: Option<String>) -> Self {
        Self {
            meta,
            bearer,
            user: None,
        }
    }

    pub fn bearer(&self) -> Option<&str> {
        self.bearer.as_deref()
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
    authenticated(state(ctx), request(ctx)).await
}

/// The caller of a request, authenticated once per HTTP request and on every
/// operation of a WebSocket.
pub async fn authenticated(state: &AppState, req: &RequestContext) -> AppResult<CurrentUser> {
    let Some(token) = req.bearer.as_deref() else {
        return Err(AppError::Unauthenticated("authentication required".into()));
    };
    match &req.user {
        Some(cell) => cell
            .get_or_try_init(|| state.auth.authenticate(&state.db, token))
            .await
            .cloned(),
        None => state.auth.authenticate(&state.db, token).await,
    }
}

/// The caller as an audit actor.
pub async fn actor(ctx: &Context<'_>) -> AppResult<crate::service::Actor> {
    let user = current_user(ctx).await?;
    Ok(crate::service::Actor::new(
        Some(&user),
        request(ctx).meta.clone(),
    ))
}

/// Gives every error an `extensions.code`. Errors without a path come from
/// async-graphql itself before execution (parse, validation, limits) and are
/// the client's; so are input coercion errors during execution. Any other
/// error without a code is a resolver failing unexpectedly: INTERNAL, logged
/// with its message (inside the request's span, so with its request id) and
/// shown as "internal error".
pub fn ensure_error_codes(errors: &mut [ServerError]) {
    for err in errors {
        if existing_code(err).is_some() {
            continue;
        }
        let code = default_code(err);
        let ext = err.extensions.get_or_insert_with(Default::default);
        if code == "INTERNAL" {
            tracing::error!(error = %err.message, path = ?err.path, "internal error in a resolver");
            err.message = "internal error".into();
        }
        ext.set("code", code);
    }
}

fn existing_code(err: &ServerError) -> Option<&str> {
    match err.extensions.as_ref().and_then(|e| e.get("code")) {
        Some(async_graphql::Value::String(code)) => Some(code),
        Some(_) => Some("INTERNAL"),
        None => None,
    }
}

/// The code an error without one gets (see [`ensure_error_codes`]).
fn default_code(err: &ServerError) -> &'static str {
    let client_error = err.path.is_empty()
        || [
            "Failed to parse \"",
            "Expected input type \"",
            "Invalid value for argument",
        ]
        .iter()
        .any(|p| err.message.starts_with(p));
    if client_error {
        "BAD_USER_INPUT"
    } else {
        "INTERNAL"
    }
}

/// The `extensions.code` an error has or will get.
pub fn error_code(err: &ServerError) -> &str {
    existing_code(err).unwrap_or_else(|| default_code(err))
}

/// Converts a service error for a resolver.
pub fn gql(err: AppError) -> async_graphql::Error {
    err.extend()
}

#[cfg(test)]
mod tests {
    use async_graphql::{PathSegment, ServerError};

    use super::ensure_error_codes;

    fn error(message: &str, path: &[&str]) -> ServerError {
        let mut e = ServerError::new(message, None);
        e.path = path
            .iter()
            .map(|p| PathSegment::Field(p.to_string()))
            .collect();
        e
    }

    fn code(e: &ServerError) -> String {
        match e.extensions.as_ref().and_then(|x| x.get("code")) {
            Some(async_graphql::Value::String(s)) => s.clone(),
            other => panic!("no code: {other:?}"),
        }
    }

    #[test]
    fn a_codeless_resolver_error_is_internal_and_its_message_hidden() {
        let mut errors = vec![error("Data `Foo` does not exist.", &["product"])];
        ensure_error_codes(&mut errors);
        assert_eq!(code(&errors[0]), "INTERNAL");
        assert_eq!(errors[0].message, "internal error");
    }

    #[test]
    fn engine_and_input_coercion_errors_are_the_clients() {
        let mut errors = vec![
            error("Unknown field \"nope\" on type \"Query\".", &[]),
            error("Failed to parse \"Int\": Only integers", &["products"]),
        ];
        ensure_error_codes(&mut errors);
        assert!(errors.iter().all(|e| code(e) == "BAD_USER_INPUT"));
        assert!(errors[1].message.starts_with("Failed to parse"));
    }

    #[test]
    fn an_existing_code_is_kept() {
        let mut e = error("no", &["x"]);
        e.extensions
            .get_or_insert_with(Default::default)
            .set("code", "FORBIDDEN");
        let mut errors = vec![e];
        ensure_error_codes(&mut errors);
        assert_eq!(code(&errors[0]), "FORBIDDEN");
    }
}
