use async_graphql::http::MultipartOptions;
use async_graphql_axum::rejection::GraphQLRejection;
use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::negotiate::{GRAPHQL_RESPONSE_JSON, accepted, header_str, quality, wants_html};
use super::{ClientIp, HttpState, REQUEST_ID};
use crate::error::{AppError, set_retry_after};
use crate::graphql::context::RequestContext;
use crate::graphql::pipeline::{Answer, Transport};
use crate::service::RequestMeta;

/// The token of an `Authorization: Bearer ...` header.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    header_str(headers, header::AUTHORIZATION).and_then(|v| bearer(&v))
}

pub(super) fn bearer(value: &str) -> Option<String> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The REST endpoints' authentication: a bearer token of an active user
/// with at least `role`.
pub(super) async fn authorize(
    state: &HttpState,
    headers: &HeaderMap,
    role: crate::entity::user::Role,
) -> Result<crate::service::CurrentUser, AppError> {
    let app = &state.app;
    let token = bearer_token(headers);
    let caller = app.auth.caller(&app.services, token.as_deref()).await?;
    // No REST endpoint is a way out of a restriction.
    caller.require(role, "rest").cloned()
}

pub(super) fn request_meta(headers: &HeaderMap, ip: &ClientIp) -> RequestMeta {
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

/// Only JSON, or multipart for uploads. A browser posts `text/plain` or a
/// form across origins without a CORS preflight; refusing those keeps a
/// foreign page from running operations with a user's cookies or network.
fn accepted_content_type(content_type: Option<&str>) -> Result<(), AppError> {
    let essence = content_type
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match essence.as_str() {
        "application/json" | "application/graphql-response+json" | "multipart/form-data" => Ok(()),
        "" => Err(AppError::UnsupportedMediaType(
            "a POST to /graphql needs Content-Type: application/json (or multipart/form-data for an upload)".into(),
        )),
        other => Err(AppError::UnsupportedMediaType(format!(
            "Content-Type {other} is not accepted: send application/json (or multipart/form-data for an upload)"
        ))),
    }
}

/// A POST to `/graphql`: JSON, or a GraphQL multipart request carrying an
/// upload (its file part bounded by `UPLOAD_MAX_BYTES` as it streams).
pub async fn graphql_post(
    State(state): State<HttpState>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    use futures_util::TryStreamExt;
    use tokio_util::compat::TokioAsyncReadCompatExt;
    let media = match ResponseMedia::negotiate(&headers) {
        Ok(media) => media,
        Err(refused) => return refused.into_graphql_response(),
    };
    let content_type = header_str(&headers, header::CONTENT_TYPE);
    if let Err(refused) = accepted_content_type(content_type.as_deref()) {
        return refused.into_graphql_response();
    }
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream).compat();
    let options = MultipartOptions::default().max_file_size(state.app.config.upload_max_bytes);
    let req = match async_graphql::http::receive_body(content_type, reader, options).await {
        Ok(req) => req,
        Err(e) => return rejection(GraphQLRejection(e)),
    };
    let context = RequestContext::new(request_meta(&headers, &ip), bearer_token(&headers));
    let answer = state
        .pipeline
        .execute_http(req, context, Transport::Post)
        .await;
    media.respond(answer, false)
}

/// A GET of `/graphql`: a query in the URL (`query`, `variables`,
/// `operationName`, `extensions`, as urql and Apollo's persisted queries
/// send it) is run; a browser asking for a page gets GraphiQL.
pub async fn graphql_get(
    State(state): State<HttpState>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let carries_operation = url::form_urlencoded::parse(query.as_bytes())
        .any(|(key, _)| key == "query" || key == "extensions");
    if !carries_operation && wants_html(&headers) {
        return super::pages::index::<super::pages::Graphiql>().await;
    }
    let media = match ResponseMedia::negotiate(&headers) {
        Ok(media) => media,
        Err(refused) => return refused.into_graphql_response(),
    };
    let req = match get_request(&query) {
        Ok(req) => req,
        Err(refused) => return refused.into_graphql_response(),
    };
    let context = RequestContext::new(request_meta(&headers, &ip), bearer_token(&headers));
    let answer = state
        .pipeline
        .execute_http(req, context, Transport::Get)
        .await;
    media.respond(answer, true)
}

