use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_graphql::Data;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, MultipartOptions, WebSocketProtocols};
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};

use super::negotiate::{GRAPHQL_RESPONSE_JSON, accepted, header_str, quality, wants_html};
use super::{ClientIp, HttpState, REQUEST_ID};
use crate::error::{AppError, set_retry_after};
use crate::graphql::context::RequestContext;
use crate::graphql::fanout::SocketSubscriptions;
use crate::graphql::pipeline::{Answer, Pipeline, Transport};
use crate::limits::ConnectionSlot;
use crate::service::RequestMeta;
use crate::state::AppState;

/// The token of an `Authorization: Bearer ...` header.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    header_str(headers, header::AUTHORIZATION).and_then(|v| bearer(&v))
}

fn bearer(value: &str) -> Option<String> {
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

/// WebSocket subscriptions (graphql-transport-ws and the legacy graphql-ws).
/// The token comes in the connection_init payload:
/// `{ "Authorization": "Bearer ..." }` (also `authorization` or `token`).
pub async fn graphql_ws(
    State(state): State<HttpState>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let slot = match state.app.sockets.acquire(&ip.0) {
        Ok(slot) => slot,
        Err(err) => return err.into_response(),
    };
    // The same choice the GraphQLProtocol extractor made.
    let transport_ws = header_str(&headers, header::SEC_WEBSOCKET_PROTOCOL).is_some_and(|v| {
        v.split(',')
            .find_map(|p| p.trim().parse::<WebSocketProtocols>().ok())
            == Some(WebSocketProtocols::GraphQLWS)
    });
    let socket = Socket {
        app: state.app.clone(),
        pipeline: state.pipeline.clone(),
        protocol,
        transport_ws,
        meta: request_meta(&headers, &ip),
        header_token: bearer_token(&headers),
        _slot: slot,
    };
    let tasks = state.app.tasks.clone();
    // Clients send small messages; tungstenite's 128 KiB default buffers
    // would cost every idle subscriber a quarter of a megabyte. Writes still
    // batch up to the write buffer before they wait for the socket.
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(state.app.config.request_body_limit)
        .on_upgrade(move |ws| tasks.track_future(socket.serve(ws)))
}

/// One WebSocket connection, from its upgrade to its close.
struct Socket {
    app: AppState,
    pipeline: Pipeline,
    protocol: GraphQLProtocol,
    /// graphql-transport-ws; false for the legacy graphql-ws.
    transport_ws: bool,
    meta: RequestMeta,
    header_token: Option<String>,
    _slot: ConnectionSlot,
}

/// How a connection that never became a GraphQL session is refused.
struct Refusal {
    code: u16,
    reason: &'static str,
}

const UNAUTHORIZED: Refusal = Refusal {
    code: 4401,
    reason: "Unauthorized: connection_init must carry a token",
};
const FORBIDDEN: Refusal = Refusal {
    code: 4403,
    reason: "Forbidden: invalid or expired token",
};
const INIT_TIMEOUT: Refusal = Refusal {
    code: 4408,
    reason: "Connection initialisation timeout",
};
const TOO_MANY_REQUESTS: Refusal = Refusal {
    code: 4429,
    reason: "Too many requests: the address's rate limit is spent",
};
const GOING_AWAY: Refusal = Refusal {
    code: 1001,
    reason: "server shutting down",
};

/// The token of a connection_init payload, with or without "Bearer ".
fn init_token(payload: &serde_json::Value) -> Option<String> {
    ["Authorization", "authorization", "token"]
        .iter()
        .find_map(|key| payload.get(*key)?.as_str())
        .map(|v| bearer(v).unwrap_or_else(|| v.trim().to_string()))
        .filter(|t| !t.is_empty())
}

impl Socket {
    async fn serve(self, ws: WebSocket) {
        let (mut sink, mut stream) = ws.split();
        let shutdown = self.app.shutdown.clone();
        // The first message must be connection_init, and soon.
        let first = tokio::select! {
            text = next_text(&mut stream) => text,
            _ = tokio::time::sleep(self.app.config.ws_init_timeout) => {
                return self.refuse(&mut sink, INIT_TIMEOUT).await;
            }
            _ = shutdown.cancelled() => return self.refuse(&mut sink, GOING_AWAY).await,
        };
        let Some(first) = first else { return };
        let init: serde_json::Value = serde_json::from_str(&first).unwrap_or_default();
        if init.get("type").and_then(|t| t.as_str()) != Some("connection_init") {
            return self.refuse(&mut sink, UNAUTHORIZED).await;
        }
        let payload = init.get("payload").cloned().unwrap_or_default();
        let Some(token) = init_token(&payload).or_else(|| self.header_token.clone()) else {
            return self.refuse(&mut sink, UNAUTHORIZED).await;
        };
        if self
            .app
            .auth
            .authenticate(&self.app.services, &token)
            .await
            .is_err()
        {
            return self.refuse(&mut sink, FORBIDDEN).await;
        }

        let mut data = Data::default();
        data.insert(RequestContext::new(self.meta.clone(), Some(token)));
        data.insert(SocketSubscriptions::new(
            self.app.config.ws_max_subscriptions_per_connection,
        ));
        // async-graphql runs the session; the connection_init read above is
        // handed to it again, and the input ends at shutdown.
        // Operations sent over the socket spend the address's default
        // budget like HTTP requests do; past it the connection is closed.
        let limiters = Arc::clone(&self.app.limiters);
        let ip = self.meta.ip.clone().unwrap_or_default();
        let limited = Arc::new(AtomicBool::new(false));
        let over = Arc::clone(&limited);
        let input = futures_util::stream::once(async move { Ok(Message::Text(first.into())) })
            .chain(stream)
            .take_while(move |m| {
                let ok = !spends_budget(m) || limiters.check_default(&ip).is_ok();
                if !ok {
                    over.store(true, Ordering::Relaxed);
                }
                std::future::ready(ok)
            })
            .take_until(shutdown.clone().cancelled_owned());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(32);
        let tx = tokio_util::sync::PollSender::new(tx);
        let keepalive = self.app.config.ws_keepalive;
        let session =
            GraphQLWebSocket::new_with_pair(tx, input, self.pipeline.clone(), self.protocol)
                .on_connection_init(move |_| async move { Ok(data) })
                // graphql-transport-ws clients answer our pings with pongs; one
                // that stays silent for three pings is gone.
                .keepalive_timeout(self.transport_ws.then_some(keepalive * 3))
                .serve();
        let ping = if self.transport_ws {
            r#"{"type":"ping"}"#
        } else {
            r#"{"type":"ka"}"#
        };
        let forward = async {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
            let mut batch = Vec::with_capacity(WRITE_BATCH);
            loop {
                let message = tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => m,
                        None => break,
                    },
                    _ = tick.tick() => Message::Text(ping.into()),
                };
                // Whatever else is ready goes out in the same write.
                batch.push(message);
                while batch.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                // A client that reads nothing for three keep-alive intervals
                // is gone; so is everything at shutdown.
                let sent = tokio::select! {
                    r = tokio::time::timeout(keepalive * 3, write_all(&mut sink, &mut batch)) => {
                        matches!(r, Ok(Ok(())))
                    }
                    _ = shutdown.cancelled() => false,
                };
                if !sent {
                    break;
                }
            }
            // The session's next send fails, so it ends too (and frees its
            // subscriptions and its place among the address's connections).
            rx.close();
        };
        tokio::join!(session, forward);
        if shutdown.is_cancelled() {
            self.refuse(&mut sink, GOING_AWAY).await;
        } else if limited.load(Ordering::Relaxed) {
            self.refuse(&mut sink, TOO_MANY_REQUESTS).await;
        }
    }

    /// Closes the connection: with the close code on graphql-transport-ws,
    /// with a `connection_error` message first on the legacy protocol.
    async fn refuse(&self, sink: &mut SplitSink<WebSocket, Message>, refusal: Refusal) {
        if !self.transport_ws && refusal.code != GOING_AWAY.code {
            let error = serde_json::json!({
                "type": "connection_error",
                "payload": { "message": refusal.reason },
            });
            let _ = sink.send(Message::Text(error.to_string().into())).await;
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: refusal.code,
                reason: refusal.reason.into(),
            })))
            .await;
        let _ = sink.close().await;
    }
}

