//! Users, their refresh tokens, and products.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum Users {
    Table,
    Id,
    Email,
    DisplayName,
    PasswordHash,
    Role,
    IsActive,
    CreatedAt,
    UpdatedAt,
    LastLoginAt,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    Id,
    UserId,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
    ReplacedBy,
}

#[derive(DeriveIden)]
pub enum Products {
    Table,
    Id,
    Sku,
    Name,
    Description,
    Category,
    Unit,
    Stock,
    LowStockThreshold,
    Version,
    ArchivedAt,
    CreatedAt,
    UpdatedAt,
    SearchKey,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .if_not_exists()
                    .col(pk_uuid(Users::Id))
                    .col(string_len_uniq(Users::Email, 254))
                    .col(string_len(Users::DisplayName, 100))
                    .col(string_len(Users::PasswordHash, 255))
                    .col(string_len(Users::Role, 16).check((
                        "users_role_check",
                        Expr::col(Users::Role).is_in(["ADMIN", "MANAGER", "STAFF", "VIEWER"]),
                    )))
                    .col(boolean(Users::IsActive).default(true))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .col(timestamp_with_time_zone(Users::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Users::LastLoginAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RefreshTokens::Table)
                    .if_not_exists()
                    .col(pk_uuid(RefreshTokens::Id))
                    .col(uuid(RefreshTokens::UserId))
                    .col(string_len_uniq(RefreshTokens::TokenHash, 64))
                    .col(timestamp_with_time_zone(RefreshTokens::CreatedAt))
                    .col(timestamp_with_time_zone(RefreshTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(RefreshTokens::RevokedAt))
                    .col(uuid_null(RefreshTokens::ReplacedBy))
                    .foreign_key(
                        ForeignKey::create()
                            .name("refresh_tokens_user_id_fkey")
                            .from(RefreshTokens::Table, RefreshTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("refresh_tokens_user_id_idx")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::UserId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Products::Table)
                    .if_not_exists()
                    .col(pk_uuid(Products::Id))
                    .col(string_len(Products::Sku, 64))
                    .col(string_len(Products::Name, 200))
                    .col(text_null(Products::Description))
                    .col(string_len_null(Products::Category, 100))
                    .col(string_len(Products::Unit, 20).default("ea"))
                    .col(
                        integer(Products::Stock)
                            .default(0)
                            .check(("products_stock_check", Expr::col(Products::Stock).gte(0))),
                    )
                    .col(integer(Products::LowStockThreshold).default(0).check((
                        "products_low_stock_threshold_check",
                        Expr::col(Products::LowStockThreshold).gte(0),
                    )))
                    .col(integer(Products::Version).default(1))
                    .col(timestamp_with_time_zone_null(Products::ArchivedAt))
                    .col(timestamp_with_time_zone(Products::CreatedAt))
                    .col(timestamp_with_time_zone(Products::UpdatedAt))
                    // Lowercased (Unicode) SKU and name, written by the
                    // application: SQLite's lower() folds ASCII only, so
                    // searching lower(name) would differ between databases.
                    .col(text(Products::SearchKey).default(""))
                    .to_owned(),
            )
            .await?;
        // The index builder cannot express lower(sku) on SQLite (it panics); raw
        // SQL works on both databases.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS products_sku_lower_key ON products (lower(sku))",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("products_category_idx")
                    .table(Products::Table)
                    .col(Products::Category)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Products::Table).if_exists().to_owned())
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(RefreshTokens::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Users::Table).if_exists().to_owned())
            .await
    }
}
