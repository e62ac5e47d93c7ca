use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "products")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub unit: String,
    pub stock: i32,
    pub low_stock_threshold: i32,
    /// In the smallest unit of CURRENCY; null when not known.
    pub unit_cost: Option<i64>,
    pub version: i32,
    pub archived_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// Lowercased SKU and name, for case-insensitive search on both databases.
    pub search_key: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The one rule for "low stock": at or below the threshold. The GraphQL field,
/// the `lowStockOnly` filter ([`low_stock_condition`]) and the crossing
/// detection ([`crossed_low_stock`]) all use it.
impl Model {
    /// The product as `movement` left it: its stock and version then, its
    /// other fields as now (only movements change stock).
    pub fn as_of(mut self, movement: &super::stock_movement::Model) -> Self {
        self.stock = movement.balance_after;
        self.version = movement.product_version;
        self
    }

    pub fn is_low_stock(&self) -> bool {
        is_low(i64::from(self.stock), self.low_stock_threshold)
    }
}

fn is_low(stock: i64, threshold: i32) -> bool {
    stock <= i64::from(threshold)
}

/// [`Model::is_low_stock`] as a SQL condition, for filters.
pub fn low_stock_condition() -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::{Expr, ExprTrait};
    Expr::col(Column::Stock).lte(Expr::col(Column::LowStockThreshold))
}

/// True when a change of stock from `stock_before` to `after.stock` took the
/// product from above its threshold to at or below it: the moment a LOW_STOCK
/// event (and alert) fires, once per crossing.
pub fn crossed_low_stock(stock_before: i64, after: &Model) -> bool {
    !is_low(stock_before, after.low_stock_threshold) && after.is_low_stock()
}
