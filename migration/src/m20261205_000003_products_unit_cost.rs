//! `products.unit_cost`: what one unit cost, in the smallest unit of the
//! CURRENCY setting (won, cents), so that dashboards can show the stock's
//! value. Null for products whose cost is not known.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("products"))
                    .add_column(ColumnDef::new(Alias::new("unit_cost")).big_integer().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("products"))
                    .drop_column(Alias::new("unit_cost"))
                    .to_owned(),
            )
            .await
    }
}
