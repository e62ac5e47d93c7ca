use sea_orm::entity::prelude::*;

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    async_graphql::Enum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
pub enum AlertKind {
    /// A movement took a product from above its threshold to at or below it.
    #[sea_orm(string_value = "LOW_STOCK")]
    LowStock,
    /// A movement took a product's stock to zero.
    #[sea_orm(string_value = "OUT_OF_STOCK")]
    OutOfStock,
    /// Every movement (off by default).
    #[sea_orm(string_value = "STOCK_MOVEMENT")]
    StockMovement,
    #[sea_orm(string_value = "UPLOAD_FINISHED")]
    UploadFinished,
    /// Repeated failed logins for one account or from one address.
    #[sea_orm(string_value = "LOGIN_FAILURES")]
    LoginFailures,
    #[sea_orm(string_value = "TEST")]
    Test,
}

impl AlertKind {
    /// Enabled unless an admin turns them off.
    pub const DEFAULTS: [AlertKind; 5] = [
        AlertKind::LowStock,
        AlertKind::OutOfStock,
        AlertKind::UploadFinished,
        AlertKind::LoginFailures,
        AlertKind::Test,
    ];
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    async_graphql::Enum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum AlertStatus {
    /// Waiting for its first attempt or for `retry_at`.
    #[sea_orm(string_value = "PENDING")]
    Pending,
    /// Claimed by a notifier until `lease_until`.
    #[sea_orm(string_value = "SENDING")]
    Sending,
    #[sea_orm(string_value = "SENT")]
    Sent,
    /// Gave up: attempts exhausted or a permanent error; `retryAlert` revives it.
    #[sea_orm(string_value = "DEAD")]
    Dead,
}

/// One message to one Telegram chat: the transactional outbox.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "alerts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub kind: AlertKind,
    pub status: AlertStatus,
    pub chat_id: String,
    #[sea_orm(column_type = "Text")]
    pub message: String,
    pub attempts: i32,
    pub retry_at: Option<DateTimeUtc>,
    pub lease_until: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    pub dedupe_key: Option<String>,
    pub telegram_message_id: Option<i64>,
    pub created_at: DateTimeUtc,
    pub sent_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
