//! Stockroom's schema migrations, one file per change. A migration that has
//! landed on `main` is never edited: later changes add a new file.

pub use sea_orm_migration::MigrationStatus;
pub use sea_orm_migration::prelude::*;

mod m20261126_000001_create_users_products;
mod m20261126_000002_create_stock_movements_audit_logs;
mod m20261127_000001_create_alerts_notification_settings;
mod m20261127_000002_create_upload_jobs;
mod m20261127_000003_account_security;
mod m20261203_000001_bot_name;
mod m20261205_000001_products_fillfactor;
mod m20261205_000002_products_name_index;
mod m20261205_000003_products_unit_cost;
mod m20261205_000004_products_category_id_index;
mod m20261205_000005_stream_positions;
mod m20261205_000006_low_stock_crossings;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_create_users_products::Migration),
            Box::new(m20261126_000002_create_stock_movements_audit_logs::Migration),
            Box::new(m20261127_000001_create_alerts_notification_settings::Migration),
            Box::new(m20261127_000002_create_upload_jobs::Migration),
            Box::new(m20261127_000003_account_security::Migration),
            Box::new(m20261203_000001_bot_name::Migration),
            Box::new(m20261205_000001_products_fillfactor::Migration),
            Box::new(m20261205_000002_products_name_index::Migration),
            Box::new(m20261205_000003_products_unit_cost::Migration),
            Box::new(m20261205_000004_products_category_id_index::Migration),
            Box::new(m20261205_000005_stream_positions::Migration),
            Box::new(m20261205_000006_low_stock_crossings::Migration),
        ]
    }
}
