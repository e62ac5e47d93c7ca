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
pub enum AuditAction {
    #[sea_orm(string_value = "CREATE")]
    Create,
    #[sea_orm(string_value = "UPDATE")]
    Update,
    #[sea_orm(string_value = "DELETE")]
    Delete,
    #[sea_orm(string_value = "LOGIN")]
    Login,
    #[sea_orm(string_value = "LOGIN_FAILED")]
    LoginFailed,
    #[sea_orm(string_value = "LOGOUT")]
    Logout,
    #[sea_orm(string_value = "PASSWORD_CHANGE")]
    PasswordChange,
    #[sea_orm(string_value = "STOCK_INBOUND")]
    StockInbound,
    #[sea_orm(string_value = "STOCK_OUTBOUND")]
    StockOutbound,
    #[sea_orm(string_value = "STOCK_RETURN")]
    StockReturn,
    #[sea_orm(string_value = "STOCK_ADJUSTMENT")]
    StockAdjustment,
    #[sea_orm(string_value = "SETTINGS_UPDATE")]
    SettingsUpdate,
    #[sea_orm(string_value = "ALERT_TEST")]
    AlertTest,
    #[sea_orm(string_value = "ALERT_RETRY")]
    AlertRetry,
    #[sea_orm(string_value = "UPLOAD_CREATE")]
    UploadCreate,
    #[sea_orm(string_value = "UPLOAD_FINISH")]
    UploadFinish,
    #[sea_orm(string_value = "TWO_FACTOR_ENROLL")]
    TwoFactorEnroll,
    #[sea_orm(string_value = "TWO_FACTOR_ENABLE")]
    TwoFactorEnable,
    #[sea_orm(string_value = "TWO_FACTOR_DISABLE")]
    TwoFactorDisable,
    #[sea_orm(string_value = "ACCOUNT_LOCK")]
    AccountLock,
    #[sea_orm(string_value = "ACCOUNT_UNLOCK")]
    AccountUnlock,
    #[sea_orm(string_value = "PASSWORD_RESET")]
    PasswordReset,
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
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
pub enum EntityType {
    #[sea_orm(string_value = "PRODUCT")]
    Product,
    #[sea_orm(string_value = "STOCK_MOVEMENT")]
    StockMovement,
    #[sea_orm(string_value = "USER")]
    User,
    #[sea_orm(string_value = "NOTIFICATION_SETTINGS")]
    NotificationSettings,
    #[sea_orm(string_value = "ALERT")]
    Alert,
    #[sea_orm(string_value = "UPLOAD_JOB")]
    UploadJob,
}

/// One append-only audit record. Nothing in the API updates or deletes these.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "audit_logs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub occurred_at: DateTimeUtc,
    pub actor_id: Option<Uuid>,
    pub action: AuditAction,
    pub entity_type: EntityType,
    pub entity_id: Option<String>,
    pub summary: String,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub changes: Option<Json>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The writing transaction: the row's place in the audit stream (docs/ARCHITECTURE.md,
    /// "Streams of all products and of the audit log"). 0 before it was kept.
    #[serde(default)]
    pub tx: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