/// Every client message spends the address's budget but a `pong`, the
/// answer to the server's own keep-alive ping (told by its parsed `type`).
fn spends_budget(message: &Result<Message, axum::Error>) -> bool {
    #[derive(serde::Deserialize)]
    struct Frame<'a> {
        #[serde(borrow, rename = "type")]
        kind: std::borrow::Cow<'a, str>,
    }
    let text: &[u8] = match message {
        Ok(Message::Text(text)) => text.as_bytes(),
        Ok(Message::Binary(bytes)) => bytes,
        _ => return false,
    };
    !serde_json::from_slice::<Frame>(text).is_ok_and(|frame| frame.kind == "pong")
}

/// The next text message, skipping pings; None when the client went away.
/// Most messages gathered into one socket write.
const WRITE_BATCH: usize = 64;

/// Writes `batch` (emptying it) with one flush, counting what was written.
async fn write_all(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &mut Vec<Message>,
) -> Result<(), axum::Error> {
    let (mut frames, mut bytes) = (0u64, 0u64);
    for message in batch.drain(..) {
        frames += 1;
        bytes += match &message {
            Message::Text(text) => text.len() as u64,
            Message::Binary(data) => data.len() as u64,
            _ => 0,
        };
        sink.feed(message).await?;
    }
    sink.flush().await?;
    crate::metrics::websocket_written(frames, bytes);
    Ok(())
}

async fn next_text(stream: &mut SplitStream<WebSocket>) -> Option<String> {
    while let Some(message) = stream.next().await {
        match message.ok()? {
            Message::Text(text) => return Some(text.to_string()),
            Message::Binary(bytes) => return Some(String::from_utf8_lossy(&bytes).into_owned()),
            Message::Close(_) => return None,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use axum::extract::ws::Message;

    use super::spends_budget;

    #[test]
    fn only_a_pong_spends_nothing_told_by_its_parsed_type() {
        let text = |t: &str| Ok(Message::Text(t.to_string().into()));
        assert!(!spends_budget(&text(r#"{"type":"pong"}"#)));
        assert!(!spends_budget(&text(
            r#"{ "type" : "pong", "payload": {} }"#
        )));
        assert!(spends_budget(&text(
            r#"{"id":"1","type":"subscribe","payload":{"query":"{ me { id } }","variables":{"x":"pong"}}}"#
        )));
        assert!(spends_budget(&text(r#"{"type":"ping"}"#)));
        assert!(spends_budget(&text("not json \"pong\"")));
        assert!(!spends_budget(&Ok(Message::Ping(Default::default()))));
    }
}
