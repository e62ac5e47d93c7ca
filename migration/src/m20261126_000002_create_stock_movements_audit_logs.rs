//! The stock ledger and the audit log.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261126_000001_create_users_products::{Products, Users};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StockMovements {
    Table,
    Id,
    ProductId,
    Kind,
    Quantity,
    BalanceAfter,
    ProductVersion,
    Note,
    Reference,
    IdempotencyKey,
    RequestHash,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditLogs {
    Table,
    Id,
    OccurredAt,
    ActorId,
    Action,
    EntityType,
    EntityId,
    Summary,
    Changes,
    RequestId,
    Ip,
    UserAgent,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(StockMovements::Table)
                    .if_not_exists()
                    .col(pk_uuid(StockMovements::Id))
                    .col(uuid(StockMovements::ProductId))
                    .col(string_len(StockMovements::Kind, 16).check((
                        "stock_movements_kind_check",
                        Expr::col(StockMovements::Kind).is_in([
                            "INBOUND",
                            "OUTBOUND",
                            "RETURN",
                            "ADJUSTMENT",
                        ]),
                    )))
                    .col(integer(StockMovements::Quantity).check((
                        "stock_movements_quantity_check",
                        Expr::col(StockMovements::Quantity).ne(0),
                    )))
                    .col(integer(StockMovements::BalanceAfter).check((
                        "stock_movements_balance_after_check",
                        Expr::col(StockMovements::BalanceAfter).gte(0),
                    )))
                    // The product's version right after this movement: orders a
                    // product's movements exactly, whatever the clocks say.
                    .col(integer(StockMovements::ProductVersion))
                    .col(string_len_null(StockMovements::Note, 500))
                    .col(string_len_null(StockMovements::Reference, 100))
                    .col(string_len_null(StockMovements::IdempotencyKey, 100))
                    .col(string_len_null(StockMovements::RequestHash, 64))
                    .col(uuid_null(StockMovements::CreatedBy))
                    .col(timestamp_with_time_zone(StockMovements::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("stock_movements_product_id_fkey")
                            .from(StockMovements::Table, StockMovements::ProductId)
                            .to(Products::Table, Products::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("stock_movements_created_by_fkey")
                            .from(StockMovements::Table, StockMovements::CreatedBy)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, cols, unique) in [
            (
                "stock_movements_product_version_key",
                vec![StockMovements::ProductId, StockMovements::ProductVersion],
                true,
            ),
            (
                "stock_movements_idempotency_key",
                vec![StockMovements::CreatedBy, StockMovements::IdempotencyKey],
                true,
            ),
            (
                "stock_movements_created_at_idx",
                vec![StockMovements::CreatedAt],
                false,
            ),
        ] {
            let mut index = Index::create();
            index
                .if_not_exists()
                .name(name)
                .table(StockMovements::Table);
            for col in cols {
                index.col(col);
            }
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(AuditLogs::Table)
                    .if_not_exists()
                    .col(pk_uuid(AuditLogs::Id))
                    .col(timestamp_with_time_zone(AuditLogs::OccurredAt))
                    .col(uuid_null(AuditLogs::ActorId))
                    .col(string_len(AuditLogs::Action, 32))
                    .col(string_len(AuditLogs::EntityType, 32))
                    .col(string_len_null(AuditLogs::EntityId, 64))
                    .col(string_len(AuditLogs::Summary, 500))
                    .col(json_binary_null(AuditLogs::Changes))
                    .col(string_len_null(AuditLogs::RequestId, 128))
                    .col(string_len_null(AuditLogs::Ip, 64))
                    .col(string_len_null(AuditLogs::UserAgent, 512))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            ("audit_logs_occurred_at_idx", vec![AuditLogs::OccurredAt]),
            (
                "audit_logs_entity_idx",
                vec![AuditLogs::EntityType, AuditLogs::EntityId],
            ),
            ("audit_logs_actor_id_idx", vec![AuditLogs::ActorId]),
            ("audit_logs_action_idx", vec![AuditLogs::Action]),
        ] {
            let mut index = Index::create();
            index.if_not_exists().name(name).table(AuditLogs::Table);
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditLogs::Table).if_exists().to_owned())
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(StockMovements::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
