use async_graphql::Data;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::Extension;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};

use super::{ClientIp, HttpState, REQUEST_ID};
use crate::error::{AppError, set_retry_after};
use crate::graphql::{RequestContext, ensure_error_codes, loaders::Loaders};
use crate::service::RequestMeta;

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

fn bearer(value: &str) -> Option<String> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn request_meta(headers: &HeaderMap, ip: &ClientIp) -> RequestMeta {
    RequestMeta {
        request_id: header_str(headers, REQUEST_ID),
        ip: Some(ip.0.clone()),
        user_agent: header_str(headers, header::USER_AGENT),
    }
}

/// A request async-graphql could not even parse, in the contract's error shape
/// (its own answer is a bare Debug string).
fn rejection(rejection: GraphQLRejection) -> Response {
    use async_graphql::ParseRequestError as E;
    let too_large = match &rejection.0 {
        E::PayloadTooLarge => true,
        E::Io(err) => err.to_string().contains("length limit exceeded"),
        _ => false,
    };
    let err = if too_large {
        AppError::PayloadTooLarge("request body is too large".into())
    } else {
        AppError::bad_input(
            "body",
            format!("malformed GraphQL request: {}", rejection.0),
        )
    };
    err.into_graphql_response()
}

pub async fn graphql_handler(
    State(state): State<HttpState>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    req: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    let req = match req {
        Ok(req) => req,
        Err(r) => return rejection(r),
    };
    let context = RequestContext::new(
        request_meta(&headers, &ip),
        header_str(&headers, header::AUTHORIZATION).and_then(|v| bearer(&v)),
    );
    let req = req
        .into_inner()
        .data(context)
        .data(Loaders::new(&state.app.db));
    let mut resp = state.schema.execute(req).await;
    ensure_error_codes(&mut resp.errors);
    if let Some(seconds) =
        resp.errors
            .iter()
            .find_map(|e| match e.extensions.as_ref()?.get("retryAfterSeconds")? {
                async_graphql::Value::Number(n) => n.as_u64(),
                _ => None,
            })
    {
        set_retry_after(&mut resp.http_headers, seconds);
    }
    GraphQLResponse::from(resp).into_response()
}

pub async fn graphiql() -> impl IntoResponse {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .title("Stockroom")
            .finish(),
    )
}

/// WebSocket subscriptions (graphql-transport-ws and graphql-ws). The token
/// comes in the connection_init payload: `{ "Authorization": "Bearer ..." }`.
pub async fn graphql_ws(
    State(state): State<HttpState>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let meta = request_meta(&headers, &ip);
    let header_token = header_str(&headers, header::AUTHORIZATION).and_then(|v| bearer(&v));
    let schema = state.schema.clone();
    let db = state.app.db.clone();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            GraphQLWebSocket::new(stream, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let token = payload
                        .get("Authorization")
                        .or_else(|| payload.get("authorization"))
                        .and_then(|v| v.as_str())
                        .and_then(bearer)
                        .or(header_token);
                    let mut data = Data::default();
                    data.insert(RequestContext::new(meta, token));
                    data.insert(Loaders::new(&db));
                    Ok(data)
                })
                .serve()
        })
}
