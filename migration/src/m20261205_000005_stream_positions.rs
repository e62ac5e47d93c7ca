//! `tx` on the ledger and the audit log: the writing transaction, which
//! positions every row in the streams of all products and of the audit log
//! (`stockChanged(after:)` without a product, `auditLogAdded(after:)`).
//!
//! PostgreSQL: the transaction's id (`pg_current_xact_id()`, 64 bits, never
//! wraps). SQLite: a number the single writer gives each write transaction
//! in commit order. Rows written before this migration are 0, before every
//! position a stream can hold. An index on `(tx, id)` serves the replays.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLES: [(&str, &str); 2] = [
    ("stock_movements", "idx_stock_movements_tx"),
    ("audit_logs", "idx_audit_logs_tx"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, index) in TABLES {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(table))
                        .add_column(
                            ColumnDef::new(Alias::new("tx"))
                                .big_integer()
                                .not_null()
                                .default(0),
                        )
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name(index)
                        .table(Alias::new(table))
                        .col(Alias::new("tx"))
                        .col(Alias::new("id"))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, index) in TABLES {
            manager
                .drop_index(
                    Index::drop()
                        .name(index)
                        .table(Alias::new(table))
                        .to_owned(),
                )
                .await?;
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(table))
                        .drop_column(Alias::new("tx"))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
