//! GraphQL over WebSocket: graphql-transport-ws and the legacy graphql-ws
//! (subscriptions-transport-ws).
//!
//! The session is served here rather than by async-graphql's, so that a
//! group's answer, serialized once ([`Payload::Shared`]), is framed for each
//! socket by copying its bytes between the subscription's own prefix and a
//! closing brace, never serialized again. Everything a connection sends or
//! receives passes through [`Socket::serve`]: the token check at
//! `connection_init`, the address's rate limit on every operation, the
//! keep-alive, the cut-off of a client that stops reading, and shutdown.

use std::pin::pin;
use std::sync::Arc;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::{Data, Request};
use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, BoxStream, SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_stream::StreamMap;

use super::graphql::{bearer, bearer_token, request_meta};
use super::negotiate::header_str;
use super::{ClientIp, HttpState};
use crate::graphql::context::RequestContext;
use crate::graphql::fanout::{Payload, SocketSubscriptions};
use crate::graphql::pipeline::Pipeline;
use crate::limits::ConnectionSlot;
use crate::service::RequestMeta;
use crate::state::AppState;

/// WebSocket subscriptions (graphql-transport-ws and the legacy graphql-ws).
/// The token comes in the connection_init payload:
/// `{ "Authorization": "Bearer ..." }` (also `authorization` or `token`).
pub async fn graphql_ws(
    State(state): State<HttpState>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The first protocol of ours the client offered, as axum chooses the
    // one it answers with (given only that one), so that both sides agree;
    // none is a bad request.
    let offered = header_str(&headers, header::SEC_WEBSOCKET_PROTOCOL).unwrap_or_default();
    let Some(protocol) = ALL_WEBSOCKET_PROTOCOLS
        .into_iter()
        .find(|ours| offered.split(',').any(|p| p.trim() == *ours))
    else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let slot = match state.app.sockets.acquire(&ip.0) {
        Ok(slot) => slot,
        Err(err) => return err.into_response(),
    };
    let socket = Socket {
        app: state.app.clone(),
        pipeline: state.pipeline.clone(),
        transport_ws: protocol == TRANSPORT_WS,
        meta: request_meta(&headers, &ip),
        header_token: bearer_token(&headers),
        _slot: slot,
    };
    let tasks = state.app.tasks.clone();
    // Clients send small messages; tungstenite's 128 KiB default buffers
    // would cost every idle subscriber a quarter of a megabyte, and its read
    // buffer is allocated whole for every connection (a larger message grows
    // it). Writes still batch up to the write buffer before they wait for
    // the socket.
    upgrade
        .protocols([protocol])
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(state.app.config.request_body_limit)
        .on_upgrade(move |ws| tasks.track_future(socket.serve(ws)))
}

/// The graphql-transport-ws protocol's name; the other is the legacy
/// graphql-ws.
const TRANSPORT_WS: &str = "graphql-transport-ws";

/// How long a close (or the handshake's answer) may wait on a client that
/// reads nothing before the connection is dropped without it.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// One WebSocket connection, from its upgrade to its close.
struct Socket {
    app: AppState,
    pipeline: Pipeline,
    /// graphql-transport-ws; false for the legacy graphql-ws.
    transport_ws: bool,
    meta: RequestMeta,
    header_token: Option<String>,
    _slot: ConnectionSlot,
}

/// How a connection is closed by the server.
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
const TOO_MANY_INITS: Refusal = Refusal {
    code: 4429,
    reason: "Too many initialisation requests",
};
const INVALID_MESSAGE: Refusal = Refusal {
    code: 4400,
    reason: "Invalid message received",
};
const DUPLICATE_ID: Refusal = Refusal {
    code: 4409,
    reason: "Subscriber for this id already exists",
};
const SILENT: Refusal = Refusal {
    code: 3008,
    reason: "timeout",
};
const GOING_AWAY: Refusal = Refusal {
    code: 1001,
    reason: "server shutting down",
};

/// A client's message, on either protocol (graphql-transport-ws names
/// first, the legacy protocol's as aliases).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        payload: Option<serde_json::Value>,
    },
    #[serde(alias = "start")]
    Subscribe {
        id: String,
        payload: Box<Request>,
    },
    #[serde(alias = "stop")]
    Complete {
        id: String,
    },
    ConnectionTerminate {},
    Ping {},
    Pong {},
}

