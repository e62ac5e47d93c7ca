//! `products(name, id)`, for the product list sorted by name (the console's
//! products table): a page of 20 out of 100,000 reads 21 index entries
//! instead of sorting the catalogue. A movement never changes the name, so
//! it costs movements nothing (their updates stay HOT on PostgreSQL).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEX: &str = "idx_products_name_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Alias::new("products"))
                    .col(Alias::new("name"))
                    .col(Alias::new("id"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(Alias::new("products"))
                    .to_owned(),
            )
            .await
    }
}
