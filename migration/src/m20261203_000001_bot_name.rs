//! The name of the bot whose token the settings hold, as Telegram's getMe
//! gave it when the token was saved.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum NotificationSettings {
    Table,
    BotName,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(NotificationSettings::Table)
                    .add_column(text_null(NotificationSettings::BotName))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(NotificationSettings::Table)
                    .drop_column(NotificationSettings::BotName)
                    .to_owned(),
            )
            .await
    }
}
