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
pub enum UploadKind {
    /// Columns sku, name, description, category, unit, low_stock_threshold,
    /// initial_stock: new products are created, existing SKUs updated.
    #[sea_orm(string_value = "PRODUCTS")]
    Products,
    /// Columns sku, kind, quantity, note, reference: one movement per row.
    #[sea_orm(string_value = "STOCK_MOVEMENTS")]
    StockMovements,
}

impl UploadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Products => "PRODUCTS",
            Self::StockMovements => "STOCK_MOVEMENTS",
        }
    }
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
pub enum UploadStatus {
    /// Waiting for a worker.
    #[sea_orm(string_value = "QUEUED")]
    Queued,
    /// A worker holds it (under a lease) and applies it batch by batch.
    #[sea_orm(string_value = "PROCESSING")]
    Processing,
    /// Every row was handled; `failedRows` of them were refused.
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    /// The file itself was refused (format, columns, size); see `error`.
    #[sea_orm(string_value = "FAILED")]
    Failed,
    /// Cancelled: before it started, or after the batch under way.
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
}

impl UploadStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// One uploaded file and how far its import has gone. The bytes are in
/// `upload_job_files`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "upload_jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub kind: UploadKind,
    pub filename: String,
    pub status: UploadStatus,
    pub dry_run: bool,
    pub content_sha256: String,
    pub content_bytes: i64,
    pub total_rows: Option<i32>,
    pub processed_rows: i32,
    pub succeeded_rows: i32,
    pub failed_rows: i32,
    pub resume_row: i32,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub lease_token: Option<Uuid>,
    pub lease_until: Option<DateTimeUtc>,
    pub attempts: i32,
    pub created_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