/// The operation of a GET's query string, in the parameters GraphQL over
/// HTTP names (`query`, `operationName`, and `variables` and `extensions`
/// as JSON).
fn get_request(query_string: &str) -> Result<async_graphql::Request, AppError> {
    let mut request = async_graphql::Request::new("");
    for (key, value) in url::form_urlencoded::parse(query_string.as_bytes()) {
        let json = |name: &str| {
            serde_json::from_str::<serde_json::Value>(&value)
                .ok()
                .filter(|v| v.is_object() || v.is_null())
                .ok_or_else(|| AppError::bad_input(name, format!("{name} must be a JSON object")))
        };
        match key.as_ref() {
            "query" => request.query = value.into_owned(),
            "operationName" => request.operation_name = Some(value.into_owned()),
            "variables" => {
                request.variables = async_graphql::Variables::from_json(json("variables")?);
            }
            "extensions" => {
                request.extensions = serde_json::from_value(json("extensions")?).map_err(|_| {
                    AppError::bad_input("extensions", "extensions must be a JSON object")
                })?;
            }
            _ => {}
        }
    }
    Ok(request)
}

/// The media type of a GraphQL answer, as the client's `Accept` asks
/// (GraphQL over HTTP): `application/graphql-response+json`, whose request
/// errors are 4xx without `data`, or the older `application/json`, whose
/// answers are all 200.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ResponseMedia {
    GraphqlResponseJson,
    Json,
}

impl ResponseMedia {
    fn negotiate(headers: &HeaderMap) -> Result<Self, AppError> {
        let accept = accepted(headers);
        if accept.is_empty() {
            // No Accept header: the spec's legacy default.
            return Ok(Self::Json);
        }
        // The newer type only when named: a client sending `*/*` (or
        // nothing) may predate it.
        let modern = quality(&accept, GRAPHQL_RESPONSE_JSON, &[]);
        let legacy = quality(&accept, "application/json", &["application/*", "*/*"]);
        if modern > 0.0 && modern >= legacy {
            Ok(Self::GraphqlResponseJson)
        } else if legacy > 0.0 {
            Ok(Self::Json)
        } else {
            Err(AppError::NotAcceptable(format!(
                "answers are {GRAPHQL_RESPONSE_JSON} or application/json; Accept allows neither"
            )))
        }
    }

    fn content_type(self) -> header::HeaderValue {
        header::HeaderValue::from_static(match self {
            Self::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            Self::Json => "application/json; charset=utf-8",
        })
    }

    /// The HTTP answer: status and body by the media type; `Retry-After`
    /// when rate limited; for a GET, the answer's own `Cache-Control`.
    fn respond(self, answer: Answer, get: bool) -> Response {
        let (status, body, response) = match answer {
            Answer::Executed(response) => (
                axum::http::StatusCode::OK,
                serde_json::to_vec(&response),
                response,
            ),
            Answer::Refused {
                response,
                status,
                malformed,
            } => {
                // The legacy media type answers documents that fail with
                // 200; a request that is not GraphQL at all is still 4xx.
                let status = match self {
                    Self::Json if !malformed => axum::http::StatusCode::OK,
                    _ => status,
                };
                let body = serde_json::to_vec(&serde_json::json!({ "errors": response.errors }));
                (status, body, response)
            }
        };
        let Ok(body) = body else {
            return AppError::internal(anyhow::anyhow!("serializing a GraphQL answer"))
                .into_graphql_response();
        };
        let mut http = (status, axum::body::Body::from(body)).into_response();
        let headers = http.headers_mut();
        headers.extend(response.http_headers);
        headers.insert(header::CONTENT_TYPE, self.content_type());
        headers.insert(
            header::VARY,
            header::HeaderValue::from_static("accept, authorization"),
        );
        if status == axum::http::StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, header::HeaderValue::from_static("GET, POST"));
        }
        if let Some(seconds) = response.errors.iter().find_map(|e| {
            match e.extensions.as_ref()?.get("retryAfterSeconds")? {
                async_graphql::Value::Number(n) => n.as_u64(),
                _ => None,
            }
        }) {
            set_retry_after(headers, seconds);
        }
        if get
            && response.errors.is_empty()
            && let Some(value) = response.cache_control.value()
            && let Ok(value) = header::HeaderValue::from_str(&value)
        {
            headers.insert(header::CACHE_CONTROL, value);
        }
        http
    }
}
