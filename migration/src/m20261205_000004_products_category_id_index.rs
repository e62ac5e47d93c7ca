//! `products(category, id)` in place of `products(category)`: a category's
//! page in creation order (the product list's default) walks the index in
//! order and stops after a page, where PostgreSQL otherwise walked the
//! primary key and filtered the whole catalogue (`category + low stock` at
//! 100,000 products: 28 ms, `benches/console.sh`). Movements never change
//! the category, so they keep their HOT updates.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const OLD: &str = "products_category_idx";
const NEW: &str = "products_category_id_idx";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        index(manager, NEW, &["category", "id"]).await?;
        drop_index(manager, OLD).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        index(manager, OLD, &["category"]).await?;
        drop_index(manager, NEW).await
    }
}

async fn index(manager: &SchemaManager<'_>, name: &str, columns: &[&str]) -> Result<(), DbErr> {
    let mut index = Index::create();
    index
        .if_not_exists()
        .name(name)
        .table(Alias::new("products"));
    for column in columns {
        index.col(Alias::new(*column));
    }
    manager.create_index(index.to_owned()).await
}

async fn drop_index(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    manager
        .drop_index(
            Index::drop()
                .name(name)
                .table(Alias::new("products"))
                .to_owned(),
        )
        .await
}