impl ClientMessage {
    /// Every client message spends the address's budget but a `pong`, the
    /// answer to the server's own keep-alive ping (told by its parsed type,
    /// not its text); one that cannot be read spends it too.
    fn spends_budget(message: &Result<Self, serde_json::Error>) -> bool {
        !matches!(message, Ok(Self::Pong {}))
    }
}

/// The token a connection_init message carries in its payload, with or
/// without "Bearer ": None when the message is not a connection_init,
/// `Some(None)` when it carries no token.
fn init_token(message: &str) -> Option<Option<String>> {
    let Ok(ClientMessage::ConnectionInit { payload }) = serde_json::from_str(message) else {
        return None;
    };
    let payload = payload.as_ref();
    Some(
        ["Authorization", "authorization", "token"]
            .iter()
            .find_map(|key| payload?.get(*key)?.as_str())
            .map(|v| bearer(v).unwrap_or_else(|| v.trim().to_string()))
            .filter(|t| !t.is_empty()),
    )
}

/// The frames of one subscription, its id serialized once.
struct Frames {
    /// `{"id":…,"type":"next","payload":` (`"data"` on the legacy protocol).
    next: String,
    complete: Message,
}

impl Frames {
    fn new(id: &str, transport_ws: bool) -> Self {
        // A string always serializes.
        let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into());
        let kind = if transport_ws { "next" } else { "data" };
        Self {
            next: format!(r#"{{"id":{id},"type":"{kind}","payload":"#),
            complete: Message::Text(format!(r#"{{"id":{id},"type":"complete"}}"#).into()),
        }
    }

    /// An answer framed for this subscription: its bytes copied once.
    fn next(&self, payload: &Payload) -> Message {
        let mut text = String::with_capacity(self.next.len() + payload.size_hint() + 1);
        text.push_str(&self.next);
        payload.write_json(&mut text);
        text.push('}');
        Message::Text(text.into())
    }
}

/// What a subscription's stream yields: an answer, or its last frame.
enum Frame {
    Next(Message),
    /// `complete`: the subscription is taken off the connection as it is
    /// sent, so that its id is free again at once.
    Last(Message),
}

impl Frame {
    fn sent(self, streams: &mut StreamMap<String, BoxStream<'static, Frame>>, id: &str) -> Message {
        match self {
            Self::Next(message) => message,
            Self::Last(message) => {
                streams.remove(id);
                message
            }
        }
    }
}

/// Most messages gathered into one socket write.
const WRITE_BATCH: usize = 64;

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
        if !self.budget_left() {
            return self.refuse(&mut sink, TOO_MANY_REQUESTS).await;
        }
        // Only the token is kept: the message is freed before the session.
        let offered = init_token(&first);
        drop(first);
        let Some(offered) = offered else {
            return self.refuse(&mut sink, UNAUTHORIZED).await;
        };
        let Some(token) = offered.or_else(|| self.header_token.clone()) else {
            return self.refuse(&mut sink, UNAUTHORIZED).await;
        };
        // Boxed: an awaited future is part of this one's state for the
        // connection's whole life, and the check's database read is large.
        let checked = Box::pin(self.app.auth.authenticate(&self.app.services, &token)).await;
        if checked.is_err() {
            return self.refuse(&mut sink, FORBIDDEN).await;
        }
        let mut data = Data::default();
        data.insert(RequestContext::new(self.meta.clone(), Some(token)));
        data.insert(SocketSubscriptions::new(
            self.app.config.ws_max_subscriptions_per_connection,
        ));
        let ack = Message::Text(r#"{"type":"connection_ack"}"#.into());
        if !matches!(
            tokio::time::timeout(CLOSE_WAIT, sink.send(ack)).await,
            Ok(Ok(()))
        ) {
            return;
        }
        match self.session(&mut sink, stream, Arc::new(data)).await {
            Some(refusal) => self.refuse(&mut sink, refusal).await,
            // The client closed or went: answer its close if it can be.
            None => drop(tokio::time::timeout(CLOSE_WAIT, sink.close()).await),
        }
    }

    /// Whether the address may send one more operation.
    fn budget_left(&self) -> bool {
        let ip = self.meta.ip.as_deref().unwrap_or_default();
        self.app.limiters.check_default(ip).is_ok()
    }

    /// An acknowledged connection: the client's operations, their answers,
    /// the keep-alive. Ends when the client goes (None) or with how to close.
    async fn session(
        &self,
        sink: &mut SplitSink<WebSocket, Message>,
        mut input: SplitStream<WebSocket>,
        data: Arc<Data>,
    ) -> Option<Refusal> {
        // Each wait is made once for the session, not once per answer.
        let mut going = pin!(self.app.shutdown.cancelled());
        let writes = crate::metrics::WebsocketWrites::default();
        let keepalive = self.app.config.ws_keepalive;
        // A client silent for three keep-alive intervals is gone (on
        // graphql-transport-ws, whose clients answer our pings); so is one
        // that reads nothing for as long.
        let patience = keepalive * 3;
        let ping = Message::Text(
            if self.transport_ws {
                r#"{"type":"ping"}"#
            } else {
                r#"{"type":"ka"}"#
            }
            .into(),
        );
        let mut tick = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        // After a write that waited, one ping, not the ones missed meanwhile.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut silent = pin!(tokio::time::sleep(patience));
        let mut streams: StreamMap<String, BoxStream<'static, Frame>> = StreamMap::new();
        let mut batch: Vec<Message> = Vec::with_capacity(WRITE_BATCH);
        loop {
            tokio::select! {
                biased;
                _ = going.as_mut() => return Some(GOING_AWAY),
                message = input.next() => {
                    let message = match &message {
                        Some(Ok(Message::Text(text))) => serde_json::from_str::<ClientMessage>(text),
                        Some(Ok(Message::Binary(bytes))) => serde_json::from_slice(bytes),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                    };
                    silent.as_mut().reset(Instant::now() + patience);
                    if ClientMessage::spends_budget(&message) && !self.budget_left() {
                        return Some(TOO_MANY_REQUESTS);
                    }
                    match message {
                        Err(_) => return Some(INVALID_MESSAGE),
                        Ok(ClientMessage::ConnectionInit { .. }) => return Some(TOO_MANY_INITS),
                        Ok(ClientMessage::Subscribe { id, payload }) => {
                            if streams.contains_key(&id) {
                                return Some(DUPLICATE_ID);
                            }
                            let frames = Frames::new(&id, self.transport_ws);
                            let complete = Frame::Last(frames.complete.clone());
                            let answers = self
                                .pipeline
                                .operate(*payload, Arc::clone(&data))
                                .map(move |payload| Frame::Next(frames.next(&payload)))
                                .chain(stream::once(std::future::ready(complete)));
                            streams.insert(id, answers.boxed());
                        }
                        Ok(ClientMessage::Complete { id }) => {
                            // graphql-transport-ws: the client completed it and
                            // hears nothing more; the legacy protocol confirms.
                            if streams.remove(&id).is_some() && !self.transport_ws {
                                batch.push(Frames::new(&id, false).complete);
                            }
                        }
                        Ok(ClientMessage::ConnectionTerminate {}) => return None,
                        Ok(ClientMessage::Ping {}) => {
                            batch.push(Message::Text(r#"{"type":"pong"}"#.into()));
                        }
                        Ok(ClientMessage::Pong {}) => {}
                    }
                }
                Some((id, frame)) = streams.next(), if !streams.is_empty() => {
                    // Whatever else is ready goes out in the same write.
                    let mut next = Some((id, frame));
                    while let Some((id, frame)) = next.take() {
                        batch.push(frame.sent(&mut streams, &id));
                        if batch.len() < WRITE_BATCH {
                            next = streams.next().now_or_never().flatten();
                        }
                    }
                }
                _ = tick.tick() => batch.push(ping.clone()),
                _ = silent.as_mut(), if self.transport_ws => return Some(SILENT),
            }
            if batch.is_empty() {
                continue;
            }
            // While this waits on a slow reader its streams are not read; a
            // member that falls too far behind its group ends with
            // SUBSCRIPTION_LAGGED, and the group's other members go on.
            let mut write = pin!(write_all(sink, &mut batch, &writes));
            let written = match write.as_mut().now_or_never() {
                Some(written) => written.is_ok(),
                None => tokio::select! {
                    written = tokio::time::timeout(patience, write) => matches!(written, Ok(Ok(()))),
                    _ = going.as_mut() => return Some(GOING_AWAY),
                },
            };
            if !written {
                return None;
            }
        }
    }

    /// Closes the connection: with the close code on graphql-transport-ws,
    /// with a `connection_error` message first on the legacy protocol.
    async fn refuse(&self, sink: &mut SplitSink<WebSocket, Message>, refusal: Refusal) {
        // A client that stopped reading does not hold the connection open.
        let _ = tokio::time::timeout(CLOSE_WAIT, self.close_with(sink, refusal)).await;
    }

    async fn close_with(&self, sink: &mut SplitSink<WebSocket, Message>, refusal: Refusal) {
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

/// Writes `batch` (emptying it) with one flush, counting what was written.
async fn write_all(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &mut Vec<Message>,
    writes: &crate::metrics::WebsocketWrites,
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
    writes.written(frames, bytes);
    Ok(())
}

/// The next text message, skipping pings; None when the client went away.
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
    use super::{ClientMessage, Frames};
    use crate::graphql::fanout::Payload;

    fn spends(text: &str) -> bool {
        ClientMessage::spends_budget(&serde_json::from_str(text))
    }

    #[test]
    fn only_a_pong_spends_nothing_told_by_its_parsed_type() {
        assert!(!spends(r#"{"type":"pong"}"#));
        assert!(!spends(r#"{ "type" : "pong", "payload": {} }"#));
        assert!(spends(
            r#"{"id":"1","type":"subscribe","payload":{"query":"{ me { id } }","variables":{"x":"pong"}}}"#
        ));
        assert!(spends(r#"{"type":"ping"}"#));
        assert!(spends("not json \"pong\""));
    }

    #[test]
    fn the_token_is_read_from_the_connection_init_payload_only() {
        use super::init_token;
        let bearer = r#"{"type":"connection_init","payload":{"Authorization":"Bearer t1"}}"#;
        assert_eq!(init_token(bearer), Some(Some("t1".into())));
        let bare = r#"{"type":"connection_init","payload":{"token":" t2 "}}"#;
        assert_eq!(init_token(bare), Some(Some("t2".into())));
        assert_eq!(init_token(r#"{"type":"connection_init"}"#), Some(None));
        assert_eq!(
            init_token(r#"{"type":"connection_init","payload":{"token":""}}"#),
            Some(None)
        );
        assert_eq!(
            init_token(r#"{"type":"subscribe","payload":{"token":"t"}}"#),
            None
        );
        assert_eq!(init_token("not json"), None);
    }

    #[test]
    fn both_protocols_names_are_read() {
        for text in [
            r#"{"type":"connection_init","payload":{"token":"t"}}"#,
            r#"{"id":"a","type":"subscribe","payload":{"query":"{ me { id } }"}}"#,
            r#"{"id":"a","type":"start","payload":{"query":"{ me { id } }","variables":{}}}"#,
            r#"{"id":"a","type":"complete"}"#,
            r#"{"id":"a","type":"stop"}"#,
            r#"{"type":"connection_terminate"}"#,
            r#"{"type":"ping","payload":{"at":1}}"#,
        ] {
            assert!(
                serde_json::from_str::<ClientMessage>(text).is_ok(),
                "{text}"
            );
        }
        for text in [
            r#"{"type":"subscribe","payload":{"query":"{ me { id } }"}}"#,
            r#"{"id":"a","type":"next","payload":{}}"#,
            r#"{"id":"a"}"#,
        ] {
            assert!(
                serde_json::from_str::<ClientMessage>(text).is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn a_frame_is_the_answer_between_its_subscriptions_id_and_a_brace() {
        let response = async_graphql::Response::new(
            async_graphql::Value::from_json(
                serde_json::json!({ "me": { "email": "a\"b@example.com" } }),
            )
            .unwrap_or_default(),
        );
        let rendered =
            std::sync::Arc::new(crate::graphql::fanout::Rendered::new(&response, None, None));
        let frames = Frames::new("x\"1", true);
        let axum::extract::ws::Message::Text(text) = frames.next(&Payload::Shared(rendered)) else {
            panic!("a text frame");
        };
        let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
        assert_eq!(
            frame,
            serde_json::json!({
                "id": "x\"1",
                "type": "next",
                "payload": { "data": { "me": { "email": "a\"b@example.com" } } },
            })
        );
        let legacy = Frames::new("7", false);
        let axum::extract::ws::Message::Text(text) = legacy.next(&Payload::own(
            async_graphql::Response::new(async_graphql::Value::Null),
        )) else {
            panic!("a text frame");
        };
        assert_eq!(
            text.as_str(),
            r#"{"id":"7","type":"data","payload":{"data":null}}"#
        );
        let axum::extract::ws::Message::Text(text) = legacy.complete else {
            panic!("a text frame");
        };
        assert_eq!(text.as_str(), r#"{"id":"7","type":"complete"}"#);
    }
}
