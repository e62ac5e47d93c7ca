//! Room on every products page for the row's next version (PostgreSQL).
//!
//! Every movement rewrites its product's row (stock, version, updated_at),
//! and none of those columns is indexed, so the new version can stay on the
//! same page without touching the indexes (a HOT update), but only if the
//! page has room. With the default fill factor of 100 a freshly loaded
//! catalogue has none, and each first movement of a product writes its three
//! index entries again. SQLite has no such setting.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_fillfactor(manager, 80).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_fillfactor(manager, 100).await
    }
}

async fn set_fillfactor(manager: &SchemaManager<'_>, percent: u8) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    manager
        .get_connection()
        .execute_unprepared(&format!(
            "ALTER TABLE products SET (fillfactor = {percent})"
        ))
        .await
        .map(drop)
}
