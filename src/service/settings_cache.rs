//! The notification settings in effect: the one `notification_settings`
//! row merged with the environment, cached for a few seconds. What the
//! services' context keeps; changing them is the settings service's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, EntityTrait};

use crate::config::{Config, Secret};
use crate::entity::alert::AlertKind;
use crate::entity::notification_settings;
use crate::error::{AppError, AppResult};
use crate::sealing::{OpenError, Sealer};

/// The id of the one settings row.
pub(super) const ROW_ID: i32 = 1;
/// What the stored bot token is bound to when sealed.
const BOT_TOKEN_BOUND: &[u8] = b"notification_settings.bot_token";
/// How long another instance may use settings older than a change.
const CACHE_TTL: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    Database,
    Environment,
    None,
}

impl TokenSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Database => "database",
            Self::Environment => "environment",
            Self::None => "none",
        }
    }
}

/// The Telegram settings in effect.
#[derive(Clone, Debug)]
pub struct TelegramSettings {
    pub enabled: bool,
    pub token: Option<Secret>,
    pub token_source: TokenSource,
    /// The bot's username as getMe gave it when the token was saved (a token
    /// from the environment is not checked: None).
    pub bot_name: Option<String>,
    pub chat_ids: Vec<String>,
    pub kinds: Vec<AlertKind>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl TelegramSettings {
    /// Enabled, with a token and at least one chat.
    pub fn configured(&self) -> bool {
        self.enabled && self.token.is_some() && !self.chat_ids.is_empty()
    }

    /// Whether an alert of `kind` is created now.
    pub fn sends(&self, kind: AlertKind) -> bool {
        self.configured() && self.kinds.contains(&kind)
    }

    /// The token's last four characters.
    pub fn token_hint(&self) -> Option<String> {
        self.token.as_ref().map(|t| {
            let chars: Vec<char> = t.expose().chars().collect();
            chars[chars.len().saturating_sub(4)..].iter().collect()
        })
    }
}

/// The environment's defaults plus a short cache of the row.
pub struct SettingsCache {
    env_token: Option<Secret>,
    /// Opens the stored token.
    sealer: Arc<Sealer>,
    env_chats: Vec<String>,
    cached: Mutex<Cached>,
}

/// The cached row, and how many times it was invalidated: a read that
/// started before an invalidation must not store what it read (it may be
/// the row as it was before the change that invalidated it).
#[derive(Default)]
struct Cached {
    generation: u64,
    entry: Option<(Instant, Arc<TelegramSettings>)>,
}

impl SettingsCache {
    pub fn new(config: &Config, sealer: Arc<Sealer>) -> Self {
        Self {
            env_token: config.telegram_bot_token.clone(),
            sealer,
            env_chats: config.telegram_chat_ids.to_vec(),
            cached: Mutex::new(Cached::default()),
        }
    }

    /// The settings in effect: cached for a few seconds, read on `conn`
    /// otherwise (so inside a caller's transaction when there is one).
    pub async fn current(&self, conn: &impl ConnectionTrait) -> AppResult<Arc<TelegramSettings>> {
        let generation = match self.cached.lock() {
            Ok(cached) => {
                if let Some((at, settings)) = cached.entry.as_ref()
                    && at.elapsed() < CACHE_TTL
                {
                    return Ok(Arc::clone(settings));
                }
                Some(cached.generation)
            }
            Err(_) => None,
        };
        let row = notification_settings::Entity::find_by_id(ROW_ID)
            .one(conn)
            .await?;
        let settings = Arc::new(self.merge(row.as_ref()));
        if let Ok(mut cached) = self.cached.lock()
            && Some(cached.generation) == generation
        {
            cached.entry = Some((Instant::now(), Arc::clone(&settings)));
        }
        Ok(settings)
    }

    pub fn invalidate(&self) {
        if let Ok(mut cached) = self.cached.lock() {
            cached.generation += 1;
            cached.entry = None;
        }
    }

    pub(super) fn merge(&self, row: Option<&notification_settings::Model>) -> TelegramSettings {
        // Sealed at rest. One that does not open counts as none: an instance
        // does not start unless every stored secret opens
        // (its start-up check), so this is only a damaged row.
        let db_token = row
            .and_then(|r| r.bot_token.as_deref())
            .filter(|t| !t.is_empty())
            .and_then(|stored| match open_bot_token(&self.sealer, stored) {
                Ok(token) => Some(token),
                Err(e) => {
                    tracing::error!(error = %e, "the stored bot token does not open");
                    None
                }
            });
        let (token, token_source) = match (db_token, &self.env_token) {
            (Some(t), _) => (Some(Secret::new(t)), TokenSource::Database),
            (None, Some(t)) => (Some(t.clone()), TokenSource::Environment),
            (None, None) => (None, TokenSource::None),
        };
        let bot_name = row
            .and_then(|r| r.bot_name.clone())
            .filter(|_| token_source == TokenSource::Database);
        let chat_ids = row
            .and_then(|r| r.chat_ids.as_deref())
            .and_then(|j| serde_json::from_str::<Vec<String>>(j).ok())
            .unwrap_or_else(|| self.env_chats.clone());
        let kinds = row
            .and_then(|r| serde_json::from_str::<Vec<AlertKind>>(&r.enabled_kinds).ok())
            .unwrap_or_else(|| AlertKind::DEFAULTS.to_vec());
        TelegramSettings {
            enabled: row.is_none_or(|r| r.telegram_enabled),
            token,
            token_source,
            bot_name,
            chat_ids,
            kinds,
            updated_at: row.and_then(|r| r.updated_at),
        }
    }
}

impl std::fmt::Debug for SettingsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SettingsCache")
    }
}

/// The bot token as stored: sealed, or (an earlier release) in plain text.
pub fn open_bot_token(sealer: &Sealer, stored: &str) -> Result<String, OpenError> {
    if !Sealer::is_sealed(stored) {
        return Ok(stored.to_string());
    }
    String::from_utf8(sealer.open(BOT_TOKEN_BOUND, stored)?).map_err(|_| OpenError::Damaged)
}

pub fn seal_bot_token(sealer: &Sealer, token: &str) -> AppResult<String> {
    sealer
        .seal(BOT_TOKEN_BOUND, token.as_bytes())
        .map_err(AppError::internal)
}
