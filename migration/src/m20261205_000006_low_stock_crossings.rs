//! `crossed_threshold` on the ledger: the product's low-stock threshold when
//! the movement took its stock from above it to at or below it, NULL for
//! every other movement. It makes the `lowStock` stream a part of the ledger
//! that a cursor can replay (`lowStock(after:)`), with the threshold as it
//! was then. Movements recorded before this migration are NULL: the stream
//! replays crossings from here on.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("stock_movements"))
                    .add_column(
                        ColumnDef::new(Alias::new("crossed_threshold"))
                            .integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("stock_movements"))
                    .drop_column(Alias::new("crossed_threshold"))
                    .to_owned(),
            )
            .await
    }
}
