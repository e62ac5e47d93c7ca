//! A fake Telegram Bot API on loopback: speaks `sendMessage` and `getMe` as
//! the real one does, records every request, and answers as scripted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const TOKEN: &str = "123456:TEST-token-for-the-fake-bot-api_0";

/// How the fake answers one request.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    Ok,
    /// 429 with `parameters.retry_after`.
    RateLimited(u16),
    /// 500 with a JSON error body.
    ServerError,
    /// 502 with an HTML body, as a proxy in front of the API answers.
    BadGatewayHtml,
    /// 403: the bot was blocked by the user.
    Forbidden,
    /// Never answers (longer than any client timeout).
    Hang,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub token: String,
    pub chat_id: String,
    pub text: String,
    pub parse_mode: Option<String>,
    pub at: Instant,
    pub reply: Reply,
}

#[derive(Default)]
struct Fake {
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    received: Mutex<Vec<Received>>,
    next_id: AtomicI64,
}

pub struct FakeTelegram {
    pub url: String,
    fake: Arc<Fake>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn send_message(
    State(fake): State<Arc<Fake>>,
    Path(bot): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let reply = fake
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or(*fake.default.lock().unwrap())
        .unwrap_or(Reply::Ok);
    let chat_id = match &body["chat_id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    fake.received.lock().unwrap().push(Received {
        token: bot.trim_start_matches("bot").to_string(),
        chat_id: chat_id.clone(),
        text: body["text"].as_str().unwrap_or_default().to_string(),
        parse_mode: body["parse_mode"].as_str().map(String::from),
        at: Instant::now(),
        reply,
    });
    let error = |status: StatusCode, code: u16, description: &str, params: Option<Value>| {
        let mut body = json!({ "ok": false, "error_code": code, "description": description });
        if let Some(p) = params {
            body["parameters"] = p;
        }
        (status, Json(body)).into_response()
    };
    match reply {
        Reply::Ok => {
            let id = fake.next_id.fetch_add(1, Ordering::SeqCst) + 1;
            Json(json!({
                "ok": true,
                "result": {
                    "message_id": id,
                    "date": 1_764_000_000,
                    "chat": { "id": chat_id.parse::<i64>().unwrap_or(-1), "type": "private" },
                    "text": body["text"],
                }
            }))
            .into_response()
        }
        Reply::RateLimited(secs) => error(
            StatusCode::TOO_MANY_REQUESTS,
            429,
            &format!("Too Many Requests: retry after {secs}"),
            Some(json!({ "retry_after": secs })),
        ),
        Reply::ServerError => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            500,
            "Internal Server Error",
            None,
        ),
        Reply::BadGatewayHtml => (
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html")],
            "<html><body>502 Bad Gateway</body></html>",
        )
            .into_response(),
        Reply::Forbidden => error(
            StatusCode::FORBIDDEN,
            403,
            "Forbidden: bot was blocked by the user",
            None,
        ),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

/// getMe: a token with REVOKED in it is refused (401) as Telegram refuses
/// a revoked one; the default reply (`set_default`) applies as to sends.
async fn get_me(State(fake): State<Arc<Fake>>, Path(bot): Path<String>) -> Response {
    if bot.contains("REVOKED") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "ok": false, "error_code": 401, "description": "Unauthorized" })),
        )
            .into_response();
    }
    if matches!(*fake.default.lock().unwrap(), Some(Reply::ServerError)) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "ok": false, "error_code": 500, "description": "Internal Server Error" })),
        )
            .into_response();
    }
    Json(json!({
        "ok": true,
        "result": { "id": 123456, "is_bot": true, "first_name": "Stockroom", "username": "stockroom_test_bot" }
    }))
    .into_response()
}

impl FakeTelegram {
    pub async fn start() -> Self {
        let fake = Arc::new(Fake::default());
        let app = axum::Router::new()
            .route("/{bot}/sendMessage", post(send_message))
            .route("/{bot}/getMe", post(get_me).get(get_me))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, fake, server }
    }

    /// Answers the next requests with `replies`, in order; then `Ok` (or the
    /// default).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.fake.script.lock().unwrap().extend(replies);
    }

    pub fn set_default(&self, reply: Option<Reply>) {
        *self.fake.default.lock().unwrap() = reply;
    }

    /// Every request received so far, answered or not.
    pub fn received(&self) -> Vec<Received> {
        self.fake.received.lock().unwrap().clone()
    }

    /// The requests answered with success.
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| matches!(r.reply, Reply::Ok))
            .collect()
    }

    /// Waits (bounded) until `n` messages were delivered.
    pub async fn wait_delivered(&self, n: usize, wait: Duration) -> Vec<Received> {
        let deadline = Instant::now() + wait;
        loop {
            let got = self.delivered();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Settings for an app that sends to this fake.
    pub fn vars(&self, chats: &str) -> Vec<(String, String)> {
        vec![
            ("TELEGRAM_API_URL".into(), self.url.clone()),
            ("TELEGRAM_BOT_TOKEN".into(), TOKEN.into()),
            ("TELEGRAM_CHAT_IDS".into(), chats.into()),
        ]
    }
}
