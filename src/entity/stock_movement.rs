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
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum MovementKind {
    /// Goods received (stock +quantity).
    #[sea_orm(string_value = "INBOUND")]
    Inbound,
    /// Goods issued (stock -quantity); refused below zero.
    #[sea_orm(string_value = "OUTBOUND")]
    Outbound,
    /// Customer return (stock +quantity).
    #[sea_orm(string_value = "RETURN")]
    Return,
    /// Stocktake correction: a signed delta, never below zero.
    #[sea_orm(string_value = "ADJUSTMENT")]
    Adjustment,
}

impl MovementKind {
    /// The kind in words, for summaries and messages.
    pub fn word(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Return => "return",
            Self::Adjustment => "adjustment",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "stock_movements")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub product_id: Uuid,
    pub kind: MovementKind,
    /// Signed delta applied to stock.
    pub quantity: i32,
    pub balance_after: i32,
    /// The product's version right after this movement (orders the ledger).
    pub product_version: i32,
    pub note: Option<String>,
    pub reference: Option<String>,
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request that used `idempotency_key`, to tell a
    /// replay from a different request reusing the key.
    pub request_hash: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
    /// The writing transaction: the row's place in the stream of all
    /// products (docs/ARCHITECTURE.md, "Streams of all
    /// products and of the audit log"). 0 before it was kept.
    #[serde(default)]
    pub tx: i64,
    /// The product's low-stock threshold when this movement took its stock
    /// from above it to at or below it (a `lowStock` event); None for every
    /// other movement, and for movements recorded before it was kept.
    #[serde(default)]
    pub crossed_threshold: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
