//! Telegram alerts: the outbox (`alerts`) and the one-row
//! `notification_settings`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Alerts {
    Table,
    Id,
    Kind,
    Status,
    ChatId,
    Message,
    Attempts,
    RetryAt,
    LeaseUntil,
    LastError,
    DedupeKey,
    TelegramMessageId,
    CreatedAt,
    SentAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum NotificationSettings {
    Table,
    Id,
    TelegramEnabled,
    ChatIds,
    BotToken,
    EnabledKinds,
    PausedUntil,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alerts::Table)
                    .if_not_exists()
                    .col(pk_uuid(Alerts::Id))
                    .col(string_len(Alerts::Kind, 32))
                    .col(string_len(Alerts::Status, 16).check((
                        "alerts_status_check",
                        Expr::col(Alerts::Status).is_in(["PENDING", "SENDING", "SENT", "DEAD"]),
                    )))
                    .col(string_len(Alerts::ChatId, 64))
                    .col(text(Alerts::Message))
                    .col(integer(Alerts::Attempts).default(0))
                    .col(timestamp_with_time_zone_null(Alerts::RetryAt))
                    .col(timestamp_with_time_zone_null(Alerts::LeaseUntil))
                    .col(text_null(Alerts::LastError))
                    .col(string_len_null(Alerts::DedupeKey, 200))
                    .col(big_integer_null(Alerts::TelegramMessageId))
                    .col(timestamp_with_time_zone(Alerts::CreatedAt))
                    .col(timestamp_with_time_zone_null(Alerts::SentAt))
                    .col(timestamp_with_time_zone(Alerts::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // What the notifier claims: due PENDING rows and expired SENDING leases.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("alerts_status_retry_at_idx")
                    .table(Alerts::Table)
                    .col(Alerts::Status)
                    .col(Alerts::RetryAt)
                    .to_owned(),
            )
            .await?;
        // One alert per chat and dedupe key (NULL keys never clash).
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("alerts_dedupe_key")
                    .table(Alerts::Table)
                    .col(Alerts::DedupeKey)
                    .col(Alerts::ChatId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(NotificationSettings::Table)
                    .if_not_exists()
                    .col(integer(NotificationSettings::Id).primary_key())
                    .col(boolean(NotificationSettings::TelegramEnabled).default(true))
                    .col(text_null(NotificationSettings::ChatIds))
                    .col(text_null(NotificationSettings::BotToken))
                    .col(text(NotificationSettings::EnabledKinds))
                    // Telegram's 429: no instance sends to the bot before then.
                    .col(timestamp_with_time_zone_null(
                        NotificationSettings::PausedUntil,
                    ))
                    .col(timestamp_with_time_zone_null(
                        NotificationSettings::UpdatedAt,
                    ))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(NotificationSettings::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Alerts::Table).if_exists().to_owned())
            .await
    }
}
