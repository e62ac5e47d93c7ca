use sea_orm::entity::prelude::*;

/// The one settings row (id 1). `chat_ids` NULL means "from the environment";
/// `bot_token` is write-only: never returned, logged or audited.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notification_settings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    pub telegram_enabled: bool,
    /// JSON array of chat ids.
    #[sea_orm(column_type = "Text", nullable)]
    pub chat_ids: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub bot_token: Option<String>,
    /// The bot's username, from Telegram's getMe when the token was saved.
    #[sea_orm(column_type = "Text", nullable)]
    pub bot_name: Option<String>,
    /// JSON array of alert kinds.
    #[sea_orm(column_type = "Text")]
    pub enabled_kinds: String,
    /// Set from Telegram's 429 `retry_after`: no instance sends before then.
    pub paused_until: Option<DateTimeUtc>,
    pub updated_at: Option<DateTimeUtc>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationSettings")
            .field("telegram_enabled", &self.telegram_enabled)
            .field("chat_ids", &self.chat_ids)
            .field("bot_token", &self.bot_token.as_ref().map(|_| "***"))
            .field("enabled_kinds", &self.enabled_kinds)
            .finish()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
