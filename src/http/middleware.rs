use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{HttpState, REQUEST_ID};
use crate::error::AppError;

/// The client's address as the rate limiter, the audit log and the metrics
/// see it. Behind `hops` trusted proxies it is the `hops`-th `X-Forwarded-For`
/// entry from the end (header lines read in order as one list): each trusted
/// proxy appended the address it saw, so the outermost one's entry is the
/// client. Earlier entries come from the client and prove nothing. With fewer
/// entries than hops, the first one is taken.
#[derive(Clone, Debug)]
pub struct ClientIp(pub String);

fn forwarded_client(req: &Request, hops: usize) -> Option<String> {
    let entries: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let index = entries.len().saturating_sub(hops.max(1));
    entries.get(index).map(|s| s.to_string())
}

fn client_ip(req: &Request, trust_proxy: Option<usize>) -> String {
    if let Some(hops) = trust_proxy
        && let Some(client) = forwarded_client(req, hops)
    {
        return client;
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The default per-IP budget. GraphQL clients get a GraphQL-shaped
/// RATE_LIMITED error; REST clients the plain JSON error. Both carry
/// `Retry-After`.
pub async fn rate_limit(State(state): State<HttpState>, mut req: Request, next: Next) -> Response {
    let config = &state.app.config;
    let ip = client_ip(&req, config.trust_proxy.then_some(config.trust_proxy_hops));
    let limiters = &state.app.limiters;
    let checked = match req.uri().path() {
        "/api/v1/health" | "/api/v1/health/live" | "/metrics" => limiters.check_probe(&ip),
        _ => limiters.check_default(&ip),
    };
    if let Err(err) = checked {
        return if req.uri().path().starts_with("/graphql") {
            err.into_graphql_response()
        } else {
            err.into_response()
        };
    }
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

/// Room for a multipart request's `operations` and `map` parts and its
/// boundaries, beside the file itself.
const MULTIPART_OVERHEAD: usize = 64 * 1024;

/// The body limit of a request: `UPLOAD_MAX_BYTES` for an upload (the REST
/// upload, or a GraphQL multipart request, whose file part async-graphql
/// bounds again), `REQUEST_BODY_LIMIT_BYTES` for everything else. A declared
/// length over it is refused at once; an undeclared one is cut off while it
/// streams, before it is buffered.
pub async fn body_limit(State(state): State<HttpState>, req: Request, next: Next) -> Response {
    let config = &state.app.config;
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    let (limit, what) = match req.uri().path() {
        "/api/v1/uploads" => (config.upload_max_bytes, "UPLOAD_MAX_BYTES"),
        "/graphql" if multipart => (
            config.upload_max_bytes + MULTIPART_OVERHEAD,
            "UPLOAD_MAX_BYTES",
        ),
        _ => (config.request_body_limit, "REQUEST_BODY_LIMIT_BYTES"),
    };
    let shown = match what {
        "UPLOAD_MAX_BYTES" => config.upload_max_bytes,
        _ => limit,
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        let err = AppError::PayloadTooLarge(format!(
            "request body is larger than {what} ({shown} bytes)"
        ));
        return if req.uri().path().starts_with("/graphql") {
            err.into_graphql_response()
        } else {
            err.into_response()
        };
    }
    let req = req.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, limit)));
    next.run(req).await
}

/// tower-http answers an oversized body with an empty 413; give it the
/// contract's error shape.
pub async fn json_payload_too_large(resp: Response) -> Response {
    if resp.status() != StatusCode::PAYLOAD_TOO_LARGE
        || resp.headers().contains_key(header::CONTENT_TYPE)
            && resp
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        return resp;
    }
    AppError::PayloadTooLarge("request body is too large".into()).into_graphql_response()
}

/// One span per request, carrying its request id.
pub fn make_span(req: &Request) -> tracing::Span {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %request_id,
    )
}

/// Counts and times every request by route pattern (never the raw path, which
/// may hold ids), method and status class.
pub async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let method = match *req.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::OPTIONS => "OPTIONS",
        axum::http::Method::HEAD => "HEAD",
        _ => "other",
    };
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    crate::metrics::http_request(
        route.as_ref().map_or("other", |p| p.as_str()),
        method,
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}
