//! Sending one message to Telegram, behind a small trait so that the notifier
//! does not depend on the HTTP client.

use std::time::Duration;

use async_trait::async_trait;
use frankenstein::AsyncTelegramApi;
use frankenstein::client_reqwest::Bot;
use frankenstein::methods::SendMessageParams;
use frankenstein::{Error, ParseMode};

/// How a send failed, as the retry policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// 429: nothing may go to this bot before `retry_after`.
    RateLimited {
        retry_after: Duration,
        detail: String,
    },
    /// Bad chat, blocked bot, bad token (400, 401, 403, 404): no retry helps.
    Permanent(String),
    /// 5xx, timeouts, network errors: worth retrying.
    Temporary(String),
}

impl SendError {
    pub fn detail(&self) -> &str {
        match self {
            Self::RateLimited { detail, .. }
            | Self::Permanent(detail)
            | Self::Temporary(detail) => detail,
        }
    }
}

#[async_trait]
pub trait AlertSender: Send + Sync {
    /// Sends `text` (HTML) to `chat_id` with `token`; returns Telegram's
    /// message id.
    async fn send(&self, token: &str, chat_id: &str, text: &str) -> Result<i64, SendError>;

    /// The username of the bot `token` belongs to (getMe): how a token is
    /// checked before it is saved.
    async fn bot_name(&self, token: &str) -> Result<String, SendError>;
}

/// The Bot API through frankenstein's reqwest client.
pub struct TelegramSender {
    api_url: String,
    timeout: Duration,
    /// Built at the first send: an instance without Telegram never pays for
    /// an HTTP client and its TLS set-up.
    client: std::sync::OnceLock<frankenstein::reqwest::Client>,
}

impl TelegramSender {
    pub fn new(api_url: &str, timeout: Duration) -> Self {
        Self {
            api_url: api_url.trim_end_matches('/').to_string(),
            timeout,
            client: std::sync::OnceLock::new(),
        }
    }

    fn client(&self) -> Result<frankenstein::reqwest::Client, SendError> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        let client = frankenstein::reqwest::Client::builder()
            .connect_timeout(self.timeout.min(Duration::from_secs(5)))
            .timeout(self.timeout)
            .build()
            .map_err(|e| SendError::Temporary(format!("HTTP client: {e}")))?;
        Ok(self.client.get_or_init(|| client).clone())
    }
}

fn chat(chat_id: &str) -> frankenstein::types::ChatId {
    match chat_id.parse::<i64>() {
        Ok(n) => n.into(),
        Err(_) => chat_id.to_string().into(),
    }
}

/// Sorts a Bot API failure into the retry policy's classes. Keyed on
/// `parameters.retry_after` first: error codes may change.
pub fn classify(err: Error) -> SendError {
    match err {
        Error::Api(api) => {
            let detail = format!("{} {}", api.error_code, api.description);
            if let Some(secs) = api.parameters.as_ref().and_then(|p| p.retry_after) {
                return SendError::RateLimited {
                    retry_after: Duration::from_secs(u64::from(secs)),
                    detail,
                };
            }
            match api.error_code {
                429 => SendError::RateLimited {
                    retry_after: Duration::from_secs(1),
                    detail,
                },
                400 | 401 | 403 | 404 => SendError::Permanent(detail),
                _ => SendError::Temporary(detail),
            }
        }
        // reqwest errors come without the URL (it holds the token).
        Error::HttpReqwest(e) if e.is_timeout() => SendError::Temporary("timed out".into()),
        Error::HttpReqwest(e) if e.is_connect() => {
            SendError::Temporary("could not connect to the Bot API".into())
        }
        Error::HttpReqwest(e) => SendError::Temporary(format!("HTTP error: {e}")),
        Error::JsonDecode { .. } => {
            SendError::Temporary("the Bot API answered with something other than JSON".into())
        }
        other => SendError::Temporary(other.to_string()),
    }
}

impl TelegramSender {
    fn bot(&self, token: &str) -> Result<Bot, SendError> {
        Ok(Bot::builder()
            .api_url(format!("{}/bot{token}", self.api_url))
            .client(self.client()?)
            .build())
    }
}

#[async_trait]
impl AlertSender for TelegramSender {
    async fn bot_name(&self, token: &str) -> Result<String, SendError> {
        let me = self.bot(token)?.get_me().await.map_err(classify)?.result;
        Ok(me.username.unwrap_or(me.first_name))
    }

    async fn send(&self, token: &str, chat_id: &str, text: &str) -> Result<i64, SendError> {
        let bot = self.bot(token)?;
        let params = SendMessageParams::builder()
            .chat_id(chat(chat_id))
            .text(text)
            .parse_mode(ParseMode::Html)
            .build();
        let result = bot.send_message(&params).await;
        crate::metrics::telegram_response(match &result {
            Ok(_) => "ok",
            Err(Error::Api(api)) if api.error_code == 429 => "429",
            Err(Error::Api(api)) if (400..500).contains(&api.error_code) => "4xx",
            Err(Error::Api(_)) => "5xx",
            Err(Error::HttpReqwest(e)) if e.is_timeout() => "timeout",
            Err(_) => "network",
        });
        result
            .map(|r| i64::from(r.result.message_id))
            .map_err(classify)
    }
}
